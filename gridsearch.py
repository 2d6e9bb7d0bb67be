"""Grid search over the PyTorch MLP: skorch wraps it, scikit-learn's GridSearchCV searches.

    python gridsearch.py                                    # the report's grid, 5-fold CV
    python gridsearch.py --subsample 10000 --max_epochs 5   # a quicker search
    python gridsearch.py --grid grid.json                   # another grid
    python gridsearch.py --scheduler tcp://HOST:8786        # fits on a Dask cluster

The grid (flags or a JSON file; flags win) uses these keys, each a list of values:

    batch_size     [64, 128, 256, 512]
    learning_rate  [0.1, 0.01, 0.001]
    hidden_units   [[100, 100], [1000], [50, 30, 20]]
    optimizer      ['adam']              (sgd, adam, adamw)
    weight_decay, dropout, batchnorm, activation, init, momentum   (mlp_pytorch.MLP options)

Inputs are prepared as the train scripts prepare them (mean image subtracted, float32), the
training iterator is shuffled every epoch and each fit trains on its whole training fold, so
a CV score estimates what train_mlp_pytorch.py reaches at the same settings.

Writes to --out_dir: cv_results.csv, results.md, results.tex, heatmap.png and best.json (the
best setting, its CV score and the test accuracy of that setting refit on the whole training
set).
"""
import argparse
import contextlib
import csv
import json
import math
import os
import sys
import time
from datetime import datetime

import numpy as np

import cifar10_utils
from mlp_pytorch import ACTIVATIONS, BATCHNORMS, INITS
from train_utils import (
    ArgumentParser,
    FlagError,
    hidden_units,
    positive_int,
    select_device,
    write_json,
)

OPTIMIZERS = ('sgd', 'adam', 'adamw')
DEFAULT_GRID = {
    'batch_size': [64, 128, 256, 512],
    'learning_rate': [0.1, 0.01, 0.001],
    'hidden_units': [[100, 100], [1000], [50, 30, 20]],
    'optimizer': ['adam'],
}
# grid key -> skorch parameter
SKORCH_NAMES = {
    'batch_size': 'batch_size',
    'learning_rate': 'lr',
    'hidden_units': 'module__n_hidden',
    'optimizer': 'optimizer',
    'weight_decay': 'optimizer__weight_decay',
    'momentum': 'optimizer__momentum',
    'dropout': 'module__dropout',
    'batchnorm': 'module__batchnorm',
    'activation': 'module__activation',
    'init': 'module__init',
}
GRID_KEYS = tuple(SKORCH_NAMES)


# --------------------------------------------------------------------------- the grid


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


CHECKS = {
    'batch_size': (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                   'a positive integer'),
    'learning_rate': (lambda v: _is_number(v) and v > 0, 'a number > 0'),
    'hidden_units': (lambda v: isinstance(v, list) and all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v),
        'a list of positive integers'),
    'optimizer': (lambda v: v in OPTIMIZERS, f'one of {", ".join(OPTIMIZERS)}'),
    'weight_decay': (lambda v: _is_number(v) and v >= 0, 'a number >= 0'),
    'momentum': (lambda v: _is_number(v) and v >= 0, 'a number >= 0'),
    'dropout': (lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
    'batchnorm': (lambda v: v in BATCHNORMS, f'one of {", ".join(BATCHNORMS)}'),
    'activation': (lambda v: v in ACTIVATIONS, f'one of {", ".join(ACTIVATIONS)}'),
    'init': (lambda v: v in INITS, f'one of {", ".join(INITS)}'),
}


def check_grid(grid):
    """Raises FlagError naming the first bad key or value; returns the grid."""
    if not isinstance(grid, dict) or not grid:
        raise FlagError('the grid must be a non-empty JSON object of lists, e.g. '
                        '{"learning_rate": [0.01, 0.001]}.')
    for key, values in grid.items():
        if key not in CHECKS:
            raise FlagError(f'unknown grid key {key!r}; known keys: {", ".join(GRID_KEYS)}.')
        if not isinstance(values, list) or not values:
            raise FlagError(f'grid key {key!r} needs a non-empty list of values, got '
                            f'{values!r}.')
        ok, what = CHECKS[key]
        for v in values:
            if not ok(v):
                raise FlagError(f'grid key {key!r}: every value must be {what}, got {v!r}.')
    if 'momentum' in grid and set(grid.get('optimizer', ['adam'])) - {'sgd'}:
        raise FlagError("grid key 'momentum' applies only to the optimizer 'sgd'.")
    return grid


def load_grid(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise FlagError(f'cannot read the grid file {path}: {e.strerror}.') from None
    except json.JSONDecodeError as e:
        raise FlagError(f'{path} is not valid JSON: {e.msg} at line {e.lineno}, column '
                        f'{e.colno}.') from None


def build_grid(args):
    """The default grid, updated by --grid's file, updated by the grid flags."""
    grid = dict(DEFAULT_GRID)
    if args.grid:
        grid.update(check_grid(load_grid(args.grid)))
    for key in GRID_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            grid[key] = value
    return check_grid(grid)


def to_skorch(params):
    """{'learning_rate': 0.1, 'optimizer': 'adam', ...} -> skorch parameter names/values."""
    import torch
    classes = {'sgd': torch.optim.SGD, 'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW}
    out = {}
    for key, value in params.items():
        out[SKORCH_NAMES[key]] = classes[value] if key == 'optimizer' else value
    return out


def from_skorch(params):
    names = {v: k for k, v in SKORCH_NAMES.items()}
    return {names[k]: (v.__name__.lower() if k == 'optimizer' else v) for k, v in params.items()}


# --------------------------------------------------------------------------- the search


def make_net(max_epochs, device, seed, threads=None):
    """A skorch classifier around mlp_pytorch.MLP with the train scripts' conventions."""
    import torch
    from skorch import NeuralNetClassifier
    from skorch.callbacks import Callback

    from mlp_pytorch import MLP

    class Reproducible(Callback):
        """Seeds each fit, so a setting's score does not depend on which worker ran it."""

        def __init__(self, seed, threads):
            self.seed, self.threads = seed, threads

        def on_train_begin(self, net, **kwargs):
            torch.manual_seed(self.seed)
            if self.threads:
                torch.set_num_threads(self.threads)

    return NeuralNetClassifier(
        MLP, module__n_inputs=3072, module__n_hidden=[100], module__n_classes=10,
        criterion=torch.nn.CrossEntropyLoss,  # MLP returns logits
        optimizer=torch.optim.Adam, lr=1e-3, batch_size=128, max_epochs=max_epochs,
        train_split=None,  # the CV fold is the validation set: train on all of the rest
        iterator_train__shuffle=True, device=device, verbose=0,
        callbacks=[('reproducible', Reproducible(seed, threads))])


@contextlib.contextmanager
def fit_progress(total):
    """A tqdm bar over the search's fits, whatever joblib backend runs them (joblib reports
    each completed task to print_progress in this process)."""
    import joblib
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit='fit', desc='grid search', file=sys.stderr)
    original = joblib.Parallel.print_progress

    def print_progress(self):
        bar.update(self.n_completed_tasks - bar.n)

    joblib.Parallel.print_progress = print_progress
    try:
        yield bar
    finally:
        joblib.Parallel.print_progress = original
        bar.close()


@contextlib.contextmanager
def backend(scheduler):
    """joblib's dask backend on an existing cluster, or the default (local processes)."""
    if not scheduler:
        yield
        return
    import joblib
    try:
        from dask.distributed import Client
    except ImportError:
        raise FlagError('--scheduler needs dask.distributed: pip install "dask[distributed]"'
                        ) from None
    try:
        client = Client(scheduler, timeout='20s')
    except OSError as e:
        raise FlagError(f'cannot reach the Dask scheduler at {scheduler} ({e}).') from None
    try:
        # The scheduler and the workers unpickle mlp_pytorch.MLP: ship them the modules it
        # needs, so a worker machine needs the requirements but not this checkout.
        here = os.path.dirname(os.path.abspath(__file__))
        for module in ('custom_batchnorm.py', 'mlp_pytorch.py'):
            client.upload_file(os.path.join(here, module))
        threads = sum(client.nthreads().values())
        if threads < 2:
            # joblib runs a one-thread backend's tasks in the calling process.
            print(f'warning: the cluster at {scheduler} has {threads} worker thread(s); '
                  'joblib runs the fits in this process unless it has at least 2.',
                  file=sys.stderr)
        with joblib.parallel_backend('dask'):
            yield
    finally:
        client.close()


def subsample_split(x, y, n, seed):
    """n examples of (x, y) drawn stratified by class."""
    from sklearn.model_selection import train_test_split
    if n is None or n >= len(y):
        return x, y
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    keep.sort()
    return x[keep], y[keep]


def search(grid, data, cv=5, max_epochs=10, subsample=None, n_jobs=1, seed=42, device='cpu',
           scheduler=None):
    """Runs GridSearchCV over grid; returns (fitted GridSearchCV, X, y it searched on)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    x, y = subsample_split(data['train'].images, data['train'].labels, subsample, seed)
    if cv > np.bincount(y).min():
        raise FlagError(f'--cv {cv} needs at least {cv} examples of every class; the '
                        f'(subsampled) training set has {np.bincount(y).min()} of its rarest.')
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 and not scheduler else None
    net = make_net(max_epochs, device, seed, threads)
    param_grid = {SKORCH_NAMES[k]: [to_skorch({k: v})[SKORCH_NAMES[k]] for v in values]
                  for k, values in grid.items()}
    folds = StratifiedKFold(cv, shuffle=True, random_state=seed)
    gs = GridSearchCV(net, param_grid, scoring='accuracy', cv=folds, refit=False,
                      n_jobs=-1 if scheduler else n_jobs, error_score='raise')
    n_fits = cv * math.prod(len(v) for v in grid.values())
    with backend(scheduler), fit_progress(n_fits):
        gs.fit(x, y)
    return gs, x, y


def refit_and_test(best, data, max_epochs, device, seed):
    """Trains the best setting on the whole training set; returns its test accuracy."""
    net = make_net(max_epochs, device, seed)
    net.set_params(**to_skorch(best))
    net.fit(data['train'].images, data['train'].labels)
    return float(np.mean(net.predict(data['test'].images) == data['test'].labels))


# --------------------------------------------------------------------------- outputs


def rows(gs, grid):
    """One dict a setting, best first: rank, mean, std and the grid's keys."""
    res = gs.cv_results_
    out = []
    for i, params in enumerate(res['params']):
        row = {'rank': int(res['rank_test_score'][i]),
               'mean': float(res['mean_test_score'][i]),
               'std': float(res['std_test_score'][i])}
        row.update(from_skorch(params))
        out.append(row)
    return sorted(out, key=lambda r: (r['rank'], -r['mean']))


def fmt_hidden(h):
    return '[' + ', '.join(map(str, h)) + ']'


def table_columns(grid):
    """The report's columns, then any other key the grid varies."""
    cols = ['batch_size', 'learning_rate', 'hidden_units']
    return cols + [k for k in grid if k not in cols and len(grid[k]) > 1]


TITLES = {'batch_size': 'batch size', 'learning_rate': 'learning rate',
          'hidden_units': 'hidden layers'}


def fmt(key, value):
    if key == 'hidden_units':
        return fmt_hidden(value)
    if key == 'learning_rate':
        return f'{value:g}'
    return str(value)


def write_text(path, text):
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_csv(path, cv_results):
    keys = list(cv_results)
    n = len(cv_results['params'])

    def cell(v):
        if isinstance(v, (dict, list, tuple)):
            return json.dumps(from_skorch(v) if isinstance(v, dict) else v)
        if isinstance(v, type):
            return v.__name__.lower()
        return v.item() if isinstance(v, np.generic) else v

    tmp = f'{path}.tmp'
    with open(tmp, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(keys)
        for i in range(n):
            w.writerow([cell(cv_results[k][i]) for k in keys])
    os.replace(tmp, path)


def write_tables(out_dir, table, grid, caption):
    cols = table_columns(grid)
    head = ['rank', 'CV accuracy (mean ± std)'] + [TITLES.get(c, c) for c in cols]
    md = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in table:
        md.append(f'| {r["rank"]} | {r["mean"]:.3f} ± {r["std"]:.3f} | '
                  + ' | '.join(fmt(c, r[c]) for c in cols) + ' |')
    write_text(os.path.join(out_dir, 'results.md'), '\n'.join(md) + '\n')

    tex = [r'\begin{table}[t]', r'\centering', r'\small',
           r'\begin{tabular}{r c ' + 'c ' * len(cols) + '}', r'\toprule',
           ' & '.join(['rank', r'CV accuracy'] + [TITLES.get(c, c).replace('_', r'\_')
                                                 for c in cols]) + r' \\', r'\midrule']
    for r in table:
        tex.append(' & '.join([str(r['rank']), f'${r["mean"]:.3f} \\pm {r["std"]:.3f}$']
                              + [fmt(c, r[c]).replace('_', r'\_') for c in cols]) + r' \\')
    tex += [r'\bottomrule', r'\end{tabular}', f'\\caption{{{caption}}}',
            r'\label{tab:gridsearch}', r'\end{table}']
    write_text(os.path.join(out_dir, 'results.tex'), '\n'.join(tex) + '\n')


def plot_heatmap(table, path, title=''):
    """Learning rate x batch size, one panel per architecture; each cell the best mean CV
    accuracy over the grid's other keys."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    archs = sorted({tuple(r['hidden_units']) for r in table}, key=lambda a: (len(a), a))
    lrs = sorted({r['learning_rate'] for r in table}, reverse=True)
    bss = sorted({r['batch_size'] for r in table})
    fig, axes = plt.subplots(1, len(archs), figsize=(0.9 + 2.6 * len(archs), 2.9),
                             squeeze=False, sharey=True)
    vmax = max(r['mean'] for r in table)
    for ax, arch in zip(axes[0], archs):
        cells = np.full((len(lrs), len(bss)), np.nan)
        for r in table:
            if tuple(r['hidden_units']) == arch:
                i, j = lrs.index(r['learning_rate']), bss.index(r['batch_size'])
                cells[i, j] = np.nanmax([cells[i, j], r['mean']])
        im = ax.imshow(cells, cmap='viridis', vmin=0.0, vmax=vmax, aspect='auto')
        for (i, j), v in np.ndenumerate(cells):
            if not np.isnan(v):
                ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=8,
                        color='white' if v < 0.6 * vmax else 'black')
        ax.set_xticks(range(len(bss)), [str(b) for b in bss])
        ax.set_yticks(range(len(lrs)), [f'{lr:g}' for lr in lrs])
        ax.set_xlabel('batch size')
        ax.set_title(f'hidden {fmt_hidden(arch)}', fontsize=9)
    axes[0][0].set_ylabel('learning rate')
    fig.colorbar(im, ax=axes[0].tolist(), label='mean CV accuracy', shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=9, y=1.04)  # above the panel titles
    tmp = f'{path}.tmp.png'
    fig.savefig(tmp, dpi=150, bbox_inches='tight')
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- command line


def build_parser():
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group('grid (each flag a comma-separated list; overrides --grid)')
    g.add_argument('--grid', help='JSON file {key: [values]} replacing the default grid keys')
    g.add_argument('--batch_size', type=int_list, help=f'default {DEFAULT_GRID["batch_size"]}')
    g.add_argument('--learning_rate', type=float_list,
                   help=f'default {DEFAULT_GRID["learning_rate"]}')
    g.add_argument('--hidden_units', type=hidden_list,
                   help='architectures separated by ";", e.g. "100,100;1000;50,30,20"')
    g.add_argument('--optimizer', type=str_list, help='default adam')
    g.add_argument('--weight_decay', type=float_list)
    g.add_argument('--dropout', type=float_list)
    g.add_argument('--batchnorm', type=str_list)
    g.add_argument('--activation', type=str_list)
    g.add_argument('--init', type=str_list)
    p.add_argument('--max_epochs', type=positive_int, default=10, help='epochs of every fit')
    p.add_argument('--cv', type=positive_int, default=5, help='cross-validation folds (>= 2)')
    p.add_argument('--subsample', type=positive_int, default=None,
                   help='search on this many training images, drawn stratified by class')
    p.add_argument('--n_jobs', type=positive_int, default=1, help='fits run in parallel')
    p.add_argument('--no_refit', action='store_true',
                   help='skip refitting the best setting on the whole training set')
    p.add_argument('--scheduler', default=None,
                   help='address of a Dask scheduler (tcp://HOST:PORT): run the fits there')
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='cpu')
    p.add_argument('--data_dir', default=None,
                   help='CIFAR-10 batch folder (default: $CIFAR10_DIR, else '
                        'cifar10/cifar-10-batches-py)')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--out_dir', default=None,
                   help='output folder (default: a new folder under runs/)')
    return p


def _list(convert, what):
    def parse(text):
        try:
            values = [convert(part.strip()) for part in text.split(',') if part.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f'expected comma-separated {what}, got '
                                             f'{text!r}') from None
        if not values:
            raise argparse.ArgumentTypeError(f'expected at least one value, got {text!r}')
        return values
    return parse


int_list = _list(int, 'integers')
float_list = _list(float, 'numbers')
str_list = _list(str, 'names')


def hidden_list(text):
    archs = [hidden_units(part) for part in text.split(';')]
    if not text.strip():
        raise argparse.ArgumentTypeError('expected architectures such as "100,100;1000"')
    return archs


def main(argv=None):
    args = build_parser().parse_args(argv)
    prog = os.path.basename(sys.argv[0])
    started = time.perf_counter()
    try:
        grid = build_grid(args)
        if args.cv < 2:
            raise FlagError(f'--cv must be at least 2, got {args.cv}.')
        data = cifar10_utils.get_cifar10(args.data_dir, one_hot=False)
        device = str(select_device(args.device))
        gs, x, _ = search(grid, data, cv=args.cv, max_epochs=args.max_epochs,
                          subsample=args.subsample, n_jobs=args.n_jobs, seed=args.seed,
                          device=device, scheduler=args.scheduler)
    except FlagError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return 2
    except cifar10_utils.CIFAR10Error as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('Interrupted; no results were written.', file=sys.stderr)
        return 130
    search_seconds = time.perf_counter() - started
    table = rows(gs, grid)
    best = table[0]
    best_params = {k: best[k] for k in grid}
    test_accuracy = None
    if not args.no_refit:
        print(f'refitting {best_params} on all {data["train"].num_examples} training images',
              file=sys.stderr)
        test_accuracy = refit_and_test(best_params, data, args.max_epochs, device, args.seed)

    out_dir = args.out_dir or os.path.join('runs', f'gridsearch-{datetime.now():%Y%m%d-%H%M%S}')
    os.makedirs(out_dir, exist_ok=True)
    setup = (f'{args.cv}-fold CV on {len(x)} training images, {args.max_epochs} epochs per '
             f'fit')
    write_csv(os.path.join(out_dir, 'cv_results.csv'), gs.cv_results_)
    write_tables(out_dir, table, grid, f'Grid search over the PyTorch MLP ({setup}); mean and '
                 'standard deviation of the validation accuracy over the folds.')
    plot_heatmap(table, os.path.join(out_dir, 'heatmap.png'), setup)
    write_json(os.path.join(out_dir, 'best.json'), {
        'best_params': best_params, 'best_cv_score': best['mean'],
        'best_cv_std': best['std'], 'test_accuracy': test_accuracy,
        'grid': grid, 'cv': args.cv, 'max_epochs': args.max_epochs,
        'n_train': len(x), 'subsample': args.subsample, 'seed': args.seed,
        'search_seconds': search_seconds,
        'wall_seconds': time.perf_counter() - started,
        'command': ['python', 'gridsearch.py', *(argv if argv is not None else sys.argv[1:])],
    })
    acc = 'not refit' if test_accuracy is None else f'test accuracy {test_accuracy:.4f}'
    print(f'best {best_params}: CV accuracy {best["mean"]:.4f} ± {best["std"]:.4f}; {acc}; '
          f'results in {out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
