//! Every convolution and batch norm of a [`ResFcn`], walked in one fixed order under the
//! names the ONNX export gives them (`stem.conv`, `down1.block1.conv2`,
//! `down1.block1.bn2`, `down1.block1.shortcut`, `skip.up4.projection`, `head.conv`,
//! `classifier.bn`, ...). The seeded randomizer ([`crate::synthetic`]) and the ONNX
//! importer ([`from_onnx`]) both rewrite a model through this walk; the exporter
//! ([`crate::export`]) names its nodes with the same [`pre_act_names`].

use std::collections::HashSet;

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use skipseg_runtime::onnx::{self, ModelMeta, Preprocessing, pb};

use crate::model::{Level, LongSkip, PreActConv, ResFcn};

/// Names of a pre-activated convolution's batch norm and convolution, given its prefix
/// (`down1.block1`, `head`) and suffix (`1`, `2`, or empty).
pub fn pre_act_names(prefix: &str, suffix: &str) -> (String, String) {
    (
        format!("{prefix}.bn{suffix}"),
        format!("{prefix}.conv{suffix}"),
    )
}

/// New values for the layers of a model, by name.
pub trait LayerValues<B: Backend> {
    type Error;
    fn conv(&mut self, name: &str, c: Conv2d<B>) -> Result<Conv2d<B>, Self::Error>;
    fn bn(&mut self, name: &str, bn: BatchNorm<B>) -> Result<BatchNorm<B>, Self::Error>;
}

struct Walk<'v, V> {
    values: &'v mut V,
}

impl<V> Walk<'_, V> {
    fn pre_act<B: Backend>(
        &mut self,
        prefix: &str,
        suffix: &str,
        m: PreActConv<B>,
    ) -> Result<PreActConv<B>, V::Error>
    where
        V: LayerValues<B>,
    {
        let (bn_name, conv_name) = pre_act_names(prefix, suffix);
        let bn = match m.bn {
            Some(b) => Some(self.values.bn(&bn_name, b)?),
            None => None,
        };
        Ok(PreActConv {
            bn,
            conv: self.values.conv(&conv_name, m.conv)?,
        })
    }

    fn skip<B: Backend>(&mut self, name: &str, s: LongSkip<B>) -> Result<LongSkip<B>, V::Error>
    where
        V: LayerValues<B>,
    {
        let projection = match s.projection {
            Some(p) => Some(self.values.conv(&format!("{name}.projection"), p)?),
            None => None,
        };
        Ok(LongSkip { projection, ..s })
    }

    fn level<B: Backend>(
        &mut self,
        plan: &skipseg_runtime::arch::LevelPlan,
        l: Level<B>,
    ) -> Result<Level<B>, V::Error>
    where
        V: LayerValues<B>,
    {
        let skip = match (l.skip, &plan.skip) {
            (Some(s), Some(sp)) => Some(self.skip(&sp.name, s)?),
            (s, _) => s,
        };
        let mut blocks = Vec::with_capacity(l.blocks.len());
        for (mut b, bp) in l.blocks.into_iter().zip(&plan.blocks) {
            let mut convs = Vec::with_capacity(b.convs.len());
            for (i, c) in b.convs.into_iter().enumerate() {
                convs.push(self.pre_act(&bp.name, &(i + 1).to_string(), c)?);
            }
            b.convs = convs;
            b.shortcut = match b.shortcut {
                Some(s) => Some(self.values.conv(&format!("{}.shortcut", bp.name), s)?),
                None => None,
            };
            blocks.push(b);
        }
        Ok(Level { skip, blocks })
    }
}

/// Rewrite every convolution and batch norm of `model` through `values`, in this order:
/// stem, each level (its long skip's projection, then each block's batch norms and
/// convolutions in order and its shortcut), the head skip, head, classifier.
pub fn map_layers<B: Backend, V: LayerValues<B>>(
    model: ResFcn<B>,
    values: &mut V,
) -> Result<ResFcn<B>, V::Error> {
    let plan = model.spec.plan();
    let mut w = Walk { values };
    let stem = w.values.conv("stem.conv", model.stem)?;
    let mut down = Vec::with_capacity(model.down.len());
    for (l, lp) in model.down.into_iter().zip(&plan.down) {
        down.push(w.level(lp, l)?);
    }
    let across = w.level(&plan.across, model.across)?;
    let mut up = Vec::with_capacity(model.up.len());
    for (l, lp) in model.up.into_iter().zip(&plan.up) {
        up.push(w.level(lp, l)?);
    }
    let head_skip = match model.head_skip {
        Some(s) => Some(w.skip("skip.head", s)?),
        None => None,
    };
    Ok(ResFcn {
        stem,
        down,
        across,
        up,
        head_skip,
        head: w.pre_act("head", "", model.head)?,
        classifier: w.pre_act("classifier", "", model.classifier)?,
        spec: model.spec,
    })
}

/// The refusal of a graph that is not what the export writes.
fn not_exported(source_name: &str, reason: String) -> skipseg_runtime::Error {
    skipseg_runtime::Error::BadModel {
        source_name: source_name.to_string(),
        reason: format!(
            "not a graph as `segment-train export` writes it: {reason} (an optimized or \
             quantized model cannot be loaded back into burn; use the exported float model)"
        ),
    }
}

struct OnnxValues<'a, B: Backend> {
    source_name: &'a str,
    inits: onnx::Initializers<'a>,
    used: HashSet<String>,
    device: &'a B::Device,
}

impl<B: Backend> OnnxValues<'_, B> {
    fn tensor<const D: usize>(
        &mut self,
        name: &str,
        dims: [usize; D],
    ) -> Result<Tensor<B, D>, skipseg_runtime::Error> {
        let err = |reason: String| not_exported(self.source_name, reason);
        let t = self
            .inits
            .get(name)
            .ok_or_else(|| err(format!("initializer `{name}` is missing")))?;
        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        if shape != dims {
            return Err(err(format!(
                "initializer `{name}` has shape {shape:?}, the architecture in its metadata \
                 needs {dims:?}"
            )));
        }
        let v = onnx::tensor_f32(t)
            .ok_or_else(|| err(format!("initializer `{name}` is not float32")))?;
        if v.len() != dims.iter().product::<usize>() {
            return Err(err(format!(
                "initializer `{name}` holds {} values for shape {dims:?}",
                v.len()
            )));
        }
        self.used.insert(name.to_string());
        Ok(Tensor::from_data(TensorData::new(v, dims), self.device))
    }
}

impl<B: Backend> LayerValues<B> for OnnxValues<'_, B> {
    type Error = skipseg_runtime::Error;

    fn conv(&mut self, name: &str, c: Conv2d<B>) -> Result<Conv2d<B>, skipseg_runtime::Error> {
        let weight = Param::from_tensor(self.tensor(&format!("{name}.weight"), c.weight.dims())?);
        let bias = match &c.bias {
            Some(b) => Some(Param::from_tensor(
                self.tensor(&format!("{name}.bias"), b.dims())?,
            )),
            None => None,
        };
        Ok(Conv2d { weight, bias, ..c })
    }

    fn bn(&mut self, name: &str, bn: BatchNorm<B>) -> Result<BatchNorm<B>, skipseg_runtime::Error> {
        let c = bn.gamma.dims();
        Ok(BatchNorm {
            gamma: Param::from_tensor(self.tensor(&format!("{name}.scale"), c)?),
            beta: Param::from_tensor(self.tensor(&format!("{name}.bias"), c)?),
            running_mean: RunningState::new(self.tensor(&format!("{name}.mean"), c)?),
            running_var: RunningState::new(self.tensor(&format!("{name}.var"), c)?),
            ..bn
        })
    }
}

/// Load an ONNX model written by the export (float, batch norms as nodes) back into a
/// burn [`ResFcn`] on `device`: the architecture from its skipseg metadata, every weight,
/// bias and batch-norm statistic from the initializer of the name the export gives it.
/// Refuses (naming `source_name` and the initializer) a model whose initializers do not
/// fit that architecture, or one holding float initializers the walk did not use (an
/// optimized graph: folded batch norms, fused or quantized convolutions). Returns the
/// model's preprocessing too.
pub fn from_onnx<B: Backend>(
    proto: &pb::ModelProto,
    source_name: &str,
    device: &B::Device,
) -> Result<(ResFcn<B>, Preprocessing), skipseg_runtime::Error> {
    let meta = ModelMeta::from_model(proto, source_name)?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| not_exported(source_name, "no graph".into()))?;
    let mut values = OnnxValues::<B> {
        source_name,
        inits: onnx::initializers(graph),
        used: HashSet::new(),
        device,
    };
    let model = map_layers(ResFcn::<B>::new(&meta.arch, device), &mut values)?;
    // what the walk left: the export's other initializers are the operators' constants
    // (`const.decimate.starts`, `const.upsample.scales`) and the dropout masks' default
    // ones; anything else (a folded scale, a quantized weight) means another graph
    let mask = skipseg_runtime::passes::dropout::MASK_PREFIX;
    if let Some(extra) = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .find(|n| !values.used.contains(*n) && !n.starts_with(mask) && !n.starts_with("const."))
    {
        return Err(not_exported(
            source_name,
            format!("initializer `{extra}` belongs to no layer of the architecture"),
        ));
    }
    Ok((model, meta.preprocessing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::{export, fixtures, synthetic};

    fn initializers(proto: &pb::ModelProto) -> Vec<pb::TensorProto> {
        let mut v: Vec<_> = proto
            .graph
            .iter()
            .flat_map(|g| g.initializer.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Export, import into a freshly initialised model, export again: every initializer
    /// comes back bit for bit, for each fixture architecture (simple / basic / bottleneck
    /// blocks, with and without batch norm, long and short skips). A layer the walk names
    /// differently from the export, or skips, fails here (missing initializer, or the
    /// fresh initialisation showing through).
    #[test]
    fn export_then_import_gives_back_every_weight() {
        let device = Default::default();
        for (i, (spec, _)) in fixtures::cases().into_iter().enumerate() {
            let model = synthetic::randomize(ResFcn::<Cpu>::new(&spec, &device), 7 + i as u64);
            let proto = export::to_onnx(&model, Preprocessing::per_image());
            let (back, prep) = from_onnx::<Cpu>(&proto, &spec.name, &device).expect("imports");
            assert_eq!(prep, Preprocessing::per_image());
            let again = export::to_onnx(&back, Preprocessing::per_image());
            assert_eq!(initializers(&again), initializers(&proto), "{}", spec.name);
        }
    }

    #[test]
    fn a_model_with_a_missing_or_foreign_initializer_is_refused_by_name() {
        let device = Default::default();
        let (spec, _) = fixtures::cases().remove(0);
        let model = synthetic::randomize(ResFcn::<Cpu>::new(&spec, &device), 3);
        let proto = export::to_onnx(&model, Preprocessing::default());

        let mut missing = proto.clone();
        let g = missing.graph.as_mut().expect("graph");
        let gone = g.initializer.remove(0).name;
        let e = from_onnx::<Cpu>(&missing, "m.onnx", &device)
            .expect_err("missing initializer")
            .to_string();
        assert!(e.contains("m.onnx") && e.contains(&gone), "{e}");

        let mut extra = proto.clone();
        extra
            .graph
            .as_mut()
            .expect("graph")
            .initializer
            .push(onnx::f32_tensor("stem.conv.folded_scale", &[1], &[1.0]));
        let e = from_onnx::<Cpu>(&extra, "m.onnx", &device)
            .expect_err("foreign initializer")
            .to_string();
        assert!(e.contains("stem.conv.folded_scale"), "{e}");

        let mut reshaped = proto;
        let t = &mut reshaped.graph.as_mut().expect("graph").initializer[0];
        t.dims.reverse();
        t.dims.push(1);
        let e = from_onnx::<Cpu>(&reshaped, "m.onnx", &device)
            .expect_err("wrong shape")
            .to_string();
        assert!(e.contains("shape"), "{e}");
    }
}
