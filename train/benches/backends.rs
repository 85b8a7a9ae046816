//! Which burn CPU backend trains the network faster: `flex` (the default) or `ndarray`.
//! One training step (forward, BCE-with-logits loss, backward) of the `small` preset, in
//! the same process, same input, median of several runs; prints a table with the ratio.
//!
//! cargo bench -p skipseg-train --bench backends --features ndarray -- [SIZE] [RUNS]

use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::AutodiffBackend;
use skipseg_train::model::ResFcn;
use skipseg_train::{presets, synthetic, tensor};

fn step_times<B: AutodiffBackend>(size: usize, runs: usize) -> (f64, f64) {
    let device = B::Device::default();
    let spec = presets::load(&presets::models_dir().join("small.json")).expect("small preset");
    let model = ResFcn::<B>::new(&spec, &device);
    let x = tensor::from_array::<B>(&synthetic::random_input(1, size, size, 1), &device);
    let mut fwd = Vec::new();
    let mut step = Vec::new();
    for _ in 0..runs + 1 {
        let t = Instant::now();
        let logits = model.forward(x.clone());
        let _ = logits.clone().into_data();
        fwd.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let logits = model.forward(x.clone());
        let loss = log_sigmoid(logits).mean().neg();
        let _grads = loss.backward();
        step.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.remove(0); // warm-up
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut fwd), median(&mut step))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let size = args.first().copied().unwrap_or(256);
    let runs = args.get(1).copied().unwrap_or(5);
    let (ff, fs) = step_times::<Autodiff<Flex>>(size, runs);
    let (nf, ns) = step_times::<Autodiff<NdArray>>(size, runs);
    println!("small preset, {size}x{size}, median of {runs} (after 1 warm-up)");
    println!("| backend | forward ms | train step ms |");
    println!("|---|---|---|");
    println!("| flex | {:.0} | {:.0} |", ff * 1e3, fs * 1e3);
    println!("| ndarray | {:.0} | {:.0} |", nf * 1e3, ns * 1e3);
    println!("| ndarray / flex | {:.2} | {:.2} |", nf / ff, ns / fs);
}
