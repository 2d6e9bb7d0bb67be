"""Reads report/runs.json (its "_help" describes the format) into the Runs the report reads:
each folder once, every name and label checked before any file is opened."""

import json
import os
import re
from collections import namedtuple
from dataclasses import dataclass

from records import (
    ReportError,
    checked_latex,
    grid_scores,
    group_problem,
    is_command,
    is_png,
    printable,
    read_file,
    shape_problem,
)
from report_experiments import record_path

from command_line import unique_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Far more than report.tex shows (8 runs, 105 folders), far fewer than would take minutes.
MOST_RUNS, MOST_FOLDERS = 100, 2000

# The names runs.json gives runs and experiments, which the report's macros and file names
# spell (an experiment's names files of its own, so no / or .).
RUN_NAME, EXPERIMENT_NAME = r'[A-Za-z0-9][A-Za-z0-9_./-]*', r'[A-Za-z0-9][A-Za-z0-9_-]*'
# folders: every folder once
Config = namedtuple(
    'Config',
    'runs grid modifications seeds convnet changes numpy_convnet experiments confusion '
    'dead_units benchmark folders',
)


@dataclass
class Run:
    """A folder the report reads: a train script's run or, with record='best.json', the grid.
    command: runs.json's; data: the loaded record, None while missing (problem says why)."""

    name: str
    label: str
    path: str  # as runs.json spells it (relative to ROOT), for messages
    command: list
    record: str
    data: dict = None
    problem: str = None
    missing: bool = True
    time: str = None  # runs.json's "time", shown instead of a wall time that is not its cost

    def file(self, name):
        """The path of the folder's file name; ReportError if it is a symbolic link, which
        would copy a file from elsewhere into the report."""
        path = os.path.join(ROOT, self.path, name)
        if os.path.islink(path):
            raise ReportError(
                f'{os.path.join(self.path, name)} is a symbolic link; the report reads only '
                'files that are in the run folder itself.'
            )
        return path

    def load(self):
        shown, data = os.path.join(self.path, self.record), None
        try:
            data = json.loads(read_file(self.file(self.record)))
            wrong = shape_problem(data, self.record)
            self.problem = wrong and f'{shown} {wrong}'
            if not wrong and self.record == 'best.json':
                self.problem = self.grid_problem()
        except FileNotFoundError:
            self.problem = f'{shown} not found'
        except ReportError as e:
            self.problem = str(e).removesuffix('.')
        except (OSError, ValueError, RecursionError) as e:
            self.problem = f'{shown} is unreadable ({e})'
        self.data, self.missing = (None, True) if self.problem else (data, False)

    def grid_problem(self):
        """'' if the grid's folder holds the other files the report reads, else what is wrong:
        results.tex, a PNG heatmap.png and, when there, a cv_results.csv of scores."""
        for name in ('results.tex', 'heatmap.png'):
            if not os.path.lexists(self.file(name)):
                return f'{os.path.join(self.path, name)} not found'
        checked_latex(self.file('results.tex'))  # ReportError: load() says why
        if not is_png(read_file(self.file('heatmap.png'))):
            return f'{os.path.join(self.path, "heatmap.png")} is not a whole PNG image'
        if grid_scores(self.file('cv_results.csv')) is False:
            return (
                f'{os.path.join(self.path, "cv_results.csv")} is not a table of scores '
                '(a mean_test_score from 0 to 1 on each row)'
            )
        return ''

    def rerun_command(self, out_dir=None):
        """Its recorded command, else runs.json's, with --out_dir out_dir (default: the folder),
        no --resume, no --overwrite and no --data_dir (the data is wherever this machine keeps
        it)."""
        out, skip, drop = [], False, ('--out_dir', '--resume', '--data_dir')
        for arg in (self.data or {}).get('command') or self.command:
            if not skip and not arg.startswith(drop) and arg != '--overwrite':
                out.append(arg)
            skip = arg in drop  # the value follows
        return [*out, '--out_dir', out_dir or self.path] if out else None


def load_config(runs_path):
    """Parses runs.json into a Config; ReportError (exit 2) says what is wrong with it."""

    def folder(entry, where, name=None, record='metrics.json'):
        if not isinstance(entry, dict) or not printable(entry.get('path'), 1000):
            kind = 'grid' if record == 'best.json' else 'run'
            raise ReportError(
                f'{runs_path}: {where} needs a "path" (the {kind} folder), a line of printable '
                'text.',
                2,
            )
        command = entry.get('command') or []
        if not is_command(command):
            raise ReportError(
                f'{runs_path}: {where}: "command" must be a list of at most 200 lines of '
                'printable text.',
                2,
            )
        # Else a folder is named by its path under runs/ beside runs.json (report/runs/), for
        # --rerun NAME and messages: mod_kaiming, validation/mod_kaiming.
        if name is None:
            name = os.path.relpath(os.path.join(ROOT, entry['path']), runs_dir)
            where += ' (named by its path under runs/ beside runs.json)'
        plain(name, where)
        for key in ('label', 'time'):
            if key in entry and not (entry[key] and printable(entry[key])):
                raise ReportError(
                    f'{runs_path}: {where}: "{key}" must be a line of printable ASCII text, '
                    'at most 200 characters.',
                    2,
                )
        return Run(
            name,
            entry.get('label', name),
            entry['path'],
            command,
            record,
            time=entry.get('time'),
        )

    def plain(name, where, pattern=RUN_NAME):  # a name goes into LaTeX macros and file names
        if not (isinstance(name, str) and re.fullmatch(pattern, name)):
            raise ReportError(
                f'{runs_path}: {where}: the name {name!r} holds characters other than letters, '
                f'digits and {"_ . / -" if pattern is RUN_NAME else "_ -"}, or starts with one.',
                2,
            )
        return name

    def names(key):  # a list of runs' names
        value = raw.get(key, [])
        if not (isinstance(value, list) and all(isinstance(n, str) for n in value)):
            raise ReportError(f'{runs_path}: "{key}" must be a list of names of "runs".', 2)
        if unknown := [n for n in value if n not in runs]:
            raise ReportError(
                f'{runs_path}: {key} names {unknown[0]!r}, which is not one of "runs".', 2
            )
        if len(set(value)) < len(value):
            raise ReportError(f'{runs_path}: "{key}" names a run twice.', 2)
        return [runs[n] for n in value]

    def shared(run):  # a folder runs.json names twice is one Run, read once
        return folders.setdefault(os.path.normpath(run.path), run)

    runs_dir = os.path.join(os.path.dirname(os.path.abspath(runs_path)), 'runs')
    try:
        raw = json.loads(read_file(runs_path), object_pairs_hook=unique_keys)
    except ReportError as e:  # not a file, or too large
        raise ReportError(str(e), 2) from None
    except (OSError, ValueError, RecursionError) as e:  # no such file, or not JSON
        raise ReportError(
            f'cannot read {runs_path} ({getattr(e, "strerror", None) or e}); pass '
            f'--runs with the file that names the runs.',
            2,
        ) from None
    if not (
        isinstance(raw, dict)
        and isinstance(raw.get('runs'), dict)
        and isinstance(raw.get('modifications', []), list)
    ):
        raise ReportError(
            f'{runs_path}: expected {{"runs": {{NAME: {{"path": ...}}}}, '
            f'"gridsearch": {{"path": ...}}, "modifications": [...]}}.',
            2,
        )
    if len(raw['runs']) > MOST_RUNS:  # each draws a figure and a row of every table of runs
        raise ReportError(f'{runs_path}: "runs" names more than {MOST_RUNS} runs.', 2)
    runs = {
        plain(name, 'runs', EXPERIMENT_NAME): folder(entry, f'runs.{name}', name)
        for name, entry in raw['runs'].items()
    }
    folders = {}
    for run in runs.values():  # a folder is one run: two names for it would leave one unread
        if (twin := folders.setdefault(os.path.normpath(run.path), run)) is not run:
            raise ReportError(
                f'{runs_path}: runs.{twin.name} and runs.{run.name} name the same folder.', 2
            )
    modifications = []  # (label, PyTorch run, {'numpy': its NumPy twin, 'validation': ...})
    for i, entry in enumerate(raw.get('modifications', [])):
        row = folder(entry, f'modifications[{i}]')
        twins = {
            key: folder(entry[key], f'modifications[{i}].{key}')
            for key in ('numpy', 'validation')
            if key in entry
        }
        modifications.append(
            (row.label, shared(row), {key: shared(twin) for key, twin in twins.items()})
        )

    def group(entry, where):  # (label, [the same command's runs with other seeds])
        paths = entry.get('paths') if isinstance(entry, dict) else None
        if not (isinstance(paths, list) and len(paths) > 1):
            raise ReportError(f'{runs_path}: {where} needs "paths", two or more run folders.', 2)
        if len({os.path.normpath(p) for p in paths if isinstance(p, str)}) < len(paths):
            raise ReportError(f'{runs_path}: {where} names a run folder twice.', 2)
        label = entry.get('label', where)
        if not (label and printable(label)):
            raise ReportError(
                f'{runs_path}: {where}: "label" must be a line of printable ASCII text, at most '
                '200 characters.',
                2,
            )
        return label, [shared(folder({'path': path}, where)) for path in paths]

    seeds = [group(entry, f'seeds[{i}]') for i, entry in enumerate(raw.get('seeds', []))]
    for i, (_, _, twins) in enumerate(modifications):  # the validation ladder's seeds 1-3
        entry = raw['modifications'][i].get('validation', {})
        if 'seeds' in entry:
            twins['validation_seeds'] = group(entry['seeds'], f'modifications[{i}].seeds')[1]
    experiments = raw.get('experiments', {})
    lists = isinstance(experiments, dict) and all(
        isinstance(v, list) and v for v in experiments.values()
    )
    if not lists:
        raise ReportError(f'{runs_path}: "experiments" must map names to lists of groups.', 2)
    experiments = {
        plain(name, 'experiments', EXPERIMENT_NAME): [
            group(entry, f'experiments.{name}[{i}]') for i, entry in enumerate(groups)
        ]
        for name, groups in experiments.items()
    }
    changes = [
        folder(entry, f'convnet_changes[{i}]')  # (label, run): a row may share a run
        for i, entry in enumerate(raw.get('convnet_changes', []))
    ]
    changes = [(run.label, shared(run)) for run in changes]
    grid = folder(raw.get('gridsearch'), 'gridsearch', 'gridsearch', 'best.json')
    if len(folders) > MOST_FOLDERS:
        raise ReportError(f'{runs_path} names more than {MOST_FOLDERS} run folders.', 2)
    named = {}  # --rerun NAME and the figures' files name one folder each
    for run in [*folders.values(), grid]:
        if (twin := named.setdefault(run.name, run)) is not run:
            raise ReportError(
                f'{runs_path}: two folders are named {run.name!r} ({twin.path} and {run.path}).', 2
            )
        if run is grid and os.path.normpath(grid.path) in folders:
            raise ReportError(
                f'{runs_path}: the grid search and a run share the folder {grid.path}.', 2
            )
    # a rerun replaces a folder whole: one inside another would go with it
    where = {
        os.path.normpath(os.path.join(ROOT, run.path)): run for run in [*folders.values(), grid]
    }
    for path, run in where.items():
        parent = os.path.dirname(path)
        while parent != os.path.dirname(parent):
            if outer := where.get(parent):
                raise ReportError(
                    f'{runs_path}: the folder of {run.name!r}, {run.path}, is inside that of '
                    f'{outer.name!r}, {outer.path}; each run needs a folder of its own.',
                    2,
                )
            parent = os.path.dirname(parent)
    return Config(
        runs,
        grid,
        modifications,
        seeds,
        names('convnet_ladder'),
        changes,
        names('numpy_convnet'),
        experiments,
        names('confusion'),
        record_path(raw, 'dead_units', runs_path, ROOT),
        record_path(raw, 'benchmark', runs_path, ROOT),
        [*folders.values(), grid],
    )


def check_groups(config):
    """Marks missing, with the reason, each loaded run of a group of seeds (runs.json's
    "experiments" and the ladder's "seeds") that cannot be averaged with the others: see
    records.group_problem; and its evaluation steps must be those of the group's first run."""
    groups = [runs for groups in config.experiments.values() for _, runs in groups]
    groups += [twins.get('validation_seeds', []) for _, _, twins in config.modifications]
    for runs in groups:
        first = None
        for run in runs:
            if run.missing:
                continue
            problem = group_problem(run.data)
            if not problem and run.data['status'] == 'completed':
                first = first or run
                if run.data['eval_steps'] != first.data['eval_steps']:
                    problem = f'is evaluated at other steps than {first.path}, in its group'
            if problem:
                run.problem = f'{os.path.join(run.path, run.record)} {problem}'
                run.data, run.missing = None, True
