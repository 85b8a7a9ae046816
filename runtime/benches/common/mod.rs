//! What the runtime's benchmarks share: their command line.

use std::path::PathBuf;

/// The model (first argument, default: the shipped `models/isbi-small.onnx`) and the
/// remaining arguments, skipping the flags cargo passes (`--bench`). A relative model
/// path is taken from the workspace root (cargo runs benchmarks in the crate folder).
pub fn model_and_args() -> (PathBuf, Vec<String>) {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = if args.is_empty() {
        root.join("models/isbi-small.onnx")
    } else {
        root.join(args.remove(0))
    };
    (model, args)
}
