"""The grid search's hypothesis, measured: do the settings that collapse to chance lose their
hidden units to dead ReLUs? Trains the grid's network (mlp_pytorch.MLP, the course's
N(0, 1e-4^2) initialisation, Adam, no batch norm) on the grid's 5,000-image subsample for two
settings that differ only in their hidden layers, one that collapses in the grid and one that
survives, and records after 10, 100 and 1000 steps the fraction of each hidden layer's units
that are dead: zero for every one of the 5,000 images, so that no gradient reaches their
weights again.

    python report/dead_units.py     # about two minutes on two CPU cores

Writes report/runs/dead_units/dead_units.json, which make_report.py draws."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script, only report/ is on sys.path

from quiet_start import interrupt, stop_signals, stopped  # noqa: E402 (first: see its docstring)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import cifar10_utils  # noqa: E402
from command_line import ArgumentParser, output_file, path  # noqa: E402
from mlp_pytorch import MLP  # noqa: E402
from train_utils import write_json  # noqa: E402

# The grid's cells at batch 256 and learning rate 0.01 (report/runs/gridsearch/results.md):
# [100, 100] scores chance, [50, 30, 20] does not.
SETTINGS = {'[100, 100]': [100, 100], '[50, 30, 20]': [50, 30, 20]}
LEARNING_RATE, BATCH_SIZE, SUBSAMPLE, SEED = 0.01, 256, 5000, 42
CHECKPOINTS = (10, 100, 1000)
OUT = os.path.join(ROOT, 'report', 'runs', 'dead_units', 'dead_units.json')


def dead_fractions(model, x):
    """For each hidden layer, the fraction of its units whose ReLU is 0 on every row of x."""
    fractions, h = [], x.flatten(1)
    with torch.no_grad():
        for layer in model.layers:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                fractions.append(float((h.amax(dim=0) == 0).float().mean()))
    return fractions


def run(hidden, x, y):
    """Trains one setting with the grid's seed; its dead fractions and training accuracy at
    each of CHECKPOINTS."""
    torch.manual_seed(SEED)
    model = MLP(3072, hidden, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    order = np.random.default_rng(SEED)
    record, step = [], 0
    while step < CHECKPOINTS[-1]:
        shuffled = order.permutation(len(y))
        for start in range(0, len(y), BATCH_SIZE):  # an epoch, as skorch iterates it
            batch, step = shuffled[start : start + BATCH_SIZE], step + 1
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step in CHECKPOINTS:
                with torch.no_grad():
                    accuracy = float((model(x).argmax(1) == y).float().mean())
                record.append(
                    {
                        'step': step,
                        'dead': dead_fractions(model, x),
                        'train_loss': loss.item(),
                        'train_accuracy': accuracy,
                    }
                )
            if step == CHECKPOINTS[-1]:
                break
    return record


def measure(data_dir, out):
    """Both settings' records on the grid's subsample of the training set, written to out."""
    train = cifar10_utils.get_cifar10(data_dir, one_hot=False, seed=SEED)['train']
    if train.num_examples <= SUBSAMPLE:
        raise cifar10_utils.CIFAR10Error(
            f"{data_dir} holds {train.num_examples} training images; the grid's subsample "
            f'takes {SUBSAMPLE} of them and needs more left over.'
        )
    keep, _ = train_test_split(
        np.arange(train.num_examples),
        train_size=SUBSAMPLE,
        stratify=train.labels,
        random_state=SEED,
    )  # the grid's subsample (gridsearch.py --subsample 5000)
    keep = np.sort(keep)
    x, y = torch.from_numpy(train.images[keep]), torch.from_numpy(train.labels[keep])
    settings = {}
    for name, hidden in SETTINGS.items():
        print(
            f'dead_units.py: training hidden layers {name} for {CHECKPOINTS[-1]} steps', flush=True
        )
        settings[name] = run(hidden, x, y)
    result = {
        'command': ['python', 'report/dead_units.py', *sys.argv[1:]],
        'learning_rate': LEARNING_RATE,
        'batch_size': BATCH_SIZE,
        'subsample': SUBSAMPLE,
        'seed': SEED,
        'settings': settings,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_json(out, result)
    for name, record in settings.items():
        print(name, [(r['step'], [round(d, 3) for d in r['dead']]) for r in record])


def main(argv=None):
    """Exit status: 0 written, 1 no data or a failed write, 128 + N stopped by signal N (Ctrl-C:
    130), before anything was written."""
    p = ArgumentParser(prog='dead_units.py', description=__doc__.split('\n\n')[0])
    p.add_argument(
        '--data_dir', type=path, default=cifar10_utils.default_data_dir(), help='CIFAR-10 folder'
    )
    p.add_argument('--out', default=OUT, type=output_file, help='the JSON file to write')
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with stop_signals(interrupt):
        try:
            measure(args.data_dir, os.path.abspath(args.out))
        except cifar10_utils.CIFAR10Error as e:
            print(f'dead_units.py: error: {e}', file=sys.stderr)
            return 1
        except ValueError as e:  # scikit-learn's: a class too small for the stratified subsample
            print(
                f"dead_units.py: error: the data cannot give the grid's subsample ({e})",
                file=sys.stderr,
            )
            return 1
        except OSError as e:
            print(
                f'dead_units.py: error: could not write {e.filename} ({e.strerror}).',
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt as e:
            return stopped('dead_units.py', e, '; nothing was written.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
