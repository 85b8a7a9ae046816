//! The residual FCN of Drozdzal et al. 2016 in burn, built from an [`ArchPlan`].
//!
//! Blocks follow Fig. 1: pre-activation (batch norm + ReLU on every conv input), optional
//! dropout on the residual path before its last conv, decimation of the block input (and
//! so of the shortcut) in the first block of a down level, repetition of rows and columns
//! at the output of the last block of an up level, a 1x1 projection on the shortcut only
//! where the width changes.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;
use skipseg_runtime::arch::{ArchPlan, ArchSpec, BlockPlan, ConvShape, LevelPlan, SkipPlan};

/// A convolution with "same" zero padding, stride 1, and a bias.
pub fn conv<B: Backend>(s: ConvShape, device: &B::Device) -> Conv2d<B> {
    let p = s.kernel / 2;
    Conv2dConfig::new([s.in_ch, s.out_ch], [s.kernel, s.kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

/// (batch norm) -> ReLU -> (dropout) -> conv.
#[derive(Module, Debug)]
pub struct PreActConv<B: Backend> {
    pub bn: Option<BatchNorm<B>>,
    pub conv: Conv2d<B>,
}

impl<B: Backend> PreActConv<B> {
    pub fn new(s: ConvShape, batch_norm: bool, epsilon: f64, device: &B::Device) -> Self {
        let bn = batch_norm.then(|| {
            BatchNormConfig::new(s.in_ch)
                .with_epsilon(epsilon)
                .init(device)
        });
        Self {
            bn,
            conv: conv(s, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>, dropout: Option<&Dropout>) -> Tensor<B, 4> {
        let x = match &self.bn {
            Some(bn) => bn.forward(x),
            None => x,
        };
        let x = relu(x);
        let x = match dropout {
            Some(d) => d.forward(x),
            None => x,
        };
        self.conv.forward(x)
    }
}

/// A simple, basic or bottleneck block (which one is given by the number and shape of
/// its convolutions).
#[derive(Module, Debug)]
pub struct ResidualBlock<B: Backend> {
    pub convs: Vec<PreActConv<B>>,
    /// 1x1 projection on the short skip, only where widths change.
    pub shortcut: Option<Conv2d<B>>,
    pub short_skip: bool,
    pub dropout: Option<Dropout>,
    pub down: bool,
    pub up: bool,
}

impl<B: Backend> ResidualBlock<B> {
    pub fn new(plan: &BlockPlan, spec: &ArchSpec, device: &B::Device) -> Self {
        let convs = plan
            .convs()
            .into_iter()
            .map(|s| PreActConv::new(s, spec.batch_norm, spec.bn_epsilon, device))
            .collect();
        Self {
            convs,
            shortcut: plan.shortcut(spec.short_skips).map(|s| conv(s, device)),
            short_skip: spec.short_skips,
            dropout: (spec.dropout > 0.0).then(|| DropoutConfig::new(spec.dropout).init()),
            down: plan.down,
            up: plan.up,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.down { decimate(x) } else { x };
        let last = self.convs.len() - 1;
        let mut r = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            r = c.forward(
                r,
                if i == last {
                    self.dropout.as_ref()
                } else {
                    None
                },
            );
        }
        let out = match (&self.shortcut, self.short_skip) {
            (Some(p), _) => r + p.forward(x),
            (None, true) => r + x,
            (None, false) => r,
        };
        if self.up { upsample(out) } else { out }
    }
}

/// A long skip: the encoder map, projected by a 1x1 conv only where widths differ.
#[derive(Module, Debug)]
pub struct LongSkip<B: Backend> {
    pub projection: Option<Conv2d<B>>,
    pub from_index: usize,
}

impl<B: Backend> LongSkip<B> {
    pub fn new(plan: &SkipPlan, device: &B::Device) -> Self {
        Self {
            projection: plan.projection().map(|s| conv(s, device)),
            from_index: plan.from_index,
        }
    }

    /// `path + skip(encoder[from_index])`.
    pub fn merge(&self, path: Tensor<B, 4>, encoder: &[Tensor<B, 4>]) -> Tensor<B, 4> {
        let e = encoder[self.from_index].clone();
        let e = match &self.projection {
            Some(p) => p.forward(e),
            None => e,
        };
        path + e
    }
}

/// A level of blocks, with the long skip merged into its input (up levels).
#[derive(Module, Debug)]
pub struct Level<B: Backend> {
    pub skip: Option<LongSkip<B>>,
    pub blocks: Vec<ResidualBlock<B>>,
}

impl<B: Backend> Level<B> {
    pub fn new(plan: &LevelPlan, spec: &ArchSpec, device: &B::Device) -> Self {
        Self {
            skip: plan.skip.as_ref().map(|s| LongSkip::new(s, device)),
            blocks: plan
                .blocks
                .iter()
                .map(|b| ResidualBlock::new(b, spec, device))
                .collect(),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>, encoder: &[Tensor<B, 4>]) -> Tensor<B, 4> {
        let mut x = match &self.skip {
            Some(s) => s.merge(x, encoder),
            None => x,
        };
        for b in &self.blocks {
            x = b.forward(x);
        }
        x
    }
}

/// The whole network. `forward` returns logits; `probability` applies the sigmoid.
#[derive(Module, Debug)]
pub struct ResFcn<B: Backend> {
    pub stem: Conv2d<B>,
    pub down: Vec<Level<B>>,
    pub across: Level<B>,
    pub up: Vec<Level<B>>,
    pub head_skip: Option<LongSkip<B>>,
    pub head: PreActConv<B>,
    pub classifier: PreActConv<B>,
    #[module(skip)]
    pub spec: ArchSpec,
}

impl<B: Backend> ResFcn<B> {
    /// Build with freshly initialised weights.
    pub fn new(spec: &ArchSpec, device: &B::Device) -> Self {
        let plan: ArchPlan = spec.plan();
        let bn = spec.batch_norm;
        Self {
            stem: conv(plan.stem, device),
            down: plan
                .down
                .iter()
                .map(|l| Level::new(l, spec, device))
                .collect(),
            across: Level::new(&plan.across, spec, device),
            up: plan
                .up
                .iter()
                .map(|l| Level::new(l, spec, device))
                .collect(),
            head_skip: plan.head_skip.as_ref().map(|s| LongSkip::new(s, device)),
            head: PreActConv::new(plan.head, bn, spec.bn_epsilon, device),
            classifier: PreActConv::new(plan.classifier, bn, spec.bn_epsilon, device),
            spec: spec.clone(),
        }
    }

    /// The architecture this model was built from.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// Logits `[N, 1, H, W]` for normalised input `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let stem = self.stem.forward(x);
        let mut encoder = vec![stem.clone()];
        let mut h = stem;
        for level in &self.down {
            h = level.forward(h, &encoder);
            encoder.push(h.clone());
        }
        h = self.across.forward(h, &encoder);
        for level in &self.up {
            h = level.forward(h, &encoder);
        }
        if let Some(s) = &self.head_skip {
            h = s.merge(h, &encoder);
        }
        let h = self.head.forward(h, None);
        self.classifier.forward(h, None)
    }

    /// Every convolution weight in forward order (input to output), named as in the
    /// exported ONNX graph: the layers of the paper's Fig. 4 weight-update view.
    pub fn layer_weights(&self) -> Vec<(String, Tensor<B, 4>)> {
        let mut out = vec![("stem.conv".to_string(), self.stem.weight.val())];
        let plan = self.spec.plan();
        let levels = plan
            .down
            .iter()
            .zip(&self.down)
            .chain(std::iter::once((&plan.across, &self.across)))
            .chain(plan.up.iter().zip(&self.up));
        for (lp, lm) in levels {
            if let (Some(sp), Some(p)) = (
                &lp.skip,
                lm.skip.as_ref().and_then(|s| s.projection.as_ref()),
            ) {
                out.push((format!("{}.projection", sp.name), p.weight.val()));
            }
            for (bp, bm) in lp.blocks.iter().zip(&lm.blocks) {
                for (i, c) in bm.convs.iter().enumerate() {
                    out.push((format!("{}.conv{}", bp.name, i + 1), c.conv.weight.val()));
                }
                if let Some(s) = &bm.shortcut {
                    out.push((format!("{}.shortcut", bp.name), s.weight.val()));
                }
            }
        }
        if let Some(p) = self.head_skip.as_ref().and_then(|s| s.projection.as_ref()) {
            out.push(("skip.head.projection".into(), p.weight.val()));
        }
        out.push(("head.conv".into(), self.head.conv.weight.val()));
        out.push(("classifier.conv".into(), self.classifier.conv.weight.val()));
        out
    }

    /// Membrane probability `[N, 1, H, W]`.
    pub fn probability(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        sigmoid(self.forward(x))
    }
}

/// Keep every second row and column (no parameters).
pub fn decimate<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    // [n, c, h/2, 2, w/2, 2] -> take index 0 of both 2-axes
    x.reshape([n, c, h / 2, 2, w / 2, 2])
        .slice([0..n, 0..c, 0..h / 2, 0..1, 0..w / 2, 0..1])
        .reshape([n, c, h / 2, w / 2])
}

/// Repeat every row and column twice (nearest x2, no parameters).
pub fn upsample<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .repeat_dim(3, 2)
        .repeat_dim(5, 2)
        .reshape([n, c, 2 * h, 2 * w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::TensorData;

    #[test]
    fn decimate_and_upsample_by_hand() {
        let device = Default::default();
        let x = Tensor::<Cpu, 4>::from_data(
            TensorData::new((0..16).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 4, 4]),
            &device,
        );
        let d = decimate(x);
        assert_eq!(
            d.to_data().to_vec::<f32>().expect("f32"),
            vec![0.0, 2.0, 8.0, 10.0]
        );
        let u = upsample(d);
        assert_eq!(
            u.to_data().to_vec::<f32>().expect("f32"),
            vec![
                0., 0., 2., 2., 0., 0., 2., 2., 8., 8., 10., 10., 8., 8., 10., 10.
            ]
        );
    }
}
