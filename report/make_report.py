"""Regenerates the report's figures and tables from the runs named in report/runs.json, then
builds report.pdf when LaTeX is installed.

    python report/make_report.py                      # figures, tables and report.pdf
    python report/make_report.py --rerun [NAME ...]   # first rerun all experiments (or those named)
    python report/make_report.py --allow-missing      # 'run missing' placeholders, not an error
    python report/make_report.py --runs RUNS.json --out_dir DIR   # elsewhere (tests do this)

runs.json (paths relative to the project root, where commands run)::

    {"runs": {NAME: {"path": FOLDER, "label": TEXT, "command": [...]}, ...},
     "gridsearch": {"path": FOLDER, "command": [...]},
     "modifications": [{"label": TEXT, "run": NAME} or {"label": TEXT, "path": FOLDER}, ...]}

A FOLDER holds a train script's metrics.json (schema in train_utils.py), or what gridsearch.py
writes (best.json, results.tex, heatmap.png). The first modification is the baseline the
others' flags are compared with. "command" produces a missing run; --rerun prefers the command
recorded in the run's metrics.json (best.json), pointed at FOLDER.

Writes figures/ and tables/ under --out_dir (default: report/), each file atomically and, for
unchanged runs, byte for byte as before; a run's curves and the grid's heatmap are drawn by
their owners (train_utils.plot_curves, gridsearch.py), the comparison of all runs here.

Exit status: 0 done (also when no LaTeX is installed: one line says so), 1 a run is missing,
a rerun or the LaTeX build failed, 2 runs.json or a flag is wrong.
"""
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

REPORT_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(REPORT_DIR)
sys.path.insert(0, ROOT)  # run as a script, only report/ is on sys.path

from train_utils import ArgumentParser, plot_curves  # noqa: E402

PROG = 'make_report'
TEX_INSTALL_HINT = ('apt-get install texlive-latex-base texlive-latex-recommended '
                    'texlive-fonts-recommended latexmk')
NUMBER, OPTIONAL = (int, float), type(None)
SERIES = ('steps', 'train_loss', 'eval_steps', 'test_loss', 'test_accuracy')
# What the report reads from each record, with its type (OPTIONAL: the key may be absent).
SHAPES = {'metrics.json': {**dict.fromkeys(SERIES, list), 'flags': (dict, OPTIONAL),
                           'status': (str, OPTIONAL), 'device': (str, OPTIONAL),
                           'command': (list, OPTIONAL), 'wall_seconds': (*NUMBER, OPTIONAL),
                           'final_test_accuracy': (*NUMBER, OPTIONAL),
                           'best_test_accuracy': (*NUMBER, OPTIONAL)},
          'best.json': {'best_params': dict, 'best_cv_score': NUMBER, 'cv': int, 'n_train': int,
                        'max_epochs': int, 'test_accuracy': (*NUMBER, OPTIONAL),
                        'command': (list, OPTIONAL)}}
# No dates or versions in the figures: unchanged runs give byte-identical files.
METADATA = {'pdf': {'CreationDate': None, 'Producer': None, 'Creator': None},
            'png': {'Software': None}}


class ReportError(Exception):
    """Something a user can fix; the message says what. exit_code: the process's status."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """A folder the report reads: a train script's run or, with record='best.json', the grid."""
    name: str
    label: str
    path: str                  # as runs.json spells it (relative to ROOT), for messages
    command: list = None       # runs.json's: what produces the folder when it is missing
    record: str = 'metrics.json'
    data: dict = None          # the loaded record; None while missing
    problem: str = None        # why data is None

    @property
    def missing(self):
        return self.data is None

    def file(self, name):
        return os.path.join(ROOT, self.path, name)

    def load(self):
        """Reads the record into data, or says in problem why it cannot."""
        shown, data = os.path.join(self.path, self.record), None
        try:
            with open(self.file(self.record)) as f:
                data = json.load(f)
            wrong = shape_problem(data, self.record)
            self.problem = wrong and f'{shown} {wrong}'
        except FileNotFoundError:
            self.problem = f'{shown} not found'
        except (OSError, ValueError) as e:
            self.problem = f'{shown} is unreadable ({e})'
        for name in ('results.tex', 'heatmap.png') if self.record == 'best.json' else ():
            if not self.problem and not os.path.isfile(self.file(name)):
                self.problem = f'{os.path.join(self.path, name)} not found'
        self.data = None if self.problem else data

    def rerun_command(self):
        """What reproduces the folder (after load()): the command its record holds, else
        runs.json's, with --out_dir pointed at the folder; None when neither is known."""
        command = (self.data or {}).get('command') or self.command
        return with_out_dir(command, self.path) if command else None

    def shown_command(self):
        """For tables: runs.json's command (it names presets), else the recorded one, without
        --out_dir (which says where, not what)."""
        command = self.command or (self.data or {}).get('command')
        return shlex.join(with_out_dir(command, '')[:-2]) if command else ''


def shape_problem(data, record):
    """'' when data (a loaded metrics.json or best.json) holds what the report reads, else
    what is wrong with it."""
    if not isinstance(data, dict):
        return 'is not a JSON object'
    wrong = [key for key, kind in SHAPES[record].items() if not isinstance(data.get(key), kind)]
    if wrong:
        return f'lacks "{wrong[0]}" or holds it with the wrong type'
    if not is_command(data.get('command') or []):
        return 'has a "command" that is not a list of strings'
    series = [data[key] for key in SERIES] if record == 'metrics.json' else []
    if not all(isinstance(v, NUMBER) for values in series for v in values):
        return 'has a series that holds something other than numbers'
    if series and (len(series[0]) != len(series[1]) or len({len(s) for s in series[2:]}) > 1):
        return 'has series of different lengths'
    return ''


def is_command(value):
    return isinstance(value, list) and all(isinstance(arg, str) for arg in value)


def with_out_dir(command, out_dir):
    """command with --out_dir set to out_dir (and --resume dropped: a rerun starts afresh)."""
    out, skip = [], False
    for i, arg in enumerate(command):
        if skip:
            skip = False
        elif arg in ('--out_dir', '--resume'):
            skip = i + 1 < len(command)
        elif not arg.startswith(('--out_dir=', '--resume=')):
            out.append(arg)
    return [*out, '--out_dir', out_dir]


@dataclass
class Config:
    runs: dict                 # name -> Run, in runs.json's order
    grid: Run                  # None when runs.json lists no grid search
    modifications: list        # (label, Run); a row that names a run shares that Run

    def folders(self):
        """Every distinct folder, each once: the runs, the modifications', the grid."""
        runs = {id(r): r for r in [*self.runs.values(), *(r for _, r in self.modifications)]}
        return [*runs.values(), *([self.grid] if self.grid else [])]


def load_config(runs_path):
    """Parses runs.json into a Config; ReportError (exit 2) says what is wrong with it."""
    def folder(entry, where, name, record='metrics.json'):
        if not isinstance(entry, dict) or not isinstance(entry.get('path'), str):
            kind = 'grid' if record == 'best.json' else 'run'
            raise ReportError(f'{runs_path}: {where} needs a "path" (the {kind} folder).', 2)
        command = entry.get('command')
        if command is not None and not is_command(command):
            raise ReportError(f'{runs_path}: {where}: "command" must be a list of strings such '
                              f'as ["python", "train_mlp_numpy.py", "--out_dir", "..."].', 2)
        return Run(name, str(entry.get('label', name)), entry['path'], command, record)

    try:
        with open(runs_path) as f:
            raw = json.load(f)
    except OSError as e:
        raise ReportError(f'cannot read {runs_path} ({e.strerror}); pass --runs with the file '
                          f'that lists the runs (see report/runs.json).', 2) from None
    except ValueError as e:
        raise ReportError(f'{runs_path} is not valid JSON ({e}).', 2) from None
    if not (isinstance(raw, dict) and isinstance(raw.get('runs'), dict)
            and isinstance(raw.get('modifications', []), list)):
        raise ReportError(f'{runs_path}: expected an object with "runs": {{NAME: {{"path": '
                          f'...}}}} (and "modifications": [...], if any).', 2)
    runs = {name: folder(entry, f'runs.{name}', name) for name, entry in raw['runs'].items()}
    modifications = []
    for i, entry in enumerate(raw.get('modifications', [])):
        where = f'{runs_path}: modifications[{i}]'
        if not isinstance(entry, dict) or 'label' not in entry:
            raise ReportError(f'{where} needs a "label" and either "run" or "path".', 2)
        if 'run' in entry and entry['run'] not in runs:
            raise ReportError(f'{where}: "run": {entry["run"]!r} is not one of the runs '
                              f'({", ".join(runs)}).', 2)
        # A folder of its own is named after it: that is what --rerun NAME and messages use.
        name = os.path.basename(os.path.normpath(str(entry.get('path'))))
        run = runs[entry['run']] if 'run' in entry else folder(entry, f'modifications[{i}]', name)
        modifications.append((str(entry['label']), run))
    grid = raw.get('gridsearch')
    grid = None if grid is None else folder(grid, 'gridsearch', 'gridsearch', 'best.json')
    return Config(runs, grid, modifications)


def rerun(config, names):
    """Reruns the folders named (all when names is empty), one after another, from ROOT."""
    targets = {run.name: run for run in config.folders()}
    unknown = [name for name in names if name not in targets]
    if unknown:
        raise ReportError(f'--rerun: unknown run(s) {", ".join(unknown)}; the runs are '
                          f'{", ".join(targets)}.', 2)
    for name, run in targets.items():
        if names and name not in names:
            continue
        run.load()
        command = run.rerun_command()
        if not command:
            raise ReportError(f'--rerun: no command known for {name} (no {run.record} with a '
                              f'"command", no "command" in runs.json).')
        if os.path.basename(command[0]) in ('python', 'python3'):
            command = [sys.executable, *command[1:]]  # the interpreter running this script
        print(f'{PROG}: rerunning {name}: {shlex.join(command)}', flush=True)
        status = subprocess.run(command, cwd=ROOT).returncode
        if status != 0:
            raise ReportError(f'rerun of {name} failed (exit status {status}): '
                              f'{shlex.join(command)}')


# --------------------------------------------------------------------------- text

TEX_SPECIAL = str.maketrans({'\\': r'\textbackslash{}', '~': r'\textasciitilde{}',
                             '^': r'\textasciicircum{}', **{c: '\\' + c for c in '&%$#_{}'}})


def tex_escape(text):
    """Plain text -> LaTeX that prints it (outside \\texttt, TeX would set -- as an en dash)."""
    return str(text).translate(TEX_SPECIAL).replace('--', '-{}-').replace('--', '-{}-')


def tex_command(command):
    # Long paths and names would run into the margin: allow a line break after / and _.
    text = tex_escape(command).replace('/', r'/\allowbreak{}').replace('\\_', r'\_\allowbreak{}')
    return r'\texttt{' + text + '}'


def fmt_acc(value):
    return '--' if value is None else f'{value:.3f}'


def fmt_seconds(s):
    if s is None or not math.isfinite(s):
        return '--'
    return f'{s:.0f} s' if s < 100 else f'{s / 60:.1f} min' if s < 6000 else f'{s / 3600:.1f} h'


def last_step(m):
    return m['steps'][-1] if m['steps'] else 0


def accuracies(m):
    """(final, best) test accuracy of a run's metrics; None before its first evaluation."""
    acc, final, best = m['test_accuracy'], m.get('final_test_accuracy'), m.get('best_test_accuracy')
    return (acc[-1] if final is None and acc else final,
            max(acc) if best is None and acc else best)


def status_note(m):
    """'' for a completed run, else what happened, e.g. 'interrupted at step 2500 of 5000'."""
    status, max_steps = m.get('status', 'completed'), (m.get('flags') or {}).get('max_steps')
    of = f' of {max_steps}' if max_steps and status != 'diverged' else ''
    return '' if status == 'completed' else \
        f'{"still running" if status == "running" else status} at step {last_step(m)}{of}'


def flag_changes(flags, baseline):
    """Flags that differ from baseline's, as '--name value' (where the run and the data are
    says nothing about the model)."""
    return ' '.join(f'no --{k}' if v is None or v is False else f'--{k}' if v is True else
                    f'--{k} ' + (','.join(map(str, v)) if isinstance(v, list) else str(v))
                    for k, v in flags.items()
                    if k not in ('out_dir', 'data_dir', 'device', 'resume')
                    and baseline.get(k) != v) or '(none)'


def run_row(run):
    """[final, best, steps, time, device] of one run, as text."""
    if run.missing:
        return ['missing', '--', '--', '--', '--']
    m, note = run.data, status_note(run.data)
    return [*map(fmt_acc, accuracies(m)),
            f'{last_step(m)} ({note.split(" at ")[0]})' if note else str(last_step(m)),
            fmt_seconds(m.get('wall_seconds')), m.get('device', 'cpu')]


def summary(run):
    """A sentence or two on a run, or the grid, for the captions and the text."""
    if run is None:
        return 'No grid search is listed in runs.json.'
    if run.missing:  # the command that produces it is runs.json's
        how = run.rerun_command() and tex_command(shlex.join(run.rerun_command()))
        return (r'\textbf{Run missing} (' + tex_escape(run.problem) + ').'
                + (f' Produce it with {how}.' if how else ''))
    m = run.data
    if run.record == 'best.json':
        params = ', '.join(f'{k}={",".join(map(str, v)) if isinstance(v, list) else v}'
                           for k, v in m['best_params'].items())
        refit = '' if m.get('test_accuracy') is None else (
            f'; test accuracy after refitting on the whole training set {m["test_accuracy"]:.3f}')
        return (f'{m["cv"]}-fold cross-validation on {m["n_train"]} training images, '
                f'{m["max_epochs"]} epochs per fit; best setting {tex_command(params)}; its '
                f'mean CV accuracy {m["best_cv_score"]:.3f}{refit}.')
    final, best, _, time, device = run_row(run)
    time = f', {time} on {tex_escape(device)}' if m.get('wall_seconds') is not None else ''
    return (f'{last_step(m)} steps, final test accuracy {final} (best evaluation {best}){time}.'
            + (r' \textbf{Run ' + tex_escape(status_note(m)) + '.}' if status_note(m) else ''))


def tex_tabular(colspec, head, rows):
    """A booktabs tabular: head in LaTeX, rows in plain text."""
    lines = [f'\\begin{{tabular}}{{{colspec}}}', r'\toprule', ' & '.join(head) + r' \\',
             r'\midrule', *(' & '.join(map(tex_escape, row)) + r' \\' for row in rows),
             r'\bottomrule', r'\end{tabular}']
    return '\n'.join(lines) + '\n'


def write_tables(config, out):
    """tables/: runs.tex (each run's numbers as macros for the text: \\runval{NAME}{final}),
    results and modifications (.tex, and .md for README), commands.tex and gridsearch.tex."""
    def define(name, key, value):
        return f'\\expandafter\\def\\csname run:{name}:{key}\\endcsname{{{value}}}'

    macros = ['% Generated by report/make_report.py from the runs in runs.json; do not edit.']
    for run in config.runs.values():
        final, best = run_row(run)[:2] if run.data else [r'\textbf{missing}'] * 2
        values = dict(label=tex_escape(run.label), summary=summary(run),
                      command=tex_command(run.shown_command()), final=final, best=best,
                      steps=last_step(run.data) if run.data else '--')
        macros += [define(run.name, key, value) for key, value in values.items()]
    grid = (config.grid.data if config.grid else None) or {}
    macros += [define('gridsearch', 'summary', summary(config.grid)),
               define('gridsearch', 'final', fmt_acc(grid.get('test_accuracy'))),
               define('gridsearch', 'cv', fmt_acc(grid.get('best_cv_score')))]
    write(f'{out}/runs.tex', '\n'.join(macros) + '\n')

    runs = config.runs.values()
    write(f'{out}/results.tex', tex_tabular(
        'lrrrrl', ['model', 'final acc.', 'best acc.', 'steps', 'time', 'device'],
        [[run.label, *run_row(run)] for run in runs]))
    write(f'{out}/results.md', tabulate(
        [[run.label, f'`{run.shown_command()}`', *run_row(run)] for run in runs],
        ['model', 'command', 'final test accuracy', 'best test accuracy', 'steps', 'time',
         'device'], 'github', disable_numparse=True) + '\n')

    base = config.modifications[0][1] if config.modifications else None
    rows = [[label, '(baseline)' if i == 0 else '--' if run.missing or base.missing else
             flag_changes(run.data.get('flags') or {}, base.data.get('flags') or {}),
             *run_row(run)[:4]] for i, (label, run) in enumerate(config.modifications)]
    # Labels and flag lists can be long: both wrap within fixed widths (16 cm in all).
    write(f'{out}/modifications.tex', tex_tabular(
        r'@{}>{\raggedright\arraybackslash}p{3.3cm}'
        r'>{\raggedright\arraybackslash\footnotesize\ttfamily}p{5.0cm}rrrr@{}',
        ['modification', r'\normalfont flags changed', 'final acc.', 'best acc.', 'steps',
         'time'], rows))
    write(f'{out}/modifications.md', tabulate(
        [[label, f'`{changes}`', *rest] for label, changes, *rest in rows],
        ['modification', 'flags changed', 'final test accuracy', 'best test accuracy', 'steps',
         'time'], 'github', disable_numparse=True) + '\n')

    items = [r'\begin{description}\setlength\itemsep{2pt}']
    for run in config.folders():  # the commands --rerun runs
        command = run.rerun_command()
        items.append(f'\\item[{tex_escape("grid search" if run is config.grid else run.label)}] '
                     + (tex_command(shlex.join(command)) if command else r'\emph{unknown}'))
    write(f'{out}/commands.tex', '\n'.join([*items, r'\end{description}']) + '\n')

    # The grid's own results.tex is a whole table (caption and label included).
    table = ('\\begin{table}[tb]\n\\centering\n\\emph{Grid search missing.}\n\\caption{Grid '
             'search: missing.}\n\\label{tab:gridsearch}\n\\end{table}\n')
    if config.grid and not config.grid.missing:
        copy(config.grid.file('results.tex'), f'{out}/gridsearch_results.tex')
        table = '\\input{tables/gridsearch_results}\n'
    write(f'{out}/gridsearch.tex', table)


# --------------------------------------------------------------------------- files


def atomic(path, write_to):
    """Calls write_to(a temporary path), then renames: a reader never sees half a file."""
    tmp = f'{path}.tmp{os.path.splitext(path)[1]}'
    write_to(tmp)
    os.replace(tmp, path)


def write(path, text):
    atomic(path, lambda tmp: Path(tmp).write_text(text))


def copy(source, path):
    atomic(path, lambda tmp: shutil.copyfile(source, tmp))


def save_figure(fig, stem, exts=('png',)):
    import matplotlib.pyplot as plt

    for ext in exts:
        atomic(f'{stem}.{ext}', lambda tmp, ext=ext: fig.savefig(tmp, dpi=150,
                                                                 metadata=METADATA[ext]))
    plt.close(fig)


def placeholder(stem, text):
    """Says what is missing, where the report would show a run's figure."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6.3, 2.0))
    fig.text(0.5, 0.5, text, ha='center', va='center', color='0.35', fontsize=10,
             bbox=dict(boxstyle='round,pad=0.6', facecolor='0.95', edgecolor='0.7', ls='--'))
    save_figure(fig, stem)


def plot_comparison(runs, stem):
    """Test accuracy of every run against the epochs trained, and the final accuracies; drawn
    at the text width of report.tex (6.3 in), so that 8-9 pt here is 8-9 pt on paper."""
    import matplotlib.pyplot as plt

    with plt.rc_context({'font.size': 9, 'axes.titlesize': 9, 'axes.labelsize': 9,
                         'xtick.labelsize': 8, 'ytick.labelsize': 8, 'axes.spines.top': False,
                         'axes.spines.right': False}):
        fig, (ax_curve, ax_bar) = plt.subplots(1, 2, figsize=(6.3, 2.7),
                                               gridspec_kw=dict(width_ratios=[1.35, 1]))
        finals, bests = np.full(len(runs), np.nan), np.full(len(runs), np.nan)
        for i, run in enumerate(runs):
            if not run.missing:
                m, batch = run.data, (run.data.get('flags') or {}).get('batch_size')
                epochs = batch / 50000 if isinstance(batch, int) and batch else 1
                ax_curve.plot(np.asarray(m['eval_steps']) * epochs, m['test_accuracy'], 'o-',
                              ms=2.5, lw=1.2, color=f'C{i % 10}', label=run.label)
                finals[i], bests[i] = (np.nan if v is None else v for v in accuracies(m))
        ax_curve.set(xlabel='epochs (steps x batch size / 50,000)', ylabel='test accuracy',
                     title='Test accuracy during training')
        if any(not run.missing for run in runs):
            ax_curve.legend(frameon=False, loc='lower right', fontsize=7)
        y = np.arange(len(runs))[::-1]
        ax_bar.barh(y, np.nan_to_num(finals), color=[f'C{i % 10}' for i in range(len(runs))],
                    alpha=0.85)
        ax_bar.plot(bests, y, 'k|', ms=12, mew=1.5)  # the caption explains the tick
        for yi, final, best in zip(y, finals, bests):
            ax_bar.text(np.nanmax([final, best, 0.0]) + 0.015, yi,
                        'missing' if np.isnan(final) else f'{final:.3f}', va='center', fontsize=8)
        ax_bar.set_yticks(y, [run.label + ' (missing)' * run.missing for run in runs])
        finite = [v for v in [*finals, *bests] if np.isfinite(v)]
        ax_bar.set_xlim(0, min(1.0, (max(finite) if finite else 0.5) + 0.17))
        ax_bar.set(xlabel='test accuracy', title='Final test accuracy')
        ax_curve.grid(alpha=0.3)
        ax_bar.grid(alpha=0.3, axis='x')
        fig.tight_layout()
        save_figure(fig, stem, ('pdf', 'png'))


def write_figures(config, out):
    """figures/: curves_NAME.png of each run (train_utils.plot_curves draws them, as for the
    run folders), comparison.{pdf,png}, and gridsearch_heatmap.png (gridsearch.py's)."""
    import matplotlib
    matplotlib.use('Agg')
    for run in config.runs.values():
        if run.missing:
            placeholder(f'{out}/curves_{run.name}', f'run missing:\n{run.name}')
        else:
            plot_curves(run.data, f'{out}/curves_{run.name}.png')
    plot_comparison(list(config.runs.values()), f'{out}/comparison')
    if config.grid and not config.grid.missing:
        copy(config.grid.file('heatmap.png'), f'{out}/gridsearch_heatmap.png')
    else:
        placeholder(f'{out}/gridsearch_heatmap', 'grid search missing')


def build_pdf(out_dir):
    """Builds out_dir/report.pdf from out_dir/report.tex. Returns a message for the user;
    ReportError when LaTeX fails."""
    pdflatex = shutil.which('pdflatex')
    if not pdflatex:
        return (f'report.pdf not built: pdflatex is not installed (figures and tables are '
                f'written; to build the PDF: {TEX_INSTALL_HINT}).')
    # A fixed date (and report.tex sets no /ID): unchanged runs give a byte-identical PDF.
    env = {**os.environ, 'FORCE_SOURCE_DATE': '1',
           'SOURCE_DATE_EPOCH': os.environ.get('SOURCE_DATE_EPOCH', '0')}
    with tempfile.TemporaryDirectory(prefix='report-build-') as build:
        # The by-products go to a temporary folder: out_dir only ever gets a whole PDF.
        for _ in range(2):  # the second pass resolves references
            result = subprocess.run([pdflatex, '-interaction=nonstopmode', '-halt-on-error',
                                     f'-output-directory={build}', 'report.tex'], cwd=out_dir,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                log, saved = os.path.join(build, 'report.log'), os.path.join(out_dir, 'report.log')
                error = 'see the log'
                if os.path.exists(log):
                    shutil.copyfile(log, saved)
                    with open(log, errors='replace') as f:
                        error = next((line.strip() for line in f if line.startswith('!')), error)
                raise ReportError(f'LaTeX failed building report.pdf ({error}); the full log '
                                  f'is {saved}.')
        copy(os.path.join(build, 'report.pdf'), os.path.join(out_dir, 'report.pdf'))
    return f'built {os.path.join(out_dir, "report.pdf")}'


# --------------------------------------------------------------------------- main


def make_report(runs_path, out_dir, allow_missing=False, rerun_names=None, pdf=True):
    config = load_config(runs_path)
    if rerun_names is not None:
        rerun(config, rerun_names)
    for run in config.folders():
        run.load()
    missing = [run for run in config.folders() if run.missing]
    for run in missing:
        how = (f'; produce it with:\n    {shlex.join(run.rerun_command())}'
               if run.command else '; runs.json gives no command that produces it')
        kind = 'warning' if allow_missing else 'error'
        print(f'{PROG}: {kind}: run {run.name!r} is missing ({run.problem}){how}', file=sys.stderr)
    if missing and not allow_missing:
        raise ReportError(f'{len(missing)} run(s) missing; run the command(s) above (or '
                          f'python report/make_report.py --rerun), or pass --allow-missing to '
                          f'draw "run missing" placeholders instead.')
    for run in config.folders():
        if run.record == 'metrics.json' and not run.missing and status_note(run.data):
            print(f'{PROG}: warning: run {run.name!r} {status_note(run.data)}; the report '
                  f'shows it as far as it got.', file=sys.stderr)

    for folder in ('figures', 'tables'):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    write_figures(config, os.path.join(out_dir, 'figures'))
    write_tables(config, os.path.join(out_dir, 'tables'))
    print(f'{PROG}: figures in {out_dir}/figures, tables in {out_dir}/tables')
    if pdf:
        if os.path.abspath(out_dir) != REPORT_DIR:
            # report.tex inputs tables/ and figures/ relative to itself: build next to them.
            copy(os.path.join(REPORT_DIR, 'report.tex'), os.path.join(out_dir, 'report.tex'))
        print(f'{PROG}: {build_pdf(out_dir)}')


def main(argv=None):
    p = ArgumentParser(  # one-line errors, as the train scripts give
        prog='make_report.py', description='Regenerates the report\'s figures and tables from '
        'the runs listed in runs.json and builds report.pdf (when LaTeX is installed).')
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
    args = p.parse_args(argv)
    try:
        make_report(args.runs, os.path.abspath(args.out_dir), allow_missing=args.allow_missing,
                    rerun_names=args.rerun, pdf=not args.no_pdf)
    except ReportError as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return e.exit_code
    except OSError as e:  # e.g. an --out_dir that cannot be written, a rerun that cannot start
        print(f'{PROG}: error: {e.filename}: {e.strerror or e}.', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted; files already written are complete.', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
