#!/usr/bin/env python3
"""Choose `segment-run label`'s parameters on slices whose maps are given: labels every
probability map of PROB_DIR with each setting of a grid, scores them against the
ground truth of GT_DIR (`segment-run eval --instances`, direct), and prints a table,
best last. Used for the defaults in runtime/src/labels.rs (docs/EVALUATION.md): run it
on training slices only.

  python3 scripts/label-sweep.py SEGMENT_RUN PROB_DIR GT_DIR [--quick]
"""
import itertools
import json
import subprocess
import sys
import tempfile

segment_run, prob, gt = sys.argv[1:4]
quick = "--quick" in sys.argv
grid = {
    "seed-sigma": [1.0, 2.0, 3.0] if not quick else [2.0],
    "seed-max": [0.3, 0.5],
    "merge-threshold": [0.3, 0.4, 0.5, 0.6, 0.7],
    "min-size": [0, 25, 50, 100, 200],
}
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for values in itertools.product(*grid.values()):
        opts = dict(zip(grid.keys(), values))
        args = [a for k, v in opts.items() for a in (f"--{k}", str(v))]
        subprocess.run([segment_run, "label", "--probabilities", prob, "-o", tmp, *args],
                       check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([segment_run, "eval", "--instances", "--json", "--labels", gt,
                              "--proposal", tmp], check=True, capture_output=True, text=True)
        e = json.loads(out.stdout)
        rows.append((e["direct"]["v_rand"], e["direct"]["v_info"],
                     e["as_submission"]["v_rand"], opts))
        print(f"{rows[-1][0]:.4f} {rows[-1][1]:.4f} {rows[-1][2]:.4f} {opts}", flush=True)
rows.sort(key=lambda r: r[0])
print("\nV_rand  V_info  V_rand(as submission)  setting   (best last)")
for r in rows[-10:]:
    print(f"{r[0]:.4f}  {r[1]:.4f}  {r[2]:.4f}  {r[3]}")
