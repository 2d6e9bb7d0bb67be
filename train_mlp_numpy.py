"""Trains the NumPy MLP on CIFAR-10 with plain mini-batch SGD.

    python train_mlp_numpy.py                                   # the course defaults
    python train_mlp_numpy.py --dnn_hidden_units 1000,1000 --batch_size 512

Writes metrics.json and curves.png to --out_dir (default: a new folder under runs/).
"""
import sys

import numpy as np

import cifar10_utils
from command_line import cli, hidden_units, make_parser
from mlp_numpy import MLP
from modules import CrossEntropyModule
from train_utils import Run

# The course's defaults.
DNN_HIDDEN_UNITS_DEFAULT = '100'
LEARNING_RATE_DEFAULT = 2e-3
MAX_STEPS_DEFAULT = 1500
BATCH_SIZE_DEFAULT = 200
EVAL_FREQ_DEFAULT = 100


def train_step(model, loss_module, x, y, learning_rate):
    """One SGD update of model on a batch; returns the batch's loss before the update.

    x: float32 (B, 3072) images; y: one-hot (B, 10) labels.
    """
    probs = model.forward(x)
    loss = loss_module.forward(probs, y)
    model.backward(loss_module.backward(probs, y), input_grad=False)  # dL/dx is not needed
    model.sgd_step(learning_rate)
    return loss


def evaluate(model, loss_module, x, y, batch_size=5000):
    """Mean loss and accuracy of model on (x, y), batch_size rows at a time to bound memory."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        probs = model.forward(x[start:start + batch_size])
        targets = y[start:start + batch_size]
        total_loss += loss_module.forward(probs, targets) * len(targets)
        correct += np.sum(probs.argmax(axis=1) == targets.argmax(axis=1))
    return total_loss / len(x), correct / len(x)


def train(dnn_hidden_units=DNN_HIDDEN_UNITS_DEFAULT, learning_rate=LEARNING_RATE_DEFAULT,
          max_steps=MAX_STEPS_DEFAULT, batch_size=BATCH_SIZE_DEFAULT,
          eval_freq=EVAL_FREQ_DEFAULT, data_dir=None, seed=42, out_dir=None,
          overwrite=False):
    """Trains an MLP with SGD and returns the metrics written to out_dir/metrics.json.

    dnn_hidden_units: '100,100'-style string or a list of ints.
    """
    flags = dict(locals())  # every argument, as metrics.json records them
    if isinstance(dnn_hidden_units, str):
        flags['dnn_hidden_units'] = dnn_hidden_units = hidden_units(dnn_hidden_units)

    run = Run(__file__, flags, out_dir, max_steps, overwrite=overwrite)  # checks out_dir
    rng = np.random.default_rng(seed)
    data = cifar10_utils.get_cifar10(data_dir, one_hot=True, seed=seed)
    train_set, test_set = data['train'], data['test']
    x_test = test_set.images.reshape(len(test_set.images), -1)
    # float32 throughout: half the memory traffic of float64 and twice the BLAS rate.
    model = MLP(x_test.shape[1], dnn_hidden_units, test_set.labels.shape[1],
                dtype=np.float32, rng=rng)
    loss_module = CrossEntropyModule()

    # A diverging run overflows on its way to a NaN loss, which the run reports.
    with run, np.errstate(over='ignore', invalid='ignore'):
        for step in range(1, max_steps + 1):
            if run.stop_requested:
                raise KeyboardInterrupt  # Ctrl-C, answered between two steps
            x, y = train_set.next_batch(batch_size)
            loss = train_step(model, loss_module, x.reshape(batch_size, -1), y, learning_rate)
            run.log_step(step, loss)
            if step % eval_freq == 0 or step == max_steps:
                run.log_eval(step, *evaluate(model, loss_module, x_test, test_set.labels))
    return run.metrics


def main(argv=None):
    parser = make_parser(__doc__, LEARNING_RATE_DEFAULT, MAX_STEPS_DEFAULT, BATCH_SIZE_DEFAULT,
                         EVAL_FREQ_DEFAULT)
    parser.add_argument('--dnn_hidden_units', type=hidden_units,
                        default=DNN_HIDDEN_UNITS_DEFAULT,
                        help='comma-separated sizes of the hidden layers, e.g. 500,500')
    return cli(train, parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
