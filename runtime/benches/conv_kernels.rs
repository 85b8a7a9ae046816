//! skipseg's direct convolution kernels alone, on the layer shapes of the shipped and
//! Table 1 models: ms and GFLOP/s per shape, 1 and 2 threads.
//!
//! `cargo bench -p skipseg-runtime --bench conv_kernels`

use std::time::Instant;

use ndarray::Array2;
use skipseg_runtime::kernels::conv::{Activation, DirectConv, InputTransform, Residual};

fn main() {
    // (cin, cout, kernel, side, residual, pre-activation)
    let shapes = [
        (1, 8, 3, 512, false, false),
        (8, 8, 3, 512, false, true),
        (32, 8, 3, 256, false, true),
        (8, 32, 1, 256, true, false),
        (32, 8, 1, 256, false, false),
        (8, 1, 1, 512, false, true),
        (32, 64, 1, 128, true, false),
        (64, 16, 1, 64, false, true),
        (16, 16, 3, 64, false, true),
        (32, 32, 3, 512, false, true),
        (128, 32, 3, 256, false, true),
        (256, 1024, 1, 32, true, true),
        (256, 256, 3, 32, false, true),
    ];
    let pools: Vec<rayon::ThreadPool> = (1..=2)
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("pool")
        })
        .collect();
    println!("| cin | cout | k | side | residual | threads | ms | GFLOP/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (cin, cout, k, side, res, pre) in shapes {
        let plane = side * side;
        let w: Vec<f32> = (0..cout * cin * k * k)
            .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
            .collect();
        let b = vec![0.1; cout];
        let transform = InputTransform {
            scale: pre.then(|| vec![1.1; cin]),
            shift: pre.then(|| vec![-0.1; cin]),
            relu: pre,
        };
        let conv =
            DirectConv::new(cin, cout, k, &w, &b, transform, Activation::None).expect("conv");
        let x = Array2::from_shape_fn((cin, plane), |(c, p)| {
            ((c * 31 + p * 17) % 97) as f32 / 48.0 - 1.0
        });
        let r = Array2::from_elem((cout, plane), 0.5f32);
        let mut out = Array2::<f32>::zeros((cout, plane));
        let flops = 2.0 * (cin * cout * k * k * plane) as f64;
        for (t, pool) in pools.iter().enumerate() {
            let mut times = Vec::new();
            for _ in 0..9 {
                let started = Instant::now();
                conv.run_image(
                    x.view(),
                    side,
                    side,
                    if res {
                        Residual::Add(r.view())
                    } else {
                        Residual::None
                    },
                    out.view_mut(),
                    (t > 0).then_some(pool),
                )
                .expect("runs");
                times.push(started.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let m = times[times.len() / 2];
            println!(
                "| {cin} | {cout} | {k}x{k} | {side} | {res} | {} | {:.2} | {:.1} |",
                t + 1,
                m * 1e3,
                flops / m / 1e9
            );
        }
    }
}
