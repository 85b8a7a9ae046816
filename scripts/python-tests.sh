#!/usr/bin/env bash
# The Python binding's tests (docs/PYTHON.md): builds the wheel (dev profile: it shares
# the dependencies `cargo test` builds), installs it into the test venv
# (target/oracle-venv, scripts/oracle-venv.sh) as a user would (pip, no Rust needed),
# builds segment-run (the reference the binding must equal), and runs pytest on
# python/tests, the napari tests on a virtual X display (Xvfb, Mesa).
# Installs the Debian packages Xvfb and Qt's xcb plugin need when they are missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/target/oracle-venv"
if [ ! -x "$venv/bin/pytest" ]; then
  echo "error: no test venv with pytest: bash scripts/oracle-venv.sh" >&2
  exit 2
fi
packages=(xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4
  libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxcb-randr0
  libxcb-shape0 libxcb-xkb1 libdbus-1-3 libfontconfig1)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages for headless Qt: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
wheel=$(bash scripts/build-wheel.sh --dev | tail -1)
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"
# segment-run as `cargo test --workspace --features skipseg-runtime/ffi` (test.sh) builds
# it for its own tests: after test.sh this is a no-op. (`cargo build -p skipseg-runtime`
# would enable other features of shared dependencies and compile tract again.)
cargo test --quiet --workspace --features skipseg-runtime/ffi --no-run
export SKIPSEG_SEGMENT_RUN="$root/target/debug/segment-run"
# the wheel as a user installs it: a fresh venv, pip (numpy from PyPI), no Rust on PATH
fresh="$root/target/wheel-smoke-venv"
rm -rf "$fresh"
python3 -m venv "$fresh"
"$fresh/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "$wheel"
(cd / && env -i HOME="$HOME" PATH=/usr/bin:/bin "$fresh/bin/python" -c '
import shutil, numpy as np, skipseg
assert shutil.which("cargo") is None and shutil.which("rustc") is None
p = skipseg.Model().predict(np.full((64, 64), 128, np.uint8), averaging="none")
assert p.dtype == np.float32 and p.shape == (64, 64) and np.isfinite(p).all()
print("fresh venv: skipseg", skipseg.__version__, "imports and predicts without Rust")
')
rm -rf "$fresh"
# run from outside python/, so `import skipseg` is the installed wheel, not the sources
cd "$root/target"
xvfb-run -a -s "-screen 0 1920x1200x24" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  -c "$root/python/tests/pytest.ini" --rootdir "$root/python/tests" "$root/python/tests" "$@"
