"""--validation_size: evaluations during training (and the ConvNet's best.pt) on a held-out
part of the training set, the test set once at the end; metrics.json says which is which."""

import json

import pytest

import train_convnet_pytorch
import train_mlp_numpy
import train_mlp_pytorch
from train_utils import plot_curves

SCRIPTS = [train_mlp_numpy, train_mlp_pytorch, train_convnet_pytorch]


@pytest.mark.parametrize('script', SCRIPTS, ids=['numpy', 'pytorch', 'convnet'])
def test_choices_on_validation_test_once(script, fake_cifar, small_convnet, tmp_path):
    out = tmp_path / 'run'
    assert (
        script.main(
            [
                '--validation_size',
                '50',
                '--max_steps',
                '6',
                '--batch_size',
                '10',
                '--eval_freq',
                '2',
                '--data_dir',
                fake_cifar,
                '--out_dir',
                str(out),
            ]
        )
        == 0
    )
    with open(out / 'metrics.json') as f:
        m = json.load(f)
    assert m['eval_split'] == 'validation' and m['flags']['validation_size'] == 50
    assert m['eval_steps'] == [2, 4, 6] and len(m['validation_accuracy']) == 3
    assert m['final_validation_accuracy'] == m['validation_accuracy'][-1]
    assert m['best_validation_accuracy'] == max(m['validation_accuracy'])
    assert 'test_accuracy' not in m and 0 <= m['final_test_accuracy'] <= 1
    # 40 test images, 50 validation images: accuracies in their steps of 1/40 and 1/50
    assert round(m['final_test_accuracy'] * 40, 6).is_integer()
    assert all(round(a * 50, 6).is_integer() for a in m['validation_accuracy'])
    if script is train_convnet_pytorch:
        best = train_convnet_pytorch.read_checkpoint(out / 'best.pt')
        best_step = m['eval_steps'][m['validation_accuracy'].index(m['best_validation_accuracy'])]
        assert best['step'] >= best_step and 0 <= m['best_checkpoint_test_accuracy'] <= 1
        resumed = train_convnet_pytorch.train(
            max_steps=8,
            batch_size=10,
            eval_freq=2,
            data_dir=fake_cifar,
            validation_size=50,
            resume=str(out / 'last.pt'),
        )
        assert resumed['eval_steps'] == [2, 4, 6, 8] and len(resumed['validation_accuracy']) == 4
        with pytest.raises(ValueError, match='--validation_size 50; a resumed run keeps the flags'):
            train_convnet_pytorch.train(
                max_steps=10,
                batch_size=10,
                eval_freq=2,
                data_dir=fake_cifar,
                resume=str(out / 'last.pt'),
            )


def test_curves_name_the_split(tmp_path):
    metrics = {
        'steps': [1, 2],
        'train_loss': [2.3, 2.2],
        'eval_steps': [2],
        'eval_split': 'validation',
        'validation_loss': [2.1],
        'validation_accuracy': [0.2],
    }
    plot_curves(metrics, str(tmp_path / 'curves.png'))
    assert (tmp_path / 'curves.png').stat().st_size > 10_000
