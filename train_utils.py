"""What the train scripts share: flag parsing, seeding, device choice, the run folder with its
metrics.json and curves.png, the training loop's progress display, and clean exits.

A train script builds its parser with ``make_parser``, defines ``train(...)`` around
``run_training`` (which calls the script's own step and evaluation functions), and ends with
``sys.exit(cli(train, parser))``.

metrics.json, read by report/make_report.py::

    script, out_dir, command, flags, status ('running', 'completed', 'interrupted', 'diverged'),
    steps, train_loss                      one entry per training step (1-based)
    eval_steps, test_loss, test_accuracy   one entry per evaluation
    final_test_accuracy, best_test_accuracy, wall_seconds, train_seconds, started, versions
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import time
from datetime import datetime

import numpy as np

from cifar10_utils import CIFAR10Error

# --------------------------------------------------------------------------- flags


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error message (and exit status 2) instead of usage + error."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {text!r}')
    return value


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f'expected a finite number >= 0, got {text!r}')
    return value


def positive_float(text):
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f'expected a number > 0, got {text!r}')
    return value


def hidden_units(text):
    """'100' -> [100]; '500,500' -> [500, 500]; '' -> [] (no hidden layer)."""
    if not text.strip():
        return []
    try:
        return [positive_int(part.strip()) for part in text.split(',')]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f'expected comma-separated positive integers such as 100 or 500,500, got {text!r}'
        ) from None


def make_parser(description, defaults):
    """A parser with the flags every train script has, using the script's course defaults.

    defaults: dict with learning_rate, max_steps, batch_size, eval_freq.
    """
    p = ArgumentParser(description=description,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--learning_rate', type=positive_float, default=defaults['learning_rate'],
                   help='learning rate of the optimizer')
    p.add_argument('--max_steps', type=positive_int, default=defaults['max_steps'],
                   help='number of training steps (mini-batches)')
    p.add_argument('--batch_size', type=positive_int, default=defaults['batch_size'],
                   help='examples per training step')
    p.add_argument('--eval_freq', type=positive_int, default=defaults['eval_freq'],
                   help='evaluate on the whole test set every this many steps (and at the end)')
    p.add_argument('--data_dir', default=None,
                   help='folder with the CIFAR-10 batch files, downloaded there when missing '
                        '(default: $CIFAR10_DIR, else cifar10/cifar-10-batches-py)')
    p.add_argument('--seed', type=int, default=42,
                   help='seed of the initialisation and of the batch order')
    p.add_argument('--out_dir', default=None,
                   help='folder for metrics.json, curves.png and checkpoints '
                        '(default: a new folder under runs/)')
    return p


def apply_preset(parser, argv, presets):
    """Parses argv; when --preset names one of presets, its values replace the defaults, but
    flags given explicitly on the command line still win."""
    args = parser.parse_args(argv)
    preset = presets.get(getattr(args, 'preset', None))
    if preset:
        given = explicit_flags(parser, argv)
        for name, value in preset.items():
            if name not in given:
                setattr(args, name, value)
    return args


def explicit_flags(parser, argv):
    """{name: value} of the flags given on the command line argv, leaving out the defaults."""
    import copy

    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    probe._defaults.clear()  # those of set_defaults(), which parse_args adds as well
    return vars(probe.parse_args(argv))


def flags_to_argv(flags):
    """{'max_steps': 10, 'dnn_hidden_units': [100]} -> ['--max_steps', '10', ...]: the command
    line that reproduces a run (None and False flags are left out)."""
    argv = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        argv.append(f'--{name}')
        if value is True:
            continue
        argv.append(','.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    return argv


# --------------------------------------------------------------------------- set-up


def set_seed(seed):
    """Seeds Python, NumPy's global generator and, when it is loaded, PyTorch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get('torch')
    if torch is not None:
        torch.manual_seed(seed)


def select_device(name='auto'):
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU falls back to the CPU
    with a one-line warning."""
    import torch
    if name == 'cuda' and not torch.cuda.is_available():
        print('warning: --device cuda asked for, but no CUDA GPU is available; using the CPU.',
              file=sys.stderr)
        return torch.device('cpu')
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(name)


def accuracy(predictions, targets):
    """Fraction of rows whose highest score is the target class.

    predictions: (B, C) scores or probabilities. targets: one-hot (B, C) or class indices (B,).
    """
    predictions = np.asarray(predictions)
    targets = np.asarray(targets)
    if targets.ndim == 2:
        targets = targets.argmax(axis=1)
    return float(np.mean(predictions.argmax(axis=1) == targets))


# --------------------------------------------------------------------------- PyTorch
# torch is imported inside these functions so that the NumPy script never pays its start-up.


def evaluate_torch(model, images, labels, device, batch_size=1000, autocast=False):
    """Mean cross-entropy and accuracy of a logits model over a whole split.

    images: float32 array (N, 3, 32, 32); labels: int64 array (N,). Runs in eval mode (dropout
    off, batch norm on running statistics) under inference_mode, batch_size images at a time
    so that memory stays bounded; restores the model's previous mode.
    """
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.inference_mode(), torch.autocast(device.type, enabled=autocast):
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size]).to(device)
            y = torch.from_numpy(labels[start:start + batch_size]).to(device)
            logits = model(x)
            total_loss += F.cross_entropy(logits.float(), y, reduction='sum').item()
            correct += (logits.argmax(dim=1) == y).sum().item()
    model.train(was_training)
    return total_loss / len(images), correct / len(images)


def augment_batch(x, padding=4, generator=None):
    """Random crop (after zero padding) and random horizontal flip, per image.

    x: tensor (B, C, H, W) -> tensor of the same shape. Zero is the mean pixel here (the mean
    image is subtracted), so the padding adds no artificial edges.
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
    rows = (off[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (off[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    # One gather builds all crops and flips at once, no Python loop over images.
    return padded[torch.arange(b, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def save_checkpoint(path, state):
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    import torch
    tmp = f'{path}.tmp'
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location='cpu'):
    """Loads a checkpoint with weights_only=True: tensors and plain values, never code."""
    import pickle
    import warnings

    import torch
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol of a foreign file
            warnings.simplefilter('ignore')
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FlagError(f'checkpoint {path} does not exist.') from None
    except Exception as e:
        # torch's own messages run over several lines (and suggest weights_only=False).
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ''
        if isinstance(e, pickle.UnpicklingError) or 'Weights only load failed' in detail:
            detail = 'not a PyTorch checkpoint, or it holds more than tensors and plain values'
        raise FlagError(f'{path} is not a readable checkpoint ({type(e).__name__}'
                        f'{": " + detail if detail else ""}).') from None


# --------------------------------------------------------------------------- the run


class FlagError(ValueError):
    """A flag value that cannot work (found once the data is known, e.g. a batch larger than
    the training set); the message says which and why."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def _versions():
    versions = {'python': platform.python_version(), 'numpy': np.__version__}
    torch = sys.modules.get('torch')
    if torch is not None:
        # A plain str: TorchVersion would stop weights_only loading of checkpoints with metrics.
        versions['torch'] = str(torch.__version__)
    return versions


class Run:
    """One training run: its folder and the metrics it writes there."""

    def __init__(self, script, flags, out_dir=None):
        if out_dir is None:
            stem = os.path.splitext(os.path.basename(script))[0]
            out_dir = os.path.join('runs', f'{stem}-{datetime.now():%Y%m%d-%H%M%S}')
            base, n = out_dir, 1
            while os.path.exists(out_dir):
                n += 1
                out_dir = f'{base}-{n}'
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.started = time.perf_counter()
        self.metrics = {
            'script': os.path.basename(script),
            'out_dir': out_dir,
            'command': ['python', os.path.basename(script), *flags_to_argv(flags)],
            'flags': flags,
            'status': 'running',
            'steps': [], 'train_loss': [],
            'eval_steps': [], 'test_loss': [], 'test_accuracy': [],
            'final_test_accuracy': None, 'best_test_accuracy': None,
            'wall_seconds': None, 'train_seconds': 0.0,
            'started': datetime.now().isoformat(timespec='seconds'),
            'versions': _versions(),
        }

    def path(self, name):
        return os.path.join(self.out_dir, name)

    def log_eval(self, step, loss, acc):
        m = self.metrics
        m['eval_steps'].append(step)
        m['test_loss'].append(float(loss))
        m['test_accuracy'].append(float(acc))
        m['final_test_accuracy'] = float(acc)
        m['best_test_accuracy'] = max(m['test_accuracy'])

    def save(self, status=None, plot=False):
        """Writes metrics.json atomically (and curves.png when plot is set)."""
        if status is not None:
            self.metrics['status'] = status
        self.metrics['wall_seconds'] = time.perf_counter() - self.started
        write_json(self.path('metrics.json'), self.metrics)
        if plot:
            plot_curves(self.metrics, self.path('curves.png'))
        return self.metrics


def write_json(path, obj):
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)  # a reader never sees half a file


def plot_curves(metrics, path):
    """Training loss per step (raw and smoothed) and test accuracy per evaluation."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    steps, loss = np.asarray(metrics['steps']), np.asarray(metrics['train_loss'], dtype=float)
    if len(steps):
        ax_loss.plot(steps, loss, color='C0', alpha=0.25, lw=0.8, label='train (per step)')
        ax_loss.plot(steps, smooth(loss), color='C0', label='train (smoothed)')
    if metrics['eval_steps']:
        ax_loss.plot(metrics['eval_steps'], metrics['test_loss'], 'o-', color='C1', ms=3,
                     label='test')
        ax_acc.plot(metrics['eval_steps'], metrics['test_accuracy'], 'o-', color='C1', ms=3)
    ax_loss.set(xlabel='step', ylabel='cross-entropy loss', title='Loss')
    ax_loss.legend(frameon=False)
    ax_acc.set(xlabel='step', ylabel='accuracy', title='Test accuracy')
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = f'{path}.tmp.png'
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def smooth(values, weight=None):
    """Exponential moving average with bias correction; the weight follows the series length
    so that short and long runs look alike."""
    values = np.asarray(values, dtype=float)
    if weight is None:
        weight = 1 - min(1.0, 20.0 / max(len(values), 1))
    out, avg = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out[i] = avg / (1 - weight ** (i + 1))
    return out


DIVERGENCE_FACTOR = 10


def diverged(losses):
    """True when the last loss is NaN or infinite, or over DIVERGENCE_FACTOR times the first.

    The second test matters: a softmax saturated by exploding weights gives the clamped
    cross-entropy of modules.py a large but finite loss (about 87 in float32), never a NaN.
    """
    last = losses[-1]
    return not math.isfinite(last) or last > DIVERGENCE_FACTOR * abs(losses[0])


def run_training(run, max_steps, eval_freq, train_step, evaluate, start_step=1,
                 after_eval=None, learning_rate=None):
    """The loop every train script runs.

    train_step(step) -> float loss of that step's mini-batch (after its update).
    evaluate() -> (test_loss, test_accuracy), run every eval_freq steps and at the last step.
    after_eval(step) is called after each evaluation is logged (checkpoints).
    Saves metrics.json at each evaluation, and metrics.json and curves.png at the end, on
    Ctrl-C (then re-raises KeyboardInterrupt) and when the loss diverges (then raises
    TrainingDiverged; see diverged()).
    """
    from tqdm.auto import tqdm

    m = run.metrics
    bar = tqdm(total=max_steps, initial=start_step - 1, unit='step', dynamic_ncols=True,
               desc=m['script'].removesuffix('.py'), mininterval=0.5, file=sys.stderr)
    step = start_step - 1
    tick = time.perf_counter()
    try:
        for step in range(start_step, max_steps + 1):
            loss = float(train_step(step))
            m['steps'].append(step)
            m['train_loss'].append(loss)
            if diverged(m['train_loss']):
                run.save('diverged', plot=True)
                hint = f' (now {learning_rate:g})' if learning_rate is not None else ''
                raise TrainingDiverged(
                    f'The training loss became {loss:.4g} at step {step} (first step: '
                    f'{m["train_loss"][0]:.4g}): the run diverged; lower --learning_rate'
                    f'{hint}. Metrics up to here are in {run.out_dir}.')
            bar.update(1)
            if step % eval_freq == 0 or step == max_steps:
                m['train_seconds'] += time.perf_counter() - tick
                test_loss, test_acc = evaluate()
                tick = time.perf_counter()
                run.log_eval(step, test_loss, test_acc)
                bar.set_postfix(loss=f'{loss:.3f}', test_acc=f'{test_acc:.3f}', refresh=False)
                bar.write(f'step {step:>6}/{max_steps}  train loss {loss:.4f}  '
                          f'test loss {test_loss:.4f}  test accuracy {test_acc:.4f}')
                if after_eval is not None:
                    after_eval(step)
                run.save()
    except KeyboardInterrupt:
        bar.close()
        run.save('interrupted', plot=True)
        print(f'Interrupted at step {step}; metrics so far are in {run.out_dir}.',
              file=sys.stderr)
        raise
    bar.close()
    return run.save('completed', plot=True)


def cli(train, args):
    """Calls train(**vars(args)) and turns what a user can cause into one line and an exit
    status: 2 for a bad value, 1 for missing data or a diverged run, 130 for Ctrl-C."""
    prog = os.path.basename(sys.argv[0])
    try:
        metrics = train(**vars(args))
    except FlagError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return 2
    except (CIFAR10Error, TrainingDiverged) as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f'final test accuracy {metrics["final_test_accuracy"]:.4f} '
          f'({metrics["wall_seconds"]:.1f} s); metrics and curves in {metrics["out_dir"]}')
    return 0
