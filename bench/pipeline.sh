#!/usr/bin/env bash
# Folders of slices, file in to file out: `segment-run predict` (shipped model, --tta
# none, default tiling: one window per slice) against the same work done by an
# onnxruntime pipeline in Python (bench/ort_pipeline.py: PIL read, the model's
# normalisation, one whole-image session run, PIL write), same ONNX file, same threads,
# one run of this script. Also the engine alone on one window (`segment-run bench`), to
# show how much of predict's time is not the network, and predict's own count of the time
# inside the network in the same process (its `total:` line), which does not suffer the
# run-to-run noise of comparing two processes. Prints the CPU flags and one markdown
# table: wall times, ratio, engine and network times, peak RSS.
#
# Usage: bash bench/pipeline.sh [N512] [N2048]   (slices per folder; default 30 and 8)
set -euo pipefail
cd "$(dirname "$0")/.."
n512=${1:-30}; n2048=${2:-8}
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (Debian package 'time')" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq time >&2
fi
cargo build --release -q -p skipseg-runtime --bin segment-run --example synthetic_image
bash scripts/oracle-venv.sh >&2
py=target/oracle-venv/bin/python
run=target/release/segment-run
model=models/isbi-small-bce.onnx
work=target/bench/pipeline
mkdir -p "$work/in512" "$work/in2048"
for i in $(seq 0 $((n512 - 1))); do
  cp "data/isbi2012/test/images/$(printf %02d $((i % 30))).png" "$work/in512/$(printf %03d "$i").png"
done
[ -f "$work/mosaic2048.png" ] || target/release/examples/synthetic_image "$work/mosaic2048.png" 2048 >&2
for i in $(seq 0 $((n2048 - 1))); do cp "$work/mosaic2048.png" "$work/in2048/$(printf %03d "$i").png"; done

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'); flags: $(grep -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx_vnni|neon|asimddp' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo
echo "| folder | threads | segment-run s | onnxruntime s | throughput ratio (ours/ORT) | engine-only ms/slice | predict ms/slice | predict over engine | predict over its network (all; after page 1) | RSS ours MB | RSS ORT MB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
peak() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1" | awk '{printf "%.0f", $1/1024}'; }
for size in 512 2048; do
  n=$([ "$size" = 512 ] && echo "$n512" || echo "$n2048")
  for threads in 1 2; do
    rm -rf "$work/out-ours" "$work/out-ort"
    /usr/bin/time -v "$run" predict "$work/in$size" -o "$work/out-ours" --tta none \
      --threads "$threads" > "$work/predict.txt" 2> "$work/time-ours.txt"
    ours=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time-ours.txt" \
      | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
    /usr/bin/time -v "$py" bench/ort_pipeline.py "$model" "$work/in$size" "$work/out-ort" \
      "$threads" > "$work/ort.json" 2> "$work/time-ort.txt"
    ort=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time-ort.txt" \
      | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
    engine=$("$run" bench --model "$model" --size "$size" --threads "$threads" --repeats 5 --json \
      | "$py" -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')
    own=$(sed -n 's/^total: .*(\([0-9.]*\)x the network alone); after the first page: .*(\([0-9.]*\)x)$/\1x; \2x/p' "$work/predict.txt")
    "$py" - "$size" "$threads" "$n" "$ours" "$ort" "$engine" "$(peak "$work/time-ours.txt")" \
      "$(peak "$work/time-ort.txt")" "$own" <<'PY'
import sys
size, threads, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ours, ort, engine, rss_ours, rss_ort = map(float, sys.argv[4:9])
own = sys.argv[9] or "?"
per = 1e3 * ours / n
print(f"| {n} x {size}^2 | {threads} | {ours:.2f} | {ort:.2f} | {ort / ours:.2f}x | {engine:.1f} | "
      f"{per:.1f} | {per / engine:.2f}x | {own} | {rss_ours:.0f} | {rss_ort:.0f} |")
PY
  done
done
echo
echo "whole-process wall time of each side (start-up, model load, every slice read, run and written); "
echo "engine-only: median of 5 runs of one window of the slice's size (segment-run bench)."
echo "predict over its network: predict's own wall time (first read to last rename, model load"
echo "excluded) over the time inside the network in the same process, for all pages and for"
echo "pages 2.. (after the first page compiled the plan)."

du -b "$work/out-ours/000.png" "$work/out-ort/000.png" | awk '{print "output PNG bytes: " $2 " " $1}'
