"""The model's input from an image: the checkpoint's image processor, or its fast twins.

The input of one image is a dict of NumPy arrays, named as the image tower
takes them: ``pixel_values`` (3, H, W) for SigLIP, CLIP and DINOv2; for
SigLIP 2's variable-resolution processor, also ``pixel_attention_mask``
and ``spatial_shapes`` (its patches, padded to a fixed number, keep the
image's aspect ratio). Images of a batch stack key by key. With
device-side preprocessing (:class:`DevicePreprocessor`, at the end of this
module), it is the decoded uint8 image instead, resized and normalised on
the device.

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
    "device_problem",
    "fast_path_problem",
    "namespace_identity",
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
    :class:`DevicePreprocessor`. ``"auto"``
    as :func:`preprocess_mode` says.
    """
    mode = preprocess_mode(backbone, preprocess)
    key = ("preprocessor", mode)
    with _LOCK:
        found = backbone.derived.get(key)
    if found is None:
        processor = backbone.image_processor
        if mode == "device":
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


# Device-side preprocessing ------------------------------------------------------------
#
# Resize and normalise on the model's device: ``preprocess="device"``.
#
# On a GPU, decoding and resizing on the CPU bound the throughput long before
# the model does. Here the reader threads only decode, to uint8 (one plane
# for a grayscale image: a quarter of the bytes of the float32 input of the
# CPU path, at full resolution), and the forward step moves the batch to the
# device (through pinned memory, asynchronously, on CUDA) and resizes and
# normalises it there with torch.
#
# ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` uses
# Pillow's antialiased kernel (support widened by the scale, Keys' cubic with
# a = -0.5), in floating point where Pillow uses fixed point and rounds: the
# result is then rounded and clipped to 0..255 as Pillow's is, so most pixels
# equal the CPU path's and nearly all others differ by one grey level (a few,
# at sharp edges, by several). The embeddings are close to the CPU path's, not
# equal; they have their own cache namespace. ``benchmarks/bench_gpu.py``
# measures the agreement; ``tests/test_preprocessing.py`` bounds it.
#
# Images of different sizes are grouped by size within a batch, each group
# resized in one call: a data set's radiographs mostly share a few sizes, so
# this makes one or two calls per batch where resizing image by image would
# make one per image.





#: Version of the device-side resize; part of the cache namespace of its embeddings.
DEVICE_PREPROCESSING_VERSION = 1

# Pillow filters (by number) and torch's antialiased twin of each.
_TORCH_MODES = {3: "bicubic", 2: "bilinear"}


def device_problem(processor):
    """Why ``processor``'s preprocessing cannot run on the device, or ``None``."""
    problem = fast_path_problem(processor)
    if problem is None and int(processor.resample) not in _TORCH_MODES:
        problem = (
            f"resamples with Pillow filter {int(processor.resample)}, which torch's "
            "interpolate has no antialiased twin of (only bicubic and bilinear)"
        )
    return problem


def namespace_identity():
    """What the cache namespace records of device-side preprocessing."""
    return {"where": "device", "version": DEVICE_PREPROCESSING_VERSION}


class DevicePreprocessor:
    """Decode to uint8 on the CPU; resize, rescale and normalise on the device.

    Parameters
    ----------
    processor : transformers image processor
        A plain resize-rescale-normalise PIL processor (:func:`device_problem`
        says ``None``), as SigLIP's.
    """

    grayscale = True

    def __init__(self, processor):
        problem = device_problem(processor)
        if problem is not None:
            raise ValueError(f"{type(processor).__name__} {problem}.")
        self.size = (processor.size.height, processor.size.width)
        self.mode = _TORCH_MODES[int(processor.resample)]
        self.rescale_factor = float(processor.rescale_factor)
        self.mean, self.std = _mean_std(processor)

    def __call__(self, image):
        """The decoded image as uint8 (C, H, W), C = 1 for ``"L"`` images, else 3."""
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        pixels = np.asarray(image)
        return {"image": pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)}

    def to_device(self, inputs, device):
        """``{"pixel_values": (n, 3, H, W) float32}`` on ``device``, in the order of ``inputs``."""
        import torch

        images = [one["image"] for one in inputs]
        groups = {}
        for position, image in enumerate(images):
            groups.setdefault(image.shape, []).append(position)
        if len(groups) == 1:
            return {"pixel_values": self.resize(_stack_to_device(images, device))}
        out = torch.empty((len(images), 3, *self.size), dtype=torch.float32, device=device)
        for positions in groups.values():
            batch = _stack_to_device([images[p] for p in positions], device)
            out[torch.as_tensor(positions, device=device)] = self.resize(batch)
        return {"pixel_values": out}

    def resize(self, batch):
        """Resize (rounded and clipped as Pillow's), rescale, normalise a uint8 (n, C, H, W) batch."""
        import torch
        import torch.nn.functional as F

        resized = F.interpolate(
            batch.float(), size=self.size, mode=self.mode, antialias=True, align_corners=False,
        )
        resized = resized.round_().clamp_(0, 255).expand(-1, 3, -1, -1)
        mean = torch.as_tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return (resized * self.rescale_factor - mean) / std
