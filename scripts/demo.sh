#!/usr/bin/env bash
# Set up .venv and run the offline demo (a tiny random checkpoint, no download).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh dicom,plot >&2
exec .venv/bin/skclipxray demo "$@"
