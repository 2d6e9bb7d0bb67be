"""Fixtures: small fake CIFAR-10 folders in the official format, and the real data when
CIFAR10_DIR points at it."""
import os
import pickle
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cifar10_utils import TEST_FILES, TRAIN_FILES  # noqa: E402


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
        pickle.dump({'batch_label': 'fake', 'labels': [int(v) for v in labels], 'data': data,
                     'filenames': [f'{i}.png' for i in range(len(labels))]}, f, protocol=2)


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


@pytest.fixture
def real_cifar():
    folder = os.environ.get('CIFAR10_DIR')
    if not folder:
        pytest.skip('CIFAR10_DIR is not set: this test needs the real CIFAR-10 '
                    '(see README, "Data").')
    return folder


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    """No test reaches the internet: downloads go to a CIFAR10_URL the test sets."""
    monkeypatch.setenv('CIFAR10_URL', 'http://127.0.0.1:9/unreachable.tar.gz')
    monkeypatch.delenv('CIFAR10_MD5', raising=False)
