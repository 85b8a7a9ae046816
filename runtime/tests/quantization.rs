//! The parity ladder of quantization: the float model run by tract alone, the model
//! skipseg runs (batch norms folded, fused f32 kernels), and the int8 model skipseg's
//! `quantize` writes (run on this CPU's int8 kernel), on the golden fixtures and on the
//! shipped model with real ISBI slices. Each rung prints max and mean absolute
//! difference of the probabilities and the share of pixels whose 0.5 decision agrees.
//!
//! Tolerances, and why:
//! - folded vs float: max 1e-4 (the same sums in another order, see tests/fusion.rs);
//! - int8 vs float: at least 99.5 % of 0.5 decisions agree (the bar for a
//!   usable int8 model) and the mean absolute difference is at most 0.01: each conv's
//!   input is rounded to 1/255 of its range (about 0.2 % of it), and these errors add
//!   up over the ~20 convs of a path; a wrong scale, zero point or channel order moves
//!   most pixels by far more (measured: see the printed table and docs/PERFORMANCE.md).

use ndarray::Array4;
use skipseg_runtime::calibrate::{self, RangeMethod};
use skipseg_runtime::kernels::qconv::QuantKernel;
use skipseg_runtime::onnx::{self, pb};
use skipseg_runtime::passes::fold_batch_norms;
use skipseg_runtime::{Options, Segmenter, io, npy};

const HEADER: &str = "| model | rung | max abs | mean abs | 0.5 decisions agree | among decisive pixels | undecided (within 0.02 of 0.5) |\n|---|---|---|---|---|---|---|";

mod common;
use common::{fixture_dirs, root};

struct Rung {
    max_abs: f32,
    mean_abs: f64,
    /// Share of pixels whose 0.5 decision agrees.
    agree: f64,
    /// The same among pixels whose reference probability is at least 0.02 from 0.5.
    agree_decisive: f64,
    /// Share of pixels within 0.02 of 0.5 in the reference.
    undecided: f64,
}

fn compare(a: &[Array4<f32>], b: &[Array4<f32>]) -> Rung {
    let (mut max_abs, mut sum, mut agree, mut n) = (0.0f32, 0.0f64, 0usize, 0usize);
    let (mut decisive, mut agree_decisive) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape(), y.shape());
        for (p, q) in x.iter().zip(y.iter()) {
            let d = (p - q).abs();
            max_abs = max_abs.max(d);
            sum += d as f64;
            let same = (*p >= 0.5) == (*q >= 0.5);
            agree += same as usize;
            if (p - 0.5).abs() >= 0.02 {
                decisive += 1;
                agree_decisive += same as usize;
            }
            n += 1;
        }
    }
    Rung {
        max_abs,
        mean_abs: sum / n as f64,
        agree: agree as f64 / n as f64,
        agree_decisive: agree_decisive as f64 / decisive.max(1) as f64,
        undecided: 1.0 - decisive as f64 / n as f64,
    }
}

fn run(seg: &Segmenter, inputs: &[Array4<f32>]) -> Vec<Array4<f32>> {
    inputs
        .iter()
        .map(|x| seg.run(x.view().into_dyn()).expect("runs"))
        .collect()
}

/// float (tract alone), folded (skipseg's f32 path) and int8 outputs on `inputs`.
fn ladder(
    label: &str,
    proto: &pb::ModelProto,
    calibration: &[Array4<f32>],
    inputs: &[Array4<f32>],
) -> (Rung, Rung, Rung) {
    let float = Segmenter::with_options(
        proto.clone(),
        label,
        &Options {
            fold_batch_norm: false,
            fuse_convolutions: false,
            fuse_every_convolution: false,
            chain_int8: true,
            threads: 1,
            monte_carlo_dropout: false,
        },
    )
    .expect("float");
    let folded =
        Segmenter::with_options(proto.clone(), label, &Options::default()).expect("folded");
    let mut f = proto.clone();
    fold_batch_norms(&mut f, label).expect("folds");
    let cal = calibrate::calibrate(&f, calibration, label).expect("calibrates");
    let (q, report) =
        calibrate::quantize_with(&f, &cal, RangeMethod::MinMax, label).expect("quantizes");
    assert!(report.left.is_empty(), "{label}: {:?}", report.left);
    let int8 = Segmenter::from_proto(q, label).expect("int8 loads");
    let (a, b, c) = (
        run(&float, inputs),
        run(&folded, inputs),
        run(&int8, inputs),
    );
    let (fold, int8_vs_float, int8_vs_folded) = (compare(&a, &b), compare(&a, &c), compare(&b, &c));
    for (name, r) in [
        ("folded vs float", &fold),
        ("int8 vs float", &int8_vs_float),
        ("int8 vs folded", &int8_vs_folded),
    ] {
        eprintln!(
            "| {label} | {name} | {:.2e} | {:.2e} | {:.3} % | {:.3} % | {:.2} % |",
            r.max_abs,
            r.mean_abs,
            100.0 * r.agree,
            100.0 * r.agree_decisive,
            100.0 * r.undecided,
        );
    }
    (fold, int8_vs_float, int8_vs_folded)
}

/// `all_pixels`: hold every pixel to the 99.5 % bar (a trained model on real images);
/// otherwise only those the float model decides by at least 0.02 (random-weight fixtures
/// put many pixels at the boundary, where a 1e-3 change flips the decision).
fn check(label: &str, all_pixels: bool, (fold, int8, int8_folded): (Rung, Rung, Rung)) {
    assert!(
        fold.max_abs <= 1e-4,
        "{label}: folding moved outputs by {}",
        fold.max_abs
    );
    for (what, r) in [("float", &int8), ("folded", &int8_folded)] {
        let agree = if all_pixels {
            r.agree
        } else {
            r.agree_decisive
        };
        assert!(
            agree >= 0.995,
            "{label}: int8 agrees with {what} on {:.3} %",
            100.0 * agree
        );
        assert!(
            r.mean_abs <= 0.01,
            "{label}: int8 vs {what} mean abs diff {}",
            r.mean_abs
        );
    }
}

#[test]
fn quantization_ladder_on_the_shipped_model_and_isbi_slices() {
    eprintln!("int8 kernel: {}", QuantKernel::detect().name());
    let proto = onnx::read_model(&root().join("models/isbi-small.onnx")).expect("model");
    let meta = onnx::ModelMeta::from_model(&proto, "isbi-small").expect("meta");
    let windows = |names: &[&str]| -> Vec<Array4<f32>> {
        names
            .iter()
            .map(|n| {
                let s =
                    io::read_slices(&root().join(format!("data/isbi2012/train/images/{n}.png")))
                        .expect("slice")
                        .remove(0);
                calibrate::window(s.pixels.view(), &meta, 512).expect("window")
            })
            .collect()
    };
    // calibrate on training slices, compare on validation slices
    let cal = windows(&["00", "05", "10", "15", "20"]);
    let val = windows(&["25", "27", "29"]);
    eprintln!("{HEADER}");
    check("isbi-small", true, ladder("isbi-small", &proto, &cal, &val));
}

#[test]
fn quantization_ladder_on_the_fixtures() {
    eprintln!("{HEADER}");
    for dir in fixture_dirs() {
        let proto = onnx::read_model(&dir.join("model.onnx")).expect("model");
        let inputs: Vec<Array4<f32>> = (0..2)
            .map(|k| {
                npy::read(&dir.join(format!("input{k}.npy")))
                    .expect("input")
                    .into_dimensionality()
                    .expect("4-D")
            })
            .collect();
        let label = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        check(&label, false, ladder(&label, &proto, &inputs, &inputs));
    }
}

/// int8 chaining ([`skipseg_runtime::passes::chain_int8`]) changes no code: the shipped
/// int8 model with `u8` codes handed from convolution to convolution against the same
/// model handing over floats, on ISBI slices, 1 and 2 threads. And the chain is there:
/// models/small.json has 13 bottleneck blocks (1 + 2 + 3 down, 1 across, 3 + 2 + 1 up),
/// each with two inner hand-overs, and the head's to the 8 -> 1 classifier: 27; the
/// four decoder levels' long-skip sums, each written twice as codes (two readers); the
/// last long skip's sum (an up-sampling add) for the head conv; and the sums whose floats
/// other nodes read as well, written both ways.
///
/// Tolerance: the 8 -> 1 classifier reading floats is too small for the integer kernel
/// and sums its 8 dequantized products in f32; reading codes it runs on the integer
/// kernel (where the CPU has one): an exact sum, then one scale. The logits then differ
/// by the f32 rounding of 8 terms, and a probability by a few ulps (2.4e-7 measured on
/// AVX512-VNNI); a code off by one anywhere upstream moves probabilities by 1e-3 to
/// 1e-2. Bound: 1e-6. Without an integer kernel both run the same f32 sums: bit for bit.
#[test]
fn chained_int8_equals_the_float_hand_over_bit_for_bit() {
    use skipseg_runtime::passes::chain_int8::{INPUT_CODES, OUTPUT_CODES, OUTPUT_FLOAT};
    let path = root().join("models/isbi-small-int8.onnx");
    let proto = onnx::read_model(&path).expect("model");
    let meta = onnx::ModelMeta::from_model(&proto, "isbi-small-int8").expect("meta");
    // the names of the nodes whose attribute `name` is `value`
    let nodes_with = |seg: &Segmenter, name: &str, value: i64| -> Vec<String> {
        seg.proto()
            .graph
            .as_ref()
            .expect("graph")
            .node
            .iter()
            .filter(|n| n.attribute.iter().any(|a| a.name == name && a.i == value))
            .map(|n| n.name.clone())
            .collect()
    };
    let flagged = |seg: &Segmenter, name: &str, value: i64| nodes_with(seg, name, value).len();
    let producers = |seg: &Segmenter, codes: i64| nodes_with(seg, OUTPUT_CODES, codes);
    let inputs: Vec<Array4<f32>> = ["25", "28"]
        .iter()
        .map(|n| {
            let s = io::read_slices(&root().join(format!("data/isbi2012/train/images/{n}.png")))
                .expect("slice")
                .remove(0);
            calibrate::window(s.pixels.view(), &meta, 512).expect("window")
        })
        .collect();
    for threads in [1, 2] {
        let make = |chain_int8| {
            Segmenter::with_options(
                proto.clone(),
                "isbi-small-int8",
                &Options {
                    chain_int8,
                    threads,
                    // every convolution fused, on ARM too (the default leaves some to
                    // tract there, and with them some hand-overs)
                    fuse_every_convolution: true,
                    ..Options::default()
                },
            )
            .expect("loads")
        };
        let (plain, chained) = (make(false), make(true));
        assert_eq!(flagged(&plain, INPUT_CODES, 1), 0);
        // 27 convolutions, the last long skip's up-sampling add for the head conv, and 9
        // sums whose floats others read as well
        assert_eq!(flagged(&chained, OUTPUT_CODES, 1), 37);
        // a block's sum that the next block's conv1 reads as its input and the next sum
        // adds (the inner blocks' residual stream: 6), and the encoder levels' outputs
        // that a decimation and a long skip's projection read (down1-3; down4's has a
        // third reader, the across block's residual)
        assert_eq!(
            nodes_with(&chained, OUTPUT_FLOAT, 1),
            [
                "down1.block1.conv1",
                "down2.block1.conv3",
                "down3.block1.conv3",
                "down3.block2.conv3",
                "down4.block1.conv3",
                "down4.block2.conv3",
                "up1.block1.conv3",
                "up1.block2.conv3",
                "up2.block1.conv3",
            ]
            .map(|n| format!("{n}.fused"))
        );
        assert!(producers(&chained, 1).contains(&"skip.head.add".to_string()));
        // each decoder level's long-skip sum, written by the skip's 1x1 projection (with
        // the level below up-sampled as its residual), for the first block's conv1 and
        // its shortcut: 37 + 2 x 4 readers of codes
        assert_eq!(
            producers(&chained, 2),
            (1..=4)
                .map(|l| format!("skip.up{l}.projection.fused"))
                .collect::<Vec<_>>()
        );
        assert_eq!(flagged(&chained, INPUT_CODES, 1), 45);
        let (a, b) = (run(&plain, &inputs), run(&chained, &inputs));
        let differing = a
            .iter()
            .zip(&b)
            .flat_map(|(x, y)| x.iter().zip(y.iter()))
            .filter(|(p, q)| p.to_bits() != q.to_bits())
            .count();
        let worst = a
            .iter()
            .zip(&b)
            .flat_map(|(x, y)| x.iter().zip(y.iter()))
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{threads} thread(s): {differing} pixels differ, max abs {worst:e}");
        assert!(worst <= 1e-6, "{threads} thread(s): max abs {worst:e}");
        if skipseg_runtime::kernels::qconv::QuantKernel::detect()
            == skipseg_runtime::kernels::qconv::QuantKernel::Float
        {
            assert_eq!(differing, 0, "{threads} thread(s), f32 kernels");
        }
    }
}
