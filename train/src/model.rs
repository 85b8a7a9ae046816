//! The residual FCN of Drozdzal et al. 2016 in burn, built from an [`ArchPlan`].
//!
//! Blocks follow Fig. 1: pre-activation (batch norm + ReLU on every conv input), optional
//! dropout on the residual path before its last conv, decimation of the block input (and
//! so of the shortcut) in the first block of a down level, repetition of rows and columns
//! at the output of the last block of an up level, a 1x1 projection on the shortcut only
//! where the width changes.

use std::collections::HashMap;

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

    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        dropout: Option<(&Dropout, &mut DropHook<'_, B>)>,
        norm: &mut NormHook<'_, B>,
    ) -> Tensor<B, 4> {
        let x = match &self.bn {
            Some(bn) => norm(bn, x),
            None => x,
        };
        let x = relu(x);
        let x = match dropout {
            Some((d, drop)) => drop(d, x),
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

    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        norm: &mut NormHook<'_, B>,
        drop: &mut DropHook<'_, B>,
    ) -> Tensor<B, 4> {
        let x = if self.down { decimate(x) } else { x };
        let last = self.convs.len() - 1;
        let mut r = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            let dropout = match &self.dropout {
                Some(d) if i == last => Some((d, &mut *drop)),
                _ => None,
            };
            r = c.forward(r, dropout, norm);
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

    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        encoder: &[Tensor<B, 4>],
        norm: &mut NormHook<'_, B>,
        drop: &mut DropHook<'_, B>,
    ) -> Tensor<B, 4> {
        let mut x = match &self.skip {
            Some(s) => s.merge(x, encoder),
            None => x,
        };
        for b in &self.blocks {
            x = b.forward(x, norm, drop);
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

    /// Logits `[N, 1, H, W]` for normalised input `[N, C, H, W]`. Batch norms work as
    /// burn's do: batch statistics while training (autodiff backend), running statistics
    /// otherwise.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_with(x, &mut |bn, x| bn.forward(x))
    }

    /// `forward` with every batch norm replaced by `norm(batch_norm, input)`.
    pub fn forward_with(&self, x: Tensor<B, 4>, norm: &mut NormHook<'_, B>) -> Tensor<B, 4> {
        self.forward_hooks(x, norm, &mut |d, x| d.forward(x))
    }

    /// `forward` with every batch norm replaced by `norm(batch_norm, input)` and every
    /// dropout by `drop(dropout, input)`; dropout sites come in forward order, one per
    /// residual block (the order of `skipseg_runtime::passes::dropout::mask_sites`).
    pub fn forward_hooks(
        &self,
        x: Tensor<B, 4>,
        norm: &mut NormHook<'_, B>,
        drop: &mut DropHook<'_, B>,
    ) -> Tensor<B, 4> {
        let stem = self.stem.forward(x);
        let mut encoder = vec![stem.clone()];
        let mut h = stem;
        for level in &self.down {
            h = level.forward(h, &encoder, norm, drop);
            encoder.push(h.clone());
        }
        h = self.across.forward(h, &encoder, norm, drop);
        for level in &self.up {
            h = level.forward(h, &encoder, norm, drop);
        }
        if let Some(s) = &self.head_skip {
            h = s.merge(h, &encoder);
        }
        let h = self.head.forward(h, None, norm);
        self.classifier.forward(h, None, norm)
    }

    /// Logits with the given dropout masks (one per dropout site, in forward order, each
    /// `[N, C, h, w]` of zeros and `1 / (1 - p)`) instead of random ones, and batch norms
    /// as `forward` uses them: one Monte-Carlo sample with a known mask, what the runtime
    /// computes when fed the same masks.
    pub fn forward_with_masks(&self, x: Tensor<B, 4>, masks: &[Tensor<B, 4>]) -> Tensor<B, 4> {
        let mut next = masks.iter();
        self.forward_hooks(
            x,
            &mut |bn, x| bn.forward(x),
            &mut |_, x| match next.next() {
                Some(m) => x * m.clone(),
                None => x,
            },
        )
    }

    /// Precise batch-norm statistics ("precise BN"): with the weights fixed, run `inputs`
    /// (one image each) through the network with every batch norm normalising by the
    /// statistics of the image in hand, as training does with batch size 1, and set each
    /// running mean and variance to the average of those per-image statistics.
    ///
    /// Training's running statistics are an exponential average (momentum 0.1) over the
    /// last few steps, taken while the weights were still moving; with batch size 1 they
    /// lag the final weights enough to wreck inference (validation V_rand 0.28 with them
    /// against 0.83 after this pass, same weights, measured on the `small` preset).
    /// Returns the number of images used (0: nothing changed).
    pub fn recalibrate_batch_norm(&self, inputs: impl IntoIterator<Item = Tensor<B, 4>>) -> usize {
        // per batch norm (keyed by address, stable while `self` is borrowed): sums of the
        // per-image means and variances
        let mut sums: HashMap<usize, (Tensor<B, 1>, Tensor<B, 1>)> = HashMap::new();
        let mut inputs = inputs.into_iter().peekable();
        let mut n = 0usize;
        while let Some(x) = inputs.next() {
            n += 1;
            let last = inputs.peek().is_none();
            let _ = self.forward_with(x, &mut |bn, x| {
                let (mean, var) = channel_statistics(x.clone());
                let key = bn as *const BatchNorm<B> as usize;
                let (sm, sv) = match sums.remove(&key) {
                    Some((sm, sv)) => (sm + mean.clone(), sv + var.clone()),
                    None => (mean.clone(), var.clone()),
                };
                if last {
                    // `update` stages the value for this thread; `value_sync` commits it
                    bn.running_mean.update(sm.div_scalar(n as f64));
                    bn.running_var.update(sv.div_scalar(n as f64));
                    let _ = (bn.running_mean.value_sync(), bn.running_var.value_sync());
                } else {
                    sums.insert(key, (sm, sv));
                }
                normalise(bn, x, mean, var)
            });
        }
        n
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

/// What a forward pass does at each dropout: `drop(dropout, input) -> output`.
pub type DropHook<'a, B> = dyn FnMut(&Dropout, Tensor<B, 4>) -> Tensor<B, 4> + 'a;

/// What a forward pass does at each batch norm: `norm(batch_norm, input) -> output`.
pub type NormHook<'a, B> = dyn FnMut(&BatchNorm<B>, Tensor<B, 4>) -> Tensor<B, 4> + 'a;

/// Per-channel mean and (biased) variance of `[N, C, H, W]` over N, H and W.
pub fn channel_statistics<B: Backend>(x: Tensor<B, 4>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [n, c, h, w] = x.dims();
    let flat = x.swap_dims(0, 1).reshape([c, n * h * w]);
    let mean = flat.clone().mean_dim(1);
    let var = (flat - mean.clone()).square().mean_dim(1);
    (mean.reshape([c]), var.reshape([c]))
}

/// `bn` applied with the given statistics instead of its own.
pub fn normalise<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let c = mean.dims()[0];
    let shape = [1, c, 1, 1];
    let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
    let shift = bn.beta.val() - mean * scale.clone();
    x * scale.reshape(shape) + shift.reshape(shape)
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

    fn small_spec() -> ArchSpec {
        let mut spec = crate::presets::load(&crate::presets::models_dir().join("small.json"))
            .expect("small preset");
        spec.down.truncate(2);
        spec.up.drain(..2);
        spec
    }

    #[test]
    fn precise_statistics_of_one_image_reproduce_training_mode_normalisation() {
        use crate::backend::CpuTrain;
        use burn::module::AutodiffModule;
        let device = Default::default();
        let spec = small_spec();
        spec.validate().expect("valid spec");
        let model = crate::synthetic::randomize(ResFcn::<CpuTrain>::new(&spec, &device), 7);
        let x = crate::synthetic::random_input(1, 32, 48, 3);
        // reference: burn's own batch norm in training mode (batch statistics)
        let reference =
            crate::tensor::to_array(model.forward(crate::tensor::from_array(&x, &device)));
        let valid = model.valid();
        let before = crate::tensor::to_array(valid.forward(crate::tensor::from_array(&x, &device)));
        let used = valid.recalibrate_batch_norm([crate::tensor::from_array::<Cpu>(&x, &device)]);
        assert_eq!(used, 1);
        // inference mode now normalises with the stored (precise) statistics
        let after = crate::tensor::to_array(valid.forward(crate::tensor::from_array(&x, &device)));
        let diff = |a: &ndarray::Array4<f32>| {
            a.iter()
                .zip(reference.iter())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        };
        assert!(
            diff(&before) > 1e-2,
            "random running statistics must differ: {}",
            diff(&before)
        );
        assert!(diff(&after) < 1e-4, "max abs difference {}", diff(&after));
    }

    #[test]
    fn precise_statistics_average_the_per_image_statistics() {
        let device = Default::default();
        let spec = small_spec();
        let model = crate::synthetic::randomize(ResFcn::<Cpu>::new(&spec, &device), 11);
        let xs: Vec<_> = (0..3)
            .map(|k| {
                crate::synthetic::random_input(1, 32, 32, 20 + k).mapv(|v| v * (1.0 + k as f32))
            })
            .collect();
        model.recalibrate_batch_norm(xs.iter().map(|x| crate::tensor::from_array(x, &device)));
        // the first batch norm sees the stem output (decimated by the first down block):
        // its running mean must be the average over images of the channel means,
        // computed here with plain arrays
        let first = &model.down[0].blocks[0];
        let bn = first.convs[0].bn.as_ref().expect("batch norm");
        let width = spec.stem_width;
        let mut expected = vec![0.0f64; width];
        for x in &xs {
            let stem = model.stem.forward(crate::tensor::from_array(x, &device));
            let stem = if first.down { decimate(stem) } else { stem };
            let a = crate::tensor::to_array(stem);
            for (c, e) in expected.iter_mut().enumerate() {
                let plane = a.index_axis(ndarray::Axis(1), c);
                *e += plane.iter().map(|&v| v as f64).sum::<f64>() / plane.len() as f64 / 3.0;
            }
        }
        let got = bn
            .running_mean
            .value()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32");
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (*g as f64 - e).abs() < 1e-4,
                "running mean {g} expected {e}"
            );
        }
    }
}
