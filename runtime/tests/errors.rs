//! Typed errors of the runtime library for bad models and bad inputs.

use std::path::Path;

use ndarray::ArrayD;
use skipseg_runtime::{Error, Segmenter};

fn fixture_model() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bottleneck-two-levels/model.onnx")
}

#[test]
fn missing_file_names_the_file() {
    let e = Segmenter::from_path(Path::new("/nonexistent/model.onnx")).expect_err("must fail");
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/model.onnx"), "{e}");
}

#[test]
fn garbage_is_not_onnx() {
    let e = Segmenter::from_bytes(
        b"this is not a protobuf at all \xff\xff\xff",
        "garbage.onnx",
    )
    .expect_err("fails");
    assert!(matches!(e, Error::NotOnnx { .. }), "{e:?}");
    assert!(e.to_string().contains("garbage.onnx"));
}

#[test]
fn onnx_without_metadata_is_rejected() {
    let mut proto = skipseg_runtime::onnx::read_model(&fixture_model()).expect("fixture");
    proto.metadata_props.clear();
    let e = Segmenter::from_proto(proto, "stripped.onnx").expect_err("fails");
    assert!(matches!(e, Error::Metadata { .. }), "{e:?}");
}

#[test]
fn wrong_rank_channels_and_size_are_typed() {
    let seg = Segmenter::from_path(&fixture_model()).expect("loads");
    let rank3 = ArrayD::<f32>::zeros(vec![1, 32, 32]);
    assert!(matches!(
        seg.run(rank3.view()),
        Err(Error::InputShape { .. })
    ));
    let two_channels = ArrayD::<f32>::zeros(vec![1, 2, 32, 32]);
    assert!(matches!(
        seg.run(two_channels.view()),
        Err(Error::InputShape { .. })
    ));
    let odd = ArrayD::<f32>::zeros(vec![1, 1, 30, 32]);
    match seg.run(odd.view()) {
        Err(Error::NotMultiple {
            height: 30,
            width: 32,
            factor: 4,
            ..
        }) => {}
        other => panic!("expected NotMultiple, got {other:?}"),
    }
    let empty = ArrayD::<f32>::zeros(vec![1, 1, 0, 32]);
    assert!(matches!(
        seg.run(empty.view()),
        Err(Error::InputShape { .. })
    ));
}
