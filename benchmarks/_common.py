"""What the benchmark scripts share: real radiographs, random checkpoints, a log."""

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE_FOLDERS = (REPO.parent / "shared/data/real-cxr", REPO / "tests/data/real-cxr")

#: XraySigLIP's vision tower (StanfordAIMI/XraySigLIP__vit-b-16-siglip-512__webli).
XRAYSIGLIP_VISION = dict(
    image_size=512, patch_size=16, hidden_size=768, intermediate_size=3072,
    num_hidden_layers=12, num_attention_heads=12,
)

_START = time.perf_counter()


def elapsed():
    """Seconds since the script started."""
    return time.perf_counter() - _START


def log(message):
    """Print ``message`` to stderr with the seconds since the script started."""
    print(f"[{elapsed():7.1f}s] {message}", file=sys.stderr, flush=True)


def nih_pngs(folder=None):
    """The 1024x1024 NIH PNGs of the first image folder that has some."""
    from PIL import Image

    for candidate in [folder] if folder else IMAGE_FOLDERS:
        candidate = Path(candidate)
        if not candidate.is_dir():
            continue
        found = []
        for path in sorted(candidate.glob("0*_0*.png")):
            with Image.open(path) as image:
                if image.size == (1024, 1024):
                    found.append(str(path))
        if found:
            return found
    raise SystemExit(f"No 1024x1024 NIH PNG found in {folder or IMAGE_FOLDERS}.")


def make_checkpoint(folder, vision=XRAYSIGLIP_VISION, seed=0):
    """A SigLIP checkpoint with the given vision tower and random weights.

    Tokenizer and image processor come from :func:`make_tiny_siglip` at the
    tower's input size (XraySigLIP's preprocessing); the text tower is one
    small layer, since only the vision tower is measured.
    """
    import torch
    from transformers import SiglipConfig, SiglipModel

    from skclipxray.testing import make_tiny_siglip

    folder = make_tiny_siglip(folder, image_size=vision["image_size"],
                              patch_size=vision["patch_size"])
    text = SiglipConfig.from_pretrained(folder).text_config.to_dict()
    text.update(hidden_size=vision["hidden_size"], intermediate_size=vision["hidden_size"],
                num_hidden_layers=1, num_attention_heads=vision["num_attention_heads"])
    config = SiglipConfig(text_config=text, vision_config=vision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def cpu_model():
    """The processor's model name (``lscpu``'s "Model name"), or the platform's guess."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
