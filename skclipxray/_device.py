"""Device and dtype names, resolved and checked: for the backbone and the heads alike."""

__all__ = ["cpu_has_native_bfloat16", "resolve_device", "resolve_dtype"]

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


#: torch's probes (cpuinfo, read once, no timing) of the CPU features that
#: multiply bfloat16 in hardware, through oneDNN.
_BFLOAT16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_has_native_bfloat16():
    """Whether this CPU multiplies bfloat16 in hardware: AVX512-BF16 or AMX.

    Read from torch's CPU feature probes, which ask the CPU itself (its
    ``cpuid`` flags), not from a timing run. Where torch does not have a
    probe, the answer is no: float32 is always a safe choice.

    Returns
    -------
    bool
    """
    import torch

    return any(getattr(torch.cpu, name, lambda: False)() for name in _BFLOAT16_PROBES)


def resolve_dtype(dtype, device):
    """Turn a dtype name into a :class:`torch.dtype` for ``device``.

    ``"auto"`` follows the hardware. On the CPU it is bfloat16 where the CPU
    multiplies bfloat16 in hardware (AVX512-BF16 or AMX, see
    :func:`cpu_has_native_bfloat16`), about twice as fast as float32 there,
    with embeddings within a cosine of 0.9999 of float32's; float32
    elsewhere, where bfloat16 is emulated and several times slower. On CUDA
    devices it is bfloat16 where supported (else float16), and float16 on
    MPS. ``"float32"`` is exact everywhere. This is the precision of the
    checkpoint (image and text towers) only: the heads keep their own.

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
        return torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32
    return getattr(torch, dtype)
