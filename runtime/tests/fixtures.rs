//! Parity 3: the golden fixtures written by `segment-train fixtures` (burn's outputs on
//! committed inputs). A runtime change that breaks parity fails here without burn.
//! Tolerance 1e-4 on probabilities, as in the parity suite.

use std::path::{Path, PathBuf};

use skipseg_runtime::{Segmenter, npy};

const TOLERANCE: f32 = 1e-4;

fn fixture_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("fixtures folder exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    dirs
}

fn sorted(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with(prefix) && n.ends_with(".npy")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn runtime_reproduces_golden_outputs() {
    let dirs = fixture_dirs();
    assert!(
        dirs.len() >= 3,
        "expected at least 3 fixture cases, found {}",
        dirs.len()
    );
    for dir in dirs {
        let seg = Segmenter::from_path(&dir.join("model.onnx")).expect("fixture model loads");
        let inputs = sorted(&dir, "input");
        let outputs = sorted(&dir, "output");
        assert_eq!(
            inputs.len(),
            outputs.len(),
            "{}: unpaired npy files",
            dir.display()
        );
        assert!(!inputs.is_empty());
        for (i, o) in inputs.iter().zip(&outputs) {
            let x = npy::read(i).expect("input npy");
            let want = npy::read(o).expect("output npy");
            let got = seg.run(x.view()).expect("runs").into_dyn();
            assert_eq!(got.shape(), want.shape());
            let d = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{}: max abs diff {d:e}", i.display());
            assert!(
                d <= TOLERANCE,
                "{}: max abs diff {d} > {TOLERANCE}",
                i.display()
            );
            // the outputs must not be trivially saturated, or the comparison proves little
            let spread = want.iter().filter(|v| **v > 0.02 && **v < 0.98).count();
            assert!(
                spread * 4 > want.len(),
                "{}: golden output is saturated",
                o.display()
            );
        }
    }
}
