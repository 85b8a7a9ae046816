#!/usr/bin/env bash
# Peak memory of `segment-run predict` over synthetic EM images of growing size: the
# goal is <= 1 GiB and flat in image size (input read row by row, tiles run in order,
# outputs streamed). Prints a markdown table; needs GNU time (/usr/bin/time), which it
# installs from Debian's package `time` when missing.
# Usage: bash bench/memory.sh [SIZES...]   (default: 4096 8192 16384)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(4096 8192 16384)
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (Debian package 'time')" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq time >&2
fi
cargo build --release -q -p skipseg-runtime --bin segment-run --example synthetic_image
work=target/bench/memory
mkdir -p "$work"
threads=${THREADS:-2}
# EXTRA: more predict options, e.g. EXTRA="--tta none"
EXTRA_TEXT=${EXTRA:+, $EXTRA}
echo "| image | tiles (default) | input PNG | wall s | MP/s | peak RSS (MiB) | RSS / smallest |"
echo "|---|---|---|---|---|---|---|"
first=""
for n in "${sizes[@]}"; do
  img="$work/synthetic-$n.png"
  [ -f "$img" ] || target/release/examples/synthetic_image "$img" "$n" > /dev/null
  rm -rf "$work/out"
  /usr/bin/time -v -o "$work/time-$n.txt" target/release/segment-run predict "$img" \
    -o "$work/out" --threads "$threads" ${EXTRA:-} > "$work/summary-$n.txt"
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time-$n.txt")
  wall=$(awk -F'): ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time-$n.txt" \
    | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
  tiles=$(grep -o '[0-9]* tiles' "$work/summary-$n.txt" | head -1 | cut -d' ' -f1)
  size_mb=$(du -m "$img" | cut -f1)
  rss_mb=$((rss_kb / 1024))
  [ -n "$first" ] || first=$rss_mb
  awk -v n="$n" -v t="$tiles" -v s="$size_mb" -v w="$wall" -v r="$rss_mb" -v f="$first" 'BEGIN {
    printf "| %dx%d | %d | %d MB | %.1f | %.2f | %d | %.2f |\n", n, n, t, s, w, n*n/1e6/w, r, r/f }'
done
echo
echo "(segment-run predict IMAGE -o OUT --threads $threads, default model and tiles$EXTRA_TEXT; $(nproc) cores)"
