"""gridsearch.py: grid checks, the outputs of a small search, and a real Dask cluster."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT

import gridsearch

TINY = [
    '--batch_size',
    '16,32',
    '--learning_rate',
    '0.01,0.001',
    '--hidden_units',
    '16',
    '--max_epochs',
    '2',
    '--cv',
    '2',
]


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    'args, message',
    [
        (
            ['--learning_rate', '0.1,0'],
            "grid key 'learning_rate': every value must be a number > 0 that float32 can hold "
            '(at most 3.4e38), got 0.0.',
        ),
        (['--learning_rate=-0.1'], "grid key 'learning_rate': every value must be a number > 0"),
        (
            ['--optimizer', 'adam,rmsprop'],
            "grid key 'optimizer': every value must be one of sgd, adam, adamw, got 'rmsprop'.",
        ),
        (['--batch_size', '0'], "grid key 'batch_size': every value must be an integer from 1"),
        (['--learning_rate', '1e308'], "grid key 'learning_rate': every value must be a number"),
        (['--momentum', '1.5'], "grid key 'momentum': every value must be a number in [0, 1)"),
        (['--dropout', '1.0'], "grid key 'dropout': every value must be a number in [0, 1)"),
        (['--cv', '1'], '--cv must be at least 2, got 1.'),
    ],
)
def test_bad_grid_flags(args, message, tmp_path, capsys, fake_cifar):
    out = tmp_path / 'out'
    code = gridsearch.main([*args, '--data_dir', fake_cifar, '--out_dir', str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    'content, message',
    [
        ('{"learning_rate": [0.1,', 'is not valid JSON: Expecting value at line 1'),
        ('{"learning_rate": []}', "grid key 'learning_rate' needs a non-empty list of values"),
        ('{"learning_rate": 0.1}', "grid key 'learning_rate' needs a non-empty list"),
        ('{"epochs": [1]}', "unknown grid key 'epochs'"),
        (
            '{"hidden_units": [[100, -1]]}',
            "grid key 'hidden_units': every value must be a non-empty list of positive integers",
        ),
        ('[1, 2]', 'the grid must be a non-empty JSON object of lists'),
        ('{"momentum": [0.9]}', "grid key 'momentum' applies only to the optimizer 'sgd'"),
    ],
)
def test_bad_grid_files(content, message, tmp_path, capsys, fake_cifar):
    grid = tmp_path / 'grid.json'
    grid.write_text(content)
    out = tmp_path / 'out'
    code = gridsearch.main(['--grid', str(grid), '--data_dir', fake_cifar, '--out_dir', str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize('where', ['file', 'under_file', 'read_only', 'holds_a_search'])
def test_unusable_out_dir_stops_before_loading(where, tmp_path, read_only_dir, capsys, monkeypatch):
    """Checked before the data loads or a fit runs: an --out_dir that is a file (or under one)
    used to lose the whole search to a FileExistsError after all the fits, and a folder that
    holds another search's results was overwritten."""
    (tmp_path / 'taken').write_text('not a folder')
    (tmp_path / 'done').mkdir()
    (tmp_path / 'done' / 'best.json').write_text('{}')
    out = {
        'file': tmp_path / 'taken',
        'under_file': tmp_path / 'taken/out',
        'read_only': f'{read_only_dir}/out',
        'holds_a_search': tmp_path / 'done',
    }[where]
    monkeypatch.setattr(gridsearch.cifar10_utils, 'get_cifar10', lambda *a, **k: 1 / 0)
    code = gridsearch.main([*TINY, '--out_dir', str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert (
        f'error: --out_dir {out} already holds a run; choose a new folder, or pass --overwrite'
        if where == 'holds_a_search'
        else f'error: cannot write to --out_dir {out} ('
    ) in err[0], err
    assert (tmp_path / 'taken').read_text() == 'not a folder'
    assert (tmp_path / 'done' / 'best.json').read_text() == '{}'


def test_sigterm_stops_the_search_like_ctrl_c(fake_cifar, tmp_path, capsys, monkeypatch):
    def terminated(self, x, y):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives here

    monkeypatch.setattr(gridsearch.GridSearchCV, 'fit', terminated)
    out = tmp_path / 'out'
    assert gridsearch.main([*TINY, '--data_dir', fake_cifar, '--out_dir', str(out)]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'Interrupted; no results were written.'
    )
    assert not out.exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_fit_stops_the_search(signum, fake_cifar, tmp_path, capsys, monkeypatch):
    """skorch's fit takes a KeyboardInterrupt for "stop training early" and returns: the signal
    must still end the search, with nothing written, not cut one fit short and go on."""
    forward, calls = gridsearch.MLP.forward, []

    def signal_in_tenth_batch(self, x):
        calls.append(1)
        if len(calls) == 10:
            os.kill(os.getpid(), signum)
        return forward(self, x)

    monkeypatch.setattr(gridsearch.MLP, 'forward', signal_in_tenth_batch)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = tmp_path / 'out'
    assert gridsearch.main([*TINY, '--data_dir', fake_cifar, '--out_dir', str(out)]) == 128 + signum
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'Interrupted; no results were written.'
    )
    assert len(calls) == 10 and not out.exists()
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize('subsample', ['5', '19'])
def test_subsample_too_small_for_the_folds(subsample, fake_cifar, tmp_path, capsys):
    """Fewer images than classes x folds cannot be split stratified: one sentence, no fit."""
    out = tmp_path / 'out'
    code = gridsearch.main(
        [*TINY, '--subsample', subsample, '--data_dir', fake_cifar, '--out_dir', str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(
        f'--subsample {subsample} is too small: 2-fold cross-validation '
        'needs 2 images of each of the 10 classes, so at least 20.'
    ), err
    assert not out.exists()


def test_missing_grid_file(tmp_path, capsys):
    assert gridsearch.main(['--grid', str(tmp_path / 'nope.json')]) == 2
    assert 'cannot read' in capsys.readouterr().err


def test_flags_override_the_file(tmp_path):
    grid = tmp_path / 'grid.json'
    grid.write_text('{"learning_rate": [0.5], "dropout": [0.0, 0.2]}')
    args = gridsearch.build_parser().parse_args(['--grid', str(grid), '--learning_rate', '0.3'])
    assert gridsearch.build_grid(args) == {
        'batch_size': [64, 128, 256, 512],
        'learning_rate': [0.3],
        'hidden_units': [[100, 100], [1000], [50, 30, 20]],
        'optimizer': ['adam'],
        'dropout': [0.0, 0.2],
    }


def check_outputs(out, n_settings, refit=True):
    assert sorted(os.listdir(out)) == [
        'best.json',
        'cv_results.csv',
        'heatmap.png',
        'results.md',
        'results.tex',
    ]
    with open(out / 'cv_results.csv') as f:
        table = list(csv.DictReader(f))
    assert len(table) == n_settings
    assert {
        'mean_test_score',
        'std_test_score',
        'param_batch_size',
        'param_lr',
        'param_module__n_hidden',
        'split0_test_score',
        'rank_test_score',
    } <= set(table[0])
    md = (out / 'results.md').read_text().splitlines()
    assert [cell.strip() for cell in md[0].strip('|').split('|')] == [
        'rank',
        'CV accuracy (mean ± std)',
        'batch size',
        'learning rate',
        'hidden layers',
    ]
    assert len(md) == 2 + n_settings
    tex = (out / 'results.tex').read_text()
    assert tex.count(r'\\') == 1 + n_settings and r'\begin{tabular}' in tex
    assert '& hidden layers' in tex and r'\toprule' in tex
    # report/make_report.py inputs results.tex as it is: a whole table, with its label.
    assert r'\begin{table}' in tex and r'\label{tab:gridsearch}' in tex
    assert (out / 'heatmap.png').stat().st_size > 5000
    best = json.loads((out / 'best.json').read_text())
    assert best['best_cv_score'] == max(float(r['mean_test_score']) for r in table)
    assert set(best['best_params']) == {'batch_size', 'learning_rate', 'hidden_units', 'optimizer'}
    if refit:
        assert 0 <= best['test_accuracy'] <= 1
    return best


def test_small_search_writes_every_output(fake_cifar, tmp_path, capsys):
    out = tmp_path / 'out'
    started = time.perf_counter()
    assert (
        gridsearch.main(
            [*TINY, '--subsample', '120', '--data_dir', fake_cifar, '--out_dir', str(out)]
        )
        == 0
    )
    assert time.perf_counter() - started < 60
    best = check_outputs(out, 4)
    assert best['n_train'] == 120 and best['cv'] == 2
    # The fake classes are separable: a working search finds a setting that learns them (chance
    # is 0.1; the refit's 40 test images after 2 epochs at the best rate, 0.01, score from
    # 0.78 to 1.0 as --seed changes).
    assert best['best_cv_score'] >= 0.8 and best['test_accuracy'] >= 0.7
    assert 'results in' in capsys.readouterr().out


def test_validation_split_is_held_out_of_search_and_refit(fake_cifar, tmp_path, capsys):
    out = tmp_path / 'out'
    assert (
        gridsearch.main(
            [
                *TINY,
                '--learning_rate',
                '0.01',
                '--validation_size',
                '50',
                '--data_dir',
                fake_cifar,
                '--out_dir',
                str(out),
            ]
        )
        == 0
    )
    best = json.loads((out / 'best.json').read_text())
    assert best['n_train'] == 150 and best['validation_size'] == 50  # of 200
    assert 'on all 150 training images' in capsys.readouterr().err
    assert 0.8 <= best['validation_accuracy'] <= 1 and best['test_accuracy'] >= 0.8


def test_search_agrees_with_the_train_script(real_cifar, tmp_path):
    """A CV score on real CIFAR-10 is what train_mlp_pytorch.py reaches with the same settings
    and the same number of updates (unlike the 0.11-0.42 of a search that trains on
    unshuffled batches or on a further-split fold)."""
    import train_mlp_pytorch

    out = tmp_path / 'out'
    assert (
        gridsearch.main(
            [
                '--batch_size',
                '128',
                '--learning_rate',
                '0.001',
                '--hidden_units',
                '100',
                '--max_epochs',
                '5',
                '--cv',
                '3',
                '--subsample',
                '6000',
                '--no_refit',
                '--data_dir',
                real_cifar,
                '--out_dir',
                str(out),
            ]
        )
        == 0
    )
    cv_score = json.loads((out / 'best.json').read_text())['best_cv_score']
    steps = 5 * (4000 // 128)  # 5 epochs of the 4000 images of the training folds, whole batches
    metrics = train_mlp_pytorch.train(
        '100',
        optimizer='adam',
        learning_rate=1e-3,
        batch_size=128,
        max_steps=steps,
        eval_freq=steps,
        data_dir=real_cifar,
        out_dir=str(tmp_path / 'run'),
    )
    assert abs(cv_score - metrics['final_test_accuracy']) < 0.05, (cv_score, metrics)
    assert cv_score > 0.25


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """A dask.distributed scheduler and a worker with 2 threads (joblib runs the tasks of a
    one-thread cluster locally), separate processes on 127.0.0.1."""
    pytest.importorskip('distributed')
    port = free_port()
    address = f'tcp://127.0.0.1:{port}'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    common = dict(cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scheduler = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'distributed.cli.dask_scheduler',
            '--host',
            '127.0.0.1',
            '--port',
            str(port),
            '--no-dashboard',
        ],
        **common,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'distributed.cli.dask_worker',
            address,
            '--nworkers',
            '1',
            '--nthreads',
            '2',
            '--no-dashboard',
            '--local-directory',
            str(tmp_path),
        ],
        **common,
    )
    try:
        yield address
    finally:
        for p in (worker, scheduler):
            p.terminate()
        for p in (worker, scheduler):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_search_on_a_dask_cluster(dask_cluster, fake_cifar, tmp_path):
    from distributed import Client

    out = tmp_path / 'out'
    with Client(dask_cluster, timeout='30s') as client:
        client.wait_for_workers(1, timeout=60)
    assert (
        gridsearch.main(
            [
                *TINY,
                '--learning_rate',
                '0.01',
                '--subsample',
                '100',
                '--no_refit',
                '--scheduler',
                dask_cluster,
                '--data_dir',
                fake_cifar,
                '--out_dir',
                str(out),
            ]
        )
        == 0
    )
    check_outputs(out, 2, refit=False)
    with Client(dask_cluster, timeout='30s') as client:
        # The worker, not this process, ran the fits: it holds their task records.
        done = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(done.values()) > 0


def test_unreachable_scheduler(fake_cifar, tmp_path, capsys):
    code = gridsearch.main(
        [
            *TINY,
            '--scheduler',
            f'tcp://127.0.0.1:{free_port()}',
            '--data_dir',
            fake_cifar,
            '--out_dir',
            str(tmp_path / 'o'),
        ]
    )
    assert code == 2
    assert 'no Dask scheduler answered at tcp://127.0.0.1:' in capsys.readouterr().err


def test_cli_help():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'gridsearch.py'), '--help'],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for flag in ('--grid', '--subsample', '--n_jobs', '--scheduler', '--max_epochs', '--cv'):
        assert flag in out
    assert '(default: 5)' in out and '(default: None)' not in out
