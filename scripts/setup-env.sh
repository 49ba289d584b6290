#!/usr/bin/env bash
# Create .venv (if missing) and install skclipxray with the given extras.
# torch is pinned first: an unpinned torch, asked for by any dependency,
# pulls a multi-GB CUDA build onto CPU-only machines.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dicom,plot}"
python3 -m venv .venv
py=.venv/bin/python
if ! "$py" -c "import torch" 2>/dev/null; then
    "$py" -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi
"$py" -m pip install -q --disable-pip-version-check -e ".[${extras}]"
