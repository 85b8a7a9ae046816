"""Segment an ISBI 2012 training slice with the shipped model, score it against its
labels, and save an overlay (works in a script or, cell by cell, in Jupyter).

    pip install target/wheels/skipseg-*.whl pillow
    python examples/python/segment.py [SLICE] [OUT.png]

SLICE: an ISBI training slice, data/isbi2012/train/images/SLICE.png (default 27, a
validation slice of the shipped model). See examples/python/README.md for a walkthrough.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

import skipseg

root = Path(__file__).resolve().parents[2]
data = root / "data" / "isbi2012" / "train"
k = int(sys.argv[1]) if len(sys.argv) > 1 else 27
out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("overlay.png")

image = np.array(Image.open(data / "images" / f"{k:02d}.png"))  # uint8, 512 x 512
labels = np.array(Image.open(data / "labels" / f"{k:02d}.png"))  # 255 cell, 0 membrane

model = skipseg.Model()  # the shipped model, compiled into the wheel
print(model.info["architecture"], model.info["preprocessing"]["description"])

# the model's default: 8 flipped / transposed passes averaged; progress as tiles finish
membrane = model.predict(image, progress=lambda done, total: print(f"tile {done}/{total}"))
one_pass = model.predict(image, averaging="none")

for name, p in (("dihedral average", membrane), ("one pass", one_pass)):
    s = skipseg.evaluate(labels, p, membrane_high=True)
    print(f"{name}: V_rand {s['v_rand']:.4f} (threshold {s['v_rand_threshold']:.1f}), "
          f"V_info {s['v_info']:.4f}")

# overlay: membranes (p > 0.5) in red over the slice
rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
mask = membrane > 0.5
rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.array([255, 0, 0])
Image.fromarray(rgb.round().astype(np.uint8)).save(out)
print(f"wrote {out}")
