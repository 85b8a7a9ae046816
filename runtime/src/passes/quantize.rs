//! Static post-training quantization of the convolutions, an ONNX -> ONNX rewrite to
//! the standard QDQ form (any ONNX runtime reads it):
//!
//! - weights: `int8`, symmetric, one scale per output channel (`max |w| / 127`), behind
//!   a `DequantizeLinear` (axis 0, zero point 0);
//! - the input of every convolution: `uint8`, one scale and zero point per tensor from
//!   a calibrated range (which always includes 0, so that 0 is exact), through a
//!   `QuantizeLinear` / `DequantizeLinear` pair;
//! - biases, and everything between convolutions (sums, up/down-sampling, the
//!   sigmoid), stay float.
//!
//! Run it on a model whose batch norms are folded ([`super::fold_bn`]). The ranges come
//! from [`crate::calibrate`]. skipseg's engine runs the result with integer kernels
//! ([`super::fuse_conv`] turns each QDQ conv into one `SkipsegQConv`).

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::onnx::{self, pb, tensor_f32};

/// The calibrated range of a tensor's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationRange {
    pub min: f32,
    pub max: f32,
}

impl ActivationRange {
    /// `u8` scale and zero point covering `[min(min, 0), max(max, 0)]` (ONNX
    /// `QuantizeLinear` semantics: `q = clamp(round(x / scale) + zero, 0, 255)`).
    pub fn u8_params(self) -> (f32, u8) {
        let lo = self.min.min(0.0);
        let hi = self.max.max(0.0);
        let span = hi - lo;
        if !(span.is_finite() && span > 0.0) {
            return (1.0, 0);
        }
        let scale = span / 255.0;
        let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        (scale, zero)
    }
}

/// Symmetric `int8` per output channel: `(codes, scales)` with `w ≈ code * scale`.
pub fn quantize_weights(w: &[f32], cout: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / cout.max(1);
    let mut codes = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(cout);
    for ch in w.chunks(per.max(1)) {
        let m = ch.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = if m > 0.0 && m.is_finite() {
            m / 127.0
        } else {
            1.0
        };
        scales.push(s);
        codes.extend(
            ch.iter()
                .map(|v| (v / s).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
    }
    (codes, scales)
}

/// What the pass changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizeReport {
    /// Convolutions quantized.
    pub convs: usize,
    /// Tensors quantized (convolution inputs; several convs may share one).
    pub tensors: usize,
    /// Convolutions left in float, with the reason.
    pub left: Vec<(String, String)>,
}

/// The convolutions the pass can quantize: 2-D `Conv` with float constant weights. Their
/// inputs are the tensors calibration must measure.
fn quantizable(node: &pb::NodeProto, inits: &onnx::Initializers<'_>) -> bool {
    node.op_type == "Conv"
        && node.input.len() >= 2
        && inits
            .get(node.input[1].as_str())
            .is_some_and(|w| w.dims.len() == 4 && tensor_f32(w).is_some())
}

/// The input tensors of every quantizable convolution, in graph order, each once.
pub fn conv_inputs(model: &pb::ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let inits = onnx::initializers(graph);
    let mut seen = HashSet::new();
    graph
        .node
        .iter()
        .filter(|n| quantizable(n, &inits))
        .map(|n| n.input[0].clone())
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// Quantize every convolution whose input has a range in `ranges` (see the module docs).
pub fn quantize_convs(
    model: &mut pb::ModelProto,
    ranges: &HashMap<String, ActivationRange>,
    source_name: &str,
) -> Result<QuantizeReport> {
    let err = |reason: String| Error::BadModel {
        source_name: source_name.to_string(),
        reason,
    };
    if model
        .opset_import
        .iter()
        .any(|o| (o.domain.is_empty() || o.domain == "ai.onnx") && o.version < 13)
    {
        return Err(err(
            "per-channel QuantizeLinear/DequantizeLinear need opset 13 or later".into(),
        ));
    }
    let graph = model.graph.as_mut().ok_or_else(|| err("no graph".into()))?;
    // the pass indexes node inputs and outputs: their counts must be what the operators take
    crate::onnx::check_arity(graph, source_name)?;
    let mut report = QuantizeReport::default();
    let mut names = onnx::Names::of(graph);
    let mut unique = |base: String| names.unique(&base);
    let mut new_inits: Vec<pb::TensorProto> = Vec::new();
    let mut dequantized: HashMap<String, String> = HashMap::new();
    let old_nodes = std::mem::take(&mut graph.node);
    let mut nodes = Vec::with_capacity(old_nodes.len() * 2);
    let inits = onnx::initializers(graph);
    for node in old_nodes {
        if !quantizable(&node, &inits) {
            nodes.push(node);
            continue;
        }
        let label = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        let x = node.input[0].clone();
        let Some(range) = ranges.get(&x) else {
            report
                .left
                .push((label, format!("no calibrated range for `{x}`")));
            nodes.push(node);
            continue;
        };
        let weight = inits[node.input[1].as_str()];
        let w = tensor_f32(weight).ok_or_else(|| err(format!("`{label}`: weights")))?;
        let dims: Vec<usize> = weight.dims.iter().map(|&d| d as usize).collect();
        let cout = dims[0];
        if cout == 0 || w.len() != dims.iter().product::<usize>() {
            return Err(err(format!("`{label}`: weight shape {dims:?}")));
        }
        // the input's QuantizeLinear / DequantizeLinear pair, once per tensor
        let x_dq = match dequantized.get(&x) {
            Some(dq) => dq.clone(),
            None => {
                let (scale, zero) = range.u8_params();
                let (s, z) = (
                    unique(format!("{x}.scale")),
                    unique(format!("{x}.zero_point")),
                );
                new_inits.push(onnx::f32_tensor(&s, &[], &[scale]));
                new_inits.push(onnx::u8_tensor(&z, &[], &[zero]));
                let (q, dq) = (
                    unique(format!("{x}.quantized")),
                    unique(format!("{x}.dequantized")),
                );
                nodes.push(pb::NodeProto {
                    op_type: "QuantizeLinear".into(),
                    name: q.clone(),
                    input: vec![x.clone(), s.clone(), z.clone()],
                    output: vec![q.clone()],
                    ..Default::default()
                });
                nodes.push(pb::NodeProto {
                    op_type: "DequantizeLinear".into(),
                    name: dq.clone(),
                    input: vec![q, s, z],
                    output: vec![dq.clone()],
                    ..Default::default()
                });
                dequantized.insert(x.clone(), dq.clone());
                report.tensors += 1;
                dq
            }
        };
        // the weights: int8 codes, per-channel scales, a DequantizeLinear
        let (codes, scales) = quantize_weights(&w, cout);
        let wname = &node.input[1];
        let (wq, ws, wz, wdq) = (
            unique(format!("{wname}.int8")),
            unique(format!("{wname}.scale")),
            unique(format!("{wname}.zero_point")),
            unique(format!("{wname}.dequantized")),
        );
        new_inits.push(onnx::i8_tensor(&wq, &dims, &codes));
        new_inits.push(onnx::f32_tensor(&ws, &[cout], &scales));
        new_inits.push(onnx::i8_tensor(&wz, &[cout], &vec![0; cout]));
        nodes.push(pb::NodeProto {
            op_type: "DequantizeLinear".into(),
            name: wdq.clone(),
            input: vec![wq, ws, wz],
            output: vec![wdq.clone()],
            attribute: vec![onnx::int("axis", 0)],
            ..Default::default()
        });
        let mut conv = node;
        conv.input[0] = x_dq;
        conv.input[1] = wdq;
        nodes.push(conv);
        report.convs += 1;
    }
    graph.node = nodes;
    graph.initializer.extend(new_inits);
    let read: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph.initializer.retain(|t| read.contains(&t.name));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_params_by_hand() {
        // [0, 2.55]: scale 0.01, zero 0; [-1, 1.55]: scale 0.01, zero 1 / 0.01 = 100
        let (s, z) = ActivationRange {
            min: 0.0,
            max: 2.55,
        }
        .u8_params();
        assert!((s - 0.01).abs() < 1e-9 && z == 0);
        let (s, z) = ActivationRange {
            min: -1.0,
            max: 1.55,
        }
        .u8_params();
        assert!((s - 0.01).abs() < 1e-8 && z == 100, "{s} {z}");
        // a positive-only range still includes 0 (exact zero padding)
        let (s, z) = ActivationRange { min: 1.0, max: 3.0 }.u8_params();
        assert!((s - 3.0 / 255.0).abs() < 1e-9 && z == 0);
        // degenerate ranges do not divide by zero
        assert_eq!(ActivationRange { min: 0.0, max: 0.0 }.u8_params(), (1.0, 0));
    }

    #[test]
    fn weights_by_hand() {
        // channel 0: max 2.54 -> scale 0.02, codes 127, -50; channel 1: all zero ->
        // scale 1, codes 0
        let (q, s) = quantize_weights(&[2.54, -1.0, 0.0, 0.0], 2);
        assert_eq!(q, vec![127, -50, 0, 0]);
        assert!((s[0] - 0.02).abs() < 1e-8 && s[1] == 1.0);
    }
}
