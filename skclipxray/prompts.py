"""Label names as text embeddings: prompt templates through the SigLIP text tower.

Each label name becomes a phrase (``"Pleural_Thickening"`` -> ``"pleural
thickening"``), each phrase is written into every template (``"signs of {}"``),
and each prompt is embedded by the checkpoint's text tower. Following CheXzero's
prompt ensembling, the template embeddings of a label are L2-normalised,
averaged and normalised again, giving one unit vector per label.
"""

import os
import threading
from collections.abc import Mapping
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
# Private but stable since scikit-learn 1.2; needed to index pandas output by label.
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_is_fitted

from ._architectures import logit_scale_and_bias
from ._backbone import DEFAULT_MODEL, load_backbone
from ._validation import check_input_features, check_labels, check_templates
from .labels import label_to_phrase

__all__ = [
    "DEFAULT_TEMPLATES",
    "NEGATIVE_TEMPLATES",
    "PromptEnsembleEmbedder",
]

#: Templates averaged into one embedding per label (CheXzero-style ensembling).
DEFAULT_TEMPLATES = (
    "signs of {}",
    "indication of {}",
    "evidence of {}",
    "presence of {}",
)

#: Templates stating a finding is absent; pass them as ``negative_templates``
#: to score each label positive-versus-negative in zero-shot classification.
NEGATIVE_TEMPLATES = ("no {}", "no evidence of {}")

# Guards each loaded checkpoint's memo of unit-norm float32 prompt embeddings,
# keyed by the token length and the prompt text, and kept with the checkpoint
# (Backbone.derived) so that clones made by GridSearchCV or cross_validate
# never re-run the text tower.
_TEXT_EMBEDDINGS_LOCK = threading.Lock()


def _phrases(labels, mapping):
    return [label_to_phrase(label, mapping) for label in labels]


def _encode(backbone, prompts, batch_size):
    """Unit-norm text embeddings of ``prompts``, shape (n_prompts, d), float32.

    Tokenised as the checkpoint's family was trained
    (:meth:`~skclipxray._architectures.Architecture.tokenize`): SigLIP pads
    to the full length (its text tower pools the last position) and, as
    ``SiglipModel``'s own forward pass, gives no attention mask; SigLIP 2
    pads to the full length with a mask; CLIP pads to the longest prompt
    with a mask (it pools its end-of-text token).
    """
    import torch

    architecture, tokenizer = backbone.architecture, backbone.tokenizer
    max_length = architecture.max_text_length(backbone.model.config, tokenizer)
    with _TEXT_EMBEDDINGS_LOCK:
        memo = backbone.derived.setdefault("text_embeddings", {})
        missing = list(dict.fromkeys(p for p in prompts if (max_length, p) not in memo))
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        tokens = architecture.tokenize(tokenizer, batch, max_length)
        with torch.inference_mode():
            features = backbone.model.get_text_features(
                **{name: value.to(backbone.device) for name, value in tokens.items()}
            ).pooler_output.float()
            features = torch.nn.functional.normalize(features, dim=-1)
        with _TEXT_EMBEDDINGS_LOCK:
            for prompt, vector in zip(batch, features.cpu().numpy()):
                memo[max_length, prompt] = vector
    with _TEXT_EMBEDDINGS_LOCK:
        return np.stack([memo[max_length, p] for p in prompts])


def _ensemble(backbone, phrases, templates, batch_size):
    """One unit vector per phrase: normalised mean of its normalised prompts."""
    prompts = [template.format(phrase) for phrase in phrases for template in templates]
    encoded = _encode(backbone, prompts, batch_size).astype(np.float64)
    mean = encoded.reshape(len(phrases), len(templates), -1).mean(axis=1)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return (mean / np.maximum(norms, np.finfo(np.float64).tiny)).astype(np.float32)


class PromptEnsembleEmbedder(TransformerMixin, BaseEstimator):
    """Embed label names with the text tower of a frozen SigLIP checkpoint.

    Each label name becomes a phrase (``"Pleural_Thickening"`` -> ``"pleural
    thickening"``, or the phrase given in ``phrases``), the phrase fills every
    template, and each prompt is encoded by the text tower (padded to the
    model's maximum length, as SigLIP requires). The prompt embeddings of a
    label are L2-normalised, averaged over templates and normalised again.

    The checkpoint is the one :class:`~skclipxray.SigLIPImageEmbedder` loads,
    shared in memory. Prompt embeddings are computed once per checkpoint and
    prompt in a process, so clones (``GridSearchCV``, ``cross_validate``)
    reuse them.

    Parameters
    ----------
    model : str or path-like, default=DEFAULT_MODEL
        Hugging Face id or local folder of a SigLIP checkpoint with a text
        tower.
    templates : list of str, default=DEFAULT_TEMPLATES
        Format strings with one ``{}`` for the phrase, e.g. ``"signs of {}"``.
    negative_templates : list of str, optional
        Templates stating the finding is absent (e.g. ``NEGATIVE_TEMPLATES``:
        ``"no {}"``, ``"no evidence of {}"``); their ensembled embeddings are
        stored in ``negative_embeddings_`` for positive-versus-negative
        zero-shot scoring.
    phrases : dict, optional
        Label name -> phrase, overriding the automatic phrase of those labels.
    device : str, default="auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.
    dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Precision of the text tower; embeddings are always float32.
    batch_size : int, default=64
        Prompts per forward pass.

    Attributes
    ----------
    labels_ : list
        The label names, in the order of the rows of ``embeddings_``.
    phrases_ : list of str
        The phrase written into the templates for each label.
    embeddings_ : ndarray of shape (n_labels, n_features_out), float32
        Unit-norm ensembled prompt embedding of each label.
    negative_embeddings_ : ndarray of shape (n_labels, n_features_out), float32
        The same for ``negative_templates``; only set when they are given.
    n_features_out_ : int
        Size of the embeddings.
    mega_vector_ : ndarray of shape (n_labels * n_features_out,), float32
        ``embeddings_`` flattened row by row (label 0 first), the form a
        fusion head concatenates to image features.
    logit_scale_ : float
        The checkpoint's ``logit_scale``, as the model holds it: image-text
        logits are ``exp(logit_scale_) * cosine + logit_bias_``. The text-using
        estimators read it from here, so that a fitted embedder brings the
        checkpoint's own scale.
    logit_bias_ : float
        The checkpoint's ``logit_bias``; 0 for CLIP, which has none.
    scoring_ : {"sigmoid", "softmax"}
        How the checkpoint's family turns image-text logits into
        probabilities: SigLIP's sigmoid per pair, or CLIP's softmax over the
        texts (see :class:`~skclipxray.ZeroShotClassifier`).

    See Also
    --------
    skclipxray.ZeroShotClassifier : Scores images against these embeddings.

    Examples
    --------
    >>> import tempfile
    >>> from skclipxray.prompts import PromptEnsembleEmbedder
    >>> from skclipxray.testing import make_tiny_siglip
    >>> checkpoint = make_tiny_siglip(tempfile.mkdtemp())
    >>> embedder = PromptEnsembleEmbedder(checkpoint, device="cpu")
    >>> embedder.fit_transform(None).shape  # None: the 14 NIH pathologies
    (14, 32)
    >>> embedder.transform(["Mass", "Nodule"]).shape
    (2, 32)
    >>> embedder.mega_vector_.shape
    (448,)
    >>> embedder.set_output(transform="pandas").transform(["Hernia"]).index[0]
    'Hernia'
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        # Each template is checked by check_templates, which names the culprit.
        "templates": ["array-like"],
        "negative_templates": [None, "array-like"],
        "phrases": [None, Mapping],
        # A name or a torch device and dtype: load_backbone checks them.
        "device": "no_validation",
        "dtype": "no_validation",
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        templates=DEFAULT_TEMPLATES,
        negative_templates=None,
        phrases=None,
        device="auto",
        dtype="auto",
        batch_size=64,
    ):
        self.model = model
        self.templates = templates
        self.negative_templates = negative_templates
        self.phrases = phrases
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = False
        return tags

    def _check_templates(self):
        templates = check_templates(self.templates, "templates")
        negative = None
        if self.negative_templates is not None:
            negative = check_templates(self.negative_templates, "negative_templates")
        return templates, negative

    def _backbone(self):
        return load_backbone(self.model, device=self.device, dtype=self.dtype)

    def _embed(self, phrases, templates):
        return _ensemble(self._backbone(), phrases, templates, self.batch_size)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Embed the label names; nothing is trained.

        Parameters
        ----------
        X : list of str, optional
            Label names, e.g. the columns of a label DataFrame. ``None``
            means the 14 NIH ChestX-ray14 pathologies (``NIH_PATHOLOGIES``).
        y : ignored

        Returns
        -------
        self
        """
        templates, negative = self._check_templates()
        labels = check_labels(X)
        self.labels_ = labels
        self.phrases_ = _phrases(labels, self.phrases)
        self.embeddings_ = self._embed(self.phrases_, templates)
        if negative is not None:
            self.negative_embeddings_ = self._embed(self.phrases_, negative)
        elif hasattr(self, "negative_embeddings_"):
            del self.negative_embeddings_
        self.n_features_out_ = self.embeddings_.shape[1]
        backbone = self._backbone()
        self.logit_scale_, self.logit_bias_ = logit_scale_and_bias(backbone.model)
        self.scoring_ = backbone.architecture.scoring
        return self

    def transform(self, X):
        """Ensembled prompt embedding of each label name.

        Parameters
        ----------
        X : list of str or None
            Label names; ``None`` means the labels given to :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_labels, n_features_out), float32
            One unit-norm row per label. With ``set_output(transform="pandas")``
            a DataFrame indexed by label name.
        """
        check_is_fitted(self, "embeddings_")
        if X is None:
            labels, embeddings = self.labels_, self.embeddings_.copy()
        else:
            templates, _ = self._check_templates()
            labels = check_labels(X)
            embeddings = self._embed(_phrases(labels, self.phrases), templates)
        # The generic pandas wrapper knows no index for a list input: name the
        # rows by label here.
        if _get_output_config("transform", self)["dense"] == "pandas":
            import pandas as pd

            return pd.DataFrame(
                embeddings,
                index=pd.Index(labels, name="label"),
                columns=self.get_feature_names_out(),
            )
        return embeddings

    def fit_transform(self, X, y=None):
        """Fit on the label names and return their embeddings.

        Parameters
        ----------
        X : list of str or None
            Label names; ``None`` means the 14 NIH pathologies.
        y : ignored

        Returns
        -------
        ndarray of shape (n_labels, n_features_out), float32
        """
        return self.fit(X).transform(None)

    def get_feature_names_out(self, input_features=None):
        """Names of the embedding dimensions: ``prompt0``, ``prompt1``, ...

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            The name of the input column (the label names), as a
            :class:`~sklearn.compose.ColumnTransformer` passes it: ``None``
            or one name. It does not change the output names.

        Returns
        -------
        ndarray of str

        Raises
        ------
        ValueError
            If ``input_features`` does not name exactly one column.
        """
        check_is_fitted(self, "n_features_out_")
        check_input_features(input_features, "label names")
        return np.asarray(
            [f"prompt{i}" for i in range(self.n_features_out_)], dtype=object
        )

    @property
    def mega_vector_(self):
        """``embeddings_`` flattened into one (n_labels * d,) float32 vector."""
        check_is_fitted(self, "embeddings_")
        return self.embeddings_.reshape(-1)
