"""What a person waits for before any image is embedded, each in a fresh process.

* ``skclipxray --help``: parses the arguments without importing scikit-learn,
  torch or transformers.
* A hub model id on a machine that cannot reach the hub, with
  ``HF_HUB_OFFLINE`` unset (the hub endpoint is a closed port on this
  machine, so the run needs no network and touches none) and with
  ``HF_HUB_OFFLINE=1``: how long until :class:`ModelNotAvailableError`.
* A fully cached ``transform`` of real NIH PNGs with a checkpoint of
  XraySigLIP's architecture (random weights), against the same call with an
  empty cache. The cached call loads no weights: the report says whether the
  model was loaded, and the ratio of the two times.

Every timing is the median of ``--repeats`` fresh processes, the time from the
start of the call in question to its end as the process sees it (the
interpreter's own start-up excluded, except for ``--help``, which is timed as
a whole command).

Run from the repository root::

    python benchmarks/bench_latency.py

Writes ``benchmarks/results/latency.json`` and ``latency.md``.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, cpu_model, log, make_checkpoint, nih_pngs

RESULTS = Path(__file__).parent / "results"

_LOAD = """
import json, sys, time
start = time.perf_counter()
from skclipxray import load_backbone
try:
    load_backbone(sys.argv[1], device="cpu")
except Exception as exc:
    error = type(exc).__name__
print(json.dumps({"seconds": time.perf_counter() - start, "error": error}))
"""

_TRANSFORM = """
import json, sys, time
start = time.perf_counter()
from skclipxray import SigLIPImageEmbedder
from skclipxray._backbone import _BACKBONES
model, cache, *paths = sys.argv[1:]
embedder = SigLIPImageEmbedder(model, cache=cache, device="cpu", progress=False)
embedder.transform(paths)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "n_embedded": embedder.n_embedded_, "n_cached": embedder.n_cached_,
                  "model_loaded": bool(_BACKBONES)}))
"""


def _run(code, *args, env=None):
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _help_seconds(repeats):
    command = [str(Path(sys.executable).with_name("skclipxray")), "--help"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-images", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    report = {"machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count()},
              "repeats": args.repeats}
    log("skclipxray --help")
    report["help_seconds"] = _help_seconds(args.repeats)

    work = Path(tempfile.mkdtemp())
    try:
        offline = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
        offline.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(work / "hf"))
        for name, env in [("unset", offline), ("1", {**offline, "HF_HUB_OFFLINE": "1"})]:
            log(f"offline hub id, HF_HUB_OFFLINE={name}")
            runs = [_run(_LOAD, "StanfordAIMI/XraySigLIP__vit-b-16-siglip-512__webli", env=env)
                    for _ in range(args.repeats)]
            report[f"offline_error_hf_hub_offline_{name}"] = runs

        log("checkpoint of XraySigLIP's architecture")
        checkpoint = make_checkpoint(work / "checkpoint")
        paths = nih_pngs()[: args.n_images]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for state in ("empty", "full"):
            runs = []
            for repeat in range(args.repeats):
                cache = work / f"cache_{repeat}.sqlite"
                if state == "empty":
                    cache.unlink(missing_ok=True)
                log(f"transform of {len(paths)} images, {state} cache, run {repeat + 1}")
                runs.append(_run(_TRANSFORM, checkpoint, cache, *paths, env=env))
            report[f"transform_{state}_cache"] = runs
    finally:
        shutil.rmtree(work, ignore_errors=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latency.md").write_text(_markdown(report))
    print(_markdown(report))


def _median(runs):
    return statistics.median(run["seconds"] if isinstance(run, dict) else run for run in runs)


def _markdown(report):
    empty, full = report["transform_empty_cache"], report["transform_full_cache"]
    n_images = empty[0]["n_embedded"]
    rows = [
        ("`skclipxray --help` (whole command)", _median(report["help_seconds"]), ""),
        ("hub id, hub unreachable, `HF_HUB_OFFLINE` unset",
         _median(report["offline_error_hf_hub_offline_unset"]),
         report["offline_error_hf_hub_offline_unset"][0]["error"]),
        ("hub id, `HF_HUB_OFFLINE=1`", _median(report["offline_error_hf_hub_offline_1"]),
         report["offline_error_hf_hub_offline_1"][0]["error"]),
        (f"transform of {n_images} NIH PNGs, empty cache", _median(empty),
         f"{empty[0]['n_embedded']} embedded; model loaded: {empty[0]['model_loaded']}"),
        (f"transform of {n_images} NIH PNGs, full cache", _median(full),
         f"{full[0]['n_cached']} from the cache; model loaded: {full[0]['model_loaded']}"),
    ]
    lines = [
        "# Latency before the first embedding",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} CPUs. "
        f"Medians of {report['repeats']} fresh processes. Checkpoint: XraySigLIP's "
        "architecture with random weights.",
        "",
        "| what | seconds | outcome |",
        "|---|---|---|",
        *(f"| {what} | {seconds:.2f} | {outcome} |" for what, seconds, outcome in rows),
        "",
        f"Fully cached / empty cache: {_median(full) / _median(empty):.2f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
