//! The paper's losses (eq. 1 and 2), on logits for numerical stability.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Binary cross-entropy, mean over pixels (paper eq. 1, negated and averaged).
    Bce,
    /// Dice loss: 1 - 2 sum(o y) / (sum(o) + sum(y)) (paper eq. 2, shifted by 1 so it
    /// lies in [0, 1]; same gradient).
    Dice,
}

impl LossKind {
    /// The loss's name in charts and tables.
    pub fn title(self) -> &'static str {
        match self {
            LossKind::Bce => "binary cross-entropy",
            LossKind::Dice => "Dice loss",
        }
    }
}

/// Smoothing of the Dice ratio, so an empty target and prediction give loss 0, not NaN.
pub const DICE_EPSILON: f64 = 1e-6;

/// Mean binary cross-entropy of `sigmoid(logits)` against `target` in {0, 1}.
pub fn bce_with_logits<B: Backend>(logits: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    let pos = log_sigmoid(logits.clone()) * target.clone();
    let neg = log_sigmoid(logits.neg()) * (target.neg() + 1.0);
    (pos + neg).mean().neg()
}

/// Dice loss of `sigmoid(logits)` against `target`.
pub fn dice_with_logits<B: Backend>(logits: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    let o = sigmoid(logits);
    let inter = (o.clone() * target.clone()).sum();
    let total = o.sum() + target.sum();
    (inter.mul_scalar(2.0) + DICE_EPSILON)
        .div(total + DICE_EPSILON)
        .neg()
        + 1.0
}

impl LossKind {
    pub fn compute<B: Backend>(self, logits: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
        match self {
            LossKind::Bce => bce_with_logits(logits, target),
            LossKind::Dice => dice_with_logits(logits, target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::TensorData;

    fn t(v: &[f32]) -> Tensor<Cpu, 4> {
        Tensor::from_data(
            TensorData::new(v.to_vec(), [1, 1, 1, v.len()]),
            &Default::default(),
        )
    }

    fn scalar(x: Tensor<Cpu, 1>) -> f64 {
        x.into_data().convert::<f64>().to_vec::<f64>().expect("f64")[0]
    }

    #[test]
    fn bce_by_hand() {
        // logits 0 and ln 3: probabilities 0.5 and 0.75; targets 1 and 0
        // loss = -(ln 0.5 + ln 0.25) / 2 = (ln 2 + ln 4) / 2 = 1.5 ln 2
        let l = scalar(bce_with_logits(t(&[0.0, 3f32.ln()]), t(&[1.0, 0.0])));
        assert!((l - 1.5 * 2f64.ln()).abs() < 1e-6, "{l}");
    }

    #[test]
    fn bce_is_stable_for_large_logits() {
        let l = scalar(bce_with_logits(t(&[100.0, -100.0]), t(&[1.0, 0.0])));
        assert!(l.is_finite() && l < 1e-6, "{l}");
        let l = scalar(bce_with_logits(t(&[-100.0]), t(&[1.0])));
        assert!((l - 100.0).abs() < 1e-3, "{l}");
    }

    #[test]
    fn dice_by_hand() {
        // o = (0.5, 0.75), y = (1, 0): 1 - 2 * 0.5 / (1.25 + 1) = 1 - 1 / 2.25 = 0.5555...
        let l = scalar(dice_with_logits(t(&[0.0, 3f32.ln()]), t(&[1.0, 0.0])));
        assert!((l - (1.0 - 1.0 / 2.25)).abs() < 1e-5, "{l}");
        // a perfect prediction gives ~0
        let l = scalar(dice_with_logits(t(&[50.0, -50.0]), t(&[1.0, 0.0])));
        assert!(l.abs() < 1e-5, "{l}");
    }
}
