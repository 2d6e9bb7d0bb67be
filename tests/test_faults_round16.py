"""Findings of the thirteenth probe: benchmark.py and a damaged batch file; folders and batch
files this user cannot read, taken for damaged or unwritable ones; a report stopped after it
made its --out_dir; a signal as the interpreter ends; a bad MPLBACKEND found at a run's end;
cifar10_utils' arguments; report/dead_units.py's --out and --data_dir."""

import errno
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, one_error, small_run
from fake_runs import fake_project
from test_faults_round5 import dead_units, make_report, report

import benchmark
import cifar10_utils
import train_mlp_numpy

pytestmark = pytest.mark.usefixtures('torch_single_thread')

# root reads and writes whatever the mode bits say: without these capabilities it is held to them
UNPRIVILEGED = (
    ['setpriv', '--bounding-set', '-dac_override,-dac_read_search,-fowner']
    if os.geteuid() == 0
    else []
)


def run_script(args, env=None, unprivileged=False):
    """A script's exit status and stderr, asserting there is no traceback."""
    if unprivileged and UNPRIVILEGED and not shutil.which('setpriv'):
        pytest.skip('root, and no setpriv to give up its permission to read anything')
    done = subprocess.run(
        [*(UNPRIVILEGED if unprivileged else []), sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert 'Traceback' not in done.stderr, done.stderr
    return done.returncode, done.stderr


def test_benchmark_says_what_is_wrong_with_the_data(fake_cifar, monkeypatch):
    """A damaged batch file in $CIFAR10_DIR: a CalledProcessError traceback from the loading
    row's subprocess, whose own sentence was thrown away."""
    path = os.path.join(fake_cifar, 'data_batch_1')
    with open(path, 'r+b') as f:
        f.truncate(1000)
    monkeypatch.setenv('CIFAR10_DIR', fake_cifar)
    with pytest.raises(ValueError) as e:
        benchmark.bench_loading(True, 1e-3)
    assert str(e.value).startswith(f'{path} is truncated or corrupt')


def test_a_folder_given_as_a_batch_file_is_not_a_damaged_file(tmp_path):
    """load_batch told the user to delete it."""
    with pytest.raises(cifar10_utils.CIFAR10Error) as e:
        cifar10_utils.load_batch(str(tmp_path))
    assert str(e.value) == (
        f'{tmp_path} cannot be read (Is a directory); make it a readable file, or point '
        '--data_dir or CIFAR10_DIR at another copy.'
    )


@pytest.mark.parametrize(
    'mode, where, message',
    [
        (0o000, 'data_batch_2', 'data_batch_2 cannot be read (Permission denied); make it a'),
        (0o000, '', 'cannot be read (permission denied); make it readable (chmod u+rx)'),
        (0o444, '', 'cannot be read (permission denied); make it readable (chmod u+rx)'),
    ],
    ids=['an unreadable batch file', 'an unreadable folder', 'a folder without x'],
)
def test_data_this_user_cannot_read(mode, where, message, fake_cifar, tmp_path):
    """Said to be "truncated or corrupt. Delete it", "could not write" the data folder, or
    to hold "no CIFAR-10 batch files"."""
    target = os.path.join(fake_cifar, where) if where else fake_cifar
    os.chmod(target, mode)
    try:
        args = ['train_mlp_numpy.py', *small_run(fake_cifar, tmp_path / 'run')]
        status, err = run_script(args, unprivileged=True)
    finally:
        os.chmod(target, 0o755)
    assert status == 1
    assert message in err.strip().splitlines()[-1]
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
    'script', [['train_mlp_numpy.py'], ['gridsearch.py', '--hidden_units', '10', '--cv', '2']]
)
def test_an_out_dir_this_user_cannot_read(script, fake_cifar, tmp_path):
    """gridsearch.py: a PermissionError traceback; the train scripts: "could not write ...
    the run stopped there", exit 1, for a run that never started."""
    out = tmp_path / 'out'
    out.mkdir(mode=0o000)
    try:
        args = [*script, '--data_dir', fake_cifar, '--out_dir', str(out)]
        status, err = run_script(args, unprivileged=True)
    finally:
        out.chmod(0o755)
    assert status == 2
    assert (
        err.strip().splitlines()[-1].endswith(f'cannot read --out_dir {out} (Permission denied).')
    )
    assert os.listdir(out) == []


def test_a_stopped_report_removes_the_out_dir_it_made(tmp_path, monkeypatch, capsys):
    """SIGINT while the figures and tables were written left the --out_dir it had made with
    part of them, and said "the files already written are complete"."""
    runs_json = fake_project(tmp_path)
    out = tmp_path / 'out'
    monkeypatch.setattr(make_report, 'write_tables', lambda *a: os.kill(os.getpid(), signal.SIGINT))
    assert report(runs_json, out) == 130
    assert one_error(capsys) == (
        f'make_report: stopped by SIGINT; {out}, which it had made, was removed.'
    )
    assert not out.exists()


def test_a_failed_report_removes_the_out_dir_it_made(tmp_path, monkeypatch, capsys):
    """A write that failed half-way (a full disk) left the figures written before it."""
    runs_json = fake_project(tmp_path)
    out = tmp_path / 'out'

    def full_disk(*args):
        raise OSError(errno.ENOSPC, 'No space left on device', str(out / 'tables' / 'x.tex'))

    monkeypatch.setattr(make_report, 'write_tables', full_disk)
    assert report(runs_json, out) == 1
    assert one_error(capsys).endswith('x.tex: No space left on device.')
    assert not out.exists()


def test_a_stopped_report_keeps_an_out_dir_that_was_there(tmp_path, monkeypatch, capsys):
    runs_json = fake_project(tmp_path)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('kept')
    monkeypatch.setattr(make_report, 'write_tables', lambda *a: os.kill(os.getpid(), signal.SIGINT))
    assert report(runs_json, out) == 130
    assert one_error(capsys).endswith('the files already written are complete.')
    assert (out / 'notes.txt').read_text() == 'kept'


SIGNAL_AT_EXIT = """
import builtins, os, runpy, signal, sys, time


class SignalAtExit:  # a Ctrl-C as the interpreter ends, its handlers gone
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)


builtins.signal_at_exit = SignalAtExit()
sys.argv = ['train_mlp_numpy.py', *sys.argv[1:]]
runpy.run_path('train_mlp_numpy.py', run_name='__main__')
"""


def test_a_signal_as_the_interpreter_ends_keeps_the_exit_status(fake_cifar, tmp_path):
    """make_report.py and the train scripts, done and their last line printed, were ended by
    a signal that came while the interpreter ended: exit 130, no sentence."""
    status, err = run_script(['-c', SIGNAL_AT_EXIT, *small_run(fake_cifar, tmp_path / 'run')])
    assert status == 0, err
    assert sorted(os.listdir(tmp_path / 'run')) == ['curves.png', 'metrics.json']


def test_a_bad_mplbackend_does_not_stop_a_run_at_its_end(fake_cifar, tmp_path):
    """MPLBACKEND=garbage trained every step, then failed to draw curves.png (exit 2, status
    completed): the scripts draw with Agg whatever it says."""
    env = dict(os.environ, MPLBACKEND='garbage')
    status, err = run_script(['train_mlp_numpy.py', *small_run(fake_cifar, tmp_path / 'run')], env)
    assert status == 0, err
    assert sorted(os.listdir(tmp_path / 'run')) == ['curves.png', 'metrics.json']


@pytest.mark.parametrize(
    'call, message',
    [
        (lambda d: cifar10_utils.get_cifar10(d, one_hot='no'), 'one_hot must be True or False'),
        (lambda d: cifar10_utils.get_cifar10(d, seed='x'), 'seed must be None or an integer >='),
        (lambda d: cifar10_utils.get_cifar10(d, seed=-1), 'seed must be None or an integer >='),
        (lambda d: cifar10_utils.get_cifar10(d, seed=1.5), 'seed must be None or an integer >='),
        (
            lambda d: cifar10_utils.get_cifar10(d)['train'].next_batch(2.5),
            'batch_size must be an integer from 1 to the number of examples, 200, got 2.5.',
        ),
    ],
    ids=['one_hot no', "seed 'x'", 'seed -1', 'seed 1.5', 'next_batch 2.5'],
)
def test_get_cifar10_checks_its_arguments(call, message, fake_cifar):
    """one_hot='no' gave one-hot labels; the seeds and batch size gave NumPy's TypeErrors or
    a message that named no argument."""
    with pytest.raises(ValueError, match=message):
        call(fake_cifar)


@pytest.mark.parametrize(
    'arguments, message',
    [
        (dict(md5=5), 'CIFAR10_MD5=5 is not an MD5 sum (32 hexadecimal digits).'),
        (dict(url=7), 'the URL to download CIFAR-10 from must be text, got 7.'),
    ],
)
def test_download_cifar10_checks_its_arguments(arguments, message, tmp_path):
    """AttributeError tracebacks (the second after it said it was downloading)."""
    with pytest.raises(cifar10_utils.CIFAR10Error) as e:
        cifar10_utils.download_cifar10(str(tmp_path / 'data'), **arguments)
    assert str(e.value) == message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    'flags, message',
    [
        (['--out', 'a' * 250 + '.json'], 'is too long a name for the file system.'),
        (['--out', ''], 'argument --out: expected the path of a file to write, got an empty one'),
        (['--data_dir', ''], "argument --data_dir: expected a path, got ''"),
    ],
    ids=['a long name', 'an empty --out', 'an empty --data_dir'],
)
def test_dead_units_checks_its_paths_first(flags, message, tmp_path, monkeypatch, capsys):
    """A 254-byte --out name failed after the training ("File name too long"); --out ''
    was "a folder"; --data_dir '' fell back to $CIFAR10_DIR, its errors naming ''."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        dead_units.main(flags)
    assert e.value.code == 2
    assert message in one_error(capsys)
    assert os.listdir(tmp_path) == []


def test_a_folder_that_holds_files_but_no_run(fake_cifar, tmp_path, capsys):
    """Probe 14: --out_dir tests (the project's sources) was said to hold a run, and the
    sentence offered --overwrite."""
    out = tmp_path / 'sources'
    out.mkdir()
    (out / 'notes.py').write_text('kept')
    assert train_mlp_numpy.main(small_run(fake_cifar, out)) == 2
    assert one_error(capsys).endswith(
        f'--out_dir {out} is not empty, and what it holds is no run; choose a new or an empty '
        'folder.'
    )
    assert os.listdir(out) == ['notes.py']
