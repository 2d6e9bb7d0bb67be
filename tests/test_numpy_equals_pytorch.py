"""The NumPy MLP and the PyTorch MLP compute the same thing: same initial weights, float64,
same batches, each trained by its own script's train_step, optimizer and schedule; after 20
steps every parameter and running statistic agrees to 1e-10 of its array's largest value
(the biases in front of batch norm, whose gradient is 0, excepted: see below)."""

import numpy as np
import pytest
import torch
from torch import nn

import mlp_numpy
import mlp_pytorch
import optimizers
import train_mlp_numpy
import train_mlp_pytorch
from modules import BatchNormModule, CrossEntropyModule

STEPS, N_IN, HIDDEN, N_OUT, BATCH = 20, 30, [24, 16], 5, 12


def twins(batchnorm, rng):
    """A NumPy MLP (float64, Kaiming init) and a PyTorch MLP holding the same weights."""
    ours = mlp_numpy.MLP(N_IN, HIDDEN, N_OUT, rng=rng, batchnorm=batchnorm, init='kaiming')
    theirs = mlp_pytorch.MLP(
        N_IN, HIDDEN, N_OUT, batchnorm='torch' if batchnorm else 'none', init='kaiming'
    ).double()
    with torch.no_grad():
        for ours_p, theirs_p in zip(numpy_state(ours), theirs.parameters()):
            theirs_p.copy_(torch.from_numpy(ours_p))
    return ours, theirs


def numpy_state(model):
    """Parameters in nn.Module order (weight, bias; gamma, beta), then running statistics."""
    params = [p for p, _ in model.parameters()]
    stats = [
        s
        for layer in model.layers
        if isinstance(layer, BatchNormModule)
        for s in (layer.running_mean, layer.running_var)
    ]
    return params + stats


def torch_state(model):
    stats = [
        s
        for m in model.modules()
        if isinstance(m, nn.BatchNorm1d)
        for s in (m.running_mean, m.running_var)
    ]
    return [t.detach().numpy() for t in [*model.parameters(), *stats]]


@pytest.mark.parametrize(
    'recipe', ['batchnorm + adamw + onecycle', 'sgd nesterov', 'adam', 'sgd (the course)']
)
def test_twenty_steps_agree(recipe):
    rng = np.random.default_rng(0)
    batchnorm = recipe.startswith('batchnorm')
    ours, theirs = twins(batchnorm, rng)
    if recipe == 'sgd nesterov':
        our_opt = optimizers.SGD(
            ours.parameters(), 0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
        )
        their_opt = torch.optim.SGD(
            theirs.parameters(), 0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
        )
        our_schedule = their_schedule = None
    else:
        name, decay = {'adam': ('adam', 1e-3), 'sgd (the course)': ('sgd', 0.0)}.get(
            recipe, ('adamw', 1e-2)
        )
        our_opt = train_mlp_numpy.make_optimizer(name, ours.parameters(), 3e-3, 0, decay)
        their_opt = train_mlp_pytorch.make_optimizer(name, theirs.parameters(), 3e-3, 0, decay)
        schedule = 'onecycle' if batchnorm else 'constant'
        our_schedule = train_mlp_numpy.make_schedule(schedule, our_opt, STEPS)
        their_schedule = train_mlp_pytorch.make_schedule(schedule, their_opt, STEPS)
    loss_module = CrossEntropyModule()
    for _ in range(STEPS):
        x = rng.standard_normal((BATCH, N_IN)) * 3
        labels = rng.integers(0, N_OUT, BATCH)
        our_loss = train_mlp_numpy.train_step(ours, loss_module, our_opt, x, np.eye(N_OUT)[labels])
        their_loss = train_mlp_pytorch.train_step(
            theirs, their_opt, torch.from_numpy(x), torch.from_numpy(labels)
        )
        assert our_loss == pytest.approx(their_loss, rel=1e-10)
        for schedule in (our_schedule, their_schedule):
            if schedule is not None:
                schedule.step()
    assert len(numpy_state(ours)) == len(torch_state(theirs)) == 6 + 8 * batchnorm
    # A linear layer's bias in front of batch norm has gradient 0 (the normalisation takes
    # the mean out again): both sides compute it as rounding noise, about 1e-17, which Adam
    # turns into steps of lr x noise / eps = lr x 1e-9 that cannot agree; they stay tiny.
    before_bn = {1, 5} if batchnorm else set()
    for i, (a, b) in enumerate(zip(numpy_state(ours), torch_state(theirs))):
        tolerance = 1e-9 * STEPS * 3e-3 if i in before_bn else 1e-10 * np.max(np.abs(b))
        assert np.max(np.abs(a - b)) <= tolerance, f'array {i} of {recipe}'
    for i in before_bn:
        assert np.max(np.abs([g for _, g in ours.parameters()][i])) < 1e-15
    assert (
        np.abs(
            numpy_state(ours)[0] - twins(batchnorm, np.random.default_rng(0))[0].parameters()[0][0]
        ).max()
        > 1e-3
    )  # and training moved the weights


def test_evaluation_mode_agrees():
    """With dropout and batch norm, evaluation (running statistics, no dropout) gives the
    same probabilities."""
    rng = np.random.default_rng(1)
    ours = mlp_numpy.MLP(N_IN, HIDDEN, N_OUT, rng=rng, batchnorm=True, dropout=0.3, init='kaiming')
    theirs = mlp_pytorch.MLP(
        N_IN, HIDDEN, N_OUT, batchnorm='torch', dropout=0.3, init='kaiming'
    ).double()
    x = rng.standard_normal((BATCH, N_IN))
    ours.forward(x)  # a training step moves the running statistics away from 0 and 1
    with torch.no_grad():  # theirs takes all of ours: parameters and running statistics
        for ours_a, theirs_t in zip(
            numpy_state(ours),
            [
                *theirs.parameters(),
                *(
                    s
                    for m in theirs.modules()
                    if isinstance(m, nn.BatchNorm1d)
                    for s in (m.running_mean, m.running_var)
                ),
            ],
        ):
            theirs_t.copy_(torch.from_numpy(ours_a))
    ours.eval()
    theirs.eval()
    expected = torch.softmax(theirs(torch.from_numpy(x)), dim=1).detach().numpy()
    np.testing.assert_allclose(ours.forward(x), expected, rtol=1e-12, atol=1e-15)
