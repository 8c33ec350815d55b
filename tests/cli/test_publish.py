"""publish_checkpoint: weights only, and a manifest entry whose sha256 is the file's."""

import hashlib
import json

import torch

from distill.cli import publish
from distill.cli import train as train_cli
from distill.cli.common import coco_row
from tests.helpers import TINY_RUN

STUDENT = 'configs/tiny/gfl_s_digits.py'
SMALL = dict(TINY_RUN, **{'model.test_cfg.score_thr': 0.0, 'train_cfg.val_interval': 1})


def test_publish_strips_training_state_and_records_sha256(tmp_path):
    args = train_cli.parse_args([STUDENT, '--work-dir', str(tmp_path / 'w'), '--epochs', '1',
                                 '--seed', '3'])
    args.cfg_options = dict(SMALL)
    train_cli.build_runner(args).train()
    src = tmp_path / 'w' / 'epoch_1.pth'
    dst = tmp_path / 'ship' / 'student.pth'
    entry = publish.main([str(src), str(dst), '--config', STUDENT, '--command', 'the command'])
    manifest = json.loads((tmp_path / 'ship' / 'MANIFEST.json').read_text())
    assert manifest == {'student.pth': entry}
    assert entry['sha256'] == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert (entry['seed'], entry['epochs'], entry['iterations']) == (3, 1, 2)
    assert entry['config'] == STUDENT and entry['command'] == 'the command'
    assert entry['val_AP'] is not None
    logged = [json.loads(line) for p in (tmp_path / 'w').glob('*/vis_data/scalars.json')
              for line in p.read_text().splitlines() if 'coco/bbox_mAP' in line]
    assert entry['val_AP'] == round(coco_row(logged[-1])['AP'], 1)
    full, shipped = torch.load(src), torch.load(dst)
    assert set(shipped) == {'state_dict', 'meta'} and 'optimizer' in full
    assert 'message_hub' not in shipped['meta'] and shipped['meta']['epoch'] == 1
    for k, v in full['state_dict'].items():
        assert torch.equal(shipped['state_dict'][k], v), k
    assert dst.stat().st_size < 0.6 * src.stat().st_size  # AdamW's two moments are gone
