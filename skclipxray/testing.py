"""Helpers for tests and the offline demo: a tiny random SigLIP checkpoint.

The Hugging Face hub is not always reachable (air-gapped hospital networks, CI).
:func:`make_tiny_siglip` writes a complete checkpoint folder (config, safetensors
weights, image processor, tokenizer) that loads through exactly the same
``from_pretrained`` code path as the real XraySigLIP model, so every part of the
library can be exercised without a download. Its weights are random: embeddings
made with it carry no medical meaning.
"""

import zlib
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["HashPromptEmbedder", "demo_model", "make_synthetic_nih", "make_tiny_siglip"]

# Words the tiny tokenizer knows; anything else maps to "<unk>".
_VOCABULARY_TEXT = [
    "signs of atelectasis cardiomegaly effusion infiltration mass nodule",
    "indication of pneumonia pneumothorax consolidation edema emphysema",
    "evidence of fibrosis pleural thickening hernia no finding",
    "presence of a photo chest x-ray normal abnormal with without",
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
