"""Time balanced_subset (and the metadata loader) on the full NIH ChestX-ray14 metadata.

Usage::

    python benchmarks/bench_balanced_subset.py [--metadata PATH] [--repeats 7]

The metadata defaults to ``../shared/data/nih-chestxray14/Data_Entry_2017_v2020.csv.gz``
next to the repository, or ``$NIH_METADATA``. Results go to
``benchmarks/results/balanced_subset.json``.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn

from skclipxray.datasets import balanced_subset, load_nih_chestxray14

HERE = Path(__file__).resolve().parent
DEFAULT_METADATA = HERE.parent.parent / "shared/data/nih-chestxray14/Data_Entry_2017_v2020.csv.gz"


def _timed(function, repeats):
    """Run ``function`` ``repeats`` times; return its last result and the seconds of each run."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def _stats(seconds):
    return {
        "min_s": min(seconds),
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "runs": len(seconds),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", default=os.environ.get("NIH_METADATA", DEFAULT_METADATA))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", default=HERE / "results" / "balanced_subset.json")
    args = parser.parse_args()

    data, load_seconds = _timed(
        lambda: load_nih_chestxray14(metadata=args.metadata, require_images=False), 3
    )
    Y = data.Y
    cases = []
    for n_per_label in (100, 500, 1000, 5000):
        for include_no_finding in (True, False):
            (indices, summary), seconds = _timed(
                lambda: balanced_subset(
                    Y, n_per_label, include_no_finding=include_no_finding, random_state=0
                ),
                args.repeats,
            )
            over = summary["achieved"] - summary["target"]
            cases.append(
                {
                    "n_per_label": n_per_label,
                    "include_no_finding": include_no_finding,
                    **_stats(seconds),
                    "subset_size": int(len(indices)),
                    "sum_of_targets": int(summary["target"].sum()),
                    "every_label_reached_its_target": bool((over >= 0).all()),
                    "labels_above_target": {k: int(v) for k, v in over[over > 0].items()},
                    "achieved": {k: int(v) for k, v in summary["achieved"].items()},
                }
            )
            print(
                f"n_per_label={n_per_label:5d} no_finding={include_no_finding!s:5}: "
                f"median {statistics.median(seconds) * 1e3:6.1f} ms, {len(indices):6d} images"
            )

    result = {
        "benchmark": "balanced_subset on the full NIH ChestX-ray14 metadata",
        "metadata": os.path.basename(str(args.metadata)),
        "rows": int(len(Y)),
        "labels": int(Y.shape[1]),
        "patients": int(data.groups.nunique()),
        "images_with_several_labels": int((Y.sum(axis=1) > 1).sum()),
        "load_metadata": _stats(load_seconds),
        "balanced_subset": cases,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load_nih_chestxray14 (metadata only): median {statistics.median(load_seconds):.2f} s")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
