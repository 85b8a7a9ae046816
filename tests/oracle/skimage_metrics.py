"""Independent oracle for the metrics: scikit-image on label images.

Usage: skimage_metrics.py DIR   where DIR holds pairs gtNN.npy / propNN.npy (float32
label images). Prints one JSON line per pair with skimage's adapted Rand F
(1 - adapted_rand_error) and variation_of_information's two conditional entropies (converted to nats),
both with ignore_labels=(0,) on the ground truth (foreground restriction).
"""
import glob
import json
import os
import sys

import numpy as np
from skimage.metrics import adapted_rand_error, variation_of_information


def main() -> int:
    d = sys.argv[1]
    for gt_path in sorted(glob.glob(os.path.join(d, "gt*.npy"))):
        prop_path = gt_path.replace("gt", "prop")
        gt = np.load(gt_path).astype(np.int64)
        prop = np.load(prop_path).astype(np.int64)
        are, prec, rec = adapted_rand_error(gt, prop, ignore_labels=(0,))
        # skimage returns (H(test | true), H(true | test)) in bits; convert to nats
        h_prop_given_gt, h_gt_given_prop = np.log(2.0) * variation_of_information(gt, prop, ignore_labels=(0,))
        print(json.dumps({
            "name": os.path.basename(gt_path),
            "rand_f": 1.0 - float(are),
            "h_gt_given_prop": float(h_gt_given_prop),
            "h_prop_given_gt": float(h_prop_given_gt),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
