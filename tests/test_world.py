"""The synthetic vision-language world of skclipxray.testing."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.stats import multivariate_normal, norm
from sklearn.metrics import roc_auc_score

from skclipxray.labels import NIH_PATHOLOGIES
from skclipxray.testing import make_vision_language_world


def _cosines(world):
    X = world.X / np.linalg.norm(world.X, axis=1, keepdims=True)
    return X.astype(np.float64) @ world.prompts.T.astype(np.float64)


@pytest.fixture(scope="module")
def large():
    """A large draw of the default world, in a small embedding space."""
    return make_vision_language_world(60_000, n_features=64, random_state=0)


def test_shapes_and_types():
    world = make_vision_language_world(50, n_features=40, n_labels=5, random_state=0)
    assert world.X.shape == (50, 40) and world.X.dtype == np.float32
    assert isinstance(world.Y, pd.DataFrame)
    assert list(world.Y.columns) == list(NIH_PATHOLOGIES[:5]) == world.labels
    assert set(np.unique(world.Y.to_numpy())) <= {0, 1}
    assert world.prompts.shape == (5, 40) and world.prompts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(world.prompts, axis=1), 1, atol=1e-6)
    assert world.label_directions.shape == (5, 40)
    assert world.image_offset.shape == world.text_offset.shape == (40,)
    assert isinstance(world.logit_scale, float) and isinstance(world.logit_bias, float)


def test_default_world_is_nih_sized():
    world = make_vision_language_world(3, random_state=0)
    assert world.X.shape == (3, 768) and world.prompts.shape == (14, 768)
    assert world.labels == list(NIH_PATHOLOGIES)


def test_same_seeds_same_draw_and_world_seed_fixes_the_world():
    first = make_vision_language_world(30, n_features=40, random_state=3)
    again = make_vision_language_world(30, n_features=40, random_state=3)
    np.testing.assert_array_equal(first.X, again.X)
    pd.testing.assert_frame_equal(first.Y, again.Y)

    other_draw = make_vision_language_world(30, n_features=40, random_state=4)
    assert not np.array_equal(first.X, other_draw.X)
    np.testing.assert_array_equal(first.prompts, other_draw.prompts)
    np.testing.assert_array_equal(first.label_directions, other_draw.label_directions)
    assert first.logit_bias == other_draw.logit_bias

    other_world = make_vision_language_world(30, n_features=40, world_seed=1, random_state=3)
    assert not np.array_equal(first.prompts, other_world.prompts)


def test_alignment_changes_the_prompts_only():
    aligned = make_vision_language_world(20, n_features=40, random_state=0)
    unrelated = make_vision_language_world(20, n_features=40, alignment=0.0, random_state=0)
    np.testing.assert_array_equal(aligned.X, unrelated.X)
    assert not np.allclose(aligned.prompts, unrelated.prompts)


@pytest.mark.parametrize("alignment", [0.0, 0.35, 1.0, -0.5])
def test_prompt_minus_text_offset_is_at_cosine_alignment(alignment):
    world = make_vision_language_world(0, n_features=50, alignment=alignment)
    specific = world.prompts.astype(np.float64) - world.text_offset
    cosine = np.sum(specific * world.label_directions, axis=1) / np.linalg.norm(
        specific, axis=1
    )
    np.testing.assert_allclose(cosine, alignment, atol=1e-6)


def test_geometry_is_orthonormal_with_a_modality_gap(large):
    directions = large.label_directions
    np.testing.assert_allclose(directions @ directions.T, np.eye(14), atol=1e-12)
    np.testing.assert_allclose(directions @ large.image_offset, 0, atol=1e-12)
    np.testing.assert_allclose(large.image_offset @ large.text_offset, 0, atol=1e-12)
    # Prompts share a cone; images share another; across the two, cosine ~ 0.
    prompt_cosines = large.prompts @ large.prompts.T
    np.testing.assert_allclose(prompt_cosines[np.triu_indices(14, 1)], 0.8, atol=1e-6)
    X = large.X[:500] / np.linalg.norm(large.X[:500], axis=1, keepdims=True)
    assert (X[:250] @ X[250:].T).mean() > 0.6
    assert abs(_cosines(large).mean()) < 0.02


def test_image_norms_vary():
    varied = make_vision_language_world(2000, random_state=0)
    norms = np.linalg.norm(varied.X, axis=1)
    assert norms.std() / norms.mean() > 0.2  # log-normal with sd 0.25
    still = make_vision_language_world(2000, norm_spread=0.0, random_state=0)
    norms = np.linalg.norm(still.X, axis=1)
    assert norms.std() / norms.mean() < 0.05


def test_prevalences_are_the_requested_ones(large):
    observed = large.Y.mean().to_numpy()
    # Binomial standard errors of 60,000 draws: at most 0.0016.
    se = np.sqrt(large.prevalence * (1 - large.prevalence) / len(large.Y))
    np.testing.assert_array_less(np.abs(observed - large.prevalence), 4 * se)
    assert large.prevalence.min() < 0.005 < 0.15 < large.prevalence.max()  # Hernia, Infiltration


def test_labels_co_occur(large):
    Y = large.Y
    # Gaussian copula with latent correlation 0.56: the joint frequency of a
    # bivariate normal at the two thresholds.
    p = Y[["Pneumonia", "Edema"]].mean().to_numpy()
    expected = multivariate_normal([0, 0], [[1, 0.56], [0.56, 1]]).cdf(norm.ppf(p))
    observed = (Y["Pneumonia"] & Y["Edema"]).mean()
    assert observed > 4 * p.prod()  # far from independence
    assert abs(observed - expected) < 0.25 * expected
    # A pair left independent.
    independent = (Y["Hernia"] & Y["Mass"]).mean()
    assert independent < 2 * Y["Hernia"].mean() * Y["Mass"].mean() + 1e-3


def test_linear_probe_and_zero_shot_match_the_formulas(large):
    X = large.X / np.linalg.norm(large.X, axis=1, keepdims=True)
    frequent = [label for label, p in zip(large.labels, large.prevalence) if p > 0.02]
    Y = large.Y[frequent]
    rows = [large.labels.index(label) for label in frequent]
    oracle = roc_auc_score(Y, X @ large.label_directions[rows].T, average=None)
    zero_shot = roc_auc_score(Y, _cosines(large)[:, rows], average=None)
    np.testing.assert_allclose(oracle, norm.cdf(2.0 / np.sqrt(2)), atol=0.03)
    np.testing.assert_allclose(zero_shot, norm.cdf(0.35 * 2.0 / np.sqrt(2)), atol=0.03)


def test_unrelated_text_gives_chance_zero_shot():
    world = make_vision_language_world(40_000, n_features=64, alignment=0.0, random_state=1)
    frequent = [j for j, p in enumerate(world.prevalence) if p > 0.02]
    aurocs = roc_auc_score(world.Y.iloc[:, frequent], _cosines(world)[:, frequent],
                           average=None)
    assert abs(aurocs.mean() - 0.5) < 0.01
    np.testing.assert_allclose(aurocs, 0.5, atol=0.04)


def test_scale_and_bias_give_sensible_zero_shot_probabilities(large):
    logits = np.exp(large.logit_scale) * _cosines(large) + large.logit_bias
    np.testing.assert_allclose(logits.std(axis=0), 1, atol=0.1)
    np.testing.assert_allclose(expit(logits).mean(), large.prevalence.mean(), rtol=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_samples=-1), "n_samples"),
        (dict(n_samples=2.5), "n_samples"),
        (dict(n_samples=5, n_labels=15), "n_labels must be at most 14"),
        (dict(n_samples=5, n_labels=0), "n_labels"),
        (dict(n_samples=5, n_features=20), r"n_features must be an int >= 2 \* n_labels"),
        (dict(n_samples=5, alignment=1.5), "alignment"),
        (dict(n_samples=5, signal=[1.0, 2.0]), "signal must be a finite number or 14"),
        (dict(n_samples=5, signal=np.inf), "signal"),
        (dict(n_samples=5, norm_spread=-0.1), "norm_spread"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_vision_language_world(**kwargs)
