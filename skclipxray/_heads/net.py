"""The torch side of the heads: the skorch net and the batches it reads.

Imported when a head is fitted or loaded, never with the package: importing
skclipxray does not import torch.
"""

import itertools

import torch
from skorch import NeuralNet
from torch.torch_version import TorchVersion
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, SubsetRandomSampler

__all__ = ["ArrayDataset", "HeadNet", "batch_loader", "fused_optimizer_supported"]


class HeadNet(NeuralNet):
    """:class:`skorch.NeuralNet` that switches train/eval mode only on a change.

    skorch sets the mode of every module and criterion, recursively, before
    every batch. For the heads' small networks that walk is a noticeable part
    of a training step, so it is skipped when the top-level module and
    criterion are already in the requested mode. A callback that puts a
    submodule in another mode during an epoch (e.g. to freeze batch norm
    statistics) therefore keeps it so until the next switch between
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


class ArrayDataset:
    """Rows of in-memory arrays, fetched a whole batch at a time.

    skorch's own dataset goes through scikit-learn's generic indexing for
    every sample; X and y are always numpy arrays here, so one fancy
    indexing per batch does, at a fraction of the cost per step.
    """

    def __init__(self, X, y=None):
        self.X = X
        self.y = y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, rows):
        X = torch.from_numpy(self.X[rows])
        # skorch expects a target even at prediction time: an empty one.
        y = torch.empty(0) if self.y is None else torch.from_numpy(self.y[rows])
        return X, y


class _TrainingBatches(BatchSampler):
    """Batches of a new random order at every epoch, never ending on one sample.

    The order is drawn from torch's global RNG, which ``fit`` seeds in a
    forked RNG state. A last batch holding a single sample is left out of
    the epoch: batch norm cannot train on one sample.
    """

    def __init__(self, n_samples, batch_size):
        sampler = SubsetRandomSampler(range(n_samples), generator=torch.default_generator)
        super().__init__(sampler, batch_size, drop_last=False)
        self.drop_single = n_samples > batch_size and n_samples % batch_size == 1

    def __len__(self):
        return super().__len__() - self.drop_single

    def __iter__(self):
        return itertools.islice(super().__iter__(), len(self))


def batch_loader(dataset, *, batch_size, shuffle=False, **kwargs):
    """A DataLoader that fetches whole batches by fancy indexing.

    One indexing per batch replaces one per sample plus a collate step: much
    faster for embedding-sized rows. Training batches (``shuffle=True``)
    never end an epoch on a single sample.
    """
    n_samples = len(dataset)
    if shuffle and n_samples < 2:
        raise ValueError(
            f"Training needs at least 2 samples (batch norm); got {n_samples} "
            "sample after the validation split. Use more data or "
            "early_stopping=False."
        )
    if shuffle:
        batches = _TrainingBatches(n_samples, batch_size)
    else:
        batches = BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False)
    # A DataLoader draws a base seed from the global RNG unless given a
    # generator: prediction must not change the caller's random state.
    kwargs.setdefault("generator", torch.Generator())
    return DataLoader(dataset, sampler=batches, batch_size=None, **kwargs)


def fused_optimizer_supported(device):
    """Whether AdamW's fused kernel (much faster) exists: CUDA, and the CPU from torch 2.4."""
    return device.type == "cuda" or (
        device.type == "cpu" and TorchVersion(torch.__version__) >= (2, 4)
    )
