"""Helpers for tests and the offline demo: tiny random checkpoints, synthetic data.

The Hugging Face hub is not always reachable (air-gapped hospital networks, CI).
:func:`make_tiny_siglip` writes a complete checkpoint folder (config, safetensors
weights, image processor, tokenizer) that loads through exactly the same
``from_pretrained`` code path as the real XraySigLIP model, so every part of the
library can be exercised without a download; :func:`make_tiny_clip`,
:func:`make_tiny_siglip2` and :func:`make_tiny_dinov2` do the same for the
other families. Its weights are random: embeddings
made with it carry no medical meaning.
"""

import zlib
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ._tiny_checkpoints import (
    _VOCABULARY_TEXT,
    make_tiny_clip,
    make_tiny_dinov2,
    make_tiny_siglip2,
)

__all__ = [
    "HashPromptEmbedder",
    "demo_model",
    "make_synthetic_nih",
    "make_tiny_clip",
    "make_tiny_dinov2",
    "make_tiny_siglip",
    "make_tiny_siglip2",
    "make_vision_language_world",
]



def _make_tokenizer(max_length):
    """A WordLevel tokenizer ending every sequence with ``</s>``, as SigLIP's does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    tokenizer.train_from_iterator(_VOCABULARY_TEXT, trainer=trainer)
    eos_id = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos_id)]
    )
    # SigLIP pads with the end-of-sequence token and pools the last position.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def make_tiny_siglip(
    path,
    *,
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_text_length=16,
    seed=0,
):
    """Write a tiny random SigLIP checkpoint to ``path``.

    The folder holds ``config.json``, ``model.safetensors``, the image
    processor and a tokenizer, saved with ``save_pretrained`` and loadable with
    ``SiglipModel.from_pretrained(path)`` / ``SiglipProcessor.from_pretrained(path)``
    offline. Preprocessing copies XraySigLIP's (bicubic resize, rescale 1/255,
    mean = std = 0.5) at a smaller ``image_size``.

    Parameters
    ----------
    path : str or path-like
        Folder to write; created if missing.
    image_size : int, default=32
        Side of the square input image, in pixels.
    patch_size : int, default=8
        Side of a ViT patch; must divide ``image_size``.
    hidden_size : int, default=32
        Width of both towers, which is also the embedding size.
    num_hidden_layers : int, default=2
        Transformer layers in each tower.
    num_attention_heads : int, default=2
        Attention heads in each layer.
    max_text_length : int, default=16
        Tokenizer and text-position limit.
    seed : int, default=0
        Seed of the random weights: the same seed writes the same weights.

    Returns
    -------
    path : pathlib.Path
        The folder written.

    Examples
    --------
    >>> import tempfile
    >>> from skclipxray.testing import make_tiny_siglip
    >>> folder = make_tiny_siglip(tempfile.mkdtemp())
    >>> sorted(p.name for p in folder.iterdir())[:2]
    ['config.json', 'model.safetensors']
    """
    import torch
    from transformers import (
        SiglipConfig,
        SiglipImageProcessorPil,
        SiglipModel,
        SiglipProcessor,
    )
    from transformers.utils import logging as transformers_logging

    if image_size % patch_size:
        raise ValueError(
            f"patch_size={patch_size} must divide image_size={image_size}."
        )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tokenizer = _make_tokenizer(max_text_length)
    shared = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
    )
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=max_text_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **shared,
        ),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **shared),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config)
    # Serialising compares with a default SiglipTextConfig, whose own token ids
    # make transformers warn about a vocabulary that is not ours.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model.save_pretrained(path)
    finally:
        transformers_logging.set_verbosity(verbosity)

    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=3,  # bicubic, as XraySigLIP
        rescale_factor=1 / 255,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        path
    )
    return path


def make_synthetic_nih(
    root,
    *,
    n_images=120,
    labels=None,
    image_size=64,
    prevalence=0.25,
    images_per_patient=2,
    seed=0,
):
    """Write a small NIH ChestX-ray14-like data set with a planted signal.

    The folder is laid out as the official download (``images/`` plus
    ``Data_Entry_2017_v2020.csv``), so every loader and command that takes an
    NIH root accepts it. Each image is a smooth grey "chest" with noise; each
    positive label adds a bright blob at a position of its own, so the labels
    are a known function of the pixels. The pictures are not radiographs: they
    exist to exercise the workflow, not to measure medicine.

    Parameters
    ----------
    root : str or path-like
        Folder to write; created if missing.
    n_images : int, default=120
        Number of images.
    labels : sequence of str, optional
        Label names; default: the 14 NIH pathologies.
    image_size : int, default=64
        Side of the square images, in pixels.
    prevalence : float, default=0.25
        Probability of each label, independently per image.
    images_per_patient : int, default=2
        Consecutive images share a patient id (follow-up 0, 1, ...).
    seed : int, default=0

    Returns
    -------
    metadata_path : pathlib.Path
        The written ``Data_Entry_2017_v2020.csv``.

    Examples
    --------
    >>> import tempfile
    >>> from skclipxray.testing import make_synthetic_nih
    >>> csv = make_synthetic_nih(tempfile.mkdtemp(), n_images=4, image_size=16)
    >>> csv.name
    'Data_Entry_2017_v2020.csv'
    """
    import numpy as np
    import pandas as pd
    from PIL import Image

    from .labels import NIH_PATHOLOGIES

    labels = list(NIH_PATHOLOGIES if labels is None else labels)
    rng = np.random.default_rng(seed)
    root = Path(root)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)

    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    background = 90 + 60 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.08)
    # One blob position per label, spread over the image.
    centres = rng.uniform(0.15, 0.85, size=(len(labels), 2))
    blobs = np.exp(
        -((xx[None] - centres[:, :1, None]) ** 2 + (yy[None] - centres[:, 1:, None]) ** 2)
        / 0.004
    )
    Y = rng.random((n_images, len(labels))) < prevalence

    rows = []
    for i in range(n_images):
        pixels = background + 120 * blobs[Y[i]].sum(axis=0)
        pixels += rng.normal(0, 12, size=pixels.shape)
        patient, follow_up = divmod(i, images_per_patient)
        name = f"{patient + 1:08d}_{follow_up:03d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(image_dir / name)
        findings = "|".join(label for label, on in zip(labels, Y[i]) if on)
        rows.append(
            {
                "Image Index": name,
                "Finding Labels": findings or "No Finding",
                "Follow-up #": follow_up,
                "Patient ID": patient + 1,
                "Patient Age": int(rng.integers(20, 80)),
                "Patient Gender": "MF"[int(rng.integers(0, 2))],
                "View Position": "PA" if rng.random() < 0.6 else "AP",
                "OriginalImage[Width": image_size,
                "Height]": image_size,
                "OriginalImagePixelSpacing[x": 0.143,
                "y]": 0.143,
            }
        )
    metadata_path = root / "Data_Entry_2017_v2020.csv"
    pd.DataFrame(rows).to_csv(metadata_path, index=False)
    return metadata_path


TINY = "tiny"
"""Model name that selects the tiny random checkpoint in demos and examples."""


def _tiny_checkpoint_dir():
    import os

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folder = cache / "skclipxray" / "tiny-siglip-seed0"
    if not (folder / "model.safetensors").exists():
        make_tiny_siglip(folder, seed=0)
    return folder


def demo_model(model=None):
    """Choose the checkpoint for the demo and the examples.

    In order: ``model`` if given, else the ``SKCLIPXRAY_MODEL`` environment
    variable, else XraySigLIP when it is already in the local Hugging Face
    cache, else the tiny random checkpoint (written once under
    ``~/.cache/skclipxray``). The name ``"tiny"`` always selects the tiny one.
    Nothing here touches the network.

    Parameters
    ----------
    model : str or path-like, optional

    Returns
    -------
    model : str
        A model id or local folder for ``model=`` parameters.
    is_random : bool
        True when the tiny random checkpoint was chosen: its embeddings carry
        no medical meaning.
    """
    import os

    from ._backbone import DEFAULT_MODEL

    model = model or os.environ.get("SKCLIPXRAY_MODEL")
    if model is None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(DEFAULT_MODEL, "config.json")
        model = DEFAULT_MODEL if isinstance(cached, str) else TINY
    if str(model) == TINY:
        return str(_tiny_checkpoint_dir()), True
    return str(model), False


class HashPromptEmbedder(TransformerMixin, BaseEstimator):
    """A stand-in for PromptEnsembleEmbedder: a fixed random vector per label name.

    For tests of the fusion heads that need prompts for any label set without
    a checkpoint. The vector of a label depends on its name only.

    Parameters
    ----------
    dim : int, default=6
        Size of each vector.
    default_labels : sequence of str, default=("a", "b", "c", "d", "e")
        Labels embedded when ``fit`` gets none (a multilabel y without names;
        five, as in scikit-learn's multilabel checks).

    Examples
    --------
    >>> prompts = HashPromptEmbedder(dim=3).fit_transform(["Mass", "Nodule"])
    >>> prompts.shape
    (2, 3)
    """

    def __init__(self, dim=6, default_labels=("a", "b", "c", "d", "e")):
        self.dim = dim
        self.default_labels = default_labels

    def fit(self, X=None, y=None):
        self.labels_ = list(self.default_labels if X is None else X)
        return self

    def transform(self, X=None):
        labels = self.labels_ if X is None else X
        return np.stack([
            np.random.default_rng(zlib.crc32(str(label).encode())).normal(size=self.dim)
            for label in labels
        ])


#: Label frequencies of the 112,120 images of NIH ChestX-ray14
#: (Data_Entry_2017_v2020.csv), in the order of ``NIH_PATHOLOGIES``.
_NIH_PREVALENCE = (
    0.1031, 0.0248, 0.1188, 0.1774, 0.0516, 0.0565, 0.0128,
    0.0473, 0.0416, 0.0205, 0.0224, 0.0150, 0.0302, 0.0020,
)

#: The ten most correlated label pairs of the same file, as correlations of a
#: Gaussian copula (the latent correlation that reproduces each pair's joint
#: frequency, rounded). Other pairs are independent in the synthetic world.
_NIH_LATENT_CORRELATION = {
    ("Pneumonia", "Edema"): 0.56,
    ("Pneumothorax", "Emphysema"): 0.51,
    ("Cardiomegaly", "Effusion"): 0.39,
    ("Atelectasis", "Effusion"): 0.37,
    ("Infiltration", "Edema"): 0.31,
    ("Atelectasis", "Consolidation"): 0.31,
    ("Mass", "Nodule"): 0.30,
    ("Infiltration", "Pneumonia"): 0.29,
    ("Effusion", "Consolidation"): 0.28,
    ("Fibrosis", "Pleural_Thickening"): 0.26,
}

# Geometry of the synthetic world, in units of the image noise's norm (1).
_IMAGE_OFFSET_NORM = 2.0  # two images have cosine about 0.8: one narrow cone
_TEXT_OFFSET_RATIO = 2.0  # two prompts have cosine 2**2 / (1 + 2**2) = 0.8


def make_vision_language_world(
    n_samples,
    *,
    n_features=768,
    n_labels=14,
    alignment=0.35,
    signal=2.0,
    norm_spread=0.25,
    world_seed=0,
    random_state=None,
):
    """Draw images and label prompts from a synthetic CLIP/SigLIP-like embedding world.

    The world mimics the geometry of a contrastive vision-language model, so
    that heads which use the label prompts can be compared with heads that do
    not, on embeddings whose labels are known:

    - **modality gap**: every image embedding is a shared image offset (norm
      2) plus isotropic noise (norm about 1; none along the text offset), so
      images share a narrow cone
      (cosine about 0.8 between two images); every prompt is a shared text
      offset plus a label-specific part (cosine 0.8 between two prompts). The
      two offsets are orthogonal: an image and a prompt have cosine about 0.
    - **images**: each label has a unit direction in image space; a positive
      label moves the image ``signal`` noise standard deviations (the noise's
      standard deviation along any one direction) along it. Each image is then
      multiplied by its own log-normal norm factor, as real embeddings vary
      in norm, so raw and L2-normalised features differ.
    - **prompts**: the text offset plus a unit vector at cosine ``alignment``
      with its label's direction, the rest a random direction orthogonal to
      every label direction and offset. ``alignment=0`` makes the text
      unrelated to the labels; ``alignment=1`` makes zero-shot classification
      as good as the best linear probe.
    - **labels**: the frequencies of the 14 NIH ChestX-ray14 pathologies,
      with the co-occurrence of its ten most correlated pairs (a Gaussian
      copula; Pneumonia and Edema, Pneumothorax and Emphysema, ...).

    All directions and offsets are exactly orthonormal (a QR factorisation),
    so a linear probe along a label's direction has ROC AUC
    ``Phi(signal / sqrt(2))`` for that label (0.92 by default) and zero-shot
    classification, which projects on the prompt, ``Phi(alignment * signal /
    sqrt(2))`` (0.69 at the defaults). The world (directions, offsets,
    prompts, scale and bias) depends on ``world_seed`` and the other world
    parameters only; ``random_state`` draws the images, so that a training
    and a test set come from the same world.

    The data are synthetic: they show how the heads use (or misuse) text, and
    nothing about clinical performance.

    Parameters
    ----------
    n_samples : int
        Number of images.
    n_features : int, default=768
        Embedding width; at least ``2 * n_labels + 2``.
    n_labels : int, default=14
        Number of labels: the first ``n_labels`` NIH pathologies, 1 to 14.
    alignment : float, default=0.35
        Cosine, in [-1, 1], between a prompt's label-specific part and its
        label's direction in image space.
    signal : float or array-like of shape (n_labels,), default=2.0
        Shift of a positive image along its label's direction, in noise
        standard deviations; one per label or one for all.
    norm_spread : float, default=0.25
        Standard deviation of the logarithm of the per-image norm factor.
    world_seed : int, default=0
        Seed of the world: label directions, offsets and prompts.
    random_state : int, numpy.random.Generator or None, default=None
        Seed of the images and labels drawn.

    Returns
    -------
    world : sklearn.utils.Bunch
        With

        - ``X``: ndarray of shape (n_samples, n_features), float32, the
          image embeddings (not normalised);
        - ``Y``: DataFrame of shape (n_samples, n_labels), 0/1 int, columns
          the NIH label names;
        - ``prompts``: ndarray of shape (n_labels, n_features), float32, one
          unit-norm text embedding per label;
        - ``logit_scale``, ``logit_bias``: floats; zero-shot logits are
          ``exp(logit_scale) * cos(image, prompt) + logit_bias`` (as SigLIP).
          The scale gives them unit standard deviation over images
          (``exp(logit_scale)`` is 139 at the defaults, of the order of a
          trained SigLIP's), the bias a mean probability equal to the mean
          label frequency;
        - ``labels``: list of the label names;
        - ``prevalence``: ndarray of shape (n_labels,), the label frequencies;
        - ``label_directions``: ndarray of shape (n_labels, n_features), the
          unit direction of each label in image space;
        - ``image_offset``, ``text_offset``: ndarrays of shape
          (n_features,), the shared offsets (each prompt minus
          ``text_offset`` points at cosine ``alignment`` from its label's
          direction).

    Examples
    --------
    >>> from skclipxray.testing import make_vision_language_world
    >>> train = make_vision_language_world(1000, random_state=0)
    >>> test = make_vision_language_world(500, random_state=1)
    >>> train.X.shape, train.Y.shape, train.prompts.shape
    ((1000, 768), (1000, 14), (14, 768))
    >>> bool((train.prompts == test.prompts).all())  # the same world
    True
    """
    import pandas as pd
    from scipy.optimize import brentq
    from scipy.special import expit
    from scipy.stats import norm
    from sklearn.utils import Bunch

    from .labels import NIH_PATHOLOGIES

    for name, value, low in (("n_samples", n_samples, 0), ("n_labels", n_labels, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    if n_labels > len(NIH_PATHOLOGIES):
        raise ValueError(
            f"n_labels must be at most {len(NIH_PATHOLOGIES)} (the NIH pathologies), "
            f"got {n_labels}."
        )
    if (
        isinstance(n_features, bool)
        or not isinstance(n_features, (int, np.integer))
        or n_features < 2 * n_labels + 2
    ):
        raise ValueError(
            f"n_features must be an int >= 2 * n_labels + 2 = {2 * n_labels + 2}, "
            f"got {n_features!r}."
        )
    if not -1 <= alignment <= 1:
        raise ValueError(f"alignment must be in [-1, 1], got {alignment!r}.")
    signal = np.asarray(signal, dtype=float)
    if signal.shape not in ((), (n_labels,)) or not np.isfinite(signal).all():
        raise ValueError(
            f"signal must be a finite number or {n_labels} of them (one per label), "
            f"got {signal!r}."
        )
    signal = np.broadcast_to(signal, (n_labels,))
    if not norm_spread >= 0:
        raise ValueError(f"norm_spread must be >= 0, got {norm_spread!r}.")

    labels = list(NIH_PATHOLOGIES[:n_labels])
    prevalence = np.array(_NIH_PREVALENCE[:n_labels])
    correlation = np.eye(n_labels)
    for (a, b), rho in _NIH_LATENT_CORRELATION.items():
        if a in labels and b in labels:
            i, j = labels.index(a), labels.index(b)
            correlation[i, j] = correlation[j, i] = rho

    # The world: orthonormal offsets, label directions and prompt remainders.
    world_rng = np.random.default_rng(world_seed)
    basis, _ = np.linalg.qr(world_rng.standard_normal((n_features, 2 + 2 * n_labels)))
    basis = basis.T
    image_direction, text_direction = basis[0], basis[1]
    directions, remainders = basis[2:2 + n_labels], basis[2 + n_labels:]
    specific = alignment * directions + np.sqrt(1 - alignment**2) * remainders
    text_norm = np.sqrt(1 + _TEXT_OFFSET_RATIO**2)
    prompts = (_TEXT_OFFSET_RATIO * text_direction + specific) / text_norm
    noise_sd = 1 / np.sqrt(n_features)  # along any one direction
    # cos(image, prompt) ~ the noise along the prompt's label-specific part,
    # over the image's norm: its standard deviation is 1 / scale.
    image_norm = np.sqrt(_IMAGE_OFFSET_NORM**2 + 1)
    scale = image_norm * text_norm * np.sqrt(n_features)
    mean_cos = alignment * signal * noise_sd * prevalence / (image_norm * text_norm)
    # The bias that makes the mean zero-shot probability the mean frequency,
    # the logits being normal with unit standard deviation (Gauss-Hermite).
    nodes, weights = np.polynomial.hermite_e.hermegauss(32)
    logit_bias = brentq(
        lambda b: weights @ expit(b + scale * mean_cos.mean() + nodes) / weights.sum()
        - prevalence.mean(),
        -50, 50,
    )

    # The images.
    rng = np.random.default_rng(random_state)
    latent = rng.standard_normal((n_samples, n_labels)) @ np.linalg.cholesky(correlation).T
    Y = (latent < norm.ppf(prevalence)).astype(np.int64)
    factor = np.exp(norm_spread * rng.standard_normal(n_samples)).astype(np.float32)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32)
    X *= np.float32(noise_sd)
    # The images vary in their own cone: no noise along the text offset, which
    # would shift every label's cosine alike and drown the label signal.
    text_direction32 = text_direction.astype(np.float32)
    X -= np.outer(X @ text_direction32, text_direction32)
    X += (_IMAGE_OFFSET_NORM * image_direction).astype(np.float32)
    X += (Y * (signal * noise_sd)).astype(np.float32) @ directions.astype(np.float32)
    X *= factor[:, None]

    return Bunch(
        X=X,
        Y=pd.DataFrame(Y, columns=labels),
        prompts=prompts.astype(np.float32),
        logit_scale=float(np.log(scale)),
        logit_bias=float(logit_bias),
        labels=labels,
        prevalence=prevalence,
        label_directions=directions,
        image_offset=_IMAGE_OFFSET_NORM * image_direction,
        text_offset=_TEXT_OFFSET_RATIO / text_norm * text_direction,
    )
