"""The model's input from an image: the checkpoint's image processor, or its fast twins.

The input of one image is a dict of NumPy arrays, named as the image tower
takes them: ``pixel_values`` (3, H, W) for SigLIP, CLIP and DINOv2; for
SigLIP 2's variable-resolution processor, also ``pixel_attention_mask``
and ``spatial_shapes`` (its patches, padded to a fixed number, keep the
image's aspect ratio). Images of a batch stack key by key. With
device-side preprocessing
(:class:`~skclipxray._device_preprocessing.DevicePreprocessor`), it is the
decoded uint8 image instead, resized and normalised on the device.

Every preprocessor has the same three members, which is all the engine
uses: ``grayscale`` (whether the reader may hand it a one-plane ``"L"``
image), a call from an image to its input, and ``to_device``, from the
inputs of a batch to the tower's tensors on a device.
"""

import threading

import numpy as np

__all__ = [
    "PREPROCESS_MODES",
    "PilPreprocessor",
    "ProcessorInputs",
    "fast_path_problem",
    "preprocess_mode",
    "preprocessor",
    "resolve_preprocess",
    "stack_inputs",
]

#: Where images are resized and normalised: ``preprocess=`` of the embedders.
PREPROCESS_MODES = ("auto", "cpu", "device")

_LOCK = threading.Lock()


def fast_path_problem(processor):
    """Why ``processor`` is not a plain resize-rescale-normalise PIL processor, or ``None``.

    The reason is a phrase, for error messages ("centre-crops the image").
    """
    size = getattr(processor, "size", None)
    checks = (
        (getattr(processor, "backend", None) == "pil", "is not Pillow-based"),
        (not getattr(processor, "do_center_crop", False), "centre-crops the image"),
        (not getattr(processor, "do_pad", False), "pads the image"),
        (bool(getattr(processor, "do_resize", False)), "does not resize"),
        (getattr(size, "height", None) is not None and getattr(size, "width", None) is not None,
         "does not resize to a fixed height and width (it keeps the aspect ratio, or cuts "
         "patches)"),
        (isinstance(getattr(processor, "resample", None), int), "has no Pillow filter"),
        (bool(getattr(processor, "do_rescale", False)), "does not rescale"),
        (bool(getattr(processor, "do_normalize", False)), "does not normalise"),
        (np.size(getattr(processor, "image_mean", ())) in (1, 3)
         and np.size(getattr(processor, "image_std", ())) in (1, 3),
         "has no per-channel mean and std"),
    )
    return next((why for ok, why in checks if not ok), None)


def _mean_std(processor):
    """The processor's mean and std, as float32 arrays of 3."""
    return tuple(
        np.broadcast_to(np.asarray(values, dtype=np.float32), 3).copy()
        for values in (processor.image_mean, processor.image_std)
    )


def _stack_to_device(arrays, device):
    """Arrays of one shape, stacked along a new first axis, as a tensor on ``device``.

    On CUDA they are stacked straight into pinned (page-locked) memory, one
    copy, and sent asynchronously: the copy to the GPU overlaps what the
    CPU does next.
    """
    import torch

    if device.type != "cuda":
        return torch.from_numpy(np.stack(arrays)).to(device)
    first = arrays[0]
    host = torch.empty((len(arrays), *first.shape), dtype=torch.from_numpy(first[:0]).dtype,
                       pin_memory=True)
    np.stack(arrays, out=host.numpy())
    return host.to(device, non_blocking=True)


class PilPreprocessor:
    """The arithmetic of a plain resize-rescale-normalise PIL image processor, faster.

    transformers' PIL backend turns the image into an array, back into a PIL
    image, resizes it with PIL, then rescales and normalises in float64 and
    float32. Resizing the image directly and mapping its uint8 values
    through a 256-entry table computed with the same operations gives
    bit-identical pixels for less CPU time, which matters on GPUs, where
    preprocessing is the bottleneck.

    A grayscale image is resized in one plane (mode ``"L"``) and the result
    replicated into the three channels: Pillow's resampling filters compute
    every channel of an RGB image with the same integer arithmetic as an
    ``"L"`` image, so the pixels are those of the RGB resize the processor
    does, for a third of the work.
    """

    #: The reader may give a one-plane image (see :func:`skclipxray.images._read_image`).
    grayscale = True

    def __init__(self, processor):
        self.size = (processor.size.width, processor.size.height)
        self.resample = int(processor.resample)
        levels = (np.arange(256, dtype=np.float64) * processor.rescale_factor).astype(np.float32)
        mean, std = _mean_std(processor)
        self.table = (levels[None, :] - mean[:, None]) / std[:, None]

    @classmethod
    def applies_to(cls, processor):
        """Whether ``processor`` is a plain resize-rescale-normalise PIL processor."""
        return fast_path_problem(processor) is None

    def __call__(self, image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        resized = np.asarray(image.resize(self.size, resample=self.resample))
        if resized.ndim == 2:  # one plane: every channel's table at once (and faster)
            return {"pixel_values": np.take(self.table, resized, axis=1)}
        return {"pixel_values": np.stack([self.table[c][resized[..., c]] for c in range(3)])}

    @staticmethod
    def to_device(inputs, device):
        """The tower's tensors of a batch: each array stacked, on ``device``."""
        return {name: _stack_to_device([one[name] for one in inputs], device)
                for name in inputs[0]}


class ProcessorInputs:
    """The checkpoint's own image processor, one RGB image at a time: every array it returns."""

    #: Processors take RGB images (SigLIP 2's fails on ``"L"``).
    grayscale = False
    to_device = staticmethod(PilPreprocessor.to_device)

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        outputs = self.processor(images=image, return_tensors="np")
        return {name: np.asarray(value)[0] for name, value in outputs.items()}


def resolve_preprocess(preprocess, device):
    """``"cpu"`` or ``"device"``: where ``preprocess`` resizes on ``device`` (a torch.device).

    ``"auto"`` is ``"device"`` on CUDA, where decoding on the CPU is the
    bottleneck and the GPU resizes for free, and ``"cpu"`` elsewhere (exact,
    and as fast as resizing with torch on the CPU).
    """
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(f"preprocess={preprocess!r} is not one of {PREPROCESS_MODES}.")
    if preprocess == "auto":
        return "device" if device.type == "cuda" else "cpu"
    return preprocess


def preprocess_mode(backbone, preprocess="cpu"):
    """Where a checkpoint's images are preprocessed: ``"cpu"`` or ``"device"``.

    ``"auto"`` resolves with :func:`resolve_preprocess` on the checkpoint's
    device, and falls back to ``"cpu"`` for a processor that is not a plain
    resize (it is then the processor itself).

    Raises
    ------
    ValueError
        For ``"device"`` with a processor that does more than a plain
        resize-rescale-normalise, or resizes with a filter torch lacks,
        naming the checkpoint, its processor and why.
    """
    from ._device_preprocessing import device_problem

    mode = resolve_preprocess(preprocess, backbone.device)
    if mode == "cpu":
        return mode
    processor = backbone.image_processor
    problem = device_problem(processor)
    if problem is None:
        return mode
    if preprocess == "auto":
        return "cpu"
    raise ValueError(
        f"preprocess='device' resizes and normalises images on the device, which only "
        f"reproduces a plain resize-rescale-normalise image processor; the image "
        f"processor of {backbone.name!r} ({type(processor).__name__}) {problem}. Use "
        "preprocess='cpu' (or 'auto', which falls back to it)."
    )


def preprocessor(backbone, preprocess="cpu"):
    """The preprocessor of a checkpoint, made once per checkpoint and mode.

    ``"cpu"``: the fast path (:class:`PilPreprocessor`) where it gives the
    processor's pixels exactly (a plain resize, rescale and normalise:
    SigLIP), the processor itself elsewhere (CLIP's and DINOv2's centre crop,
    SigLIP 2's patches). ``"device"``: a
    :class:`~skclipxray._device_preprocessing.DevicePreprocessor`. ``"auto"``
    as :func:`preprocess_mode` says.
    """
    mode = preprocess_mode(backbone, preprocess)
    key = ("preprocessor", mode)
    with _LOCK:
        found = backbone.derived.get(key)
    if found is None:
        processor = backbone.image_processor
        if mode == "device":
            from ._device_preprocessing import DevicePreprocessor

            found = DevicePreprocessor(processor)
        elif PilPreprocessor.applies_to(processor):
            found = PilPreprocessor(processor)
        else:
            found = ProcessorInputs(processor)
        with _LOCK:
            backbone.derived[key] = found
    return found


def stack_inputs(inputs):
    """One batch from the inputs of several images: each array stacked along a new first axis."""
    return {name: np.stack([one[name] for one in inputs]) for name in inputs[0]}
