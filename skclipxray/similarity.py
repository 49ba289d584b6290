"""Image embeddings as their similarity to each label prompt: text as features.

:class:`PromptSimilarity` turns ``(n, d)`` image embeddings into ``(n,
n_labels)`` image-text similarities, so that "image-text similarity fusion"
is a plain scikit-learn pipeline: a
:class:`~sklearn.pipeline.FeatureUnion` of the embedding itself and its
similarities, then any classifier.
"""

import math

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._text import PROMPT_CONSTRAINTS, check_prompt_width, fit_label_prompts, zero_shot_logits
from ._validation import check_labels

__all__ = ["PromptSimilarity"]


class PromptSimilarity(TransformerMixin, BaseEstimator):
    """Per-label similarity of image embeddings to the label prompts.

    Column ``k`` of the output is the cosine between the image embedding and
    label ``k``'s prompt embedding, or, with ``output="logit"``, the
    zero-shot logit ``s cos + b`` with the checkpoint's scale ``s`` and bias
    ``b`` (what :class:`~skclipxray.ZeroShotClassifier` puts through a
    sigmoid). When the prompt embedder has negative prompts
    (``negative_templates``), the column is the positive-minus-negative
    difference: ``cos(image, positive) - cos(image, negative)``, or ``s``
    times it.

    Parameters
    ----------
    prompts : transformer or array-like of shape (n_labels, n_features)
        An unfitted :class:`~skclipxray.PromptEnsembleEmbedder` of the
        checkpoint that made the image embeddings (cloned and fitted on the
        label names at :meth:`fit`; it brings the checkpoint's scale, bias and
        negative prompts), or the prompt embeddings themselves, one row per
        label. Rows are L2-normalised.
    logit_scale : float, optional
        The checkpoint's ``logit_scale`` (``s = exp(logit_scale)``); needed
        for ``output="logit"`` with an array of prompts, and overrides the
        embedder's.
    logit_bias : float, optional
        The checkpoint's ``logit_bias``; 0 if only ``logit_scale`` is given.
    labels : list of str, optional
        The label names, in the order of the output columns. ``None``: the
        columns of a DataFrame ``y`` given to :meth:`fit`, else the prompt
        embedder's default labels (the 14 NIH pathologies), else, for an
        array of prompts, ``label_0``, ``label_1``, ...
    output : {"cosine", "logit"}, default="cosine"
        Cosines (in [-1, 1]; differences in [-2, 2]) or zero-shot logits.

    Attributes
    ----------
    labels_ : ndarray of str
        The label names: the output feature names.
    prompt_embeddings_ : ndarray of shape (n_labels, n_features_in), float32
        Unit-norm prompt embeddings.
    negative_prompt_embeddings_ : ndarray of shape (n_labels, n_features_in)
        The negative prompts, when the prompt embedder has them.
    logit_scale_, logit_bias_ : float or None
        Scale (log) and bias; None when neither given nor known, which only
        ``output="cosine"`` allows.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names of ``X``, when it was a DataFrame.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.similarity import PromptSimilarity
    >>> prompts = np.eye(3, 8)
    >>> X = np.random.default_rng(0).normal(size=(4, 8))
    >>> similarity = PromptSimilarity(prompts, labels=["Mass", "Nodule", "Hernia"])
    >>> similarity.fit_transform(X).shape
    (4, 3)
    >>> similarity.get_feature_names_out()
    array(['Mass', 'Nodule', 'Hernia'], dtype=object)

    Image-text similarity fusion, as a pipeline:

    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import FeatureUnion, make_pipeline
    >>> fusion = make_pipeline(
    ...     FeatureUnion([("image", "passthrough"), ("text", similarity)]),
    ...     LogisticRegression(),
    ... )
    >>> fusion.fit(X, [0, 1, 0, 1]).predict(X).shape
    (4,)
    """

    _parameter_constraints: dict = {
        **PROMPT_CONSTRAINTS,
        "labels": [None, "array-like"],
        "output": [StrOptions({"cosine", "logit"})],
    }

    def __init__(self, prompts=None, *, logit_scale=None, logit_bias=None, labels=None,
                 output="cosine"):
        self.prompts = prompts
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.labels = labels
        self.output = output

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def _label_names(self, y):
        if self.labels is not None:
            return check_labels(self.labels, "labels")
        if hasattr(y, "columns"):
            return check_labels(list(y.columns), "y.columns")
        return None

    @_fit_context(
        # A prompt transformer given as prompts is fitted inside: it checks
        # its own parameters.
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y=None):
        """Embed (or check) the prompts; nothing is learnt from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings; only their width is checked.
        y : DataFrame, optional
            Its column names name the labels when ``labels`` is None.

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=True)
        names = self._label_names(y)
        owner = type(self).__name__
        prompts = fit_label_prompts(
            self.prompts, names, None if names is None else len(names),
            logit_scale=self.logit_scale, logit_bias=self.logit_bias,
            what="labels", owner=owner, need_scale=self.output == "logit",
            counted_by="labels= gives" if self.labels is not None else "y has",
        )
        check_prompt_width(X.shape[1], prompts.positive, owner)
        if names is None:
            names = prompts.labels or [f"label_{k}" for k in range(len(prompts.positive))]
        self.labels_ = np.asarray([str(name) for name in names], dtype=object)
        self.prompt_embeddings_ = prompts.positive
        if prompts.negative is not None:
            self.negative_prompt_embeddings_ = prompts.negative
        elif hasattr(self, "negative_prompt_embeddings_"):
            del self.negative_prompt_embeddings_
        self.logit_scale_, self.logit_bias_ = prompts.logit_scale, prompts.logit_bias
        return self

    def transform(self, X):
        """Similarity of each image embedding to each label prompt.

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
        negative = getattr(self, "negative_prompt_embeddings_", None)
        unit = normalize(X.astype(np.float64))
        if self.output == "logit":
            if self.logit_scale_ is None:
                raise ValueError(
                    "PromptSimilarity was fitted with output='cosine' and no "
                    "logit_scale; fit it again with output='logit' and logit_scale=."
                )
            return zero_shot_logits(
                unit, self.prompt_embeddings_, negative,
                math.exp(self.logit_scale_), self.logit_bias_,
            )
        return zero_shot_logits(unit, self.prompt_embeddings_, negative, 1.0, 0.0)

    def get_feature_names_out(self, input_features=None):
        """The label names, one per output column.

        Parameters
        ----------
        input_features : ignored
            The output names do not depend on the input's.

        Returns
        -------
        ndarray of str
        """
        check_is_fitted(self, "labels_")
        return self.labels_.copy()
