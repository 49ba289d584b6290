"""Zero-shot multilabel classification: image embeddings against label prompts."""

import numbers

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ._backbone import DEFAULT_MODEL, load_backbone
from ._validation import check_multilabel_indicator
from .prompts import DEFAULT_TEMPLATES, PromptEnsembleEmbedder, _check_labels

__all__ = ["ZeroShotClassifier"]


def _l2_normalize(X):
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    # An all-zero embedding has no direction: its cosine to every prompt is 0.
    return X / np.where(norms > 0, norms, 1.0)


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

    ``fit`` trains nothing: it embeds the prompts and records the labels, so
    the classifier fits in a ``Pipeline`` after
    :class:`~skclipxray.SigLIPImageEmbedder` and in ``cross_validate``
    like a trained head, as the floor a trained head should beat.

    Parameters
    ----------
    model : str or path-like, default=DEFAULT_MODEL
        Hugging Face id or local folder of the SigLIP checkpoint that made the
        image embeddings.
    labels : list of str, optional
        Label names, used when ``y`` given to :meth:`fit` is not a DataFrame.
        ``None`` means the 14 NIH ChestX-ray14 pathologies.
    templates : list of str, default=DEFAULT_TEMPLATES
        Positive prompt templates, ensembled per label
        (see :class:`~skclipxray.PromptEnsembleEmbedder`).
    negative_templates : list of str, optional
        Prompt templates stating the finding is absent, e.g.
        ``NEGATIVE_TEMPLATES``. When given, scores are positive-versus-negative.
    phrases : dict, optional
        Label name -> phrase, overriding the automatic phrase of those labels.
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
        Unit-norm ensembled positive prompt embedding of each label.
    negative_prompt_embeddings_ : ndarray of shape (n_labels, n_features_in)
        The same for ``negative_templates``; only set when they are given.
    scale_ : float
        ``exp(logit_scale)`` of the checkpoint.
    bias_ : float
        ``logit_bias`` of the checkpoint.
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
    """

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        labels=None,
        templates=DEFAULT_TEMPLATES,
        negative_templates=None,
        phrases=None,
        threshold=0.5,
        device="auto",
        dtype="auto",
    ):
        self.model = model
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

    def _check_threshold(self):
        if (
            not isinstance(self.threshold, numbers.Real)
            or isinstance(self.threshold, bool)
            or not 0 <= self.threshold <= 1
        ):
            raise ValueError(
                f"threshold must be a number in [0, 1], got {self.threshold!r}."
            )

    def _labels_for(self, y, n_samples):
        """Label names: ``y``'s columns if a DataFrame, else ``labels``."""
        if hasattr(y, "columns"):
            labels = _check_labels(list(y.columns), "y.columns")
        else:
            labels = _check_labels(self.labels, "labels")
        if y is None:
            return labels
        shape = np.shape(y)
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
        self._check_threshold()
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=True)
        labels = self._labels_for(y, X.shape[0])
        prompts = PromptEnsembleEmbedder(
            self.model,
            templates=self.templates,
            negative_templates=self.negative_templates,
            phrases=self.phrases,
            device=self.device,
            dtype=self.dtype,
        ).fit(labels)
        if X.shape[1] != prompts.n_features_out_:
            raise ValueError(
                f"X has {X.shape[1]} features but the checkpoint {self.model!r} "
                f"embeds into {prompts.n_features_out_} dimensions: X must be "
                "image embeddings made by this checkpoint."
            )
        backbone = load_backbone(self.model, device=self.device, dtype=self.dtype)
        # Python floats, not tensors: the fitted estimator must not hold torch
        # objects (pickles stay small and load on machines without a GPU).
        self.scale_ = float(backbone.model.logit_scale.detach().float().exp().item())
        self.bias_ = float(backbone.model.logit_bias.detach().float().item())
        self.labels_ = np.asarray(prompts.labels_, dtype=object)
        # One binary problem per label, as scikit-learn's multi-output
        # classifiers report it: scorers then see a multilabel classifier
        # (label names as classes_ would read as multiclass, or as binary
        # with two labels, and pick a single column).
        self.classes_ = [np.array([0, 1]) for _ in self.labels_]
        self.prompt_embeddings_ = prompts.embeddings_
        if self.negative_templates is not None:
            self.negative_prompt_embeddings_ = prompts.negative_embeddings_
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
        images = _l2_normalize(X.astype(np.float64))
        cosine = images @ self.prompt_embeddings_.T.astype(np.float64)
        if hasattr(self, "negative_prompt_embeddings_"):
            # softmax([l_pos, l_neg])[0] = sigmoid(l_pos - l_neg); the bias cancels.
            negative = images @ self.negative_prompt_embeddings_.T.astype(np.float64)
            return self.scale_ * (cosine - negative)
        return self.scale_ * cosine + self.bias_

    def predict_proba(self, X):
        """Probability of each label.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in)
            Image embeddings.

        Returns
        -------
        ndarray of shape (n_samples, n_labels), float64
        """
        return expit(self.decision_function(X))

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
        self._check_threshold()
        return (self.predict_proba(X) >= self.threshold).astype(int)
