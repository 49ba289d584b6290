"""PNG decoding and resizing cost per radiograph, on one core: Pillow and faster decoders.

Usage::

    python benchmarks/bench_decoders.py [--rounds N] [--output PREFIX]

On the real 1024x1024 NIH ChestX-ray14 PNGs (``../shared/data/real-cxr`` next
to the repository and ``tests/data/real-cxr``), measures milliseconds per
image, one thread, from the file's bytes in memory:

* Pillow decode; decode + bicubic resize to 512 px in RGB (what the reader
  and the fast path did before grayscale resizing) and in one plane
  (``"L"``, what they do now); the whole CPU path of the embedder before and
  after (reader + :class:`~skclipxray._preprocessing.PilPreprocessor`);
* the PNG decoders that ``pip`` could install here, of ``imagecodecs``
  (libpng and libspng), ``pyspng`` and ``opencv-python-headless``, each
  checked to give exactly Pillow's pixels on every image.

None of those decoders is a dependency of skclipxray: this says whether one
would be worth it. Every arm runs once per round, interleaved, and each
image's best round is kept (the machine may be shared). Results go to
``benchmarks/results/decoders.json`` and ``decoders.md``.
"""

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np
from _common import REPO, cpu_model, log, nih_pngs
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = (512, 512)


def radiographs():
    """The 1024x1024 NIH PNGs of the shared data and of tests/data, each file once."""
    found = {}
    for folder in (REPO.parent / "shared/data/real-cxr", REPO / "tests/data/real-cxr"):
        if folder.is_dir():
            try:
                for path in nih_pngs(folder):
                    found.setdefault(Path(path).name, path)
            except SystemExit:  # a folder without any
                pass
    if not found:
        raise SystemExit("No 1024x1024 NIH PNG found.")
    return sorted(found.values())


def pil_decode(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pil_array(data):
    return np.asarray(pil_decode(data))


def decoders():
    """``{name: (version, decode)}`` of the faster PNG decoders importable here, and the missing."""
    found, missing = {}, []
    try:
        import imagecodecs

        found["imagecodecs.png_decode (libpng)"] = (imagecodecs.__version__,
                                                    imagecodecs.png_decode)
        found["imagecodecs.spng_decode (libspng)"] = (imagecodecs.__version__,
                                                      imagecodecs.spng_decode)
    except ImportError:
        missing.append("imagecodecs")
    try:
        import pyspng

        found["pyspng.load (libspng)"] = (getattr(pyspng, "__version__", "?"), pyspng.load)
    except ImportError:
        missing.append("pyspng")
    try:
        import cv2

        cv2.setNumThreads(1)

        def opencv(data):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if image.ndim == 3:  # OpenCV's channel order is BGR(A)
                image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4
                                     else cv2.COLOR_BGR2RGB)
            return image

        found["cv2.imdecode (OpenCV)"] = (cv2.__version__, opencv)
    except ImportError:
        missing.append("opencv-python-headless")
    return found, missing


def library_arms():
    """The embedder's CPU path, reader + fast preprocessing, in RGB (before) and in one plane."""
    from skclipxray._preprocessing import PilPreprocessor
    from skclipxray.images import FileBytes, _read_image
    from transformers import SiglipImageProcessorPil

    preprocess = PilPreprocessor(SiglipImageProcessorPil(
        size={"height": SIZE[1], "width": SIZE[0]}, resample=3, rescale_factor=1 / 255,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    ))

    def run(grayscale):
        def arm(data):
            item = FileBytes("x.png", data, len(data), 0)
            return preprocess(_read_image(item, grayscale=grayscale))
        return arm

    return {"embedder CPU path before (RGB resize)": run(False),
            "embedder CPU path now (one-plane resize)": run(True)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", default=str(HERE / "results" / "decoders"),
                        help="path prefix of the .json and .md written")
    args = parser.parse_args()

    paths = radiographs()
    blobs = [Path(p).read_bytes() for p in paths]
    log(f"{len(paths)} NIH PNGs")
    modes = sorted({pil_decode(b).mode for b in blobs})

    arms = {
        "Pillow decode": pil_decode,
        "Pillow decode + RGB bicubic resize to 512": lambda b: pil_decode(b).convert("RGB").resize(
            SIZE, Image.Resampling.BICUBIC),
        "Pillow decode + L bicubic resize to 512": lambda b: pil_decode(b).convert("L").resize(
            SIZE, Image.Resampling.BICUBIC),
        **library_arms(),
    }
    versions = {}
    exact = {}
    found, missing = decoders()
    for name, (version, decode) in found.items():
        versions[name] = version
        exact[name] = all(np.array_equal(decode(b), pil_array(b)) for b in blobs)
        log(f"{name} {version}: {'identical' if exact[name] else 'DIFFERENT'} pixels")
        arms[name] = decode

    # seconds[arm][round, image]; each image's best round, averaged over images.
    seconds = {name: np.empty((args.rounds, len(blobs))) for name in arms}
    load_start = os.getloadavg()[0]
    for r in range(args.rounds):
        for name, arm in arms.items():
            for i, data in enumerate(blobs):
                start = time.perf_counter()
                arm(data)
                seconds[name][r, i] = time.perf_counter() - start
        log(f"round {r + 1}/{args.rounds}")
    ms = {name: 1000 * float(s.min(axis=0).mean()) for name, s in seconds.items()}
    load = (load_start, os.getloadavg()[0])
    base = ms["Pillow decode"]
    results = {
        "cpu": cpu_model(), "threads": 1, "n_images": len(blobs), "modes": modes,
        "rounds": args.rounds, "ms_per_image": ms, "load_average": load, "versions": versions,
        "identical_to_pillow": exact, "not_installed": missing,
        "pillow": Image.__version__,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.output}.json").write_text(json.dumps(results, indent=2) + "\n")

    lines = [
        "# PNG decoding and resizing per radiograph",
        "",
        f"CPU: {results['cpu']}, one thread. {len(blobs)} real 1024x1024 NIH ChestX-ray14 "
        f"PNGs (modes {', '.join(modes)}), decoded from their bytes in memory. Each image's "
        f"best of {args.rounds} interleaved rounds, averaged over the images (the machine "
        f"may be shared: load average {load[0]:.1f} at the start, {load[1]:.1f} at the end). "
        f"Pillow {Image.__version__}. Written by `benchmarks/bench_decoders.py`.",
        "",
        "| what | ms / image | vs Pillow decode | pixels identical to Pillow |",
        "|---|---:|---:|---|",
    ]
    for name, value in ms.items():
        same = {True: "yes", False: "**no**"}.get(exact.get(name), "")
        label = f"{name} {versions[name]}" if name in versions else name
        lines.append(f"| {label} | {value:.1f} | {value / base:.2f}x | {same} |")
    fastest = min(exact, key=ms.get, default=None)
    lines += ["", f"Not installed: {', '.join(missing) or 'none'} (each was tried with pip)."]
    if fastest is not None:
        gain = base - ms[fastest]
        lines += ["", (
            f"Fastest other decoder: {fastest}, {ms[fastest]:.1f} ms against Pillow's "
            f"{base:.1f} ms: {abs(gain):.1f} ms per image {'saved' if gain > 0 else 'lost'} "
            f"({gain / ms['embedder CPU path now (one-plane resize)']:+.0%} of the embedder's "
            f"whole CPU path per image), "
            f"{'identical' if exact[fastest] else 'NOT identical'} pixels. A decoder is "
            "worth a dependency only if it is exact and wins clearly against that whole path "
            "(decode + one-plane resize + normalise)."
        )]
    Path(f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
