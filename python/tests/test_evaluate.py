"""skipseg.evaluate against segment-run eval --json on the same pixels written as files."""

import json

import numpy as np
import png

import skipseg


def strip_names(report):
    for s in report["slices"]:
        del s["name"]
    return report


def test_evaluate_equals_the_cli_on_isbi_slices(segment_run, tmp_path, model, isbi_volume, isbi_labels):
    labels = isbi_labels[25:27, :256, :256]
    membrane = np.stack([model.predict(s, averaging="none") for s in isbi_volume[25:27, :256, :256]])
    # the proposal as 8-bit PNGs (cell-high), as segment-run writes probability maps
    cell = np.round((1.0 - membrane) * 255).astype(np.uint8)
    (tmp_path / "gt").mkdir()
    (tmp_path / "prop").mkdir()
    for k in range(2):
        png.from_array(labels[k], "L").save(tmp_path / "gt" / f"s{k}.png")
        png.from_array(cell[k], "L").save(tmp_path / "prop" / f"s{k}.png")
    want = json.loads(segment_run("eval", "--labels", tmp_path / "gt", "--proposal", tmp_path / "prop", "--json"))
    got = skipseg.evaluate(labels, cell)
    assert strip_names(got) == strip_names(want)
    assert 0.8 < got["v_rand"] <= 1.0 and 0.8 < got["v_info"] <= 1.0
    # membrane_high inverts the proposal: the same scores from 255 - cell
    inverted = skipseg.evaluate(labels, 255 - cell, membrane_high=True)
    assert inverted["v_rand"] == got["v_rand"]
    # without thinning the scores differ (the switch reaches the metric)
    assert skipseg.evaluate(labels, cell, thinning=False)["v_rand"] != got["v_rand"]


def test_identical_segmentations_score_one():
    gt = np.full((64, 64), 255, np.uint8)
    gt[:, 31:33] = 0
    gt[20:22, :] = 0
    r = skipseg.evaluate(gt, gt)
    assert abs(r["v_rand"] - 1.0) < 1e-12 and abs(r["v_info"] - 1.0) < 1e-12


def test_mismatched_shapes_raise():
    import pytest

    with pytest.raises(skipseg.InputError, match="differ in shape"):
        skipseg.evaluate(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
