"""What a fitted head saves instead of its skorch net, and the net rebuilt from it.

skorch pickles a net's module, optimizer and criterion as a nested pickle,
which would run arbitrary code even from a skops file. A fitted head is
therefore saved as plain data (weights as numpy arrays, the history as lists
and dicts) and its net rebuilt when loaded, on the device it was fitted on
when available here, else on the CPU. The optimizer's state is not kept: it
is only needed to continue training, and ``fit`` always trains a fresh net.

The saved form (the keys of :func:`net_state`) is what skops files written
by earlier versions hold: it changes only with a way to read the old one.
"""

import warnings

import numpy as np

from .._device import resolve_device

__all__ = ["net_state", "plain", "restore_net"]


def plain(value):
    """Return ``value`` made of builtins and numpy arrays only (else TypeError)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.item() if value.ndim == 0 else value
    if hasattr(value, "detach"):  # a torch tensor
        from skorch.utils import to_numpy

        return plain(to_numpy(value))
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    raise TypeError(f"{type(value).__name__} is not plain data")


def _plain_history(history):
    """skorch's history (a list of dicts) without entries that are not plain data."""
    def entries(record):
        kept = {}
        for key, value in record.items():
            if key == "batches":
                kept[key] = [entries(batch) for batch in value]
                continue
            try:
                kept[key] = plain(value)
            except TypeError:
                pass  # e.g. an object a user's callback recorded
        return kept

    return [entries(record) for record in history]


def net_state(net):
    """The fitted net as plain data: its device, module arguments, weights and history."""
    params = net.get_params(deep=False)
    return {
        "device": str(net.device),
        "module_kwargs": {
            key[len("module__"):]: plain(value)
            for key, value in params.items()
            if key.startswith("module__")
        },
        "module_state": plain(dict(net.module_.state_dict())),
        "criterion_state": plain(dict(net.criterion_.state_dict())),
        "history": _plain_history(net.history),
    }


def restore_net(saved, build_net, owner):
    """Rebuild a fitted net from the plain data of :func:`net_state`.

    Parameters
    ----------
    saved : dict
        What :func:`net_state` returned, as loaded from a file.
    build_net : callable
        ``build_net(criterion_kwargs, module_kwargs, device)`` returns the
        (uninitialised) net, as ``fit`` builds it.
    owner : str
        Name of the head, for the warning when its device is missing here.

    Returns
    -------
    skorch.NeuralNet
    """
    import torch
    from skorch.history import History

    device = _loading_device(saved["device"], owner)
    criterion_kwargs = {
        key: torch.tensor(np.asarray(value))
        for key, value in saved["criterion_state"].items()
    }
    net = build_net(criterion_kwargs, saved["module_kwargs"], device)
    # Initialising draws random weights, replaced right after: keep the
    # caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        net.initialize()
    net.module_.load_state_dict({
        key: torch.tensor(np.asarray(value))
        for key, value in saved["module_state"].items()
    })
    net.history_ = History(saved["history"])
    return net


def _loading_device(fitted_on, owner):
    """Where a loaded head predicts: the device it was fitted on, else the CPU.

    skorch's ``get_map_location`` falls back only when CUDA is missing
    altogether; a head fitted on ``cuda:1`` or ``mps`` must load on a
    machine without that device too.
    """
    import torch
    from skorch.exceptions import DeviceWarning

    try:
        return resolve_device(fitted_on)
    except ValueError:
        warnings.warn(
            f"{owner} was fitted on device {fitted_on!r}, which is not available "
            "on this machine; it is loaded on the CPU.",
            DeviceWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
