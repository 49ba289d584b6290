"""Fit time and macro AUROC: BaselineClassifier against scikit-learn's MLPClassifier.

Both fit the same synthetic multilabel task (embedding-sized features, labels
drawn from a known non-linear function of them) in one run, with the same
hidden layers, epochs, learning rate and Adam-family optimizer, at each batch
size of ``--batch-sizes`` (both models use the same one in turn).
MLPClassifier handles multilabel y natively but has no batch norm, dropout or
input noise; BaselineClassifier runs twice: with its defaults for those, and
with dropout and input noise off (the regularisation closest to
MLPClassifier's; batch norm is part of its architecture). Each model is
fitted ``--repeats`` times, alternating, after one warm-up fit; medians are
reported.

Wall time is what a user waits for; it is only meaningful on an otherwise idle
machine, so the share of the CPUs that other processes used during each fit
is recorded too. With ``--threads 1`` the CPU time of each fit does not depend
on other work on the machine.

Run from the repository root::

    python benchmarks/bench_heads.py               # 50,000 x 768, 14 labels, all CPUs
    python benchmarks/bench_heads.py --threads 1   # single-threaded
    python benchmarks/bench_heads.py --quick       # a smaller smoke run

Writes ``benchmarks/results/heads.json`` and ``heads.md`` (``heads_1thread.*``
with ``--threads 1``).
"""

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from skclipxray.classifiers import BaselineClassifier

RESULTS = Path(__file__).parent / "results"
UNREGULARISED = "BaselineClassifier, no dropout or noise"


def make_embeddings(n_samples, n_features, n_labels, seed=0):
    """Gaussian features and labels from a known one-hidden-layer model of them.

    Label prevalences range from 2% to 40%, as in chest X-ray data sets.
    Returns X, Y and the true logits.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features)).astype(np.float32)
    latent = np.maximum(X @ rng.normal(size=(n_features, 64)) / np.sqrt(n_features), 0)
    latent -= latent.mean(axis=0)
    logits = latent @ rng.normal(size=(64, n_labels))
    logits *= 2.0 / logits.std(axis=0)
    for j, prevalence in enumerate(np.linspace(0.02, 0.4, n_labels)):
        # The intercept that gives this label the wanted prevalence.
        logits[:, j] += brentq(lambda b: expit(logits[:, j] + b).mean() - prevalence, -20, 20)
    Y = (rng.random(logits.shape) < expit(logits)).astype(np.int64)
    return X, Y, logits


def _busy_cpu_seconds():
    """CPU seconds spent by every process on this machine (Linux), or None."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed_fit(model, X, Y):
    """Time ``model.fit``.

    Returns the wall time, the CPU time of this process (with one thread,
    what the wall time would be on an idle machine) and the share of the
    CPUs that other processes used meanwhile.
    """
    busy, own = _busy_cpu_seconds(), sum(os.times()[:2])
    start = time.perf_counter()
    model.fit(X, Y)
    seconds = time.perf_counter() - start
    cpu_seconds = sum(os.times()[:2]) - own
    others = None
    if busy is not None:
        others = (_busy_cpu_seconds() - busy) - cpu_seconds
        others = max(0.0, others / (seconds * os.cpu_count()))
    return seconds, cpu_seconds, others


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=50_000)
    parser.add_argument("--n-features", type=int, default=768)
    parser.add_argument("--n-labels", type=int, default=14)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256],
                        help="each is used by both models in turn")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads of torch and of numpy's BLAS (default: all CPUs); "
                             "with 1, CPU times do not depend on other work on the machine")
    parser.add_argument("--quick", action="store_true", help="5,000 samples, 2 epochs, 1 repeat")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_samples, args.epochs, args.repeats = 5_000, 2, 1
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        report = run(args)
    name = "heads" if args.threads == os.cpu_count() else f"heads_{args.threads}thread"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(_markdown(report))
    print(_markdown(report))
    return report


def run(args):

    load_before = os.getloadavg()[0]
    X, Y, logits = make_embeddings(args.n_samples, args.n_features, args.n_labels)
    n_test = int(args.n_samples * args.test_fraction)
    X_train, Y_train, X_test, Y_test = X[n_test:], Y[n_test:], X[:n_test], Y[:n_test]
    truth = roc_auc_score(Y_test, logits[:n_test], average="macro")
    hidden = tuple(args.hidden_sizes)

    def models(batch_size, epochs=args.epochs):
        return {
            "BaselineClassifier": lambda seed: BaselineClassifier(
                hidden_sizes=hidden, max_epochs=epochs, batch_size=batch_size,
                lr=args.lr, device="cpu", random_state=seed,
            ),
            # MLPClassifier's regularisation: none of ours but batch norm.
            UNREGULARISED: lambda seed: BaselineClassifier(
                hidden_sizes=hidden, max_epochs=epochs, batch_size=batch_size,
                lr=args.lr, device="cpu", random_state=seed, dropout=0.0, noise_std=0.0,
            ),
            "MLPClassifier": lambda seed: MLPClassifier(
                hidden_layer_sizes=hidden, max_iter=epochs, batch_size=batch_size,
                learning_rate_init=args.lr, solver="adam", tol=0.0, random_state=seed,
            ),
        }

    # Warm-up (imports, first allocations) out of the timings.
    for make in models(args.batch_sizes[0], epochs=1).values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            make(0).fit(X_train[:1000], Y_train[:1000])

    comparisons = []
    for batch_size in args.batch_sizes:
        runs = {name: [] for name in models(batch_size)}
        for repeat in range(args.repeats):
            for name, make in models(batch_size).items():
                model = make(repeat)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    seconds, cpu_seconds, others = timed_fit(model, X_train, Y_train)
                auroc = roc_auc_score(Y_test, model.predict_proba(X_test), average="macro")
                runs[name].append({"fit_seconds": seconds, "fit_cpu_seconds": cpu_seconds,
                                   "macro_auroc": auroc, "other_processes_cpu_share": others})
                print(f"batch {batch_size:4d} {name:20s} repeat {repeat}: "
                      f"fit {seconds:7.1f} s (CPU {cpu_seconds:7.1f} s), macro AUROC "
                      f"{auroc:.4f}, other processes' CPU share {others or 0:.0%}", flush=True)
        summary = {
            name: {
                "median_fit_seconds": statistics.median(r["fit_seconds"] for r in results),
                "median_fit_cpu_seconds": statistics.median(
                    r["fit_cpu_seconds"] for r in results
                ),
                "median_macro_auroc": statistics.median(r["macro_auroc"] for r in results),
                "runs": results,
            }
            for name, results in runs.items()
        }
        theirs = summary["MLPClassifier"]
        comparisons.append({
            "batch_size": batch_size,
            "results": summary,
            "against_MLPClassifier": {
                name: {
                    "speedup": theirs["median_fit_seconds"] / ours["median_fit_seconds"],
                    "cpu_time_ratio": theirs["median_fit_cpu_seconds"]
                    / ours["median_fit_cpu_seconds"],
                    "auroc_difference": ours["median_macro_auroc"]
                    - theirs["median_macro_auroc"],
                }
                for name, ours in summary.items() if name != "MLPClassifier"
            },
        })

    shares = [run["other_processes_cpu_share"] or 0.0 for row in comparisons
              for results in row["results"].values() for run in results["runs"]]
    report = {
        "task": {
            "n_train": len(X_train), "n_test": n_test, "n_features": args.n_features,
            "n_labels": args.n_labels, "label_prevalence": Y.mean(axis=0).round(3).tolist(),
            "true_macro_auroc": truth,
        },
        "settings": {
            "hidden_sizes": list(hidden), "epochs": args.epochs, "lr": args.lr,
            "repeats": args.repeats, "input_dtype": "float32",
            "BaselineClassifier": "AdamW, cosine schedule, batch norm, dropout 0.3, "
                                  "input noise 0.01 (defaults)",
            "MLPClassifier": "Adam, constant rate, L2 alpha=1e-4 (defaults), tol=0",
        },
        "machine": {
            "cpu_count": os.cpu_count(), "threads": args.threads,
            "python": platform.python_version(), "torch": torch.__version__,
            "scikit-learn": sklearn.__version__, "processor": platform.processor(),
            # Other work on the machine slows both models, unevenly.
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
            "max_other_processes_cpu_share": max(shares),
        },
        "comparisons": comparisons,
    }
    return report


def _markdown(report):
    task, settings, machine = report["task"], report["settings"], report["machine"]
    lines = [
        "# Trained head: BaselineClassifier vs scikit-learn MLPClassifier",
        "",
        f"Synthetic embeddings: {task['n_train']:,} training and {task['n_test']:,} "
        f"test rows, {task['n_features']} features (float32), {task['n_labels']} labels "
        f"(prevalence {min(task['label_prevalence']):.1%} to "
        f"{max(task['label_prevalence']):.1%}); macro AUROC of the true logits: "
        f"{task['true_macro_auroc']:.4f}.",
        f"Both models: hidden layers {tuple(settings['hidden_sizes'])}, "
        f"{settings['epochs']} epochs, learning rate {settings['lr']}, the same batch "
        f"size (one table row each); median of {settings['repeats']} fits each, "
        "alternating between the models.",
        f"Machine: {machine['cpu_count']} CPUs, {machine['threads']} thread(s) for "
        f"torch and BLAS, torch {machine['torch']}, scikit-learn {machine['scikit-learn']}. "
        f"Other processes used at most {machine['max_other_processes_cpu_share']:.0%} "
        "of the CPUs during any fit.",
        "",
        "| batch size | model | fit wall time (s) | fit CPU time (s) | macro AUROC |",
        "|---:|---|---:|---:|---:|",
    ]
    for row in report["comparisons"]:
        for name, result in row["results"].items():
            lines.append(
                f"| {row['batch_size']} | {name} | {result['median_fit_seconds']:.1f} | "
                f"{result['median_fit_cpu_seconds']:.1f} | {result['median_macro_auroc']:.4f} |"
            )
    lines.append("")
    for row in report["comparisons"]:
        for name, versus in row["against_MLPClassifier"].items():
            lines.append(
                f"- batch {row['batch_size']}, {name}: speed-up over MLPClassifier "
                f"{versus['speedup']:.2f}x in wall time, {versus['cpu_time_ratio']:.2f}x "
                f"in CPU time; AUROC difference {versus['auroc_difference']:+.4f}."
            )
    lines += [
        "",
        f"BaselineClassifier: {settings['BaselineClassifier']}. "
        f"{UNREGULARISED}: the same with dropout=0 and noise_std=0, the "
        "regularisation closest to MLPClassifier's. "
        f"MLPClassifier: {settings['MLPClassifier']}; it has no batch norm, dropout "
        "or input noise.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
