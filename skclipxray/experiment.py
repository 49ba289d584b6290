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

__all__ = ["ExperimentConfig", "random_like", "run_experiment"]


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
    model : str
        Checkpoint id or folder.
    n_per_label : int
        Positives per pathology in the balanced subset.
    test_size : float
        Fraction of patients held out for evaluation.
    train_sizes : list of int, optional
        Training-set sizes for the learning-curve comparison.
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


def _heads(config, prompt_embeddings):
    """The classifiers compared, by name; fusion heads come with their control."""
    from .classifiers import BaselineClassifier, ConcatFusionClassifier, WeightedSumClassifier
    from .zeroshot import ZeroShotClassifier

    common = dict(
        hidden_sizes=tuple(config.hidden_sizes),
        max_epochs=config.max_epochs,
        batch_size=config.batch_size,
        device=config.device,
        random_state=config.random_state,
    )
    control = random_like(prompt_embeddings, config.random_state)
    return {
        "zero-shot": ZeroShotClassifier(
            config.model, device=config.device, dtype=config.dtype
        ),
        "baseline": BaselineClassifier(**common),
        "concat-fusion": ConcatFusionClassifier(prompts=prompt_embeddings, **common),
        "concat-fusion (random prompts)": ConcatFusionClassifier(prompts=control, **common),
        "weighted-sum": WeightedSumClassifier(prompts=prompt_embeddings, **common),
        "weighted-sum (random prompts)": WeightedSumClassifier(prompts=control, **common),
    }


def _evaluate(Y_test, proba):
    """Per-label report and summary metrics (a dict) of one model on the test set.

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
        report, summary = multilabel_report(Y_test, proba)
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
    zero-shot floor, the three heads and the random-prompt controls on the
    training embeddings; evaluate on the held-out patients.

    Files written to ``config.out_dir``:

    - ``metrics.csv`` / ``metrics.md``: one row per model, summary metrics;
    - ``per_label_roc_auc.csv``: ROC AUC per model and pathology;
    - ``roc_curves.png``: one panel per pathology, every model overlaid;
    - ``train_sizes.csv`` / ``train_sizes.md`` / ``train_sizes.png`` when
      ``config.train_sizes`` is given;
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
    import pandas as pd
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    from .datasets import balanced_subset, load_nih_chestxray14, train_test_split_by_patient
    from .embedders import SigLIPImageEmbedder
    from ._validation import check_label_matrix
    from .metrics import _undefined_message
    from .persistence import save
    from .plotting import plot_roc_curves
    from .prompts import PromptEnsembleEmbedder

    out_dir = Path(config.out_dir)
    (out_dir / "models").mkdir(parents=True, exist_ok=True)
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
    paths = data.paths.iloc[indices]
    Y = data.Y.iloc[indices]
    groups = data.groups.iloc[indices]
    log(f"Balanced subset: {len(indices)} images; positives per label: "
        + ", ".join(f"{k} {v}" for k, v in counts["achieved"].items()))

    train, test = train_test_split_by_patient(
        np.arange(len(paths)), groups=groups, test_size=config.test_size,
        random_state=config.random_state,
    )
    split = np.where(np.isin(np.arange(len(paths)), test), "test", "train")
    Y.assign(path=paths.values, patient_id=groups.values, split=split).to_csv(
        out_dir / "subset.csv"
    )

    embedder = SigLIPImageEmbedder(
        config.model, device=config.device, dtype=config.dtype,
        batch_size=config.embed_batch_size, cache=cache,
    )
    X = embedder.fit_transform(list(paths))
    log(f"Embeddings: {X.shape[0]} images x {X.shape[1]} dimensions "
        f"({embedder.n_embedded_} computed, {embedder.n_cached_} from the cache {cache}).")

    prompts = PromptEnsembleEmbedder(config.model, device=config.device, dtype=config.dtype)
    prompt_embeddings = prompts.fit_transform(list(Y.columns))
    heads = _heads(config, prompt_embeddings)

    X_train, X_test = X[train], X[test]
    Y_train, Y_test = Y.iloc[train], Y.iloc[test]
    groups_test = groups.iloc[test]
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

    if config.train_sizes:
        _train_size_curve(config, heads, X_train, Y_train, X_test, Y_test, out_dir, log)
    return metrics


def _file_name(model_name):
    """``"weighted-sum (random prompts)"`` -> ``"weighted-sum-random-prompts"``."""
    return re.sub(r"[^0-9A-Za-z]+", "-", model_name).strip("-")


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

