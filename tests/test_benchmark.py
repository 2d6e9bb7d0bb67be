"""benchmark.py --quick as a smoke test: it runs and writes what it promises (not timings)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
from conftest import ROOT

import benchmark


def test_step_flops_count():
    # [100] at batch 200: forward 2*200*(3072*100 + 100*10), the same again for the weight
    # gradients, and the second layer's input gradient 2*200*100*10.
    forward = 2 * 200 * (3072 * 100 + 100 * 10)
    assert benchmark.mlp_step_flops([100], 200) == 2 * forward + 2 * 200 * 100 * 10


def test_convnet_step_flops_count():
    """About 0.92 GFLOP an image for Table 1 (forward, weight and input gradients)."""
    model, step, _ = benchmark.convnet_twins(2, np.random.default_rng(0))
    step()
    assert 0.90e9 < benchmark.convnet_step_flops(model, 2) / 2 < 0.93e9


def test_profile_prints_every_layer(capsys):
    benchmark.profile_convnet_numpy(batch=2, repeats=1)
    out = capsys.readouterr().out
    assert 'conv1 Conv2d' in out and 'maxpool5 MaxPool2d' in out and 'linear Linear' in out


def test_quick_run_prints_its_table_and_writes_json(tmp_path):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'benchmark.py'),
            '--quick',
            '--device',
            'cpu',
            '--out',
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data['quick'] is True and data['machine']['cpus'] >= 1
    assert {'cpu', 'numpy', 'torch', 'python'} <= set(data['machine'])

    names = [r['measurement'] for r in data['rows']]
    expected = [
        'NumPy / PyTorch step, [100] at batch 200',
        'NumPy / PyTorch step, [1000, 1000] at batch 512',
        'NumPy step [1000, 1000] at batch 512 / float32 matmul 2048^2',
        'NumPy / PyTorch step, [500] x 4 at batch 400',
        'NumPy / PyTorch step, [1024, 1024] at batch 256, batch norm + dropout 0.2 + AdamW',
        'ConvNet evaluation / training throughput, float32, cpu',
    ]
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        expected += [
            'ConvNet evaluation / training throughput, bfloat16, cpu',
            'ConvNet training step at batch 32, bfloat16 / float32, cpu',
        ]
    for batch in (32, 128):
        expected += [
            f'NumPy / PyTorch ConvNet step at batch {batch}, Adam, float32, cpu',
            f'NumPy ConvNet step at batch {batch} / float32 matmul 2048^2',
            f'PyTorch ConvNet step at batch {batch} / float32 matmul 2048^2',
        ]
    # Loading and a whole run need the real CIFAR-10 (CIFAR10_DIR); skipped with a message.
    has_data = 'skipped' not in result.stderr
    assert [n for n in names if 'get_cifar10' not in n and 'train_mlp_numpy' not in n] == expected
    assert len(names) == len(expected) + (2 if has_data else 0)
    for r in data['rows']:
        assert r['value'] > 0 and r['reference'] > 0 and math.isfinite(r['ratio'])
        assert r['ratio'] == r['value'] / r['reference'] and r['target']
        assert r['measurement'] in result.stdout  # the table on stdout, row by row
