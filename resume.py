"""Going on from a checkpoint, for the two ConvNet scripts (each writes its own format): the
command line read again with the checkpoint's flags as defaults, its record checked on
reading, the step and folder the run resumes at, and the metrics and best checkpoint it
carries along."""

import math
import numbers
import os

from command_line import check_arguments, read_json


def resume_point(resume, saved, flags, trajectory_flags, best_name, out_dir, overwrite):
    """Where a run resumed from checkpoint `resume` goes on: (first step, out_dir, overwrite).
    saved: the checkpoint's 'flags', 'step' and 'metrics'. ValueError, before any work, when a
    flag of trajectory_flags changed (or max_steps, over which a schedule is laid out), when
    the checkpoint is past --max_steps, when its folder records another run (whose results
    and best checkpoint are not this run's), or when a validation run that has been evaluated
    lacks the best checkpoint (best_name) beside it, which its end tests. out_dir defaults to the
    checkpoint's folder, where the run goes on in place."""
    saved_flags, saved_step = saved['flags'], saved['step']
    changed = [n for n in trajectory_flags if saved_flags.get(n) != flags[n]]
    if flags['lr_schedule'] != 'constant' and saved_flags.get('max_steps') != flags['max_steps']:
        changed.append('max_steps')
    if changed:
        given = ', '.join(f'--{n} {saved_flags.get(n)}' for n in changed)
        raise ValueError(
            f'{resume} was trained with {given}; a resumed run keeps the flags it started with.'
        )
    if saved_step > flags['max_steps']:
        raise ValueError(
            f'{resume} is at step {saved_step}, beyond --max_steps {flags["max_steps"]}.'
        )
    folder = os.path.dirname(os.path.abspath(resume))
    if recorded_start(folder) not in (None, saved['metrics']['started']):  # another run's folder
        raise ValueError(
            f'{resume} is not the run {os.path.join(folder, "metrics.json")} records, so going '
            'on from it would replace that run or test its best checkpoint; put the checkpoint '
            'in a folder of its own.'
        )
    evaluated = saved['metrics'].get('eval_steps')
    if (
        flags['validation_size']
        and evaluated
        and not os.path.exists(os.path.join(folder, best_name))
    ):
        raise ValueError(
            f'{resume} has no {best_name} beside it, which the end of its '
            'validation run tests; put it back, or start the run again.'
        )
    out_dir = out_dir or folder
    return saved_step + 1, out_dir, overwrite or os.path.abspath(out_dir) == folder


def recorded_start(folder):
    """The 'started' of the run folder's metrics.json: when the run began, to the microsecond,
    the same in every checkpoint of that run and no other's; None when the folder holds no
    readable record."""
    try:  # (a long run's record is megabytes; a FIFO is refused, not waited on)
        return read_json(os.path.join(folder, 'metrics.json'), largest=2**30).get('started')
    except (ValueError, AttributeError):  # none, not a file, not JSON, not an object
        return None


def check_is_file(path):
    """ValueError unless path, if it exists, is a regular file: reading a FIFO or a device as
    a checkpoint would wait forever."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f'{path} is not a checkpoint file.')


def is_number(value):
    """A finite real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def carried_metrics_problem(metrics, split):
    """What is wrong with the metrics a checkpoint carries (continue_run copies them into the
    resumed run), or None: the curves lists of finite numbers that pair up, the accuracies
    numbers or None, 'started' a string and 'wall_seconds' at least 0."""
    curves = ('steps', 'train_loss', 'eval_steps', f'{split}_loss', f'{split}_accuracy')
    if not isinstance(metrics, dict):
        return 'metrics that are not a record'
    if bad := [k for k in curves if not isinstance(metrics.get(k), list)]:
        return f'no list {bad[0]!r} in its metrics'
    if bad := [k for k in curves if not all(map(is_number, metrics[k]))]:
        return f'a value that is not a finite number in {bad[0]!r}'
    lengths = [len(metrics[k]) for k in curves]
    if lengths[0] != lengths[1] or len(set(lengths[2:])) != 1:
        return 'curves of unequal lengths'
    if bad := [
        k
        for k in (f'final_{split}_accuracy', f'best_{split}_accuracy')
        if not (k in metrics and (metrics[k] is None or is_number(metrics[k])))
    ]:
        return f'{bad[0]!r} that is not a number'
    if not isinstance(metrics.get('started'), str):
        return "no 'started' time"
    if not (is_number(metrics.get('wall_seconds')) and metrics['wall_seconds'] >= 0):
        return 'a wall time that is not a number of seconds'
    if not isinstance(metrics.get('resumed', []), list):
        return "a 'resumed' that is not a list"
    return None


def check_record(path, flags, step, metrics, parser):
    """ValueError of one sentence unless a checkpoint's record is one its script wrote: flags
    the script's parser takes, with values it accepts, a step count, and metrics that a run can
    go on from. Checked on reading, so that a crafted record fails here and not mid-run."""
    problem = None
    if not isinstance(flags, dict) or not set(flags) <= {a.dest for a in parser._actions} - {
        'help'
    }:
        problem = 'flags this script does not take'
    elif not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        problem = f'a step count that is not a whole number ({step!r})'
    else:
        try:
            check_arguments(parser, flags)
        except ValueError as e:
            problem = f'a flag this script refuses ({e})'
        else:
            split = 'validation' if flags.get('validation_size') else 'test'
            problem = carried_metrics_problem(metrics, split)
    if problem:
        raise ValueError(f'{path} is not a checkpoint of this script: it holds {problem}.')


# Settings of an optimizer or schedule state by name: rates and decays at least 0, momenta
# in [0, 1), as the flags bound them.
AT_LEAST_0 = {'lr', 'initial_lr', 'max_lr', 'min_lr', 'weight_decay', 'eps', 't', 'step'}
BELOW_1 = {'momentum', 'betas', 'max_momentum', 'base_momentum', 'dampening'}


def has_form(saved, fresh, name=None):
    """Whether saved, a state read from a checkpoint, has the form of fresh, the state this
    run's own optimizer or schedule has now: the same keys and lengths, the same strings,
    switches and Nones, and finite numbers where fresh has numbers (whole where it has whole
    ones, as step counts), in range by name."""
    if isinstance(fresh, dict):
        return (
            isinstance(saved, dict)
            and saved.keys() == fresh.keys()
            and all(has_form(saved[k], fresh[k], k) for k in fresh)
        )
    if isinstance(fresh, (list, tuple)):
        return (
            isinstance(saved, (list, tuple))
            and len(saved) == len(fresh)
            and all(has_form(s, f, name) for s, f in zip(saved, fresh))
        )
    if fresh is None or isinstance(fresh, (bool, str)):
        return type(saved) is type(fresh) and saved == fresh
    if isinstance(fresh, numbers.Real):
        return (
            is_number(saved)
            and (isinstance(saved, numbers.Integral) or not isinstance(fresh, numbers.Integral))
            and (name not in AT_LEAST_0 or saved >= 0)
            and (name not in BELOW_1 or 0 <= saved < 1)
        )
    return type(saved) is type(fresh)  # a tensor: torch's load_state_dict checks its shape


def check_state(path, saved, fresh, what):
    """ValueError of one sentence unless saved has the form of fresh (has_form)."""
    if not has_form(saved, fresh):
        raise ValueError(f'{path} holds {what} state that this run cannot go on from.')


def continue_run(run, saved_metrics, resume, saved_step, best_name, last_name):
    """Carries a resumed run's metrics (one run, one metrics.json, across interruptions) and,
    when it goes on in a new folder, the best checkpoint so far (best_name), which the end of
    a validation run tests, and, when no step is left to save one, the checkpoint itself as
    the last (last_name)."""
    split = run.metrics['eval_split']
    for key in (
        'started',
        'steps',
        'train_loss',
        'eval_steps',
        f'{split}_loss',
        f'{split}_accuracy',
        f'final_{split}_accuracy',
        f'best_{split}_accuracy',
    ):
        run.metrics[key] = saved_metrics[key]
    run.metrics['resumed'] = [
        *saved_metrics.get('resumed', []),
        {'from': resume, 'step': saved_step},
    ]
    run.started -= saved_metrics['wall_seconds']
    folder = os.path.dirname(os.path.abspath(resume))
    best = os.path.join(folder, best_name)
    if os.path.abspath(run.out_dir) != folder:  # copied once the run holds its folder
        if os.path.exists(best):
            run.carried.append((best, best_name))
        if saved_step == run.metrics['flags']['max_steps']:
            run.carried.append((resume, last_name))


def resume_defaults(parser, argv, args, read_flags):
    """args, or with --resume the command line parsed again with the flags that read_flags
    (a checkpoint's path -> the flags it was started with) returns as the defaults, so that
    only the flags given explicitly change."""
    if args.resume is None:
        return args
    try:
        saved = read_flags(args.resume)
    except ValueError as e:
        parser.error(str(e))
    parser.set_defaults(
        **{k: v for k, v in saved.items() if k not in ('out_dir', 'resume', 'overwrite')}
    )
    return parser.parse_args(argv)
