"""Chores the train scripts share, none of them the lesson: device choice, the run folder
(metrics.json, curves.png), the progress bar, Ctrl-C and SIGTERM."""

from quiet_start import on_stop_signals

import contextlib
import errno
import fcntl
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime

import numpy as np
from tqdm.auto import tqdm

from command_line import flags_to_argv

# The longest path (less room for the files in it) and file name the system takes.
PATH_MAX, NAME_MAX = os.pathconf('/', 'PC_PATH_MAX'), os.pathconf('/', 'PC_NAME_MAX')
# What a run writes in its folder; --overwrite replaces all of them.
RUN_FILES = ('metrics.json', 'curves.png', 'last.pt', 'best.pt', 'last.npz', 'best.npz')


def select_device(name='auto'):
    """'auto': CUDA when there is a GPU, else the CPU; 'cuda' without one: a warning, the CPU."""
    import torch

    if name not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f'device must be one of auto, cpu, cuda, got {name!r}.')
    if name != 'cpu' and not torch.cuda.is_available():
        if name == 'cuda':
            print('warning: no CUDA GPU is available; using the CPU.', file=sys.stderr)
        return torch.device('cpu')
    return torch.device('cuda' if name == 'auto' else name)


class Run:
    """A run's folder, metrics and progress bar: ``with Run(...) as run:`` around the loop.

    Made before any data loads, it refuses at once an out_dir it cannot write or that holds
    another run (unless overwrite). Entering ``with`` claims the folder for this run (a lock
    that another run on it is refused by, in one sentence). Inside, Ctrl-C, SIGTERM or SIGHUP
    sets stop_requested, which the loop reads between steps (a second one stops at once, and
    after stop_at_once() the first does). Leaving saves metrics.json, then curves.png, with
    signals held off until both are written: status 'completed', 'interrupted', 'diverged'
    or 'failed' (a write or an allocation failed), the flags, the command that reproduces
    the run, the training loss per step, the loss and accuracy on eval_split per evaluation
    ('validation': the script sets final_test_accuracy once, at the end), and the wall time."""

    def __init__(
        self,
        script,
        flags,
        out_dir=None,
        max_steps=None,
        start_step=1,
        overwrite=False,
        eval_split='test',
    ):
        name = os.path.basename(script)
        out_dir = out_dir and os.fspath(out_dir)  # a pathlib.Path from train(...), as text
        self.named = bool(out_dir)  # else a new folder under runs/
        if not self.named:
            out_dir = os.path.join('runs', f'{name[:-3]}-{datetime.now():%Y%m%d-%H%M%S}')
        self.may_replace = overwrite or not self.named
        check_out_dir(out_dir, self.may_replace)
        self.out_dir, self.made = out_dir, False  # made at the first write (see path)
        self.replaces = overwrite and start_step == 1  # a new run over the folder's old one
        self.stop_requested, self.signal = False, signal.SIGINT
        self.carried = []  # (checkpoint, its name here): what a resumed run brings along
        self.at_once = self.saving = False  # what a signal does now (see _on_signal)
        self.saved = False  # whether metrics.json holds this run
        self.started = time.perf_counter()
        versions = {
            m: str(sys.modules[m].__version__) for m in ('numpy', 'torch') if m in sys.modules
        }  # str: weights_only loading refuses TorchVersion
        argv = flags_to_argv({k: v for k, v in flags.items() if k != 'resume'})  # from step 1
        self.metrics = dict(
            script=name,
            out_dir=out_dir,
            command=['python', name, *argv],
            flags=flags,
            status='running',
            steps=[],
            train_loss=[],
            eval_steps=[],
            eval_split=eval_split,
            **{
                f'{eval_split}_loss': [],
                f'{eval_split}_accuracy': [],
                f'final_{eval_split}_accuracy': None,
                f'best_{eval_split}_accuracy': None,
            },
            wall_seconds=None,
            started=datetime.now().isoformat(timespec='microseconds'),  # (also names the run)
            versions={'python': platform.python_version(), **versions},
        )
        self.metrics.setdefault('final_test_accuracy', None)  # with validation: at the end
        self._bar_args = dict(total=max_steps, initial=start_step - 1, desc=name[:-3])

    def path(self, name):
        """out_dir/name, making out_dir first: a run that fails to start leaves no folder, and
        of two runs started in the same second the second takes the name with -2 (mkdir fails
        for all but one), never the first one's folder."""
        base, n = self.out_dir, 1
        while not self.made:
            fresh = [self.out_dir]  # the folders made here, removed if the run never starts
            while fresh[-1] and not os.path.exists(fresh[-1]):
                fresh.append(os.path.dirname(fresh[-1]))
            try:
                os.makedirs(self.out_dir, exist_ok=self.named)
                self.made, self.fresh = True, fresh[:-1]
            except FileExistsError:
                n += 1
                self.out_dir = self.metrics['out_dir'] = f'{base}-{n}'
        return os.path.join(self.out_dir, name)

    def log_step(self, step, loss):
        """Records a step's training loss."""
        self.metrics['steps'].append(step)
        self.metrics['train_loss'].append(float(loss))
        if self.bar is None:  # made here: a run that fails to start shows only its error
            self.bar = tqdm(
                unit='step', file=sys.stderr, dynamic_ncols=True, mininterval=0.5, **self._bar_args
            )
        self.bar.update(1)

    def log_eval(self, step, loss, accuracy, confusion):
        """Records and prints an evaluation, then saves metrics.json; the confusion matrix
        kept is the latest evaluation's."""
        m, split = self.metrics, self.metrics['eval_split']
        loss, accuracy = float(loss), float(accuracy)  # JSON's and weights_only loading's types
        m[f'{split}_confusion'] = confusion.tolist()
        m['eval_steps'].append(step)
        m[f'{split}_loss'].append(loss)
        m[f'{split}_accuracy'].append(accuracy)
        m[f'final_{split}_accuracy'] = accuracy
        m[f'best_{split}_accuracy'] = max(m[f'{split}_accuracy'])
        self.bar.write(
            f'step {step:>6}  train loss {m["train_loss"][-1]:.4f}  {split} loss '
            f'{loss:.4f}  {split} accuracy {accuracy:.4f}',
            file=sys.stderr,
        )
        self.save()

    def log_test(self, accuracy, confusion):
        """Records the test set's one evaluation of a run evaluated on validation."""
        self.metrics['final_test_accuracy'] = float(accuracy)
        self.metrics['test_confusion'] = confusion.tolist()

    def save(self, status=None):
        """Writes metrics.json atomically (and curves.png with a final status)."""
        self.metrics['wall_seconds'] = time.perf_counter() - self.started
        path = self.path('metrics.json')  # first: it makes the folder (and may rename it)
        if status is not None:
            self.metrics['status'] = status
        write_json(path, self.metrics)  # the small record first, should the disk fill up
        self.saved = True
        if status is not None:
            try:
                plot_curves(self.metrics, self.path('curves.png'))
            except OSError as e:  # what cli says of it
                e.done = f'the run is {status}, and its metrics.json whole'
                raise

    def stop_at_once(self):
        """From here on the first signal stops the run at once (the final test evaluations,
        with no step boundary to wait for); one that came already stops it now."""
        if self.stop_requested:
            raise KeyboardInterrupt
        self.at_once = True

    def _on_signal(self, signum, frame):
        if self.saving:  # the final save goes on: it is what the signal wants kept
            return
        if not self.stop_requested:
            self.stop_requested, self.signal = True, signum
            if not self.at_once:
                return
        raise KeyboardInterrupt

    def _claim(self):
        """Locks out_dir/.lock for as long as this process runs (see lock_folder)."""
        self._lock = lock_folder(self.path('.lock'), self.out_dir)

    def _release(self):
        with contextlib.suppress(OSError):  # the folder may be gone: the run says so
            os.unlink(os.path.join(self.out_dir, '.lock'))
            for folder in self.fresh:  # a run that failed before its first save
                os.rmdir(folder)  # leaves no folder: rmdir stops at the first non-empty one
        os.close(self._lock)

    def __enter__(self):
        self._claim()
        try:  # again, locked: a run that started on the folder as this one loaded may have ended
            check_out_dir(self.out_dir, self.may_replace)
        except ValueError:
            self._release()
            raise
        if self.replaces:  # no checkpoint of the old run may outlive it beside the new one
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.out_dir, name))
        try:  # a resumed run's checkpoints, into its new folder
            for source, name in self.carried:
                with open(source, 'rb') as checkpoint:
                    atomic_write(self.path(name), lambda f: shutil.copyfileobj(checkpoint, f))
        except BaseException:
            self._release()
            raise
        self.bar, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            self._previous = on_stop_signals(self._on_signal)
        return self

    def __exit__(self, kind, error, traceback):
        if self.bar is not None:
            self.bar.close()
        self.saving = True  # signals wait until the last save is written
        try:
            if kind is None:
                self.save('completed')
            elif kind is KeyboardInterrupt:
                self.save('interrupted')
            elif kind is FloatingPointError:
                self.save('diverged')
            elif self.saved:  # a failed write, too little memory: the record says so if it can
                with contextlib.suppress(OSError):
                    self.save('failed')
                    step = (self.metrics['steps'] or [0])[-1]
                    error.done = (
                        f'the run failed after step {step}; its metrics so far are in '
                        f'{self.out_dir}'
                    )
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self._release()
        if kind is KeyboardInterrupt:
            error.signal = self.signal  # cli's exit status: 128 + its number
            print(
                f'Stopped by {signal.Signals(self.signal).name} after step '
                f'{(self.metrics["steps"] or [0])[-1]}; metrics so far are in '
                f'{self.out_dir}.',
                file=sys.stderr,
            )
        if kind is FloatingPointError:
            error.args = (f'{error} Metrics up to here are in {self.out_dir}.',)


def lock_folder(lock, folder):
    """Locks the file lock (in folder) for as long as this process holds the descriptor it
    returns: a second run on the folder is refused in one sentence (the lock goes with the
    process, even a killed one). Holding it, removes the temporary files of atomic_write that
    a killed process left there: no other process writes in the folder."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(
            f'--out_dir {folder} is in use by another run that is still going; wait for it '
            'to end, or choose another folder.'
        ) from None
    with contextlib.suppress(OSError):  # (a folder that cannot be listed keeps them)
        for name in os.listdir(folder):
            if TEMPORARY.fullmatch(name):
                os.unlink(os.path.join(folder, name))
    return fd


class ClaimedFolder:
    """``with ClaimedFolder(folder, overwrite):`` a folder checked (check_out_dir), made and
    locked (lock_folder) for a process that writes its results at the end, as the grid
    search does; leaving unlocks it, and removes it when this claim made it and it stayed
    empty. ValueError, in one sentence, when the folder cannot be claimed."""

    def __init__(self, folder, overwrite=False):
        check_out_dir(folder, overwrite)
        self.folder, self.fresh = folder, not os.path.exists(folder)
        os.makedirs(folder, exist_ok=True)
        self.fd = lock_folder(os.path.join(folder, '.lock'), folder)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.folder, '.lock'))
            if self.fresh:
                os.rmdir(self.folder)  # only if empty: a search that wrote nothing
        os.close(self.fd)


def confusion_matrix(labels, predictions, classes=10):
    """C: (classes, classes), C[i, j] = the number of images of class i predicted as j."""
    pairs = classes * np.asarray(labels) + np.asarray(predictions)
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def check_finite(what, value, step):
    """FloatingPointError, which ends a run as 'diverged', when value (a loss) is not finite."""
    if not math.isfinite(value):
        raise FloatingPointError(
            f'The {what} became {float(value)} at step {step}: the run '
            'diverged; lower --learning_rate.'
        )


def check_out_dir(out_dir, overwrite=False):
    """ValueError, before any work, for an out_dir that cannot be written or that holds files
    (another run's, which this one would overwrite) when overwrite is False."""
    # A path the file system cannot hold fails only after makedirs made the folders above it.
    names = os.fsencode(os.path.abspath(out_dir)).split(b'/')
    if sum(map(len, names)) + len(names) > PATH_MAX - 100 or max(map(len, names)) > NAME_MAX:
        raise ValueError(
            f'--out_dir is too long for the file system: at most {NAME_MAX} bytes a name and '
            f'{PATH_MAX - 100} in all.'
        )
    if os.path.islink(out_dir) and not os.path.exists(out_dir):  # it would be made elsewhere
        raise ValueError(
            f'--out_dir {out_dir} is a symbolic link to {os.readlink(out_dir)}, which does not '
            'exist; give a folder, or make the one it names.'
        )
    try:
        held = os.path.isdir(out_dir) and [f for f in os.listdir(out_dir) if f != '.lock']
    except OSError as e:  # a folder this user may not read
        raise ValueError(f'cannot read --out_dir {out_dir} ({e.strerror}).') from None
    if held and not overwrite and not {*RUN_FILES, 'best.json'} & set(held):  # (a grid's)
        raise ValueError(
            f'--out_dir {out_dir} is not empty, and what it holds is no run; choose a new or '
            'an empty folder.'
        )
    if held and not overwrite:
        lasts = [os.path.join(out_dir, f'last{ext}') for ext in ('.pt', '.npz')]
        hint = ''.join(f', continue it with --resume {p}' for p in lasts if os.path.exists(p))
        raise ValueError(
            f'--out_dir {out_dir} already holds a run; choose a new folder{hint}, '
            'or pass --overwrite to replace its files.'
        )
    parent = out_dir  # the folder to write in, or the nearest existing one above it
    while not os.path.exists(parent):
        parent = os.path.dirname(parent) or '.'
    try:
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as e:
        raise ValueError(f'cannot write to --out_dir {out_dir} ({e.strerror}).') from None


def write_json(path, obj):
    """obj as JSON to path, atomically (a reader never sees half a file)."""
    text = json.dumps(obj, indent=1).encode()
    atomic_write(path, lambda f: f.write(text))


def plot_heatmap(table, path, title):
    """Learning rate x batch size, a panel per architecture; each cell the best mean CV
    accuracy over the grid's other keys."""
    archs = sorted({tuple(r['hidden_units']) for r in table}, key=lambda a: (len(a), a))
    lrs = sorted({r['learning_rate'] for r in table}, reverse=True)
    batch_sizes = sorted({r['batch_size'] for r in table})
    vmax = max(r['mean'] for r in table)
    from matplotlib.figure import Figure  # no pyplot: no global state

    fig = Figure(figsize=(0.9 + 2.6 * len(archs), 2.9))
    axes = fig.subplots(1, len(archs), squeeze=False, sharey=True)
    for ax, arch in zip(axes[0], archs):
        cells = np.full((len(lrs), len(batch_sizes)), np.nan)
        for r in reversed(table):  # best last: a cell ends with the best of its settings
            if tuple(r['hidden_units']) == arch:
                i, j = lrs.index(r['learning_rate']), batch_sizes.index(r['batch_size'])
                cells[i, j] = r['mean']
        image = ax.imshow(cells, cmap='viridis', vmin=0.0, vmax=vmax, aspect='auto')
        for (i, j), v in np.ndenumerate(cells):
            if not np.isnan(v):
                color = 'white' if v < 0.6 * vmax else 'black'  # legible on dark cells
                ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=8, color=color)
        ax.set_xticks(range(len(batch_sizes)), [str(b) for b in batch_sizes])
        ax.set_yticks(range(len(lrs)), [f'{lr:g}' for lr in lrs])
        ax.set_xlabel('batch size')
        ax.set_title(f'hidden layers {list(arch)}', fontsize=9)
    axes[0][0].set_ylabel('learning rate')
    fig.colorbar(image, ax=axes[0].tolist(), label='mean CV accuracy', shrink=0.9)
    fig.suptitle(title, fontsize=9, y=1.04)  # above the panel titles
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=150, bbox_inches='tight'))


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
        ax_loss.plot(
            steps[window - 1 :],
            np.convolve(loss, np.ones(window) / window, 'valid'),
            color='C0',
            label='train (smoothed)',
        )
    split = metrics.get('eval_split', 'test')  # what the evaluations during training used
    if metrics['eval_steps']:
        ax_loss.plot(
            metrics['eval_steps'], metrics[f'{split}_loss'], 'o-', color='C1', ms=3, label=split
        )
        ax_acc.plot(metrics['eval_steps'], metrics[f'{split}_accuracy'], 'o-', color='C1', ms=3)
    ax_loss.set(xlabel='step', ylabel='cross-entropy loss', title='Loss')
    if len(steps):  # a run stopped before its first step has nothing to label
        ax_loss.legend(frameon=False)
    ax_acc.set(xlabel='step', ylabel='accuracy', title=f'{split.capitalize()} accuracy')
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(
            path, lambda f: fig.savefig(f, format='png', dpi=120, metadata={'Software': None})
        )
    finally:
        plt.close(fig)


# What a user can do about a write that failed, by its errno; else: choose another --out_dir.
REMEDIES = {
    errno.ENOSPC: 'free some space, or choose another --out_dir',
    errno.EDQUOT: 'free some space, or choose another --out_dir',
    errno.EFBIG: 'raise the file-size limit (ulimit -f), or choose another --out_dir',
    errno.EMFILE: 'raise the limit on open files (ulimit -n)',
    errno.ENFILE: "close other programs: the system's open files are at their limit",
    errno.EACCES: 'make the folder writable again, or choose another --out_dir',
    errno.EPERM: 'make the folder writable again, or choose another --out_dir',
    errno.EROFS: 'choose another --out_dir, on a disk that can be written',
    errno.EISDIR: 'remove the folder that stands in its place, or choose another --out_dir',
}


def write_failure(error, done='the run stopped there'):
    """The sentence for OSError error of a write: the file and why, what was kept (the
    error's own .done, else done), and what to do."""
    what = f'could not write {error.filename} ({error.strerror})'
    if not error.filename:  # not a file of the run's: too many open files
        what = error.strerror or str(error)
    remedy = REMEDIES.get(error.errno, 'choose another --out_dir')
    return f'{what}; {getattr(error, "done", done)}: {remedy}.'


def is_out_of_memory(error):
    """Whether a RuntimeError is torch's failed allocation (on the CPU it is no MemoryError)."""
    text = str(error)
    return "can't allocate memory" in text or 'out of memory' in text


# atomic_write's temporary files: .NAME.PID.RANDOM.tmp
TEMPORARY = re.compile(r'\..+\.[0-9]+\.[0-9a-f]{8}\.tmp')


def atomic_write(path, write):
    """write(file) into a temporary file of this process beside path, then renamed to path: a
    reader never sees half a file, and a failed or interrupted write leaves no temporary file
    behind (its name is known before the file exists, so a signal at any moment can remove it)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder or '.', f'.{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # (the umask applies)
        with os.fdopen(fd, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):  # its folder may be gone
            os.unlink(tmp)
        cause = e.__context__ if isinstance(e, RuntimeError) else e  # torch.save wraps OSError
        if isinstance(cause, OSError):  # a full disk, a folder made read-only or deleted
            raise OSError(cause.errno, cause.strerror, path) from None
        raise
