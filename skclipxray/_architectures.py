"""What differs between the model families skclipxray loads, one object per family.

Every family is a transformers model class whose checkpoints hold an image
tower and, but for image-only ones, a text tower. What the rest of the
library needs of one (the image embedding, the text embedding and its
tokenisation rules, how image-text logits become probabilities) is answered
here, so that the loader, the embedders and the zero-shot classifier stay
the same for all:

================  ==============  ===================================  ==========================
model type        class           image embedding                      text, scoring
================  ==============  ===================================  ==========================
``siglip``        SiglipModel     attention-pooled output              padded to max length, no
                                                                       mask; sigmoid with bias
``siglip2``       Siglip2Model    attention-pooled output (NaFlex      padded to max length (64),
                                  patches, aspect ratio kept)          mask; sigmoid with bias
``clip``          CLIPModel       projected CLS token                  padded to the longest,
                                                                       mask, EOS pooled; softmax
``dinov2``        Dinov2Model     layer-normed CLS token               none (image only)
================  ==============  ===================================  ==========================
"""

from dataclasses import dataclass

__all__ = [
    "ARCHITECTURES", "Architecture", "architecture_of", "image_encoder", "logit_scale_and_bias",
]


@dataclass(frozen=True)
class Architecture:
    """One model family.

    Attributes
    ----------
    model_type : str
        ``config.model_type`` of its checkpoints.
    class_name : str
        The transformers class that loads them.
    has_text : bool
        Whether its checkpoints have a text tower.
    scoring : {"sigmoid", "softmax", None}
        How the model turns image-text logits into probabilities: SigLIP's
        sigmoid per pair (trained with a sigmoid loss, it has a bias), or
        CLIP's softmax over the texts (trained contrastively, no bias).
    pad_to_max_length : bool
        Whether prompts are padded to the full text length (SigLIP's text
        towers pool the last position, and were trained so) rather than to
        the longest prompt of the batch.
    text_attention_mask : bool
        Whether the text tower is given the tokenizer's attention mask.
        ``SiglipModel``'s own forward pass is not.
    image_output : str
        What the image embedding is, as the cache namespace records it.
    """

    model_type: str
    class_name: str
    has_text: bool
    scoring: str
    pad_to_max_length: bool
    text_attention_mask: bool
    image_output: str

    def embedding_dim(self, config):
        """Length of the image (and text) embeddings of a checkpoint of this family."""
        if self.model_type == "clip":
            return config.projection_dim
        if self.model_type == "dinov2":
            return config.hidden_size
        return config.vision_config.hidden_size

    def max_text_length(self, config, tokenizer):
        """Token length prompts are cut to: the tokenizer's, within the model's."""
        positions = config.text_config.max_position_embeddings
        # Tokenizers without a stated limit report a huge sentinel value.
        return min(tokenizer.model_max_length, positions)

    def tokenize(self, tokenizer, prompts, max_length):
        """The text tower's input for ``prompts``, as torch tensors."""
        tokens = tokenizer(
            list(prompts),
            padding="max_length" if self.pad_to_max_length else "longest",
            truncation=True,
            max_length=max_length,
            padding_side="right",
            return_tensors="pt",
        )
        names = ("input_ids", "attention_mask") if self.text_attention_mask else ("input_ids",)
        return {name: tokens[name] for name in names}


#: The families skclipxray loads, by ``config.model_type``.
ARCHITECTURES = {
    architecture.model_type: architecture
    for architecture in (
        Architecture("siglip", "SiglipModel", True, "sigmoid", True, False,
                     "vision_model.pooler_output"),
        Architecture("siglip2", "Siglip2Model", True, "sigmoid", True, True,
                     "vision_model.pooler_output"),
        Architecture("clip", "CLIPModel", True, "softmax", False, True,
                     "visual_projection(vision_model.pooler_output)"),
        Architecture("dinov2", "Dinov2Model", False, None, False, False,
                     "pooler_output"),
    )
}


def architecture_of(config, name):
    """The :class:`Architecture` of a checkpoint's configuration.

    Raises
    ------
    ValueError
        Naming the checkpoint, its model type and the families supported.
    """
    found = ARCHITECTURES.get(getattr(config, "model_type", None))
    if found is None or (found.has_text and getattr(config, "text_config", None) is None):
        supported = ", ".join(f"{a.class_name} ({t!r})" for t, a in ARCHITECTURES.items())
        raise ValueError(
            f"The checkpoint {name!r} is a {type(config).__name__} "
            f"(model_type={getattr(config, 'model_type', None)!r}); skclipxray loads "
            f"full checkpoints of {supported}."
        )
    return found


def image_encoder(model, architecture):
    """A torch module from the model's image input to its image embedding.

    Only the image tower (and CLIP's projection) is held, so that
    ``torch.compile`` and int8 quantization work on the image path alone.
    """
    import torch

    class ImageEncoder(torch.nn.Module):
        """``forward(**inputs)`` returns the pooled image embedding, (n, d)."""

        def __init__(self):
            super().__init__()
            if architecture.model_type == "dinov2":
                self.tower = model
            else:
                self.tower = model.vision_model
            if architecture.model_type == "clip":
                self.projection = model.visual_projection

        def forward(self, **inputs):
            pooled = self.tower(**inputs).pooler_output
            if architecture.model_type == "clip":
                return self.projection(pooled)
            return pooled

    return ImageEncoder()


def logit_scale_and_bias(model):
    """The model's ``logit_scale`` and ``logit_bias`` (0 for CLIP, which has none), as floats.

    Python floats, not tensors: a fitted estimator must not hold torch
    objects (pickles stay small and load on machines without a GPU).
    """
    bias = getattr(model, "logit_bias", None)
    return (
        float(model.logit_scale.detach().float().item()),
        0.0 if bias is None else float(bias.detach().float().item()),
    )
