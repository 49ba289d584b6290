"""A linear probe anchored at the label prompts: zero-shot first, data second.

:class:`TextAnchoredClassifier` is the ZS-LP / CLAP family of few-shot
adapters (Silva-Rodriguez et al., CVPR 2024) with LP++'s learnable blend
(Huang et al., CVPR 2024) as an option. It starts as the zero-shot
classifier, so that with few labels it cannot fall far below it, and a
penalty that weakens as positives accumulate lets the data take over.
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler, normalize
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._heads.target import LogitsMixin, TargetMixin
from ._text import PROMPT_CONSTRAINTS, ZeroShotTermMixin

__all__ = ["TextAnchoredClassifier"]

#: ``anchor_weight="inverse_positives"`` (and its part of ``"auto"``): the
#: penalty is this over the positives of the label (see the class docstring).
AUTO_ANCHOR_POSITIVES = 1.0

#: Past pairs L-BFGS keeps to approximate the curvature.
_LBFGS_HISTORY = 20


class TextAnchoredClassifier(
    ZeroShotTermMixin, LogitsMixin, TargetMixin, ClassifierMixin, BaseEstimator
):
    """Linear probe on image embeddings, started at and pulled towards the label prompts.

    The logit of label ``k`` for an image embedding ``f`` (unit-norm ``f̂``) is

    .. math::

        z_k = a_k \\, z^{0}_k(\\hat f) + \\langle g(f), \\theta_k \\rangle + c_k,

    where ``z⁰_k = s ⟨f̂, t_k⟩ + b`` is the zero-shot logit of
    :class:`~skclipxray.ZeroShotClassifier` (the checkpoint's scale ``s``
    and bias ``b``; positive-versus-negative with negative prompts), and
    ``g(f)`` stacks ``f̂`` and, with ``raw_features=True``, the raw embedding
    ``f``, each feature standardised on the training data (so that the
    penalty weighs every direction alike, whatever the checkpoint's
    geometry). Training minimises the mean binary cross-entropy of each label
    (the mean cross-entropy over classes for a 1-D ``y``) plus
    ``λ_k ‖θ_k‖²``. Since ``⟨f̂, θ_k⟩`` adds to ``s⟨f̂, t_k⟩``, this is the
    linear probe whose weights start at the text embedding and are
    penalised for leaving it, ``λ_k ‖w_k - s t_k‖²`` (ZS-LP, CLAP), with a
    free part on the raw embeddings beside it (LP++ feeds both the
    normalised and the raw features, and normalisation alone loses the
    information in the norm). ``a_k = 1`` is fixed unless
    ``learn_text_scale=True`` (LP++'s learnable blend ``α_k``, anchored at 1), and the
    intercepts ``c_k`` start at 0 and are not penalised.

    Before any training step (``max_iter=0``), ``θ = 0``, ``c = 0`` and
    ``a = 1``: the classifier equals zero-shot exactly. The problem is
    convex; it is solved by full-batch L-BFGS with a strong-Wolfe line
    search on ``device`` (float64 on the CPU, float32 on accelerators),
    from that starting point, so the solution depends on the data alone:
    fits with other thread counts or batch orders agree up to ``tol``.

    Parameters
    ----------
    prompts : transformer or array-like of shape (n_labels, n_features), optional
        The label prompts: an unfitted transformer such as
        :class:`~skclipxray.PromptEnsembleEmbedder` of the checkpoint that
        made ``X`` (cloned and fitted with ``fit_transform(label_names)``:
        y's column names, the transformer's own labels for unnamed columns,
        the class names for a 1-D y; it brings the checkpoint's scale, bias
        and negative prompts), or the embeddings themselves, one row per
        label (per class for a 1-D y) in y's order, with ``logit_scale``.
        ``None`` fits without text: ``z⁰ = 0``, a logistic regression with
        an L2 penalty of strength ``λ``, the control that shows what the
        text adds.
    logit_scale : float, optional
        The checkpoint's ``logit_scale`` (``SiglipModel.logit_scale``: the
        scale is ``exp(logit_scale)``). Required with an array of prompts;
        overrides the prompt embedder's. Unused without prompts.
    logit_bias : float, optional
        The checkpoint's ``logit_bias``: by default the prompt embedder's,
        or 0 with an array of prompts. Unused without prompts.
    anchor_weight : {"auto", "inverse_positives", "clap"}, float or array-like of shape (n_labels,), default="auto"
        The penalty ``λ_k``. The three rules need no validation data:

        - ``"inverse_positives"``: ``λ_k = 1 / n_k``
          (:data:`AUTO_ANCHOR_POSITIVES` over ``n_k``), with ``n_k`` the
          positives of label ``k`` (the samples of class ``k`` for a 1-D y) in
          the training data. Against the mean loss over all ``n`` samples,
          this is a Gaussian prior around the prompt of fixed weight
          ``n / n_k`` (the inverse of the label's frequency): it leads with a
          handful of positives and lets go as they accumulate, or when the
          text is wrong.
        - ``"clap"``: CLAP's rule, ``λ_k`` the mean zero-shot softmax
          probability of label ``k`` over its positives (softmax across the
          labels), here counted above chance (``(p - 1/L) / (1 - 1/L)``,
          floored at 0, so that prompts no better than a uniform guess do not
          hold the weights), a penalty on CLAP's unit-norm weights on ``f̂``; converted
          here to logits on standardised features (divided by ``s²`` and by
          the mean variance of the coordinates of ``f̂``). It grows with how
          well the text already fits the training data, but not with the
          amount of it: with many labels it still holds the weights, as a
          ridge penalty does.
        - ``"auto"``: the sum of the two (``"inverse_positives"`` alone
          without prompts). On the synthetic worlds of the benchmark,
          ``1 / n_k`` alone was the safer with a few positives per label (never
          below zero-shot) and CLAP's the better with many; their sum kept
          both.
        - a number, or one per label: ``λ_k`` itself. ``0`` gives a plain
          per-label logistic regression on ``g(f)`` (``z⁰`` lies in the span
          of ``f̂``); without text, ``λ`` is scikit-learn's
          ``LogisticRegression(C=1 / (2 n λ))`` on ``g(f)`` for a multilabel or
          multiclass y, and ``C=1 / (n λ)`` for a binary y (whose two logits
          are each penalised).
    raw_features : bool, default=False
        Add the raw embedding ``f`` to ``g(f)`` beside ``f̂``, as LP++ does:
        normalisation drops the norm, which may carry information. Off by
        default: it doubles the cost of every iteration, and on the
        synthetic worlds of the benchmarks it changed nothing.
    learn_text_scale : bool, default=False
        Learn ``a_k``, LP++'s blend: the text's weight can grow, shrink or
        vanish per label, besides the anchored part. It is anchored at 1 like
        the other weights, by ``λ_k Var(z⁰_k) (a_k - 1)²`` (LP++ leaves it
        free, which with a handful of labels lets it overfit).
    max_iter : int, default=500
        L-BFGS iterations at most; ``0`` returns the zero-shot classifier.
    tol : float, default=1e-5
        Stop when no gradient entry of the objective exceeds this.
    threshold : float, array-like of shape (n_labels,) or dict, default=0.5
        Probability from which ``predict`` says yes: one for all labels, or
        one per label (a dict or Series by label name). Read at prediction,
        so it can be changed after fitting. Unused for multiclass y.
    device : str, default="auto"
        Where to solve: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"`` or ``"mps"``. The fitted weights are NumPy
        arrays: prediction runs on the CPU and the estimator loads anywhere.
    verbose : int, default=0
        ``>0`` reports the iterations and the final objective.

    Attributes
    ----------
    labels_ : ndarray
        Column names of ``predict_proba``: y's column names (the prompt
        transformer's ``labels_`` for unnamed columns) for multilabel y, the
        classes for 1-D y.
    classes_ : ndarray or list of ndarray
        The classes for 1-D y; ``[0, 1]`` per label for multilabel y.
    task_ : {"multilabel", "binary", "multiclass"}
        What ``y`` was taken for. A binary y is two classes with one prompt
        each, scored by a softmax (the sigmoid of the logit difference).
    prompt_embeddings_ : ndarray of shape (n_labels, n_features_in), float32
        Unit-norm prompt embeddings; absent without prompts.
    negative_prompt_embeddings_ : ndarray of shape (n_labels, n_features_in)
        The negative prompts, when the prompt embedder has them.
    logit_scale_, logit_bias_ : float
        The scale (log) and bias of the zero-shot logits.
    anchor_weight_ : ndarray of shape (n_labels,)
        ``λ_k`` as used.
    coef_ : ndarray of shape (n_labels, n_features_in) or (n_labels, 2 * n_features_in)
        ``θ``: weights on ``f̂``, then (with ``raw_features``) on the
        standardised raw embedding, in logits.
    intercept_ : ndarray of shape (n_labels,)
        ``c``.
    text_scale_ : ndarray of shape (n_labels,)
        ``a``: all ones unless ``learn_text_scale``.
    feature_scaler_ : sklearn.preprocessing.StandardScaler
        Standardisation of the features ``g(f)``.
    n_iter_ : int
        L-BFGS iterations run.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names of ``X``, when it was a DataFrame.

    See Also
    --------
    ZeroShotClassifier : What this starts from.
    TipAdapterClassifier : A training-free adapter of the zero-shot scores.

    References
    ----------
    J. Silva-Rodriguez, S. Hajimiri, I. Ben Ayed, J. Dolz, "A Closer Look at
    the Few-Shot Adaptation of Large Vision-Language Models", CVPR 2024.
    Y. Huang, F. Shakeri, J. Dolz, M. Boudiaf, H. Bahig, I. Ben Ayed, "LP++:
    A Surprisingly Strong Linear Probe for Few-Shot CLIP", CVPR 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.text_anchored import TextAnchoredClassifier
    >>> rng = np.random.default_rng(0)
    >>> prompts = rng.normal(size=(2, 16))
    >>> X = rng.normal(size=(60, 16)) + prompts[[0, 1] * 30]
    >>> Y = np.column_stack([np.arange(60) % 2 == 0, np.arange(60) % 2 == 1]).astype(int)
    >>> head = TextAnchoredClassifier(prompts, logit_scale=np.log(10.0), device="cpu")
    >>> head.fit(X, Y).predict_proba(X[:3]).shape
    (3, 2)
    >>> # "auto": one over the 30 positives of each label, plus CLAP's term
    >>> bool(np.all(head.anchor_weight_ > 1 / 30))
    True
    """

    _parameter_constraints: dict = {
        **PROMPT_CONSTRAINTS,
        # Per label: checked against the labels once y is known.
        "anchor_weight": [
            StrOptions({"auto", "inverse_positives", "clap"}),
            Interval(Real, 0, None, closed="left"),
            "array-like",
        ],
        "raw_features": ["boolean"],
        "learn_text_scale": ["boolean"],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "threshold": [Interval(Real, 0, 1, closed="both"), "array-like", dict],
        # A name or a torch.device: resolve_device checks it and says which it knows.
        "device": "no_validation",
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        prompts=None,
        *,
        logit_scale=None,
        logit_bias=None,
        anchor_weight="auto",
        raw_features=False,
        learn_text_scale=False,
        max_iter=500,
        tol=1e-5,
        threshold=0.5,
        device="auto",
        verbose=0,
    ):
        self.prompts = prompts
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.anchor_weight = anchor_weight
        self.raw_features = raw_features
        self.learn_text_scale = learn_text_scale
        self.max_iter = max_iter
        self.tol = tol
        self.threshold = threshold
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------ features
    def _unscaled_features(self, X, unit):
        """``g(f)`` before standardisation: ``f̂``, then ``f`` with ``raw_features``."""
        return np.hstack([unit, X]) if self.raw_features else unit

    # ------------------------------------------------------------- penalty
    @staticmethod
    def _inverse_positives(positives):
        """``1 / n_k``: a prior of fixed weight relative to the label's frequency."""
        return AUTO_ANCHOR_POSITIVES / np.maximum(positives.sum(axis=0), 1)

    def _clap(self, positives, zero_shot, unit_width):
        """CLAP's rule, converted to logits on standardised features."""
        if not hasattr(self, "prompt_embeddings_"):
            raise ValueError(
                "anchor_weight='clap' sets the penalty from how well the prompts "
                "fit the training data, but TextAnchoredClassifier has no prompts; "
                "give prompts, or a number as anchor_weight."
            )
        fit = softmax(zero_shot, axis=1)
        counts = positives.sum(axis=0)
        # A label without positives keeps CLAP's strongest anchor, 1.
        mean_fit = np.where(
            counts > 0, (fit * positives).sum(axis=0) / np.maximum(counts, 1), 1.0
        )
        # Above chance only: prompts that fit no better than a uniform guess
        # (1 / n_outputs) get no anchor from this rule.
        chance = 1.0 / len(mean_fit)
        mean_fit = np.clip((mean_fit - chance) / (1.0 - chance), 0.0, None)
        # CLAP penalises unit-norm weights on f̂; θ is in logits, on
        # standardised features: divide by the scale squared and by the
        # features' variance (their mean: one number per label).
        variance = self.feature_scaler_.var_[:unit_width].mean()
        return mean_fit / (math.exp(2 * self.logit_scale_) * variance)

    def _penalty(self, targets, zero_shot):
        """``λ_k`` per output, from ``anchor_weight``."""
        unit_width = self.n_features_in_
        n_outputs = len(self.labels_)
        positives = self._members(targets)
        if isinstance(self.anchor_weight, str):
            rules = {
                "inverse_positives": ["inverse_positives"],
                "clap": ["clap"],
                # Without text there is no zero-shot fit for CLAP's rule to read.
                "auto": ["inverse_positives", "clap"]
                if hasattr(self, "prompt_embeddings_") else ["inverse_positives"],
            }[self.anchor_weight]
            return sum(
                self._inverse_positives(positives) if rule == "inverse_positives"
                else self._clap(positives, zero_shot, unit_width)
                for rule in rules
            )
        weight = np.asarray(self.anchor_weight, dtype=np.float64)
        if weight.ndim == 0:
            return np.full(n_outputs, float(weight))
        what = "label" if self.task_ == "multilabel" else "class"
        if weight.shape != (n_outputs,):
            raise ValueError(
                f"anchor_weight has shape {weight.shape}; give one number, or one "
                f"per {what}: shape ({n_outputs},)."
            )
        if not np.all(np.isfinite(weight) & (weight >= 0)):
            raise ValueError(
                f"anchor_weight must hold finite non-negative numbers; got {weight}."
            )
        return weight

    # ------------------------------------------------------------------ fit
    @_fit_context(
        # A prompt transformer given as prompts is fitted inside: it checks
        # its own parameters.
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y):
        """Solve for the weights on image embeddings ``X`` and targets ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings (raw, as :class:`~skclipxray.SigLIPImageEmbedder`
            gives them by default) of the checkpoint that embedded the prompts.
        y : array-like of shape (n_samples, n_labels) or (n_samples,)
            A 0/1 indicator matrix or DataFrame (multilabel; a DataFrame's
            column names become ``labels_`` and name the prompts), or
            class labels.

        Returns
        -------
        self
        """
        X, targets, device = self._start_fit(X, y)
        if self.task_ == "binary":
            targets = targets.ravel().astype(np.int64)
        unit = normalize(X)
        zero_shot = self._zero_shot(unit)
        # Every feature at unit variance: the penalty then weighs all
        # directions alike, whatever the checkpoint's geometry, and so means
        # the same for every checkpoint (constant features stay at 0).
        features = self._unscaled_features(X, unit)
        self.feature_scaler_ = StandardScaler().fit(features)
        self.anchor_weight_ = self._penalty(targets, zero_shot)
        coef, intercept, text_scale, self.n_iter_ = _solve(
            self.feature_scaler_.transform(features), zero_shot, targets,
            self.anchor_weight_, multilabel=self.task_ == "multilabel",
            learn_text_scale=self.learn_text_scale and hasattr(self, "prompt_embeddings_"),
            max_iter=self.max_iter, tol=self.tol, device=device, verbose=self.verbose,
        )
        self.coef_, self.intercept_, self.text_scale_ = coef, intercept, text_scale
        return self

    # ----------------------------------------------------------- prediction
    def _logits(self, X):
        """One logit per label (multilabel) or class (1-D y), float64."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        X = X.astype(np.float64)
        unit = normalize(X)
        return (
            self.text_scale_ * self._zero_shot(unit)
            + self.feature_scaler_.transform(self._unscaled_features(X, unit)) @ self.coef_.T
            + self.intercept_
        )


def _solve(
    features, zero_shot, targets, penalty, *, multilabel, learn_text_scale,
    max_iter, tol, device, verbose,
):
    """Minimise the anchored objective by full-batch L-BFGS; NumPy in and out.

    Returns ``coef`` (n_outputs, n_features), ``intercept`` and ``text_scale``
    (n_outputs,), float64, and the iterations run.
    """
    import torch
    import torch.nn.functional as F

    n_outputs = zero_shot.shape[1]
    # MPS has no float64; on GPUs float32 is what they are fast at.
    dtype = torch.float64 if device.type == "cpu" else torch.float32

    def tensor(array, **kwargs):
        return torch.as_tensor(np.ascontiguousarray(array), device=device, **kwargs)

    G = tensor(features, dtype=dtype)
    Z0 = tensor(zero_shot, dtype=dtype)
    Y = tensor(targets, dtype=dtype if multilabel else torch.int64)
    lam = tensor(penalty, dtype=dtype)
    # The text's weight is anchored at 1 like any direction of unit variance:
    # its penalty is scaled by the variance of the zero-shot logits.
    text_penalty = lam * tensor(zero_shot.var(axis=0), dtype=dtype)
    coef = torch.zeros(n_outputs, G.shape[1], dtype=dtype, device=device, requires_grad=True)
    intercept = torch.zeros(n_outputs, dtype=dtype, device=device, requires_grad=True)
    text_scale = torch.ones(n_outputs, dtype=dtype, device=device, requires_grad=learn_text_scale)
    params = [coef, intercept] + ([text_scale] if learn_text_scale else [])

    def objective():
        logits = text_scale * Z0 + G @ coef.T + intercept
        if multilabel:
            data = F.binary_cross_entropy_with_logits(logits, Y, reduction="none").mean(0).sum()
        else:
            data = F.cross_entropy(logits, Y)
        penalty_ = (lam * coef.square().sum(dim=1)).sum()
        if learn_text_scale:
            penalty_ = penalty_ + (text_penalty * (text_scale - 1).square()).sum()
        return data + penalty_

    n_iter = 0
    if max_iter > 0:
        optimizer = torch.optim.LBFGS(
            # Evaluations are not what stops it: max_iter is.
            params, lr=1, max_iter=max_iter, max_eval=2 * max_iter + 10,
            tolerance_grad=tol, tolerance_change=0.0,
            history_size=_LBFGS_HISTORY, line_search_fn="strong_wolfe",
        )

        def closure():
            optimizer.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        optimizer.step(closure)
        n_iter = int(optimizer.state[optimizer.param_groups[0]["params"][0]].get("n_iter", 0))
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        gradient = max(float(p.grad.abs().max()) for p in params)
        if verbose:
            print(f"L-BFGS: {n_iter} iterations, objective {loss.item():.6g}, "
                  f"largest gradient entry {gradient:.2e}")
        # Fewer iterations with a larger gradient: no step decreased the
        # objective any more, the float precision's limit.
        if n_iter >= max_iter and gradient > tol:
            warnings.warn(
                f"L-BFGS stopped after {n_iter} iterations (max_iter={max_iter}) with "
                f"a gradient entry of {gradient:.2e} > tol={tol:g}: the weights are "
                "not the optimum; increase max_iter.",
                ConvergenceWarning,
                stacklevel=4,  # the caller of fit
            )

    def numpy(tensor_):
        return tensor_.detach().to("cpu", torch.float64).numpy()

    return numpy(coef), numpy(intercept), numpy(text_scale), n_iter
