"""Bringing your own head, as docs/usage.md says: a head class of the user's module (imported
by the config's ``custom_imports``) is a node for the neck methods as it is, and for the
head-output recipes once it declares its outputs with ``register_head_outputs``, the
declaration of the docs' worked example; before that, such a recipe is refused naming the
output, the head and its config."""

import re

import pytest

from distill.build import build_train_parts
from distill.cli.train_distill import build_distill_config
from distill.errors import RecipeError
from tests.helpers import save_detector_checkpoint, train_checking_edges

RETINA = 'configs/tiny/retina_s_digits.py'

# the user's module: two heads on mmdet's AnchorHead (one conv per branch, no towers); only
# the first is declared, with the declaration of docs/usage.md's worked example
MODULE = '''
from mmdet.models.dense_heads import AnchorHead
from mmdet.registry import MODELS

from distill.graph import HeadOutput, register_head_outputs
from distill.graph.outputs import decode_box_targets, decode_deltas, positives_of_labels


@MODELS.register_module()
class UserDeclaredHead(AnchorHead):
    """mmdet's AnchorHead under the user's name."""


@MODELS.register_module()
class UserUndeclaredHead(AnchorHead):
    """The same head, not declared."""


register_head_outputs('UserDeclaredHead', dict(
    cls_logits=HeadOutput('head', 0, 'class logits (A anchors per location)'),
    box_deltas=HeadOutput('head', 1, "encoded box deltas (the head's bbox_coder)"),
    boxes=HeadOutput('head', 1, 'decoded boxes', decode_deltas),
    labels=HeadOutput('assign', 0, "assigned labels (the head's own label assignment)"),
    label_weights=HeadOutput('assign', 1, 'label weights of the assignment'),
    pos_mask=HeadOutput('assign', 0, 'assigned positives', positives_of_labels),
    gt_boxes=HeadOutput('assign', 2, 'assigned GT boxes', decode_box_targets),
))
'''


def _config(folder, repo, head):
    """The tiny RetinaNet with ``head`` (the user's class) in place of RetinaHead."""
    path = folder / f'{head}.py'
    path.write_text(
        f"_base_ = '{repo / RETINA}'\n"
        "custom_imports = dict(imports=['user_heads_of_the_test'], allow_failed_imports=False)\n"
        f"model = dict(bbox_head=dict(_delete_=True, type='{head}', num_classes=10,\n"
        "    in_channels=48, feat_channels=48,\n"
        "    anchor_generator=dict(type='AnchorGenerator', octave_base_scale=2,\n"
        "        scales_per_octave=3, ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32]),\n"
        "    bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],\n"
        "        target_stds=[1.0, 1.0, 1.0, 1.0]),\n"
        "    loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,\n"
        "        loss_weight=1.0),\n"
        "    loss_bbox=dict(type='L1Loss', loss_weight=1.0)))\n")
    return str(path)


@pytest.fixture(scope='module')
def user_configs(tmp_path_factory, repo):
    folder = tmp_path_factory.mktemp('user')
    (folder / 'user_heads_of_the_test.py').write_text(MODULE)
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(folder))
    made = {}
    for head in ('UserDeclaredHead', 'UserUndeclaredHead'):
        config = _config(folder, repo, head)
        made[head] = (config, save_detector_checkpoint(config, folder / f'{head}.pth', seed=1))
    yield made
    patch.undo()


@pytest.mark.parametrize('recipe', ['kd', 'pkd', 'bckd'])
def test_a_declared_user_head_trains_under_the_recipes_of_its_outputs(recipe, user_configs):
    config, ckpt = user_configs['UserDeclaredHead']
    cfg = build_distill_config(config, recipe, config, ckpt)
    seen, touched = train_checking_edges(cfg)
    assert type(build_train_parts(cfg, 2)[0].architecture.bbox_head).__name__ == \
        'UserDeclaredHead'
    assert {'loss_cls', 'loss_bbox'} <= set(seen)
    assert any(seen[f'loss_{e["name"]}'] > 0 for e in cfg.model.edges), seen
    assert all(n.startswith('architecture.') for n in touched)


def test_an_undeclared_user_head_runs_the_neck_methods_and_is_refused_the_others(user_configs):
    config, ckpt = user_configs['UserUndeclaredHead']
    seen, _ = train_checking_edges(build_distill_config(config, 'pkd', config, ckpt))
    assert seen['loss_pkd'] > 0
    cfg = build_distill_config(config, 'kd', config, ckpt)
    with pytest.raises(RecipeError) as err:
        build_train_parts(cfg, 2)
    msg = str(err.value)
    assert '\n' not in msg
    assert re.search(r"needs the output 'cls_logits' of the student head, which "
                     r"UserUndeclaredHead \(outputs: none declared\) \(.*UserUndeclaredHead\.py\)"
                     r" does not have", msg), msg
    # CrossKD needs towers the head does not have: refused naming both heads
    declared, declared_ckpt = user_configs['UserDeclaredHead']
    cfg = build_distill_config(declared, 'crosskd_retina', declared, declared_ckpt)
    with pytest.raises(RecipeError, match=r'cannot cross UserDeclaredHead \(.*\) into '
                                          r'UserDeclaredHead'):
        build_train_parts(cfg, 2)
