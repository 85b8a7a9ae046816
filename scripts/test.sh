#!/usr/bin/env bash
# The test command of the README (and of CI): installs the Python test oracles into
# target/oracle-venv when it can, builds the C library, then runs every test of the
# workspace (the C interface included).
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
