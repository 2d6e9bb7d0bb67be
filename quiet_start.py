"""Imported first by each script, before the libraries that take a second to load: until the
script's own handlers take over (command_line.cli, gridsearch.main), Ctrl-C, SIGTERM or another
of STOP_SIGNALS ends it with one sentence and status 128 + the signal's number, not a
traceback from inside `import torch`. Only when a script runs: importing one (as the tests do)
changes nothing."""

import os
import signal
import sys

# The signals whose default action ends the process without a word, and that a user or a job
# scheduler sends: Ctrl-C, kill's default, a closed terminal, Ctrl-\\, the two left to users,
# an alarm. Each stops a script as Ctrl-C does (command_line.cli, train_utils.Run).
STOP_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
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


def _stop(signum, frame):
    name = signal.Signals(signum).name
    print(
        f'{os.path.basename(sys.argv[0])}: stopped by {name} while starting; nothing was done.',
        file=sys.stderr,
    )
    os._exit(128 + signum)


if os.path.basename(sys.argv[0]) in SCRIPTS:
    for _signal in STOP_SIGNALS:
        signal.signal(_signal, _stop)
