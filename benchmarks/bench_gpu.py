"""Embedding throughput on one GPU: model only, decoding ceiling, end to end, agreement.

Usage::

    python benchmarks/bench_gpu.py [--n-images 2000] [--batch-size 256] [--compile [MODE]]
                                   [--num-workers N] [--output PREFIX]
    python benchmarks/bench_gpu.py --smoke --output PREFIX

On one CUDA device, with random weights of the real XraySigLIP vision
architecture (ViT-B/16 at 512 px, as ``benchmarks/bench_embedding.py`` builds
it) and real 1024x1024 NIH ChestX-ray14 PNGs cycled to ``--n-images``, it
measures, in a few minutes:

1. the device's bfloat16 matrix-multiply peak (TFLOP/s), on large squares;
2. model-only images/s in bfloat16 (pre-processed batches already on the
   device; the attention implementation transformers picked, SDPA by
   default; optionally ``torch.compile``), and its share of that peak;
3. decode-only images/s on every CPU core (the reader threads, to uint8):
   the ceiling of any CPU-fed pipeline;
4. end-to-end images/s of :class:`~skclipxray.ImageEmbedder` (paths to
   embeddings) with ``preprocess="cpu"`` and ``preprocess="device"``;
5. how closely device-side preprocessing agrees with the checkpoint's own
   processor: pixel error (grey levels) and embedding cosine, in float32
   and end to end in bfloat16.

The goals, each marked met or NOT met: model only >= 50% of the matmul peak,
end to end >= 90% of the decoding ceiling. ``--smoke`` runs the same code on
the CPU with the tiny test checkpoint and a handful of images, in seconds,
to check the script itself; its numbers say nothing of a GPU. The weights
are random: the embeddings carry no medical meaning, only the agreement
between two preprocessing paths is measured. Results go to
``PREFIX.json`` and ``PREFIX.md`` (``benchmarks/results/gpu`` by default).
"""

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import log, make_checkpoint, nih_pngs
from bench_embedding import _check, cosine, environment, matmul_peak, timed, vision_flops

HERE = Path(__file__).resolve().parent
GOAL_PEAK_SHARE = 0.5
GOAL_CEILING_SHARE = 0.9


def settings_for(args):
    """What the run uses: the GPU's sizes, or the smoke test's few images on the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.smoke:
        return dict(device="cpu", n_images=8, batch_size=4, num_workers=min(2, cores),
                    matmul_size=256, model_batches=2, n_agreement=4, cores=cores)
    return dict(device="cuda", n_images=args.n_images, batch_size=args.batch_size,
                num_workers=args.num_workers or cores, matmul_size=8192, model_batches=10,
                n_agreement=32, cores=cores)


def checkpoint_folder(args, work):
    """The tiny test checkpoint (smoke), or XraySigLIP's vision tower with random weights."""
    from skclipxray.testing import make_tiny_siglip

    if args.smoke:
        return make_tiny_siglip(work / "tiny"), "tiny random SigLIP (32 px, 32-d)"
    return (make_checkpoint(work / "xraysiglip"),
            "XraySigLIP vision tower (ViT-B/16, 512 px), random weights")


# Measurements -----------------------------------------------------------------------


def model_only(backbone, paths, settings, compile_mode):
    """Images/s of the tower alone, on batches already preprocessed and on the device."""
    import torch

    from skclipxray._preprocessing import preprocessor
    from skclipxray.images import read_image

    batch_size = settings["batch_size"]
    preprocess = preprocessor(backbone, "cpu")
    images = [preprocess(read_image(p))["pixel_values"]
              for p in (paths * batch_size)[:batch_size]]
    batch = torch.from_numpy(np.stack(images)).to(backbone.device, backbone.dtype)
    encoder = backbone.image_encoder(compile=compile_mode)
    with torch.inference_mode():
        for _ in range(2):  # warm-up (and compilation)
            encoder(pixel_values=batch)
        n_batches = settings["model_batches"]
        seconds, _ = timed(lambda: [encoder(pixel_values=batch) for _ in range(n_batches)],
                           backbone.device)
    return batch_size * n_batches / seconds


def decode_only(paths, workers):
    """Images/s reading and decoding to uint8 (one plane for gray) in ``workers`` threads."""
    from skclipxray.images import _read_image

    def decode(path):
        return np.asarray(_read_image(path, grayscale=True))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, paths[:workers]))  # warm-up: threads started, files cached
        start = time.perf_counter()
        for _ in pool.map(decode, paths):
            pass
    return len(paths) / (time.perf_counter() - start)


def end_to_end(folder, paths, settings, dtype, preprocess, compile_mode):
    """Images/s of ImageEmbedder from paths to embeddings, and the embeddings."""
    from skclipxray import ImageEmbedder

    embedder = ImageEmbedder(
        folder, device=settings["device"], dtype=dtype, batch_size=settings["batch_size"],
        num_workers=settings["num_workers"], progress=False, preprocess=preprocess,
        compile=compile_mode or False,
    )
    embedder.transform(paths[: settings["batch_size"]])  # load (and compile) first
    start = time.perf_counter()
    out = embedder.transform(paths)
    return len(paths) / (time.perf_counter() - start), out


def agreement(folder, paths, settings):
    """Device-side preprocessing against the processor: pixels and float32 embeddings."""
    import torch

    from skclipxray import load_backbone
    from skclipxray._preprocessing import ProcessorInputs, preprocessor
    from skclipxray.images import _read_image, read_image

    backbone = load_backbone(folder, device=settings["device"], dtype="float32")
    processor = ProcessorInputs(backbone.image_processor)
    device = preprocessor(backbone, "device")
    unique = list(dict.fromkeys(paths))[: settings["n_agreement"]]
    reference = np.stack([processor(read_image(p))["pixel_values"] for p in unique])
    inputs = [device(_read_image(p, grayscale=True)) for p in unique]
    on_device = device.to_device(inputs, backbone.device)["pixel_values"]
    levels = np.abs(on_device.cpu().numpy() - reference) * 255 / 2  # mean = std = 0.5
    encoder = backbone.image_encoder()
    with torch.inference_mode():
        expected = encoder(pixel_values=torch.from_numpy(reference).to(backbone.device))
        found = encoder(pixel_values=on_device)
    cosines = cosine(expected.float().cpu().numpy(), found.float().cpu().numpy())
    return {
        "n_images": len(unique),
        "max_error_levels": float(levels.max()), "mean_error_levels": float(levels.mean()),
        "share_of_pixels_off": float((levels > 0.5).mean()),
        "cosine_float32_min": float(cosines.min()), "cosine_float32_mean": float(cosines.mean()),
    }


# Report -----------------------------------------------------------------------------


def markdown(r):
    env, m = r["environment"], r["model_only"]
    e2e, agree, goals = r["end_to_end"], r["agreement"], r["goals"]
    device = env.get("gpu", env["device"])
    lines = [
        "# Embedding throughput on one GPU" + (" (smoke test on the CPU)" if r["smoke"] else ""),
        "",
        f"Written by `benchmarks/bench_gpu.py{' --smoke' if r['smoke'] else ''}`. Model: "
        f"{r['model']}; images: {r['n_images']} real 1024x1024 NIH ChestX-ray14 PNGs "
        f"({r['n_unique_images']} distinct, cycled). Random weights: only speed and the "
        "agreement of two preprocessing paths are measured, nothing clinical.",
        "",
        "## Machine",
        "",
        f"- Device: {device}",
        f"- CPU: {env['cpu']}, {r['cores']} cores available",
        f"- torch {env['torch']}, transformers {env['transformers']}",
        "",
        "## Matrix-multiply peak",
        "",
        f"bfloat16, {r['matmul_size']}x{r['matmul_size']} squares, best of 5: "
        f"**{r['peak_tflops']:.4g} TFLOP/s**.",
        "",
        "## Model only",
        "",
        f"bfloat16, batch {r['batch_size']}, attention `{m['attention']}`, "
        f"compile: {m['compile'] or 'no'}; {m['gflop_per_image']:.4g} GFLOP per image.",
        "",
        "| images/s | TFLOP/s | share of peak |",
        "|---:|---:|---:|",
        f"| {m['images_per_s']:.1f} | {m['tflops']:.4g} | {m['share_of_peak']:.1%} |",
        "",
        "## Decoding ceiling",
        "",
        f"Reading and decoding to uint8 (one plane for gray) in {r['num_workers']} threads: "
        f"**{r['decode_images_per_s']:.1f} images/s**.",
        "",
        "## End to end",
        "",
        f"`ImageEmbedder(dtype=\"bfloat16\", batch_size={r['batch_size']}, "
        f"num_workers={r['num_workers']})`, paths to embeddings, after a warm-up batch.",
        "",
        "| preprocess | images/s | share of the decoding ceiling |",
        "|---|---:|---:|",
        *(f"| `{mode}` | {row['images_per_s']:.1f} | {row['share_of_ceiling']:.1%} |"
          for mode, row in e2e.items()),
        "",
        "## Agreement of device-side preprocessing",
        "",
        f"Against the checkpoint's own processor, on {agree['n_images']} distinct "
        "radiographs: pixel error "
        f"max {agree['max_error_levels']:.2f}, mean {agree['mean_error_levels']:.3f} grey "
        f"levels (of 255), {agree['share_of_pixels_off']:.1%} of pixels off; embedding "
        f"cosine in float32 min {agree['cosine_float32_min']:.6f} "
        f"(mean {agree['cosine_float32_mean']:.6f}); end to end in bfloat16 "
        f"min {agree['cosine_bfloat16_min']:.6f}.",
        "",
        "## Goals",
        "",
        "| goal | measured | status |",
        "|---|---:|---|",
        *(f"| {g['goal']} | {g['measured']:.1%} | {g['status']} |" for g in goals),
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the same code on the CPU, tiny checkpoint, a few images")
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=None,
                        help="reader threads (default: every CPU core)")
    parser.add_argument("--compile", nargs="?", const="default", default=None,
                        help="torch.compile the tower (optionally in MODE)")
    parser.add_argument("--images", default=None, help="folder of 1024x1024 NIH PNGs")
    parser.add_argument("--output", default=str(HERE / "results" / "gpu"),
                        help="path prefix of the .json and .md written")
    args = parser.parse_args()

    import torch

    from skclipxray import load_backbone

    settings = settings_for(args)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run on a GPU, or pass --smoke to check the script.")
    device = torch.device(settings["device"])
    unique = nih_pngs(args.images)
    n = settings["n_images"]
    paths = (unique * -(-n // len(unique)))[:n]
    with tempfile.TemporaryDirectory() as work:
        folder, model = checkpoint_folder(args, Path(work))
        log(f"checkpoint: {model}")
        peak = matmul_peak(device, torch.bfloat16, settings["matmul_size"]) / 1e3
        log(f"matmul peak {peak:.4g} TFLOP/s")
        backbone = load_backbone(folder, device=str(device), dtype="bfloat16")
        flops = vision_flops(backbone.model.config.vision_config)
        images_per_s = model_only(backbone, unique, settings, args.compile)
        log(f"model only {images_per_s:.1f} images/s")
        decode = decode_only(paths, settings["num_workers"])
        log(f"decode only {decode:.1f} images/s")
        e2e, embeddings = {}, {}
        for mode in ("cpu", "device"):
            rate, embeddings[mode] = end_to_end(folder, paths, settings, "bfloat16", mode,
                                                args.compile)
            e2e[mode] = {"images_per_s": rate, "share_of_ceiling": rate / decode}
            log(f"end to end, preprocess={mode!r}: {rate:.1f} images/s")
        agree = agreement(folder, paths, settings)
        agree["cosine_bfloat16_min"] = float(cosine(embeddings["cpu"], embeddings["device"]).min())
    tflops = images_per_s * flops / 1e12
    results = {
        "smoke": args.smoke, "model": model, "environment": environment(device),
        "cores": settings["cores"], "n_images": n, "n_unique_images": len(unique),
        "batch_size": settings["batch_size"], "num_workers": settings["num_workers"],
        "matmul_size": settings["matmul_size"], "peak_tflops": peak,
        "model_only": {
            "images_per_s": images_per_s, "gflop_per_image": flops / 1e9, "tflops": tflops,
            "share_of_peak": tflops / peak, "compile": args.compile,
            "attention": backbone.model.config._attn_implementation,
        },
        "decode_images_per_s": decode, "end_to_end": e2e, "agreement": agree,
    }
    results["goals"] = [
        {"goal": f"model only >= {GOAL_PEAK_SHARE:.0%} of the matmul peak",
         "measured": tflops / peak},
        *({"goal": f"end to end, preprocess={mode!r}, >= {GOAL_CEILING_SHARE:.0%} of the "
                   "decoding ceiling", "measured": row["share_of_ceiling"]}
          for mode, row in e2e.items()),
    ]
    for goal, threshold in zip(results["goals"], (GOAL_PEAK_SHARE, *[GOAL_CEILING_SHARE] * 2)):
        goal["status"] = _check(goal["measured"] >= threshold)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.output}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    Path(f"{args.output}.md").write_text(markdown(results))
    log(f"wrote {args.output}.md and .json")


if __name__ == "__main__":
    main()
