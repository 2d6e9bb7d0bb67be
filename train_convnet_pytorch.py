"""Trains the ConvNet of Table 1 (convnet_pytorch.py) on CIFAR-10, on the CPU or a GPU.

    python train_convnet_pytorch.py                        # the course defaults: Adam, 5000 steps
    python train_convnet_pytorch.py --preset long          # augmentation + one-cycle SGD, longer
    python train_convnet_pytorch.py --resume runs/RUN/last.pt   # continues an interrupted run

Writes metrics.json, curves.png and the checkpoints last.pt and best.pt (the highest test
accuracy so far) to --out_dir (default: a new folder under runs/) at every evaluation. Ctrl-C
saves last.pt at the last completed step; --resume continues from it and ends with the same
weights as a run that was never interrupted.
"""
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time

import torch
import torch.nn.functional as F

import cifar10_utils
from convnet_pytorch import ConvNet
from train_utils import (
    FlagError,
    Run,
    apply_preset,
    augment_batch,
    cli,
    evaluate_torch,
    explicit_flags,
    load_checkpoint,
    make_parser,
    non_negative_float,
    run_training,
    save_checkpoint,
    select_device,
    set_seed,
)

# The course's defaults.
LEARNING_RATE_DEFAULT = 1e-4
BATCH_SIZE_DEFAULT = 32
MAX_STEPS_DEFAULT = 5000
EVAL_FREQ_DEFAULT = 500
OPTIMIZER_DEFAULT = 'ADAM'
SEED_DEFAULT = 42

OPTIMIZERS = ('ADAM', 'SGD')
SCHEDULES = ('constant', 'onecycle')
DEVICES = ('auto', 'cpu', 'cuda')
SGD_MOMENTUM = 0.9

# Flags a preset sets; anything given on the command line overrides them. 'long' is the
# classic recipe for VGG-style networks with batch norm: about 51 epochs of SGD with Nesterov
# momentum, a one-cycle learning rate peaking at 0.05, L2 weight decay, crops and flips.
PRESETS = {
    'long': dict(optimizer='SGD', learning_rate=0.05, weight_decay=5e-4,
                 lr_schedule='onecycle', augment=True, batch_size=128, max_steps=20000,
                 eval_freq=1000),
}

# Flags that decide which weights a run ends with: a resumed run keeps the ones it was started
# with (max_steps too when a schedule is laid out over it).
TRAJECTORY_FLAGS = ('learning_rate', 'batch_size', 'optimizer', 'weight_decay', 'lr_schedule',
                    'augment', 'seed', 'preset')
CHECKPOINT_KEYS = {'model', 'optimizer', 'scheduler', 'scaler', 'step', 'rng', 'metrics',
                   'flags'}
# What a resumed run takes over from the metrics of the run it continues.
RESUMED_METRICS = ('started', 'steps', 'train_loss', 'eval_steps', 'test_loss', 'test_accuracy',
                   'final_test_accuracy', 'best_test_accuracy', 'train_seconds', 'resumed')


# --------------------------------------------------------------------------- the parts


def make_optimizer(name, params, learning_rate, weight_decay):
    # fused: one pass over all parameters instead of several per tensor; on the CPU this makes
    # Adam's update about 5 times faster (30 instead of 150 ms a step for this network).
    if name == 'SGD':
        return torch.optim.SGD(params, lr=learning_rate, momentum=SGD_MOMENTUM, nesterov=True,
                               weight_decay=weight_decay, fused=True)
    return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay, fused=True)


def make_schedule(name, optimizer, max_steps):
    """A per-step learning-rate schedule, or None for a constant rate."""
    if name == 'onecycle':
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=optimizer.param_groups[0]['lr'], total_steps=max_steps)
    return None


def cuda_amp_dtype():
    """bfloat16 where the GPU has it (no loss scaling needed), else float16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_train_step(model, optimizer, train_set, batch_size, device, augment=False,
                    channels_last=False, amp_dtype=None, scaler=None, scheduler=None):
    """Returns step() -> loss: one update of model on the next mini-batch of train_set.

    train_set: a cifar10_utils.DataSet with float32 images (N, 3, 32, 32) and int64 labels
    (N,). The loss comes back as a 0-dim float32 tensor on device, unsynchronised: the caller
    decides when to wait for it (the shared loop reads it once per step).
    amp_dtype: autocast to this dtype (CUDA); scaler: a GradScaler for float16.
    """
    def step():
        images, labels = train_set.next_batch(batch_size)
        # from_numpy shares the batch's memory: the only copy is the transfer to the device.
        x = torch.from_numpy(images).to(device, non_blocking=True)
        y = torch.from_numpy(labels).to(device, non_blocking=True)
        if augment:
            x = augment_batch(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss.detach()

    return step


class InterruptGuard:
    """Keeps Ctrl-C out of the middle of a training step, so that an interrupted run can
    always save a consistent checkpoint.

    Inside ``with guard.critical():`` a first SIGINT is only noted; ``check()`` raises it as
    KeyboardInterrupt at the next safe point (the start of a step or of an evaluation). A
    second one interrupts at once, for a step that hangs. Outside critical sections Ctrl-C
    acts as usual. ``torn`` is True when an interrupt did cut a critical section short.
    """

    def __init__(self):
        self.in_critical = False
        self.pending = False
        self.torn = False

    def _on_sigint(self, signum, frame):
        if self.in_critical and not self.pending:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self):
        # Only the main thread may set signal handlers; elsewhere Ctrl-C acts as usual.
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def critical(self):
        self.in_critical = True
        try:
            yield
        except BaseException:
            self.torn = True
            raise
        finally:
            self.in_critical = False

    def check(self):
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def read_checkpoint(path):
    """Loads a checkpoint written by this script (weights_only); FlagError when it is not one."""
    state = load_checkpoint(path)
    if not (isinstance(state, dict) and CHECKPOINT_KEYS <= set(state)
            and isinstance(state['flags'], dict)):
        raise FlagError(f'{path} is not a checkpoint of train_convnet_pytorch.py.')
    return state


def _check_flags(learning_rate, max_steps, batch_size, eval_freq, optimizer, weight_decay,
                 lr_schedule, device):
    """Raises FlagError for values no run can use (the parser checks them too; this covers
    train() called from Python)."""
    for name, value in (('learning_rate', learning_rate), ('max_steps', max_steps),
                        ('batch_size', batch_size), ('eval_freq', eval_freq)):
        if not (isinstance(value, (int, float)) and value > 0 and value != float('inf')):
            raise FlagError(f'--{name} must be positive, got {value!r}.')
    if not (isinstance(weight_decay, (int, float)) and 0 <= weight_decay < float('inf')):
        raise FlagError(f'--weight_decay must be >= 0, got {weight_decay!r}.')
    for name, value, choices in (('optimizer', optimizer, OPTIMIZERS),
                                 ('lr_schedule', lr_schedule, SCHEDULES),
                                 ('device', device, DEVICES)):
        if value not in choices:
            raise FlagError(f'--{name} must be one of {", ".join(choices)}, got {value!r}.')


def _check_resumable(state, path, flags):
    """FlagError unless flags continue the run that wrote state."""
    saved = state['flags']
    changed = [name for name in TRAJECTORY_FLAGS if saved.get(name) != flags[name]]
    if saved.get('lr_schedule') != 'constant' and saved.get('max_steps') != flags['max_steps']:
        changed.append('max_steps')
    if changed:
        was = ', '.join(f'--{n} {saved.get(n)!r}' for n in changed)
        raise FlagError(f'{path} was trained with {was}; a resumed run must keep them.')
    if state['step'] > flags['max_steps']:
        raise FlagError(f'{path} is at step {state["step"]}, beyond --max_steps '
                        f'{flags["max_steps"]}.')


# --------------------------------------------------------------------------- the run


def train(learning_rate=LEARNING_RATE_DEFAULT, max_steps=MAX_STEPS_DEFAULT,
          batch_size=BATCH_SIZE_DEFAULT, eval_freq=EVAL_FREQ_DEFAULT,
          optimizer=OPTIMIZER_DEFAULT, data_dir=None, seed=SEED_DEFAULT, out_dir=None,
          weight_decay=0.0, lr_schedule='constant', augment=False, device='auto', amp=False,
          channels_last=False, preset=None, resume=None):
    """Trains the ConvNet and returns the metrics written to out_dir/metrics.json.

    resume: path of a last.pt or best.pt to continue from; the flags that shape the run
    (TRAJECTORY_FLAGS) must be those it was started with, and out_dir defaults to the
    checkpoint's folder. preset only records which preset the flags came from (main applies
    it).
    """
    _check_flags(learning_rate, max_steps, batch_size, eval_freq, optimizer, weight_decay,
                 lr_schedule, device)
    flags = dict(learning_rate=learning_rate, max_steps=max_steps, batch_size=batch_size,
                 eval_freq=eval_freq, optimizer=optimizer, data_dir=data_dir, seed=seed,
                 out_dir=out_dir, weight_decay=weight_decay, lr_schedule=lr_schedule,
                 augment=augment, device=device, amp=amp, channels_last=channels_last,
                 preset=preset, resume=resume)
    state = None
    if resume is not None:
        state = read_checkpoint(resume)
        _check_resumable(state, resume, flags)
        if out_dir is None:
            out_dir = os.path.dirname(os.path.abspath(resume))

    dev = select_device(device)
    if amp and dev.type != 'cuda':
        print('warning: --amp applies on CUDA only; training in float32 on the CPU.',
              file=sys.stderr)
    amp_dtype = cuda_amp_dtype() if amp and dev.type == 'cuda' else None
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels

    data = cifar10_utils.get_cifar10(data_dir, one_hot=False, seed=seed)
    train_set, test_set = data['train'], data['test']
    if batch_size > train_set.num_examples:
        raise FlagError(f'--batch_size {batch_size} is larger than the training set '
                        f'({train_set.num_examples} images).')

    set_seed(seed)
    model = ConvNet(test_set.images.shape[1], cifar10_utils.N_CLASSES).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(optimizer, model.parameters(), learning_rate, weight_decay)
    schedule = make_schedule(lr_schedule, opt, max_steps)
    scaler = torch.amp.GradScaler('cuda') if amp_dtype == torch.float16 else None
    start_step = 1
    if state is not None:
        start_step = _restore(state, resume, model, opt, schedule, scaler, train_set)

    run = Run(__file__, flags, out_dir)
    m = run.metrics
    m['device'] = str(dev)
    if state is not None:
        m.update({k: state['metrics'][k] for k in RESUMED_METRICS if k in state['metrics']})
        m['resumed'] = [*m.get('resumed', []), {'from': resume, 'step': start_step - 1}]
        # wall_seconds counts the whole run, the interrupted part included.
        run.started -= state['metrics'].get('wall_seconds') or 0.0

    guard = InterruptGuard()
    step_fn = make_train_step(model, opt, train_set, batch_size, dev, augment=augment,
                              channels_last=channels_last, amp_dtype=amp_dtype, scaler=scaler,
                              scheduler=schedule)
    completed = start_step - 1

    def checkpoint(name='last.pt'):
        m['wall_seconds'] = time.perf_counter() - run.started
        save_checkpoint(run.path(name), {
            'model': model.state_dict(), 'optimizer': opt.state_dict(),
            'scheduler': schedule.state_dict() if schedule is not None else None,
            'scaler': scaler.state_dict() if scaler is not None else None,
            'step': completed,
            'rng': {'torch': torch.get_rng_state(),
                    'cuda': torch.cuda.get_rng_state_all() if dev.type == 'cuda' else [],
                    'train_set': train_set.state_dict()},
            # The loss of a step that was cut short is not part of the checkpoint's run. The
            # JSON round trip leaves plain values only (torch.__version__ is a str subclass
            # that weights_only loading refuses).
            'metrics': json.loads(json.dumps({**m, 'steps': m['steps'][:completed],
                                              'train_loss': m['train_loss'][:completed]})),
            'flags': flags,
        })

    def train_step(step):
        nonlocal completed
        guard.check()
        with guard.critical():
            loss = step_fn()
            completed = step
        return loss

    def evaluate():
        guard.check()
        return evaluate_torch(model, test_set.images, test_set.labels, dev,
                              autocast=amp_dtype is not None)

    def after_eval(step):
        with guard.critical():
            checkpoint()
            if m['test_accuracy'][-1] == m['best_test_accuracy']:
                _link_or_copy(run.path('last.pt'), run.path('best.pt'))

    model.train()
    with guard.installed():
        try:
            return run_training(run, max_steps, eval_freq, train_step, evaluate,
                                start_step=start_step, after_eval=after_eval,
                                learning_rate=learning_rate)
        except KeyboardInterrupt:
            if guard.torn:
                print('The interrupt cut a step short; the last checkpoint is the one of the '
                      'last evaluation.', file=sys.stderr)
            else:
                checkpoint()
                print(f'Saved step {completed} to {run.path("last.pt")}; continue with '
                      f'--resume {run.path("last.pt")}', file=sys.stderr)
            raise


def _restore(state, path, model, opt, schedule, scaler, train_set):
    """Loads a checkpoint's states into the run's objects; returns the step to go on with."""
    try:
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        if schedule is not None:
            schedule.load_state_dict(state['scheduler'])
        if scaler is not None and state['scaler'] is not None:
            scaler.load_state_dict(state['scaler'])
        train_set.load_state_dict(state['rng']['train_set'])
        torch.set_rng_state(state['rng']['torch'])
        cuda_states = state['rng']['cuda']
        if cuda_states and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FlagError(f'{path} does not fit this run ({detail}).') from None
    return state['step'] + 1


def _link_or_copy(src, dst):
    """dst becomes a copy of src: a hard link when the file system has them (no second write
    of the whole checkpoint; the next save of src replaces its name, not its content)."""
    tmp = f'{dst}.tmp'
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# --------------------------------------------------------------------------- command line


def build_parser():
    p = make_parser(__doc__.split('\n\n')[0], dict(
        learning_rate=LEARNING_RATE_DEFAULT, max_steps=MAX_STEPS_DEFAULT,
        batch_size=BATCH_SIZE_DEFAULT, eval_freq=EVAL_FREQ_DEFAULT))
    p.add_argument('--optimizer', type=str.upper, choices=OPTIMIZERS, default=OPTIMIZER_DEFAULT,
                   help=f'ADAM, or SGD with Nesterov momentum {SGD_MOMENTUM}')
    p.add_argument('--weight_decay', type=non_negative_float, default=0.0,
                   help='L2 weight decay')
    p.add_argument('--lr_schedule', choices=SCHEDULES, default='constant',
                   help='learning-rate schedule over max_steps; onecycle peaks at '
                        '--learning_rate')
    p.add_argument('--augment', action='store_true',
                   help='random crops (4-pixel padding) and horizontal flips of each batch')
    p.add_argument('--device', choices=DEVICES, default='auto',
                   help='auto: CUDA when available; cuda without a GPU falls back to the CPU')
    p.add_argument('--amp', action='store_true',
                   help='mixed precision on CUDA (bfloat16 where supported, else float16)')
    p.add_argument('--channels_last', action='store_true',
                   help='NHWC memory layout (faster convolutions on recent GPUs)')
    p.add_argument('--preset', choices=tuple(PRESETS), default=None,
                   help='long: ' + ' '.join(f'--{k} {v}' for k, v in PRESETS['long'].items())
                        + '; flags given explicitly win')
    p.add_argument('--resume', metavar='PATH', default=None,
                   help="continue the run of a checkpoint (its folder's last.pt or best.pt) "
                        'with the flags it was started with; --max_steps (unless scheduled), '
                        '--eval_freq, --out_dir, --data_dir, --device, --amp, '
                        '--channels_last may change')
    p.set_defaults(seed=SEED_DEFAULT)
    return p


def parse_args(argv=None):
    """The command line -> the Namespace of train()'s arguments: --preset values fill in what
    was not given; --resume takes the flags of the checkpoint's run, except those given."""
    parser = build_parser()
    args = apply_preset(parser, argv, PRESETS)
    if args.resume is None:
        return args
    given = explicit_flags(parser, argv)
    fixed = [f'--{name}' for name in TRAJECTORY_FLAGS if name in given]
    if fixed:
        parser.error(f'{", ".join(fixed)} cannot change when resuming: --resume continues '
                     'a run with the flags it was started with.')
    try:
        saved = read_checkpoint(args.resume)['flags']
    except FlagError as e:
        parser.error(str(e))
    names = set(vars(args)) - {'out_dir', 'resume'}
    vars(args).update({k: v for k, v in saved.items() if k in names and k not in given})
    return args


def main(argv=None):
    return cli(train, parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
