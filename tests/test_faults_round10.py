"""Findings of the seventh probe: a dangling symbolic link as --out_dir sent a run elsewhere
and let the next run overwrite it; --out into a run's folder and a report into another
project's folder replaced their files; atomic_write could leave its temporary file when a
signal came as it was made; a stop swallowed while the report drew printed a traceback and
went on; a dangling --data_dir, unittests.py's signals and benchmark.py's usage errors."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, one_error, small_run
from fake_runs import fake_project

import benchmark
import cifar10_utils
import gridsearch
import train_mlp_numpy
import train_utils

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402
from test_faults_round5 import report  # noqa: E402


def test_a_dangling_link_as_out_dir_is_refused(fake_cifar, tmp_path, capsys):
    """The first run went to OUT-2 and the second, with no --overwrite, replaced it."""
    link = tmp_path / 'dangle'
    link.symlink_to(tmp_path / 'nowhere')
    assert train_mlp_numpy.main(small_run(fake_cifar, link)) == 2
    assert 'is a symbolic link to' in one_error(capsys)
    argv = ['--subsample', '40', '--cv', '2', '--data_dir', fake_cifar, '--out_dir', str(link)]
    assert gridsearch.main(argv) == 2
    assert 'is a symbolic link to' in one_error(capsys)
    assert sorted(os.listdir(tmp_path)) == ['cifar-10-batches-py', 'dangle']


def test_out_into_a_run_folder_is_refused(fake_cifar, tmp_path, capsys):
    assert train_mlp_numpy.main(small_run(fake_cifar, tmp_path / 'run')) == 0
    record = (tmp_path / 'run' / 'metrics.json').read_bytes()
    with pytest.raises(SystemExit) as stop:
        benchmark.main(['--quick', '--out', str(tmp_path / 'run' / 'metrics.json')])
    assert stop.value.code == 2
    assert 'is in the run folder' in one_error(capsys)
    assert (tmp_path / 'run' / 'metrics.json').read_bytes() == record


def test_a_report_into_a_folder_with_another_report_tex(tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    (tmp_path / 'thesis').mkdir()
    (tmp_path / 'thesis' / 'report.tex').write_text('My thesis, 80 pages')
    argv = ['--runs', runs_json, '--out_dir', str(tmp_path / 'thesis')]
    assert make_report.main(argv) == 2
    assert "holds a report.tex that is not this report's" in one_error(capsys)
    assert os.listdir(tmp_path / 'thesis') == ['report.tex']
    assert (tmp_path / 'thesis' / 'report.tex').read_text() == 'My thesis, 80 pages'


def test_a_signal_as_the_temporary_file_is_made_leaves_none(tmp_path, monkeypatch):
    """mkstemp made the file and was stopped before atomic_write's cleanup knew its name."""
    real_open = os.open

    def open_then_stop(path, *args, **kwargs):
        real_open(path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'open', open_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_utils.write_json(str(tmp_path / 'metrics.json'), {'a': 1})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_a_stop_a_library_swallows_ends_the_report_before_its_next_step(
    tmp_path, capsys, monkeypatch
):
    """The interrupt raised inside a weakref callback printed "Exception ignored ...
    Traceback", and the report went on to write its tables."""
    runs_json = fake_project(tmp_path)

    def swallowed(*args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt:
            pass  # as a weakref callback's caller does

    monkeypatch.setattr(make_report, 'write_figures', swallowed)
    assert report(runs_json, tmp_path / 'out') == 128 + signal.SIGTERM
    assert 'stopped by SIGTERM' in one_error(capsys)
    assert not (tmp_path / 'out' / 'tables').exists()


def test_a_dangling_link_as_the_data_folder(tmp_path):
    """The download's final rename failed: a traceback (gridsearch) or a sentence naming a
    temporary folder and the disk (the train scripts)."""
    link = tmp_path / 'data'
    link.symlink_to(tmp_path / 'nowhere')
    with pytest.raises(cifar10_utils.CIFAR10Error, match='is a symbolic link to'):
        cifar10_utils.download_cifar10(str(link), url='http://127.0.0.1:9/x', md5='0' * 32)
    assert sorted(os.listdir(tmp_path)) == ['data']


def test_unittests_stops_on_a_signal_in_one_sentence():
    proc = subprocess.Popen(
        [sys.executable, 'unittests.py'], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    proc.stderr.read(1)  # the first test has run
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and 'Traceback' not in err
    assert err.splitlines()[-1].endswith('unittests.py: stopped by SIGTERM.')


def test_benchmark_refuses_a_bad_flag_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(['--bogus'])
    assert stop.value.code == 2
    assert capsys.readouterr().err == 'benchmark.py: error: unrecognized arguments: --bogus\n'


def test_a_download_switch_that_is_neither_on_nor_off(tmp_path, monkeypatch):
    """CIFAR10_DOWNLOAD=garbage counted as on and downloaded."""
    monkeypatch.setenv('CIFAR10_DOWNLOAD', 'garbage')
    with pytest.raises(cifar10_utils.CIFAR10Error, match="CIFAR10_DOWNLOAD='garbage' is neither"):
        cifar10_utils.ensure_cifar10(str(tmp_path / 'none'))
    assert os.listdir(tmp_path) == []


def test_max_steps_beyond_any_run_is_refused(tmp_path, capsys):
    """--max_steps 99999999999999999999 was accepted: a run that never ends."""
    argv = ['--max_steps', '99999999999999999999', '--out_dir', str(tmp_path / 'run')]
    with pytest.raises(SystemExit) as stop:
        train_mlp_numpy.main(argv)
    assert stop.value.code == 2
    assert 'expected an integer from 1 to 100000000' in one_error(capsys)
    assert not (tmp_path / 'run').exists()


def test_an_empty_data_folder_outlives_a_failed_download(tmp_path, monkeypatch):
    """The user's empty --data_dir was removed before the download, which then failed."""
    (tmp_path / 'empty').mkdir()
    monkeypatch.setenv('CIFAR10_URL', 'http://127.0.0.1:9/cifar-10-python.tar.gz')
    with pytest.raises(cifar10_utils.CIFAR10Error, match='Could not download'):
        cifar10_utils.ensure_cifar10(str(tmp_path / 'empty'))
    assert os.listdir(tmp_path) == ['empty']


@pytest.mark.parametrize(
    'content, why',
    [
        (b'{"hidden_units": [[]]}', 'every value must be a non-empty list of positive integers'),
        (b'{"learning_rate": [0.1]}\xff', 'is not UTF-8 text.'),
    ],
)
def test_a_grid_file_with_no_hidden_layer_or_not_utf8(content, why, tmp_path, capsys):
    """[[]] ran fits with no hidden layer, where --dnn_hidden_units '' is refused; a file
    that is not UTF-8 was called "not a JSON text of reasonable depth"."""
    (tmp_path / 'grid.json').write_bytes(content)
    assert gridsearch.main(['--grid', str(tmp_path / 'grid.json')]) == 2
    assert why in one_error(capsys)
