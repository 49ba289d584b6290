"""Load a checkpoint once per process and share it.

Every estimator that needs the model (image embedder, prompt embedder,
zero-shot classifier) asks :func:`load_backbone` for it. One copy is kept per
``(checkpoint, device, dtype)``, so clones made by ``GridSearchCV`` and the
image and text embedders all share the same weights in memory. The model
families it loads (SigLIP, SigLIP 2, CLIP, image-only DINOv2) and what
differs between them are described in :mod:`skclipxray._architectures`.
"""

import functools
import logging
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._architectures import architecture_of, image_encoder
from ._device import resolve_device, resolve_dtype

__all__ = [
    "COMPILE_MODES",
    "DEFAULT_MODEL",
    "ModelNotAvailableError",
    "clear_backbone_cache",
    "load_backbone",
    "resolve_device",
    "resolve_dtype",
]

DEFAULT_MODEL = "StanfordAIMI/XraySigLIP__vit-b-16-siglip-512__webli"

#: ``torch.compile``'s modes, accepted by ``compile=``.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ModelNotAvailableError(OSError):
    """The checkpoint could not be found locally nor downloaded."""


@dataclass(eq=False)
class Backbone:
    """A loaded checkpoint with its preprocessing, on one device.

    Attributes
    ----------
    name : str
        The model id or folder it was loaded from.
    model : transformers.PreTrainedModel
        A ``SiglipModel``, ``Siglip2Model``, ``CLIPModel`` or
        ``Dinov2Model``, in evaluation mode, on ``device``, in ``dtype``.
    architecture : skclipxray._architectures.Architecture
        Its family, and what differs between families.
    device : torch.device
    dtype : torch.dtype
    derived : dict
        What is computed from the checkpoint and kept with it (cache
        namespaces, the preprocessing function, text embeddings), so that
        :func:`clear_backbone_cache` forgets it along with the checkpoint.
    """

    name: str
    model: object = field(repr=False)
    architecture: object
    device: object
    dtype: object
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _image_processor: object = field(default=None, repr=False)
    _tokenizer: object = field(default=None, repr=False)
    _image_encoders: dict = field(default_factory=dict, repr=False)
    derived: dict = field(default_factory=dict, repr=False)

    @property
    def embedding_dim(self):
        """Size of the image (and text) embeddings."""
        return self.architecture.embedding_dim(self.model.config)

    @property
    def image_processor(self):
        """The checkpoint's own image processor (loaded on first use)."""
        with self._lock:
            if self._image_processor is None:
                from transformers import AutoImageProcessor

                self._image_processor = _from_pretrained(
                    AutoImageProcessor, self.name
                )
        return self._image_processor

    @property
    def tokenizer(self):
        """The checkpoint's own tokenizer (loaded on first use)."""
        self.require_text()
        with self._lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = _from_pretrained(AutoTokenizer, self.name)
        return self._tokenizer

    def require_text(self):
        """Raise unless the checkpoint has a text tower (prompts and zero-shot need one)."""
        if not self.architecture.has_text:
            raise ValueError(
                f"The checkpoint {self.name!r} is an image-only "
                f"{self.architecture.class_name}: it has no text tower, so it cannot "
                "embed prompts nor score zero-shot. Use its image embeddings with a "
                "head that needs no text, e.g. BaselineClassifier, or "
                "TextAnchoredClassifier / TipAdapterClassifier with prompts=None."
            )

    def image_encoder(self, *, compile=None, quantize=None):
        """The image path of the model, quantized and compiled as asked, made once and shared.

        Parameters
        ----------
        compile : str or None, default=None
            A ``torch.compile`` mode, or ``None`` to run eagerly.
        quantize : {None, "int8"}, default=None
            See :func:`skclipxray._quantize.quantized_copy`. The float model
            is left as it is.

        Returns
        -------
        torch.nn.Module
            ``forward(**inputs)`` takes the image processor's output (as
            tensors) and returns the image embeddings, shape (n, d).
        """
        key = (compile, quantize)
        with self._lock:
            if (None, None) not in self._image_encoders:
                self._image_encoders[None, None] = image_encoder(self.model, self.architecture)
            if key not in self._image_encoders:
                encoder = self._image_encoders[None, None]
                if quantize is not None:
                    from ._quantize import quantized_copy

                    # Compiled in several modes, one quantized copy serves them all.
                    eager_key = (None, quantize)
                    if eager_key not in self._image_encoders:
                        self._image_encoders[eager_key] = quantized_copy(encoder, quantize)
                    encoder = self._image_encoders[eager_key]
                if compile is not None:
                    import torch

                    encoder = torch.compile(encoder, mode=compile)
                self._image_encoders[key] = encoder
        return self._image_encoders[key]


_BACKBONES = {}
_BACKBONES_LOCK = threading.Lock()




class _DefaultSiglipTokenIdsFilter(logging.Filter):
    """Drop transformers' warning about SigLIP's own default token ids.

    transformers builds throwaway default configurations (to diff against) whose
    CLIP-era defaults, bos 49406 and eos 49407, lie outside SigLIP's vocabulary,
    and warns about them on every load (huggingface/transformers#47612). SigLIP
    uses neither id.
    """

    _message = re.compile(r"Model config: (bos|eos)_token_id must be .* got 4940[67]\.")

    def filter(self, record):
        return not self._message.match(record.getMessage())


_TOKEN_IDS_FILTER = _DefaultSiglipTokenIdsFilter()


#: Seconds to wait for the Hugging Face hub before taking the machine as offline.
_HUB_PROBE_TIMEOUT = 3.0

_QUIET_LOCK = threading.Lock()
_quiet = {"depth": 0, "saved": None}


@contextmanager
def _quiet_transformers():
    """Hide transformers' progress bars and warnings while skclipxray loads a checkpoint.

    The library root logger ``transformers`` is raised to ERROR and the bars
    transformers draws (``Loading weights``) are replaced by silent ones, for
    the duration of the load only; the previous level and tqdm hook are put
    back after, so logging the caller configured for its own transformers
    work is untouched. Download bars belong to huggingface_hub and still
    show. What those warnings would report that matters (weights missing from
    the checkpoint) is checked by :func:`load_backbone` instead.
    """
    from transformers.utils import logging as hf_logging

    library = logging.getLogger("transformers")
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)  # transformers >= 5
    with _QUIET_LOCK:
        if _quiet["depth"] == 0:
            hook = None
            if set_hook is not None:
                hook = set_hook(lambda factory, args, kwargs: hf_logging.EmptyTqdm(*args, **kwargs))
            _quiet["saved"] = (library.level, hook)
            library.setLevel(logging.ERROR)
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                level, hook = _quiet["saved"]
                library.setLevel(level)
                if set_hook is not None:
                    set_hook(hook)


def _looks_like_path(name):
    """Whether ``name`` is meant as a local folder rather than a hub id ``org/model``."""
    if not isinstance(name, str):
        return True  # a path-like object
    separators = name.count("/") + (name.count("\\") if os.sep == "\\" else 0)
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or separators > 1
        or name.endswith(("/", os.sep))
    )


@functools.lru_cache(maxsize=None)
def _hub_reachable(endpoint):
    """Whether one HTTP request reaches the hub within a few seconds (asked once a process).

    huggingface_hub retries a failed connection five times with growing
    waits (about 20 s) before giving up; one short request, through its own
    HTTP session so that proxies apply, says at once whether trying is worth it.
    """
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=_HUB_PROBE_TIMEOUT)
    except Exception:  # any transport error: unreachable (an HTTP status is an answer)
        return False
    return True


def _offline(name):
    """True if ``name`` is a hub id and the hub cannot be reached from here."""
    if Path(name).is_dir():
        return False
    from huggingface_hub import constants

    offline_variable = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return (
        offline_variable or constants.HF_HUB_OFFLINE
        or not _hub_reachable(constants.ENDPOINT)
    )


def _in_local_hub_cache(name):
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # not a valid repo id
        return False


def _offline_message(name):
    return (
        f"Could not load the checkpoint {name!r}: it is not a local folder, it is "
        "not in the local Hugging Face cache, and it could not be downloaded "
        "(no network, or HF_HUB_OFFLINE=1). Download it once on a machine with "
        f"internet access, e.g. `hf download {name} --local-dir DIR`, then pass "
        "model=DIR (or copy the Hugging Face cache, HF_HOME, to this machine). "
        "On a machine without network, set HF_HUB_OFFLINE=1 so that the hub is "
        "not even tried."
    )


def _check_reachable(name):
    """Fail at once for a hub id that is neither cached here nor downloadable.

    Returns the keyword arguments for ``from_pretrained``: ``local_files_only``
    when the hub cannot be reached but the checkpoint is in the local cache.
    """
    if Path(name).is_dir():
        return {}
    if _looks_like_path(name):
        raise ModelNotAvailableError(
            f"The checkpoint folder {name!r} was not found "
            f"(looked for {str(Path(name).expanduser().absolute())!r}). Check the "
            "path, or give a Hugging Face model id such as "
            f"{DEFAULT_MODEL!r}."
        )
    if not _offline(name):
        return {}
    if _in_local_hub_cache(name):
        return {"local_files_only": True}
    raise ModelNotAvailableError(_offline_message(name))


def _from_pretrained(cls, name, **kwargs):
    """``cls.from_pretrained``, quietly, with a clear error when the files are not reachable."""
    kwargs = {**_check_reachable(name), **kwargs}
    try:
        # Never run code shipped with a checkpoint (transformers may otherwise
        # ask on the terminal and run it when the user says yes).
        with _quiet_transformers():
            return cls.from_pretrained(name, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        # transformers raises OSError for missing files and ValueError for a
        # config.json it cannot make sense of.
        folder = Path(name)
        if folder.is_dir() and any(folder.glob("*.bin")) and not any(
            folder.glob("*.safetensors")
        ):
            raise ModelNotAvailableError(
                f"{name!r} holds its weights only as a pickle (*.bin), which can run "
                "arbitrary code when loaded; skclipxray reads safetensors only. "
                "Convert the checkpoint where you trust it: "
                "model.save_pretrained(DIR) writes model.safetensors."
            ) from exc
        if folder.is_dir() or isinstance(exc, ValueError):
            raise ModelNotAvailableError(
                f"{name!r} is not a usable checkpoint: {exc}"
            ) from exc
        raise ModelNotAvailableError(_offline_message(name)) from exc


def _checkpoint_name(model):
    """Local folders are keyed by absolute path; hub ids are kept as they are."""
    path = Path(os.fspath(model)).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return os.fspath(model)


def _check_supported(name):
    """The configuration and :class:`~skclipxray._architectures.Architecture` of a checkpoint.

    ``from_pretrained`` of a model class on a checkpoint of another family,
    or on a vision-only one, does not fail: it silently fills what is
    missing with random weights. Reading the configuration first (no
    weights) prevents that.
    """
    from transformers import AutoConfig

    config = _from_pretrained(AutoConfig, name)
    try:
        return config, architecture_of(config, name)
    except ValueError as exc:
        raise ModelNotAvailableError(str(exc)) from None


def _check_complete(name, loading_info):
    """Refuse weights that do not fill the model: transformers would fill them at random."""
    problems = {
        "missing": loading_info.get("missing_keys") or [],
        "of the wrong shape": loading_info.get("mismatched_keys") or [],
    }
    found = {what: sorted(map(str, keys)) for what, keys in problems.items() if keys}
    if found:
        listed = "; ".join(
            f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for what, keys in found.items()
        )
        raise ModelNotAvailableError(
            f"The checkpoint {name!r} does not hold every weight of its model: "
            f"{listed}. Loading it would fill those weights at random."
        )


def _resolve(model, device, dtype):
    """``(name, device, dtype)`` as they key a checkpoint in this process."""
    resolved_device = resolve_device(device)
    return _checkpoint_name(model), resolved_device, resolve_dtype(dtype, resolved_device)


def _import_transformers_quietly():
    from ._quantize import import_torchao_quietly

    import_torchao_quietly()  # before transformers, which imports it noisily
    logging.getLogger("transformers.configuration_utils").addFilter(_TOKEN_IDS_FILTER)


@dataclass(frozen=True, eq=False)
class CheckpointInfo:
    """What embedding needs of a checkpoint before its weights are loaded.

    Its identity, precision, embedding size and image processor come from
    small files (``config.json``, the processor's configuration): enough to
    name the cache namespace, read and preprocess images, and serve a fully
    cached call without loading the model. :func:`load_backbone` loads the
    weights, on the first image that is not in the cache.

    Attributes
    ----------
    name : str
        The model id, or the folder's absolute path, as :func:`load_backbone`
        keys it.
    architecture : skclipxray._architectures.Architecture
    device : torch.device
    dtype : torch.dtype
    embedding_dim : int
    image_processor : transformers image processor
    derived : dict
        What is computed from the checkpoint and kept with it (cache
        namespaces, the preprocessing function, text embeddings), so that
        :func:`clear_backbone_cache` forgets it along with the checkpoint.
    """

    name: str
    architecture: object
    device: object
    dtype: object
    embedding_dim: int
    image_processor: object = field(repr=False)
    derived: dict = field(default_factory=dict, repr=False)


_CHECKPOINTS = {}
_CHECKPOINTS_LOCK = threading.Lock()


def checkpoint_info(model=DEFAULT_MODEL, *, device="auto", dtype="auto"):
    """The :class:`CheckpointInfo` of ``model``, read once a process, without the weights.

    Device, dtype and name resolve as in :func:`load_backbone`, so that what
    is derived from it (the cache namespace) is that of the model it loads.

    Raises
    ------
    ModelNotAvailableError
        As :func:`load_backbone`, for a checkpoint that cannot be found or is
        not a full checkpoint of a supported family with safetensors weights.
    """
    name, resolved_device, resolved_dtype = _resolve(model, device, dtype)
    key = (name, str(resolved_device), resolved_dtype)
    with _CHECKPOINTS_LOCK:
        found = _CHECKPOINTS.get(key)
        if found is None:
            _check_reachable(name)
            _import_transformers_quietly()
            from transformers import AutoImageProcessor

            config, architecture = _check_supported(name)
            folder = Path(name)
            if folder.is_dir() and not any(folder.glob("*.safetensors")):
                # No weights to identify nor to load: load_backbone says why.
                load_backbone(name, device=resolved_device, dtype=resolved_dtype)
            found = _CHECKPOINTS[key] = CheckpointInfo(
                name, architecture, resolved_device, resolved_dtype,
                embedding_dim=architecture.embedding_dim(config),
                image_processor=_from_pretrained(AutoImageProcessor, name),
            )
    return found


def load_backbone(model=DEFAULT_MODEL, *, device="auto", dtype="auto"):
    """Load (or reuse) a checkpoint: SigLIP, SigLIP 2, CLIP or DINOv2.

    Weights are read from safetensors only and remote code is never run. The
    checkpoint's configuration says its family (``model_type``), and the
    family's transformers class loads it.

    Parameters
    ----------
    model : str or path-like, default=DEFAULT_MODEL
        A Hugging Face model id or a local checkpoint folder.
    device : str, default="auto"
        See :func:`resolve_device`.
    dtype : str, default="auto"
        See :func:`resolve_dtype`.

    Returns
    -------
    Backbone
        The same object for every call with the same checkpoint, device and
        dtype in this process.

    Raises
    ------
    ModelNotAvailableError
        If the checkpoint cannot be found or downloaded, is not a full
        checkpoint of a supported family, or holds no safetensors weights.
    """
    name, resolved_device, resolved_dtype = _resolve(model, device, dtype)
    key = (name, str(resolved_device), resolved_dtype)
    with _BACKBONES_LOCK:
        backbone = _BACKBONES.get(key)
        if backbone is None:
            _check_reachable(name)  # before the slow imports
            _import_transformers_quietly()
            import transformers

            _, architecture = _check_supported(name)
            model, loading_info = _from_pretrained(
                getattr(transformers, architecture.class_name), name, use_safetensors=True,
                dtype=resolved_dtype, output_loading_info=True,
            )
            _check_complete(name, loading_info)
            model.to(resolved_device).eval()
            model.requires_grad_(False)
            backbone = Backbone(name, model, architecture, resolved_device, resolved_dtype)
            _BACKBONES[key] = backbone
    return backbone


def clear_backbone_cache():
    """Forget every loaded checkpoint (and what was read of it), so that its memory can be freed."""
    with _BACKBONES_LOCK:
        _BACKBONES.clear()
    with _CHECKPOINTS_LOCK:
        _CHECKPOINTS.clear()
