//! Write a synthetic EM volume as OME-Zarr (Zarr v3, OME-NGFF 0.5, uint8, z/y/x) for
//! the shard and scaling scripts: slice z is ISBI 2012 test slice z mod 30 tiled over a
//! SIZE x SIZE canvas (mirrored at every other repeat), chunks of 1 x CHUNK x CHUNK.
//! Written one slice at a time.
//!
//! `cargo run --release -p skipseg-runtime --example synthetic_volume -- OUT.zarr DEPTH SIZE [CHUNK]`

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use skipseg_runtime::io::zarr::zarrs;
use zarrs::array::{ArrayBuilder, data_type};
use zarrs::filesystem::FilesystemStore;

fn main() -> Result<()> {
    const USAGE: &str = "usage: synthetic_volume OUT.zarr DEPTH SIZE [CHUNK]";
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().context(USAGE)?);
    let mut number = |what: &str, default: Option<u64>| -> Result<u64> {
        match (args.next(), default) {
            (Some(v), _) => v
                .parse()
                .with_context(|| format!("{what} must be a number")),
            (None, Some(d)) => Ok(d),
            (None, None) => anyhow::bail!(USAGE),
        }
    };
    let (depth, size, chunk) = (
        number("DEPTH", None)?,
        number("SIZE", None)?,
        number("CHUNK", Some(512))?,
    );
    anyhow::ensure!(!out.exists(), "{}: exists", out.display());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let slices = skipseg_runtime::io::read_slices(&root.join("data/isbi2012/test/images"))?;
    let store = Arc::new(FilesystemStore::new(&out)?);
    let array = ArrayBuilder::new(
        vec![depth, size, size],
        vec![1, chunk, chunk],
        data_type::uint8(),
        0u8,
    )
    .bytes_to_bytes_codecs(vec![Arc::new(zarrs::array::codec::ZstdCodec::new(
        3, false,
    ))])
    .dimension_names(["z", "y", "x"].into())
    .build(store, "/0")?;
    array.store_metadata()?;
    let n = size as usize;
    for z in 0..depth {
        let s = &slices[z as usize % slices.len()].pixels;
        let (sh, sw) = s.dim();
        let mut px = vec![0u8; n * n];
        for y in 0..n {
            let (ty, ry) = (y / sh, y % sh);
            let sy = if ty % 2 == 1 { sh - 1 - ry } else { ry };
            for x in 0..n {
                let (tx, rx) = (x / sw, x % sw);
                let sx = if tx % 2 == 1 { sw - 1 - rx } else { rx };
                px[y * n + x] = skipseg_runtime::io::probability_u8(s[[sy, sx]]);
            }
        }
        array.store_array_subset(&[z..z + 1, 0..size, 0..size], px.as_slice())?;
    }
    let group = serde_json::json!({
        "zarr_format": 3, "node_type": "group",
        "attributes": {"ome": {"version": "0.5", "multiscales": [{
            "name": "synthetic EM (ISBI 2012 test slices)",
            "axes": [{"name": "z", "type": "space", "unit": "nanometer"},
                     {"name": "y", "type": "space", "unit": "nanometer"},
                     {"name": "x", "type": "space", "unit": "nanometer"}],
            "datasets": [{"path": "0", "coordinateTransformations":
                [{"type": "scale", "scale": [50.0, 4.0, 4.0]}]}]}]}}});
    skipseg_runtime::io::write_atomic(&out.join("zarr.json"), group.to_string().as_bytes())?;
    println!(
        "{}: {depth} x {size} x {size} uint8, chunks 1 x {chunk} x {chunk}",
        out.display()
    );
    Ok(())
}
