"""scikit-learn's common estimator checks, run on every public estimator.

To cover a new estimator, add a (small, fast) instance to ``ESTIMATORS`` and,
only for checks that genuinely cannot apply, an entry with the reason to
``EXPECTED_FAILED_CHECKS``. Estimators that read a checkpoint name
``CHECKPOINT``: each test points them to the tiny checkpoint of the session.

The embedders take a collection of images or of label names, not a numeric
matrix (their ``input_tags.two_d_array`` is False): ``parametrize_with_checks``
yields no check for them, since every check that needs data feeds a numeric
matrix, so they get the checks that need no data and the parameter
validation check, and their behaviour on their own input is tested in their
own test modules.
"""

import numpy as np
import pytest
from sklearn.utils import estimator_checks
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skclipxray import ImageEmbedder, SigLIPImageEmbedder
from skclipxray.calibration import MultilabelCalibratedClassifierCV
from skclipxray.classifiers import (
    BaselineClassifier,
    ConcatFusionClassifier,
    WeightedSumClassifier,
)
from skclipxray.prompts import PromptEnsembleEmbedder
from skclipxray.similarity import PromptSimilarity
from skclipxray.testing import HashPromptEmbedder
from skclipxray.text_anchored import TextAnchoredClassifier
from skclipxray.thresholds import MultilabelTunedThresholdClassifierCV
from skclipxray.tip_adapter import TipAdapterClassifier
from skclipxray.zeroshot import ZeroShotClassifier

#: Placeholder for the tiny checkpoint's folder, known only once the session runs.
CHECKPOINT = "tiny-siglip"

#: Width of PromptSimilarity's prompts in the checks.
CHECKPOINT_WIDTH = 32

# Small networks and few epochs: the checks fit each estimator dozens of times.
_FAST_HEAD = dict(hidden_sizes=(16,), max_epochs=10, batch_size=32, lr=0.01)

ESTIMATORS = [
    BaselineClassifier(**_FAST_HEAD),
    ConcatFusionClassifier(HashPromptEmbedder(), fusion_hidden_sizes=(8,), **_FAST_HEAD),
    WeightedSumClassifier(HashPromptEmbedder(), **_FAST_HEAD),
    ZeroShotClassifier(CHECKPOINT, device="cpu"),
    # Without prompts (the no-text controls): the checks' data have any width,
    # and prompts must have the width of the image embeddings. With prompts,
    # the same code runs with a zero-shot term added; its own tests cover it.
    TextAnchoredClassifier(device="cpu"),
    TextAnchoredClassifier(anchor_weight=0.01, raw_features=True, device="cpu"),
    TipAdapterClassifier(device="cpu"),
    PromptSimilarity(HashPromptEmbedder(dim=CHECKPOINT_WIDTH)),
    MultilabelCalibratedClassifierCV(TextAnchoredClassifier(device="cpu"), cv=3),
    MultilabelTunedThresholdClassifierCV(TextAnchoredClassifier(device="cpu"), cv=3),
]

# ZeroShotClassifier scores the checkpoint's image embeddings against one
# prompt per label: whatever fits it on random data of another width, with a
# 1-D y or with unnamed labels cannot apply.
_ONE_D_Y = (
    "fits on a 1-D y, which ZeroShotClassifier refuses: it is multilabel by "
    "design, one probability per label prompt (and X, of any width, is not "
    "the checkpoint's image embeddings either)"
)
_UNNAMED_LABELS = (
    "fits on a multilabel y of unnamed columns: the labels name the prompts, so "
    "y needs one column per label of labels= (by default the 14 NIH "
    "pathologies; and X, of any width, is not the checkpoint's image "
    "embeddings either)"
)

# PromptSimilarity scores image embeddings against prompts of one width.
_OTHER_WIDTH = (
    "fits on data of another width than the prompts: PromptSimilarity refuses "
    "X whose width differs from the prompt embeddings', which are made by the "
    "checkpoint that made the image embeddings"
)

# A tuned threshold is not 0.5: predict says yes from each label's own threshold.
_TUNED_THRESHOLD = (
    "checks that predict is the argmax of predict_proba, which a tuned threshold "
    "is not by design (as for scikit-learn's TunedThresholdClassifierCV)"
)

#: Estimator class name -> {check name: why it cannot apply}.
EXPECTED_FAILED_CHECKS = {
    "MultilabelTunedThresholdClassifierCV": dict.fromkeys(
        (
            "check_classifiers_train",
            "check_classifiers_train(readonly_memmap=True)",
            "check_classifiers_train(readonly_memmap=True,X_dtype=float32)",
        ),
        _TUNED_THRESHOLD,
    ),
    "PromptSimilarity": {
        name: _OTHER_WIDTH for name in (
            "check_dict_unchanged",
            "check_dont_overwrite_parameters",
            "check_dtype_object",
            "check_estimators_dtypes",
            "check_estimators_fit_returns_self",
            "check_estimators_nan_inf",
            "check_estimators_overwrite_params",
            "check_estimators_pickle",
            "check_f_contiguous_array_estimator",
            "check_fit2d_1feature",
            "check_fit2d_1sample",
            "check_fit2d_predict1d",
            "check_fit_check_is_fitted",
            "check_fit_idempotent",
            "check_fit_score_takes_y",
            "check_methods_sample_order_invariance",
            "check_methods_subset_invariance",
            "check_n_features_in",
            "check_n_features_in_after_fitting",
            "check_pipeline_consistency",
            "check_positive_only_tag_during_fit",
            "check_readonly_memmap_input",
            "check_transformer_data_not_an_array",
            "check_transformer_general",
            "check_transformer_preserve_dtypes",
        )
    },
    "ZeroShotClassifier": {
        "check_classifier_data_not_an_array": _ONE_D_Y,
        "check_classifiers_classes": _ONE_D_Y,
        "check_classifiers_multilabel_output_format_decision_function": _UNNAMED_LABELS,
        "check_classifiers_multilabel_output_format_predict": _UNNAMED_LABELS,
        "check_classifiers_multilabel_output_format_predict_proba": _UNNAMED_LABELS,
        "check_classifiers_multilabel_representation_invariance": _UNNAMED_LABELS,
        "check_classifiers_one_label": _ONE_D_Y,
        "check_classifiers_regression_target": _ONE_D_Y,
        "check_classifiers_train": _ONE_D_Y,
        "check_decision_proba_consistency": _ONE_D_Y,
        "check_dict_unchanged": _ONE_D_Y,
        "check_dont_overwrite_parameters": _ONE_D_Y,
        "check_dtype_object": _ONE_D_Y,
        "check_estimators_dtypes": _ONE_D_Y,
        "check_estimators_fit_returns_self": _ONE_D_Y,
        "check_estimators_nan_inf": _ONE_D_Y,
        "check_estimators_overwrite_params": _ONE_D_Y,
        "check_estimators_pickle": _ONE_D_Y,
        "check_f_contiguous_array_estimator": _ONE_D_Y,
        "check_fit2d_1feature": _ONE_D_Y,
        "check_fit2d_1sample": _ONE_D_Y,
        "check_fit2d_predict1d": _ONE_D_Y,
        "check_fit_check_is_fitted": _ONE_D_Y,
        "check_fit_idempotent": _ONE_D_Y,
        "check_fit_score_takes_y": _ONE_D_Y,
        "check_methods_sample_order_invariance": _ONE_D_Y,
        "check_methods_subset_invariance": _ONE_D_Y,
        "check_n_features_in": _ONE_D_Y,
        "check_n_features_in_after_fitting": _ONE_D_Y,
        "check_pipeline_consistency": _ONE_D_Y,
        "check_positive_only_tag_during_fit": _ONE_D_Y,
        "check_readonly_memmap_input": _ONE_D_Y,
        "check_supervised_y_2d": _ONE_D_Y,
    },
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


def _with_checkpoint(estimator, folder):
    if estimator.get_params(deep=False).get("model") == CHECKPOINT:
        estimator.set_params(model=str(folder))
    return estimator


# Small networks: extra torch threads only add synchronisation cost.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check, tiny_model_dir):
    check(_with_checkpoint(estimator, tiny_model_dir))


#: Transformers of images or label names. scikit-learn's checks feed them
#: numeric matrices, which they do not take (``input_tags.two_d_array`` is
#: False, so ``parametrize_with_checks`` yields no check for them): they get
#: the checks that need no data.
#:
#: SigLIPImageEmbedder's ``transform`` records a report of the call
#: (``n_embedded_``, ``n_cached_``, ``read_errors_``, ``cache_namespace_``),
#: documented public attributes that the checks on data would refuse
#: (``check_dict_unchanged``); none of those checks can run on images, and
#: the checks that run here pass with them.
EMBEDDERS = [
    PromptEnsembleEmbedder(CHECKPOINT, device="cpu"),
    SigLIPImageEmbedder(CHECKPOINT, device="cpu", progress=False),
    ImageEmbedder(CHECKPOINT, device="cpu", progress=False),
]

CHECKS_WITHOUT_DATA = [
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_estimator_tags_renamed",
    "check_get_params_invariance",
    "check_mixin_order",
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_set_params",
    "check_valid_tag_types",
]


@pytest.mark.parametrize("check", CHECKS_WITHOUT_DATA)
@pytest.mark.parametrize("estimator", EMBEDDERS, ids=lambda e: type(e).__name__)
def test_embedders_pass_the_checks_that_need_no_data(estimator, check, tiny_model_dir):
    estimator = _with_checkpoint(estimator, tiny_model_dir)
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)


@pytest.mark.parametrize(
    "estimator", ESTIMATORS + EMBEDDERS, ids=lambda e: type(e).__name__
)
def test_every_parameter_is_validated_before_fitting(estimator, tiny_model_dir):
    """Each parameter has a constraint, and a bad value stops ``fit`` at once
    with scikit-learn's InvalidParameterError naming it."""
    estimator = _with_checkpoint(estimator, tiny_model_dir)
    estimator_checks.check_param_validation(type(estimator).__name__, estimator)


def test_the_image_embedder_validates_its_parameters_in_transform(tiny_model_dir):
    """``transform`` needs no ``fit``, so it checks the parameters as ``fit`` does."""
    embedder = SigLIPImageEmbedder(str(tiny_model_dir), device="cpu", progress=False)
    embedder.set_params(batch_size=type("BadType", (), {})())
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'batch_size' parameter of SigLIPImageEmbedder must be .* Got .* instead.",
    ):
        embedder.transform([np.zeros((8, 8), dtype=np.uint8)])
