//! Write a large synthetic EM image for benchmarks: the 30 ISBI 2012 test slices tiled
//! over a SIZE x SIZE canvas (mirrored at every other repeat, so edges meet), streamed
//! row by row into an 8-bit PNG, so even 16384 x 16384 needs only the slices in memory.
//!
//! `cargo run --release -p skipseg-runtime --example synthetic_image -- OUT.png SIZE`

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().context("usage: synthetic_image OUT.png SIZE")?);
    let size: usize = args
        .next()
        .context("usage: synthetic_image OUT.png SIZE")?
        .parse()
        .context("SIZE must be a number")?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let slices = skipseg_runtime::io::read_slices(&root.join("data/isbi2012/test/images"))?;
    let (sh, sw) = slices[0].pixels.dim();
    let grid = 6; // slices per row of the pattern
    let file = std::fs::File::create(&out).with_context(|| format!("{}", out.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), size as u32, size as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?.into_stream_writer()?;
    let mut row = vec![0u8; size];
    for y in 0..size {
        let (ty, iy) = (y / sh, y % sh);
        let iy = if ty % 2 == 1 { sh - 1 - iy } else { iy };
        for (x, px) in row.iter_mut().enumerate() {
            let (tx, ix) = (x / sw, x % sw);
            let ix = if tx % 2 == 1 { sw - 1 - ix } else { ix };
            let s = &slices[((ty % 5) * grid + tx % grid) % slices.len()];
            *px = (s.pixels[[iy, ix]] * 255.0).round() as u8;
        }
        writer.write_all(&row)?;
    }
    writer.finish()?;
    println!("wrote {} ({size}x{size})", out.display());
    Ok(())
}
