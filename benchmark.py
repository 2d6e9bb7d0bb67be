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


SECTIONS = {'convnet': bench_convnet}


# --------------------------------------------------------------------------- command line


def print_table(results):
    print(f'{"section":10s} {"measurement":58s} {"value":>10s}')
    for section, result in results.items():
        for name, value, unit in result['rows']:
            print(f'{section:10s} {name:58s} {value:10.2f} {unit}')


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
        'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                    'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    'python': platform.python_version(), 'torch': str(torch.__version__)},
        'started': started,
        **{name: {k: v for k, v in r.items() if k != 'rows'} for name, r in results.items()},
    })
    print(f'results in {args.out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
