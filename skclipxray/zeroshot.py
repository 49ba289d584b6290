"""Zero-shot multilabel classification: image embeddings against label prompts."""

import math
import os
from collections.abc import Mapping
from numbers import Real

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from ._architectures import logit_scale_and_bias
from ._backbone import DEFAULT_MODEL, load_backbone
from ._text import fit_label_prompts, zero_shot_logits
from ._validation import check_labels, check_multilabel_indicator, check_threshold
from .prompts import DEFAULT_TEMPLATES, PromptEnsembleEmbedder

__all__ = ["ZeroShotClassifier"]

#: The parameters of the prompt embedder built when ``prompts`` is None, and
#: their defaults.
_PROMPT_PARAMETERS = {
    "templates": DEFAULT_TEMPLATES,
    "negative_templates": None,
    "phrases": None,
}


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """Score image embeddings against label prompts, with no training.

    The probability of label ``j`` for image ``i`` is SigLIP's own image-text
    score, ``sigmoid(scale * cos(image_i, prompt_j) + bias)``, with the
    checkpoint's ``scale = exp(logit_scale)`` and ``logit_bias``. SigLIP is
    trained with a sigmoid loss, so each label gets an independent
    probability: multilabel output is natural. With ``negative_templates``,
    each label is instead scored positive-versus-negative (CheXzero): the
    softmax of the positive and negative prompt logits, i.e.
    ``sigmoid(scale * (cos(image, positive) - cos(image, negative)))``.

    A CLIP checkpoint scores as CLIP was trained: a softmax of
    ``scale * cos(image, prompt)`` over the labels (``logits_per_image``),
    with no bias. Its "probabilities" then sum to 1 over the labels: they
    say which label the image matches best, not whether each finding is
    there, so they rank images per label but two findings cannot both be
    likely. For independent per-label probabilities from a CLIP model, give
    ``negative_templates`` (each label is then its own two-way softmax, as
    CheXzero does with CLIP), or calibrate the scores per label
    (:class:`~skclipxray.calibration.MultilabelCalibratedClassifierCV`).
    An image-only checkpoint (DINOv2) has no text tower: ``fit`` says so.

    ``fit`` trains nothing: it embeds the prompts and records the labels, so
    the classifier fits in a ``Pipeline`` after
    :class:`~skclipxray.SigLIPImageEmbedder` and in ``cross_validate``
    like a trained head, as the floor a trained head should beat.

    The prompts are given as the fusion heads take them (``prompts=``: a
    prompt embedder, or the embeddings themselves), or described by
    ``templates``, ``negative_templates`` and ``phrases``, from which ``fit``
    builds a :class:`~skclipxray.PromptEnsembleEmbedder` of ``model``.

    Parameters
    ----------
    model : str or path-like, default=DEFAULT_MODEL
        Hugging Face id or local folder of the SigLIP checkpoint that made the
        image embeddings. Its logit scale and bias score them, whatever
        ``prompts`` is.
    prompts : transformer or array-like of shape (n_labels, n_features_in), optional
        The label embeddings the images are scored against. ``None`` (the
        default) builds them from ``templates``, ``negative_templates`` and
        ``phrases``. A transformer, such as a
        :class:`~skclipxray.PromptEnsembleEmbedder` of the same checkpoint,
        is cloned and fitted at :meth:`fit` with ``fit_transform(labels)``;
        if it then has ``negative_embeddings_`` (a PromptEnsembleEmbedder
        given ``negative_templates``), scores are positive-versus-negative.
        An array gives the embeddings themselves, one row per label in the
        order of the labels. Either way each row is L2-normalised.
    labels : list of str, optional
        Label names, used when ``y`` given to :meth:`fit` is not a DataFrame.
        ``None`` means the 14 NIH ChestX-ray14 pathologies.
    templates : list of str, default=DEFAULT_TEMPLATES
        Positive prompt templates, ensembled per label
        (see :class:`~skclipxray.PromptEnsembleEmbedder`). Only with
        ``prompts=None``; otherwise set them on the prompt embedder.
    negative_templates : list of str, optional
        Prompt templates stating the finding is absent, e.g.
        ``NEGATIVE_TEMPLATES``. When given, scores are positive-versus-negative.
        Only with ``prompts=None``.
    phrases : dict, optional
        Label name -> phrase, overriding the automatic phrase of those labels.
        Only with ``prompts=None``.
    threshold : float, default=0.5
        :meth:`predict` calls a label present when its probability is at
        least this.
    device : str, default="auto"
        Device of the text tower, used in :meth:`fit` only.
    dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Precision of the text tower, used in :meth:`fit` only.

    Attributes
    ----------
    labels_ : ndarray of shape (n_labels,)
        Label names, in the order of the output columns.
    classes_ : list of ndarray
        ``[0, 1]`` for each label: one binary problem per label, as
        scikit-learn's multi-output classifiers report it.
    prompt_embeddings_ : ndarray of shape (n_labels, n_features_in), float32
        Unit-norm (positive) prompt embedding of each label.
    negative_prompt_embeddings_ : ndarray of shape (n_labels, n_features_in)
        The same for the negative prompts; only set when there are some.
    scale_ : float
        ``exp(logit_scale)`` of the checkpoint.
    bias_ : float
        ``logit_bias`` of the checkpoint (0 for CLIP).
    scoring_ : {"sigmoid", "softmax"}
        How the checkpoint's family turns logits into probabilities (see above).
    n_features_in_ : int
        Size of the image embeddings.
    feature_names_in_ : ndarray of str
        Column names of ``X``, when it was a DataFrame.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from skclipxray.testing import make_tiny_siglip
    >>> from skclipxray.zeroshot import ZeroShotClassifier
    >>> checkpoint = make_tiny_siglip(tempfile.mkdtemp())
    >>> image_embeddings = np.random.default_rng(0).normal(size=(5, 32))
    >>> classifier = ZeroShotClassifier(checkpoint, device="cpu")
    >>> classifier.fit(image_embeddings).predict_proba(image_embeddings).shape
    (5, 14)
    >>> classifier.labels_[:2]
    array(['Atelectasis', 'Cardiomegaly'], dtype=object)

    The prompts can also be embedded beforehand, e.g. to reuse them:

    >>> from skclipxray.prompts import PromptEnsembleEmbedder
    >>> prompts = PromptEnsembleEmbedder(checkpoint, device="cpu").fit_transform(["Mass"])
    >>> classifier = ZeroShotClassifier(checkpoint, prompts=prompts, labels=["Mass"],
    ...                                 device="cpu")
    >>> classifier.fit(image_embeddings).predict_proba(image_embeddings).shape
    (5, 1)
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "prompts": [None, "array-like", HasMethods(["fit_transform"])],
        # Each label and template is checked at fit, naming the culprit.
        "labels": [None, "array-like"],
        "templates": ["array-like"],
        "negative_templates": [None, "array-like"],
        "phrases": [None, Mapping],
        "threshold": [Interval(Real, 0, 1, closed="both")],
        # A name or a torch device and dtype: load_backbone checks them.
        "device": "no_validation",
        "dtype": "no_validation",
    }

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        prompts=None,
        labels=None,
        templates=DEFAULT_TEMPLATES,
        negative_templates=None,
        phrases=None,
        threshold=0.5,
        device="auto",
        dtype="auto",
    ):
        self.model = model
        self.prompts = prompts
        self.labels = labels
        self.templates = templates
        self.negative_templates = negative_templates
        self.phrases = phrases
        self.threshold = threshold
        self.device = device
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags

    def __setstate__(self, state):
        # Files saved before ``prompts`` existed built their prompts themselves.
        super().__setstate__({"prompts": None, **state})

    def _labels_for(self, y, n_samples):
        """Label names: ``y``'s columns if a DataFrame, else ``labels``."""
        if hasattr(y, "columns"):
            labels = check_labels(list(y.columns), "y.columns")
        else:
            labels = check_labels(self.labels, "labels")
        if y is None:
            return labels
        shape = np.asarray(y).shape
        if len(shape) != 2:
            raise ValueError(
                f"y has shape {shape}; ZeroShotClassifier is multilabel and "
                "needs y of shape (n_samples, n_labels), e.g. a DataFrame of "
                "0/1 columns named by label, or no y at all."
            )
        if shape[0] != n_samples:
            raise ValueError(
                f"y has {shape[0]} rows but X has {n_samples} samples."
            )
        if shape[1] != len(labels):
            raise ValueError(
                f"y has {shape[1]} columns but there are {len(labels)} labels "
                f"(starting {labels[:3]}); pass labels= naming y's columns, "
                "or y as a DataFrame."
            )
        check_multilabel_indicator(y, labels)
        return labels

    def _embed_prompts(self, labels):
        """Unit-norm positive and negative (or None) prompt embeddings, float32."""
        if self.prompts is None:
            embedder = PromptEnsembleEmbedder(
                self.model,
                templates=self.templates,
                negative_templates=self.negative_templates,
                phrases=self.phrases,
                device=self.device,
                dtype=self.dtype,
            ).fit(labels)
            negative = getattr(embedder, "negative_embeddings_", None)
            # Normalised as prompts given in any other way are (the embedder's
            # are unit-norm already, to float32 rounding): the zero-shot
            # scores are then the same bits however the prompts came.
            return normalize(embedder.embeddings_), None if negative is None else normalize(negative)
        changed = [
            name for name, default in _PROMPT_PARAMETERS.items()
            if not _is_default(getattr(self, name), default)
        ]
        if changed:
            raise ValueError(
                f"ZeroShotClassifier was given prompts and {' and '.join(changed)}, "
                "which describe the prompts it builds when prompts is None; set "
                f"{'them' if len(changed) > 1 else 'it'} on the prompt embedder "
                "given as prompts instead."
            )
        # The checkpoint's scale and bias are read from ``model``, not here.
        prompts = fit_label_prompts(
            self.prompts, labels, len(labels), logit_scale=None, logit_bias=None,
            what="labels", owner=type(self).__name__, need_scale=False,
            counted_by="labels= gives" if self.labels is not None else "there are",
        )
        return prompts.positive, prompts.negative

    @_fit_context(
        # A prompt embedder given as prompts is fitted inside: it checks its
        # own parameters.
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y=None):
        """Embed the label prompts; nothing is trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings from the same checkpoint (raw or L2-normalised);
            only their width is checked.
        y : DataFrame or array-like of shape (n_samples, n_labels), optional
            Only checked (one row per sample, one 0/1 column per label); a
            DataFrame's column names become the labels.

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=True)
        labels = self._labels_for(y, X.shape[0])
        positive, negative = self._embed_prompts(labels)
        if X.shape[1] != positive.shape[1]:
            if self.prompts is None:
                source = (
                    f"the checkpoint {self.model!r} embeds into {positive.shape[1]} "
                    "dimensions: X must be image embeddings made by this checkpoint."
                )
            else:
                source = (
                    f"the prompt embeddings have {positive.shape[1]}: X must be image "
                    "embeddings made by the checkpoint that embedded the prompts."
                )
            raise ValueError(f"X has {X.shape[1]} features but {source}")
        backbone = load_backbone(self.model, device=self.device, dtype=self.dtype)
        backbone.require_text()
        logit_scale, self.bias_ = logit_scale_and_bias(backbone.model)
        self.scale_ = math.exp(logit_scale)
        self.scoring_ = backbone.architecture.scoring
        if self.scoring_ == "softmax" and negative is None and len(labels) == 1:
            raise ValueError(
                f"The checkpoint {self.model!r} scores with CLIP's softmax over the "
                "labels: with one label, its probability is 1 for every image. Give "
                "negative_templates, so that the label is scored against its negative "
                "prompt."
            )
        self.labels_ = np.asarray(labels, dtype=object)
        # One binary problem per label, as scikit-learn's multi-output
        # classifiers report it: scorers then see a multilabel classifier
        # (label names as classes_ would read as multiclass, or as binary
        # with two labels, and pick a single column).
        self.classes_ = [np.array([0, 1]) for _ in self.labels_]
        self.prompt_embeddings_ = positive
        if negative is not None:
            self.negative_prompt_embeddings_ = negative
        elif hasattr(self, "negative_prompt_embeddings_"):
            del self.negative_prompt_embeddings_
        return self

    def decision_function(self, X):
        """Log-odds of each label (before the sigmoid of :meth:`predict_proba`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in)
            Image embeddings.

        Returns
        -------
        ndarray of shape (n_samples, n_labels), float64
        """
        check_is_fitted(self, "prompt_embeddings_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        # An all-zero embedding has no direction: its cosine to every prompt is 0.
        return zero_shot_logits(
            normalize(X.astype(np.float64)), self.prompt_embeddings_,
            getattr(self, "negative_prompt_embeddings_", None), self.scale_, self.bias_,
        )

    def predict_proba(self, X):
        """Probability of each label.

        The sigmoid of the logits for SigLIP checkpoints and with negative
        prompts; for a CLIP checkpoint without them, CLIP's softmax over the
        labels (see the class description).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in)
            Image embeddings.

        Returns
        -------
        ndarray of shape (n_samples, n_labels), float64
        """
        logits = self.decision_function(X)
        # Estimators saved before CLIP was supported are SigLIP ones.
        scoring = getattr(self, "scoring_", "sigmoid")
        if scoring == "softmax" and not hasattr(self, "negative_prompt_embeddings_"):
            return softmax(logits, axis=1)
        return expit(logits)

    def predict(self, X):
        """0/1 indicator of each label: probability at least ``threshold``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in)
            Image embeddings.

        Returns
        -------
        ndarray of shape (n_samples, n_labels), int
        """
        threshold = check_threshold(self.threshold)
        return (self.predict_proba(X) >= threshold).astype(int)


def _is_default(value, default):
    if value is None or default is None:
        return value is default
    return value is default or tuple(value) == tuple(default)
