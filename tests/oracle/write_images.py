"""Write image files with independent encoders (tifffile, pypng) for the reader tests.

Usage: python write_images.py OUTDIR
Every pixel follows a formula the Rust test knows (see tests/tests/image_io_oracle.rs):
  8-bit:  (131 y + 71 x + 17 page) mod 251
  16-bit: (7919 y + 104729 x) mod 65536
  float:  0.001 (y - 2 x)
"""
import sys
from pathlib import Path

import numpy as np
import png
import tifffile

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)


def u8(h, w, page=0):
    y, x = np.mgrid[0:h, 0:w]
    return ((131 * y + 71 * x + 17 * page) % 251).astype(np.uint8)


def u16(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    return ((7919 * y + 104729 * x) % 65536).astype(np.uint16)


def f32(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return (0.001 * (y - 2 * x)).astype(np.float32)


tifffile.imwrite(out / "strips8.tif", u8(37, 53), rowsperstrip=7, photometric="minisblack")
tifffile.imwrite(out / "strips16_deflate.tif", u16(41, 29), rowsperstrip=5,
                 compression="zlib", photometric="minisblack")
tifffile.imwrite(out / "tiles16_deflate.tif", u16(45, 70), tile=(16, 16),
                 compression="zlib", photometric="minisblack")
tifffile.imwrite(out / "stack8.tif", np.stack([u8(20, 30, p) for p in range(3)]),
                 photometric="minisblack", rowsperstrip=3)
tifffile.imwrite(out / "float32.tif", f32(23, 19), photometric="minisblack")
gray = u8(12, 9)
tifffile.imwrite(out / "rgb_equal.tif", np.stack([gray] * 3, axis=-1), photometric="rgb")
colour = np.stack([gray, gray, 255 - gray], axis=-1)
tifffile.imwrite(out / "rgb_colour.tif", colour, photometric="rgb")
tifffile.imwrite(out / "planar_rgb.tif", np.stack([gray] * 3), photometric="rgb",
                 planarconfig="separate")

for name, data, depth, interlace in [
    ("interlaced8.png", u8(33, 21), 8, True),
    ("interlaced16.png", u16(19, 27), 16, True),
    ("plain16.png", u16(26, 14), 16, False),
]:
    h, w = data.shape
    with open(out / name, "wb") as f:
        png.Writer(w, h, greyscale=True, bitdepth=depth, interlace=interlace).write(
            f, data.tolist())
print("wrote", len(list(out.iterdir())), "files to", out)
