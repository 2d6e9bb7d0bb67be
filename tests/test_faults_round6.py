"""Findings of the sixth probe, aimed at the report again: LaTeX through runs.json's "time"
and through TeX's ^^ spelling, files copied in through symbolic links, make_report's signals
and failed writes, damaged records that gave tracebacks, runs.json naming a folder twice, and
--rerun's flags dodged with abbreviations. Each ends in one sentence and an exit status, with
no traceback, no code run and nothing half-written."""

import errno
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import ROOT, one_error
from fake_runs import fake_project

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402
import report_tables  # noqa: E402
from test_faults_round5 import edit, edit_record, report  # noqa: E402


def problem_of(name, capsys):
    """stderr's reason why run name is missing, asserting there is no traceback."""
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if f'run {name!r} cannot be used (' in line]
    assert lines, err
    return lines[0]


def test_a_time_in_runs_json_is_text_not_latex(tmp_path):
    """runs.json's "time" went unescaped into the run's summary in tables/runs.tex: an
    \\input{...} there put a file's contents into the PDF."""
    hostile = r'\input{/etc/hostname}'
    runs_json = edit(
        fake_project(tmp_path), lambda c: c['runs']['mlp_pytorch_best'].update(time=hostile)
    )
    assert report(runs_json, tmp_path / 'out') == 0
    for table in (tmp_path / 'out' / 'tables').glob('*.tex'):
        assert '\\input' not in table.read_text(), table.name


@pytest.mark.parametrize(
    'extra, why',
    [
        ('^^5cinput{/etc/hostname}', '^^, which TeX reads as another character'),
        ('\\begin{filecontents*}{x.tex}\\end{filecontents*}', 'the environment filecontents*'),
        ('\\end{document}', 'the environment document'),
        ('caf\u00e9', 'a character other than printable ASCII'),
    ],
)
def test_the_grids_latex_cannot_spell_a_command_another_way(extra, why, tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    tex = tmp_path / 'runs' / 'gridsearch' / 'results.tex'
    tex.write_text(tex.read_text() + extra)
    assert report(runs_json, tmp_path / 'out') == 1
    assert f'results.tex holds {why}, which gridsearch.py does not write' in problem_of(
        'gridsearch', capsys
    )


@pytest.mark.parametrize(
    'name, folder',
    [
        ('results.tex', 'gridsearch'),
        ('heatmap.png', 'gridsearch'),
        ('metrics.json', 'convnet_fast'),
    ],
)
def test_a_symbolic_link_in_a_run_folder_is_not_followed(name, folder, tmp_path, capsys):
    """A results.tex linked to another file put that file into the PDF (or, failing, into
    report.log); a linked heatmap.png was copied byte for byte."""
    runs_json = fake_project(tmp_path)
    secret = tmp_path / 'secret.txt'
    path = tmp_path / 'runs' / folder / name
    secret.write_bytes(path.read_bytes())  # even a file that would pass every other check
    path.unlink()
    path.symlink_to(secret)
    assert report(runs_json, tmp_path / 'out') == 1
    why = problem_of(folder, capsys)
    assert f'{name} is a symbolic link; the report reads only files that are in the run' in why


@pytest.mark.parametrize(
    'folder, record, change, why',
    [
        ('convnet_fast', 'metrics.json', {'final_validation_accuracy': 1.5}, 'outside 0..1'),
        ('convnet_fast', 'metrics.json', {'final_test_accuracy': -0.5}, 'outside 0..1'),
        ('convnet_fast', 'metrics.json', {'final_test_accuracy': True}, 'the wrong type'),
        ('convnet_fast', 'metrics.json', {'device': 'cuda\n\n\\x'}, 'not a short line'),
        ('gridsearch', 'best.json', {'cv': True}, 'the wrong type'),
        ('gridsearch', 'best.json', {'n_train': -5}, 'below what a grid search runs'),
        ('gridsearch', 'best.json', {'best_cv_score': 7.5}, 'outside 0..1'),
    ],
)
def test_a_record_with_nonsense_numbers(folder, record, change, why, tmp_path, capsys):
    """These gave a math domain error, or were shown as they stood (True-fold CV on -5
    images)."""
    runs_json = fake_project(tmp_path)
    edit_record(tmp_path / 'runs' / folder / record, lambda m: m.update(change))
    assert report(runs_json, tmp_path / 'out') == 1
    assert why in problem_of(folder, capsys)


def test_a_validation_size_that_is_not_a_number(tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    path = tmp_path / 'runs' / 'convnet_fast' / 'metrics.json'
    edit_record(path, lambda m: m['flags'].update(validation_size='5000'))
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'a batch or validation size that is not one' in problem_of('convnet_fast', capsys)


@pytest.mark.parametrize(
    'content',
    [
        'mean_test_score\noops\n',
        'rank_test_score\n1\n',
        b'\xff\xfe\x00m\x00e',
        'mean_test_score\n',  # no setting
    ],
)
def test_a_damaged_cv_results_table(content, tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    path = tmp_path / 'runs' / 'gridsearch' / 'cv_results.csv'
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'cv_results.csv is not a table of scores' in problem_of('gridsearch', capsys)


def test_a_heatmap_that_is_not_an_image(tmp_path, capsys):
    runs_json = fake_project(tmp_path)
    (tmp_path / 'runs' / 'gridsearch' / 'heatmap.png').write_text('not an image')
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'heatmap.png is not a whole PNG image' in problem_of('gridsearch', capsys)


def test_a_run_with_no_steps_and_time_records_of_zero(tmp_path):
    """A NumPy ConvNet pair with empty series gave 'a cannot be empty'; time.txt files of
    zero seconds and zero memory gave a ZeroDivisionError."""
    runs_json = fake_project(tmp_path)

    def empty(m):
        m.update({k: [] for k in ('steps', 'train_loss', 'eval_steps', 'test_loss')})
        m.update(test_accuracy=[], status='interrupted')

    edit_record(tmp_path / 'runs' / 'convnet_default' / 'metrics.json', empty)
    zero = (
        '\tElapsed (wall clock) time (h:mm:ss or m:ss): 0:00.00\n'
        '\tMaximum resident set size (kbytes): 0\n'
    )
    for name in ('convnet_default', 'convnet_fast'):
        (tmp_path / 'runs' / name / 'time.txt').write_text(zero)
    assert report(runs_json, tmp_path / 'out') == 0


@pytest.mark.parametrize(
    'change, why',
    [
        (
            lambda c: c['runs'].update(dup={**c['runs']['mlp_pytorch_best'], 'label': 'x'}),
            'runs.mlp_pytorch_best and runs.dup name the same folder.',
        ),
        (
            lambda c: c['seeds'][0].update(paths=[c['seeds'][0]['paths'][0]] * 3),
            'seeds[0] names a run folder twice.',
        ),
        (
            lambda c: c.update(confusion=['convnet_fast', 'convnet_fast']),
            '"confusion" names a run twice.',
        ),
        (
            lambda c: c['runs'].update({'a/b': c['runs'].pop('mlp_numpy_default')}),
            "the name 'a/b' holds characters other than letters, digits and _ -",
        ),
        (lambda c: c['runs']['convnet_fast'].update(label=None), '"label" must be a line'),
        (lambda c: c['runs']['convnet_fast'].update(label='a\n\nb'), '"label" must be a line'),
        (lambda c: c['runs']['convnet_fast'].update(label='a\x00'), '"label" must be a line'),
        (lambda c: c['runs']['convnet_fast'].update(label='猫'), '"label" must be a line'),
        (lambda c: c['runs']['convnet_fast'].update(label='x' * 201), '"label" must be a line'),
        (lambda c: c['runs']['convnet_fast'].update(time=[1, 2]), '"time" must be a line'),
    ],
)
def test_runs_json_that_names_a_folder_twice_or_a_label_latex_cannot_set(
    change, why, tmp_path, capsys
):
    """A folder under two names left one of them unread, silently, with exit 0; labels that
    break LaTeX failed only when the PDF was built, with exit 1."""
    runs_json = edit(fake_project(tmp_path), change)
    assert report(runs_json, tmp_path / 'out') == 2
    assert why in one_error(capsys)
    assert not (tmp_path / 'out').exists()


def test_a_label_with_a_bracket_stays_in_its_item(tmp_path):
    runs_json = edit(
        fake_project(tmp_path), lambda c: c['runs']['convnet_fast'].update(label='fast [x]')
    )
    assert report(runs_json, tmp_path / 'out') == 0
    assert '\\item[{fast [x]}]' in (tmp_path / 'out' / 'tables' / 'commands.tex').read_text()


@pytest.mark.parametrize('out_dir', ['', 'runs/convnet_fast', 'runs/convnet_fast/report'])
def test_an_out_dir_that_is_no_folder_or_inside_a_run(out_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs_json = fake_project(tmp_path)
    before = sorted(os.listdir(tmp_path / 'runs' / 'convnet_fast'))
    assert report(runs_json, out_dir) == 2
    assert 'inside the run folder' in one_error(capsys) or out_dir == ''
    assert sorted(os.listdir(tmp_path / 'runs' / 'convnet_fast')) == before


@pytest.mark.parametrize(
    'flags',
    [['--resum', '/tmp/other/last.pt'], ['--data', '/tmp/elsewhere'], ['--out', '/tmp/x']],
)
def test_rerun_refuses_an_abbreviated_flag(flags):
    """--resum passed as --resume and --data as --data_dir, though --rerun drops both."""
    command = ['python', 'train_convnet_pytorch.py', *flags]
    run = make_report.Run('r', 'r', 'report/runs/r', command, 'metrics.json')
    with pytest.raises(make_report.ReportError, match='records flags that .* does not accept'):
        make_report.safe_command(run)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_report_draws(signum, tmp_path, capsys, monkeypatch):
    """SIGTERM and SIGHUP killed make_report without a word, leaving a .tmp file."""
    runs_json = fake_project(tmp_path)
    draw = make_report.write_figures

    def signalled(config, dead_units, out):
        os.kill(os.getpid(), signum)
        draw(config, dead_units, out)

    monkeypatch.setattr(make_report, 'write_figures', signalled)
    (tmp_path / 'out').mkdir()  # (one the report makes goes again: test_faults_round16)
    assert report(runs_json, tmp_path / 'out') == 128 + signum
    name = signal.Signals(signum).name
    assert one_error(capsys) == (
        f'make_report: stopped by {name}; the files already written are complete.'
    )
    assert not [p for p in (tmp_path / 'out').rglob('*') if '.tmp' in p.name]


def test_a_signal_a_library_swallows_still_stops_with_its_status(tmp_path, capsys, monkeypatch):
    """A Ctrl-C that landed in a weakref callback was printed as 'Exception ignored' and the
    report went on to exit 0."""
    runs_json = fake_project(tmp_path)
    draw = make_report.write_figures

    def swallowed(config, dead_units, out):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # as a __del__ or weakref callback does
        draw(config, dead_units, out)

    monkeypatch.setattr(make_report, 'write_figures', swallowed)
    assert report(runs_json, tmp_path / 'out') == 130
    assert 'stopped by SIGINT' in one_error(capsys)


def test_a_failed_write_names_its_file_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """With `ulimit -f`: 'error: None: File too large.' and a .tmp.png left behind."""
    runs_json = fake_project(tmp_path)

    class TooLarge:  # a figure whose save stops half-way
        def savefig(self, f, **kwargs):
            f.write(b'half a figure')
            raise OSError(errno.EFBIG, 'File too large')

    draw = make_report.write_figures

    def failing(config, dead_units, out):
        draw(config, dead_units, out)
        report_tables.write(os.path.join(out, 'big.png'), TooLarge())

    monkeypatch.setattr(make_report, 'write_figures', failing)
    (tmp_path / 'out').mkdir()  # (one the report makes goes again: test_faults_round16)
    assert report(runs_json, tmp_path / 'out') == 1
    figures = tmp_path / 'out' / 'figures'
    assert one_error(capsys) == f'make_report: error: {figures / "big.png"}: File too large.'
    assert not [p for p in figures.iterdir() if '.tmp' in p.name or p.name == 'big.png']


def test_the_report_writes_every_figure_the_same_through_a_file_object(tmp_path):
    """write() saves figures through an open file now: the bytes stay those of a path."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    fig.gca().plot([0, 1])
    for ext in ('png', 'pdf'):
        report_tables.write(str(tmp_path / f'a.{ext}'), fig)
        fig.savefig(tmp_path / f'b.{ext}', dpi=150, metadata=report_tables.METADATA[ext])
        assert Path(tmp_path / f'a.{ext}').read_bytes() == Path(tmp_path / f'b.{ext}').read_bytes()
    plt.close(fig)


@pytest.mark.parametrize(
    'change',
    [
        lambda m: m.update(command=['python', 'train_mlp_pytorch.py', '--x\n\n\\y']),
        lambda m: m['flags'].update(optimizer='adam\x00'),
        lambda m: m['flags'].update(dnn_hidden_units=[100, ['猫']]),
        lambda m: m['flags'].update({'a\nb': 1}),
    ],
)
def test_a_recorded_command_or_flag_latex_cannot_set(change, tmp_path, capsys):
    """The report prints commands and flags' values; control characters or CJK there broke
    LaTeX only when the PDF was built."""
    runs_json = fake_project(tmp_path)
    edit_record(tmp_path / 'runs' / 'convnet_fast' / 'metrics.json', change)
    assert report(runs_json, tmp_path / 'out') == 1
    why = problem_of('convnet_fast', capsys)
    assert 'not a list of lines of printable text' in why or 'not lines of printable text' in why


def test_a_comment_cannot_hide_an_environment_in_the_grids_latex(tmp_path, capsys):
    """\\end%<newline>{document} ended the document early: the PDF lost its last pages."""
    runs_json = fake_project(tmp_path)
    tex = tmp_path / 'runs' / 'gridsearch' / 'results.tex'
    tex.write_text(tex.read_text() + '\\end%\n{document}')
    assert report(runs_json, tmp_path / 'out') == 1
    assert 'results.tex holds a % comment' in problem_of('gridsearch', capsys)


@pytest.mark.parametrize('flag', ['--scheduler', '--scheduler=tcp://1.2.3.4:8786', '--grid'])
def test_rerun_does_not_take_a_scheduler_or_grid_file_from_a_run_folder(flag):
    command = [
        'python',
        'gridsearch.py',
        flag,
        *(['tcp://1.2.3.4:8786'] if '=' not in flag else []),
    ]
    run = make_report.Run('g', 'g', 'report/runs/g', command, 'best.json')
    with pytest.raises(make_report.ReportError, match='which --rerun does not take'):
        make_report.safe_command(run)
