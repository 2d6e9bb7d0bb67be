"""Fixtures: small fake CIFAR-10 folders in the official format, the real data where the
scripts would find it, a narrow ConvNet, a read-only folder."""

import functools
import os
import pickle
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cifar10_utils import TEST_FILES, TRAIN_FILES, default_data_dir  # noqa: E402


def make_images(rng, n):
    """n learnable fake images: each class a fixed colour pattern plus noise. Returns uint8
    (n, 3072) rows and int labels."""
    labels = rng.integers(0, 10, size=n)
    patterns = np.random.default_rng(1234).integers(40, 216, size=(10, 3072))
    noise = rng.normal(0, 30, size=(n, 3072))
    data = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
    return data, labels


def write_batch(path, data, labels):
    with open(path, 'wb') as f:
        pickle.dump(
            {
                'batch_label': 'fake',
                'labels': [int(v) for v in labels],
                'data': data,
                'filenames': [f'{i}.png' for i in range(len(labels))],
            },
            f,
            protocol=2,
        )


def write_fake_cifar(folder, per_batch=40, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in TRAIN_FILES + TEST_FILES:
        write_batch(os.path.join(folder, name), *make_images(rng, per_batch))
    return str(folder)


@pytest.fixture
def fake_cifar(tmp_path):
    """A folder with 5 x 40 training and 40 test images in the official batch format."""
    return write_fake_cifar(tmp_path / 'cifar-10-batches-py')


def find_real_cifar():
    """The folder the scripts would read ($CIFAR10_DIR, else cifar10/cifar-10-batches-py
    from where pytest runs, else from the repository), or None when none holds the data."""
    for folder in (default_data_dir(), os.path.join(ROOT, default_data_dir())):
        if all(os.path.isfile(os.path.join(folder, n)) for n in TRAIN_FILES + TEST_FILES):
            return folder
    return None


@pytest.fixture
def real_cifar():
    folder = find_real_cifar()
    if folder is None:
        pytest.skip(
            'no CIFAR-10 in $CIFAR10_DIR or cifar10/cifar-10-batches-py: this test '
            'needs the real data (see README, "Data").'
        )
    return folder


@pytest.fixture
def small_convnet(monkeypatch):
    """train_convnet_pytorch builds Table 1's layers at 1/16 of their width: the same code
    path, a few hundredth of the arithmetic."""
    import train_convnet_pytorch
    from convnet_pytorch import ConvNet

    monkeypatch.setattr(train_convnet_pytorch, 'ConvNet', functools.partial(ConvNet, width=1 / 16))


@pytest.fixture
def small_numpy_convnet(monkeypatch):
    """train_convnet_numpy builds Table 1's layers at 1/16 of their width."""
    import convnet_numpy
    import train_convnet_numpy

    monkeypatch.setattr(
        train_convnet_numpy, 'ConvNet', functools.partial(convnet_numpy.ConvNet, width=1 / 16)
    )


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written in: a chmod 500 one, or for root (whom chmod does not
    stop) /sys."""
    folder = tmp_path / 'read-only'
    folder.mkdir()
    folder.chmod(0o500)
    for candidate in (str(folder), '/sys'):
        try:
            tempfile.TemporaryFile(dir=candidate).close()
        except OSError:
            yield candidate
            break
    else:
        pytest.skip('no read-only folder on this machine')
    folder.chmod(0o700)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    """No test reaches the internet: downloads go to a CIFAR10_URL the test sets."""
    monkeypatch.setenv('CIFAR10_URL', 'http://127.0.0.1:9/unreachable.tar.gz')
    monkeypatch.delenv('CIFAR10_MD5', raising=False)


@pytest.fixture
def small_convnets(small_convnet, small_numpy_convnet):
    """Both ConvNet scripts build Table 1 at 1/16 of its width."""


def small_run(fake_cifar, out_dir, *extra):
    """A train script's flags for a 3-step run on the fake CIFAR-10, into out_dir."""
    return [
        '--max_steps',
        '3',
        '--batch_size',
        '10',
        '--eval_freq',
        '2',
        '--data_dir',
        fake_cifar,
        '--out_dir',
        str(out_dir),
        *extra,
    ]


def one_error(capsys):
    """The last line of stderr, asserting there is no traceback."""
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def torch_single_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a busy 2-core machine their
    spin-waiting slows the tests down many times (pytestmark = usefixtures(...))."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
