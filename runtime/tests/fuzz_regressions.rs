//! Inputs the fuzzers (scripts/fuzz.sh, docs/RELIABILITY.md) found crashing, replayed
//! the way each fuzz target calls the library: each must now give a result (an error is
//! fine) instead of a panic.

use std::path::PathBuf;

use skipseg_runtime::Segmenter;
use skipseg_runtime::tiling::RowSource;

mod common;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = common::root()
        .join("runtime/tests/fuzz-regressions")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Where panics happened while `f` ran (file:line), even those caught on the way.
fn panic_sites(f: impl FnOnce() + std::panic::UnwindSafe) -> Vec<String> {
    static SITES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    std::panic::set_hook(Box::new(|info| {
        let site = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        SITES.lock().unwrap_or_else(|p| p.into_inner()).push(site);
    }));
    let _ = std::panic::catch_unwind(f);
    let _ = std::panic::take_hook();
    std::mem::take(&mut *SITES.lock().unwrap_or_else(|p| p.into_inner()))
}

/// fuzz/fuzz_targets/onnx_load.rs: load, then run one small window. The library turns
/// tract's panics into errors; a panic in skipseg's own code is a bug whether or not it
/// is caught.
#[test]
fn onnx_load_regressions_are_errors_not_panics() {
    let found = inputs("onnx_load");
    assert!(!found.is_empty(), "regression inputs missing");
    for path in found {
        let bytes = std::fs::read(&path).expect("read");
        let sites = panic_sites(|| {
            let name = path.display().to_string();
            if let Ok(seg) = Segmenter::from_bytes(&bytes, &name) {
                let arch = &seg.meta().arch;
                let side = arch.down_factor().max(4);
                let x =
                    ndarray::ArrayD::<f32>::from_elem(vec![1, arch.in_channels, side, side], 0.25);
                let _ = seg.run(x.view());
            }
        });
        eprintln!("{}: panics at {sites:?}", path.display());
        assert!(
            sites.iter().all(|s| !s.starts_with("runtime/src")),
            "{}: skipseg code panicked at {sites:?}",
            path.display()
        );
    }
}

/// Every onnx_load input gives a result (an error is fine), never an unwinding panic.
#[test]
fn onnx_load_regressions_give_results() {
    let found = inputs("onnx_load");
    for path in found {
        let bytes = std::fs::read(&path).expect("read");
        let name = path.display().to_string();
        let outcome = std::panic::catch_unwind(|| match Segmenter::from_bytes(&bytes, &name) {
            Err(e) => format!("refused at load: {e}"),
            Ok(seg) => {
                let arch = &seg.meta().arch;
                let side = arch.down_factor().max(4);
                let x =
                    ndarray::ArrayD::<f32>::from_elem(vec![1, arch.in_channels, side, side], 0.25);
                match seg.run(x.view()) {
                    Ok(_) => "ran".to_string(),
                    Err(e) => format!("refused at run: {e}"),
                }
            }
        });
        match outcome {
            Ok(what) => eprintln!("{}: {what}", path.display()),
            Err(_) => panic!("{}: panicked", path.display()),
        }
    }
}

/// fuzz/fuzz_targets/image_read.rs: the first byte picks PNG (even) or TIFF (odd); list
/// the pages, stream their rows. Inputs that made the reader allocate gigabytes are
/// refused at once now (the test runs without a memory limit, so it also checks how
/// long they take).
#[test]
fn image_read_regressions_are_errors_not_crashes() {
    let found = inputs("image_read");
    assert!(!found.is_empty(), "regression inputs missing");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-regressions");
    std::fs::create_dir_all(&dir).expect("dir");
    for path in found {
        let data = std::fs::read(&path).expect("read");
        let (kind, bytes) = data.split_first().expect("non-empty");
        let file = dir.join(format!(
            "input.{}",
            if kind % 2 == 0 { "png" } else { "tif" }
        ));
        std::fs::write(&file, bytes).expect("write");
        let started = std::time::Instant::now();
        let outcome = skipseg_runtime::io::list_pages(&file).and_then(|pages| {
            for page in &pages {
                let mut r = page.open()?;
                let mut row = vec![0.0f32; r.width()];
                for _ in 0..r.height().min(2048) {
                    r.read_row(&mut row)?;
                }
            }
            Ok(pages.len())
        });
        eprintln!("{}: {outcome:?} in {:?}", path.display(), started.elapsed());
        assert!(
            started.elapsed().as_secs() < 10,
            "{} is slow",
            path.display()
        );
    }
}
