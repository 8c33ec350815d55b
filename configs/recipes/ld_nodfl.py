# Main LD (ld.py) with the student's DFL switched off: "DFL loss term can be disabled since LD
# loss has sufficient guidance ability" (LD paper, Sec. 3.4). The student's QFL and GIoU stay.
_base_ = ['ld.py']
student_options = {'model.bbox_head.loss_dfl.loss_weight': 0.0}
