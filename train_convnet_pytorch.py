"""Trains the ConvNet of Table 1 (convnet_pytorch.py) on CIFAR-10, on the CPU or a GPU.

    python train_convnet_pytorch.py                        # the course defaults: Adam, 5000 steps
    python train_convnet_pytorch.py --preset fast          # CPU recipe: 0.884 in 47 min, 2 cores
    python train_convnet_pytorch.py --preset long          # augmentation + one-cycle SGD, longer
    python train_convnet_pytorch.py --resume runs/RUN/last.pt   # continues an interrupted run

Writes metrics.json, curves.png and the checkpoints last.pt and best.pt (the highest test
accuracy so far; with --validation_size, validation accuracy) to --out_dir (default: a new
folder under runs/) at every evaluation. Ctrl-C saves last.pt at the last completed step;
--resume continues from it and ends with the same weights as a run that was never interrupted.
"""

import quiet_start  # noqa: F401 (first: see its docstring)

import sys
import time
import zipfile
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse

import cifar10_utils
from command_line import (
    add_convnet_flags,
    check_arguments,
    check_batch_size,
    cli,
    make_parser,
    parse_with_preset,
)
from convnet_pytorch import ConvNet
from resume import (
    check_is_file,
    check_record,
    check_state,
    continue_run,
    has_form,
    resume_defaults,
    resume_point,
)
from train_utils import (
    Run,
    atomic_write,
    check_finite,
    confusion_matrix,
    select_device,
)

# The course's defaults.
LEARNING_RATE_DEFAULT = 1e-4
BATCH_SIZE_DEFAULT = 32
MAX_STEPS_DEFAULT = 5000
EVAL_FREQ_DEFAULT = 500
OPTIMIZER_DEFAULT = 'ADAM'

# 'fast', for a CPU: 25.6 epochs in batches of 128 (the CPU's best images per second); 'long':
# the classic recipe for VGG-style networks with batch norm, about 57 epochs.
PRESETS = {
    'fast': dict(
        optimizer='SGD',
        learning_rate=0.1,
        weight_decay=5e-4,
        label_smoothing=0.1,
        lr_schedule='onecycle',
        augment=True,
        batch_size=128,
        max_steps=9000,
        amp=True,
        eval_freq=1500,
        channels_last=True,
        validation_size=5000,
        flip_test=True,
    ),
    'long': dict(
        optimizer='SGD',
        learning_rate=0.05,
        weight_decay=5e-4,
        lr_schedule='onecycle',
        augment=True,
        batch_size=128,
        max_steps=20000,
        eval_freq=1000,
        amp=True,
        channels_last=True,
        validation_size=5000,
    ),
}
# The flags that decide which weights a run ends with, and which it keeps as the best (the
# evaluations choose it): a resumed run must keep them (and max_steps too, when a schedule is
# laid out over it). amp: bfloat16 rounds every step.
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
    'flip_test',
    'amp',
)


def autocast_dtype(device, amp):
    """The dtype --amp computes in on device, None for float32: on a GPU bfloat16 where it
    has it, else float16; on a CPU bfloat16 where it has native support (AVX512-BF16 or AMX,
    which the convolutions use), else None with a warning: emulated it would be slower."""
    if not amp:
        return None
    if device.type == 'cuda':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return torch.bfloat16
    print(
        'warning: this CPU has no native bfloat16 (AVX512-BF16 or AMX); --amp trains in float32.',
        file=sys.stderr,
    )
    return None


def make_optimizer(name, model, learning_rate, weight_decay=0.0):
    """Adam, or SGD with Nesterov momentum 0.9. Weight decay spares the biases and batch norm's
    scale and shift: batch norm undoes any shrinking of the weights before it, so decaying those
    only fights it. fused: one pass over all parameters instead of a loop over the tensors."""
    params = [
        {'params': [p for p in model.parameters() if p.ndim > 1]},
        {'params': [p for p in model.parameters() if p.ndim <= 1], 'weight_decay': 0.0},
    ]
    if name == 'SGD':
        return torch.optim.SGD(
            params,
            lr=learning_rate,
            momentum=0.9,
            nesterov=True,
            weight_decay=weight_decay,
            fused=True,
        )
    if name == 'ADAM':
        return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay, fused=True)
    raise ValueError(f'optimizer must be one of ADAM, SGD, got {name!r}.')


def train_step(model, optimizer, x, y, amp_dtype=None, scaler=None, label_smoothing=0.0):
    """One update of model on a batch; returns the loss as a 0-dim tensor on x's device,
    without waiting for it (the caller decides when to synchronise).

    x: float32 (B, 3, 32, 32) images; y: int64 (B,) labels. amp_dtype: autocast to it; scaler:
    a GradScaler (float16). label_smoothing: the share of each target spread over all classes."""
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def evaluate(model, images, labels, device, batch_size=1000, amp_dtype=None, flip=False):
    """Mean loss, accuracy and confusion matrix over a whole split in eval mode, batch_size
    images at a time to bound memory. It runs a copy of the model with each batch norm (an
    affine map in eval mode) folded into the convolution before it, in the channels_last layout
    the CPU's convolutions prefer: one pass over the activations instead of two (benchmark.py's
    ConvNet evaluation rows).

    images: float32 array (N, 3, 32, 32); labels: int64 array (N,). flip: average the logits
    of each image and of its mirror image (test-time augmentation; twice the work)."""
    folded = fuse(model.eval()).to(memory_format=torch.channels_last)  # fuse copies the model
    model.train()
    total_loss, confusion = 0.0, 0
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None),
    ):
        for x, y in zip(
            torch.from_numpy(images).split(batch_size), torch.from_numpy(labels).split(batch_size)
        ):
            x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
            logits = folded(x).float()
            if flip:
                logits = (logits + folded(x.flip(3)).float()) / 2
            total_loss += F.cross_entropy(logits, y, reduction='sum').item()
            confusion += confusion_matrix(y.cpu().numpy(), logits.argmax(dim=1).cpu().numpy())
    return total_loss / len(images), np.trace(confusion) / len(images), confusion


def read_checkpoint(path):
    """A checkpoint this script wrote, loaded with weights_only=True (tensors and plain
    values, never code); ValueError with one sentence when it is not one."""
    check_is_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # the first member whose CRC fails (torch.load's
            ours = any(n.endswith('/data.pkl') for n in archive.namelist())  # checks none)
        if damaged is None and ours:  # (not ours: an .npz of train_convnet_numpy.py's, say)
            state = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise ValueError(f'checkpoint {path} does not exist.') from None
    except Exception as e:  # torch's own messages run over many lines
        raise ValueError(f'{path} is not a readable checkpoint ({type(e).__name__}).') from None
    if damaged is not None:
        raise ValueError(f'{path} is not a readable checkpoint: its {damaged} is damaged.')
    if not ours or not (
        isinstance(state, dict) and {'model', 'optimizer', 'step', 'flags', 'metrics'} <= set(state)
    ):
        raise ValueError(f'{path} is not a checkpoint of train_convnet_pytorch.py.')
    check_record(path, state['flags'], state['step'], state['metrics'], build_parser())
    return state


def save_checkpoint(path, step, flags, run, model, optimizer, schedule, scaler, train_set):
    """The whole state after `step`, what --resume needs to go on bit for bit, to path."""
    state = {
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scheduler': schedule.state_dict() if schedule is not None else None,
        'scaler': scaler.state_dict() if scaler is not None else None,
        'step': step,
        'rng': {'torch': torch.get_rng_state(), 'train_set': train_set.state_dict()},
        'metrics': {**run.metrics, 'wall_seconds': time.perf_counter() - run.started},
        'flags': flags,
    }
    atomic_write(path, lambda f: torch.save(state, f))


def check_optimizer_state(path, saved, optimizer):
    """ValueError unless saved, a checkpoint's optimizer state, can go on in optimizer: its
    settings of the form optimizer has (resume.has_form), its moments tensors of the shapes
    of their parameters (and a one-number step). torch would take others and fail mid-run."""
    params = [p for group in optimizer.param_groups for p in group['params']]
    if not (
        isinstance(saved, dict)
        and has_form(saved.get('param_groups'), optimizer.state_dict()['param_groups'])
        and isinstance(saved.get('state'), dict)
        and all(
            isinstance(i, int)
            and 0 <= i < len(params)
            and isinstance(moments, dict)
            and all(
                isinstance(t, torch.Tensor) and (t.numel() == 1 or t.shape == params[i].shape)
                for t in moments.values()
            )
            for i, moments in saved['state'].items()
        )
    ):
        raise ValueError(f'{path} holds an optimizer state that this run cannot go on from.')


def load_checkpoint(path, state, model, optimizer, schedule, scaler, train_set):
    """Puts a read_checkpoint() state back into the model, optimizer, schedule, loss scaler,
    batch order and torch's random numbers; ValueError when it does not fit them."""
    check_optimizer_state(path, state['optimizer'], optimizer)
    if schedule is not None:
        check_state(path, state['scheduler'], schedule.state_dict(), 'a schedule')
    try:
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        if schedule is not None:
            schedule.load_state_dict(state['scheduler'])
        if scaler is not None and state['scaler'] is not None:
            scaler.load_state_dict(state['scaler'])
        train_set.load_state_dict(state['rng']['train_set'])
        torch.set_rng_state(state['rng']['torch'])
    except (KeyError, TypeError, ValueError, RuntimeError):
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
    device='auto',
    amp=False,
    channels_last=False,
    validation_size=0,
    label_smoothing=0.0,
    flip_test=False,
    preset=None,
    resume=None,
    overwrite=False,
):
    """Trains the ConvNet and returns the metrics written to out_dir/metrics.json.

    resume: a last.pt or best.pt to continue from, with the TRAJECTORY_FLAGS it was started
    with; out_dir defaults to its folder. preset only records where the flags came from."""
    flags = dict(locals())  # every argument, as metrics.json records them
    check_arguments(build_parser(), flags)
    state, start = None, 1
    if resume:
        state = read_checkpoint(resume)
        start, out_dir, overwrite = resume_point(
            resume, state, flags, TRAJECTORY_FLAGS, 'best.pt', out_dir, overwrite
        )
    split = 'validation' if validation_size else 'test'  # what evaluations and best.pt use
    run = Run(__file__, flags, out_dir, max_steps, start, overwrite, split)  # checks out_dir

    dev = select_device(device)
    amp_dtype = autocast_dtype(dev, amp)  # bfloat16 needs no loss scaling; float16 does
    run.metrics['device'] = str(dev)
    run.metrics['precision'] = str(amp_dtype or torch.float32).removeprefix('torch.')
    torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels
    layout = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(seed)
    model = ConvNet(3, cifar10_utils.N_CLASSES).to(dev, memory_format=layout)
    opt = make_optimizer(optimizer, model, learning_rate, weight_decay)
    schedule = (
        torch.optim.lr_scheduler.OneCycleLR(opt, learning_rate, total_steps=max_steps)
        if lr_schedule == 'onecycle'
        else None
    )  # None: a constant rate
    scaler = torch.amp.GradScaler('cuda') if amp_dtype == torch.float16 else None
    data = cifar10_utils.get_cifar10(
        data_dir, one_hot=False, seed=seed, validation_size=validation_size
    )
    train_set, eval_set = data['train'], data[split]
    check_batch_size(batch_size, train_set, validation_size)
    evaluate_on = partial(evaluate, model, device=dev, amp_dtype=amp_dtype, flip=flip_test)

    if state is not None:  # one run, one metrics.json, across interruptions
        load_checkpoint(resume, state, model, opt, schedule, scaler, train_set)
        continue_run(run, state['metrics'], resume, start - 1, 'best.pt', 'last.pt')

    with run:
        for step in range(start, max_steps + 1):
            if run.stop_requested:  # Ctrl-C, answered between two steps
                save_checkpoint(
                    run.path('last.pt'),
                    step - 1,
                    flags,
                    run,
                    model,
                    opt,
                    schedule,
                    scaler,
                    train_set,
                )
                print(
                    f'Saved step {step - 1} to {run.path("last.pt")}; continue with '
                    f'--resume {run.path("last.pt")}',
                    file=sys.stderr,
                )
                raise KeyboardInterrupt
            images, labels = train_set.next_batch(batch_size)
            if augment:
                images = cifar10_utils.random_crop_flip(images, train_set.rng)
            # from_numpy shares the batch's memory: the only copy is the one to the device.
            x = torch.from_numpy(images).to(dev, memory_format=layout, non_blocking=True)
            y = torch.from_numpy(labels).to(dev, non_blocking=True)
            loss = train_step(model, opt, x, y, amp_dtype, scaler, label_smoothing)
            if schedule is not None:
                schedule.step()
            run.log_step(step, loss)
            check_finite('training loss', float(loss), step)
            if step % eval_freq == 0 or step == max_steps:
                eval_loss, accuracy, confusion = evaluate_on(eval_set.images, eval_set.labels)
                run.log_eval(step, eval_loss, accuracy, confusion)
                check_finite(f'{split} loss', eval_loss, step)  # no best.pt from a diverged run
                state = (flags, run, model, opt, schedule, scaler, train_set)
                save_checkpoint(run.path('last.pt'), step, *state)
                if run.metrics[f'{split}_accuracy'][-1] == run.metrics[f'best_{split}_accuracy']:
                    save_checkpoint(run.path('best.pt'), step, *state)
        if split == 'validation':  # the test set, once: the final weights, then best.pt's
            run.stop_at_once()
            test = data['test']
            run.log_test(*evaluate_on(test.images, test.labels)[1:])
            model.load_state_dict(read_checkpoint(run.path('best.pt'))['model'])
            run.metrics['best_checkpoint_test_accuracy'] = evaluate_on(test.images, test.labels)[1]
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
    add_convnet_flags(p, OPTIMIZER_DEFAULT, 'pt')
    p.add_argument(
        '--device',
        choices=('auto', 'cpu', 'cuda'),
        default='auto',
        help='auto: CUDA when available; cuda without a GPU falls back to the CPU',
    )
    p.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: bfloat16 on a CPU that has it (AVX512-BF16, AMX) or '
        'a GPU that has it, else float16 on a GPU, float32 on a CPU',
    )
    p.add_argument(
        '--channels_last',
        action='store_true',
        help='NHWC memory layout (faster convolutions on recent GPUs)',
    )
    p.add_argument(
        '--flip_test',
        action='store_true',
        help='evaluate each image averaged with its mirror image',
    )
    return p


def parse_args(argv=None):
    """The command line -> train()'s arguments. --resume: the checkpoint's flags become the
    defaults, so that only the flags given explicitly change."""
    parser = build_parser()
    args = parse_with_preset(parser, argv, PRESETS)
    if args.resume is not None and args.preset is not None:
        parser.error(
            '--preset does not go with --resume: a resumed run keeps the flags it started with.'
        )
    return resume_defaults(parser, argv, args, lambda path: read_checkpoint(path)['flags'])


def main(argv=None):
    return cli(train, parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
