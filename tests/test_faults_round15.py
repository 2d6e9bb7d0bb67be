"""Findings of the twelfth probe, second part: a --out given as a link or a pipe; checkpoints
that are damaged or of the other ConvNet script; a library that cannot be loaded and memory
that runs out before a script's handlers; a CIFAR10_MD5 that is no MD5 sum and the folders a
failed download left; grids too large to build or listing a value twice; a heatmap.png too
large to open; a stopped rerun's note; empty paths and numbers in Python's other spellings."""

import json
import os
import resource
import struct
import subprocess
import sys
import zlib

import pytest
from conftest import ROOT, one_error, small_run
from fake_runs import fake_project
from test_faults_round5 import report
from test_faults_round11 import grid

import cifar10_utils
import train_convnet_numpy
import train_convnet_pytorch
import train_mlp_numpy
from report import rerun
from report.records import is_png

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'small_convnets')


def script_error(args, env=None):
    """Runs a script of the project's; its exit status and its stderr's last line, asserting
    there is no traceback."""
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )
    assert 'Traceback' not in done.stderr, done.stderr
    return done.returncode, done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize('kind', ['link', 'pipe'])
def test_an_out_file_that_is_a_link_or_a_pipe_is_refused(kind, tmp_path):
    """benchmark.py --out replaced a link with a plain file (the file it pointed to kept its
    old content), and a named pipe held the benchmark at its end until a reader came."""
    target, out = tmp_path / 'kept.json', tmp_path / 'out.json'
    target.write_text('kept')
    if kind == 'link':
        out.symlink_to(target)
    else:
        os.mkfifo(out)
    status, line = script_error(['benchmark.py', '--out', str(out)])
    assert status == 2
    assert line.endswith(
        f'{out} is a link, a device or a pipe; give the path of a plain file to write.'
    )
    assert target.read_text() == 'kept' and os.path.lexists(out)


def refused(script, argv):
    """Asserts that script.main(argv) refuses its command line (exit status 2)."""
    with pytest.raises(SystemExit) as e:
        script.main(argv)
    assert e.value.code == 2


def flip_a_byte_of_the_weights(path):
    """Changes one byte inside the first weight tensor torch.save stored (uncompressed)."""
    data = bytearray(path.read_bytes())
    at = data.index(b'/data/0') + 200  # the local header, then the tensor's bytes
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_pytorch_checkpoint_is_refused(fake_cifar, tmp_path, capsys):
    """torch.load checks no CRC: a last.pt with a flipped byte in its weights resumed, and
    went on from weights no run had trained."""
    folder = tmp_path / 'run'
    assert train_convnet_pytorch.main(small_run(fake_cifar, folder)) == 0
    before = (folder / 'metrics.json').read_bytes()
    flip_a_byte_of_the_weights(folder / 'last.pt')
    refused(train_convnet_pytorch, ['--resume', str(folder / 'last.pt')])
    assert one_error(capsys).endswith('/data/0 is damaged.')
    assert (folder / 'metrics.json').read_bytes() == before


@pytest.mark.parametrize(
    'script, other, checkpoint',
    [
        (train_convnet_pytorch, train_convnet_numpy, 'last.npz'),
        (train_convnet_numpy, train_convnet_pytorch, 'last.pt'),
    ],
    ids=['an npz to pytorch', 'a pt to numpy'],
)
def test_the_other_scripts_checkpoint_is_named_as_such(
    script, other, checkpoint, fake_cifar, tmp_path, capsys
):
    """Each said "not a readable checkpoint (KeyError)" or "(UnpicklingError)" of the other's
    checkpoint, a zip archive both."""
    folder = tmp_path / 'run'
    assert other.main(small_run(fake_cifar, folder)) == 0
    capsys.readouterr()
    refused(script, ['--resume', str(folder / checkpoint)])
    name = script.__name__
    assert one_error(capsys).endswith(f'is not a checkpoint of {name}.py.')


@pytest.mark.parametrize(
    'raised, message',
    [
        (
            "ImportError('libopenblas.so: cannot map')",
            'could not load a library it needs (libopenblas.so: cannot map): install '
            'requirements.txt (see README.md), or raise the memory limit (ulimit -v) if one is '
            'set.',
        ),
        (
            'MemoryError()',
            'not enough memory: free some, or raise the memory limit (ulimit -v) if one is set.',
        ),
    ],
    ids=['import', 'memory'],
)
def test_a_library_that_cannot_be_loaded_is_one_sentence(raised, message, tmp_path):
    """Under ulimit -v, `import numpy` (or torch) raised ImportError or MemoryError before
    the script's handlers: a traceback, or a sentence that blamed a missing installation."""
    broken = tmp_path / 'numpy'
    broken.mkdir()
    (broken / '__init__.py').write_text(f'raise {raised}\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    status, line = script_error(['train_mlp_numpy.py', '--max_steps', '1'], env)
    assert status == 1
    assert line == f'train_mlp_numpy.py: error: {message}'


def test_memory_that_runs_out_while_a_batch_loads_is_not_a_damaged_file(fake_cifar, monkeypatch):
    """load_batch said a whole batch file was "truncated or corrupt" when the unpickler ran
    out of memory."""

    def out_of_memory(self):
        raise MemoryError

    monkeypatch.setattr(cifar10_utils._BatchUnpickler, 'load', out_of_memory)
    with pytest.raises(MemoryError):
        cifar10_utils.load_batch(os.path.join(fake_cifar, 'data_batch_1'))


def test_a_cifar10_md5_that_is_no_md5_sum_is_refused_before_the_download(tmp_path, monkeypatch):
    """CIFAR10_MD5=abc downloaded the whole archive to say its sum differed."""
    monkeypatch.setenv('CIFAR10_MD5', 'abc')
    monkeypatch.setattr(cifar10_utils, 'open_url', pytest.fail)  # no download begins
    with pytest.raises(cifar10_utils.CIFAR10Error) as e:
        cifar10_utils.download_cifar10(str(tmp_path / 'new' / 'cifar10'))
    assert str(e.value) == "CIFAR10_MD5='abc' is not an MD5 sum (32 hexadecimal digits)."
    assert os.listdir(tmp_path) == []


def test_a_failed_download_removes_the_folders_it_made(tmp_path):
    """A refused download left the empty folders above --data_dir behind."""
    (tmp_path / 'kept').mkdir()
    data_dir = tmp_path / 'kept' / 'new' / 'deeper' / 'cifar-10-batches-py'
    with pytest.raises(cifar10_utils.CIFAR10Error):
        cifar10_utils.download_cifar10(str(data_dir), url='http://127.0.0.1:9/cifar.tar.gz')
    assert os.listdir(tmp_path) == ['kept'] and os.listdir(tmp_path / 'kept') == []


@pytest.mark.parametrize(
    'flags, message',
    [
        (
            ['--hidden_units', '100000,100000'],
            'the architecture 100000,100000 needs at least 206 GB, more than the',
        ),
        (['--hidden_units', str(2**63)], f'the architecture {2**63} needs at least'),
        (['--learning_rate', '0.1,0.1'], "grid key 'learning_rate' lists 0.1 twice."),
        (['--hidden_units', '10;10'], "grid key 'hidden_units' lists [10] twice."),
    ],
    ids=['40 GB', '2**63', 'a learning rate twice', 'an architecture twice'],
)
def test_a_grid_that_cannot_or_need_not_be_fitted_is_refused_first(
    flags, message, fake_cifar, tmp_path, capsys
):
    """100000,100000 failed in the first fit (2**63: a TypeError traceback); a value listed
    twice fitted the same setting twice, and the table showed it twice."""
    out = tmp_path / 'grid'
    assert grid(fake_cifar, out, *flags) == 2
    assert message in one_error(capsys)
    assert not out.exists()


def png(width, height):
    """A whole 1-bit grey PNG image of width x height black pixels."""

    def chunk(kind, data):
        checksum = struct.pack('>I', zlib.crc32(kind + data))
        return struct.pack('>I', len(data)) + kind + data + checksum

    row = b'\0' * (1 + (width + 7) // 8)  # filter type 0, then the row's bits
    header = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(row * height, 9)
    chunks = chunk(b'IHDR', header) + chunk(b'IDAT', pixels) + chunk(b'IEND', b'')
    return b'\x89PNG\r\n\x1a\n' + chunks


@pytest.mark.parametrize('side', [10_000, 14_000], ids=['100 Mpixel', '196 Mpixel'])
def test_a_heatmap_too_large_to_open_is_not_taken(side, tmp_path, capsys):
    """A 196-Mpixel heatmap.png stopped the report with Pillow's DecompressionBombError
    traceback; a 100-Mpixel one went into the PDF (a warning on stderr)."""
    assert is_png(png(40, 40))
    runs_json = fake_project(tmp_path)
    (tmp_path / 'runs' / 'gridsearch' / 'heatmap.png').write_bytes(png(side, side))
    assert report(runs_json, tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err and 'Warning' not in err, err
    assert f'{tmp_path}/runs/gridsearch/heatmap.png is not a whole PNG image' in err
    assert not (tmp_path / 'out').exists() or os.listdir(tmp_path / 'out') == []


class StoppedChild:
    """A rerun's child process that the user stops (Ctrl-C) while it writes its folder."""

    def __init__(self, command, **kwargs):
        self.fresh = command[command.index('--out_dir') + 1]
        os.makedirs(os.path.join(ROOT, self.fresh))
        self.signals = []

    def wait(self):
        if not self.signals:
            raise KeyboardInterrupt(2)
        return 130

    def send_signal(self, signum):
        self.signals.append(signum)


def test_a_stopped_rerun_says_on_stderr_that_its_folder_was_removed(tmp_path, monkeypatch, capsys):
    """The note went to stdout and said only that the old folder was as it was."""
    runs_json = fake_project(tmp_path)
    folder = tmp_path / 'runs' / 'mlp_numpy_default'
    before = (folder / 'metrics.json').read_bytes()
    monkeypatch.setattr(rerun.subprocess, 'Popen', StoppedChild)
    report(runs_json, tmp_path / 'out', '--rerun', 'mlp_numpy_default')
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert f'was stopped and its {folder}.rerun removed; {folder} is as it was.' in err
    assert (folder / 'metrics.json').read_bytes() == before
    assert not os.path.exists(f'{folder}.rerun')


@pytest.mark.parametrize(
    'flags, message',
    [
        (['--out_dir', ''], "argument --out_dir: expected a path, got ''"),
        (['--data_dir', ' '], "argument --data_dir: expected a path, got ' '"),
        (['--max_steps', '1_0'], 'argument --max_steps: expected an integer from 1 to'),
        (['--max_steps', '\u0663'], 'argument --max_steps: expected an integer from 1 to'),
        (['--learning_rate', '1_0.0'], 'argument --learning_rate: expected a number > 0'),
    ],
    ids=['empty out_dir', 'blank data_dir', '1_0', 'arabic digit', '1_0.0'],
)
def test_empty_paths_and_other_spellings_of_numbers_are_refused(
    flags, message, tmp_path, monkeypatch, capsys
):
    """--out_dir "$UNSET" trained into a new folder under runs/ (the default); --max_steps
    1_0 and an Arabic-Indic three were read as 10 and 3, Python's own spellings."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        train_mlp_numpy.main(['--max_steps', '1', *flags])
    assert e.value.code == 2
    assert message in one_error(capsys)
    assert os.listdir(tmp_path) == []


def test_train_refuses_an_empty_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"out_dir must be a path \(a non-empty string\), got ''"):
        train_mlp_numpy.train(max_steps=1, out_dir='')
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('flag', [['--out', 'profile.json'], ['--quick']])
def test_the_profile_takes_no_out_file_and_no_quick(flag, tmp_path):
    """benchmark.py --profile --out X profiled, exit 0, and wrote no X."""
    status, line = script_error(['benchmark.py', '--profile', *flag])
    assert status == 2
    assert line.endswith('--profile only prints the profile: it takes no --out and no --quick.')
    assert not os.path.exists(os.path.join(ROOT, 'profile.json'))


def test_a_subsample_larger_than_what_the_validation_split_leaves(fake_cifar, tmp_path, capsys):
    """ "--subsample 20 is more than the 10 training images" did not say where the rest went."""
    out = tmp_path / 'grid'
    assert grid(fake_cifar, out, '--validation_size', '190', '--subsample', '20') == 2
    assert one_error(capsys).endswith(
        '--subsample 20 is more than the 10 training images left by --validation_size 190.'
    )
    assert not out.exists()


SLOW_EXIT = """
import builtins, runpy, sys, time


class SlowExit:  # CPU work as the interpreter ends (a slow machine's teardown of torch, say)
    def __del__(self):
        end = time.process_time() + 2.5
        while time.process_time() < end:
            pass


builtins.slow_exit = SlowExit()
sys.argv = ['train_mlp_numpy.py', *sys.argv[1:]]
runpy.run_path('train_mlp_numpy.py', run_name='__main__')
"""


def test_the_repeats_of_a_cpu_time_limit_do_not_cut_the_exit_short(fake_cifar, tmp_path):
    """Past the soft limit the kernel sends SIGXCPU every CPU second; one that came as the
    interpreter ended (Python's handlers gone) killed the run, which had saved, by SIGXCPU:
    exit -24 and a core file where core dumps are on, not 152 and its sentence."""

    def limit_cpu():
        resource.setrlimit(resource.RLIMIT_CPU, (3, resource.RLIM_INFINITY))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    out = tmp_path / 'run'
    flags = ['--max_steps', '10000000', '--eval_freq', '1000']
    done = subprocess.run(
        [sys.executable, '-c', SLOW_EXIT, '--data_dir', fake_cifar, '--out_dir', str(out), *flags],
        cwd=ROOT,
        timeout=120,
        preexec_fn=limit_cpu,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 128 + 24 and 'Traceback' not in done.stderr, done.stderr
    assert 'Stopped by SIGXCPU after step' in done.stderr
    assert json.loads((out / 'metrics.json').read_text())['status'] == 'interrupted'
    assert sorted(os.listdir(out)) == ['curves.png', 'metrics.json']
