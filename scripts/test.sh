#!/usr/bin/env bash
# Set up .venv and run the whole test suite (tests, doctests, examples).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh dicom,plot,dask,int8,test >&2
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
