"""Made-up run folders for the report's tests: a metrics.json with train_utils.Run's schema,
the files gridsearch.py writes, and a whole project of them with its runs.json."""

import csv
import json
import os

import numpy as np

RUNS = (
    'mlp_numpy_default',
    'mlp_pytorch_default',
    'mlp_pytorch_best',
    'convnet_default',
    'convnet_fast',
)


def fake_metrics(folder, script, steps=30, eval_freq=10, seed=0, status='completed', **flags):
    """A metrics.json with the schema of train_utils.Run, from a made-up training curve."""
    rng = np.random.default_rng(seed)
    loss = 2.3 * np.exp(-np.arange(steps) / steps) + rng.normal(0, 0.05, steps)
    evals = list(range(eval_freq, steps + 1, eval_freq))
    acc = [0.2 + 0.3 * s / steps for s in evals]
    flags = {
        'learning_rate': 0.002,
        'max_steps': steps,
        'batch_size': 200,
        'seed': 42,
        'out_dir': str(folder),
        **flags,
    }
    metrics = {
        'script': script,
        'out_dir': str(folder),
        'command': ['python', script, '--max_steps', str(steps), '--out_dir', '/elsewhere'],
        'flags': flags,
        'status': status,
        'steps': list(range(1, steps + 1)),
        'train_loss': loss.tolist(),
        'eval_steps': evals,
        'test_loss': [2.0 - a for a in acc],
        'test_accuracy': acc,
        'final_test_accuracy': acc[-1],
        'best_test_accuracy': max(acc),
        'wall_seconds': 12.5,
        'train_seconds': 11.0,
        'started': '2026-01-01T00:00:00',
        'versions': {'python': '3.11', 'numpy': '2.0'},
    }
    if flags.get('validation_size'):  # evaluated on validation, the test set once at the end
        metrics.update(
            eval_split='validation',
            validation_loss=metrics.pop('test_loss'),
            validation_accuracy=metrics.pop('test_accuracy'),
            best_validation_accuracy=metrics.pop('best_test_accuracy'),
            final_validation_accuracy=acc[-1],
            final_test_accuracy=0.625,
            best_checkpoint_test_accuracy=0.75,
        )
    # 10,000 test images, 1,000 a class, with the final test accuracy on the diagonal
    right = round(1000 * metrics['final_test_accuracy'])
    confusion = np.full((10, 10), (1000 - right) // 9)
    np.fill_diagonal(confusion, 1000 - 9 * ((1000 - right) // 9))
    metrics['test_confusion'] = confusion.tolist()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.json'), 'w') as f:
        json.dump(metrics, f)


def fake_grid(folder):
    """The files gridsearch.py writes: cv_results.csv, best.json, results.tex and heatmap.png."""
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    plt.imsave(os.path.join(folder, 'heatmap.png'), np.random.default_rng(0).random((40, 40)))
    rows = []
    for bs in (100, 200):
        for lr in (1e-3, 1e-2, 1e-1):
            for hidden in ([100], [200, 200]):
                score = 0.3 + 0.1 * (lr == 1e-2) + 0.02 * (bs == 100) + 0.01 * len(hidden)
                rows.append(
                    {
                        'mean_fit_time': 1.0,
                        'param_batch_size': bs,
                        'param_lr': lr,
                        'param_module__n_hidden': json.dumps(hidden),
                        'param_optimizer': 'adam',
                        'params': json.dumps({'batch_size': bs, 'learning_rate': lr}),
                        'mean_test_score': score,
                        'std_test_score': 0.01,
                        'rank_test_score': 0,
                    }
                )
    with open(os.path.join(folder, 'cv_results.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(folder, 'best.json'), 'w') as f:
        json.dump(
            {
                'best_params': {
                    'batch_size': 100,
                    'learning_rate': 0.01,
                    'hidden_units': [200, 200],
                    'optimizer': 'adam',
                },
                'best_cv_score': 0.44,
                'best_cv_std': 0.01,
                'test_accuracy': 0.45,
                'cv': 3,
                'max_epochs': 2,
                'n_train': 500,
                'command': ['python', 'gridsearch.py', '--cv', '3'],
            },
            f,
        )
    with open(os.path.join(folder, 'results.tex'), 'w') as f:
        f.write(
            '\\begin{table}[t]\n\\centering\n\\begin{tabular}{rc}\n\\toprule\n'
            'rank & CV accuracy \\\\\n\\midrule\n1 & $0.440 \\pm 0.010$ \\\\\n'
            '\\bottomrule\n\\end{tabular}\n\\caption{Grid search.}\n'
            '\\label{tab:gridsearch}\n\\end{table}\n'
        )


def fake_project(tmp_path, skip=()):
    """Fake run folders for every run of runs.json but those in skip, a fake grid folder,
    and a runs.json with absolute paths to them. Returns the runs.json path."""
    runs_dir = tmp_path / 'runs'
    scripts = {
        'mlp_numpy_default': 'train_mlp_numpy.py',
        'convnet_default': 'train_convnet_pytorch.py',
        'convnet_fast': 'train_convnet_pytorch.py',
    }
    entries = {}
    for i, name in enumerate(RUNS):
        folder = runs_dir / name
        script = scripts.get(name, 'train_mlp_pytorch.py')
        if name not in skip:
            flags = {'optimizer': 'sgd', 'dropout': 0.0}
            if name == 'mlp_pytorch_best':
                flags = {'optimizer': 'adamw', 'dropout': 0.2}
            if name == 'convnet_fast':
                flags = {'optimizer': 'SGD', 'validation_size': 5000}
            fake_metrics(folder, script, seed=i, **flags)
        entries[name] = {
            'label': name.replace('_', ' '),
            'path': str(folder),
            'command': ['python', script],
        }
    fake_grid(runs_dir / 'gridsearch')
    mod = runs_dir / 'mlp_pytorch_adam'
    # Flags newer than the baseline's run, at their defaults, are no change.
    fake_metrics(
        mod,
        'train_mlp_pytorch.py',
        seed=9,
        optimizer='adam',
        dropout=0.0,
        status='diverged',
        validation_size=0,
        overwrite=False,
    )
    entries['convnet_default']['time'] = 'about 1 h alone'  # instead of the recorded time
    config = {
        'runs': entries,
        'gridsearch': {
            'path': str(runs_dir / 'gridsearch'),
            'command': ['python', 'gridsearch.py'],
        },
        # A row naming a run's folder shares that run.
        'modifications': [
            {'label': 'defaults', 'path': str(runs_dir / RUNS[1])},
            {'label': 'Adam', 'path': str(mod)},
            {'label': 'best', 'path': str(runs_dir / RUNS[2])},
        ],
    }
    config['seeds'] = [
        {'label': 'two seeds', 'paths': [str(runs_dir / RUNS[0]), str(runs_dir / RUNS[1])]}
    ]
    config['convnet_ladder'] = ['convnet_default', 'convnet_fast']
    config['convnet_changes'] = [
        {'label': '+ a split', 'path': str(runs_dir / 'convnet_fast')},
        {'label': 'no split', 'path': str(runs_dir / 'convnet_default')},
    ]
    seeds = []  # three seeds of a run with a validation split, for the experiments
    for seed in (1, 2, 3):
        seeds.append(str(runs_dir / f'seed{seed}'))
        fake_metrics(seeds[-1], 'train_mlp_pytorch.py', seed=seed, validation_size=5000)
    config['modifications'][0]['validation'] = {
        'path': seeds[0],
        'seeds': {'label': 'seeds 1-3', 'paths': seeds},
    }
    config['experiments'] = {
        name: [{'label': 'a', 'paths': seeds}, {'label': 'b', 'paths': seeds[::-1]}]
        for name in ('batchnorm', 'crops', 'learning_rate')
    }
    config['confusion'] = ['mlp_pytorch_best', 'convnet_fast']
    config['numpy_convnet'] = ['convnet_default', 'convnet_fast']
    dead_units = {
        'settings': {
            '[100, 100]': [{'step': 10, 'dead': [0.0, 0.5], 'train_accuracy': 0.2}],
            '[50, 30, 20]': [{'step': 10, 'dead': [0.0, 0.2, 0.4], 'train_accuracy': 0.3}],
        }
    }
    (runs_dir / 'dead_units.json').write_text(json.dumps(dead_units))
    config['dead_units'] = str(runs_dir / 'dead_units.json')
    path = tmp_path / 'runs.json'
    path.write_text(json.dumps(config))
    return str(path)
