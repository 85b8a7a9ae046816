//! The streaming image readers against files written by independent encoders (Python's
//! tifffile and pypng, `tests/oracle/write_images.py`): strips, tiles, deflate, 8/16-bit,
//! float, multi-page stacks, interlaced PNG, and the refusals (colour, planar RGB).
//! Every pixel follows a formula, so the expected values come from arithmetic, not from
//! the code under test.

use std::path::PathBuf;

use skipseg_parity::{oracle_python, workspace_root};
use skipseg_runtime::io;
use skipseg_runtime::tiling::RowSource;

fn u8_value(y: usize, x: usize, page: usize) -> f32 {
    ((131 * y + 71 * x + 17 * page) % 251) as f32 / 255.0
}

fn u16_value(y: usize, x: usize) -> f32 {
    ((7919 * y + 104729 * x) % 65536) as f32 / 65535.0
}

fn f32_value(y: usize, x: usize) -> f32 {
    0.001 * (y as f32 - 2.0 * x as f32)
}

fn write_files() -> Option<PathBuf> {
    let python = oracle_python("image_io_oracle")?;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("image-io-oracle");
    let _ = std::fs::remove_dir_all(&dir);
    let o = std::process::Command::new(python)
        .arg(workspace_root().join("tests/oracle/write_images.py"))
        .arg(&dir)
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "write_images.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(dir)
}

/// Read `file` both whole and row by row through the streaming reader, check every
/// pixel against `value(page, y, x)`, and the bit depth.
fn check(
    dir: &std::path::Path,
    file: &str,
    size: (usize, usize),
    pages: usize,
    depth: u8,
    value: fn(usize, usize, usize) -> f32,
) {
    let path = dir.join(file);
    let listed = io::list_pages(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(listed.len(), pages, "{file}: pages");
    let slices = io::read_slices(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    for (p, (page, slice)) in listed.iter().zip(&slices).enumerate() {
        assert_eq!((page.height, page.width), size, "{file}[{p}]: size");
        assert_eq!(slice.pixels.dim(), size, "{file}[{p}]: decoded size");
        assert_eq!(slice.bit_depth, depth, "{file}[{p}]: bit depth");
        let mut reader = page.open().expect("open");
        let mut row = vec![0.0; size.1];
        for y in 0..size.0 {
            reader.read_row(&mut row).expect("row");
            for (x, (&streamed, &whole)) in row.iter().zip(slice.pixels.row(y)).enumerate() {
                let want = value(p, y, x);
                assert!(
                    (streamed - want).abs() < 1e-6 && (whole - want).abs() < 1e-6,
                    "{file}[{p}] ({y}, {x}): streamed {streamed} whole {whole} expected {want}"
                );
            }
        }
        assert!(
            reader.read_row(&mut row).is_err(),
            "{file}: read past the end"
        );
    }
}

#[test]
fn readers_match_independent_encoders() {
    let Some(dir) = write_files() else { return };
    check(&dir, "strips8.tif", (37, 53), 1, 8, |p, y, x| {
        u8_value(y, x, p)
    });
    check(&dir, "strips16_deflate.tif", (41, 29), 1, 16, |_, y, x| {
        u16_value(y, x)
    });
    check(&dir, "tiles16_deflate.tif", (45, 70), 1, 16, |_, y, x| {
        u16_value(y, x)
    });
    check(&dir, "stack8.tif", (20, 30), 3, 8, |p, y, x| {
        u8_value(y, x, p)
    });
    check(&dir, "float32.tif", (23, 19), 1, 32, |_, y, x| {
        f32_value(y, x)
    });
    check(&dir, "rgb_equal.tif", (12, 9), 1, 8, |_, y, x| {
        u8_value(y, x, 0)
    });
    check(&dir, "interlaced8.png", (33, 21), 1, 8, |_, y, x| {
        u8_value(y, x, 0)
    });
    check(&dir, "interlaced16.png", (19, 27), 1, 16, |_, y, x| {
        u16_value(y, x)
    });
    check(&dir, "plain16.png", (26, 14), 1, 16, |_, y, x| {
        u16_value(y, x)
    });
    for (file, why) in [("rgb_colour.tif", "colour"), ("planar_rgb.tif", "planar")] {
        let e = io::read_slices(&dir.join(file)).expect_err(file);
        let msg = e.to_string();
        assert!(msg.contains(file) && msg.contains(why), "{file}: {msg}");
    }
}
