"""The command line the train scripts share: flag types whose errors are one line (exit
status 2), the flags every script has, presets, and cli(), which turns what a user can cause
into one sentence and an exit status."""
import argparse
import math
import os
import signal
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


def _number(convert, low_ok, what):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > 0 or (low_ok and value == 0))):
            raise FlagError(f'expected {what}, got {text!r}')
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
    except FlagError:
        raise FlagError('expected comma-separated positive integers such as 100 or 500,500, '
                        f'got {text!r}') from None


def make_parser(doc, learning_rate, max_steps, batch_size, eval_freq, presets=None):
    """The flags every train script has, with its course defaults; doc: its docstring."""
    p = ArgumentParser(description=doc.split('\n\n')[0])
    p.add_argument('--learning_rate', type=positive_float, default=learning_rate,
                   help='learning rate of the optimizer')
    p.add_argument('--max_steps', type=positive_int, default=max_steps,
                   help='number of training steps (mini-batches)')
    p.add_argument('--batch_size', type=positive_int, default=batch_size,
                   help='examples per training step')
    p.add_argument('--eval_freq', type=positive_int, default=eval_freq,
                   help='evaluate every this many steps (and at the end), on the whole '
                        'validation split if there is one, else the test set')
    p.add_argument('--data_dir', help='folder with the CIFAR-10 batch files, downloaded there '
                   'when missing (default: $CIFAR10_DIR, else cifar10/cifar-10-batches-py)')
    p.add_argument('--validation_size', type=non_negative_int, default=0,
                   help='hold out this many training images (stratified, drawn by the seed) '
                        'for the evaluations during training (and what they choose); the test '
                        'set is then evaluated once, at the end')
    p.add_argument('--seed', type=non_negative_int, default=42,
                   help='seed of the initialisation and of the batch order')
    p.add_argument('--out_dir', help='folder for metrics.json, curves.png and checkpoints '
                   '(default: a new folder under runs/)')
    p.add_argument('--overwrite', action='store_true',
                   help='write into --out_dir even when it holds files of another run')
    if presets:
        p.add_argument('--preset', choices=tuple(presets),
                       help='a tuned set of flags (see README); flags given explicitly win')
    return p


def add_mlp_flags(p, dnn_hidden_units, batchnorms):
    """The flags of both MLP scripts, with the same names and meanings; batchnorms: the
    choices of --batchnorm ('none' first), each explained in the script's help."""
    p.add_argument('--dnn_hidden_units', type=hidden_units, default=dnn_hidden_units,
                   help='comma-separated sizes of the hidden layers, e.g. 500,500')
    p.add_argument('--optimizer', choices=('sgd', 'adam', 'adamw'), default='sgd',
                   help='adamw: Adam with decoupled weight decay')
    p.add_argument('--momentum', type=non_negative_float, default=0.0,
                   help='momentum of --optimizer sgd')
    p.add_argument('--weight_decay', type=non_negative_float, default=0.0,
                   help='weight decay (decoupled for adamw, L2 otherwise)')
    p.add_argument('--dropout', type=non_negative_float, default=0.0,
                   help='dropout probability after each hidden layer, in [0, 1)')
    p.add_argument('--batchnorm', choices=tuple(batchnorms), default='none',
                   help='batch normalization after each hidden linear layer: '
                        + ', '.join(f'{k} ({v})' for k, v in batchnorms.items() if k != 'none'))
    p.add_argument('--init', choices=('course', 'kaiming'), default='course',
                   help="course: weights N(0, 0.0001^2), zero biases; kaiming: PyTorch's "
                        'default for nn.Linear, U(+-1/sqrt(fan_in))')
    p.add_argument('--lr_schedule', choices=('constant', 'cosine', 'onecycle'),
                   default='constant', help='learning-rate schedule over max_steps')
    p.add_argument('--augment', action='store_true',
                   help='random crops (after zero padding) and horizontal flips of each batch')
    p.add_argument('--augment_padding', type=non_negative_int, default=4,
                   help='padding of the random crops of --augment; 0: flips only')


def parse_with_preset(parser, argv, presets):
    """Parses argv; a --preset's values become the defaults, so explicit flags still win."""
    preset = parser.parse_known_args(argv)[0].preset
    parser.set_defaults(**presets.get(preset, {}))  # None: no --preset
    return parser.parse_args(argv)


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
    parser.set_defaults(**{k: v for k, v in saved.items()
                           if k not in ('out_dir', 'resume', 'overwrite')})
    return parser.parse_args(argv)


def flags_to_argv(flags):
    """{'max_steps': 10, 'dnn_hidden_units': [100]} -> ['--max_steps', '10', ...]: the command
    line that reproduces a run (None and False flags are left out)."""
    return [arg for k, v in flags.items() if v is not None and v is not False
            for arg in ([f'--{k}'] if v is True else
                        [f'--{k}', ','.join(map(str, v)) if isinstance(v, list) else str(v)])]


def _terminate(signum, frame):
    raise KeyboardInterrupt(signum)


def cli(train, args):
    """train(**vars(args)); what a user can cause becomes one line and an exit status: 2 a bad
    value, 1 missing data or a diverged run, 130 Ctrl-C, 143 SIGTERM (as Ctrl-C throughout,
    so that a download it stops is cleaned up; the run sets its own handler while it trains)."""
    from cifar10_utils import CIFAR10Error

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        metrics = train(**vars(args))
    except (ValueError, CIFAR10Error, FloatingPointError) as e:
        print(f'{os.path.basename(sys.argv[0])}: error: {e}', file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt as e:
        if not hasattr(e, 'signal'):  # else the run has said what it saved
            print('Interrupted before the first step; nothing was saved.', file=sys.stderr)
        return 128 + getattr(e, 'signal', e.args[0] if e.args else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f'final test accuracy {metrics["final_test_accuracy"]:.4f} '
          f'({metrics["wall_seconds"]:.1f} s); metrics and curves in {metrics["out_dir"]}')
    return 0
