"""Findings of the sixth probe: make_report --rerun stopped by a signal killed its run
mid-step (status "running", no curves, a stale lock); a download from a server that never
stops filled the disk, and one that does not speak HTTP gave a traceback; report/dead_units.py
on data with a class of one image gave a traceback."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import ROOT, one_error, small_run
from fake_runs import fake_grid

import cifar10_utils
import train_mlp_numpy

sys.path.insert(0, os.path.join(ROOT, 'report'))
import dead_units  # noqa: E402
import make_report  # noqa: E402


def test_a_rerun_stopped_by_a_signal_leaves_the_run_as_it_was(fake_cifar, tmp_path):
    """The rerun was killed mid-step in the run's own folder: the finished run was gone, and
    the folder held a record "running", no curves and a stale lock. The rerun now goes into a
    fresh folder beside it, which replaces the run only once it completes; stopped, it gets
    the signal once, stops as a run stopped alone does, and the fresh folder is removed."""
    run = tmp_path / 'run'
    assert train_mlp_numpy.main(small_run(fake_cifar, run)) == 0
    record = json.loads((run / 'metrics.json').read_text())
    steps = record['command'].index('--max_steps') + 1
    record['command'][steps] = '1000000'  # long enough to be stopped
    (run / 'metrics.json').write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    fake_grid(tmp_path / 'grid')
    runs_json = tmp_path / 'runs.json'
    runs = {'runs': {'a': {'path': str(run)}}, 'gridsearch': {'path': str(tmp_path / 'grid')}}
    runs_json.write_text(json.dumps(runs))
    argv = [sys.executable, 'report/make_report.py', '--runs', str(runs_json), '--no-pdf']
    argv += ['--out_dir', str(tmp_path / 'out'), '--rerun', 'a']
    env = {**os.environ, 'CIFAR10_DIR': fake_cifar}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / 'run.rerun' / 'metrics.json').exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)  # until the rerun has written its first record
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM and 'Traceback' not in err, err
    assert 'make_report: stopped by SIGTERM' in err.splitlines()[-1]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith('run.')]  # no .rerun left


def test_a_completed_rerun_replaces_the_run_and_records_its_folder(fake_cifar, tmp_path):
    run = tmp_path / 'run'
    assert train_mlp_numpy.main(small_run(fake_cifar, run, '--seed', '5')) == 0
    first = json.loads((run / 'metrics.json').read_text())
    fake_grid(tmp_path / 'grid')
    runs = {'runs': {'a': {'path': str(run)}}, 'gridsearch': {'path': str(tmp_path / 'grid')}}
    (tmp_path / 'runs.json').write_text(json.dumps(runs))
    os.environ['CIFAR10_DIR'], saved = fake_cifar, os.environ.get('CIFAR10_DIR')
    try:
        make_report.rerun(make_report.load_config(str(tmp_path / 'runs.json')), ['a'])
    finally:
        os.environ.pop('CIFAR10_DIR') if saved is None else os.environ.update(CIFAR10_DIR=saved)
    again = json.loads((run / 'metrics.json').read_text())
    assert again['started'] != first['started'] and again['train_loss'] == first['train_loss']
    assert again['out_dir'] == str(run) and str(run) in again['command']
    assert not [p for p in os.listdir(tmp_path) if p.startswith('run.')]


def serve_raw(reply):
    """A TCP server on 127.0.0.1 answering every connection with reply(socket); its URL."""
    listener = socket.create_server(('127.0.0.1', 0))

    def serve():
        while True:
            conn, _ = listener.accept()
            conn.recv(65536)
            with conn:
                reply(conn)

    threading.Thread(target=serve, daemon=True).start()
    return f'http://127.0.0.1:{listener.getsockname()[1]}/cifar-10-python.tar.gz'


def send(data):
    return lambda conn: conn.sendall(data)


def endless(conn):
    conn.sendall(b'HTTP/1.0 200 OK\r\n\r\n')
    with pytest.raises(OSError):  # until the client gives up and closes
        while True:
            conn.sendall(b'\0' * 65536)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    'reply, why',
    [
        (send(b'GARBAGE\r\n\r\n'), 'GARBAGE'),
        (send(b'HTTP/1.1 200 OK\r\nX: ' + b'y' * 70000 + b'\r\n\r\n'), 'got more than'),
        (send(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'), 'Could not'),
        (endless, 'is larger than 1 MiB, which no CIFAR-10 archive is; nothing was kept.'),
    ],
)
def test_a_server_that_does_not_speak_http_or_never_stops(reply, why, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_utils, 'LARGEST_ARCHIVE', 1 << 20)
    url = serve_raw(reply)
    target = tmp_path / 'data' / 'cifar-10-batches-py'
    with pytest.raises(cifar10_utils.CIFAR10Error) as error:
        cifar10_utils.download_cifar10(str(target), url=url, md5='0' * 32)
    assert why in str(error.value)
    assert not (tmp_path / 'data').exists()  # no temporary folder, nor the one it made


def test_a_url_with_a_space_is_one_sentence(tmp_path):
    with pytest.raises(cifar10_utils.CIFAR10Error, match='Could not download CIFAR-10 from'):
        cifar10_utils.download_cifar10(str(tmp_path / 'd'), url='http://a b/x', md5='0' * 32)


def test_dead_units_on_data_with_a_class_of_one_image(tmp_path, capsys, monkeypatch):
    """scikit-learn's stratified split refused it with a ValueError traceback."""

    def one_image_of_class_1(*args, **kwargs):
        labels = np.zeros(5500, dtype=np.int64)
        labels[0] = 1
        return {'train': cifar10_utils.DataSet(np.zeros((5500, 3, 32, 32), np.float32), labels)}

    monkeypatch.setattr(cifar10_utils, 'get_cifar10', one_image_of_class_1)
    assert dead_units.main(['--out', str(tmp_path / 'd.json')]) == 1
    assert "the data cannot give the grid's subsample" in one_error(capsys)
    assert not (tmp_path / 'd.json').exists()


@pytest.mark.parametrize('script, batchnorm', [('numpy', 'numpy'), ('pytorch', 'torch')])
def test_batch_norm_on_batches_of_one_image(script, batchnorm, fake_cifar, tmp_path, capsys):
    """PyTorch's "Expected more than 1 value per channel" came from inside the first step,
    naming no flag; the NumPy MLP trained on, its batch norm returning beta alone."""
    import train_mlp_pytorch

    main = {'numpy': train_mlp_numpy, 'pytorch': train_mlp_pytorch}[script].main
    argv = small_run(fake_cifar, tmp_path / 'run', '--batchnorm', batchnorm)
    assert main([*argv, '--batch_size', '1']) == 2
    assert '--batchnorm needs --batch_size 2 or more' in one_error(capsys)
    assert not (tmp_path / 'run').exists()
