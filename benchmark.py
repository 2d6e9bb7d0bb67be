"""Speed of the training code, side by side in one process: the NumPy MLP's step against the
PyTorch MLP's and against NumPy's matmul rate, the ConvNet's training and evaluation throughput,
loading CIFAR-10, and a whole default NumPy run. Times are torch.utils.benchmark medians, of
variants measured in alternating rounds so that a busy machine slows them alike. The one script
that imports the train scripts: it times their own step functions.

    python benchmark.py [--out report/benchmark.json]   # the table; the numbers as JSON too
    python benchmark.py --quick                         # a small pass of everything
"""
import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch.utils.benchmark import Measurement, Timer

import cifar10_utils
import mlp_numpy
import mlp_pytorch
import train_convnet_pytorch as convnet_script
import train_mlp_numpy
import train_mlp_pytorch
from convnet_pytorch import ConvNet
from modules import CrossEntropyModule
from train_utils import evaluate, select_device, write_json

N_INPUTS, N_CLASSES = 3072, 10
MLP_CONFIGS = (([100], 200), ([1000, 1000], 512), ([500] * 4, 400))
RATE_CONFIG = ([1000, 1000], 512)  # the NumPy step whose GFLOP/s is set against the matmul's


def compare(fns, rounds, min_run_time):
    """Median seconds per call of each fn() of fns {name: fn}: Timer.blocked_autorange (which
    warms up first) in `rounds` rounds that run the fns in turn, reversed every other round."""
    timers = {name: Timer('fn()', globals={'fn': fn}, description=name,
                          num_threads=torch.get_num_threads())  # Timer's default is 1 thread
              for name, fn in fns.items()}
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


def mlp_steps(hidden, x, labels):
    """The two MLPs' steps (float32, SGD, CPU) on x float32 (B, 3072), labels int64 (B,)."""
    lr, rng = train_mlp_numpy.LEARNING_RATE_DEFAULT, np.random.default_rng(0)
    np_model = mlp_numpy.MLP(N_INPUTS, hidden, N_CLASSES, dtype=np.float32, rng=rng)
    loss_module, one_hot = CrossEntropyModule(), cifar10_utils.dense_to_one_hot(labels)
    torch_model = mlp_pytorch.MLP(N_INPUTS, hidden, N_CLASSES)
    opt = train_mlp_pytorch.make_optimizer('sgd', torch_model.parameters(), lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    return {'numpy': lambda: train_mlp_numpy.train_step(np_model, loss_module, x, one_hot, lr),
            'torch': lambda: train_mlp_pytorch.train_step(torch_model, opt, xt, yt)}


def num(v):
    return f'{v:.0f}' if v >= 99.95 else f'{v:#.3g}'  # 3 significant digits


def row(measurement, value, reference, unit, target):
    """Prints a line of the table at once (value / reference = ratio, the ratio's target) and
    returns it as a record for the JSON."""
    text = f'{num(value)} / {num(reference)} {unit} = {value / reference:.2f}'
    print(f'| {measurement:<80} | {text:<28} | {target:<12} |', flush=True)
    return {'measurement': measurement, 'value': value, 'reference': reference, 'unit': unit,
            'ratio': value / reference, 'target': target}


def bench_mlp(quick):
    """NumPy against PyTorch MLP steps on one batch, and the NumPy step's GFLOP/s against
    NumPy's float32 matmul rate, measured in the same rounds (under the same load)."""
    rounds, min_run_time = (2, 0.05) if quick else (7, 0.5)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 60, (512, N_INPUTS)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, 512)
    a, b = rng.standard_normal((2, 2048, 2048), dtype=np.float32)
    out, rows = np.empty_like(a), []
    for hidden, batch in MLP_CONFIGS:
        fns = mlp_steps(hidden, x[:batch], labels[:batch])
        if (hidden, batch) == RATE_CONFIG:
            fns['matmul'] = lambda: np.matmul(a, b, out=out)
        sec = compare(fns, rounds, min_run_time)
        name = f'[{hidden[0]}] x {len(hidden)}' if len(hidden) > 2 else hidden
        rows.append(row(f'NumPy / PyTorch step, {name} at batch {batch}', sec['numpy'] * 1e3,
                        sec['torch'] * 1e3, 'ms', '<= 1.0'))
        if 'matmul' in sec:
            rows.append(row(f'NumPy step {hidden} at batch {batch} / float32 matmul 2048^2',
                            mlp_step_flops(hidden, batch) / sec['numpy'] / 1e9,
                            2 * 2048 ** 3 / sec['matmul'] / 1e9, 'GFLOP/s', '>= 0.8'))
    return rows


def bench_convnet(quick, device):
    """train_step on a batch made beforehand (bare) and in the script's loop (next batch, copy
    to the device, float(loss)), and evaluate; random images: pixels do not change the speed."""
    dev = select_device(device)
    n_eval = {(True, 'cpu'): 500, (False, 'cpu'): 2000}.get((quick, dev.type), 10000)
    rounds, min_run_time = (1, 0.1) if quick else (5, 2.0)
    batch, lr = convnet_script.BATCH_SIZE_DEFAULT, convnet_script.LEARNING_RATE_DEFAULT
    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, (max(n_eval, 4096), 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, len(images))
    train_set = cifar10_utils.DataSet(images, labels, seed=0)
    x, y = torch.from_numpy(images[:batch]).to(dev), torch.from_numpy(labels[:batch]).to(dev)
    models = [ConvNet(3, N_CLASSES).to(dev) for _ in range(2)]
    opts = [convnet_script.make_optimizer('ADAM', m.parameters(), lr) for m in models]

    def loop_step():
        xb, yb = (torch.from_numpy(a).to(dev, non_blocking=True)
                  for a in train_set.next_batch(batch))
        float(convnet_script.train_step(models[1], opts[1], xb, yb))

    sec = compare({'bare': lambda: convnet_script.train_step(models[0], opts[0], x, y),
                   'loop': loop_step,
                   'eval': lambda: evaluate(models[0], images[:n_eval], labels[:n_eval], dev)},
                  rounds, min_run_time)
    return [row(f'ConvNet training loop / bare loop, batch {batch}, {dev.type}',
                batch / sec['loop'], batch / sec['bare'], 'images/s', '>= 0.9'),
            row(f'ConvNet evaluation / training throughput, {dev.type}',
                n_eval / sec['eval'], batch / sec['bare'], 'images/s', '>= 2.5')]


# Run in a fresh process, timing the load alone (not the interpreter's start or the imports).
LOAD = """import pickle, sys, time
import numpy as np
import cifar10_utils as cu
start = time.perf_counter()
if sys.argv[1] == 'floor':  # read the six pickles and convert them to float32, nothing more
    for name in cu.TRAIN_FILES + cu.TEST_FILES:
        with open(f'{sys.argv[2]}/{name}', 'rb') as f:
            np.asarray(pickle.load(f, encoding='latin1')['data'], dtype=np.float32)
else:
    cu.get_cifar10(sys.argv[2])
print(time.perf_counter() - start)"""


def run_python(*args):
    """(seconds from start to exit, stdout) of `python *args` in the project folder."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], cwd=os.path.dirname(os.path.abspath(__file__)),
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout


def bench_loading(quick, step_seconds):
    """get_cifar10 in a fresh process against the floor of reading the pickles, and a whole
    train_mlp_numpy.py run against its training compute: its steps times step_seconds."""
    folder = os.path.abspath(cifar10_utils.default_data_dir())
    if not os.path.isfile(os.path.join(folder, 'test_batch')):
        print(f'loading: skipped, no CIFAR-10 in {folder} (set CIFAR10_DIR)', file=sys.stderr)
        return []
    steps, times = (20 if quick else train_mlp_numpy.MAX_STEPS_DEFAULT), []
    for _ in range(1 if quick else 3):
        with tempfile.TemporaryDirectory() as tmp:
            times.append([float(run_python('-c', LOAD, kind, folder)[1])
                          for kind in ('floor', 'get_cifar10')])
            times[-1].append(run_python('train_mlp_numpy.py', '--data_dir', folder,
                                        '--max_steps', str(steps), '--out_dir', tmp)[0])
    floor, load, wall = np.median(times, axis=0).tolist()
    run = 'default' if steps == train_mlp_numpy.MAX_STEPS_DEFAULT else f'{steps}-step'
    return [row('`get_cifar10` (decode + normalise) / floor (read 6 pickles + float32)',
                load, floor, 's', '-'),
            row(f'{run} `train_mlp_numpy.py`, process start to exit / its training compute',
                wall, steps * step_seconds, 's', '<= 3, < 10 s')]


def machine():
    cpu = None
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), None)
    return {'platform': platform.platform(), 'cpu': cpu or platform.processor() or None,
            'cpus': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
            'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            'python': platform.python_version(), 'numpy': np.__version__,
            'torch': str(torch.__version__)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='a small pass of everything')
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                   help="the ConvNet's (auto: CUDA when available); the MLPs run on the CPU")
    p.add_argument('--out', help='also write the rows and the machine as JSON to this file')
    args = p.parse_args(argv)

    results = {'quick': args.quick, 'machine': machine(),
               'started': time.strftime('%Y-%m-%dT%H:%M:%S')}
    print(f'| {"measurement":<80} | {"value":<28} | {"target":<12} |\n'
          f'|{"-" * 82}|{"-" * 30}|{"-" * 14}|', flush=True)
    rows = bench_mlp(args.quick)
    # MLP_CONFIGS[0] is the network and batch of a default train_mlp_numpy.py run.
    rows += bench_loading(args.quick, rows[0]['value'] / 1e3)
    results['rows'] = rows + bench_convnet(args.quick, args.device)
    if args.out:
        write_json(args.out, results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
