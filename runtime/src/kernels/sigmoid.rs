//! The logistic sigmoid of the network's output, vectorised: one definition for every
//! engine that runs a skipseg graph (tract's plan and the embedded executor), so that
//! both give the same bits.
//!
//! `sigmoid(x) - 0.5` is a rational minimax fit on `[-14.5, 14.5]` (the coefficients of
//! tract-linalg's `ssigmoid`, which derives them and the clamp): an odd polynomial of
//! degree 13 over an even one of degree 6, evaluated by Horner's rule. Absolute error
//! under 5e-7 against the exact function in f64 (checked below on a dense grid); the
//! clamp keeps the result inside (0, 1) for every finite input.

use pulp::{Simd, WithSimd};

const LOW: f32 = -14.5;
const HIGH: f32 = 14.5;
const ALPHA: [f32; 7] = [
    -4.433_153_4e-18,
    1.169_974_4e-14,
    -1.875_289_6e-11,
    4.257_889_5e-8,
    4.811_817_6e-5,
    8.163_842e-3,
    0.249_999_99,
];
const BETA: [f32; 4] = [3.922_936e-6, 1.524_872_4e-3, 0.115_988_67, 1.0];

/// Replace every value by its sigmoid.
pub fn sigmoid_in_place(values: &mut [f32]) {
    pulp::Arch::new().dispatch(Sigmoid(values));
}

struct Sigmoid<'a>(&'a mut [f32]);

impl WithSimd for Sigmoid<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (body, tail) = S::as_mut_simd_f32s(self.0);
        for v in body {
            *v = one(simd, *v);
        }
        // the tail goes through the same vector code, so that a value's result does not
        // depend on where it lies in the slice
        if !tail.is_empty() {
            let v = simd.partial_load_f32s(tail);
            simd.partial_store_f32s(tail, one(simd, v));
        }
    }
}

#[inline(always)]
fn one<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let x = simd.min_f32s(
        simd.max_f32s(x, simd.splat_f32s(LOW)),
        simd.splat_f32s(HIGH),
    );
    let x2 = simd.mul_f32s(x, x);
    let mut p = simd.splat_f32s(ALPHA[0]);
    for a in &ALPHA[1..] {
        p = simd.mul_add_e_f32s(x2, p, simd.splat_f32s(*a));
    }
    let p = simd.mul_f32s(p, x);
    let mut q = simd.splat_f32s(BETA[0]);
    for b in &BETA[1..] {
        q = simd.mul_add_e_f32s(x2, q, simd.splat_f32s(*b));
    }
    simd.add_f32s(simd.div_f32s(p, q), simd.splat_f32s(0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_5e_7_of_the_exact_sigmoid_and_inside_0_1() {
        // every 1/1024 over [-40, 40] (both tails, the clamp, zero), and lengths that
        // leave a tail
        let xs: Vec<f32> = (-40 * 1024..=40 * 1024)
            .map(|i| i as f32 / 1024.0)
            .collect();
        let mut ys = xs.clone();
        sigmoid_in_place(&mut ys);
        let mut worst = 0.0f64;
        for (&x, &y) in xs.iter().zip(&ys) {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            worst = worst.max((y as f64 - exact).abs());
            assert!(y > 0.0 && y < 1.0, "sigmoid({x}) = {y}");
        }
        assert!(worst < 5e-7, "max abs error {worst}");
    }

    #[test]
    fn a_value_gives_the_same_bits_wherever_it_lies() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.77).collect();
        let mut whole = xs.clone();
        sigmoid_in_place(&mut whole);
        for start in 0..xs.len() {
            let mut part = xs[start..].to_vec();
            sigmoid_in_place(&mut part);
            assert_eq!(part, whole[start..], "from {start}");
        }
    }
}
