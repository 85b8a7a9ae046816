"""Per-node profile of onnxruntime on a model (the peer's side of docs/PERFORMANCE.md).

Usage: ort_profile.py MODEL.onnx SIZE THREADS RUNS
Prints one JSON object: time per operator type and per node (ms per run, slowest
first) from onnxruntime's own profiler, after one warm-up run. Node names are those of
the optimised graph ORT runs (fused nodes carry the first fused node's name).
"""
import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def main() -> int:
    path, size, threads, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    channels = inp.shape[1] if isinstance(inp.shape[1], int) else 1
    x = np.random.default_rng(1).standard_normal((1, channels, size, size)).astype(np.float32)
    for _ in range(runs + 1):
        sess.run(None, {inp.name: x})
    trace = json.load(open(sess.end_profiling()))
    by_node = collections.defaultdict(float)
    op_of = {}
    runs_seen = collections.Counter()
    for ev in trace:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        by_node[name] += ev["dur"] / 1e3
        op_of[name] = ev["args"].get("op_name", "?")
        runs_seen[name] += 1
    # drop the warm-up run: average over the runs each node was seen, minus one
    nodes = []
    for name, total in by_node.items():
        n = runs_seen[name]
        nodes.append({"name": name, "op": op_of[name], "ms": total / n})
    nodes.sort(key=lambda n: -n["ms"])
    by_op = collections.defaultdict(lambda: [0.0, 0])
    for n in nodes:
        by_op[n["op"]][0] += n["ms"]
        by_op[n["op"]][1] += 1
    print(json.dumps({
        "engine": "onnxruntime " + ort.__version__,
        "ms_per_run": sum(n["ms"] for n in nodes),
        "by_op": sorted(({"op": k, "ms": v[0], "nodes": v[1]} for k, v in by_op.items()), key=lambda d: -d["ms"]),
        "nodes": nodes,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
