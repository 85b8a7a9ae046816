//! int8 chaining, an ONNX -> ONNX rewrite run after [`super::fuse_conv`]: the
//! activations between two quantized convolutions stay 8-bit.
//!
//! Where the output of a fused quantized convolution (`SkipsegQConv`) is read by exactly
//! one node, another `SkipsegQConv` that takes it as its input (not as its residual), and
//! by no graph output, the producer writes the consumer's `u8` codes: the consumer's
//! pre-activation and input quantization move to the producer's epilogue
//! (`output_pre_scale`, `output_pre_shift`, `output_pre_relu`, `output_x_scale`,
//! `output_x_zero_point`, and [`OUTPUT_CODES`] = 1), and the consumer reads codes
//! ([`INPUT_CODES`] = 1; it keeps `x_scale` and `x_zero_point`, which its integer sums
//! need). In skipseg's networks these are the inner convolutions of bottleneck blocks
//! and the head's output, which the 8 -> 1 (32 -> 1) classifier reads: a consumer that
//! reads codes runs on the integer kernel whatever its size where the CPU has one
//! ([`crate::kernels::qconv::QuantConv::kernel_choice`]: with codes in, its sums cost
//! little; before, the classifier read 32 float channels at 512^2 and quantized them,
//! 6.4 ms of Table 1's int8 226 ms, onnxruntime's 3.1 ms), and dequantizes them
//! otherwise. The residual stream, which a sum and two readers need in float, stays
//! float.
//!
//! The arithmetic is unchanged: the producer applies, in the same order, the same float
//! operations the consumer applied to the float it read (see [`crate::kernels::qconv`]).

use std::collections::{HashMap, HashSet};

use super::fuse_conv::{DOMAIN, FUSED_QCONV};
use crate::onnx::{self, pb};

/// Attribute of a `SkipsegQConv` that reads the `u8` codes its producer wrote.
pub const INPUT_CODES: &str = "input_codes";
/// Attribute of a `SkipsegQConv` that writes the `u8` codes of the convolution after it.
pub const OUTPUT_CODES: &str = "output_codes";

/// The consumer's attributes that move to the producer, under `output_` + the name.
const MOVED: [&str; 3] = ["pre_scale", "pre_shift", "pre_relu"];
/// The consumer's attributes that the producer copies, under `output_` + the name.
const COPIED: [&str; 2] = ["x_scale", "x_zero_point"];

/// What the pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Producer -> consumer pairs that now pass `u8` codes.
    pub chained: usize,
}

fn is_qconv(node: &pb::NodeProto) -> bool {
    node.op_type == FUSED_QCONV && node.domain == DOMAIN
}

fn has_flag(node: &pb::NodeProto, name: &str) -> bool {
    node.attribute.iter().any(|a| a.name == name && a.i != 0)
}

/// Chain every eligible pair of quantized convolutions of `model` (see the module docs).
pub fn chain_quantized_convs(model: &mut pb::ModelProto) -> ChainReport {
    let mut report = ChainReport::default();
    let Some(graph) = model.graph.as_mut() else {
        return report;
    };
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    // value -> (reading node, input slot), one entry per read
    let mut reads: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (j, node) in graph.node.iter().enumerate() {
        for (slot, input) in node.input.iter().enumerate() {
            reads.entry(input.as_str()).or_default().push((j, slot));
        }
    }
    let mut pairs = Vec::new();
    for (i, producer) in graph.node.iter().enumerate() {
        if !is_qconv(producer) || producer.output.len() != 1 || has_flag(producer, OUTPUT_CODES) {
            continue;
        }
        let value = producer.output[0].as_str();
        if graph_outputs.contains(value) {
            continue;
        }
        if let Some(&[(j, 0)]) = reads.get(value).map(Vec::as_slice)
            && j != i
            && is_qconv(&graph.node[j])
            && !has_flag(&graph.node[j], INPUT_CODES)
            && COPIED
                .iter()
                .all(|name| graph.node[j].attribute.iter().any(|a| a.name == *name))
        {
            pairs.push((i, j));
        }
    }
    for (i, j) in pairs {
        let consumer = &mut graph.node[j];
        let mut moved: Vec<pb::AttributeProto> = Vec::new();
        let (taken, kept): (Vec<_>, Vec<_>) = consumer
            .attribute
            .drain(..)
            .partition(|a| MOVED.contains(&a.name.as_str()));
        consumer.attribute = kept;
        moved.extend(taken);
        moved.extend(
            consumer
                .attribute
                .iter()
                .filter(|a| COPIED.contains(&a.name.as_str()))
                .cloned(),
        );
        consumer.attribute.push(onnx::int(INPUT_CODES, 1));
        let producer = &mut graph.node[i];
        for mut a in moved {
            a.name = format!("output_{}", a.name);
            producer.attribute.push(a);
        }
        producer.attribute.push(onnx::int(OUTPUT_CODES, 1));
        report.chained += 1;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qconv(name: &str, inputs: &[&str], output: &str, pre_relu: bool) -> pb::NodeProto {
        pb::NodeProto {
            op_type: FUSED_QCONV.into(),
            domain: DOMAIN.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: vec![
                onnx::tensor_attr(
                    "weight",
                    onnx::i8_tensor("weight", &[8, 8, 3, 3], &[0; 576]),
                ),
                onnx::int("pre_relu", pre_relu as i64),
                onnx::float("x_scale", 0.5),
                onnx::int("x_zero_point", 3),
            ],
            ..Default::default()
        }
    }

    fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
        node.attribute.iter().find(|a| a.name == name)
    }

    fn model(nodes: Vec<pb::NodeProto>, outputs: &[&str]) -> pb::ModelProto {
        pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: nodes,
                output: outputs
                    .iter()
                    .map(|o| pb::ValueInfoProto {
                        name: o.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A bottleneck: `s` (the stream, two readers) -> a -> b -> c (+ s as residual) ->
    /// the graph output. a->b and b->c chain; the stream and the graph output do not.
    #[test]
    fn chains_single_reader_inputs_only() {
        let mut m = model(
            vec![
                qconv("a", &["s"], "ya", true),
                qconv("b", &["ya"], "yb", true),
                qconv("c", &["yb", "s"], "yc", false),
                qconv("d", &["s"], "yd", true),
            ],
            &["yc", "yd"],
        );
        let report = chain_quantized_convs(&mut m);
        assert_eq!(report.chained, 2);
        let g = m.graph.as_ref().expect("graph");
        let [a, b, c, d] = [&g.node[0], &g.node[1], &g.node[2], &g.node[3]];
        // a reads the stream in float, writes b's codes with b's pre-activation
        assert!(attr(a, INPUT_CODES).is_none());
        assert_eq!(attr(a, OUTPUT_CODES).map(|x| x.i), Some(1));
        assert_eq!(attr(a, "output_pre_relu").map(|x| x.i), Some(1));
        assert_eq!(attr(a, "output_x_scale").map(|x| x.f), Some(0.5));
        assert_eq!(attr(a, "output_x_zero_point").map(|x| x.i), Some(3));
        assert_eq!(attr(a, "pre_relu").map(|x| x.i), Some(1), "a keeps its own");
        // b reads codes (its pre-activation moved to a), writes c's
        assert_eq!(attr(b, INPUT_CODES).map(|x| x.i), Some(1));
        assert!(attr(b, "pre_relu").is_none());
        assert_eq!(
            attr(b, "x_scale").map(|x| x.f),
            Some(0.5),
            "b keeps its scale"
        );
        assert_eq!(attr(b, OUTPUT_CODES).map(|x| x.i), Some(1));
        assert_eq!(attr(b, "output_pre_relu").map(|x| x.i), Some(0));
        // c: codes in, float out (a graph output); d: the stream's second reader
        assert_eq!(attr(c, INPUT_CODES).map(|x| x.i), Some(1));
        assert!(attr(c, OUTPUT_CODES).is_none());
        assert!(attr(d, INPUT_CODES).is_none() && attr(d, OUTPUT_CODES).is_none());
        // once is enough
        assert_eq!(chain_quantized_convs(&mut m).chained, 0);
    }

    /// The classifier's case: 8 -> 1, below the size at which a float input is worth
    /// quantizing for the integer kernel, reads codes all the same.
    #[test]
    fn a_small_consumer_reads_codes_too() {
        let mut small = qconv("b", &["ya"], "yb", true);
        small.attribute[0] =
            onnx::tensor_attr("weight", onnx::i8_tensor("weight", &[1, 8, 1, 1], &[0; 8]));
        let mut m = model(vec![qconv("a", &["x"], "ya", true), small], &["yb"]);
        assert_eq!(chain_quantized_convs(&mut m).chained, 1);
        let b = &m.graph.as_ref().expect("graph").node[1];
        assert_eq!(attr(b, INPUT_CODES).map(|x| x.i), Some(1));
    }

    #[test]
    fn a_value_read_as_a_residual_or_twice_stays_float() {
        let mut m = model(
            vec![
                qconv("a", &["x"], "ya", true),
                qconv("b", &["y", "ya"], "yb", true),
                qconv("c", &["x"], "yc", true),
                qconv("d", &["yc", "yc"], "yd", true),
            ],
            &["yb", "yd"],
        );
        assert_eq!(chain_quantized_convs(&mut m).chained, 0);
    }
}
