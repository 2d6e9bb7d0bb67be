"""What the report reads from a run folder's record (train_utils.Run's metrics.json, or the
best.json gridsearch.py writes), and the check that a loaded record holds it: a folder that
fails it is reported as a problem in one line, never drawn."""

import math

SERIES = ('steps', 'train_loss', 'eval_steps', 'test_loss', 'test_accuracy')
NUMBER, OR_NULL = (int, float), (int, float, type(None))
# Read when present: a number or null.
OPTIONAL_NUMBERS = {
    'metrics.json': ('best_pt_test_accuracy', 'final_validation_accuracy'),
    'best.json': ('test_accuracy', 'best_cv_std'),
}
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
    if wrong := [key for key, kind in shapes.items() if not isinstance(data.get(key), kind)]:
        return f'lacks "{wrong[0]}" or holds it with the wrong type'
    if not all(isinstance(arg, str) for arg in data['command']):
        return 'has a "command" that is not a list of strings'
    series = [data[k.replace('test_', split)] for k in SERIES] if record == 'metrics.json' else []
    if not all(isinstance(v, NUMBER) for values in series for v in values):
        return 'has a series that holds something other than numbers'
    if series and (len(series[0]) != len(series[1]) or len({len(s) for s in series[2:]}) > 1):
        return 'has series of different lengths'
    numbers = [v for k in shapes if isinstance(v := data.get(k), NUMBER)]
    numbers += [data[k] for k in OPTIONAL_NUMBERS[record] if data.get(k) is not None]
    numbers += [v for values in series for v in values]
    # (an integer past float's range breaks the plots; inf and nan are a diverged run's)
    if not all(isinstance(v, float) or isinstance(v, int) and abs(v) < 1e300 for v in numbers):
        return 'holds a number too large to be a result, or a result that is not a number'
    if record == 'metrics.json' and not isinstance(data['flags'].get('batch_size', 1), int):
        return 'has "flags" that are not a run\'s (a batch size that is not an integer)'
    if 'test_confusion' in data and not is_confusion(data['test_confusion']):
        return 'has a "test_confusion" that is not 10 rows of 10 counts'
    return ''


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
