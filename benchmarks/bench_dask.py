"""Wall time of embedding 64 radiographs with 1 versus 2 local Dask workers.

Usage::

    python benchmarks/bench_dask.py [--images DIR] [--n-images 64] [--quick]

For each checkpoint (a tiny random one, a mid-sized one: ViT-B/16 at 224 px,
and, unless ``--quick``, XraySigLIP's vision architecture: ViT-B/16 at 512 px;
all random weights, so nothing is downloaded), the same 64 image paths (real
1024x1024 NIH ChestX-ray14 PNGs, cycled) are embedded by:

* ``local``: ``SigLIPImageEmbedder.transform`` in this process (torch's
  default threads);
* ``dask 1 worker``: a ``LocalCluster`` with one single-threaded worker
  process, under ``joblib.parallel_config(backend="dask")``; torch runs one
  thread there, as Dask sets ``OMP_NUM_THREADS=1`` for its workers;
* ``dask 1 worker, 2 torch threads``: the same worker after
  ``torch.set_num_threads(2)``, which uses the whole machine;
* ``dask 2 workers``: two single-threaded worker processes.

Every worker loads the checkpoint before timing (``client.run``), so the
times are embedding alone: reading and decoding the PNGs, the forward passes
and the round trips, not starting the cluster nor loading the model (both are
reported apart). Arms are interleaved over ``--rounds`` rounds (the 512 px
model: ``--rounds-large``) and the best round is kept, because the machine
may be shared. The embeddings of every arm are compared
with the local ones. Results go to ``benchmarks/results/dask.json`` and
``dask.md``.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
IMAGE_FOLDERS = (REPO.parent / "shared/data/real-cxr", REPO / "tests/data/real-cxr")

#: Vision towers measured, beyond the tiny test checkpoint.
VISION = {
    "mid (ViT-B/16, 224 px)": dict(
        image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072,
        num_hidden_layers=12, num_attention_heads=12,
    ),
    "XraySigLIP architecture (ViT-B/16, 512 px)": dict(
        image_size=512, patch_size=16, hidden_size=768, intermediate_size=3072,
        num_hidden_layers=12, num_attention_heads=12,
    ),
}

_START = time.perf_counter()


def log(message):
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


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


def make_checkpoint(folder, vision, seed=0):
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


def _set_torch_threads(n):
    import torch

    torch.set_num_threads(n)
    return torch.get_num_threads()


def _torch_threads():
    import torch

    return torch.get_num_threads()


def _matmul_gflops(seconds=3.0, size=1024):
    """float32 matmul GFLOP/s of this process over about ``seconds``, one torch thread."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - started) / 1e9


def hardware_ceiling(clusters):
    """How much two single-threaded processes can compute at once, against one.

    ``client.run`` runs the same matmul loop on every worker at the same time:
    the ratio of the two-worker total to the one-worker figure bounds what two
    workers can gain on this machine, whatever the library does.
    """
    one = sum(clusters["1 worker"][1].run(_matmul_gflops).values())
    two = sum(clusters["2 workers"][1].run(_matmul_gflops).values())
    return {"one_worker_gflops": one, "two_workers_gflops": two, "ratio": two / one}


def start_cluster(n_workers):
    from dask.distributed import Client, LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    return cluster, client, time.perf_counter() - started


def load_on_workers(client, checkpoint):
    """Load the checkpoint in every worker process; seconds taken."""
    from skclipxray import load_backbone

    def load(path):
        load_backbone(path, device="cpu")
        return os.getpid()

    started = time.perf_counter()
    client.run(load, str(checkpoint))
    return time.perf_counter() - started


def bench_model(name, checkpoint, paths, clusters, rounds, batch_size):
    import joblib

    from skclipxray import SigLIPImageEmbedder

    embedder = SigLIPImageEmbedder(checkpoint, device="cpu", batch_size=batch_size,
                                   progress=False)
    embedder.transform(paths[:2])  # load here too, and warm the code paths

    loads = {}
    for label, (_, client, _) in clusters.items():
        loads[label] = load_on_workers(client, checkpoint)
        with joblib.parallel_config(backend="dask", client=client):
            embedder.transform(paths[: 2 * batch_size])  # warm the workers' code paths

    def local():
        return embedder.transform(paths)

    def on(client, threads):
        def run():
            client.run(_set_torch_threads, threads)
            # The client named: by default joblib takes the last one created.
            with joblib.parallel_config(backend="dask", client=client):
                return embedder.transform(paths)
        return run

    one, two = clusters["1 worker"][1], clusters["2 workers"][1]
    arms = {
        "local": local,
        "dask 1 worker": on(one, 1),
        "dask 1 worker, 2 torch threads": on(one, 2),
        "dask 2 workers": on(two, 1),
    }
    times = {arm: [] for arm in arms}
    outputs = {}
    for round_ in range(rounds):
        for arm, run in arms.items():
            started = time.perf_counter()
            outputs[arm] = run()
            times[arm].append(time.perf_counter() - started)
            log(f"{name} | {arm} | round {round_ + 1}: {times[arm][-1]:.2f} s")
    for _, client, _ in clusters.values():
        client.run(_set_torch_threads, 1)

    reference = outputs["local"]
    result = {"model": name, "batch_size": batch_size, "rounds": rounds,
              "load_on_workers_s": loads, "arms": {}}
    for arm, seconds in times.items():
        best = min(seconds)
        result["arms"][arm] = {
            "seconds": seconds, "best_s": best, "images_per_s": len(paths) / best,
            "identical_to_local": bool(np.array_equal(outputs[arm], reference)),
            "max_abs_diff_to_local": float(np.abs(outputs[arm] - reference).max()),
        }
    best = {arm: r["best_s"] for arm, r in result["arms"].items()}
    result["speedup_2_vs_1_worker"] = best["dask 1 worker"] / best["dask 2 workers"]
    result["speedup_2_workers_vs_1_worker_2_threads"] = (
        best["dask 1 worker, 2 torch threads"] / best["dask 2 workers"]
    )
    result["speedup_2_workers_vs_local"] = best["local"] / best["dask 2 workers"]
    return result


def environment():
    import dask
    import distributed
    import joblib
    import torch
    import transformers

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads_local": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "dask": dask.__version__, "distributed": distributed.__version__,
        "joblib": joblib.__version__, "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
    }


def markdown(results):
    env = results["environment"]
    lines = [
        "# Dask benchmark: 1 versus 2 local workers",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} CPU cores, no GPU; torch {env['torch']}, "
        f"transformers {env['transformers']}, dask/distributed {env['distributed']}, "
        f"joblib {env['joblib']}. Load average at start {env['load_average_start'][0]:.1f}, "
        f"at end {results['load_average_end'][0]:.1f}. Wall time of the benchmark: "
        f"{results['wall_s'] / 60:.1f} min.",
        "",
        f"Task: `SigLIPImageEmbedder.transform` of {results['n_images']} paths to real "
        "1024x1024 NIH ChestX-ray14 PNGs (cycled), float32 on the CPU, default "
        "`chunk_size` (about four chunks per worker), random weights. Workers are "
        "`LocalCluster(threads_per_worker=1, processes=True)`; each had loaded the "
        "checkpoint before timing. Arms interleaved over rounds; best round kept.",
        "",
        "Hardware ceiling: a single-threaded float32 matmul loop run at once in "
        f"each worker computes {results['matmul_ceiling']['two_workers_gflops']:.0f} "
        f"GFLOP/s in total with 2 workers against "
        f"{results['matmul_ceiling']['one_worker_gflops']:.0f} with 1: "
        f"{results['matmul_ceiling']['ratio']:.2f}x is the most 2 workers can gain "
        "on this machine for model-bound work.",
        "",
        "Cluster start-up (not in the times below): "
        + ", ".join(f"{label}: {s:.1f} s" for label, s in results["cluster_start_s"].items())
        + ".",
        "",
    ]
    for model in results["models"]:
        lines += [
            f"## {model['model']} (batch {model['batch_size']}, best of {model['rounds']})",
            "",
            "| arm | wall time (s) | images/s | identical to local |",
            "|---|---|---|---|",
        ]
        for arm, r in model["arms"].items():
            same = "yes" if r["identical_to_local"] else (
                f"no (max abs diff {r['max_abs_diff_to_local']:.1e})")
            lines.append(f"| {arm} | {r['best_s']:.2f} | {r['images_per_s']:.1f} | {same} |")
        lines += [
            "",
            f"- 2 workers vs 1 single-threaded worker: {model['speedup_2_vs_1_worker']:.2f}x.",
            f"- 2 workers vs 1 worker with 2 torch threads (both use both cores): "
            f"{model['speedup_2_workers_vs_1_worker_2_threads']:.2f}x.",
            f"- 2 workers vs local: {model['speedup_2_workers_vs_local']:.2f}x.",
            "- Loading the checkpoint on the workers (not timed above): "
            + ", ".join(f"{label}: {s:.1f} s" for label, s in model["load_on_workers_s"].items())
            + ".",
            "",
        ]
    lines += results.get("notes", [])
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", help="folder of 1024x1024 NIH PNGs")
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rounds-large", type=int, default=1,
                        help="rounds for the 512 px model (about a minute per arm on 2 cores)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny and mid-sized checkpoints only")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from skclipxray.testing import make_tiny_siglip

    sources = nih_pngs(args.images)
    paths = [sources[i % len(sources)] for i in range(args.n_images)]
    log(f"{len(paths)} paths cycling {len(sources)} NIH PNGs")
    results = {"environment": environment(), "n_images": len(paths),
               "n_distinct_images": len(sources)}

    work = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    checkpoints = [("tiny (test checkpoint, 32 px)", make_tiny_siglip(work / "tiny"), 16,
                    args.rounds)]
    for i, (name, vision) in enumerate(VISION.items()):
        large = vision["image_size"] > 224
        if args.quick and large:
            continue
        checkpoints.append((name, make_checkpoint(work / f"vision{i}", vision), 8,
                            args.rounds_large if large else args.rounds))

    clusters = {}
    results["cluster_start_s"] = {}
    try:
        for label, n_workers in (("1 worker", 1), ("2 workers", 2)):
            clusters[label] = start_cluster(n_workers)
            results["cluster_start_s"][label] = clusters[label][2]
            log(f"{label}: started in {clusters[label][2]:.1f} s; torch threads "
                f"{clusters[label][1].run(_torch_threads)}")
        results["matmul_ceiling"] = hardware_ceiling(clusters)
        log(f"matmul ceiling: {results['matmul_ceiling']}")
        results["models"] = []
        for name, checkpoint, batch_size, rounds in checkpoints:
            results["models"].append(
                bench_model(name, checkpoint, paths, clusters, rounds, batch_size)
            )
    finally:
        for cluster, client, _ in clusters.values():
            client.close()
            cluster.close()
    results["load_average_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - _START

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dask.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "dask.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
