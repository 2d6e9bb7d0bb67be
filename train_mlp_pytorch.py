"""Trains the PyTorch MLP on CIFAR-10.

    python train_mlp_pytorch.py                  # the course defaults: SGD, as the NumPy script
    python train_mlp_pytorch.py --preset best    # the best recipe found (see README)

Writes metrics.json and curves.png to --out_dir (default: a new folder under runs/).
"""

import quiet_start  # noqa: F401 (first: see its docstring)

import sys

import numpy as np
import torch
import torch.nn.functional as F

import cifar10_utils
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
from mlp_pytorch import ACTIVATIONS, MLP
from train_utils import Run, check_finite, confusion_matrix, select_device

# The course's defaults (those of the NumPy MLP).
DNN_HIDDEN_UNITS_DEFAULT = '100'
LEARNING_RATE_DEFAULT = 2e-3
MAX_STEPS_DEFAULT = 1500
BATCH_SIZE_DEFAULT = 200
EVAL_FREQ_DEFAULT = 100

PRESETS = {
    'best': dict(
        dnn_hidden_units=[1024, 1024],
        optimizer='adamw',
        learning_rate=1e-3,
        weight_decay=1e-2,
        dropout=0.2,
        batchnorm='torch',
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
    """torch.optim's SGD, Adam or AdamW (whose weight decay is decoupled from the gradient)."""
    if name == 'sgd':
        return torch.optim.SGD(
            params, lr=learning_rate, momentum=momentum, weight_decay=weight_decay
        )
    if momentum:  # Adam's counterpart is its beta1, not a flag here
        raise ValueError(f'--momentum applies only to --optimizer sgd, not {name}.')
    if name in ('adam', 'adamw'):
        adam = torch.optim.Adam if name == 'adam' else torch.optim.AdamW
        return adam(params, lr=learning_rate, weight_decay=weight_decay)
    raise ValueError(f'optimizer must be one of sgd, adam, adamw, got {name!r}.')


def make_schedule(name, optimizer, max_steps):
    """A learning-rate schedule stepped once per training step, or None for a constant rate."""
    if name == 'cosine':
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_steps)
    if name == 'onecycle':
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=optimizer.param_groups[0]['lr'], total_steps=max_steps
        )
    if name != 'constant':
        raise ValueError(f'lr_schedule must be one of constant, cosine, onecycle, got {name!r}.')
    return None


def train_step(model, optimizer, x, y):
    """One update of model on a batch; returns the batch's loss before the update.

    x: float32 (B, 3, 32, 32) images; y: int64 (B,) labels.
    """
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def evaluate(model, images, labels, device, batch_size=1000):
    """Mean loss, accuracy and confusion matrix over a whole split, in eval mode (dropout off,
    batch norm on its running statistics), batch_size images at a time to bound memory.

    images: float32 array (N, 3, 32, 32); labels: int64 array (N,).
    """
    model.eval()
    total_loss, confusion = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).to(device)
            y = torch.from_numpy(labels[start : start + batch_size]).to(device)
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction='sum').item()
            confusion += confusion_matrix(y.cpu().numpy(), logits.argmax(dim=1).cpu().numpy())
    model.train()
    return total_loss / len(images), np.trace(confusion) / len(images), confusion


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
    activation='relu',
    init='course',
    lr_schedule='constant',
    augment=False,
    augment_padding=4,
    device='auto',
    validation_size=0,
    preset=None,
    overwrite=False,
):
    """Trains the MLP and returns the metrics written to out_dir/metrics.json.

    preset only records which preset the flags came from (main applies it).
    """
    flags = dict(locals())  # every argument, as metrics.json records them
    check_arguments(build_parser(), flags)
    flags['dnn_hidden_units'] = dnn_hidden_units = hidden_layers(dnn_hidden_units)
    check_mlp_memory(dnn_hidden_units, '--dnn_hidden_units')
    check_batch_statistics(batchnorm, batch_size)

    split = 'validation' if validation_size else 'test'  # what the evaluations use
    run = Run(__file__, flags, out_dir, max_steps, overwrite=overwrite, eval_split=split)
    torch.manual_seed(seed)
    dev = select_device(device)
    model = MLP(
        3 * 32 * 32,
        dnn_hidden_units,
        cifar10_utils.N_CLASSES,
        batchnorm=batchnorm,
        dropout=dropout,
        activation=activation,
        init=init,
    ).to(dev)
    opt = make_optimizer(optimizer, model.parameters(), learning_rate, momentum, weight_decay)
    schedule = make_schedule(lr_schedule, opt, max_steps)
    data = cifar10_utils.get_cifar10(
        data_dir, one_hot=False, seed=seed, validation_size=validation_size
    )
    train_set, eval_set = data['train'], data[split]
    check_batch_size(batch_size, train_set, validation_size)

    with run:
        run.metrics['device'] = str(dev)
        for step in range(1, max_steps + 1):
            if run.stop_requested:
                raise KeyboardInterrupt  # Ctrl-C, answered between two steps
            x, y = train_set.next_batch(batch_size)
            if augment:
                x = cifar10_utils.random_crop_flip(x, train_set.rng, augment_padding)
            x, y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
            loss = train_step(model, opt, x, y)
            run.log_step(step, loss)
            check_finite('training loss', loss, step)
            if schedule is not None:
                schedule.step()
            if step % eval_freq == 0 or step == max_steps:
                eval_loss, accuracy, confusion = evaluate(
                    model, eval_set.images, eval_set.labels, dev
                )
                run.log_eval(step, eval_loss, accuracy, confusion)
                check_finite(f'{split} loss', eval_loss, step)
        if split == 'validation':  # the test set, once, on the final weights
            run.stop_at_once()
            run.log_test(*evaluate(model, data['test'].images, data['test'].labels, dev)[1:])
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
    add_mlp_flags(
        p,
        DNN_HIDDEN_UNITS_DEFAULT,
        {
            'none': '',
            'torch': 'nn.BatchNorm1d',
            'autograd': 'CustomBatchNormAutograd',
            'manual': 'CustomBatchNormManualModule',
        },
    )
    p.add_argument(
        '--activation', choices=tuple(ACTIVATIONS), default='relu', help='hidden-layer activation'
    )
    p.add_argument(
        '--device',
        choices=('auto', 'cpu', 'cuda'),
        default='auto',
        help='auto: CUDA when available',
    )
    return p


def main(argv=None):
    return cli(train, parse_with_preset(build_parser(), argv, PRESETS))


if __name__ == '__main__':
    sys.exit(main())
