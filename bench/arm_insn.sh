#!/usr/bin/env bash
# Instructions per run of the shipped models on aarch64 under qemu-user, with skipseg's
# kernels on every convolution, with tract's own, and as the engine chooses per layer
# shape by default (docs/EDGE.md, "Kernels on ARM"): a deterministic proxy
# where emulated time means nothing. Builds qemu's `insn` TCG plugin from Debian's qemu
# sources (Debian ships no plugins; adds a deb-src entry if there is none) and the
# harness runtime/examples/engine_runs.rs for aarch64; counts 1 and 3 runs of one
# 256x256 window, 1 thread, and prints (3 runs - 1 run) / 2 per model, engine and CPU
# (CPUS="a b" to choose the CPU models; default Cortex-A76 and A53).
# Needs what scripts/cross.sh installs (cross compilers, qemu-user, the target).
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_if() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
work=target/arm-insn
mkdir -p "$work"
plugin=$work/libinsn.so
if [ ! -f "$plugin" ]; then
  if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "adding a deb-src entry for Debian's sources (qemu's plugin sources)" >&2
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$(. /etc/os-release && echo "$VERSION_CODENAME")" | sudo_if tee /etc/apt/sources.list.d/debian-src.sources > /dev/null
    sudo_if apt-get update -q > /dev/null
  fi
  command -v pkg-config > /dev/null && pkg-config --exists glib-2.0 \
    || sudo_if apt-get install -y -q libglib2.0-dev pkg-config > /dev/null
  (cd "$work" && apt-get source --download-only -q qemu > /dev/null 2>&1)
  tar -C "$work" -xJf "$work"/qemu_*.orig.tar.xz --wildcards '*/tests/plugin/insn.c' '*/include/qemu/qemu-plugin.h'
  src=$(dirname "$(dirname "$(find "$work" -path '*/tests/plugin/insn.c' | head -1)")")
  gcc -shared -fPIC -O2 -I "$src/../include/qemu" $(pkg-config --cflags glib-2.0) \
    "$src/plugin/insn.c" -o "$plugin" $(pkg-config --libs glib-2.0)
fi
target=aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
  AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
cargo build --release -q --target "$target" -p skipseg-runtime --example engine_runs
exe=target/$target/release/examples/engine_runs
count() { # CPU MODEL RUNS ENGINE
  qemu-aarch64 -cpu "$1" -plugin "$plugin" -d plugin "$exe" "$2" 256 "$3" "$4" 2>&1 \
    | sed -n 's/^total insns: //p'
}
echo "| model | engine | qemu CPU | window | instructions per run |"
echo "|---|---|---|---|---|"
for m in models/isbi-small-bce.onnx models/isbi-small-bce-int8.onnx; do
  for e in skipseg tract default; do
    for cpu in ${CPUS:-cortex-a76 cortex-a53}; do
      a=$(count "$cpu" "$m" 1 "$e"); b=$(count "$cpu" "$m" 3 "$e")
      echo "| $(basename "$m" .onnx) | $e | $cpu | 256x256 | $(( (b - a) / 2 )) |"
    done
  done
done
