"""Silent wrong results become clear errors: checkpoints that do not fit, resumes that would mix
runs, ``--cfg-options`` that would be ignored, recipe mistakes; outputs others can read."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from distill.checkpoint import check_checkpoint
from distill.cli import test as test_cli
from distill.cli import train as train_cli
from distill.cli import train_distill
from distill.cli.common import load_config
from distill.compat import atomic_write
from distill.errors import (
    CheckpointError,
    ConfigError,
    RecipeError,
    ResumeMismatchError,
    WorkDirError,
)
from distill.export import export_student
from tests.helpers import TINY_RUN, save_detector_checkpoint

STUDENT = 'configs/tiny/gfl_s_digits.py'
TEACHER = 'configs/tiny/gfl_l_digits.py'
SMALL = TINY_RUN
ENV = dict(os.environ, OMP_NUM_THREADS='1')


def _distill(work, recipe, teacher_ckpt, epochs=1, extra=()):
    args = train_distill.parse_args(
        ['--student', STUDENT, '--teacher', TEACHER, '--teacher-ckpt', teacher_ckpt,
         '--recipe', recipe, '--work-dir', str(work), '--epochs', str(epochs), *extra])
    args.cfg_options = dict(SMALL)
    return train_distill.build_runner(args)


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp('teachers')
    return [save_detector_checkpoint(TEACHER, root / f'teacher{s}.pth', s) for s in (1, 2)]


@pytest.fixture(scope='module')
def distill_run(tmp_path_factory, teachers):
    """One epoch of kd_ld_vlr: its work dir."""
    work = tmp_path_factory.mktemp('distill_run')
    _distill(work, 'kd_ld_vlr', teachers[0]).train()
    return work


# ------------------------------------------------------------------ 1. checkpoints that do not fit
def test_test_tool_refuses_another_models_checkpoint(tmp_path):
    other = save_detector_checkpoint(TEACHER, tmp_path / 'gfl_l.pth')
    with pytest.raises(CheckpointError, match=r'gfl_l\.pth.*does not fit config .*gfl_s_digits'
                                              r'.*shape mismatch') as e:
        test_cli.evaluate(STUDENT, other, str(tmp_path / 'w'), dict(SMALL))
    assert '\n' not in str(e.value)


def test_test_tool_and_export_name_the_export_command_for_a_distill_checkpoint(distill_run,
                                                                              tmp_path):
    ckpt = str(distill_run / 'epoch_1.pth')
    with pytest.raises(CheckpointError) as e:
        test_cli.evaluate(STUDENT, ckpt, str(tmp_path / 'w'), dict(SMALL))
    run_cfg = str(distill_run / 'gfl_s_digits.py')
    assert "is a distillation run's checkpoint" in str(e.value)
    assert (f'distill-export-student {run_cfg} {ckpt} '
            f'{str(distill_run / "epoch_1")}_student') in str(e.value)
    # the same checkpoint with the run's own config evaluates, and the export round trip works
    test_cli.evaluate(run_cfg, ckpt, str(tmp_path / 'w2'), dict(SMALL))
    out_ckpt, out_cfg = export_student(run_cfg, ckpt, str(tmp_path / 'student'))
    test_cli.evaluate(out_cfg, out_ckpt, str(tmp_path / 'w3'), dict(SMALL))


def test_export_refuses_a_checkpoint_of_another_student(distill_run, tmp_path):
    # a "distill checkpoint" whose student is the large model: keys fit the prefix, not the config
    big = torch.load(save_detector_checkpoint(TEACHER, tmp_path / 'l.pth'))['state_dict']
    path = tmp_path / 'foreign_run.pth'
    torch.save({'state_dict': {f'architecture.{k}': v for k, v in big.items()}}, path)
    with pytest.raises(CheckpointError, match='does not fit the student of .*gfl_s_digits.py'):
        export_student(str(distill_run / 'gfl_s_digits.py'), str(path), str(tmp_path / 'x'))
    assert not (tmp_path / 'x.pth').exists()


def test_load_from_of_another_model_is_refused_before_training(tmp_path):
    other = save_detector_checkpoint(TEACHER, tmp_path / 'gfl_l.pth')
    args = train_cli.parse_args([STUDENT, '--work-dir', str(tmp_path / 'w'), '--epochs', '1'])
    args.cfg_options = dict(SMALL, load_from=other)
    with pytest.raises(CheckpointError, match='does not fit'):
        train_cli.build_runner(args)


@pytest.mark.parametrize('content,match', [
    (b'', 'empty file'), (b'{"state_dict": {}}', 'cannot be loaded'),
    (None, 'is a directory')])
def test_empty_foreign_and_directory_checkpoints(tmp_path, content, match):
    path = tmp_path / 'ckpt.pth'
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        check_checkpoint(str(path))
    assert str(path) in str(e.value)
    lst = tmp_path / 'list.pth'
    torch.save([torch.zeros(2)], lst)
    with pytest.raises(CheckpointError, match='holds no state_dict of tensors .*list'):
        check_checkpoint(str(lst))


# ----------------------------------------------------------------------------- 2. resume
def test_resume_refuses_another_recipe_teacher_or_student_and_names_each_field(distill_run,
                                                                              teachers, tmp_path):
    # a copy: a successful resume build rewrites the run's config in its work dir
    import shutil
    shutil.copytree(distill_run, tmp_path / 'run')
    distill_run = tmp_path / 'run'
    (distill_run / 'last_checkpoint').write_text(str(distill_run / 'epoch_1.pth'))
    with pytest.raises(ResumeMismatchError) as e:
        _distill(distill_run, 'ld', teachers[0], epochs=2, extra=['--resume'])
    msg = str(e.value)
    assert 'recipe: kd_ld_vlr' in msg and "in the checkpoint vs ld (edges ['main_ld']) now" in msg
    assert 'teacher checkpoint' not in msg and 'student config' not in msg
    with pytest.raises(ResumeMismatchError, match='teacher checkpoint: .*teacher1.pth.*teacher2'):
        _distill(distill_run, 'kd_ld_vlr', teachers[1], epochs=2, extra=['--resume'])
    args = train_distill.parse_args(
        ['--student', STUDENT, '--teacher', TEACHER, '--teacher-ckpt', teachers[0], '--recipe',
         'kd_ld_vlr', '--work-dir', str(distill_run), '--epochs', '2', '--resume'])
    args.cfg_options = dict(SMALL, **{'model.bbox_head.reg_max': 8})
    with pytest.raises(ResumeMismatchError, match=r'student config: .*reg_max: 16 -> 8'):
        train_distill.build_runner(args)
    # the same run resumes; an explicit override resumes a mismatch (and says so)
    _distill(distill_run, 'kd_ld_vlr', teachers[0], epochs=2, extra=['--resume'])
    runner = _distill(distill_run, 'ld', teachers[0], epochs=2, extra=['--resume',
                                                                        '--force-resume'])
    assert runner.cfg.load_from.endswith('epoch_1.pth')


def test_explicit_resume_checkpoint_continues_exactly(tmp_path):
    def run(work, epochs, *extra):
        args = train_cli.parse_args([STUDENT, '--work-dir', str(work), *extra])
        args.cfg_options = dict(SMALL, **{'train_cfg.max_epochs': epochs})
        runner = train_cli.build_runner(args)
        runner.train()
        return runner

    run(tmp_path / 'a', 2)
    # resume in ANOTHER work dir from a's first epoch: the same weights as a's second epoch
    resumed = run(tmp_path / 'b', 2, '--resume', str(tmp_path / 'a' / 'epoch_1.pth'))
    assert resumed.iter == 4
    a = torch.load(tmp_path / 'a' / 'epoch_2.pth')['state_dict']
    b = torch.load(tmp_path / 'b' / 'epoch_2.pth')['state_dict']
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-5, atol=1e-6, msg=k)
    # checkpoints and configs are readable by others (the mode of an ordinary write)
    for f in ('epoch_2.pth', 'last_checkpoint'):
        assert stat.S_IMODE(os.stat(tmp_path / 'b' / f).st_mode) == 0o666 & ~_umask(), f


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_resume_without_anything_to_resume(tmp_path):
    def build(work, *extra):
        args = train_cli.parse_args([STUDENT, '--work-dir', str(work), '--resume', *extra])
        args.cfg_options = dict(SMALL)
        return train_cli.build_runner(args)

    with pytest.raises(WorkDirError, match='nothing to resume in work dir .*no last_checkpoint'):
        build(tmp_path / 'empty')
    (tmp_path / 'gone').mkdir()
    (tmp_path / 'gone' / 'last_checkpoint').write_text(str(tmp_path / 'gone' / 'epoch_3.pth'))
    with pytest.raises(WorkDirError, match='points to .*epoch_3.pth.*which does not exist'):
        build(tmp_path / 'gone')
    (tmp_path / 'file').write_text('x')
    with pytest.raises(WorkDirError, match='exists and is a file, not a directory'):
        build(tmp_path / 'file')
    exported = tmp_path / 'plain.pth'
    save_detector_checkpoint(STUDENT, exported)
    with pytest.raises(CheckpointError, match='not a training checkpoint.*load_from='):
        build(tmp_path / 'x', str(exported))


# ----------------------------------------------------------------------------- 3. cfg-options
@pytest.mark.parametrize('key,match', [
    ('max_epochs', r"'max_epochs' is a variable of the config file.*changes nothing.*"
                   r"train_cfg\.max_epochs.*--epochs"),
    ('train_cfg.max_epoch', r"'train_cfg\.max_epoch' does not exist.*train_cfg\.max_epochs"),
    ('model.bbox_hed.num_classes', r"'model\.bbox_hed' does not exist.*model\.bbox_head"),
    ('lerning_rate', "'lerning_rate' exists nowhere in the config"),
    ('param_scheduler.5.milestones', 'is a list of 2 items.*not an index'),
    ('model.bbox_head.num_classes.x', 'is 10 in .*not a dict'),
])
def test_cfg_options_that_would_be_ignored_are_errors(key, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(STUDENT, {key: 1})
    assert 'gfl_s_digits.py' in str(e.value) and '\n' not in str(e.value)


def test_cfg_options_accept_new_arguments_and_epochs_scale_the_schedule():
    cfg = load_config(STUDENT, {'train_dataloader.dataset.indices': 8,
                                'param_scheduler.1.gamma': 0.5}, epochs=6)
    assert cfg.train_dataloader.dataset.indices == 8
    assert cfg.train_cfg.max_epochs == 6 and cfg.train_cfg.val_interval == 2
    assert cfg.param_scheduler[1].milestones == [4, 5]  # 16 and 22 of 24, scaled
    assert cfg.param_scheduler[1].end == 6 and cfg.param_scheduler[1].gamma == 0.5
    assert cfg.param_scheduler[0].end == 200  # the iteration-based warm-up is not scaled


# ----------------------------------------------------------------------------- 4-5. outputs
@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_mode_of_an_ordinary_write(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(b'x', tmp_path / 'atomic')
        with open(tmp_path / 'plain', 'wb') as f:
            f.write(b'x')
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / 'atomic').st_mode) == \
        stat.S_IMODE(os.stat(tmp_path / 'plain').st_mode) == 0o666 & ~umask
    os.chmod(tmp_path / 'atomic', 0o640)  # replacing a file keeps its mode
    atomic_write(b'y', tmp_path / 'atomic')
    assert stat.S_IMODE(os.stat(tmp_path / 'atomic').st_mode) == 0o640


def test_test_out_is_strict_json_with_null_for_undefined_ap(distill_run, tmp_path):
    out = tmp_path / 'm.json'
    opts = [f'{k}={v}' for k, v in SMALL.items()]
    test_cli.main([str(distill_run / 'gfl_s_digits.py'), str(distill_run / 'epoch_1.pth'),
                   '--work-dir', str(tmp_path / 'w'), '--out', str(out),
                   '--cfg-options', *opts, 'model.architecture.test_cfg.score_thr=0.0'])

    def refuse(name):
        raise ValueError(f'non-standard JSON constant {name}')
    record = json.loads(out.read_text(), parse_constant=refuse)
    assert record['ap']['APl'] is None  # no object larger than 96 px: pycocotools' -1
    assert record['metrics']['coco/bbox_mAP_l'] == -1.0


# ----------------------------------------------------------------------------- 7. recipes
@pytest.mark.parametrize('edge,match', [
    ("dict(name='e', loss=dict(type='LDloss'), student=dict(tap='head', index=1), "
     "teacher=dict(tap='head', index=1), region=dict(type='MainRegion'))",
     r"edge 'e': loss.type='LDloss' is not a registered loss \(did you mean \['LDLoss'\]"),
    ("dict(name='e', loss=dict(type='LDLoss'), student=dict(tap='heads', index=1), "
     "teacher=dict(tap='head', index=1), region=dict(type='MainRegion'))",
     r"edge 'e': student.tap='heads' does not exist; the student taps are \['assign', 'head'\]"),
    ("dict(name='e', loss=dict(type='LDLoss'), student=dict(tap='head', index=1), "
     "teacher=dict(tap='head', index=1))", r"edge 'e' misses field\(s\) \['region'\]"),
    ("dict(name='e', loss=dict(type='LDLoss', temperature=3), student=dict(tap='head'), "
     "teacher=dict(tap='head'), region=dict(type='MainRegion'))",
     r"loss=.*unexpected keyword argument 'temperature' "
     r"\(LDLoss takes \['T', 'loss_weight', 'bins'\]"),
    ("dict(name='e', loss=dict(type='KDLoss'), student=dict(tap='head'), "
     "teacher=dict(tap='head'), region=dict(type='VLRegion'))",
     r"region.type='VLRegion' is not a registered region \(did you mean \['VLRRegion'"),
    ("dict(name='e', loss=dict(type='KDLoss'), student=dict(tap='head'), "
     "teacher=dict(tap='head'), region=dict(type='MainRegion'), normalise='count')",
     r"unknown field\(s\) \['normalise'\] \(did you mean \['normalize'\]"),
    ("dict(name='e', loss=dict(type='LDLoss'), student=dict(tap='head', index=1), "
     "teacher=dict(tap='head', index=1), region=dict(type='MainRegion'), normalize='mean')",
     r"normalize='mean', expected one of \['weight', 'count', 'positives'\] or a positive number"),
    ("dict(name='e', loss=dict(type='LDLoss'), student=dict(tap='head', index=1), "
     "teacher=dict(tap='head', index=1), region=dict(type='MainRegion'), normalize=-4)",
     r"normalize=-4, expected one of"),
    # named outputs
    ("dict(name='e', loss=dict(type='LDLoss'), student=dict(output='box_dist', index=1), "
     "teacher=dict(output='box_dist'), region=dict(type='MainRegion'))",
     r"edge 'e': student has unknown field\(s\) \['index'\] \(a reference has \['output', "
     r"'of'\]; a cross-head output, of='cross', also \['layer', 'student_layer', 'align'\]\)"),
    ("dict(name='e', loss=dict(type='LDLoss'), student=dict(output='box_dist', of='teacher'), "
     "teacher=dict(output='box_dist'), region=dict(type='MainRegion'))",
     r"edge 'e': student.of='teacher' must be one of \['student', 'cross'\]"),
    ("dict(name='e', loss=dict(type='LDLoss'), student=dict(output='box_dist'), "
     "teacher=dict(output='box_dist', of='self'), region=dict(type='MainRegion'))",
     r"edge 'e': teacher.of='self' must be one of \['student', 'teacher'\]"),
    ("dict(name='e', loss=dict(type='LDLoss'), student=dict(index=1), "
     "teacher=dict(output='box_dist'), region=dict(type='MainRegion'))",
     r"edge 'e': student=\{'index': 1\} must be dict\(output=<head output name>\)"),
    ("dict(name='e', loss=dict(type='SDRLoss'), student=dict(output='box_stage1'), "
     "teacher=dict(output='boxes', of='student'), region=dict(type='MainRegion'), "
     "targets=dict(gt_boxes=3))",
     r"edge 'e': targets=\{'gt_boxes': 3\} must be dict\(<loss argument>=<student output"),
])
def test_recipe_mistakes_name_the_recipe_file_and_the_edge(tmp_path, teachers, edge, match):
    recipe = tmp_path / 'my_recipe.py'
    recipe.write_text(f'edges = [{edge}]\n')
    with pytest.raises(RecipeError, match=match) as e:
        train_distill.build_distill_config(STUDENT, str(recipe), TEACHER, teachers[0])
    assert str(e.value).startswith(f'{recipe}: ')


def test_recipes_combine_and_a_teacher_is_built_only_when_read(tmp_path, teachers):
    """``--recipe a b``: the edges concatenated, one work dir name; SDR alone needs no teacher
    (one given is not built); a teacher's recipe without a teacher, or two recipes with the
    same edge name, are errors naming the recipe files."""
    both = train_distill.build_distill_config(STUDENT, ['kd_ld_vlr', 'sdr'], TEACHER, teachers[0])
    assert [e['name'] for e in both.model.edges] == ['main_kd', 'main_ld', 'vlr_ld', 'sdr']
    assert both.distill.recipe == 'kd_ld_vlr+sdr' and both.work_dir.endswith('__kd_ld_vlr+sdr')
    assert 'teacher' in both.model
    plus = train_distill.build_distill_config(STUDENT, 'kd_ld_vlr+sdr', TEACHER, teachers[0])
    assert plus.model.edges == both.model.edges
    sdr = train_distill.build_distill_config(STUDENT, 'sdr', TEACHER, teachers[0])
    assert 'teacher' not in sdr.model and sdr.distill.teacher is None
    with pytest.raises(ConfigError, match=r"recipes/kd.py has edges \['main_kd'\] that read a "
                                          r"teacher: give --teacher"):
        train_distill.build_distill_config(STUDENT, 'kd')
    with pytest.raises(RecipeError, match=r"recipes .*ld.py.*ld_vlr.py.* both have edge\(s\) "
                                          r"\['main_ld'\]"):
        train_distill.build_distill_config(STUDENT, ['ld', 'ld_vlr'], TEACHER, teachers[0])


# ------------------------------------------------------------- 8. our errors are the last line
def test_cli_error_is_the_last_line_with_exit_status_2(tmp_path, teachers, repo):
    recipe = tmp_path / 'bad.py'
    recipe.write_text("edges = [dict(name='e', loss=dict(type='KDLoss'), student=dict(tap='x'),"
                      " teacher=dict(tap='head'), region=dict(type='MainRegion'))]\n")
    other = save_detector_checkpoint(TEACHER, tmp_path / 'gfl_l.pth')
    cases = [
        ([str(repo / 'tools' / 'train_distill.py'), '--student', STUDENT, '--teacher', TEACHER,
          '--teacher-ckpt', teachers[0], '--recipe', str(recipe)],
         f"error: {recipe}: edge 'e': student.tap='x' does not exist"),
        # after the Runner has printed its environment and config: still the last line
        ([str(repo / 'tools' / 'test.py'), STUDENT, other, '--work-dir', str(tmp_path / 'w'),
          '--cfg-options', 'test_dataloader.num_workers=0',
          'test_dataloader.persistent_workers=False'],
         f"error: model checkpoint '{other}' does not fit config"),
        ([str(repo / 'tools' / 'train.py'), STUDENT, '--cfg-options', 'max_epochs=1'],
         "error: --cfg-options max_epochs: 'max_epochs' is a variable"),
    ]
    for cmd, expected in cases:
        proc = subprocess.run([sys.executable, *cmd], cwd=repo, env=ENV, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert lines[-1].startswith(expected), lines[-3:]
        assert 'Traceback' not in proc.stderr


def test_console_scripts_find_the_package_configs_from_any_directory(tmp_path, teachers):
    script = os.path.join(os.path.dirname(sys.executable), 'distill-train-distill')
    opts = [f'{k}={v}' for k, v in SMALL.items()]
    proc = subprocess.run(
        [script, '--student', STUDENT, '--teacher', TEACHER, '--teacher-ckpt', teachers[0],
         '--recipe', 'kd', '--epochs', '1', '--cfg-options', *opts],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    work = tmp_path / 'work_dirs' / 'gfl_s_digits__kd'
    assert (work / 'epoch_1.pth').is_file() and (work / 'curves.png').is_file()


# ----------------------------------------------------------------------------- 9. config files
@pytest.mark.parametrize('text,match', [
    ('model = dict(type="GFL"\n', r'cannot be loaded \(SyntaxError'),
    ("_base_ = ['does_not_exist.py']\n", r'cannot be loaded \(FileNotFoundError'),
    ('x = 1\n', 'has no model dict: not a detector config'),
])
def test_broken_config_files_are_named(tmp_path, text, match):
    path = tmp_path / 'broken.py'
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(str(path))
    assert str(path) in str(e.value)
    with pytest.raises(ConfigError, match=r"config file 'nope\.py' not found \(looked in the "
                                          r'current directory'):
        load_config('nope.py')


def test_distributed_launch_ends_with_our_error(tmp_path, teachers, repo):
    """torchrun prints its own failure report after the ranks'; the launcher repeats our line."""
    env = dict(ENV, PORT='29547', PYTHON=sys.executable)
    proc = subprocess.run(
        ['bash', str(repo / 'tools' / 'dist_train_distill.sh'), '2', '--student', STUDENT,
         '--teacher', TEACHER, '--teacher-ckpt', teachers[0], '--recipe', 'no_such_recipe'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: --recipe 'no_such_recipe' is neither a file nor one of")
