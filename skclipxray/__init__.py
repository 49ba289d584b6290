"""Classify chest X-rays with frozen SigLIP features, the scikit-learn way."""

from ._backbone import DEFAULT_MODEL, ModelNotAvailableError, load_backbone
from .embedders import SigLIPImageEmbedder
from .images import ImageReadError, read_image
from .labels import NIH_PATHOLOGIES

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "ImageReadError",
    "ModelNotAvailableError",
    "NIH_PATHOLOGIES",
    "SigLIPImageEmbedder",
    "load_backbone",
    "read_image",
]
