"""Tiny random CLIP, SigLIP 2 and DINOv2 checkpoints, written offline.

Each ``make_tiny_*`` function writes a complete checkpoint folder (config,
safetensors weights, preprocessing and, for the vision-language models, a
tokenizer) with ``save_pretrained``, so that ``from_pretrained(folder)`` reads
it back through the same code path as the real checkpoint of that family, with
``HF_HUB_OFFLINE=1``. The weights are random: embeddings made with them carry
no medical meaning. Each folder holds well under a megabyte and is written in
well under a second.

The tokenizers are real tokenizers of each family (``CLIPTokenizer``,
``Siglip2Tokenizer``) whose byte-pair merges are trained on a few words of
radiology prompts, so that they follow the family's rules (CLIP's BOS/EOS pair
and EOS padding, SigLIP 2's lower-casing and padding to a fixed length) with a
vocabulary of a few hundred tokens.
"""

from pathlib import Path

__all__ = ["make_tiny_clip", "make_tiny_dinov2", "make_tiny_siglip2"]

# The length SigLIP 2 was trained with, which ``Siglip2Processor`` pads to.
_SIGLIP2_TEXT_LENGTH = 64


# Words the tiny tokenizer knows; anything else maps to "<unk>".
_VOCABULARY_TEXT = [
    "signs of atelectasis cardiomegaly effusion infiltration mass nodule",
    "indication of pneumonia pneumothorax consolidation edema emphysema",
    "evidence of fibrosis pleural thickening hernia no finding",
    "presence of a photo chest x-ray normal abnormal with without",
]


def _train_merges(tokenizer, **trainer_kwargs):
    """Byte-pair merges of ``tokenizer``'s pipeline, learnt on the prompt words.

    Training goes through the tokenizer's own normaliser and pre-tokeniser, so
    the merges fit the family's rules (CLIP's ``</w>`` word ends, SigLIP 2's
    lower-casing and ``▁`` spaces).

    Returns
    -------
    vocab : dict of str to int
    merges : list of tuple of str
    """
    import json

    from tokenizers import trainers


    trainer = trainers.BpeTrainer(show_progress=False, **trainer_kwargs)
    tokenizer.backend_tokenizer.train_from_iterator(_VOCABULARY_TEXT, trainer=trainer)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


def _seeded_model(model_class, config, seed):
    """``model_class(config)`` with weights drawn from ``seed``, global RNG untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval()


def _save(model, processor, path):
    """Write ``model`` (safetensors) and ``processor`` into ``path``."""
    from transformers.utils import logging as transformers_logging

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Serialising compares each sub-config with the family's default one, whose
    # token ids make transformers warn about a vocabulary that is not ours.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model.save_pretrained(path)
    finally:
        transformers_logging.set_verbosity(verbosity)
    processor.save_pretrained(path)
    return path


def _tower_config(hidden_size, num_hidden_layers, num_attention_heads):
    return dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
    )


def _clip_tokenizer(max_length):
    """A ``CLIPTokenizer`` with CLIP's layout on a tiny vocabulary.

    As OpenAI's: the 256 byte symbols, the same with ``</w>``, the merges, then
    ``<|startoftext|>`` and ``<|endoftext|>`` last, so that EOS has the highest
    id. Every text is wrapped in BOS ... EOS and padded with EOS.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    _, merges = _train_merges(
        CLIPTokenizer(),
        vocab_size=1000,
        end_of_word_suffix="</w>",
        initial_alphabet=alphabet,
    )
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    tokens += ["".join(merge) for merge in merges]
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(tokens)},
        merges=merges,
        model_max_length=max_length,
    )


def make_tiny_clip(
    path,
    *,
    image_size=32,
    patch_size=8,
    hidden_size=32,
    projection_dim=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_text_length=77,
    seed=0,
):
    """Write a tiny random CLIP checkpoint to ``path``.

    The folder loads with ``CLIPModel.from_pretrained(path)`` (or
    ``AutoModel``) and ``CLIPProcessor.from_pretrained(path)`` (or
    ``AutoProcessor``) offline. Preprocessing is OpenAI CLIP's (bicubic resize
    of the shortest edge, centre crop, OpenAI mean and std) at a smaller
    ``image_size``. The text tower pools the first EOS token, whose id the
    config's ``eos_token_id`` gives, as CLIP's does.

    Parameters
    ----------
    path : str or path-like
        Folder to write; created if missing.
    image_size : int, default=32
        Shortest edge after resizing, and side of the square centre crop.
    patch_size : int, default=8
        Side of a ViT patch; must divide ``image_size``.
    hidden_size : int, default=32
        Width of both towers.
    projection_dim : int, default=16
        Size of the shared embedding, after each tower's projection; unlike
        ``hidden_size`` so that an unprojected feature shows in its shape.
    num_hidden_layers : int, default=2
        Transformer layers in each tower.
    num_attention_heads : int, default=2
        Attention heads in each layer.
    max_text_length : int, default=77
        Tokenizer and text-position limit (77, as CLIP's).
    seed : int, default=0
        Seed of the random weights: the same seed writes the same weights.

    Returns
    -------
    path : pathlib.Path
        The folder written.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import CLIPModel
    >>> folder = make_tiny_clip(tempfile.mkdtemp())
    >>> CLIPModel.from_pretrained(folder).config.projection_dim
    16
    """
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    if image_size % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide image_size={image_size}.")
    tokenizer = _clip_tokenizer(max_text_length)
    tower = _tower_config(hidden_size, num_hidden_layers, num_attention_heads)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=max_text_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **tower,
        ),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **tower),
        projection_dim=projection_dim,
    )
    model = _seeded_model(CLIPModel, config, seed)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(model, processor, path)


def make_tiny_siglip2(
    path,
    *,
    patch_size=16,
    max_num_patches=256,
    position_grid=4,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    logit_scale=2.302585092994046,
    logit_bias=-10.0,
    seed=0,
):
    """Write a tiny random SigLIP 2 (NaFlex) checkpoint to ``path``.

    The folder loads with ``Siglip2Model.from_pretrained(path)`` (or
    ``AutoModel``) and ``Siglip2Processor.from_pretrained(path)`` (or
    ``AutoProcessor``) offline. The NaFlex image processor resizes each image,
    keeping its aspect ratio, to at most ``max_num_patches`` patches of
    ``patch_size`` pixels, and pads the patch sequence to ``max_num_patches``.
    The tokenizer lower-cases and pads on the right to 64 tokens, as
    ``Siglip2Processor`` does by default.

    ``Siglip2Processor.__call__`` applies its own defaults (``patch_size=16``,
    ``max_num_patches=256``) over the image processor's saved values unless
    they are passed again; the defaults here are the same, so calling the
    processor and calling its image processor give the same patches.

    Parameters
    ----------
    path : str or path-like
        Folder to write; created if missing.
    patch_size : int, default=16
        Side of a patch, in pixels.
    max_num_patches : int, default=256
        Patch budget of each image, and length of the padded patch sequence.
    position_grid : int, default=4
        Side of the learnt grid of position embeddings, resized to each
        image's grid of patches.
    hidden_size : int, default=32
        Width of both towers, which is also the embedding size.
    num_hidden_layers : int, default=2
        Transformer layers in each tower.
    num_attention_heads : int, default=2
        Attention heads in each layer.
    logit_scale, logit_bias : float, default=log(10), -10
        The learnt temperature (as its log) and bias of the sigmoid logits;
        the defaults are SigLIP's initial values (transformers would set both
        to 0).
    seed : int, default=0
        Seed of the random weights: the same seed writes the same weights.

    Returns
    -------
    path : pathlib.Path
        The folder written.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import Siglip2Model
    >>> folder = make_tiny_siglip2(tempfile.mkdtemp())
    >>> Siglip2Model.from_pretrained(folder).config.model_type
    'siglip2'
    """
    import torch
    from transformers import (
        Siglip2Config,
        Siglip2ImageProcessorPil,
        Siglip2Model,
        Siglip2Processor,
        Siglip2Tokenizer,
    )

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # Gemma's ids 0 to 4
    vocab, merges = _train_merges(
        Siglip2Tokenizer(), vocab_size=200, special_tokens=specials
    )
    # Right padding, as the tokenizer.json of google/siglip2-*: the text tower
    # pools the last position, padding included.
    tokenizer = Siglip2Tokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=_SIGLIP2_TEXT_LENGTH,
        padding_side="right",
    )
    tower = _tower_config(hidden_size, num_hidden_layers, num_attention_heads)
    config = Siglip2Config(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=_SIGLIP2_TEXT_LENGTH,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **tower,
        ),
        vision_config=dict(
            patch_size=patch_size, num_patches=position_grid**2, **tower
        ),
    )
    model = _seeded_model(Siglip2Model, config, seed)
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
        model.logit_bias.fill_(logit_bias)
    image_processor = Siglip2ImageProcessorPil(
        patch_size=patch_size, max_num_patches=max_num_patches
    )
    processor = Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(model, processor, path)


def make_tiny_dinov2(
    path,
    *,
    image_size=28,
    shortest_edge=None,
    patch_size=14,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    seed=0,
):
    """Write a tiny random DINOv2 checkpoint (image only) to ``path``.

    The folder loads with ``Dinov2Model.from_pretrained(path)`` (or
    ``AutoModel``) and ``AutoImageProcessor.from_pretrained(path)`` offline;
    the image processor is DINOv2's ``BitImageProcessor`` (bicubic resize of
    the shortest edge to ``shortest_edge``, centre crop to ``image_size``,
    ImageNet mean and std). There is no text tower and no tokenizer, as in
    microsoft/rad-dino.

    Parameters
    ----------
    path : str or path-like
        Folder to write; created if missing.
    image_size : int, default=28
        Side of the square centre crop the model sees.
    shortest_edge : int, optional
        Shortest edge after resizing, before the crop; default ``image_size``.
    patch_size : int, default=14
        Side of a ViT patch (DINOv2's); must divide ``image_size``.
    hidden_size : int, default=32
        Width of the tower, which is also the embedding size.
    num_hidden_layers : int, default=2
        Transformer layers.
    num_attention_heads : int, default=2
        Attention heads in each layer.
    seed : int, default=0
        Seed of the random weights: the same seed writes the same weights.

    Returns
    -------
    path : pathlib.Path
        The folder written.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import Dinov2Model
    >>> folder = make_tiny_dinov2(tempfile.mkdtemp())
    >>> Dinov2Model.from_pretrained(folder).config.hidden_size
    32
    """
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if image_size % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide image_size={image_size}.")
    shortest_edge = image_size if shortest_edge is None else shortest_edge
    if shortest_edge < image_size:
        raise ValueError(
            f"shortest_edge={shortest_edge} must be at least image_size={image_size}, "
            "the side of the crop taken from the resized image."
        )
    config = Dinov2Config(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
    )
    model = _seeded_model(Dinov2Model, config, seed)
    image_processor = BitImageProcessorPil(
        size={"shortest_edge": shortest_edge},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )
    return _save(model, image_processor, path)
