//! Parity 2: an independent engine. `onnx.checker.check_model(full_check=True)` must
//! accept every exported model, and onnxruntime's output must match burn's within 1e-4
//! (same tolerance and reasoning as the tract parity test), on random architectures and
//! on the committed golden fixtures.

use std::path::Path;

use skipseg_parity::{describe, export_case, level, oracle_python, run_oracle, workspace_root};
use skipseg_runtime::arch::{ArchSpec, BlockKind};
use skipseg_runtime::{npy, onnx};

const TOLERANCE: f64 = 1e-4;

fn write_case(dir: &Path, case: &skipseg_parity::ExportedCase) {
    std::fs::create_dir_all(dir).expect("case dir");
    onnx::write_model(&case.proto, &dir.join("model.onnx")).expect("write model");
    for (k, (x, y)) in case.inputs.iter().zip(&case.burn_outputs).enumerate() {
        npy::write(&dir.join(format!("input{k}.npy")), x.view().into_dyn()).expect("npy");
        npy::write(&dir.join(format!("output{k}.npy")), y.view().into_dyn()).expect("npy");
    }
}

fn specs() -> Vec<ArchSpec> {
    use BlockKind::*;
    let mut out = Vec::new();
    for (i, block) in [Simple, Basic, Bottleneck].into_iter().enumerate() {
        for (long_skips, short_skips, batch_norm) in [
            (true, true, true),
            (false, true, false),
            (true, false, true),
        ] {
            out.push(ArchSpec {
                name: format!("ort-{i}"),
                in_channels: 1,
                stem_width: 4,
                down: (0..i + 1)
                    .map(|k| level(block, 8 + 4 * k, 1 + k % 2))
                    .collect(),
                across: level(block, 16, 1),
                up: (0..i + 1)
                    .rev()
                    .map(|k| level(block, 8 + 4 * k, 1))
                    .collect(),
                head_width: 4,
                long_skips,
                short_skips,
                batch_norm,
                dropout: 0.0,
                bn_epsilon: 1e-5,
            });
        }
    }
    // dropout exported as masks with default ones: the checker must accept the mask
    // inputs and onnxruntime must compute the deterministic network without them
    let mut with_dropout = out[2].clone();
    with_dropout.name = "ort-dropout".into();
    with_dropout.dropout = 0.3;
    out.push(with_dropout);
    out
}

#[test]
fn onnxruntime_matches_burn_and_checker_accepts() {
    let Some(python) = oracle_python("onnxruntime_matches_burn_and_checker_accepts") else {
        return;
    };
    let tmp = workspace_root().join("target/ort-parity");
    let _ = std::fs::remove_dir_all(&tmp);
    let mut dirs = Vec::new();
    for (i, spec) in specs().iter().enumerate() {
        let f = spec.down_factor();
        let case = export_case(spec, 100 + i as u64, &[(2 * f, 2 * f), (3 * f, 5 * f)]);
        let dir = tmp.join(format!("case{i:02}"));
        write_case(&dir, &case);
        dirs.push((dir, describe(spec)));
    }
    // the committed golden fixtures too
    let fixtures = workspace_root().join("fixtures");
    let mut fixture_dirs: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    fixture_dirs.sort();
    assert!(!fixture_dirs.is_empty(), "no fixtures found");
    dirs.extend(
        fixture_dirs
            .into_iter()
            .map(|d| (d.clone(), d.display().to_string())),
    );

    let stdout = run_oracle(&python, "ort_parity.py", dirs.iter().map(|(d, _)| d));
    let mut worst = 0.0f64;
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), dirs.len(), "one result per case:\n{stdout}");
    for (line, (_, what)) in lines.iter().zip(&dirs) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert_eq!(v["checker"], "ok");
        for d in v["max_abs_diff"].as_array().expect("diffs") {
            let d = d.as_f64().expect("number");
            worst = worst.max(d);
            assert!(
                d <= TOLERANCE,
                "onnxruntime vs burn: max abs diff {d} > {TOLERANCE} for {what}"
            );
        }
    }
    eprintln!(
        "onnxruntime vs burn: {} models, worst max abs diff {worst:e}",
        dirs.len()
    );
}
