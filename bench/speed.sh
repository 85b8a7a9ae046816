#!/usr/bin/env bash
# Speed of skipseg's engine against onnxruntime on the same ONNX files, in one run (see
# docs/PERFORMANCE.md): the paper's Table 1 network with seeded random weights and the
# shipped model, 512^2 and 2048^2 windows, 1 and 2 threads, median of REPEATS runs after
# warm-up; then the user-visible figure, MP/s of `segment-run predict` with the shipped
# model's defaults on ISBI test slices. Prints markdown tables and the CPU's flags;
# writes bench/results/speed-DATE.json.
#
# Usage: bash bench/speed.sh [--quick]     (--quick: 512^2 only)
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
mkdir -p target/bench
table1=target/bench/table1-random.onnx
[ -f "$table1" ] || target/release/segment-train random-model --arch models/table1.json --seed 2016 -o "$table1" >&2
echo "## lscpu"
lscpu | grep -E "^(Model name|CPU\(s\)|Thread|L1d|L2|L3|Flags)"
echo
echo "## Engine: one window, ours vs onnxruntime (fp32)"
sizes=512,2048; [ -n "$quick" ] && sizes=512
"$py" bench/speed.py --repeats "$repeats" --sizes "$sizes" --threads 1,2 \
  --model "small=models/isbi-small.onnx" --model "table1=$table1"
echo
echo "## segment-run predict with the shipped model's defaults (ISBI test slices 00-03, 512x512)"
work=target/bench/predict
rm -rf "$work"; mkdir -p "$work/in"
cp data/isbi2012/test/images/0[0-3].png "$work/in/"
for t in 1 2; do
  out=$(target/release/segment-run predict "$work/in" -o "$work/out" --threads "$t")
  echo "$out" | sed 's/^/    /'
  echo "$out" | awk -v t="$t" '/MP\/s/ { for (i = 1; i <= NF; i++) if ($i == "MP/s") { s += $(i-1); n++ } }
    END { if (n) printf "threads %d: mean %.3f MP/s over %d slices\n", t, s / n, n }'
done
