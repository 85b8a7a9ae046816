//! skipseg's own compute kernels, for the operations where tract's generic ones lose to
//! onnxruntime (see docs/PERFORMANCE.md): safe Rust over `pulp`'s run-time SIMD
//! dispatch. tract still runs the graph; [`crate::engine`] plugs these in as operators.

pub mod conv;
pub mod qconv;
mod winograd;

/// Deterministic values in [-1, 1) for the kernels' tests (no RNG needed to cover signs
/// and scales).
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64) -> Vec<f32> {
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
