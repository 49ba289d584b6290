"""The method from start to finish: data, balanced subset, embeddings, heads, metrics.

:func:`run_experiment` is what ``skclipxray experiment`` and ``skclipxray
demo`` run. It embeds every image of the subset once (through the persistent
cache), trains each head on the cached embeddings, and writes a results folder.

Importing this module imports NumPy only: the command line reads the defaults
of :class:`ExperimentConfig` for its help without loading scikit-learn, torch
and transformers, which :func:`run_experiment` imports when it runs.
"""

import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._backbone import DEFAULT_MODEL

__all__ = ["ALL_SHOTS", "ExperimentConfig", "random_like", "run_experiment"]

#: The value of :attr:`ExperimentConfig.shots` that means the whole training set.
ALL_SHOTS = "all"


@dataclass
class ExperimentConfig:
    """Everything that defines one experiment; written to ``config.json``.

    Parameters
    ----------
    nih_root : str
        Folder of the NIH ChestX-ray14 download (or a part of it).
    out_dir : str
        Results folder; created if missing.
    metadata : str, optional
        Metadata CSV; by default found in ``nih_root``.
    model : str or list of str
        Checkpoint id or folder; several compare backbones: each is run
        through the same subset, split and heads, its results written to
        ``backbones/NAME/``, and side-by-side tables to ``backbones.md``.
    n_per_label : int
        Positives per pathology in the balanced subset.
    test_size : float
        Fraction of patients held out for evaluation.
    train_sizes : list of int, optional
        Training-set sizes for the learning-curve comparison.
    shots : list of int or "all"
        Positives per label of the label-efficiency sweep: each head is
        trained on :func:`~skclipxray.datasets.balanced_subset` draws of the
        training patients with that many positives per label, and evaluated
        on the test patients. :data:`ALL_SHOTS` (``"all"``) is the whole
        training set. Empty: no sweep.
    n_draws : int
        Draws (seeds) per number of positives in the sweep; ``"all"`` is
        drawn once, since every draw would hold the same images.
    operating_point : str or list
        The objective of each model's per-label thresholds, as
        :class:`~skclipxray.thresholds.MultilabelTunedThresholdClassifierCV`
        spells it: ``["min_sensitivity", 0.9]`` (the best specificity with a
        sensitivity of at least 0.9), ``"youden"``, ``"f1"``, ... They are
        tuned on a validation split of the training patients.
    calibration : {"temperature", "sigmoid", "isotonic"}
        The calibration map fitted on the same validation split, as
        :class:`~skclipxray.calibration.MultilabelCalibratedClassifierCV`.
    validation_size : float
        Fraction of the training patients held out to tune the operating
        points and the calibration (the models are refitted on the rest).
    n_boot : int
        Patient-bootstrap replicates of the intervals of the test
        sensitivity and specificity.
    views, follow_up : str
        Passed to :func:`~skclipxray.datasets.load_nih_chestxray14`.
    cache : str, optional
        Embedding cache; default ``out_dir/embeddings.sqlite``.
    hidden_sizes : tuple of int
        Hidden layers of every head.
    max_epochs, batch_size : int
        Training of every head.
    device, dtype : str
        Where and in which precision the model and the heads run.
    embed_batch_size : int
        Images per forward pass of the vision tower.
    random_state : int
        Seeds the subset, the split, the controls and the heads.
    """

    nih_root: str
    out_dir: str
    metadata: str = None
    model: str = DEFAULT_MODEL
    n_per_label: int = 200
    test_size: float = 0.25
    train_sizes: list = field(default_factory=list)
    shots: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, ALL_SHOTS])
    n_draws: int = 5
    operating_point: list = field(default_factory=lambda: ["min_sensitivity", 0.9])
    calibration: str = "temperature"
    validation_size: float = 0.2
    n_boot: int = 1000
    views: str = "all"
    follow_up: str = "all"
    cache: str = None
    hidden_sizes: tuple = (512, 256)
    max_epochs: int = 30
    batch_size: int = 64
    device: str = "auto"
    dtype: str = "auto"
    embed_batch_size: int = 16
    random_state: int = 0


def random_like(embeddings, random_state=None):
    """Random vectors with the same shape and row norms as ``embeddings``.

    The control for the fusion heads: the prompt mega-vector is the same for
    every image, so a head given random "prompts" of the same shape and scale
    shows how much of a fusion head's result the text itself explains.

    Parameters
    ----------
    embeddings : ndarray of shape (n_labels, d)
    random_state : int or None

    Returns
    -------
    ndarray of shape (n_labels, d), float32

    Examples
    --------
    >>> import numpy as np
    >>> prompts = np.eye(3, 4, dtype=np.float32) * 2
    >>> control = random_like(prompts, random_state=0)
    >>> control.shape, np.allclose(np.linalg.norm(control, axis=1), 2)
    ((3, 4), True)
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    rng = np.random.default_rng(random_state)
    noise = rng.standard_normal(embeddings.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return noise * np.linalg.norm(embeddings, axis=1, keepdims=True)


def _heads(config, model, prompts):
    """The classifiers compared, by name; each text-using head comes with its control.

    ``prompts`` is the fitted :class:`~skclipxray.PromptEnsembleEmbedder` of
    ``model``: its embeddings, and the checkpoint's logit scale and bias that
    it brings, for the heads that turn cosines into logits. A control gets
    random prompts (:func:`random_like`) and the same scale and bias, so that
    it differs from its head by the text only. A CLIP checkpoint, which
    scores with a softmax and has no bias, gets no Tip-Adapter (which learns
    no intercept to make up for it). An image-only checkpoint
    (``prompts=None``) gets the heads that need no text: the baseline and
    the linear probe (:class:`~skclipxray.TextAnchoredClassifier` without
    prompts, an L2 logistic regression).
    """
    from .classifiers import BaselineClassifier, ConcatFusionClassifier, WeightedSumClassifier
    from .text_anchored import TextAnchoredClassifier
    from .tip_adapter import TipAdapterClassifier
    from .zeroshot import ZeroShotClassifier

    common = dict(
        hidden_sizes=tuple(config.hidden_sizes),
        max_epochs=config.max_epochs,
        batch_size=config.batch_size,
        device=config.device,
        random_state=config.random_state,
    )
    if prompts is None:
        return {
            "baseline": BaselineClassifier(**common),
            "linear probe": TextAnchoredClassifier(device=config.device),
        }
    scaled = dict(
        logit_scale=prompts.logit_scale_, logit_bias=prompts.logit_bias_,
        device=config.device,
    )
    text = prompts.embeddings_
    control = random_like(text, config.random_state)
    heads = {
        "zero-shot": ZeroShotClassifier(model, device=config.device, dtype=config.dtype),
        "baseline": BaselineClassifier(**common),
        "concat-fusion": ConcatFusionClassifier(prompts=text, **common),
        "concat-fusion (random prompts)": ConcatFusionClassifier(prompts=control, **common),
        "weighted-sum": WeightedSumClassifier(prompts=text, **common),
        "weighted-sum (random prompts)": WeightedSumClassifier(prompts=control, **common),
        "text-anchored": TextAnchoredClassifier(text, **scaled),
        "text-anchored (random prompts)": TextAnchoredClassifier(control, **scaled),
        "tip-adapter": TipAdapterClassifier(text, **scaled),
        "tip-adapter (random prompts)": TipAdapterClassifier(control, **scaled),
    }
    if prompts.scoring_ == "softmax":
        # CLIP has no bias, and Tip-Adapter no intercept of its own: its
        # sigmoid(scale * cosine) would say yes to every label.
        del heads["tip-adapter"], heads["tip-adapter (random prompts)"]
    return heads


#: How the name of a random-prompt control ends.
_CONTROL_SUFFIX = " (random prompts)"


def _check_sweep(shots, n_draws, random_state):
    """The label-efficiency settings, sorted and without repeats; raise on bad ones.

    Checked before anything is loaded, so that a typo does not surface after
    the embedding.
    """
    if isinstance(shots, str) or not hasattr(shots, "__iter__"):
        raise ValueError(
            f"shots must be a list of positive ints and {ALL_SHOTS!r}, got {shots!r}."
        )
    for value in shots:
        if value != ALL_SHOTS and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise ValueError(
                f"shots must hold positive ints and {ALL_SHOTS!r} (the whole training "
                f"set), got {value!r}."
            )
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}.")
    if shots and not isinstance(random_state, (int, np.integer)):
        raise ValueError(
            f"random_state must be an int: the sweep's draws are seeded from it, got "
            f"{random_state!r}."
        )
    numbers = sorted({int(value) for value in shots if value != ALL_SHOTS})
    return numbers + [ALL_SHOTS] * (ALL_SHOTS in shots)


def _check_operating_point(config):
    """The operating point's objective, normalised; raise on bad settings before any work."""
    from .metrics import _check_objective

    objective = _check_objective(config.operating_point)
    if config.calibration not in _CALIBRATIONS:
        raise ValueError(
            f"calibration must be one of {list(_CALIBRATIONS)}, got {config.calibration!r}."
        )
    if isinstance(config.validation_size, bool) or not 0 < config.validation_size < 1:
        raise ValueError(
            f"validation_size must be a fraction in (0, 1), got {config.validation_size!r}."
        )
    if isinstance(config.n_boot, bool) or not isinstance(config.n_boot, (int, np.integer)) \
            or config.n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {config.n_boot!r}.")
    return objective


#: Calibration maps of :attr:`ExperimentConfig.calibration`.
_CALIBRATIONS = ("temperature", "sigmoid", "isotonic")


def _draw_seed(random_state, draw):
    """The seed of draw ``draw`` of the sweep: the same for every number of positives.

    :class:`numpy.random.SeedSequence` mixes the two, so that the seeds of
    neighbouring experiments (random_state 0 and 1) do not share draws.
    """
    return int(np.random.SeedSequence([random_state, draw]).generate_state(1)[0])


def _report(Y_test, proba, **kwargs):
    """:func:`~skclipxray.metrics.multilabel_report` of one model on the test set.

    The labels whose ROC AUC the test set cannot define are the same for every
    model: :func:`run_experiment` says so once, so the warning that
    :func:`~skclipxray.metrics.multilabel_report` gives on each call is
    silenced here, and only it.
    """
    from sklearn.exceptions import UndefinedMetricWarning

    from .metrics import multilabel_report

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="ROC AUC is undefined", category=UndefinedMetricWarning
        )
        return multilabel_report(Y_test, proba, **kwargs)


def _evaluate(Y_test, proba):
    """Per-label report and summary metrics (a dict) of one model on the test set."""
    report, summary = _report(Y_test, proba)
    return report, {name: float(value) for name, value in summary.items()}


def _to_markdown(frame, float_format="{:.3f}"):
    """A GitHub-flavoured Markdown table, without optional dependencies."""
    frame = frame.reset_index()
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = [
        "| "
        + " | ".join(
            float_format.format(v) if isinstance(v, (float, np.floating)) else str(v)
            for v in row
        )
        + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows]) + "\n"


def run_experiment(config, *, log=print):
    """Run the whole method and write a results folder.

    Steps: load the metadata and keep the images on disk; draw a balanced
    subset; split it by patient; embed every image once (cached); fit the
    zero-shot floor, the heads that learn from the training embeddings
    (baseline, concat-fusion, weighted-sum, text-anchored, and tip-adapter,
    which caches them) and the random-prompt controls of the text-using ones;
    evaluate on the held-out patients. Then each model's operating point and
    calibration: refitted on most of the training patients, with thresholds
    (``config.operating_point``) and a calibration map (``config.calibration``)
    fitted on the others, judged on the held-out patients. Then the
    label-efficiency sweep: refit every model on balanced draws of the
    training patients with ``config.shots`` positives per label,
    ``config.n_draws`` draws each, and evaluate each on the same held-out
    patients.

    Files written to ``config.out_dir``:

    - ``metrics.csv`` / ``metrics.md``: one row per model, summary metrics;
    - ``per_label_roc_auc.csv``: ROC AUC per model and pathology;
    - ``roc_curves.png``: one panel per pathology, every model overlaid;
    - ``operating_points.csv``: one row per model and pathology: the
      threshold tuned on the validation split, whether the objective was
      reached there and the validation sensitivity and specificity, then on
      the test patients ``support``, ``sensitivity`` and ``specificity`` with
      their patient-bootstrap intervals (``_ci_low``, ``_ci_high``;
      ``config.n_boot`` replicates) and ``precision``;
      ``calibration.csv``: per model and pathology, the test ECE and Brier
      score before and after calibration; ``operating_points_summary.csv`` /
      ``operating_points.md``: their means over the pathologies, per model;
      ``reliability.png`` / ``reliability_calibrated.png``: reliability
      diagrams of the models (not their controls) before and after
      (:func:`~skclipxray.plotting.plot_reliability_diagrams`);
    - ``train_sizes.csv`` / ``train_sizes.md`` / ``train_sizes.png`` when
      ``config.train_sizes`` is given;
    - ``label_efficiency.csv``: one row per number of positives per label and
      model: ``n_positives_per_label`` (an int, or ``"all"``), ``model``,
      ``n_draws``, the mean, standard deviation and 95% t-interval of the
      macro ROC AUC across draws (``roc_auc_macro_mean``, ``_sd``,
      ``_ci95_low``, ``_ci95_high``; NaN with one draw), the mean training
      images ``n_train_mean`` and positives per label
      ``positives_per_label_mean`` of the draws; ``label_efficiency_draws.csv``:
      the same per draw, with its seed; ``label_efficiency.md``: the means and
      interval half-widths, one column per model; ``label_efficiency.png``
      (:func:`~skclipxray.plotting.plot_label_efficiency`). Written unless
      ``config.shots`` is empty;
    - ``subset.csv``: the images used, with split and labels;
    - ``config.json``; ``models/NAME.skops``: fitted pipelines (images in,
      probabilities out), loadable with :func:`skclipxray.persistence.load`;
    - ``embeddings.sqlite``: the embedding cache (unless ``config.cache``
      points elsewhere), so that a second run embeds nothing new.

    Parameters
    ----------
    config : ExperimentConfig
    log : callable, default=print
        Receives one-line progress messages.

    Returns
    -------
    metrics : pandas.DataFrame
        The table written to ``metrics.csv``, indexed by model name.
    """
    from .datasets import balanced_subset, load_nih_chestxray14, train_test_split_by_patient

    shots = _check_sweep(config.shots, config.n_draws, config.random_state)
    objective = _check_operating_point(config)
    models = _check_models(config.model)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = config.cache or str(out_dir / "embeddings.sqlite")
    with open(out_dir / "config.json", "w") as fh:
        json.dump({**asdict(config), "cache": cache}, fh, indent=2, default=str)

    data = load_nih_chestxray14(
        config.nih_root,
        metadata=config.metadata,
        views=config.views,
        follow_up=config.follow_up,
    )
    log(data.summary)
    indices, counts = balanced_subset(
        data.Y, config.n_per_label, random_state=config.random_state
    )
    subset = _Subset(
        paths=data.paths.iloc[indices], Y=data.Y.iloc[indices],
        groups=data.groups.iloc[indices],
    )
    log(f"Balanced subset: {len(indices)} images; positives per label: "
        + ", ".join(f"{k} {v}" for k, v in counts["achieved"].items()))

    subset.train, subset.test = train_test_split_by_patient(
        np.arange(len(indices)), groups=subset.groups, test_size=config.test_size,
        random_state=config.random_state,
    )
    split = np.where(np.isin(np.arange(len(indices)), subset.test), "test", "train")
    subset.Y.assign(path=subset.paths.values, patient_id=subset.groups.values,
                    split=split).to_csv(out_dir / "subset.csv")

    if len(models) == 1:
        return _run_backbone(config, models[0], subset, shots, objective, cache, out_dir, log)[0]
    names = _backbone_names(models)
    results = {}
    for model, name in zip(models, names):
        log(f"Backbone {name} ({model}):")
        results[name] = _run_backbone(
            config, model, subset, shots, objective, cache,
            out_dir / "backbones" / _file_name(name), log,
        )
    return _compare_backbones(results, out_dir)


@dataclass
class _Subset:
    """The images of an experiment, their labels and patients, and the split by patient."""

    paths: object
    Y: object
    groups: object
    train: np.ndarray = None
    test: np.ndarray = None


def _check_models(model):
    """The checkpoints compared: a list of one or more, without repeats."""
    models = [model] if isinstance(model, (str, Path)) else list(model)
    if not models or not all(isinstance(m, (str, Path)) and str(m) for m in models):
        raise ValueError(
            f"model must be a checkpoint id or folder, or a list of them, got {model!r}."
        )
    models = [str(m) for m in models]
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise ValueError(f"model lists {repeated} more than once.")
    return models


def _backbone_names(models):
    """Short names of the checkpoints compared: a hub id, or as few of a folder's last parts
    as tell it from the others."""
    parts = [Path(m).resolve().parts if Path(m).is_dir() else (m,) for m in models]
    depth = [1] * len(models)

    def names():
        return ["/".join(p[-d:]) for p, d in zip(parts, depth)]

    while True:
        current = names()
        colliding = [i for i, name in enumerate(current)
                     if current.count(name) > 1 and depth[i] < len(parts[i])]
        if not colliding:
            return current if len(set(current)) == len(current) else list(models)
        for i in colliding:
            depth[i] += 1


def _run_backbone(config, model, subset, shots, objective, cache, out_dir, log):
    """The whole comparison on one checkpoint's embeddings; its files go to ``out_dir``.

    Returns the metrics table (indexed by model) and the operating-point
    summary.
    """
    import pandas as pd
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    from .embedders import SigLIPImageEmbedder
    from ._backbone import checkpoint_info
    from ._validation import check_label_matrix
    from .metrics import _undefined_message
    from .persistence import save
    from .plotting import plot_roc_curves
    from .prompts import PromptEnsembleEmbedder

    (out_dir / "models").mkdir(parents=True, exist_ok=True)
    embedder = SigLIPImageEmbedder(
        model, device=config.device, dtype=config.dtype,
        batch_size=config.embed_batch_size, cache=cache,
    )
    X = embedder.fit_transform(list(subset.paths))
    log(f"Embeddings: {X.shape[0]} images x {X.shape[1]} dimensions "
        f"({embedder.n_embedded_} computed, {embedder.n_cached_} from the cache {cache}).")

    Y, train, test = subset.Y, subset.train, subset.test
    prompts = None
    if checkpoint_info(model, device=config.device, dtype=config.dtype).architecture.has_text:
        prompts = PromptEnsembleEmbedder(model, device=config.device, dtype=config.dtype)
        prompts.fit(list(Y.columns))
    else:
        log(f"{model} is image-only: no text tower, so no zero-shot and no text-using "
            "heads; the baseline and a linear probe are compared.")
    heads = _heads(config, model, prompts)
    if prompts is not None and prompts.scoring_ == "softmax":
        log(f"{model} scores with CLIP's softmax, without a bias: Tip-Adapter, which "
            "learns no intercept, is left out.")

    X_train, X_test = X[train], X[test]
    Y_train, Y_test = Y.iloc[train], Y.iloc[test]
    groups_test = subset.groups.iloc[test]
    undefined = _undefined_message(
        *check_label_matrix(Y_test), where=f"the test set ({len(test)} images)"
    )
    if undefined:
        log(undefined)
    rows, per_label, scores = {}, {}, {}
    for name, head in heads.items():
        fitted = clone(head).fit(X_train, Y_train)
        proba = pd.DataFrame(fitted.predict_proba(X_test), columns=Y.columns)
        report, rows[name] = _evaluate(Y_test, proba)
        per_label[name] = report["roc_auc"]
        scores[name] = proba
        pipeline = Pipeline([("embed", clone(embedder).fit()), ("clf", fitted)])
        save(pipeline, out_dir / "models" / f"{_file_name(name)}.skops")
        log(f"{name:>32}: macro ROC AUC {rows[name]['roc_auc_macro']:.3f}")

    metrics = pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
    metrics.insert(0, "n_test_patients", groups_test.nunique())
    metrics.insert(0, "n_test", len(test))
    metrics.insert(0, "n_train", len(train))
    metrics.to_csv(out_dir / "metrics.csv")
    (out_dir / "metrics.md").write_text(_to_markdown(metrics))
    pd.DataFrame(per_label).rename_axis("label").to_csv(out_dir / "per_label_roc_auc.csv")
    plot_roc_curves(Y_test, scores, path=out_dir / "roc_curves.png")

    operating_points = _operating_points(
        config, objective, heads, X_train, Y_train, subset.groups.iloc[train], X_test,
        Y_test, groups_test, out_dir, log,
    )
    if config.train_sizes:
        _train_size_curve(config, heads, X_train, Y_train, X_test, Y_test, out_dir, log)
    if shots:
        _label_efficiency(
            config, shots, heads, X_train, Y_train, X_test, Y_test, out_dir, log
        )
    return metrics, operating_points


#: Columns of the backbone comparison, each a table and a plot: column -> what it is.
BACKBONE_METRICS = {
    "roc_auc_macro": "macro ROC AUC",
    "average_precision_macro": "macro average precision",
    "f1_macro": "macro F1 at 0.5",
    "sensitivity_mean": "mean sensitivity at the tuned operating point",
    "specificity_mean": "mean specificity at the tuned operating point",
    "ece_before_mean": "mean ECE before calibration",
    "ece_after_mean": "mean ECE after calibration",
}


def _compare_backbones(results, out_dir):
    """The side-by-side tables and plots of several backbones; returns the long table.

    ``backbones.csv`` has one row per backbone and model; ``backbones.md``
    one table per metric of :data:`BACKBONE_METRICS` (a row per model, a
    column per backbone); ``backbones_METRIC.png`` the same as bars
    (:func:`~skclipxray.plotting.plot_backbone_comparison`).
    """
    import pandas as pd

    from .plotting import plot_backbone_comparison

    long = pd.concat(
        {name: metrics.join(points) for name, (metrics, points) in results.items()},
        names=["backbone", "model"],
    )
    long.to_csv(out_dir / "backbones.csv")
    models = list(dict.fromkeys(long.index.get_level_values("model")))
    sections = []
    for metric, title in BACKBONE_METRICS.items():
        table = long[metric].unstack("backbone").reindex(models)[list(results)]
        sections.append(f"## {title} (`{metric}`)\n\n" + _to_markdown(table))
        plot_backbone_comparison(
            table, metric=title, path=out_dir / f"backbones_{metric}.png"
        )
    (out_dir / "backbones.md").write_text(
        "Backbones compared on the same images, split and heads (held-out "
        "patients). Each backbone's own results: backbones/NAME/.\n\n"
        + "\n".join(sections)
    )
    return long


def _file_name(model_name):
    """``"weighted-sum (random prompts)"`` -> ``"weighted-sum-random-prompts"``."""
    return re.sub(r"[^0-9A-Za-z]+", "-", model_name).strip("-")


def _operating_points(
    config, objective, heads, X_train, Y_train, groups_train, X_test, Y_test, groups_test,
    out_dir, log,
):
    """Each model's tuned operating point, and its calibration before and after, on the test set.

    The training patients are split once more: each model is refitted on
    ``1 - validation_size`` of them, its thresholds tuned
    (:class:`~skclipxray.thresholds.MultilabelTunedThresholdClassifierCV`)
    and its probabilities calibrated
    (:class:`~skclipxray.calibration.MultilabelCalibratedClassifierCV`) on
    the rest, both with ``cv="prefit"``, and both judged on the test
    patients, which none of it has seen. What the tuning and calibration
    warn about (a label without positives in the validation split, an
    objective out of reach) is logged, once per model.
    """
    import pandas as pd
    from sklearn.base import clone

    from .calibration import MultilabelCalibratedClassifierCV
    from .datasets import train_test_split_by_patient
    from .metrics import _objective_name
    from .plotting import plot_reliability_diagrams
    from .thresholds import MultilabelTunedThresholdClassifierCV

    fit, validation = train_test_split_by_patient(
        np.arange(len(X_train)), groups=groups_train, test_size=config.validation_size,
        random_state=config.random_state,
    )
    X_fit, Y_fit = X_train[fit], Y_train.iloc[fit]
    X_val, Y_val = X_train[validation], Y_train.iloc[validation]
    log(f"Operating points ({_objective_name(objective)}) and {config.calibration} "
        f"calibration: tuned on {len(validation)} validation images of the training "
        f"patients, the models refitted on the other {len(fit)}.")
    point_rows, calibration_rows, summary, raw, calibrated = [], [], {}, {}, {}
    for name, head in heads.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fitted = clone(head).fit(X_fit, Y_fit)
            tuned = MultilabelTunedThresholdClassifierCV(
                fitted, objective=objective, cv="prefit"
            ).fit(X_val, Y_val)
            calibrator = MultilabelCalibratedClassifierCV(
                fitted, method=config.calibration, cv="prefit"
            ).fit(X_val, Y_val)
        for message in dict.fromkeys(str(w.message) for w in caught if _is_tuning(w)):
            log(f"{name}: {message}")
        raw[name] = fitted.predict_proba(X_test)
        calibrated[name] = calibrator.predict_proba(X_test)
        report, _ = _report(
            Y_test, raw[name], threshold=tuned.best_thresholds_, n_boot=config.n_boot,
            groups=groups_test, random_state=config.random_state,
        )
        after, _ = _report(Y_test, calibrated[name])
        on_validation = pd.DataFrame(tuned.tuning_results_, index=report.index)
        point_rows.append(pd.DataFrame({
            "model": name,
            "threshold": report["threshold"],
            "reached_on_validation": on_validation["reached"],
            "validation_sensitivity": on_validation["sensitivity"],
            "validation_specificity": on_validation["specificity"],
            **{column: report[column] for column in (
                "support", "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high",
                "specificity", "specificity_ci_low", "specificity_ci_high", "precision",
            )},
        }))
        calibration_rows.append(pd.DataFrame({
            "model": name,
            "ece_before": report["ece"], "ece_after": after["ece"],
            "brier_before": report["brier"], "brier_after": after["brier"],
        }))
        summary[name] = {
            "sensitivity_mean": report["sensitivity"].mean(),
            "specificity_mean": report["specificity"].mean(),
            "labels_reached_on_validation": int(on_validation["reached"].sum()),
            "ece_before_mean": report["ece"].mean(),
            "ece_after_mean": after["ece"].mean(),
            "brier_before_mean": report["brier"].mean(),
            "brier_after_mean": after["brier"].mean(),
        }
        log(f"{name:>32}: test sensitivity {summary[name]['sensitivity_mean']:.3f}, "
            f"specificity {summary[name]['specificity_mean']:.3f}; ECE "
            f"{summary[name]['ece_before_mean']:.3f} -> {summary[name]['ece_after_mean']:.3f}")
    pd.concat(point_rows).to_csv(out_dir / "operating_points.csv")
    pd.concat(calibration_rows).to_csv(out_dir / "calibration.csv")
    table = pd.DataFrame.from_dict(summary, orient="index").rename_axis("model")
    table.to_csv(out_dir / "operating_points_summary.csv")
    (out_dir / "operating_points.md").write_text(
        f"Operating point: {_objective_name(objective)} per label, tuned on "
        f"{len(validation)} validation images of the training patients; "
        f"{config.calibration} calibration fitted on the same images. Test "
        "sensitivity and specificity are means over the labels; ECE (10 equal-width "
        "bins) and Brier score before and after calibration, means over the labels. "
        "Per-label values and patient-bootstrap intervals: operating_points.csv, "
        "calibration.csv.\n\n" + _to_markdown(table)
    )
    # The random-prompt controls would only crowd the panels.
    heads_only = [name for name in heads if not name.endswith(_CONTROL_SUFFIX)]
    plot_reliability_diagrams(
        Y_test, {name: raw[name] for name in heads_only}, path=out_dir / "reliability.png"
    )
    plot_reliability_diagrams(
        Y_test, {name: calibrated[name] for name in heads_only},
        path=out_dir / "reliability_calibrated.png",
    )
    return table


def _is_tuning(caught):
    """A warning of the tuning or the calibration (not a head's own, such as convergence)."""
    from sklearn.exceptions import UndefinedMetricWarning

    return caught.category in (UserWarning, UndefinedMetricWarning)


def _train_size_curve(config, heads, X_train, Y_train, X_test, Y_test, out_dir, log):
    """Refit every head on growing random subsets of the training set."""
    import pandas as pd
    from sklearn.base import clone

    from .plotting import plot_train_size_curves

    rng = np.random.default_rng(config.random_state)
    order = rng.permutation(len(X_train))
    rows = []
    for size in sorted(config.train_sizes):
        if size > len(X_train):
            log(f"train size {size} skipped: only {len(X_train)} training images.")
            continue
        chosen = order[:size]
        aucs = []
        for name, head in heads.items():
            fitted = clone(head).fit(X_train[chosen], Y_train.iloc[chosen])
            _, summary = _evaluate(Y_test, fitted.predict_proba(X_test))
            rows.append({"train_size": size, "model": name, **summary})
            aucs.append(f"{name} {summary['roc_auc_macro']:.3f}")
        log(f"train size {size}: macro ROC AUC " + ", ".join(aucs))
    curve = pd.DataFrame(rows)
    curve.to_csv(out_dir / "train_sizes.csv", index=False)
    table = curve.pivot(index="train_size", columns="model", values="roc_auc_macro")
    table = table[[name for name in heads if name in table.columns]]  # the heads' order
    (out_dir / "train_sizes.md").write_text(_to_markdown(table))
    plot_train_size_curves(table, path=out_dir / "train_sizes.png")
    return curve


def _label_efficiency(config, shots, heads, X_train, Y_train, X_test, Y_test, out_dir, log):
    """Refit every head on balanced draws of the training set; summarise across draws.

    The draws come from the training patients only, so that the test patients
    are those of the main comparison. Draw ``d`` of every number of positives
    uses the seed :func:`_draw_seed` ``(random_state, d)``, for the subset and
    for the heads that take a ``random_state``.
    """
    import pandas as pd
    from sklearn.base import clone

    from .datasets import balanced_subset
    from .plotting import plot_label_efficiency

    rows = []
    for k in shots:
        cell = []
        for draw in range(1 if k == ALL_SHOTS else config.n_draws):
            seed = _draw_seed(config.random_state, draw)
            if k == ALL_SHOTS:
                chosen = np.arange(len(X_train))
            else:
                chosen, _ = balanced_subset(Y_train, k, random_state=seed)
            X_draw, Y_draw = X_train[chosen], Y_train.iloc[chosen]
            common = dict(
                n_positives_per_label=k, draw=draw, seed=seed, n_train=len(chosen),
                positives_per_label=float(Y_draw.sum(axis=0).mean()),
            )
            for name, head in heads.items():
                head = clone(head)
                if "random_state" in head.get_params():
                    head.set_params(random_state=seed)
                head.fit(X_draw, Y_draw)
                _, summary = _evaluate(Y_test, head.predict_proba(X_test))
                cell.append({**common, "model": name, "roc_auc_macro": summary["roc_auc_macro"]})
        rows += cell
        done = _across_draws(pd.DataFrame(cell))
        what = ("the whole training set" if k == ALL_SHOTS
                else f"{k} positive{'s' * (k > 1)} per label")
        n = int(done["n_draws"].iat[0])
        log(f"{what} ({n} draw{'s' * (n > 1)}, {done['n_train_mean'].iat[0]:.0f} training "
            "images on average): mean macro ROC AUC "
            + ", ".join(f"{m} {v:.3f}" for m, v in zip(done["model"], done["roc_auc_macro_mean"])))
    draws = pd.DataFrame(rows)
    draws.to_csv(out_dir / "label_efficiency_draws.csv", index=False)
    summary = _across_draws(draws)
    summary.to_csv(out_dir / "label_efficiency.csv", index=False)
    (out_dir / "label_efficiency.md").write_text(_label_efficiency_markdown(summary))
    plot_label_efficiency(summary, path=out_dir / "label_efficiency.png")
    return summary


def _across_draws(draws):
    """Mean, sd and 95% t-interval of the macro ROC AUC across the draws of each cell.

    The interval is ``mean ± t(0.975, n - 1) * sd / sqrt(n)`` over the ``n``
    draws: it is about the draw of the training images (and the heads' seeds),
    the test set being fixed. One draw gives NaN.
    """
    from scipy import stats

    grouped = draws.groupby(["n_positives_per_label", "model"], sort=False)
    summary = grouped.agg(
        n_draws=("roc_auc_macro", "size"),
        roc_auc_macro_mean=("roc_auc_macro", "mean"),
        roc_auc_macro_sd=("roc_auc_macro", "std"),
        n_train_mean=("n_train", "mean"),
        positives_per_label_mean=("positives_per_label", "mean"),
    ).reset_index()
    n = summary["n_draws"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.975, n - 1) * summary["roc_auc_macro_sd"] / np.sqrt(n)
    summary.insert(5, "roc_auc_macro_ci95_low", summary["roc_auc_macro_mean"] - half)
    summary.insert(6, "roc_auc_macro_ci95_high", summary["roc_auc_macro_mean"] + half)
    return summary


def _label_efficiency_markdown(summary):
    """One row per number of positives, one column per model: mean ± interval half-width."""
    import pandas as pd

    half = (summary["roc_auc_macro_ci95_high"] - summary["roc_auc_macro_mean"]).to_numpy()
    cells = [
        f"{mean:.3f}" if np.isnan(h) else f"{mean:.3f} ± {h:.3f}"
        for mean, h in zip(summary["roc_auc_macro_mean"], half)
    ]
    shots = summary["n_positives_per_label"].astype(str)
    table = summary.assign(cell=cells, shots=shots).pivot(
        index="shots", columns="model", values="cell"
    )
    table = table.loc[shots.unique(), summary["model"].unique()]  # the sweep's order
    n_train = summary.groupby(shots, sort=False)["n_train_mean"].first()
    table.insert(0, "training images", [f"{n:.0f}" for n in n_train[table.index]])
    return (
        "Macro ROC AUC on the held-out patients: mean across draws of the training "
        "images ± half-width of the 95% t-interval (a single value: one draw).\n\n"
        + _to_markdown(pd.DataFrame(table).rename_axis("positives per label"))
    )
