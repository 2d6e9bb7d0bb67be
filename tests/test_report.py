"""report/make_report.py on tiny fake runs: figures, tables, the PDF, and one-line errors for
broken runs (tests/test_report_content.py checks the committed report itself)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'report'))

import make_report  # noqa: E402
from fake_runs import RUNS, fake_metrics, fake_project  # noqa: E402

# The curves and the heatmap are their owners' PNGs (train_utils.plot_curves, gridsearch.py).
FIGURES = [
    *(f'curves_{name}.png' for name in RUNS),
    'comparison.pdf',
    'comparison.png',
    'gridsearch_heatmap.png',
]
TABLES = [
    'runs.tex',
    'results.tex',
    'results.md',
    'modifications.tex',
    'modifications.md',
    'commands.tex',
    'gridsearch.tex',
    'changes.tex',
]


def markdown_rows(path):
    """The cells of a Markdown table, row by row (the header first, the |---| line left out)."""
    lines = path.read_text().splitlines()
    assert set(lines[1]) <= set('|-: '), 'the second line separates the header'
    return [
        [cell.strip() for cell in line.strip().strip('|').split('|')]
        for line in [lines[0], *lines[2:]]
    ]


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
    assert results[0] == [
        'model',
        'command',
        'final test accuracy',
        'best.pt test accuracy',
        'steps',
        'time',
        'device',
    ]
    # No best of several evaluations on the test set: that number was chosen on the test set.
    assert results[1] == [
        'mlp numpy default',
        '`python train_mlp_numpy.py`',
        '0.500',
        '--',
        '30',
        '12 s',
        'cpu',
    ]
    assert results[4][-2:] == ['about 1 h alone', 'cpu']
    # A run that chose on validation: the test set once, on its final weights and its best.pt.
    assert results[5][2:5] == ['0.625', '0.750', '30']
    assert (out / 'tables' / 'fast.tex').read_text().splitlines()[4:6] == [
        r'convnet default & 0.500 & -{}- & 30 & about 1 h alone \\',
        r'convnet fast & 0.625 & 0.750 & 30 & 12 s \\',
    ]
    # One change a row: each run's validation accuracy, then its test accuracy, tested once.
    assert (out / 'tables' / 'changes.tex').read_text().splitlines()[4:6] == [
        r'+ a split & 0.500 \ensuremath{\pm} 0.007 & 0.625 \ensuremath{\pm} 0.005 & 30 & 12 s \\',
        r'no split & -{}- & 0.500 \ensuremath{\pm} 0.005 & 30 & about 1 h alone \\',
    ]  # the binomial standard errors on 5,000 validation and 10,000 test images
    mods = markdown_rows(out / 'tables' / 'modifications.md')
    # No times in the ladder: its runs shared a machine, so their wall times do not compare.
    assert mods[0] == ['modification', 'flags changed', 'final test accuracy', 'steps']
    assert mods[1] == ['defaults', '`(baseline)`', '0.500', '30']
    assert mods[2] == ['Adam', '`--optimizer adam`', '0.500', '30 (diverged)']
    assert mods[3][:2] == ['best', '`--optimizer adamw --dropout 0.2`']
    # LaTeX would set -- as an en dash.
    assert '-{}-optimizer adam' in (out / 'tables' / 'modifications.tex').read_text()
    assert (
        r'two seeds & 0.500 \ensuremath{\pm} 0.000 & 0.500, 0.500'
        in (out / 'tables' / 'seeds.tex').read_text()
    )
    macros = (out / 'tables' / 'runs.tex').read_text()
    assert '\\csname run:convnet_default:final\\endcsname{0.500}' in macros
    assert 'test accuracy after refitting on the whole training set 0.450' in macros
    train_loss = json.loads((out.parent / 'runs' / 'convnet_fast' / 'metrics.json').read_text())[
        'train_loss'
    ]
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


@pytest.mark.skipif(
    shutil.which('pdflatex') is None,
    reason='pdflatex is not installed: the PDF build is not tested '
    '(apt-get install texlive-latex-base texlive-latex-recommended '
    'texlive-fonts-recommended latexmk)',
)
def test_pdf_builds(report):
    out, stdout, _ = report
    pdf = out / 'report.pdf'
    assert pdf.read_bytes()[:5] == b'%PDF-'
    assert pdf.stat().st_size > 50_000  # text and figures, not an empty page
    assert stdout.strip().splitlines()[-1] == f'make_report: built {pdf}'
    assert not list(out.glob('report.aux')), 'build by-products stay out of the report folder'


@pytest.mark.skipif(shutil.which('pdflatex') is None, reason='pdflatex is not installed')
def test_latex_error_is_one_line(tmp_path):
    (tmp_path / 'report.tex').write_text(
        '\\documentclass{article}\\begin{document}\\undefined\\end{document}\n'
    )
    with pytest.raises(make_report.ReportError) as e:
        make_report.build_pdf(str(tmp_path))
    assert str(e.value) == (
        f'LaTeX failed building report.pdf (! Undefined control sequence.); '
        f'the full log is {tmp_path}/report.log.'
    )
    assert not (tmp_path / 'report.pdf').exists()


def test_no_latex_is_one_line_and_success(report, monkeypatch):
    monkeypatch.setattr(make_report.shutil, 'which', lambda name: None)
    message = make_report.build_pdf(str(report[0]))
    assert message.startswith('report.pdf not built: pdflatex is not installed')
    assert '\n' not in message


@pytest.mark.parametrize(
    'folder, name, content, problem',
    [
        ('mlp_numpy_default', 'metrics.json', '[1, 2]', 'metrics.json is not a JSON object'),
        (
            'mlp_numpy_default',
            'metrics.json',
            '{"steps": [1]}',
            'metrics.json lacks "train_loss" or holds it with the wrong type',
        ),
        (
            'convnet_default',
            'metrics.json',
            None,
            'metrics.json has a series that holds something other than numbers',
        ),
        (
            'gridsearch',
            'best.json',
            '{"best_params": []}',
            'best.json lacks "best_params" or holds it with the wrong type',
        ),
        ('gridsearch', 'heatmap.png', 'REMOVE', 'heatmap.png not found'),
        ('gridsearch', 'results.tex', 'REMOVE', 'results.tex not found'),
    ],
)
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
    what = 'is missing' if problem.endswith(' not found') else 'cannot be used'
    assert f"error: run '{folder}' {what} ({tmp_path / 'runs' / folder}/{problem})" in err
    assert 'Traceback' not in err


def test_missing_run_names_it_and_its_command(tmp_path):
    runs = fake_project(tmp_path, skip=('convnet_default',))
    out = tmp_path / 'out'
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'report', 'make_report.py'),
            '--runs',
            runs,
            '--out_dir',
            str(out),
            '--no-pdf',
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    folder = tmp_path / 'runs' / 'convnet_default'
    assert (
        f"error: run 'convnet_default' is missing ({folder}/metrics.json not found); "
        f'produce it with:\n    python train_convnet_pytorch.py --out_dir {folder}' in result.stderr
    )
    assert '--allow-missing' in result.stderr
    assert not out.exists(), 'nothing is written when a run is missing'


def test_allow_missing_draws_placeholders(tmp_path):
    runs = tmp_path / 'runs.json'
    runs.write_text(
        json.dumps(
            {
                'runs': {'gone': {'label': 'gone', 'path': str(tmp_path / 'gone')}},
                'gridsearch': {'path': str(tmp_path / 'no_grid')},
            }
        )
    )
    out = tmp_path / 'out'
    assert (
        make_report.main(
            ['--runs', str(runs), '--out_dir', str(out), '--no-pdf', '--allow-missing']
        )
        == 0
    )
    for name in ('curves_gone.png', 'comparison.pdf', 'gridsearch_heatmap.png'):
        assert (out / 'figures' / name).exists()
    assert markdown_rows(out / 'tables' / 'results.md')[1][:3] == ['gone', '``', 'missing']
    assert 'Grid search missing' in (out / 'tables' / 'gridsearch.tex').read_text()


def test_bad_runs_json_is_one_line(tmp_path, capsys):
    bad = tmp_path / 'runs.json'
    bad.write_text('{"runs": {"a": {"label": "no path"}}}')
    assert make_report.main(['--runs', str(bad), '--out_dir', str(tmp_path), '--no-pdf']) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f'make_report: error: {bad}: runs.a needs a "path" (the run folder), a line of '
        'printable text.'
    )
    bad.write_text('{"runs": {"a": {"path": "a"}}}')
    assert make_report.main(['--runs', str(bad), '--out_dir', str(tmp_path), '--no-pdf']) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f'make_report: error: {bad}: gridsearch needs a "path" (the grid folder), a line of '
        'printable text.'
    )


def test_convnet_ladder_names_only_runs(tmp_path, capsys):
    runs = fake_project(tmp_path)
    config = json.loads(open(runs).read())
    config['convnet_ladder'] = ['convnet_default', 'convnet_slow']
    open(runs, 'w').write(json.dumps(config))
    assert make_report.main(['--runs', runs, '--out_dir', str(tmp_path), '--no-pdf']) == 2
    assert capsys.readouterr().err.strip() == (
        f"make_report: error: {runs}: convnet_ladder names 'convnet_slow', which is not one "
        'of "runs".'
    )


def test_rerun_uses_the_recorded_command(tmp_path):
    """--rerun rebuilds metrics.json's command: this interpreter runs the project's script with
    the recorded flags, --out_dir pointed at the folder runs.json names, without the recorded
    --data_dir (another machine's), --resume or --overwrite; runs.json's command is
    the fallback. (tests/test_faults_round2.py reruns a real run and refuses foreign ones.)"""
    folder = tmp_path / 'run'
    fake_metrics(folder, 'train_mlp_numpy.py')
    with open(folder / 'metrics.json') as f:
        metrics = json.load(f)
    metrics['command'] = [
        'python',
        'train_mlp_numpy.py',
        '--seed',
        '3',
        '--out_dir',
        '/elsewhere',
        '--data_dir',
        '/tmp/cifar10',
        '--resume=x',
        '--overwrite',
    ]
    with open(folder / 'metrics.json', 'w') as f:
        json.dump(metrics, f)
    runs = tmp_path / 'runs.json'
    runs.write_text(
        json.dumps(
            {
                'runs': {'r': {'path': str(folder), 'command': ['python', 'train_mlp_pytorch.py']}},
                'gridsearch': {'path': str(tmp_path / 'grid')},
            }
        )
    )
    (run,) = make_report.load_config(str(runs)).folders[:1]
    run.load()
    assert make_report.safe_command(run) == [
        sys.executable,
        os.path.join(ROOT, 'train_mlp_numpy.py'),
        '--seed',
        '3',
        '--out_dir',
        str(folder),
    ]
    os.remove(folder / 'metrics.json')
    run.load()
    assert make_report.safe_command(run) == [
        sys.executable,
        os.path.join(ROOT, 'train_mlp_pytorch.py'),
        '--out_dir',
        str(folder),
    ]
    with pytest.raises(make_report.ReportError, match='unknown run'):
        make_report.rerun(make_report.load_config(str(runs)), ['nope'])


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
