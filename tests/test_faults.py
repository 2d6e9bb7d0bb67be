"""The faults a hostile probe found, one regression test each (items of the issue "Nothing
lost, no traceback"): no run is lost, SIGTERM is Ctrl-C, and what a user can cause is one
sentence, never a traceback. The grid-search items (2, 6) are in test_gridsearch.py, the
report's (10) in test_report.py; the decoded-data cache of item 11 no longer exists."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, find_real_cifar, small_run

import train_convnet_pytorch
import train_mlp_numpy
import train_mlp_pytorch
import train_utils
from cifar10_utils import DataSet
from train_utils import Run, check_finite

SCRIPTS = [train_mlp_numpy, train_mlp_pytorch, train_convnet_pytorch]
SCRIPT_IDS = ['numpy', 'pytorch', 'convnet']


def last_error(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any('Traceback' in line for line in lines)
    return lines[-1]


@pytest.mark.parametrize('script', SCRIPTS, ids=SCRIPT_IDS)
def test_a_folder_holding_a_run_is_not_overwritten(
    script, fake_cifar, small_convnet, tmp_path, capsys, monkeypatch
):
    """Item 1: a second run sent to the folder of the first is refused, before any data is
    loaded (here: there is none), unless --overwrite asks for it."""
    out = tmp_path / 'run'
    assert script.main(small_run(fake_cifar, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setenv('CIFAR10_DOWNLOAD', '0')
    assert script.main(small_run(str(tmp_path / 'no-data'), out)) == 2
    hint = f', continue it with --resume {out}/last.pt' if script is train_convnet_pytorch else ''
    assert last_error(capsys).endswith(
        f'error: --out_dir {out} already holds a run; choose a '
        f'new folder{hint}, or pass --overwrite to replace its '
        'files.'
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert script.main(small_run(fake_cifar, out, '--overwrite', '--seed', '7')) == 0
    with open(out / 'metrics.json') as f:
        assert json.load(f)['flags']['seed'] == 7


@pytest.mark.parametrize('script', SCRIPTS, ids=SCRIPT_IDS)
def test_an_out_dir_that_cannot_be_written_is_refused_first(
    script, fake_cifar, small_convnet, tmp_path, read_only_dir, capsys
):
    """Items 3 and 5: a read-only folder, or a file, as --out_dir: one sentence, exit 2,
    before the data is loaded or a step is taken."""
    a_file = tmp_path / 'a-file'
    a_file.write_text('')
    for out, reason in ((a_file, 'Not a directory'), (f'{read_only_dir}/run', None)):
        assert script.main(small_run(str(tmp_path / 'no-data'), out)) == 2
        error = last_error(capsys)
        assert f'error: cannot write to --out_dir {out} (' in error
        assert reason is None or reason in error
    assert a_file.read_text() == ''


@pytest.mark.parametrize('script', SCRIPTS, ids=SCRIPT_IDS)
def test_sigterm_stops_like_ctrl_c(
    script, fake_cifar, small_convnet, tmp_path, monkeypatch, capsys
):
    """Item 4: SIGTERM mid-step finishes the step, saves what Ctrl-C saves, marks the run
    'interrupted' and exits 143 (128 + 15)."""
    next_batch, calls = DataSet.next_batch, []

    def sigterm_in_second_step(self, batch_size):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return next_batch(self, batch_size)

    monkeypatch.setattr(DataSet, 'next_batch', sigterm_in_second_step)
    out = tmp_path / 'run'  # not made yet: the first evaluation (step 50) is not reached
    assert script.main(small_run(fake_cifar, out, '--max_steps', '50', '--eval_freq', '50')) == 143
    with open(out / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['status'] == 'interrupted' and metrics['steps'] == [1, 2]
    assert (out / 'curves.png').exists()
    err = capsys.readouterr().err
    assert f'Stopped by SIGTERM after step 2; metrics so far are in {out}.' in err
    if script is train_convnet_pytorch:  # item 13: the step saved is the step reported
        assert f'Saved step 2 to {out}/last.pt' in err
        assert train_convnet_pytorch.read_checkpoint(out / 'last.pt')['step'] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_from_outside(fake_cifar, tmp_path):
    """Item 4, as a scheduler sends it: another process signals the running script."""
    out = tmp_path / 'run'
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, 'train_mlp_numpy.py'),
            *small_run(fake_cifar, out, '--max_steps', '1000000', '--eval_freq', '1'),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (out / 'metrics.json').exists():  # the first evaluation has been saved
        assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and 'Traceback' not in err
    with open(out / 'metrics.json') as f:
        assert json.load(f)['status'] == 'interrupted'


def test_a_finite_loss_jump_is_not_divergence(tmp_path):
    """Item 12: a softmax classifier's loss may leap from 2.4 to 70 and recover; only a loss
    that is not finite stops a run."""
    with Run('train_x.py', {}, str(tmp_path / 'run')) as run:
        for step, loss in enumerate([2.4, 70.0, 30.0, 1.9], start=1):
            run.log_step(step, loss)
    assert run.metrics['status'] == 'completed'
    with pytest.raises(FloatingPointError, match='became nan at step 2'):
        with Run('train_x.py', {}, str(tmp_path / 'nan')) as run:
            for step, loss in enumerate([2.4, float('nan')], start=1):
                run.log_step(step, loss)
                check_finite('training loss', loss, step)
    assert run.metrics['status'] == 'diverged'


def test_divergence_message_has_its_own_line(fake_cifar, tmp_path):
    """Item 13: the error is not glued to the progress bar's line."""
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'train_mlp_numpy.py'),
            *small_run(fake_cifar, tmp_path / 'run', '--learning_rate', '1e30'),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert '\ntrain_mlp_numpy.py: error: The training loss became' in result.stderr


def test_tests_find_the_data_where_the_scripts_do(fake_cifar, tmp_path, monkeypatch):
    """Item 14: with CIFAR10_DIR unset, the real-data tests use cifar10/cifar-10-batches-py,
    where the scripts download it."""
    monkeypatch.delenv('CIFAR10_DIR', raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_real_cifar() in (None, os.path.join(ROOT, 'cifar10/cifar-10-batches-py'))
    os.makedirs('cifar10')
    os.rename(fake_cifar, 'cifar10/cifar-10-batches-py')
    assert find_real_cifar() == 'cifar10/cifar-10-batches-py'
    monkeypatch.setenv('CIFAR10_DIR', str(tmp_path / 'elsewhere'))
    assert find_real_cifar() is None


@pytest.mark.parametrize('case', ['data_dir is a file', 'read-only parent', 'not a URL'])
def test_data_faults_are_one_sentence(case, tmp_path, read_only_dir, monkeypatch, capsys):
    """Items 7, 8 and 9: --data_dir a file, a download into a folder that cannot be
    written, CIFAR10_URL that is no URL."""
    a_file = tmp_path / 'a-file'
    a_file.write_text('')
    data_dir, expected = {
        'data_dir is a file': (
            a_file,
            f'error: {a_file} is not a folder; point --data_dir or '
            'CIFAR10_DIR at the folder with data_batch_1..5',
        ),
        'read-only parent': (
            f'{read_only_dir}/cifar10/batches',
            f'error: Cannot download CIFAR-10 into {read_only_dir}',
        ),
        'not a URL': (
            tmp_path / 'cifar10',
            "error: Could not download CIFAR-10 from notaurl (unknown url type: 'notaurl')",
        ),
    }[case]
    monkeypatch.setenv('CIFAR10_URL', 'notaurl')
    assert (
        train_mlp_numpy.main(['--data_dir', str(data_dir), '--out_dir', str(tmp_path / 'run')]) == 1
    )
    assert expected in last_error(capsys)
    assert not (tmp_path / 'run').exists()


def test_a_torn_step_promises_no_checkpoint(
    fake_cifar, small_convnet, tmp_path, monkeypatch, capsys
):
    """Item 13: a second Ctrl-C stops mid-step, before any evaluation: no last.pt exists, and
    no message points to one."""
    next_batch = DataSet.next_batch

    def two_ctrl_c(self, batch_size):
        os.kill(os.getpid(), signal.SIGINT)  # the first asks to stop after this step
        os.kill(os.getpid(), signal.SIGINT)  # the second stops at once
        return next_batch(self, batch_size)

    monkeypatch.setattr(DataSet, 'next_batch', two_ctrl_c)
    out = tmp_path / 'run'
    assert train_convnet_pytorch.main(small_run(fake_cifar, out)) == 130
    err = capsys.readouterr().err
    assert 'Traceback' not in err and 'last.pt' not in err and '--resume' not in err
    assert f'Stopped by SIGINT after step 0; metrics so far are in {out}.' in err
    assert not (out / 'last.pt').exists()
    with open(out / 'metrics.json') as f:
        assert json.load(f)['status'] == 'interrupted'


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    """Without --out_dir (or with an empty one) each run takes a new folder under runs/, named
    by the second it started; two started together both pick the name, and the one that writes
    second takes the name with -2 instead of writing into the other's folder."""

    class Frozen(train_utils.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(train_utils, 'datetime', Frozen)
    monkeypatch.chdir(tmp_path)
    first, second = Run('train_x.py', {'seed': 1}), Run('train_x.py', {'seed': 2}, out_dir='')
    for run in (second, first, Run('train_x.py', {'seed': 3})):
        with run:
            run.log_step(1, 2.3)
    folders = {run.metrics['flags']['seed']: run.out_dir for run in (first, second, run)}
    assert folders == {
        2: 'runs/train_x-20260102-030405',
        1: 'runs/train_x-20260102-030405-2',
        3: 'runs/train_x-20260102-030405-3',
    }
    for seed, folder in folders.items():
        with open(os.path.join(folder, 'metrics.json')) as f:
            metrics = json.load(f)
        assert metrics['flags']['seed'] == seed and metrics['out_dir'] == folder


def test_ctrl_c_while_the_run_is_saved_does_not_cut_the_save_short(tmp_path, monkeypatch):
    """A Ctrl-C that lands after the last step, while metrics.json and curves.png are written,
    lets the run end as completed: the handlers stay until the save is done."""
    plot = train_utils.plot_curves

    def ctrl_c_while_plotting(metrics, path):
        os.kill(os.getpid(), signal.SIGINT)
        plot(metrics, path)

    monkeypatch.setattr(train_utils, 'plot_curves', ctrl_c_while_plotting)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with Run('train_x.py', {}, str(tmp_path / 'run')) as run:
            run.log_step(1, 2.3)
    except KeyboardInterrupt:
        pytest.fail('the Ctrl-C cut the final save short')
    with open(tmp_path / 'run' / 'metrics.json') as f:
        assert json.load(f)['status'] == 'completed'
    assert (tmp_path / 'run' / 'curves.png').exists()
    assert signal.getsignal(signal.SIGINT) == handler


@pytest.mark.parametrize('script', SCRIPTS, ids=SCRIPT_IDS)
def test_ctrl_c_before_the_first_step_is_one_sentence(
    script, fake_cifar, small_convnet, tmp_path, monkeypatch, capsys
):
    """Ctrl-C while the data loads: exit 130, one sentence, no folder."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(script.cifar10_utils, 'get_cifar10', interrupted)
    assert script.main(small_run(fake_cifar, tmp_path / 'run')) == 130
    assert last_error(capsys) == 'Interrupted before the first step; nothing was saved.'
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
    'script, kwargs, message',
    [
        (train_mlp_numpy, {'eval_freq': 0}, 'eval_freq must be an integer > 0, got 0.'),
        (
            train_mlp_pytorch,
            {'max_steps': 0},
            'max_steps must be an integer from 1 to 100000000, got 0.',
        ),
        (
            train_convnet_pytorch,
            {'seed': -1},
            'seed must be an integer from 0 to 4294967295, got -1.',
        ),
        (train_mlp_numpy, {'dnn_hidden_units': 'abc'}, 'expected comma-separated positive'),
        (
            train_mlp_pytorch,
            {'dnn_hidden_units': [0]},
            'dnn_hidden_units must be a list of positive',
        ),
        (train_mlp_numpy, {'dnn_hidden_units': 100}, 'dnn_hidden_units must be a list of positive'),
        (train_convnet_pytorch, {'device': 'tpu'}, 'device must be one of auto, cpu, cuda'),
    ],
    ids=['eval_freq', 'max_steps', 'seed', 'hidden-text', 'hidden-zero', 'hidden-int', 'device'],
)
def test_bad_values_from_python_are_one_sentence_before_the_data(
    script, kwargs, message, small_convnet, tmp_path, monkeypatch
):
    """train(...) checks what the command line's types check, before the data loads (here
    there is none to load: a check made after it would fail on the data instead)."""
    monkeypatch.setenv('CIFAR10_DOWNLOAD', '0')
    with pytest.raises(ValueError, match=message):
        script.train(data_dir=str(tmp_path / 'no-data'), out_dir=str(tmp_path / 'run'), **kwargs)
    assert not (tmp_path / 'run').exists()


def test_sigterm_during_the_download_leaves_nothing(tmp_path, monkeypatch, capsys):
    """SIGTERM while CIFAR-10 downloads stops it as Ctrl-C does: the partial archive is
    deleted, exit 143."""

    class Response:  # a download that a scheduler's SIGTERM interrupts
        headers = {}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read1(self, size):
            os.kill(os.getpid(), signal.SIGTERM)
            return b'x' * 1000

    monkeypatch.setattr(
        train_mlp_numpy.cifar10_utils.urllib.request, 'urlopen', lambda url, timeout: Response()
    )
    data_dir = tmp_path / 'data' / 'cifar-10-batches-py'
    assert (
        train_mlp_numpy.main(['--data_dir', str(data_dir), '--out_dir', str(tmp_path / 'run')])
        == 143
    )
    err = capsys.readouterr().err
    assert 'Traceback' not in err and 'Download interrupted; nothing was kept.' in err
    assert err.strip().splitlines()[-1] == 'Interrupted before the first step; nothing was saved.'
    assert os.listdir(tmp_path) == []  # not even the data folder the download made
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
