"""make_report.py --rerun: a run folder's command rebuilt from what it recorded (never run as
it stands), run into a fresh folder beside it while the folder is locked, and swapped in only
once it completes."""

from quiet_start import RUN_SCRIPTS, STOP_SIGNALS

import contextlib
import importlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

from records import ReportError

from train_utils import lock_folder, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def safe_command(run, out_dir=None):
    """The command that reruns a folder into out_dir (default: the folder; rerun gives a fresh
    one), rebuilt from what it recorded, never run as it stands: one of this project's
    scripts, by this interpreter, with flags that script's parser accepts. ReportError
    otherwise: a shared run folder could hold any command."""
    command = run.rerun_command(out_dir)
    if not command:
        raise ReportError(f'--rerun: no command known for {run.name}; give it one in runs.json.')
    if not (
        len(command) >= 2 and command[0] in ('python', 'python3') and command[1] in RUN_SCRIPTS
    ):
        raise ReportError(
            f'--rerun: {run.name} records the command {shlex.join(command)!r}, '
            f'which is not python running one of {", ".join(RUN_SCRIPTS)}; it was not '
            'run.'
        )
    script, flags = command[1], command[2:]
    if outside := [f for f in flags if f.split('=')[0] in ('--scheduler', '--grid')]:
        raise ReportError(  # a Dask scheduler's address, or a file, a data file should not pick
            f'--rerun: {run.name} records {outside[0].split("=")[0]}, which --rerun does not '
            'take from a run folder; it was not run.'
        )
    parser = importlib.import_module(script.removesuffix('.py')).build_parser()
    parser.allow_abbrev = False  # --resum would be --resume, which rerun_command leaves out
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's own message: ours below
            parser.parse_args(flags)
    except SystemExit:
        raise ReportError(
            f'--rerun: {run.name} records flags that {script} does not accept '
            f'({shlex.join(flags)}); it was not run.'
        ) from None
    return [sys.executable, os.path.join(ROOT, script), *flags]


def rerun(config, names):
    """Reruns the folders named (all when names is empty), one after another, from ROOT."""
    targets = {run.name: run for run in config.folders if not names or run.name in names}
    if unknown := [name for name in names if name not in targets]:
        raise ReportError(
            f'--rerun: unknown run(s) {", ".join(unknown)}; the runs are '
            f'{", ".join(run.name for run in config.folders)}.',
            2,
        )
    for name, run in targets.items():
        run.load()
        # into a fresh folder beside it, which replaces the old one only once it completes
        path = os.path.normpath(run.path)  # (qruns/b/. would put the fresh folder inside)
        folder, fresh = os.path.join(ROOT, path), path + '.rerun'
        if os.path.islink(folder):  # the link would be replaced, its folder left as it was
            raise ReportError(
                f'--rerun: {run.path} is a symbolic link; give runs.json the folder it names.'
            )
        lock = claim(folder, run.path)  # held until the swap: no run or rerun starts there
        taken = [p for p in (fresh, f'{path}.old') if os.path.lexists(os.path.join(ROOT, p))]
        if taken:
            release(lock, folder)
            raise ReportError(f'--rerun: {taken[0]} exists (a rerun cut short?); remove it first.')
        try:
            rerun_into(run, name, fresh, folder)
        finally:
            release(lock, folder)


def claim(folder, path):
    """Locks folder/.lock as a run does (train_utils.lock_folder), so that neither a run nor
    another rerun writes there while this rerun goes; None when the folder is missing."""
    if not os.path.isdir(folder):
        return None
    try:
        return os.path.lexists(os.path.join(folder, '.lock')), lock_folder(
            os.path.join(folder, '.lock'), folder
        )
    except ValueError:
        raise ReportError(
            f'--rerun: {path} is in use by a run that is still going; wait for it to end.'
        ) from None


def release(lock, folder):
    """Undoes claim(): the lock file goes too if claim made it and the folder is still there."""
    if lock is not None:
        existed, fd = lock
        if not existed:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, '.lock'))
        os.close(fd)


def rerun_into(run, name, fresh, folder):
    """Runs run's command into fresh, then swaps fresh in for folder (signals held off)."""
    command = safe_command(run, fresh)
    print(f'make_report: rerunning {name}: {shlex.join(command)}', flush=True)
    # its own session: a signal reaches it once, from here, and it stops as it would alone
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        status = child.wait()
    except KeyboardInterrupt as stop:  # make_report's stop(): pass it on, let it save
        child.send_signal(stop.args[0] if stop.args else signal.SIGINT)
        child.wait()
        shutil.rmtree(os.path.join(ROOT, fresh), ignore_errors=True)
        print(
            f'make_report: the rerun of {name} was stopped and its {fresh} removed; '
            f'{run.path} is as it was.',
            file=sys.stderr,
        )
        raise
    if status != 0:
        shutil.rmtree(os.path.join(ROOT, fresh), ignore_errors=True)
        raise ReportError(
            f'rerun of {name} failed (exit {status}), {run.path} is as it was: '
            f'{shlex.join(command)}'
        )
    retarget(os.path.join(ROOT, fresh), fresh, run.path)
    old = folder + '.old'
    # a signal waits until the swap and its clean-up are done (then stops the report)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        if os.path.lexists(folder):
            os.rename(folder, old)
        os.rename(os.path.join(ROOT, fresh), folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def retarget(folder, old, new):
    """The records in folder (metrics.json, best.json) with each string old, its --out_dir
    while it ran, written as new, the folder it now is."""

    def moved(value):
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        return new if value == old else value

    for name in ('metrics.json', 'best.json'):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path) as f:
                record = json.load(f)
            write_json(path, moved(record))
