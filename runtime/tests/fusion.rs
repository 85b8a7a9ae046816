//! Convolution fusion (skipseg's kernels inside tract's plan) preserves outputs: the
//! fused model against the same model run by tract alone (batch norms folded in both),
//! on the golden fixture models and on the shipped model.

use std::path::Path;

use skipseg_runtime::onnx::{self, op_histogram};
use skipseg_runtime::passes::fuse_conv::FUSED_CONV;
use skipseg_runtime::{Options, Segmenter, npy};

mod common;
use common::{fixture_dirs, max_abs, root};

fn pair(path: &Path, threads: usize) -> (Segmenter, Segmenter) {
    let proto = onnx::read_model(path).expect("model");
    let name = path.display().to_string();
    let make = |fuse| {
        Segmenter::with_options(
            proto.clone(),
            &name,
            &Options {
                fuse_convolutions: fuse,
                fuse_every_convolution: true,
                threads,
                monte_carlo_dropout: false,
                ..Options::default()
            },
        )
        .expect("loads")
    };
    (make(false), make(true))
}

fn count(seg: &Segmenter, op: &str) -> usize {
    op_histogram(seg.proto())
        .iter()
        .find(|(o, _)| o == op)
        .map_or(0, |(_, n)| *n)
}

/// Max abs difference of probabilities: both engines sum the same products in f32 in
/// different orders (tract's matrix kernels, skipseg's direct kernels), ~1e-6 relative
/// per conv; through up to a hundred layers that stays below 1e-4 on probabilities,
/// while a wrong tap, channel, residual or pre-activation moves them by 1e-2 or more.
const TOLERANCE: f32 = 1e-4;

#[test]
fn fused_equals_tract_on_fixtures_and_takes_every_conv() {
    let dirs = fixture_dirs();
    assert!(dirs.len() >= 3);
    for dir in dirs {
        for threads in [1, 3] {
            let (plain, fused) = pair(&dir.join("model.onnx"), threads);
            assert_eq!(count(&fused, "Conv"), 0, "{}: convs left", dir.display());
            assert_eq!(count(&fused, FUSED_CONV), count(&plain, "Conv"));
            for k in 0..2 {
                let x = npy::read(&dir.join(format!("input{k}.npy"))).expect("input");
                let a = plain.run(x.view()).expect("tract");
                let b = fused.run(x.view()).expect("fused");
                let d = max_abs(&a, &b);
                eprintln!(
                    "{} input{k} threads {threads}: max abs diff {d:e}",
                    dir.display()
                );
                assert!(d <= TOLERANCE, "{}: fused differs by {d}", dir.display());
            }
        }
    }
}

#[test]
fn fused_equals_tract_on_the_shipped_model() {
    let (plain, fused) = pair(&root().join("models/isbi-small.onnx"), 2);
    assert_eq!(count(&fused, "Conv"), 0);
    // pre-activations and residual sums were taken over: no Relu or Mul is left (and no
    // Add, below)
    assert_eq!(count(&fused, "Relu"), 0);
    assert_eq!(count(&fused, "Mul"), 0);
    // three up-samplings feed a long-skip projection, which repeats them as it adds; the
    // last one meets the stem through an identity skip (equal widths), no conv, and runs
    // on skipseg's own operator summed with the stem's map in the same pass (the Add
    // goes too), as do the four decimations
    assert_eq!(count(&plain, "Resize"), 4);
    assert_eq!(count(&fused, "Resize"), 0);
    assert_eq!(count(&fused, "SkipsegUpsample"), 0);
    assert_eq!(count(&fused, "SkipsegUpsampleAdd"), 1);
    assert_eq!(count(&fused, "Add"), 0);
    assert_eq!(count(&plain, "Slice"), 4);
    assert_eq!(count(&fused, "Slice"), 0);
    assert_eq!(count(&fused, "SkipsegDecimate"), 4);
    let x = ndarray::Array4::from_shape_fn((1, 1, 96, 128), |(_, _, y, x)| {
        ((y * 7 + x * 13) % 23) as f32 / 11.0 - 1.0
    })
    .into_dyn();
    let a = plain.run(x.view()).expect("tract");
    let b = fused.run(x.view()).expect("fused");
    let d = max_abs(&a, &b);
    eprintln!("isbi-small: max abs diff {d:e}");
    assert!(d <= TOLERANCE, "fused differs by {d}");
}

/// The default engine fuses a convolution exactly where `skipseg_beats_tract` says so for
/// this CPU (every one on x86-64; by layer shape on ARM: the rule is checked here against
/// the shapes read from the model itself, under qemu by scripts/cross.sh), and its output
/// equals tract's alone, f32 and int8.
#[test]
fn the_default_engine_fuses_where_skipseg_is_faster() {
    use skipseg_runtime::passes::fuse_conv::{FUSED_QCONV, skipseg_beats_tract};
    for (model, tolerance) in [
        ("models/isbi-small-bce.onnx", TOLERANCE),
        // int8: skipseg's routes and tract's QDQ sum in different orders, so an input code
        // can flip at a rounding tie and move what follows by a step (8.7e-4 measured on
        // x86-64 with every conv fused); a wrong tap or channel moves it by 1e-1 or more
        ("models/isbi-small-bce-int8.onnx", 2e-2),
    ] {
        let path = root().join(model);
        let proto = onnx::read_model(&path).expect("model");
        // the shapes from the ONNX itself: weight dims of each Conv, int8 if the weight
        // comes through a DequantizeLinear
        let graph = proto.graph.as_ref().expect("graph");
        let dims = |name: &str| {
            graph
                .initializer
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>())
        };
        let mut expected = 0;
        let mut convs = 0;
        for node in graph.node.iter().filter(|n| n.op_type == "Conv") {
            convs += 1;
            let (d, int8) = match dims(&node.input[1]) {
                Some(d) => (d, false),
                None => {
                    let dq = graph
                        .node
                        .iter()
                        .find(|n| n.output.first() == Some(&node.input[1]))
                        .expect("a weight producer");
                    (dims(&dq.input[0]).expect("int8 weights"), true)
                }
            };
            if skipseg_beats_tract(d[1], d[0], d[2], int8) {
                expected += 1;
            }
        }
        let default = Segmenter::with_options(
            proto.clone(),
            model,
            &Options {
                threads: 2,
                ..Options::default()
            },
        )
        .expect("loads");
        let plain = Segmenter::with_options(
            proto,
            model,
            &Options {
                fuse_convolutions: false,
                threads: 2,
                ..Options::default()
            },
        )
        .expect("loads");
        let fused = count(&default, FUSED_CONV) + count(&default, FUSED_QCONV);
        eprintln!("{model}: {fused} of {convs} convolutions on skipseg's kernels here");
        assert_eq!(fused, expected, "{model}");
        assert_eq!(count(&default, "Conv"), convs - expected, "{model}");
        let x = ndarray::Array4::from_shape_fn((1, 1, 64, 96), |(_, _, y, x)| {
            ((y * 7 + x * 13) % 23) as f32 / 23.0
        })
        .into_dyn();
        let d = max_abs(
            &plain.run(x.view()).expect("tract"),
            &default.run(x.view()).expect("default"),
        );
        eprintln!("{model}: max abs diff {d:e}");
        assert!(d <= tolerance, "{model}: differs by {d}");
    }
}
