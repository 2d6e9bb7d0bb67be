"""convnet_pytorch.py and train_convnet_pytorch.py: Table 1's architecture, training steps,
checkpoints and exact resumption, Ctrl-C and the CUDA fallback (the command line:
tests/test_convnet_pytorch_cli.py)."""

import json
import os
import signal
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import train_convnet_pytorch
from cifar10_utils import DataSet
from convnet_pytorch import ConvNet, Im2colConv2d
from train_convnet_pytorch import make_optimizer, read_checkpoint, train
from train_utils import confusion_matrix

# Table 1 of the assignment: name, then in/out channels of a conv block or of the linear layer.
TABLE_1 = [
    ('conv1', 3, 64),
    ('maxpool1',),
    ('conv2', 64, 128),
    ('maxpool2',),
    ('conv3_a', 128, 256),
    ('conv3_b', 256, 256),
    ('maxpool3',),
    ('conv4_a', 256, 512),
    ('conv4_b', 512, 512),
    ('maxpool4',),
    ('conv5_a', 512, 512),
    ('conv5_b', 512, 512),
    ('maxpool5',),
    ('avgpool',),
    ('linear', 512, 10),
]
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


pytestmark = pytest.mark.usefixtures('torch_single_thread')


@pytest.fixture
def cli_name(monkeypatch):
    """Error messages name sys.argv[0], as they do when the script runs."""
    monkeypatch.setattr(sys, 'argv', ['train_convnet_pytorch.py'])


# --------------------------------------------------------------------------- the network


def test_architecture_is_table_1():
    model = ConvNet(3, 10)
    layers = list(model.named_children())
    assert [name for name, _ in layers] == [row[0] for row in TABLE_1]
    for (name, layer), row in zip(layers, TABLE_1):
        if name.startswith('conv'):
            conv, bn, relu = layer
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            assert isinstance(relu, nn.ReLU)
            assert (conv.in_channels, conv.out_channels) == row[1:]
            assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
            assert bn.num_features == row[2]
        elif name.startswith('maxpool'):
            assert isinstance(layer, nn.MaxPool2d)
            assert (layer.kernel_size, layer.stride, layer.padding) == (3, 2, 1)
        elif name == 'avgpool':
            assert isinstance(layer, nn.AvgPool2d)
            assert (layer.kernel_size, layer.stride, layer.padding) == (1, 1, 0)
        else:
            assert isinstance(layer, nn.Linear)
            assert (layer.in_features, layer.out_features) == row[1:]
    assert sum(p.numel() for p in model.parameters()) == 9_231_114


@pytest.mark.parametrize('size', [1, 2, 3, 5])
def test_im2col_convolution_equals_conv2d(size):
    """Im2colConv2d (conv5's layers) is nn.Conv2d computed another way: the same outputs and
    gradients, in float64, on maps of any size and in either memory layout."""
    torch.manual_seed(0)
    conv = Im2colConv2d(6, 5, kernel_size=3, stride=1, padding=1).double()
    reference = nn.Conv2d(6, 5, kernel_size=3, stride=1, padding=1).double()
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(4, 6, size, size, dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        inputs = [x.clone(memory_format=layout).requires_grad_() for _ in range(2)]
        outputs = [conv(inputs[0]), reference(inputs[1])]
        torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(outputs[1])
        for out in outputs:
            out.backward(grad)
        for a, b in [
            (inputs[0].grad, inputs[1].grad),
            (conv.weight.grad, reference.weight.grad),
            (conv.bias.grad, reference.bias.grad),
        ]:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        conv.zero_grad(), reference.zero_grad()


def test_forward_gives_logits_per_image():
    torch.manual_seed(0)
    model = ConvNet(3, 10).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and logits.dtype == torch.float32
    assert not torch.allclose(logits.sum(1), torch.ones(2))  # logits, not probabilities
    small = ConvNet(1, 7, width=1 / 16)
    assert small(torch.randn(3, 1, 32, 32)).shape == (3, 7)
    assert small(torch.randn(3, 1, 8, 8)).shape == (3, 7)  # five poolings of 8 x 8 -> 1 x 1


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # A quarter of the width and 8 x 8 images: the layers of Table 1 at 1/256 of the cost.
    images = rng.normal(0, 60, (8, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    # A set of one batch: every step sees the same 8 images (in another order).
    batches = DataSet(images, labels, seed=0)
    model = ConvNet(3, 10, width=1 / 4)
    opt = make_optimizer('ADAM', model, learning_rate=1e-3, weight_decay=0)
    losses = [
        train_convnet_pytorch.train_step(model, opt, *map(torch.from_numpy, batches.next_batch(8)))
        for _ in range(6)
    ]
    assert all(loss.shape == () and not loss.requires_grad for loss in losses)
    losses = [loss.item() for loss in losses]
    assert losses[-1] < 0.5 * losses[0], losses


# --------------------------------------------------------------------------- the run


def checkpoint_tensors(path):
    """Every tensor of a checkpoint's model and optimizer, by name."""
    state = read_checkpoint(path)
    out = {f'model.{k}': v for k, v in state['model'].items()}
    for index, s in state['optimizer']['state'].items():
        out.update({f'optimizer.{index}.{k}': v for k, v in s.items()})
    return out


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def test_train_writes_metrics_curves_and_checkpoints(fake_cifar, small_convnet, tmp_path):
    out = tmp_path / 'run'
    metrics = train(
        learning_rate=1e-3,
        max_steps=60,
        batch_size=20,
        eval_freq=20,
        data_dir=fake_cifar,
        out_dir=str(out),
    )
    assert SCHEMA <= set(metrics) and metrics['status'] == 'completed'
    with open(out / 'metrics.json') as f:
        assert json.load(f) == json.loads(json.dumps(metrics))
    assert sorted(os.listdir(out)) == ['best.pt', 'curves.png', 'last.pt', 'metrics.json']
    assert metrics['steps'] == list(range(1, 61)) and metrics['eval_steps'] == [20, 40, 60]
    assert metrics['device'] == 'cpu'
    assert metrics['command'][:2] == ['python', 'train_convnet_pytorch.py']
    assert metrics['flags']['optimizer'] == 'ADAM' and metrics['flags']['seed'] == 42
    # The fake classes are separable: the network learns them.
    assert metrics['final_test_accuracy'] >= 0.9, metrics['test_accuracy']

    last = read_checkpoint(out / 'last.pt')
    assert last['step'] == 60 and last['flags'] == metrics['flags']
    assert last['metrics']['train_loss'] == metrics['train_loss']
    assert last['rng']['train_set']['index_in_epoch'] > 0
    best = read_checkpoint(out / 'best.pt')
    assert best['metrics']['test_accuracy'][-1] == metrics['best_test_accuracy']


def test_resumed_run_ends_with_the_same_weights(fake_cifar, small_convnet, tmp_path, cli_name):
    kwargs = dict(learning_rate=1e-3, batch_size=30, eval_freq=3, data_dir=fake_cifar)
    straight = train(max_steps=6, out_dir=str(tmp_path / 'straight'), **kwargs)
    train(max_steps=3, out_dir=str(tmp_path / 'halves'), **kwargs)
    # The command line takes the flags of the checkpoint's run and writes to its folder.
    assert (
        train_convnet_pytorch.main(
            ['--resume', str(tmp_path / 'halves' / 'last.pt'), '--max_steps', '6']
        )
        == 0
    )

    assert_same_tensors(
        checkpoint_tensors(tmp_path / 'straight' / 'last.pt'),
        checkpoint_tensors(tmp_path / 'halves' / 'last.pt'),
    )
    with open(tmp_path / 'halves' / 'metrics.json') as f:
        resumed = json.load(f)
    for key in ('steps', 'train_loss', 'eval_steps', 'test_loss', 'test_accuracy'):
        assert resumed[key] == straight[key], key
    assert resumed['status'] == 'completed' and resumed['flags']['max_steps'] == 6
    assert resumed['resumed'] == [{'from': str(tmp_path / 'halves' / 'last.pt'), 'step': 3}]
    assert '--resume' not in resumed['command']  # the command runs it again from step 1
    assert resumed['wall_seconds'] > 0


def test_ctrl_c_leaves_a_checkpoint_to_resume(fake_cifar, small_convnet, tmp_path, monkeypatch):
    """SGD with a one-cycle schedule and augmentation: every state a step depends on."""
    kwargs = dict(
        optimizer='SGD',
        learning_rate=0.05,
        lr_schedule='onecycle',
        augment=True,
        max_steps=6,
        batch_size=30,
        eval_freq=2,
        data_dir=fake_cifar,
    )
    straight = train(out_dir=str(tmp_path / 'straight'), **kwargs)

    next_batch, calls = DataSet.next_batch, []

    def ctrl_c_in_third_step(self, batch_size):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step: the step completes first
        return next_batch(self, batch_size)

    monkeypatch.setattr(DataSet, 'next_batch', ctrl_c_in_third_step)
    out = tmp_path / 'interrupted'
    handler = signal.getsignal(signal.SIGINT)  # SIG_IGN, not Python's, in a shell's background job
    with pytest.raises(KeyboardInterrupt):
        train(out_dir=str(out), **kwargs)
    with open(out / 'metrics.json') as f:
        assert json.load(f)['status'] == 'interrupted'
    assert read_checkpoint(out / 'last.pt')['step'] == 3
    assert signal.getsignal(signal.SIGINT) is handler  # restored as it was

    monkeypatch.setattr(DataSet, 'next_batch', next_batch)
    resumed = train(resume=str(out / 'last.pt'), **kwargs)
    assert resumed['out_dir'] == str(out)
    assert_same_tensors(
        checkpoint_tensors(tmp_path / 'straight' / 'last.pt'), checkpoint_tensors(out / 'last.pt')
    )
    assert resumed['train_loss'] == straight['train_loss']
    assert resumed['eval_steps'] == straight['eval_steps'] == [2, 4, 6]


def test_diverging_run_stops_with_advice(fake_cifar, small_convnet, tmp_path):
    with pytest.raises(FloatingPointError, match=r'diverged; lower --learning_rate'):
        train(
            learning_rate=1e30,
            max_steps=50,
            batch_size=20,
            data_dir=fake_cifar,
            out_dir=str(tmp_path / 'run'),
        )
    with open(tmp_path / 'run' / 'metrics.json') as f:
        assert json.load(f)['status'] == 'diverged'


def test_cuda_without_a_gpu_falls_back_to_the_cpu(
    fake_cifar, small_convnet, tmp_path, monkeypatch, capsys, cli_name
):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for check in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):  # an older CPU
        monkeypatch.setattr(torch.cpu, check, lambda: False)
    assert (
        train_convnet_pytorch.main(
            [
                '--device',
                'cuda',
                '--amp',
                '--max_steps',
                '1',
                '--batch_size',
                '10',
                '--data_dir',
                fake_cifar,
                '--out_dir',
                str(tmp_path / 'run'),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.splitlines()
    assert 'warning: no CUDA GPU is available; using the CPU.' in err
    assert (
        'warning: this CPU has no native bfloat16 (AVX512-BF16 or AMX); --amp trains in float32.'
    ) in err
    with open(tmp_path / 'run' / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['device'] == 'cpu' and metrics['precision'] == 'float32'


@pytest.mark.skipif(
    not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
    reason='needs a CPU with native bfloat16',
)
def test_amp_on_the_cpu_trains_in_bfloat16_and_resumes_exactly(
    fake_cifar, small_convnet, tmp_path, capsys
):
    kwargs = dict(
        amp=True, device='cpu', learning_rate=1e-3, batch_size=20, eval_freq=2, data_dir=fake_cifar
    )
    straight = train(max_steps=4, out_dir=str(tmp_path / 'straight'), **kwargs)
    assert straight['precision'] == 'bfloat16' and 'warning' not in capsys.readouterr().err
    train(max_steps=2, out_dir=str(tmp_path / 'halves'), **kwargs)
    resumed = train(max_steps=4, resume=str(tmp_path / 'halves' / 'last.pt'), **kwargs)
    assert resumed['train_loss'] == straight['train_loss']
    assert_same_tensors(
        checkpoint_tensors(tmp_path / 'straight' / 'last.pt'),
        checkpoint_tensors(tmp_path / 'halves' / 'last.pt'),
    )


def test_evaluation_folds_batch_norm_without_changing_the_model(small_convnet):
    """evaluate() runs a copy with each batch norm folded into its convolution: the same
    numbers as the model itself in eval mode, and the model is left as it was, in training
    mode."""
    torch.manual_seed(0)
    model = train_convnet_pytorch.ConvNet(3, 10)
    model(torch.randn(64, 3, 32, 32))  # moves the running statistics away from 0 and 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, (50, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    loss, accuracy, confusion = train_convnet_pytorch.evaluate(
        model, images, labels, torch.device('cpu'), batch_size=20
    )
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(images))
    model.train()
    assert loss == pytest.approx(F.cross_entropy(logits, torch.from_numpy(labels)).item(), rel=1e-4)
    assert accuracy == (logits.argmax(1).numpy() == labels).mean()
    np.testing.assert_array_equal(confusion, confusion_matrix(labels, logits.argmax(1).numpy()))


def test_flip_test_averages_each_image_with_its_mirror(small_convnet):
    torch.manual_seed(0)
    model = train_convnet_pytorch.ConvNet(3, 10)
    model(torch.randn(64, 3, 32, 32))  # running statistics away from 0 and 1
    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, (30, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 30)
    loss, accuracy, _ = train_convnet_pytorch.evaluate(
        model, images, labels, torch.device('cpu'), batch_size=20, flip=True
    )
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(images)
        logits = (model(x) + model(x.flip(3))) / 2
    assert loss == pytest.approx(F.cross_entropy(logits, torch.from_numpy(labels)).item(), rel=1e-4)
    assert accuracy == (logits.argmax(1).numpy() == labels).mean()


def test_weight_decay_spares_batch_norm_and_biases():
    model = ConvNet(3, 10, width=0.25)
    decayed, spared = make_optimizer('SGD', model, 0.1, weight_decay=5e-4).param_groups
    weights = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert decayed['weight_decay'] == 5e-4 and {id(p) for p in decayed['params']} == weights
    assert spared['weight_decay'] == 0 and len(spared['params']) == 3 * 8 + 1  # bias, gamma, beta


def test_label_smoothing_is_the_loss_trained_on():
    torch.manual_seed(0)
    model = ConvNet(3, 10, width=0.25)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    expected = F.cross_entropy(model(x), y, label_smoothing=0.1).item()
    opt = make_optimizer('SGD', model, 0.0)
    assert train_convnet_pytorch.train_step(
        model, opt, x, y, label_smoothing=0.1
    ).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_gpu_run_with_amp_and_channels_last_resumes_on_the_cpu(fake_cifar, small_convnet, tmp_path):
    kwargs = dict(
        augment=True, batch_size=20, eval_freq=3, data_dir=fake_cifar, amp=True, channels_last=True
    )
    metrics = train(max_steps=3, device='cuda', out_dir=str(tmp_path / 'run'), **kwargs)
    assert metrics['device'].startswith('cuda') and metrics['status'] == 'completed'
    resumed = train(max_steps=6, device='cpu', resume=str(tmp_path / 'run' / 'last.pt'), **kwargs)
    assert resumed['device'] == 'cpu' and resumed['eval_steps'] == [3, 6]
