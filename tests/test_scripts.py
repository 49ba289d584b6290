"""The set-up script: torch pinned first, the editable install redone only when needed."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# A stand-in for .venv/bin/python: finds every module, logs each pip call.
_FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "$*" >> "$(dirname "$0")/pip.log"; fi
exit 0
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPTS / "setup-env.sh", tmp_path / "scripts")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(_FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def _pip_calls(project, *extras):
    subprocess.run(["bash", "scripts/setup-env.sh", *extras], cwd=project, check=True)
    log = project / ".venv" / "bin" / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def test_the_editable_install_runs_again_only_when_pyproject_or_extras_change(project):
    assert _pip_calls(project, "dicom,plot") == ["-m pip install -q --disable-pip-version-check "
                                                 "-e .[dicom,plot]"]
    assert len(_pip_calls(project, "dicom,plot")) == 1  # nothing changed: no reinstall
    assert len(_pip_calls(project, "dicom,plot,test")) == 2  # other extras
    assert len(_pip_calls(project, "dicom,plot")) == 2  # both sets are installed
    with open(project / "pyproject.toml", "a") as fh:
        fh.write("dependencies = ['numpy']\n")
    assert len(_pip_calls(project, "dicom,plot")) == 3
