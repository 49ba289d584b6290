"""Classify chest X-rays with frozen SigLIP features, the scikit-learn way."""

from ._backbone import DEFAULT_MODEL, ModelNotAvailableError, load_backbone

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "ModelNotAvailableError",
    "load_backbone",
]
