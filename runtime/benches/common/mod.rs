//! What the runtime's benchmarks share: their command line.

use std::path::PathBuf;

/// The model (first argument, default: the shipped `models/isbi-small.onnx`) and the
/// remaining arguments, skipping the flags cargo passes (`--bench`).
pub fn model_and_args() -> (PathBuf, Vec<String>) {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let model = if args.is_empty() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/isbi-small.onnx")
    } else {
        PathBuf::from(args.remove(0))
    };
    (model, args)
}
