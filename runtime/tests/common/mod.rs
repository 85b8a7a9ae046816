//! What the runtime's integration tests share: where the workspace's files are, scratch
//! folders, the golden fixtures, differences of outputs, and PNG chunk checksums.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The golden fixture folders (`fixtures/*/model.onnx`), sorted.
pub fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .expect("fixtures folder exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures found");
    dirs
}

/// Largest absolute element-wise difference.
pub fn max_abs<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
) -> f32 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A fresh, empty scratch folder `name` (a relative path) under cargo's test tmp dir.
pub fn tmp(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("tmp dir");
    p
}

/// The names in a folder, sorted (none if it does not exist).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// CRC-32 of a PNG chunk's type and data (to write PNG headers by hand).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The whole image as one network run, without the tiler: the image reflected to the
/// next multiple of the down-sampling factor (numpy's "reflect"), normalised with its
/// own statistics as the model says, run once, cut back. The reference tiled inference
/// must equal.
#[allow(dead_code)]
pub fn one_window(
    seg: &skipseg_runtime::Segmenter,
    img: &ndarray::Array2<f32>,
) -> ndarray::Array2<f32> {
    let (h, w) = img.dim();
    let f = seg.meta().arch.down_factor();
    let reflect = |v: usize, n: usize| if v < n { v } else { 2 * (n - 1) - v };
    let norm = seg
        .meta()
        .preprocessing
        .for_image(&skipseg_runtime::IntensityStats::of(img.iter()));
    let (ph, pw) = (h.div_ceil(f) * f, w.div_ceil(f) * f);
    let c = seg.meta().arch.in_channels;
    let input = ndarray::Array4::from_shape_fn((1, c, ph, pw), |(_, _, y, x)| {
        let v = img[[reflect(y, h), reflect(x, w)]];
        if v.is_finite() { norm.apply(v) } else { 0.0 }
    });
    let out = seg.run(input.view().into_dyn()).expect("one window");
    out.slice(ndarray::s![0, 0, ..h, ..w]).to_owned()
}
