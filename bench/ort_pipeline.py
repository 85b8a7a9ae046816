"""The onnxruntime peer of `segment-run predict` over a folder, doing the same work:
read each 8-bit PNG (PIL), standardise it as the model's metadata says (per image: its
own mean and std), run the whole image through one onnxruntime session, write the
probability as an 8-bit PNG (PIL). Prints one JSON line: slices, seconds (from the
first read to the last write; the session is created before), session seconds.

Usage: ort_pipeline.py MODEL.onnx IN_DIR OUT_DIR THREADS
"""
import json
import os
import sys
import time

import numpy as np
import onnx
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from ort_time import session  # noqa: E402


def main() -> int:
    model, src, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    os.makedirs(out, exist_ok=True)
    meta = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
    prep = json.loads(meta["skipseg.preprocessing"])
    started = time.perf_counter()
    sess = session(model, threads)
    name = sess.get_inputs()[0].name
    session_s = time.perf_counter() - started
    files = sorted(f for f in os.listdir(src) if f.endswith(".png"))
    t0 = time.perf_counter()
    for f in files:
        a = np.asarray(Image.open(os.path.join(src, f)), dtype=np.float32) / 255.0
        if prep.get("per_image"):
            mean, std = float(a.mean()), max(float(a.std()), 1e-3)
        else:
            mean, std = prep["mean"], prep["std"]
        x = ((a - mean) / std).astype(np.float32)[None, None]
        prob = sess.run(None, {name: x})[0][0, 0]
        u8 = np.round(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
        Image.fromarray(u8).save(os.path.join(out, f))
    print(json.dumps({"slices": len(files), "seconds": time.perf_counter() - t0,
                      "session_seconds": session_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
