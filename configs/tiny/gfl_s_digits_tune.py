# gfl_s on the digits-scenes tuning split, carved from train (never val): trained on train
# images 200-999, scored on train images 0-199. Every distillation hyperparameter is chosen here.
_base_ = ['./gfl_s_digits.py']
train_dataloader = dict(dataset=dict(indices=list(range(200, 1000))))
val_dataloader = dict(dataset=dict(split='train', indices=list(range(200))))
test_dataloader = val_dataloader
val_evaluator = dict(split='train', evaluated_images_only=True)
test_evaluator = val_evaluator
