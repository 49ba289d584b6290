"""Device and dtype names, resolved and checked: for the backbone and the heads alike."""

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device="auto"):
    """Turn a device name into a :class:`torch.device`, checking it exists.

    Parameters
    ----------
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA, then MPS, then the CPU. ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` and ``"mps"`` are taken as given, but must be available.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the name is not a device, or the device is not available here.
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a device name; use 'auto', 'cpu', "
            "'cuda', 'cuda:N' or 'mps'."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on "
                "this machine; use device='auto' or 'cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist."
            )
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                f"device={device!r} was requested but MPS is not available on "
                "this machine; use device='auto' or 'cpu'."
            )
    elif resolved.type != "cpu":
        raise ValueError(
            f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda', "
            "'cuda:N' or 'mps'."
        )
    return resolved


def resolve_dtype(dtype, device):
    """Turn a dtype name into a :class:`torch.dtype` for ``device``.

    ``"auto"`` is float32 on the CPU (exact, and what most CPUs run fastest
    without bfloat16 units), bfloat16 on CUDA devices that support it (else
    float16), and float16 on MPS.

    Parameters
    ----------
    dtype : {"auto", "float32", "bfloat16", "float16"} or torch.dtype
    device : torch.device

    Returns
    -------
    torch.dtype
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype={dtype!r} is not one of {_DTYPE_NAMES}.")
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    return getattr(torch, dtype)
