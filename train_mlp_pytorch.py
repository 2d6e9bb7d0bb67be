"""Trains the PyTorch MLP on CIFAR-10.

    python train_mlp_pytorch.py                  # the course defaults: SGD, as the NumPy script
    python train_mlp_pytorch.py --preset best    # the best recipe found (see README)

Writes metrics.json and curves.png to --out_dir (default: a new folder under runs/).
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

import cifar10_utils
from mlp_pytorch import ACTIVATIONS, BATCHNORMS, INITS, MLP

# The course's defaults, flags and flag checks are the NumPy script's.
from train_mlp_numpy import (
    BATCH_SIZE_DEFAULT,
    DNN_HIDDEN_UNITS_DEFAULT,
    EVAL_FREQ_DEFAULT,
    LEARNING_RATE_DEFAULT,
    MAX_STEPS_DEFAULT,
    SEED_DEFAULT,
    check_flags,
)
from train_mlp_numpy import build_parser as numpy_parser
from train_utils import (
    FlagError,
    Run,
    apply_preset,
    augment_batch,
    cli,
    evaluate_torch,
    hidden_units,
    non_negative_float,
    non_negative_int,
    run_training,
    select_device,
    set_seed,
)

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'onecycle')

# Flags a preset sets; anything given on the command line overrides them.
PRESETS = {
    'best': dict(dnn_hidden_units=[1024, 1024], optimizer='adamw', learning_rate=1e-3,
                 weight_decay=1e-2, dropout=0.2, batchnorm='torch', lr_schedule='onecycle',
                 augment=True, augment_padding=0, init='kaiming', batch_size=256,
                 max_steps=5500, eval_freq=500),
}


def make_optimizer(name, params, learning_rate, momentum, weight_decay):
    if name == 'sgd':
        return torch.optim.SGD(params, lr=learning_rate, momentum=momentum,
                               weight_decay=weight_decay)
    if name == 'adam':
        return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)


def make_schedule(name, optimizer, max_steps):
    """A per-step learning-rate schedule, or None for a constant rate."""
    if name == 'cosine':
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_steps)
    if name == 'onecycle':
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=optimizer.param_groups[0]['lr'], total_steps=max_steps)
    return None


def make_train_step(model, optimizer, train_set, batch_size, device, schedule=None,
                    augment=False, augment_padding=4):
    """Returns step(step_number) -> loss: one update of model on the next mini-batch of
    train_set (images float32 (N, 3, 32, 32), int64 labels (N,))."""
    def step(_=None):
        x, y = train_set.next_batch(batch_size)
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        if augment:
            x = augment_batch(x, padding=augment_padding)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        return loss.item()
    return step


def check_choice(name, value, choices):
    if value not in choices:
        raise FlagError(f'--{name} must be one of {", ".join(choices)}, got {value!r}.')


def train(dnn_hidden_units=DNN_HIDDEN_UNITS_DEFAULT, learning_rate=LEARNING_RATE_DEFAULT,
          max_steps=MAX_STEPS_DEFAULT, batch_size=BATCH_SIZE_DEFAULT,
          eval_freq=EVAL_FREQ_DEFAULT, data_dir=None, seed=SEED_DEFAULT, out_dir=None,
          optimizer='sgd', momentum=0.0, weight_decay=0.0, dropout=0.0, batchnorm='none',
          activation='relu', init='course', lr_schedule='constant', augment=False,
          augment_padding=4, device='auto', preset=None):
    """Trains the MLP and returns the metrics written to out_dir/metrics.json.

    preset only records which preset the flags came from (main applies it).
    """
    hidden = (hidden_units(dnn_hidden_units) if isinstance(dnn_hidden_units, str)
              else list(dnn_hidden_units))
    check_flags(hidden, learning_rate, max_steps, batch_size, eval_freq)
    for name, value, choices in (('optimizer', optimizer, OPTIMIZERS),
                                 ('lr_schedule', lr_schedule, SCHEDULES),
                                 ('batchnorm', batchnorm, tuple(BATCHNORMS)),
                                 ('activation', activation, tuple(ACTIVATIONS)),
                                 ('init', init, INITS)):
        check_choice(name, value, choices)
    if not 0 <= dropout < 1:
        raise FlagError(f'--dropout must be in [0, 1), got {dropout!r}.')
    if momentum < 0 or weight_decay < 0:
        raise FlagError('--momentum and --weight_decay must be >= 0.')
    flags = dict(dnn_hidden_units=hidden, learning_rate=learning_rate, max_steps=max_steps,
                 batch_size=batch_size, eval_freq=eval_freq, data_dir=data_dir, seed=seed,
                 out_dir=out_dir, optimizer=optimizer, momentum=momentum,
                 weight_decay=weight_decay, dropout=dropout, batchnorm=batchnorm,
                 activation=activation, init=init, lr_schedule=lr_schedule, augment=augment,
                 augment_padding=augment_padding, device=device, preset=preset)

    set_seed(seed)
    dev = select_device(device)
    data = cifar10_utils.get_cifar10(data_dir, one_hot=False, seed=seed)
    train_set, test_set = data['train'], data['test']
    if batch_size > train_set.num_examples:
        raise FlagError(f'--batch_size {batch_size} is larger than the training set '
                        f'({train_set.num_examples} images).')
    n_inputs = int(np.prod(test_set.images.shape[1:]))
    model = MLP(n_inputs, hidden, cifar10_utils.N_CLASSES, batchnorm=batchnorm,
                dropout=dropout, activation=activation, init=init).to(dev)
    opt = make_optimizer(optimizer, model.parameters(), learning_rate, momentum, weight_decay)
    schedule = make_schedule(lr_schedule, opt, max_steps)
    run = Run(__file__, flags, out_dir)
    run.metrics['device'] = str(dev)

    train_step = make_train_step(model, opt, train_set, batch_size, dev, schedule=schedule,
                                 augment=augment, augment_padding=augment_padding)

    def evaluate():
        return evaluate_torch(model, test_set.images, test_set.labels, dev)

    model.train()
    return run_training(run, max_steps, eval_freq, train_step, evaluate,
                        learning_rate=learning_rate)


def build_parser():
    p = numpy_parser()  # the NumPy script's flags and course defaults, then PyTorch's options
    p.description = __doc__.split('\n\n')[0]
    p.add_argument('--optimizer', choices=OPTIMIZERS, default='sgd', help='optimizer')
    p.add_argument('--momentum', type=non_negative_float, default=0.0, help='SGD momentum')
    p.add_argument('--weight_decay', type=non_negative_float, default=0.0,
                   help='weight decay (decoupled for adamw, L2 otherwise)')
    p.add_argument('--dropout', type=non_negative_float, default=0.0,
                   help='dropout probability after each hidden layer, in [0, 1)')
    p.add_argument('--batchnorm', choices=tuple(BATCHNORMS), default='none',
                   help='batch normalization after each hidden linear layer: torch '
                        '(nn.BatchNorm1d) or one of custom_batchnorm.py')
    p.add_argument('--activation', choices=tuple(ACTIVATIONS), default='relu',
                   help='hidden-layer activation')
    p.add_argument('--init', choices=INITS, default='course',
                   help="course: weights N(0, 1e-4^2), as the NumPy MLP; kaiming: PyTorch's "
                        'default')
    p.add_argument('--lr_schedule', choices=SCHEDULES, default='constant',
                   help='learning-rate schedule over max_steps')
    p.add_argument('--augment', action='store_true',
                   help='random crops (after zero padding) and horizontal flips of each batch')
    p.add_argument('--augment_padding', type=non_negative_int, default=4,
                   help='padding of the random crops of --augment; 0: flips only')
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                   help='auto: CUDA when available')
    p.add_argument('--preset', choices=tuple(PRESETS), default=None,
                   help='a tuned set of flags (see README); flags given explicitly win')
    return p


def main(argv=None):
    return cli(train, apply_preset(build_parser(), argv, PRESETS))


if __name__ == '__main__':
    sys.exit(main())
