# SDR: self-distillation regression (SALT-Net paper Eq. 9). The student's stage-1 (coarse) boxes
# learn from its own stage-2 (refined) boxes, detached (teacher side of='student'), where the
# refined box is closer to the GT (IoU2 > IoU1), weighted by y * IoU2: y the student's class
# score (MainRegion weight='score'), normalised by the number of positives (Eq. 10: 1 / N_pos),
# lambda_4 = 1. Needs a two-stage head (SALTHead: output box_stage1). Composes with a teacher's
# recipe: tools/train_distill.py --recipe kd_ld_vlr sdr.
edges = [
    dict(name='sdr',
         loss=dict(type='SDRLoss', loss_weight=1.0),
         student=dict(output='box_stage1'), teacher=dict(output='boxes', of='student'),
         targets=dict(gt_boxes='gt_boxes'),
         region=dict(type='MainRegion', weight='score'), normalize='count'),
]
