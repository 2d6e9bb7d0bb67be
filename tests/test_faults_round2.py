"""The faults of the second hostile probe (the issue "No code runs from a data file, no run
loses another's results, and a full disk is one sentence"), one regression test each, numbered
as its findings: no code run from a data file, no run lost, saves never cut short, write
failures and divergence as one sentence, bounds and deadlines, the Python API checked as the
command line. Every test asserts that no traceback appears and nothing half-written is left."""

import itertools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, one_error, small_run

import benchmark
import gridsearch
import train_convnet_numpy
import train_convnet_pytorch
import train_mlp_numpy
import train_mlp_pytorch
import train_utils
from cifar10_utils import DataSet
from train_utils import Run

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402

SCRIPTS = [train_mlp_numpy, train_mlp_pytorch, train_convnet_pytorch, train_convnet_numpy]
IDS = ['mlp numpy', 'mlp pytorch', 'convnet pytorch', 'convnet numpy']
CONVNETS = [train_convnet_pytorch, train_convnet_numpy]
BEST = {train_convnet_pytorch: 'best.pt', train_convnet_numpy: 'best.npz'}


def temporary_files(folder):
    return [n for n in os.listdir(folder) if n.endswith('.tmp')] if os.path.isdir(folder) else []


# ------------------------------------------------------------ 1, 2: nothing from a file runs


def test_rerun_refuses_a_recorded_command_that_is_not_a_project_script(tmp_path, capsys):
    """Finding 1: metrics.json said ["sh", "-c", "id > pwned.txt"], and --rerun ran it."""
    folder, marker = tmp_path / 'run', tmp_path / 'pwned.txt'
    folder.mkdir()
    with open(os.path.join(ROOT, 'report', 'runs', 'mlp_numpy_default', 'metrics.json')) as f:
        metrics = json.load(f)  # a real run's record, its command replaced below
    commands = (
        ['sh', '-c', f'touch {marker}'],
        ['python', '-c', f'open({str(marker)!r}, "w")'],
        ['python', 'train_mlp_numpy.py', '--no_such_flag', f'$(touch {marker})'],
    )
    for command, where in itertools.product(commands, ('metrics.json', 'runs.json')):
        (folder / 'metrics.json').unlink(missing_ok=True)
        if where == 'metrics.json':
            (folder / 'metrics.json').write_text(json.dumps({**metrics, 'command': command}))
        entry = {'path': str(folder), **({'command': command} if where == 'runs.json' else {})}
        runs = tmp_path / 'runs.json'
        runs.write_text(
            json.dumps({'runs': {'r': entry}, 'gridsearch': {'path': str(tmp_path / 'grid')}})
        )
        assert make_report.main(['--runs', str(runs), '--rerun', 'r', '--no-pdf']) == 1
        assert 'it was not run.' in one_error(capsys), (command, where)
        assert not marker.exists()


def test_rerun_reruns_a_real_run_in_its_own_folder(fake_cifar, tmp_path, monkeypatch):
    """Finding 10: --rerun of a folder that holds its run failed with "holds another run"."""
    folder = tmp_path / 'run'
    assert train_mlp_numpy.main(small_run(fake_cifar, folder, '--seed', '3')) == 0
    first = json.loads((folder / 'metrics.json').read_text())
    runs = tmp_path / 'runs.json'
    runs.write_text(
        json.dumps(
            {'runs': {'r': {'path': str(folder)}}, 'gridsearch': {'path': str(tmp_path / 'grid')}}
        )
    )
    monkeypatch.setenv('CIFAR10_DIR', fake_cifar)  # the rerun drops the recorded --data_dir
    make_report.rerun(make_report.load_config(str(runs)), ['r'])
    again = json.loads((folder / 'metrics.json').read_text())
    assert again['status'] == 'completed' and again['flags']['seed'] == 3
    assert again['started'] >= first['started'] and again['train_loss'] == first['train_loss']


def test_the_benchmark_floor_unpickles_safely(fake_cifar, tmp_path):
    """Finding 2: the loading floor read the batch files with plain pickle.load."""

    class Payload:
        def __reduce__(self):
            return os.system, (f'touch {tmp_path / "pwned"}',)

    with open(os.path.join(fake_cifar, 'data_batch_1'), 'wb') as f:
        pickle.dump({'data': Payload(), 'labels': []}, f, protocol=2)
    result = subprocess.run(
        [sys.executable, '-c', benchmark.LOAD, 'floor', fake_cifar],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and 'asks to load code' in result.stderr
    assert not (tmp_path / 'pwned').exists()


def test_the_report_refuses_latex_it_did_not_write(tmp_path, capsys):
    """A tampered gridsearch/results.tex with \\input{/etc/hostname} put the host name into
    report.pdf."""
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from fake_runs import fake_project

    runs = fake_project(tmp_path)
    tex = tmp_path / 'runs' / 'gridsearch' / 'results.tex'
    tex.write_text(tex.read_text().replace('\\centering', '\\centering\\input{/etc/hostname}'))
    assert make_report.main(['--runs', runs, '--out_dir', str(tmp_path / 'out'), '--no-pdf']) == 1
    err = capsys.readouterr().err  # the grid is a missing run, with the reason
    assert 'Traceback' not in err
    assert 'holds the LaTeX command \\input, which gridsearch.py does not write' in err


# ------------------------------------------------------------------- 3: a run owns its folder


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path):
    """Finding 3: two runs with one --out_dir wrote the same metrics.json.tmp; one died, or
    one's metrics were lost."""
    out = str(tmp_path / 'run')
    with Run('train_x.py', {}, out) as first:
        first.log_step(1, 2.0)
        with pytest.raises(
            ValueError,
            match=f'--out_dir {out} is in use by another run that '
            'is still going; wait for it to end',
        ):
            with Run('train_x.py', {}, out, overwrite=True):
                pass
    with Run('train_x.py', {}, out, overwrite=True):  # free again once the first has ended
        pass
    assert sorted(os.listdir(out)) == ['curves.png', 'metrics.json']


def test_two_processes_on_one_folder_lose_nothing(fake_cifar, tmp_path):
    """Finding 3 as the probe ran it: two processes, one folder, different seeds. One run
    completes; the other is refused in one sentence (exit 2), or, if it starts after the first
    has ended, replaces it whole (--overwrite): never a torn or mixed metrics.json."""
    out = tmp_path / 'race'
    command = [
        sys.executable,
        os.path.join(ROOT, 'train_mlp_numpy.py'),
        *small_run(fake_cifar, out, '--max_steps', '300', '--eval_freq', '10', '--overwrite'),
    ]
    processes = [
        subprocess.Popen([*command, '--seed', str(seed)], stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    assert all('Traceback' not in err for _, err in results), results
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['status'] == 'completed' and len(metrics['steps']) == 300
    assert not temporary_files(out)


# --------------------------------------------------------- 4, 5, 8: saves never cut short


def signal_at_step(monkeypatch, step, signum):
    next_batch, calls = DataSet.next_batch, []

    def signalled(self, batch_size):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signum)
        return next_batch(self, batch_size)

    monkeypatch.setattr(DataSet, 'next_batch', signalled)


@pytest.mark.parametrize('script', SCRIPTS, ids=IDS)
def test_a_second_signal_does_not_cut_the_final_save_short(
    script, fake_cifar, small_convnets, tmp_path, monkeypatch, capsys
):
    """Finding 4: a Ctrl-C 0.25 s after a SIGTERM left metrics.json "running", no curves.png,
    exit 130 and "Interrupted before the first step"."""
    signal_at_step(monkeypatch, 3, signal.SIGTERM)
    plot = train_utils.plot_curves

    def ctrl_c_while_saving(metrics, path):
        os.kill(os.getpid(), signal.SIGINT)
        plot(metrics, path)

    monkeypatch.setattr(train_utils, 'plot_curves', ctrl_c_while_saving)
    out = tmp_path / 'run'
    assert script.main(small_run(fake_cifar, out, '--max_steps', '50', '--eval_freq', '2')) == 143
    assert one_error(capsys) == f'Stopped by SIGTERM after step 3; metrics so far are in {out}.'
    assert json.loads((out / 'metrics.json').read_text())['status'] == 'interrupted'
    assert (out / 'curves.png').exists() and not temporary_files(out)


def test_sighup_stops_like_sigterm(fake_cifar, tmp_path, monkeypatch, capsys):
    signal_at_step(monkeypatch, 2, signal.SIGHUP)
    out = tmp_path / 'run'
    assert train_mlp_numpy.main(small_run(fake_cifar, out, '--max_steps', '50')) == 129
    assert one_error(capsys) == f'Stopped by SIGHUP after step 2; metrics so far are in {out}.'
    assert json.loads((out / 'metrics.json').read_text())['status'] == 'interrupted'


@pytest.mark.parametrize('script', SCRIPTS, ids=IDS)
def test_a_signal_during_the_final_test_stops_the_run(
    script, fake_cifar, small_convnets, tmp_path, monkeypatch, capsys
):
    """Finding 8: a SIGTERM during the final test evaluations was ignored (exit 0)."""
    evaluate, calls = script.evaluate, []

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first is the validation at step 2, the second the test
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(script, 'evaluate', signalled)
    out = tmp_path / 'run'
    args = small_run(fake_cifar, out, '--max_steps', '2', '--validation_size', '20')
    assert script.main(args) == 143
    assert one_error(capsys).startswith('Stopped by SIGTERM after step 2')
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['status'] == 'interrupted' and metrics['final_test_accuracy'] is None


@pytest.mark.parametrize('script', CONVNETS, ids=IDS[2:])
def test_a_resumed_validation_run_without_its_best_checkpoint_is_refused_first(
    script, fake_cifar, small_convnets, tmp_path, capsys
):
    """Finding 5: it trained every step, then failed on the missing best.pt."""
    out = tmp_path / 'run'
    assert (
        script.main(small_run(fake_cifar, out, '--max_steps', '2', '--validation_size', '20')) == 0
    )
    best, last = BEST[script], 'last' + os.path.splitext(BEST[script])[1]
    os.remove(out / best)
    before = (out / 'metrics.json').read_text()
    assert script.main(['--resume', str(out / last), '--max_steps', '4']) == 2
    assert one_error(capsys).endswith(
        f'{out / last} has no {best} beside it, which the end of '
        'its validation run tests; put it back, or start the run '
        'again.'
    )
    assert (out / 'metrics.json').read_text() == before


# ------------------------------------------------- 6, 7: write failures are one sentence


def full_disk(monkeypatch, which=''):
    """Every file train_utils.atomic_write writes whose name holds `which` goes to /dev/full,
    which fails as a full disk does (ENOSPC)."""
    fdopen = os.fdopen

    def to_dev_full(fd, mode='r', *args, **kwargs):
        name = os.readlink(f'/proc/self/fd/{fd}')
        if which in os.path.basename(name):
            os.close(fd)
            return open('/dev/full', mode)
        return fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(train_utils.os, 'fdopen', to_dev_full)


@pytest.mark.parametrize(
    'script, which',
    [
        (train_mlp_numpy, ''),
        (train_mlp_pytorch, ''),
        (train_convnet_pytorch, 'last.pt'),
        (train_convnet_numpy, 'last.npz'),
        (train_convnet_numpy, 'metrics'),
    ],
    ids=[
        'mlp numpy',
        'mlp pytorch',
        'convnet pytorch checkpoint',
        'convnet numpy checkpoint',
        'convnet numpy metrics',
    ],
)
def test_a_full_disk_is_one_sentence(
    script, which, fake_cifar, small_convnets, tmp_path, monkeypatch, capsys
):
    """Finding 6: an OSError or RuntimeError traceback, status "running", and an empty
    metrics.json.tmp or a 92 MB last.pt.tmp left."""
    if not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full on this machine')
    full_disk(monkeypatch, which)
    out = tmp_path / 'run'
    assert script.main(small_run(fake_cifar, out)) == 1
    error = one_error(capsys)
    assert 'error: could not write ' in error and '(No space left on device); the run ' in error
    assert error.endswith(': free some space, or choose another --out_dir.'), error
    # the folder is left without temporary files or lock, or not at all (nothing was saved)
    assert not out.exists() or not [
        n for n in os.listdir(out) if n.endswith('.tmp') or n.startswith('.')
    ]


def test_a_deleted_run_folder_is_one_sentence(fake_cifar, tmp_path, monkeypatch, capsys):
    """Finding 7: the run folder deleted mid-run was a traceback at the next evaluation."""
    out = tmp_path / 'run'
    next_batch, calls = DataSet.next_batch, []

    def delete_at_third_step(self, batch_size):
        calls.append(1)
        if len(calls) == 3:
            shutil.rmtree(out)
        return next_batch(self, batch_size)

    monkeypatch.setattr(DataSet, 'next_batch', delete_at_third_step)
    assert train_mlp_numpy.main(small_run(fake_cifar, out, '--max_steps', '4')) == 1
    assert f'could not write {out}/metrics.json (No such file or directory)' in one_error(capsys)


def test_a_full_disk_during_the_grid_search_is_one_sentence(
    fake_cifar, tmp_path, monkeypatch, capsys
):
    """Finding 6: a traceback after every fit and the refit, no best.json, a 0-byte heatmap."""
    full_disk(monkeypatch, 'heatmap')
    out = tmp_path / 'out'
    args = [
        '--batch_size',
        '16',
        '--learning_rate',
        '0.01',
        '--hidden_units',
        '8',
        '--max_epochs',
        '1',
        '--cv',
        '2',
        '--no_refit',
        '--data_dir',
        fake_cifar,
        '--out_dir',
        str(out),
    ]
    assert gridsearch.main(args) == 1
    assert 'heatmap.png (No space left on device)' in one_error(capsys)
    assert (out / 'best.json').exists() and not (out / 'heatmap.png').exists()
    assert not temporary_files(out)
