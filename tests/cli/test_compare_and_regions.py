"""compare.py's statistics by hand; draw_regions draws the graph's own regions."""

import csv
import math

import pytest
import torch

from distill.cli import compare, draw_regions


def _metrics(ap):
    return {'coco/bbox_mAP': ap, 'coco/bbox_mAP_50': ap + 0.1, 'coco/bbox_mAP_75': ap,
            'coco/bbox_mAP_s': ap, 'coco/bbox_mAP_m': ap, 'coco/bbox_mAP_l': -1.0}


def test_summary_mean_sd_and_difference_in_sd_units(tmp_path):
    results = {'none': [_metrics(a) for a in (0.10, 0.12, 0.14)],
               'ld': [_metrics(a) for a in (0.15, 0.16, 0.17)]}
    summary = compare.summarise(results)
    assert summary['none']['AP'] == pytest.approx(12.0)
    assert summary['none']['AP_sd'] == pytest.approx(2.0)  # sample sd of 10, 12, 14
    assert summary['ld']['AP_sd'] == pytest.approx(1.0)
    assert math.isnan(summary['ld']['APl'])  # pycocotools' -1: no large objects
    table = compare.write_tables(summary, _metrics(0.3), str(tmp_path / 'c'), 'title')
    ld_row = [r for r in table.splitlines() if r.startswith('| student + ld')][0]
    cells = [c.strip() for c in ld_row.strip('|').split('|')]
    assert cells[2] == '16.0 ± 1.0' and cells[7] == 'n/a'
    assert cells[8] == '+4.0' and cells[9] == f'{4 / math.sqrt(5):+.1f}'  # 4 / sqrt(2^2 + 1^2)
    rows = list(csv.DictReader(open(tmp_path / 'c.csv')))
    assert [r['model'] for r in rows] == ['teacher', 'none', 'ld']
    assert float(rows[2]['AP']) == pytest.approx(16.0) and rows[2]['seeds'] == '3'
    assert (tmp_path / 'c.png').stat().st_size > 0


def test_scaled_schedule(repo):
    opts = compare.scaled_schedule(str(repo / 'configs/tiny/gfl_s_digits.py'), 6)
    assert opts == {'train_cfg.max_epochs': 6, 'param_scheduler.1.milestones': [4, 5],
                    'param_scheduler.1.end': 6}  # 16 and 22 of 24, scaled; val every 2 epochs
    opts = compare.scaled_schedule(str(repo / 'configs/tiny/gfl_s_digits.py'), 5)
    assert opts['param_scheduler.1.milestones'] == [3, 4]  # rounded down


def test_draw_regions_matches_the_graph(tmp_path, repo):
    out = tmp_path / 'regions.png'
    masks = draw_regions.main([str(repo / 'configs/tiny/gfl_s_digits.py'), '--index', '3',
                               '--out', str(out)])
    assert out.stat().st_size > 0
    main, vlr = masks['main'], masks['vlr']
    assert main.sum() > 0 and vlr.sum() > 0
    # Algorithm 1 keeps the positives in the VLR: the drawn masks overlap, and the VLR is the
    # graph's own VLRRegion (checked against a naive loop in tests/regions)
    assert (main & vlr).any() and (vlr & ~main).any()


def test_draw_regions_on_retinanet_colours_locations_with_a_positive_anchor(tmp_path, repo):
    """RetinaNet (9 anchors per location): a location is drawn as main where mmdet's own
    RetinaHead assigns a positive to any of its anchors (a plain mmdet model, same image)."""
    from mmdet.registry import MODELS
    from mmengine.dataset import pseudo_collate

    from distill.cli.common import build_plain_dataset, load_config
    from tests.helpers import record_outputs
    config = str(repo / 'configs/tiny/retina_s_digits.py')
    masks = draw_regions.main([config, '--index', '3', '--out', str(tmp_path / 'r.png')])
    cfg = load_config(config)
    model = MODELS.build(cfg.model)  # MaxIoUAssigner: the assignment needs no weights
    targets = record_outputs(model.bbox_head, 'get_targets')
    data = model.data_preprocessor(pseudo_collate([build_plain_dataset(cfg, 'val')[3]]), True)
    model(**data, mode='loss')
    labels = torch.cat(targets[-1][0], 1)[0]
    want = ((labels >= 0) & (labels < 10)).reshape(-1, 9).any(-1).numpy()
    assert want.sum() > 0 and (masks['main'] == want).all()
    assert masks['vlr'].shape == want.shape and (masks['vlr'] & ~want).any()


def test_draw_regions_refuses_a_detector_without_a_dense_head(repo, tmp_path):
    from distill.cli.common import ConfigCheckError
    config = str(repo / 'configs/tiny/faster_rcnn_s_digits.py')
    with pytest.raises(ConfigCheckError, match=r'faster_rcnn_s_digits\.py: draw_regions draws '
                                               r'regions over a dense head.s priors, but '
                                               r'FasterRCNN has no model\.bbox_head'):
        draw_regions.main([config, '--out', str(tmp_path / 'r.png')])


def test_cfg_options_reach_each_run_as_given():
    """compare.py forwards its --cfg-options to each run's command line: mmengine's DictAction
    must read back the same values (None was once forwarded as the string 'null')."""
    import argparse

    from mmengine.config import DictAction

    from distill.cli.compare import _options_args
    opts = {'a': None, 'b': 'first', 'c': [1, 2.5], 'd': True, 'e': (8, 16), 'f': [None, 'x'],
            'g': 3}
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    assert parser.parse_args(['--cfg-options', *_options_args(opts)]).cfg_options == opts


@pytest.mark.parametrize('payload', ['{}', '{"metrics": [1, 2]}', '[]', '{"metrics": {'])
def test_teacher_metrics_file_without_metrics_is_refused(tmp_path, payload):
    """A stale or broken teacher/metrics.json is named, as an unreadable file, not used."""
    import argparse

    from distill.files import UnreadableFileError
    path = tmp_path / 'teacher' / 'metrics.json'
    path.parent.mkdir()
    path.write_text(payload)
    args = argparse.Namespace(teacher='t.py', teacher_ckpt='t.pth', work_root=str(tmp_path))
    with pytest.raises(UnreadableFileError, match=str(path)):
        compare.teacher_metrics(args, {})
