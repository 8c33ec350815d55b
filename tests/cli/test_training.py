"""Tiny configs train (finite losses, every parameter learns), resume exactly, evaluate
deterministically; bad configs and checkpoints fail clearly."""

import json
import os.path as osp
from pathlib import Path

import pytest
import torch

from distill.cli import test as test_cli
from distill.cli import train as train_cli
from distill.cli.common import CheckpointError, ConfigCheckError, load_config
from tests.helpers import TINY_RUN, train_iterations

REPO = Path(__file__).resolve().parents[2]
TINY = sorted((REPO / 'configs' / 'tiny').glob('*.py'))
GFL_S = str(REPO / 'configs' / 'tiny' / 'gfl_s_digits.py')

SMALL = TINY_RUN


@pytest.mark.parametrize('config', TINY, ids=lambda p: p.stem)
def test_ten_iterations_finite_losses_and_every_parameter_learns(config):
    cfg = load_config(str(config))
    losses, touched = train_iterations(cfg, iterations=10)
    assert len(losses) == 10
    assert all(touched.values()), [n for n, t in touched.items() if not t]


def _train(work_dir, max_epochs, resume=False):
    argv = [GFL_S, '--work-dir', str(work_dir)] + (['--resume'] if resume else [])
    args = train_cli.parse_args(argv)
    args.cfg_options = dict(SMALL, **{'train_cfg.max_epochs': max_epochs})
    runner = train_cli.build_runner(args)
    runner.train()
    return runner


def test_resume_continues_from_saved_iteration_and_matches_uninterrupted(tmp_path):
    straight = _train(tmp_path / 'straight', max_epochs=2)
    assert straight.iter == 4
    _train(tmp_path / 'split', max_epochs=1)
    assert (tmp_path / 'split' / 'last_checkpoint').read_text().endswith('epoch_1.pth')
    resumed = _train(tmp_path / 'split', max_epochs=2, resume=True)
    assert resumed.iter == 4 and resumed.epoch == 2
    a = torch.load(tmp_path / 'straight' / 'epoch_2.pth')
    b = torch.load(tmp_path / 'split' / 'epoch_2.pth')
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    for k, v in a['state_dict'].items():  # resumed training = uninterrupted training
        torch.testing.assert_close(b['state_dict'][k], v, rtol=1e-5, atol=1e-6, msg=k)
    # the resumed run executed only epoch 2: its log starts at epoch 2
    logs = sorted((tmp_path / 'split').glob('*/*.log'))
    assert 'resumed epoch: 1, iter: 2' in logs[-1].read_text()


def test_test_tool_gives_identical_predictions_and_ap_twice(tmp_path, capsys):
    _train(tmp_path / 'w', max_epochs=1)
    ckpt = str(tmp_path / 'w' / 'epoch_1.pth')
    results = []
    for k in range(2):
        opts = dict(SMALL, **{'model.test_cfg.score_thr': 0.0,
                              'test_evaluator.outfile_prefix': str(tmp_path / f'run{k}')})
        args = [GFL_S, ckpt, '--work-dir', str(tmp_path / f'test{k}'),
                '--out', str(tmp_path / f'm{k}.json'), '--cfg-options']
        args += [f'{key}={json.dumps(v) if isinstance(v, str) else v}' for key, v in opts.items()]
        test_cli.main(args)
        results.append(json.loads((tmp_path / f'm{k}.json').read_text()))
    preds = [(tmp_path / f'run{k}.bbox.json').read_bytes() for k in range(2)]
    assert len(json.loads(preds[0])) > 0  # there are detections to compare
    assert preds[0] == preds[1]
    assert results[0]['metrics'] == results[1]['metrics']
    assert set(results[0]['ap']) == {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl'}
    table = capsys.readouterr().out.splitlines()[-3:]
    assert [c.strip() for c in table[0].strip('|').split('|')] == \
        ['model', 'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']
    shown = [c.strip() for c in table[2].strip('|').split('|')]
    expected = ['n/a' if v is None else f'{v:.1f}' for v in results[0]['ap'].values()]
    assert shown == ['gfl_s_digits'] + expected


def test_num_classes_mismatch_names_file_field_and_value():
    with pytest.raises(ConfigCheckError) as e:
        load_config(GFL_S, {'model.bbox_head.num_classes': 3})
    msg = str(e.value)
    assert GFL_S in msg and 'model.bbox_head.num_classes=3' in msg
    assert 'train_dataloader.dataset has 10 classes' in msg


def test_two_stage_num_classes_mismatch_names_the_roi_head_field(repo):
    """Faster R-CNN's classes are in roi_head.bbox_head (its RPN's single class is not checked)."""
    config = str(repo / 'configs/tiny/faster_rcnn_s_digits.py')
    load_config(config)  # as shipped: 10 and 10
    with pytest.raises(ConfigCheckError) as e:
        load_config(config, {'model.roi_head.bbox_head.num_classes': 4})
    msg = str(e.value)
    assert '\n' not in msg and config in msg
    assert 'model.roi_head.bbox_head.num_classes=4 but train_dataloader.dataset has 10' in msg


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nope\.pth' not found"):
        test_cli.evaluate(GFL_S, str(tmp_path / 'nope.pth'))
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'\x80\x04 this is not a checkpoint')
    with pytest.raises(CheckpointError, match=r"checkpoint '.*bad\.pth' cannot be loaded"):
        test_cli.evaluate(GFL_S, str(bad))
    truncated = tmp_path / 'trunc.pth'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError, match='trunc.pth'):
        train_cli.build_runner(train_cli.parse_args([GFL_S, '--resume', str(truncated)]))
    assert osp.isfile(truncated)


def test_coco_row_and_table_hand_computed():
    from distill.cli.common import coco_row, format_coco_table
    metrics = {'coco/bbox_mAP': 0.4123, 'coco/bbox_mAP_50': 0.6, 'coco/bbox_mAP_75': 0.45,
               'coco/bbox_mAP_s': 0.2, 'coco/bbox_mAP_m': 0.5, 'coco/bbox_mAP_l': -1.0}
    row = coco_row(metrics)
    assert row['AP'] == pytest.approx(41.23) and row['AP50'] == pytest.approx(60.0)
    assert row['APl'] != row['APl']  # NaN: no large objects
    assert format_coco_table({'m': row}).splitlines()[2] == \
        '| m     |  41.2 |  60.0 |  45.0 |  20.0 |  50.0 |   n/a |'
    with pytest.warns(UserWarning, match='no detection above'):
        assert coco_row({}) == dict.fromkeys(row, 0.0)  # CocoMetric's empty result


@pytest.mark.parametrize('options,message', [
    ({'train_dataloader.batch_size': 0}, 'train_dataloader.batch_size=0 must be a whole number'),
    ({'val_dataloader.batch_size': 1.5}, 'val_dataloader.batch_size=1.5 must be a whole'),
    ({'train_dataloader.num_workers': -1}, 'train_dataloader.num_workers=-1 must be a whole'),
    ({'train_dataloader.num_workers': 0},  # the base config's persistent workers stay on
     'train_dataloader.persistent_workers=True needs train_dataloader.num_workers > 0'),
    ({'test_dataloader.num_workers': 0, 'test_dataloader.persistent_workers': False,
      'test_dataloader.prefetch_factor': 2}, 'test_dataloader.prefetch_factor=2 needs'),
])
def test_loader_settings_that_cannot_work_are_refused_before_building(options, message):
    """(A batch size of 0 used to end in torch's raw ValueError once the Runner was built.)"""
    with pytest.raises(ConfigCheckError, match=rf'gfl_s_digits.py: {message}'):
        load_config(GFL_S, options)


def test_train_cli_names_a_zero_batch_size_in_one_line(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'train.py'), GFL_S,
                           '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                           'train_dataloader.batch_size=0'], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: ") and 'train_dataloader.batch_size=0 must be a whole number >= 1' in proc.stderr
