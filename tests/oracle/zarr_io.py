"""Zarr oracle of tests/tests/zarr_oracle.rs (zarr-python, ome-zarr-models, pypng,
tifffile): writes OME-Zarr inputs with the same slices as PNG/TIFF files, and reads
segment-run's OME-Zarr outputs back, checking their layout and NGFF metadata against the
inputs'.

  python zarr_io.py write DIR
  python zarr_io.py read OUT.zarr IN.zarr OUT.npy   (prints a JSON summary)
"""
import json
import sys

import numpy as np
import png
import tifffile
import zarr


def em_like(shape, seed):
    """Bright cells, dark curved membranes, noise: values in [0, 1]."""
    rng = np.random.default_rng(seed)
    *lead, h, w = shape
    z = np.arange(int(np.prod(lead)) if lead else 1).reshape(-1, 1, 1)
    y = np.arange(h).reshape(1, -1, 1)
    x = np.arange(w).reshape(1, 1, -1) + 3.0 * z
    m = np.abs(np.sin(y * 0.11 + np.sin(x * 0.05) * 3) * np.sin(x * 0.09 + np.cos(y * 0.07) * 2))
    v = np.where(m < 0.12, 0.25, 0.75) + rng.normal(0, 0.05, m.shape)
    return np.clip(v, 0, 1).reshape(shape)


def ngff04(axes, scale, path="0"):
    return {"multiscales": [{"version": "0.4",
                             "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in axes],
                             "datasets": [{"path": path, "coordinateTransformations":
                                           [{"type": "scale", "scale": scale}]},
                                          {"path": path + "_half", "coordinateTransformations":
                                           [{"type": "scale", "scale": [s * 2 for s in scale]}]}],
                             "name": "em"}]}


def write(d):
    import os
    os.makedirs(d, exist_ok=True)
    # Zarr v2, OME-NGFF 0.4, 2-D uint8, zarr-python's default compressor (blosc), two
    # levels (only the first is segmented)
    img = (em_like((300, 260), 1) * 255).round().astype(np.uint8)
    g = zarr.open_group(f"{d}/v2_u8.zarr", mode="w", zarr_format=2)
    g.create_array("0", shape=img.shape, chunks=(128, 100), dtype="u1")[:] = img
    g.create_array("0_half", shape=(150, 130), chunks=(128, 100), dtype="u1")[:] = img[::2, ::2]
    g.attrs.update(ngff04(["y", "x"], [4.0, 4.0]))
    png.from_array(img, "L").save(f"{d}/v2_u8.png")
    # Zarr v3, OME-NGFF 0.5, 3-D uint16, sharded (shards of 1 x 128 x 128, chunks of
    # 1 x 64 x 64), zstd
    vol = (em_like((3, 200, 230), 2) * 65535).round().astype(np.uint16)
    g = zarr.open_group(f"{d}/v3_u16.zarr", mode="w", zarr_format=3)
    g.create_array("s0", shape=vol.shape, chunks=(1, 64, 64), shards=(1, 128, 128), dtype="u2",
                   dimension_names=["z", "y", "x"])[:] = vol
    # a second level, halved in y and x (the last row and column of an odd size kept)
    g.create_array("s1", shape=(3, 100, 115), chunks=(1, 64, 64), dtype="u2",
                   dimension_names=["z", "y", "x"])[:] = vol[:, ::2, ::2]
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"},
                 {"name": "x", "type": "space"}],
        "datasets": [{"path": "s0", "coordinateTransformations":
                      [{"type": "scale", "scale": [40.0, 4.0, 4.0]}]},
                     {"path": "s1", "coordinateTransformations":
                      [{"type": "scale", "scale": [40.0, 8.0, 8.0]}]}]}]}
    for i in range(vol.shape[0]):
        png.from_array(vol[i], "L;16").save(f"{d}/v3_u16_z{i}.png")
    # Zarr v3 bare array (no NGFF), 2-D float32, chunks 50 x 60 (not a multiple of the
    # tile), gzip
    f = em_like((150, 170), 3).astype(np.float32)
    a = zarr.create_array(f"{d}/v3_f32.zarr", shape=f.shape, chunks=(50, 60), dtype="f4",
                          compressors=[zarr.codecs.GzipCodec(level=5)], zarr_format=3)
    a[:] = f
    tifffile.imwrite(f"{d}/v3_f32.tif", f)
    # refused: three channels, and int16 samples
    g = zarr.open_group(f"{d}/v2_c3.zarr", mode="w", zarr_format=2)
    g.create_array("0", shape=(3, 40, 40), chunks=(1, 40, 40), dtype="u1")
    g.attrs["multiscales"] = [{"version": "0.4",
                               "axes": [{"name": "c", "type": "channel"},
                                        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                               "datasets": [{"path": "0", "coordinateTransformations":
                                             [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]}]
    zarr.create_array(f"{d}/v3_i16.zarr", shape=(40, 40), chunks=(40, 40), dtype="i2", zarr_format=3)


def read(out, inp, npy):
    o = zarr.open_group(out, mode="r")
    fmt = o.metadata.zarr_format
    try:
        i = zarr.open_group(inp, mode="r")
        iattrs = i.attrs.asdict()
        ims = (iattrs["ome"] if fmt == 3 else iattrs)["multiscales"][0]
        ia = i[ims["datasets"][0]["path"]]
    except (zarr.errors.ContainsArrayError, zarr.errors.GroupNotFoundError, KeyError):
        ia, ims = zarr.open_array(inp, mode="r"), None
    oattrs = o.attrs.asdict()
    oms = (oattrs["ome"] if fmt == 3 else oattrs)["multiscales"]
    levels = len(ims["datasets"]) if ims is not None else 1
    assert len(oms) == 1 and len(oms[0]["datasets"]) == levels, (oms, levels)
    oa = o[oms[0]["datasets"][0]["path"]]
    # lower levels: same layout as the input's, each the mean of the level above
    # (computed here in float64; the 8-bit rounding may differ by one step)
    above = oa[:].astype(np.float64)
    for k in range(1, levels):
        ids, ods = ims["datasets"][k], oms[0]["datasets"][k]
        assert ids == ods, (ids, ods)
        il, ol = i[ids["path"]], o[ods["path"]]
        assert (ol.shape, ol.chunks, ol.dtype) == (il.shape, il.chunks, oa.dtype), (ol, il)
        f = [round(b / a) for a, b in zip(ims["datasets"][k - 1]["coordinateTransformations"][0]["scale"],
                                          ids["coordinateTransformations"][0]["scale"])]
        want = np.zeros(ol.shape)
        for idx in np.ndindex(*ol.shape):
            block = above[tuple(slice(j * fa, (j + 1) * fa) for j, fa in zip(idx, f))]
            want[idx] = block.mean()
        got = ol[:].astype(np.float64)
        diff = np.abs(got - want).max()
        tol = 1.0 if oa.dtype == np.uint8 else 1e-6
        assert diff <= tol, f"level {k}: max difference {diff} from the mean of the level above"
        above = got
    # an independent validator of the NGFF metadata
    if fmt == 2:
        from ome_zarr_models.v04.image import Image
    else:
        from ome_zarr_models.v05.image import Image
    Image.from_zarr(o)
    assert oa.metadata.zarr_format == ia.metadata.zarr_format
    assert oa.shape == ia.shape, (oa.shape, ia.shape)
    assert oa.chunks == ia.chunks, (oa.chunks, ia.chunks)
    assert oa.shards == ia.shards, (oa.shards, ia.shards)
    if ims is not None:
        assert oms[0]["axes"] == ims["axes"], (oms[0]["axes"], ims["axes"])
        assert (oms[0]["datasets"][0]["coordinateTransformations"]
                == ims["datasets"][0]["coordinateTransformations"])
    data = oa[:]
    np.save(npy, data.astype(np.float32))
    print(json.dumps({"dtype": str(data.dtype), "shape": list(data.shape),
                      "chunks": list(oa.chunks), "zarr_format": fmt}))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        read(sys.argv[2], sys.argv[3], sys.argv[4])
