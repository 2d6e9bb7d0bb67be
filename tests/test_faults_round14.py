"""Findings of the twelfth probe and the leftovers of the thirteenth round: a ConvNet run
resumed with another --eval_freq or --flip_test (its evaluations, which choose the best
checkpoint, no longer those of the run its record describes); the temporary files of a killed
run, which no later run removed; a fractional step count in a checkpoint; a download answer
that came after the deadline, left open."""

import errno
import json
import os
import resource
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, one_error, small_run, write_fake_cifar
from test_faults_round2 import full_disk
from test_faults_round11 import grid, numpy_checkpoint, set_in

import cifar10_utils
import gridsearch
import train_convnet_numpy
import train_convnet_pytorch
import train_mlp_numpy
import train_mlp_pytorch

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'small_convnets')


@pytest.mark.parametrize(
    'script, last, flag',
    [
        (train_convnet_numpy, 'last.npz', ['--eval_freq', '1']),
        (train_convnet_pytorch, 'last.pt', ['--eval_freq', '1']),
        (train_convnet_pytorch, 'last.pt', ['--flip_test']),
    ],
)
def test_a_resumed_run_keeps_the_evaluations_that_choose_its_best(
    script, last, flag, fake_cifar, tmp_path, capsys
):
    folder = tmp_path / 'run'
    assert script.main(small_run(fake_cifar, folder)) == 0
    before = (folder / 'metrics.json').read_bytes()
    resumed = ['--resume', str(folder / last), '--max_steps', '5', *flag]
    assert script.main(resumed) == 2
    given = '--eval_freq 2' if flag[0] == '--eval_freq' else '--flip_test False'
    assert one_error(capsys).endswith(
        f'was trained with {given}; a resumed run keeps the flags it started with.'
    )
    assert (folder / 'metrics.json').read_bytes() == before
    assert not [n for n in os.listdir(folder) if n.endswith('.tmp')]


def test_a_resumed_run_removes_what_a_killed_one_left_half_written(fake_cifar, tmp_path):
    """kill -9 during a save left .last.pt.PID.RANDOM.tmp, which no later run removed."""
    folder = tmp_path / 'run'
    assert train_convnet_pytorch.main(small_run(fake_cifar, folder)) == 0
    left = ['.last.pt.4242.0123abcd.tmp', '.metrics.json.77.deadbeef.tmp']
    for name in left + ['notes.tmp']:  # the last one is no file of a run's
        (folder / name).write_bytes(b'half')
    resumed = ['--resume', str(folder / 'last.pt'), '--max_steps', '4']
    assert train_convnet_pytorch.main(resumed) == 0
    names = os.listdir(folder)
    assert 'notes.tmp' in names
    assert not set(left) & set(names)


def test_a_numpy_checkpoint_with_a_fractional_step_count(fake_cifar, tmp_path, capsys):
    """Adam's t = 2.5 was taken, and bias-corrected the steps with a count no run reaches."""
    path = numpy_checkpoint(fake_cifar, tmp_path, set_in(['optimizer', 't'], 2.5))
    before = (path.parent / 'metrics.json').read_bytes()
    assert train_convnet_numpy.main(['--resume', str(path), '--max_steps', '4']) == 2
    assert one_error(capsys).endswith('holds an optimizer state that this run cannot go on from.')
    assert (path.parent / 'metrics.json').read_bytes() == before


def test_an_answer_that_comes_after_the_deadline_is_closed(monkeypatch):
    """open_url gave up on a slow server but left the connection it got later open."""
    late, answered = threading.Event(), threading.Event()

    class Answer:
        closed = False

        def close(self):
            self.closed = True

    answer = Answer()

    def slow_urlopen(url, timeout):
        late.wait(10)
        answered.set()
        return answer

    monkeypatch.setattr(cifar10_utils.urllib.request, 'urlopen', slow_urlopen)
    monkeypatch.setattr(cifar10_utils, 'ANSWER_SECONDS', 0.1)
    with pytest.raises(TimeoutError, match='no answer within 0.1 s'):
        cifar10_utils.open_url('http://127.0.0.1:9/x')
    late.set()
    assert answered.wait(10)
    for _ in range(100):  # the thread closes it just after returning from urlopen
        if answer.closed:
            break
        time.sleep(0.05)
    assert answer.closed


def test_a_subsample_of_every_image_suggests_no_larger_one(tmp_path, capsys):
    """--subsample 200 of 200 images: "a larger --subsample has more", which none can be."""
    fake = write_fake_cifar(tmp_path / 'data')
    assert grid(fake, tmp_path / 'grid', '--batch_size', '101', '--subsample', '200') == 2
    assert one_error(capsys).endswith(
        'batch size 101 is more than the 100 images a fit trains on (1 of 2 folds of 200).'
    )
    assert not (tmp_path / 'grid').exists()


def run_script(fake_cifar, out, *flags, **popen):
    """train_mlp_numpy.py run as a script (the streams it is given are its own), its status."""
    command = [sys.executable, 'train_mlp_numpy.py', '--data_dir', fake_cifar, '--out_dir', out]
    return subprocess.run([*command, *flags], cwd=ROOT, timeout=120, **popen).returncode


def closed_pipe():
    """The writing end of a pipe whose reader has gone: `| head -1` once head has ended."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize(
    'streams',
    [
        pytest.param(lambda: {'stderr': closed_pipe()}, id='stderr-reader-gone'),
        pytest.param(lambda: {'stdout': closed_pipe()}, id='stdout-reader-gone'),
        pytest.param(lambda: {'stderr': open('/dev/full', 'w')}, id='stderr-full'),
        pytest.param(lambda: {'stdout': open('/dev/full', 'w')}, id='stdout-full'),
        pytest.param(lambda: {'preexec_fn': lambda: os.close(2)}, id='stderr-closed'),
        pytest.param(
            lambda: {'env': {**os.environ, 'PYTHONIOENCODING': 'ascii'}, 'stdout': -3},
            id='ascii-stdout',
        ),
    ],
)
def test_a_run_outlives_the_streams_it_reports_on(streams, fake_cifar, tmp_path):
    """The progress bar's write into a pipe whose reader had gone ended the run before its
    first save (a .lock and nothing else left); a full or ASCII-only stdout made a finished run
    exit 1 with a traceback at its last line."""
    if not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full on this machine')
    out = str(tmp_path / 'rün')
    status = run_script(fake_cifar, out, '--max_steps', '30', '--eval_freq', '1', **streams())
    assert status == 0
    assert json.loads((tmp_path / 'rün' / 'metrics.json').read_text())['status'] == 'completed'
    assert sorted(os.listdir(out)) == ['curves.png', 'metrics.json']


def test_a_cpu_time_limit_stops_a_run_as_a_signal_does(fake_cifar, tmp_path):
    """SIGXCPU (ulimit -t) ended the run without a word, its record left 'running'."""

    def limit_cpu():
        resource.setrlimit(resource.RLIMIT_CPU, (3, resource.RLIM_INFINITY))

    out = str(tmp_path / 'run')
    flags = ('--max_steps', '10000000', '--eval_freq', '1000')
    done = subprocess.run(
        [sys.executable, 'train_mlp_numpy.py', '--data_dir', fake_cifar, '--out_dir', out, *flags],
        cwd=ROOT,
        timeout=120,
        preexec_fn=limit_cpu,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 128 + 24 and 'Traceback' not in done.stderr
    assert 'Stopped by SIGXCPU after step' in done.stderr
    assert json.loads((tmp_path / 'run' / 'metrics.json').read_text())['status'] == 'interrupted'
    assert sorted(os.listdir(out)) == ['curves.png', 'metrics.json']


# ---------------------------------------------- write failures: what failed, what was kept


def test_a_file_size_limit_during_a_torch_checkpoint(fake_cifar, tmp_path):
    """torch.save raised RuntimeError ("unexpected pos") while handling the EFBIG, which left
    a traceback and metrics.json at "running"."""

    def limit_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.RLIM_INFINITY))

    out = tmp_path / 'run'
    done = subprocess.run(
        [sys.executable, 'train_convnet_pytorch.py', *small_run(fake_cifar, out)],
        cwd=ROOT,
        timeout=300,
        preexec_fn=limit_files,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f'train_convnet_pytorch.py: error: could not write {out / "last.pt"} (File too large); '
        f'the run failed after step 2; its metrics so far are in {out}: raise the file-size '
        'limit (ulimit -f), or choose another --out_dir.'
    )
    assert json.loads((out / 'metrics.json').read_text())['status'] == 'failed'
    assert sorted(os.listdir(out)) == ['curves.png', 'metrics.json']


def test_curves_that_cannot_be_written_after_a_completed_run(
    fake_cifar, tmp_path, monkeypatch, capsys
):
    """The run said "the run stopped there" while its metrics.json said "completed"."""
    if not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full on this machine')
    full_disk(monkeypatch, 'curves')
    out = tmp_path / 'run'
    assert train_mlp_numpy.main(small_run(fake_cifar, out)) == 1
    assert one_error(capsys).endswith(
        f'could not write {out / "curves.png"} (No space left on device); the run is '
        'completed, and its metrics.json whole: free some space, or choose another --out_dir.'
    )
    assert json.loads((out / 'metrics.json').read_text())['status'] == 'completed'
    assert os.listdir(out) == ['metrics.json']


def test_torch_out_of_memory_mid_run(fake_cifar, tmp_path, monkeypatch, capsys):
    """On a CPU torch's failed allocation is a RuntimeError, not a MemoryError: a traceback."""
    forward, calls = train_mlp_pytorch.MLP.forward, []

    def allocate_at_third_step(self, x):
        calls.append(1)
        if len(calls) == 5:  # steps 1 and 2, their evaluations, then step 3
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ...")
        return forward(self, x)

    monkeypatch.setattr(train_mlp_pytorch.MLP, 'forward', allocate_at_third_step)
    out = tmp_path / 'run'
    flags = small_run(fake_cifar, out, '--eval_freq', '1')
    assert train_mlp_pytorch.main(flags) == 1
    assert one_error(capsys).endswith(
        'error: not enough memory for these settings; the run failed after '
        f'step 2; its metrics so far are in {out}: a smaller --batch_size or network needs less.'
    )
    assert json.loads((out / 'metrics.json').read_text())['status'] == 'failed'


def test_a_grid_that_runs_out_of_open_files(tmp_path, monkeypatch, capsys):
    """ulimit -n 9 with --n_jobs 2: an OSError traceback from GridSearchCV.fit."""

    def fit(self, x, y):
        raise OSError(errno.EMFILE, 'Too many open files')

    monkeypatch.setattr(gridsearch.GridSearchCV, 'fit', fit)
    fake = write_fake_cifar(tmp_path / 'data')
    assert grid(fake, tmp_path / 'grid', '--batch_size', '20') == 1
    assert one_error(capsys).endswith(
        'error: Too many open files; no results were written: raise the limit on '
        'open files (ulimit -n).'
    )
    assert not (tmp_path / 'grid').exists()
