"""Independent oracle for skipseg's seeded watershed: scikit-image's `watershed`.

Usage: skimage_watershed.py DIR   where DIR holds probNN.npy (float32 membrane
probability) and seedsNN.npy (float32 marker ids, 0 = none). Writes wsNN.npy (float32
labels of `skimage.segmentation.watershed(prob, seeds, connectivity=1)`) and prints
one line per case with its name.
"""
import glob
import os
import sys

import numpy as np
from skimage.segmentation import watershed


def main() -> int:
    d = sys.argv[1]
    for prob_path in sorted(glob.glob(os.path.join(d, "prob*.npy"))):
        seeds_path = prob_path.replace("prob", "seeds")
        prob = np.load(prob_path)
        seeds = np.load(seeds_path).astype(np.int32)
        ws = watershed(prob, markers=seeds, connectivity=1)
        np.save(prob_path.replace("prob", "ws"), ws.astype(np.float32))
        print(os.path.basename(prob_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
