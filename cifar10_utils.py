"""CIFAR-10: download (verified), load, normalise and batch, with the course's interface::

    cifar10 = get_cifar10('cifar10/cifar-10-batches-py')
    x, y = cifar10['train'].next_batch(200)   # x: float32 (200, 3, 32, 32), y: float32 (200, 10)

Images keep the course's pixel scale (0..255) minus the training set's mean image.
"""

import contextlib
import hashlib
import http.client
import os
import pickle
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request

import numpy as np
from tqdm import tqdm

CIFAR10_FOLDER = 'cifar10/cifar-10-batches-py'
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
CIFAR10_MD5 = 'c58f30108f718f92721af3b95e74349a'
ARCHIVE_FOLDER = 'cifar-10-batches-py'  # the folder inside the official archive
TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_FILES = ('test_batch',)
BATCH_FILES = TRAIN_FILES + TEST_FILES
N_CLASSES = 10
# batches.meta's label_names, in label order.
CLASS_NAMES = (
    'airplane',
    'automobile',
    'bird',
    'cat',
    'deer',
    'dog',
    'frog',
    'horse',
    'ship',
    'truck',
)


# A download slower than this over a whole window is given up (a server that trickles), and
# one whose server has not answered (connected and sent its headers) within ANSWER_SECONDS.
STALL_SECONDS, MIN_BYTES_PER_SECOND, ANSWER_SECONDS = 60, 10_000, 60
# Three times the official archive's 163 MiB: a longer download is no CIFAR-10 (a server that
# never stops sending would fill the disk).
LARGEST_ARCHIVE = 512 << 20


class CIFAR10Error(RuntimeError):
    """The data cannot be found, fetched or read; the message says what to do."""


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the globals that rebuild a batch file's NumPy arrays (it is a Python 2 pickle
    of a dict of a uint8 ndarray, lists of ints and byte strings): a tampered file runs no code."""

    ALLOWED = {
        ('numpy._core.multiarray', '_reconstruct'),
        ('numpy._core.multiarray', 'scalar'),
        ('numpy._core.numeric', '_frombuffer'),
        ('numpy', 'ndarray'),
        ('numpy', 'dtype'),
        ('_codecs', 'encode'),  # _codecs.encode: how Python 3 writes bytes in protocol 2
        ('__builtin__', 'bytes'),
    }  # and an empty bytes object

    def find_class(self, module, name):
        if module.startswith('numpy.core'):  # pickles written before NumPy 2
            module = 'numpy._core' + module[len('numpy.core') :]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}')
        return super().find_class(module, name)


def load_batch(path):
    """One batch file -> data uint8 (N, 3, 32, 32) in R, G, B planes, labels int64 (N,) in 0..9.
    Raises CIFAR10Error naming the file when it is missing, unsafe, truncated or malformed."""
    try:
        with open(path, 'rb') as f:
            batch = _BatchUnpickler(f, encoding='latin1').load()
    except FileNotFoundError:
        raise CIFAR10Error(f'{path} is missing.') from None
    except (PermissionError, IsADirectoryError) as e:  # not the file's fault: keep it
        raise CIFAR10Error(
            f'{path} cannot be read ({e.strerror}); make it a readable file, or point '
            '--data_dir or CIFAR10_DIR at another copy.'
        ) from None
    except MemoryError:  # the machine's, not the file's fault
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... from a damaged stream
        if isinstance(e, pickle.UnpicklingError) and str(e).startswith('refusing'):
            raise CIFAR10Error(
                f'{path} is not a CIFAR-10 batch file: it asks to load code '
                f'({e}). Delete it and download the data again.'
            ) from None
        raise CIFAR10Error(
            f'{path} is truncated or corrupt ({type(e).__name__}: {e}). '
            'Delete it and download the data again.'
        ) from None
    try:
        if isinstance(batch, dict):  # Python 2 wrote the keys as str; a batch re-saved by 3, bytes
            batch = {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data, labels = batch['data'], batch['labels']
        # a flat list of ints (NumPy would walk a list of lists that share themselves, 2**45
        # of them in a small file, for hours)
        if not isinstance(labels, (list, np.ndarray)) or (
            isinstance(labels, list) and not all(type(x) is int for x in labels)
        ):
            raise ValueError
        labels = np.asarray(labels)
        if not (
            isinstance(data, np.ndarray)
            and data.dtype == np.uint8
            and data.ndim == 2
            and data.shape[1] == 3072
            and labels.shape == (len(data),)
            and (labels.dtype.kind in 'iu' or labels.size == 0)
        ):  # 3.7 is not a label
            raise ValueError
        labels = labels.astype(np.int64)
    except (TypeError, KeyError, ValueError, IndexError, OverflowError):
        raise CIFAR10Error(
            f'{path} does not hold a CIFAR-10 batch (a dict with a uint8 '
            "'data' array of shape (N, 3072) and N 'labels')."
        ) from None
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise CIFAR10Error(f'{path} has labels outside 0..9.')
    return data.reshape(-1, 3, 32, 32), labels  # rows are 3 planes of 32 x 32 already: no copy


def download_cifar10(data_dir, url=None, md5=None):
    """Downloads the archive from $CIFAR10_URL, checks it against $CIFAR10_MD5 (defaults: the
    official ones) and extracts it with tarfile's 'data' filter into a temporary folder beside
    data_dir, renamed data_dir only once complete: a failed download leaves nothing behind."""
    url = url or os.environ.get('CIFAR10_URL') or CIFAR10_URL
    md5 = md5 or os.environ.get('CIFAR10_MD5') or CIFAR10_MD5
    if not isinstance(url, str):
        raise CIFAR10Error(f'the URL to download CIFAR-10 from must be text, got {url!r}.')
    if not (isinstance(md5, str) and re.fullmatch('[0-9a-fA-F]{32}', md5.strip())):
        raise CIFAR10Error(f'CIFAR10_MD5={md5!r} is not an MD5 sum (32 hexadecimal digits).')
    md5 = md5.strip().lower()  # (else a whole download only to say that it differs)
    data_dir = os.path.abspath(data_dir)
    parent = os.path.dirname(data_dir)
    made, folder = [], parent  # the folders above data_dir this download makes, innermost first
    while not os.path.lexists(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    if os.path.islink(data_dir) and not os.path.exists(data_dir):  # the data could not go there
        raise CIFAR10Error(
            f'{data_dir} is a symbolic link to {os.readlink(data_dir)}, which does not exist; '
            'make the folder it names, or point --data_dir or CIFAR10_DIR elsewhere.'
        )
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix='.cifar10-download-', dir=parent)
    except OSError as e:
        raise CIFAR10Error(
            f'Cannot download CIFAR-10 into {parent} ({e.strerror}); point '
            '--data_dir or CIFAR10_DIR at a folder you can write.'
        ) from None
    print(f'Downloading CIFAR-10 from {url} to {data_dir}', file=sys.stderr)
    archive, digest = os.path.join(tmp, 'cifar-10-python.tar.gz'), hashlib.md5()
    try:
        try:
            with open_url(url) as response, open(archive, 'wb') as f:
                size = response.headers.get('Content-Length')
                total = int(size) if size and size.isdigit() else None
                with tqdm.wrapattr(f, 'write', total=total, desc='CIFAR-10', leave=False) as out:
                    window_start, window_bytes = time.monotonic(), 0
                    while chunk := response.read1(1 << 20):  # what has come, at once
                        if f.tell() + len(chunk) > LARGEST_ARCHIVE:  # (an endless stream)
                            raise CIFAR10Error(
                                f'The download from {url} is larger than '
                                f'{LARGEST_ARCHIVE >> 20} MiB, which no CIFAR-10 archive is; '
                                'nothing was kept.'
                            )
                        out.write(chunk)
                        digest.update(chunk)
                        window_bytes += len(chunk)
                        if (waited := time.monotonic() - window_start) >= STALL_SECONDS:
                            if window_bytes < MIN_BYTES_PER_SECOND * waited:
                                raise CIFAR10Error(
                                    f'The download from {url} stalled (under '
                                    f'{MIN_BYTES_PER_SECOND // 1000} kB/s for {waited:.0f} s); '
                                    'nothing was kept. Try again later.'
                                )
                            window_start, window_bytes = time.monotonic(), 0
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts,
            # a bad URL (ValueError, InvalidURL) or a server that does not speak HTTP
            raise CIFAR10Error(
                f'Could not download CIFAR-10 from {url} ({getattr(e, "reason", e)}). Without '
                'network access, put data_batch_1..5 and test_batch from cifar-10-python.tar.gz '
                f'in {data_dir} by hand, or point CIFAR10_DIR or --data_dir at them.'
            ) from None
        if total is not None and (received := os.path.getsize(archive)) != total:
            raise CIFAR10Error(
                f'The download from {url} stopped after {received} of {total} '
                'bytes; nothing was kept. Try again.'
            )
        if (got := digest.hexdigest()) != md5:
            raise CIFAR10Error(
                f'The archive from {url} has MD5 {got}, expected {md5}: it is '
                'corrupt or not CIFAR-10, and was deleted. Try again.'
            )
        try:
            with tarfile.open(archive, 'r:gz') as tar:
                tar.extractall(tmp, filter='data')  # refuses absolute paths, '..' and links out
        except (tarfile.TarError, EOFError, OSError) as e:
            raise CIFAR10Error(f'Could not extract the archive from {url} ({e}).') from None
        extracted = os.path.join(tmp, ARCHIVE_FOLDER)
        missing = [  # real files in a real folder: a link would dangle once tmp is gone
            n
            for n in BATCH_FILES
            if os.path.islink(extracted)
            or os.path.islink(os.path.join(extracted, n))
            or not os.path.isfile(os.path.join(extracted, n))
        ]
        if missing:
            raise CIFAR10Error(
                f'The archive from {url} lacks {", ".join(missing)} under {ARCHIVE_FOLDER}/ '
                '(as files: links are not followed).'
            )
        if os.path.isdir(data_dir):
            os.rmdir(data_dir)  # empty (ensure_cifar10 checked): the extracted folder replaces it
        os.replace(extracted, data_dir)
    except KeyboardInterrupt:
        print('Download interrupted; nothing was kept.', file=sys.stderr)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made if not os.path.isdir(data_dir) else ():  # failed: as it was
            with contextlib.suppress(OSError):  # not empty: another's since
                os.rmdir(folder)


def open_url(url):
    """urllib.request.urlopen(url), given ANSWER_SECONDS in all to connect and send its
    headers (urlopen's timeout is per read: a server that sends a header byte a second would
    hold it for hours); raises what urlopen raised, or TimeoutError."""
    return call_within(ANSWER_SECONDS, lambda: urllib.request.urlopen(url, timeout=STALL_SECONDS))


def call_within(seconds, make):
    """make()'s result, or TimeoutError once `seconds` have passed without one: make runs in a
    thread (a daemon: one that hangs is left behind, and closes what it makes should that come
    late). Raises what make raised."""
    outcome, decided = {}, threading.Lock()

    def attempt():
        try:
            made = make()
        except Exception as e:  # the caller's to say
            made, outcome['error'] = None, e
        with decided:
            if 'gave_up' in outcome and made is not None:
                made.close()
            outcome['made'] = made

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    with decided:
        if 'made' not in outcome:
            outcome['gave_up'] = True
            raise TimeoutError(f'no answer within {seconds:g} s')
    if 'error' in outcome:
        raise outcome['error']
    return outcome['made']


def ensure_cifar10(data_dir, download=True):
    """Returns data_dir once it holds the batch files, downloading them when allowed."""
    if os.path.isdir(data_dir) and not os.access(data_dir, os.R_OK | os.X_OK):  # else: missing
        raise CIFAR10Error(
            f'{data_dir} cannot be read (permission denied); make it readable (chmod u+rx), '
            'or point --data_dir or CIFAR10_DIR at another copy.'
        )
    missing = [n for n in BATCH_FILES if not os.path.isfile(os.path.join(data_dir, n))]
    if not missing:
        return data_dir
    if len(missing) < len(BATCH_FILES):
        raise CIFAR10Error(
            f'{data_dir} lacks {", ".join(missing)}. Put the missing batch '
            'files there, or delete the folder to download it again.'
        )
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        found = 'holds no CIFAR-10 batch files' if os.path.isdir(data_dir) else 'is not a folder'
        raise CIFAR10Error(
            f'{data_dir} {found}; point --data_dir or CIFAR10_DIR at the folder '
            'with data_batch_1..5 and test_batch.'
        )
    switch = os.environ.get('CIFAR10_DOWNLOAD', '1').strip().lower()
    if switch not in ('1', 'true', 'yes', 'on', '0', 'false', 'no', 'off', ''):
        raise CIFAR10Error(
            f'CIFAR10_DOWNLOAD={switch!r} is neither on (1, true, yes, on) nor off (0, false, '
            'no, off).'
        )
    if not download or switch in ('0', 'false', 'no', 'off', ''):
        raise CIFAR10Error(
            f'CIFAR-10 is not in {data_dir} and downloading is off. Place the '
            'batch files of cifar-10-python.tar.gz (data_batch_1..5, test_batch) '
            'there, or point CIFAR10_DIR or --data_dir at them.'
        )
    download_cifar10(data_dir)  # (which replaces an empty data_dir only once it has the data)
    return data_dir


def default_data_dir():
    """$CIFAR10_DIR when set, else the course's folder."""
    return os.environ.get('CIFAR10_DIR') or CIFAR10_FOLDER


class DataSet:
    """Images float32 (N, 3, 32, 32) and labels (float32 one-hot (N, 10) or int64 (N,)) of a
    split, in shuffled mini-batches. rng orders them; augmentation draws from it too, so that
    state_dict() holds all of a run's randomness."""

    def __init__(self, images, labels, seed=None):
        if len(images) != len(labels):
            raise ValueError(f'{len(images)} images but {len(labels)} labels.')
        self.images, self.labels, self.num_examples = images, labels, len(images)
        self.epochs_completed = self._index_in_epoch = 0
        self.rng = np.random.default_rng(seed)
        self._order = self.rng.permutation(self.num_examples)  # files may be sorted by class

    def next_batch(self, batch_size):
        """The next (images, labels) batch. An epoch's last incomplete batch is skipped (every
        batch has batch_size examples), then the order is reshuffled and epochs_completed grows."""
        whole = isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
        if not (whole and 0 < batch_size <= self.num_examples):
            raise ValueError(
                f'batch_size must be an integer from 1 to the number of examples, '
                f'{self.num_examples}, got {batch_size!r}.'
            )
        start = self._index_in_epoch
        if start + batch_size > self.num_examples:
            self.epochs_completed += 1
            self._order = self.rng.permutation(self.num_examples)  # shuffle indices, not images
            start = 0
        self._index_in_epoch = start + batch_size
        idx = self._order[start : self._index_in_epoch]
        return self.images[idx], self.labels[idx]

    def state_dict(self):
        """Where next_batch stands, as plain Python values (for checkpoints)."""
        return {
            'epochs_completed': self.epochs_completed,
            'index_in_epoch': self._index_in_epoch,
            'order': self._order.tolist(),
            'rng': self.rng.bit_generator.state,
        }

    def load_state_dict(self, state):
        """Continues from a state_dict(): the following batches are those it would have given."""
        if len(state['order']) != self.num_examples:
            raise ValueError(
                f'the saved batch order covers {len(state["order"])} examples, '
                f'this set has {self.num_examples}.'
            )
        order = np.asarray(state['order'])
        index = state['index_in_epoch']
        if not (
            order.dtype.kind in 'iu'
            and np.array_equal(np.sort(order), np.arange(self.num_examples))
            and isinstance(index, int)
            and 0 <= index <= self.num_examples
            and isinstance(state['epochs_completed'], int)
        ):
            raise ValueError('the saved batch order is not an order of this set.')
        self.epochs_completed = state['epochs_completed']
        self._index_in_epoch = index
        self._order = order.astype(np.int64)
        self.rng.bit_generator.state = state['rng']


def random_crop_flip(images, rng, padding=4):
    """Each image cropped at a random offset from itself zero-padded by `padding` pixels, then
    flipped left-right with probability 1/2. images: (B, C, H, W) -> a new array of that shape;
    rng: a numpy Generator. Zero is the mean pixel here: the padding adds no false edges."""
    if padding < 0:
        raise ValueError(f'the padding of the crops must be >= 0, got {padding}.')
    b, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    crops = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))  # no copy
    dy, dx = rng.integers(0, 2 * padding + 1, size=(2, b))
    out = crops[np.arange(b), :, dy, dx]  # (B, C, 2p+1, 2p+1, H, W) -> (B, C, H, W), a copy
    flip = rng.random(b) < 0.5
    out[flip] = out[flip, ..., ::-1]
    return out


def dense_to_one_hot(labels, n_classes=N_CLASSES, dtype=np.float32):
    """int array (N,) -> one-hot array (N, n_classes)."""
    return np.eye(n_classes, dtype=dtype)[labels]


def get_cifar10(data_dir=None, one_hot=True, validation_size=0, download=True, seed=None):
    """Returns {'train', 'validation', 'test'} DataSets of CIFAR-10, their images float32
    (N, 3, 32, 32) minus the mean image of the (remaining) training set.

    Args:
        data_dir: folder with data_batch_1..5 and test_batch (default: default_data_dir()),
            downloaded there when missing, unless download=False or $CIFAR10_DOWNLOAD=0.
        one_hot: labels as float32 one-hot (N, 10) if True, else int64 (N,).
        validation_size: how many training images are held out as the validation set, drawn
            stratified (each class in its share) by the seed; the rest stay in order.
        seed: seeds the validation draw and next_batch's shuffling, for reproducible runs.
    Raises ValueError (a bad argument), CIFAR10Error (data not found, downloaded or read).
    """
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)):
        raise ValueError(f'validation_size must be an integer, got {validation_size!r}.')
    if not isinstance(one_hot, bool):  # one_hot='no' would be taken as True
        raise ValueError(f'one_hot must be True or False, got {one_hot!r}.')
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise ValueError(f'seed must be None or an integer >= 0, got {seed!r}.')
    data_dir = ensure_cifar10(data_dir or default_data_dir(), download)
    raw, labels = zip(*(load_batch(os.path.join(data_dir, n)) for n in TRAIN_FILES))
    test_x, test_y = load_batch(os.path.join(data_dir, TEST_FILES[0]))
    for name, batch in zip(TRAIN_FILES, raw):  # (a copy made to fill a gap; 10 ms a batch)
        if len(batch) and np.array_equal(batch, test_x):
            raise CIFAR10Error(
                f'In {data_dir}, {name} holds the images of test_batch: a test accuracy after '
                'training on them would mean nothing. Put the real batch file there.'
            )
    raw, labels = np.concatenate(raw), np.concatenate(labels)  # uint8 (N, 3, 32, 32), int64 (N,)
    for images, files in ((raw, 'data_batch_1..5 hold'), (test_x, 'test_batch holds')):
        if not len(images):  # nothing to train on or to evaluate
            raise CIFAR10Error(
                f'In {data_dir}, {files} no images. Delete the folder and download the data again.'
            )
    n_train, v = len(raw), validation_size
    if not 0 <= v < n_train:
        raise ValueError(
            f'validation_size must be an integer from 0 to {n_train - 1} (the '
            f'training set has {n_train} images), got {validation_size!r}.'
        )
    seeds = np.random.SeedSequence(seed).spawn(4) if seed is not None else [None] * 4
    held_out = np.zeros(n_train, dtype=bool)
    if v:  # stratified: each class gives its share of the v images, the seed picks which
        order, rank = np.random.default_rng(seeds[3]).permutation(n_train), np.empty(n_train)
        for c in range(N_CLASSES):
            members = order[labels[order] == c]
            rank[members] = (np.arange(len(members)) + 0.5) / len(members)  # place in class
        held_out[np.argsort(rank, kind='stable')[:v]] = True
    # The kept images' mean: all minus the held-out ones, summed exactly in float64 over uint8.
    kept_sum = raw.sum(axis=0, dtype=np.float64) - raw[held_out].sum(axis=0, dtype=np.float64)
    mean_image = (kept_sum / (n_train - v)).astype(np.float32)
    images = np.subtract(raw, mean_image, dtype=np.float32)  # converts and subtracts in one pass
    train_split = (images[~held_out], labels[~held_out]) if v else (images, labels)
    splits = {
        'train': train_split,
        'validation': (images[held_out], labels[held_out]),
        'test': (np.subtract(test_x, mean_image, dtype=np.float32), test_y),
    }
    encode = dense_to_one_hot if one_hot else (lambda y: y)
    return {
        name: DataSet(x, encode(y), seed=s) for (name, (x, y)), s in zip(splits.items(), seeds[:3])
    }


read_data_sets = get_cifar10  # the same loader under its other public name
