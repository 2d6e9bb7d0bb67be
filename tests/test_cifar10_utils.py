"""The CIFAR-10 loader: reading, batching, downloading, and refusing what it must refuse."""

import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest
from conftest import write_batch, write_fake_cifar

import cifar10_utils
from cifar10_utils import CIFAR10Error, get_cifar10, load_batch

# --------------------------------------------------------------------------- loading


def test_loads_fake_data(fake_cifar):
    data = get_cifar10(fake_cifar)
    train, val, test = data['train'], data['validation'], data['test']
    assert (train.num_examples, val.num_examples, test.num_examples) == (200, 0, 40)
    assert train.images.shape == (200, 3, 32, 32) and train.images.dtype == np.float32
    assert train.labels.shape == (200, 10) and train.labels.dtype == np.float32
    np.testing.assert_array_equal(train.labels.sum(axis=1), 1)
    # The training set's mean image is subtracted from both splits.
    np.testing.assert_allclose(train.images.mean(axis=0), 0, atol=1e-3)
    raw, _ = load_batch(os.path.join(fake_cifar, 'test_batch'))
    mean = np.concatenate(
        [load_batch(os.path.join(fake_cifar, f'data_batch_{i}'))[0] for i in range(1, 6)]
    ).mean(axis=0)
    np.testing.assert_allclose(test.images, raw - mean, atol=1e-3)


def test_plane_order(tmp_path):
    """Row layout of the files: 1024 red, 1024 green, 1024 blue values, each row-major."""
    folder = write_fake_cifar(tmp_path / 'c', per_batch=2)
    data = np.zeros((2, 3072), np.uint8)
    data[0, 1024 + 32 * 5 + 7] = 255  # green, row 5, column 7
    write_batch(os.path.join(folder, 'test_batch'), data, [3, 4])
    images, labels = load_batch(os.path.join(folder, 'test_batch'))
    assert images.shape == (2, 3, 32, 32) and images[0, 1, 5, 7] == 255
    assert images.sum() == 255 and labels.tolist() == [3, 4]


def test_integer_labels_and_validation_split(fake_cifar):
    data = get_cifar10(fake_cifar, one_hot=False, validation_size=30, seed=1)
    assert data['validation'].num_examples == 30 and data['train'].num_examples == 170
    assert data['train'].labels.dtype == np.int64 and data['train'].labels.shape == (170,)
    # Stratified: each class holds out its share of the 30 (within one image).
    _, all_labels = zip(
        *(load_batch(os.path.join(fake_cifar, f'data_batch_{i}')) for i in range(1, 6))
    )
    counts = np.bincount(np.concatenate(all_labels), minlength=10)
    held = np.bincount(data['validation'].labels, minlength=10)
    assert held.sum() == 30 and np.all(np.abs(held - 30 * counts / 200) <= 1)
    # The mean is that of the 170 remaining training images only.
    np.testing.assert_allclose(data['train'].images.mean(axis=0), 0, atol=1e-3)


@pytest.mark.parametrize('validation_size', [0, 90])
def test_normalisation_matches_a_plain_reference(fake_cifar, validation_size):
    """The two splits partition the training images, the same seed draws the same split, and
    every image has the mean of the training images that stay subtracted."""
    data = get_cifar10(fake_cifar, one_hot=False, validation_size=validation_size, seed=3)
    raw = np.concatenate(
        [load_batch(os.path.join(fake_cifar, f'data_batch_{i}'))[0] for i in range(1, 6)]
    ).astype(np.float64)
    images = np.concatenate([data['validation'].images, data['train'].images]).astype(float)
    # Whatever was subtracted, the 200 images still sum to the raw ones: that finds it ...
    subtracted = (raw.sum(axis=0) - images.sum(axis=0)) / 200
    rows = {r.astype(np.uint8).tobytes(): i for i, r in enumerate(raw)}
    index = [rows[np.round(x + subtracted).astype(np.uint8).tobytes()] for x in images]
    assert sorted(index) == list(range(200))  # a partition: every image once
    mean = np.delete(raw, index[:validation_size], axis=0).mean(axis=0)  # of the kept images
    np.testing.assert_allclose(images, raw[index] - mean, atol=1e-4)
    test_raw, _ = load_batch(os.path.join(fake_cifar, 'test_batch'))
    np.testing.assert_allclose(data['test'].images, test_raw - mean, atol=1e-4)
    again = get_cifar10(fake_cifar, one_hot=False, validation_size=validation_size, seed=3)
    np.testing.assert_array_equal(again['validation'].images, data['validation'].images)
    if validation_size:
        other = get_cifar10(fake_cifar, one_hot=False, validation_size=validation_size, seed=4)
        assert not np.array_equal(other['validation'].images, data['validation'].images)


@pytest.mark.parametrize('bad', [-1, 200, 10**6])
def test_validation_size_out_of_range(fake_cifar, bad):
    with pytest.raises(ValueError, match='validation_size must be an integer from 0 to 199'):
        get_cifar10(fake_cifar, validation_size=bad)


@pytest.mark.parametrize('bad', [2.5, '10', None, True])
def test_validation_size_not_an_integer(fake_cifar, bad):
    with pytest.raises(ValueError, match=f'validation_size must be an integer, got {bad!r}'):
        get_cifar10(fake_cifar, validation_size=bad)


def test_cifar10_dir_environment_variable(fake_cifar, monkeypatch):
    monkeypatch.setenv('CIFAR10_DIR', fake_cifar)
    assert get_cifar10()['test'].num_examples == 40


# --------------------------------------------------------------------------- batching


def test_next_batch_covers_each_epoch_and_reshuffles(fake_cifar):
    train = get_cifar10(fake_cifar, one_hot=False, seed=0)['train']
    rows = train.images.reshape(200, -1)
    key = {row.tobytes(): i for i, row in enumerate(rows)}
    epochs = []
    for _ in range(2):
        seen = []
        for _ in range(4):  # 4 x 50 = one epoch
            x, y = train.next_batch(50)
            assert x.shape == (50, 3, 32, 32) and y.shape == (50,)
            idx = [key[r.tobytes()] for r in x.reshape(50, -1)]
            np.testing.assert_array_equal(y, train.labels[idx])
            seen += idx
        assert sorted(seen) == list(range(200))
        epochs.append(seen)
    assert epochs[0] != epochs[1] and epochs[0] != list(range(200))
    assert train.epochs_completed == 1
    train.next_batch(50)
    assert train.epochs_completed == 2


def test_next_batch_drops_the_incomplete_last_batch(fake_cifar):
    train = get_cifar10(fake_cifar, seed=0)['train']
    for _ in range(3):
        assert train.next_batch(60)[0].shape[0] == 60  # 180 of 200
    assert train.epochs_completed == 0
    assert train.next_batch(60)[0].shape[0] == 60
    assert train.epochs_completed == 1


def test_seed_makes_batches_reproducible(fake_cifar):
    a = get_cifar10(fake_cifar, seed=3)['train']
    b = get_cifar10(fake_cifar, seed=3)['train']
    c = get_cifar10(fake_cifar, seed=4)['train']
    xa, xb, xc = (d.next_batch(20)[0] for d in (a, b, c))
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(xa, xc)


def test_state_dict_resumes_the_batch_sequence(fake_cifar):
    a = get_cifar10(fake_cifar, seed=5)['train']
    for _ in range(7):
        a.next_batch(30)
    b = get_cifar10(fake_cifar, seed=99)['train']
    b.load_state_dict(a.state_dict())
    for _ in range(10):  # across epoch ends, where the generator is used
        np.testing.assert_array_equal(a.next_batch(30)[0], b.next_batch(30)[0])
    assert a.epochs_completed == b.epochs_completed == 2


@pytest.mark.parametrize('size', [0, -3, 201])
def test_bad_batch_size(fake_cifar, size):
    train = get_cifar10(fake_cifar)['train']
    with pytest.raises(
        ValueError, match='batch_size must be an integer from 1 to the number of examples, 200,'
    ):
        train.next_batch(size)


# --------------------------------------------------------------------------- bad files


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_malicious_pickle_is_refused(fake_cifar, tmp_path):
    marker = tmp_path / 'pwned'
    path = os.path.join(fake_cifar, 'data_batch_3')
    with open(path, 'wb') as f:
        pickle.dump({'data': _Payload(str(marker)), 'labels': []}, f, protocol=2)
    with pytest.raises(
        CIFAR10Error,
        match=r'data_batch_3 is not a CIFAR-10 batch file: '
        r'it asks to load code \(refusing to load io.open',
    ):
        get_cifar10(fake_cifar)
    assert not marker.exists()


def test_truncated_file(fake_cifar):
    path = os.path.join(fake_cifar, 'test_batch')
    with open(path, 'rb') as f:
        head = f.read(5000)
    with open(path, 'wb') as f:
        f.write(head)
    with pytest.raises(CIFAR10Error, match='test_batch is truncated or corrupt'):
        get_cifar10(fake_cifar)


@pytest.mark.parametrize(
    'content',
    [
        {'data': np.zeros((3, 100), np.uint8), 'labels': [0, 1, 2]},
        {'data': np.zeros((3, 3072), np.float32), 'labels': [0, 1, 2]},
        {'data': np.zeros((3, 3072), np.uint8), 'labels': [0, 1]},
        {'labels': [0]},
        [1, 2, 3],
    ],
)
def test_malformed_batch(fake_cifar, content):
    with open(os.path.join(fake_cifar, 'data_batch_2'), 'wb') as f:
        pickle.dump(content, f, protocol=2)
    with pytest.raises(CIFAR10Error, match='data_batch_2 does not hold a CIFAR-10 batch'):
        get_cifar10(fake_cifar)


def test_labels_out_of_range(fake_cifar):
    write_batch(os.path.join(fake_cifar, 'data_batch_1'), np.zeros((2, 3072), np.uint8), [0, 10])
    with pytest.raises(CIFAR10Error, match='data_batch_1 has labels outside 0..9'):
        get_cifar10(fake_cifar)


def test_folder_with_missing_batches(fake_cifar):
    os.remove(os.path.join(fake_cifar, 'data_batch_4'))
    with pytest.raises(CIFAR10Error, match='lacks data_batch_4'):
        get_cifar10(fake_cifar)


# --------------------------------------------------------------------------- download


def make_archive(tmp_path, members=None):
    """A cifar-10-python.tar.gz laid out like the official one, from fake batches; returns
    its bytes."""
    src = write_fake_cifar(tmp_path / 'src' / 'cifar-10-batches-py', per_batch=10)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        tar.add(src, arcname='cifar-10-batches-py')
        for name, payload in (members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture
def server():
    """Serves {path: (body, declared_length)} on 127.0.0.1; yields (routes, base_url)."""
    routes = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in routes:
                self.send_error(404)
                return
            body, length = routes[self.path]
            self.send_response(200)
            self.send_header('Content-Length', str(length))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield routes, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def serve_archive(server, monkeypatch, body, declared=None, md5=None):
    routes, base = server
    routes['/cifar-10-python.tar.gz'] = (body, len(body) if declared is None else declared)
    monkeypatch.setenv('CIFAR10_URL', f'{base}/cifar-10-python.tar.gz')
    monkeypatch.setenv('CIFAR10_MD5', md5 or hashlib.md5(body).hexdigest())


def leftovers(parent):
    return sorted(os.listdir(parent)) if os.path.isdir(parent) else []


def test_download_from_local_server(tmp_path, server, monkeypatch, capsys):
    serve_archive(server, monkeypatch, make_archive(tmp_path))
    target = tmp_path / 'data' / 'cifar10' / 'cifar-10-batches-py'
    data = get_cifar10(str(target))
    assert data['train'].num_examples == 50 and data['test'].num_examples == 10
    assert leftovers(target.parent) == ['cifar-10-batches-py']  # no temporary folder left
    assert 'Downloading CIFAR-10 from http://127.0.0.1' in capsys.readouterr().err
    get_cifar10(str(target))  # the second call reads the folder in place


def test_download_into_an_empty_folder(tmp_path, server, monkeypatch):
    serve_archive(server, monkeypatch, make_archive(tmp_path))
    target = tmp_path / 'empty'
    target.mkdir()
    assert get_cifar10(str(target))['test'].num_examples == 10


def test_official_md5_is_the_default(tmp_path, server, monkeypatch):
    serve_archive(server, monkeypatch, make_archive(tmp_path))
    monkeypatch.delenv('CIFAR10_MD5')
    target = tmp_path / 'data' / 'cifar-10-batches-py'
    with pytest.raises(
        CIFAR10Error,
        match=f'expected {cifar10_utils.CIFAR10_MD5}: it is '
        'corrupt or not CIFAR-10, and was deleted',
    ):
        get_cifar10(str(target))
    assert leftovers(target.parent) == []


def test_md5_mismatch_leaves_nothing(tmp_path, server, monkeypatch):
    serve_archive(server, monkeypatch, make_archive(tmp_path), md5='0' * 32)
    target = tmp_path / 'data' / 'cifar-10-batches-py'
    with pytest.raises(CIFAR10Error, match='has MD5 [0-9a-f]{32}, expected 0{32}'):
        get_cifar10(str(target))
    assert leftovers(target.parent) == []


def test_interrupted_download_leaves_nothing(tmp_path, server, monkeypatch):
    body = make_archive(tmp_path)
    serve_archive(server, monkeypatch, body[: len(body) // 2], declared=len(body))
    target = tmp_path / 'data' / 'cifar-10-batches-py'
    with pytest.raises(CIFAR10Error, match='Could not download|stopped after'):
        get_cifar10(str(target))
    assert leftovers(target.parent) == []


def test_path_traversal_in_archive_is_refused(tmp_path, server, monkeypatch):
    serve_archive(server, monkeypatch, make_archive(tmp_path, {'../../escaped': b'x'}))
    target = tmp_path / 'data' / 'deep' / 'cifar-10-batches-py'
    with pytest.raises(CIFAR10Error, match='Could not extract'):
        get_cifar10(str(target))
    assert not (tmp_path / 'data' / 'escaped').exists()
    assert not (tmp_path / 'escaped').exists()
    assert leftovers(target.parent) == []


def test_offline_error_names_the_folder(tmp_path):
    target = tmp_path / 'nowhere' / 'cifar-10-batches-py'
    with pytest.raises(CIFAR10Error) as err:
        get_cifar10(str(target))  # CIFAR10_URL points at a closed port (conftest)
    message = str(err.value)
    assert 'Could not download CIFAR-10' in message and str(target) in message
    assert 'by hand' in message
    assert leftovers(target.parent) == []


@pytest.mark.parametrize('switch', ['argument', 'environment'])
def test_download_can_be_switched_off(tmp_path, server, monkeypatch, switch):
    serve_archive(server, monkeypatch, make_archive(tmp_path))
    target = tmp_path / 'cifar-10-batches-py'
    kwargs = {}
    if switch == 'argument':
        kwargs['download'] = False
    else:
        monkeypatch.setenv('CIFAR10_DOWNLOAD', '0')
    with pytest.raises(CIFAR10Error, match=f'CIFAR-10 is not in {target} and downloading is off'):
        get_cifar10(str(target), **kwargs)
    assert not target.exists()


def test_real_data(real_cifar):
    data = get_cifar10(real_cifar, one_hot=False)
    assert data['train'].images.shape == (50000, 3, 32, 32)
    assert data['test'].images.shape == (10000, 3, 32, 32)
    assert np.bincount(data['test'].labels).tolist() == [1000] * 10


@pytest.mark.parametrize('padding', [0, 2])
def test_random_crop_flip(padding):
    x = np.random.default_rng(1).standard_normal((64, 3, 8, 8)).astype(np.float32)
    out = cifar10_utils.random_crop_flip(x, np.random.default_rng(0), padding)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    found = set()
    for i in range(64):
        matches = [
            (dy, dx, flip)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            for flip in (0, 1)
            if np.array_equal(
                out[i], padded[i, :, dy : dy + 8, dx : dx + 8][..., :: -1 if flip else 1]
            )
        ]
        assert matches, f'image {i} is not a crop of its padded input'
        found.update(matches)
    assert {m[2] for m in found} == {0, 1}  # both flipped and kept images
    offsets = {m[:2] for m in found}
    assert len(offsets) > 10 if padding else offsets == {(0, 0)}
    assert out.shape == x.shape and out.dtype == x.dtype
