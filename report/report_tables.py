"""The report's tables and the values report.tex quotes (tables/), written from the runs
make_report.py loaded; and write(), through which every file of the report is written."""

from quiet_start import RUN_SCRIPTS

import functools
import importlib
import math
import os
import shlex
from pathlib import Path

import numpy as np
from records import checked_latex, grid_scores, read_file
from tabulate import tabulate

from train_utils import atomic_write

# No dates or versions in the figures: unchanged runs give byte-identical files.
METADATA = {
    'pdf': {'CreationDate': None, 'Producer': None, 'Creator': None},
    'png': {'Software': None},
}

TEX_SPECIAL = str.maketrans(
    {
        '\\': r'\textbackslash{}',
        '~': r'{\ttfamily\char126}',  # (OT1's \textasciitilde and \textasciicircum are accents)
        '^': r'{\ttfamily\char94}',
        # ± and $ from the math fonts: the text fonts' (TS1) are bitmaps without cm-super,
        # which microtype cannot expand; < > | in the OT1 text font are ¡ ¿ and a dash
        **{c: r'\ensuremath{' + m + '}' for c, m in zip('±$<>|', [r'\pm', r'\$', '<', '>', '|'])},
        **{c: '\\' + c for c in '&%#_{}'},
    }
)


# runs.tex's macros: \val{NAME}{KEY} in report.tex reads \csname run:NAME:KEY\endcsname.
DEFINE = '\\expandafter\\def\\csname run:{}:{}\\endcsname{{{}}}'


TEST_IMAGES = 10_000  # CIFAR-10's test set


def tex(text):
    """Plain text -> LaTeX (-- kept apart, not an en dash)."""
    return str(text).translate(TEX_SPECIAL).replace('--', '-{}-').replace('--', '-{}-')


def typewriter(latex):
    """tex()'s output for \\texttt, each _ the font's own character: \\_ draws a rule, which a
    reader copying a command out of the PDF loses."""
    return latex.replace('\\_', r'\char95{}')


def command_tex(argv):
    """A command in typewriter type that breaks only between its flags: each flag stays on
    one line with its value."""
    groups = []
    for arg in argv:
        if arg.startswith('-') or not groups:
            groups.append([])
        groups[-1].append(shlex.quote(arg))
    return ' '.join(r'\mbox{\texttt{' + typewriter(tex(' '.join(g))) + '}}' for g in groups)


def status_note(m):
    """'' for a completed run, else what happened, e.g. 'interrupted at step 2500 of 5000'."""
    status, max_steps = m['status'], m['flags'].get('max_steps')
    of = f' of {max_steps}' if max_steps and status != 'diverged' else ''
    return '' if status == 'completed' else f'{status} at step {(m["steps"] or [0])[-1]}{of}'


def run_row(run):
    """[final, best, steps, time, device] of one run, as text. best: best.pt's test accuracy where
    a validation split chose it, else '--' (the best of test evaluations was chosen on the test)."""
    if run.missing:
        return ['missing', '--', '--', '--', '--']
    m, s, status = run.data, run.data['wall_seconds'], run.data['status']
    steps = str((m['steps'] or [0])[-1]) + ('' if status == 'completed' else f' ({status})')
    time = run.time or (
        '--'
        if s is None or not np.isfinite(s)
        else f'{s:.0f} s'
        if s < 100
        else f'{s / 60:.1f} min'
        if s < 6000
        else f'{s / 3600:.1f} h'
    )
    return [
        *(
            '--' if v is None else f'{v:.3f}'
            for v in (m['final_test_accuracy'], m.get('best_checkpoint_test_accuracy'))
        ),
        steps,
        time,
        m.get('device') or 'cpu',
    ]


def write_table(path, colspec, head, rows):
    """A booktabs tabular to path: head in LaTeX, rows plain text (escaped here)."""
    lines = [f'\\begin{{tabular}}{{{colspec}}}', r'\toprule', ' & '.join(head) + r' \\']
    lines += [r'\midrule', *(' & '.join(map(tex, r)) + r' \\' for r in rows)]
    write(path, '\n'.join([*lines, r'\bottomrule', r'\end{tabular}']) + '\n')


def figure_label(text, longest=48):
    """text as a figure shows it: cut to longest characters (a label runs.json allows, up to
    200, would push a figure's panels off its page), the tables give it whole; and not
    starting with _, which matplotlib reads as "not in the legend"."""
    text = text if len(text) <= longest else text[: longest - 3] + '...'
    return ' ' + text if text.startswith('_') else text  # (matplotlib hides a legend's _label)


def markdown(rows, head):
    """A GitHub Markdown table of rows of text, each | in a cell escaped (else it starts a
    column)."""
    cells = [[str(cell).replace('|', '\\|') for cell in row] for row in rows]
    return tabulate(cells, head, 'github', disable_numparse=True) + '\n'


def spread(values):
    """'mean ± sd' of values (the sample standard deviation, n - 1), or '--' with fewer than
    two; three decimals, or as many as show the sd's first digit (up to six)."""
    if len(values) < 2:
        return '--'
    sd = np.std(values, ddof=1)
    digits = min(6, max(3, -math.floor(math.log10(sd)))) if sd > 0 else 3
    return f'{np.mean(values):.{digits}f} ± {sd:.{digits}f}'


def completed(runs):
    """The records of the runs that are present and completed."""
    return [r.data for r in runs if not r.missing and r.data['status'] == 'completed']


def group_numbers(runs):
    """{column: [one value a run]} of a group's runs that completed: the training loss over
    the last tenth of the steps, the final validation loss and accuracy, the test accuracy."""
    present = completed(runs)
    return {
        'training loss': [tail_loss(m) for m in present if m['train_loss']],
        'validation loss': [m['validation_loss'][-1] for m in present if m.get('validation_loss')],
        'validation acc.': [m['final_validation_accuracy'] for m in present],
        'test acc., once': [m['final_test_accuracy'] for m in present],
    }


def with_standard_error(run):
    """A run's final validation and test accuracy, each as 'p ± SE' with its binomial standard
    error sqrt(p (1 - p) / n) on the n images it was measured on; '--' where there is none."""
    m, cells = run.data or {}, []
    sizes = ((m.get('flags') or {}).get('validation_size'), TEST_IMAGES)
    for key, n in zip(('final_validation_accuracy', 'final_test_accuracy'), sizes):
        p = m.get(key)
        ok = isinstance(p, (int, float)) and isinstance(n, int) and n > 0
        cells.append(f'{p:.3f} ± {math.sqrt(p * (1 - p) / n):.3f}' if ok else '--')
    return cells


def time_v(run):
    """(seconds from process start to exit, peak memory in GB) that `/usr/bin/time -v` wrote
    to the run's time.txt, or (None, None) when the run has none or it holds no such numbers."""
    try:
        lines = read_file(run.file('time.txt')).decode(errors='replace').splitlines()
        fields = dict(line.strip().rsplit(': ', 1) for line in lines if ': ' in line)
        *hours, minutes, seconds = fields['Elapsed (wall clock) time (h:mm:ss or m:ss)'].split(':')
        elapsed = 3600 * int(hours[0] if hours else 0) + 60 * int(minutes) + float(seconds)
        memory = int(fields['Maximum resident set size (kbytes)']) / 1e6
    except (OSError, KeyError, ValueError, OverflowError):
        return None, None
    # nan, inf, or more than a hundred days or a petabyte: not a run's, a damaged file
    return (elapsed, memory) if 0 <= elapsed < 1e7 and 0 <= memory < 1e6 else (None, None)


def numpy_convnet_ratios(config):
    """(time, peak memory) of the NumPy ConvNet's run over its PyTorch twin's, both from their
    time.txt, as text; None unless runs.json's numpy_convnet names both and both have one."""
    pair = [time_v(r) for r in config.numpy_convnet if not r.missing]
    if len(pair) != 2 or None in (*pair[0], *pair[1]):
        return None
    (t_ours, gb_ours), (t_theirs, gb_theirs) = pair
    if min(t_ours, gb_ours, t_theirs, gb_theirs) <= 0:  # a time.txt that is not a run's
        return None
    return f'{t_ours / t_theirs:.2f}', f'{gb_ours / gb_theirs:.2f}'


def tail_loss(m):
    """A run's mean training loss over the last tenth of its steps."""
    train = m['train_loss']
    return float(np.mean(train[-max(1, len(train) // 10) :]))


def losses(m):
    """{name: text} of a run's losses: the training loss at the first step and over the last
    tenth of the steps, the evaluation loss at the first evaluation, at its lowest and at the
    end."""
    train, evals = m['train_loss'], m[f'{m.get("eval_split", "test")}_loss']
    return {
        'firstloss': f'{train[0]:.1f}' if train else '--',
        'trainloss': f'{tail_loss(m):.2f}' if train else '--',
        'firstevalloss': f'{evals[0]:.2f}' if evals else '--',
        'minevalloss': f'{min(evals):.2f}' if evals else '--',
        'evalloss': f'{evals[-1]:.2f}' if evals else '--',
    }


def run_facts(m):
    """{name: text} of a run's final validation accuracy and its binomial standard error in
    points, sqrt(p (1 - p) / n) for n validation images, and its wall time in minutes."""
    facts = {'minutes': f'{m["wall_seconds"] / 60:.1f}'} if m.get('wall_seconds') else {}
    p, n = m.get('final_validation_accuracy'), (m.get('flags') or {}).get('validation_size')
    if isinstance(p, (int, float)) and isinstance(n, int) and n > 0:
        facts.update(valacc=f'{p:.3f}', valse=f'{100 * math.sqrt(p * (1 - p) / n):.2f}')
    return facts


def summary(run):
    """A sentence or two on a run, or the grid, for the captions and the text."""
    m = run.data
    if run.missing:  # Appendix A gives the command that produces it
        return r'\textbf{Run missing} (' + tex(run.problem) + ').'
    if run.record == 'best.json':
        params = ', '.join(f'{k.replace("_", " ")} {v}' for k, v in m['best_params'].items())
        refit = ''
        if m['test_accuracy'] is not None:
            refit = '; test accuracy after refitting on the whole training set '
            refit += f'{m["test_accuracy"]:.3f}'
        return (
            f'{m["cv"]}-fold cross-validation on {m["n_train"]} training images, '
            f'{m["max_epochs"]} epochs per fit; best setting: {tex(params)}; its '
            f'mean CV accuracy {m["best_cv_score"]:.3f}{refit}.'
        )
    final, best, _, time, device = run_row(run)
    time = f', {tex(time)} on {tex(device)}' if m['wall_seconds'] is not None else ''
    note = status_note(m) and r' \textbf{Run ' + tex(status_note(m)) + '.}'
    best = '' if best == '--' else f' (best.pt, chosen on validation: {best})'
    return f'{(m["steps"] or [0])[-1]} steps, final test accuracy {final}{best}{time}.{note}'


@functools.cache
def script_defaults(script):
    """The flags one of this project's train scripts takes when given none (what a run recorded
    before a flag existed ran with); {} for any other name."""
    if script not in RUN_SCRIPTS or script == 'gridsearch.py':
        return {}
    return vars(importlib.import_module(script.removesuffix('.py')).build_parser().parse_args([]))


def write_tables(config, out):
    """tables/: runs.tex (the values report.tex quotes), NAME.tex a table each (results and
    modifications also as .md, for the README), commands.tex (Appendix A), gridsearch.tex."""

    def table(name, colspec, head, rows):
        write_table(f'{out}/{name}.tex', colspec, head, rows)

    def flag_changes(run, above):  # '--name value' of each model flag that differs from above's
        flags, defaults = run.data['flags'], script_defaults(run.data.get('script'))
        base = {**defaults, **above.data['flags']}  # (a flag newer than above's run: its default)
        return (
            ' '.join(
                f'no --{k}'
                if v is None or v is False
                else f'--{k}'
                if v is True
                else f'--{k} ' + (','.join(map(str, v)) if isinstance(v, list) else str(v))
                for k, v in flags.items()
                if base.get(k) != v
                and k not in ('out_dir', 'data_dir', 'device', 'resume', 'overwrite')
            )
            or '(none)'
        )

    os.makedirs(out, exist_ok=True)
    define = DEFINE.format
    values = []  # every folder's, named as in runs.json or by its path under report/runs/
    for r in config.folders[:-1]:
        values += [
            (r.name, 'final', r'\textbf{missing}' if r.missing else run_row(r)[0]),
            *((r.name, k, v) for k, v in ({} if r.missing else losses(r.data)).items()),
            *((r.name, k, v) for k, v in ({} if r.missing else run_facts(r.data)).items()),
        ]
    if not config.grid.missing:  # the best setting's CV score, its spread, the refit's test
        m = config.grid.data
        values += [
            ('gridsearch', k, '--' if v is None else f'{v:.3f}')
            for k, v in (
                ('cv', m['best_cv_score']),
                ('cvstd', m.get('best_cv_std')),
                ('refit', m['test_accuracy']),
            )
        ]
    if not config.grid.missing and (scores := grid_scores(config.grid.file('cv_results.csv'))):
        chance = sum(x < 0.11 for x in scores)  # settings at chance (0.10)
        values.append(('gridsearch', 'chance', f'{chance} of {len(scores)}'))
        if len(scores) > 1:  # the runner-up, to say whether the best is resolved
            values.append(('gridsearch', 'second', f'{sorted(scores)[-2]:.3f}'))
    if ratios := numpy_convnet_ratios(config):
        values += [
            ('numpy_convnet', 'timeratio', ratios[0]),
            ('numpy_convnet', 'memoryratio', ratios[1]),
        ]
    write(
        f'{out}/runs.tex',
        '\n'.join(
            [
                '% Generated by report/make_report.py from the runs in runs.json; do not edit.',
                *(define(*v) for v in values),
                *(
                    define(r.name, 'summary', summary(r))
                    for r in [*config.runs.values(), config.grid]
                ),
            ]
        )
        + '\n',
    )

    runs, head = config.runs.values(), ['final test accuracy', 'best.pt test accuracy', 'steps']
    short = ['final acc.', 'best.pt', 'steps', 'time']  # the LaTeX tables' narrower head
    table('results', 'lrrrrl', ['model', *short, 'device'], [[r.label, *run_row(r)] for r in runs])
    write(
        f'{out}/results.md',
        markdown(
            [[run.label, f'`{shlex.join(run.command)}`', *run_row(run)] for run in runs],
            ['model', 'command', *head, 'time', 'device'],
        ),
    )

    rows = []  # each row's flags against the row above's: the change it makes
    for i, (label, run, _) in enumerate(config.modifications):
        above = config.modifications[i - 1][1] if i else None
        changed = '(baseline)' if i == 0 else '--'
        if i and not (run.missing or above.missing):
            changed = flag_changes(run, above)
        rows.append([label, changed, *run_row(run)[:3:2]])
    # Labels and flag lists can be long: both wrap within fixed widths (16 cm in all).
    table(
        'modifications',
        r'@{}>{\raggedright\arraybackslash}p{3.3cm}'
        r'>{\raggedright\arraybackslash\footnotesize\ttfamily}p{6.2cm}rr@{}',
        ['modification', r'\normalfont flags changed', *short[:3:2]],
        rows,
    )
    write(
        f'{out}/modifications.md',
        markdown(
            [[label, f'`{changes}`', *rest] for label, changes, *rest in rows],
            ['modification', 'flags changed', *head[::2]],
        ),
    )

    # The ladder again, in NumPy (train_mlp_numpy.py with the same flags), beside PyTorch's.
    table(
        'numpy_ladder',
        r'@{}>{\raggedright\arraybackslash}p{6.2cm}rrrr@{}',
        ['modification', 'PyTorch', 'NumPy', 'steps', 'NumPy time'],
        [
            [label, run_row(run)[0], *(run_row(twins['numpy'])[i] for i in (0, 2, 3))]
            for label, run, twins in config.modifications
            if 'numpy' in twins
        ],
    )
    # And chosen honestly: the same rows trained on 45,000 images, judged on the other 5,000.
    table(
        'validation_ladder',
        r'@{}>{\raggedright\arraybackslash}p{4.1cm}rrrrr@{}',
        [
            'modification',
            'validation',
            'test, once',
            r'\shortstack[r]{validation\\seeds 1--3}',
            r'\shortstack[r]{test, once\\seeds 1--3}',
            r'\shortstack[r]{test, chosen\\on the test set}',
        ],
        [
            [
                twin.label.removeprefix('validation: '),
                *(
                    'missing' if m is None else '--' if m.get(k) is None else f'{m[k]:.3f}'
                    for k in ('final_validation_accuracy', 'final_test_accuracy')
                ),
                *(
                    spread(group_numbers(twins.get('validation_seeds', []))[k])
                    for k in ('validation acc.', 'test acc., once')
                ),
                run_row(run)[0],
            ]
            for _, run, twins in config.modifications
            if 'validation' in twins
            for twin in [twins['validation']]
            for m in [twin.data]
        ],
    )

    # Table 1's network from the course's defaults to --preset fast, one row a run.
    table(
        'fast',
        '@{}lrrrr@{}',
        ['run', *short],
        [[run.label, *run_row(run)[:4]] for run in config.convnet],
    )
    # And one change a row, each run judged on its validation split and tested once.
    table(
        'changes',
        r'@{}>{\raggedright\arraybackslash}p{5.2cm}rrrr@{}',
        ['change', 'validation ± SE', 'test, once ± SE', 'steps', 'time'],
        [
            [
                label,
                *with_standard_error(run),
                *(run_row(run)[i] for i in (2, 3)),
            ]
            for label, run in config.changes
        ],
    )

    # Table 1's network by hand in NumPy beside PyTorch: accuracy, time and memory, and ratios.
    rows = []
    for r in config.numpy_convnet:
        elapsed, gb = time_v(r)
        rows.append(
            [
                r.label,
                run_row(r)[0],
                '--' if elapsed is None else f'{elapsed / 60:.1f} min',
                '--' if gb is None else f'{gb:.2f} GB',
            ]
        )
    if ratios := numpy_convnet_ratios(config):
        rows.append(['ratio, NumPy / PyTorch', '', *ratios])
    table('numpy_convnet', '@{}lrrr@{}', ['run', 'final acc.', 'time', 'peak memory'], rows)

    # The spread over seeds: mean and sample standard deviation of the final test accuracy.
    rows = []
    for label, group in config.seeds:
        values = [
            run.data['final_test_accuracy']
            for run in group
            if not run.missing and math.isfinite(run.data['final_test_accuracy'] or math.nan)
        ]
        rows.append(
            [
                label,
                f'{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}'
                if len(values) > 1
                else 'missing',
                ', '.join(f'{v:.3f}' for v in values),
            ]
        )
    table('seeds', '@{}lrl@{}', ['runs', 'final test accuracy', 'each seed'], rows)

    write(
        f'{out}/commands.tex',
        '\n'.join(
            [  # the commands --rerun runs
                r'\begin{description}\setlength\itemsep{2pt}',
                *(
                    f'\\item[{{{tex("grid search" if run is config.grid else run.label)}}}] '
                    + command_tex(run.rerun_command() or ['unknown'])
                    for run in config.folders
                    if run.label != run.name or run is config.grid  # the seeds: below
                ),
                r'\end{description}',
            ]
        )
        + '\n',
    )
    # gridsearch.py's results.tex is a whole table, caption and label included.
    write(
        f'{out}/gridsearch.tex',
        checked_latex(config.grid.file('results.tex'))
        if not config.grid.missing
        else '\\begin{table}[tb]\\centering\\emph{Grid search '
        'missing.}\\caption{Grid search: missing.}\\label{tab:gridsearch}\\end{table}\n',
    )


def write(path, content):
    """Writes text, a copy of a Path or a figure through train_utils.atomic_write: never half a
    file, and no temporary file left behind."""
    if isinstance(content, str):
        atomic_write(path, lambda f: f.write(content.encode()))
    elif isinstance(content, Path):
        atomic_write(path, lambda f: f.write(content.read_bytes()))
    else:
        kind = path[-3:]
        atomic_write(
            path, lambda f: content.savefig(f, format=kind, dpi=150, metadata=METADATA[kind])
        )
