"""Findings of the seventh probe, at the report once more: an --out_dir whose tables/ was the
grid's folder, FIFOs and huge files as records, damaged time.txt files, a signal while
make_report loads, labels LaTeX failed on or matplotlib warned about, names and folders
shared between the grid and a run, and records whose labels, settings, status, commands,
times, PNG body or LaTeX environments were not what the scripts write. Each ends in one
sentence and an exit status, with no traceback, no hang and nothing overwritten."""

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import ROOT, one_error
from fake_runs import fake_project

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402
import report_tables  # noqa: E402
from test_faults_round5 import edit, edit_record, report  # noqa: E402
from test_faults_round6 import problem_of  # noqa: E402


def test_an_out_dir_whose_tables_folder_is_the_grids(tmp_path, capsys):
    """The grid's folder at OUT/tables: its results.tex was overwritten by the report's."""
    runs_json = fake_project(tmp_path)
    grid = tmp_path / 'out' / 'tables'
    shutil.move(tmp_path / 'runs' / 'gridsearch', grid)
    edit(runs_json, lambda c: c['gridsearch'].update(path=str(grid)))
    before = (grid / 'results.tex').read_bytes()
    assert report(runs_json, tmp_path / 'out') == 2
    assert 'would write figures/ and tables/ over the run folder' in one_error(capsys)
    assert (grid / 'results.tex').read_bytes() == before
    assert sorted(os.listdir(tmp_path / 'out')) == ['tables']


@pytest.mark.parametrize(
    'elapsed, memory',
    [
        ('0:01.00', '9' * 400),  # an OverflowError
        ('0:inf', '1000'),
        ('0:nan', '1000'),
        ('999999999:00:00', '1000'),
        ('0:-5', '1000'),
        ('0:01.00', '-3'),
    ],
)
def test_a_time_record_no_run_could_have_written(elapsed, memory, tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    for name in ('convnet_default', 'convnet_fast'):
        (tmp_path / 'runs' / name / 'time.txt').write_text(
            f'\tElapsed (wall clock) time (h:mm:ss or m:ss): {elapsed}\n'
            f'\tMaximum resident set size (kbytes): {memory}\n'
        )
    assert report(runs_json, tmp_path / 'out') == 0
    assert 'Traceback' not in capsys.readouterr().err
    run = make_report.load_config(runs_json).runs['convnet_fast']
    assert report_tables.time_v(run) == (None, None)


def caught(pid, signum):
    """Whether process pid has a handler for signum (/proc's SigCgt mask)."""
    with open(f'/proc/{pid}/status') as f:
        mask = next(line for line in f if line.startswith('SigCgt:')).split()[1]
    return bool(int(mask, 16) >> (signum - 1) & 1)


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='needs Linux /proc')
def test_a_signal_while_make_report_loads_its_libraries(tmp_path):
    """SIGTERM in the first 0.2 s, while numpy and the report's modules load, killed it
    without a word (quiet_start did not know make_report.py)."""
    script = os.path.join(ROOT, 'report', 'make_report.py')
    argv = [sys.executable, script, '--runs', str(tmp_path / 'none.json'), '--no-pdf']
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not caught(proc.pid, signal.SIGTERM):
        pass  # until the first handler is in place: quiet_start's, on the first import
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err == 'make_report.py: stopped by SIGTERM while starting; nothing was done.\n'


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    'folder, name', [('convnet_fast', 'metrics.json'), ('gridsearch', 'best.json')]
)
def test_a_fifo_as_a_record_is_refused_not_waited_on(folder, name, tmp_path, capsys):
    """A FIFO as metrics.json left make_report waiting forever for a writer."""
    runs_json = fake_project(tmp_path)
    path = tmp_path / 'runs' / folder / name
    path.unlink()
    os.mkfifo(path)
    assert report(runs_json, tmp_path / 'out') == 1
    assert f'{name} is not a regular file; the report reads only files' in problem_of(
        folder, capsys
    )


@pytest.mark.timeout(60)
def test_a_fifo_as_runs_json_or_time_txt(tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    os.mkfifo(tmp_path / 'fifo.json')
    assert report(str(tmp_path / 'fifo.json'), tmp_path / 'out') == 2
    assert 'fifo.json is not a regular file' in one_error(capsys)
    os.mkfifo(tmp_path / 'runs' / 'convnet_fast' / 'time.txt')
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'time.txt is not a regular file' in one_error(capsys)


def test_a_record_larger_than_any_runs(tmp_path, capsys):
    """A huge metrics.json (or /dev/zero linked in its place) was read whole into memory."""
    runs_json = fake_project(tmp_path)
    with open(tmp_path / 'runs' / 'convnet_fast' / 'metrics.json', 'r+b') as f:
        f.truncate(9 * 2**20)  # sparse: no disk used
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'metrics.json is 9 MiB, larger than any record of a run' in problem_of(
        'convnet_fast', capsys
    )


def every_label(config, text):
    """Sets each label and time in runs.json's config to text."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key in ('label', 'time'):
                config[key] = text
            else:
                every_label(value, text)
    elif isinstance(config, list):
        for value in config:
            every_label(value, text)


@pytest.mark.skipif(not shutil.which('pdflatex'), reason='needs pdflatex')
def test_labels_of_latex_specials_build_and_draw_without_warnings(tmp_path, capsys):
    """200 dollar signs as labels stopped pdflatex ('auto expansion is only possible with
    scalable fonts': the text font's $ is a bitmap); long labels and labels starting with _
    gave matplotlib warnings ('Tight layout not applied', 'No artists with labels')."""
    for i, text in enumerate(['$' * 200, '_' + '&%$#_{}~^<>|\\' * 15]):
        runs_json = edit(fake_project(tmp_path / str(i)), lambda c, text=text: every_label(c, text))
        with warnings.catch_warnings(record=True) as caught_warnings:
            warnings.simplefilter('always')
            assert make_report.main(['--runs', runs_json, '--out_dir', str(tmp_path / 'out')]) == 0
        assert [str(w.message) for w in caught_warnings] == []
        assert 'Traceback' not in capsys.readouterr().err


@pytest.mark.parametrize(
    'change, why',
    [
        (
            lambda c: c['seeds'][0].update(label='\\input{/etc/hostname}\n'),
            'seeds[0]: "label" must be a line of printable ASCII text',
        ),
        (
            lambda c: c['experiments']['crops'][0].update(label=['a']),
            'experiments.crops[0]: "label" must be a line of printable ASCII text',
        ),
        (
            lambda c: c['runs']['mlp_pytorch_best'].update(command=['python'] * 1000),
            '"command" must be a list of at most 200 lines of printable text.',
        ),
        (
            lambda c: c['runs'].update(gridsearch=c['runs'].pop('mlp_numpy_default')),
            "two folders are named 'gridsearch'",
        ),
        (
            lambda c: c['gridsearch'].update(path=c['runs']['convnet_fast']['path']),
            'the grid search and a run share the folder',
        ),
    ],
)
def test_runs_json_labels_commands_names_and_folders(change, why, tmp_path, capsys):
    """Group labels went unchecked into LaTeX and figures; a command of a thousand words
    was printed whole; a run named gridsearch, or the grid in a run's folder, left one of
    the two unread."""
    runs_json = edit(fake_project(tmp_path), change)
    assert report(runs_json, tmp_path / 'out') == 2
    assert why in one_error(capsys)
    assert not (tmp_path / 'out').exists()


def name_mod_adam(config):  # the name the modification row's folder already gives
    config['runs']['mlp_pytorch_adam'] = config['runs'].pop('mlp_numpy_default')


def test_a_run_named_as_another_folder_is_named_by_its_path(tmp_path, capsys):
    runs_json = edit(fake_project(tmp_path), name_mod_adam)
    assert report(runs_json, tmp_path / 'out') == 2
    assert "two folders are named 'mlp_pytorch_adam'" in one_error(capsys)


@pytest.mark.parametrize(
    'folder, record, change, why',
    [
        ('convnet_fast', 'metrics.json', {'status': 'done\\input'}, 'has a "status" other than'),
        ('convnet_fast', 'metrics.json', {'wall_seconds': 1e299}, '"wall_seconds" that is not'),
        ('convnet_fast', 'metrics.json', {'wall_seconds': -5.0}, '"wall_seconds" that is not'),
        ('convnet_fast', 'metrics.json', {'command': ['python'] * 300}, 'has a "command" that'),
        ('gridsearch', 'best.json', {'best_params': {'x' * 100: 1}}, 'has "best_params" that'),
        ('gridsearch', 'best.json', {'best_params': {'lr': '\n'}}, 'has "best_params" that'),
    ],
)
def test_a_record_with_fields_no_script_writes(folder, record, change, why, tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    edit_record(tmp_path / 'runs' / folder / record, lambda m: m.update(change))
    assert report(runs_json, tmp_path / 'out') == 1
    assert why in problem_of(folder, capsys)


def test_a_heatmap_damaged_after_its_signature(tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    path = tmp_path / 'runs' / 'gridsearch' / 'heatmap.png'
    data = bytearray(path.read_bytes())
    data[60:80] = b'x' * 20  # inside the image data: its chunk's checksum no longer holds
    path.write_bytes(bytes(data))
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'heatmap.png is not a whole PNG image' in problem_of('gridsearch', capsys)


@pytest.mark.parametrize(
    'change, why',
    [
        (lambda t: t.replace('\\end{table}', ''), 'a \\begin{table} that is never closed'),
        (lambda t: t.replace('\\end{tabular}', ''), 'an \\end{table} that closes no'),
        (lambda t: t + '\\label{sec:pytorch}', 'a \\label other than the one'),
        (lambda t: t.replace('\\label{tab:gridsearch}', ''), 'a \\label other than the one'),
        (lambda t: t + '\\label x', '\\label without its {...}'),
    ],
)
def test_the_grids_latex_with_unclosed_tables_or_other_labels(change, why, tmp_path, capsys):
    """An unclosed table swallowed the rest of the report; a second \\label took over the
    report's references to another section."""
    runs_json = fake_project(tmp_path)
    tex = tmp_path / 'runs' / 'gridsearch' / 'results.tex'
    tex.write_text(change(tex.read_text()))
    assert report(runs_json, tmp_path / 'out') == 1
    assert why in problem_of('gridsearch', capsys)


def test_a_label_with_a_bar_stays_in_its_markdown_column(tmp_path):
    runs_json = edit(
        fake_project(tmp_path), lambda c: c['runs']['convnet_fast'].update(label='a | b | c')
    )
    assert report(runs_json, tmp_path / 'out') == 0
    rows = (tmp_path / 'out' / 'tables' / 'results.md').read_text().splitlines()
    columns = {row.replace('\\|', '').count('|') for row in rows}
    assert len(columns) == 1, rows


def test_a_dead_units_setting_named_in_other_scripts_digits(tmp_path, capsys):
    """\\w let through digits and letters of any script, which the figure's font lacks."""
    runs_json = fake_project(tmp_path)
    path = tmp_path / 'runs' / 'dead_units.json'
    record = json.loads(path.read_text())
    record['settings']['[\u0661\u0660\u0660]'] = record['settings'].pop('[100, 100]')
    path.write_text(json.dumps(record))
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'is not what report/dead_units.py writes' in one_error(capsys)
    assert Path(runs_json).exists()


@pytest.mark.parametrize(
    'content', ['{"rows": [], "machine": {}}', '{"rows": [{"measurement": 1}]}', 'not json']
)
def test_a_damaged_benchmark_record(content, tmp_path, capsys):
    """The report's benchmark table comes from benchmark.py's JSON: a damaged one is one
    sentence, or with --allow-missing an empty table."""
    runs_json = fake_project(tmp_path)
    (tmp_path / 'benchmark.json').write_text(content)
    edit(runs_json, lambda c: c.update(benchmark=str(tmp_path / 'benchmark.json')))
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'produce it with: python benchmark.py' in one_error(capsys)
    assert report(runs_json, tmp_path / 'out', '--allow-missing') == 0
    assert 'benchmark.json missing' in (tmp_path / 'out/tables/benchmark_values.tex').read_text()
