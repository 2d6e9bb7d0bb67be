"""Trains the NumPy MLP on CIFAR-10: plain mini-batch SGD by default, or batch norm, dropout,
Adam(W) and a learning-rate schedule, all written by hand (modules.py, optimizers.py).

    python train_mlp_numpy.py                    # the course defaults: SGD, as in the course
    python train_mlp_numpy.py --preset best      # train_mlp_pytorch.py's best recipe, in NumPy

Writes metrics.json and curves.png to --out_dir (default: a new folder under runs/).
"""

import quiet_start  # noqa: F401 (first: see its docstring)

import sys

import numpy as np

import cifar10_utils
import optimizers
from command_line import (
    add_mlp_flags,
    check_arguments,
    check_batch_size,
    check_batch_statistics,
    check_mlp_memory,
    cli,
    hidden_layers,
    make_parser,
    parse_with_preset,
)
from mlp_numpy import MLP
from modules import CrossEntropyModule
from train_utils import Run, check_finite, confusion_matrix

# The course's defaults.
DNN_HIDDEN_UNITS_DEFAULT = '100'
LEARNING_RATE_DEFAULT = 2e-3
MAX_STEPS_DEFAULT = 1500
BATCH_SIZE_DEFAULT = 200
EVAL_FREQ_DEFAULT = 100

# train_mlp_pytorch.py's preset, the same recipe in NumPy.
PRESETS = {
    'best': dict(
        dnn_hidden_units=[1024, 1024],
        optimizer='adamw',
        learning_rate=1e-3,
        weight_decay=1e-2,
        dropout=0.2,
        batchnorm='numpy',
        lr_schedule='onecycle',
        augment=True,
        augment_padding=0,
        init='kaiming',
        batch_size=256,
        max_steps=5500,
        eval_freq=500,
    ),
}


def make_optimizer(name, params, learning_rate, momentum=0.0, weight_decay=0.0):
    """optimizers.py's SGD, Adam or AdamW (whose weight decay is decoupled from the gradient),
    as train_mlp_pytorch.py makes torch.optim's."""
    if name == 'sgd':
        return optimizers.SGD(params, learning_rate, momentum, weight_decay=weight_decay)
    if momentum:  # Adam's counterpart is its beta1, not a flag here
        raise ValueError(f'--momentum applies only to --optimizer sgd, not {name}.')
    if name in ('adam', 'adamw'):
        adam = optimizers.Adam if name == 'adam' else optimizers.AdamW
        return adam(params, learning_rate, weight_decay=weight_decay)
    raise ValueError(f'optimizer must be one of sgd, adam, adamw, got {name!r}.')


def make_schedule(name, optimizer, max_steps):
    """A learning-rate schedule stepped once per training step, or None for a constant rate."""
    if name == 'cosine':
        return optimizers.CosineAnnealingLR(optimizer, T_max=max_steps)
    if name == 'onecycle':
        return optimizers.OneCycleLR(optimizer, max_lr=optimizer.lr, total_steps=max_steps)
    if name != 'constant':
        raise ValueError(f'lr_schedule must be one of constant, cosine, onecycle, got {name!r}.')
    return None


def train_step(model, loss_module, optimizer, x, y):
    """One update of model on a batch; returns the batch's loss before the update.

    x: float32 (B, 3072) images; y: one-hot (B, 10) labels.
    """
    probs = model.forward(x)
    loss = loss_module.forward(probs, y)
    model.backward(loss_module.backward(probs, y), input_grad=False)  # dL/dx is not needed
    optimizer.step()
    return loss


def evaluate(model, loss_module, x, y, batch_size=5000):
    """Mean loss, accuracy and confusion matrix of model on (x, y) in evaluation mode (dropout
    off, batch norm on its running statistics), batch_size rows at a time to bound memory."""
    model.eval()
    total_loss, confusion = 0.0, 0
    for start in range(0, len(x), batch_size):
        probs = model.forward(x[start : start + batch_size])
        targets = y[start : start + batch_size]
        total_loss += loss_module.forward(probs, targets) * len(targets)
        confusion += confusion_matrix(targets.argmax(axis=1), probs.argmax(axis=1))
    model.train()
    return total_loss / len(x), np.trace(confusion) / len(x), confusion


def train(
    dnn_hidden_units=DNN_HIDDEN_UNITS_DEFAULT,
    learning_rate=LEARNING_RATE_DEFAULT,
    max_steps=MAX_STEPS_DEFAULT,
    batch_size=BATCH_SIZE_DEFAULT,
    eval_freq=EVAL_FREQ_DEFAULT,
    data_dir=None,
    seed=42,
    out_dir=None,
    optimizer='sgd',
    momentum=0.0,
    weight_decay=0.0,
    dropout=0.0,
    batchnorm='none',
    init='course',
    lr_schedule='constant',
    augment=False,
    augment_padding=4,
    validation_size=0,
    preset=None,
    overwrite=False,
):
    """Trains the MLP and returns the metrics written to out_dir/metrics.json.

    dnn_hidden_units: '100,100'-style string or a list of ints. batchnorm: 'none' or 'numpy'
    (modules.BatchNormModule). preset only records which preset the flags came from.
    """
    flags = dict(locals())  # every argument, as metrics.json records them
    check_arguments(build_parser(), flags)
    flags['dnn_hidden_units'] = dnn_hidden_units = hidden_layers(dnn_hidden_units)
    check_mlp_memory(dnn_hidden_units, '--dnn_hidden_units')
    check_batch_statistics(batchnorm, batch_size)

    split = 'validation' if validation_size else 'test'  # what the evaluations use
    run = Run(__file__, flags, out_dir, max_steps, overwrite=overwrite, eval_split=split)
    if batchnorm not in ('none', 'numpy'):
        raise ValueError(f'batchnorm must be one of none, numpy, got {batchnorm!r}.')
    # float32 throughout: half the memory traffic of float64 and twice the BLAS rate.
    model = MLP(
        3 * 32 * 32,
        dnn_hidden_units,
        cifar10_utils.N_CLASSES,
        dtype=np.float32,
        rng=np.random.default_rng(seed),
        batchnorm=batchnorm == 'numpy',
        dropout=dropout,
        init=init,
    )
    opt = make_optimizer(optimizer, model.parameters(), learning_rate, momentum, weight_decay)
    schedule = make_schedule(lr_schedule, opt, max_steps)
    data = cifar10_utils.get_cifar10(
        data_dir, one_hot=True, seed=seed, validation_size=validation_size
    )
    train_set = data['train']
    check_batch_size(batch_size, train_set, validation_size)
    x_eval, y_eval = data[split].images.reshape(data[split].num_examples, -1), data[split].labels
    loss_module = CrossEntropyModule()

    # A diverging run overflows on its way to a NaN loss, which the run reports.
    with run, np.errstate(over='ignore', invalid='ignore'):
        for step in range(1, max_steps + 1):
            if run.stop_requested:
                raise KeyboardInterrupt  # Ctrl-C, answered between two steps
            x, y = train_set.next_batch(batch_size)
            if augment:
                x = cifar10_utils.random_crop_flip(x, train_set.rng, augment_padding)
            loss = train_step(model, loss_module, opt, x.reshape(batch_size, -1), y)
            run.log_step(step, loss)
            check_finite('training loss', loss, step)
            if schedule is not None:
                schedule.step()
            if step % eval_freq == 0 or step == max_steps:
                eval_loss, accuracy, confusion = evaluate(model, loss_module, x_eval, y_eval)
                run.log_eval(step, eval_loss, accuracy, confusion)
                check_finite(f'{split} loss', eval_loss, step)
        if split == 'validation':  # the test set, once, on the final weights
            run.stop_at_once()
            test = data['test']
            _, accuracy, confusion = evaluate(
                model, loss_module, test.images.reshape(test.num_examples, -1), test.labels
            )
            run.log_test(accuracy, confusion)
    return run.metrics


def build_parser():
    p = make_parser(
        __doc__,
        LEARNING_RATE_DEFAULT,
        MAX_STEPS_DEFAULT,
        BATCH_SIZE_DEFAULT,
        EVAL_FREQ_DEFAULT,
        PRESETS,
    )
    add_mlp_flags(p, DNN_HIDDEN_UNITS_DEFAULT, {'none': '', 'numpy': 'modules.BatchNormModule'})
    return p


def main(argv=None):
    return cli(train, parse_with_preset(build_parser(), argv, PRESETS))


if __name__ == '__main__':
    sys.exit(main())
