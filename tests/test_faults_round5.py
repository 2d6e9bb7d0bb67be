"""Findings of the fifth probe, aimed at the report: names in runs.json that LaTeX would run,
records of the wrong shape, groups of seeds that cannot be averaged, a damaged dead-units
record, and report/dead_units.py's own faults. Each ends in one sentence and an exit status,
with no traceback and nothing half-written."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, one_error, write_fake_cifar
from fake_runs import fake_metrics, fake_project

sys.path.insert(0, os.path.join(ROOT, 'report'))
import dead_units  # noqa: E402
import make_report  # noqa: E402


def edit(runs_json, change):
    """runs.json with change(config) applied to its loaded config."""
    config = json.loads(Path(runs_json).read_text())
    change(config)
    Path(runs_json).write_text(json.dumps(config))
    return runs_json


def report(runs_json, out, *flags):
    return make_report.main(['--runs', runs_json, '--out_dir', str(out), '--no-pdf', *flags])


def rename_run(config, new):
    config['runs'][new] = config['runs'].pop('mlp_numpy_default')


def rename_experiment(config, new):
    config['experiments'][new] = config['experiments'].pop('crops')


def rename_by_path(config, new):  # a row's name is its folder's path under runs/
    runs_dir = os.path.dirname(config['gridsearch']['path'])
    config['modifications'][1]['path'] = os.path.join(runs_dir, new)


HOSTILE = r'x\endcsname{}\input{secret.txt}\def\z'


@pytest.mark.parametrize(
    'change, name',
    [
        (rename_run, HOSTILE),
        (rename_run, 'a b'),
        (rename_experiment, HOSTILE),
        (rename_experiment, '../../escaped'),  # an experiment's name names its files
        (rename_experiment, 'a/b'),
        (rename_by_path, HOSTILE),
        (rename_by_path, '$x'),
    ],
)
def test_a_name_latex_would_read_as_code_is_refused(change, name, tmp_path, capsys):
    """A name in runs.json went unescaped into \\csname in tables/runs.tex and
    tables/experiments.tex: the HOSTILE one put secret.txt's contents into the PDF."""
    runs_json = edit(fake_project(tmp_path), lambda config: change(config, name))
    assert report(runs_json, tmp_path / 'out') == 2
    assert 'holds characters other than letters, digits and' in one_error(capsys)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('key', ['confusion', 'convnet_ladder', 'numpy_convnet'])
@pytest.mark.parametrize('value', ['convnet_fast', [1], {'convnet_fast': 1}, None])
def test_a_list_of_runs_that_is_not_a_list_of_names(key, value, tmp_path, capsys):
    runs_json = edit(fake_project(tmp_path), lambda c: c.update({key: value}))
    assert report(runs_json, tmp_path / 'out') == 2
    assert f'"{key}" must be a list of names of "runs".' in one_error(capsys)


def test_an_experiment_with_no_groups(tmp_path, capsys):
    runs_json = edit(fake_project(tmp_path), lambda c: c['experiments'].update(crops=[]))
    assert report(runs_json, tmp_path / 'out') == 2
    assert '"experiments" must map names to lists of groups.' in one_error(capsys)


def seed2(tmp_path, **flags):
    """Rewrites the second seed's run of every group of fake_project."""
    fake_metrics(tmp_path / 'runs' / 'seed2', 'train_mlp_pytorch.py', seed=2, **flags)
    return tmp_path / 'runs' / 'seed2' / 'metrics.json'


def edit_record(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    'damage, problem',
    [
        (lambda tmp: seed2(tmp), 'has no validation split'),
        (lambda tmp: seed2(tmp, steps=20, validation_size=5000), 'is evaluated at other steps'),
        (
            lambda tmp: edit_record(
                seed2(tmp, validation_size=5000),
                lambda m: m.update(final_validation_accuracy=None),
            ),
            'lacks a final validation or test accuracy',
        ),
        (
            lambda tmp: edit_record(
                seed2(tmp, validation_size=5000),
                lambda m: m.update(final_test_accuracy=float('nan')),
            ),
            'holds an accuracy outside 0..1',  # (NaN: no run writes one)
        ),
        (
            lambda tmp: edit_record(
                seed2(tmp, validation_size=5000), lambda m: m.update(eval_steps=[10, 20, 40])
            ),
            'has "eval_steps" that are not rising steps of the run',
        ),
        (
            lambda tmp: edit_record(
                seed2(tmp, validation_size=5000), lambda m: m.update(eval_steps=[20, 10, 30])
            ),
            'has "eval_steps" that are not rising steps of the run',
        ),
    ],
)
def test_a_run_that_cannot_be_averaged_with_its_seeds(damage, problem, tmp_path, capsys):
    """Such a run gave a KeyError, a TypeError or a ragged array in the experiments' figures and
    tables; it is now a missing run, with the reason."""
    runs_json = fake_project(tmp_path)
    damage(tmp_path)
    assert report(runs_json, tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert "run 'seed2' cannot be used (" in err and problem in err, err
    if problem in ('has no validation split', 'is evaluated at other steps'):  # (seconds each)
        left_out_with_allow_missing(runs_json, tmp_path / 'out')


def left_out_with_allow_missing(runs_json, out):
    """The report, drawn with --allow-missing, averages seeds 1 and 3 of each group."""
    assert report(runs_json, out, '--allow-missing') == 0
    table = (out / 'tables' / 'exp_crops.tex').read_text()
    assert 'nan' not in table and r'\pm' in table
    assert (out / 'figures' / 'exp_crops.png').is_file()


def test_a_longer_training_loss_is_averaged_only_up_to_the_last_evaluation():
    from report_experiments import interval_means

    loss = [1.0] * 10 + [100.0] * 5  # 5 steps trained after the last evaluation
    assert interval_means(loss, [5, 10]).tolist() == [1.0, 1.0]


def confusion_of(value):
    def change(m):
        m['test_confusion'] = value

    return change


NINES = [[9] * 10 for _ in range(10)]


@pytest.mark.parametrize(
    'value',
    [
        None,
        [[1, 2], [3, 4]],
        [['9'] * 10 for _ in range(10)],
        [[9] * 10 for _ in range(9)] + [[9] * 9],  # ragged
        [[-1] * 10] + NINES[1:],
        [[10**400] * 10] + NINES[1:],
        [[float('nan')] * 10] + NINES[1:],
        [[9.5] * 10] + NINES[1:],
        [[9] * 11 for _ in range(11)],
    ],
)
def test_a_confusion_matrix_that_is_not_one(value, tmp_path, capsys):
    """A test_confusion of the wrong shape or type gave an AxisError, IndexError or TypeError,
    and nonsense counts were drawn."""
    runs_json = fake_project(tmp_path)
    edit_record(tmp_path / 'runs' / 'convnet_fast' / 'metrics.json', confusion_of(value))
    assert report(runs_json, tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert 'has a "test_confusion" that is not 10 rows of 10 counts' in err, err
    if value is None:  # (seconds each)
        assert report(runs_json, tmp_path / 'out', '--allow-missing') == 0


def test_a_class_with_no_test_images_shows_no_accuracy(tmp_path):
    runs_json = fake_project(tmp_path)
    no_cats = [row if c != 3 else [0] * 10 for c, row in enumerate(NINES)]
    edit_record(tmp_path / 'runs' / 'convnet_fast' / 'metrics.json', confusion_of(no_cats))
    assert report(runs_json, tmp_path / 'out') == 0
    rows = (tmp_path / 'out' / 'tables' / 'per_class.tex').read_text().splitlines()
    cat = next(row for row in rows if row.startswith('cat'))
    assert '-{}-' in cat and 'nan' not in ''.join(rows)  # '--', as tex() writes it


@pytest.mark.parametrize(
    'content',
    [
        None,  # no file
        'not JSON',
        '[' * 100_000 + ']' * 100_000,
        '[]',
        '{"a": []}',
        '{"settings": {}}',
        '{"settings": {"[100]": []}}',
        '{"settings": {"[100]": [{"step": 10, "dead": [0.5]}]}}',
        '{"settings": {"[100]": [{"step": 10, "dead": [0.5], "train_accuracy": null}]}}',
        '{"settings": {"[100]": [{"step": 10, "dead": [0.5], "train_accuracy": "0.1"}]}}',
        '{"settings": {"[100]": [{"step": 10, "dead": [0.5], "train_accuracy": 1e400}]}}',
        '{"settings": {"[100]": [{"step": 10, "dead": [1.5], "train_accuracy": 0.1}]}}',
        '{"settings": {"[100]": [{"step": 1.5, "dead": [0.5], "train_accuracy": 0.1}]}}',
        '{"settings": {"$\\\\x$": [{"step": 10, "dead": [0.5], "train_accuracy": 0.1}]}}',
    ],
)
def test_a_damaged_dead_units_record(content, tmp_path, capsys):
    """A dead_units.json without its training accuracy, with empty settings or nested too
    deep gave a traceback; a missing one could not be left out with --allow-missing."""
    runs_json = fake_project(tmp_path)
    record = tmp_path / 'runs' / 'dead_units.json'
    if content is None:
        record.unlink()
    else:
        record.write_text(content)
    assert report(runs_json, tmp_path / 'out') == 1
    error = one_error(capsys)
    assert 'dead_units.json' in error and 'python report/dead_units.py' in error
    assert not (tmp_path / 'out').exists()
    if content in (None, '{"settings": {}}'):  # (seconds each)
        assert report(runs_json, tmp_path / 'out', '--allow-missing') == 0
        assert (tmp_path / 'out' / 'figures' / 'dead_units.png').is_file()  # a placeholder


def test_dead_units_without_the_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('CIFAR10_DOWNLOAD', '0')
    out = tmp_path / 'dead_units.json'
    assert dead_units.main(['--data_dir', str(tmp_path / 'none'), '--out', str(out)]) == 1
    assert one_error(capsys).startswith('dead_units.py: error: ')
    assert not out.exists()


def test_dead_units_on_too_few_images(fake_cifar, tmp_path, capsys):
    out = tmp_path / 'dead_units.json'
    assert dead_units.main(['--data_dir', fake_cifar, '--out', str(out)]) == 1
    assert "holds 200 training images; the grid's subsample takes 5000" in one_error(capsys)
    assert not out.exists()


@pytest.fixture(scope='module')
def enough_cifar(tmp_path_factory):
    """5 x 1,100 training images: more than the grid's subsample of 5,000."""
    return write_fake_cifar(tmp_path_factory.mktemp('enough') / 'data', per_batch=1100)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_dead_units_stopped_by_a_signal(signum, enough_cifar, tmp_path):
    """Ctrl-C gave a traceback; SIGTERM and SIGHUP killed it without a word."""
    out = tmp_path / 'dead_units.json'
    script = os.path.join(ROOT, 'report', 'dead_units.py')
    proc = subprocess.Popen(
        [sys.executable, script, '--data_dir', enough_cifar, '--out', str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
    )
    assert 'training hidden layers' in proc.stdout.readline()  # it is training
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum
    assert err.strip() == f'dead_units.py: stopped by {name}; nothing was written.'
    assert not out.exists() and not os.listdir(tmp_path)


def test_a_label_is_drawn_as_text_not_read_as_mathtext(tmp_path, capsys):
    """A label like $\\undefined$ failed in matplotlib's mathtext parser with a traceback."""
    label = r'cost $\undefined{x}$'
    runs_json = edit(
        fake_project(tmp_path), lambda c: c['runs']['convnet_fast'].update(label=label)
    )
    assert report(runs_json, tmp_path / 'out') == 0, capsys.readouterr().err
