"""The skorch net that trains the heads: :class:`skorch.NeuralNet` with a leaner step.

Imported lazily by :mod:`skclipxray.classifiers`, so that importing the
package does not import torch.
"""

from skorch import NeuralNet

__all__ = ["HeadNet"]


class HeadNet(NeuralNet):
    """:class:`skorch.NeuralNet` that switches train/eval mode only on a change.

    skorch sets the mode of every module and criterion, recursively, before
    every batch. For the heads' small networks that walk costs about 5% of a
    training step at batch size 64, so it is skipped when the top-level
    module and criterion are already in the requested mode. A callback that
    puts a submodule in another mode during an epoch (e.g. to freeze batch
    norm statistics) therefore keeps it so until the next switch between
    training and validation.
    """

    def _set_training(self, training=True):
        current = [
            getattr(self, name + "_").training
            for name in self._modules + self._criteria
            if hasattr(getattr(self, name + "_"), "training")
        ]
        if any(mode != training for mode in current):
            super()._set_training(training)
