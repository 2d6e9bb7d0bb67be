"""convnet_numpy.py and train_convnet_numpy.py: the NumPy ConvNet computes what the PyTorch one
computes (float64, 1e-10), and its script trains, checkpoints, resumes bit for bit, stops on
Ctrl-C and answers bad flags with one line."""

import json
import os
import signal
import sys

import numpy as np
import pytest
import torch
from torch import nn

import convnet_numpy
import convnet_pytorch
import train_convnet_numpy
import train_convnet_pytorch
from cifar10_utils import DataSet
from modules import CrossEntropyModule
from train_convnet_numpy import main, read_checkpoint, train

WIDTH = 1 / 16  # channels 4, 8, 16, 16, 32, 32, 32, 32


pytestmark = pytest.mark.usefixtures('torch_single_thread')


@pytest.fixture
def cli_name(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['train_convnet_numpy.py'])


# ------------------------------------------------------------------ NumPy equals PyTorch


def twins(rng):
    """A NumPy and a PyTorch ConvNet, float64, holding the same weights."""
    ours = convnet_numpy.ConvNet(3, 10, dtype=np.float64, rng=rng, width=WIDTH)
    theirs = convnet_pytorch.ConvNet(3, 10, width=WIDTH).double()
    with torch.no_grad():
        for (p, _), t in zip(ours.parameters(), theirs.parameters(), strict=True):
            t.copy_(torch.from_numpy(p))
    return ours, theirs


def numpy_state(model):
    stats = [s for bn in model.batch_norms() for s in (bn.running_mean, bn.running_var)]
    return [p for p, _ in model.parameters()] + stats


def torch_state(model):
    stats = [
        s
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
        for s in (m.running_mean, m.running_var)
    ]
    return [t.detach().numpy() for t in [*model.parameters(), *stats]]


def test_parameters_are_those_of_the_pytorch_convnet():
    ours = convnet_numpy.ConvNet(3, 10, rng=np.random.default_rng(0))
    theirs = convnet_pytorch.ConvNet(3, 10)
    assert [p.shape for p, _ in ours.parameters()] == [tuple(t.shape) for t in theirs.parameters()]
    assert sum(p.size for p, _ in ours.parameters()) == sum(t.numel() for t in theirs.parameters())
    for (p, _), t in zip(ours.parameters(), theirs.parameters()):  # the same initialisation
        bound = 1 / np.sqrt(t.shape[1] * t[0, 0].numel()) if t.ndim > 1 else None
        if bound is not None:
            assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound


@pytest.mark.parametrize('recipe', ['adam', 'sgd nesterov + weight decay'])
def test_ten_steps_agree(recipe):
    """Ten steps of each script's train_step and make_optimizer on the same batches: every
    parameter and running statistic agrees to 1e-10 of its array's largest value."""
    steps, rng = 10, np.random.default_rng(0)
    ours, theirs = twins(rng)
    name, lr, decay = ('ADAM', 1e-3, 0.0) if recipe == 'adam' else ('SGD', 0.05, 5e-3)
    our_opt = train_convnet_numpy.make_optimizer(name, ours, lr, decay)
    their_opt = train_convnet_pytorch.make_optimizer(name, theirs, lr, decay)
    loss_module = CrossEntropyModule()
    for _ in range(steps):
        x = rng.standard_normal((8, 3, 32, 32))
        labels = rng.integers(0, 10, 8)
        our_loss = train_convnet_numpy.train_step(ours, loss_module, our_opt, x, np.eye(10)[labels])
        their_loss = train_convnet_pytorch.train_step(
            theirs, their_opt, torch.from_numpy(x), torch.from_numpy(labels)
        )
        assert our_loss == pytest.approx(their_loss.item(), rel=1e-10)
    n_bn, n_params = len(ours.batch_norms()), len(ours.parameters())
    conv_biases = {4 * j + 1 for j in range(n_bn)}  # weight, bias, gamma, beta per block
    running_means = {n_params + 2 * j for j in range(n_bn)}  # they take in the conv's bias
    for i, (a, b) in enumerate(zip(numpy_state(ours), torch_state(theirs), strict=True)):
        # A conv's bias in front of batch norm has gradient 0: rounding noise on both sides
        # (below 1e-13), which Adam turns into steps of up to lr x noise / eps = lr x 1e-5.
        # They cannot agree; they stay tiny, and so does what they add to the running means.
        noisy = i in conv_biases | running_means
        tolerance = lr * steps * 1e-5 if noisy else 1e-10 * np.abs(b).max()
        assert np.abs(a - b).max() <= tolerance, f'array {i} of {recipe}'
    for i in conv_biases:
        assert np.abs(ours.parameters()[i][1]).max() < 1e-13
    first = twins(np.random.default_rng(0))[0].parameters()[0][0]
    assert np.abs(ours.parameters()[0][0] - first).max() > 1e-4  # training moved the weights


def test_evaluation_mode_agrees():
    rng = np.random.default_rng(1)
    ours, theirs = twins(rng)
    x = rng.standard_normal((6, 3, 32, 32))
    ours.forward(x)  # a training pass moves the running statistics
    theirs(torch.from_numpy(x))
    ours.eval()
    theirs.eval()
    want = torch.softmax(theirs(torch.from_numpy(x)), dim=1).detach().numpy()
    np.testing.assert_allclose(ours.forward(x), want, rtol=1e-10, atol=1e-14)


def test_evaluate_in_chunks_equals_one_batch():
    rng = np.random.default_rng(2)
    model = convnet_numpy.ConvNet(3, 10, dtype=np.float64, rng=rng, width=WIDTH)
    x, y = rng.standard_normal((30, 3, 32, 32)), np.eye(10)[rng.integers(0, 10, 30)]
    loss_module = CrossEntropyModule()
    whole = train_convnet_numpy.evaluate(model, loss_module, x, y, batch_size=30)
    chunks = train_convnet_numpy.evaluate(model, loss_module, x, y, batch_size=7)
    assert chunks[:2] == pytest.approx(whole[:2], rel=1e-12)
    np.testing.assert_array_equal(chunks[2], whole[2])
    assert all(layer.training for layer in model.batch_norms())  # back in training mode


# ------------------------------------------------------------------------- the script


def arrays_of(path):
    return read_checkpoint(path)['arrays']


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, different


def test_train_writes_metrics_curves_and_checkpoints(fake_cifar, small_numpy_convnet, tmp_path):
    out = tmp_path / 'run'
    metrics = train(
        learning_rate=1e-3,
        max_steps=40,
        batch_size=20,
        eval_freq=20,
        data_dir=fake_cifar,
        out_dir=str(out),
    )
    assert metrics['status'] == 'completed' and metrics['eval_steps'] == [20, 40]
    with open(out / 'metrics.json') as f:
        assert json.load(f) == json.loads(json.dumps(metrics))
    assert sorted(os.listdir(out)) == ['best.npz', 'curves.png', 'last.npz', 'metrics.json']
    assert metrics['command'][:2] == ['python', 'train_convnet_numpy.py']
    assert metrics['final_test_accuracy'] >= 0.9, metrics['test_accuracy']
    last = read_checkpoint(out / 'last.npz')
    assert last['record']['step'] == 40 and last['record']['flags'] == metrics['flags']
    with np.load(out / 'last.npz', allow_pickle=False) as f:  # plain arrays, no pickle
        assert all(f[name].dtype != object for name in f.files)


def test_resumed_run_ends_with_the_same_weights(
    fake_cifar, small_numpy_convnet, tmp_path, cli_name
):
    kwargs = dict(learning_rate=1e-3, batch_size=30, eval_freq=3, data_dir=fake_cifar)
    straight = train(max_steps=6, out_dir=str(tmp_path / 'straight'), **kwargs)
    train(max_steps=3, out_dir=str(tmp_path / 'halves'), **kwargs)
    assert main(['--resume', str(tmp_path / 'halves' / 'last.npz'), '--max_steps', '6']) == 0
    assert_same_arrays(
        arrays_of(tmp_path / 'straight' / 'last.npz'), arrays_of(tmp_path / 'halves' / 'last.npz')
    )
    with open(tmp_path / 'halves' / 'metrics.json') as f:
        resumed = json.load(f)
    for key in ('steps', 'train_loss', 'eval_steps', 'test_loss', 'test_accuracy'):
        assert resumed[key] == straight[key], key
    assert resumed['resumed'] == [{'from': str(tmp_path / 'halves' / 'last.npz'), 'step': 3}]


def test_ctrl_c_leaves_a_checkpoint_to_resume(
    fake_cifar, small_numpy_convnet, tmp_path, monkeypatch
):
    """SGD with weight decay, a one-cycle schedule, augmentation and label smoothing: every
    state a step depends on."""
    kwargs = dict(
        optimizer='SGD',
        learning_rate=0.05,
        weight_decay=5e-4,
        lr_schedule='onecycle',
        augment=True,
        label_smoothing=0.1,
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
    with pytest.raises(KeyboardInterrupt):
        train(out_dir=str(out), **kwargs)
    assert read_checkpoint(out / 'last.npz')['record']['step'] == 3
    monkeypatch.setattr(DataSet, 'next_batch', next_batch)
    resumed = train(resume=str(out / 'last.npz'), **kwargs)
    assert_same_arrays(arrays_of(tmp_path / 'straight' / 'last.npz'), arrays_of(out / 'last.npz'))
    assert resumed['train_loss'] == straight['train_loss']


def test_validation_run_tests_its_best_checkpoint(fake_cifar, small_numpy_convnet, tmp_path):
    metrics = train(
        learning_rate=1e-3,
        max_steps=4,
        batch_size=20,
        eval_freq=2,
        validation_size=40,
        data_dir=fake_cifar,
        out_dir=str(tmp_path / 'run'),
    )
    assert metrics['eval_split'] == 'validation' and len(metrics['validation_accuracy']) == 2
    assert 0 <= metrics['final_test_accuracy'] <= 1
    assert 0 <= metrics['best_checkpoint_test_accuracy'] <= 1


def test_diverging_run_stops_with_advice(fake_cifar, small_numpy_convnet, tmp_path):
    with pytest.raises(FloatingPointError, match=r'diverged; lower --learning_rate'):
        train(
            optimizer='SGD',
            learning_rate=1e30,
            max_steps=20,
            batch_size=20,
            data_dir=fake_cifar,
            out_dir=str(tmp_path / 'run'),
        )


@pytest.mark.parametrize(
    'args, message',
    [
        (['--optimizer', 'rmsprop'], "argument --optimizer: invalid choice: 'RMSPROP'"),
        (
            ['--learning_rate', '-1'],
            "expected a number > 0 that float32 can hold (at most 3.4e38), got '-1'",
        ),
        (['--resume', '{tmp}/missing.npz'], 'error: checkpoint {tmp}/missing.npz does not exist.'),
        (
            ['--resume', '{tmp}/garbage.npz'],
            'error: {tmp}/garbage.npz is not a readable checkpoint',
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, cli_name, args, message):
    (tmp_path / 'garbage.npz').write_bytes(b'not a zip file')
    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'Traceback' not in err
    assert message.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_a_changed_run(fake_cifar, small_numpy_convnet, tmp_path):
    train(
        max_steps=2, batch_size=10, eval_freq=2, data_dir=fake_cifar, out_dir=str(tmp_path / 'run')
    )
    last = str(tmp_path / 'run' / 'last.npz')
    with pytest.raises(ValueError, match='trained with --batch_size 10; a resumed run keeps'):
        train(max_steps=4, batch_size=20, eval_freq=2, data_dir=fake_cifar, resume=last)
    with pytest.raises(ValueError, match=r'is at step 2, beyond --max_steps 1'):
        train(max_steps=1, batch_size=10, eval_freq=2, data_dir=fake_cifar, resume=last)


def test_help_explains_every_flag():
    parser = train_convnet_numpy.build_parser()
    flags = {a.dest for a in parser._actions if a.dest != 'help'}
    assert flags == set(
        train_convnet_numpy.train.__code__.co_varnames[
            : train_convnet_numpy.train.__code__.co_argcount
        ]
    )
    assert all(a.help for a in parser._actions)


@pytest.mark.slow
def test_default_run_on_real_data(real_cifar, tmp_path):
    """The course defaults (5000 steps, most of an hour on 2 cores) reach 0.76."""
    metrics = train(data_dir=real_cifar, out_dir=str(tmp_path / 'run'))
    assert metrics['final_test_accuracy'] >= 0.76
