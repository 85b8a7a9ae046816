//! The committed golden fixtures are what `segment-train fixtures` writes today: the
//! inputs are bit-identical and burn's outputs agree within 1e-6 (room for a different
//! CPU's SIMD summation order, far below the 1e-4 parity tolerance).

use skipseg_parity::workspace_root;
use skipseg_runtime::npy;

#[test]
fn committed_fixtures_are_reproducible() {
    let tmp = workspace_root().join("target/fixtures-regenerated");
    let _ = std::fs::remove_dir_all(&tmp);
    let written = skipseg_train::fixtures::write_all(&tmp).expect("fixtures written");
    assert!(written.len() >= 3);
    for dir in written {
        let name = dir.file_name().expect("case name").to_owned();
        let committed = workspace_root().join("fixtures").join(&name);
        assert!(
            committed.join("model.onnx").exists(),
            "{}: not committed; run segment-train fixtures",
            committed.display()
        );
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("entry").path();
            let file = path
                .file_name()
                .expect("file")
                .to_string_lossy()
                .into_owned();
            if !file.ends_with(".npy") {
                continue;
            }
            let fresh = npy::read(&path).expect("fresh npy");
            let old = npy::read(&committed.join(&file)).expect("committed npy");
            assert_eq!(fresh.shape(), old.shape(), "{file}");
            let d = fresh
                .iter()
                .zip(old.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let tol = if file.starts_with("input") { 0.0 } else { 1e-6 };
            assert!(
                d <= tol,
                "{}/{file}: differs from a fresh run by {d}",
                name.to_string_lossy()
            );
        }
    }
}
