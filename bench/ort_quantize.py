"""onnxruntime's own static quantizer on the same calibration images as
`segment-run quantize`, for the comparison in bench/speed.sh (never a product dependency).

Usage: ort_quantize.py FLOAT.onnx OUT.onnx {qdq|qoperator} IMAGE...
Per-channel int8 weights, uint8 activations, min-max calibration (onnxruntime's
defaults for a CNN); each image is standardised by its own mean and standard deviation,
as the shipped model's metadata says. The skipseg metadata is copied over.
"""
import sys

import numpy as np
import onnx
import png
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)


def load(path):
    r = png.Reader(filename=path)
    w, h, rows, info = r.read()
    a = np.vstack([np.asarray(row, dtype=np.float64) for row in rows])
    planes = info["planes"]
    a = a.reshape(h, w, planes)[:, :, 0] if planes > 1 else a.reshape(h, w)
    a = a / (2 ** info["bitdepth"] - 1)
    x = (a - a.mean()) / max(a.std(), 1e-3)
    return x[None, None].astype(np.float32)


class Reader(CalibrationDataReader):
    def __init__(self, name, images):
        self.items = iter([{name: load(p)} for p in images])

    def get_next(self):
        return next(self.items, None)


def main() -> int:
    src, out, fmt, images = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    model = onnx.load(src)
    name = model.graph.input[0].name
    quantize_static(src, out, Reader(name, images),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    q = onnx.load(out)
    del q.metadata_props[:]
    q.metadata_props.extend(model.metadata_props)
    onnx.save(q, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
