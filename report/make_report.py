"""Regenerates every figure and table of the report from the runs named in report/runs.json,
then builds report.pdf when LaTeX is installed.

    python report/make_report.py                    # figures, tables and report.pdf
    python report/make_report.py --rerun            # first reruns every experiment listed
    python report/make_report.py --rerun convnet_default   # ... or only the ones named
    python report/make_report.py --allow-missing    # 'run missing' panels instead of an error
    python report/make_report.py --runs RUNS.json --out_dir DIR   # elsewhere (tests do this)

runs.json (relative paths are relative to the project root; commands run from there)::

    {"runs": {NAME: {"path": FOLDER, "label": TEXT, "command": [...]}, ...},
     "gridsearch": {"path": FOLDER, "command": [...]},
     "modifications": [{"label": TEXT, "run": NAME}                            # a run above
                       or {"label": TEXT, "path": FOLDER, "command": [...]}, ...]}

Each FOLDER holds the metrics.json a train script wrote (schema in train_utils.py); the
grid-search folder holds what gridsearch.py writes (cv_results.csv, results.tex, heatmap.png,
best.json). The first modification is the baseline the others are compared with. "command"
is what produces a run that is missing; --rerun prefers the command recorded in the run's own
metrics.json, with --out_dir pointed at FOLDER.

Written under --out_dir (default: report/), each file atomically (temporary file, then
rename), so a failure never leaves half a figure:

    figures/curves_NAME.{pdf,png}          training loss and test accuracy of each run
    figures/comparison.{pdf,png}           test accuracy of all runs
    figures/gridsearch_heatmap.{pdf,png}   mean cross-validated accuracy over the grid
    tables/runs.tex                        each run's numbers as macros for the text
    tables/results.{tex,md}                one row per run (the .md is for README)
    tables/modifications.{tex,md}          one row per PyTorch-MLP modification
    tables/commands.tex                    the command that reproduces each run
    tables/gridsearch.tex                  the grid-search table: gridsearch_results.tex
                                           (a copy of the grid's results.tex), in a table
    report.pdf                             with latexmk or pdflatex, when installed

Exit status: 0 done (also when no LaTeX is installed: one line says so), 1 a run is missing,
a rerun or the LaTeX build failed, 2 runs.json or a flag is wrong.
"""
import ast
import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

REPORT_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(REPORT_DIR)
# Run as a script, only report/ is on sys.path; train_utils lives in the project root.
sys.path.insert(0, ROOT)

from train_utils import ArgumentParser, smooth  # noqa: E402

PROG = 'make_report'
CIFAR10_TRAIN_SIZE = 50000
TEX_INSTALL_HINT = ('apt-get install texlive-latex-base texlive-latex-recommended '
                    'texlive-fonts-recommended latexmk')


class ReportError(Exception):
    """Something a user can fix; the message says what. exit_code: the process's status."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- runs.json


@dataclass
class RunSpec:
    """One run folder the report reads."""
    name: str
    label: str
    path: str                 # absolute
    shown_path: str           # as runs.json spells it, for messages
    command: list = None      # from runs.json: what produces the run when it is missing
    metrics: dict = None      # loaded metrics.json, None while missing
    problem: str = None       # why metrics is None

    @property
    def missing(self):
        return self.metrics is None


@dataclass
class GridSpec:
    path: str
    shown_path: str
    command: list = None
    cv_rows: list = None      # rows of cv_results.csv (dicts of strings)
    best: dict = None         # best.json
    heatmap_axes: list = None  # [x, y(, panel)] parameter names, e.g. ["lr", "batch_size"]
    results_tex: str = None   # the grid's own results.tex
    heatmap_png: str = None   # path of the grid's heatmap.png, when present
    problem: str = None

    @property
    def missing(self):
        return self.problem is not None


@dataclass
class Config:
    runs: dict                               # name -> RunSpec, in runs.json's order
    grid: GridSpec = None
    # (label, RunSpec) pairs; a row that names a run shares that run's RunSpec.
    modifications: list = field(default_factory=list)


def resolve(path):
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(ROOT, path))


def _command(entry, where):
    command = entry.get('command')
    if command is None:
        return None
    if isinstance(command, str):
        return shlex.split(command)
    if not (isinstance(command, list) and all(isinstance(c, str) for c in command)):
        raise ReportError(f'{where}: "command" must be a list of strings such as '
                          f'["python", "train_mlp_numpy.py", "--out_dir", "..."].', 2)
    return command


def load_config(runs_path):
    """Parses runs.json into a Config; ReportError (exit 2) says what is wrong with it."""
    try:
        with open(runs_path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ReportError(f'{runs_path} does not exist; pass --runs with the file that lists '
                          f'the runs (see report/runs.json).', 2) from None
    except json.JSONDecodeError as e:
        raise ReportError(f'{runs_path} is not valid JSON ({e}).', 2) from None
    if not isinstance(raw, dict) or not isinstance(raw.get('runs'), dict):
        raise ReportError(f'{runs_path}: expected an object with "runs": {{NAME: {{"path": '
                          f'...}}}}.', 2)

    runs = {}
    for name, entry in raw['runs'].items():
        where = f'{runs_path}: runs.{name}'
        if not isinstance(entry, dict) or not isinstance(entry.get('path'), str):
            raise ReportError(f'{where} needs a "path" (the run folder).', 2)
        runs[name] = RunSpec(name=name, label=entry.get('label', name),
                             path=resolve(entry['path']), shown_path=entry['path'],
                             command=_command(entry, where))

    grid = None
    if raw.get('gridsearch') is not None:
        entry = raw['gridsearch']
        if not isinstance(entry, dict) or not isinstance(entry.get('path'), str):
            raise ReportError(f'{runs_path}: gridsearch needs a "path" (the grid folder).', 2)
        grid = GridSpec(path=resolve(entry['path']), shown_path=entry['path'],
                        command=_command(entry, f'{runs_path}: gridsearch'),
                        heatmap_axes=entry.get('heatmap_axes'))

    modifications = []
    for i, entry in enumerate(raw.get('modifications') or []):
        where = f'{runs_path}: modifications[{i}]'
        if not isinstance(entry, dict) or 'label' not in entry:
            raise ReportError(f'{where} needs a "label" and either "run" or "path".', 2)
        if 'run' in entry:
            if entry['run'] not in runs:
                raise ReportError(f'{where}: "run": {entry["run"]!r} is not one of the runs '
                                  f'({", ".join(runs)}).', 2)
            base = runs[entry['run']]
            # Its own label, the same folder: the run is read (and rerun) once.
            modifications.append((entry['label'], base))
        elif isinstance(entry.get('path'), str):
            # Named after its folder: that is what --rerun NAME and the messages use.
            name = os.path.basename(os.path.normpath(entry['path']))
            spec = RunSpec(name=name, label=entry['label'],
                           path=resolve(entry['path']), shown_path=entry['path'],
                           command=_command(entry, where))
            modifications.append((entry['label'], spec))
        else:
            raise ReportError(f'{where} needs either "run" (a name under "runs") or "path".', 2)
    return Config(runs=runs, grid=grid, modifications=modifications)


def all_run_specs(config):
    """Every distinct run folder, runs first, each once."""
    seen, out = set(), []
    for spec in [*config.runs.values(), *(s for _, s in config.modifications)]:
        if id(spec) not in seen:
            seen.add(id(spec))
            out.append(spec)
    return out


# --------------------------------------------------------------------------- reading runs

REQUIRED = ('steps', 'train_loss', 'eval_steps', 'test_accuracy')


def load_run(spec):
    path = os.path.join(spec.path, 'metrics.json')
    spec.metrics, spec.problem = None, None
    try:
        with open(path) as f:
            metrics = json.load(f)
    except FileNotFoundError:
        spec.problem = f'{os.path.join(spec.shown_path, "metrics.json")} not found'
        return
    except (OSError, json.JSONDecodeError) as e:
        spec.problem = f'{os.path.join(spec.shown_path, "metrics.json")} is unreadable ({e})'
        return
    lacking = [k for k in REQUIRED if not isinstance(metrics.get(k), list)]
    if lacking:
        spec.problem = (f'{os.path.join(spec.shown_path, "metrics.json")} lacks '
                        f'{", ".join(lacking)}')
        return
    spec.metrics = metrics


def load_grid(grid):
    grid.problem = None
    csv_path = os.path.join(grid.path, 'cv_results.csv')
    try:
        with open(csv_path, newline='') as f:
            grid.cv_rows = list(csv.DictReader(f))
    except FileNotFoundError:
        grid.problem = f'{os.path.join(grid.shown_path, "cv_results.csv")} not found'
        return
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        grid.problem = f'{os.path.join(grid.shown_path, "cv_results.csv")} is unreadable ({e})'
        return
    if not grid.cv_rows or 'mean_test_score' not in grid.cv_rows[0]:
        grid.problem = (f'{os.path.join(grid.shown_path, "cv_results.csv")} has no '
                        f'mean_test_score column (expected scikit-learn\'s cv_results_)')
        return
    try:
        with open(os.path.join(grid.path, 'best.json')) as f:
            grid.best = json.load(f)
    except (OSError, json.JSONDecodeError):
        grid.best = None  # optional: the table and heatmap come from cv_results.csv
    try:
        with open(os.path.join(grid.path, 'results.tex')) as f:
            grid.results_tex = f.read()
    except OSError:
        grid.results_tex = None
    png = os.path.join(grid.path, 'heatmap.png')
    grid.heatmap_png = png if os.path.isfile(png) else None


def recorded_command(path, fallback, out_dir):
    """The command recorded under "command" in the JSON file path (a run's metrics.json or the
    grid's best.json), else fallback (runs.json's), pointed at out_dir; None when neither is
    known."""
    recorded = None
    try:
        with open(path) as f:
            recorded = json.load(f).get('command')
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    if not (isinstance(recorded, list) and recorded):
        recorded = fallback
    return with_out_dir(recorded, out_dir) if recorded else None


def rerun_command(spec):
    """The command that reproduces spec's run into spec.path."""
    return recorded_command(os.path.join(spec.path, 'metrics.json'), spec.command,
                            spec.shown_path)


def grid_command(grid):
    """The command that reproduces the grid search into grid.path."""
    return recorded_command(os.path.join(grid.path, 'best.json'), grid.command,
                            grid.shown_path)


def without_out_dir(command):
    return with_out_dir(command, '')[:-2]


def with_out_dir(command, out_dir):
    """command with --out_dir set to out_dir (and --resume dropped: a rerun starts afresh)."""
    out, skip = [], False
    for i, arg in enumerate(command):
        if skip:
            skip = False
            continue
        if arg in ('--out_dir', '--resume'):
            skip = i + 1 < len(command)
            continue
        if arg.startswith(('--out_dir=', '--resume=')):
            continue
        out.append(arg)
    return [*out, '--out_dir', out_dir]


def shown_command(spec):
    """A short command for tables: runs.json's (it names presets), else the recorded one;
    --out_dir left out, as it says where, not what."""
    command = spec.command or (spec.metrics or {}).get('command') or []
    return shlex.join(without_out_dir(command)) if command else ''


def rerun(config, names):
    """Reruns the runs named (all when names is empty), one after another, from ROOT."""
    specs = all_run_specs(config)
    targets = [(s.name, s) for s in specs]
    if config.grid is not None:
        targets.append(('gridsearch', config.grid))
    if names:
        unknown = [n for n in names if n not in {t for t, _ in targets}]
        if unknown:
            raise ReportError(f'--rerun: unknown run(s) {", ".join(unknown)}; the runs are '
                              f'{", ".join(t for t, _ in targets)}.', 2)
        targets = [(t, s) for t, s in targets if t in names]
    for name, spec in targets:
        if isinstance(spec, GridSpec):
            command = grid_command(spec)
        else:
            command = rerun_command(spec)
        if not command:
            raise ReportError(f'--rerun: no command known for {name} (no metrics.json with a '
                              f'"command", no "command" in runs.json).')
        if os.path.basename(command[0]) in ('python', 'python3'):
            command = [sys.executable, *command[1:]]  # the interpreter running this script
        print(f'{PROG}: rerunning {name}: {shlex.join(command)}', flush=True)
        try:
            result = subprocess.run(command, cwd=ROOT)
        except OSError as e:
            raise ReportError(f'--rerun: cannot start {command[0]} for {name} ({e}).') from None
        if result.returncode != 0:
            raise ReportError(f'rerun of {name} failed (exit status {result.returncode}): '
                              f'{shlex.join(command)}')


# --------------------------------------------------------------------------- formatting


def tex_escape(text):
    """Plain text -> LaTeX that prints it."""
    out = []
    for ch in str(text):
        if ch == '\\':
            out.append(r'\textbackslash{}')
        elif ch in '&%$#_{}':
            out.append('\\' + ch)
        elif ch == '~':
            out.append(r'\textasciitilde{}')
        elif ch == '^':
            out.append(r'\textasciicircum{}')
        else:
            out.append(ch)
    # Outside \texttt, TeX would set -- as an en dash.
    return ''.join(out).replace('--', '-{}-').replace('--', '-{}-')


def tex_command(command):
    # Long paths and names would run into the margin: allow a line break after / and _.
    text = tex_escape(command).replace('/', r'/\allowbreak{}').replace('\\_', r'\_\allowbreak{}')
    return r'\texttt{' + text + '}'


def fmt_acc(value):
    return '--' if value is None else f'{value:.3f}'


def fmt_seconds(seconds):
    if seconds is None or not math.isfinite(seconds):
        return '--'
    if seconds < 100:
        return f'{seconds:.0f} s'
    if seconds < 6000:
        return f'{seconds / 60:.1f} min'
    return f'{seconds / 3600:.1f} h'


def status_note(metrics):
    """'' for a completed run, else what happened to it, e.g. 'still running at step 2500
    of 5000'."""
    status = metrics.get('status', 'completed')
    if status == 'completed':
        return ''
    steps = metrics['steps']
    last = steps[-1] if steps else 0
    max_steps = (metrics.get('flags') or {}).get('max_steps')
    of = f' of {max_steps}' if max_steps else ''
    return {'running': f'still running at step {last}{of}',
            'interrupted': f'interrupted at step {last}{of}',
            'diverged': f'diverged at step {last}'}.get(status, f'{status} at step {last}{of}')


def final_acc(metrics):
    acc = metrics.get('final_test_accuracy')
    if acc is None and metrics['test_accuracy']:
        acc = metrics['test_accuracy'][-1]
    return acc


def best_acc(metrics):
    acc = metrics.get('best_test_accuracy')
    if acc is None and metrics['test_accuracy']:
        acc = max(metrics['test_accuracy'])
    return acc


def flag_changes(flags, baseline):
    """Flags that differ from baseline's, as '--name value' strings (where the run is and
    where the data is say nothing about the model)."""
    ignore = {'out_dir', 'data_dir', 'device', 'resume'}
    changes = []
    for name, value in flags.items():
        if name in ignore or baseline.get(name) == value:
            continue
        if value is None or value is False:
            changes.append(f'no --{name}')
        elif value is True:
            changes.append(f'--{name}')
        elif isinstance(value, (list, tuple)):
            changes.append(f'--{name} {",".join(map(str, value))}')
        else:
            changes.append(f'--{name} {value}')
    return changes


# --------------------------------------------------------------------------- output


def write_text(path, text):
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)  # a reader never sees half a file


def save_figure(fig, stem):
    """stem.pdf (for LaTeX) and stem.png (for README and viewers), each written atomically."""
    import matplotlib.pyplot as plt

    for ext in ('pdf', 'png'):
        tmp = f'{stem}.tmp.{ext}'
        fig.savefig(tmp, format=ext, dpi=150 if ext == 'png' else None)
        os.replace(tmp, f'{stem}.{ext}')
    plt.close(fig)


def setup_matplotlib():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    # Figures are drawn at the text width (16 cm) so that 8-9 pt here is 8-9 pt on paper.
    plt.rcParams.update({
        'font.size': 9, 'axes.titlesize': 9, 'axes.labelsize': 9, 'legend.fontsize': 8,
        'xtick.labelsize': 8, 'ytick.labelsize': 8, 'axes.spines.top': False,
        'axes.spines.right': False,
    })
    return plt


FIG_WIDTH = 6.3  # inches: the text width of report.tex (A4, 2.5 cm margins)


def placeholder(ax, text):
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha='center', va='center', transform=ax.transAxes, color='0.35',
            fontsize=10, wrap=True,
            bbox=dict(boxstyle='round,pad=0.6', facecolor='0.95', edgecolor='0.7', ls='--'))


def loss_limits(values):
    """A y-range that keeps a few huge early or diverging losses from flattening the rest."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return None
    low, high = float(finite.min()), float(np.percentile(finite, 99))
    if finite.max() > 2 * high:
        return max(0.0, low - 0.05 * (high - low)), high * 1.1
    return None


def plot_run(spec, stem, plt):
    """Training loss per step (raw and smoothed) with the test loss, and test accuracy."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(FIG_WIDTH, 2.5))
    if spec.missing:
        for ax in (ax_loss, ax_acc):
            placeholder(ax, f'run missing:\n{spec.name}')
        save_figure(fig, stem)
        return
    m = spec.metrics
    steps = np.asarray(m['steps'], dtype=float)
    loss = np.asarray(m['train_loss'], dtype=float)
    if len(steps):
        ax_loss.plot(steps, loss, color='C0', alpha=0.25, lw=0.6, label='train (per step)')
        ax_loss.plot(steps, smooth(loss), color='C0', lw=1.4, label='train (smoothed)')
        limits = loss_limits(loss)
        if limits:
            ax_loss.set_ylim(*limits)
    if m['eval_steps'] and m.get('test_loss'):
        ax_loss.plot(m['eval_steps'], m['test_loss'], 'o-', color='C1', ms=3, lw=1.2,
                     label='test')
    if m['eval_steps']:
        ax_acc.plot(m['eval_steps'], m['test_accuracy'], 'o-', color='C1', ms=3, lw=1.2,
                    label=f'test accuracy (final {m["test_accuracy"][-1]:.3f})')
    ax_loss.set(xlabel='training step', ylabel='cross-entropy loss', title='Loss')
    ax_acc.set(xlabel='training step', ylabel='accuracy', title='Test accuracy')
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:  # a run stopped before its first evaluation
            ax.legend(frameon=False, loc='best')
    note = status_note(m)
    if note:
        fig.suptitle(f'{spec.label} ({note})', fontsize=9)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, stem)


def plot_comparison(specs, stem, plt):
    """Test accuracy of every run against the epochs trained, and the final accuracies."""
    fig, (ax_curve, ax_bar) = plt.subplots(
        1, 2, figsize=(FIG_WIDTH, 2.7), gridspec_kw=dict(width_ratios=[1.35, 1]))
    labels, finals, bests, colors = [], [], [], []
    for i, spec in enumerate(specs):
        color = f'C{i % 10}'
        labels.append(spec.label if not spec.missing else f'{spec.label} (missing)')
        colors.append(color)
        if spec.missing:
            finals.append(np.nan)
            bests.append(np.nan)
            continue
        m = spec.metrics
        batch = (m.get('flags') or {}).get('batch_size')
        steps = np.asarray(m['eval_steps'], dtype=float)
        x = steps * batch / CIFAR10_TRAIN_SIZE if batch else steps
        ax_curve.plot(x, m['test_accuracy'], 'o-', ms=2.5, lw=1.2, color=color,
                      label=spec.label)
        finals.append(final_acc(m) if final_acc(m) is not None else np.nan)
        bests.append(best_acc(m) if best_acc(m) is not None else np.nan)
    ax_curve.set(xlabel='epochs (steps x batch size / 50,000)', ylabel='test accuracy',
                 title='Test accuracy during training')
    ax_curve.grid(alpha=0.3)
    if any(not s.missing for s in specs):
        ax_curve.legend(frameon=False, loc='lower right', fontsize=7)
    y = np.arange(len(specs))[::-1]
    ax_bar.barh(y, np.nan_to_num(finals), color=colors, alpha=0.85)
    ax_bar.plot(bests, y, 'k|', ms=12, mew=1.5)  # the caption explains the tick
    for yi, final, best in zip(y, finals, bests):
        text = 'missing' if not np.isfinite(final) else f'{final:.3f}'
        end = np.nanmax([final, best, 0.0])
        ax_bar.text(end + 0.015, yi, text, va='center', fontsize=8)
    ax_bar.set_yticks(y, labels)
    finite = [v for v in [*finals, *bests] if np.isfinite(v)]
    ax_bar.set_xlim(0, min(1.0, (max(finite) if finite else 0.5) + 0.17))
    ax_bar.set(xlabel='test accuracy', title='Final test accuracy')
    ax_bar.grid(alpha=0.3, axis='x')
    fig.tight_layout()
    save_figure(fig, stem)


# --------------------------------------------------------------------------- grid search


def parse_param(text):
    """A cv_results.csv cell -> a Python value ('' -> None; '[100, 100]' -> [100, 100])."""
    if text is None or text == '':
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def param_label(value):
    if value is None:
        return '--'
    if isinstance(value, (list, tuple)):
        return ','.join(param_label(v) for v in value) or '(none)'
    if isinstance(value, float):
        return f'{value:g}'
    return str(value)


def sort_key(value):
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, (list, tuple)):
        return (2, len(value), [sort_key(v) for v in value])
    return (3, str(value))


def grid_axes(rows, preferred=None):
    """(x, y, panel, rest): the parameters the heatmap spreads over -- preferred (runs.json's
    "heatmap_axes": [x, y] or [x, y, panel]), else the three with the most distinct values --
    and the others, over which each cell takes the best mean score. None where fewer
    parameters vary."""
    params = [k for k in rows[0] if k.startswith('param_')]
    distinct = {p: {repr(parse_param(r[p])) for r in rows} for p in params}
    varying = [p for p in params if len(distinct[p]) > 1]
    varying.sort(key=lambda p: -len(distinct[p]))  # stable: ties keep the csv's order
    chosen = [f'param_{a}' for a in (preferred or []) if f'param_{a}' in params] or varying[:3]
    x, y, panel = (chosen + [None, None, None])[:3]
    return x, y, panel, [p for p in varying if p not in chosen]


def axis_values(rows, param):
    if param is None:
        return [None]
    values = {repr(parse_param(r[param])): parse_param(r[param]) for r in rows}
    return sorted(values.values(), key=sort_key)


def short(param):
    return param.removeprefix('param_').removeprefix('module__') if param else ''


def plot_heatmap(grid, stem, plt):
    """Mean CV accuracy over two grid parameters, one panel per value of a third."""
    if grid is None or grid.missing:
        fig, ax = plt.subplots(figsize=(FIG_WIDTH, 2.0))
        placeholder(ax, 'grid search missing')
        save_figure(fig, stem)
        return
    rows = grid.cv_rows
    x_param, y_param, panel_param, rest = grid_axes(rows, grid.heatmap_axes)
    xs, ys = axis_values(rows, x_param), axis_values(rows, y_param)
    panels = axis_values(rows, panel_param)
    scores = np.full((len(panels), len(ys), len(xs)), np.nan)
    for r in rows:
        try:
            score = float(r['mean_test_score'])
        except ValueError:
            continue
        k, i, j = (values.index(parse_param(r[p])) if p else 0
                   for p, values in ((panel_param, panels), (y_param, ys), (x_param, xs)))
        if not np.isfinite(scores[k, i, j]) or score > scores[k, i, j]:
            scores[k, i, j] = score
    finite = scores[np.isfinite(scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    best = np.unravel_index(np.nanargmax(scores), scores.shape) if len(finite) else None
    # The text width, whatever the grid's size, so that report.tex shows it at 1:1 and the
    # fonts keep their size.
    fig, axes = plt.subplots(1, len(panels), figsize=(FIG_WIDTH, max(2.0, 1.0 + 0.35 * len(ys))),
                             squeeze=False, sharey=True, layout='constrained')
    for k, (ax, panel) in enumerate(zip(axes[0], panels)):
        im = ax.imshow(scores[k], cmap='viridis', vmin=lo, vmax=hi, aspect='auto')
        for (i, j), value in np.ndenumerate(scores[k]):
            if np.isfinite(value):
                dark = (value - lo) / ((hi - lo) or 1) < 0.6
                ax.text(j, i, f'{value:.3f}', ha='center', va='center', fontsize=7,
                        color='white' if dark else 'black',
                        fontweight='bold' if best == (k, i, j) else 'normal')
        if best is not None and best[0] == k:
            ax.add_patch(plt.Rectangle((best[2] - 0.5, best[1] - 0.5), 1, 1, fill=False,
                                       ec='red', lw=1.8))
        ax.set_xticks(range(len(xs)), [param_label(v) for v in xs])
        ax.set_yticks(range(len(ys)), [param_label(v) for v in ys])
        ax.set_xlabel(short(x_param))
        if panel_param:
            ax.set_title(f'{short(panel_param)} {param_label(panel)}', fontsize=8)
        ax.spines[:].set_visible(False)
    axes[0][0].set_ylabel(short(y_param))
    fig.colorbar(im, ax=axes[0].tolist(), label='mean CV accuracy', shrink=0.9, pad=0.02)
    if rest:
        fig.suptitle(f'each cell: the best over {", ".join(short(p) for p in rest)}',
                     fontsize=8)
    save_figure(fig, stem)


def grid_table_from_csv(rows, top=10):
    """A booktabs table of the best `top` parameter combinations (when the grid folder has no
    results.tex of its own)."""
    params = [k for k in rows[0] if k.startswith('param_')]

    def score(r):
        try:
            return float(r['mean_test_score'])
        except ValueError:
            return -math.inf

    ranked = sorted(rows, key=score, reverse=True)[:top]
    head = ' & '.join(tex_escape(short(p)) for p in params)
    lines = [r'\begin{tabular}{' + 'l' * len(params) + 'r}', r'\toprule',
             head + r' & mean CV accuracy \\', r'\midrule']
    for r in ranked:
        cells = [tex_escape(param_label(parse_param(r[p]))) for p in params]
        std = r.get('std_test_score')
        acc = f'{float(r["mean_test_score"]):.3f}' if score(r) > -math.inf else '--'
        if std:
            acc += f' $\\pm$ {float(std):.3f}'
        lines.append(' & '.join(cells) + f' & {acc} \\\\')
    lines += [r'\bottomrule', r'\end{tabular}']
    return '\n'.join(lines) + '\n'


def grid_tables(grid, tables_dir):
    """tables/gridsearch.tex, which report.tex inputs: the grid's own results.tex (copied to
    tables/gridsearch_results.tex), wrapped in a table with a caption when it is a bare
    tabular."""
    if grid is None or grid.missing:
        body = r'\emph{Grid search missing.}'
        write_text(os.path.join(tables_dir, 'gridsearch.tex'),
                   '\\begin{table}[tb]\n\\centering\n' + body + '\n\\caption{Grid search: '
                   'missing.}\n\\label{tab:gridsearch}\n\\end{table}\n')
        return
    results = grid.results_tex
    if results is None:
        results = grid_table_from_csv(grid.cv_rows)
    write_text(os.path.join(tables_dir, 'gridsearch_results.tex'), results)
    if r'\begin{table' in results:
        text = '\\input{tables/gridsearch_results}\n'
    else:
        text = ('\\begin{table}[tb]\n\\centering\n\\small\n'
                '\\input{tables/gridsearch_results}\n'
                '\\caption{Grid search over the PyTorch MLP (scikit-learn GridSearchCV via '
                'skorch): mean cross-validated accuracy of each parameter combination. '
                '\\runsummary{gridsearch}}\n\\label{tab:gridsearch}\n\\end{table}\n')
    write_text(os.path.join(tables_dir, 'gridsearch.tex'), text)


def grid_summary(grid):
    if grid is None:
        return 'No grid search is listed in runs.json.'
    if grid.missing:
        return missing_summary(grid.problem, grid.command, grid.shown_path)
    best = grid.best or {}
    parts = []
    setup = [f'{best["cv"]}-fold cross-validation' if best.get('cv') else '',
             f'on {best["n_train"]} training images' if best.get('n_train') else '',
             f'{best["max_epochs"]} epochs per fit' if best.get('max_epochs') else '']
    if any(setup):
        parts.append(' '.join(s for s in setup[:2] if s) + (', ' if setup[2] else '')
                     + setup[2])
    if best.get('best_params'):
        params = ', '.join(f'{short(k)}={param_label(v)}'
                           for k, v in best['best_params'].items())
        parts.append(f'best setting {tex_command(params)}')
    if best.get('best_cv_score') is not None:
        parts.append(f'its mean CV accuracy {best["best_cv_score"]:.3f}')
    if best.get('test_accuracy') is not None:
        parts.append(f'test accuracy after refitting on the whole training set '
                     f'{best["test_accuracy"]:.3f}')
    return (('; '.join(parts) + '.')[0].upper() + ('; '.join(parts) + '.')[1:]) if parts \
        else ''


# --------------------------------------------------------------------------- tables


def missing_summary(problem, command, shown_path):
    how = (f' Produce it with {tex_command(shlex.join(with_out_dir(command, shown_path)))}.'
           if command else '')
    return r'\textbf{Run missing} (' + tex_escape(problem) + ').' + how


def run_summary(spec):
    if spec.missing:
        return missing_summary(spec.problem, spec.command, spec.shown_path)
    m = spec.metrics
    steps = m['steps'][-1] if m['steps'] else 0
    note = status_note(m)
    text = (f'{steps} steps, final test accuracy {fmt_acc(final_acc(m))} '
            f'(best evaluation {fmt_acc(best_acc(m))})')
    if m.get('wall_seconds') is not None:
        text += f', {fmt_seconds(m["wall_seconds"])} on {tex_escape(m.get("device", "cpu"))}'
    text += '.'
    if note:
        text += r' \textbf{Run ' + tex_escape(note) + '.}'
    return text


def tex_macros(config):
    """tables/runs.tex: each run's numbers as macros, so the text quotes the measured values
    (report.tex: \\runval{NAME}{final}, \\runsummary{NAME})."""
    lines = ['% Generated by report/make_report.py from the runs in runs.json; do not edit.']

    def define(name, key, value):
        lines.append(f'\\expandafter\\def\\csname run:{name}:{key}\\endcsname{{{value}}}')

    for spec in config.runs.values():
        m = spec.metrics
        define(spec.name, 'label', tex_escape(spec.label))
        define(spec.name, 'summary', run_summary(spec))
        define(spec.name, 'command', tex_command(shown_command(spec)))
        define(spec.name, 'final', fmt_acc(final_acc(m)) if m else r'\textbf{missing}')
        define(spec.name, 'best', fmt_acc(best_acc(m)) if m else r'\textbf{missing}')
        define(spec.name, 'steps', (m['steps'][-1] if m['steps'] else 0) if m else '--')
    define('gridsearch', 'summary', grid_summary(config.grid))
    best = (config.grid.best or {}) if config.grid and not config.grid.missing else {}
    define('gridsearch', 'final', fmt_acc(best.get('test_accuracy')))
    define('gridsearch', 'cv', fmt_acc(best.get('best_cv_score')))
    return '\n'.join(lines) + '\n'


def run_row(spec):
    """(final, best, steps, time, device) cells, as text, of one run."""
    if spec.missing:
        return ['missing', '--', '--', '--', '--']
    m = spec.metrics
    steps = str(m['steps'][-1] if m['steps'] else 0)
    note = status_note(m)
    if note:
        steps += f' ({note.split(" at ")[0]})'
    return [fmt_acc(final_acc(m)), fmt_acc(best_acc(m)), steps,
            fmt_seconds(m.get('wall_seconds')), m.get('device', 'cpu')]


def results_tables(config):
    """tables/results.tex and results.md: one row per run in runs.json."""
    specs = list(config.runs.values())
    tex = [r'\begin{tabular}{lrrrrl}', r'\toprule',
           r'model & final acc. & best acc. & steps & time & device \\', r'\midrule']
    md = ['| model | command | final test accuracy | best test accuracy | steps | time | '
          'device |', '|---|---|---|---|---|---|---|']
    for spec in specs:
        cells = run_row(spec)
        tex.append(' & '.join([tex_escape(spec.label), *map(tex_escape, cells)]) + r' \\')
        command = shown_command(spec)
        md.append(f'| {spec.label} | `{command}` | ' + ' | '.join(cells) + ' |')
    tex += [r'\bottomrule', r'\end{tabular}']
    return '\n'.join(tex) + '\n', '\n'.join(md) + '\n'


def modifications_tables(config):
    """tables/modifications.tex and .md: one row per modification, its flags compared with
    the first row's (the baseline)."""
    rows = config.modifications
    if not rows:
        note = 'No modifications are listed in runs.json.'
        return f'\\emph{{{note}}}\n', f'{note}\n'
    base = rows[0][1]
    base_flags = (base.metrics or {}).get('flags') or {}
    # Labels and flag lists can be long: both wrap within fixed widths (16 cm in all).
    tex = [r'\begin{tabular}{@{}>{\raggedright\arraybackslash}p{3.3cm}'
           r'>{\raggedright\arraybackslash\footnotesize\ttfamily}p{5.0cm}rrrr@{}}', r'\toprule',
           r'modification & \normalfont flags changed & final acc. & best acc. & steps & time '
           r'\\', r'\midrule']
    md = ['| modification | flags changed | final test accuracy | best test accuracy | steps '
          '| time |', '|---|---|---|---|---|---|']
    for i, (label, spec) in enumerate(rows):
        if i == 0:
            changes = '(baseline)'
        elif spec.missing or base.missing:
            changes = '--'
        else:
            changes = ' '.join(flag_changes(spec.metrics.get('flags') or {}, base_flags)) \
                or '(none)'
        final, best, steps, time, _ = run_row(spec)
        tex.append(' & '.join([tex_escape(label), tex_escape(changes), final, best,
                               tex_escape(steps), tex_escape(time)]) + r' \\')
        md.append(f'| {label} | `{changes}` | {final} | {best} | {steps} | {time} |')
    tex += [r'\bottomrule', r'\end{tabular}']
    return '\n'.join(tex) + '\n', '\n'.join(md) + '\n'


def commands_table(config):
    """tables/commands.tex: the command --rerun executes for each run."""
    lines = [r'\begin{description}\setlength\itemsep{2pt}']
    for spec in all_run_specs(config):
        command = rerun_command(spec)
        text = tex_command(shlex.join(command)) if command else r'\emph{unknown}'
        lines.append(f'\\item[{tex_escape(spec.label)}] {text}')
    if config.grid is not None:
        command = grid_command(config.grid)
        text = tex_command(shlex.join(command)) if command else r'\emph{unknown}'
        lines.append(f'\\item[grid search] {text}')
    lines.append(r'\end{description}')
    return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------- LaTeX


def build_pdf(out_dir):
    """Builds out_dir/report.pdf from out_dir/report.tex. Returns a message for the user;
    ReportError when LaTeX fails."""
    latexmk, pdflatex = shutil.which('latexmk'), shutil.which('pdflatex')
    if not pdflatex:
        return (f'report.pdf not built: pdflatex is not installed (figures and tables are '
                f'written; to build the PDF: {TEX_INSTALL_HINT}).')
    with tempfile.TemporaryDirectory(prefix='report-build-') as build:
        # The build products go to a temporary folder: report/ only ever gets a whole PDF.
        if latexmk:
            commands = [[latexmk, '-pdf', '-interaction=nonstopmode', '-halt-on-error',
                         f'-outdir={build}', 'report.tex']]
        else:
            once = [pdflatex, '-interaction=nonstopmode', '-halt-on-error',
                    f'-output-directory={build}', 'report.tex']
            commands = [once, once]  # the second pass resolves references
        for command in commands:
            result = subprocess.run(command, cwd=out_dir, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors='replace')
            if result.returncode != 0:
                log = os.path.join(build, 'report.log')
                saved = os.path.join(out_dir, 'report.log')
                error = ''
                if os.path.exists(log):
                    shutil.copyfile(log, saved)
                    with open(log, errors='replace') as f:
                        errors = [ln.strip() for ln in f if ln.startswith('!')]
                    error = errors[0] if errors else ''
                raise ReportError(f'LaTeX failed building report.pdf ({error or "see the log"});'
                                  f' the full log is {saved}.')
        tmp = os.path.join(out_dir, 'report.pdf.tmp')
        shutil.copyfile(os.path.join(build, 'report.pdf'), tmp)
        os.replace(tmp, os.path.join(out_dir, 'report.pdf'))
    return f'built {os.path.join(out_dir, "report.pdf")}'


# --------------------------------------------------------------------------- main


def make_report(runs_path, out_dir, allow_missing=False, rerun_names=None, pdf=True):
    config = load_config(runs_path)
    if rerun_names is not None:
        rerun(config, rerun_names)

    for spec in all_run_specs(config):
        load_run(spec)
    if config.grid is not None:
        load_grid(config.grid)

    missing = [(s.name, s.problem, s.command, s.shown_path)
               for s in all_run_specs(config) if s.missing]
    if config.grid is not None and config.grid.missing:
        g = config.grid
        missing.append(('gridsearch', g.problem, g.command, g.shown_path))
    for name, problem, command, shown_path in missing:
        how = (f'; produce it with:\n    {shlex.join(with_out_dir(command, shown_path))}'
               if command else '; runs.json gives no command that produces it')
        kind = 'warning' if allow_missing else 'error'
        print(f'{PROG}: {kind}: run {name!r} is missing ({problem}){how}', file=sys.stderr)
    if missing and not allow_missing:
        raise ReportError(f'{len(missing)} run(s) missing; run the command(s) above (or '
                          f'python report/make_report.py --rerun), or pass --allow-missing to '
                          f'draw "run missing" placeholders instead.')
    for spec in all_run_specs(config):
        if not spec.missing and status_note(spec.metrics):
            print(f'{PROG}: warning: run {spec.name!r} {status_note(spec.metrics)}; the report '
                  f'shows it as far as it got.', file=sys.stderr)

    figures = os.path.join(out_dir, 'figures')
    tables = os.path.join(out_dir, 'tables')
    os.makedirs(figures, exist_ok=True)
    os.makedirs(tables, exist_ok=True)

    plt = setup_matplotlib()
    for spec in config.runs.values():
        plot_run(spec, os.path.join(figures, f'curves_{spec.name}'), plt)
    plot_comparison(list(config.runs.values()), os.path.join(figures, 'comparison'), plt)
    plot_heatmap(config.grid, os.path.join(figures, 'gridsearch_heatmap'), plt)

    write_text(os.path.join(tables, 'runs.tex'), tex_macros(config))
    tex, md = results_tables(config)
    write_text(os.path.join(tables, 'results.tex'), tex)
    write_text(os.path.join(tables, 'results.md'), md)
    tex, md = modifications_tables(config)
    write_text(os.path.join(tables, 'modifications.tex'), tex)
    write_text(os.path.join(tables, 'modifications.md'), md)
    write_text(os.path.join(tables, 'commands.tex'), commands_table(config))
    grid_tables(config.grid, tables)
    print(f'{PROG}: figures in {figures}, tables in {tables}')

    if not pdf:
        return
    tex_source = os.path.join(REPORT_DIR, 'report.tex')
    if os.path.abspath(out_dir) != REPORT_DIR:
        # report.tex inputs tables/ and figures/ relative to itself: build next to them.
        tmp = os.path.join(out_dir, 'report.tex.tmp')
        shutil.copyfile(tex_source, tmp)
        os.replace(tmp, os.path.join(out_dir, 'report.tex'))
    print(f'{PROG}: {build_pdf(out_dir)}')


def build_parser():
    p = ArgumentParser(  # one-line errors, as the train scripts give
        prog='make_report.py',
        description='Regenerates the report\'s figures and tables from the runs listed in '
                    'runs.json and builds report.pdf (when LaTeX is installed).')
    p.add_argument('--runs', default=os.path.join(REPORT_DIR, 'runs.json'),
                   help='the JSON file naming the runs (default: report/runs.json)')
    p.add_argument('--out_dir', default=REPORT_DIR,
                   help='where figures/, tables/ and report.pdf go (default: report/)')
    p.add_argument('--rerun', nargs='*', metavar='NAME', default=None,
                   help='first rerun the experiments (all, or those named) with the commands '
                        'recorded in their metrics.json, from the project root')
    p.add_argument('--allow-missing', action='store_true',
                   help='draw a "run missing" placeholder for a missing run instead of failing')
    p.add_argument('--no-pdf', action='store_true',
                   help='write figures and tables only, do not build report.pdf')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        make_report(args.runs, os.path.abspath(args.out_dir), allow_missing=args.allow_missing,
                    rerun_names=args.rerun, pdf=not args.no_pdf)
    except ReportError as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted; files already written are complete.', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
