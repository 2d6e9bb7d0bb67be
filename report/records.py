"""What the report reads from a run folder's record (train_utils.Run's metrics.json, or the
best.json gridsearch.py writes), and the check that a loaded record holds it: a folder that
fails it is reported as a problem in one line, never drawn."""

import csv
import io
import math
import os
import re
import stat
import warnings


class ReportError(Exception):
    """Something a user can fix; the message says what. exit_code: the process's status."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


# Ten times the largest record in report/runs/ (a 600 kB metrics.json): a larger file is no run's.
LARGEST_FILE = 8 * 2**20


def read_file(path):
    """The bytes of the regular file at path; ReportError if it is something else (a FIFO or a
    device would stall the report, or never end) or larger than LARGEST_FILE, OSError as
    open's (FileNotFoundError: there is none)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # (a FIFO's open waits for a writer)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReportError(f'{path} is not a regular file; the report reads only files.')
        if info.st_size > LARGEST_FILE:
            raise ReportError(
                f'{path} is {info.st_size / 2**20:.0f} MiB, larger than any record of a run '
                f'({LARGEST_FILE // 2**20} MiB at most).'
            )
        with os.fdopen(os.dup(fd), 'rb') as f:
            return f.read(LARGEST_FILE)
    finally:
        os.close(fd)


SERIES = ('steps', 'train_loss', 'eval_steps', 'test_loss', 'test_accuracy')
NUMBER, OR_NULL = (int, float), (int, float, type(None))
# Read when present: a number or null.
OPTIONAL_NUMBERS = {
    'metrics.json': ('best_checkpoint_test_accuracy', 'final_validation_accuracy'),
    'best.json': ('test_accuracy', 'best_cv_std'),
}
# The accuracies of each record, each a number in 0..1, or null or NaN (a run that diverged).
FRACTIONS = {
    'metrics.json': (
        'final_test_accuracy',
        'best_test_accuracy',
        'best_validation_accuracy',
        'final_validation_accuracy',
        'best_checkpoint_test_accuracy',
    ),
    'best.json': ('best_cv_score', 'test_accuracy'),
}
# The statuses train_utils.Run records.
STATUSES = ('running', 'completed', 'interrupted', 'diverged', 'failed')
# What the report reads from the records train_utils.Run and gridsearch.py write, with its type.
SHAPES = {
    'metrics.json': {
        **dict.fromkeys(SERIES, list),
        'flags': dict,
        'status': str,
        'command': list,
        'device': (str, type(None)),
        'wall_seconds': OR_NULL,
        'final_test_accuracy': OR_NULL,
        'best_test_accuracy': OR_NULL,
    },
    'best.json': {
        'best_params': dict,
        'best_cv_score': NUMBER,
        'cv': int,
        'n_train': int,
        'max_epochs': int,
        'test_accuracy': OR_NULL,
        'command': list,
    },
}


def shape_problem(data, record):
    """'' if a loaded metrics.json or best.json holds what the report reads, else what is wrong."""
    if not isinstance(data, dict):
        return 'is not a JSON object'
    # A run evaluated on a validation split has validation_* series; the test set once, after.
    split = f'{data.get("eval_split", "test")}_'
    shapes = {
        k if k == 'final_test_accuracy' else k.replace('test_', split): kind
        for k, kind in SHAPES[record].items()
    }
    wrong = [
        key
        for key, kind in shapes.items()
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool)
    ]
    if wrong:  # (true is not a number here, though Python's bool is an int)
        return f'lacks "{wrong[0]}" or holds it with the wrong type'
    if not is_command(data['command']):
        return 'has a "command" that is not a list of lines of printable text'
    flags = data.get('flags', {})  # the report shows their values beside the commands
    if len(flags) > 200 or not all(printable(k) and shown_as_text(v) for k, v in flags.items()):
        return 'has "flags" whose names or values are not lines of printable text'
    params = data.get('best_params', {})  # the grid's winner, printed in its summary
    if not (
        len(params) <= 20 and all(printable(k, 40) and shown_as_text(v) for k, v in params.items())
    ):
        return 'has "best_params" that are not a few settings of printable text'
    series = [data[k.replace('test_', split)] for k in SERIES] if record == 'metrics.json' else []
    if not all(type(v) in NUMBER for values in series for v in values):
        return 'has a series that holds something other than numbers'
    if series and (len(series[0]) != len(series[1]) or len({len(s) for s in series[2:]}) > 1):
        return 'has series of different lengths'
    numbers = [v for k in shapes if isinstance(v := data.get(k), NUMBER)]
    numbers += [data[k] for k in OPTIONAL_NUMBERS[record] if data.get(k) is not None]
    numbers += [v for values in series for v in values]
    # (a number near float's limit overflows in the plots; inf and nan are a diverged run's;
    # true is no number, though Python's bool is an int)
    if not all(
        abs(v) < 1e300 if type(v) is int else type(v) is float and not 1e300 <= abs(v) < math.inf
        for v in numbers
    ):
        return 'holds a number too large to be a result, or a result that is not a number'
    fractions = [data.get(k) for k in FRACTIONS[record]]  # (NaN too: no run writes one)
    fractions += data.get(f'{split}accuracy', []) if record == 'metrics.json' else []
    if not all(v is None or type(v) in NUMBER and 0 <= v <= 1 for v in fractions):
        return 'holds an accuracy outside 0..1'
    if record == 'best.json' and not (
        data['cv'] >= 2 and data['n_train'] >= 1 and data['max_epochs'] >= 1
    ):
        return 'holds a "cv", "n_train" or "max_epochs" below what a grid search runs'
    if record == 'metrics.json' and not (
        type(data['flags'].get('batch_size', 1)) is int
        and data['flags'].get('validation_size') in (None, *range(50_000))
        and type(data['flags'].get('validation_size', 0)) in (int, type(None))
    ):
        return 'has "flags" that are not a run\'s (a batch or validation size that is not one)'
    if record == 'metrics.json' and data['status'] not in STATUSES:
        return f'has a "status" other than {", ".join(STATUSES)}'
    wall = data.get('wall_seconds')
    if wall is not None and not 0 <= wall < 1e7:  # (nan too) a hundred days: no run of these
        return 'has a "wall_seconds" that is not a run\'s time (from 0 to a hundred days)'
    if not printable(data.get('device') or '', 40):
        return 'has a "device" that is not a short line of text'
    if 'test_confusion' in data and not is_confusion(data['test_confusion']):
        return 'has a "test_confusion" that is not 10 rows of 10 counts'
    return ''


def printable(text, longest=200):
    """Whether text is at most longest characters of printable ASCII (and ±), all that the
    report's LaTeX and figures are sure to show as written."""
    return (
        isinstance(text, str)
        and len(text) <= longest
        and all(' ' <= c <= '~' or c == '±' for c in text)
    )


def is_command(argv):
    """Whether argv is a command the report can print: a list of at most 200 lines of
    printable text, 10,000 characters in all."""
    return (
        isinstance(argv, list)
        and len(argv) <= 200
        and all(printable(arg, 1000) for arg in argv)
        and sum(map(len, argv)) <= 10_000
    )


def shown_as_text(value):
    """Whether a flag's value prints as printable text: a number, a bool, null, a line of
    printable text, or a list of those."""
    if isinstance(value, list):
        return len(value) <= 100 and all(map(shown_as_text, value))
    return value is None or type(value) in (bool, int, float) or printable(value)


def is_confusion(m):
    """Whether m is a confusion matrix of CIFAR-10's ten classes: 10 lists of 10 counts of
    images (a billion at most: a test set, not a number too large for an array)."""
    rows = isinstance(m, list) and len(m) == 10 and all(isinstance(r, list) for r in m)
    return rows and all(
        len(r) == 10 and all(type(n) is int and 0 <= n <= 10**9 for n in r) for r in m
    )


def group_problem(data):
    """'' if a loaded metrics.json, already shape_problem's, can be averaged with its seeds
    (runs.json's "experiments" and the ladder's "seeds"), else what is wrong: such a run is
    evaluated on a validation split and tested once, and its train_loss holds every step up
    to its last evaluation."""
    if data['status'] != 'completed':
        return ''  # shown as not completed, not averaged
    if data.get('eval_split') != 'validation':
        return 'has no validation split, which a group of seeds is compared on'
    finals = [data.get(k) for k in ('final_validation_accuracy', 'final_test_accuracy')]
    if not all(isinstance(v, NUMBER) and math.isfinite(v) for v in finals):
        return 'lacks a final validation or test accuracy'
    steps, evals = data['steps'], data['eval_steps']
    if steps != list(range(1, len(steps) + 1)):
        return 'has "steps" that are not 1, 2, 3, ...'
    if not evals or evals != sorted(set(evals)) or not 1 <= evals[0] <= evals[-1] <= len(steps):
        return 'has "eval_steps" that are not rising steps of the run'
    return ''


def is_png(data):
    """Whether data is a whole PNG image: its signature, every chunk's checksum (Pillow's
    verify), and a size Pillow opens without a decompression-bomb warning (under 89 million
    pixels: the figures here have about a million)."""
    from PIL import Image, UnidentifiedImageError

    if not data.startswith(b'\x89PNG\r\n\x1a\n'):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
    except (
        OSError,
        SyntaxError,
        ValueError,
        UnidentifiedImageError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ):  # (SyntaxError: Pillow's "broken PNG")
        return False
    return True


def grid_scores(path):
    """The mean CV accuracy of each setting in gridsearch.py's cv_results.csv at path; None
    when there is no such file, False when it is not such a table."""
    if not os.path.lexists(path):
        return None
    try:
        text = read_file(path).decode()
        scores = [float(row['mean_test_score']) for row in csv.DictReader(io.StringIO(text))]
    except (OSError, ValueError, KeyError, TypeError, csv.Error):  # (UnicodeError: a ValueError)
        return False
    return scores if scores and all(0 <= x <= 1 for x in scores) else False


# The LaTeX commands gridsearch.py's results.tex holds (tabulate's booktabs and escapes): any
# other in a run folder's file could read or write files when the report is built.
GRID_LATEX = {
    'begin',
    'end',
    'centering',
    'small',
    'toprule',
    'midrule',
    'bottomrule',
    'hline',
    'caption',
    'label',
    'pm',
    'textbackslash',
    'textasciitilde',
    'textasciicircum',
}


def environments_problem(text):
    """'' if each \\begin{...} in text is closed by its \\end{...}, innermost first, else what
    is wrong (an unclosed table would swallow the rest of the report)."""
    open_ = []
    for kind, name in re.findall(r'\\(begin|end)\{([^}]*)\}', text):
        if kind == 'begin':
            open_.append(name)
        elif not open_ or open_.pop() != name:
            return f'an \\end{{{name}}} that closes no \\begin{{{name}}}'
    return f'a \\begin{{{open_[-1]}}} that is never closed' if open_ else ''


def checked_latex(path):
    """The text of a results.tex, if every command in it is one of GRID_LATEX (or an escaped
    character such as \\_ or \\%); else ReportError."""
    text = read_file(path).decode('utf-8', errors='replace')
    wrong = [
        f'the LaTeX command \\{c}'
        for c in re.findall(r'\\([A-Za-z@]+)', text)
        if c not in GRID_LATEX
    ]
    # ^^5c is TeX's other spelling of a backslash; an environment other than a table's could
    # write a file (filecontents) or end the document
    wrong += ['^^, which TeX reads as another character'] * ('^^' in text)
    wrong += ['a % comment, which can hide a command'] * bool(re.search(r'(?<!\\)%', text))
    wrong += [
        f'the environment {e}'
        for e in re.findall(r'\\(?:begin|end)\s*\{([^}]*)\}', text)
        if e not in ('table', 'tabular')
    ]
    wrong += [f'\\{c} without its {{...}}' for c in re.findall(r'\\(begin|end|label)(?!\{)', text)]
    wrong += [  # tabulate's columns are r, c and l; a spec such as *{2147483647}{c} never ends
        'a tabular whose columns are not only l, c and r'
    ] * bool(re.search(r'\\begin\s*\{tabular\}(?!\s*\{[lcr ]+\})', text))
    wrong += ['a \\label other than the one \\label{tab:gridsearch}'] * (
        re.findall(r'\\label\{([^}]*)\}', text) != ['tab:gridsearch']
    )
    if unclosed := environments_problem(text):
        wrong.append(unclosed)
    wrong += ['a character other than printable ASCII'] * (
        not printable(text.replace('\n', ' '), len(text))
    )
    if wrong:
        raise ReportError(
            f'{path} holds {wrong[0]}, which gridsearch.py does not write; it was left out of '
            'the report. Run the grid search again, or restore its results.tex.'
        )
    return text
