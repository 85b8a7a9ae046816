"""Shared fixtures of the Python binding's tests: the repository, the ISBI data, the
segment-run binary of the same build (the reference the binding must equal)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[2]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012"
sys.path.insert(0, str(ROOT / "tests" / "oracle"))


@pytest.fixture(scope="session")
def segment_run():
    """Run segment-run (SKIPSEG_SEGMENT_RUN, or target/debug/segment-run that
    scripts/python-tests.sh builds) and return its stdout."""
    exe = Path(os.environ.get("SKIPSEG_SEGMENT_RUN", ROOT / "target" / "debug" / "segment-run"))
    if not exe.exists():
        pytest.fail(f"{exe} not found: build it (cargo build -p skipseg-runtime) or set SKIPSEG_SEGMENT_RUN")

    def run(*args):
        r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, f"segment-run {' '.join(map(str, args))}: {r.stderr}"
        return r.stdout

    return run


@pytest.fixture(scope="session")
def isbi_volume():
    """The 30 ISBI training slices, uint8 [30, 512, 512]."""
    return tifffile.imread(ISBI / "train-volume.tif")


@pytest.fixture(scope="session")
def isbi_labels():
    return tifffile.imread(ISBI / "train-labels.tif")


@pytest.fixture(scope="session")
def model():
    import skipseg

    return skipseg.Model()
