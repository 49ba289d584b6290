"""Classify chest X-rays with frozen SigLIP features, the scikit-learn way."""

from ._backbone import DEFAULT_MODEL, ModelNotAvailableError, load_backbone
from .classifiers import BaselineClassifier, ConcatFusionClassifier, WeightedSumClassifier
from .embedders import SigLIPImageEmbedder
from .images import ImageReadError, read_image
from .labels import NIH_PATHOLOGIES
from .prompts import DEFAULT_TEMPLATES, NEGATIVE_TEMPLATES, PromptEnsembleEmbedder
from .zeroshot import ZeroShotClassifier

__version__ = "0.1.0"

__all__ = [
    "BaselineClassifier",
    "ConcatFusionClassifier",
    "DEFAULT_MODEL",
    "DEFAULT_TEMPLATES",
    "ImageReadError",
    "ModelNotAvailableError",
    "NEGATIVE_TEMPLATES",
    "NIH_PATHOLOGIES",
    "PromptEnsembleEmbedder",
    "SigLIPImageEmbedder",
    "WeightedSumClassifier",
    "ZeroShotClassifier",
    "load_backbone",
    "read_image",
]
