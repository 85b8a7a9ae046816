"""Instance-label alternatives tried on cross-validated membrane maps (issue 21).

Not part of the product: the record of experiments that did not beat
`segment-run label`, so that they can be rerun on new maps. Reads the out-of-fold maps
that `segment-train cv` writes (OUT/maps/slice-NN.tif, membrane probability) and the
ISBI 2012 cell-high label PNGs, and prints mean direct V_rand (foreground-restricted,
N^2 form, as runtime/src/metrics.rs) over the slices for:

1. thresholds: components of the map (Gaussian sigma 1) below t, grown over the
   membranes by a 4-connected watershed; one t for all slices (what the official
   score's best threshold does), and the best t of each slice (an oracle: headroom);
2. per-slice thresholds chosen without ground truth: Otsu, a fixed membrane fraction,
   the t with the most cells;
3. a learned merge rule (GALA-like): oversegment at t = 0.2, describe every pair of
   adjacent regions (border quantiles, lengths, sizes, interiors), train a classifier
   (logistic regression, gradient boosting) on the other folds' slices to predict
   "same ground-truth cell", merge the pairs it accepts (nested: no slice is scored
   by a classifier trained on it).
4. `segment-run label`'s labels (OUT/labels/slice-NN.tif beside the maps, the defaults)
   cut by the cells of a thresholded map (1.): two pixels keep one id only if both
   the labels and the threshold put them in one cell, fragments under 100 pixels join
   the neighbour they share the most border with; t chosen on all slices and nested
   (on the other folds' slices).
5. (4.) after a second merge of labels whose shared border has at least K pixels below
   tau (two pieces of one cell meet over cytoplasm somewhere; a gap in a membrane is
   short): grid of tau x K x t, best on all slices and nested.
6. a component tree of thresholds (cells of the smoothed map below t, t = 0.05 ... 0.75):
   from the top, keep a region if it is convex enough (solidity >= s0) at t <= 0.5,
   else look at its pieces one level down; the kept regions grown by the watershed
   (per region the threshold its shape asks for, instead of one per slice).

Needs numpy scipy scikit-image scikit-learn tifffile pillow (a venv of your own):
    python scripts/label_alternatives.py runs/cv/maps data/isbi2012/train/labels
"""

import glob
import os
import sys

import numpy as np
import tifffile
from PIL import Image
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label, regionprops
from skimage.segmentation import watershed
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression


def v_rand(gt_cells, seg):
    """Foreground-restricted Rand F-score (N^2 form); seg has no background."""
    g = label(gt_cells, connectivity=1)
    m = g > 0
    a = g[m].astype(np.int64)
    b = seg[m].astype(np.int64)
    n = a.size
    _, c = np.unique(a * (b.max() + 1) + b, return_counts=True)
    _, ca = np.unique(a, return_counts=True)
    _, cb = np.unique(b, return_counts=True)
    sab = (c.astype(float) ** 2).sum() / n**2
    p = sab / ((cb.astype(float) ** 2).sum() / n**2)
    r = sab / ((ca.astype(float) ** 2).sum() / n**2)
    return 2 * p * r / (p + r)


def threshold_labels(p, smooth, t):
    return watershed(p, label(smooth < t, connectivity=1), connectivity=1)


def borders(ws, p):
    """Adjacent region pairs and the higher probability of each 4-neighbour pixel pair."""
    a = np.concatenate([ws[:, :-1].ravel(), ws[:-1, :].ravel()])
    b = np.concatenate([ws[:, 1:].ravel(), ws[1:, :].ravel()])
    v = np.concatenate(
        [np.maximum(p[:, :-1], p[:, 1:]).ravel(), np.maximum(p[:-1, :], p[1:, :]).ravel()]
    )
    m = a != b
    lo, hi, v = np.minimum(a[m], b[m]), np.maximum(a[m], b[m]), v[m]
    key = lo.astype(np.int64) * 1_000_000 + hi
    order = np.argsort(key, kind="stable")
    key, v = key[order], v[order]
    keys, start = np.unique(key, return_index=True)
    return keys // 1_000_000, keys % 1_000_000, np.split(v, start[1:])


def pair_features(ws, p, gt_ids):
    n = ws.max() + 1
    size = np.bincount(ws.ravel(), minlength=n).astype(float)
    inside = np.bincount(ws.ravel(), weights=p.ravel(), minlength=n) / np.maximum(size, 1)
    A, B, values = borders(ws, p)
    X = []
    for a, b, v in zip(A, B, values):
        small, big = sorted((size[a], size[b]))
        hi_in, lo_in = max(inside[a], inside[b]), min(inside[a], inside[b])
        X.append([v.mean(), *np.quantile(v, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1]),
                  np.log(len(v)), np.log(small), np.log(big), hi_in, lo_in,
                  v.mean() - hi_in, len(v) / np.sqrt(small)])
    # each region's ground-truth cell: the one it overlaps most
    fg = gt_ids.ravel() > 0
    owner = np.zeros(n, int)
    best = np.zeros(n)
    pairs, counts = np.unique(ws.ravel()[fg].astype(np.int64) * 1_000_000 + gt_ids.ravel()[fg],
                              return_counts=True)
    for key, c in zip(pairs, counts):
        r, g = divmod(int(key), 1_000_000)
        if c > best[r]:
            best[r], owner[r] = c, g
    y = np.array([owner[a] == owner[b] and owner[a] > 0 for a, b in zip(A, B)])
    return A, B, np.array(X), y


def relabel(seg):
    _, inverse = np.unique(seg.ravel(), return_inverse=True)
    return inverse.reshape(seg.shape) + 1


def absorb_small(seg, min_size):
    """Regions under min_size pixels join the neighbour they share the most border with."""
    while True:
        seg = relabel(seg)
        size = np.bincount(seg.ravel())
        a = np.concatenate([seg[:, :-1].ravel(), seg[:-1, :].ravel(),
                            seg[:, 1:].ravel(), seg[1:, :].ravel()])
        b = np.concatenate([seg[:, 1:].ravel(), seg[1:, :].ravel(),
                            seg[:, :-1].ravel(), seg[:-1, :].ravel()])
        m = (a != b) & (size[a] < min_size)
        if not m.any():
            return seg
        keys, counts = np.unique(a[m].astype(np.int64) * 10**7 + b[m], return_counts=True)
        target = np.arange(len(size))
        most = np.zeros(len(size), int)
        for key, c in zip(keys, counts):
            src, dst = divmod(int(key), 10**7)
            if c > most[src]:
                most[src], target[src] = c, dst
        for src in np.nonzero(most)[0]:  # two small regions choosing each other: one moves
            if target[target[src]] == src and size[target[src]] >= size[src]:
                target[target[src]] = target[src]
        seg = target[seg]


def merge_long_low_borders(seg, p, tau, k):
    A, B, values = borders(seg, p)
    accept = np.array([(v < tau).sum() >= k for v in values], bool)
    return relabel(merged(seg, A, B, accept)) if len(A) else seg


def tree_of_thresholds(p, s, s0, levels, t_max=0.5, min_area=30):
    comps = [label(s < t, connectivity=1) for t in levels]
    props = [{r.label: r for r in regionprops(c)} for c in comps]
    children = [{} for _ in levels]
    for i in range(1, len(levels)):
        m = comps[i - 1] > 0
        for key in np.unique(comps[i - 1][m].astype(np.int64) * 10**6 + comps[i][m]):
            a, b = divmod(int(key), 10**6)
            children[i].setdefault(b, []).append(a)
    markers = np.zeros(p.shape, np.int32)

    def visit(i, n):
        kids = [c for c in children[i].get(n, []) if props[i - 1][c].area >= min_area]
        r = props[i][n]
        if not kids or (levels[i] <= t_max and r.solidity >= s0):
            markers[comps[i] == n] = markers.max() + 1
        else:
            for c in kids:
                visit(i - 1, c)

    top = len(levels) - 1
    for n, r in props[top].items():
        if r.area >= min_area:
            visit(top, n)
    return watershed(p, markers, connectivity=1)


def nested(scores, groups):
    """Mean over slices when each fold's slices get the column best on the other folds."""
    rows = sorted(scores)
    table = np.array([scores[k] for k in rows])
    out = []
    for held in groups:
        other = [i for i, k in enumerate(rows) if k not in held]
        best = table[other].mean(0).argmax()
        out += [table[rows.index(k), best] for k in held]
    return float(np.mean(out))


def merged(ws, A, B, accept):
    parent = np.arange(ws.max() + 1)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(A[accept], B[accept]):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    return np.array([find(i) for i in range(len(parent))])[ws]


def main(maps_dir, gt_dir):
    labels_dir = os.path.join(os.path.dirname(os.path.normpath(maps_dir)), "labels")
    files = sorted(glob.glob(os.path.join(maps_dir, "slice-*.tif")))
    ts = np.round(np.arange(0.1, 0.625, 0.025), 3)
    slices = {}
    for f in files:
        k = int(os.path.basename(f)[6:8])
        p = tifffile.imread(f).astype(np.float32)
        gt = np.array(Image.open(os.path.join(gt_dir, f"{k:02d}.png"))) > 127
        slices[k] = (p, gaussian(p, 1), gt)
    print(f"{len(slices)} slices: {sorted(slices)}")
    curve = {k: np.array([v_rand(gt, threshold_labels(p, s, t)) for t in ts])
             for k, (p, s, gt) in slices.items()}
    C = np.array([curve[k] for k in sorted(slices)])
    g = C.mean(0).argmax()
    print(f"one threshold for all slices: t {ts[g]}, V_rand {C.mean(0)[g]:.4f}")
    print(f"best threshold of each slice (oracle): V_rand {C.max(1).mean():.4f}")

    rules = {
        "otsu": lambda p, s: threshold_otsu(s),
        "membrane fraction 0.25": lambda p, s: np.quantile(s, 0.75),
        "membrane fraction 0.30": lambda p, s: np.quantile(s, 0.70),
        "most cells": lambda p, s: ts[np.argmax(
            [(np.bincount(label(s < t, connectivity=1).ravel())[1:] >= 30).sum() for t in ts])],
    }
    for name, rule in rules.items():
        v = [v_rand(gt, threshold_labels(p, s, rule(p, s))) for p, s, gt in slices.values()]
        print(f"per-slice threshold by {name}: V_rand {np.mean(v):.4f}")

    groups = [range(0, 5), range(5, 10), range(10, 15), range(15, 20), range(20, 25),
              range(25, 30)]
    groups = [[k for k in grp if k in slices] for grp in groups]
    groups = [grp for grp in groups if grp]
    data = {}
    for k, (p, s, gt) in slices.items():
        ws = threshold_labels(p, s, 0.2)
        data[k] = (ws, *pair_features(ws, p, label(gt, connectivity=1)), gt)
    base = np.mean([v_rand(d[-1], d[0]) for d in data.values()])
    print(f"oversegmentation at t 0.2, no merging: V_rand {base:.4f}")
    models = {
        "logistic regression": lambda: LogisticRegression(max_iter=2000),
        "gradient boosting": lambda: GradientBoostingClassifier(n_estimators=150, max_depth=3),
    }
    for name, make in models.items():
        for accept in (0.5, 0.7):
            scores = []
            for held in groups:
                train = [k for k in data if k not in held]
                clf = make().fit(np.concatenate([data[k][3] for k in train]),
                                 np.concatenate([data[k][4] for k in train]))
                for k in held:
                    ws, A, B, X, _, gt = data[k]
                    keep = clf.predict_proba(X)[:, 1] > accept
                    scores.append(v_rand(gt, merged(ws, A, B, keep)))
            print(f"learned merging, {name}, accept p > {accept} (nested by fold): "
                  f"V_rand {np.mean(scores):.4f}")

    cut_ts = [0.2, 0.25, 0.3, 0.35, 0.4]
    grid = [(tau, k, t) for tau in (0.2, 0.3, 0.4) for k in (5, 10, 20, 40, 80)
            for t in cut_ts]
    cut, both, labels_alone = {}, {}, []
    for k, (p, s, gt) in slices.items():
        labels = relabel(tifffile.imread(os.path.join(labels_dir, f"slice-{k:02d}.tif")))
        labels_alone.append(v_rand(gt, labels))
        cells = {t: threshold_labels(p, s, t) for t in cut_ts}
        cut[k] = [v_rand(gt, absorb_small(labels * 10**6 + cells[t], 100)) for t in cut_ts]
        again = {(tau, n): merge_long_low_borders(labels, p, tau, n)
                 for tau in (0.2, 0.3, 0.4) for n in (5, 10, 20, 40, 80)}
        both[k] = [v_rand(gt, absorb_small(again[tau, n] * 10**6 + cells[t], 100))
                   for tau, n, t in grid]
    print(f"segment-run label (defaults): V_rand {np.mean(labels_alone):.4f}")
    means = np.array([cut[k] for k in sorted(cut)]).mean(0)
    print("labels cut by thresholded cells: " + ", ".join(
        f"t {t} {m:.4f}" for t, m in zip(cut_ts, means)) + f"; nested {nested(cut, groups):.4f}")
    means = np.array([both[k] for k in sorted(both)]).mean(0)
    tau, n, t = grid[means.argmax()]
    print(f"labels merged over long low borders, then cut: best (tau {tau}, K {n}, t {t}) "
          f"{means.max():.4f}; nested {nested(both, groups):.4f}")

    levels = np.round(np.arange(0.05, 0.751, 0.05), 3)
    solidities = (0.8, 0.85, 0.9, 0.95)
    shaped = {k: [v_rand(gt, tree_of_thresholds(p, s, s0, levels)) for s0 in solidities]
              for k, (p, s, gt) in slices.items()}
    means = np.array([shaped[k] for k in sorted(shaped)]).mean(0)
    print("component tree, convex regions: " + ", ".join(
        f"solidity {s0} {m:.4f}" for s0, m in zip(solidities, means))
        + f"; nested {nested(shaped, groups):.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
