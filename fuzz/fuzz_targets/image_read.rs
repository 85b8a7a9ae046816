//! The image readers as `segment-run predict` calls them: list the pages of a file, then
//! stream each page's rows (the statistics pass). The first byte picks PNG or TIFF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skipseg_runtime::io;
use skipseg_runtime::tiling::RowSource;

/// At most this many rows per page (a page may declare 100000 rows in a tiny file).
const MAX_ROWS: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let ext = if kind % 2 == 0 { "png" } else { "tif" };
    let dir = std::env::temp_dir().join(format!("skipseg-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("input.{ext}"));
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let Ok(pages) = io::list_pages(&path) else {
        return;
    };
    for page in pages.iter().take(4) {
        let Ok(mut reader) = page.open() else {
            continue;
        };
        let mut row = vec![0.0f32; reader.width()];
        for _ in 0..reader.height().min(MAX_ROWS) {
            if reader.read_row(&mut row).is_err() {
                break;
            }
        }
    }
});
