"""Label prompts as the text-using estimators take them, and zero-shot logits.

An estimator that reads text takes ``prompts=``: an unfitted transformer
(a :class:`~skclipxray.prompts.PromptEnsembleEmbedder`, cloned and fitted
with ``fit_transform(label_names)``) or the embeddings themselves, one row
per label. This module turns either into checked arrays, once for every
estimator, with messages that name what does not fit:

- :func:`fit_label_embeddings`: the embeddings as given (the fusion heads
  stack them into their mega-vector);
- :func:`fit_label_prompts`: unit-norm rows, the negative prompts if the
  embedder has some, and the checkpoint's ``logit_scale`` and
  ``logit_bias`` (:class:`LabelPrompts`), for the estimators that score
  images against the prompts;
- :func:`zero_shot_logits`: SigLIP's image-text logits, the one formula that
  :class:`~skclipxray.ZeroShotClassifier` and the heads that start from
  zero-shot share, so that they agree to the last bit.
"""

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np
from sklearn.base import clone
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_array, validate_data

from ._device import resolve_device
from .labels import NIH_PATHOLOGIES

__all__ = [
    "PROMPT_CONSTRAINTS",
    "LabelPrompts",
    "ZeroShotTermMixin",
    "check_prompt_width",
    "fit_label_embeddings",
    "fit_label_prompts",
    "zero_shot_logits",
]

#: ``_parameter_constraints`` of ``prompts``, ``logit_scale`` and ``logit_bias``.
PROMPT_CONSTRAINTS = {
    "prompts": [None, "array-like", HasMethods(["fit_transform"])],
    "logit_scale": [None, Real],
    "logit_bias": [None, Real],
}


def fit_label_embeddings(
    prompts, label_names, n_expected, *, what, owner, counted_by="y has"
):
    """Embed the label names with ``prompts``, or check the embeddings given.

    Parameters
    ----------
    prompts : transformer or array-like of shape (n_labels, d)
        A transformer is cloned and fitted with ``fit_transform(label_names)``.
    label_names : list of str or None
        y's column names (None for unnamed columns: the transformer embeds
        its own default labels), or the class names of a 1-D y.
    n_expected : int or None
        Rows needed: y's labels or classes; None takes what the prompts have.
    what : {"labels", "classes"}
        What the rows stand for, in messages.
    owner : str
        The estimator's name, in messages.
    counted_by : str, default="y has"
        What gave ``n_expected``, in messages ("prompts has 3 rows but y has
        2 labels").

    Returns
    -------
    embeddings : ndarray of shape (n_expected, d), float32
    embedder : fitted transformer or None
        None when ``prompts`` is an array.
    """
    if prompts is None:
        raise ValueError(
            f"{owner} needs prompts: a PromptEnsembleEmbedder (or another "
            "transformer turning label names into embeddings) or an array of "
            "shape (n_labels, d_text)."
        )
    embedder = None
    if hasattr(prompts, "fit_transform"):
        embedder = clone(prompts)
        embeddings = embedder.fit_transform(label_names)
    else:
        embeddings = prompts
    embeddings = check_array(embeddings, dtype=np.float32, input_name="prompts")
    if n_expected is None or embeddings.shape[0] == n_expected:
        return embeddings, embedder
    embedder_labels = list(getattr(embedder, "labels_", None) or [])
    if embedder is not None and label_names is None and embedder_labels:
        shown = ", ".join(map(str, embedder_labels[:3]))
        which = (
            f"the {len(NIH_PATHOLOGIES)} NIH ChestX-ray14 pathologies"
            if embedder_labels == list(NIH_PATHOLOGIES)
            else f"{len(embedder_labels)} labels"
        )
        raise ValueError(
            f"y has {n_expected} labels but no column names, so the prompt "
            f"embedder used its default labels, {which} ({shown}, ...). Pass y "
            "as a DataFrame whose columns name the labels, e.g. "
            "pd.DataFrame(y, columns=[...]), or give prompts as an array of one "
            "embedding per label."
        )
    one, order = ("label", "columns") if what == "labels" else ("class", "classes")
    order = f"y's {order}" if counted_by == "y has" else "their names"
    names = ""
    if label_names is not None:
        names = ", ".join(map(str, list(label_names)[:3]))
        names = f" ({names}{', ...' if len(label_names) > 3 else ''})"
    raise ValueError(
        f"prompts has {embeddings.shape[0]} rows but {counted_by} {n_expected} "
        f"{what}{names}; give one prompt embedding per {one}, in the order of {order}."
    )


@dataclass(frozen=True)
class LabelPrompts:
    """Unit-norm prompt embeddings with the checkpoint's scale and bias.

    Attributes
    ----------
    positive : ndarray of shape (n_labels, d), float32
    negative : ndarray of shape (n_labels, d), float32, or None
        Prompts stating each finding is absent, when the embedder has them.
    logit_scale, logit_bias : float or None
        As ``SiglipModel`` holds them: logits are
        ``exp(logit_scale) * cosine + logit_bias``. None when not needed
        and not known.
    labels : list or None
        The prompt embedder's ``labels_``, if it has them.
    scoring : {"sigmoid", "softmax"} or None
        How the checkpoint turns logits into probabilities (the prompt
        embedder's ``scoring_``); None for an array of prompts.
    """

    positive: np.ndarray
    negative: object
    logit_scale: float
    logit_bias: float
    labels: object
    scoring: object = None


def fit_label_prompts(
    prompts, label_names, n_expected, *, logit_scale, logit_bias, what, owner,
    need_scale=True, counted_by="y has",
):
    """The prompts of an estimator that scores images against them.

    Parameters
    ----------
    prompts : transformer or array-like of shape (n_labels, d)
        As in :func:`fit_label_embeddings`. A fitted
        :class:`~skclipxray.prompts.PromptEnsembleEmbedder` brings its
        checkpoint's ``logit_scale_`` and ``logit_bias_``, and
        ``negative_embeddings_`` when it has negative templates.
    label_names, n_expected, what, owner, counted_by
        As in :func:`fit_label_embeddings`.
    logit_scale, logit_bias : float or None
        Override the embedder's, each on its own; ``logit_scale`` is
        required with an array (or a transformer that knows no checkpoint),
        and ``logit_bias`` then defaults to 0.
    need_scale : bool, default=True
        Whether a missing ``logit_scale`` is an error; if not, the returned
        ``logit_scale`` and ``logit_bias`` may be None.

    Returns
    -------
    LabelPrompts
    """
    positive, embedder = fit_label_embeddings(
        prompts, label_names, n_expected, what=what, owner=owner, counted_by=counted_by
    )
    if logit_scale is None:
        logit_scale = getattr(embedder, "logit_scale_", None)
    if logit_bias is None:
        logit_bias = getattr(embedder, "logit_bias_", None)
    if logit_scale is None and need_scale:
        source = (
            "an array of prompt embeddings" if embedder is None
            else f"a {type(embedder).__name__}, which has no logit_scale_"
        )
        raise ValueError(
            f"{owner} was given {source}: pass logit_scale= and logit_bias=, the "
            "checkpoint's SiglipModel.logit_scale and logit_bias (logits are "
            "exp(logit_scale) * cosine + logit_bias), or give prompts as a "
            "PromptEnsembleEmbedder, which brings them."
        )
    if logit_scale is not None:
        logit_bias = 0.0 if logit_bias is None else logit_bias
        for name, value in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        logit_scale, logit_bias = float(logit_scale), float(logit_bias)
    negative = getattr(embedder, "negative_embeddings_", None)
    if negative is not None:
        negative = normalize(
            check_array(negative, dtype=np.float32, input_name="negative prompts")
        )
        if negative.shape != positive.shape:
            raise ValueError(
                f"The prompt embedder's negative_embeddings_ have shape "
                f"{negative.shape}, its embeddings {positive.shape}: one of each "
                "per label is needed."
            )
    labels = getattr(embedder, "labels_", None)
    return LabelPrompts(
        positive=normalize(positive),
        negative=negative,
        logit_scale=logit_scale,
        logit_bias=logit_bias,
        labels=None if labels is None else list(labels),
        scoring=getattr(embedder, "scoring_", None),
    )


class ZeroShotTermMixin:
    """The zero-shot logits of an estimator that adapts them, from ``prompts``.

    For the classifiers whose logits start from, or add to, zero-shot
    scores (with :class:`~skclipxray._heads.target.TargetMixin` for
    ``task_``, ``labels_`` and the names the prompts are made for):
    :meth:`_start_fit` does what their ``fit`` does first, the multilabel
    tags are declared once, :meth:`_fit_prompts` sets ``prompt_embeddings_`` (and
    ``negative_prompt_embeddings_``), ``logit_scale_`` and ``logit_bias_``;
    :meth:`_zero_shot` gives the zero-shot logits, or zeros when the
    estimator was given no prompts.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.non_deterministic = False
        return tags

    def _start_fit(self, X, y):
        """What ``fit`` does first: check the device, X and y, fit the prompts.

        Returns ``X`` as float64, ``y`` as :meth:`_encode_target` gives it, and
        the torch device (a device this machine lacks fails here, before any work).
        """
        label_names = list(y.columns) if hasattr(y, "columns") else None
        device = resolve_device(self.device)
        X, y = validate_data(self, X, y, multi_output=True, dtype=[np.float64, np.float32])
        targets = self._encode_target(y, label_names)
        self._fit_prompts(label_names, X.shape[1])
        self._check_threshold()
        return X.astype(np.float64), targets, device

    #: Whether the estimator's logits need the checkpoint's bias (no intercept of its own).
    _needs_prompt_bias = False

    def _fit_prompts(self, label_names, n_features):
        for name in ("prompt_embeddings_", "negative_prompt_embeddings_"):
            if hasattr(self, name):
                delattr(self, name)
        if self.prompts is None:
            # No text, no zero-shot logits to scale: logit_scale and logit_bias
            # are not used.
            self.logit_scale_, self.logit_bias_ = 0.0, 0.0
            return
        owner = type(self).__name__
        prompts = fit_label_prompts(
            self.prompts, self._prompt_labels(label_names), len(self.labels_),
            logit_scale=self.logit_scale, logit_bias=self.logit_bias,
            what="labels" if self.task_ == "multilabel" else "classes", owner=owner,
        )
        check_prompt_width(n_features, prompts.positive, owner)
        if self._needs_prompt_bias and prompts.scoring == "softmax" and prompts.negative is None:
            raise ValueError(
                f"{owner} adds to the zero-shot logits without learning an intercept, "
                "and the prompts come from a checkpoint that scores with CLIP's "
                "softmax, which has no bias: sigmoid(scale * cosine) is then about 1 "
                "for every image and label. Give the prompt embedder "
                "negative_templates (each label then scores its positive against its "
                "negative prompt, as CheXzero does), or use TextAnchoredClassifier, "
                "which learns each label's intercept."
            )
        self.prompt_embeddings_ = prompts.positive
        if prompts.negative is not None:
            self.negative_prompt_embeddings_ = prompts.negative
        self.logit_scale_, self.logit_bias_ = prompts.logit_scale, prompts.logit_bias
        self._name_labels_by_prompts(label_names, prompts.labels)

    def _zero_shot(self, unit):
        """Zero-shot logits of unit-norm image embeddings, or 0 without prompts."""
        if not hasattr(self, "prompt_embeddings_"):
            return np.zeros((len(unit), len(self.labels_)))
        return zero_shot_logits(
            unit, self.prompt_embeddings_,
            getattr(self, "negative_prompt_embeddings_", None),
            math.exp(self.logit_scale_), self.logit_bias_,
        )


def check_prompt_width(n_features, prompts, owner):
    """Refuse image embeddings whose width differs from the prompts'."""
    width = prompts.shape[1]
    if n_features != width:
        raise ValueError(
            f"X has {n_features} features but the prompt embeddings have {width}: "
            f"{owner} scores image embeddings against the prompts, so X must be "
            "image embeddings made by the checkpoint that embedded the prompts."
        )


def zero_shot_logits(images, positive, negative, scale, bias):
    """SigLIP's image-text logits, float64 of shape (n_images, n_labels).

    ``scale * cos(image, positive) + bias``; with negative prompts, the
    positive-versus-negative logit ``scale * (cos(image, positive) -
    cos(image, negative))`` (the softmax of the two, CheXzero-style, as a
    sigmoid: the bias cancels).

    Parameters
    ----------
    images : ndarray of shape (n_images, d)
        Unit-norm image embeddings.
    positive, negative : ndarray of shape (n_labels, d) (negative may be None)
        Unit-norm prompt embeddings.
    scale, bias : float
        ``exp(logit_scale)`` and ``logit_bias``.
    """
    images = np.asarray(images, dtype=np.float64)
    cosine = images @ positive.T.astype(np.float64)
    if negative is not None:
        return scale * (cosine - images @ negative.T.astype(np.float64))
    return scale * cosine + bias
