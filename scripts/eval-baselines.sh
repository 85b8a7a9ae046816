#!/usr/bin/env bash
# Baselines of the ISBI metrics on the 30 training label slices (docs/EVALUATION.md):
# ground truth vs itself, an all-cell proposal, and the labels with cells eroded or
# dilated by one pixel (4-neighbourhood), each with thinning on and off.
# Needs the oracle venv (numpy, Pillow) to write the variants.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/oracle-venv.sh
cargo build --release -q -p skipseg-runtime --bin segment-run
out=target/baselines
rm -rf "$out"; mkdir -p "$out"
target/oracle-venv/bin/python - "$out" <<'PY'
import os, sys, glob
import numpy as np
from PIL import Image
out = sys.argv[1]
def shifted(a):
    p = np.pad(a, 1, mode="edge")
    return [p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]
for name in ["all-cell", "cells-eroded-1px", "cells-dilated-1px"]:
    os.makedirs(os.path.join(out, name))
for f in sorted(glob.glob("data/isbi2012/train/labels/*.png")):
    lab = np.array(Image.open(f)) > 127
    variants = {
        "all-cell": np.ones_like(lab),
        "cells-eroded-1px": np.logical_and.reduce([lab] + shifted(lab)),
        "cells-dilated-1px": np.logical_or.reduce([lab] + shifted(lab)),
    }
    for name, v in variants.items():
        Image.fromarray((v * 255).astype(np.uint8)).save(os.path.join(out, name, os.path.basename(f)))
PY
echo "| proposal | thinning | V_rand | V_info | best threshold (rand / info) |"
echo "|---|---|---|---|---|"
for name in ground-truth all-cell cells-eroded-1px cells-dilated-1px; do
  prop="$out/$name"; [ "$name" = ground-truth ] && prop=data/isbi2012/train/labels
  for thin in on off; do
    target/release/segment-run eval --labels data/isbi2012/train/labels --proposal "$prop" --thinning "$thin" --json |
      python3 -c "import json,sys; d=json.load(sys.stdin); print(f'| $name | $thin | {d[\"v_rand\"]:.4f} | {d[\"v_info\"]:.4f} | {d[\"v_rand_threshold\"]:.1f} / {d[\"v_info_threshold\"]:.1f} |')"
  done
done
