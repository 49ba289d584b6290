"""Resize and normalise on the model's device: ``preprocess="device"``.

On a GPU, decoding and resizing on the CPU bound the throughput long before
the model does. Here the reader threads only decode, to uint8 (one plane
for a grayscale image: a quarter of the bytes of the float32 input of the
CPU path, at full resolution), and the forward step moves the batch to the
device (through pinned memory, asynchronously, on CUDA) and resizes and
normalises it there with torch.

``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` uses
Pillow's antialiased kernel (support widened by the scale, Keys' cubic with
a = -0.5), in floating point where Pillow uses fixed point and rounds: the
result is then rounded and clipped to 0..255 as Pillow's is, so most pixels
equal the CPU path's and nearly all others differ by one grey level (a few,
at sharp edges, by several). The embeddings are close to the CPU path's, not
equal; they have their own cache namespace. ``benchmarks/bench_gpu.py``
measures the agreement; ``tests/test_preprocessing.py`` bounds it.

Images of different sizes are grouped by size within a batch, each group
resized in one call: a data set's radiographs mostly share a few sizes, so
this makes one or two calls per batch where resizing image by image would
make one per image.
"""

import numpy as np

from ._preprocessing import _mean_std, _stack_to_device, fast_path_problem

__all__ = ["DevicePreprocessor", "device_problem"]

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
