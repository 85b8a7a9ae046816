#!/usr/bin/env bash
# Official ISBI scores (V_rand, V_info, thinning on) of a model on the validation slices
# 25-29 of data/isbi2012/train: segment them with segment-run, then score with eval.
# Usage: bash scripts/validate.sh [MODEL.onnx] [eval options]   (default: models/isbi-small-bce.onnx, the shipped model)
#        PREDICT_ARGS="--tta dihedral" bash scripts/validate.sh ...   (options for predict)
#        SLICES="$(seq -s ' ' 0 29)" bash scripts/validate.sh ...       (other labelled slices)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/isbi-small-bce.onnx}
[ $# -gt 0 ] && shift  # the rest goes to eval (e.g. --json)
work=target/validate
rm -rf "$work"; mkdir -p "$work/images" "$work/labels" "$work/pred"
for i in ${SLICES:-25 26 27 28 29}; do
  i=$(printf '%02d' "$((10#$i))")
  cp "data/isbi2012/train/images/$i.png" "$work/images/"
  cp "data/isbi2012/train/labels/$i.png" "$work/labels/"
done
cargo build --release -q -p skipseg-runtime --bin segment-run
# shellcheck disable=SC2086  # PREDICT_ARGS is a list of options
target/release/segment-run predict --model "$model" "$work/images" -o "$work/pred" ${PREDICT_ARGS:-} > /dev/null
target/release/segment-run eval --labels "$work/labels" --proposal "$work/pred" --membrane-high "$@"
