"""Trains the NumPy ConvNet of Table 1 (convnet_numpy.py) on CIFAR-10: every forward pass,
backward pass and optimizer step written by hand (modules.py, optimizers.py).

    python train_convnet_numpy.py                        # the course defaults: Adam, 5000 steps
    python train_convnet_numpy.py --resume runs/RUN/last.npz   # continues an interrupted run

Writes metrics.json, curves.png and the checkpoints last.npz and best.npz (the highest test
accuracy so far; with --validation_size, validation accuracy) to --out_dir (default: a new
folder under runs/) at every evaluation. Ctrl-C saves last.npz at the last completed step;
--resume continues from it and ends with the same weights as a run that was never interrupted.
A checkpoint is an .npz of plain arrays, loaded without pickle.
"""

import quiet_start  # noqa: F401 (first: see its docstring)

import json
import sys
import time

import numpy as np

import cifar10_utils
import optimizers
from command_line import (
    add_convnet_flags,
    check_arguments,
    check_batch_size,
    cli,
    make_parser,
)
from convnet_numpy import ConvNet
from modules import CrossEntropyModule
from resume import (
    check_is_file,
    check_record,
    check_state,
    continue_run,
    resume_defaults,
    resume_point,
)
from train_utils import (
    Run,
    atomic_write,
    check_finite,
    confusion_matrix,
)

# The course's defaults, as train_convnet_pytorch.py.
LEARNING_RATE_DEFAULT = 1e-4
BATCH_SIZE_DEFAULT = 32
MAX_STEPS_DEFAULT = 5000
EVAL_FREQ_DEFAULT = 500
OPTIMIZER_DEFAULT = 'ADAM'

# The flags that decide which weights a run ends with, and which it keeps as the best (the
# evaluations choose it): a resumed run must keep them (and max_steps too, when a schedule is
# laid out over it).
TRAJECTORY_FLAGS = (
    'learning_rate',
    'batch_size',
    'optimizer',
    'weight_decay',
    'lr_schedule',
    'augment',
    'seed',
    'validation_size',
    'label_smoothing',
    'eval_freq',
)


def make_optimizer(name, model, learning_rate, weight_decay=0.0):
    """Adam, or SGD with Nesterov momentum 0.9, as train_convnet_pytorch.py: the weight decay
    spares the biases and batch norm's gamma and beta (decay_1d=False)."""
    if name == 'SGD':
        return optimizers.SGD(
            model.parameters(),
            learning_rate,
            momentum=0.9,
            nesterov=True,
            weight_decay=weight_decay,
            decay_1d=False,
        )
    if name == 'ADAM':
        return optimizers.Adam(
            model.parameters(), learning_rate, weight_decay=weight_decay, decay_1d=False
        )
    raise ValueError(f'optimizer must be one of ADAM, SGD, got {name!r}.')


def smooth(targets, label_smoothing):
    """One-hot targets (B, C) -> (1 - a) t + a / C: the share a spread over all classes."""
    return targets * (1 - label_smoothing) + label_smoothing / targets.shape[1]


def train_step(model, loss_module, optimizer, x, y):
    """One update of model on a batch; returns the batch's loss before the update.

    x: float32 (B, 3, 32, 32) images; y: (B, 10) targets, one-hot or smoothed."""
    probs = model.forward(x)
    loss = loss_module.forward(probs, y)
    model.backward(loss_module.backward(probs, y), input_grad=False)  # dL/dx is not needed
    optimizer.step()
    return loss


def evaluate(model, loss_module, images, targets, batch_size=100):
    """Mean loss, accuracy and confusion matrix over a whole split in evaluation mode (batch
    norm on its running statistics), batch_size images at a time: im2col's rows grow with the
    batch (conv2's are 590 KB an image in float32), and batches whose arrays stay in the caches
    run fastest."""
    model.eval()
    total_loss, confusion = 0.0, 0
    for start in range(0, len(images), batch_size):
        probs = model.forward(images[start : start + batch_size])
        y = targets[start : start + batch_size]
        total_loss += loss_module.forward(probs, y) * len(y)
        confusion += confusion_matrix(y.argmax(axis=1), probs.argmax(axis=1))
    model.train()
    return total_loss / len(images), np.trace(confusion) / len(images), confusion


def model_arrays(model):
    """The parameters, then every batch norm's running statistics, by position."""
    arrays = {f'param/{i}': p for i, (p, _) in enumerate(model.parameters())}
    for i, bn in enumerate(model.batch_norms()):
        arrays[f'running_mean/{i}'] = bn.running_mean
        arrays[f'running_var/{i}'] = bn.running_var
    return arrays


def save_checkpoint(path, step, flags, run, model, optimizer, schedule, train_set):
    """The whole state after `step`, what --resume needs to go on bit for bit, to path as an
    .npz: the arrays of the model and optimizer, and one JSON record of everything else."""
    opt_state = optimizer.state_dict()
    arrays = {
        **model_arrays(model),
        **{f'optimizer/{k}': v for k, v in opt_state.items() if isinstance(v, np.ndarray)},
    }
    record = {
        'step': step,
        'flags': flags,
        'optimizer': {k: v for k, v in opt_state.items() if not isinstance(v, np.ndarray)},
        'schedule': schedule.state_dict() if schedule is not None else None,
        'train_set': train_set.state_dict(),
        'metrics': {**run.metrics, 'wall_seconds': time.perf_counter() - run.started},
    }
    record = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, record=record, **arrays))


def read_checkpoint(path):
    """A checkpoint this script wrote: {'record': its JSON record, 'arrays': {name: array}},
    read without pickle; ValueError with one sentence when it is not one."""
    check_is_file(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
        record = arrays.pop('record', None)  # None: a .pt of train_convnet_pytorch.py's, say
        record = None if record is None else json.loads(record.tobytes())
    except FileNotFoundError:
        raise ValueError(f'checkpoint {path} does not exist.') from None
    except Exception as e:  # not a zip, not an array, not JSON: numpy's messages vary
        raise ValueError(f'{path} is not a readable checkpoint ({type(e).__name__}).') from None
    if not (isinstance(record, dict) and {'step', 'flags', 'metrics'} <= set(record)):
        raise ValueError(f'{path} is not a checkpoint of train_convnet_numpy.py.')
    check_record(path, record['flags'], record['step'], record['metrics'], build_parser())
    return {'record': record, 'arrays': arrays}


def load_model(arrays, model):
    """Copies a checkpoint's arrays into the model's parameters and running statistics."""
    for name, array in model_arrays(model).items():
        if arrays[name].shape != array.shape:
            raise ValueError(f'{name} has shape {arrays[name].shape}, not {array.shape}.')
        array[...] = arrays[name]


def load_checkpoint(path, state, model, optimizer, schedule, train_set):
    """Puts a read_checkpoint() state back into the model, optimizer, schedule and batch
    order; ValueError when it does not fit them."""
    record, arrays, prefix = state['record'], state['arrays'], 'optimizer/'
    optimizer_arrays = {
        k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)
    }
    own = {k: v for k, v in optimizer.state_dict().items() if not isinstance(v, np.ndarray)}
    check_state(path, record.get('optimizer'), own, 'an optimizer')
    if schedule is not None:
        check_state(path, record.get('schedule'), schedule.state_dict(), 'a schedule')
    try:
        load_model(arrays, model)
        optimizer.load_state_dict({**record['optimizer'], **optimizer_arrays})
        if schedule is not None:
            schedule.load_state_dict(record['schedule'])
        train_set.load_state_dict(record['train_set'])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f'{path} does not hold the states of this run (model, optimizer, '
            'schedule, batch order).'
        ) from None


def train(
    learning_rate=LEARNING_RATE_DEFAULT,
    max_steps=MAX_STEPS_DEFAULT,
    batch_size=BATCH_SIZE_DEFAULT,
    eval_freq=EVAL_FREQ_DEFAULT,
    optimizer=OPTIMIZER_DEFAULT,
    data_dir=None,
    seed=42,
    out_dir=None,
    weight_decay=0.0,
    lr_schedule='constant',
    augment=False,
    validation_size=0,
    label_smoothing=0.0,
    resume=None,
    overwrite=False,
):
    """Trains the NumPy ConvNet and returns the metrics written to out_dir/metrics.json.

    resume: a last.npz or best.npz to continue from, with the TRAJECTORY_FLAGS it was started
    with; out_dir defaults to its folder."""
    flags = dict(locals())  # every argument, as metrics.json records them
    check_arguments(build_parser(), flags)
    state, start = None, 1
    if resume:
        state = read_checkpoint(resume)
        start, out_dir, overwrite = resume_point(
            resume, state['record'], flags, TRAJECTORY_FLAGS, 'best.npz', out_dir, overwrite
        )
    split = 'validation' if validation_size else 'test'  # what evaluations and best.npz use
    run = Run(__file__, flags, out_dir, max_steps, start, overwrite, split)  # checks out_dir
    run.metrics['precision'] = 'float32'

    # float32: half the memory traffic of float64 and twice the BLAS rate.
    model = ConvNet(3, cifar10_utils.N_CLASSES, dtype=np.float32, rng=np.random.default_rng(seed))
    opt = make_optimizer(optimizer, model, learning_rate, weight_decay)
    schedule = None  # a constant rate
    if lr_schedule == 'onecycle':
        schedule = optimizers.OneCycleLR(opt, max_lr=learning_rate, total_steps=max_steps)
    data = cifar10_utils.get_cifar10(
        data_dir, one_hot=True, seed=seed, validation_size=validation_size
    )
    train_set, eval_set = data['train'], data[split]
    check_batch_size(batch_size, train_set, validation_size)
    loss_module = CrossEntropyModule()
    if state is not None:  # one run, one metrics.json, across interruptions
        load_checkpoint(resume, state, model, opt, schedule, train_set)
        continue_run(run, state['record']['metrics'], resume, start - 1, 'best.npz', 'last.npz')

    # A diverging run overflows on its way to a NaN loss, which the run reports.
    with run, np.errstate(over='ignore', invalid='ignore'):
        for step in range(start, max_steps + 1):
            if run.stop_requested:  # Ctrl-C, answered between two steps
                save_checkpoint(
                    run.path('last.npz'), step - 1, flags, run, model, opt, schedule, train_set
                )
                print(
                    f'Saved step {step - 1} to {run.path("last.npz")}; continue with '
                    f'--resume {run.path("last.npz")}',
                    file=sys.stderr,
                )
                raise KeyboardInterrupt
            images, labels = train_set.next_batch(batch_size)
            if augment:
                images = cifar10_utils.random_crop_flip(images, train_set.rng)
            loss = train_step(model, loss_module, opt, images, smooth(labels, label_smoothing))
            if schedule is not None:
                schedule.step()
            run.log_step(step, loss)
            check_finite('training loss', loss, step)
            if step % eval_freq == 0 or step == max_steps:
                eval_loss, accuracy, confusion = evaluate(
                    model, loss_module, eval_set.images, eval_set.labels
                )
                run.log_eval(step, eval_loss, accuracy, confusion)
                check_finite(f'{split} loss', eval_loss, step)  # no best.npz from a diverged run
                state = (flags, run, model, opt, schedule, train_set)
                save_checkpoint(run.path('last.npz'), step, *state)
                if run.metrics[f'{split}_accuracy'][-1] == run.metrics[f'best_{split}_accuracy']:
                    save_checkpoint(run.path('best.npz'), step, *state)
        if split == 'validation':  # the test set, once: the final weights, then best.npz's
            run.stop_at_once()
            test = data['test']
            run.log_test(*evaluate(model, loss_module, test.images, test.labels)[1:])
            load_model(read_checkpoint(run.path('best.npz'))['arrays'], model)
            run.metrics['best_checkpoint_test_accuracy'] = evaluate(
                model, loss_module, test.images, test.labels
            )[1]
    return run.metrics


def build_parser():
    p = make_parser(
        __doc__, LEARNING_RATE_DEFAULT, MAX_STEPS_DEFAULT, BATCH_SIZE_DEFAULT, EVAL_FREQ_DEFAULT
    )
    add_convnet_flags(p, OPTIMIZER_DEFAULT, 'npz')
    return p


def parse_args(argv=None):
    """The command line -> train()'s arguments; with --resume the checkpoint's flags are the
    defaults, so that only the flags given explicitly change."""
    parser = build_parser()
    return resume_defaults(
        parser, argv, parser.parse_args(argv), lambda path: read_checkpoint(path)['record']['flags']
    )


def main(argv=None):
    return cli(train, parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
