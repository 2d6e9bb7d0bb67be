"""The committed report: every run it cites is recorded and every committed table is what
make_report.py writes from those runs; every test it cites exists; and numerical checks of
formulas it derives that unittests.py does not check as written (the full softmax Jacobian, the
fused softmax + cross-entropy gradient, the batch-norm gradient's path-by-path form)."""

import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'report'))

import make_report  # noqa: E402


def test_the_committed_report_comes_from_its_runs(tmp_path):
    """Every run report.tex cites is in runs.json and recorded under report/runs/, and every
    committed table is what make_report.py writes from those recorded runs."""
    config = make_report.load_config(os.path.join(ROOT, 'report', 'runs.json'))
    for run in config.folders:
        run.load()
        assert not run.missing, run.problem
    make_report.write_tables(config, str(tmp_path))
    make_report.write_experiment_tables(config, str(tmp_path))
    make_report.write_benchmark_table(make_report.read_benchmark(config.benchmark), str(tmp_path))
    for name in os.listdir(tmp_path):
        with open(os.path.join(ROOT, 'report', 'tables', name)) as f:
            assert f.read() == (tmp_path / name).read_text(), f'tables/{name} is out of date'
    with open(os.path.join(ROOT, 'report', 'report.tex')) as f:
        tex = re.sub(r'(?<!\\)%.*', '', f.read())  # without its comments
    macros = ''.join(
        (tmp_path / name).read_text()
        for name in ('runs.tex', 'experiments.tex', 'benchmark_values.tex')
    )
    cited = [
        *(
            (f'exp/{n}/{row}', key)
            for n, row, key in re.findall(r'\\expval\{(\w+)\}\{(\d+)\}\{(\w+)\}', tex)
        ),
        *((f'ladder/{row}', key) for row, key in re.findall(r'\\ladder\{(\d+)\}\{(\w+)\}', tex)),
        *((name, 'final') for name in re.findall(r'\\finalacc\{([^}]*)\}', tex)),
        *((name, 'summary') for name in re.findall(r'\\runsummary\{([^}]*)\}', tex)),
        *re.findall(r'\\runval\{([^}]*)\}\{([^}]*)\}', tex),
    ]
    assert len(cited) > 20
    for name, key in cited:
        if '#' in name:  # the macros' own definitions
            continue
        assert f'run:{name}:{key}\\endcsname' in macros, f'{name} {key}'
        value = macros.split(f'run:{name}:{key}\\endcsname{{', 1)[1].split('}\n', 1)[0]
        assert value not in ('-{}-', '--', r'\textbf{missing}'), f'{name} {key} is {value}'
    for name in re.findall(r'\\includegraphics[^{]*\{curves_([^}.]*)', tex):
        assert name in config.runs, name


def test_every_test_the_report_cites_exists():
    """report.tex points each formula at the test that checks it: those tests must exist."""
    with open(os.path.join(ROOT, 'report', 'report.tex')) as f:
        # (not the \\DeclareUrlCommand\\test that defines the macro)
        cited = re.findall(r'(?<!Command)\\test\{([^}]*)\}', f.read())
    assert len(cited) > 10
    defined = set()
    tests = [os.path.join('tests', n) for n in os.listdir(os.path.join(ROOT, 'tests'))]
    for name in ['unittests.py', *(n for n in tests if n.endswith('.py'))]:
        with open(os.path.join(ROOT, name)) as f:
            defined |= set(re.findall(r'^\s*(?:def|class) (\w+)', f.read(), re.M))
    for citation in cited:
        names = re.split(r'[ .:]+', citation.split('.py')[-1])
        missing = [n for n in names if n and n not in defined]
        assert not missing, f'report.tex cites {citation}, but {missing} does not exist'


def test_softmax_jacobian_as_written():
    """report.tex: dy_i/dx_j = y_i (delta_ij - y_j), i.e. J = diag(y) - y y^T."""
    from gradient_check import eval_numerical_gradient_array
    from modules import SoftMaxModule

    x = np.random.default_rng(0).standard_normal((1, 5))
    y = SoftMaxModule().forward(x)[0]
    jacobian = np.diag(y) - np.outer(y, y)
    numeric = np.stack(
        [
            eval_numerical_gradient_array(SoftMaxModule().forward, x.copy(), np.eye(5)[[i]])[0]
            for i in range(5)
        ]
    )
    np.testing.assert_allclose(jacobian, numeric, rtol=1e-6, atol=1e-9)


def test_softmax_crossentropy_gradient_is_y_minus_t_over_b():
    """report.tex, eq. (softmax + cross-entropy): dL/dX~ = (Y - T) / B."""
    from modules import CrossEntropyModule, SoftMaxModule

    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((6, 4)), np.eye(4)[rng.integers(0, 4, 6)]
    softmax, loss = SoftMaxModule(), CrossEntropyModule()
    y = softmax.forward(x)
    chained = softmax.backward(loss.backward(y, t))
    np.testing.assert_allclose(chained, (y - t) / 6, rtol=1e-10, atol=1e-14)


def test_batchnorm_gradient_path_by_path():
    """report.tex: dL/dx from dL/dvar and dL/dmu (the path-by-path form) equals the compact
    form of CustomBatchNormManualFunction, and sum_b dL/dx_b = 0."""
    import torch

    from custom_batchnorm import CustomBatchNormManualFunction

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64) * 2 + 1
    gamma = torch.randn(3, generator=gen, dtype=torch.float64)
    beta = torch.randn(3, generator=gen, dtype=torch.float64)
    dy = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    eps = 0.5  # large, so that the eps terms of the orthogonality check below matter
    leaf = x.clone().requires_grad_()
    CustomBatchNormManualFunction.apply(leaf, gamma, beta, eps).backward(dy)

    b = x.shape[0]
    mu = x.mean(0)
    var = ((x - mu) ** 2).mean(0)
    g = gamma * dy  # dL/dx_hat
    d_var = (g * (x - mu)).sum(0) * -0.5 * (var + eps) ** -1.5
    d_mu = -(g / torch.sqrt(var + eps)).sum(0) + d_var * (-2 / b) * (x - mu).sum(0)
    dx = g / torch.sqrt(var + eps) + d_var * 2 * (x - mu) / b + d_mu / b
    torch.testing.assert_close(dx, leaf.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        leaf.grad.sum(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12
    )
    # Orthogonal to x_hat up to eps: sum_b x_hat_b dL/dx_b = gamma s eps / (var + eps) *
    # sum_b dL/dy_b x_hat_b.
    s = (var + eps) ** -0.5
    x_hat = (x - mu) * s
    torch.testing.assert_close(
        (x_hat * leaf.grad).sum(0),
        gamma * s * eps / (var + eps) * (dy * x_hat).sum(0),
        rtol=1e-6,
        atol=1e-12,
    )


def test_every_folder_has_a_name_of_its_own():
    """--rerun NAME reruns one folder: two folders of one basename (a run and its validation
    twin) are told apart by their paths under report/runs/."""
    config = make_report.load_config(os.path.join(ROOT, 'report', 'runs.json'))
    names = [run.name for run in config.folders]
    assert len(names) == len(set(names))
    assert {'mod_kaiming', 'validation/mod_kaiming', 'gridsearch'} <= set(names)


def prose(tex):
    """report.tex's running text: without comments, the preamble, math, tables, figures'
    file names, code and test names, and the macros' arguments."""
    text = re.sub(r'(?<!\\)%.*', '', tex)
    text = text[text.index(r'\begin{document}') :]
    for pattern in (
        r'\\begin\{(equation|align|gather|multline|tabular|longtable)\*?\}.*?\\end\{\1\*?\}',
        r'\\\[.*?\\\]',
        r'\$[^$]*\$',
        r'\\(?:code|test|url|ref|eqref|label|input|includegraphics|runval|expval|ladder|finalacc'
        r'|runsummary)(?:\[[^]]*\])?(?:\{[^}]*\})+',
    ):
        text = re.sub(pattern, ' ', text, flags=re.S)
    return text


def test_no_number_in_the_text_is_typed_by_hand():
    """A measured number in report.tex is a macro make_report.py wrote from a run: the prose
    holds no decimal number of its own (settings and arithmetic are written as math)."""
    with open(os.path.join(ROOT, 'report', 'report.tex')) as f:
        text = prose(f.read())
    typed = re.findall(r'.{0,30}(?<![\w.])\d+\.\d+.{0,30}', text)
    assert not typed, typed


def test_prose_catches_a_typed_number():
    assert re.search(r'\d+\.\d+', prose('\\begin{document} accuracy 0.884 $x = 0.5$'))
    assert not re.search(r'\d+\.\d+', prose('\\begin{document} $0.5$ \\finalacc{a.b} % 0.9'))
