"""The command line the train scripts share: flag types whose errors are one line (exit
status 2), the flags every script has, presets, and cli(), which turns what a user can cause
into one sentence and an exit status."""

from quiet_start import interrupt, stop_signals

import argparse
import contextlib
import json
import math
import numbers
import os
import signal
import stat
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error message (and exit status 2) instead of usage + error, and
    a help that gives each flag's default (but None: the flag's help says what it means)."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class FlagError(argparse.ArgumentTypeError, ValueError):
    """A bad value: argparse prints its message as it is, and train(...) raises it as a
    ValueError when the value comes from Python."""


FLOAT32_MAX = 3.4028234663852886e38  # a larger learning rate or decay overflows in float32


def _number(convert, low_ok, what, high=math.inf, high_ok=True):
    """A flag type: text -> a number in (0, high] (0 too if low_ok; high excluded unless
    high_ok), else FlagError with `what` it expected."""

    def parse(text):
        try:  # Python's own spellings too: 1_000, and digits of other scripts (٣)
            value = convert(text) if text.isascii() and '_' not in text else math.nan
        except ValueError:
            value = math.nan
        low = value > 0 or (low_ok and value == 0)
        if not (math.isfinite(value) and low and (value < high or high_ok and value == high)):
            raise FlagError(f'expected {what}, got {text!r}')
        return value

    parse.what, parse.convert = what, convert  # for check_arguments
    return parse


positive_int = _number(int, False, 'an integer > 0')
non_negative_int = _number(int, True, 'an integer >= 0')
positive_float = _number(float, False, 'a finite number > 0')
non_negative_float = _number(float, True, 'a finite number >= 0')
rate = _number(float, False, 'a number > 0 that float32 can hold (at most 3.4e38)', FLOAT32_MAX)
decay = _number(float, True, 'a number >= 0 that float32 can hold (at most 3.4e38)', FLOAT32_MAX)
fraction = _number(float, True, 'a number in [0, 1)', 1.0, high_ok=False)
# torch, NumPy and scikit-learn all take a seed below 2^32
seed_int = _number(int, True, 'an integer from 0 to 4294967295', 2**32 - 1)
crop_padding = _number(int, True, 'an integer from 0 to 16 (half an image)', 16)
# A hundred million steps: days for the smallest network here; more is a typo, not a run.
step_count = _number(int, False, 'an integer from 1 to 100000000', 10**8)


def path(text):
    """A flag type: a file's or folder's path, any text but an empty one (an unset shell
    variable, --out_dir "$DIR", which would else mean the default)."""
    if not text.strip():
        raise FlagError(f'expected a path, got {text!r}')
    return text


def hidden_units(text):
    """'100' -> [100]; '500,500' -> [500, 500]; '' -> [] (no hidden layer)."""
    try:
        return [positive_int(part) for part in text.split(',')] if text.strip() else []
    except FlagError:
        raise FlagError(
            f'expected comma-separated positive integers such as 100 or 500,500, got {text!r}'
        ) from None


def comma_list(convert):
    def parse(text):
        return [convert(part.strip()) for part in text.split(',')]

    parse.__name__ = f'comma-separated {convert.__name__}'  # argparse: "invalid NAME value"
    return parse


def architectures(text):
    """'100,100;1000' -> [[100, 100], [1000]]; an empty architecture ('100;;10') is refused
    (the MLP scripts spell a network without hidden layers --dnn_hidden_units '')."""
    parts = text.split(';')
    if not all(part.strip() for part in parts):
        raise FlagError(
            f'expected architectures separated by ";", none of them empty, such as '
            f'100,100;1000, got {text!r}'
        )
    return [hidden_units(part) for part in parts]


def hidden_layers(value):
    """train(...)'s dnn_hidden_units, a string as on the command line or a list of positive
    integers -> that list; ValueError with one sentence otherwise."""
    if isinstance(value, str):
        return hidden_units(value)
    if not (
        isinstance(value, (list, tuple))
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    ):
        raise ValueError(
            f'dnn_hidden_units must be a list of positive integers or a string '
            f'such as 500,500, got {value!r}.'
        )
    return list(value)


def make_parser(doc, learning_rate, max_steps, batch_size, eval_freq, presets=None):
    """The flags every train script has, with its course defaults; doc: its docstring."""
    p = ArgumentParser(description=doc.split('\n\n')[0])
    p.add_argument(
        '--learning_rate', type=rate, default=learning_rate, help='learning rate of the optimizer'
    )
    p.add_argument(
        '--max_steps',
        type=step_count,
        default=max_steps,
        help='number of training steps (mini-batches)',
    )
    p.add_argument(
        '--batch_size', type=positive_int, default=batch_size, help='examples per training step'
    )
    p.add_argument(
        '--eval_freq',
        type=positive_int,
        default=eval_freq,
        help='evaluate every this many steps (and at the end), on the whole '
        'validation split if there is one, else the test set',
    )
    p.add_argument(
        '--data_dir',
        type=path,
        help='folder with the CIFAR-10 batch files, downloaded there '
        'when missing (default: $CIFAR10_DIR, else cifar10/cifar-10-batches-py)',
    )
    p.add_argument(
        '--validation_size',
        type=non_negative_int,
        default=0,
        help='hold out this many training images (stratified, drawn by the seed) '
        'for the evaluations during training (and what they choose); the test '
        'set is then evaluated once, at the end',
    )
    p.add_argument(
        '--seed',
        type=seed_int,
        default=42,
        help='seed of the initialisation and of the batch order',
    )
    p.add_argument(
        '--out_dir',
        type=path,
        help='folder for metrics.json, curves.png and checkpoints '
        '(default: a new folder under runs/)',
    )
    p.add_argument(
        '--overwrite',
        action='store_true',
        help='write into --out_dir even when it holds files of another run',
    )
    if presets:
        p.add_argument(
            '--preset',
            choices=tuple(presets),
            help='a tuned set of flags (see README); flags given explicitly win',
        )
    return p


def add_convnet_flags(p, optimizer, checkpoint):
    """The flags of both ConvNet scripts, with the same names and meanings; optimizer: the
    default of --optimizer; checkpoint: the extension of their checkpoints (pt or npz)."""
    p.add_argument(
        '--optimizer',
        type=str.upper,
        choices=('ADAM', 'SGD'),
        default=optimizer,
        help='ADAM, or SGD with Nesterov momentum 0.9',
    )
    p.add_argument(
        '--weight_decay',
        type=decay,
        default=0.0,
        help='L2 weight decay of the convolution and linear weights',
    )
    p.add_argument(
        '--label_smoothing',
        type=fraction,
        default=0.0,
        help='the share of each target spread evenly over all classes, in [0, 1)',
    )
    p.add_argument(
        '--lr_schedule',
        choices=('constant', 'onecycle'),
        default='constant',
        help='learning-rate schedule over max_steps; onecycle peaks at --learning_rate',
    )
    p.add_argument(
        '--augment',
        action='store_true',
        help='random crops (4-pixel padding) and horizontal flips of each batch',
    )
    p.add_argument(
        '--resume',
        type=path,
        metavar='PATH',
        help=f'continue a run from its last.{checkpoint} or best.{checkpoint}, with its flags, '
        'in its folder',
    )


def add_mlp_flags(p, dnn_hidden_units, batchnorms):
    """The flags of both MLP scripts, with the same names and meanings; batchnorms: the
    choices of --batchnorm ('none' first), each explained in the script's help."""
    p.add_argument(
        '--dnn_hidden_units',
        type=hidden_units,
        default=dnn_hidden_units,
        help='comma-separated sizes of the hidden layers, e.g. 500,500',
    )
    p.add_argument(
        '--optimizer',
        choices=('sgd', 'adam', 'adamw'),
        default='sgd',
        help='adamw: Adam with decoupled weight decay',
    )
    p.add_argument(
        '--momentum', type=fraction, default=0.0, help='momentum of --optimizer sgd, in [0, 1)'
    )
    p.add_argument(
        '--weight_decay',
        type=decay,
        default=0.0,
        help='weight decay (decoupled for adamw, L2 otherwise)',
    )
    p.add_argument(
        '--dropout',
        type=fraction,
        default=0.0,
        help='dropout probability after each hidden layer, in [0, 1)',
    )
    p.add_argument(
        '--batchnorm',
        choices=tuple(batchnorms),
        default='none',
        help='batch normalization after each hidden linear layer: '
        + ', '.join(f'{k} ({v})' for k, v in batchnorms.items() if k != 'none'),
    )
    p.add_argument(
        '--init',
        choices=('course', 'kaiming'),
        default='course',
        help="course: weights N(0, 0.0001^2), zero biases; kaiming: PyTorch's "
        'default for nn.Linear, U(+-1/sqrt(fan_in))',
    )
    p.add_argument(
        '--lr_schedule',
        choices=('constant', 'cosine', 'onecycle'),
        default='constant',
        help='learning-rate schedule over max_steps',
    )
    p.add_argument(
        '--augment',
        action='store_true',
        help='random crops (after zero padding) and horizontal flips of each batch',
    )
    p.add_argument(
        '--augment_padding',
        type=crop_padding,
        default=4,
        help='padding of the random crops of --augment, at most 16; 0: flips only',
    )


def check_arguments(parser, values):
    """The command line's checks on values from Python (train(...)'s arguments): each must
    have the type its flag parses to and pass the flag's own test (range, choices), else a
    ValueError of one sentence. Values is changed in place to what the command line would
    give, as metrics.json records it: a path-like becomes text, a number the flag's type (a
    NumPy scalar a Python number, 0 for a rate 0.0)."""
    for action in parser._actions:
        name, value = action.dest, values.get(action.dest)
        if name not in values or value is None:
            continue
        if isinstance(value, os.PathLike):  # recorded as the command line gives it, text
            value = values[name] = os.fspath(value)
        if type(value) is type(action.default) and value == action.default:
            continue
        if action.nargs == 0:  # a switch: --augment
            if not isinstance(value, bool):
                raise ValueError(f'{name} must be True or False, got {value!r}.')
        elif action.choices is not None:
            if value not in action.choices:
                raise ValueError(
                    f'{name} must be one of {", ".join(map(str, action.choices))}, got {value!r}.'
                )
        elif hasattr(action.type, 'what'):  # the number types above
            kind = numbers.Integral if action.type.convert is int else numbers.Real
            ok = isinstance(value, kind) and not isinstance(value, bool)
            try:
                ok = ok and action.type(str(value)) == value
            except FlagError:
                ok = False
            if not ok:
                raise ValueError(f'{name} must be {action.type.what}, got {value!r}.')
            values[name] = action.type(str(value))  # a NumPy scalar as the Python number
        elif action.type is path and not (isinstance(value, str) and value.strip()):
            raise ValueError(f'{name} must be a path (a non-empty string), got {value!r}.')


def output_file(text):
    """argparse type: the path of a file to write, checked before any work: a plain file if
    it exists (not a folder, link, device or pipe, which the write would replace), not in a
    run's folder (its records are not to be replaced), and below a folder this user can write
    to (the nearest that exists: the script makes the rest), with a name that leaves room for
    its temporary file's (.NAME.PID.RANDOM.tmp)."""
    from train_utils import NAME_MAX  # (which imports this module)

    if not text.strip():
        raise argparse.ArgumentTypeError('expected the path of a file to write, got an empty one')
    path = os.path.abspath(text)
    if len(os.fsencode(os.path.basename(path))) > NAME_MAX - 32:
        raise argparse.ArgumentTypeError(f'{text} is too long a name for the file system.')
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f'{text} is a folder; give the path of a file to write.')
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        raise argparse.ArgumentTypeError(  # the write would replace it with a file
            f'{text} is a link, a device or a pipe; give the path of a plain file to write.'
        )
    folder = os.path.dirname(path)
    if any(os.path.exists(os.path.join(folder, n)) for n in ('metrics.json', 'best.json')):
        raise argparse.ArgumentTypeError(
            f'{text} is in the run folder {folder}; write it elsewhere.'
        )
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        raise argparse.ArgumentTypeError(
            f'{text} cannot be written: {folder} is not a folder this user can write to.'
        )
    return text


def unique_keys(pairs):
    """json's object_pairs_hook: the object as a dict, ValueError when it names a key twice
    (JSON lets the second silently win)."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f'names the key {key!r} twice')
        seen.add(key)
    return dict(pairs)


def read_json(path, largest=2**20):
    """The JSON in the file at path; ValueError of one sentence when it cannot be read, is not a
    regular file of at most `largest` bytes (a FIFO would wait forever), is not JSON or names a
    key twice."""
    if os.path.exists(path) and not (os.path.isfile(path) and os.path.getsize(path) <= largest):
        raise ValueError(f'{path} is not a JSON file of at most {largest // 1024} KiB.')
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f, object_pairs_hook=unique_keys)
    except OSError as e:
        raise ValueError(f'cannot read {path}: {e.strerror}.') from None
    except UnicodeDecodeError:
        raise ValueError(f'{path} is not UTF-8 text.') from None
    except RecursionError:
        raise ValueError(f'{path} is not a JSON text of reasonable depth.') from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f'{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.'
        ) from None
    except ValueError as e:  # unique_keys's
        raise ValueError(f'{path} {e}.') from None


def check_mlp_memory(hidden_units, name):
    """ValueError when an MLP with these hidden layers (name: the flag that gave them) needs
    more than this machine's memory: its weights, their gradients, two optimizer moments and
    a scratch array, in float32. A network too large to work fails in one sentence before it
    is built, not in the kernel's out-of-memory killer."""
    sizes = [3 * 32 * 32, *hidden_units, 10]  # CIFAR-10's pixels in, its classes out
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    need, have = 4 * 5 * weights, math.inf  # inf where the system does not say
    with contextlib.suppress(ValueError, OSError, AttributeError):
        have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    if need > have:
        raise ValueError(
            f'{name} {",".join(map(str, hidden_units))} needs at least {need / 1e9:.0f} GB, '
            f'more than the {have / 1e9:.0f} GB of this machine.'
        )


def check_batch_statistics(batchnorm, batch_size):
    """ValueError when batch normalization would train on batches of one image, whose variance
    is 0 (PyTorch refuses such a batch mid-run; NumPy would output beta alone)."""
    if batchnorm != 'none' and batch_size < 2:
        raise ValueError(
            '--batchnorm needs --batch_size 2 or more: a batch of one image has no spread to '
            'normalise by.'
        )


def check_batch_size(batch_size, train_set, validation_size):
    """ValueError when a batch would be larger than the training set (what --validation_size
    leaves of it): said as the data is loaded, before the first step."""
    if batch_size > train_set.num_examples:
        left = f' left by --validation_size {validation_size}' if validation_size else ''
        raise ValueError(
            f'--batch_size {batch_size} is more than the {train_set.num_examples} training '
            f'images{left}; choose a smaller one.'
        )


def parse_with_preset(parser, argv, presets):
    """Parses argv; a --preset's values become the defaults, so explicit flags still win."""
    preset = parser.parse_known_args(argv)[0].preset
    parser.set_defaults(**presets.get(preset, {}))  # None: no --preset
    return parser.parse_args(argv)


def flags_to_argv(flags):
    """{'max_steps': 10, 'dnn_hidden_units': [100]} -> ['--max_steps', '10', ...]: the command
    line that reproduces a run (None and False flags are left out)."""
    argv = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        argv.append(f'--{name}')
        if isinstance(value, list):
            argv.append(','.join(map(str, value)))
        elif value is not True:  # a switch has no value
            argv.append(str(value))
    return argv


def cli(train, args):
    """train(**vars(args)); what a user can cause becomes one line and an exit status: 2 a bad
    value, 1 missing data, a diverged run, a failed write or too little memory, 130 Ctrl-C,
    143 SIGTERM, 128 + its number another of STOP_SIGNALS (each as Ctrl-C throughout, so that
    a download it stops is cleaned up; the run sets its own handlers while it trains)."""
    from cifar10_utils import CIFAR10Error
    from train_utils import is_out_of_memory, write_failure

    prog = os.path.basename(sys.argv[0])
    with stop_signals(interrupt):
        try:
            metrics = train(**vars(args))
        except (ValueError, CIFAR10Error, FloatingPointError) as e:
            print(f'{prog}: error: {e}', file=sys.stderr)
            return 2 if isinstance(e, ValueError) else 1
        except OSError as e:  # a write: a full disk, the run's folder made read-only or deleted
            print(f'{prog}: error: {write_failure(e)}', file=sys.stderr)
            return 1
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and not is_out_of_memory(e):
                raise
            done = getattr(e, 'done', 'the run stopped there')
            print(
                f'{prog}: error: not enough memory for these settings; {done}: a smaller '
                '--batch_size or network needs less.',
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt as e:
            if not hasattr(e, 'signal'):  # else the run has said what it saved
                print('Interrupted before the first step; nothing was saved.', file=sys.stderr)
            return 128 + getattr(e, 'signal', e.args[0] if e.args else signal.SIGINT)
    print(
        f'final test accuracy {metrics["final_test_accuracy"]:.4f} '
        f'({metrics["wall_seconds"]:.1f} s); metrics and curves in {metrics["out_dir"]}'
    )
    return 0
