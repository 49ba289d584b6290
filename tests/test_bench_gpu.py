"""``benchmarks/bench_gpu.py --smoke``: the GPU benchmark's code runs and reports every section.

The smoke run is on the CPU with the tiny random checkpoint: its speeds say
nothing of a GPU; the test checks the report's structure and that its
numbers are consistent with one another.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

SECTIONS = [
    "## Machine", "## Matrix-multiply peak", "## Model only", "## Decoding ceiling",
    "## End to end", "## Agreement of device-side preprocessing", "## Goals",
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench-gpu") / "gpu"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--smoke", "--output", str(output)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(output.with_suffix(".json").read_text()), output.with_suffix(
        ".md").read_text()


def test_the_report_has_every_section_in_order(smoke):
    _, report = smoke
    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "smoke test on the CPU" in report
    goals = report[report.index("## Goals"):].splitlines()
    assert sum(line.endswith(("| met |", "| NOT met |")) for line in goals) == 3


def test_the_numbers_are_plausible_and_consistent(smoke):
    results, report = smoke
    assert results["smoke"] and results["environment"]["device"] == "cpu"
    assert results["cores"] >= 1 and results["environment"]["cpu"]
    assert results["peak_tflops"] > 0
    model = results["model_only"]
    assert model["images_per_s"] > 0 and model["attention"]
    # The FLOPs of the tiny tower, and the share of the peak they make.
    assert model["gflop_per_image"] > 0
    np.testing.assert_allclose(
        model["tflops"], model["images_per_s"] * model["gflop_per_image"] / 1e3, rtol=1e-9
    )
    np.testing.assert_allclose(model["share_of_peak"],
                               model["tflops"] / results["peak_tflops"], rtol=1e-9)
    decode = results["decode_images_per_s"]
    assert decode > 0
    for mode in ("cpu", "device"):
        row = results["end_to_end"][mode]
        assert row["images_per_s"] > 0
        np.testing.assert_allclose(row["share_of_ceiling"], row["images_per_s"] / decode,
                                   rtol=1e-9)
    agreement = results["agreement"]
    assert 0 <= agreement["mean_error_levels"] <= agreement["max_error_levels"] <= 8
    assert 0.9999 <= agreement["cosine_float32_min"] <= agreement["cosine_float32_mean"] <= 1 + 1e-6
    assert 0.999 <= agreement["cosine_bfloat16_min"] <= 1 + 1e-6
    for goal in results["goals"]:
        assert goal["status"] in ("met", "NOT met")
        assert f"| {goal['goal']} | {goal['measured']:.1%} | {goal['status']} |" in report
