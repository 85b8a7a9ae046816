//! `segment-run` as a user meets it: exit codes, error lines naming the file, and no
//! partial or truncated outputs after a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_segment-run"))
}

fn tmp(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("tmp dir");
    p
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn predicts_a_test_slice_with_the_embedded_model() {
    let out = tmp("predict-ok");
    let o = bin()
        .arg("predict")
        .arg(root().join("data/isbi2012/test/images/00.png"))
        .arg("-o")
        .arg(&out)
        .args(["--threshold", "0.5", "--overlay"])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["00.png", "00_mask.png", "00_overlay.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let s = skipseg_runtime::io::read_slices(&out.join("00.png")).expect("readable output");
    assert_eq!(s[0].pixels.dim(), (512, 512));
    // a membrane map of EM: a minority of pixels are membrane, but some are
    let frac = s[0].pixels.iter().filter(|&&v| v > 0.5).count() as f32 / (512.0 * 512.0);
    assert!((0.05..0.5).contains(&frac), "membrane fraction {frac}");
    // nothing temporary left behind
    assert!(
        std::fs::read_dir(&out).expect("dir").all(|e| !e
            .expect("e")
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );
}

#[test]
fn corrupt_image_fails_cleanly_and_keeps_existing_outputs() {
    let out = tmp("predict-bad");
    let bad = out.join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n garbage").expect("write");
    // an existing output of the same name must survive a failed run
    std::fs::write(out.join("broken_mask.png"), b"keep me").expect("write");
    let o = bin()
        .arg("predict")
        .arg(&bad)
        .arg("-o")
        .arg(&out)
        .args(["--threshold", "0.5"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("broken.png"),
        "error must name the file: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert_eq!(
        std::fs::read(out.join("broken_mask.png")).expect("kept"),
        b"keep me"
    );
    assert!(!out.join("broken.tif").exists());
}

#[test]
fn bad_model_and_unwritable_output_exit_2() {
    let out = tmp("predict-model");
    let model = out.join("model.onnx");
    std::fs::write(&model, b"not onnx").expect("write");
    let o = bin()
        .arg("predict")
        .arg(root().join("data/isbi2012/test/images/00.png"))
        .arg("-o")
        .arg(&out)
        .arg("--model")
        .arg(&model)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("model.onnx"));
    let file_not_dir = out.join("plain-file");
    std::fs::write(&file_not_dir, b"x").expect("write");
    let o = bin()
        .arg("predict")
        .arg(root().join("data/isbi2012/test/images/00.png"))
        .arg("-o")
        .arg(file_not_dir.join("sub"))
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("plain-file"));
}

#[test]
fn eval_of_labels_against_themselves_is_perfect() {
    let labels = root().join("data/isbi2012/train/labels");
    let o = bin()
        .arg("eval")
        .arg("--labels")
        .arg(&labels)
        .arg("--proposal")
        .arg(&labels)
        .arg("--json")
        .output()
        .expect("runs");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["v_rand"].as_f64(), Some(1.0));
    assert!((v["v_info"].as_f64().expect("number") - 1.0).abs() < 1e-12);
    assert_eq!(v["slices"].as_array().map(Vec::len), Some(30));
}
