//! Convolution fusion, an ONNX -> ONNX rewrite for skipseg's own kernels
//! ([`crate::kernels::conv`]), run after batch-norm folding.
//!
//! Each supported `Conv` (2-D, group 1, 1x1 or 3x3, stride 1, dilation 1, "same"
//! padding, constant weights) becomes one [`FUSED_CONV`] node of the `ai.skipseg` domain
//! that also takes over
//! - the pre-activation in front of it: `Relu`, optionally after the per-channel
//!   `Mul`/`Add` that [`super::fold_bn`] leaves for a batch norm it could not fold;
//! - the residual sum after it: an `Add` that is the conv's only reader, whose other
//!   operand becomes the node's second input; when that operand is a nearest-neighbour
//!   x2 `Resize` read by nothing else (a decoder level's up-sampling), its input is taken
//!   instead and repeated as it is added (attribute `residual_upsample` = 2), so the
//!   up-sampled map is never written.
//!
//! The replaced nodes are removed once nothing reads them. The result is an in-memory
//! graph for skipseg's engine: onnxruntime does not know the `ai.skipseg` domain (write
//! models with `segment-run optimize`, which only folds batch norms).
//!
//! Attributes of a fused node: `kernel`, `weight` and `bias` (tensors), `pre_scale`,
//! `pre_shift` (tensors, optional), `pre_relu` (int), `residual_upsample` (int,
//! optional).

use std::collections::HashSet;

use crate::error::{Error, Result};
#[cfg(target_arch = "aarch64")]
use crate::kernels::qconv::MIN_MACS_FOR_INTEGER;
use crate::onnx::{self, pb, tensor_f32};

/// The operator type of a fused convolution.
pub const FUSED_CONV: &str = "SkipsegConv";
/// The operator type of a fused quantized convolution (QDQ: u8 input, int8 weights).
pub const FUSED_QCONV: &str = "SkipsegQConv";
/// The domain of skipseg's operators.
pub const DOMAIN: &str = "ai.skipseg";

/// What the pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuseReport {
    /// Convolutions replaced by fused nodes.
    pub convs: usize,
    /// Of those, quantized ones ([`FUSED_QCONV`]).
    pub quantized: usize,
    /// Of those, with a pre-activation taken over (ReLU, with or without scale/shift).
    pub with_pre_activation: usize,
    /// Of those, with a residual sum taken over.
    pub with_residual: usize,
    /// Of those, with the up-sampling of the residual taken over too.
    pub with_upsampled_residual: usize,
    /// Convolutions left to tract, with the reason.
    pub left: Vec<(String, String)>,
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// Why a `Conv` cannot be fused (None: it can), given its weight dims.
fn unsupported(node: &pb::NodeProto, dims: &[i64]) -> Option<String> {
    if dims.len() != 4 || dims[2] != dims[3] || !(dims[2] == 1 || dims[2] == 3) {
        return Some(format!("weight shape {dims:?} (1x1 or 3x3 2-D only)"));
    }
    let k = dims[2];
    let ones = |name: &str| attr(node, name).is_none_or(|a| a.ints.iter().all(|&v| v == 1));
    if attr(node, "group").is_some_and(|a| a.i != 1) {
        return Some("grouped".into());
    }
    if !ones("strides") || !ones("dilations") {
        return Some("strided or dilated".into());
    }
    let pad = k / 2;
    let pads_ok = attr(node, "pads").is_none_or(|a| a.ints.iter().all(|&p| p == pad))
        && attr(node, "auto_pad").is_none_or(|a| {
            let s = String::from_utf8_lossy(&a.s);
            s.is_empty() || s == "NOTSET" || (k == 1 && s == "VALID")
        });
    let pads_given = attr(node, "pads").is_some_and(|a| a.ints.len() == 4);
    if !pads_ok || (pad > 0 && !pads_given) {
        return Some("padding other than 'same'".into());
    }
    None
}

enum Weights {
    Float(Vec<f32>),
    Int8 { q: Vec<i8>, scales: Vec<f32> },
}

/// The int8 weights and per-output-channel scales of `DequantizeLinear(weight, scale,
/// zero point 0, axis 0)` (a scalar scale is repeated).
fn int8_weights(
    dq: &pb::NodeProto,
    weight: &pb::TensorProto,
    cout: usize,
    inits: &onnx::Initializers<'_>,
) -> Option<(Vec<i8>, Vec<f32>)> {
    let q = onnx::tensor_i8(weight)?;
    let scales = tensor_f32(inits.get(dq.input.get(1)?.as_str())?)?;
    let scales = match scales.len() {
        1 => vec![scales[0]; cout],
        n if n == cout => scales,
        _ => return None,
    };
    if scales.len() > 1 && attr(dq, "axis").is_some_and(|a| a.i != 0) {
        return None;
    }
    if let Some(zp) = dq.input.get(2).filter(|z| !z.is_empty()) {
        let zp = onnx::tensor_i8(inits.get(zp.as_str())?)?;
        if zp.iter().any(|&z| z != 0) {
            return None;
        }
    }
    Some((q, scales))
}

/// `value = DequantizeLinear(QuantizeLinear(t, s, z), s, z)` with one scale and one `u8`
/// zero point, both constants: `(t, s, z)`.
fn input_quantization(
    nodes: &[Option<pb::NodeProto>],
    value: &str,
    inits: &onnx::Initializers<'_>,
    producer: impl Fn(&[Option<pb::NodeProto>], &str) -> Option<usize>,
) -> Option<(String, f32, u8)> {
    let dq = nodes[producer(nodes, value)?]
        .as_ref()
        .filter(|n| n.op_type == "DequantizeLinear")?;
    let q = nodes[producer(nodes, dq.input.first()?)?]
        .as_ref()
        .filter(|n| n.op_type == "QuantizeLinear")?;
    let params = |n: &pb::NodeProto| -> Option<(f32, u8)> {
        let s = tensor_f32(inits.get(n.input.get(1)?.as_str())?)?;
        let z = onnx::tensor_u8(inits.get(n.input.get(2)?.as_str())?)?;
        match (s.as_slice(), z.as_slice()) {
            ([s], [z]) if s.is_finite() && *s > 0.0 => Some((*s, *z)),
            _ => None,
        }
    };
    let (a, b) = (params(q)?, params(dq)?);
    (a == b).then(|| (q.input[0].clone(), a.0, a.1))
}

/// Whether `node` repeats rows and columns twice: `Resize`, nearest, asymmetric, floor,
/// constant scales `[1, 1, 2, 2]` (what the exporter writes).
pub(crate) fn is_upsample_x2(node: &pb::NodeProto, inits: &onnx::Initializers<'_>) -> bool {
    let s = |name: &str| attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned());
    node.op_type == "Resize"
        && s("mode").as_deref() == Some("nearest")
        && s("coordinate_transformation_mode").as_deref() == Some("asymmetric")
        && s("nearest_mode").as_deref().is_none_or(|m| m == "floor")
        && node.input.len() == 3
        && node.input[1].is_empty()
        && inits
            .get(node.input[2].as_str())
            .is_some_and(|t| tensor_f32(t).is_some_and(|v| v == [1.0, 1.0, 2.0, 2.0]))
}

/// Fuse every supported convolution of `model` (see the module docs).
pub fn fuse_convolutions(model: &mut pb::ModelProto, source_name: &str) -> Result<FuseReport> {
    fuse(model, source_name, Fusion::Every)
}

/// [`fuse_convolutions`] for the convolutions where skipseg's kernel beats tract's on this
/// CPU ([`skipseg_beats_tract`]); the others are left to tract, with that reason. What a
/// [`crate::Segmenter`] runs.
pub fn fuse_convolutions_where_faster(
    model: &mut pb::ModelProto,
    source_name: &str,
) -> Result<FuseReport> {
    fuse(model, source_name, Fusion::WhereFaster)
}

/// Whether skipseg's fused kernel runs a `cin -> cout`, `k x k` convolution (after a ReLU;
/// `int8`: QDQ-quantized) in fewer instructions than tract's on this CPU. The evidence is
/// bench/arm_shapes.sh (instructions per run of each layer shape of the shipped model under
/// qemu, Cortex-A76, A72 and A53 models; bench/results/arm-shapes-2026-11-28*.md, summary
/// in docs/EDGE.md):
/// - x86-64 and others: always (wall time, docs/PERFORMANCE.md).
/// - aarch64, int8 on the SDOT kernel (dot-product CPUs, at least
///   [`crate::kernels::qconv::MIN_MACS_FOR_INTEGER`] multiply-accumulates per pixel):
///   always (0.25-0.90 of tract's int8 on Cortex-A76 for all but two 16x16 3x3 layers).
/// - aarch64, f32: only convolutions to fewer than 8 output channels, the classifier
///   (0.36), where tract's matrix kernels, at least 8 rows tall, waste rows; tract's
///   packed products win everywhere else (1.04-1.72 on Cortex-A76).
/// - aarch64, int8 on the f32 emulation (no SDOT: Cortex-A53, A72; or too few
///   multiply-accumulates for the integer kernel): as f32, and 1x1 convolutions that
///   shrink the channels four times or more or have fewer multiply-accumulates than the
///   integer kernel needs, where tract's int8 path costs most (0.64-1.02).
/// - armv7: only the 1-channel classifier in f32 (0.70; skipseg's kernels cost 1.3-2.8x
///   tract's instructions elsewhere there: pulp has no armv7 SIMD path).
pub fn skipseg_beats_tract(cin: usize, cout: usize, k: usize, int8: bool) -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        use crate::kernels::qconv::QuantKernel;
        let integer = int8
            && cin * cout * k * k >= MIN_MACS_FOR_INTEGER
            && QuantKernel::detect() == QuantKernel::NeonDot;
        // int8 1x1 on the f32 emulation: those that shrink the channels four times or
        // more, and those too small for the integer kernel (8 -> 8: 0.73-0.78)
        let emulated_one_by_one =
            int8 && k == 1 && (cout * 4 <= cin || cin * cout * k * k < MIN_MACS_FOR_INTEGER);
        integer || cout < 8 || emulated_one_by_one
    }
    #[cfg(target_arch = "arm")]
    {
        let _ = (cin, k);
        !int8 && cout == 1
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
    {
        let _ = (cin, cout, k, int8);
        true
    }
}

/// Which supported convolutions the pass takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fusion {
    /// All of them (the embedded format has no other engine).
    Every,
    /// Where skipseg's kernel beats tract's on this CPU.
    WhereFaster,
}

fn fuse(model: &mut pb::ModelProto, source_name: &str, fusion: Fusion) -> Result<FuseReport> {
    let err = |reason: String| Error::BadModel {
        source_name: source_name.to_string(),
        reason,
    };
    let graph = model.graph.as_mut().ok_or_else(|| err("no graph".into()))?;
    // the pass indexes node inputs and outputs: their counts must be what the operators take
    crate::onnx::check_arity(graph, source_name)?;
    let mut report = FuseReport::default();
    let graph_outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut names = onnx::Names::of(graph);
    let mut nodes: Vec<Option<pb::NodeProto>> = graph.node.drain(..).map(Some).collect();
    let inits = onnx::initializers(graph);
    let producer = |nodes: &[Option<pb::NodeProto>], value: &str| {
        nodes.iter().position(|n| {
            n.as_ref()
                .is_some_and(|n| n.output.iter().any(|o| o == value))
        })
    };
    let readers = |nodes: &[Option<pb::NodeProto>], value: &str| -> Vec<usize> {
        nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.as_ref()
                    .is_some_and(|n| n.input.iter().any(|i| i == value))
            })
            .map(|(i, _)| i)
            .collect()
    };
    // a per-channel constant `[1, C, 1, 1]` (or `[C, 1, 1]`) of C floats
    let channel_const = |name: &str, c: usize| -> Option<Vec<f32>> {
        let t = inits.get(name)?;
        let dims: Vec<i64> = t.dims.clone();
        let ok = matches!(dims.as_slice(), [1, c2, 1, 1] | [c2, 1, 1] if *c2 as usize == c);
        if !ok {
            return None;
        }
        tensor_f32(t).filter(|v| v.len() == c)
    };

    let mut i = 0;
    while i < nodes.len() {
        let Some(conv) = nodes[i].clone() else {
            i += 1;
            continue;
        };
        if conv.op_type != "Conv" || !conv.domain.is_empty() && conv.domain != "ai.onnx" {
            i += 1;
            continue;
        }
        let name_or_output = if conv.name.is_empty() {
            conv.output.first().cloned().unwrap_or_default()
        } else {
            conv.name.clone()
        };
        // float weights, or int8 ones behind a DequantizeLinear (per output channel)
        let weight_dq = conv
            .input
            .get(1)
            .and_then(|w| producer(&nodes, w))
            .and_then(|p| nodes[p].as_ref())
            .filter(|n| n.op_type == "DequantizeLinear");
        let weight = match weight_dq {
            Some(dq) => dq.input.first().and_then(|w| inits.get(w.as_str())),
            None => conv.input.get(1).and_then(|w| inits.get(w.as_str())),
        };
        let Some(weight) = weight else {
            report
                .left
                .push((name_or_output, "weights are not a constant".into()));
            i += 1;
            continue;
        };
        if let Some(why) = unsupported(&conv, &weight.dims) {
            report.left.push((name_or_output, why));
            i += 1;
            continue;
        }
        let (cout, cin, k) = (
            weight.dims[0] as usize,
            weight.dims[1] as usize,
            weight.dims[2],
        );
        let count = cout * cin * (k * k) as usize;
        let weights = match weight_dq {
            None => tensor_f32(weight)
                .filter(|w| w.len() == count)
                .map(Weights::Float),
            Some(dq) => int8_weights(dq, weight, cout, &inits)
                .filter(|(q, _)| q.len() == count)
                .map(|(q, scales)| Weights::Int8 { q, scales }),
        };
        let Some(weights) = weights else {
            report.left.push((
                name_or_output,
                "weights are neither float nor int8 with one scale per output channel and zero \
                 point 0"
                    .into(),
            ));
            i += 1;
            continue;
        };
        let int8 = matches!(weights, Weights::Int8 { .. });
        if fusion == Fusion::WhereFaster && !skipseg_beats_tract(cin, cout, k as usize, int8) {
            report.left.push((
                name_or_output,
                format!(
                    "tract's kernel is faster for a {} {cin} -> {cout} {k}x{k} convolution on \
                     this CPU",
                    if int8 { "int8" } else { "f32" }
                ),
            ));
            i += 1;
            continue;
        }
        let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match inits.get(b.as_str()).copied().and_then(tensor_f32) {
                Some(v) if v.len() == cout => v,
                _ => {
                    report
                        .left
                        .push((name_or_output, "bias is not a constant".into()));
                    i += 1;
                    continue;
                }
            },
            None => vec![0.0; cout],
        };
        let Some(output) = conv.output.first().cloned() else {
            i += 1;
            continue;
        };

        // backwards: DequantizeLinear <- QuantizeLinear (int8 weights only) ...
        let mut x = conv.input[0].clone();
        let mut input_quant = None;
        if matches!(weights, Weights::Int8 { .. }) {
            match input_quantization(&nodes, &x, &inits, producer) {
                Some((t, scale, zero)) => {
                    x = t;
                    input_quant = Some((scale, zero));
                }
                None => {
                    report.left.push((
                        name_or_output,
                        "int8 weights but no u8 QuantizeLinear/DequantizeLinear pair (one scale, \
                         one zero point) on the input"
                            .into(),
                    ));
                    i += 1;
                    continue;
                }
            }
        }
        // ... Relu <- Add(shift) <- Mul(scale)
        let (mut pre_relu, mut pre_scale, mut pre_shift) = (false, None, None);
        if let Some(p) = producer(&nodes, &x)
            && let Some(relu) = nodes[p].as_ref().filter(|n| n.op_type == "Relu")
        {
            pre_relu = true;
            x = relu.input[0].clone();
            if let Some(p) = producer(&nodes, &x)
                && let Some(add) = nodes[p].as_ref().filter(|n| n.op_type == "Add")
                && let Some(shift) = add.input.get(1).and_then(|s| channel_const(s, cin))
                && let Some(q) = producer(&nodes, &add.input[0])
                && let Some(mul) = nodes[q].as_ref().filter(|n| n.op_type == "Mul")
                && let Some(scale) = mul.input.get(1).and_then(|s| channel_const(s, cin))
            {
                x = mul.input[0].clone();
                pre_scale = Some(scale);
                pre_shift = Some(shift);
            }
        }

        // forwards: the only reader is an Add of another (non-constant) tensor
        let mut residual = None;
        let mut upsampled = false;
        let mut last = i;
        let mut fused_output = output.clone();
        let conv_readers = readers(&nodes, &output);
        if conv_readers.len() == 1 && !graph_outputs.contains(&output) {
            let a = conv_readers[0];
            if let Some(add) = nodes[a].as_ref().filter(|n| {
                n.op_type == "Add"
                    && n.input.len() == 2
                    && n.input[0] != n.input[1]
                    && n.output.len() == 1
            }) {
                let other = if add.input[0] == output {
                    &add.input[1]
                } else {
                    &add.input[0]
                };
                if !inits.contains_key(other.as_str()) && a > i {
                    residual = Some(other.clone());
                    fused_output = add.output[0].clone();
                    last = a;
                    // the residual's up-sampling, when nothing else reads it
                    if let Some(p) = producer(&nodes, other)
                        && let Some(up) = nodes[p].as_ref()
                        && is_upsample_x2(up, &inits)
                        && readers(&nodes, other).len() == 1
                        && !graph_outputs.contains(other)
                    {
                        residual = Some(up.input[0].clone());
                        upsampled = true;
                    }
                }
            }
        }

        let name = names.unique(&format!("{name_or_output}.fused"));
        let kdims = [cout, cin, k as usize, k as usize];
        let mut attributes = vec![
            onnx::int("kernel", k),
            onnx::tensor_attr("bias", onnx::f32_tensor("bias", &[cout], &bias)),
            onnx::int("pre_relu", pre_relu as i64),
        ];
        let op_type = match (&weights, input_quant) {
            (Weights::Float(w), _) => {
                attributes.push(onnx::tensor_attr(
                    "weight",
                    onnx::f32_tensor("weight", &kdims, w),
                ));
                FUSED_CONV
            }
            (Weights::Int8 { q, scales }, Some((scale, zero))) => {
                attributes.push(onnx::tensor_attr(
                    "weight",
                    onnx::i8_tensor("weight", &kdims, q),
                ));
                attributes.push(onnx::tensor_attr(
                    "weight_scale",
                    onnx::f32_tensor("weight_scale", &[cout], scales),
                ));
                attributes.push(onnx::float("x_scale", scale));
                attributes.push(onnx::int("x_zero_point", zero as i64));
                FUSED_QCONV
            }
            (Weights::Int8 { .. }, None) => {
                unreachable!("int8 weights without input quantization were left above")
            }
        };
        if upsampled {
            attributes.push(onnx::int("residual_upsample", 2));
        }
        if let Some(s) = &pre_scale {
            attributes.push(onnx::tensor_attr(
                "pre_scale",
                onnx::f32_tensor("pre_scale", &[cin], s),
            ));
        }
        if let Some(s) = &pre_shift {
            attributes.push(onnx::tensor_attr(
                "pre_shift",
                onnx::f32_tensor("pre_shift", &[cin], s),
            ));
        }
        let mut inputs = vec![x];
        inputs.extend(residual.iter().cloned());
        let fused = pb::NodeProto {
            op_type: op_type.into(),
            domain: DOMAIN.into(),
            name,
            input: inputs,
            output: vec![fused_output],
            attribute: attributes,
            ..Default::default()
        };
        report.convs += 1;
        report.quantized += input_quant.is_some() as usize;
        report.with_pre_activation += pre_relu as usize;
        report.with_residual += residual.is_some() as usize;
        report.with_upsampled_residual += upsampled as usize;
        nodes[i] = None;
        if last != i {
            nodes[last] = Some(fused);
        } else {
            nodes[i] = Some(fused);
        }
        i += 1;
    }

    // drop what nothing reads any more (the pre-activations taken over)
    loop {
        let read: HashSet<&String> = nodes
            .iter()
            .flatten()
            .flat_map(|n| n.input.iter())
            .collect();
        let dead: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.as_ref().is_some_and(|n| {
                    n.output
                        .iter()
                        .all(|o| !read.contains(o) && !graph_outputs.contains(o))
                })
            })
            .map(|(i, _)| i)
            .collect();
        if dead.is_empty() {
            break;
        }
        for d in dead {
            nodes[d] = None;
        }
    }
    graph.node = nodes.into_iter().flatten().collect();
    let read: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph.initializer.retain(|t| read.contains(&t.name));
    if report.convs > 0 && !model.opset_import.iter().any(|o| o.domain == DOMAIN) {
        model.opset_import.push(pb::OperatorSetIdProto {
            domain: DOMAIN.into(),
            version: 1,
        });
    }
    Ok(report)
}
