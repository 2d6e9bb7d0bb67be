"""Speed of the training code, side by side in one process: NumPy MLP and ConvNet steps against
PyTorch's and against NumPy's matmul rate, loading CIFAR-10, a whole default NumPy run, ConvNet
evaluation against training and bfloat16 against float32. Times are torch.utils.benchmark
medians of the train scripts' own step functions, in alternating rounds so that a busy machine
slows all alike.

    python benchmark.py [--quick] [--out report/benchmark.json]   # the table (and its JSON)
    python benchmark.py --profile                 # where the NumPy ConvNet step spends its time
"""

from quiet_start import interrupt, stop_signals, stopped  # (first: see its docstring)

import contextlib
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial

import numpy as np
import torch

import cifar10_utils
import convnet_numpy
import mlp_numpy
import mlp_pytorch
import train_convnet_numpy
import train_convnet_pytorch as convnet_script
import train_mlp_numpy
import train_mlp_pytorch
from command_line import ArgumentParser, output_file
from convnet_pytorch import ConvNet
from modules import Conv2dModule, CrossEntropyModule, LinearModule
from train_utils import select_device, write_json

N_INPUTS, N_CLASSES = 3072, 10
# (hidden, batch, recipe): [0] a default train_mlp_numpy.py run's network and batch; [1] set
# against NumPy's matmul; the last the --preset best recipe (batch norm, dropout, AdamW).
BEST = dict(batchnorm=True, dropout=0.2, init='kaiming')
MLP_CONFIGS = (
    ([100], 200, {}),
    ([1000, 1000], 512, {}),
    ([500] * 4, 400, {}),
    ([1024, 1024], 256, BEST),
)
# Run in a fresh process, timing the load alone (not the interpreter's start or the imports).
LOAD = """import sys, time, numpy as np, cifar10_utils as cu
start = time.perf_counter()
try:
    if sys.argv[1] == 'floor':  # read the six batch files (unpickled safely) as float32, no more
        for name in cu.TRAIN_FILES + cu.TEST_FILES:
            np.asarray(cu.load_batch(f'{sys.argv[2]}/{name}')[0], dtype=np.float32)
    else:
        cu.get_cifar10(sys.argv[2])
except cu.CIFAR10Error as e:  # its sentence, which run_python passes on
    sys.exit(str(e))
print(time.perf_counter() - start)"""


def compare(fns, rounds, min_run_time):
    """Median seconds per call of each fn() of fns {name: fn}: Timer.blocked_autorange (which
    warms up first) in `rounds` rounds that run the fns in turn, reversed every other round."""
    # torch.utils.benchmark imports cpp_extension, which warns on a machine with CUDA's compiler
    # and no GPU (nothing here compiles); imported here, --help and a bad flag stay quiet too.
    logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    from torch.utils.benchmark import Measurement, Timer

    threads = torch.get_num_threads()  # Timer's default is 1 thread
    timers = {n: Timer('fn()', globals={'fn': fn}, num_threads=threads) for n, fn in fns.items()}
    runs = {name: [] for name in fns}
    for r in range(rounds):
        for name in list(fns)[::-1] if r % 2 else fns:
            runs[name].append(timers[name].blocked_autorange(min_run_time=min_run_time))
    return {name: Measurement.merge(m)[0].median for name, m in runs.items()}


def mlp_step_flops(hidden, batch):
    """Floating-point operations of one NumPy training step: the forward matmuls, the weight
    gradients (as many again), the input gradients of all layers but the first (skipped)."""
    sizes = [N_INPUTS, *hidden, N_CLASSES]
    matmuls = [2 * batch * fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return 2 * sum(matmuls) + sum(matmuls[1:])


def row(measurement, value, reference, unit, target):
    """Prints a line of the table at once and returns it as a record for the JSON."""
    a, b = (f'{v:.0f}' if v >= 99.95 else f'{v:#.3g}' for v in (value, reference))  # 3 digits
    text = f'{a} / {b} {unit} = {value / reference:.2f}'
    print(f'| {measurement:<80} | {text:<28} | {target:<12} |', flush=True)
    return {
        'measurement': measurement,
        'value': value,
        'reference': reference,
        'unit': unit,
        'ratio': value / reference,
        'target': target,
    }


def bench_mlp(quick):
    """NumPy against PyTorch MLP steps (float32, CPU) on one batch, SGD or the best recipe's
    AdamW; the NumPy step's GFLOP/s against NumPy's float32 matmul rate in the same rounds."""
    lr, rng, rows = train_mlp_numpy.LEARNING_RATE_DEFAULT, np.random.default_rng(0), []
    x = rng.normal(0, 60, (512, N_INPUTS)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, 512)
    a, b = rng.standard_normal((2, 2048, 2048), dtype=np.float32)
    for i, (hidden, batch, recipe) in enumerate(MLP_CONFIGS):
        np_model = mlp_numpy.MLP(N_INPUTS, hidden, N_CLASSES, dtype=np.float32, rng=rng, **recipe)
        torch_model = mlp_pytorch.MLP(
            N_INPUTS, hidden, N_CLASSES, **({**recipe, 'batchnorm': 'torch'} if recipe else {})
        )
        name, decay = ('adamw', 1e-2) if recipe else ('sgd', 0.0)
        np_opt = train_mlp_numpy.make_optimizer(name, np_model.parameters(), lr, 0, decay)
        opt = train_mlp_pytorch.make_optimizer(name, torch_model.parameters(), lr, 0, decay)
        fns = {
            'numpy': partial(
                train_mlp_numpy.train_step,
                np_model,
                CrossEntropyModule(),
                np_opt,
                x[:batch],
                cifar10_utils.dense_to_one_hot(labels[:batch]),
            ),
            'torch': partial(
                train_mlp_pytorch.train_step,
                torch_model,
                opt,
                torch.from_numpy(x[:batch]),
                torch.from_numpy(labels[:batch]),
            ),
            **({'matmul': partial(np.matmul, a, b, out=np.empty_like(a))} if i == 1 else {}),
        }
        sec = compare(fns, *((2, 0.05) if quick else (7, 0.5)))
        name = f'[{hidden[0]}] x {len(hidden)}' if len(hidden) > 2 else hidden
        what = ', batch norm + dropout 0.2 + AdamW' if recipe else ''
        rows.append(
            row(
                f'NumPy / PyTorch step, {name} at batch {batch}{what}',
                sec['numpy'] * 1e3,
                sec['torch'] * 1e3,
                'ms',
                '<= 1.0',
            )
        )
        if 'matmul' in sec:
            rows.append(
                row(
                    f'NumPy step {hidden} at batch {batch} / float32 matmul 2048^2',
                    mlp_step_flops(hidden, batch) / sec['numpy'] / 1e9,
                    2 * 2048**3 / sec['matmul'] / 1e9,
                    'GFLOP/s',
                    '>= 0.8',
                )
            )
    return rows


def bench_convnet(quick, device):
    """The ConvNet's train_step and evaluate, in images/s on random images, in float32 and,
    where the device has it, under bfloat16 autocast (--amp)."""
    dev = select_device(device)
    n_eval = {(True, 'cpu'): 500, (False, 'cpu'): 2000}.get((quick, dev.type), 10000)
    batch, lr = convnet_script.BATCH_SIZE_DEFAULT, convnet_script.LEARNING_RATE_DEFAULT
    rng, model = np.random.default_rng(0), ConvNet(3, N_CLASSES).to(dev)
    images = rng.normal(0, 60, (n_eval, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, n_eval)
    x, y = (torch.from_numpy(a[:batch]).to(dev) for a in (images, labels))
    opt = convnet_script.make_optimizer('ADAM', model, lr)
    bf16 = convnet_script.autocast_dtype(dev, amp=True) == torch.bfloat16
    fns = {}
    for dtype, amp_dtype in [('float32', None), *([('bfloat16', torch.bfloat16)] if bf16 else [])]:
        fns[f'train {dtype}'] = partial(convnet_script.train_step, model, opt, x, y, amp_dtype)
        fns[f'eval {dtype}'] = partial(
            convnet_script.evaluate, model, images, labels, dev, amp_dtype=amp_dtype
        )
    sec = compare(fns, *((1, 0.1) if quick else (5, 2.0)))
    rows = [
        row(
            f'ConvNet evaluation / training throughput, {dtype}, {dev.type}',
            n_eval / sec[f'eval {dtype}'],
            batch / sec[f'train {dtype}'],
            'images/s',
            '>= 3',
        )
        for dtype in ('float32', 'bfloat16')
        if f'eval {dtype}' in sec
    ]
    if bf16:
        rows.append(
            row(
                f'ConvNet training step at batch {batch}, bfloat16 / float32, {dev.type}',
                sec['train bfloat16'] * 1e3,
                sec['train float32'] * 1e3,
                'ms',
                '< 1.0',
            )
        )
    return rows


def convnet_step_flops(model, batch):
    """Floating-point operations of one NumPy ConvNet training step, from the products its
    layers ran in the last forward: each conv and linear layer's forward, weight gradient and
    input gradient (the first conv's skipped). About 0.92 GFLOP an image for Table 1."""
    flops = []
    for layer in model.layers:
        if isinstance(layer, Conv2dModule):  # cols (B H' W', k k C) @ W^T (k k C, O)
            flops.append(2 * layer.cols.size * layer.W.shape[0])
        elif isinstance(layer, LinearModule):
            flops.append(2 * layer.x.size * layer.params['weight'].shape[0])
    return 2 * sum(flops) + sum(flops[1:])


def convnet_twins(batch, rng):
    """The NumPy and PyTorch ConvNets (float32, Adam as their scripts make it) and the step of
    each, on one batch of random images."""
    x = rng.normal(0, 60, (batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, batch)
    ours = convnet_numpy.ConvNet(3, N_CLASSES, dtype=np.float32, rng=rng)
    theirs = ConvNet(3, N_CLASSES)
    lr = train_convnet_numpy.LEARNING_RATE_DEFAULT
    our_step = partial(
        train_convnet_numpy.train_step,
        ours,
        CrossEntropyModule(),
        train_convnet_numpy.make_optimizer('ADAM', ours, lr),
        x,
        cifar10_utils.dense_to_one_hot(labels),
    )
    their_step = partial(
        convnet_script.train_step,
        theirs,
        convnet_script.make_optimizer('ADAM', theirs, lr),
        torch.from_numpy(x),
        torch.from_numpy(labels),
    )
    return ours, our_step, their_step


def bench_convnet_numpy(quick):
    """The NumPy ConvNet's training step (Adam, float32, CPU) against PyTorch's at batch 32 and
    128, and both in GFLOP/s against NumPy's float32 matmul rate, in the same rounds."""
    rng, rows = np.random.default_rng(0), []
    a, b = rng.standard_normal((2, 2048, 2048), dtype=np.float32)
    for batch in (32, 128):
        model, our_step, their_step = convnet_twins(batch, rng)
        fns = {
            'numpy': our_step,
            'torch': their_step,
            'matmul': partial(np.matmul, a, b, out=np.empty_like(a)),
        }
        sec = compare(fns, *((1, 0.1) if quick else (5, 2.0)))
        flops, matmul = convnet_step_flops(model, batch), 2 * 2048**3 / sec['matmul'] / 1e9
        rows.append(
            row(
                f'NumPy / PyTorch ConvNet step at batch {batch}, Adam, float32, cpu',
                sec['numpy'] * 1e3,
                sec['torch'] * 1e3,
                'ms',
                '<= 1.3' if batch == 32 else '-',
            )
        )
        for name in ('numpy', 'torch'):
            rows.append(
                row(
                    f'{"NumPy" if name == "numpy" else "PyTorch"} ConvNet step at batch '
                    f'{batch} / float32 matmul 2048^2',
                    flops / sec[name] / 1e9,
                    matmul,
                    'GFLOP/s',
                    '>= 0.5' if name == 'numpy' else '-',
                )
            )
    return rows


def profile_convnet_numpy(batch=32, repeats=5):
    """Prints where a NumPy ConvNet training step spends its time, layer by layer: forward,
    backward, and for the convs the backward split into the weight gradient (backward with
    input_grad=False) and the input gradient (the rest); medians of `repeats` steps."""
    rng = np.random.default_rng(0)
    model, step, _ = convnet_twins(batch, rng)
    step()  # warm-up: the buffers exist
    x = rng.normal(0, 60, (batch, 3, 32, 32)).astype(np.float32)
    y = cifar10_utils.dense_to_one_hot(rng.integers(0, N_CLASSES, batch))
    loss_module, times = CrossEntropyModule(), {}

    def timed(key, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        times.setdefault(key, []).append(time.perf_counter() - start)
        return out

    for _ in range(repeats):
        out = x
        for i, layer in enumerate(model.layers):
            out = timed((i, 'forward'), layer.forward, out)
        dout = loss_module.backward(out, y)
        for i in reversed(range(len(model.layers))):
            layer = model.layers[i]
            if isinstance(layer, Conv2dModule):
                timed((i, 'weight gradient'), layer.backward, dout, input_grad=False)
                if i == 0:
                    continue
                dout = timed((i, 'backward'), layer.backward, dout)
            else:
                dout = timed((i, 'backward'), layer.backward, dout)
    median = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    total = sum(median.values()) - sum(
        v for (i, kind), v in median.items() if kind == 'weight gradient' and i > 0
    )
    print(
        f'NumPy ConvNet step at batch {batch}: {total:.1f} ms in the layers (median of '
        f"{repeats}); a conv's input gradient is its backward minus its weight gradient"
    )
    print(
        f'| {"layer":<22} | {"forward":>8} | {"weight grad":>11} | {"input grad":>10} | '
        f'{"backward":>8} |'
    )
    for i, layer in enumerate(model.layers):
        f, w, b = (median.get((i, k), 0.0) for k in ('forward', 'weight gradient', 'backward'))
        dx = b - w if (b and w) else 0.0
        name = f'{model.names[i]} {type(layer).__name__.removesuffix("Module")}'
        print(f'| {name:<22} | {f:8.2f} | {w:11.2f} | {dx:10.2f} | {max(b, w):8.2f} |')


def run_python(*args):
    """(seconds from start to exit, stdout) of `python *args` in the project folder;
    ValueError with the last line it printed on stderr when it fails (a damaged batch file)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ValueError((done.stderr.strip().splitlines() or [f'exit {done.returncode}'])[-1])
    return time.perf_counter() - start, done.stdout


def bench_loading(quick, step_seconds):
    """get_cifar10 in a fresh process against the floor of reading the pickles, and a whole
    train_mlp_numpy.py run against its training compute: its steps times step_seconds."""
    folder = os.path.abspath(cifar10_utils.default_data_dir())
    if not os.path.isfile(os.path.join(folder, 'test_batch')):
        print(f'loading: skipped, no CIFAR-10 in {folder} (set CIFAR10_DIR)', file=sys.stderr)
        return []
    steps, run = (20, '20-step') if quick else (train_mlp_numpy.MAX_STEPS_DEFAULT, 'default')
    with tempfile.TemporaryDirectory() as tmp:
        times = [
            [float(run_python('-c', LOAD, kind, folder)[1]) for kind in ('floor', 'load')]
            + [
                run_python(
                    'train_mlp_numpy.py',
                    '--data_dir',
                    folder,
                    '--max_steps',
                    str(steps),
                    '--out_dir',
                    os.path.join(tmp, str(i)),
                )[0]
            ]
            for i in range(1 if quick else 3)
        ]
    floor, load, wall = np.median(times, axis=0).tolist()
    return [
        row(
            '`get_cifar10` (decode + normalise) / floor (read 6 pickles + float32)',
            load,
            floor,
            's',
            '-',
        ),
        row(
            f'{run} `train_mlp_numpy.py`, process start to exit / its training compute',
            wall,
            steps * step_seconds,
            's',
            '<= 3, < 10 s',
        ),
    ]


def main(argv=None):
    p = ArgumentParser(prog='benchmark.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='a small pass of everything')
    p.add_argument(
        '--device',
        choices=('auto', 'cpu', 'cuda'),
        default='auto',
        help="the ConvNet's (auto: CUDA when available); the MLPs run on the CPU",
    )
    p.add_argument(
        '--out', type=output_file, help='also write the rows and the machine as JSON to this file'
    )
    p.add_argument(
        '--profile',
        action='store_true',
        help='only print the NumPy ConvNet step layer by layer, at batch 32',
    )
    args = p.parse_args(argv)
    if args.profile and (args.out or args.quick):  # it would run without them
        p.error('--profile only prints the profile: it takes no --out and no --quick.')
    folder = os.path.dirname(os.path.abspath(args.out or '.'))
    if args.out and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        p.error(f'--out {args.out}: its folder does not exist or cannot be written to.')
    with stop_signals(interrupt):
        try:
            return profile_convnet_numpy() if args.profile else benchmark(args)
        except KeyboardInterrupt as e:
            return stopped('benchmark.py', e, '; nothing was written.')
        except ValueError as e:  # the data a timed run of a script of this project read
            print(f'benchmark.py: error: {e}', file=sys.stderr)
            return 1
        except OSError as e:
            print(
                f'benchmark.py: error: could not write {e.filename} ({e.strerror}).',
                file=sys.stderr,
            )
            return 1


def benchmark(args):
    """Prints the table row by row and, with --out, writes it with the machine as JSON."""
    started, cpu = time.strftime('%Y-%m-%dT%H:%M:%S'), None
    print(
        f'| {"measurement":<80} | {"value":<28} | {"target":<12} |\n'
        f'|{"-" * 82}|{"-" * 30}|{"-" * 14}|',
        flush=True,
    )
    rows = bench_mlp(args.quick)
    rows += bench_loading(args.quick, rows[0]['value'] / 1e3)  # rows[0]: MLP_CONFIGS[0]
    rows += bench_convnet(args.quick, args.device)
    rows += bench_convnet_numpy(args.quick)
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), None)
    if args.out:
        write_json(
            args.out,
            {
                'quick': args.quick,
                'started': started,
                'rows': rows,
                'machine': {
                    'platform': platform.platform(),
                    'cpu': cpu or platform.processor() or None,
                    'cpus': os.cpu_count(),
                    'torch_threads': torch.get_num_threads(),
                    'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    'python': platform.python_version(),
                    'numpy': np.__version__,
                    'torch': str(torch.__version__),
                },
            },
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
