# FGD with the authors' "inheriting" start: the student's neck and head initialised from the
# teacher's where the shapes match (distill/graph/inherit.py), then the fgd recipe's edges. A
# different start, not a different loss: its own grid row, never mixed with cold-start `fgd`.
# Needs a neck and head of the teacher's widths (refused, naming a tensor, when none fits).
_base_ = ['fgd.py']
inherit_from_teacher = ['neck', 'bbox_head']
