"""Embedding throughput, the persistent cache and memory use of SigLIPImageEmbedder.

Usage::

    python benchmarks/bench_embedding.py [--images DIR] [--quick] [--no-compile]
                                         [--compile-mode MODE] [--no-quantize]
                                         [--architectures-only]

Runs, in one process (plus one child process per memory measurement):

1. images/s end to end (paths -> embeddings) against a naive loop (the
   checkpoint's processor and model, one image at a time, as in the
   transformers documentation) and against the model-only forward pass on
   pre-decoded tensors;
2. achieved GFLOP/s against this machine's matrix-multiply peak measured in
   the same run, the bfloat16 speed-up over float32 and the cosine between the
   two, ``torch.compile`` (in ``--compile-mode``, ``max-autotune`` by
   default; ``--no-compile`` leaves it out), and ``quantize="int8"`` (compiled
   in the same mode, against the naive loop; ``--no-quantize`` leaves it out);
3. a 5-fold x 4-point ``GridSearchCV`` over 64 images with and without the
   cache: forward passes and wall time;
4. peak memory (resident set) embedding 200 versus 2,000 images;
5. one arm per architecture, each at its real size with random weights (CLIP
   ViT-B/16 at 224 px, SigLIP ViT-B/16 at 512 px, SigLIP 2 base NaFlex at 256
   patches, DINOv2-B/14 at 518 px), all in float32: images/s model only and
   end to end, tokens and GFLOP per image (``--architectures-only`` runs this
   arm alone; it writes ``architectures.json`` and ``architectures.md``).

The model of arms 1-3 is the real XraySigLIP vision architecture (ViT-B/16 at 512 px)
with random weights, so nothing is downloaded; images are real 1024x1024 NIH
ChestX-ray14 PNGs (``../shared/data/real-cxr`` next to the repository, else
``tests/data/real-cxr``). Timed arms are interleaved over several rounds and
the best round is kept, because the machine may be shared: ratios are taken
between numbers measured side by side. The device is chosen as the library
does (``"auto"``: CUDA when present, with larger batches). Results go to
``benchmarks/results/embedding.json`` and ``embedding.md`` (arm 5:
``architectures.json`` and ``architectures.md`` beside them).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cpu_model, elapsed, log, make_checkpoint, nih_pngs

HERE = Path(__file__).resolve().parent
GRID = {"clf__C": [0.01, 0.1, 1.0, 10.0]}


# Inputs ---------------------------------------------------------------------------


def distinct_variants(paths, n, folder):
    """``n`` distinct 1024x1024 radiographs: the real ones, flipped and rotated.

    The cache keys images by content, so repeating a file would be served from
    the cache; the grid search needs ``n`` different images.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ops = [None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
           Image.Transpose.ROTATE_180, Image.Transpose.TRANSPOSE]
    out = []
    for op in ops:
        for path in paths:
            if len(out) == n:
                return out
            target = folder / f"{len(out):03d}_{Path(path).name}"
            with Image.open(path) as image:
                (image if op is None else image.transpose(op)).save(target)
            out.append(str(target))
    if len(out) < n:
        raise SystemExit(f"Only {len(out)} distinct images could be made; need {n}.")
    return out


def vit_flops(tokens, patches, patch_size, hidden_size, mlp_size, layers, head=0):
    """Floating-point operations (2 per multiply-add) of one image through a ViT.

    ``patches`` are embedded (a linear map of their pixels), ``tokens`` (the
    patches, plus a class token where there is one) go through ``layers``
    pre-norm blocks; ``head`` is what the pooling on top costs. Norms,
    activations and softmax, a fraction of a percent, are left out.
    """
    d, m = hidden_size, mlp_size
    patch = 2 * patches * (3 * patch_size**2) * d
    per_layer = 2 * tokens * (4 * d * d + 2 * d * m) + 2 * 2 * tokens * tokens * d
    return patch + layers * per_layer + head


def attention_pool_flops(tokens, hidden_size, mlp_size):
    """SigLIP's attention-pooling head: one query over every token, then an MLP on it."""
    d, m = hidden_size, mlp_size
    return 2 * (tokens * 2 * d * d + 2 * d * d + 2 * d * m) + 2 * 2 * tokens * d


def vision_flops(config):
    """Floating-point operations of one image through a SigLIP vision tower."""
    tokens = (config.image_size // config.patch_size) ** 2
    d, m = config.hidden_size, config.intermediate_size
    return vit_flops(tokens, tokens, config.patch_size, d, m, config.num_hidden_layers,
                     head=attention_pool_flops(tokens, d, m))


# Timing ---------------------------------------------------------------------------


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device):
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def matmul_peak(device, dtype, size, repeats=5):
    """Best GFLOP/s of a large square matrix product."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def model_only(backbone, batches):
    """Forward passes over pre-decoded tensors already on the device."""
    import torch

    with torch.inference_mode():
        return [backbone.model.get_image_features(pixel_values=b).pooler_output for b in batches]


def naive_loop(processor, model, paths, device):
    """What a user writes from the transformers docs: one image at a time."""
    import torch
    from PIL import Image

    out = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        inputs = processor(images=image, return_tensors="pt").to(device)
        with torch.no_grad():
            out.append(model.get_image_features(**inputs).pooler_output.cpu())
    return torch.cat(out).numpy()


def pre_decoded_batches(backbone, paths, batch_size):
    import torch

    from skclipxray._preprocessing import preprocessor
    from skclipxray.images import read_image

    preprocess = preprocessor(backbone)
    pixels = np.stack([preprocess(read_image(p))["pixel_values"] for p in paths])
    return [
        torch.from_numpy(pixels[i : i + batch_size]).to(backbone.device, backbone.dtype)
        for i in range(0, len(pixels), batch_size)
    ]


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def rounds_best(arms, n_rounds, on_round=None):
    """Run every arm once per round, interleaved; keep each arm's seconds."""
    seconds = {name: [] for name in arms}
    for r in range(n_rounds):
        for name, arm in arms.items():
            elapsed = arm()
            seconds[name].append(elapsed)
            log(f"round {r + 1}/{n_rounds}: {name} {elapsed:.2f} s")
        if on_round:
            on_round()
    return seconds


# 1 and 2: throughput --------------------------------------------------------------


def bench_throughput(args, checkpoint, paths, device, settings):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoImageProcessor, SiglipModel

    from skclipxray import load_backbone
    from skclipxray.embedders import SigLIPImageEmbedder

    n = settings["n_images"]
    images = (paths * (-(-n // len(paths))))[:n]
    naive_images = images[: settings["n_naive"]]
    batch_size, workers = settings["batch_size"], settings["num_workers"]
    result = {"n_images": n, "n_naive_images": len(naive_images), "batch_size": batch_size,
              "num_workers": workers, "rounds": settings["rounds"]}

    def embedder(dtype, **params):
        return SigLIPImageEmbedder(
            checkpoint, device=str(device), dtype=dtype, batch_size=batch_size,
            num_workers=workers, progress=False, **params,
        )

    auto = load_backbone(checkpoint, device=str(device), dtype="auto")
    auto_name = str(auto.dtype).removeprefix("torch.")
    result["dtype_auto"] = auto_name
    flops = vision_flops(auto.model.config.vision_config)
    result["gflop_per_image"] = flops / 1e9
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        auto.model.get_image_features(pixel_values=torch.zeros(
            1, 3, 512, 512, device=device, dtype=auto.dtype))
    result["gflop_per_image_flop_counter"] = counter.get_total_flops() / 1e9

    # Reference naive loop: the processor and model loaded as the docs do (float32).
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    naive_model = SiglipModel.from_pretrained(checkpoint).to(device).eval()
    naive_loop(processor, naive_model, naive_images[:1], device)  # warm-up

    e2e = embedder("auto")
    e2e.fit_transform(images[:batch_size])  # warm-up: load, allocate
    tensors = pre_decoded_batches(auto, images, batch_size)
    model_only(auto, tensors[:1])

    outputs = {}
    peaks = []

    def run_e2e():
        elapsed, outputs["e2e"] = timed(lambda: e2e.transform(images), device)
        return elapsed

    def run_naive():
        elapsed, outputs["naive"] = timed(
            lambda: naive_loop(processor, naive_model, naive_images, device), device)
        return elapsed

    arms = {
        "model_only": lambda: timed(lambda: model_only(auto, tensors), device)[0],
        "end_to_end": run_e2e,
        "naive_loop": run_naive,
    }
    matmul_size = 8192 if device.type == "cuda" else 4096
    seconds = rounds_best(
        arms, settings["rounds"],
        on_round=lambda: peaks.append(matmul_peak(device, torch.float32, matmul_size)),
    )
    best = {name: min(values) for name, values in seconds.items()}
    ips = {
        "model_only": n / best["model_only"],
        "end_to_end": n / best["end_to_end"],
        "naive_loop": len(naive_images) / best["naive_loop"],
    }
    result.update(
        seconds=seconds,
        images_per_s=ips,
        end_to_end_over_model_only=ips["end_to_end"] / ips["model_only"],
        end_to_end_over_naive=ips["end_to_end"] / ips["naive_loop"],
        naive_dtype="float32",
        max_abs_difference_e2e_vs_naive=float(np.abs(
            outputs["e2e"][: len(naive_images)] - outputs["naive"]).max()),
        min_cosine_e2e_vs_naive=float(cosine(
            outputs["e2e"][: len(naive_images)], outputs["naive"]).min()),
    )
    achieved = flops * ips["model_only"] / 1e9
    result[f"{auto_name}_model_gflops"] = achieved
    # The same ratios within each round (arms run side by side, under the same load).
    per_round = [
        {
            "end_to_end_over_model_only": m / e,
            "end_to_end_over_naive": (n / e) / (len(naive_images) / v),
            "model_fraction_of_peak": flops * n / m / 1e9 / p,
        }
        for m, e, v, p in zip(seconds["model_only"], seconds["end_to_end"],
                              seconds["naive_loop"], peaks)
    ]
    result["per_round_ratios"] = per_round
    result["median_per_round_ratios"] = {
        key: float(np.median([r[key] for r in per_round])) for key in per_round[0]
    }
    tensors = None  # free memory before the next arms

    # Half precision against float32, model only and end to end, interleaved.
    half_name = "float32" if auto_name != "float32" else "bfloat16"
    other = load_backbone(checkpoint, device=str(device), dtype=half_name)
    n_half = settings["n_half"]
    half_images = images[:n_half]
    fp32, bf16 = (auto, other) if auto_name == "float32" else (other, auto)
    t32 = pre_decoded_batches(fp32, half_images, batch_size)
    t16 = pre_decoded_batches(bf16, half_images, batch_size)
    e2e16 = embedder("bfloat16")
    e2e32 = embedder("float32")
    model_only(fp32, t32[:1])
    model_only(bf16, t16[:1])
    emb = {}

    def run_e2e16():
        elapsed, emb["bfloat16"] = timed(lambda: e2e16.fit_transform(half_images), device)
        return elapsed

    half_arms = {
        "model_only_float32": lambda: timed(lambda: model_only(fp32, t32), device)[0],
        "model_only_bfloat16": lambda: timed(lambda: model_only(bf16, t16), device)[0],
        "end_to_end_bfloat16": run_e2e16,
    }
    half_seconds = rounds_best(
        half_arms, settings["half_rounds"],
        on_round=lambda: peaks.append(matmul_peak(device, torch.float32, matmul_size)),
    )
    emb["float32"] = e2e32.fit_transform(half_images)
    half_best = {name: min(values) for name, values in half_seconds.items()}
    cos = cosine(emb["float32"], emb["bfloat16"])
    result["bfloat16"] = {
        "n_images": n_half,
        "seconds": half_seconds,
        "images_per_s": {name: n_half / s for name, s in half_best.items()},
        "speedup_model_only": half_best["model_only_float32"] / half_best["model_only_bfloat16"],
        "end_to_end_bfloat16_over_naive_float32":
            (n_half / half_best["end_to_end_bfloat16"]) / ips["naive_loop"],
        "cosine_to_float32_min": float(cos.min()),
        "cosine_to_float32_mean": float(cos.mean()),
        "bfloat16_matmul_gflops": matmul_peak(device, torch.bfloat16, matmul_size),
    }
    t32 = t16 = None

    if not args.no_compile:
        # torch.compile'd vision tower (the one compile=mode uses), model only
        # and end to end, interleaved with the same arms uncompiled.
        n_compiled = settings["n_compiled"]
        compiled_images = images[:n_compiled]
        tc = pre_decoded_batches(auto, compiled_images, batch_size)
        compiled_e2e = embedder("auto", compile=args.compile_mode)
        first, _ = timed(lambda: compiled_e2e.fit_transform(compiled_images[:batch_size]), device)
        log(f"torch.compile {args.compile_mode}: first batch (compiling) {first:.1f} s")
        tower = auto.image_encoder(compile=args.compile_mode)

        def compiled_model_only():
            with torch.inference_mode():
                return [tower(pixel_values=b) for b in tc]

        compiled_model_only()  # tensors made outside inference mode: one more compile

        compile_seconds = rounds_best({
            "model_only": lambda: timed(lambda: model_only(auto, tc), device)[0],
            "model_only_compiled": lambda: timed(compiled_model_only, device)[0],
            "end_to_end": lambda: timed(lambda: e2e.transform(compiled_images), device)[0],
            "end_to_end_compiled":
                lambda: timed(lambda: compiled_e2e.transform(compiled_images), device)[0],
        }, settings["compile_rounds"],
            on_round=lambda: peaks.append(matmul_peak(device, torch.float32, matmul_size)))
        c_ips = {name: n_compiled / min(v) for name, v in compile_seconds.items()}
        result["compile"] = {
            "mode": args.compile_mode, "dtype": auto_name, "n_images": n_compiled,
            "first_batch_s": first,
            "seconds": compile_seconds, "images_per_s": c_ips,
            "speedup_model_only": c_ips["model_only_compiled"] / c_ips["model_only"],
            "speedup_end_to_end": c_ips["end_to_end_compiled"] / c_ips["end_to_end"],
            "model_gflops": flops * c_ips["model_only_compiled"] / 1e9,
            "end_to_end_compiled_over_naive": c_ips["end_to_end_compiled"] / ips["naive_loop"],
        }
        tc = None

    if not args.no_quantize:
        result["int8"] = bench_int8(args, auto, images, outputs["e2e"], embedder, settings,
                                    run_naive, len(naive_images), flops, peaks, device)
    naive_model = None
    result["float32_matmul_peak_gflops"] = max(peaks)
    result["float32_matmul_peaks_gflops"] = peaks
    if auto_name == "float32":
        result["float32_fraction_of_peak"] = achieved / max(peaks)
        if "compile" in result:
            result["compile"]["fraction_of_peak"] = result["compile"]["model_gflops"] / max(peaks)
    # The fastest any float32 forward pass could run here: at the matmul peak.
    result["float32_images_per_s_at_peak"] = max(peaks) * 1e9 / flops
    return result


def bench_int8(args, auto, images, reference, embedder, settings, run_naive, n_naive, flops,
               peaks, device):
    """quantize="int8" (compiled, as it must be), side by side with the naive loop."""
    import torch

    n = settings["n_compiled"]
    batch_size = settings["batch_size"]
    int8_images = images[:n]
    tensors = pre_decoded_batches(auto, int8_images, batch_size)
    e2e = embedder("auto", compile=args.compile_mode, quantize="int8")
    first, _ = timed(lambda: e2e.fit_transform(int8_images[:batch_size]), device)
    log(f"int8, torch.compile {args.compile_mode}: first batch (compiling) {first:.1f} s")
    tower = auto.image_encoder(compile=args.compile_mode, quantize="int8")

    def model_only_int8():
        with torch.inference_mode():
            return [tower(pixel_values=b) for b in tensors]

    model_only_int8()  # tensors made outside inference mode: one more compile
    out = {}

    def run_e2e():
        elapsed, out["int8"] = timed(lambda: e2e.transform(int8_images), device)
        return elapsed

    seconds = rounds_best({
        "model_only": lambda: timed(lambda: model_only(auto, tensors), device)[0],
        "model_only_int8": lambda: timed(model_only_int8, device)[0],
        "end_to_end_int8": run_e2e,
        "naive_loop": run_naive,
    }, settings["compile_rounds"], on_round=lambda: peaks.append(
        matmul_peak(device, torch.float32, 8192 if device.type == "cuda" else 4096)))
    ips = {name: (n_naive if name == "naive_loop" else n) / min(values)
           for name, values in seconds.items()}
    cos = cosine(out["int8"], reference[:n])
    return {
        "mode": args.compile_mode, "n_images": n, "first_batch_s": first,
        "seconds": seconds, "images_per_s": ips,
        "speedup_model_only": ips["model_only_int8"] / ips["model_only"],
        "end_to_end_over_model_only": ips["end_to_end_int8"] / ips["model_only_int8"],
        "end_to_end_over_naive": ips["end_to_end_int8"] / ips["naive_loop"],
        # Float FLOPs over int8 time: what a float model would need to match it.
        "effective_gflops": flops * ips["model_only_int8"] / 1e9,
        "cosine_to_float_min": float(cos.min()),
        "cosine_to_float_mean": float(cos.mean()),
        "max_abs_difference_to_float": float(np.abs(out["int8"] - reference[:n]).max()),
    }


# 3: grid search with and without the cache --------------------------------------------


class ForwardCounter:
    """Count (and time) images through the image encoder of a loaded backbone."""

    def __init__(self, backbone):
        self.encoder = backbone.image_encoder()
        self.device = backbone.device
        self.forward = self.encoder.forward
        self.images = 0
        self.seconds = 0.0

    def __enter__(self):
        def counting(**inputs):
            self.images += len(inputs["pixel_values"])
            elapsed, out = timed(lambda: self.forward(**inputs), self.device)
            self.seconds += elapsed
            return out

        self.encoder.forward = counting  # the instance's, called by nn.Module.__call__
        return self

    def __exit__(self, *exc):
        del self.encoder.forward


def grid_search(checkpoint, paths, device, dtype, cache, settings):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from skclipxray import load_backbone
    from skclipxray.embedders import SigLIPImageEmbedder

    y = np.random.default_rng(0).integers(0, 2, len(paths))
    pipe = Pipeline([
        ("embed", SigLIPImageEmbedder(
            checkpoint, device=str(device), dtype=dtype, cache=cache, progress=False,
            batch_size=settings["batch_size"], num_workers=settings["num_workers"])),
        ("clf", LogisticRegression(max_iter=2000)),
    ])
    search = GridSearchCV(pipe, GRID, cv=5, scoring="roc_auc")
    with ForwardCounter(load_backbone(checkpoint, device=str(device), dtype=dtype)) as count:
        elapsed, _ = timed(lambda: search.fit(paths, y), device)
    return {"forward_images": count.images, "wall_s": elapsed, "forward_s": count.seconds,
            "mean_test_score": search.cv_results_["mean_test_score"].tolist()}


def bench_grid(args, checkpoint, tiny, images, device, settings, throughput, work):
    n = 64
    result = {"n_images": n, "cv": 5, "grid_points": len(GRID["clf__C"]),
              "model": "XraySigLIP vision architecture, random weights",
              "dtype": throughput["dtype_auto"]}
    log("grid search: real architecture, with the cache")
    cached = grid_search(checkpoint, images, device, "auto", work / "grid.sqlite", settings)
    result["with_cache"] = cached
    # Model seconds per image measured inside this very search (same load), which
    # leaves out decoding: the estimate below errs on the side of the uncached arm.
    seconds_per_image = cached["forward_s"] / cached["forward_images"]
    n_uncached = 5 * len(GRID["clf__C"]) * n + n  # every fit and score, and the refit
    estimate = cached["wall_s"] + (n_uncached - cached["forward_images"]) * seconds_per_image
    if args.grid_uncached == "run" or (args.grid_uncached == "auto" and estimate < 600):
        log(f"grid search: real architecture, without the cache (~{estimate:.0f} s)")
        uncached = grid_search(checkpoint, images, device, "auto", None, settings)
        uncached["measured"] = True
    else:
        uncached = {
            "measured": False,
            "forward_images": n_uncached,
            "wall_s": estimate,
            "how": "cached wall time + (forward images without - with the cache) x the "
                   "forward-pass seconds per image measured inside the cached search "
                   "(same model, dtype, batch, load; decoding left out, so the estimate "
                   "is low)",
        }
    result["without_cache"] = uncached
    result["speedup"] = uncached["wall_s"] / cached["wall_s"]

    # The same pair measured in full with the tiny checkpoint (512 px preprocessing of
    # the same radiographs): a cheap model, so decoding dominates.
    log("grid search: tiny checkpoint, with and without the cache")
    tiny_cached = grid_search(tiny, images, device, "auto", work / "grid-tiny.sqlite", settings)
    tiny_uncached = grid_search(tiny, images, device, "auto", None, settings)
    result["tiny_checkpoint"] = {
        "with_cache": tiny_cached, "without_cache": tiny_uncached,
        "speedup": tiny_uncached["wall_s"] / tiny_cached["wall_s"],
    }
    return result


# 4: memory -----------------------------------------------------------------------------


def _rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def memory_child(checkpoint, n, paths_file, device, batch_size, num_workers):
    """Run in a fresh process: embed ``n`` images, report resident-set sizes."""
    from skclipxray.embedders import SigLIPImageEmbedder

    paths = [p for p in Path(paths_file).read_text().splitlines() if p]
    images = (paths * (-(-n // len(paths))))[:n]
    embedder = SigLIPImageEmbedder(checkpoint, device=device, progress=False,
                                   batch_size=batch_size, num_workers=num_workers)
    embedder.fit_transform(images[: 2 * batch_size])  # load and warm up
    baseline = _rss_kib("VmRSS")
    start = time.perf_counter()
    out = embedder.transform(images)
    elapsed = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    print(json.dumps({
        "n_images": n, "rss_after_warmup_mib": baseline / 1024, "peak_rss_mib": peak / 1024,
        "output_mib": out.nbytes / 2**20, "seconds": elapsed,
        "images_per_s": n / elapsed,
    }))


def bench_memory(tiny, paths, device, settings, work):
    paths_file = work / "memory-paths.txt"
    paths_file.write_text("\n".join(paths))
    runs = {}
    for n in (200, 2000):
        log(f"memory: {n} images in a fresh process")
        completed = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), str(tiny), str(paths_file),
             str(device), str(settings["batch_size"]), str(settings["num_workers"])],
            check=True, capture_output=True, text=True,
        )
        runs[n] = json.loads(completed.stdout.strip().splitlines()[-1])
    # Decoded 1024 px radiographs, were they all held: 3 MiB each as RGB.
    return {
        "model": "tiny random checkpoint with 512 px preprocessing (memory is about "
                 "the images held, not the model)",
        "images": "real 1024x1024 NIH PNGs, cycled",
        "runs": {str(n): run for n, run in runs.items()},
        "peak_growth_mib": runs[2000]["peak_rss_mib"] - runs[200]["peak_rss_mib"],
        "decoded_images_if_all_held_mib": 1800 * 1024 * 1024 * 3 / 2**20,
    }


# 5: one arm per architecture ------------------------------------------------------------

#: A ViT-B tower's width, MLP, depth and heads: those of every architecture compared.
VIT_B = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
             num_attention_heads=12)

#: The architectures compared, at their real size, and the checkpoints they stand for.
ARCHITECTURES = {
    "clip": "CLIP ViT-B/16, 224 px (openai/clip-vit-base-patch16)",
    "siglip": "SigLIP ViT-B/16, 512 px (XraySigLIP)",
    "siglip2": "SigLIP 2 ViT-B/16 NaFlex, 256 patches (google/siglip2-base-patch16-naflex)",
    "dinov2": "DINOv2 ViT-B/14, 518 px (microsoft/rad-dino)",
}


def real_size_checkpoint(folder, family, seed=0):
    """A checkpoint folder of ``family`` with its real vision tower and random weights.

    The family's tiny checkpoint (:mod:`skclipxray.testing`) gives the folder
    its tokenizer and image processor, at the real input size; its model is
    then replaced by one with the real vision tower (:data:`ARCHITECTURES`).
    The text tower is one layer, since only the image path is measured. The
    folder loads with ``from_pretrained`` as a downloaded checkpoint does.
    """
    import transformers

    from skclipxray._architectures import ARCHITECTURES as FAMILIES
    from skclipxray._tiny_checkpoints import _seeded_model
    from skclipxray.testing import make_tiny_clip, make_tiny_dinov2, make_tiny_siglip2

    if family == "siglip":
        return make_checkpoint(folder, seed=seed)  # XraySigLIP's vision tower
    if family == "dinov2":
        folder = make_tiny_dinov2(folder, image_size=518, patch_size=14)
        config = transformers.Dinov2Config(  # MLP 4 x 768 = 3072, as VIT_B's
            image_size=518, patch_size=14, mlp_ratio=4, hidden_size=768,
            num_hidden_layers=12, num_attention_heads=12)
    else:
        if family == "clip":
            folder = make_tiny_clip(folder, image_size=224, patch_size=16)
            vision, extra = dict(VIT_B, image_size=224, patch_size=16), {"projection_dim": 512}
        elif family == "siglip2":
            folder = make_tiny_siglip2(folder, patch_size=16, max_num_patches=256)
            vision, extra = dict(VIT_B, patch_size=16, num_patches=256), {}
        else:
            raise ValueError(f"Unknown family {family!r}; expected one of {list(ARCHITECTURES)}.")
        config = transformers.AutoConfig.from_pretrained(folder)
        text = config.text_config.to_dict()
        text.update(hidden_size=VIT_B["hidden_size"], intermediate_size=VIT_B["hidden_size"],
                    num_hidden_layers=1, num_attention_heads=VIT_B["num_attention_heads"])
        config = type(config)(text_config=text, vision_config=vision, **extra)
    model_class = getattr(transformers, FAMILIES[family].class_name)
    _seeded_model(model_class, config, seed).save_pretrained(folder)
    return folder


def input_shape(backbone, batch):
    """What one image's input is, its tokens and analytic FLOPs, from the inputs fed.

    SigLIP 2's patches are padded to the processor's maximum number, and the
    padding goes through the tower too, so it counts.
    """
    family = backbone.architecture.model_type
    config = backbone.model.config
    vision = config if family == "dinov2" else config.vision_config
    d, size = vision.hidden_size, vision.patch_size
    m = int(d * vision.mlp_ratio) if family == "dinov2" else vision.intermediate_size
    pixels = batch["pixel_values"]
    if family == "siglip2":
        patches = pixels.shape[1]
        rows, cols = (int(v) for v in batch["spatial_shapes"][0])
        described = f"{patches} patches ({rows}x{cols} of {size} px)"
    else:
        height, width = pixels.shape[-2:]
        patches = (height // size) * (width // size)
        described = f"{height} px" if height == width else f"{height}x{width} px"
    tokens = patches + (family in ("clip", "dinov2"))  # a class token
    head = {
        "siglip": attention_pool_flops(tokens, d, m),
        "siglip2": attention_pool_flops(tokens, d, m),
        "clip": 2 * d * getattr(config, "projection_dim", 0),
        "dinov2": 0,
    }[family]
    flops = vit_flops(tokens, patches, size, d, m, vision.num_hidden_layers, head=head)
    return {"input": described, "tokens": tokens, "gflop_per_image": flops / 1e9}


def encoder_only(encoder, batches):
    """Image embeddings of pre-decoded batches already on the device."""
    import torch

    with torch.inference_mode():
        return torch.cat([encoder(**batch) for batch in batches]).float().cpu().numpy()


def bench_architectures(paths, device, settings, work, siglip=None):
    """Images/s of each architecture at its real size, model only and end to end.

    Every architecture runs in float32, so that the comparison is between
    architectures rather than precisions. ``siglip`` is an existing
    XraySigLIP-sized folder to reuse.
    """
    import torch

    from skclipxray import ImageEmbedder, load_backbone
    from skclipxray._preprocessing import preprocessor, stack_inputs
    from skclipxray.images import read_image

    n, batch_size, dtype = settings["arch_n_images"], settings["batch_size"], "float32"
    images = (paths * (-(-n // len(paths))))[:n]
    workers = ImageEmbedder().num_workers
    result = {"n_images": n, "batch_size": batch_size, "num_workers": workers,
              "num_workers_is_default": True, "dtype": dtype,
              "rounds": settings["arch_rounds"], "weights": "random", "architectures": {}}
    arms, outputs = {}, {}

    def timed_arm(name, function):
        def arm():
            seconds, outputs[name] = timed(function, device)
            return seconds
        arms[name] = arm

    for family, described in ARCHITECTURES.items():
        log(f"architectures: writing and loading {family}")
        folder = (siglip if family == "siglip" and siglip else
                  real_size_checkpoint(work / f"{family}-real-size", family))
        backbone = load_backbone(folder, device=str(device), dtype=dtype)
        encoder = backbone.image_encoder()
        preprocess = preprocessor(backbone)
        inputs = stack_inputs([preprocess(read_image(p)) for p in images])
        batches = []
        for i in range(0, n, batch_size):
            batch = {k: torch.from_numpy(v[i : i + batch_size]).to(device)
                     for k, v in inputs.items()}
            batch["pixel_values"] = batch["pixel_values"].to(backbone.dtype)
            batches.append(batch)
        embedder = ImageEmbedder(folder, device=str(device), dtype=dtype,
                                 batch_size=batch_size, progress=False)
        # Warm-up, one batch: load, allocate. The embedder runs this very encoder
        # (shared by the backbone) on batches of the same shape, so it warms both arms.
        embedder.fit_transform(images[:batch_size])
        result["architectures"][family] = {
            "checkpoint": described, "class": backbone.architecture.class_name,
            "embedding_dim": backbone.embedding_dim,
            "parameters_vision": sum(p.numel() for p in encoder.parameters()),
            **input_shape(backbone, inputs),
        }
        timed_arm(f"{family} model only",
                  lambda encoder=encoder, batches=batches: encoder_only(encoder, batches))
        timed_arm(f"{family} end to end",
                  lambda embedder=embedder: embedder.transform(images))
    seconds = rounds_best(arms, settings["arch_rounds"])
    for family, row in result["architectures"].items():
        model, e2e = f"{family} model only", f"{family} end to end"
        ips = {"model_only": n / min(seconds[model]), "end_to_end": n / min(seconds[e2e])}
        row.update(
            seconds={"model_only": seconds[model], "end_to_end": seconds[e2e]},
            images_per_s=ips,
            end_to_end_over_model_only=ips["end_to_end"] / ips["model_only"],
            # The same ratio within each round (both arms under the same load).
            median_per_round_end_to_end_over_model_only=float(np.median(
                np.divide(seconds[model], seconds[e2e]))),
            model_gflops=row["gflop_per_image"] * ips["model_only"],
            # The same computation in both arms: the embeddings must agree.
            max_abs_difference_e2e_vs_model_only=float(
                np.abs(outputs[e2e] - outputs[model]).max()),
        )
    return result


# Report ----------------------------------------------------------------------------


def environment(device):
    import torch
    import transformers

    from skclipxray._device import cpu_has_native_bfloat16

    env = {
        "device": str(device), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(), "cpu_native_bfloat16": cpu_has_native_bfloat16(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _check(ok):
    return "met" if ok else "NOT met"


#: CPU flags that decide which precisions run in hardware.
_PRECISION_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                    "amx_int8")


def cpu_flags():
    """The flags of :data:`_PRECISION_FLAGS` that this CPU has (from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in _PRECISION_FLAGS if flag in flags]
    except OSError:
        pass
    return []


def device_line(env, rounds):
    """The machine, the library versions and the load, as each report states them."""
    flags = ""
    if "cpu_flags" in env:
        flags = (f" CPU flags: {', '.join(env['cpu_flags']) or 'none of interest'}; native "
                 f"bfloat16: {'yes' if env['cpu_native_bfloat16'] else 'no'}.")
    return (
        f"Device: {env['device']} ({env.get('gpu', env['cpu'])}, {env['cpu_count']} CPU cores, "
        f"{env['torch_threads']} torch threads); torch {env['torch']}, transformers "
        f"{env['transformers']}. Load average at start {env['load_average_start'][0]:.1f}, "
        f"at end {env['load_average_end'][0]:.1f}: the machine is shared, so arms were "
        f"interleaved over {rounds} rounds and each arm's best round is reported.{flags}"
    )


def markdown_architectures(results):
    """The report of :func:`bench_architectures`: one table, one row per architecture."""
    a = results["architectures"]
    rows = a["architectures"]
    lines = [
        "# Embedding throughput by architecture",
        "",
        device_line(results["environment"], a["rounds"]),
        "",
        "Models: each architecture at its real size (the vision tower of the checkpoint "
        "named: width 768, 12 layers, 12 heads, MLP 3072) with random weights, since no "
        "checkpoint is downloaded; each is written as a checkpoint folder (config, "
        "safetensors weights, image processor, and a tokenizer with a one-layer text "
        "tower where the family has text) and loaded with `from_pretrained` as a "
        "downloaded one is. Random weights change no timing, but their embeddings mean "
        "nothing. Images: real 1024x1024 NIH ChestX-ray14 PNGs, cycled. Every "
        f"architecture runs in float32 (dtype=\"float32\"), so that the comparison is "
        f"between architectures, not precisions; batch {a['batch_size']}, "
        f"{a['num_workers']} reader threads (`ImageEmbedder`'s default). Few images: "
        f"{a['n_images']} per arm and architecture, after one warm-up batch per "
        f"architecture, so the figures are rough. Wall time: "
        f"{results['wall_s'] / 60:.1f} min.",
        "",
        "| architecture | checkpoint class | input (px or patches) | tokens | GFLOP/image "
        "| model only img/s | end to end img/s | e2e / model only |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['checkpoint']} | {r['class']} | {r['input']} | {r['tokens']} | "
            f"{r['gflop_per_image']:.0f} | {r['images_per_s']['model_only']:.2f} | "
            f"{r['images_per_s']['end_to_end']:.2f} | {r['end_to_end_over_model_only']:.2f} |"
            for r in rows.values()
        ),
        "",
        "- Model only: the checkpoint's preprocessing done before timing, then the "
        "inputs (as tensors) through `Backbone.image_encoder()`. End to end: "
        "`ImageEmbedder(model=FOLDER).transform(paths)` on the PNG files: reading, "
        "decoding, preprocessing and the model. The embeddings of the two arms agree "
        "to " + f"{max(r['max_abs_difference_e2e_vs_model_only'] for r in rows.values()):.1e}.",
        "- E2e / model only is the ratio of each arm's best round; the median of the same "
        "ratio within each round (both arms under the same load): "
        + ", ".join(f"{family} {r['median_per_round_end_to_end_over_model_only']:.2f}"
                    for family, r in rows.items()) + ".",
        "- GFLOP counted analytically, 2 per multiply-add: patch embedding, every layer's "
        "projections, attention and MLP, and the pooling (SigLIP's attention-pooling "
        "head, CLIP's projection; DINOv2's class token needs none). Tokens include the "
        "class token of CLIP and DINOv2. SigLIP 2 cuts each image, aspect ratio kept, "
        "into at most 256 patches, padded to 256 (a square film fills them all).",
        "",
    ]
    return "\n".join(lines)


def markdown(results):
    env, t = results["environment"], results["throughput"]
    g, m = results["grid_search"], results["memory"]
    ips = t["images_per_s"]
    b = t["bfloat16"]
    q = t.get("int8")
    lines = [
        "# Embedding benchmark",
        "",
        device_line(env, t["rounds"]),
        "",
        "Model: the XraySigLIP vision architecture (ViT-B/16, 512 px, "
        f"{t['gflop_per_image']:.0f} GFLOP per image counted analytically) with random "
        "weights. Images: real 1024x1024 NIH ChestX-ray14 PNGs. Wall time: "
        f"{results['wall_s'] / 60:.1f} min.",
        "",
        "## 1. Throughput",
        "",
        f"{t['n_images']} images, batch {t['batch_size']}, {t['num_workers']} reader threads, "
        f"dtype {t['dtype_auto']} (the device's `auto`).",
        "",
        "| arm | images/s |",
        "|---|---|",
        f"| model only (pre-decoded tensors) | {ips['model_only']:.3f} |",
        f"| end to end (paths -> embeddings) | {ips['end_to_end']:.3f} |",
        f"| naive loop (processor + model, one image at a time, float32; "
        f"{t['n_naive_images']} images) | {ips['naive_loop']:.3f} |",
        "",
        f"- End to end / model only: {t['end_to_end_over_model_only']:.3f} "
        f"(goal >= 0.90: {_check(t['end_to_end_over_model_only'] >= 0.9)}).",
        f"- End to end / naive loop: {t['end_to_end_over_naive']:.2f}x "
        f"(goal >= 1.5x: {_check(t['end_to_end_over_naive'] >= 1.5)}).",
        *([
            f"- With `quantize='int8'` (section 2), end to end / naive loop: "
            f"{q['end_to_end_over_naive']:.2f}x "
            f"(goal >= 1.5x: {_check(q['end_to_end_over_naive'] >= 1.5)}); end to end / "
            f"int8 model only: {q['end_to_end_over_model_only']:.3f} "
            f"(goal >= 0.90: {_check(q['end_to_end_over_model_only'] >= 0.9)})."
        ] if q else []),
        "- Median of the same ratios taken within each round (arms side by side, under "
        "the same load): end to end / model only "
        f"{t['median_per_round_ratios']['end_to_end_over_model_only']:.3f}, end to end / "
        f"naive {t['median_per_round_ratios']['end_to_end_over_naive']:.2f}x, model / "
        f"matmul peak {100 * t['median_per_round_ratios']['model_fraction_of_peak']:.0f}%.",
        f"- Largest difference between end-to-end ({t['dtype_auto']}) and naive (float32) "
        f"embeddings: {t['max_abs_difference_e2e_vs_naive']:.2e}"
        + (f"; smallest cosine {t['min_cosine_e2e_vs_naive']:.5f}."
           if "min_cosine_e2e_vs_naive" in t else "."),
        "",
        "## 2. Hardware efficiency and precision",
        "",
    ]
    if "float32_fraction_of_peak" in t:
        lines.append(
            f"- float32 model: {t['float32_model_gflops']:.0f} GFLOP/s, "
            f"{100 * t['float32_fraction_of_peak']:.0f}% of the float32 matmul peak measured "
            f"in this run ({t['float32_matmul_peak_gflops']:.0f} GFLOP/s, best of "
            f"{len(t['float32_matmul_peaks_gflops'])}) "
            f"(goal >= 80%: {_check(t['float32_fraction_of_peak'] >= 0.8)})."
        )
    else:
        lines.append(
            f"- {t['dtype_auto']} model: {t[t['dtype_auto'] + '_model_gflops']:.0f} GFLOP/s; "
            f"float32 matmul peak {t['float32_matmul_peak_gflops']:.0f} GFLOP/s."
        )
    lines += [
        f"- bfloat16 vs float32, model only ({b['n_images']} images): "
        f"{b['speedup_model_only']:.2f}x "
        f"({b['images_per_s']['model_only_bfloat16']:.3f} vs "
        f"{b['images_per_s']['model_only_float32']:.3f} images/s); bfloat16 matmul "
        f"{b['bfloat16_matmul_gflops']:.0f} GFLOP/s. Cosine between bfloat16 and float32 "
        f"embeddings: min {b['cosine_to_float32_min']:.5f}, mean "
        f"{b['cosine_to_float32_mean']:.5f}.",
        f"- bfloat16 end to end: {b['images_per_s']['end_to_end_bfloat16']:.3f} images/s, "
        f"{b['end_to_end_bfloat16_over_naive_float32']:.2f}x the naive float32 loop.",
    ]
    if "compile" in t:
        c = t["compile"]
        ci = c["images_per_s"]
        share = (f", {100 * c['fraction_of_peak']:.0f}% of the matmul peak "
                 f"(goal >= 80%: {_check(c['fraction_of_peak'] >= 0.8)})"
                 if "fraction_of_peak" in c else "")
        lines.append(
            f"- `compile={c.get('mode', 'default')!r}` ({c['dtype']}, {c['n_images']} images, "
            f"compiling took "
            f"{c['first_batch_s']:.0f} s): model only {ci['model_only_compiled']:.3f} vs "
            f"{ci['model_only']:.3f} images/s ({c['speedup_model_only']:.2f}x), "
            f"{c['model_gflops']:.0f} GFLOP/s{share}; end to end "
            f"{ci['end_to_end_compiled']:.3f} vs {ci['end_to_end']:.3f} images/s "
            f"({c['speedup_end_to_end']:.2f}x), {c['end_to_end_compiled_over_naive']:.2f}x "
            "the naive loop."
        )
    if q:
        qi = q["images_per_s"]
        lines.append(
            f"- `quantize='int8'` (compiled in {q['mode']!r}, {q['n_images']} images, "
            f"compiling took {q['first_batch_s']:.0f} s): model only "
            f"{qi['model_only_int8']:.3f} vs {qi['model_only']:.3f} images/s for the "
            f"{t['dtype_auto']} model ({q['speedup_model_only']:.2f}x), the work of "
            f"{q['effective_gflops']:.0f} float GFLOP/s; end to end "
            f"{qi['end_to_end_int8']:.3f} images/s, {q['end_to_end_over_naive']:.2f}x the "
            f"naive loop ({qi['naive_loop']:.3f} images/s in the same rounds). Cosine to the "
            f"{t['dtype_auto']} embeddings: min {q['cosine_to_float_min']:.5f}, mean "
            f"{q['cosine_to_float_mean']:.5f} (largest difference "
            f"{q['max_abs_difference_to_float']:.3f}), with random weights: the agreement "
            "on a trained checkpoint is to be checked on its own images."
        )
    ceiling = t["float32_images_per_s_at_peak"] / ips["naive_loop"]
    if t["dtype_auto"] == "float32":
        lines.append(
            f"- Ceiling: a float32 forward pass at the matmul peak would run "
            f"{t['float32_images_per_s_at_peak']:.2f} images/s, {ceiling:.2f}x the naive loop"
            + (", which already keeps the cores busy with one image at a time: 1.5x the "
               "naive loop is out of reach in float32 on this machine, and needs a faster "
               "precision (int8, bfloat16 on CPUs with bfloat16 units, or a GPU)."
               if ceiling < 1.5 else ".")
        )
    wc, nc, tiny = g["with_cache"], g["without_cache"], g["tiny_checkpoint"]
    lines += [
        "",
        f"## 3. GridSearchCV, {g['cv']} folds x {g['grid_points']} points, {g['n_images']} images",
        "",
        "| | forward passes (images) | wall time (s) |",
        "|---|---|---|",
        f"| with the cache | {wc['forward_images']} | {wc['wall_s']:.1f} |",
        f"| without the cache{'' if nc['measured'] else ' (estimated, see below)'} | "
        f"{nc['forward_images']} | {nc['wall_s']:.1f} |",
        f"| tiny checkpoint, with the cache | {tiny['with_cache']['forward_images']} | "
        f"{tiny['with_cache']['wall_s']:.1f} |",
        f"| tiny checkpoint, without the cache | {tiny['without_cache']['forward_images']} | "
        f"{tiny['without_cache']['wall_s']:.1f} |",
        "",
        f"- Each image embedded once with the cache: "
        f"{_check(wc['forward_images'] == g['n_images'])}. Wall time "
        f"{g['speedup']:.1f}x less (goal >= 10x: {_check(g['speedup'] >= 10)}); "
        f"tiny checkpoint, both arms measured: {tiny['speedup']:.1f}x.",
    ]
    if not nc["measured"]:
        lines.append(
            f"- Without the cache the real architecture would run {nc['forward_images']} "
            "images through the model (every fit and score of every fold and point, and "
            "the refit), about half an hour on this CPU, so its wall time is estimated: "
            + nc["how"] + ". The forward-pass count is exact (the tiny run counts "
            f"{tiny['without_cache']['forward_images']})."
        )
    runs = m["runs"]
    lines += [
        "",
        "## 4. Memory",
        "",
        f"{m['model']}; {m['images']}. Each size runs in a fresh process.",
        "",
        "| images | peak RSS (MiB) | RSS after warm-up (MiB) | output (MiB) | images/s |",
        "|---|---|---|---|---|",
        *(
            f"| {n} | {r['peak_rss_mib']:.0f} | {r['rss_after_warmup_mib']:.0f} | "
            f"{r['output_mib']:.2f} | {r['images_per_s']:.1f} |"
            for n, r in runs.items()
        ),
        "",
        f"- Peak grows by {max(m['peak_growth_mib'], 0):.0f} MiB from 200 to 2,000 images (goal < 100 MB: "
        f"{_check(m['peak_growth_mib'] * 1.048576 < 100)}); holding the 1,800 extra decoded "
        f"images would take {m['decoded_images_if_all_held_mib']:.0f} MiB.",
        "",
    ]
    if results.get("notes"):  # observations added to the .json after the run
        lines += ["## Notes", "", *(f"- {note}" for note in results["notes"]), ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="folder of 1024x1024 NIH PNGs")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run with few images (results not written)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-mode", default="max-autotune",
                        help="torch.compile mode of the compiled arms (default: max-autotune)")
    parser.add_argument("--no-quantize", action="store_true",
                        help="leave out the quantize='int8' arm (it needs torchao)")
    parser.add_argument("--grid-uncached", choices=["auto", "run", "estimate"], default="auto",
                        help="run the uncached grid search on the real architecture, or "
                             "estimate it (auto: run it when it takes under 10 minutes)")
    parser.add_argument("--architectures-only", action="store_true",
                        help="run only arm 5, one per architecture at its real size; "
                             "writes architectures.json and .md beside --output")
    parser.add_argument("--output", default=HERE / "results" / "embedding.json")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the .md report from the existing .json results "
                             "(with --architectures-only: architectures.md)")
    parser.add_argument("--memory-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    output = Path(args.output)
    arch_output = output.with_name("architectures.json")
    if args.render:
        source, render = ((arch_output, markdown_architectures) if args.architectures_only
                          else (output, markdown))
        source.with_suffix(".md").write_text(render(json.loads(source.read_text())))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_child:
        n, checkpoint, paths_file, device, batch, workers = args.memory_child
        memory_child(checkpoint, int(n), paths_file, device, int(batch), int(workers))
        return

    from skclipxray._device import resolve_device
    from skclipxray.testing import make_tiny_siglip

    device = resolve_device("auto")
    gpu = device.type == "cuda"
    settings = {
        "batch_size": 64 if gpu else 8,
        "num_workers": min(16, os.cpu_count() or 2) if gpu else 2,
        # Many short rounds: the best of each arm is its speed with the machine
        # to itself, the more likely caught the more rounds there are.
        "n_images": 1024 if gpu else 16,
        "n_naive": 128 if gpu else 4,
        "n_half": 512 if gpu else 4,
        "n_compiled": 512 if gpu else 8,
        "rounds": 6,
        "half_rounds": 3,
        "compile_rounds": 4,
        # Arm 5: every architecture is loaded at once, and the big ones are slow on a CPU.
        "arch_n_images": 256 if gpu else 8,
        "arch_rounds": 3,
    }
    if args.quick:
        settings.update(n_images=8, n_naive=2, n_half=4, n_compiled=8, rounds=1,
                        half_rounds=1, compile_rounds=1, arch_rounds=1)
    log(f"device {device}; settings {settings}")
    paths = nih_pngs(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.architectures_only:
            architectures(paths, device, settings, work, arch_output, args.quick)
            return
        results = {"environment": environment(device), "settings": settings}
        log("writing the checkpoints and 64 distinct radiographs")
        checkpoint = make_checkpoint(work / "xraysiglip-random")
        tiny = make_tiny_siglip(work / "tiny-512", image_size=512, patch_size=16)
        distinct = distinct_variants(paths, 64, work / "distinct")
        log("benchmarks 1-2: throughput")
        results["throughput"] = bench_throughput(args, checkpoint, paths, device, settings)
        log("benchmark 3: grid search")
        results["grid_search"] = bench_grid(
            args, checkpoint, tiny, distinct, device, settings, results["throughput"], work)
        log("benchmark 4: memory")
        results["memory"] = bench_memory(tiny, paths, device, settings, work)
        results["environment"]["load_average_end"] = os.getloadavg()
        results["wall_s"] = elapsed()
        report(results, markdown, output, args.quick)
        architectures(paths, device, settings, work, arch_output, args.quick,
                      siglip=checkpoint)


def architectures(paths, device, settings, work, output, quick, siglip=None):
    """Run arm 5 and report it on its own (``output`` and its .md)."""
    start = elapsed()
    results = {"environment": environment(device), "settings": settings}
    log("benchmark 5: one arm per architecture, at its real size")
    results["architectures"] = bench_architectures(paths, device, settings, work, siglip)
    results["environment"]["load_average_end"] = os.getloadavg()
    results["wall_s"] = elapsed() - start
    report(results, markdown_architectures, output, quick)


def report(results, render, output, quick):
    """Print the Markdown report; unless ``quick``, write it and the .json results."""
    text = render(results)
    print(text)
    if not quick:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        output.with_suffix(".md").write_text(text)
        log(f"wrote {output} and {output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
