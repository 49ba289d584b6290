"""The trained heads as scikit-learn estimators: learning, targets, training options,
reproducibility, persistence, bad input and model selection from images."""

import io

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import hamming_loss, make_scorer, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from skclipxray.classifiers import (
    BaselineClassifier,
    ConcatFusionClassifier,
    WeightedSumClassifier,
)
from skclipxray.labels import NIH_PATHOLOGIES
from skclipxray.testing import HashPromptEmbedder

SMALL = dict(hidden_sizes=(32,), max_epochs=10, batch_size=32, lr=0.01, random_state=2)


HEADS = {
    "baseline": lambda **kw: BaselineClassifier(**kw),
    "concat": lambda **kw: ConcatFusionClassifier(
        HashPromptEmbedder(), fusion_hidden_sizes=(16,), **kw
    ),
    "weighted_sum": lambda **kw: WeightedSumClassifier(HashPromptEmbedder(), **kw),
}


# Small networks: extra torch threads only add synchronisation cost.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _planted(n=3000, d=32, n_labels=4, seed=0):
    """Features, labels drawn from a known logistic model of the features, and the logits."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    weights = rng.normal(size=(d, n_labels)) * (rng.random((d, n_labels)) < 0.25)
    logits = X @ weights
    logits = 2.5 * logits / logits.std(axis=0)
    Y = (rng.random((n, n_labels)) < 1 / (1 + np.exp(-logits))).astype(int)
    return X, Y, logits


@pytest.fixture(scope="module")
def planted():
    return _planted()


@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    Y = pd.DataFrame(
        {"Mass": X[:, 0] > 0, "Nodule": X[:, 1] > 0.5, "Edema": X[:, 2] < 0}
    ).astype(int)
    return X, Y


# --------------------------------------------------------------------- learning
@pytest.mark.parametrize("name", HEADS)
def test_learns_a_planted_signal_and_not_shuffled_labels(name, planted):
    X, Y, logits = planted
    train, test = slice(0, 2000), slice(2000, None)
    truth = roc_auc_score(Y[test], logits[test], average="macro")
    params = dict(hidden_sizes=(64, 32), max_epochs=20, lr=3e-3, random_state=0)

    names = [f"label{j}" for j in range(Y.shape[1])]
    head = HEADS[name](**params).fit(X[train], pd.DataFrame(Y[train], columns=names))
    auroc = roc_auc_score(Y[test], head.predict_proba(X[test]), average="macro")
    assert auroc >= truth - 0.04, (auroc, truth)

    shuffled = Y[train][np.random.default_rng(1).permutation(2000)]
    head = HEADS[name](**params).fit(X[train], pd.DataFrame(shuffled, columns=names))
    auroc = roc_auc_score(Y[test], head.predict_proba(X[test]), average="macro")
    assert abs(auroc - 0.5) < 0.1, auroc


# ---------------------------------------------------------------------- targets
@pytest.mark.parametrize("name", HEADS)
def test_multilabel_dataframe(name, small_data):
    X, Y = small_data
    head = HEADS[name](**SMALL).fit(X, Y)
    assert head.task_ == "multilabel"
    assert list(head.labels_) == ["Mass", "Nodule", "Edema"]
    proba = head.predict_proba(X)
    assert proba.shape == (120, 3)
    assert ((proba >= 0) & (proba <= 1)).all()
    predicted = head.predict(X)
    assert predicted.shape == (120, 3)
    assert set(np.unique(predicted)) <= {0, 1}
    np.testing.assert_array_equal(predicted, (proba >= 0.5).astype(int))
    assert len(head.classes_) == 3 and all(list(c) == [0, 1] for c in head.classes_)
    assert head.n_features_in_ == 5
    assert len(head.net_.history) == head.n_iter_ == 10


def test_multilabel_array_without_names_and_bool_y(small_data):
    X, Y = small_data
    head = BaselineClassifier(**SMALL).fit(X, Y.to_numpy().astype(bool))
    assert list(head.labels_) == [0, 1, 2]
    assert head.predict(X).dtype == bool


def test_feature_names_of_a_dataframe(small_data):
    X, Y = small_data
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    head = BaselineClassifier(**SMALL).fit(frame, Y)
    assert list(head.feature_names_in_) == list(frame.columns)


@pytest.mark.parametrize("name", HEADS)
def test_binary_1d_y(name, small_data):
    X, _ = small_data
    y = np.where(X[:, 0] > 0, "sick", "healthy")
    head = HEADS[name](**SMALL).fit(X, y)
    assert head.task_ == "binary"
    assert list(head.classes_) == ["healthy", "sick"]
    proba = head.predict_proba(X)
    assert proba.shape == (120, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(head.predict(X), head.classes_[(proba[:, 1] >= 0.5).astype(int)])
    assert (head.predict(X) == y).mean() > 0.9
    assert isinstance(head.net_.criterion_, torch.nn.BCEWithLogitsLoss)


@pytest.mark.parametrize("name", HEADS)
def test_multiclass_1d_y(name, small_data):
    X, _ = small_data
    y = np.digitize(X[:, 0], [-0.5, 0.5])  # 3 classes
    head = HEADS[name](**SMALL).fit(X, y)
    assert head.task_ == "multiclass"
    proba = head.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(head.predict(X), proba.argmax(axis=1))
    assert isinstance(head.net_.criterion_, torch.nn.CrossEntropyLoss)


def test_column_vector_y_is_1d(small_data):
    X, Y = small_data
    with pytest.warns(Warning, match="column-vector y"):
        head = BaselineClassifier(**SMALL).fit(X, Y[["Mass"]])
    assert head.task_ == "binary"
    assert head.predict_proba(X).shape == (120, 2)


# ----------------------------------------------------------- training options
def test_threshold_per_label_applies_at_predict_time(small_data):
    X, Y = small_data
    head = BaselineClassifier(**SMALL).fit(X, Y)
    proba = head.predict_proba(X)
    threshold = np.array([0.2, 0.5, 0.8])
    head.set_params(threshold=threshold)  # no refit needed
    np.testing.assert_array_equal(head.predict(X), (proba >= threshold).astype(int))
    head.set_params(threshold=[0.5, 0.5])
    with pytest.raises(ValueError, match="threshold has 2 values but y has 3 labels"):
        head.predict(X)
    head.set_params(threshold=1.5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        head.predict(X)


def test_threshold_by_label_name(small_data):
    X, Y = small_data
    head = BaselineClassifier(**SMALL).fit(X, Y)
    proba = head.predict_proba(X)
    head.set_params(threshold={"Edema": 0.8, "Mass": 0.2, "Nodule": 0.5})
    np.testing.assert_array_equal(head.predict(X), (proba >= [0.2, 0.5, 0.8]).astype(int))
    head.set_params(threshold=pd.Series({"Mass": 0.2, "Nodule": 0.5}))
    with pytest.raises(ValueError, match=r"threshold has no value for the label\(s\) \['Edema'\]"):
        head.predict(X)


def test_the_fused_optimizer_is_used_where_torch_has_it(monkeypatch):
    from skclipxray._heads.net import fused_optimizer_supported

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for version, on_cpu in [("2.3.1", False), ("2.4.0", True), ("2.13.0+cpu", True)]:
        monkeypatch.setattr(torch, "__version__", version)
        assert fused_optimizer_supported(cpu) is on_cpu
        assert fused_optimizer_supported(cuda)


def test_pos_weight_balanced_and_given(small_data):
    X, Y = small_data
    head = BaselineClassifier(**SMALL, pos_weight="balanced").fit(X, Y)
    positives = Y.to_numpy().sum(axis=0)
    expected = (len(Y) - positives) / positives
    np.testing.assert_allclose(head.net_.criterion_.pos_weight.numpy(), expected, rtol=1e-6)

    head = BaselineClassifier(**SMALL, pos_weight=[1.0, 2.0, 3.0]).fit(X, Y)
    np.testing.assert_allclose(head.net_.criterion_.pos_weight.numpy(), [1, 2, 3])

    with pytest.raises(ValueError, match=r"pos_weight has shape \(2,\).*\(3,\)"):
        BaselineClassifier(**SMALL, pos_weight=[1.0, 2.0]).fit(X, Y)
    with pytest.raises(ValueError, match="'pos_weight' parameter.*Got 'often' instead"):
        BaselineClassifier(**SMALL, pos_weight="often").fit(X, Y)


def test_pos_weight_balanced_multiclass_uses_class_weights(small_data):
    X, _ = small_data
    y = np.digitize(X[:, 0], [-1.0, 0.5])
    head = BaselineClassifier(**SMALL, pos_weight="balanced").fit(X, y)
    expected = compute_class_weight("balanced", classes=np.unique(y), y=y)
    np.testing.assert_allclose(head.net_.criterion_.weight.numpy(), expected, rtol=1e-6)


def test_adamw_and_cosine_schedule(small_data):
    X, Y = small_data
    head = BaselineClassifier(**{**SMALL, "max_epochs": 8, "lr": 0.01}, weight_decay=0.05).fit(X, Y)
    optimizer = head.net_.optimizer_
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05
    # One learning rate per epoch, following cosine annealing over max_epochs.
    expected = 0.01 * (1 + np.cos(np.pi * np.arange(8) / 8)) / 2
    np.testing.assert_allclose(head.net_.history[:, "event_lr"], expected, rtol=1e-6)


def test_plateau_schedule_lowers_the_rate_when_the_loss_stalls(small_data):
    X, Y = small_data
    # A full batch and a vanishing learning rate: the training loss cannot improve.
    head = BaselineClassifier(
        **{**SMALL, "max_epochs": 8, "batch_size": 200, "lr": 1e-12}, dropout=0.0,
        noise_std=0.0, lr_schedule="plateau",
    ).fit(X, Y)
    lrs = head.net_.history[:, "event_lr"]
    assert lrs[0] == 1e-12
    assert lrs[-1] == pytest.approx(1e-13)


def test_constant_schedule(small_data):
    X, Y = small_data
    head = BaselineClassifier(**SMALL, lr_schedule="constant").fit(X, Y)
    assert head.net_.optimizer_.param_groups[0]["lr"] == SMALL["lr"]


def test_early_stopping_on_an_unstratified_validation_split(planted):
    X, Y, _ = planted
    shuffled = Y[:600][np.random.default_rng(0).permutation(600)]
    head = BaselineClassifier(
        hidden_sizes=(128,), max_epochs=100, lr=0.01, early_stopping=True,
        validation_fraction=0.2, n_iter_no_change=3, random_state=0,
    ).fit(X[:600], shuffled)
    assert head.net_.train_split.stratified is False
    history = head.net_.history
    assert head.n_iter_ < 100
    assert history[-1, "train_batch_count"] == 480 // 64 + 1  # 80% of the rows
    best = int(np.argmin(history[:, "valid_loss"]))
    assert head.n_iter_ == best + 1 + 3


def test_callbacks_parameter_is_not_changed_by_fit(small_data):
    from skorch.callbacks import EpochScoring

    X, Y = small_data
    scoring = EpochScoring(lambda net, X, y: 1.0, name="one", on_train=True)
    head = BaselineClassifier(**SMALL, callbacks=[("one", scoring)]).fit(X, Y)
    assert head.net_.history[-1, "one"] == 1.0
    assert head.callbacks[0][1] is scoring
    assert not hasattr(scoring, "best_score_")


def test_verbose_prints_the_epoch_table(small_data, capsys):
    X, Y = small_data
    BaselineClassifier(**{**SMALL, "max_epochs": 2}).fit(X, Y)
    assert capsys.readouterr().out == ""
    BaselineClassifier(**{**SMALL, "max_epochs": 2}, verbose=1).fit(X, Y)
    out = capsys.readouterr().out
    assert "train_loss" in out and len(out.strip().splitlines()) == 4  # header, rule, 2 epochs


# ---------------------------------------------------------- prompts (fusion)
@pytest.mark.parametrize("cls", [ConcatFusionClassifier, WeightedSumClassifier])
def test_fusion_prompts_from_a_transformer(cls, small_data):
    X, Y = small_data
    embedder = HashPromptEmbedder()
    head = cls(embedder, **SMALL).fit(X, Y)
    assert not hasattr(embedder, "labels_")  # cloned, never fitted in place
    expected = HashPromptEmbedder().fit_transform(["Mass", "Nodule", "Edema"])
    np.testing.assert_allclose(head.prompt_embeddings_, expected, rtol=1e-6)
    assert head.prompt_embeddings_.dtype == np.float32
    module = head.net_.module_
    np.testing.assert_allclose(module.prompt_vector.numpy(), expected.ravel(), rtol=1e-6)

    # 1-D y: the class names, as strings, name the prompts.
    y = np.where(X[:, 0] > 0, "sick", "healthy")
    head = cls(embedder, **SMALL).fit(X, y)
    expected = HashPromptEmbedder().fit_transform(["healthy", "sick"])
    np.testing.assert_allclose(head.prompt_embeddings_, expected, rtol=1e-6)


def test_fusion_prompts_array_and_unnamed_y(small_data):
    X, Y = small_data
    prompts = np.random.default_rng(0).normal(size=(3, 4))
    head = WeightedSumClassifier(prompts, **SMALL).fit(X, Y.to_numpy())
    np.testing.assert_allclose(head.prompt_embeddings_, prompts, rtol=1e-6)
    assert list(head.labels_) == [0, 1, 2]

    # A y without names: the transformer's own labels name the columns.
    embedder = HashPromptEmbedder(default_labels=("x", "y", "z"))
    head = ConcatFusionClassifier(embedder, **SMALL).fit(X, Y.to_numpy())
    assert list(head.labels_) == ["x", "y", "z"]


@pytest.mark.parametrize("cls", [ConcatFusionClassifier, WeightedSumClassifier])
def test_fusion_prompt_errors(cls, small_data):
    X, Y = small_data
    with pytest.raises(ValueError, match="needs prompts"):
        cls(**SMALL).fit(X, Y)
    with pytest.raises(ValueError, match="prompts has 14 rows but y has 3 labels"):
        cls(np.ones((14, 4)), **SMALL).fit(X, Y)
    with pytest.raises(ValueError, match=r"y has 3 labels but no column names, so the prompt "
                       r"embedder used its default labels, 5 labels \(a, b, c, \.\.\.\)\. "
                       r"Pass y as a DataFrame whose columns name the labels"):
        cls(HashPromptEmbedder(), **SMALL).fit(X, Y.to_numpy())
    nih = HashPromptEmbedder(default_labels=NIH_PATHOLOGIES)
    with pytest.raises(ValueError, match="the 14 NIH ChestX-ray14 pathologies "
                                         r"\(Atelectasis, Cardiomegaly, Effusion, \.\.\.\)"):
        cls(nih, **SMALL).fit(X, Y.to_numpy())
    with pytest.raises(ValueError, match="prompts has 3 rows but y has 2 classes"):
        cls(np.ones((3, 4)), **SMALL).fit(X, X[:, 0] > 0)
    with pytest.raises(ValueError, match="prompts contains NaN"):
        cls(np.full((3, 4), np.nan), **SMALL).fit(X, Y)


# ------------------------------------------------- reproducibility, persistence
@pytest.mark.parametrize("name", HEADS)
def test_same_random_state_same_predictions_bit_for_bit(name, small_data):
    X, Y = small_data
    params = {**SMALL, "early_stopping": True}
    global_state = torch.random.get_rng_state()
    first = HEADS[name](**params).fit(X, Y).predict_proba(X)
    # The caller's global RNG is left untouched by fit and predict.
    assert torch.equal(torch.random.get_rng_state(), global_state)
    torch.manual_seed(123)  # the global RNG does not matter
    second = HEADS[name](**params).fit(X, Y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    other = HEADS[name](**{**params, "random_state": 1}).fit(X, Y).predict_proba(X)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", HEADS)
def test_joblib_round_trip(name, small_data, tmp_path):
    X, Y = small_data
    head = HEADS[name](**SMALL).fit(X, Y)
    joblib.dump(head, tmp_path / "head.joblib")
    loaded = joblib.load(tmp_path / "head.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), head.predict(X))
    assert list(loaded.labels_) == list(head.labels_)
    assert len(loaded.net_.history) == len(head.net_.history)


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_a_head_fitted_on_a_gpu_predicts_on_a_cpu_only_machine(
    schedule, small_data, monkeypatch
):
    """Simulated: every tensor is written as a CUDA tensor, then read without CUDA."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to read CUDA tensors back on the CPU")
    from torch import serialization
    from skorch.exceptions import DeviceWarning

    X, Y = small_data
    head = WeightedSumClassifier(HashPromptEmbedder(), **SMALL, lr_schedule=schedule)
    head.fit(X, Y)
    expected = head.predict_proba(X)
    head.net_.device = "cuda"  # as after a fit on a GPU
    buffer = io.BytesIO()
    with monkeypatch.context() as patch:
        patch.setattr(serialization, "location_tag", lambda storage: "cuda:0")
        joblib.dump(head, buffer)
    buffer.seek(0)
    with pytest.warns(DeviceWarning):
        loaded = joblib.load(buffer)
    assert str(loaded.net_.device) == "cpu"
    assert loaded.net_.module_.prompt_vector.device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def test_clone_and_params():
    head = ConcatFusionClassifier(HashPromptEmbedder(), hidden_sizes=(8,), lr=0.1)
    params = head.get_params()
    for name in [
        "hidden_sizes", "dropout", "noise_std", "lr", "weight_decay", "max_epochs",
        "batch_size", "lr_schedule", "early_stopping", "pos_weight", "threshold",
        "device", "random_state", "verbose", "prompts", "prompts__dim",
    ]:
        assert name in params
    copy = clone(head)
    assert copy.get_params()["hidden_sizes"] == (8,)
    assert copy.prompts is not head.prompts
    pipe = make_pipeline(StandardScaler(), BaselineClassifier())
    pipe.set_params(baselineclassifier__hidden_sizes=(16,), baselineclassifier__dropout=0.1)
    assert pipe[-1].hidden_sizes == (16,) and pipe[-1].dropout == 0.1


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("values", [(0, 2), (-1, 1), (1, 2)])
def test_a_2d_y_of_two_values_other_than_0_and_1_is_refused(name, values, small_data):
    # scikit-learn calls any two-valued integer matrix "multilabel-indicator";
    # predict would then answer in 0/1, not in the values given.
    X, Y = small_data
    coded = Y.replace({0: values[0], 1: values[1]})
    with pytest.raises(ValueError, match=r"must hold only 0 and 1 \(or booleans\); "
                                         rf"column 'Mass' holds \[{values[0]}, {values[1]}\]"):
        HEADS[name](**SMALL).fit(X, coded)
    with pytest.raises(ValueError, match=r"column 0 holds"):
        HEADS[name](**SMALL).fit(X, coded.to_numpy())


def test_bad_input_errors(small_data):
    X, Y = small_data
    head = BaselineClassifier(**SMALL)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        head.fit(bad, Y)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        head.fit(bad, Y)
    wrong = Y.copy()
    wrong.loc[7, "Nodule"] = 2
    with pytest.raises(ValueError, match=r"only 0 and 1.*column 'Nodule' holds \[0, 1, 2\]"):
        head.fit(X, wrong)
    with pytest.raises(ValueError, match="only 0 and 1"):
        head.fit(X, Y.to_numpy() * 0.5)
    with pytest.raises(ValueError, match="one class"):
        head.fit(X, np.ones(len(X)))
    with pytest.raises(ValueError, match="Unknown label type"):
        head.fit(X, X[:, 0])

    head.fit(X, Y)
    with pytest.raises(ValueError, match="X has 4 features, but BaselineClassifier is expecting 5"):
        head.predict(X[:, :4])
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        head.predict_proba(bad)


@pytest.mark.parametrize("params, match", [
    # scikit-learn's parameter validation words the first four.
    ({"lr_schedule": "linear"}, "The 'lr_schedule' parameter of BaselineClassifier must "
                                r"be a str among \{.*'plateau'.*\}. Got 'linear' instead"),
    ({"dropout": 1.0}, r"'dropout' parameter of BaselineClassifier must be a float in "
                       r"the range \[0.0, 1.0\). Got 1.0 instead"),
    ({"max_epochs": 0}, r"'max_epochs' parameter of BaselineClassifier must be an int in "
                        r"the range \[1, inf\). Got 0 instead"),
    ({"early_stopping": "yes"}, "'early_stopping' parameter of BaselineClassifier must be "
                                "an instance of 'bool'"),
    ({"hidden_sizes": (8, -1)}, "hidden_sizes=.*positive integers"),
    ({"threshold": [0.5, 0.5]}, "threshold has 2 values but y has 3 labels"),
    ({"device": "tpu"}, "device='tpu'"),
])
def test_bad_parameters_are_caught_at_fit(params, match, small_data):
    X, Y = small_data
    head = BaselineClassifier(**{**SMALL, **params})  # no check in __init__
    with pytest.raises((ValueError, TypeError), match=match):
        head.fit(X, Y)


def test_one_sample_is_refused(small_data):
    X, Y = small_data
    with pytest.raises(ValueError, match="got 1 sample"):
        BaselineClassifier(**SMALL).fit(X[:1], Y[:1])


def test_a_last_batch_of_one_sample_is_dropped(small_data):
    X, Y = small_data
    # 65 rows, batches of 32: 32 + 32 + 1; batch norm cannot train on the last.
    head = BaselineClassifier(**SMALL).fit(X[:65], Y[:65])
    assert head.net_.history[-1, "train_batch_count"] == 2


def test_every_submodule_trains_on_training_batches_and_not_on_validation(planted):
    # The net switches modes only on a change: every layer must still follow.
    from skorch.callbacks import Callback

    class RecordModes(Callback):
        def initialize(self):
            self.seen = []
            return self

        def on_batch_end(self, net, batch=None, training=None, **kwargs):
            modes = {module.training for module in net.module_.modules()}
            self.seen.append((training, modes))

    X, Y, _ = planted
    recorder = RecordModes()
    head = BaselineClassifier(
        **{**SMALL, "max_epochs": 2}, early_stopping=True,
        callbacks=[("modes", recorder)],
    ).fit(X[:300], Y[:300])
    seen = dict(head.net_.callbacks_)["modes"].seen
    assert {training for training, _ in seen} == {True, False}
    assert all(modes == {training} for training, modes in seen)
    head.predict_proba(X[:5])
    assert not any(module.training for module in head.net_.module_.modules())


# ------------------------------------------------- model selection from images
def _write_images(folder, n=24):
    """Small PNGs: label "Effusion" = bright image, label "Mass" = bright left half."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, rows = [], []
    for i in range(n):
        effusion, mass = i % 2, (i // 2) % 2
        pixels = rng.normal(70 + 110 * effusion, 10, size=(40, 40))
        if mass:
            pixels[:, :20] += 60
        path = folder / f"img{i:02d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(path)
        paths.append(str(path))
        rows.append({"Effusion": effusion, "Mass": mass})
    return paths, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _write_images(tmp_path_factory.mktemp("images"))


def _image_pipeline(tiny_model_dir, head):
    from skclipxray.embedders import SigLIPImageEmbedder

    return Pipeline([
        ("embed", SigLIPImageEmbedder(model=tiny_model_dir, device="cpu", progress=False)),
        ("scale", StandardScaler()),
        ("clf", head),
    ])


def test_grid_search_over_hidden_sizes_from_images(tiny_model_dir, images):
    paths, Y = images
    pipe = _image_pipeline(
        tiny_model_dir, BaselineClassifier(max_epochs=10, batch_size=8, random_state=2)
    )
    grid = {"clf__hidden_sizes": [(16,), (32, 16)]}
    cv = KFold(3)
    search = GridSearchCV(pipe, grid, scoring="roc_auc", cv=cv).fit(paths, Y)

    assert search.best_params_["clf__hidden_sizes"] in grid["clf__hidden_sizes"]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # A score recomputed by hand: macro AUROC over the labels, from predict_proba.
    train, test = next(cv.split(paths))
    model = clone(pipe).set_params(clf__hidden_sizes=(32, 16))
    model.fit([paths[i] for i in train], Y.iloc[train])
    proba = model.predict_proba([paths[i] for i in test])
    expected = roc_auc_score(Y.iloc[test], proba, average="macro")
    assert search.cv_results_["split0_test_score"][1] == pytest.approx(expected)
    best = search.best_estimator_
    assert best.predict_proba(paths).shape == (24, 2)
    assert list(best[-1].labels_) == ["Effusion", "Mass"]


def test_cross_validate_with_patient_groups_from_images(tiny_model_dir, images):
    from skclipxray.prompts import PromptEnsembleEmbedder

    paths, Y = images
    groups = np.arange(len(paths)) // 2  # two images per patient
    head = WeightedSumClassifier(
        PromptEnsembleEmbedder(tiny_model_dir, device="cpu"),
        hidden_sizes=(16,), max_epochs=10, batch_size=8, random_state=0,
    )
    pipe = _image_pipeline(tiny_model_dir, head)
    hamming = make_scorer(hamming_loss, greater_is_better=False)
    result = cross_validate(
        pipe, paths, Y, groups=groups, cv=GroupKFold(3), scoring=hamming,
        return_indices=True, return_estimator=True,
    )
    assert result["test_score"].shape == (3,)
    for fold, (train, test) in enumerate(
        zip(result["indices"]["train"], result["indices"]["test"])
    ):
        assert not set(groups[train]) & set(groups[test])  # no patient on both sides
        fitted = result["estimator"][fold]
        assert fitted[-1].prompt_embeddings_.shape == (2, 32)
        predicted = fitted.predict([paths[i] for i in test])
        expected = hamming_loss(Y.iloc[test], predicted)
        assert result["test_score"][fold] == pytest.approx(-expected)


# --------------------------------------------- files saved by earlier versions
@pytest.fixture(scope="module")
def saved_by_0_1(data_dir):
    """What skclipxray 0.1 saved (tests/data/make_heads_fixture.py) and predicted."""
    from skclipxray.persistence import load

    with np.load(data_dir / "heads-0.1.npz") as outputs:
        return load(data_dir / "heads-0.1.skops"), dict(outputs)


@pytest.mark.parametrize("name", [
    "baseline", "baseline_multiclass", "concat", "weighted_sum", "zero_shot",
])
def test_a_file_saved_by_version_0_1_loads_and_predicts_the_same(name, saved_by_0_1):
    estimators, outputs = saved_by_0_1
    estimator = estimators[name]
    # skops files name the class by its import path.
    assert type(estimator).__module__ in {"skclipxray.classifiers", "skclipxray.zeroshot"}
    X = outputs["X_zero_shot" if name == "zero_shot" else "X"]
    # Another CPU may round differently than the one that made the file.
    np.testing.assert_allclose(
        estimator.predict_proba(X), outputs[f"{name}_proba"], rtol=1e-5, atol=1e-6
    )
    # The same decisions, but for probabilities within rounding of the threshold.
    proba = outputs[f"{name}_proba"]
    clear = np.abs(proba - 0.5) > 1e-4
    if proba.ndim == 2 and estimator.predict(X).ndim == 1:
        clear = clear.all(axis=1)
    np.testing.assert_array_equal(
        estimator.predict(X)[clear], outputs[f"{name}_predict"][clear]
    )
    # Parameters added since 0.1 take their defaults.
    params = clone(estimator).get_params(deep=False)
    assert params.keys() == type(estimator)().get_params(deep=False).keys()
    assert repr(estimator).startswith(type(estimator).__name__)


def test_a_prompt_embedder_saved_by_version_0_1_loads(saved_by_0_1):
    estimators, outputs = saved_by_0_1
    embedder = estimators["prompts"]
    np.testing.assert_array_equal(embedder.transform(None), outputs["prompts_embeddings"])
    assert embedder.labels_ == ["Mass", "Nodule", "Effusion"]
    assert clone(embedder).get_params() == embedder.get_params()
    # A head given the embedder fitted from a file uses its embeddings.
    assert estimators["weighted_sum"].prompts.get_params()["model"] == "tiny-siglip"
