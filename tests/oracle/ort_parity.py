"""Independent engine check: onnx.checker + onnxruntime on exported skipseg models.

Usage: ort_parity.py CASE_DIR...   where each folder holds model.onnx and pairs
input*.npy / output*.npy (paired by sorted name). Prints one JSON object per case:
{"case": ..., "checker": "ok", "max_abs_diff": [...]}. Exits non-zero if the checker
fails; the Rust test applies the tolerance.
"""
import glob
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    for case in sys.argv[1:]:
        path = os.path.join(case, "model.onnx")
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        inputs = sorted(glob.glob(os.path.join(case, "input*.npy")))
        outputs = sorted(glob.glob(os.path.join(case, "output*.npy")))
        assert len(inputs) == len(outputs) and inputs, f"{case}: unpaired npy files"
        diffs = []
        for i, o in zip(inputs, outputs):
            got = sess.run(None, {name: np.load(i)})[0]
            want = np.load(o)
            assert got.shape == want.shape, f"{i}: shape {got.shape} vs {want.shape}"
            diffs.append(float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))
        print(json.dumps({"case": case, "checker": "ok", "max_abs_diff": diffs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
