"""report/make_report.py on tiny fake runs, and numerical checks of the formulas the report
derives that unittests.py does not check as written (the full softmax Jacobian, the fused
softmax + cross-entropy gradient, the batch-norm gradient's path-by-path form)."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'report'))

import make_report  # noqa: E402

RUNS = ('mlp_numpy_default', 'mlp_pytorch_default', 'mlp_pytorch_best', 'convnet_default',
        'convnet_fast')


def fake_metrics(folder, script, steps=30, eval_freq=10, seed=0, status='completed', **flags):
    """A metrics.json with the schema of train_utils.Run, from a made-up training curve."""
    rng = np.random.default_rng(seed)
    loss = 2.3 * np.exp(-np.arange(steps) / steps) + rng.normal(0, 0.05, steps)
    evals = list(range(eval_freq, steps + 1, eval_freq))
    acc = [0.2 + 0.3 * s / steps for s in evals]
    flags = {'learning_rate': 0.002, 'max_steps': steps, 'batch_size': 200, 'seed': 42,
             'out_dir': str(folder), **flags}
    metrics = {
        'script': script, 'out_dir': str(folder),
        'command': ['python', script, '--max_steps', str(steps), '--out_dir', '/elsewhere'],
        'flags': flags, 'status': status,
        'steps': list(range(1, steps + 1)), 'train_loss': loss.tolist(),
        'eval_steps': evals, 'test_loss': [2.0 - a for a in acc], 'test_accuracy': acc,
        'final_test_accuracy': acc[-1], 'best_test_accuracy': max(acc),
        'wall_seconds': 12.5, 'train_seconds': 11.0, 'started': '2026-01-01T00:00:00',
        'versions': {'python': '3.11', 'numpy': '2.0'},
    }
    if flags.get('validation_size'):  # evaluated on validation, the test set once at the end
        metrics.update(eval_split='validation', validation_loss=metrics.pop('test_loss'),
                       validation_accuracy=metrics.pop('test_accuracy'),
                       best_validation_accuracy=metrics.pop('best_test_accuracy'),
                       final_validation_accuracy=acc[-1], final_test_accuracy=0.625,
                       best_pt_test_accuracy=0.75)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.json'), 'w') as f:
        json.dump(metrics, f)


def fake_grid(folder):
    """The files gridsearch.py writes: cv_results.csv, best.json, results.tex and heatmap.png."""
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    plt.imsave(os.path.join(folder, 'heatmap.png'), np.random.default_rng(0).random((40, 40)))
    rows = []
    for bs in (100, 200):
        for lr in (1e-3, 1e-2, 1e-1):
            for hidden in ([100], [200, 200]):
                score = 0.3 + 0.1 * (lr == 1e-2) + 0.02 * (bs == 100) + 0.01 * len(hidden)
                rows.append({'mean_fit_time': 1.0, 'param_batch_size': bs, 'param_lr': lr,
                             'param_module__n_hidden': json.dumps(hidden),
                             'param_optimizer': 'adam',
                             'params': json.dumps({'batch_size': bs, 'learning_rate': lr}),
                             'mean_test_score': score, 'std_test_score': 0.01,
                             'rank_test_score': 0})
    with open(os.path.join(folder, 'cv_results.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(folder, 'best.json'), 'w') as f:
        json.dump({'best_params': {'batch_size': 100, 'learning_rate': 0.01,
                                   'hidden_units': [200, 200], 'optimizer': 'adam'},
                   'best_cv_score': 0.44, 'best_cv_std': 0.01, 'test_accuracy': 0.45,
                   'cv': 3, 'max_epochs': 2, 'n_train': 500,
                   'command': ['python', 'gridsearch.py', '--cv', '3']}, f)
    with open(os.path.join(folder, 'results.tex'), 'w') as f:
        f.write('\\begin{table}[t]\n\\centering\n\\begin{tabular}{rc}\n\\toprule\n'
                'rank & CV accuracy \\\\\n\\midrule\n1 & $0.440 \\pm 0.010$ \\\\\n'
                '\\bottomrule\n\\end{tabular}\n\\caption{Grid search.}\n'
                '\\label{tab:gridsearch}\n\\end{table}\n')


def fake_project(tmp_path, skip=()):
    """Fake run folders for every run of runs.json but those in skip, a fake grid folder,
    and a runs.json with absolute paths to them. Returns the runs.json path."""
    runs_dir = tmp_path / 'runs'
    scripts = {'mlp_numpy_default': 'train_mlp_numpy.py', 'convnet_default':
               'train_convnet_pytorch.py', 'convnet_fast': 'train_convnet_pytorch.py'}
    entries = {}
    for i, name in enumerate(RUNS):
        folder = runs_dir / name
        script = scripts.get(name, 'train_mlp_pytorch.py')
        if name not in skip:
            flags = {'optimizer': 'sgd', 'dropout': 0.0}
            if name == 'mlp_pytorch_best':
                flags = {'optimizer': 'adamw', 'dropout': 0.2}
            if name == 'convnet_fast':
                flags = {'optimizer': 'SGD', 'validation_size': 5000}
            fake_metrics(folder, script, seed=i, **flags)
        entries[name] = {'label': name.replace('_', ' '), 'path': str(folder),
                         'command': ['python', script]}
    fake_grid(runs_dir / 'gridsearch')
    mod = runs_dir / 'mlp_pytorch_adam'
    # Flags newer than the baseline's run, at their defaults, are no change.
    fake_metrics(mod, 'train_mlp_pytorch.py', seed=9, optimizer='adam', dropout=0.0,
                 status='diverged', validation_size=0, overwrite=False)
    entries['convnet_default']['time'] = 'about 1 h alone'  # instead of the recorded time
    config = {'runs': entries,
              'gridsearch': {'path': str(runs_dir / 'gridsearch'),
                             'command': ['python', 'gridsearch.py']},
              # A row naming a run's folder shares that run.
              'modifications': [{'label': 'defaults', 'path': str(runs_dir / RUNS[1])},
                                {'label': 'Adam', 'path': str(mod)},
                                {'label': 'best', 'path': str(runs_dir / RUNS[2])}]}
    config['seeds'] = [{'label': 'two seeds', 'paths': [str(runs_dir / RUNS[0]),
                                                        str(runs_dir / RUNS[1])]}]
    config['convnet_ladder'] = ['convnet_default', 'convnet_fast']
    config['convnet_changes'] = [{'label': '+ a split', 'path': str(runs_dir / 'convnet_fast')},
                                 {'label': 'no split', 'path': str(runs_dir / 'convnet_default')}]
    path = tmp_path / 'runs.json'
    path.write_text(json.dumps(config))
    return str(path)


# The curves and the heatmap are their owners' PNGs (train_utils.plot_curves, gridsearch.py).
FIGURES = [*(f'curves_{name}.png' for name in RUNS), 'comparison.pdf', 'comparison.png',
           'gridsearch_heatmap.png']
TABLES = ['runs.tex', 'results.tex', 'results.md', 'modifications.tex', 'modifications.md',
          'commands.tex', 'gridsearch.tex', 'changes.tex']


def markdown_rows(path):
    """The cells of a Markdown table, row by row (the header first, the |---| line left out)."""
    lines = path.read_text().splitlines()
    assert set(lines[1]) <= set('|-: '), 'the second line separates the header'
    return [[cell.strip() for cell in line.strip().strip('|').split('|')]
            for line in [lines[0], *lines[2:]]]


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    """One whole report (PDF included when pdflatex is installed) on fake runs, shared by the
    tests below: drawing the figures is the slow part. Returns (out_dir, stdout, stderr)."""
    import contextlib
    import io

    tmp_path = tmp_path_factory.mktemp('report')
    runs = fake_project(tmp_path)
    out = tmp_path / 'out'
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = make_report.main(['--runs', runs, '--out_dir', str(out)])
    assert status == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def test_every_figure_and_table(report):
    out, _, err = report
    for name in FIGURES:
        assert (out / 'figures' / name).stat().st_size > 1000, name
    for name in TABLES:
        assert (out / 'tables' / name).stat().st_size > 0, name
    assert not list(out.rglob('*.tmp*')), 'a temporary file was left behind'

    results = markdown_rows(out / 'tables' / 'results.md')
    assert results[0] == ['model', 'command', 'final test accuracy', 'best.pt test accuracy',
                          'steps', 'time', 'device']
    # No best of several evaluations on the test set: that number was chosen on the test set.
    assert results[1] == ['mlp numpy default', '`python train_mlp_numpy.py`', '0.500', '--',
                          '30', '12 s', 'cpu']
    assert results[4][-2:] == ['about 1 h alone', 'cpu']
    # A run that chose on validation: the test set once, on its final weights and its best.pt.
    assert results[5][2:5] == ['0.625', '0.750', '30']
    assert (out / 'tables' / 'fast.tex').read_text().splitlines()[4:6] == [
        r'convnet default & 0.500 & -{}- & 30 & about 1 h alone \\',
        r'convnet fast & 0.625 & 0.750 & 30 & 12 s \\']
    # One change a row: each run's validation accuracy, then its test accuracy, tested once.
    assert (out / 'tables' / 'changes.tex').read_text().splitlines()[4:6] == [
        r'+ a split & 0.500 & 0.625 & 30 & 12 s \\',
        r'no split & -{}- & 0.500 & 30 & about 1 h alone \\']
    mods = markdown_rows(out / 'tables' / 'modifications.md')
    # No times in the ladder: its runs shared a machine, so their wall times do not compare.
    assert mods[0] == ['modification', 'flags changed', 'final test accuracy', 'steps']
    assert mods[1] == ['defaults', '`(baseline)`', '0.500', '30']
    assert mods[2] == ['Adam', '`--optimizer adam`', '0.500', '30 (diverged)']
    assert mods[3][:2] == ['best', '`--optimizer adamw --dropout 0.2`']
    # LaTeX would set -- as an en dash.
    assert '-{}-optimizer adam' in (out / 'tables' / 'modifications.tex').read_text()
    assert 'two seeds & 0.500 ± 0.000 & 0.500, 0.500' in (out / 'tables' / 'seeds.tex').read_text()
    macros = (out / 'tables' / 'runs.tex').read_text()
    assert '\\csname run:convnet_default:final\\endcsname{0.500}' in macros
    assert 'test accuracy after refitting on the whole training set 0.450' in macros
    train_loss = json.loads((out.parent / 'runs' / 'convnet_fast' / 'metrics.json').read_text())[
        'train_loss']
    assert f'run:convnet_fast:firstloss\\endcsname{{{train_loss[0]:.1f}}}' in macros
    assert f'run:convnet_fast:trainloss\\endcsname{{{np.mean(train_loss[-3:]):.2f}}}' in macros
    assert 'run:convnet_fast:evalloss\\endcsname{1.50}' in macros  # 2.0 - the last accuracy
    # every folder's, named by its path under runs/ (beside runs.json)
    assert 'run:mlp_pytorch_adam:final\\endcsname{0.500}' in macros
    grid_table = out.parent / 'runs' / 'gridsearch' / 'results.tex'
    assert (out / 'tables' / 'gridsearch.tex').read_text() == grid_table.read_text()
    # Each folder once (the rows naming a run's folder share it): 5 runs, mlp_pytorch_adam, grid.
    assert (out / 'tables' / 'commands.tex').read_text().count('\\item[') == 7
    assert "warning: run 'mlp_pytorch_adam' diverged at step 30; the report shows" in err


@pytest.mark.skipif(shutil.which('pdflatex') is None,
                    reason='pdflatex is not installed: the PDF build is not tested '
                           '(apt-get install texlive-latex-base texlive-latex-recommended '
                           'texlive-fonts-recommended latexmk)')
def test_pdf_builds(report):
    out, stdout, _ = report
    pdf = out / 'report.pdf'
    assert pdf.read_bytes()[:5] == b'%PDF-'
    assert pdf.stat().st_size > 50_000  # text and figures, not an empty page
    assert stdout.strip().splitlines()[-1] == f'make_report: built {pdf}'
    assert not list(out.glob('report.aux')), 'build by-products stay out of the report folder'


@pytest.mark.skipif(shutil.which('pdflatex') is None, reason='pdflatex is not installed')
def test_latex_error_is_one_line(tmp_path):
    (tmp_path / 'report.tex').write_text('\\documentclass{article}\\begin{document}\\undefined'
                                         '\\end{document}\n')
    with pytest.raises(make_report.ReportError) as e:
        make_report.build_pdf(str(tmp_path))
    assert str(e.value) == (f'LaTeX failed building report.pdf (! Undefined control sequence.); '
                            f'the full log is {tmp_path}/report.log.')
    assert not (tmp_path / 'report.pdf').exists()


def test_no_latex_is_one_line_and_success(report, monkeypatch):
    monkeypatch.setattr(make_report.shutil, 'which', lambda name: None)
    message = make_report.build_pdf(str(report[0]))
    assert message.startswith('report.pdf not built: pdflatex is not installed')
    assert '\n' not in message


@pytest.mark.parametrize('folder, name, content, problem', [
    ('mlp_numpy_default', 'metrics.json', '[1, 2]', 'metrics.json is not a JSON object'),
    ('mlp_numpy_default', 'metrics.json', '{"steps": [1]}',
     'metrics.json lacks "train_loss" or holds it with the wrong type'),
    ('convnet_default', 'metrics.json', None,
     'metrics.json has a series that holds something other than numbers'),
    ('gridsearch', 'best.json', '{"best_params": []}',
     'best.json lacks "best_params" or holds it with the wrong type'),
    ('gridsearch', 'heatmap.png', 'REMOVE', 'heatmap.png not found'),
    ('gridsearch', 'results.tex', 'REMOVE', 'results.tex not found'),
])
def test_a_broken_run_is_one_line(tmp_path, capsys, folder, name, content, problem):
    """A run folder whose files are not what its writer writes (valid JSON of the wrong shape,
    a grid without its table or heatmap) is named with what is wrong: exit 1, no traceback;
    gridsearch.py's results.tex and heatmap.png are the report's table and figure."""
    runs = fake_project(tmp_path)
    path = tmp_path / 'runs' / folder / name
    if content == 'REMOVE':
        path.unlink()
    elif content is None:  # valid JSON, one accuracy a string
        metrics = json.loads(path.read_text())
        metrics['test_accuracy'][0] = 'high'
        path.write_text(json.dumps(metrics))
    else:
        path.write_text(content)
    assert make_report.main(['--runs', runs, '--out_dir', str(tmp_path / 'out'), '--no-pdf']) == 1
    err = capsys.readouterr().err
    assert f"error: run '{folder}' is missing ({tmp_path / 'runs' / folder}/{problem})" in err
    assert 'Traceback' not in err


def test_missing_run_names_it_and_its_command(tmp_path):
    runs = fake_project(tmp_path, skip=('convnet_default',))
    out = tmp_path / 'out'
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'report', 'make_report.py'),
                             '--runs', runs, '--out_dir', str(out), '--no-pdf'],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    folder = tmp_path / 'runs' / 'convnet_default'
    assert (f"error: run 'convnet_default' is missing ({folder}/metrics.json not found); "
            f'produce it with:\n    python train_convnet_pytorch.py --out_dir {folder}'
            in result.stderr)
    assert '--allow-missing' in result.stderr
    assert not out.exists(), 'nothing is written when a run is missing'


def test_allow_missing_draws_placeholders(tmp_path):
    runs = tmp_path / 'runs.json'
    runs.write_text(json.dumps({
        'runs': {'gone': {'label': 'gone', 'path': str(tmp_path / 'gone')}},
        'gridsearch': {'path': str(tmp_path / 'no_grid')}}))
    out = tmp_path / 'out'
    assert make_report.main(['--runs', str(runs), '--out_dir', str(out), '--no-pdf',
                             '--allow-missing']) == 0
    for name in ('curves_gone.png', 'comparison.pdf', 'gridsearch_heatmap.png'):
        assert (out / 'figures' / name).exists()
    assert markdown_rows(out / 'tables' / 'results.md')[1][:3] == ['gone', '``', 'missing']
    assert 'Grid search missing' in (out / 'tables' / 'gridsearch.tex').read_text()


def test_bad_runs_json_is_one_line(tmp_path, capsys):
    bad = tmp_path / 'runs.json'
    bad.write_text('{"runs": {"a": {"label": "no path"}}}')
    assert make_report.main(['--runs', str(bad), '--out_dir', str(tmp_path), '--no-pdf']) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'make_report: error: {bad}: runs.a needs a "path" (the run folder).'
    bad.write_text('{"runs": {"a": {"path": "a"}}}')
    assert make_report.main(['--runs', str(bad), '--out_dir', str(tmp_path), '--no-pdf']) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'make_report: error: {bad}: gridsearch needs a "path" (the grid folder).'


def test_convnet_ladder_names_only_runs(tmp_path, capsys):
    runs = fake_project(tmp_path)
    config = json.loads(open(runs).read())
    config['convnet_ladder'] = ['convnet_default', 'convnet_slow']
    open(runs, 'w').write(json.dumps(config))
    assert make_report.main(['--runs', runs, '--out_dir', str(tmp_path), '--no-pdf']) == 2
    assert capsys.readouterr().err.strip() == (
        f"make_report: error: {runs}: convnet_ladder names 'convnet_slow', which is not one "
        'of "runs".')


def test_rerun_uses_the_recorded_command(tmp_path):
    """--rerun runs metrics.json's command from the project root, with --out_dir pointed at
    the folder runs.json names and without the recorded --data_dir (another machine's)."""
    script = tmp_path / 'fake_train.py'
    script.write_text(
        'import os, sys\n'
        f'sys.path.insert(0, {os.path.join(ROOT, "tests")!r})\n'
        'from test_report import fake_metrics\n'
        f'assert os.getcwd() == {ROOT!r} and "--data_dir" not in sys.argv\n'
        'out = sys.argv[sys.argv.index("--out_dir") + 1]\n'
        'fake_metrics(out, "fake_train.py", steps=20, marker=sys.argv[1])\n')
    folder = tmp_path / 'run'
    fake_metrics(folder, 'fake_train.py')
    with open(folder / 'metrics.json') as f:
        metrics = json.load(f)
    metrics['command'] = ['python', str(script), 'recorded', '--out_dir', '/elsewhere',
                          '--data_dir', '/tmp/cifar10']
    with open(folder / 'metrics.json', 'w') as f:
        json.dump(metrics, f)
    runs = tmp_path / 'runs.json'
    runs.write_text(json.dumps({'runs': {'r': {'path': str(folder),
                                               'command': ['python', str(script), 'listed']}},
                                'gridsearch': {'path': str(tmp_path / 'grid')}}))
    make_report.rerun(make_report.load_config(str(runs)), ['r'])
    with open(folder / 'metrics.json') as f:
        assert json.load(f)['flags']['marker'] == 'recorded'
    with pytest.raises(make_report.ReportError, match='unknown run'):
        make_report.rerun(make_report.load_config(str(runs)), ['nope'])


# --------------------------------------------------------------------------- the report's math


def test_the_committed_report_comes_from_its_runs(tmp_path):
    """Every run report.tex cites is in runs.json and recorded under report/runs/, and every
    committed table is what make_report.py writes from those recorded runs."""
    config = make_report.load_config(os.path.join(ROOT, 'report', 'runs.json'))
    for run in config.folders:
        run.load()
        assert not run.missing, run.problem
    make_report.write_tables(config, str(tmp_path))
    for name in os.listdir(tmp_path):
        with open(os.path.join(ROOT, 'report', 'tables', name)) as f:
            assert f.read() == (tmp_path / name).read_text(), f'tables/{name} is out of date'
    with open(os.path.join(ROOT, 'report', 'report.tex')) as f:
        tex = re.sub(r'(?<!\\)%.*', '', f.read())  # without its comments
    macros = (tmp_path / 'runs.tex').read_text()
    cited = [*((name, 'final') for name in re.findall(r'\\finalacc\{([^}]*)\}', tex)),
             *((name, 'summary') for name in re.findall(r'\\runsummary\{([^}]*)\}', tex)),
             *re.findall(r'\\runval\{([^}]*)\}\{([^}]*)\}', tex)]
    assert len(cited) > 20
    for name, key in cited:
        if name.startswith('#'):  # the macros' own definitions
            continue
        assert f'run:{name}:{key}\\endcsname' in macros, f'{name} {key}'
    for name in re.findall(r'\\includegraphics[^{]*\{curves_([^}.]*)', tex):
        assert name in config.runs, name


def test_every_test_the_report_cites_exists():
    """report.tex points each formula at the test that checks it: those tests must exist."""
    import re

    with open(os.path.join(ROOT, 'report', 'report.tex')) as f:
        # (not the \\DeclareUrlCommand\\test that defines the macro)
        cited = re.findall(r'(?<!Command)\\test\{([^}]*)\}', f.read())
    assert len(cited) > 10
    defined = set()
    tests = [os.path.join('tests', n) for n in os.listdir(os.path.join(ROOT, 'tests'))]
    for name in ['unittests.py', *(n for n in tests if n.endswith('.py'))]:
        with open(os.path.join(ROOT, name)) as f:
            defined |= set(re.findall(r'^\s*(?:def|class) (\w+)', f.read(), re.M))
    for citation in cited:
        names = re.split(r'[ .:]+', citation.split('.py')[-1])
        missing = [n for n in names if n and n not in defined]
        assert not missing, f'report.tex cites {citation}, but {missing} does not exist'



def test_softmax_jacobian_as_written():
    """report.tex: dy_i/dx_j = y_i (delta_ij - y_j), i.e. J = diag(y) - y y^T."""
    from gradient_check import eval_numerical_gradient_array
    from modules import SoftMaxModule

    x = np.random.default_rng(0).standard_normal((1, 5))
    y = SoftMaxModule().forward(x)[0]
    jacobian = np.diag(y) - np.outer(y, y)
    numeric = np.stack([eval_numerical_gradient_array(SoftMaxModule().forward, x.copy(),
                                                      np.eye(5)[[i]])[0] for i in range(5)])
    np.testing.assert_allclose(jacobian, numeric, rtol=1e-6, atol=1e-9)


def test_softmax_crossentropy_gradient_is_y_minus_t_over_b():
    """report.tex, eq. (softmax + cross-entropy): dL/dX~ = (Y - T) / B."""
    from modules import CrossEntropyModule, SoftMaxModule

    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((6, 4)), np.eye(4)[rng.integers(0, 4, 6)]
    softmax, loss = SoftMaxModule(), CrossEntropyModule()
    y = softmax.forward(x)
    chained = softmax.backward(loss.backward(y, t))
    np.testing.assert_allclose(chained, (y - t) / 6, rtol=1e-10, atol=1e-14)


def test_batchnorm_gradient_path_by_path():
    """report.tex: dL/dx from dL/dvar and dL/dmu (the path-by-path form) equals the compact
    form of CustomBatchNormManualFunction, and sum_b dL/dx_b = 0."""
    import torch

    from custom_batchnorm import CustomBatchNormManualFunction

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64) * 2 + 1
    gamma = torch.randn(3, generator=gen, dtype=torch.float64)
    beta = torch.randn(3, generator=gen, dtype=torch.float64)
    dy = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    eps = 0.5  # large, so that the eps terms of the orthogonality check below matter
    leaf = x.clone().requires_grad_()
    CustomBatchNormManualFunction.apply(leaf, gamma, beta, eps).backward(dy)

    b = x.shape[0]
    mu = x.mean(0)
    var = ((x - mu) ** 2).mean(0)
    g = gamma * dy                                              # dL/dx_hat
    d_var = (g * (x - mu)).sum(0) * -0.5 * (var + eps) ** -1.5
    d_mu = -(g / torch.sqrt(var + eps)).sum(0) + d_var * (-2 / b) * (x - mu).sum(0)
    dx = g / torch.sqrt(var + eps) + d_var * 2 * (x - mu) / b + d_mu / b
    torch.testing.assert_close(dx, leaf.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(leaf.grad.sum(0), torch.zeros(3, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    # Orthogonal to x_hat up to eps: sum_b x_hat_b dL/dx_b = gamma s eps / (var + eps) *
    # sum_b dL/dy_b x_hat_b.
    s = (var + eps) ** -0.5
    x_hat = (x - mu) * s
    torch.testing.assert_close((x_hat * leaf.grad).sum(0),
                               gamma * s * eps / (var + eps) * (dy * x_hat).sum(0),
                               rtol=1e-6, atol=1e-12)


def test_every_folder_has_a_name_of_its_own():
    """--rerun NAME reruns one folder: two folders of one basename (a run and its validation
    twin) are told apart by their paths under report/runs/."""
    config = make_report.load_config(os.path.join(ROOT, 'report', 'runs.json'))
    names = [run.name for run in config.folders]
    assert len(names) == len(set(names))
    assert {'mod_kaiming', 'validation/mod_kaiming', 'gridsearch'} <= set(names)


def test_runs_cut_short_are_tables_not_tracebacks(tmp_path):
    """A validation twin stopped before its test (or run without a validation split), and a
    seed without a final accuracy yet: their cells say so, the report is still made."""
    runs = fake_project(tmp_path)
    config = json.loads(open(runs).read())
    stopped, plain = tmp_path / 'runs' / 'stopped', tmp_path / 'runs' / 'plain'
    fake_metrics(stopped, 'train_mlp_pytorch.py', status='interrupted', validation_size=5000)
    with open(stopped / 'metrics.json') as f:
        metrics = json.load(f)
    metrics['final_test_accuracy'] = None
    with open(stopped / 'metrics.json', 'w') as f:
        json.dump(metrics, f)
    fake_metrics(plain, 'train_mlp_pytorch.py')
    config['modifications'][1]['validation'] = {'label': 'validation: Adam', 'path': str(stopped)}
    config['modifications'][2]['validation'] = {'label': 'validation: best', 'path': str(plain)}
    config['seeds'].append({'label': 'cut short', 'paths': [str(stopped), str(plain)]})
    open(runs, 'w').write(json.dumps(config))
    out = tmp_path / 'out'
    assert make_report.main(['--runs', runs, '--out_dir', str(out), '--no-pdf']) == 0
    ladder = (out / 'tables' / 'validation_ladder.tex').read_text()
    assert 'Adam & 0.500 & -{}- &' in ladder and 'best & -{}- & 0.500 &' in ladder
    assert 'cut short & missing & 0.500' in (out / 'tables' / 'seeds.tex').read_text()
