"""Findings of the fresh probe that checked the second round's fixes: crafted checkpoint
records, --overwrite over another script's run, two grid searches on one folder, deep or
undecodable JSON, seeds past 2^32, huge numbers in a run folder, and benchmark.py's --out. Each
ends in one sentence, with no traceback and nothing of another run left behind."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, one_error, small_run

import gridsearch
import train_convnet_numpy
import train_mlp_numpy
import train_mlp_pytorch
from cifar10_utils import DataSet
from train_utils import ClaimedFolder

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402


def rewrite_record(path, change):
    """path's .npz checkpoint with its JSON record changed by change(record)."""
    with np.load(path) as f:
        arrays = {name: f[name] for name in f.files}
    record = json.loads(arrays.pop('record').tobytes())
    change(record)
    np.savez(path, record=np.frombuffer(json.dumps(record).encode(), np.uint8), **arrays)


@pytest.mark.parametrize(
    'change',
    [
        lambda r: r['flags'].update(bogus=1),
        lambda r: r.update(flags=[1, 2]),
        lambda r: r.update(step='3'),
        lambda r: r.update(metrics=[]),
        lambda r: r['metrics'].pop('started'),
        lambda r: r['flags'].update(learning_rate='x'),
    ],
    ids=[
        'unknown flag',
        'flags a list',
        'step a string',
        'metrics a list',
        'no start',
        'a bad value',
    ],
)
def test_a_crafted_checkpoint_record_is_one_sentence(
    change, fake_cifar, small_numpy_convnet, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(sys, 'argv', ['train_convnet_numpy.py'])
    out = tmp_path / 'run'
    assert train_convnet_numpy.main(small_run(fake_cifar, out, '--max_steps', '2')) == 0
    rewrite_record(out / 'last.npz', change)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        train_convnet_numpy.main(['--data_dir', fake_cifar, '--resume', str(out / 'last.npz')])
    assert stop.value.code == 2
    assert 'is not a checkpoint of this script: it holds' in one_error(capsys)


def test_a_batch_order_that_is_not_one_is_refused():
    data = DataSet(np.zeros((4, 3, 32, 32), np.float32), np.arange(4), seed=0)
    state = data.state_dict()
    with pytest.raises(ValueError, match='not an order of this set'):
        data.load_state_dict({**state, 'order': [10**9] * 4})


def test_overwrite_leaves_no_checkpoint_of_the_old_run(fake_cifar, small_numpy_convnet, tmp_path):
    """A ConvNet's last.npz beside an MLP's new metrics.json invited --resume to replace it."""
    out = tmp_path / 'run'
    assert train_convnet_numpy.main(small_run(fake_cifar, out, '--max_steps', '2')) == 0
    assert train_mlp_numpy.main(small_run(fake_cifar, out, '--overwrite')) == 0
    assert not [n for n in os.listdir(out) if n.endswith('.npz')]
    assert json.loads((out / 'metrics.json').read_text())['script'] == 'train_mlp_numpy.py'


def test_a_folder_claimed_by_a_grid_search_is_refused(tmp_path):
    folder = tmp_path / 'grid'
    with ClaimedFolder(folder):
        with pytest.raises(ValueError, match='is in use by another run that is still going'):
            ClaimedFolder(folder)
    assert not folder.exists()  # the search wrote nothing: no folder is left


@pytest.mark.parametrize('content', [b'[' * 100000 + b']' * 100000, b'\xff\xfe{}'])
def test_a_grid_file_too_deep_or_not_text_is_one_sentence(content, tmp_path, capsys):
    grid = tmp_path / 'grid.json'
    grid.write_bytes(content)
    assert gridsearch.main(['--grid', str(grid), '--out_dir', str(tmp_path / 'o')]) == 2
    why = 'not UTF-8 text' if content.startswith(b'\xff') else 'not a JSON text of reasonable depth'
    assert f'{grid} is {why}.' in one_error(capsys)


@pytest.mark.parametrize('script', [train_mlp_numpy, train_mlp_pytorch, gridsearch])
def test_a_seed_past_2_to_the_32_is_refused(script, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['x.py'])
    with pytest.raises(SystemExit) as stop:
        script.main(['--seed', str(2**64), '--out_dir', str(tmp_path / 'o')])
    assert stop.value.code == 2
    assert 'argument --seed: expected an integer from 0 to 4294967295' in one_error(capsys)


@pytest.mark.parametrize(
    'key, value',
    [
        ('final_test_accuracy', 10**400),
        ('wall_seconds', 10**400),
        ('best_checkpoint_test_accuracy', 'x'),
    ],
)
def test_a_run_with_impossible_numbers_is_a_problem_not_a_traceback(key, value, tmp_path):
    with open(os.path.join(ROOT, 'report', 'runs', 'mlp_numpy_default', 'metrics.json')) as f:
        metrics = json.load(f)
    folder = tmp_path / 'run'
    folder.mkdir()
    (folder / 'metrics.json').write_text(json.dumps({**metrics, key: value}))
    run = make_report.Run('r', 'r', str(folder), [], 'metrics.json')
    run.load()
    assert run.missing and 'holds a number too large to be a result' in run.problem


def test_benchmark_checks_its_out_file_first(tmp_path):
    (tmp_path / 'afile').write_text('')
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'benchmark.py'),
            '--quick',
            '--out',
            str(tmp_path / 'afile' / 'bench.json'),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'afile is not a folder this user can write to.' in result.stderr


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_libraries_load_is_one_sentence(signum, tmp_path):
    """Ctrl-C within the first half second, inside `import torch`, printed a traceback;
    SIGTERM there ended the process without a word."""
    script = os.path.join(ROOT, 'train_mlp_pytorch.py')
    process = subprocess.Popen(
        [sys.executable, script, '--out_dir', str(tmp_path / 'o')],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.4)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum and 'Traceback' not in err, err
    assert len(err.strip().splitlines()) == 1, err
