//! Shared helpers of the parity suite: random architectures, burn-vs-runtime comparison.

use ndarray::Array4;
use skipseg_runtime::arch::{ArchSpec, BlockKind, Level};
use skipseg_runtime::onnx::{Preprocessing, pb};
use skipseg_train::backend::Cpu;
use skipseg_train::model::ResFcn;
use skipseg_train::{export, synthetic, tensor};

/// A model exported to ONNX together with burn's outputs on seeded inputs.
pub struct ExportedCase {
    pub spec: ArchSpec,
    pub proto: pb::ModelProto,
    pub inputs: Vec<Array4<f32>>,
    pub burn_outputs: Vec<Array4<f32>>,
}

/// Build `spec` with seeded random weights and batch-norm statistics, export it, and run
/// burn (inference mode) on seeded random inputs of the given sizes.
pub fn export_case(spec: &ArchSpec, seed: u64, sizes: &[(usize, usize)]) -> ExportedCase {
    let device = Default::default();
    let model = synthetic::randomize(ResFcn::<Cpu>::new(spec, &device), seed);
    let proto = export::to_onnx(&model, Preprocessing::default());
    let inputs: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(k, &(h, w))| {
            synthetic::random_input(
                spec.in_channels,
                h,
                w,
                seed.wrapping_mul(31).wrapping_add(k as u64),
            )
        })
        .collect();
    let burn_outputs = inputs
        .iter()
        .map(|x| tensor::to_array(model.probability(tensor::from_array::<Cpu>(x, &device))))
        .collect();
    ExportedCase {
        spec: spec.clone(),
        proto,
        inputs,
        burn_outputs,
    }
}

/// Largest absolute element-wise difference.
pub fn max_abs_diff(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Compact description of an architecture for failure messages.
pub fn describe(spec: &ArchSpec) -> String {
    let l = |l: &Level| format!("{:?}/{}x{}", l.block, l.width, l.repeats);
    format!(
        "stem {} down [{}] across {} up [{}] head {} long={} short={} bn={}",
        spec.stem_width,
        spec.down.iter().map(l).collect::<Vec<_>>().join(", "),
        l(&spec.across),
        spec.up.iter().map(l).collect::<Vec<_>>().join(", "),
        spec.head_width,
        spec.long_skips,
        spec.short_skips,
        spec.batch_norm
    )
}

/// One random level description.
pub fn level(block: BlockKind, width: usize, repeats: usize) -> Level {
    Level {
        block,
        width,
        repeats,
    }
}

/// The workspace root.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python of the oracle venv (`scripts/oracle-venv.sh`, created on demand).
///
/// Returns `None` (after a loud message) when the venv cannot be created, e.g. without
/// network; under CI (`CI` set) that is a failure instead, because CI installs it.
/// Run an oracle script of `tests/oracle/` with the venv's `python` and `args`; its
/// standard output (the test fails, showing both streams, if the script does).
pub fn run_oracle(
    python: &std::path::Path,
    script: &str,
    args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
) -> String {
    let out = std::process::Command::new(python)
        .arg(workspace_root().join("tests/oracle").join(script))
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "oracle {script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn oracle_python(test: &str) -> Option<std::path::PathBuf> {
    let root = workspace_root();
    let python = root.join("target/oracle-venv/bin/python");
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/oracle-venv.sh"))
        .status();
    if matches!(status, Ok(s) if s.success()) && python.exists() {
        return Some(python);
    }
    let msg = format!(
        "\n==================== SKIPPED: {test} ====================\n\
         the Python oracle venv (onnx, onnxruntime, scikit-image) could not be created:\n\
         run `bash scripts/oracle-venv.sh` with network access to enable this test\n\
         =========================================================\n"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}(CI must run this test)");
    }
    eprintln!("{msg}");
    None
}
