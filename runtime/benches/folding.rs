//! Batch-norm folding (our ONNX pass) against tract's own optimiser on the unfolded
//! model: ONNX node counts, the node counts of the plans tract optimises, and run time,
//! as ratios measured in this one process (runs alternate between the two plans).
//!
//! `cargo bench -p skipseg-runtime --bench folding -- [MODEL.onnx] [SIZE] [REPEATS]`
//! (defaults: models/isbi-small.onnx, 512, 7)

use std::time::Instant;

use skipseg_runtime::onnx::{self, op_histogram};
use skipseg_runtime::{Options, Segmenter};

mod common;

fn main() {
    let (model, args) = common::model_and_args();
    let size: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(512);
    let repeats: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(7);
    let proto = onnx::read_model(&model).expect("model");
    let name = model.display().to_string();
    let make = |fold| {
        Segmenter::with_options(
            proto.clone(),
            &name,
            &Options {
                fold_batch_norm: fold,
                fuse_convolutions: false,
                fuse_every_convolution: false,
                chain_int8: true,
                threads: 1,
                monte_carlo_dropout: false,
            },
        )
        .expect("loads")
    };
    let (plain, folded) = (make(false), make(true));
    let channels = plain.meta().arch.in_channels;
    let input = ndarray::Array4::from_shape_fn((1, channels, size, size), |(_, _, y, x)| {
        ((y * 31 + x * 17) % 97) as f32 / 48.0 - 1.0
    });
    let onnx_nodes = |s: &Segmenter| s.proto().graph.as_ref().map_or(0, |g| g.node.len());
    let count = |h: &[(String, usize)]| h.iter().map(|(_, n)| n).sum::<usize>();
    let show = |h: &[(String, usize)]| {
        h.iter()
            .map(|(o, n)| format!("{o} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let plain_plan = plain.plan_ops(size, size).expect("plan");
    let folded_plan = folded.plan_ops(size, size).expect("plan");
    // warm up, then alternate
    let out_plain = plain.run(input.view().into_dyn()).expect("run");
    let out_folded = folded.run(input.view().into_dyn()).expect("run");
    let diff = out_plain
        .iter()
        .zip(out_folded.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let (mut tp, mut tf) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let t = Instant::now();
        plain.run(input.view().into_dyn()).expect("run");
        tp.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        folded.run(input.view().into_dyn()).expect("run");
        tf.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mp, mf) = (median(&mut tp), median(&mut tf));
    println!("model {name}, input {size}x{size}, 1 thread, median of {repeats}");
    println!(
        "| graph given to tract | ONNX nodes | tract plan nodes | ms per image | time / unfolded |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| unfolded (tract's optimiser alone) | {} | {} | {mp:.1} | 1.00 |",
        onnx_nodes(&plain),
        count(&plain_plan)
    );
    println!(
        "| folded by skipseg, then tract's optimiser | {} | {} | {mf:.1} | {:.2} |",
        onnx_nodes(&folded),
        count(&folded_plan),
        mf / mp
    );
    println!("max abs difference of the outputs: {diff:.2e}");
    println!("ONNX operators, unfolded: {}", show(&op_histogram(&proto)));
    println!(
        "ONNX operators, folded:   {}",
        show(&op_histogram(folded.proto()))
    );
    println!("tract plan, unfolded: {}", show(&plain_plan));
    println!("tract plan, folded:   {}", show(&folded_plan));
}
