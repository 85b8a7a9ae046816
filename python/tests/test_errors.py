"""Bad inputs raise typed exceptions with the runtime's message, never crash the
interpreter; references are not leaked over 1,000 calls."""

import gc
import sys

import numpy as np
import pytest

import skipseg


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((2, 64, 64), np.uint8), skipseg.InputError, "2-D"),
        (np.zeros(64, np.uint8), skipseg.InputError, "2-D"),
        (np.zeros((64, 64), np.int32), TypeError, "uint8, uint16 or float32"),
        (np.zeros((64, 64), np.float64), TypeError, "float64"),
        ([[0.5] * 64] * 64, TypeError, "numpy array"),
        (np.zeros((0, 64), np.uint8), skipseg.InputError, "0"),
        (np.full((64, 64), np.nan, np.float32), skipseg.InputError, "no finite pixel"),
    ],
)
def test_bad_images_raise(model, image, error, message):
    with pytest.raises(error, match=message):
        model.predict(image)


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(averaging="sideways"), ValueError, "averaging"),
        (dict(blend="soft"), ValueError, "blend"),
        (dict(threads=0), ValueError, "threads"),
        (dict(tile=16, halo=200), skipseg.InputError, "tiling"),
        (dict(mc_samples=4), skipseg.ModelError, "dropout"),
    ],
)
def test_bad_options_raise(model, options, error, message):
    with pytest.raises(error, match=message):
        model.predict(np.zeros((64, 64), np.uint8) + 100, **options)


def test_bad_model_files_raise_naming_the_file(tmp_path):
    with pytest.raises(skipseg.FileError, match="nothere.onnx"):
        skipseg.Model(tmp_path / "nothere.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    with pytest.raises(skipseg.ModelError, match="junk.onnx"):
        skipseg.Model(junk)
    assert issubclass(skipseg.ModelError, skipseg.SkipsegError)


def test_reference_counts_do_not_grow_over_a_thousand_calls(model):
    image = (np.arange(32 * 48, dtype=np.uint8).reshape(32, 48) * 7) % 251
    callback = lambda done, total: None  # noqa: E731
    for _ in range(20):  # warm-up: the plan for this size, pools, interned objects
        model.predict(image, averaging="none", threads=1, progress=callback)
    gc.collect()
    before = (sys.getrefcount(image), sys.getrefcount(model), sys.getrefcount(callback), len(gc.get_objects()))
    outputs = 0
    for _ in range(1000):
        p = model.predict(image, averaging="none", threads=1, progress=callback)
        outputs += p.shape[0]
        del p
    gc.collect()
    after = (sys.getrefcount(image), sys.getrefcount(model), sys.getrefcount(callback), len(gc.get_objects()))
    assert outputs == 32 * 1000
    assert after[:3] == before[:3], f"refcounts {before[:3]} -> {after[:3]}"
    assert after[3] - before[3] < 50, f"gc objects {before[3]} -> {after[3]}"
