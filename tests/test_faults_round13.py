"""Findings of the eleventh probe and a review: two runs that both passed the folder check
before either held the lock (the second replaced the first's results); make_report --rerun
of a folder a run still held, and two reruns at once, each deleting the other's results; a
path ending in /. that put the rerun inside its own folder; train(out_dir=Path(...)); a
NumPy scalar equal to a flag's default."""

import json
import os
import pathlib

import numpy as np
import pytest
from conftest import one_error
from fake_runs import fake_project
from test_faults_round5 import report

import train_mlp_numpy
import train_utils
from train_utils import lock_folder

pytestmark = pytest.mark.usefixtures('torch_single_thread')


def test_a_run_that_finished_while_this_one_loaded_is_not_replaced(tmp_path):
    """The folder was checked as the run was set up and locked only after the data loaded:
    a run that filled the folder in between lost its results to this one."""
    folder = tmp_path / 'run'
    run = train_utils.Run('train_mlp_numpy.py', {}, str(folder), 3)
    folder.mkdir()
    (folder / 'metrics.json').write_text('{"from": "the other run"}')
    with pytest.raises(ValueError, match='already holds a run'):
        with run:
            pass
    assert json.loads((folder / 'metrics.json').read_text()) == {'from': 'the other run'}
    assert sorted(os.listdir(folder)) == ['metrics.json']


def test_a_rerun_of_a_folder_a_run_holds_is_refused(tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    folder = tmp_path / 'runs' / 'mlp_numpy_default'
    before = (folder / 'metrics.json').read_bytes()
    fd = lock_folder(str(folder / '.lock'), str(folder))  # a run still going
    try:
        assert report(runs_json, tmp_path / 'out', '--rerun', 'mlp_numpy_default') == 1
    finally:
        os.close(fd)
    assert one_error(capsys).endswith('is in use by a run that is still going; wait for it to end.')
    assert (folder / 'metrics.json').read_bytes() == before
    assert not os.path.exists(f'{folder}.rerun')


def test_a_rerun_path_ending_in_a_dot_stays_beside_its_folder(
    fake_cifar, tmp_path, monkeypatch, capsys
):
    """runs/b/. reran into runs/b/..rerun, inside the folder, then failed to rename it."""
    folder = tmp_path / 'runs' / 'b'
    train_mlp_numpy.train(max_steps=2, eval_freq=1, data_dir=fake_cifar, out_dir=str(folder))
    runs_json = tmp_path / 'runs.json'
    entry = {'label': 'b', 'path': f'{folder}/.', 'command': ['python', 'train_mlp_numpy.py']}
    grid = str(tmp_path / 'grid')
    runs_json.write_text(json.dumps({'runs': {'b': entry}, 'gridsearch': {'path': grid}}))
    monkeypatch.setenv('CIFAR10_DIR', fake_cifar)  # --rerun leaves out the recorded --data_dir
    report(str(runs_json), tmp_path / 'out', '--rerun', 'b', '--allow-missing')
    assert sorted(os.listdir(tmp_path / 'runs')) == ['b']
    assert sorted(os.listdir(folder)) == ['curves.png', 'metrics.json']
    assert 'Device or resource busy' not in capsys.readouterr().err


def test_out_dir_as_a_path_and_a_numpy_default(fake_cifar, tmp_path):
    """out_dir=pathlib.Path(...) trained, then could not be written to metrics.json; so did a
    NumPy scalar equal to the flag's default, which skipped the conversion."""
    metrics = train_mlp_numpy.train(
        max_steps=3,
        eval_freq=np.int64(train_mlp_numpy.EVAL_FREQ_DEFAULT),
        data_dir=pathlib.Path(fake_cifar),
        out_dir=tmp_path / 'run',
    )
    recorded = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert metrics['status'] == recorded['status'] == 'completed'
    assert recorded['out_dir'] == str(tmp_path / 'run')
