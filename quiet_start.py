"""The stop signals. Imported first by each script, before the libraries that take a second
to load: until the script's own handlers take over (stop_signals), Ctrl-C, SIGTERM or another
of STOP_SIGNALS ends it with one sentence and status 128 + the signal's number, not a
traceback from inside `import torch`, and once they hand back, one that says the script was
exiting. Also the standard streams (open_standard_streams) and a library that cannot be
loaded (unable). Only when a script runs: importing one (as the tests do) changes nothing."""

import atexit
import contextlib
import os
import resource
import signal
import sys

# The signals whose default action ends the process without a word, and that a user or a job
# scheduler sends: Ctrl-C, kill's default, a closed terminal, Ctrl-\\, the two left to users,
# an alarm, a CPU-time limit. Each stops a script as Ctrl-C does (command_line.cli,
# train_utils.Run).
STOP_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGXCPU,  # a CPU-time limit's (ulimit -t, a batch scheduler's soft limit)
)

# The scripts that make runs (make_report.py --rerun runs no other), and every script.
RUN_SCRIPTS = (
    'train_mlp_numpy.py',
    'train_mlp_pytorch.py',
    'train_convnet_numpy.py',
    'train_convnet_pytorch.py',
    'gridsearch.py',
)
SCRIPTS = (
    *RUN_SCRIPTS,
    'benchmark.py',
    'unittests.py',
    'dead_units.py',  # report/'s
    'make_report.py',  # report/'s
)


_when = 'while starting; nothing was done'


def _stop(signum, frame):
    for stream in (sys.stdout, sys.stderr):  # what the script printed, which os._exit would drop
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):  # closed, or a print this signal interrupted
            pass
    name = signal.Signals(signum).name
    # os.write: print would fail like the flush if this signal interrupted a write to stderr
    with contextlib.suppress(OSError):  # a stderr whose reader is gone
        os.write(2, f'{os.path.basename(sys.argv[0])}: stopped by {name} {_when}.\n'.encode())
    os._exit(128 + signum)


def exiting():
    """The script's own handlers are done (stop_signals): a stop signal from here
    on comes as the script exits, when everything it wrote is whole, and says so."""
    global _when
    _when = 'as it exited; everything it wrote is whole'


def interrupt(signum, frame):
    """A signal handler: signal signum stops the script as Ctrl-C would, KeyboardInterrupt(signum)
    saying which."""
    raise KeyboardInterrupt(signum)


def on_stop_signals(handler):
    """Sets handler(signum, frame) for each of STOP_SIGNALS; returns the handlers from before.
    Past the soft CPU-time limit (ulimit -t) the kernel sends SIGXCPU again every CPU second:
    the first lifts the soft limit to the hard one, so that no repeat cuts short the save and
    the exit it asked for (the hard limit still ends the script)."""

    def call(signum, frame):
        if signum == signal.SIGXCPU:
            with contextlib.suppress(ValueError, OSError):
                hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
                resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        handler(signum, frame)

    return {s: signal.signal(s, call) for s in STOP_SIGNALS}


@contextlib.contextmanager
def stop_signals(handler):
    """Inside the block each of STOP_SIGNALS calls handler(signum, frame); after it, the handlers
    from before, which exiting() has told that the script is ending."""
    previous = on_stop_signals(handler)
    try:
        yield
    finally:
        if previous[signal.SIGINT] is _stop:  # the outermost block: the script is ending
            exiting()
        for s, old in previous.items():
            signal.signal(s, old)


def stopped(prog, interruption, then='.'):
    """Says which signal stopped prog (interrupt()'s KeyboardInterrupt names it; Ctrl-C's own
    names none), then `then`; prog's exit status, 128 + its number."""
    signum = interruption.args[0] if interruption.args else signal.SIGINT
    print(f'{prog}: stopped by {signal.Signals(signum).name}{then}', file=sys.stderr)
    return 128 + signum


class Unfailing:
    """A text stream (stdout, stderr) whose failure ends what it says, not the script: once a
    write fails (the reader of a pipe gone, a full disk) its file is pointed at /dev/null, so
    that later writes and the flush at exit succeed, and the run it reports on goes on. A
    character its encoding lacks is written as an escape (errors='backslashreplace')."""

    def __init__(self, stream):
        with contextlib.suppress(AttributeError, ValueError):  # not a TextIOWrapper
            stream.reconfigure(errors='backslashreplace')
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except OSError:
            self.mute()
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except OSError:
            self.mute()

    def mute(self):
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def open_standard_streams():
    """A closed stdin, stdout or stderr (`2>&-`) opened on /dev/null: else the next file the
    script opens would take its number, and what the script says would go into that file."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, mode)  # the lowest free number: fd
    sys.stdout = Unfailing(sys.stdout or open(1, 'w', closefd=False))
    sys.stderr = Unfailing(sys.stderr or open(2, 'w', closefd=False))


def unable(kind, error, trace):
    """sys.excepthook: a library that cannot be loaded, or memory that runs out outside the
    script's own handlers (command_line.cli's), is one sentence, not a traceback."""
    prog = os.path.basename(sys.argv[0])
    limit = 'the memory limit (ulimit -v) if one is set'
    if issubclass(kind, ImportError):  # not installed, or a memory limit with no room to map it
        problem = f'could not load a library it needs ({error}): install requirements.txt '
        problem += f'(see README.md), or raise {limit}'
    elif issubclass(kind, MemoryError):
        problem = f'not enough memory: free some, or raise {limit}'
    else:
        return sys.__excepthook__(kind, error, trace)
    print(f'{prog}: error: {problem}.', file=sys.stderr)


def _ignore_stop_signals():
    """atexit's last call (registered first): the interpreter then sets Python's handlers back
    to the defaults, which end the process by the signal without a word; ignored instead, a
    stop signal in those last moments leaves the exit status the script chose."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


if os.path.basename(sys.argv[0]) in SCRIPTS:
    sys.excepthook = unable
    atexit.register(_ignore_stop_signals)
    open_standard_streams()
    for _signal in STOP_SIGNALS:
        signal.signal(_signal, _stop)
    # The figures are files, drawn with Agg: a bad MPLBACKEND stopped a run only at its end.
    os.environ['MPLBACKEND'] = 'Agg'
