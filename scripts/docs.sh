#!/usr/bin/env bash
# Set up .venv and build the documentation site (warnings are errors).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh dicom,plot,dask,docs >&2
export HF_HUB_OFFLINE=1 SKCLIPXRAY_MODEL=tiny MPLBACKEND=Agg
exec .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
