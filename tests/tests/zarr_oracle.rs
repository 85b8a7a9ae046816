//! OME-Zarr against zarr-python (`tests/oracle/zarr_io.py`): inputs written by
//! zarr-python (Zarr v2 with NGFF 0.4 and blosc; v3 with NGFF 0.5, sharding and zstd;
//! a bare v3 float array with gzip) are segmented chunk by chunk, and zarr-python reads
//! the outputs back: same Zarr version, shape, chunks, shards, axes and scale, NGFF
//! metadata accepted by ome-zarr-models. The probabilities must equal, bit for bit, what
//! the PNG/TIFF path (row-streamed tiling of the same slices saved as files) computes:
//! another reader and another tiling driver give the same numbers.

use std::path::{Path, PathBuf};

use skipseg_parity::{oracle_python, run_oracle, workspace_root};
use skipseg_runtime::io::zarr::ZarrImage;
use skipseg_runtime::tiling::{Blend, Tiling};
use skipseg_runtime::volume::{Shard, VolumeOptions, segment_volume};
use skipseg_runtime::{Averaging, Inference, Segmenter, io};

fn model() -> Segmenter {
    Segmenter::from_path(&workspace_root().join("models/isbi-small-bce.onnx")).expect("model")
}

fn inference(blend: Blend) -> Inference {
    Inference {
        tiling: Tiling {
            tile: Some(64),
            halo: Some(32),
        },
        blend,
        averaging: Averaging::None,
        monte_carlo: None,
    }
}

/// The probability map of an image file through the row-streamed path.
fn through_files(seg: &Segmenter, file: &Path, blend: Blend) -> Vec<Vec<f32>> {
    let page = io::list_pages(file).expect("pages").remove(0);
    let stats = skipseg_runtime::intensity_stats(&mut page.open().expect("open")).expect("stats");
    let how = inference(blend);
    let mut rows = Vec::new();
    skipseg_runtime::segment_tiled(
        seg,
        &mut page.open().expect("open"),
        seg.meta().preprocessing.for_image(&stats),
        &how,
        &mut || {},
        &mut |_, _, row| {
            rows.push(row);
            Ok(())
        },
    )
    .expect("file path");
    rows
}

fn check(python: &Path, dir: &Path, name: &str, files: &[&str], float: bool, blend: Blend) {
    let seg = model();
    let input = ZarrImage::open(&dir.join(format!("{name}.zarr"))).expect("open input");
    let out = dir.join(format!("{name}-{float}-{blend:?}.out.zarr"));
    let _ = std::fs::remove_dir_all(&out);
    let opts = VolumeOptions {
        inference: inference(blend),
        float,
        shard: Shard::ALL,
    };
    segment_volume(&seg, &input, &out, &opts, &mut |_, _| {}).expect("segment the Zarr input");
    let npy = dir.join(format!("{name}-{float}-{blend:?}.npy"));
    let summary = run_oracle(
        python,
        "zarr_io.py",
        [
            "read",
            out.to_str().expect("utf-8"),
            input.root.to_str().expect("utf-8"),
            npy.to_str().expect("utf-8"),
        ],
    );
    let want_dtype = if float { "float32" } else { "uint8" };
    assert!(summary.contains(want_dtype), "{name}: {summary}");
    let got = skipseg_runtime::npy::read(&npy).expect("npy");
    let (h, w) = (input.height(), input.width());
    assert_eq!(got.len(), files.len() * h * w, "{name}: size");
    let flat = got.as_slice().expect("contiguous");
    let mut differing = 0usize;
    for (s, file) in files.iter().enumerate() {
        let rows = through_files(&seg, &dir.join(file), blend);
        for (y, row) in rows.iter().enumerate() {
            for (x, &p) in row.iter().enumerate() {
                let want = if float {
                    p
                } else {
                    io::probability_u8(p) as f32
                };
                if flat[(s * h + y) * w + x] != want {
                    differing += 1;
                }
            }
        }
    }
    eprintln!("{name} float={float} {blend:?}: {summary}");
    assert_eq!(differing, 0, "{name}: pixels differ from the PNG/TIFF path");
}

#[test]
fn zarr_outputs_open_in_zarr_python_and_equal_the_image_path() {
    let Some(python) = oracle_python("zarr_oracle") else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("zarr-oracle");
    let _ = std::fs::remove_dir_all(&dir);
    run_oracle(
        &python,
        "zarr_io.py",
        ["write", dir.to_str().expect("utf-8")],
    );
    check(&python, &dir, "v2_u8", &["v2_u8.png"], false, Blend::Crop);
    check(&python, &dir, "v2_u8", &["v2_u8.png"], true, Blend::Linear);
    check(
        &python,
        &dir,
        "v3_u16",
        &["v3_u16_z0.png", "v3_u16_z1.png", "v3_u16_z2.png"],
        false,
        Blend::Crop,
    );
    check(&python, &dir, "v3_f32", &["v3_f32.tif"], true, Blend::Crop);
    // refusals name the store and the problem
    for (name, why) in [("v2_c3", "channels"), ("v3_i16", "int16")] {
        let e = ZarrImage::open(&dir.join(format!("{name}.zarr"))).expect_err(name);
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains(why), "{name}: {msg}");
    }
}
