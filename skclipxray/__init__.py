"""Classify chest X-rays with frozen SigLIP features, the scikit-learn way.

The public names are imported on first use (:pep:`562`): ``import skclipxray``
and ``skclipxray --help`` do not pay for scikit-learn, torch and transformers
until an estimator is asked for. ``from skclipxray import X`` works as usual,
and each class keeps its defining module (``skclipxray.classifiers``, ...),
the path under which saved models record it.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS = {
    "BaselineClassifier": "classifiers",
    "ConcatFusionClassifier": "classifiers",
    "DEFAULT_MODEL": "_backbone",
    "DEFAULT_TEMPLATES": "prompts",
    "ImageEmbedder": "embedders",
    "ImageReadError": "images",
    "ImageReadWarning": "images",
    "ModelNotAvailableError": "_backbone",
    "MultilabelCalibratedClassifierCV": "calibration",
    "MultilabelTunedThresholdClassifierCV": "thresholds",
    "NEGATIVE_TEMPLATES": "prompts",
    "NIH_PATHOLOGIES": "labels",
    "PromptEnsembleEmbedder": "prompts",
    "PromptSimilarity": "similarity",
    "SigLIPImageEmbedder": "embedders",
    "TextAnchoredClassifier": "text_anchored",
    "TipAdapterClassifier": "tip_adapter",
    "WeightedSumClassifier": "classifiers",
    "ZeroShotClassifier": "zeroshot",
    "load_backbone": "_backbone",
    "read_image": "images",
}

# Submodules reachable as attributes of the package, as after an eager import.
_SUBMODULES = (
    "cache",
    "calibration",
    "classifiers",
    "cli",
    "datasets",
    "embedders",
    "experiment",
    "images",
    "labels",
    "metrics",
    "models",
    "nn",
    "persistence",
    "plotting",
    "prompts",
    "similarity",
    "testing",
    "text_anchored",
    "thresholds",
    "tip_adapter",
    "zeroshot",
)

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
