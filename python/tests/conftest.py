"""Shared fixtures of the Python binding's tests: the repository, the ISBI data, the
segment-run binary of the same build (the reference the binding must equal)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# the repository's copy of the ISBI 2012 slices (data/isbi2012/README.md): a fresh clone
# needs nothing outside it
ISBI = ROOT / "data" / "isbi2012" / "train"
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
    return read_stack(ISBI / "images")


@pytest.fixture(scope="session")
def isbi_labels():
    return read_stack(ISBI / "labels")


def read_stack(folder):
    """The 30 PNG slices 00.png .. 29.png of `folder`, uint8 [30, 512, 512]."""
    return np.stack([np.array(Image.open(folder / f"{k:02d}.png")) for k in range(30)])


@pytest.fixture(scope="session")
def model():
    import skipseg

    return skipseg.Model()
