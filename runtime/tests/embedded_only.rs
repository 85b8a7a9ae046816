//! The embedded models, in any build: with the `onnx` feature and without it (the
//! embedded library, `cargo test -p skipseg-runtime --no-default-features --features ffi
//! --test embedded_only`; scripts/cross.sh runs it under qemu too). The reference is
//! burn's outputs for the golden fixtures: another engine, no tract and no ONNX.

use skipseg_runtime::embedded::format;
use skipseg_runtime::{Segmenter, npy};

mod common;
use common::{fixture_dirs, max_abs, root};

/// Tolerance on probabilities against burn, as for the ONNX path (tests/fixtures.rs).
const TOLERANCE: f32 = 1e-4;

#[test]
fn embedded_fixture_models_reproduce_burn_s_outputs() {
    let dirs = fixture_dirs();
    assert!(dirs.len() >= 3, "expected at least 3 fixture cases");
    for dir in dirs {
        let model = dir.join("model.skipseg");
        for threads in [1, 2] {
            let bytes = std::fs::read(&model).expect("committed embedded model");
            let seg = Segmenter::from_embedded(&bytes, &model.display().to_string(), threads)
                .expect("loads");
            assert!(seg.is_embedded());
            for i in 0..2 {
                let x = npy::read(&dir.join(format!("input{i}.npy"))).expect("input");
                let want = npy::read(&dir.join(format!("output{i}.npy"))).expect("output");
                let got = seg.run(x.view()).expect("runs").into_dyn();
                assert_eq!(got.shape(), want.shape());
                let d = max_abs(got.iter(), want.iter());
                eprintln!(
                    "{} input{i}, {threads} thread(s): max abs diff {d:e}",
                    dir.display()
                );
                assert!(d <= TOLERANCE, "{}: {d} > {TOLERANCE}", dir.display());
            }
        }
    }
}

#[test]
fn the_shipped_embedded_models_load_and_segment() {
    for name in ["isbi-small-bce.skipseg", "isbi-small-bce-int8.skipseg"] {
        let seg = Segmenter::from_path(&root().join("models").join(name)).expect("loads");
        assert!(seg.is_embedded());
        assert_eq!(seg.meta().arch.name, "small");
        // a dark line on a bright field: the membrane probability is high on it and low
        // beside it (the model's own normalisation)
        let norm = seg
            .meta()
            .preprocessing
            .for_image(&skipseg_runtime::IntensityStats::of(
                (0..64 * 64)
                    .map(|i| if (i % 64) / 2 == 16 { 0.1f32 } else { 0.8 })
                    .collect::<Vec<_>>()
                    .iter(),
            ));
        let x = ndarray::Array4::from_shape_fn((1, 1, 64, 64), |(_, _, _, x)| {
            norm.apply(if x / 2 == 16 { 0.1 } else { 0.8 })
        });
        let p = seg.run(x.view().into_dyn()).expect("runs");
        let (on, off) = (p[[0, 0, 32, 32]], p[[0, 0, 32, 8]]);
        assert!(
            on > 0.5 && off < 0.5,
            "{name}: on the line {on}, beside it {off}"
        );
    }
}

#[test]
fn an_onnx_model_is_refused_or_loaded_as_the_build_says() {
    let path = root().join("models/isbi-small-bce.onnx");
    let loaded = Segmenter::from_path(&path);
    if cfg!(feature = "onnx") {
        assert!(!loaded.expect("the ONNX build loads ONNX").is_embedded());
    } else {
        let e = loaded
            .expect_err("the embedded build refuses ONNX")
            .to_string();
        assert!(
            e.contains("isbi-small-bce.onnx")
                && e.contains("ONNX")
                && e.contains("optimize --embedded"),
            "{e}"
        );
    }
    // and a newer format version, whatever the build
    let mut bytes =
        std::fs::read(root().join("models/isbi-small-bce-int8.skipseg")).expect("model");
    bytes[8..12].copy_from_slice(&(format::VERSION + 1).to_le_bytes());
    let e = Segmenter::from_bytes(&bytes, "new.skipseg")
        .expect_err("newer")
        .to_string();
    assert!(e.contains("new.skipseg") && e.contains("version"), "{e}");
}

#[test]
fn a_graph_deeper_than_its_architecture_is_refused_sizes_it_cannot_take() {
    use skipseg_runtime::embedded::{EmbeddedModel, Node, Op};
    let dir = &fixture_dirs()[0];
    let bytes = std::fs::read(dir.join("model.skipseg")).expect("model");
    let mut graph = format::decode(&bytes, "m").expect("decodes");
    let factor = EmbeddedModel::new(graph.clone(), "m", 1)
        .expect("loads")
        .meta()
        .arch
        .down_factor();
    // five more decimations of the output and five up-samplings back: the graph needs
    // sizes divisible by 32, whatever its architecture says
    let mut last = graph.output;
    for i in 0..10 {
        let op = if i < 5 { Op::Decimate } else { Op::Upsample };
        graph.nodes.push(Node {
            name: format!("extra{i}"),
            op,
            inputs: vec![last],
        });
        last = graph.nodes.len();
    }
    graph.output = last;
    let model = EmbeddedModel::new(graph, "deeper", 1).expect("a consistent graph loads");
    let x = ndarray::Array4::<f32>::zeros((1, 1, factor, factor));
    let e = model
        .run(x.view())
        .expect_err("too small for 5 more levels")
        .to_string();
    assert!(e.contains("deeper") && e.contains("32"), "{e}");
    let x = ndarray::Array4::<f32>::zeros((1, 1, 32, 64));
    let p = model.run(x.view()).expect("a multiple of 32 runs");
    assert_eq!(p.dim(), (1, 1, 32, 64));
}

mod damaged_files {
    use super::*;
    use proptest::prelude::*;

    fn shipped() -> &'static [u8] {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        BYTES.get_or_init(|| {
            std::fs::read(root().join("fixtures/bottleneck-two-levels/model.skipseg"))
                .expect("model")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Bytes changed anywhere after the header, the checksum made to match (so the
        /// parser and the graph checks, not the CRC, meet the damage): loading refuses
        /// or succeeds, and a model that loads runs or refuses; nothing panics.
        #[test]
        fn damage_behind_a_valid_checksum_is_refused_or_harmless(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut b = shipped().to_vec();
            let body = b.len() - 16;
            for (at, v) in &edits {
                b[16 + at.index(body)] = *v;
            }
            let crc = format::crc32(&b[16..]);
            b[12..16].copy_from_slice(&crc.to_le_bytes());
            let outcome = std::panic::catch_unwind(|| {
                if let Ok(m) = skipseg_runtime::embedded::EmbeddedModel::from_bytes(&b, "damaged", 1) {
                    let f = m.meta().arch.down_factor().clamp(1, 64);
                    let x = ndarray::Array4::<f32>::zeros((1, m.graph().in_channels.clamp(1, 4), 2 * f, 2 * f));
                    let _ = m.run(x.view());
                }
            });
            prop_assert!(outcome.is_ok(), "a damaged model panicked (edits {:?})", edits);
        }

        /// The numbers that shape the graph, changed one at a time to values a damaged or
        /// hostile file could hold: refused at load or at run, never a panic or an
        /// allocation the file's sizes do not justify.
        #[test]
        fn structural_damage_is_refused_or_harmless(
            node in any::<prop::sample::Index>(),
            field in 0usize..9,
            value in prop::sample::select(vec![0usize, 1, 2, 3, 5, 7, 64, 1 << 20, u32::MAX as usize]),
        ) {
            use skipseg_runtime::embedded::Op;
            use skipseg_runtime::kernels::fused::ConvWeights;
            let mut g = format::decode(shipped(), "m").expect("decodes");
            let i = node.index(g.nodes.len());
            let n = &mut g.nodes[i];
            match (field, &mut n.op) {
                (0, Op::Conv(c)) => c.cin = value,
                (1, Op::Conv(c)) => c.cout = value,
                (2, Op::Conv(c)) => c.kernel = value,
                (3, Op::Conv(c)) => c.bias.truncate(value.min(c.bias.len().saturating_sub(1))),
                (4, Op::Conv(c)) => match &mut c.weights {
                    ConvWeights::Float(w) => w.truncate(value.min(w.len().saturating_sub(1))),
                    ConvWeights::Int8 { scales, .. } => scales.truncate(value.min(scales.len().saturating_sub(1))),
                },
                (5, _) => n.inputs[0] = value,
                (6, _) => n.inputs.push(value.min(i)),
                (7, _) => g.output = value,
                _ => g.in_channels = value,
            }
            // through the file format too: what the loader sees
            let bytes = format::encode(&g);
            let outcome = std::panic::catch_unwind(|| {
                if let Ok(m) = skipseg_runtime::embedded::EmbeddedModel::from_bytes(&bytes, "damaged", 1) {
                    let f = m.meta().arch.down_factor().clamp(1, 64);
                    let x = ndarray::Array4::<f32>::zeros((1, m.graph().in_channels.clamp(1, 4), 2 * f, 2 * f));
                    let _ = m.run(x.view());
                }
            });
            prop_assert!(outcome.is_ok(), "panicked: node {} field {} value {}", i, field, value);
        }
    }
}
