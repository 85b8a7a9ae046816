"""Membrane probability maps of a model run by onnxruntime, one pass over each whole
image (standardised by its own mean and std), written as 8-bit PNGs like
`segment-run predict` writes them; bench/speed.sh scores them with `segment-run eval`.

Usage: ort_maps.py MODEL.onnx OUT_DIR IMAGE...
"""
import os
import sys

import numpy as np
import onnxruntime as ort
import png

sys.path.insert(0, os.path.dirname(__file__))
from ort_quantize import load  # noqa: E402


def main() -> int:
    model, out, images = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(out, exist_ok=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for p in images:
        prob = sess.run(None, {name: load(p)})[0][0, 0]
        u8 = np.round(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
        h, w = u8.shape
        with open(os.path.join(out, os.path.basename(p)), "wb") as f:
            png.Writer(w, h, greyscale=True, bitdepth=8).write(f, u8.tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
