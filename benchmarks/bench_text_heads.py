"""Heads that use the label prompts, against the number of positives per label.

Every model is trained on balanced subsets
(:func:`skclipxray.datasets.balanced_subset`, with as many "No Finding"
images as positives per label) of a large training pool drawn from the
synthetic world of :func:`skclipxray.testing.make_vision_language_world`,
and scored by macro ROC AUC on a fixed test set of the same world. Each
shot count is drawn ``--draws`` times (one subset per draw, shared by all
models); the tables give mean and standard deviation over the draws.

Models:

- zero-shot: ``sigmoid(exp(logit_scale) * cos(image, prompt) + logit_bias)``,
  computed with NumPy (what ``ZeroShotClassifier`` does with a checkpoint);
- ``BaselineClassifier``, ``ConcatFusionClassifier``,
  ``WeightedSumClassifier``: their defaults (hidden layers (512, 256), 30
  epochs, batch 64, AdamW), on the CPU, seeded by the draw;
- ``TextAnchoredClassifier`` with ``anchor_weight="auto"`` (the sum of the
  next two), ``"inverse_positives"`` and ``"clap"``, and "auto" with
  ``learn_text_scale=True``; ``TipAdapterClassifier`` with its
  defaults; both given the world's prompts, logit scale and bias;
- random-prompt controls of TextAnchored (auto) and TipAdapter:
  :func:`skclipxray.experiment.random_like` of the prompts, one per draw.

A second world with ``alignment=0`` (prompts unrelated to the labels; the
images are the same, which the script checks, so Baseline's fits are the
same and are not repeated) runs zero-shot, Baseline and TextAnchored (auto).
Last, the fit time of TextAnchored (auto) against Baseline on 50,000 x 768
embeddings with 14 labels, and TipAdapter's predict time and peak memory
for 1,000 queries against 100,000 cached training images.

The world is synthetic: it shows the mechanisms (what the text brings when it
is aligned with the labels, what it costs when it is not), not clinical gains.

Run from the repository root::

    python benchmarks/bench_text_heads.py            # the full run
    python benchmarks/bench_text_heads.py --quick    # a small smoke run
    python benchmarks/bench_text_heads.py --models zero-shot Baseline

A requested model whose estimator cannot be imported stops the script. Writes
``benchmarks/results/text_heads.json`` and ``text_heads.md`` (with
``--quick``: ``text_heads_quick.*``).
"""

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import sklearn
import torch
from scipy.special import expit
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, log  # noqa: E402
from bench_heads import timed_fit  # noqa: E402

from skclipxray.classifiers import (  # noqa: E402
    BaselineClassifier,
    ConcatFusionClassifier,
    WeightedSumClassifier,
)
from skclipxray.datasets import balanced_subset  # noqa: E402
from skclipxray.experiment import random_like  # noqa: E402
from skclipxray.testing import make_vision_language_world  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHOTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ZERO_SHOT = "zero-shot"
BASELINE = "Baseline"
AUTO = "TextAnchored auto"
AUTO_RANDOM = "TextAnchored auto, random prompts"
MODELS = (
    ZERO_SHOT, BASELINE, "ConcatFusion", "WeightedSum", AUTO, "TextAnchored 1/n_k",
    "TextAnchored clap", "TextAnchored auto, learned text scale", "TipAdapter", AUTO_RANDOM,
    "TipAdapter, random prompts",
)
MISALIGNED_MODELS = (ZERO_SHOT, BASELINE, AUTO, "TextAnchored 1/n_k", "TextAnchored clap")


def _text_heads():
    """The text-using estimators, or a clear stop naming what is missing."""
    try:
        from skclipxray.text_anchored import TextAnchoredClassifier
        from skclipxray.tip_adapter import TipAdapterClassifier
    except ImportError as error:
        raise SystemExit(
            f"Cannot import the text-using heads ({error}); run only the other models "
            f"with --models {ZERO_SHOT} {BASELINE} ConcatFusion WeightedSum."
        ) from error
    return TextAnchoredClassifier, TipAdapterClassifier


def make_model(name, world, seed):
    """A fresh, unfitted model ``name`` for the prompts of ``world`` and draw ``seed``.

    Returns None for zero-shot, which has nothing to fit.
    """
    if name == ZERO_SHOT:
        return None
    common = dict(device="cpu", random_state=seed)
    if name == BASELINE:
        return BaselineClassifier(**common)
    if name == "ConcatFusion":
        return ConcatFusionClassifier(world.prompts, **common)
    if name == "WeightedSum":
        return WeightedSumClassifier(world.prompts, **common)
    TextAnchoredClassifier, TipAdapterClassifier = _text_heads()
    prompts = world.prompts
    if name.endswith(", random prompts"):
        prompts = random_like(prompts, random_state=seed)
    text = dict(logit_scale=world.logit_scale, logit_bias=world.logit_bias, device="cpu")
    if name in (AUTO, AUTO_RANDOM):
        return TextAnchoredClassifier(prompts, anchor_weight="auto", **text)
    if name == "TextAnchored 1/n_k":
        return TextAnchoredClassifier(prompts, anchor_weight="inverse_positives", **text)
    if name == "TextAnchored clap":
        return TextAnchoredClassifier(prompts, anchor_weight="clap", **text)
    if name == "TextAnchored auto, learned text scale":
        return TextAnchoredClassifier(prompts, anchor_weight="auto", learn_text_scale=True,
                                      **text)
    if name.startswith("TipAdapter"):
        return TipAdapterClassifier(prompts, **text)
    raise ValueError(f"Unknown model {name!r}; choose from {MODELS}.")


def zero_shot_proba(world, X):
    """SigLIP's zero-shot probabilities of the images ``X`` for the world's prompts."""
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return expit(np.exp(world.logit_scale) * (X @ world.prompts.T) + world.logit_bias)


def learning_curves(models, world, pool, test, shots, draws):
    """Macro AUROC of each model at each shot count and draw: {model: {shots: [...]}}."""
    aurocs = {name: {n: [] for n in shots} for name in models}
    sizes = {n: [] for n in shots}
    zero_shot = roc_auc_score(test.Y, zero_shot_proba(world, test.X), average="macro")
    for draw in range(draws):
        for n in shots:
            indices, _ = balanced_subset(pool.Y, n, random_state=draw)
            sizes[n].append(len(indices))
            X, Y = pool.X[indices], pool.Y.iloc[indices]
            for name in models:
                start = time.perf_counter()
                model = make_model(name, world, draw)
                if model is None:
                    auroc = zero_shot
                else:
                    model.fit(X, Y)
                    auroc = roc_auc_score(test.Y, model.predict_proba(test.X), average="macro")
                aurocs[name][n].append(float(auroc))
                log(f"draw {draw} n={n:3d} ({len(indices):4d} images) {name:40s} "
                    f"AUROC {auroc:.4f} ({time.perf_counter() - start:5.1f} s)")
    return aurocs, {n: float(np.mean(v)) for n, v in sizes.items()}


def _rss_kib(field):
    """A memory figure of this process from /proc/self/status (Linux), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def timings(world, n_fit, n_cache, n_queries, random_state):
    """TextAnchored vs Baseline fit time; TipAdapter predict time and memory."""
    TextAnchoredClassifier, TipAdapterClassifier = _text_heads()
    data = make_vision_language_world(max(n_fit, n_cache), random_state=random_state)
    queries = make_vision_language_world(n_queries, random_state=random_state + 1).X
    X, Y = data.X[:n_fit], data.Y.iloc[:n_fit]
    fits = {}
    for name in (AUTO, BASELINE):
        model = make_model(name, world, 0)
        seconds, cpu_seconds, others = timed_fit(model, X, Y)
        fits[name] = {"fit_seconds": seconds, "fit_cpu_seconds": cpu_seconds,
                      "other_processes_cpu_share": others}
        log(f"fit {name} on {n_fit} x {X.shape[1]}: {seconds:.1f} s (CPU {cpu_seconds:.1f} s)")

    tip = make_model("TipAdapter", world, 0).fit(data.X[:n_cache], data.Y.iloc[:n_cache])
    del data, X, Y
    tip.predict_proba(queries[:10])  # warm-up
    rss = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak resident memory (VmHWM)
    tracemalloc.start()
    start = time.perf_counter()
    tip.predict_proba(queries)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _rss_kib("VmHWM")
    log(f"TipAdapter predict {n_queries} against {n_cache} cached: {seconds:.2f} s, "
        f"peak resident memory +{(peak - rss) / 1024:.0f} MiB")
    return {
        "n_fit": n_fit, "n_features": int(world.prompts.shape[1]),
        "n_labels": int(world.prompts.shape[0]), "fit": fits,
        "fit_time_ratio_TextAnchored_to_Baseline": fits[AUTO]["fit_seconds"]
        / fits[BASELINE]["fit_seconds"],
        "tip_adapter": {
            "n_cache": n_cache, "n_queries": n_queries, "predict_seconds": seconds,
            "peak_resident_memory_increase_mib": (peak - rss) / 1024,
            "peak_numpy_allocations_mib": traced_peak / 2**20,
            "cache_float32_mib": n_cache * world.prompts.shape[1] * 4 / 2**20,
        },
    }


def _summary(aurocs):
    return {name: {str(n): {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))
                            if len(v) > 1 else 0.0, "draws": v}
                   for n, v in curve.items()} for name, curve in aurocs.items()}


def _mean(curves, name, n):
    return float(np.mean(curves[name][n]))


def _worst(curves, model, other, shots):
    """The smallest mean difference ``model - other`` over ``shots``, and where."""
    differences = {n: _mean(curves, model, n) - _mean(curves, other, n) for n in shots}
    n = min(differences, key=differences.get)
    return differences[n], n


def goals(aligned, misaligned, timing, shots):
    """One "PASS: ..." or "FAIL: ..." line per goal whose models ran."""
    lines = []
    small = [n for n in shots if n <= 8]
    large = [n for n in shots if n >= 64]
    comparisons = (
        (aligned, AUTO, ZERO_SHOT, shots, -0.005,
         "TextAnchored auto never below zero-shot by more than 0.005"),
        (aligned, AUTO, BASELINE, small, 0.05,
         "TextAnchored auto beats Baseline by >= 0.05 at <= 8 positives per label"),
        (aligned, AUTO, AUTO_RANDOM, small, 0.03,
         "TextAnchored auto's random-prompt control is >= 0.03 worse at <= 8 positives "
         "per label"),
        (misaligned, AUTO, BASELINE, large, -0.01,
         "alignment 0: TextAnchored auto at most 0.01 below Baseline at >= 64 positives "
         "per label"),
    )
    for curves, model, other, ns, bound, text in comparisons:
        if model in curves and other in curves and ns:
            difference, n = _worst(curves, model, other, ns)
            lines.append((difference >= bound, f"{text}: smallest difference "
                          f"{model} - {other} = {difference:+.4f} (at {n} positives)"))
    if AUTO in aligned:
        top = max(shots)
        best = max(aligned, key=lambda name: _mean(aligned, name, top))
        gap = _mean(aligned, best, top) - _mean(aligned, AUTO, top)
        lines.insert(2, (gap <= 0.01,
                         f"TextAnchored auto within 0.01 of the best model at {top} positives "
                         f"per label: best {best} {_mean(aligned, best, top):.4f}, auto "
                         f"{_mean(aligned, AUTO, top):.4f} (gap {gap:.4f})"))
    if timing:
        ratio = timing["fit_time_ratio_TextAnchored_to_Baseline"]
        lines.append((ratio <= 1 / 3,
                      f"TextAnchored fits {timing['n_fit']:,} x {timing['n_features']} x "
                      f"{timing['n_labels']} in at most a third of Baseline's time: "
                      f"{timing['fit'][AUTO]['fit_seconds']:.1f} s vs "
                      f"{timing['fit'][BASELINE]['fit_seconds']:.1f} s (ratio {ratio:.3f})"))
    return [f"{'PASS' if passed else 'FAIL'}: {text}" for passed, text in lines]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    parser.add_argument("--n-pool", type=int, default=150_000,
                        help="training pool; 150,000 gives Hernia (0.2%%) 256 positives")
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--n-fit", type=int, default=50_000)
    parser.add_argument("--n-cache", type=int, default=100_000)
    parser.add_argument("--n-queries", type=int, default=1_000)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="2 draws, 1, 8 and 64 positives, smaller sets and timings")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.draws, args.shots, args.n_pool, args.n_test = 2, [1, 8, 64], 30_000, 3_000
        args.n_fit, args.n_cache, args.n_queries = 5_000, 10_000, 200
    if any(name != ZERO_SHOT and name not in (BASELINE, "ConcatFusion", "WeightedSum")
           for name in args.models) or not args.no_timing:
        _text_heads()  # stop now, not after an hour, if they are missing

    load_before = os.getloadavg()[0]
    aligned_world = make_vision_language_world(0)
    misaligned_world = make_vision_language_world(0, alignment=0.0)
    pool = make_vision_language_world(args.n_pool, random_state=1)
    test = make_vision_language_world(args.n_test, random_state=2)
    misaligned_test = make_vision_language_world(args.n_test, alignment=0.0, random_state=2)
    if not (np.array_equal(test.X, misaligned_test.X) and test.Y.equals(misaligned_test.Y)):
        raise AssertionError("The two worlds should share their images.")
    del misaligned_test
    log(f"pool {pool.X.shape}, test {test.X.shape}")

    aligned, sizes = learning_curves(args.models, aligned_world, pool, test, args.shots,
                                     args.draws)
    own = [name for name in MISALIGNED_MODELS if name in args.models and name != BASELINE]
    misaligned, _ = learning_curves(own, misaligned_world, pool, test, args.shots,
                                    args.draws)
    if BASELINE in aligned:
        misaligned[BASELINE] = aligned[BASELINE]  # the same images, the same fits
    timing = None
    if not args.no_timing:
        timing = timings(aligned_world, args.n_fit, args.n_cache, args.n_queries, 3)

    text_anchored_check = None
    if AUTO in args.models:
        # With max_iter=0, TextAnchored is zero-shot classification.
        TextAnchoredClassifier, _ = _text_heads()
        indices, _ = balanced_subset(pool.Y, 8, random_state=0)
        start = TextAnchoredClassifier(
            aligned_world.prompts, logit_scale=aligned_world.logit_scale,
            logit_bias=aligned_world.logit_bias, max_iter=0, device="cpu",
        ).fit(pool.X[indices], pool.Y.iloc[indices])
        text_anchored_check = float(np.abs(
            start.predict_proba(test.X) - zero_shot_proba(aligned_world, test.X)
        ).max())

    report = {
        "world": {
            "function": "skclipxray.testing.make_vision_language_world",
            "world_seed": 0, "alignment": [0.35, 0.0], "signal": 2.0, "norm_spread": 0.25,
            "n_features": int(pool.X.shape[1]), "labels": pool.labels,
            "prevalence": [float(p) for p in pool.prevalence],
            "logit_scale": aligned_world.logit_scale, "logit_bias": aligned_world.logit_bias,
            "n_pool": args.n_pool, "n_test": args.n_test,
            "pool_positives": {k: int(v) for k, v in pool.Y.sum().items()},
            "test_positives": {k: int(v) for k, v in test.Y.sum().items()},
        },
        "settings": {
            "draws": args.draws, "shots": args.shots,
            "mean_training_images": {str(n): v for n, v in sizes.items()},
            "neural_heads": "defaults (hidden (512, 256), 30 epochs, batch 64, AdamW "
                            "lr 1e-3, weight decay 1e-2, dropout 0.3, input noise 0.01, "
                            "cosine schedule), device='cpu', random_state=draw",
            "text_heads": "the world's prompts, logit_scale and logit_bias; otherwise "
                          "defaults, device='cpu'",
            "zero_shot_vs_TextAnchored_max_iter_0_max_abs_difference": text_anchored_check,
        },
        "machine": {
            "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
        },
        "date": time.strftime("%Y-%m-%d"),
        "aligned": _summary(aligned),
        "misaligned": _summary(misaligned),
        "timing": timing,
        "goals": goals(aligned, misaligned, timing, args.shots),
    }
    name = "text_heads_quick" if args.quick else "text_heads"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(_markdown(report))
    print(_markdown(report))
    return report


def _table(summary, sizes):
    names = list(summary)
    shots = list(next(iter(summary.values())))
    lines = ["| positives per label | images | " + " | ".join(names) + " |",
             "|---:|---:|" + "---:|" * len(names)]
    for n in shots:
        cells = [f"{summary[name][n]['mean']:.3f} ± {summary[name][n]['sd']:.3f}"
                 for name in names]
        lines.append(f"| {n} | {sizes[n]:.0f} | " + " | ".join(cells) + " |")
    return lines


def _markdown(report):
    world, settings, machine = report["world"], report["settings"], report["machine"]
    sizes = settings["mean_training_images"]
    lines = [
        "# Text-using heads against the number of positives per label",
        "",
        "Synthetic data: the world of `make_vision_language_world` (SigLIP-like "
        f"geometry, {world['n_features']} features, the {len(world['labels'])} NIH "
        "ChestX-ray14 labels at their frequencies with their main co-occurrences). "
        "It shows mechanisms, not clinical gains.",
        f"Training sets: `balanced_subset` of a pool of {world['n_pool']:,} images "
        "(as many \"No Finding\" images as positives per label; \"images\" is the mean "
        f"subset size); test set: {world['n_test']:,} images of the same world. Macro "
        f"ROC AUC, mean ± sd over {settings['draws']} draws.",
        f"Neural heads: {settings['neural_heads']}. Text heads: {settings['text_heads']}.",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs, torch "
        f"{machine['torch']} with {machine['torch_threads']} thread(s); load average "
        f"{machine['load_average_before']:.1f} before, {machine['load_average_after']:.1f} "
        f"after. Date: {report['date']}.",
        "",
        "## Prompts aligned with the labels (alignment 0.35)",
        "",
        *_table(report["aligned"], sizes),
        "",
    ]
    if report["misaligned"]:
        lines += [
            "## Prompts unrelated to the labels (alignment 0)",
            "",
            "The images are those of the aligned world; Baseline's fits are the same.",
            "",
            *_table(report["misaligned"], sizes),
            "",
        ]
    timing = report["timing"]
    if timing:
        fit, tip = timing["fit"], timing["tip_adapter"]
        lines += ["## Timing", ""]
        for name, result in fit.items():
            lines.append(
                f"- {name} fit on {timing['n_fit']:,} x {timing['n_features']}, "
                f"{timing['n_labels']} labels: {result['fit_seconds']:.1f} s wall, "
                f"{result['fit_cpu_seconds']:.1f} s CPU (other processes used "
                f"{result['other_processes_cpu_share'] or 0:.0%} of the CPUs)."
            )
        lines += [
            f"- Fit time ratio TextAnchored / Baseline: "
            f"{timing['fit_time_ratio_TextAnchored_to_Baseline']:.3f}.",
            f"- TipAdapter predict_proba of {tip['n_queries']:,} queries against "
            f"{tip['n_cache']:,} cached images ({tip['cache_float32_mib']:.0f} MiB as "
            f"float32): {tip['predict_seconds']:.2f} s; peak resident memory "
            f"+{tip['peak_resident_memory_increase_mib']:.0f} MiB during the call "
            f"(NumPy allocations peak {tip['peak_numpy_allocations_mib']:.0f} MiB).",
            "",
        ]
    check = settings["zero_shot_vs_TextAnchored_max_iter_0_max_abs_difference"]
    if check is not None:
        lines += [f"TextAnchoredClassifier(max_iter=0) against the NumPy zero-shot: "
                  f"largest probability difference {check:.2e}.", ""]
    lines += ["## Goals", "", *[f"- {goal}" for goal in report["goals"]], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
