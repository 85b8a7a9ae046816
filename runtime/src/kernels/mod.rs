//! skipseg's own compute kernels, for the operations where tract's generic ones lose to
//! onnxruntime (see docs/PERFORMANCE.md): safe Rust over `pulp`'s run-time SIMD
//! dispatch. tract still runs the graph; [`crate::engine`] plugs these in as operators.

pub mod conv;
pub mod fused;
pub mod qconv;
pub mod resample;
pub mod sigmoid;
mod winograd;

/// Deterministic values in [-1, 1) for the kernels' tests and the benchmark harnesses
/// (`examples/conv_shapes.rs`): no RNG needed to cover signs and scales.
#[doc(hidden)]
pub fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let step = |s: u64| {
        s.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut s = step(seed);
    (0..n)
        .map(|_| {
            s = step(s);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The direct definition of a "same"-padded stride-1 convolution, summed in f64 for the
/// kernels' tests: `value(ic, y, x)` is the (transformed) input inside the image, 0
/// outside; `weight(oc, ic, ky, kx)`; `finish(oc, sum)` applies scales and bias; then
/// the residual and the ReLU. Returns `[cout, h, w]`.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference_conv(
    (cin, cout, k, h, w): (usize, usize, usize, usize, usize),
    value: impl Fn(usize, usize, usize) -> f64,
    weight: impl Fn(usize, usize, usize, usize) -> f64,
    finish: impl Fn(usize, f64) -> f64,
    residual: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let r = k as isize / 2;
    let mut out = vec![0.0f32; cout * h * w];
    for oc in 0..cout {
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0.0f64;
                for ic in 0..cin {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (sy, sx) =
                                (y as isize + ky as isize - r, x as isize + kx as isize - r);
                            if sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize {
                                sum += value(ic, sy as usize, sx as usize) * weight(oc, ic, ky, kx);
                            }
                        }
                    }
                }
                let mut v = finish(oc, sum);
                if let Some(res) = residual {
                    v += res[(oc * h + y) * w + x] as f64;
                }
                out[(oc * h + y) * w + x] = if relu { v.max(0.0) } else { v } as f32;
            }
        }
    }
    out
}
