"""skipseg.segment_zarr against segment-run predict on an OME-Zarr volume: the same
values, shard workers that together fill one output, and resumption."""

import numpy as np
import zarr

import skipseg
import zarr_io  # tests/oracle/zarr_io.py: OME-Zarr inputs as other tools write them


def level0(path):
    g = zarr.open_group(str(path), mode="r")
    name = sorted(k for k in g.array_keys())[0]
    return np.asarray(g[name][...])


def test_shards_fill_the_same_output_as_the_cli(segment_run, tmp_path, model):
    zarr_io.write(str(tmp_path / "in"))
    src = tmp_path / "in" / "v3_u16.zarr"
    segment_run("predict", src, "-o", tmp_path / "cli.zarr", "--float", "--tta", "none", "--tile", "128", "--halo", "48")
    reports = [
        skipseg.segment_zarr(src, tmp_path / "py.zarr", shard=(i, 3), model=model, float=True,
                             averaging="none", tile=128, halo=48, threads=1)
        for i in range(3)
    ]
    assert sum(r["blocks_computed"] for r in reports) == reports[0]["blocks_total"]
    assert reports[-1]["pyramid_levels_built"] >= 1
    want, got = level0(tmp_path / "cli.zarr"), level0(tmp_path / "py.zarr")
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got, want)
    # resumable: a worker run again finds its blocks done
    again = skipseg.segment_zarr(src, tmp_path / "py.zarr", shard=(1, 3), model=model, float=True,
                                 averaging="none", tile=128, halo=48)
    assert again["blocks_computed"] == 0 and again["blocks_skipped"] == again["blocks_in_shard"]


def test_bad_shard_and_missing_store_raise(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="shard"):
        skipseg.segment_zarr(tmp_path / "a.zarr", tmp_path / "b.zarr", shard=(3, 3))
    with pytest.raises(skipseg.SkipsegError, match="a.zarr"):
        skipseg.segment_zarr(tmp_path / "a.zarr", tmp_path / "b.zarr")
