//! Batch-norm folding, an ONNX -> ONNX rewrite run before tract sees the graph.
//!
//! - A `BatchNormalization` whose input is the output of a `Conv` read by nothing else
//!   is folded into that conv: `W' = W * s`, `b' = (b - mean) * s + beta` per output
//!   channel, with `s = gamma / sqrt(var + eps)`.
//! - Every other `BatchNormalization` becomes `Mul` by `s` and `Add` of
//!   `beta - mean * s` (per-channel constants shaped `[1, C, 1, 1]`).
//!
//! Afterwards the graph has no `BatchNormalization` node; unused initializers are
//! dropped.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::onnx::{Names, f32_tensor, pb, tensor_f32};

/// What the pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// Batch norms folded into the preceding conv: (batch norm, conv).
    pub folded: Vec<(String, String)>,
    /// Batch norms turned into per-channel scale and shift.
    pub to_affine: Vec<String>,
}

fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.f)
        .unwrap_or(default)
}

/// Fold every batch norm of `model` (see the module docs).
pub fn fold_batch_norms(model: &mut pb::ModelProto, source_name: &str) -> Result<FoldReport> {
    let err = |reason: String| Error::BadModel {
        source_name: source_name.to_string(),
        reason,
    };
    let graph = model.graph.as_mut().ok_or_else(|| err("no graph".into()))?;
    // the pass indexes node inputs and outputs: their counts must be what the operators take
    crate::onnx::check_arity(graph, source_name)?;
    let mut report = FoldReport::default();
    if !graph.node.iter().any(|n| n.op_type == "BatchNormalization") {
        return Ok(report);
    }
    // names are optional in ONNX and need not be unique: new tensors and nodes draw
    // names no value, initializer or node of the graph has
    let mut names = Names::of(graph);
    let base = |node: &pb::NodeProto| {
        if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        }
    };
    let mut inits: HashMap<String, pb::TensorProto> = graph
        .initializer
        .drain(..)
        .map(|t| (t.name.clone(), t))
        .collect();
    let consumers = |nodes: &[pb::NodeProto], value: &str| {
        nodes
            .iter()
            .filter(|n| n.input.iter().any(|i| i == value))
            .count()
    };
    let graph_outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let get = |inits: &HashMap<String, pb::TensorProto>, name: &str| {
        inits
            .get(name)
            .and_then(tensor_f32)
            .ok_or_else(|| err(format!("initializer `{name}` missing or not float")))
    };

    let mut nodes = std::mem::take(&mut graph.node);
    let mut i = 0;
    while i < nodes.len() {
        if nodes[i].op_type != "BatchNormalization" {
            i += 1;
            continue;
        }
        let bn = nodes[i].clone();
        if bn.input.len() < 5 || bn.output.is_empty() {
            return Err(err(format!(
                "BatchNormalization `{}` has too few inputs",
                bn.name
            )));
        }
        let eps = attr_f(&bn, "epsilon", 1e-5);
        let (gamma, beta, mean, var) = (
            get(&inits, &bn.input[1])?,
            get(&inits, &bn.input[2])?,
            get(&inits, &bn.input[3])?,
            get(&inits, &bn.input[4])?,
        );
        let c = gamma.len();
        if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != c) {
            return Err(err(format!(
                "BatchNormalization `{}`: parameter lengths differ",
                bn.name
            )));
        }
        let scale: Vec<f32> = (0..c).map(|k| gamma[k] / (var[k] + eps).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|k| beta[k] - mean[k] * scale[k]).collect();
        let x = &bn.input[0];
        let producer = nodes.iter().position(|n| n.output.first() == Some(x));
        let foldable = producer.filter(|&p| {
            nodes[p].op_type == "Conv"
                && consumers(&nodes, x) == 1
                && !graph_outputs.contains(x)
                && nodes[p].input.len() >= 2
                && inits.contains_key(&nodes[p].input[1])
                && nodes[p]
                    .attribute
                    .iter()
                    .find(|a| a.name == "group")
                    .map(|a| a.i)
                    .unwrap_or(1)
                    == 1
        });
        if let Some(p) = foldable {
            let conv = nodes[p].clone();
            let w_t = inits
                .get(&conv.input[1])
                .cloned()
                .ok_or_else(|| err("conv weight missing".into()))?;
            let w = tensor_f32(&w_t)
                .ok_or_else(|| err(format!("conv `{}` weight is not float", conv.name)))?;
            if w_t.dims.first().copied() != Some(c as i64) {
                return Err(err(format!(
                    "conv `{}` has {:?} weights for {c} batch-norm channels",
                    conv.name, w_t.dims
                )));
            }
            let per = w.len() / c;
            let w2: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(k, v)| v * scale[k / per])
                .collect();
            let b = match conv.input.get(2).filter(|s| !s.is_empty()) {
                Some(name) => get(&inits, name)?,
                None => vec![0.0; c],
            };
            let b2: Vec<f32> = (0..c)
                .map(|k| (b[k] - mean[k]) * scale[k] + beta[k])
                .collect();
            let dims: Vec<usize> = w_t.dims.iter().map(|&d| d as usize).collect();
            let (wn, bname) = (
                names.unique(&format!("{}.weight.bn_folded", base(&conv))),
                names.unique(&format!("{}.bias.bn_folded", base(&conv))),
            );
            inits.insert(wn.clone(), f32_tensor(&wn, &dims, &w2));
            inits.insert(bname.clone(), f32_tensor(&bname, &[c], &b2));
            let node = &mut nodes[p];
            node.input.truncate(1);
            node.input.push(wn);
            node.input.push(bname);
            node.output[0] = bn.output[0].clone();
            report.folded.push((bn.name.clone(), conv.name.clone()));
            nodes.remove(i);
        } else {
            let b = base(&bn);
            let (sn, tn) = (
                names.unique(&format!("{b}.scale")),
                names.unique(&format!("{b}.shift")),
            );
            inits.insert(sn.clone(), f32_tensor(&sn, &[1, c, 1, 1], &scale));
            inits.insert(tn.clone(), f32_tensor(&tn, &[1, c, 1, 1], &shift));
            let mul_out = names.unique(&format!("{b}.mul"));
            let mul = pb::NodeProto {
                op_type: "Mul".into(),
                name: mul_out.clone(),
                input: vec![x.clone(), sn],
                output: vec![mul_out.clone()],
                ..Default::default()
            };
            let add = pb::NodeProto {
                op_type: "Add".into(),
                name: names.unique(&format!("{b}.add")),
                input: vec![mul_out, tn],
                output: vec![bn.output[0].clone()],
                ..Default::default()
            };
            nodes.splice(i..=i, [mul, add]);
            report.to_affine.push(bn.name.clone());
            i += 2;
        }
    }
    let used: HashSet<&String> = nodes.iter().flat_map(|n| n.input.iter()).collect();
    let mut kept: Vec<pb::TensorProto> = inits
        .into_values()
        .filter(|t| used.contains(&t.name))
        .collect();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    graph.node = nodes;
    graph.initializer = kept;
    Ok(report)
}
