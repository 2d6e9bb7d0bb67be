"""README.md is a front door that tells the truth: short, and every number of its results
table is the one its run folder recorded."""

import json
import os
import re
import shlex

from conftest import ROOT

README = os.path.join(ROOT, 'README.md')


def results_rows():
    """(link target, accuracy text, time text, command) of each row of the results table."""
    text = open(README).read()
    table = text.split('## Results', 1)[1].split('\n## ', 1)[0]
    rows = [line for line in table.splitlines() if line.startswith('| [')]
    for line in rows:
        cells = [c.strip() for c in line.strip('|').split('|')]
        folder = re.match(r'\[.*\]\((.*)\)', cells[0]).group(1)
        yield folder, cells[1], cells[2], cells[4].strip('`')


def minutes_or_seconds(seconds):
    return f'{seconds:.1f} s' if seconds < 100 else f'{seconds / 60:.1f} min'


def test_the_readme_is_short():
    assert len(open(README).read().splitlines()) <= 160


def test_every_result_is_its_run_folders():
    rows = list(results_rows())
    assert len(rows) >= 8
    for folder, accuracy, time, command in rows:
        path = os.path.join(ROOT, folder)
        if os.path.exists(os.path.join(path, 'best.json')):  # the grid search
            record = json.load(open(os.path.join(path, 'best.json')))
            assert accuracy == (
                f'CV {record["best_cv_score"]:.3f}, refit: test {record["test_accuracy"]:.3f}'
            ), folder
        else:
            record = json.load(open(os.path.join(path, 'metrics.json')))
            assert record['status'] == 'completed', folder
            assert accuracy == f'{record["final_test_accuracy"]:.3f}', folder
            flags = shlex.split(command)[2:]  # the command given reproduces the run's flags
            recorded = record['command']
            assert all(flag in recorded for flag in flags if flag.startswith('--')), folder
        assert time == minutes_or_seconds(record['wall_seconds']), folder
