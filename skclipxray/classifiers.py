"""Trained heads on image embeddings, as scikit-learn classifiers.

:class:`BaselineClassifier`, :class:`ConcatFusionClassifier` and
:class:`WeightedSumClassifier` train the modules of :mod:`skclipxray.nn` with
skorch. They are ordinary scikit-learn estimators: every training setting is a
top-level parameter (so ``GridSearchCV`` can tune it), ``fit`` builds and
trains a fresh :class:`skorch.NeuralNet`, kept as ``net_`` with its history.

The target decides the task:

- 2-D 0/1 ``y`` (array or DataFrame, one column per label): multilabel, one
  sigmoid per label, binary cross-entropy. ``predict_proba`` and ``predict``
  return ``(n_samples, n_labels)`` arrays.
- 1-D ``y`` (a single column counts as 1-D, as in scikit-learn): binary (one
  sigmoid) or multiclass (softmax, cross-entropy). ``predict_proba`` returns
  ``(n_samples, n_classes)`` and ``predict`` class labels.

What the heads share (checks, target, loss, training, prediction, saving)
is in :mod:`skclipxray._heads`; each class here declares its parameters and
its torch module.
"""

from ._heads.base import (
    ATTRIBUTES,
    HIDDEN_SIZES_PARAMETER,
    PROMPT_ATTRIBUTE,
    PROMPTS_PARAMETER,
    SIZES,
    TRAINING_PARAMETERS,
    BaseHeadClassifier,
    PromptFusionClassifier,
    store_params,
)
from ._validation import check_hidden_sizes

__all__ = [
    "BaselineClassifier",
    "ConcatFusionClassifier",
    "WeightedSumClassifier",
]


class BaselineClassifier(BaseHeadClassifier):
    __doc__ = f"""Image embeddings -> fully connected layers -> one output per label.

    Trains a :class:`skclipxray.nn.BaselineMLP` (hidden layers ``Linear ->
    BatchNorm1d -> ReLU -> Dropout``) with binary cross-entropy on the
    logits, AdamW and a learning-rate schedule, through skorch.

    Parameters
    ----------
{HIDDEN_SIZES_PARAMETER}
{TRAINING_PARAMETERS}

    Attributes
    ----------
{ATTRIBUTES}

    See Also
    --------
    ConcatFusionClassifier, WeightedSumClassifier : heads that also use the
        label prompts.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.classifiers import BaselineClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 16)).astype("float32")
    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> head = BaselineClassifier(hidden_sizes=(32,), max_epochs=20, random_state=0)
    >>> head.fit(X, Y).predict_proba(X[:3]).shape
    (3, 2)
    >>> head.predict(X[:3]).shape
    (3, 2)
    >>> len(head.net_.history)
    20
    """

    def __init__(
        self,
        *,
        hidden_sizes=(512, 256),
        dropout=0.3,
        noise_std=0.01,
        lr=1e-3,
        weight_decay=1e-2,
        max_epochs=30,
        batch_size=64,
        lr_schedule="cosine",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        pos_weight=None,
        threshold=0.5,
        callbacks=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        store_params(self, locals())

    def _module_class(self):
        from .nn import BaselineMLP

        return BaselineMLP


class ConcatFusionClassifier(PromptFusionClassifier):
    __doc__ = f"""Image branch + prompt branch, concatenated, then a classifier MLP.

    Trains a :class:`skclipxray.nn.ConcatFusionMLP`: the image embedding and
    the flattened prompt mega-vector each go through ``Linear -> ReLU ->
    BatchNorm1d -> Dropout`` layers; the two outputs are concatenated and
    classified by an MLP. The mega-vector is fixed (a buffer of the module,
    never trained) and identical for every image.

    Parameters
    ----------
{PROMPTS_PARAMETER}
    hidden_sizes : tuple of int, default=(512, 256)
        Widths of the image branch's layers.
    prompt_hidden_sizes : tuple of int, optional
        Widths of the prompt branch's layers; by default ``hidden_sizes``.
    fusion_hidden_sizes : tuple of int, default=(256,)
        Hidden layers of the classifier after the concatenation.
{TRAINING_PARAMETERS}

    Attributes
    ----------
{ATTRIBUTES}
{PROMPT_ATTRIBUTE}

    See Also
    --------
    BaselineClassifier, WeightedSumClassifier

    Notes
    -----
    The mega-vector is the same for every image, so the prompt branch gives
    the same output for every sample: a learned constant input to the
    classifier, computed from the prompts. This is the architecture as the
    method describes it, but for one detail: batch statistics of a
    batch-constant input have zero variance, so the prompt branch's batch
    norm layers normalise with fixed statistics (a learned scale and shift).
    Ordinary batch norm there makes its weights drift on rounding noise
    (which differs between thread counts) and, at evaluation, divides the
    lag of its running mean by ``sqrt(eps)``, so that predictions depended
    on the thread count far beyond rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.classifiers import ConcatFusionClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 16)).astype("float32")
    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> prompts = rng.normal(size=(2, 8))  # one embedding per label
    >>> head = ConcatFusionClassifier(prompts, hidden_sizes=(32,),
    ...                               fusion_hidden_sizes=(16,), random_state=0)
    >>> head.fit(X, Y).predict_proba(X[:3]).shape
    (3, 2)
    """

    _parameter_constraints: dict = {
        **PromptFusionClassifier._parameter_constraints,
        "prompt_hidden_sizes": [None, *SIZES],
        "fusion_hidden_sizes": SIZES,
    }

    def __init__(
        self,
        prompts=None,
        *,
        hidden_sizes=(512, 256),
        prompt_hidden_sizes=None,
        fusion_hidden_sizes=(256,),
        dropout=0.3,
        noise_std=0.01,
        lr=1e-3,
        weight_decay=1e-2,
        max_epochs=30,
        batch_size=64,
        lr_schedule="cosine",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        pos_weight=None,
        threshold=0.5,
        callbacks=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        store_params(self, locals())

    def _layer_sizes(self):
        prompt_sizes = self.prompt_hidden_sizes
        return {
            **super()._layer_sizes(),
            "prompt_hidden_sizes": None
            if prompt_sizes is None
            else check_hidden_sizes(prompt_sizes, "prompt_hidden_sizes"),
            "fusion_hidden_sizes": check_hidden_sizes(
                self.fusion_hidden_sizes, "fusion_hidden_sizes"
            ),
        }

    def _module_class(self):
        from .nn import ConcatFusionMLP

        return ConcatFusionMLP


class WeightedSumClassifier(PromptFusionClassifier):
    __doc__ = f"""Learned element-wise mix of image and prompts, then an MLP.

    Trains a :class:`skclipxray.nn.WeightedSumMLP`: the flattened prompt
    mega-vector is projected to the image size (``Linear -> ReLU``), mixed
    with the image embedding as ``w_img * image + w_prompt * prompt`` (two
    learned vectors), and the result goes through baseline-style hidden
    layers. The mega-vector is fixed (a buffer, never trained).

    Parameters
    ----------
{PROMPTS_PARAMETER}
{HIDDEN_SIZES_PARAMETER}
{TRAINING_PARAMETERS}

    Attributes
    ----------
{ATTRIBUTES}
{PROMPT_ATTRIBUTE}

    See Also
    --------
    BaselineClassifier, ConcatFusionClassifier

    Notes
    -----
    The mega-vector is the same for every image, so ``w_prompt *
    projected_prompt`` is a learned shift of the image features, initialised
    from the prompts, shared by all samples.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray.classifiers import WeightedSumClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 16)).astype("float32")
    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> prompts = rng.normal(size=(2, 8))  # one embedding per label
    >>> head = WeightedSumClassifier(prompts, hidden_sizes=(32,), random_state=0)
    >>> head.fit(X, Y).net_.module_.w_img.shape
    torch.Size([16])
    """

    def __init__(
        self,
        prompts=None,
        *,
        hidden_sizes=(512, 256),
        dropout=0.3,
        noise_std=0.01,
        lr=1e-3,
        weight_decay=1e-2,
        max_epochs=30,
        batch_size=64,
        lr_schedule="cosine",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        pos_weight=None,
        threshold=0.5,
        callbacks=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        store_params(self, locals())

    def _module_class(self):
        from .nn import WeightedSumMLP

        return WeightedSumMLP
