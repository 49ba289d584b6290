"""Tip-Adapter: zero-shot scores plus a kernel vote of the labelled images, with no training.

:class:`TipAdapterClassifier` (Zhang et al., ECCV 2022) keeps the training
images' unit-norm embeddings as a cache of keys and their labels as values,
and adds to each zero-shot logit how much more an image resembles the
label's positives than the cache as a whole.
"""

import warnings
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from ._device import resolve_device
from ._heads.target import LogitsMixin, TargetMixin
from ._text import PROMPT_CONSTRAINTS, ZeroShotTermMixin

__all__ = ["TipAdapterClassifier"]

#: Affinities computed at a time (query rows x cached keys), about 64 MiB of
#: float32: memory stays bounded whatever the size of the cache.
_BLOCK_QUERIES = 1024
_BLOCK_KEYS = 16384

#: Training images on which the spreads of the zero-shot and cache terms are
#: compared at fit.
_SPREAD_SAMPLES = 2048


class TipAdapterClassifier(
    ZeroShotTermMixin, LogitsMixin, TargetMixin, ClassifierMixin, BaseEstimator
):
    """Training-free adapter: zero-shot logits plus a cache model of the training images.

    The logit of label ``k`` for an image with unit-norm embedding ``f̂`` is

    .. math::

        z_k = z^{0}_k(\\hat f) + \\alpha \\, r_k \\sum_i \\varphi(\\langle \\hat f, \\hat f_i \\rangle) \\, v_{ik},
        \\qquad \\varphi(x) = \\exp(-\\beta (1 - x)),

    the zero-shot logit ``z⁰_k = s ⟨f̂, t_k⟩ + b`` of
    :class:`~skclipxray.ZeroShotClassifier` plus Tip-Adapter's cache term
    over the ``n`` training images ``f̂_i``. The cache values are the
    multi-hot labels, scaled per label, ``v_ik = y_ik / n_k - 1 / n`` (with
    ``n_k`` the label's positives; one-hot classes for a 1-D y): the sum is
    the mean affinity of the image to the label's positives minus its mean
    affinity to the whole cache. So it does not grow with the size of the
    cache or with a label's prevalence, and it is 0 for an image no closer to
    the positives than to the rest. A label without positives gets no cache
    term.

    Tip-Adapter weighs the two terms by ``alpha`` alone, whose good value
    then depends on the checkpoint and the cache, and is searched on
    validation data. Here ``r_k`` first scales the cache term so that, over
    the training images (each left out of its own cache term), its standard
    deviation equals that of the zero-shot logits (1 logit without prompts):
    ``alpha=1`` weighs the cache as much as the text on any checkpoint; with
    prompts known to fit the labels poorly, a larger ``alpha`` leans on the
    cache.
    ``fit`` only stores the cache; with ``alpha=0`` the classifier equals
    zero-shot exactly. Affinities are computed in blocks on ``device``, so
    memory stays bounded for caches of 100,000 images and more.

    Parameters
    ----------
    prompts : transformer or array-like of shape (n_labels, n_features), optional
        The label prompts, as :class:`~skclipxray.TextAnchoredClassifier`
        takes them: an unfitted :class:`~skclipxray.PromptEnsembleEmbedder`
        (which brings the checkpoint's scale and bias) or an array with
        ``logit_scale``. ``None``: no zero-shot term, only the cache (the
        control that shows what the text adds).
    logit_scale : float, optional
        The checkpoint's ``logit_scale`` (the scale ``s`` is its exp).
        Required with an array of prompts; overrides the prompt embedder's.
        Unused without prompts.
    logit_bias : float, optional
        The checkpoint's ``logit_bias``: by default the prompt embedder's,
        or 0 with an array of prompts. Unused without prompts.
    alpha : float, default=1.0
        Weight of the cache term, relative to the zero-shot logits (see
        above); ``0`` gives zero-shot. The default is Tip-Adapter's.
    beta : float, default=5.5
        Sharpness of the affinity (Tip-Adapter's default): larger values
        let only the nearest cached images vote.
    threshold : float, array-like of shape (n_labels,) or dict, default=0.5
        Probability from which ``predict`` says yes: one for all labels or one
        per label (a dict or Series by label name). Unused for multiclass y.
    device : str, default="auto"
        Where the affinities are computed: ``"auto"`` (CUDA, then MPS, then
        CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. The cache is
        kept as NumPy arrays, so the estimator loads anywhere.

    Attributes
    ----------
    labels_, classes_, task_
        As for :class:`~skclipxray.TextAnchoredClassifier`.
    prompt_embeddings_ : ndarray of shape (n_labels, n_features_in), float32
        Unit-norm prompt embeddings; absent without prompts.
    negative_prompt_embeddings_ : ndarray of shape (n_labels, n_features_in)
        The negative prompts, when the prompt embedder has them.
    logit_scale_, logit_bias_ : float
    cache_keys_ : ndarray of shape (n_samples, n_features_in), float32
        The unit-norm training embeddings.
    cache_values_ : ndarray of shape (n_samples, n_labels), float64
        ``v``.
    cache_scale_ : ndarray of shape (n_labels,)
        ``r``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names of ``X``, when it was a DataFrame.

    See Also
    --------
    TextAnchoredClassifier : A trained linear adapter of the zero-shot scores.

    References
    ----------
    R. Zhang, W. Zhang, R. Fang, P. Gao, K. Li, J. Dai, Y. Qiao, H. Li,
    "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
    Classification", ECCV 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.tip_adapter import TipAdapterClassifier
    >>> rng = np.random.default_rng(0)
    >>> prompts = rng.normal(size=(2, 16))
    >>> X = rng.normal(size=(60, 16)) + prompts[[0, 1] * 30]
    >>> Y = np.column_stack([np.arange(60) % 2 == 0, np.arange(60) % 2 == 1]).astype(int)
    >>> head = TipAdapterClassifier(prompts, logit_scale=np.log(10.0), device="cpu")
    >>> head.fit(X, Y).predict_proba(X[:3]).shape
    (3, 2)
    >>> head.cache_keys_.shape
    (60, 16)
    """

    # No intercept is learnt: the zero-shot logits must carry the checkpoint's bias.
    _needs_prompt_bias = True

    _parameter_constraints: dict = {
        **PROMPT_CONSTRAINTS,
        "alpha": [Interval(Real, None, None, closed="neither")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "threshold": [Interval(Real, 0, 1, closed="both"), "array-like", dict],
        # A name or a torch.device: resolve_device checks it and says which it knows.
        "device": "no_validation",
    }

    def __init__(
        self,
        prompts=None,
        *,
        logit_scale=None,
        logit_bias=None,
        alpha=1.0,
        beta=5.5,
        threshold=0.5,
        device="auto",
    ):
        self.prompts = prompts
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.alpha = alpha
        self.beta = beta
        self.threshold = threshold
        self.device = device

    @_fit_context(
        # A prompt transformer given as prompts is fitted inside: it checks
        # its own parameters.
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y):
        """Store the cache of training embeddings and labels; nothing is trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings of the checkpoint that embedded the prompts.
        y : array-like of shape (n_samples, n_labels) or (n_samples,)
            A 0/1 indicator matrix or DataFrame (multilabel; a DataFrame's
            column names become ``labels_`` and name the prompts), or
            class labels.

        Returns
        -------
        self
        """
        X, targets, _ = self._start_fit(X, y)
        members = self._members(targets)
        counts = members.sum(axis=0)
        values = np.where(
            counts > 0, members / np.maximum(counts, 1) - 1.0 / len(members), 0.0
        )
        unit = normalize(X)
        self.cache_keys_ = unit.astype(np.float32)
        self.cache_values_ = values
        self.cache_scale_ = self._spread_ratio(unit)
        return self

    def _spread_ratio(self, unit):
        """Per label: spread of the zero-shot logits over that of the cache term.

        Both are measured on (at most :data:`_SPREAD_SAMPLES`, evenly spaced)
        training images, each image left out of its own cache term. Without
        prompts the zero-shot spread is taken as 1 logit.
        """
        rows = np.unique(np.linspace(0, len(unit) - 1, min(len(unit), _SPREAD_SAMPLES)).astype(int))
        cache = self._cache_term(unit[rows]) - self.cache_values_[rows]
        spread = cache.std(axis=0)
        if hasattr(self, "prompt_embeddings_"):
            target = self._zero_shot(unit[rows]).std(axis=0)
        else:
            target = np.ones(spread.shape)
        # A term constant over the training images (one image, or a label
        # without positives) cannot be scaled: it is left out.
        return np.where(spread > 0, target / np.where(spread > 0, spread, 1.0), 0.0)

    def _device(self):
        """``device``, or the CPU where this machine lacks it (a fit elsewhere)."""
        try:
            return resolve_device(self.device)
        except ValueError:
            from skorch.exceptions import DeviceWarning

            warnings.warn(
                f"TipAdapterClassifier has device={self.device!r}, which this "
                "machine does not have; its cache term is computed on the CPU.",
                DeviceWarning,
                stacklevel=5,  # the caller of predict_proba or decision_function
            )
            import torch

            return torch.device("cpu")

    def _cache_term(self, unit):
        """``Σ_i φ(⟨f̂, f̂_i⟩) v_i`` for each row of ``unit``, float64, in blocks."""
        import torch

        device = self._device()
        # float64 on the CPU: a row's result does not depend on the rows beside
        # it. Accelerators are fast in float32 (and MPS has no float64).
        dtype = torch.float64 if device.type == "cpu" else torch.float32
        keys = torch.as_tensor(self.cache_keys_, device=device)
        values = torch.as_tensor(self.cache_values_, device=device, dtype=dtype)
        term = np.empty((len(unit), values.shape[1]))
        with torch.no_grad():
            for start in range(0, len(unit), _BLOCK_QUERIES):
                queries = torch.as_tensor(
                    unit[start : start + _BLOCK_QUERIES], dtype=dtype, device=device
                )
                total = torch.zeros(len(queries), values.shape[1], dtype=dtype, device=device)
                for first in range(0, len(keys), _BLOCK_KEYS):
                    block = slice(first, first + _BLOCK_KEYS)
                    cosine = queries @ keys[block].to(dtype).T
                    total += torch.exp(self.beta * (cosine - 1.0)) @ values[block]
                term[start : start + len(queries)] = total.cpu().numpy()
        return term

    def _logits(self, X):
        """One logit per label (multilabel) or class (1-D y), float64."""
        check_is_fitted(self, "cache_keys_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        unit = normalize(X.astype(np.float64))
        logits = self._zero_shot(unit)
        if self.alpha != 0:
            logits = logits + self.alpha * self.cache_scale_ * self._cache_term(unit)
        return logits
