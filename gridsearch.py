"""Grid search over the PyTorch MLP: skorch wraps it, scikit-learn's GridSearchCV searches.

    python gridsearch.py --subsample 5000 --max_epochs 10     # the report's grid, 5-fold CV
    python gridsearch.py --learning_rate 0.01,0.001 --grid more.json   # flags beat the file
    python gridsearch.py --scheduler tcp://HOST:8786          # the fits on a Dask cluster

k-fold cross-validation scores each setting of the grid: train on k - 1 folds, measure the
accuracy on the fold left out, k times over, and average. Each fit trains on the whole of its
training folds, reshuffled every epoch and in whole batches as the train scripts take them,
on the inputs they use, so a CV score estimates what train_mlp_pytorch.py reaches with that
setting. The best setting is then refit on the whole training set and tested once. Writes to
--out_dir: cv_results.csv, results.md, results.tex, heatmap.png and best.json.
"""

from quiet_start import on_stop_signals, stop_signals  # (first: see its docstring)

import contextlib
import csv
import io
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from unittest import mock

import joblib
import numpy as np
import torch
from joblib.externals.loky import get_reusable_executor
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from tabulate import tabulate
from tqdm.auto import tqdm

import cifar10_utils
from command_line import (
    FLOAT32_MAX,
    ArgumentParser,
    architectures,
    check_batch_statistics,
    check_mlp_memory,
    comma_list,
    non_negative_int,
    path,
    positive_int,
    read_json,
    seed_int,
)
from mlp_pytorch import ACTIVATIONS, BATCHNORMS, INITS, MLP
from train_utils import (
    ClaimedFolder,
    atomic_write,
    is_out_of_memory,
    plot_heatmap,
    select_device,
    write_failure,
    write_json,
)

CONNECT_SECONDS = 20  # for the whole handshake with a Dask scheduler
DEFAULT_GRID = {
    'batch_size': [64, 128, 256, 512],
    'learning_rate': [0.1, 0.01, 0.001],
    'hidden_units': [[100, 100], [1000], [50, 30, 20]],
    'optimizer': ['adam'],
}
OPTIMIZERS = {'sgd': torch.optim.SGD, 'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW}
SKORCH_NAMES = {  # grid key -> the parameter of skorch's NeuralNetClassifier it sets
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
GRID_KEYS = {name: key for key, name in SKORCH_NAMES.items()}
NUMBER = (int, float)  # type(v) rather than isinstance: True is an int, but no batch size
FLOAT32_RATE = 'a number > 0 that float32 can hold (at most 3.4e38)'  # as the train scripts
FLOAT32_DECAY = 'a number >= 0 that float32 can hold (at most 3.4e38)'
CHECKS = {  # grid key -> (the test every value passes, what it asks for)
    'batch_size': (lambda v: type(v) is int and 0 < v <= 50000, 'an integer from 1 to 50000'),
    'learning_rate': (lambda v: type(v) in NUMBER and 0 < v <= FLOAT32_MAX, FLOAT32_RATE),
    'hidden_units': (
        lambda v: type(v) is list and v and all(type(h) is int and h > 0 for h in v),
        'a non-empty list of positive integers (as --hidden_units takes)',
    ),
    'optimizer': (lambda v: v in OPTIMIZERS, f'one of {", ".join(OPTIMIZERS)}'),
    'weight_decay': (lambda v: type(v) in NUMBER and 0 <= v <= FLOAT32_MAX, FLOAT32_DECAY),
    'momentum': (lambda v: type(v) in NUMBER and 0 <= v < 1, 'a number in [0, 1)'),
    'dropout': (lambda v: type(v) in NUMBER and 0 <= v < 1, 'a number in [0, 1)'),
    'batchnorm': (lambda v: v in BATCHNORMS, f'one of {", ".join(BATCHNORMS)}'),
    'activation': (lambda v: v in ACTIVATIONS, f'one of {", ".join(ACTIVATIONS)}'),
    'init': (lambda v: v in INITS, f'one of {", ".join(INITS)}'),
}


def build_grid(args):
    """The default grid, updated by --grid's file, then by the flags; ValueError if any is bad."""
    grid = dict(DEFAULT_GRID)
    if args.grid:
        from_file = read_json(args.grid)
        if not isinstance(from_file, dict) or not from_file:
            raise ValueError(
                'the grid must be a non-empty JSON object of lists, e.g. '
                '{"learning_rate": [0.01, 0.001]}.'
            )
        grid.update(from_file)
    grid.update({k: getattr(args, k) for k in CHECKS if getattr(args, k) is not None})
    for key, values in grid.items():
        if key not in CHECKS:
            raise ValueError(f'unknown grid key {key!r}; known keys: {", ".join(CHECKS)}.')
        if not isinstance(values, list) or not values:
            raise ValueError(f'grid key {key!r} needs a non-empty list of values, got {values!r}.')
        ok, what = CHECKS[key]
        if bad := [v for v in values if not ok(v)]:
            raise ValueError(f'grid key {key!r}: every value must be {what}, got {bad[0]!r}.')
        if twice := [v for i, v in enumerate(values) if v in values[:i]]:  # a fit done twice
            raise ValueError(f'grid key {key!r} lists {twice[0]!r} twice.')
    if 'momentum' in grid and set(grid['optimizer']) != {'sgd'}:
        raise ValueError("grid key 'momentum' applies only to the optimizer 'sgd'.")
    for units in grid['hidden_units']:  # before the first fit, not in it
        check_mlp_memory(units, 'the architecture')
    return grid


def from_skorch(value):
    """skorch's words -> the grid's: {'lr': 0.1} -> {'learning_rate': 0.1}, optim.SGD -> 'sgd'."""
    if isinstance(value, dict):
        return {GRID_KEYS[k]: from_skorch(v) for k, v in value.items()}
    return value.__name__.lower() if isinstance(value, type) else value


def make_net(max_epochs, device, seed):
    """mlp_pytorch.MLP as a scikit-learn classifier; the grid overrides its settings."""

    class Seed(Callback):  # a local class pickles by value: Dask workers lack this file
        """Seeds every fit before it draws its weights (skorch initializes the callbacks, then
        the module), so that a setting's score does not depend on where it ran."""

        def initialize(self):
            torch.manual_seed(seed)
            return super().initialize()

    return NeuralNetClassifier(
        MLP,
        module__n_inputs=3072,
        module__n_hidden=[100],
        module__n_classes=10,
        criterion=torch.nn.CrossEntropyLoss,  # MLP returns logits
        optimizer=torch.optim.Adam,
        lr=1e-3,
        batch_size=128,
        max_epochs=max_epochs,
        train_split=None,  # the fold left out validates: train on all of the rest
        iterator_train__shuffle=True,
        iterator_train__drop_last=True,  # as the train scripts: every batch has batch_size
        device=device,
        verbose=0,
        callbacks=[Seed()],
    )


def check_folds(folds, y, batch_size, subsampled):
    """ValueError unless the stratified folds of labels y give every fold an image of each
    class and every fit at least one batch of batch_size (the largest)."""
    cv, fewest = folds.get_n_splits(), np.bincount(y, minlength=cifar10_utils.N_CLASSES).min()
    more = '; a larger --subsample has more' if subsampled else ''
    if fewest < cv:
        raise ValueError(
            f'{cv}-fold cross-validation needs {cv} images of each class, and the {len(y)} '
            f'images searched have {fewest} of one{more}.'
        )
    smallest = min(len(train) for train, _ in folds.split(y, y))  # what a fit trains on
    if batch_size > smallest:
        raise ValueError(
            f'batch size {batch_size} is more than the {smallest} images a fit trains on '
            f'({cv - 1} of {cv} folds of {len(y)}){more}.'
        )


def connect(scheduler):
    """A client of the Dask cluster at scheduler, its workers given the model's code."""
    from dask.distributed import Client

    # Client's own timeout covers the connection, not a peer that accepts it and then says
    # nothing: the whole handshake is given CONNECT_SECONDS (and a little more).
    try:
        client = cifar10_utils.call_within(
            CONNECT_SECONDS + 5, lambda: Client(scheduler, timeout=f'{CONNECT_SECONDS}s')
        )
    except ValueError:  # distributed's parse of the address
        raise ValueError(
            f'--scheduler {scheduler} is not an address such as tcp://HOST:8786.'
        ) from None
    except Exception as e:  # OSError, TimeoutError
        raise ValueError(
            f'no Dask scheduler answered at {scheduler} within {CONNECT_SECONDS} '
            f's ({type(e).__name__}); check the address, and that the scheduler runs.'
        ) from None
    # The workers unpickle mlp_pytorch.MLP: they need the requirements, not this checkout.
    for module in ('custom_batchnorm.py', 'mlp_pytorch.py'):
        client.upload_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), module))
    threads = sum(client.nthreads().values())
    if threads == 0:
        client.close()
        raise ValueError(
            f'the Dask scheduler at {scheduler} has no workers; start some with '
            f'dask worker {scheduler}.'
        )
    if threads < 2:
        print(
            f'warning: the cluster at {scheduler} has {threads} worker thread(s); joblib '
            'runs the fits in this process unless it has at least 2.',
            file=sys.stderr,
        )
    return client


def build_parser():
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    g = p.add_argument_group('the grid (each flag a comma-separated list; flags beat --grid)')
    g.add_argument('--grid', type=path, help='JSON file of lists, e.g. {"dropout": [0.0, 0.2]}')
    g.add_argument(
        '--hidden_units',
        type=architectures,
        help='architectures separated by ";" (default "100,100;1000;50,30,20")',
    )
    for key, convert in (
        ('batch_size', int),
        ('learning_rate', float),
        ('optimizer', str),
        ('weight_decay', float),
        ('momentum', float),
        ('dropout', float),
        ('batchnorm', str),
        ('activation', str),
        ('init', str),
    ):
        g.add_argument(
            f'--{key}',
            type=comma_list(convert),
            help=f'each {CHECKS[key][1]}'
            + (f' (default {DEFAULT_GRID[key]})' if key in DEFAULT_GRID else ''),
        )
    p.add_argument('--max_epochs', type=positive_int, default=10, help='epochs of every fit')
    p.add_argument('--cv', type=positive_int, default=5, help='cross-validation folds (>= 2)')
    p.add_argument(
        '--subsample',
        type=positive_int,
        help='search on this many training images, drawn stratified by class',
    )
    p.add_argument('--n_jobs', type=positive_int, default=1, help='fits run in parallel')
    p.add_argument(
        '--validation_size',
        type=non_negative_int,
        default=0,
        help='training images held out (stratified, drawn by --seed): neither the '
        'search nor the refit sees them, and the refit is scored on them',
    )
    p.add_argument(
        '--no_refit',
        action='store_true',
        help='skip refitting the best setting on the whole training set',
    )
    p.add_argument('--scheduler', help='a Dask scheduler, tcp://HOST:PORT, to run the fits')
    p.add_argument(
        '--device',
        choices=('auto', 'cpu', 'cuda'),
        default='cpu',
        help='of every fit (auto: CUDA when available)',
    )
    p.add_argument(
        '--data_dir',
        type=path,
        help='CIFAR-10 batch folder (default: $CIFAR10_DIR, else cifar10/cifar-10-batches-py)',
    )
    p.add_argument('--seed', type=seed_int, default=42, help='seed of the folds and of every fit')
    p.add_argument('--out_dir', type=path, help='output folder (default: a new folder under runs/)')
    p.add_argument(
        '--overwrite',
        action='store_true',
        help='write into --out_dir even when it holds files of another search',
    )
    return p


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, args[0] the signal. Not a KeyboardInterrupt: skorch's fit catches that
    as "stop training early" and returns, and the search would go on and write its results."""


def stop(signum, frame):
    raise Interrupted(signum)


def write_results(out_dir, res, table, grid, args, record):
    """best.json (record) first, the small record the report reads, then cv_results.csv,
    results.md, results.tex and heatmap.png, each written whole or not at all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / 'best.json', record)
    rows = io.StringIO()
    writer = csv.writer(rows)  # scikit-learn's cv_results_, a row a setting
    writer.writerow(res)
    for row in zip(*res.values()):  # optimizers by name, lists and dicts as JSON
        row = map(from_skorch, row)
        writer.writerow([json.dumps(v) if isinstance(v, (dict, list)) else v for v in row])
    write_text(out_dir / 'cv_results.csv', rows.getvalue())
    # results.md and results.tex: every setting, best first; the grid's varied keys as columns
    keys = ['batch_size', 'learning_rate', 'hidden_units']
    keys += [k for k in grid if k not in keys and len(grid[k]) > 1]
    headers = ['rank', 'CV accuracy (mean ± std)'] + [
        'hidden layers' if k == 'hidden_units' else k.replace('_', ' ') for k in keys
    ]
    rows = [[r['rank'], f'{r["mean"]:.3f} ± {r["std"]:.3f}', *(r[k] for k in keys)] for r in table]
    write_text(out_dir / 'results.md', tabulate(rows, headers, 'github', floatfmt='g') + '\n')
    write_text(
        out_dir / 'results.tex',  # a whole table, as the report inputs it
        '\\begin{table}[t]\n\\centering\n\\small\n'
        + tabulate(rows, headers, 'latex_booktabs', floatfmt='g')
        + '\n\\caption{Grid '
        'search over the PyTorch MLP: mean and standard deviation of the cross-validated '
        'accuracy over the folds, best first.}\n\\label{tab:gridsearch}\n\\end{table}\n',
    )
    plot_heatmap(
        table,
        out_dir / 'heatmap.png',
        f'{args.cv}-fold CV on {record["n_train"]} '
        f'training images, {args.max_epochs} epochs per fit',
    )


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))


def error(message, status):
    """Says message as this script's one-line error; returns the exit status, status."""
    print(f'{os.path.basename(sys.argv[0])}: error: {message}', file=sys.stderr)
    return status


def main(argv=None):
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out_dir or time.strftime('runs/gridsearch-%Y%m%d-%H%M%S'))
    # A signal raises Interrupted, which stops the fits and writes nothing (search holds it off).
    with stop_signals(stop):
        try:  # the folder is this search's until it ends: a second one on it is refused
            with ClaimedFolder(out_dir, args.overwrite):
                return search(args, out_dir, argv)
        except ValueError as e:
            return error(e, 2)
        except (Interrupted, KeyboardInterrupt) as e:  # and one not raised by stop()
            get_reusable_executor().shutdown(kill_workers=True)  # loky's fits stop with it
            print('Interrupted; no results were written.', file=sys.stderr)
            return 128 + (e.args[0] if isinstance(e, Interrupted) else signal.SIGINT)


def search(args, out_dir, argv):
    """The grid search of main(), in out_dir: its exit status."""
    started = time.perf_counter()
    try:  # every input is checked before the data loads: a bad one costs no fit
        grid = build_grid(args)
        if args.cv < 2:
            raise ValueError(f'--cv must be at least 2, got {args.cv}.')
        for batchnorm in grid.get('batchnorm', []):
            check_batch_statistics(batchnorm, min(grid['batch_size']))
        n = args.subsample
        if n is not None and n < 10 * args.cv:  # each fold needs an image of each class
            raise ValueError(
                f'--subsample {n} is too small: {args.cv}-fold cross-validation '
                f'needs {args.cv} images of each of the 10 classes, so at least '
                f'{10 * args.cv}.'
            )
        data = cifar10_utils.get_cifar10(
            args.data_dir, one_hot=False, seed=args.seed, validation_size=args.validation_size
        )
        train, validation, test = data['train'], data['validation'], data['test']
        x, y = train.images, train.labels
        if n is not None and n > len(y):
            held_out = args.validation_size
            left = f' left by --validation_size {held_out}' if held_out else ''
            raise ValueError(f'--subsample {n} is more than the {len(y)} training images{left}.')
        if n is not None and n < len(y):  # n images, each class in its share
            keep, _ = train_test_split(
                np.arange(len(y)), train_size=n, stratify=y, random_state=args.seed
            )
            x, y = x[np.sort(keep)], y[np.sort(keep)]
        folds = StratifiedKFold(args.cv, shuffle=True, random_state=args.seed)
        check_folds(folds, y, max(grid['batch_size']), n is not None and n < len(train.labels))
        device = str(select_device(args.device))
        cluster = connect(args.scheduler) if args.scheduler else contextlib.nullcontext()

        param_grid = {
            SKORCH_NAMES[k]: [OPTIMIZERS[v] for v in values] if k == 'optimizer' else values
            for k, values in grid.items()
        }
        fits = args.cv * math.prod(map(len, grid.values()))
        gs = GridSearchCV(
            make_net(args.max_epochs, device, args.seed),
            param_grid,
            scoring='accuracy',
            refit=False,
            error_score='raise',
            cv=folds,
            n_jobs=-1 if args.scheduler else min(args.n_jobs, fits),
        )  # no idlers
        # joblib calls print_progress after each fit, wherever it ran: patched, it moves the bar.
        with (
            cluster,
            joblib.parallel_config('dask' if args.scheduler else 'loky'),
            tqdm(total=fits, unit='fit', desc='grid search') as bar,
            mock.patch.object(
                joblib.Parallel,
                'print_progress',
                lambda self: bar.update(self.n_completed_tasks - bar.n),
            ),
        ):
            gs.fit(x, y)
        res = gs.cv_results_  # scikit-learn's columns, a row a setting
        best_first = np.argsort(res['rank_test_score'], kind='stable')  # ties: the grid's order
        table = [
            {
                'rank': int(res['rank_test_score'][i]),
                'mean': float(res['mean_test_score'][i]),
                'std': float(res['std_test_score'][i]),
                **from_skorch(res['params'][i]),
            }
            for i in best_first
        ]
        best = {k: table[0][k] for k in grid}

        test_accuracy = validation_accuracy = None
        if not args.no_refit:  # GridSearchCV's own refit would see only the subsample
            print(f'refitting {best} on all {len(train.labels)} training images', file=sys.stderr)
            net = make_net(args.max_epochs, device, args.seed)
            net.set_params(**res['params'][best_first[0]]).fit(train.images, train.labels)
            if validation.num_examples:  # score: the accuracy
                validation_accuracy = float(net.score(validation.images, validation.labels))
            test_accuracy = float(net.score(test.images, test.labels))
    except (ValueError, cifar10_utils.CIFAR10Error) as e:
        return error(e, 2 if isinstance(e, ValueError) else 1)
    except OSError as e:  # too many open files for the workers, /dev/shm full
        return error(write_failure(e, 'no results were written'), 1)
    except (MemoryError, RuntimeError) as e:  # torch's allocator raises RuntimeError
        if isinstance(e, RuntimeError) and not is_out_of_memory(e):
            raise
        return error('not enough memory for this grid; smaller layers or batches need less.', 1)

    held = []  # a signal while the results are written waits until they are whole
    on_stop_signals(lambda signum, frame: held.append(signum))
    try:  # a full disk or a folder gone: one sentence, and no file half-written
        write_results(
            out_dir,
            res,
            table,
            grid,
            args,
            {
                'best_params': best,
                'best_cv_score': table[0]['mean'],
                'best_cv_std': table[0]['std'],
                'test_accuracy': test_accuracy,
                'validation_size': args.validation_size,
                'validation_accuracy': validation_accuracy,
                'grid': grid,
                'cv': args.cv,
                'max_epochs': args.max_epochs,
                'n_train': len(y),
                'subsample': args.subsample,
                'seed': args.seed,
                'wall_seconds': time.perf_counter() - started,
                'command': ['python', 'gridsearch.py', *(sys.argv[1:] if argv is None else argv)],
            },
        )
    except OSError as e:
        return error(write_failure(e, 'the results written before it are whole'), 1)
    tested = 'not refit' if test_accuracy is None else f'test accuracy {test_accuracy:.4f}'
    if validation_accuracy is not None:  # what the refit is scored on, then tested
        tested = f'validation accuracy {validation_accuracy:.4f}; {tested}'
    print(
        f'best {best}: CV accuracy {table[0]["mean"]:.4f} ± {table[0]["std"]:.4f}; {tested}; '
        f'results in {out_dir}'
    )
    if held:
        print(f'Stopped by {signal.Signals(held[0]).name} once they were written.', file=sys.stderr)
        return 128 + held[0]
    return 0


if __name__ == '__main__':
    sys.exit(main())
