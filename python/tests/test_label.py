"""skipseg.label: the same ids as ``segment-run label --probabilities`` on the same map,
ids unique across a stack, and refusals of bad options."""
import numpy as np
import png
import pytest
import tifffile

import skipseg


def test_label_equals_the_cli_and_runs_on_across_a_stack(segment_run, tmp_path, model, isbi_volume):
    membrane = np.stack([model.predict(s, averaging="none") for s in isbi_volume[26:28, :256, :256]])
    # 8-bit maps, as segment-run writes probability PNGs: both sides read the same values
    eight = np.round(membrane * 255).astype(np.uint8)
    (tmp_path / "maps").mkdir()
    for k in range(2):
        png.from_array(eight[k], "L").save(tmp_path / "maps" / f"s{k}.png")
    segment_run("label", "--probabilities", tmp_path / "maps", "-o", tmp_path / "out")
    want = np.stack([tifffile.imread(tmp_path / "out" / f"s{k}_labels.tif") for k in range(2)])
    got = skipseg.label(eight)
    assert got.dtype == np.uint32 and got.shape == eight.shape
    assert np.array_equal(got, want)
    assert got.min() == 1 and got[1].min() == got[0].max() + 1
    # one slice alone gives the first slice's ids; first_id shifts them
    assert np.array_equal(skipseg.label(eight[0]), want[0])
    assert np.array_equal(skipseg.label(eight[0], first_id=1000), want[0] + 999)
    # options reach the algorithm: neither agglomeration nor fragment removal leaves
    # more regions (the default component seeds rarely merge on this crop: fragments do)
    assert skipseg.label(eight[0], merge_threshold=0.0, min_size=0).max() > want[0].max()
    assert skipseg.label(eight[0], seeds="minima", seed_sigma=1.0).max() != want[0].max()


def test_label_refuses_bad_options():
    p = np.zeros((32, 32), np.float32)
    with pytest.raises(ValueError, match="seeds"):
        skipseg.label(p, seeds="random")
    with pytest.raises(ValueError, match="merge_threshold"):
        skipseg.label(p, merge_threshold=2.0)
    with pytest.raises(ValueError, match="first_id"):
        skipseg.label(p, first_id=0)
    with pytest.raises(skipseg.InputError):
        skipseg.label(np.zeros((2, 3, 4, 5), np.float32))
