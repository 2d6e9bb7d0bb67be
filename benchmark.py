"""Throughput benchmarks of the training code, against bare PyTorch loops.

    python benchmark.py              # every section; the table on stdout, the numbers in JSON
    python benchmark.py --quick      # fewer rounds and steps: a smoke test of a minute or two
    python benchmark.py --only convnet --out bench.json

Each section is a function bench_<name>(quick=False, device='auto') returning a dict whose
'rows' are (measurement, value, unit) for the table; main runs the sections in SECTIONS and
writes everything to --out. Timed variants are interleaved in rounds and quoted as medians, so
that a machine busy with other work slows them alike.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from train_utils import write_json

# --------------------------------------------------------------------------- helpers


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _rounds(variants, rounds, steps, device):
    """Runs each variant() steps times per round, the variants one after another in every
    round, in reverse order every other round (a machine that speeds up or slows down then
    favours none of them); returns {name: [seconds per step, one per round]}."""
    times = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants.items())
        for name, fn in order[::-1] if r % 2 else order:
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) / steps)
    return times


# --------------------------------------------------------------------------- sections


def bench_convnet(quick=False, device='auto', batch_size=32):
    """Training throughput of train_convnet_pytorch.py's step against a bare loop, and
    evaluation throughput on the test set, in images per second.

    loop: make_train_step, the step the script runs (next mini-batch of a DataSet, transfer,
    forward, backward, fused Adam) plus float(loss), the one synchronisation per step of the
    shared loop. bare: the same model and optimizer on tensors made beforehand, no data
    handling, no synchronisation until the round ends. bare_default_adam: bare with
    torch.optim.Adam's default implementation, what the script would cost without fused=True.
    """
    from cifar10_utils import DataSet
    from convnet_pytorch import ConvNet
    from train_convnet_pytorch import LEARNING_RATE_DEFAULT, make_optimizer, make_train_step
    from train_utils import evaluate_torch, select_device

    dev = select_device(device)
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        rounds, steps, warmup, n_eval = (3, 30, 10, 2000) if quick else (7, 200, 30, 10000)
    else:
        # A CPU step takes about a second: short rounds, many of them, follow a busy
        # machine's changing load more closely than a few long ones.
        rounds, steps, warmup, n_eval = (5, 1, 1, 500) if quick else (11, 2, 2, 2000)

    rng = np.random.default_rng(0)
    train_set = DataSet(rng.normal(0, 60, (4096, 3, 32, 32)).astype(np.float32),
                        rng.integers(0, 10, 4096), seed=0)
    x = torch.randn(batch_size, 3, 32, 32, device=dev) * 60
    y = torch.randint(0, 10, (batch_size,), device=dev)

    def model_and_optimizer(fused=True):
        torch.manual_seed(0)
        model = ConvNet(3, 10).to(dev).train()
        if fused:
            return model, make_optimizer('ADAM', model.parameters(), LEARNING_RATE_DEFAULT, 0.0)
        return model, torch.optim.Adam(model.parameters(), lr=LEARNING_RATE_DEFAULT)

    model, opt = model_and_optimizer()
    script_step = make_train_step(model, opt, train_set, batch_size, dev)

    def bare_step_of(model, opt):
        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    variants = {'loop': lambda: float(script_step()),
                'bare': bare_step_of(*model_and_optimizer()),
                'bare_default_adam': bare_step_of(*model_and_optimizer(fused=False))}
    _rounds(variants, 1, warmup, dev)  # kernel selection, allocator and caches settle first
    times = _rounds(variants, rounds, steps, dev)
    ips = {name: batch_size / statistics.median(t) for name, t in times.items()}

    # Random images: a dense network's speed does not depend on the pixel values.
    images = rng.normal(0, 60, (n_eval, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, n_eval)
    evaluate_torch(model, images[:1000], labels[:1000], dev)  # warm-up
    _sync(dev)
    start = time.perf_counter()
    evaluate_torch(model, images, labels, dev)
    _sync(dev)
    eval_ips = len(images) / (time.perf_counter() - start)

    ratio = ips['loop'] / ips['bare']
    return {
        'device': str(dev), 'torch_threads': torch.get_num_threads(), 'batch_size': batch_size,
        'rounds': rounds, 'steps_per_round': steps,
        'train_images_per_second': ips,
        'seconds_per_step': {name: t for name, t in times.items()},
        'loop_over_bare': ratio,
        'eval_images': len(images),
        'eval_images_per_second': eval_ips,
        'rows': [
            (f'train loop (train_convnet_pytorch), batch {batch_size}', ips['loop'], 'images/s'),
            ('bare loop, same model and fused Adam', ips['bare'], 'images/s'),
            ('bare loop, default Adam', ips['bare_default_adam'], 'images/s'),
            ('loop / bare', ratio, 'x'),
            (f'evaluation ({len(images)} images, batches of 1000)', eval_ips, 'images/s'),
        ],
    }


MLP_CONFIGS = (([100], 200), ([1000, 1000], 512), ([500] * 4, 400))
N_INPUTS, N_CLASSES = 3072, 10


def mlp_step_flops(hidden, batch):
    """Floating-point operations of one NumPy training step: the forward matmuls, the weight
    gradients (as many again) and the input gradients of every layer but the first (skipped);
    the element-wise work is left out."""
    sizes = [N_INPUTS, *hidden, N_CLASSES]
    matmuls = [2 * batch * fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return 2 * sum(matmuls) + sum(matmuls[1:])


def _random_dataset(n, one_hot, seed=0):
    from cifar10_utils import DataSet, dense_to_one_hot
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, n)
    images = rng.normal(0, 60, (n, 3, 32, 32)).astype(np.float32)
    return DataSet(images, dense_to_one_hot(labels) if one_hot else labels, seed=seed)


def _mlp_steps(hidden, batch, train_set_np, train_set_torch):
    """The training steps of train_mlp_numpy.py and train_mlp_pytorch.py (plain SGD, float32,
    on the CPU) for one architecture."""
    import mlp_numpy
    import mlp_pytorch
    import train_mlp_numpy
    import train_mlp_pytorch
    from modules import CrossEntropyModule

    rng = np.random.default_rng(0)
    np_model = mlp_numpy.MLP(N_INPUTS, hidden, N_CLASSES, dtype=np.float32, rng=rng)
    np_step = train_mlp_numpy.make_train_step(np_model, CrossEntropyModule(), train_set_np,
                                              batch, 1e-3)
    torch_model = mlp_pytorch.MLP(N_INPUTS, hidden, N_CLASSES)
    opt = torch.optim.SGD(torch_model.parameters(), lr=1e-3)
    torch_step = train_mlp_pytorch.make_train_step(torch_model, opt, train_set_torch, batch,
                                                   torch.device('cpu'))
    return np_step, torch_step


def matmul_rate(rounds=5, n=2048):
    """NumPy's float32 matrix-multiply rate on n x n matrices, in GFLOP/s (median)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def bench_mlp(quick=False, device='auto'):
    """NumPy MLP training step against the PyTorch MLP's, on the CPU in float32 (forward,
    backward, SGD update and the next mini-batch, as the train scripts run them), and the
    NumPy step's GFLOP/s against NumPy's own matmul rate measured in the same rounds."""
    rounds, steps = (3, 2) if quick else (9, 10)
    dev = torch.device('cpu')
    cpu = _random_dataset(2048, one_hot=True), _random_dataset(2048, one_hot=False)
    result, rows = {'configs': []}, []
    for hidden, batch in MLP_CONFIGS:
        np_step, torch_step = _mlp_steps(hidden, batch, *cpu)
        variants = {'numpy': np_step, 'torch': torch_step}
        _rounds(variants, 1, 2, dev)
        times = _rounds(variants, rounds, steps, dev)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med['numpy'] / med['torch']
        name = f'{hidden} batch {batch}'
        result['configs'].append({'hidden': hidden, 'batch_size': batch,
                                  'seconds_per_step': med, 'numpy_over_torch': ratio})
        rows += [(f'NumPy step, {name}', med['numpy'] * 1e3, 'ms'),
                 (f'PyTorch step, {name}', med['torch'] * 1e3, 'ms'),
                 (f'NumPy / PyTorch, {name}', ratio, 'x')]

    # The achieved rate of the NumPy step for [1000, 1000] at batch 512, with the matmul rate
    # measured alternately with it so that both see the same load.
    hidden, batch = [1000, 1000], 512
    np_step, _ = _mlp_steps(hidden, batch, *cpu)
    step_times, mm_rates = [], []
    for _ in range(rounds):
        step_times.append(_rounds({'numpy': np_step}, 1, steps, dev)['numpy'][0])
        mm_rates.append(matmul_rate(rounds=3))
    step_rate = mlp_step_flops(hidden, batch) / statistics.median(step_times) / 1e9
    mm_rate = statistics.median(mm_rates)
    result.update(step_gflops=step_rate, matmul_gflops=mm_rate,
                  step_over_matmul=step_rate / mm_rate)
    rows += [(f'NumPy step, {hidden} batch {batch}', step_rate, 'GFLOP/s'),
             ('NumPy float32 matmul, 2048 x 2048', mm_rate, 'GFLOP/s'),
             ('step / matmul rate', step_rate / mm_rate, 'x')]
    result['rows'] = rows
    return result


def _data_dir():
    from cifar10_utils import default_data_dir
    folder = default_data_dir()
    return folder if os.path.isfile(os.path.join(folder, 'test_batch')) else None


_LOAD_SNIPPET = """
import os, pickle, sys, time
import numpy as np
start = time.perf_counter()
if sys.argv[1] == 'floor':
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(os.path.join(sys.argv[2], name), 'rb') as f:
            np.asarray(pickle.load(f, encoding='latin1')['data'], dtype=np.float32)
else:
    import cifar10_utils
    cifar10_utils.get_cifar10(sys.argv[2])
print(time.perf_counter() - start)
"""


def _timed_process(args, env=None):
    """Runs python args in the project folder; returns (seconds it printed, wall seconds)."""
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], cwd=here, env={**os.environ, **(env or {})},
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    try:
        return float(out.stdout.strip().splitlines()[-1]), wall
    except (ValueError, IndexError):
        return None, wall


def bench_loading(quick=False, device='auto'):
    """get_cifar10 on the real data, each call in a fresh process: cold (empty cache: decode,
    normalise, write the cache) and warm (the cache written by the cold call) against the bare
    cost of reading the six pickles and converting them to float32."""
    import tempfile
    folder = _data_dir()
    if folder is None:
        return {'skipped': 'no CIFAR-10 (set CIFAR10_DIR)', 'rows': []}
    rounds = 1 if quick else 5
    times = {'floor': [], 'cold': [], 'warm': []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            env = {'CIFAR10_CACHE': '1', 'CIFAR10_CACHE_DIR': cache}
            for kind in ('floor', 'cold', 'warm'):
                times[kind].append(_timed_process(['-c', _LOAD_SNIPPET, kind, folder], env)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {'seconds': med, 'cold_over_floor': med['cold'] / med['floor'],
            'warm_over_floor': med['warm'] / med['floor'], 'rounds': rounds,
            'rows': [('read 6 pickles + convert to float32 (floor)', med['floor'], 's'),
                     ('get_cifar10, cold (writes the cache)', med['cold'], 's'),
                     ('get_cifar10, warm (reads the cache)', med['warm'], 's'),
                     ('cold / floor', med['cold'] / med['floor'], 'x'),
                     ('warm / floor', med['warm'] / med['floor'], 'x')]}


def bench_train_run(quick=False, device='auto'):
    """A whole default `python train_mlp_numpy.py` run, process start to exit, with the data
    cache warm (as for every run after the first), against its training compute alone: its
    number of steps times the median time of its training step measured here."""
    import tempfile

    import train_mlp_numpy as script
    folder = _data_dir()
    if folder is None:
        return {'skipped': 'no CIFAR-10 (set CIFAR10_DIR)', 'rows': []}
    steps = 150 if quick else script.MAX_STEPS_DEFAULT
    batch, hidden = script.BATCH_SIZE_DEFAULT, [int(script.DNN_HIDDEN_UNITS_DEFAULT)]
    np_step, _ = _mlp_steps(hidden, batch, _random_dataset(4 * batch, one_hot=True),
                            _random_dataset(4 * batch, one_hot=False))
    with tempfile.TemporaryDirectory() as tmp:
        env = {'CIFAR10_CACHE': '1', 'CIFAR10_CACHE_DIR': os.path.join(tmp, 'cache')}
        args = ['train_mlp_numpy.py', '--data_dir', folder, '--max_steps', str(steps)]
        _timed_process([*args, '--out_dir', os.path.join(tmp, 'warm-up')], env)  # the cache
        walls, step_times = [], []
        for r in range(1 if quick else 3):
            walls.append(_timed_process([*args, '--out_dir', os.path.join(tmp, str(r))], env)[1])
            step_times.append(statistics.median(
                _rounds({'numpy': np_step}, 5, 20, torch.device('cpu'))['numpy']))
    wall, step = statistics.median(walls), statistics.median(step_times)
    compute = steps * step
    return {'steps': steps, 'wall_seconds': wall, 'step_seconds': step,
            'compute_seconds': compute, 'wall_over_compute': wall / compute,
            'rows': [(f'train_mlp_numpy.py, {steps} steps, process start to exit', wall, 's'),
                     (f'its training compute ({steps} x {step * 1e3:.2f} ms)', compute, 's'),
                     ('run / compute', wall / compute, 'x')]}


SECTIONS = {'mlp': bench_mlp, 'loading': bench_loading, 'train_run': bench_train_run,
            'convnet': bench_convnet}


# --------------------------------------------------------------------------- command line


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def print_table(results):
    print(f'{"section":10s} {"measurement":62s} {"value":>10s}')
    for section, result in results.items():
        if 'skipped' in result:
            print(f'{section:10s} skipped: {result["skipped"]}')
        for name, value, unit in result['rows']:
            print(f'{section:10s} {name:62s} {value:10.2f} {unit}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='fewer rounds and steps')
    p.add_argument('--only', choices=tuple(SECTIONS), action='append',
                   help='run only this section (repeatable)')
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                   help='auto: CUDA when available')
    p.add_argument('--threads', type=int, default=None,
                   help="PyTorch's intra-op threads (default: its own choice, the core count)")
    p.add_argument('--out', default='benchmark.json', help='where to write the results')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.strftime('%Y-%m-%dT%H:%M:%S')
    results = {}
    for name in args.only or SECTIONS:
        print(f'running {name} ...', file=sys.stderr)
        results[name] = SECTIONS[name](quick=args.quick, device=args.device)
    print_table(results)
    write_json(args.out, {
        'quick': args.quick,
        'machine': {'platform': platform.platform(), 'cpu': cpu_model(),
                    'cpus': os.cpu_count(),
                    'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    'python': platform.python_version(), 'numpy': np.__version__,
                    'torch': str(torch.__version__)},
        'started': started,
        **{name: {k: v for k, v in r.items() if k != 'rows'} for name, r in results.items()},
    })
    print(f'results in {args.out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
