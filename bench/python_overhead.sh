#!/usr/bin/env bash
# The Python binding's overhead (issue 20): the release wheel and the release C library
# (same profile, no LTO) on the shipped model, 2048x2048, alternating in one process.
#   bash bench/python_overhead.sh [--rounds N] [--threads T]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/target/oracle-venv"
[ -x "$venv/bin/python" ] || bash scripts/oracle-venv.sh
wheel=$(bash scripts/build-wheel.sh | tail -1)
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"
cargo rustc -q -p skipseg-runtime --lib --release --no-default-features --features ffi,onnx \
  --crate-type cdylib
lscpu | grep -E "Model name|^Flags" | sed 's/^Flags: */flags: /' | cut -c1-400
cd target
"$venv/bin/python" ../bench/python_overhead.py "$root/target/release/libskipseg_runtime.so" \
  "$root/models/isbi-small-bce.onnx" "$@"
echo "(the test venv now holds the release wheel; scripts/python-tests.sh reinstalls the dev one)"
