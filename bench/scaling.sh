#!/usr/bin/env bash
# Throughput of shard workers on this machine: one synthetic OME-Zarr volume segmented
# by 1, 2 and 4 concurrent `segment-run predict --shard I/N` processes (1 engine thread
# each), beside one process using every core, each into a fresh output, every output
# checked identical to the first. Prints lscpu flags and a markdown table; the ratios
# (not the absolute numbers) carry to other machines.
#
# Then its peer: one SIZE x SIZE slice through the OME-Zarr path and through the PNG path
# (same size, both tiled ISBI slices), time and peak RSS, and the ratio.
#
#   bash bench/scaling.sh [DEPTH] [SIZE] [TTA]     (default 8 2048 none)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
depth=${1:-8} size=${2:-2048} tta=${3:-none}
cd "$root"
cargo build --release -q -p skipseg-runtime --bin segment-run --example synthetic_volume --example synthetic_image
bin=target/release/segment-run
work=target/scaling
rm -rf "$work" && mkdir -p "$work"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
echo "flags: $(lscpu | sed -n 's/^Flags: *//p' | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_vnni|avx512_bf16)$' | tr '\n' ' ')"
target/release/examples/synthetic_volume "$work/in.zarr" "$depth" "$size" 512 >/dev/null
mp=$(echo "$depth * $size * $size / 1000000" | bc -l)
echo
echo "volume: $depth x $size x $size uint8 (chunks 1 x 512 x 512), --tta $tta, model: the embedded default"
echo
echo "| workers | threads each | wall s | MP/s | vs 1 worker |"
echo "|---|---|---|---|---|"
base=""
run() { # workers threads
  local n=$1 t=$2 out="$work/out-$1x$2.zarr" start end s
  start=$(date +%s.%N)
  for i in $(seq 0 $((n - 1))); do
    "$bin" predict "$work/in.zarr" -o "$out" --tta "$tta" --threads "$t" --shard "$i/$n" >/dev/null &
  done
  wait
  end=$(date +%s.%N)
  s=$(echo "$end - $start" | bc -l)
  [ -n "$base" ] || base=$s
  printf "| %d | %d | %.2f | %.2f | %.2fx |\n" "$n" "$t" "$s" "$(echo "$mp / $s" | bc -l)" "$(echo "$base / $s" | bc -l)"
  if [ -d "$work/first.zarr" ]; then
    diff -r -q --exclude=.skipseg "$work/first.zarr" "$out" >/dev/null || { echo "output of $n workers differs" >&2; exit 1; }
  else
    mv "$out" "$work/first.zarr"
  fi
}
run 1 1
run 2 1
run 4 1
run 1 "$(nproc)"
echo
echo "(every output identical to the first: checked)"

echo
echo "one ${size}x${size} slice, 1 thread, --tta $tta: OME-Zarr path vs PNG path"
echo
target/release/examples/synthetic_volume "$work/slice.zarr" 1 "$size" 512 >/dev/null
target/release/examples/synthetic_image "$work/slice.png" "$size" >/dev/null
echo "| input | wall s | peak RSS MB |"
echo "|---|---|---|"
measure() { # label input output
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$bin" predict "$2" -o "$3" --tta "$tta" --threads 1 >/dev/null
  read -r s kb < "$work/time.txt"
  printf "| %s | %.2f | %d |\n" "$1" "$s" "$((kb / 1024))"
  echo "$s"> "$work/$1.s"
}
measure zarr "$work/slice.zarr" "$work/slice-out.zarr"
measure png "$work/slice.png" "$work/slice-out"
printf "\nZarr / PNG wall time: %.2f\n" "$(echo "$(cat "$work/zarr.s") / $(cat "$work/png.s")" | bc -l)"
