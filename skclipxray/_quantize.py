"""Integer quantization of the vision tower, through torchao.

Only one scheme is offered, the one that pays on CPUs without bfloat16 units
(AVX-512 VNNI is enough): the linear layers of the vision tower get int8
weights (one scale per output channel) and quantize their input to int8 on
the fly (one scale per token), with torchao's
``Int8DynamicActivationInt8WeightConfig``. Attention, normalisation, the
activations between layers and the output projection of the pooling head
(an ``nn.MultiheadAttention``, which reads that weight directly) stay in the
tower's dtype. The int8 matrix products are fast only once ``torch.compile``
has fused them into oneDNN (or cuBLAS) integer kernels; run eagerly, they are
slower than float32.
"""

import copy
import importlib.util
import logging
import warnings
from contextlib import contextmanager

__all__ = [
    "QUANTIZE_MODES",
    "import_torchao_quietly",
    "quantization_identity",
    "quantized_copy",
]

#: What ``quantize=`` accepts, besides ``None``.
QUANTIZE_MODES = ("int8",)

_SCHEME = "Int8DynamicActivationInt8WeightConfig"


@contextmanager
def _quiet_loggers(*names):
    """Hide import-time warnings of optional kernels that cannot apply here.

    torchao's wheel ships CUDA extensions; importing it under a CPU build of
    torch logs a "Failed to load" warning for each, although nothing this
    module uses needs them.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def import_torchao_quietly():
    """Import torchao first, if installed, without its CUDA-extension warnings.

    transformers imports torchao whenever it is installed, as it loads any
    checkpoint; importing it here first keeps those warnings out of every
    model load on CPU builds of torch.
    """
    if importlib.util.find_spec("torchao") is not None:
        _torchao()


def _torchao():
    """Import torchao, or say how to install it."""
    try:
        with _quiet_loggers("torchao", "torch.utils._pytree"):
            import torchao
            import torchao.quantization

            try:  # what transformers imports of torchao besides the package
                import torchao.prototype.safetensors.safetensors_support  # noqa: F401
            except ImportError:
                pass
    except ImportError as exc:
        raise ImportError(
            "quantize='int8' needs torchao, which is not installed: "
            "pip install 'skclipxray[int8]' (or pip install torchao)."
        ) from exc
    return torchao


def quantization_identity(quantize):
    """What the cache must know of a quantization: its scheme and torchao's version.

    Parameters
    ----------
    quantize : {None, "int8"}

    Returns
    -------
    dict or None
        ``None`` for no quantization, so that float embeddings keep their
        cache entries.
    """
    if quantize is None:
        return None
    return {"mode": quantize, "scheme": _SCHEME, "torchao": _torchao().__version__}


def quantized_copy(module, quantize="int8"):
    """A copy of ``module`` whose linear layers are quantized; ``module`` is untouched.

    Parameters
    ----------
    module : torch.nn.Module
        Typically a SigLIP vision tower, in evaluation mode.
    quantize : {"int8"}, default="int8"

    Returns
    -------
    torch.nn.Module
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}.")
    torchao = _torchao()
    # A note for torch's compilation cache, once per process, not about results.
    warnings.filterwarnings(
        "ignore", message="Int8Tensor does not implement _stable_hash_for_caching",
        category=UserWarning,
    )
    # The original stays in float: the text tower and other estimators share it.
    quantized = copy.deepcopy(module)
    config = getattr(torchao.quantization, _SCHEME)()
    torchao.quantization.quantize_(quantized, config)
    return quantized
