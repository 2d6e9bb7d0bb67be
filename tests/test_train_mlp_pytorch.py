"""mlp_pytorch.py and train_mlp_pytorch.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from torch import nn

import train_mlp_pytorch
from custom_batchnorm import CustomBatchNormAutograd, CustomBatchNormManualModule
from mlp_pytorch import MLP


@pytest.fixture(autouse=True, scope='module')
def _single_thread():
    """Tiny tensors: a second thread only adds synchronisation on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_course_mlp_structure_and_initialisation():
    model = MLP(3072, [100], 10)
    kinds = [type(m) for m in model.layers]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear]
    first, last = model.layers[0], model.layers[2]
    assert first.weight.shape == (100, 3072) and last.weight.shape == (10, 100)
    assert abs(first.weight.std().item() - 1e-4) < 5e-6
    assert torch.all(first.bias == 0) and torch.all(last.bias == 0)
    assert model(torch.zeros(4, 3, 32, 32)).shape == (4, 10)
    assert [type(m) for m in MLP(5, [], 3).layers] == [nn.Linear]


@pytest.mark.parametrize(
    'batchnorm, cls',
    [
        ('torch', nn.BatchNorm1d),
        ('autograd', CustomBatchNormAutograd),
        ('manual', CustomBatchNormManualModule),
    ],
)
def test_options_build_the_layers(batchnorm, cls):
    model = MLP(12, [8, 6], 3, batchnorm=batchnorm, dropout=0.5, activation='gelu')
    kinds = [type(m) for m in model.layers]
    assert kinds == [nn.Linear, cls, nn.GELU, nn.Dropout] * 2 + [nn.Linear]


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(batchnorm='batch'), 'batchnorm must be one of none, torch, autograd, manual'),
        (dict(activation='tanh'), 'activation must be one of'),
        (dict(init='xavier'), 'init must be one of course, kaiming'),
        (dict(dropout=1.0), r'dropout must be in \[0, 1\)'),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLP(4, [3], 2, **kwargs)


def test_evaluation_uses_eval_mode():
    model = MLP(12, [32], 3, dropout=0.5, batchnorm='torch', init='kaiming')
    images = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    labels = np.zeros(50, dtype=np.int64)
    model.train()
    a = train_mlp_pytorch.evaluate(model, images, labels, torch.device('cpu'), batch_size=7)
    b = train_mlp_pytorch.evaluate(model, images, labels, torch.device('cpu'), batch_size=50)
    assert model.training  # restored
    assert a[:2] == pytest.approx(b[:2], abs=1e-6)  # no dropout noise, no batch statistics
    np.testing.assert_array_equal(a[2], b[2])
    assert torch.all(model.layers[1].running_mean == 0)  # running statistics untouched


def test_train_writes_the_shared_schema(fake_cifar, tmp_path):
    out = tmp_path / 'run'
    metrics = train_mlp_pytorch.train(
        '20',
        learning_rate=1e-3,
        max_steps=40,
        batch_size=25,
        eval_freq=20,
        data_dir=fake_cifar,
        out_dir=str(out),
        optimizer='adam',
        init='kaiming',
    )
    with open(out / 'metrics.json') as f:
        assert json.load(f) == json.loads(json.dumps(metrics))
    assert (out / 'curves.png').exists()
    assert metrics['eval_steps'] == [20, 40] and len(metrics['train_loss']) == 40
    assert metrics['script'] == 'train_mlp_pytorch.py' and metrics['device'] == 'cpu'
    assert metrics['final_test_accuracy'] >= 0.9


@pytest.mark.parametrize('batchnorm', ['torch', 'autograd', 'manual'])
def test_each_batchnorm_trains_inside_the_mlp(fake_cifar, tmp_path, batchnorm):
    metrics = train_mlp_pytorch.train(
        '32',
        learning_rate=1e-3,
        max_steps=30,
        batch_size=20,
        eval_freq=30,
        data_dir=fake_cifar,
        out_dir=str(tmp_path / 'r'),
        optimizer='adam',
        batchnorm=batchnorm,
        init='kaiming',
        lr_schedule='onecycle',
        dropout=0.1,
    )
    assert metrics['final_test_accuracy'] >= 0.9
    assert np.mean(metrics['train_loss'][-5:]) < 0.5 * metrics['train_loss'][0]


def test_diverging_run(fake_cifar, tmp_path):
    with pytest.raises(FloatingPointError, match='lower --learning_rate'):
        train_mlp_pytorch.train(
            '20',
            learning_rate=1e4,
            max_steps=100,
            batch_size=20,
            data_dir=fake_cifar,
            out_dir=str(tmp_path / 'r'),
            init='kaiming',
            momentum=0.9,
        )


def test_bad_values_from_python(fake_cifar, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match='optimizer must be one of sgd, adam, adamw'):
        train_mlp_pytorch.train(optimizer='rmsprop', data_dir=fake_cifar)
    with pytest.raises(ValueError, match='lr_schedule must be one of constant, cosine'):
        train_mlp_pytorch.train(lr_schedule='step', data_dir=fake_cifar)
    with pytest.raises(ValueError, match='learning_rate must be a number > 0 that float32'):
        train_mlp_pytorch.train(learning_rate=-1, data_dir=fake_cifar)
    with pytest.raises(ValueError, match=r'dropout must be a number in \[0, 1\)'):
        train_mlp_pytorch.train(dropout=1.5, data_dir=fake_cifar)
    assert not (tmp_path / 'runs').exists()  # nothing is created before the checks


def parsed_args(argv, monkeypatch):
    """The arguments main() hands to train()."""
    seen = {}
    monkeypatch.setattr(train_mlp_pytorch, 'train', lambda **kw: seen.update(kw))
    monkeypatch.setattr(train_mlp_pytorch, 'cli', lambda train, args: train(**vars(args)))
    train_mlp_pytorch.main(argv)
    return seen


def test_preset_values_and_explicit_flags_win(monkeypatch):
    best = train_mlp_pytorch.PRESETS['best']
    args = parsed_args(['--preset', 'best', '--max_steps', '7', '--dropout', '0'], monkeypatch)
    assert args['max_steps'] == 7 and args['dropout'] == 0.0
    assert args['optimizer'] == best['optimizer'] and args['batchnorm'] == best['batchnorm']
    assert args['dnn_hidden_units'] == best['dnn_hidden_units']
    assert args['preset'] == 'best'
    plain = parsed_args([], monkeypatch)
    assert plain['optimizer'] == 'sgd' and plain['max_steps'] == 1500
    assert plain['init'] == 'course' and plain['dnn_hidden_units'] == [100]


def run_script(args, cwd, timeout=120):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'train_mlp_pytorch.py'), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    'args, message',
    [
        (['--optimizer', 'rmsprop'], "argument --optimizer: invalid choice: 'rmsprop'"),
        (['--dropout', '1'], "argument --dropout: expected a number in [0, 1), got '1'"),
        (['--weight_decay=-1'], 'argument --weight_decay: expected a number >= 0 that float32'),
        (['--dnn_hidden_units', '100,x'], 'argument --dnn_hidden_units: expected comma-separated'),
        (['--preset', 'fastest'], "argument --preset: invalid choice: 'fastest'"),
        (
            ['--optimizer', 'adamw', '--momentum', '0.9'],
            'error: --momentum applies only to --optimizer sgd, not adamw.',
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(fake_cifar, tmp_path, args, message):
    result = run_script([*args, '--data_dir', fake_cifar], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('train_mlp_pytorch.py: error: ')
    assert message in lines[0]
    assert not (tmp_path / 'runs').exists()


def test_default_run_on_real_data(real_cifar, tmp_path):
    """The course defaults (SGD, course initialisation): about 0.456 on this data."""
    metrics = train_mlp_pytorch.train(data_dir=real_cifar, out_dir=str(tmp_path / 'run'))
    assert metrics['final_test_accuracy'] >= 0.44, metrics['test_accuracy']


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_default_runs_mean_over_seeds(real_cifar, tmp_path):
    finals = [
        train_mlp_pytorch.train(data_dir=real_cifar, seed=seed, out_dir=str(tmp_path / str(seed)))[
            'final_test_accuracy'
        ]
        for seed in (1, 2, 3)
    ]
    assert np.mean(finals) >= 0.45, finals


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_best_preset_on_real_data(real_cifar, tmp_path):
    """`--preset best`: at least 0.60 test accuracy, in at most 10 minutes on 2 CPU cores."""
    result = run_script(
        ['--preset', 'best', '--data_dir', real_cifar, '--out_dir', str(tmp_path / 'best')],
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / 'best' / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['final_test_accuracy'] >= 0.60, metrics['test_accuracy']
