"""onnxruntime timings for bench/speed.sh (the peer engine; never a product dependency).

Usage: ort_time.py MODEL.onnx SIZE THREADS REPEATS [--batch B]
Prints one JSON object: load + first run (startup_ms), every timed run (runs_ms) and
their median, with onnxruntime's default graph optimisations (ORT_ENABLE_ALL), one
inter-op thread and THREADS intra-op threads. The input is standardised noise of the
model's channel count (speed does not depend on the values).
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int) -> ort.InferenceSession:
    """The peer's session: default graph optimisations, one inter-op thread, THREADS
    intra-op threads, sequential execution (bench/ort_pipeline.py uses it too)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main() -> int:
    path, size, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    batch = int(sys.argv[sys.argv.index("--batch") + 1]) if "--batch" in sys.argv else 1
    t0 = time.perf_counter()
    sess = session(path, threads)
    inp = sess.get_inputs()[0]
    channels = inp.shape[1] if isinstance(inp.shape[1], int) else 1
    x = np.random.default_rng(1).standard_normal((batch, channels, size, size)).astype(np.float32)
    sess.run(None, {inp.name: x})
    startup = (time.perf_counter() - t0) * 1e3
    sess.run(None, {inp.name: x})  # second warm-up
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        runs.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "engine": "onnxruntime " + ort.__version__,
        "startup_ms": startup,
        "runs_ms": runs,
        "median_ms": float(np.median(runs)),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
