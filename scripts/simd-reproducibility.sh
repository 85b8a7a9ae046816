#!/usr/bin/env bash
# Does the CPU's SIMD level change training numbers? Trains the `small` preset for 2
# epochs on three 128x128 crops of ISBI slices (validation on a fourth), natively and
# under qemu user emulation with CPU models lacking AVX-512 (EPYC-Milan, Haswell) or
# AVX (Westmere), and prints each run's losses at full precision
# (docs/REPRODUCTION.md, "Reproducibility across CPUs").
# Needs qemu-user (installed from Debian's packages if missing) and the oracle venv
# (Pillow, for the crops). Usage: bash scripts/simd-reproducibility.sh [segment-train]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
    cargo build --release -q -p skipseg-train
    bin=target/release/segment-train
fi
command -v qemu-x86_64 >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q qemu-user >/dev/null; }
bash scripts/oracle-venv.sh >/dev/null
work=target/simd-repro
rm -rf "$work"; mkdir -p "$work/images" "$work/labels"
target/oracle-venv/bin/python - "$work" <<'PY'
import sys
from PIL import Image
for i in range(4):
    for kind in ("images", "labels"):
        Image.open(f"data/isbi2012/train/{kind}/{i:02d}.png").crop((0, 0, 128, 128)).save(f"{sys.argv[1]}/{kind}/{i:02d}.png")
PY
run() {
    local name=$1; shift
    RAYON_NUM_THREADS=1 "$@" "$bin" train --arch models/small.json --loss dice --epochs 2 \
        --images "$work/images" --labels "$work/labels" --val 3 --out "$work/$name" >/dev/null 2>&1
    python3 -c 'import json,sys
h = json.load(open(sys.argv[1]))["history"]
print("%-20s" % sys.argv[2], " ".join("epoch %d: train %.9f val %.9f" % (r["epoch"], r["train_loss"], r["val_loss"]) for r in h))' \
        "$work/$name/state.json" "$name"
}
grep -o 'avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo "(this CPU)"
run native
run qemu-EPYC-Milan qemu-x86_64 -cpu EPYC-Milan
run qemu-Haswell qemu-x86_64 -cpu Haswell
run qemu-Westmere qemu-x86_64 -cpu Westmere
