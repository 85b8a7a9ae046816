//! skipseg's direct convolution kernels alone, on the layer shapes of the shipped and
//! Table 1 models: ms and GFLOP/s per shape, 1 and 2 threads; f32, int8 with float
//! input and output, and int8 chained (`u8` codes in and out, as between the inner
//! convolutions of a bottleneck block).
//!
//! `cargo bench -p skipseg-runtime --bench conv_kernels [-- CIN COUT K SIDE]`

use std::time::Instant;

use ndarray::Array2;
use skipseg_runtime::kernels::conv::{Activation, DirectConv, FakeQuant, InputTransform, Residual};
use skipseg_runtime::kernels::qconv::{
    Activations, ActivationsMut, CodeOutput, QuantConv, QuantInput, QuantKernel,
};

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
    // `-- CIN COUT K SIDE`: that shape only
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let shapes: Vec<_> = match args.as_slice() {
        [cin, cout, k, side] => vec![(*cin, *cout, *k, *side, false, true)],
        _ => shapes.to_vec(),
    };
    let pools: Vec<rayon::ThreadPool> = (1..=2)
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("pool")
        })
        .collect();
    println!(
        "| cin | cout | k | side | residual | threads | f32 ms | f32 GFLOP/s | int8 ms ({}) | int8 GOP/s | int8 chained ms | chained GOP/s |",
        QuantKernel::detect().name()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
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
            fake_quant: None,
        };
        let conv = DirectConv::new(cin, cout, k, &w, &b, transform.clone(), Activation::None)
            .expect("conv");
        let wq: Vec<i8> = w.iter().map(|v| (v * 200.0) as i8).collect();
        let quant = FakeQuant {
            scale: 0.02,
            zero: 0,
        };
        let qconv = |input: QuantInput, output: Option<CodeOutput>| {
            QuantConv::new(
                cin,
                cout,
                k,
                &wq,
                &vec![0.005; cout],
                &b,
                input,
                Activation::None,
                output,
            )
            .expect("qconv")
        };
        let chained = qconv(
            QuantInput::Codes { quant },
            Some(CodeOutput {
                pre: InputTransform {
                    relu: true,
                    ..InputTransform::default()
                },
                quant,
            }),
        );
        let qconv = qconv(
            QuantInput::Float {
                pre: transform,
                quant,
            },
            None,
        );
        let x = Array2::from_shape_fn((cin, plane), |(c, p)| {
            ((c * 31 + p * 17) % 97) as f32 / 48.0 - 1.0
        });
        let codes = x.mapv(|v| quant.quantize(v));
        let r = Array2::from_elem((cout, plane), 0.5f32);
        let mut out = Array2::<f32>::zeros((cout, plane));
        let mut out_codes = Array2::<u8>::zeros((cout, plane));
        let flops = 2.0 * (cin * cout * k * k * plane) as f64;
        for (t, pool) in pools.iter().enumerate() {
            let pool = (t > 0).then_some(pool);
            let residual = || {
                if res {
                    Residual::Add(r.view())
                } else {
                    Residual::None
                }
            };
            let median = |f: &mut dyn FnMut()| {
                let mut times: Vec<f64> = (0..9)
                    .map(|_| {
                        let started = Instant::now();
                        f();
                        started.elapsed().as_secs_f64()
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                times[times.len() / 2]
            };
            let mf = median(&mut || {
                conv.run_image(x.view(), side, side, residual(), out.view_mut(), pool)
                    .expect("runs")
            });
            let mq = median(&mut || {
                qconv
                    .run_image(
                        Activations::Float(x.view()),
                        side,
                        side,
                        residual(),
                        ActivationsMut::Float(out.view_mut()),
                        pool,
                    )
                    .expect("runs")
            });
            let mc = median(&mut || {
                chained
                    .run_image(
                        Activations::Codes(codes.view()),
                        side,
                        side,
                        residual(),
                        ActivationsMut::Codes(out_codes.view_mut()),
                        pool,
                    )
                    .expect("runs")
            });
            println!(
                "| {cin} | {cout} | {k}x{k} | {side} | {res} | {} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} |",
                t + 1,
                mf * 1e3,
                flops / mf / 1e9,
                mq * 1e3,
                flops / mq / 1e9,
                mc * 1e3,
                flops / mc / 1e9
            );
        }
    }
}
