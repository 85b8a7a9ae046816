#!/usr/bin/env bash
# Speed of skipseg's engine against onnxruntime on the same ONNX files, in one run (see
# docs/PERFORMANCE.md):
#  1. fp32: the paper's Table 1 network with seeded random weights and the shipped model,
#     512^2 and 2048^2 windows, 1 and 2 threads, median of REPEATS runs after warm-up,
#     start-up (load + optimise + first run);
#  2. int8: each model quantized by `segment-run quantize` (run by skipseg) and by
#     onnxruntime's own quantizer (run by onnxruntime) on the same calibration images;
#  3. V_rand of the float and int8 models on the ISBI validation slices (one pass, whole
#     slice, 8-bit maps, `segment-run eval`);
#  4. the user-visible figure: MP/s of `segment-run predict` with the shipped model's
#     defaults on ISBI test slices.
# Prints markdown tables and the CPU's flags; writes bench/results/speed-DATE.json.
#
# Usage: bash bench/speed.sh [--quick]     (--quick: 512^2 only, no V_rand section)
# Environment: REPEATS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=""; [ "${1:-}" = "--quick" ] && quick=1
repeats=${REPEATS:-5}
echo "building release binaries (segment-run, segment-train)" >&2
cargo build --release -q -p skipseg-runtime --bin segment-run
cargo build --release -q -p skipseg-train --bin segment-train
bash scripts/oracle-venv.sh >&2
py=target/oracle-venv/bin/python
run=target/release/segment-run
work=target/bench
mkdir -p "$work"
table1=$work/table1-random.onnx
[ -f "$table1" ] || target/release/segment-train random-model --arch models/table1.json --seed 2016 -o "$table1" >&2
cal_all=(); for i in $(seq -w 0 24); do cal_all+=("data/isbi2012/train/images/$i.png"); done
cal_few=("${cal_all[@]:0:5}")   # Table 1 calibration: 5 slices (its activations are large)

# int8 models: ours (segment-run quantize) and onnxruntime's (QDQ), same images
quantize() { # NAME FLOAT.onnx OURS(yes|no) IMAGES...
  local name=$1 float=$2 ours=$3; shift 3
  if [ "$ours" = yes ] && [ ! -f "$work/$name-int8.onnx" ]; then
    mkdir -p "$work/cal-$name"; cp "$@" "$work/cal-$name/"
    "$run" quantize --model "$float" --calibration "$work/cal-$name" --method min-max \
      --max-side 512 -o "$work/$name-int8.onnx" >&2
  fi
  if [ ! -f "$work/$name-ort-int8.onnx" ]; then
    "$run" optimize --model "$float" -o "$work/$name-folded.onnx" > /dev/null
    "$py" bench/ort_quantize.py "$work/$name-folded.onnx" "$work/$name-ort-int8.onnx" qdq "$@" 2> /dev/null
  fi
}
echo "quantizing (ours and onnxruntime's)" >&2
# the shipped model's int8 (models/isbi-small-int8.onnx) is ours already
quantize small models/isbi-small.onnx no "${cal_all[@]}"
quantize table1 "$table1" yes "${cal_few[@]}"

echo "## lscpu"
lscpu | grep -E "^(Model name|CPU\(s\)|Thread|L1d|L2|L3|Flags)"
echo
echo "## Engine: one window, ours vs onnxruntime"
sizes=512,2048; [ -n "$quick" ] && sizes=512
"$py" bench/speed.py --repeats "$repeats" --sizes "$sizes" --threads 1,2 \
  --model "small=models/isbi-small.onnx" --model "table1=$table1" \
  --model "small-int8=models/isbi-small-int8.onnx:$work/small-ort-int8.onnx" \
  --model "table1-int8=$work/table1-int8.onnx:$work/table1-ort-int8.onnx"

if [ -z "$quick" ]; then
  echo
  echo "## V_rand / V_info on ISBI slices 25-29: one pass, whole 512x512 slice, 8-bit maps"
  val=$work/val; rm -rf "$val"; mkdir -p "$val/images" "$val/labels"
  for i in 25 26 27 28 29; do
    cp "data/isbi2012/train/images/$i.png" "$val/images/"; cp "data/isbi2012/train/labels/$i.png" "$val/labels/"
  done
  score() { "$run" eval --labels "$val/labels" --proposal "$1" --membrane-high --json \
    | "$py" -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['v_rand']:.4f} | {d['v_info']:.4f}\")"; }
  echo "| model | quantized by | run by | V_rand | V_info |"
  echo "|---|---|---|---|---|"
  for m in "models/isbi-small.onnx|- (fp32)" "models/isbi-small-int8.onnx|skipseg"; do
    f=${m%%|*}; rm -rf "$val/out"
    "$run" predict --model "$f" "$val/images" -o "$val/out" --tta none --halo 0 --tile 512 > /dev/null
    echo "| $(basename "$f") | ${m##*|} | skipseg | $(score "$val/out") |"
  done
  for m in "models/isbi-small.onnx|- (fp32)" "$work/small-ort-int8.onnx|onnxruntime (QDQ, per-channel, min-max)"; do
    f=${m%%|*}; rm -rf "$val/out"
    "$py" bench/ort_maps.py "$f" "$val/out" "$val"/images/*.png
    echo "| $(basename "$f") | ${m##*|} | onnxruntime | $(score "$val/out") |"
  done
fi

echo
echo "## segment-run predict with the shipped model's defaults (ISBI test slices 00-03, 512x512)"
pred=$work/predict
rm -rf "$pred"; mkdir -p "$pred/in"
cp data/isbi2012/test/images/0[0-3].png "$pred/in/"
for model in models/isbi-small.onnx models/isbi-small-int8.onnx; do
  for t in 1 2; do
    out=$("$run" predict --model "$model" "$pred/in" -o "$pred/out" --threads "$t")
    echo "$out" | awk -v t="$t" -v m="$model" '/MP\/s/ { for (i = 1; i <= NF; i++) if ($i == "MP/s") { s += $(i-1); n++ } }
      END { if (n) printf "%s, threads %d: mean %.3f MP/s over %d slices (8 symmetries each)\n", m, t, s / n, n }'
  done
done
