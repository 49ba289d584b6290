"""The machinery behind the trained heads of :mod:`skclipxray.classifiers`, in layers.

- :mod:`.base`: the scikit-learn estimator (parameters and their checks, the
  target, the loss, training and prediction), in numpy; torch is imported
  only when a head is fitted or loaded.
- :mod:`.net`: the torch side: the skorch net that trains a module of
  :mod:`skclipxray.nn`, and the batches it reads.
- :mod:`.state`: what a fitted head saves instead of its skorch net (plain
  data, no torch object), and the net rebuilt from it.

A new head subclasses :class:`.base.BaseHeadClassifier` (or
:class:`.base.PromptFusionClassifier`) in a public module, names its torch
module and declares its own parameters; the layers below need no change.
"""
