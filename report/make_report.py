"""Regenerates the report's figures and tables from the runs report/runs.json names (its "_help"
describes the format), then builds report.pdf when pdflatex is installed.

Unchanged runs give byte-identical files. A run's curves are train_utils.plot_curves's, the
grid's table and heatmap gridsearch.py's; only the comparison of all runs is drawn here. Exit
status: 0 done (also without LaTeX), 1 a run is missing or a rerun or LaTeX failed, 2 runs.json
or a flag is wrong."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPORT_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(REPORT_DIR)
LATEX_SECONDS = 300  # a pass: it takes seconds, but a crafted table can keep TeX busy for ever
sys.path.insert(0, ROOT)  # run as a script, only report/ is on sys.path

from quiet_start import stop_signals  # noqa: E402 (first: see its docstring)

import numpy as np  # noqa: E402
from records import ReportError  # noqa: E402
from report_experiments import (  # noqa: E402
    dead_units_figure,
    read_benchmark,
    read_dead_units,
    write_benchmark_table,
    write_experiment_figures,
    write_experiment_tables,
)
from report_tables import figure_label, run_row, status_note, write, write_tables  # noqa: E402
from rerun import rerun, retarget, safe_command  # noqa: E402, F401 (retarget, safe_command: tests)
from runs_json import Run, check_groups, load_config  # noqa: E402, F401 (Run: for tests)

from command_line import ArgumentParser  # noqa: E402
from train_utils import plot_curves  # noqa: E402

# The comparison is drawn at report.tex's text width (6.3 in): 8-9 pt here is 8-9 pt on paper.
STYLE = {
    'font.size': 9,
    'axes.titlesize': 9,
    'xtick.labelsize': 8,
    'ytick.labelsize': 8,
    'axes.spines.top': False,
    'axes.spines.right': False,
}


def write_figures(config, dead_units, out):
    """figures/: curves_NAME.png (plot_curves's), gridsearch_heatmap.png, comparison.{pdf,png},
    dead_units.png (of dead_units, report/dead_units.py's record) and the experiments'."""
    os.makedirs(out, exist_ok=True)
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    matplotlib.rcParams['text.parse_math'] = False  # labels are runs.json's text, never TeX

    def placeholder(path, text):  # says what is missing, where the report shows a figure
        fig = plt.figure(figsize=(6.3, 2.0))
        fig.text(
            0.5,
            0.5,
            text,
            ha='center',
            va='center',
            color='0.35',
            fontsize=10,
            bbox=dict(boxstyle='round,pad=0.6', facecolor='0.95', edgecolor='0.7', ls='--'),
        )
        write(path, fig)

    for run in config.runs.values():
        if run.missing:
            placeholder(f'{out}/curves_{run.name}.png', f'run missing:\n{run.name}')
        else:
            plot_curves(run.data, f'{out}/curves_{run.name}.png')
    if config.grid.missing:
        placeholder(f'{out}/gridsearch_heatmap.png', 'grid search missing')
    else:
        write(f'{out}/gridsearch_heatmap.png', Path(config.grid.file('heatmap.png')))
    # The comparison: each run's accuracy while training, and at the end.
    runs, ys = list(config.runs.values()), range(len(config.runs) - 1, -1, -1)
    with plt.rc_context(STYLE):
        fig, (ax_curve, ax_bar) = plt.subplots(1, 2, figsize=(6.3, 3.4), width_ratios=[1.35, 1])
        for i, (run, y) in enumerate(zip(runs, ys)):
            if run.missing or run.data['final_test_accuracy'] is None:
                continue  # its label says it is missing; a run not yet evaluated has no points
            m, c = run.data, f'C{i % 10}'
            trained_on = 50000 - (m['flags'].get('validation_size') or 0)  # images an epoch
            epochs = np.asarray(m['eval_steps']) * (m['flags'].get('batch_size') or 1) / trained_on
            split = m.get('eval_split', 'test')  # validation: dashed, tested once at the end
            ax_curve.plot(
                epochs,
                m[f'{split}_accuracy'],
                'o--' if split != 'test' else 'o-',
                ms=2.5,
                lw=1.2,
                c=c,
                label=figure_label(run.label),
            )
            final, best = m['final_test_accuracy'], m.get('best_checkpoint_test_accuracy')
            ax_bar.barh(y, final, color=c, alpha=0.85)
            if best is not None:  # best.pt, chosen on validation; the caption explains it
                ax_bar.plot(best, y, 'D', ms=4.5, mfc='k', mec='w', mew=0.8, zorder=3)
            ax_bar.text(max(final, best or 0) + 0.045, y, f'{final:.3f}', va='center', fontsize=8)
        ticks = [0.2, 0.5, 1, 2, 5, 10, 20, 50]  # (log: the MLPs' few epochs beside the
        ax_curve.set(  # ConvNets' many; plain labels, since labels here are never mathtext)
            xscale='log',
            xticks=ticks,
            xticklabels=[f'{t:g}' for t in ticks],
            xlabel='epochs (images seen / images trained on)',
            ylabel='accuracy (dashed: validation)',
            title='Accuracy during training',
        )
        if ax_curve.lines:  # below the panels: inside, it would cover the MLPs' curves
            fig.legend(loc='lower center', ncol=3, frameon=False, fontsize=7)
        ax_bar.set_yticks(ys, [figure_label(r.label) + ' (missing)' * r.missing for r in runs])
        ax_bar.set(xlim=(0, 1), xlabel='test accuracy', title='Final test accuracy')
        ax_curve.grid(alpha=0.3)
        ax_bar.grid(alpha=0.3, axis='x')
        fig.tight_layout(rect=(0, 0.17, 1, 1))
    for ext in ('pdf', 'png'):
        write(f'{out}/comparison.{ext}', fig)
    plt.close('all')
    # drawn even without the pair in runs.json (empty axes): report.tex includes it
    write(f'{out}/numpy_convnet.png', numpy_convnet_figure(config.numpy_convnet, plt))
    plt.close('all')
    if config.dead_units and not dead_units:
        placeholder(
            f'{out}/dead_units.png', f'missing:\n{os.path.relpath(config.dead_units, ROOT)}'
        )
    elif dead_units:
        with plt.rc_context(STYLE):
            write(f'{out}/dead_units.png', dead_units_figure(dead_units, plt))
        plt.close('all')
    write_experiment_figures(config, out, plt, STYLE)


def numpy_convnet_figure(runs, plt):
    """The NumPy ConvNet's run beside its PyTorch twin: smoothed training loss and test loss,
    test accuracy, per step; the legend gives each run's wall time."""
    with plt.rc_context(STYLE):
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(6.3, 2.8))
        for i, run in enumerate(runs):
            if run.missing or not run.data['train_loss']:
                continue  # (a run stopped before its first step has no curve)
            m, c = run.data, f'C{i}'
            label = f'{figure_label(run.label)} ({run_row(run)[3]})'
            loss, window = np.asarray(m['train_loss']), max(1, len(m['train_loss']) // 20)
            ax_loss.plot(
                m['steps'][window - 1 :],
                np.convolve(loss, np.ones(window) / window, 'valid'),
                c=c,
                lw=1,
                label=label,
            )
            split = m.get('eval_split', 'test')  # a run with a validation split evaluates on it
            ax_loss.plot(m['eval_steps'], m[f'{split}_loss'], 'o--', c=c, ms=2.5, lw=0.8)
            ax_acc.plot(m['eval_steps'], m[f'{split}_accuracy'], 'o-', c=c, ms=2.5, lw=1.2)
        splits = {r.data.get('eval_split', 'test') for r in runs if not r.missing}
        split = splits.pop() if len(splits) == 1 else 'evaluation'  # (runs evaluated alike)
        ax_loss.set(
            xlabel='step',
            ylabel='cross-entropy loss',
            title=f'Training loss (smoothed), {split} loss (dashed)',
        )
        ax_acc.set(xlabel='step', ylabel=f'{split} accuracy', title=f'Accuracy on the {split} set')
        if ax_loss.lines:  # below the panels: a long label inside would squeeze them
            fig.legend(loc='lower center', ncol=2, frameon=False, fontsize=7)
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def run_pdflatex(build, out_dir, env):
    """One pdflatex pass over out_dir/report.tex into the folder build, killed after
    LATEX_SECONDS (subprocess.TimeoutExpired)."""
    return subprocess.run(
        [
            'pdflatex',
            '-interaction=nonstopmode',
            '-halt-on-error',
            f'-output-directory={build}',
            'report.tex',
        ],
        cwd=out_dir,
        env=env,
        capture_output=True,
        text=True,
        errors='replace',
        timeout=LATEX_SECONDS,
    )


def build_pdf(out_dir):
    """Builds out_dir/report.pdf from its report.tex: what to tell the user, or ReportError."""
    if not shutil.which('pdflatex'):
        return (
            'report.pdf not built: pdflatex is not installed (to build it: apt-get install '
            'texlive-latex-base texlive-latex-recommended texlive-fonts-recommended).'
        )
    # A fixed date (and report.tex sets no /ID): unchanged runs give a byte-identical PDF.
    env = {'SOURCE_DATE_EPOCH': '0', **os.environ, 'FORCE_SOURCE_DATE': '1'}
    with tempfile.TemporaryDirectory() as build:  # by-products: out_dir gets a whole PDF only
        for _ in range(2):  # the second pass resolves references
            try:
                result = run_pdflatex(build, out_dir, env)
            except subprocess.TimeoutExpired:  # (subprocess.run has killed it)
                raise ReportError(
                    f'LaTeX did not finish a pass over report.tex within {LATEX_SECONDS} s '
                    '(one takes seconds); no report.pdf was written. Check the tables it inputs.'
                ) from None
            if result.returncode != 0:
                log = os.path.join(out_dir, 'report.log')
                shutil.copyfile(os.path.join(build, 'report.log'), log)
                error = next(
                    (line.strip() for line in result.stdout.splitlines() if line.startswith('!')),
                    'see the log',
                )
                raise ReportError(
                    f'LaTeX failed building report.pdf ({error}); the full log is {log}.'
                )
        write(os.path.join(out_dir, 'report.pdf'), Path(build, 'report.pdf'))
    return f'built {os.path.join(out_dir, "report.pdf")}'


def main(argv=None):
    p = ArgumentParser(prog='make_report.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', default=os.path.join(REPORT_DIR, 'runs.json'), help='the runs to read')
    p.add_argument(
        '--out_dir', default=REPORT_DIR, help='where figures/, tables/ and report.pdf go'
    )
    p.add_argument(
        '--rerun',
        nargs='*',
        metavar='NAME',
        help='first rerun every run (or those named) with its recorded command',
    )
    p.add_argument(
        '--allow-missing',
        action='store_true',
        help='draw "run missing" placeholders for missing runs instead of failing',
    )
    p.add_argument('--no-pdf', action='store_true', help='figures and tables only, no PDF')
    args = p.parse_args(argv)
    stopped = []  # the signal that stopped it, even if a library swallowed its KeyboardInterrupt
    kept = 'the files already written are complete'

    def stop(signum, frame):
        stopped.append(signum)
        raise KeyboardInterrupt(signum)

    with stop_signals(stop):
        hook = sys.unraisablehook  # a stop raised inside a weakref callback is remembered above
        sys.unraisablehook = lambda u: (
            None if isinstance(u.exc_value, KeyboardInterrupt) else hook(u)
        )
        try:
            make(args, stopped)
        except ReportError as e:
            print(f'make_report: error: {e}', file=sys.stderr)
            return e.exit_code
        except OSError as e:  # e.g. an --out_dir that cannot be written, a rerun that cannot start
            print(
                f'make_report: error: {e.filename or "a file"}: {e.strerror or e}.', file=sys.stderr
            )
            return 1
        except KeyboardInterrupt as e:
            kept = getattr(e, 'kept', kept)  # below
        finally:
            sys.unraisablehook = hook
    if stopped:
        print(
            f'make_report: stopped by {signal.Signals(stopped[0]).name}; {kept}.',
            file=sys.stderr,
        )
        return 128 + stopped[0]
    return 0


def make(args, stopped):
    """The report of main(): checks, reruns, figures, tables, then the PDF. Raises ReportError
    for what a user can cause, KeyboardInterrupt between steps once stopped holds a signal."""
    out_dir = os.path.abspath(args.out_dir)
    if not args.out_dir.strip():
        raise ReportError('--out_dir must name a folder.', 2)
    config = load_config(args.runs)
    if inside := [r for r in config.folders if is_within(out_dir, os.path.join(ROOT, r.path))]:
        raise ReportError(
            f'--out_dir {args.out_dir} is inside the run folder {inside[0].path}; '
            'the report goes elsewhere.',
            2,
        )
    written = [os.path.join(out_dir, name) for name in ('figures', 'tables')]
    if over := [
        r for r in config.folders if any(is_within(os.path.join(ROOT, r.path), w) for w in written)
    ]:
        raise ReportError(
            f'--out_dir {args.out_dir} would write figures/ and tables/ over the run folder '
            f'{over[0].path}; the report goes elsewhere.',
            2,
        )
    if args.rerun is not None:
        rerun(config, args.rerun)
    for run in config.folders:
        run.load()
    check_groups(config)
    for run in config.folders:
        if run.missing:
            how = run.command and f'; produce it with:\n    {shlex.join(run.rerun_command())}'
            what = 'is missing' if run.problem.endswith(' not found') else 'cannot be used'
            print(
                f'make_report: {"warning" if args.allow_missing else "error"}: run '
                f'{run.name!r} {what} ({run.problem}){how or ""}',
                file=sys.stderr,
            )
        elif run.record == 'metrics.json' and status_note(run.data):
            print(
                f'make_report: warning: run {run.name!r} {status_note(run.data)}; the report '
                f'shows it as far as it got.',
                file=sys.stderr,
            )
    missing = sum(run.missing for run in config.folders)
    if missing and not args.allow_missing:
        raise ReportError(
            f'{missing} run(s) missing or unusable; run the command(s) above (or pass '
            f'--rerun), or --allow-missing to draw placeholders instead.'
        )
    records = {}  # report/dead_units.py's and benchmark.py's, None when missing
    for key, read in (('dead_units', read_dead_units), ('benchmark', read_benchmark)):
        try:
            records[key] = getattr(config, key) and read(getattr(config, key))
        except ReportError as e:
            if not args.allow_missing:
                raise
            print(f'make_report: warning: {e}', file=sys.stderr)
            records[key] = None
    ours, theirs = Path(REPORT_DIR, 'report.tex'), Path(out_dir, 'report.tex')
    if not args.no_pdf and theirs.exists() and theirs.read_bytes() != ours.read_bytes():
        raise ReportError(
            f"--out_dir {args.out_dir} holds a report.tex that is not this report's; the "
            'report goes elsewhere.',
            2,
        )
    tables = os.path.join(out_dir, 'tables')
    made = not os.path.lexists(out_dir)  # then a report stopped or failed takes it away again
    try:
        for step in (  # (a stop a library swallowed ends it between steps)
            lambda: write_figures(config, records['dead_units'], os.path.join(out_dir, 'figures')),
            lambda: write_tables(config, tables),
            lambda: write_experiment_tables(config, tables),
            lambda: write_benchmark_table(records['benchmark'], tables),
        ):
            if stopped:
                raise KeyboardInterrupt
            step()
    except BaseException as e:
        if made:
            shutil.rmtree(out_dir, ignore_errors=True)
            e.kept = f'{out_dir}, which it had made, was removed'
        raise
    print(f'make_report: figures in {out_dir}/figures, tables in {tables}')
    if not args.no_pdf:
        if out_dir != REPORT_DIR:  # report.tex inputs tables/ and figures/ next to it
            write(str(theirs), ours)
        print(f'make_report: {build_pdf(out_dir)}')


def is_within(path, folder):
    """Whether path is folder or inside it."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


if __name__ == '__main__':
    sys.exit(main())
