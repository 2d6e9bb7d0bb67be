"""benchmark.py --quick as a smoke test: it runs and writes what it promises (not timings)."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import benchmark


def test_step_flops_count():
    # [100] at batch 200: forward 2*200*(3072*100 + 100*10), the same again for the weight
    # gradients, and the second layer's input gradient 2*200*100*10.
    forward = 2 * 200 * (3072 * 100 + 100 * 10)
    assert benchmark.mlp_step_flops([100], 200) == 2 * forward + 2 * 200 * 100 * 10


@pytest.mark.parametrize('sections', [['mlp'], ['loading', 'train_run']])
def test_quick_run_writes_its_table_and_json(tmp_path, sections):
    out = tmp_path / 'bench.json'
    args = [sys.executable, os.path.join(ROOT, 'benchmark.py'), '--quick', '--out', str(out)]
    for s in sections:
        args += ['--only', s]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data['quick'] is True and data['machine']['cpus'] >= 1
    assert {'cpu', 'numpy', 'torch', 'python'} <= set(data['machine'])
    for s in sections:
        assert s in data and s in result.stdout
    if 'mlp' in data:
        assert len(data['mlp']['configs']) == 3
        assert all(c['numpy_over_torch'] > 0 for c in data['mlp']['configs'])
        assert data['mlp']['matmul_gflops'] > 0 and data['mlp']['step_gflops'] > 0
    for s in ('loading', 'train_run'):
        if s in data and 'skipped' not in data[s]:
            assert all(v > 0 for v in data[s]['seconds'].values()) if s == 'loading' \
                else data[s]['wall_over_compute'] > 0
