#!/usr/bin/env bash
# Score ways of running models on the validation slices 25-29 (official V_rand / V_info,
# thinning on) and print one markdown row each: the best over all 11 thresholds (the
# challenge's definition), and the best over the thresholds 0.0-0.9 only (a score that
# does not hang on "membrane wherever p > 0").
# usage: bash scripts/score.sh "LABEL|MODEL.onnx|PREDICT ARGS" ...
#   e.g. bash scripts/score.sh "shipped, one pass|models/isbi-small.onnx|--tta none"
#   SLICES="$(seq -s ' ' 0 29)" bash scripts/score.sh ...   (all 30 labelled slices)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "| run | V_rand | V_info | best threshold | V_rand, thresholds 0.0-0.9 | seconds |"
echo "|---|---|---|---|---|---|"
for row in "$@"; do
    IFS='|' read -r label model args <<<"$row"
    started=$(date +%s.%N)
    PREDICT_ARGS="$args" bash scripts/validate.sh "$model" --json > target/score.json
    seconds=$(python3 -c "print(f'{$(date +%s.%N) - $started:.0f}')")
    python3 - "$label" "$seconds" <<'PY'
import json, sys
d = json.load(open("target/score.json"))
rows = d["by_threshold"]
best = max(rows, key=lambda r: r["rand_f"])
info = max(r["info_f"] for r in rows)
low = max(r["rand_f"] for r in rows if r["threshold"] < 0.95)
print(f"| {sys.argv[1]} | {best['rand_f']:.4f} | {info:.4f} | {best['threshold']:.1f} | {low:.4f} | {sys.argv[2]} |")
PY
done
