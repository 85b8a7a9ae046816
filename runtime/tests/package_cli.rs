//! `segment-run package` and a package as `--model`: the folder and zip hold the
//! bioimage.io files, and predicting with the zip gives the same bytes as predicting
//! with the ONNX file it came from. (bioimage.io's own checker runs on packages in
//! tests/tests/bioimageio_package.rs.)

mod common;

use std::process::{Command, Output};

fn segment_run(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_segment-run"))
        .args(args)
        .output()
        .expect("segment-run runs");
    assert!(
        o.status.success(),
        "segment-run {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn a_package_predicts_like_its_onnx_file() {
    let dir = common::tmp("package-cli");
    let root = common::root();
    let model = root.join("models/isbi-small-bce.onnx");
    let slice = root.join("data/isbi2012/train/images/03.png");
    let pkg = dir.join("pkg");
    segment_run(&[
        "package",
        "--model",
        model.to_str().expect("utf-8"),
        "-o",
        pkg.to_str().expect("utf-8"),
        "--sample",
        slice.to_str().expect("utf-8"),
    ]);
    for f in [
        "rdf.yaml",
        "model.onnx",
        "test_input.npy",
        "test_output.npy",
        "cover.png",
        "README.md",
    ] {
        assert!(pkg.join(f).is_file(), "{f} missing");
    }
    // the card beside the model is the documentation
    let readme = std::fs::read_to_string(pkg.join("README.md")).expect("readme");
    let card = std::fs::read_to_string(root.join("models/isbi-small-bce.md")).expect("card");
    assert_eq!(readme, card);
    let zip = dir.join("pkg.zip");
    assert!(zip.is_file());
    let opts = ["--tta", "none", "--tile", "256", "--halo", "32"];
    let run = |m: &std::path::Path, out: &str| {
        let out = dir.join(out);
        let mut args = vec![
            "predict",
            slice.to_str().expect("utf-8"),
            "--model",
            m.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
        ];
        args.extend(opts);
        segment_run(&args);
        std::fs::read(out.join("03.png")).expect("output")
    };
    let from_onnx = run(&model, "onnx");
    let from_zip = run(&zip, "zip");
    let from_dir = run(&pkg, "dir");
    assert!(from_onnx == from_zip, "the zip predicts differently");
    assert!(from_onnx == from_dir, "the folder predicts differently");
    // info reads a package too
    let info = segment_run(&["info", "--model", zip.to_str().expect("utf-8")]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("down-sampling factor: 16"));
}
