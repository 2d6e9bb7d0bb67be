"""Findings of the ninth probe and the last rounds' leftovers: tampered checkpoints (optimizer
settings, metrics) that failed mid-run with a traceback; a grid search whose fits saw a batch
of one image under batch norm, or no batch at all, and lost the finished cross-validation; a
grid's CV scores that changed from run to run; a crafted results.tex that kept pdflatex busy
for ever; NaN accuracies in the report; and quiet or misleading endings (a signal as a script
exits, unittests.py names that match nothing, a batch larger than the training set)."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
import torch
from conftest import ROOT, one_error, write_fake_cifar
from fake_runs import fake_project
from test_cifar10_utils import make_archive, serve_archive, server  # noqa: F401 (a fixture)
from test_faults_round5 import edit_record, make_report, report

import cifar10_utils
import gridsearch
import train_convnet_numpy
import train_convnet_pytorch
import train_mlp_numpy

pytestmark = pytest.mark.usefixtures('torch_single_thread')


def grid(fake_cifar, out, *flags):
    return gridsearch.main(
        [
            '--hidden_units',
            '10',
            '--learning_rate',
            '0.01',
            '--max_epochs',
            '1',
            '--cv',
            '2',
            '--data_dir',
            fake_cifar,
            '--out_dir',
            str(out),
            *flags,
        ]
    )


def test_cv_scores_do_not_depend_on_what_ran_before(fake_cifar, tmp_path, capsys):
    """Each fit drew its weights before the seed was set (skorch initializes the module before
    on_train_begin): the first fit of a process started from whatever state torch's random
    numbers were in, and a repeat of the same search gave other CV scores."""
    scores = []
    for seed in (0, 1):
        torch.manual_seed(seed)  # what an earlier computation left behind
        out = tmp_path / f'grid{seed}'
        assert grid(fake_cifar, out, '--batch_size', '20', '--no_refit') == 0
        scores.append(json.loads((out / 'best.json').read_text())['best_cv_score'])
    assert scores[0] == scores[1]


def test_batch_norm_with_a_last_batch_of_one_image(fake_cifar, tmp_path, capsys):
    """40 images in 2 folds, batch 19: a fit's epoch ended with a batch of one image, which
    batch norm refuses (torch's message, exit 2, the search lost). An epoch now drops its
    incomplete last batch, as the train scripts do."""
    out = tmp_path / 'grid'
    flags = ('--batch_size', '19', '--batchnorm', 'torch', '--subsample', '40', '--no_refit')
    assert grid(fake_cifar, out, *flags) == 0
    assert (out / 'best.json').exists()


@pytest.mark.parametrize(
    'flags, message',
    [
        (
            ('--batch_size', '1', '--batchnorm', 'torch'),
            '--batchnorm needs --batch_size 2 or more',
        ),
        (  # 200 images, 2 folds: a fit trains on 100; the refit at 999 lost the search
            ('--batch_size', '101'),
            'batch size 101 is more than the 100 images a fit trains on (1 of 2 folds of 200).',
        ),
        (
            ('--batch_size', '20', '--cv', '999'),
            '999-fold cross-validation needs 999 images of each class, and the 200 images '
            'searched have',
        ),
        (('--batch_size', '20', '--scheduler', 'garbage'), '--scheduler garbage is not an address'),
    ],
)
def test_a_grid_no_fit_can_run_is_refused_before_the_first(flags, message, tmp_path, capsys):
    fake = write_fake_cifar(tmp_path / 'data')
    assert grid(fake, tmp_path / 'grid', *flags) == 2
    assert message in one_error(capsys)
    assert not (tmp_path / 'grid').exists()


def test_a_signal_as_a_script_exits_says_so(tmp_path):
    """After a script's own handlers hand back (its work done), a stop signal met quiet_start's
    "stopped while starting; nothing was done", and os._exit dropped what was still buffered
    on stdout (gridsearch.py stopped after its result line: exit 143, no sentence of its own)."""
    script = tmp_path / 'benchmark.py'  # a name quiet_start acts for
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from quiet_start import interrupt, stop_signals
        import os, signal, time
        with stop_signals(interrupt):
            pass
        print('the results line')  # buffered: stdout is a pipe
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        """)
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143
    assert done.stdout == 'the results line\n'
    assert done.stderr == (
        'benchmark.py: stopped by SIGTERM as it exited; everything it wrote is whole.\n'
    )


@pytest.mark.parametrize(
    'args, status, message',
    [
        (['-k', 'no_check_is_called_this'], 5, 'no check matches what was given.'),
        (['TestNothing', 'TestLayers'], 2, 'no check is named TestNothing.'),
    ],
)
def test_unittests_names_that_match_nothing(args, status, message):
    """-k with no match ran 0 tests and passed; an unknown name ran as a failing test with
    unittest's own traceback of the lookup."""
    done = subprocess.run(
        [sys.executable, 'unittests.py', *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == status
    assert done.stderr.startswith(f'unittests.py: error: {message}'), done.stderr
    assert 'Traceback' not in done.stderr


def test_benchmark_help_prints_nothing_on_stderr():
    """torch.utils.benchmark's import warned "No CUDA runtime is found" on machines with CUDA's
    compiler and no GPU."""
    done = subprocess.run(
        [sys.executable, 'benchmark.py', '--help'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == ''


def test_a_batch_larger_than_what_the_validation_split_leaves(fake_cifar, tmp_path, capsys):
    """It said "batch_size must be between 1 and the 1 examples of this set", at the first
    step, naming no flag."""
    run = ['--data_dir', fake_cifar, '--out_dir', str(tmp_path / 'run'), '--max_steps', '2']
    assert train_mlp_numpy.main([*run, '--validation_size', '195', '--batch_size', '10']) == 2
    assert one_error(capsys).endswith(
        ' error: --batch_size 10 is more than the 5 training images left by --validation_size '
        '195; choose a smaller one.'
    )
    assert not (tmp_path / 'run').exists()


def test_batch_files_resaved_with_bytes_keys(tmp_path):
    """A batch loaded with encoding='bytes' and pickled again has b'data' and b'labels' as its
    keys: it was refused as "does not hold a CIFAR-10 batch"."""
    folder = write_fake_cifar(tmp_path / 'data')
    path = os.path.join(folder, 'data_batch_1')
    with open(path, 'rb') as f:
        batch = pickle.load(f, encoding='bytes')
    with open(path, 'wb') as f:
        pickle.dump({k.encode(): v for k, v in batch.items()}, f, protocol=2)
    data, labels = cifar10_utils.load_batch(path)
    assert data.shape == (40, 3, 32, 32) and labels.tolist() == list(batch['labels'])


def test_a_training_batch_that_is_a_copy_of_the_test_batch(tmp_path):
    folder = write_fake_cifar(tmp_path / 'data')
    shutil.copyfile(os.path.join(folder, 'test_batch'), os.path.join(folder, 'data_batch_5'))
    with pytest.raises(cifar10_utils.CIFAR10Error, match='data_batch_5 holds the images of test'):
        cifar10_utils.get_cifar10(folder)


def test_an_archive_whose_folder_is_a_link(tmp_path, server, monkeypatch):  # noqa: F811
    """Its cifar-10-batches-py, a link to another folder of the archive, was moved into place
    and dangled once the temporary folder was gone."""
    src = write_fake_cifar(tmp_path / 'src' / 'real', per_batch=10)
    os.symlink('real', tmp_path / 'src' / 'cifar-10-batches-py')
    archive = tmp_path / 'a.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(src, arcname='real')
        tar.add(tmp_path / 'src' / 'cifar-10-batches-py', arcname='cifar-10-batches-py')
    serve_archive(server, monkeypatch, archive.read_bytes())
    target = tmp_path / 'data' / 'cifar-10-batches-py'
    with pytest.raises(cifar10_utils.CIFAR10Error, match='links are not followed'):
        cifar10_utils.get_cifar10(str(target))
    assert not (tmp_path / 'data').exists()  # nor the folder the download made


# ------------------------------------------------------------------ tampered checkpoints


def numpy_checkpoint(fake_cifar, tmp_path, change):
    """A 2-step NumPy ConvNet run's last.npz, its record changed by change(record), in a
    folder of its own beside the run's metrics.json; returns its path."""
    first = tmp_path / 'first'
    train_convnet_numpy.train(
        max_steps=2, eval_freq=1, batch_size=4, data_dir=fake_cifar, out_dir=str(first)
    )
    with np.load(first / 'last.npz') as f:
        arrays = {n: f[n] for n in f.files}
    record = json.loads(arrays.pop('record').tobytes())
    change(record)
    folder = tmp_path / 'tampered'
    folder.mkdir()
    shutil.copyfile(first / 'metrics.json', folder / 'metrics.json')
    encoded = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    np.savez(folder / 'last.npz', record=encoded, **arrays)
    return folder / 'last.npz'


def set_in(keys, value):
    def change(record):
        for key in keys[:-1]:
            record = record[key]
        record[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    'change, why',
    [
        (set_in(['optimizer', 'lr'], 'abc'), 'an optimizer state'),
        (set_in(['optimizer', 't'], 'abc'), 'an optimizer state'),
        (set_in(['optimizer', 'betas'], [5, 5]), 'an optimizer state'),  # "diverged" before
        (set_in(['optimizer', 'momentum'], 0.9), 'an optimizer state'),  # SGD's, not Adam's
        (lambda r: r['metrics'].pop('test_loss'), "no list 'test_loss'"),
        (set_in(['metrics', 'test_accuracy'], 7), "no list 'test_accuracy'"),
        (set_in(['metrics', 'resumed'], 5), "a 'resumed' that is not a list"),
        (set_in(['metrics', 'train_loss'], ['x', 'y']), "not a finite number in 'train_loss'"),
        (set_in(['metrics', 'train_loss'], [1.0]), 'curves of unequal lengths'),
    ],
)
def test_a_tampered_numpy_checkpoint(
    change, why, fake_cifar, small_numpy_convnet, tmp_path, capsys
):
    path = numpy_checkpoint(fake_cifar, tmp_path, change)
    before = (path.parent / 'metrics.json').read_bytes()
    try:  # the record is refused as the flags are read, the states as they are loaded
        status = train_convnet_numpy.main(['--resume', str(path), '--max_steps', '4'])
    except SystemExit as stop:
        status = stop.code
    error = one_error(capsys)
    assert status == 2 and f' error: {path} ' in error, error
    assert why in error, error
    assert (path.parent / 'metrics.json').read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ['last.npz', 'metrics.json']


@pytest.mark.parametrize(
    'change',
    [
        lambda c: c['optimizer']['param_groups'][0].update(lr='abc'),
        lambda c: c['optimizer']['param_groups'][0].update(betas=('x', 'y')),
        lambda c: c['optimizer']['param_groups'][0].update(betas=(float('nan'), 0.999)),
        lambda c: c['optimizer']['param_groups'][0].pop('weight_decay'),
        lambda c: c['optimizer']['state'][0].update(exp_avg=torch.zeros(3)),
    ],
)
def test_a_tampered_pytorch_checkpoint(change, fake_cifar, small_convnet, tmp_path, capsys):
    """A string as lr, or a pair of strings as betas, passed into torch's optimizer: a 34-line
    traceback at the first step."""
    first = tmp_path / 'first'
    train_convnet_pytorch.train(
        max_steps=2, eval_freq=1, batch_size=4, data_dir=fake_cifar, out_dir=str(first)
    )
    state = torch.load(first / 'last.pt', weights_only=True)
    change(state)
    torch.save(state, first / 'last.pt')
    before = (first / 'metrics.json').read_bytes()
    args = ['--resume', str(first / 'last.pt'), '--max_steps', '4', '--data_dir', fake_cifar]
    assert train_convnet_pytorch.main(args) == 2
    assert 'holds an optimizer state that this run cannot go on from' in one_error(capsys)
    assert (first / 'metrics.json').read_bytes() == before


@pytest.mark.parametrize('script', [train_convnet_numpy, train_convnet_pytorch])
def test_a_finished_run_resumed_into_a_new_folder_has_a_last_checkpoint(
    script, fake_cifar, small_convnets, tmp_path
):
    """No step was left, so none saved one: the new folder had best.pt and no last.pt, and
    could not be resumed from."""
    ext = 'npz' if script is train_convnet_numpy else 'pt'
    kwargs = dict(max_steps=2, eval_freq=1, batch_size=4, data_dir=fake_cifar)
    script.train(out_dir=str(tmp_path / 'run'), **kwargs)
    resume = str(tmp_path / 'run' / f'last.{ext}')
    script.train(resume=resume, out_dir=str(tmp_path / 'new'), **kwargs)
    assert (tmp_path / 'new' / f'last.{ext}').read_bytes() == open(resume, 'rb').read()
    kwargs['max_steps'] = 3
    again = script.train(resume=str(tmp_path / 'new' / f'last.{ext}'), **kwargs)
    assert again['status'] == 'completed' and again['steps'][-1] == 3


# ------------------------------------------------------------------------ the report


def test_a_results_tex_whose_columns_never_end(tmp_path, capsys):
    """\\begin{tabular}{*{2147483647}{c}} passed the command check and kept pdflatex busy."""
    runs_json = fake_project(tmp_path)
    tex = tmp_path / 'runs' / 'gridsearch' / 'results.tex'
    text = tex.read_text()
    assert '\\begin{tabular}{' in text
    tex.write_text(text.replace('\\begin{tabular}{', '\\begin{tabular}{*{2147483647}{c}}{', 1))
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'a tabular whose columns are not only l, c and r' in capsys.readouterr().err


def test_latex_that_does_not_finish_is_stopped(tmp_path, monkeypatch):
    """A pass has a deadline, whatever the input makes TeX do."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'pdflatex').write_text('#!/bin/sh\nexec sleep 60\n')
    (bin_dir / 'pdflatex').chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setattr(make_report, 'LATEX_SECONDS', 1)
    out = tmp_path / 'out'
    out.mkdir()
    shutil.copyfile(os.path.join(make_report.REPORT_DIR, 'report.tex'), out / 'report.tex')
    with pytest.raises(make_report.ReportError, match='did not finish a pass .* within 1 s'):
        make_report.build_pdf(str(out))
    assert sorted(os.listdir(out)) == ['report.tex']


@pytest.mark.parametrize(
    'change, problem',
    [
        (lambda m: m.update(final_test_accuracy=float('nan')), 'holds an accuracy outside 0..1'),
        (
            lambda m: m.update(train_loss=[1e308] * len(m['train_loss'])),
            'holds a number too large to be a result',
        ),
    ],
)
def test_report_numbers_no_run_writes(change, problem, tmp_path, capsys):
    """NaN passed the accuracy range check and was printed as "nan" in four tables; losses of
    1e308 printed NumPy's and matplotlib's overflow warnings."""
    runs_json = fake_project(tmp_path)
    edit_record(tmp_path / 'runs' / 'mlp_numpy_default' / 'metrics.json', change)
    assert report(runs_json, tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert "run 'mlp_numpy_default' cannot be used (" in err and problem in err, err
    assert 'Warning' not in err
