"""Independent engine check of a model skipseg wrote (e.g. an int8 QDQ model from
`segment-run quantize`): onnx.checker, then onnxruntime on every input*.npy of CASE_DIR,
compared with skipseg's output*.npy.

Usage: ort_compare.py CASE_DIR   (model.onnx, input*.npy, output*.npy paired by name)
Prints one JSON object with, for onnxruntime without graph optimisations ("literal": each
QuantizeLinear, DequantizeLinear and Conv as the ONNX standard defines it) and with its
default optimisations ("optimised": its own fused integer kernels), the max and mean
absolute difference of the outputs and the share of values on the same side of 0.5. The
Rust test applies the tolerances.
"""
import glob
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    case = sys.argv[1]
    path = os.path.join(case, "model.onnx")
    onnx.checker.check_model(onnx.load(path), full_check=True)
    inputs = sorted(glob.glob(os.path.join(case, "input*.npy")))
    outputs = sorted(glob.glob(os.path.join(case, "output*.npy")))
    assert len(inputs) == len(outputs) and inputs, f"{case}: unpaired npy files"
    result = {"checker": "ok"}
    for label, level in [("literal", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                         ("optimised", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)]:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = level
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        diffs, agree, n = [], 0, 0
        for i, o in zip(inputs, outputs):
            got = sess.run(None, {name: np.load(i)})[0].astype(np.float64)
            want = np.load(o).astype(np.float64)
            assert got.shape == want.shape, f"{i}: shape {got.shape} vs {want.shape}"
            diffs.append(np.abs(got - want).ravel())
            agree += int(np.sum((got >= 0.5) == (want >= 0.5)))
            n += got.size
        d = np.concatenate(diffs)
        result[label] = {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "agree": agree / n,
                         "values": n}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
