"""Findings of the tenth probe: make_report --rerun of a folder that held other runs' folders
deleted them, and of a symbolically linked folder left NAME.old behind; a server that sent its
headers a byte at a time held the download for ever; NumPy scalars through train(...); a FIFO
as the data folder called a file; the grid's validation accuracy unsaid."""

import json
import os
import socket
import threading
import time

import numpy as np
import pytest
from conftest import one_error, write_fake_cifar
from fake_runs import fake_project
from test_faults_round5 import edit, report

import cifar10_utils
import gridsearch
import train_mlp_numpy

pytestmark = pytest.mark.usefixtures('torch_single_thread')


def test_a_run_folder_inside_another_runs_folder_is_refused(tmp_path, capsys):
    """--rerun replaces a folder whole: a run recorded at runs/ took the ten runs inside with
    it."""
    runs_json = fake_project(tmp_path)
    outer = str(tmp_path / 'runs')
    edit(runs_json, lambda c: c['runs'].update(all={'label': 'all', 'path': outer}))
    before = sorted(os.listdir(outer))
    assert report(runs_json, tmp_path / 'out', '--rerun', 'all') == 2
    error = one_error(capsys)
    assert f"is inside that of 'all', {outer}; each run needs a folder of its own." in error
    assert sorted(os.listdir(outer)) == before and not (tmp_path / 'out').exists()


def test_a_rerun_of_a_linked_run_folder_is_refused(tmp_path, capsys):
    """The rerun replaced the link with a folder and left the link as NAME.old, which made the
    next rerun refuse ("a rerun cut short?")."""
    runs_json = fake_project(tmp_path)
    runs = tmp_path / 'runs'
    os.rename(runs / 'mlp_numpy_default', runs / 'real')
    os.symlink('real', runs / 'mlp_numpy_default')
    assert report(runs_json, tmp_path / 'out', '--rerun', 'mlp_numpy_default') == 1
    assert one_error(capsys).endswith(
        'mlp_numpy_default is a symbolic link; give runs.json the folder it names.'
    )
    assert os.path.islink(runs / 'mlp_numpy_default')
    assert not any(name.endswith(('.old', '.rerun')) for name in os.listdir(runs))


def test_a_server_that_sends_its_headers_a_byte_at_a_time(tmp_path, monkeypatch):
    """Each byte restarted urlopen's 60 s timeout, and the stall check runs only once the
    body flows: the download waited for hours."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()
    stop = threading.Event()

    def drip():
        connection, _ = listener.accept()
        connection.sendall(b'HTTP/1.0 200 OK\r\nX-Pad: ')
        while not stop.wait(0.1):
            try:
                connection.sendall(b'a')
            except OSError:
                break
        connection.close()

    threading.Thread(target=drip, daemon=True).start()
    port = listener.getsockname()[1]
    monkeypatch.setenv('CIFAR10_URL', f'http://127.0.0.1:{port}/cifar-10-python.tar.gz')
    monkeypatch.setattr(cifar10_utils, 'ANSWER_SECONDS', 1)
    target = tmp_path / 'data' / 'cifar-10-batches-py'
    started = time.monotonic()
    try:
        with pytest.raises(cifar10_utils.CIFAR10Error, match=r'no answer within 1 s'):
            cifar10_utils.get_cifar10(str(target))
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 10
    assert not (tmp_path / 'data').exists()  # nor the folder the download made


def test_numpy_scalars_through_the_python_api(fake_cifar, tmp_path):
    """learning_rate=np.float32(0.01) passed the checks, then metrics.json could not be
    written: "Object of type float32 is not JSON serializable"."""
    metrics = train_mlp_numpy.train(
        max_steps=np.int64(3),
        eval_freq=2,
        learning_rate=np.float32(0.01),
        data_dir=fake_cifar,
        out_dir=str(tmp_path / 'run'),
    )
    recorded = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert metrics['status'] == recorded['status'] == 'completed'
    assert recorded['flags']['max_steps'] == 3 and recorded['flags']['learning_rate'] == 0.01


def test_a_fifo_as_the_data_folder_is_not_called_a_file(tmp_path):
    fifo = tmp_path / 'fifo'
    os.mkfifo(fifo)
    with pytest.raises(cifar10_utils.CIFAR10Error, match=f'{fifo} is not a folder; point'):
        cifar10_utils.get_cifar10(str(fifo))


def test_the_grid_says_its_validation_accuracy(tmp_path, capsys):
    """best.json held it, and the help says the refit is scored on it, but the line said
    only the test accuracy."""
    fake = write_fake_cifar(tmp_path / 'data')
    argv = ['--hidden_units', '10', '--batch_size', '20', '--learning_rate', '0.01']
    argv += ['--max_epochs', '1', '--cv', '2', '--validation_size', '40', '--data_dir', fake]
    assert gridsearch.main([*argv, '--out_dir', str(tmp_path / 'grid')]) == 0
    best = json.loads((tmp_path / 'grid' / 'best.json').read_text())
    line = capsys.readouterr().out
    assert f'validation accuracy {best["validation_accuracy"]:.4f}; test accuracy' in line
