"""Helpers for tests and the offline demo: a tiny random SigLIP checkpoint.

The Hugging Face hub is not always reachable (air-gapped hospital networks, CI).
:func:`make_tiny_siglip` writes a complete checkpoint folder (config, safetensors
weights, image processor, tokenizer) that loads through exactly the same
``from_pretrained`` code path as the real XraySigLIP model, so every part of the
library can be exercised without a download. Its weights are random: embeddings
made with it carry no medical meaning.
"""

from pathlib import Path

__all__ = ["make_tiny_siglip"]

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
    projection_size=None,
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
    projection_size : int, optional
        Unused by SigLIP (its towers share ``hidden_size``); kept for symmetry
        with CLIP-style configs and must be ``None``.
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

    if projection_size is not None:
        raise ValueError("SigLIP has no projection layer; leave projection_size=None.")
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
    model.save_pretrained(path, safe_serialization=True)

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
