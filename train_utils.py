"""Chores the train scripts share, none of them the lesson: flags, device choice, the run
folder (metrics.json, curves.png), the progress bar and clean exits."""
import argparse
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from datetime import datetime

import numpy as np
from tqdm.auto import tqdm


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error message (and exit status 2) instead of usage + error."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def _number(convert, low_ok, what):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > 0 or (low_ok and value == 0))):
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
        return value
    return parse


positive_int = _number(int, False, 'an integer > 0')
non_negative_int = _number(int, True, 'an integer >= 0')
positive_float = _number(float, False, 'a finite number > 0')
non_negative_float = _number(float, True, 'a finite number >= 0')


def hidden_units(text):
    """'100' -> [100]; '500,500' -> [500, 500]; '' -> [] (no hidden layer)."""
    try:
        return [positive_int(part) for part in text.split(',')] if text.strip() else []
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError('expected comma-separated positive integers such as '
                                         f'100 or 500,500, got {text!r}') from None


def make_parser(doc, learning_rate, max_steps, batch_size, eval_freq, presets=None):
    """The flags every train script has, with its course defaults; doc: its docstring."""
    p = ArgumentParser(description=doc.split('\n\n')[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--learning_rate', type=positive_float, default=learning_rate,
                   help='learning rate of the optimizer')
    p.add_argument('--max_steps', type=positive_int, default=max_steps,
                   help='number of training steps (mini-batches)')
    p.add_argument('--batch_size', type=positive_int, default=batch_size,
                   help='examples per training step')
    p.add_argument('--eval_freq', type=positive_int, default=eval_freq,
                   help='evaluate on the whole test set every this many steps (and at the end)')
    p.add_argument('--data_dir', help='folder with the CIFAR-10 batch files, downloaded there '
                   'when missing (default: $CIFAR10_DIR, else cifar10/cifar-10-batches-py)')
    p.add_argument('--seed', type=int, default=42,
                   help='seed of the initialisation and of the batch order')
    p.add_argument('--out_dir', help='folder for metrics.json, curves.png and checkpoints '
                   '(default: a new folder under runs/)')
    if presets:
        p.add_argument('--preset', choices=tuple(presets),
                       help='a tuned set of flags (see README); flags given explicitly win')
    return p


def parse_with_preset(parser, argv, presets):
    """Parses argv; a --preset's values become the defaults, so explicit flags still win."""
    preset = parser.parse_known_args(argv)[0].preset
    if preset is not None:
        parser.set_defaults(**presets[preset])
    return parser.parse_args(argv)


def flags_to_argv(flags):
    """{'max_steps': 10, 'dnn_hidden_units': [100]} -> ['--max_steps', '10', ...]: the command
    line that reproduces a run (None and False flags are left out)."""
    return [arg for k, v in flags.items() if v is not None and v is not False
            for arg in ([f'--{k}'] if v is True else
                        [f'--{k}', ','.join(map(str, v)) if isinstance(v, list) else str(v)])]


def select_device(name='auto'):
    """'auto': CUDA when there is a GPU, else the CPU; 'cuda' without one: a warning, the CPU."""
    import torch
    if name != 'cpu' and not torch.cuda.is_available():
        if name == 'cuda':
            print('warning: no CUDA GPU is available; using the CPU.', file=sys.stderr)
        return torch.device('cpu')
    return torch.device('cuda' if name == 'auto' else name)


class Run:
    """A run's folder, metrics and progress bar: ``with Run(...) as run:`` around the loop.

    Inside, Ctrl-C sets stop_requested, which the loop reads between steps (a second Ctrl-C
    stops at once). Leaving saves metrics.json and curves.png: 'completed', 'interrupted' or
    'diverged'. metrics.json also holds the flags, the command that reproduces the run, per
    step the training loss, per evaluation the test loss and accuracy, and the wall time.
    """

    def __init__(self, script, flags, out_dir=None, max_steps=None, start_step=1):
        name = os.path.basename(script)
        if out_dir is None:
            out_dir = base = os.path.join('runs', f'{name[:-3]}-{datetime.now():%Y%m%d-%H%M%S}')
            n = 1
            while os.path.exists(out_dir):
                n, out_dir = n + 1, f'{base}-{n + 1}'
        self.out_dir, self.started, self.stop_requested = out_dir, time.perf_counter(), False
        versions = {m: str(sys.modules[m].__version__) for m in ('numpy', 'torch')
                    if m in sys.modules}  # str: weights_only loading refuses TorchVersion
        self.metrics = dict(
            script=name, out_dir=out_dir, command=['python', name, *flags_to_argv(flags)],
            flags=flags, status='running', steps=[], train_loss=[], eval_steps=[],
            test_loss=[], test_accuracy=[], final_test_accuracy=None, best_test_accuracy=None,
            wall_seconds=None, started=datetime.now().isoformat(timespec='seconds'),
            versions={'python': platform.python_version(), **versions})
        # The bar appears with the first step: a run that fails to start shows only its error.
        self.bar = None
        self._bar_args = dict(total=max_steps, initial=start_step - 1, desc=name[:-3])

    def path(self, name):
        return os.path.join(self.out_dir, name)

    def log_step(self, step, loss):
        """Records a step's training loss; FloatingPointError when it is not finite."""
        self.metrics['steps'].append(step)
        self.metrics['train_loss'].append(float(loss))
        if self.bar is None:
            self.bar = tqdm(unit='step', file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                            **self._bar_args)
        self.bar.update(1)
        if not math.isfinite(loss):
            raise FloatingPointError(f'The training loss became {float(loss)} at step {step}: '
                                     'the run diverged; lower --learning_rate.')

    def log_eval(self, step, loss, accuracy):
        """Records and prints an evaluation, then saves metrics.json."""
        m = self.metrics
        m['eval_steps'].append(step)
        m['test_loss'].append(float(loss))
        m['test_accuracy'].append(float(accuracy))
        m['final_test_accuracy'], m['best_test_accuracy'] = accuracy, max(m['test_accuracy'])
        self.bar.write(f'step {step:>6}  train loss {m["train_loss"][-1]:.4f}  test loss '
                       f'{loss:.4f}  test accuracy {accuracy:.4f}', file=sys.stderr)
        self.save()

    def save(self, status=None):
        """Writes metrics.json atomically (and curves.png with a final status)."""
        self.metrics['wall_seconds'] = time.perf_counter() - self.started
        os.makedirs(self.out_dir, exist_ok=True)  # at the first save: a failed start leaves none
        if status is not None:
            self.metrics['status'] = status
            plot_curves(self.metrics, self.path('curves.png'))
        write_json(self.path('metrics.json'), self.metrics)

    def _on_sigint(self, signum, frame):
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, kind, error, traceback):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self.bar is not None:
            self.bar.close()
        if kind in (None, KeyboardInterrupt, FloatingPointError):
            self.save({None: 'completed', KeyboardInterrupt: 'interrupted'}.get(kind, 'diverged'))
        if kind is KeyboardInterrupt:
            print(f'Interrupted after step {(self.metrics["steps"] or [0])[-1]}; metrics so far '
                  f'are in {self.out_dir}.', file=sys.stderr)
        if kind is FloatingPointError:
            error.args = (f'{error} Metrics up to here are in {self.out_dir}.',)


def write_json(path, obj):
    with open(f'{path}.tmp', 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(f'{path}.tmp', path)  # a reader never sees half a file


def plot_curves(metrics, path):
    """A run's loss and accuracy curves as a PNG: drawn here only, for run folders and the
    report alike, without dates or versions in the file (an unchanged run redraws the same)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    steps, loss = np.asarray(metrics['steps']), np.asarray(metrics['train_loss'], dtype=float)
    if len(steps):
        window = max(1, len(loss) // 20)  # a running mean over a twentieth of the run
        ax_loss.plot(steps, loss, color='C0', alpha=0.25, lw=0.8, label='train (per step)')
        ax_loss.plot(steps[window - 1:], np.convolve(loss, np.ones(window) / window, 'valid'),
                     color='C0', label='train (smoothed)')
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
    fig.savefig(f'{path}.tmp.png', dpi=120, metadata={'Software': None})
    plt.close(fig)
    os.replace(f'{path}.tmp.png', path)


def cli(train, args):
    """train(**vars(args)); what a user can cause becomes one line and an exit status: 2 a bad
    value, 1 missing data or a diverged run, 130 Ctrl-C."""
    from cifar10_utils import CIFAR10Error

    try:
        metrics = train(**vars(args))
    except (ValueError, CIFAR10Error, FloatingPointError) as e:
        print(f'{os.path.basename(sys.argv[0])}: error: {e}', file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        return 130
    print(f'final test accuracy {metrics["final_test_accuracy"]:.4f} '
          f'({metrics["wall_seconds"]:.1f} s); metrics and curves in {metrics["out_dir"]}')
    return 0
