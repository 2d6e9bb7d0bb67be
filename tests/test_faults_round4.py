"""Findings of the fourth probe and of the issue's last items: a refused --resume that wrote
into a live run's folder, the report's NumPy-ConvNet figure on runs with a validation split,
signals other than Ctrl-C, SIGTERM and SIGHUP, an --out_dir too long for the file system, and
the grid search's signals while it claims its folder and while it writes its results. Each
ends in one sentence, with no traceback and nothing half-written or lost."""

from quiet_start import STOP_SIGNALS

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, one_error, small_run
from fake_runs import fake_grid, fake_metrics

import gridsearch
import train_convnet_numpy
import train_mlp_numpy
from train_utils import lock_folder

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402


def leftovers(folder):
    """Temporary files and locks left in folder."""
    return [n for n in os.listdir(folder) if n.endswith('.tmp') or n == '.lock']


def test_a_refused_resume_leaves_the_running_runs_checkpoint_alone(
    fake_cifar, small_numpy_convnet, tmp_path, capsys
):
    """A --resume into the folder of a run still going copied its best.npz there before the
    folder's lock refused it."""
    done = tmp_path / 'done'
    train_convnet_numpy.main(small_run(fake_cifar, done, '--validation_size', '40'))
    live = tmp_path / 'live'
    live.mkdir()
    (live / 'best.npz').write_bytes(b"the live run's own best checkpoint")
    fd = lock_folder(str(live / '.lock'), str(live))  # as the live run holds it
    try:
        argv = ['--resume', str(done / 'last.npz'), '--out_dir', str(live), '--overwrite']
        assert train_convnet_numpy.main([*argv, '--max_steps', '5', '--data_dir', fake_cifar]) == 2
    finally:
        os.close(fd)
    assert 'is in use by another run that is still going' in one_error(capsys)
    assert (live / 'best.npz').read_bytes() == b"the live run's own best checkpoint"
    assert sorted(os.listdir(live)) == ['.lock', 'best.npz']  # the live run's own lock file


def test_a_resumed_run_brings_its_best_checkpoint_into_its_new_folder(
    fake_cifar, small_numpy_convnet, tmp_path
):
    done, moved = tmp_path / 'done', tmp_path / 'moved'
    train_convnet_numpy.main(small_run(fake_cifar, done, '--validation_size', '40'))
    argv = ['--resume', str(done / 'last.npz'), '--out_dir', str(moved), '--max_steps', '5']
    assert train_convnet_numpy.main([*argv, '--data_dir', fake_cifar]) == 0
    assert (moved / 'best.npz').exists() and not leftovers(moved)


def test_the_report_draws_a_numpy_convnet_pair_evaluated_on_validation(tmp_path, capsys):
    """make_report's NumPy-ConvNet figure read test_loss, which a run with a validation split
    does not have: a KeyError traceback and no tables."""
    for name, script in (('np', 'train_convnet_numpy.py'), ('pt', 'train_convnet_pytorch.py')):
        fake_metrics(tmp_path / name, script, validation_size=20)
    fake_grid(tmp_path / 'grid')
    runs = {
        'runs': {n: {'path': str(tmp_path / n)} for n in ('np', 'pt')},
        'gridsearch': {'path': str(tmp_path / 'grid')},
        'numpy_convnet': ['np', 'pt'],
    }
    (tmp_path / 'runs.json').write_text(json.dumps(runs))
    out = tmp_path / 'report'
    argv = ['--runs', str(tmp_path / 'runs.json'), '--out_dir', str(out), '--no-pdf']
    assert make_report.main(argv) == 0
    assert 'Traceback' not in capsys.readouterr().err
    assert (out / 'figures' / 'numpy_convnet.png').exists()
    assert (out / 'tables' / 'numpy_convnet.tex').exists()


@pytest.mark.parametrize(
    'signum', [s for s in STOP_SIGNALS if s not in (signal.SIGINT, signal.SIGTERM)]
)
def test_every_stop_signal_saves_the_run(signum, fake_cifar, tmp_path):
    """SIGUSR1 ended a run at once: no message, metrics.json left "running", a stale .lock."""
    out = tmp_path / 'run'
    argv = small_run(fake_cifar, out, '--max_steps', '1000000', '--eval_freq', '20')
    script = os.path.join(ROOT, 'train_mlp_numpy.py')
    process = subprocess.Popen([sys.executable, script, *argv], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / 'metrics.json').exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # past its imports and first evaluation: the run's handlers are set
    process.send_signal(signum)
    assert process.wait(timeout=60) == 128 + signum
    err = process.stderr.read()
    assert 'Traceback' not in err, err
    assert f'Stopped by {signal.Signals(signum).name} after step' in err
    assert json.loads((out / 'metrics.json').read_text())['status'] == 'interrupted'
    assert (out / 'curves.png').exists() and not leftovers(out)


@pytest.mark.parametrize('script', [train_mlp_numpy, gridsearch], ids=['train script', 'grid'])
def test_an_out_dir_too_long_for_the_file_system(script, fake_cifar, tmp_path, capsys):
    """makedirs made the folders above the name it could not make, and left them."""
    too_deep = tmp_path.joinpath(*['d' * 200] * 25)  # over PATH_MAX
    too_wide = tmp_path / 'x' / ('n' * 300)  # a name over NAME_MAX
    for out in (too_deep, too_wide):
        argv = ['--data_dir', fake_cifar, '--out_dir', str(out)]
        assert script.main(argv) == 2
        assert one_error(capsys).endswith(
            '--out_dir is too long for the file system: at most 255 bytes a name and '
            f'{os.pathconf("/", "PC_PATH_MAX") - 100} in all.'
        )
        assert os.listdir(tmp_path) == ['cifar-10-batches-py']


def test_a_signal_while_the_grid_claims_its_folder(fake_cifar, tmp_path, capsys, monkeypatch):
    """Between the claim and the search's own handlers, a signal ended the process with the
    folder and its lock left behind."""

    def signalled(args, out_dir, argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives here

    monkeypatch.setattr(gridsearch, 'search', signalled)
    out = tmp_path / 'grid'
    assert gridsearch.main(['--data_dir', fake_cifar, '--out_dir', str(out)]) == 143
    assert one_error(capsys) == 'Interrupted; no results were written.'
    assert not out.exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_while_the_grid_writes_waits_for_whole_results(
    fake_cifar, tmp_path, capsys, monkeypatch
):
    write_results = gridsearch.write_results

    def signalled(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # held off until every file is written
        write_results(*args)

    monkeypatch.setattr(gridsearch, 'write_results', signalled)
    out = tmp_path / 'grid'
    tiny = ['--batch_size', '16', '--learning_rate', '0.01', '--hidden_units', '16']
    argv = [*tiny, '--max_epochs', '1', '--cv', '2', '--data_dir', fake_cifar]
    assert gridsearch.main([*argv, '--out_dir', str(out)]) == 143
    assert one_error(capsys) == 'Stopped by SIGTERM once they were written.'
    assert {'best.json', 'results.tex', 'heatmap.png'} <= set(os.listdir(out))
    assert not leftovers(out)
