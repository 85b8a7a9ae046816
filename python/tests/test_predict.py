"""skipseg.Model.predict against segment-run predict (the same build): bit-identical
float32 probabilities for 8-bit, 16-bit and float images with the same options."""

import numpy as np
import png
import pytest
import tifffile

import skipseg


def cli_predict(segment_run, tmp_path, image_file, *options):
    out = tmp_path / "out"
    segment_run("predict", image_file, "-o", out, "--float", *options)
    (result,) = sorted(out.glob("*.tif"))
    return tifffile.imread(result)


def test_uint8_slice_with_default_options_equals_the_cli(segment_run, tmp_path, model, isbi_volume):
    # one ISBI slice, the model's defaults (dihedral averaging, the whole image in one
    # window), threads differing between the two sides: the same bits
    image = np.ascontiguousarray(isbi_volume[3, :256, :256])
    png.from_array(image, "L").save(tmp_path / "slice.png")
    want = cli_predict(segment_run, tmp_path, tmp_path / "slice.png", "--threads", "2")
    got = model.predict(image, threads=1)
    assert got.dtype == np.float32 and got.shape == image.shape
    assert np.array_equal(got, want), f"max abs {np.abs(got - want).max()}"
    # a real membrane map, not a constant
    assert 0.05 < (got > 0.5).mean() < 0.6


def test_uint16_tiled_with_flips_and_linear_blend_equals_the_cli(segment_run, tmp_path, model, isbi_volume):
    image = (isbi_volume[7, :200, :300].astype(np.uint16) * 257 + 13).astype(np.uint16)
    tifffile.imwrite(tmp_path / "slice16.tif", image)
    opts = dict(tile=64, halo=48, averaging="flips", blend="linear", threads=2)
    want = cli_predict(segment_run, tmp_path, tmp_path / "slice16.tif", "--tile", "64", "--halo", "48",
                       "--tta", "flips", "--blend", "linear", "--threads", "2")
    got = model.predict(image, **opts)
    assert np.array_equal(got, want), f"max abs {np.abs(got - want).max()}"


def test_float_image_with_missing_pixels_equals_the_cli(segment_run, tmp_path, model, isbi_volume):
    image = isbi_volume[11, :160, :176].astype(np.float32) / 255.0
    image[10:20, 30:40] = np.nan
    image[100, :] = np.inf
    tifffile.imwrite(tmp_path / "slicef.tif", image)
    want = cli_predict(segment_run, tmp_path, tmp_path / "slicef.tif", "--tta", "none")
    got = model.predict(image, averaging="none")
    assert np.array_equal(got, want), f"max abs {np.abs(got - want).max()}"


def test_any_strides_give_the_same_result_as_a_contiguous_copy(model, isbi_volume):
    base = isbi_volume[0, :256, :256]
    for view in (base[::2, ::2], base.T, np.asfortranarray(base[:128, :96]), base[::-1, 5:133]):
        assert not view.flags["C_CONTIGUOUS"] or view.base is not None
        got = model.predict(view, averaging="none")
        want = model.predict(np.ascontiguousarray(view), averaging="none")
        assert np.array_equal(got, want)


def test_the_shipped_model_file_equals_the_built_in_model(model, isbi_volume):
    from conftest import ROOT

    image = isbi_volume[5, :128, :128]
    from_file = skipseg.Model(ROOT / "models" / "isbi-small-bce.onnx")
    assert np.array_equal(from_file.predict(image, averaging="none"), model.predict(image, averaging="none"))


def test_info_describes_the_shipped_model(model):
    info = model.info
    assert info["architecture"] == "small"
    assert info["channels"] == 1 and info["down_factor"] == 16
    assert info["default_averaging"] == "dihedral"
    assert info["preprocessing"]["per_image"] is True
    assert info["dropout"] is False
    assert 0 < info["default_halo"] <= info["receptive_radius"]


def test_progress_counts_tiles_and_false_cancels(model, isbi_volume):
    image = isbi_volume[0, :256, :256]
    seen = []
    model.predict(image, tile=64, halo=32, averaging="none", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(k, 16) for k in range(1, 17)]
    calls = []

    def stop_after_two(done, total):
        calls.append(done)
        return done < 2

    with pytest.raises(skipseg.CancelledError, match="cancelled"):
        model.predict(image, tile=64, halo=32, averaging="none", progress=stop_after_two)
    assert calls == [1, 2]


def test_an_exception_in_the_progress_callback_propagates(model, isbi_volume):
    class Boom(Exception):
        pass

    def boom(done, total):
        raise Boom("from the callback")

    with pytest.raises(Boom, match="from the callback"):
        model.predict(isbi_volume[0, :128, :128], averaging="none", progress=boom)


def test_out_is_written_in_place_and_checked(model, isbi_volume):
    image = isbi_volume[1, :128, :160]
    want = model.predict(image, averaging="none")
    out = np.full((128, 160), -1.0, np.float32)
    got = model.predict(image, averaging="none", out=out)
    assert got is out and np.array_equal(out, want)
    strided = np.zeros((160, 128), np.float32).T  # Fortran-ordered target
    model.predict(image, averaging="none", out=strided)
    assert np.array_equal(strided, want)
    with pytest.raises(skipseg.InputError, match="out has shape"):
        model.predict(image, out=np.zeros((128, 128), np.float32))
    with pytest.raises(TypeError):
        model.predict(image, out=np.zeros((128, 160), np.float64))
    as_float = image.astype(np.float32) / 255
    with pytest.raises(ValueError, match="not writable"):
        model.predict(as_float, out=as_float)


def test_a_bioimage_io_package_loads_and_predicts_as_its_onnx(segment_run, tmp_path, model, isbi_volume):
    segment_run("package", "-o", tmp_path / "pkg")
    image = isbi_volume[6, :128, :128]
    want = model.predict(image, averaging="none")
    for path in (tmp_path / "pkg", tmp_path / "pkg.zip"):
        packaged = skipseg.Model(path)
        assert packaged.info["architecture"] == "small"
        assert np.array_equal(packaged.predict(image, averaging="none"), want)
