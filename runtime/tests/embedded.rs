//! The embedded model (`skipseg_runtime::embedded`): its executor gives the bits tract's
//! plan of the same graph gives (the other engine is the reference: tract runs the
//! graph, skipseg's executor is independent code around the same kernels), and its file
//! format refuses what it cannot read.

mod common;

use common::root;
use ndarray::Array4;
use skipseg_runtime::embedded::{EmbeddedModel, Graph, format};
use skipseg_runtime::engine::Options;
use skipseg_runtime::{IntensityStats, Segmenter};

/// An ISBI training slice, cropped to `h x w` from (y0, x0), normalised as `seg`'s model
/// says.
fn slice_input(seg: &Segmenter, h: usize, w: usize, y0: usize, x0: usize) -> Array4<f32> {
    let img = skipseg_runtime::io::read_slices(&root().join("data/isbi2012/train/images/03.png"))
        .expect("ISBI slice")
        .remove(0)
        .pixels;
    let crop = img.slice(ndarray::s![y0..y0 + h, x0..x0 + w]).to_owned();
    let norm = seg
        .meta()
        .preprocessing
        .for_image(&IntensityStats::of(crop.iter()));
    Array4::from_shape_fn((1, 1, h, w), |(_, _, y, x)| norm.apply(crop[[y, x]]))
}

fn differing(a: &Array4<f32>, b: &Array4<f32>) -> (usize, f32) {
    assert_eq!(a.dim(), b.dim());
    let mut n = 0;
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        if x.to_bits() != y.to_bits() {
            n += 1;
            worst = worst.max((x - y).abs());
        }
    }
    (n, worst)
}

#[test]
fn the_embedded_executor_gives_tract_s_bits_on_the_shipped_models() {
    for model in [
        "isbi-small.onnx",
        "isbi-small-int8.onnx",
        "isbi-small-bce-int8.onnx",
    ] {
        let path = root().join("models").join(model);
        for threads in [1, 2] {
            let proto = skipseg_runtime::onnx::read_model(&path).expect("model");
            let seg = Segmenter::with_options(
                proto,
                model,
                &Options {
                    threads,
                    ..Options::default()
                },
            )
            .expect("segmenter");
            let graph = seg.embedded_graph().expect("embedded graph");
            let bytes = format::encode(&graph);
            let embedded = EmbeddedModel::from_bytes(&bytes, model, threads).expect("loads");
            for (h, w, y0, x0) in [(512, 512, 0, 0), (128, 208, 301, 17)] {
                let input = slice_input(&seg, h, w, y0, x0);
                let want = seg.run(input.view().into_dyn()).expect("tract's plan");
                let got = embedded.run(input.view()).expect("embedded");
                let (n, worst) = differing(&want, &got);
                assert_eq!(
                    n, 0,
                    "{model}, {threads} thread(s), {h}x{w}: {n} pixels differ (max {worst})"
                );
                // and not trivially: the probabilities span the range
                let (lo, hi) = got
                    .iter()
                    .fold((1f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                assert!(lo < 0.05 && hi > 0.95, "{model}: outputs in [{lo}, {hi}]");
            }
        }
    }
}

fn shipped_graph() -> Graph {
    Segmenter::from_path(&root().join("models/isbi-small-int8.onnx"))
        .expect("model")
        .embedded_graph()
        .expect("graph")
}

#[test]
fn the_format_round_trips_and_refuses_damage_newer_versions_and_onnx() {
    let graph = shipped_graph();
    let bytes = format::encode(&graph);
    assert_eq!(format::decode(&bytes, "m").expect("decodes"), graph);
    assert_eq!(&bytes[..8], format::MAGIC);

    let err = |b: &[u8]| {
        EmbeddedModel::from_bytes(b, "model.skipseg", 1)
            .expect_err("must be refused")
            .to_string()
    };
    // one flipped bit anywhere in the body
    for at in [16, bytes.len() / 2, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let e = err(&b);
        assert!(e.contains("model.skipseg") && e.contains("checksum"), "{e}");
    }
    let e = err(&bytes[..bytes.len() - 100]);
    assert!(e.contains("checksum"), "truncated: {e}");
    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&(format::VERSION + 1).to_le_bytes());
    let e = err(&newer);
    assert!(
        e.contains("version 2") && e.contains("newer skipseg"),
        "{e}"
    );
    let onnx = std::fs::read(root().join("models/isbi-small.onnx")).expect("onnx");
    let e = err(&onnx);
    assert!(
        e.contains("not a skipseg embedded model") && e.contains("ONNX"),
        "{e}"
    );

    // a body that passes the checksum but lies about its sizes: refused, not a panic
    let mut lying = bytes.clone();
    lying[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // metadata count
    let crc = format::crc32(&lying[16..]);
    lying[12..16].copy_from_slice(&crc.to_le_bytes());
    let e = err(&lying);
    assert!(e.contains("at byte 20") && e.contains("count"), "{e}");
}

#[test]
fn a_graph_with_operations_the_executor_does_not_run_is_refused_by_name() {
    let proto =
        skipseg_runtime::onnx::read_model(&root().join("models/isbi-small.onnx")).expect("model");
    let seg = Segmenter::with_options(
        proto,
        "isbi-small.onnx",
        &Options {
            fuse_convolutions: false,
            fuse_every_convolution: false,
            ..Options::default()
        },
    )
    .expect("segmenter");
    // `embedded_graph` fuses the convolutions left to tract, but without the passes the
    // ONNX Sigmoid stays, which the executor does not run (it runs skipseg's own)
    let e = seg.embedded_graph().expect_err("ONNX Sigmoid").to_string();
    assert!(
        e.contains("no embedded form") && e.contains("operation Sigmoid"),
        "{e}"
    );
}

#[test]
fn a_graph_whose_values_do_not_fit_is_refused_at_load() {
    let mut graph = shipped_graph();
    // a convolution reading the image instead of what it was fused after
    let i = graph
        .nodes
        .iter()
        .position(|n| n.name.contains("conv2"))
        .expect("a conv2");
    graph.nodes[i].inputs[0] = 0;
    let e = EmbeddedModel::new(graph, "m", 1)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("conv2") && e.contains("channels"), "{e}");
}

#[test]
fn the_committed_embedded_models_are_what_this_build_converts() {
    // models/*.skipseg and fixtures/*/model.skipseg: regenerate with
    // `bash scripts/embedded-models.sh` when the passes or the format change
    let mut pairs: Vec<(std::path::PathBuf, std::path::PathBuf)> = common::fixture_dirs()
        .into_iter()
        .map(|d| (d.join("model.onnx"), d.join("model.skipseg")))
        .collect();
    for m in ["isbi-small-bce", "isbi-small-bce-int8"] {
        pairs.push((
            root().join(format!("models/{m}.onnx")),
            root().join(format!("models/{m}.skipseg")),
        ));
    }
    for (onnx, committed) in pairs {
        let fresh = format::encode(
            &Segmenter::from_path(&onnx)
                .expect("model")
                .embedded_graph()
                .expect("graph"),
        );
        let old = std::fs::read(&committed).expect("committed embedded model");
        assert!(
            old == fresh,
            "{} is stale: run `bash scripts/embedded-models.sh`",
            committed.display()
        );
    }
}
