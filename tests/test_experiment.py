"""run_experiment: undefined metrics said once, plainly; the label-efficiency sweep."""

import itertools
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.exceptions import UndefinedMetricWarning

import skclipxray.datasets
from skclipxray.experiment import ExperimentConfig, run_experiment
from skclipxray.labels import NIH_PATHOLOGIES
from skclipxray.metrics import multilabel_report
from skclipxray.testing import make_synthetic_nih
from skclipxray.thresholds import MultilabelTunedThresholdClassifierCV

#: The images each model's operating point was tuned on, in the small run.
TUNED_ON = []

SHOTS = [1, 2, "all"]
N_DRAWS = 2
MODELS = [
    "zero-shot",
    "baseline",
    "concat-fusion",
    "concat-fusion (random prompts)",
    "weighted-sum",
    "weighted-sum (random prompts)",
    "text-anchored",
    "text-anchored (random prompts)",
    "tip-adapter",
    "tip-adapter (random prompts)",
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_model_dir):
    """An experiment whose test set is too small to define every ROC AUC.

    Its training-set curve and its label-efficiency sweep evaluate every model
    again on the same test set. Every call of ``balanced_subset`` is recorded
    (the label matrix it drew from, its arguments and the rows it drew).
    """
    root = tmp_path_factory.mktemp("nih")
    make_synthetic_nih(root, n_images=60, image_size=32, prevalence=0.15)
    out_dir = root / "results"
    config = ExperimentConfig(
        nih_root=str(root), out_dir=str(out_dir), model=str(tiny_model_dir),
        n_per_label=6, train_sizes=[10], shots=SHOTS, n_draws=N_DRAWS,
        hidden_sizes=(16,), max_epochs=2, device="cpu",
    )
    draws = []
    balanced_subset = skclipxray.datasets.balanced_subset
    tuning_fit = MultilabelTunedThresholdClassifierCV.fit
    TUNED_ON.clear()

    def recording_tuning(self, X, y, **kwargs):
        TUNED_ON.append(list(y.index))
        return tuning_fit(self, X, y, **kwargs)

    def recording(Y, n_per_label, **kwargs):
        indices, summary = balanced_subset(Y, n_per_label, **kwargs)
        draws.append((Y, n_per_label, kwargs.get("random_state"), indices))
        return indices, summary

    messages = []
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught, pytest.MonkeyPatch.context() as mp:
        mp.setattr(skclipxray.datasets, "balanced_subset", recording)
        mp.setattr(MultilabelTunedThresholdClassifierCV, "fit", recording_tuning)
        warnings.simplefilter("always")
        run_experiment(config, log=messages.append)
        warnings.warn("a warning of the user's own code", UserWarning)
    assert warnings.filters == filters
    subset = pd.read_csv(out_dir / "subset.csv", index_col=0)
    return messages, caught, subset[subset["split"] == "test"], out_dir, subset, draws


def test_undefined_roc_auc_is_said_once_with_the_labels_and_why(small_run):
    messages, caught, test, *_ = small_run
    no_positive = [label for label in NIH_PATHOLOGIES if test[label].max() == 0]
    no_negative = [label for label in NIH_PATHOLOGIES if test[label].min() == 1]
    n_undefined = len(no_positive) + len(no_negative)
    assert n_undefined > 0  # the case this test is about

    said = [m for m in messages if "undefined" in m]
    assert len(said) == 1
    expected = f"ROC AUC is undefined (NaN) for {n_undefined} of 14 labels: "
    expected += f"the test set ({len(test)} images) has "
    expected += " and ".join(
        f"no {kind} example of {', '.join(names)}"
        for kind, names in (("positive", no_positive), ("negative", no_negative)) if names
    )
    assert said[0].startswith(expected + ".")
    assert said[0].endswith(f"(ROC AUC: mean of {14 - n_undefined} labels).")
    assert not [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]


def test_warnings_outside_the_metrics_are_left_alone(small_run):
    _, caught, test, *_ = small_run
    assert "a warning of the user's own code" in [str(w.message) for w in caught]
    # The user's own calls still warn.
    with pytest.warns(UndefinedMetricWarning, match="ROC AUC is undefined"):
        multilabel_report(test[list(NIH_PATHOLOGIES)], test[list(NIH_PATHOLOGIES)] * 0.5)


def _sweep_draws(small_run):
    """The recorded draws of the sweep: every call after the experiment's own subset."""
    *_, draws = small_run
    return draws[1:]


def test_the_sweep_draws_from_the_training_patients_only(small_run):
    *_, subset, _ = small_run
    draws = _sweep_draws(small_run)
    numbers = [k for k in SHOTS if k != "all"]
    assert [k for _, k, _, _ in draws] == [k for k in numbers for _ in range(N_DRAWS)]
    train = subset[subset["split"] == "train"]
    test_patients = set(subset.loc[subset["split"] == "test", "patient_id"])
    for Y, _, _, indices in draws:
        assert sorted(Y.index) == sorted(train.index)  # the pool is the training set
        drawn = subset.loc[Y.index[indices], "patient_id"]
        assert len(drawn) > 0
        assert not set(drawn) & test_patients


def test_each_draw_has_its_positives_and_its_own_seed(small_run):
    draws = _sweep_draws(small_run)
    for Y, k, _, indices in draws:
        available = Y.sum(axis=0)
        achieved = Y.iloc[indices].sum(axis=0)
        assert (achieved >= np.minimum(k, available)).all(), k
    # Draw d has the same seed for every number of positives; draws differ.
    seeds = {(k, draw): seed for draw, (_, k, seed, _) in zip(itertools.cycle(range(N_DRAWS)),
                                                              draws)}
    for draw in range(N_DRAWS):
        assert len({seed for (_, d), seed in seeds.items() if d == draw}) == 1
    assert len(set(seeds.values())) == N_DRAWS


def test_label_efficiency_table_has_one_row_per_shots_and_model(small_run):
    *_, out_dir, subset, _ = small_run
    table = pd.read_csv(out_dir / "label_efficiency.csv")
    assert list(table.columns) == [
        "n_positives_per_label", "model", "n_draws", "roc_auc_macro_mean",
        "roc_auc_macro_sd", "roc_auc_macro_ci95_low", "roc_auc_macro_ci95_high",
        "n_train_mean", "positives_per_label_mean",
    ]
    expected = [(str(k), m) for k, m in itertools.product(SHOTS, MODELS)]
    assert list(zip(table["n_positives_per_label"].astype(str), table["model"])) == expected
    assert (table["n_draws"] == [1 if k == "all" else N_DRAWS for k, _ in expected]).all()
    assert table["roc_auc_macro_mean"].between(0, 1).all()
    all_rows = table[table["n_positives_per_label"] == "all"]
    assert (all_rows["n_train_mean"] == (subset["split"] == "train").sum()).all()

    markdown = (out_dir / "label_efficiency.md").read_text().splitlines()
    header = next(line for line in markdown if line.startswith("| positives per label"))
    assert header == "| " + " | ".join(["positives per label", "training images", *MODELS]) + " |"
    rows = [line.split(" | ")[0] for line in markdown[markdown.index(header) + 2:]]
    assert rows == [f"| {k}" for k in SHOTS]
    assert (out_dir / "label_efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_interval_across_draws_is_the_t_interval(small_run):
    *_, out_dir, _, _ = small_run
    table = pd.read_csv(out_dir / "label_efficiency.csv")
    draws = pd.read_csv(out_dir / "label_efficiency_draws.csv")
    assert len(draws) == len(MODELS) * (N_DRAWS * (len(SHOTS) - 1) + 1)
    for row in table.itertuples():
        auc = draws.loc[(draws["n_positives_per_label"] == row.n_positives_per_label)
                        & (draws["model"] == row.model), "roc_auc_macro"].to_numpy()
        assert len(auc) == row.n_draws
        np.testing.assert_allclose(row.roc_auc_macro_mean, np.mean(auc))
        if len(auc) == 1:
            assert np.isnan([row.roc_auc_macro_sd, row.roc_auc_macro_ci95_low,
                             row.roc_auc_macro_ci95_high]).all()
            continue
        sd = np.std(auc, ddof=1)
        half = stats.t.ppf(0.975, len(auc) - 1) * sd / np.sqrt(len(auc))
        np.testing.assert_allclose(row.roc_auc_macro_sd, sd, atol=1e-12)
        np.testing.assert_allclose(
            [row.roc_auc_macro_ci95_low, row.roc_auc_macro_ci95_high],
            [np.mean(auc) - half, np.mean(auc) + half], atol=1e-12,
        )


def test_the_main_comparison_has_every_model(small_run):
    *_, out_dir, _, _ = small_run
    metrics = pd.read_csv(out_dir / "metrics.csv", index_col="model")
    assert list(metrics.index) == MODELS


def test_each_text_head_has_a_control_with_random_prompts_and_the_same_scale(tiny_model_dir):
    from skclipxray import PromptEnsembleEmbedder
    from skclipxray.experiment import _heads

    prompts = PromptEnsembleEmbedder(str(tiny_model_dir), device="cpu").fit(["Mass", "Hernia"])
    config = ExperimentConfig(nih_root="", out_dir="", model=str(tiny_model_dir))
    heads = _heads(config, str(tiny_model_dir), prompts)
    assert list(heads) == MODELS
    text = prompts.embeddings_
    for name in ("concat-fusion", "weighted-sum", "text-anchored", "tip-adapter"):
        head = heads[name].get_params()
        control = heads[f"{name} (random prompts)"].get_params()
        np.testing.assert_array_equal(head["prompts"], text)
        assert control["prompts"].shape == text.shape
        assert not np.allclose(control["prompts"], text)
        np.testing.assert_allclose(np.linalg.norm(control["prompts"], axis=1),
                                   np.linalg.norm(text, axis=1), rtol=1e-5)
        same = {key: value for key, value in head.items() if key != "prompts"}
        assert same == {key: control[key] for key in same}, name
    for name in ("text-anchored", "tip-adapter"):
        params = heads[name].get_params()
        assert (params["logit_scale"], params["logit_bias"]) == (
            prompts.logit_scale_, prompts.logit_bias_)


def test_operating_points_are_tuned_on_validation_patients_of_the_training_split(small_run):
    *_, subset, _ = small_run
    assert len(TUNED_ON) == len(MODELS)
    assert all(rows == TUNED_ON[0] for rows in TUNED_ON)  # one split for every model
    validation = subset.loc[TUNED_ON[0]]
    assert (validation["split"] == "train").all()
    patients = set(validation["patient_id"])
    train = subset[subset["split"] == "train"]
    # Every training image of a validation patient is in the validation split.
    assert set(train.index[train["patient_id"].isin(patients)]) == set(TUNED_ON[0])
    assert 0 < len(validation) < len(train)


def test_operating_points_and_calibration_tables(small_run):
    *_, out_dir, subset, _ = small_run
    points = pd.read_csv(out_dir / "operating_points.csv")
    labels = [c for c in subset.columns if c not in ("path", "patient_id", "split")]
    assert list(points["model"].unique()) == MODELS
    assert len(points) == len(MODELS) * len(labels)
    test = subset[subset["split"] == "test"]
    support = points.groupby("label", sort=False)["support"].first()
    assert support.to_dict() == test[labels].sum().to_dict()
    defined = points.dropna(subset=["sensitivity_ci_low", "specificity_ci_low"])
    assert len(defined) > 0
    assert (defined["sensitivity_ci_low"] <= defined["sensitivity"] + 1e-12).all()
    assert (defined["sensitivity"] <= defined["sensitivity_ci_high"] + 1e-12).all()
    assert (defined["specificity_ci_low"] <= defined["specificity"] + 1e-12).all()
    assert points["threshold"].between(0, 1).all()
    # The validation sensitivity reaches the objective wherever it says so.
    reached = points[points["reached_on_validation"]]
    assert (reached["validation_sensitivity"] >= 0.9).all()
    calibration = pd.read_csv(out_dir / "calibration.csv")
    assert list(calibration.columns) == [
        "label", "model", "ece_before", "ece_after", "brier_before", "brier_after"
    ]
    assert len(calibration) == len(points)
    assert calibration[["ece_before", "ece_after"]].stack().between(0, 1).all()
    summary = pd.read_csv(out_dir / "operating_points_summary.csv", index_col="model")
    means = calibration.groupby("model", sort=False)[["ece_before", "ece_after"]].mean()
    np.testing.assert_allclose(summary.loc[MODELS, "ece_before_mean"], means.loc[MODELS, "ece_before"])
    np.testing.assert_allclose(summary.loc[MODELS, "ece_after_mean"], means.loc[MODELS, "ece_after"])
    assert "min_sensitivity 0.9" in (out_dir / "operating_points.md").read_text()
    for name in ("reliability.png", "reliability_calibrated.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("settings, message", [
    ({"operating_point": "sensitivity"}, "unknown objective 'sensitivity'"),
    ({"operating_point": ["min_sensitivity", 1.5]}, "must be a number in (0, 1]"),
    ({"calibration": "beta"}, "calibration must be one of"),
    ({"validation_size": 1.0}, "validation_size must be a fraction in (0, 1)"),
    ({"n_boot": 0}, "n_boot must be a positive int, got 0."),
])
def test_bad_operating_point_settings_are_refused_before_anything_runs(tmp_path, settings, message):
    out_dir = tmp_path / "never"
    config = ExperimentConfig(nih_root=str(tmp_path / "missing"), out_dir=str(out_dir), **settings)
    with pytest.raises(ValueError, match=re.escape(message)):
        run_experiment(config)
    assert not out_dir.exists()


@pytest.mark.parametrize("shots, n_draws, message", [
    ([0], 2, "shots must hold positive ints and 'all' (the whole training set), got 0."),
    ([1, "ALL"], 2, "got 'ALL'"),
    ([2.0], 2, "got 2.0"),
    ([1], 0, "n_draws must be a positive int, got 0."),
    (4, 2, "shots must be a list of positive ints and 'all', got 4."),
])
def test_bad_sweep_settings_are_refused_before_anything_runs(tmp_path, shots, n_draws, message):
    out_dir = tmp_path / "never"
    config = ExperimentConfig(nih_root=str(tmp_path / "missing"), out_dir=str(out_dir),
                              shots=shots, n_draws=n_draws)
    with pytest.raises(ValueError, match=re.escape(message)):
        run_experiment(config)
    assert not out_dir.exists()


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory, tiny_model_dir, tiny_clip_dir, tiny_dinov2_dir):
    """Three backbones (SigLIP, CLIP, image-only DINOv2) through one experiment, one cache."""
    root = tmp_path_factory.mktemp("nih-backbones")
    make_synthetic_nih(root, n_images=60, image_size=32, prevalence=0.15)
    out_dir = root / "results"
    models = [str(tiny_model_dir), str(tiny_clip_dir), str(tiny_dinov2_dir)]
    config = ExperimentConfig(
        nih_root=str(root), out_dir=str(out_dir), model=models, n_per_label=6, shots=[],
        hidden_sizes=(16,), max_epochs=2, device="cpu", n_boot=20,
    )
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = run_experiment(config, log=messages.append)
    return table, out_dir, models, messages


def test_backbones_are_compared_side_by_side(backbone_run):
    table, out_dir, models, messages = backbone_run
    names = [Path(m).name if Path(m).name != "checkpoint" else "/".join(Path(m).parts[-2:])
             for m in models]
    long = pd.read_csv(out_dir / "backbones.csv", index_col=["backbone", "model"])
    assert list(long.index.get_level_values("backbone").unique()) == names
    # Each backbone's own results are a whole experiment's, in its folder.
    for name in names:
        folder = out_dir / "backbones" / re.sub(r"[^0-9A-Za-z]+", "-", name).strip("-")
        own = pd.read_csv(folder / "metrics.csv", index_col="model")
        np.testing.assert_allclose(long.loc[name, "roc_auc_macro"].to_numpy(),
                                   own["roc_auc_macro"].to_numpy())
        assert (folder / "operating_points.csv").exists()
    # The image-only backbone runs the heads that need no text, and says so.
    assert list(long.loc[names[2]].index) == ["baseline", "linear probe"]
    assert any("image-only" in m for m in messages)
    assert "zero-shot" in long.loc[names[1]].index
    # CLIP has no bias, and Tip-Adapter no intercept: it is left out there.
    assert "tip-adapter" in long.loc[names[0]].index
    assert "tip-adapter" not in long.loc[names[1]].index
    report = (out_dir / "backbones.md").read_text()
    for metric in ("roc_auc_macro", "sensitivity_mean", "ece_after_mean"):
        assert f"(`{metric}`)" in report
        assert (out_dir / f"backbones_{metric}.png").read_bytes()[:4] == b"\x89PNG"
    np.testing.assert_allclose(table["roc_auc_macro"], long["roc_auc_macro"])


def test_a_cache_shared_by_the_backbones_serves_each_its_own(backbone_run):
    from skclipxray.cache import EmbeddingCache

    _, out_dir, models, _ = backbone_run
    subset = pd.read_csv(out_dir / "subset.csv", index_col=0)
    cache = EmbeddingCache(out_dir / "embeddings.sqlite")
    assert len(cache) == len(models) * len(subset)


@pytest.mark.parametrize("model, message", [
    ([], "model must be a checkpoint id or folder, or a list of them"),
    (["a", "a"], "model lists ['a'] more than once."),
])
def test_bad_model_lists_are_refused_before_anything_runs(tmp_path, model, message):
    out_dir = tmp_path / "never"
    config = ExperimentConfig(nih_root=str(tmp_path / "missing"), out_dir=str(out_dir), model=model)
    with pytest.raises(ValueError, match=re.escape(message)):
        run_experiment(config)
    assert not out_dir.exists()
