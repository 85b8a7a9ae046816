#!/usr/bin/env bash
# Creates the Python venv of the tests under target/oracle-venv: the test oracles (onnx,
# onnxruntime, scikit-image, tifffile, pypng: tests/oracle/requirements.txt) and what the
# Python binding's tests need (maturin, pytest, pytest-qt, napari with PyQt5:
# python/requirements-test.txt). Idempotent: does nothing when the pinned requirements
# are installed.
set -euo pipefail
# CI lints skipseg's crates through RUSTC_WORKSPACE_WRAPPER (.ci/run); a package pip
# would build from source is not ours to lint
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/oracle-venv"
req="$root/tests/oracle/requirements.txt"
req_python="$root/python/requirements-test.txt"
stamp="$venv/.requirements.sha256"
want=$(cat "$req" "$req_python" | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if ! python3 -c "import ensurepip, venv" 2>/dev/null; then
  # Debian splits venv/ensurepip into the package python3-venv
  echo "installing Debian package python3-venv (python3 -m venv needs it)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq python3-venv >&2
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check -r "$req" -r "$req_python"
echo "$want" > "$stamp"
echo "oracle venv ready: $venv"
