#!/usr/bin/env bash
# The test command of the README (and of CI): installs the Python test venv (oracles,
# and the Python binding's test tools) into target/oracle-venv when it can, builds the C
# library, runs every test of the workspace (the C interface included), then the Python
# binding's and the napari plugin's tests (scripts/python-tests.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! bash scripts/oracle-venv.sh; then
  if [ -n "${CI:-}" ]; then
    echo "error: CI must install the oracle venv (tests/oracle/requirements.txt)" >&2
    exit 1
  fi
  echo "WARNING: oracle venv unavailable (offline?): oracle tests will be SKIPPED loudly" >&2
fi
# the C library the C-interface tests link (runtime/tests/c_api.rs)
bash scripts/build-clib.sh --dev
cargo test --workspace --features skipseg-runtime/ffi "$@"
# the wheel on the same library, and the napari plugin (docs/PYTHON.md)
if [ -x target/oracle-venv/bin/pytest ]; then
  bash scripts/python-tests.sh
elif [ -n "${CI:-}" ]; then
  echo "error: CI must run the Python binding's tests (no test venv)" >&2
  exit 1
else
  echo "WARNING: no test venv: the Python binding's tests are SKIPPED" >&2
fi
