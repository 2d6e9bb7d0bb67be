"""Trains the NumPy MLP on CIFAR-10 with plain mini-batch SGD.

    python train_mlp_numpy.py                                   # the course defaults
    python train_mlp_numpy.py --dnn_hidden_units 1000,1000 --batch_size 512

Writes metrics.json and curves.png to --out_dir (default: a new folder under runs/).
"""
import sys

import numpy as np

import cifar10_utils
from mlp_numpy import MLP
from modules import CrossEntropyModule
from train_utils import FlagError, Run, accuracy, cli, hidden_units, make_parser, run_training

# The course's defaults.
DNN_HIDDEN_UNITS_DEFAULT = '100'
LEARNING_RATE_DEFAULT = 2e-3
MAX_STEPS_DEFAULT = 1500
BATCH_SIZE_DEFAULT = 200
EVAL_FREQ_DEFAULT = 100
SEED_DEFAULT = 42


def check_flags(hidden, learning_rate, max_steps, batch_size, eval_freq):
    """Raises FlagError for values no run can use (the parser checks them too; this covers
    train() called from Python)."""
    for name, value in (('learning_rate', learning_rate), ('max_steps', max_steps),
                        ('batch_size', batch_size), ('eval_freq', eval_freq)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise FlagError(f'--{name} must be positive, got {value!r}.')
    if any(not isinstance(h, int) or h <= 0 for h in hidden):
        raise FlagError(f'--dnn_hidden_units must be positive integers, got {hidden!r}.')


def evaluate_numpy(model, x, targets, loss_module, batch=5000):
    """Mean loss and accuracy of model on (x, targets), in batches to bound memory."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch):
        probs = model.forward(x[start:start + batch])
        t = targets[start:start + batch]
        total_loss += loss_module.forward(probs, t) * len(t)
        correct += accuracy(probs, t) * len(t)
    return total_loss / len(x), correct / len(x)


def make_train_step(model, loss_module, train_set, batch_size, learning_rate):
    """Returns step(step_number) -> loss: one SGD update of model on the next mini-batch of
    train_set (images float32 (N, 3, 32, 32), one-hot labels (N, C))."""
    def step(_=None):
        x, y = train_set.next_batch(batch_size)
        probs = model.forward(x.reshape(batch_size, -1))  # a view: no copy
        loss = loss_module.forward(probs, y)
        model.backward(loss_module.backward(probs, y), input_grad=False)
        model.sgd_step(learning_rate)
        return loss
    return step


def train(dnn_hidden_units=DNN_HIDDEN_UNITS_DEFAULT, learning_rate=LEARNING_RATE_DEFAULT,
          max_steps=MAX_STEPS_DEFAULT, batch_size=BATCH_SIZE_DEFAULT,
          eval_freq=EVAL_FREQ_DEFAULT, data_dir=None, seed=SEED_DEFAULT, out_dir=None):
    """Trains an MLP with SGD and returns the metrics written to out_dir/metrics.json.

    dnn_hidden_units: '100,100'-style string or a list of ints.
    """
    hidden = (hidden_units(dnn_hidden_units) if isinstance(dnn_hidden_units, str)
              else list(dnn_hidden_units))
    check_flags(hidden, learning_rate, max_steps, batch_size, eval_freq)
    flags = dict(dnn_hidden_units=hidden, learning_rate=learning_rate, max_steps=max_steps,
                 batch_size=batch_size, eval_freq=eval_freq, data_dir=data_dir, seed=seed,
                 out_dir=out_dir)

    rng = np.random.default_rng(seed)
    data = cifar10_utils.get_cifar10(data_dir, one_hot=True, seed=seed)
    train_set, test_set = data['train'], data['test']
    if batch_size > train_set.num_examples:
        raise FlagError(f'--batch_size {batch_size} is larger than the training set '
                        f'({train_set.num_examples} images).')
    x_test = test_set.images.reshape(test_set.num_examples, -1)
    n_inputs = x_test.shape[1]
    n_classes = test_set.labels.shape[1]

    # float32 throughout: half the memory traffic of float64 and twice the BLAS rate.
    model = MLP(n_inputs, hidden, n_classes, dtype=np.float32, rng=rng)
    loss_module = CrossEntropyModule()
    run = Run(__file__, flags, out_dir)

    train_step = make_train_step(model, loss_module, train_set, batch_size, learning_rate)

    def evaluate():
        return evaluate_numpy(model, x_test, test_set.labels, loss_module)

    with np.errstate(over='ignore', invalid='ignore'):  # divergence is caught as a NaN loss
        return run_training(run, max_steps, eval_freq, train_step, evaluate,
                            learning_rate=learning_rate)


def build_parser():
    p = make_parser(__doc__.split('\n\n')[0], dict(
        learning_rate=LEARNING_RATE_DEFAULT, max_steps=MAX_STEPS_DEFAULT,
        batch_size=BATCH_SIZE_DEFAULT, eval_freq=EVAL_FREQ_DEFAULT))
    p.add_argument('--dnn_hidden_units', type=hidden_units, default=DNN_HIDDEN_UNITS_DEFAULT,
                   help='comma-separated sizes of the hidden layers, e.g. 500,500')
    p.set_defaults(seed=SEED_DEFAULT)
    return p


def main(argv=None):
    return cli(train, build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
