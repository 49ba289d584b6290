#!/usr/bin/env bash
# Create .venv (if missing) and install skclipxray with the given extras.
# torch is pinned first: an unpinned torch, asked for by any dependency,
# pulls a multi-GB CUDA build onto CPU-only machines.
# The package is installed editable, so code changes need no reinstall: the
# install is redone only when pyproject.toml changes, per set of extras.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dicom,plot}"
py=.venv/bin/python
[ -x "$py" ] || python3 -m venv .venv
installed() {  # whether a module can be found, without importing it
    "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"
}
if ! installed torch; then
    "$py" -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi
stamp=".venv/skclipxray-install-${extras//,/-}.sha256"
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! installed skclipxray; then
    "$py" -m pip install -q --disable-pip-version-check -e ".[${extras}]"
    echo "$wanted" > "$stamp"
fi
