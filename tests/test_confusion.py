"""Each train script records the confusion matrix of its test evaluation in metrics.json:
counts of (true class, predicted class) that add up to the test set, whose diagonal is the
accuracy the run reports."""

import json

import numpy as np
import pytest
from conftest import small_run

import train_convnet_numpy
import train_convnet_pytorch
import train_mlp_numpy
import train_mlp_pytorch
from train_utils import confusion_matrix

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'small_convnets')
SCRIPTS = [train_mlp_numpy, train_mlp_pytorch, train_convnet_numpy, train_convnet_pytorch]


def test_confusion_matrix_counts_true_class_by_predicted_class():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    want = np.zeros((3, 3), dtype=int)
    for true, predicted in zip(labels, predictions):
        want[true, predicted] += 1
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, classes=3), want)


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda m: m.__name__)
@pytest.mark.parametrize('validation', [0, 40])
def test_metrics_hold_the_test_confusion_matrix(script, validation, fake_cifar, tmp_path):
    out = tmp_path / 'run'
    script.main(small_run(fake_cifar, out, '--validation_size', str(validation)))
    with open(out / 'metrics.json') as f:
        metrics = json.load(f)
    confusion = np.array(metrics['test_confusion'])
    assert confusion.shape == (10, 10) and confusion.sum() == 40  # the fake test set
    assert np.trace(confusion) / 40 == metrics['final_test_accuracy']
    if validation:  # each validation evaluation has its own, the latest kept
        validation_confusion = np.array(metrics['validation_confusion'])
        assert validation_confusion.sum() == validation
        assert np.trace(validation_confusion) / validation == metrics['validation_accuracy'][-1]
