"""The second hostile probe's findings 9 and 11-13 and its tracebacks (see
tests/test_faults_round2.py for the others): a loss that is not finite is divergence, flags and
files are bounded where larger values cannot work, a scheduler or a download that stalls has a
deadline, and the Python API is checked as the command line is. Every test asserts that no
traceback appears."""

import json
import os
import pickle
import socket
import sys
import threading
import time

import numpy as np
import pytest
from conftest import ROOT, one_error, small_run, write_batch, write_fake_cifar

import cifar10_utils
import gridsearch
import train_convnet_numpy
import train_convnet_pytorch
import train_mlp_numpy
import train_mlp_pytorch

sys.path.insert(0, os.path.join(ROOT, 'report'))

SCRIPTS = [train_mlp_numpy, train_mlp_pytorch, train_convnet_pytorch, train_convnet_numpy]
IDS = ['mlp numpy', 'mlp pytorch', 'convnet pytorch', 'convnet numpy']
CONVNETS = [train_convnet_pytorch, train_convnet_numpy]
BEST = {train_convnet_pytorch: 'best.pt', train_convnet_numpy: 'best.npz'}


# ------------------------------------------------------------ 9: divergence is any NaN


@pytest.mark.parametrize('script', SCRIPTS, ids=IDS)
def test_a_loss_that_is_not_finite_in_evaluation_is_divergence(
    script, fake_cifar, small_convnets, tmp_path, capsys
):
    """Finding 9: one step at a huge learning rate gave exit 0, "completed", a NaN test loss
    (the training loss before the step is finite), and the ConvNet saved it as best.pt."""
    out = tmp_path / 'run'
    optimizer = ['--optimizer', 'SGD' if script in CONVNETS else 'sgd']
    assert (
        script.main(
            small_run(
                fake_cifar,
                out,
                '--max_steps',
                '1',
                '--eval_freq',
                '1',
                '--learning_rate',
                '1e30',
                *optimizer,
            )
        )
        == 1
    )
    assert 'loss became' in (error := one_error(capsys)), error
    assert 'the run diverged; lower --learning_rate.' in error
    assert json.loads((out / 'metrics.json').read_text())['status'] == 'diverged'
    assert not [n for n in os.listdir(out) if n.startswith('best')]


# ------------------------------------------------------------ 11-13: bounds and deadlines


def test_n_jobs_is_at_most_the_number_of_fits(fake_cifar, tmp_path, monkeypatch):
    """Finding 11: --n_jobs 1000 for 2 fits started 242 worker processes."""
    seen = {}

    def fit(self, x, y):
        seen['n_jobs'] = self.n_jobs
        raise KeyboardInterrupt

    monkeypatch.setattr(gridsearch.GridSearchCV, 'fit', fit)
    args = [
        '--batch_size',
        '16',
        '--learning_rate',
        '0.01',
        '--hidden_units',
        '8',
        '--cv',
        '2',
        '--n_jobs',
        '1000',
        '--data_dir',
        fake_cifar,
        '--out_dir',
        str(tmp_path / 'out'),
    ]
    assert gridsearch.main(args) == 130
    assert seen['n_jobs'] == 2


def test_a_scheduler_that_never_answers_has_a_deadline(monkeypatch):
    """Finding 12: a port that accepts TCP and never speaks Dask: no output for over 110 s."""
    pytest.importorskip('dask.distributed')
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    monkeypatch.setattr(gridsearch, 'CONNECT_SECONDS', 1)
    start = time.monotonic()
    with pytest.raises(ValueError, match='no Dask scheduler answered at tcp://127.0.0.1:'):
        gridsearch.connect(f'tcp://127.0.0.1:{listener.getsockname()[1]}')
    assert time.monotonic() - start < 30
    listener.close()


def test_a_download_that_trickles_has_a_deadline(tmp_path, monkeypatch):
    """Finding 13: a mirror sending a byte every 20 s was waited on for ever."""
    import http.server

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header('Content-Length', '1000000')
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b'x')
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:  # the client gave up, as it should
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(cifar10_utils, 'STALL_SECONDS', 1)
    monkeypatch.setenv('CIFAR10_URL', f'http://127.0.0.1:{httpd.server_address[1]}/c.tar.gz')
    data_dir = tmp_path / 'cifar10' / 'cifar-10-batches-py'
    with pytest.raises(
        cifar10_utils.CIFAR10Error,
        match=r'stalled \(under 10 kB/s for 1 s\); '
        'nothing was kept',
    ):
        cifar10_utils.download_cifar10(str(data_dir))
    httpd.shutdown()
    assert not (tmp_path / 'cifar10').exists()  # nor the folder the download made


# ------------------------------------------------------ tracebacks instead of a sentence


@pytest.mark.parametrize(
    'script, args, message',
    [
        (
            train_mlp_numpy,
            ['--augment', '--augment_padding', '100000'],
            "expected an integer from 0 to 16 (half an image), got '100000'",
        ),
        (train_mlp_numpy, ['--augment_padding', '100'], 'from 0 to 16'),
        (train_mlp_pytorch, ['--learning_rate', '1e300'], 'that float32 can hold'),
        (train_mlp_pytorch, ['--weight_decay', '1e300'], 'that float32 can hold'),
        (train_convnet_pytorch, ['--weight_decay', '1e300'], 'that float32 can hold'),
        (train_mlp_numpy, ['--momentum', '1.5'], "expected a number in [0, 1), got '1.5'"),
    ],
)
def test_numbers_too_large_to_work_are_refused(script, args, message, capsys, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [script.__name__ + '.py'])
    with pytest.raises(SystemExit) as stop:
        script.main(args)
    assert stop.value.code == 2 and message in one_error(capsys)


def test_a_network_too_large_for_the_memory_is_one_sentence(fake_cifar, tmp_path, capsys):
    out = tmp_path / 'run'
    assert (
        train_mlp_numpy.main(small_run(fake_cifar, out, '--dnn_hidden_units', '100000,100000')) == 2
    )
    assert 'error: --dnn_hidden_units 100000,100000 needs at least ' in one_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    'case',
    ['labels 2**70', 'labels inf', 'labels 3.7', 'empty test_batch', 'empty training batches'],
)
def test_damaged_batch_files_are_one_sentence(case, tmp_path):
    folder = write_fake_cifar(tmp_path / 'cifar')
    data = np.zeros((4, 3072), dtype=np.uint8)
    labels = {
        'labels 2**70': [2**70, 0, 0, 0],
        'labels inf': [float('inf'), 0, 0, 0],
        'labels 3.7': [3.7, 0, 0, 0],
    }.get(case)
    names = cifar10_utils.TRAIN_FILES if case == 'empty training batches' else ['test_batch']
    for name in names if labels is None else ['data_batch_1']:
        with open(os.path.join(folder, name), 'wb') as f:  # protocol 2, as the originals
            if labels is None:
                pickle.dump({'data': data[:0], 'labels': []}, f, protocol=2)
            else:
                pickle.dump({'data': data, 'labels': labels}, f, protocol=2)
    with pytest.raises(cifar10_utils.CIFAR10Error) as error:
        cifar10_utils.get_cifar10(folder)
    message = str(error.value)
    assert (
        'does not hold a CIFAR-10 batch' in message
        if labels is not None
        else 'no images. Delete the folder' in message
    ), message


def test_an_empty_protocol_2_batch_is_not_taken_for_code(tmp_path):
    path = tmp_path / 'batch'
    write_batch(path, np.zeros((0, 3072), dtype=np.uint8), [])
    data, labels = cifar10_utils.load_batch(str(path))
    assert data.shape == (0, 3, 32, 32) and labels.shape == (0,)


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(learning_rate='0.1'), 'learning_rate must be a number > 0 that float32 can hold'),
        (dict(batch_size=20.0), 'batch_size must be an integer > 0, got 20.0.'),
        (dict(out_dir=123), 'out_dir must be a path (a non-empty string), got 123.'),
        (dict(learning_rate=0.0), 'learning_rate must be a number > 0'),
        (dict(momentum=float('nan')), 'momentum must be a number in [0, 1), got nan.'),
        (dict(augment='no'), "augment must be True or False, got 'no'."),
        (dict(preset='nope'), "preset must be one of best, got 'nope'."),
    ],
)
def test_the_python_api_checks_what_the_command_line_checks(kwargs, message, tmp_path):
    """train(...) took learning_rate='0.1' to a TypeError, augment='no' as True, and
    preset='nope' without a word."""
    with pytest.raises(ValueError) as error:
        train_mlp_numpy.train(data_dir=str(tmp_path / 'none'), **kwargs)
    assert message in str(error.value)
    assert not os.listdir(tmp_path)


def test_an_empty_architecture_in_the_grid_is_refused(capsys):
    """--hidden_units "100;;10" added a setting without hidden layers, which then won."""
    with pytest.raises(SystemExit) as stop:
        gridsearch.build_parser().parse_args(['--hidden_units', '100;;10'])
    assert stop.value.code == 2
    assert 'none of them empty' in capsys.readouterr().err
