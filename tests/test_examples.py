"""Every example script runs to the end against the tiny checkpoint, and shows
its figures with pyplot (as the gallery captures them)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))

# Runs an example as ``python SCRIPT`` does, and reports the pyplot figures open
# when it calls plt.show().
RUN = """
import runpy, sys
import matplotlib.pyplot as plt
shown = []
plt.show = lambda *args, **kwargs: shown.append(len(plt.get_fignums()))
runpy.run_path(sys.argv[1], run_name="__main__")
print(f"plt.show() calls: {len(shown)}, figures shown: {max(shown, default=0)}", file=sys.stderr)
"""


def test_examples_are_found():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(script, tmp_path):
    env = {
        **os.environ,
        "SKCLIPXRAY_MODEL": "tiny",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(script)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.strip(), "an example prints what it shows"
    shows, figures = map(int, re.findall(r"calls: (\d+), figures shown: (\d+)", done.stderr)[-1])
    assert shows >= 1 and figures >= 1, "an example draws a figure and shows it"
