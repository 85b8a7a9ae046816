#!/usr/bin/env bash
# Builds the Python wheel of skipseg (python/: PyO3 + maturin): one abi3 wheel for
# CPython >= 3.9 on this platform, tagged manylinux by maturin's check of the glibc
# symbols it uses, into target/wheels/. pip installs it without a Rust toolchain.
#
#   bash scripts/build-wheel.sh            # release build (what to ship)
#   bash scripts/build-wheel.sh --dev      # the dev profile (tests: shares the
#                                          # dependencies cargo test builds)
#
# maturin comes from the test venv (scripts/oracle-venv.sh) or from PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=(--release)
if [ "${1:-}" = "--dev" ]; then
  profile=(--profile dev)
fi
maturin="$root/target/oracle-venv/bin/maturin"
[ -x "$maturin" ] || maturin=$(command -v maturin || true)
if [ -z "$maturin" ]; then
  echo "error: maturin not found: run bash scripts/oracle-venv.sh (or pip install maturin)" >&2
  exit 2
fi
rm -f target/wheels/skipseg-*.whl
"$maturin" build "${profile[@]}" --manifest-path python/Cargo.toml --out target/wheels \
  --interpreter "$(command -v python3)" --quiet 2>&1 | grep -v "^📦\|^🔗\|^🐍\|^💻" || true
wheel=$(ls target/wheels/skipseg-*.whl 2>/dev/null | head -1)
if [ -z "$wheel" ]; then
  echo "error: maturin wrote no wheel into target/wheels" >&2
  exit 1
fi
echo "$wheel"
