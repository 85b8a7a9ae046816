//! burn module -> ONNX, through the runtime's [`GraphBuilder`] (the one place that knows
//! ONNX). Batch norm stays as `BatchNormalization` nodes; folding is the runtime's job.
//! Dropout becomes `Mul(activation, dropout_mask.<block>)` with a mask input whose
//! default is ones (the deterministic network; see `skipseg_runtime::passes::dropout`),
//! so that a runtime can sample it (Monte-Carlo dropout).

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use skipseg_runtime::arch::{ArchPlan, LevelPlan};
use skipseg_runtime::onnx::{GraphBuilder, ModelMeta, Preprocessing, pb};

use crate::layers::pre_act_names;
use crate::model::{Level, LongSkip, PreActConv, ResFcn};

/// Name of the graph input `[1, C, height, width]`.
pub const INPUT_NAME: &str = "image";
/// Name of the graph output `[1, 1, height, width]`.
pub const OUTPUT_NAME: &str = "membrane_probability";

fn values<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float tensor converts to f32")
}

fn param<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Vec<f32> {
    values(&p.val())
}

struct Exporter<'a> {
    g: GraphBuilder,
    epsilon: f32,
    plan: &'a ArchPlan,
}

impl Exporter<'_> {
    fn conv<B: Backend>(&mut self, name: &str, x: &str, c: &Conv2d<B>) -> String {
        let dims = c.weight.val().dims();
        let bias = c.bias.as_ref().map(param);
        self.g
            .conv(name, x, &param(&c.weight), dims, bias.as_deref())
    }

    fn bn<B: Backend>(&mut self, name: &str, x: &str, bn: &BatchNorm<B>) -> String {
        self.g.batch_norm(
            name,
            x,
            &param(&bn.gamma),
            &param(&bn.beta),
            &values(&bn.running_mean.value()),
            &values(&bn.running_var.value()),
            self.epsilon,
        )
    }

    /// `{prefix}.bn{suffix}` -> `{prefix}.relu{suffix}` -> (`{prefix}.dropout{suffix}`,
    /// with a mask of `dropout_channels`) -> `{prefix}.conv{suffix}`.
    fn pre_act<B: Backend>(
        &mut self,
        prefix: &str,
        suffix: &str,
        x: &str,
        m: &PreActConv<B>,
        dropout_channels: Option<usize>,
    ) -> String {
        let (bn_name, conv_name) = pre_act_names(prefix, suffix);
        let x = match &m.bn {
            Some(bn) => self.bn(&bn_name, x, bn),
            None => x.to_string(),
        };
        let mut x = self.g.relu(&format!("{prefix}.relu{suffix}"), &x);
        if let Some(channels) = dropout_channels {
            let mask = self.g.dropout_mask(
                &skipseg_runtime::passes::dropout::mask_name(prefix),
                channels,
            );
            x = self.g.mul(&format!("{prefix}.dropout{suffix}"), &x, &mask);
        }
        self.conv(&conv_name, &x, &m.conv)
    }

    fn skip<B: Backend>(
        &mut self,
        name: &str,
        path: &str,
        encoder: &[String],
        s: &LongSkip<B>,
    ) -> String {
        let e = &encoder[s.from_index];
        let e = match &s.projection {
            Some(p) => self.conv(&format!("{name}.projection"), e, p),
            None => e.clone(),
        };
        self.g.add(&format!("{name}.add"), path, &e)
    }

    fn level<B: Backend>(
        &mut self,
        lp: &LevelPlan,
        lm: &Level<B>,
        x: String,
        encoder: &[String],
    ) -> String {
        let mut x = match (&lp.skip, &lm.skip) {
            (Some(sp), Some(sm)) => self.skip(&sp.name, &x, encoder, sm),
            _ => x,
        };
        for (bp, bm) in lp.blocks.iter().zip(&lm.blocks) {
            let name = &bp.name;
            if bm.down {
                x = self.g.decimate(&format!("{name}.decimate"), &x);
            }
            let mut r = x.clone();
            let last = bm.convs.len().saturating_sub(1);
            for (i, c) in bm.convs.iter().enumerate() {
                // dropout sits before the block's last convolution (model.rs)
                let dropout =
                    (i == last && bm.dropout.is_some()).then(|| c.conv.weight.val().dims()[1]);
                r = self.pre_act(name, &(i + 1).to_string(), &r, c, dropout);
            }
            let out = match (&bm.shortcut, bm.short_skip) {
                (Some(p), _) => {
                    let s = self.conv(&format!("{name}.shortcut"), &x, p);
                    self.g.add(&format!("{name}.add"), &r, &s)
                }
                (None, true) => self.g.add(&format!("{name}.add"), &r, &x),
                (None, false) => r,
            };
            x = if bm.up {
                self.g.upsample(&format!("{name}.upsample"), &out)
            } else {
                out
            };
        }
        x
    }
}

/// Export `model` (its current weights and batch-norm running statistics) as an ONNX
/// model with a dynamic `[1, C, height, width]` input and the skipseg metadata.
pub fn to_onnx<B: Backend>(model: &ResFcn<B>, preprocessing: Preprocessing) -> pb::ModelProto {
    let spec = model.spec();
    let plan = spec.plan();
    let mut e = Exporter {
        g: GraphBuilder::new(
            &format!("skipseg-{}", spec.name),
            INPUT_NAME,
            spec.in_channels,
        ),
        epsilon: spec.bn_epsilon as f32,
        plan: &plan,
    };
    let stem = e.conv("stem.conv", INPUT_NAME, &model.stem);
    let mut encoder = vec![stem.clone()];
    let mut h = stem;
    for (lp, lm) in e.plan.down.iter().zip(&model.down) {
        h = e.level(lp, lm, h, &encoder);
        encoder.push(h.clone());
    }
    h = e.level(&e.plan.across, &model.across, h, &encoder);
    for (lp, lm) in e.plan.up.iter().zip(&model.up) {
        h = e.level(lp, lm, h, &encoder);
    }
    if let Some(s) = &model.head_skip {
        h = e.skip("skip.head", &h, &encoder, s);
    }
    let h = e.pre_act("head", "", &h, &model.head, None);
    let logits = e.pre_act("classifier", "", &h, &model.classifier, None);
    let p = e.g.sigmoid("classifier.sigmoid", &logits);
    let mut proto = e.g.finish(&p, OUTPUT_NAME, env!("CARGO_PKG_VERSION"));
    ModelMeta {
        arch: spec.clone(),
        preprocessing,
        inference: Default::default(),
    }
    .write_into(&mut proto);
    proto
}
