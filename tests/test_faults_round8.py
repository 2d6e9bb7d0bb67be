"""Findings of the fifth probe, beyond the report: a checkpoint resumed from another run's
folder, which replaced that run and tested its best checkpoint; FIFOs read as checkpoints and
grid files; a batch file whose labels are lists that share themselves; --out paths that are
folders, found only after all the work; benchmark.py's signals; and runs.json paths with a NUL,
keys named twice, a --subsample larger than the data, and runs.json naming thousands of runs.
Each ends in one sentence and an exit status, with no traceback, no hang and nothing lost."""

import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, one_error, small_run
from fake_runs import fake_project

import benchmark
import cifar10_utils
import gridsearch
import train_convnet_numpy
import train_convnet_pytorch

sys.path.insert(0, os.path.join(ROOT, 'report'))
import dead_units  # noqa: E402
from test_faults_round5 import edit, report  # noqa: E402

SCRIPTS = {'pt': (train_convnet_pytorch, 'last.pt'), 'npz': (train_convnet_numpy, 'last.npz')}


@pytest.mark.parametrize('kind', SCRIPTS)
def test_a_checkpoint_in_another_runs_folder_is_not_resumed_there(
    kind, fake_cifar, small_convnets, tmp_path, capsys
):
    """A run's last checkpoint copied into another run's folder and resumed there replaced
    that run's metrics.json and checkpoints (and tested its best checkpoint), exit 0."""
    script, last = SCRIPTS[kind]
    assert script.main(small_run(fake_cifar, tmp_path / 'a', '--validation_size', '40')) == 0
    assert script.main(small_run(fake_cifar, tmp_path / 'b', '--seed', '7')) == 0
    other = tmp_path / 'b' / f'other.{kind}'
    shutil.copy(tmp_path / 'a' / last, other)
    before = {p.name: p.read_bytes() for p in (tmp_path / 'b').iterdir()}
    argv = ['--resume', str(other), '--max_steps', '5', '--data_dir', fake_cifar]
    assert script.main(argv) == 2
    assert f'other.{kind} is not the run' in one_error(capsys)
    assert {p.name: p.read_bytes() for p in (tmp_path / 'b').iterdir()} == before
    # nor into a new folder: the best checkpoint beside it, which the end tests, is b's
    assert script.main([*argv, '--out_dir', str(tmp_path / 'c')]) == 2
    assert 'put the checkpoint in a folder of its own' in one_error(capsys)
    assert not (tmp_path / 'c').exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize('kind', SCRIPTS)
def test_a_fifo_as_the_checkpoint_is_refused_not_waited_on(kind, tmp_path, capsys):
    script, _ = SCRIPTS[kind]
    os.mkfifo(tmp_path / f'last.{kind}')
    with pytest.raises(SystemExit) as stop:  # (the checkpoint's flags are read with the flags)
        script.main(['--resume', str(tmp_path / f'last.{kind}')])
    assert stop.value.code == 2
    assert f'last.{kind} is not a checkpoint file.' in one_error(capsys)


@pytest.mark.timeout(60)
def test_a_fifo_or_a_key_named_twice_as_the_grid_file(tmp_path, capsys):
    os.mkfifo(tmp_path / 'grid.json')
    assert gridsearch.main(['--grid', str(tmp_path / 'grid.json')]) == 2
    assert 'grid.json is not a JSON file of at most 1024 KiB.' in one_error(capsys)
    twice = tmp_path / 'twice.json'
    twice.write_text('{"learning_rate": [0.1], "learning_rate": [0.01]}')
    assert gridsearch.main(['--grid', str(twice)]) == 2
    assert "twice.json names the key 'learning_rate' twice." in one_error(capsys)


@pytest.mark.timeout(60)
def test_labels_that_are_lists_sharing_themselves(tmp_path):
    """45 levels of l = [l, l] pickle into 450 kB, which np.asarray walked for hours."""
    labels = [0]
    for _ in range(45):
        labels = [labels, labels]
    path = tmp_path / 'data_batch_1'
    path.write_bytes(pickle.dumps({'data': np.zeros((2, 3072), np.uint8), 'labels': labels}))
    with pytest.raises(cifar10_utils.CIFAR10Error, match='does not hold a CIFAR-10 batch'):
        cifar10_utils.load_batch(str(path))


def test_an_out_path_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys):
    """dead_units.py trained both settings, and benchmark.py ran every measurement, before
    finding that --out was a folder: the result was lost (benchmark.py with a traceback)."""
    for main in (dead_units.main, benchmark.main):
        with pytest.raises(SystemExit) as stop:
            main(['--out', str(tmp_path)])
        assert stop.value.code == 2
        assert f'{tmp_path} is a folder; give the path of a file to write.' in one_error(capsys)


def test_benchmark_stops_on_a_signal_in_one_sentence(tmp_path):
    """SIGTERM ended benchmark.py without a word (143), Ctrl-C with a traceback."""
    argv = [sys.executable, 'benchmark.py', '--quick', '--out', str(tmp_path / 'b.json')]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()  # the table's head: the measurements have begun
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert 'Traceback' not in err.decode()
    assert err.decode().splitlines()[-1] == 'benchmark.py: stopped by SIGTERM; nothing was written.'
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    'change, why',
    [
        (
            lambda c: c['gridsearch'].update(path='a\u0000b'),
            'gridsearch needs a "path" (the grid folder), a line of printable text.',
        ),
        (
            lambda c: c['runs'].update({f'r{i}': {'path': f'r{i}'} for i in range(101)}),
            '"runs" names more than 100 runs.',
        ),
    ],
)
def test_runs_json_with_a_nul_in_a_path_or_too_many_runs(change, why, tmp_path, capsys):
    """A NUL in the grid's path gave a ValueError traceback from os.path.realpath; 20,000
    runs drew placeholders for minutes."""
    runs_json = edit(fake_project(tmp_path), change)
    assert report(runs_json, tmp_path / 'out') == 2
    assert why in one_error(capsys)


def test_runs_json_naming_a_key_twice(tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    text = Path(runs_json).read_text()
    Path(runs_json).write_text(text.replace('{"runs": {', '{"runs": {}, "runs": {', 1))
    assert report(runs_json, tmp_path / 'out') == 2
    assert "names the key 'runs' twice" in one_error(capsys)


def test_a_subsample_larger_than_the_data(fake_cifar, tmp_path, capsys):
    """--subsample 100000 on 200 training images silently used all 200."""
    argv = ['--subsample', '100000', '--data_dir', fake_cifar, '--out_dir', str(tmp_path / 'g')]
    assert gridsearch.main(argv) == 2
    assert '--subsample 100000 is more than the 200 training images.' in one_error(capsys)
    assert not (tmp_path / 'g').exists()


def test_the_two_checkpoint_readers_share_the_file_check():
    """Both read_checkpoint functions refuse what is not a regular file before loading it."""
    for script in (train_convnet_pytorch, train_convnet_numpy):
        with pytest.raises(ValueError, match='is not a checkpoint file'):
            script.read_checkpoint('/dev/null')
