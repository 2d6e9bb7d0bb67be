"""train_mlp_numpy.py: the run it writes, its command-line errors, NaN and Ctrl-C handling."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import optimizers
import train_mlp_numpy
from mlp_numpy import MLP
from modules import CrossEntropyModule, SoftMaxModule

SCHEMA = {
    'script',
    'out_dir',
    'command',
    'flags',
    'status',
    'steps',
    'train_loss',
    'eval_steps',
    'test_loss',
    'test_accuracy',
    'final_test_accuracy',
    'best_test_accuracy',
    'wall_seconds',
    'started',
    'versions',
}


def test_train_writes_metrics_and_curves(fake_cifar, tmp_path):
    out = tmp_path / 'run'
    metrics = train_mlp_numpy.train(
        '20',
        learning_rate=1e-3,
        max_steps=60,
        batch_size=25,
        eval_freq=25,
        data_dir=fake_cifar,
        out_dir=str(out),
    )
    assert SCHEMA <= set(metrics)
    with open(out / 'metrics.json') as f:
        assert json.load(f) == json.loads(json.dumps(metrics))
    assert (out / 'curves.png').stat().st_size > 10_000
    assert metrics['status'] == 'completed'
    assert metrics['steps'] == list(range(1, 61)) and len(metrics['train_loss']) == 60
    assert metrics['eval_steps'] == [25, 50, 60]
    assert metrics['final_test_accuracy'] == metrics['test_accuracy'][-1]
    assert metrics['command'][:2] == ['python', 'train_mlp_numpy.py']
    assert '--dnn_hidden_units' in metrics['command'] and metrics['flags']['seed'] == 42
    # The fake classes are separable: the MLP learns them.
    assert metrics['final_test_accuracy'] >= 0.9
    assert np.mean(metrics['train_loss'][-10:]) < 0.5 * metrics['train_loss'][0]


def test_seed_reproduces_a_run(fake_cifar, tmp_path):
    runs = [
        train_mlp_numpy.train(
            '10',
            max_steps=5,
            batch_size=20,
            data_dir=fake_cifar,
            seed=seed,
            out_dir=str(tmp_path / str(i)),
        )['train_loss']
        for i, seed in enumerate((7, 7, 8))
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_softmax_classifier(fake_cifar, tmp_path):
    metrics = train_mlp_numpy.train(
        '',
        max_steps=40,
        batch_size=20,
        eval_freq=40,
        data_dir=fake_cifar,
        out_dir=str(tmp_path / 'r'),
    )
    assert metrics['flags']['dnn_hidden_units'] == []
    assert metrics['final_test_accuracy'] >= 0.9


def test_diverging_run_stops_with_advice(fake_cifar, tmp_path):
    out = tmp_path / 'run'
    with pytest.raises(
        FloatingPointError,
        match=r'the run diverged; lower --learning_rate\. '
        'Metrics up to here are in ',
    ):
        train_mlp_numpy.train(
            '20',
            learning_rate=1e20,
            max_steps=200,
            batch_size=20,
            data_dir=fake_cifar,
            out_dir=str(out),
        )
    with open(out / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['status'] == 'diverged' and len(metrics['steps']) < 200
    assert (out / 'curves.png').exists()


def test_ctrl_c_saves_the_metrics(fake_cifar, tmp_path, monkeypatch):
    calls = []

    def interrupt_at_third_step(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(optimizers.SGD, 'step', interrupt_at_third_step)
    out = tmp_path / 'run'
    with pytest.raises(KeyboardInterrupt):
        train_mlp_numpy.train(
            '10', max_steps=50, batch_size=20, eval_freq=1, data_dir=fake_cifar, out_dir=str(out)
        )
    with open(out / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['status'] == 'interrupted'
    assert metrics['steps'] == [1, 2] and metrics['eval_steps'] == [1, 2]


def test_batch_larger_than_training_set(fake_cifar, tmp_path):
    with pytest.raises(
        ValueError, match='--batch_size 201 is more than the 200 training images; choose a smaller'
    ):
        train_mlp_numpy.train(batch_size=201, data_dir=fake_cifar, out_dir=str(tmp_path / 'r'))
    assert not (tmp_path / 'r').exists()


def run_script(args, cwd, env=None):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'train_mlp_numpy.py'), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    'args, message',
    [
        (
            ['--dnn_hidden_units', '100,x'],
            'argument --dnn_hidden_units: expected comma-separated '
            "positive integers such as 100 or 500,500, got '100,x'",
        ),
        (['--dnn_hidden_units', '0'], "got '0'"),
        (['--dnn_hidden_units=-5'], "got '-5'"),
        (
            ['--learning_rate', '0'],
            'argument --learning_rate: expected a number > 0 that float32 '
            "can hold (at most 3.4e38), got '0'",
        ),
        (['--learning_rate=-1e-3'], 'argument --learning_rate: expected a number > 0 that float32'),
        (
            ['--learning_rate', 'nan'],
            'argument --learning_rate: expected a number > 0 that float32',
        ),
        (
            ['--max_steps', '0'],
            "argument --max_steps: expected an integer from 1 to 100000000, got '0'",
        ),
        (['--batch_size', '-2'], "argument --batch_size: expected an integer > 0, got '-2'"),
        (['--batch_size', '1.5'], "argument --batch_size: expected an integer > 0, got '1.5'"),
        (['--eval_freq', '0'], "argument --eval_freq: expected an integer > 0, got '0'"),
        (['--seed', '-1'], "argument --seed: expected an integer from 0 to 4294967295, got '-1'"),
        (
            ['--optimizer', 'adam', '--momentum', '0.9'],
            'error: --momentum applies only to --optimizer sgd, not adam.',
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, args, message):
    result = run_script(args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('train_mlp_numpy.py: error: ')
    assert message in lines[0]
    assert os.listdir(tmp_path) == []  # no run folder


def test_cli_batch_too_large_and_missing_data(fake_cifar, tmp_path):
    result = run_script(['--batch_size', '1000', '--data_dir', fake_cifar], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'train_mlp_numpy.py: error: --batch_size 1000 is more than the 200 training images; '
        'choose a smaller one.'
    ]
    missing = tmp_path / 'missing'
    result = run_script(['--data_dir', str(missing)], cwd=tmp_path, env={'CIFAR10_DOWNLOAD': '0'})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'train_mlp_numpy.py: error: CIFAR-10 is not in {missing} and downloading is off. '
        'Place the batch files of cifar-10-python.tar.gz (data_batch_1..5, test_batch) there, '
        'or point CIFAR10_DIR or --data_dir at them.'
    ]
    assert not (tmp_path / 'runs').exists() and not missing.exists()


def test_cli_run_and_help(fake_cifar, tmp_path):
    result = run_script(
        ['--max_steps', '3', '--eval_freq', '2', '--batch_size', '10', '--data_dir', fake_cifar],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert 'final test accuracy' in result.stdout
    (run_dir,) = os.listdir(tmp_path / 'runs')
    assert run_dir.startswith('train_mlp_numpy-')
    assert sorted(os.listdir(tmp_path / 'runs' / run_dir)) == ['curves.png', 'metrics.json']
    help_text = run_script(['--help'], cwd=tmp_path).stdout
    for flag in (
        '--dnn_hidden_units',
        '--learning_rate',
        '--max_steps',
        '--batch_size',
        '--eval_freq',
        '--data_dir',
        '--seed',
        '--out_dir',
    ):
        assert flag in help_text
    help_text = ' '.join(help_text.split())  # unwrapped
    assert '(default: 0.002)' in help_text and '(default: None)' not in help_text
    assert '(default: a new folder under runs/) --overwrite' in help_text


def test_default_run_on_real_data(real_cifar, tmp_path):
    """The course's default run: final test accuracy at least 0.44 (about 0.46 expected)."""
    metrics = train_mlp_numpy.train(data_dir=real_cifar, out_dir=str(tmp_path / 'run'))
    assert metrics['flags']['dnn_hidden_units'] == [100]
    assert metrics['final_test_accuracy'] >= 0.44, metrics['test_accuracy']


def test_train_step_where_a_probability_underflows():
    """A float32 softmax classifier whose first sample's target probability underflows to 0
    (logits 200 apart): the loss stays finite and the gradient is (probs - t) / B, where the
    chained backward passes would give 0 for that sample."""
    model = MLP(2, [], 3, dtype=np.float32, rng=np.random.default_rng(0))
    linear = model.layers[0]
    linear.params['weight'][...] = [[100, 0], [0, 1], [-100, 0]]
    x = np.array([[2, 0], [0.01, 1]], dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[[2, 1]]
    logits = x.astype(np.float64) @ linear.params['weight'].T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert np.float32(probs[0, 2]) == 0
    loss = train_mlp_numpy.train_step(
        model, CrossEntropyModule(), optimizers.SGD(model.parameters(), 1e-9), x, y
    )
    assert 40 < loss < 50  # finite: (-log of the smallest float32, 87, + a small loss) / 2
    dlogits = (probs - y) / len(x)
    np.testing.assert_allclose(linear.grads['weight'], dlogits.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(linear.grads['bias'], dlogits.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_the_chain_stays_exact_where_smoothed_targets_meet_an_underflow():
    """Label smoothing gives every class some target mass, so a probability that underflows
    still carries a gradient: softmax then cross-entropy give (y - t) / B there too, where an
    unfloored softmax (y = 0) would give 0 for the two classes far below the first."""
    x = np.array([[100.0, 0.0, -100.0]], dtype=np.float32)
    t = np.full((1, 3), 0.1 / 3, dtype=np.float32)
    t[0, 0] += 0.9
    softmax = SoftMaxModule()
    y = softmax.forward(x)
    dx = softmax.backward(CrossEntropyModule().backward(y, t))
    z = np.exp(x.astype(np.float64) - 100.0)
    np.testing.assert_allclose(dx, z / z.sum() - t, rtol=1e-5, atol=1e-7)
