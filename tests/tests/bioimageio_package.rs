//! bioimage.io packages: `package::write_package` on the shipped model, checked by
//! bioimage.io's own model test (bioimageio.core, which runs the ONNX weights with
//! onnxruntime on our test input and compares with our test output, and at other sizes)
//! on the folder and on the zip; the zip read back as a model segments exactly like the
//! ONNX file; damaged or inconsistent packages are refused with the reason.

use std::path::PathBuf;

use skipseg_parity::{oracle_python, run_oracle, workspace_root};
use skipseg_runtime::{Segmenter, io, onnx, package, segment_image, tiling};

#[test]
fn the_package_passes_bioimageio_core_and_loads_as_a_model() {
    let Some(python) = oracle_python("bioimageio_package") else {
        return;
    };
    let root = workspace_root();
    let model_path = root.join("models/isbi-small-bce.onnx");
    let proto = onnx::read_model(&model_path).expect("model");
    let seg = Segmenter::from_proto(proto.clone(), "isbi-small-bce.onnx").expect("load");
    let sample = io::read_slices(&root.join("data/isbi2012/train/images/00.png"))
        .expect("slice")
        .remove(0)
        .pixels;
    let card = std::fs::read_to_string(root.join("models/isbi-small-bce.md")).expect("card");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bioimageio/isbi-small-bce");
    let _ = std::fs::remove_dir_all(dir.parent().expect("parent"));
    let written = package::write_package(
        &seg,
        &package::PackageSpec {
            name: "skipseg isbi-small-bce",
            description: "membrane probability for EM",
            card: Some(&card),
            onnx: &proto,
            sample: &sample,
        },
        &dir,
    )
    .expect("package");
    for target in [dir.join("rdf.yaml"), written.zip.clone()] {
        let report = run_oracle(&python, "bioimageio_test.py", [&target]);
        eprintln!("{}:\n{report}", target.display());
        assert!(
            report.contains("passed | Reproduce test outputs"),
            "{report}"
        );
    }
    // the zip as a model: same network, same normalisation, same output
    let pkg = package::read_package(&written.zip).expect("read the zip");
    let from_pkg =
        Segmenter::from_proto(pkg.model.clone(), &pkg.declared.source_name).expect("load");
    package::check_package_model(&pkg.declared, &from_pkg).expect("consistent");
    let crop = sample.slice(ndarray::s![..200, ..300]).to_owned();
    let tiles = tiling::Tiling {
        tile: Some(128),
        halo: Some(32),
    };
    let a = segment_image(&seg, crop.view(), tiles, tiling::Blend::Crop).expect("onnx");
    let b = segment_image(&from_pkg, crop.view(), tiles, tiling::Blend::Crop).expect("package");
    assert!(
        a == b,
        "the package segments differently from the ONNX file"
    );
    // a damaged weight file is refused by its checksum
    let onnx_file = dir.join("model.onnx");
    let mut bytes = std::fs::read(&onnx_file).expect("read");
    let n = bytes.len();
    bytes[n - 10] ^= 0x55;
    std::fs::write(&onnx_file, bytes).expect("write");
    let e = package::read_package(&dir)
        .expect_err("damaged")
        .to_string();
    assert!(e.contains("SHA-256") && e.contains("model.onnx"), "{e}");
    // rdf.yaml declaring another normalisation than the network's is refused
    std::fs::write(&onnx_file, onnx::encode_model(&proto)).expect("restore");
    let rdf = std::fs::read_to_string(dir.join("rdf.yaml")).expect("rdf");
    let fixed = rdf.replace(
        "- id: zero_mean_unit_variance\n    kwargs:\n      axes:\n      - y\n      - x\n      eps: 1e-6",
        "- id: fixed_zero_mean_unit_variance\n    kwargs:\n      mean: 0.5\n      std: 0.25",
    );
    assert_ne!(fixed, rdf, "the pre-processing entry was found");
    std::fs::write(dir.join("rdf.yaml"), fixed).expect("write");
    let pkg = package::read_package(&dir).expect("read");
    let e = package::check_package_model(&pkg.declared, &from_pkg)
        .expect_err("inconsistent")
        .to_string();
    assert!(e.contains("pre-processing"), "{e}");
}
