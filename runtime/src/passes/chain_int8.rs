//! int8 chaining, an ONNX -> ONNX rewrite run after [`super::fuse_conv`] and
//! [`super::resample`]: the activations between two quantized convolutions stay 8-bit.
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
//! float, except where [`Chaining::Full`] writes it both ways (below).
//!
//! With [`Chaining::Full`], a value that exactly two such consumers read as their input
//! (the sum of a long skip at a decoder level's entry: the first block's `conv1` with
//! its batch norm and ReLU, and its 1x1 shortcut, which reads the sum as it is) is
//! written twice as codes, once for each: the producer gets a second output, read by the
//! second consumer, with that consumer's attributes under `output2_` and
//! [`OUTPUT_CODES`] = 2. Both readers quantize the same float value differently, so one
//! code map cannot serve both. In Table 1 the two readers of each level's 16 MB
//! (256 x 128^2) float sum took 3 times onnxruntime's time for the same layers, which
//! read bytes (`segment-run bench --profile`, 1 thread: the readers 42 ms, then 27; the
//! writers, which now quantize twice, 32 ms, then 42 with a division per code and about
//! 35 with the reciprocal, [`crate::kernels::conv::FakeQuant`]).
//!
//! Also with [`Chaining::Full`], the sum of an up-sampling add
//! ([`super::resample::OWN_UPSAMPLE_ADD`], the last long skip: the decoder's output
//! repeated x2 plus the stem's) that one quantized convolution alone reads (the head
//! conv) is written as that convolution's codes, the same attributes on the add. Table 1
//! at 512^2: 32 channels, 33.5 MB of floats written and read again, now 8.4 MB (the
//! head conv 15.6 -> 12.3 ms, the add 6.0 -> 5.3).
//!
//! Also with [`Chaining::Full`], a convolution's output that one quantized convolution
//! reads as its input and other nodes read in float keeps its floats and gets a second
//! output, that reader's codes ([`OUTPUT_FLOAT`] = 1, [`OUTPUT_CODES`] = 1, the reader's
//! attributes under `output_`): the residual stream of bottleneck blocks, where a
//! block's sum is the next block's conv1 input (through its batch norm and ReLU) and its
//! conv3's residual, and an encoder level's output, which the next level's decimation
//! and a long skip's projection read. Table 1 int8, 1 thread (`--profile`): the inner
//! blocks' conv1, which read the float stream and quantized it, 33 -> 20 ms; their
//! conv3, which now write codes beside the floats, 36 -> 40 ms.
//!
//! The embedded executor runs one output per node and adds in floats: it takes
//! [`Chaining::ConvToConv`], and [`unchain_for_embedded`] undoes the rest.
//!
//! The arithmetic is unchanged: the producer applies, in the same order, the same float
//! operations the consumer applied to the float it read (see [`crate::kernels::qconv`]).

use std::collections::{HashMap, HashSet};

use super::fuse_conv::{DOMAIN, FUSED_QCONV};
use super::resample::OWN_UPSAMPLE_ADD;
use crate::onnx::{self, pb};

/// Attribute of a `SkipsegQConv` that reads the `u8` codes its producer wrote.
pub const INPUT_CODES: &str = "input_codes";
/// Attribute of a `SkipsegQConv` that writes the `u8` codes of the convolution after it.
pub const OUTPUT_CODES: &str = "output_codes";
/// Attribute of a `SkipsegQConv` that writes its float values as well as one reader's
/// codes: output 0 the floats, output 1 the codes.
pub const OUTPUT_FLOAT: &str = "output_float";

/// The consumer's attributes that move to the producer, under `output_` + the name.
const MOVED: [&str; 3] = ["pre_scale", "pre_shift", "pre_relu"];
/// The consumer's attributes that the producer copies, under `output_` + the name.
const COPIED: [&str; 2] = ["x_scale", "x_zero_point"];

/// Which values the pass turns into codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chaining {
    /// A quantized convolution's output that one quantized convolution reads: what the
    /// embedded executor runs.
    ConvToConv,
    /// Also a convolution's output that two quantized convolutions read (a second
    /// output of the producer), and the sum of an up-sampling add
    /// ([`super::resample::OWN_UPSAMPLE_ADD`]) that one reads.
    Full,
}

/// What the pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Producer -> consumer pairs that now pass `u8` codes.
    pub chained: usize,
    /// Producers among them that write the codes of two readers.
    pub two_readers: usize,
    /// Producers among them that write their floats as well (for their other readers).
    pub float_kept: usize,
}

fn is_qconv(node: &pb::NodeProto) -> bool {
    node.op_type == FUSED_QCONV && node.domain == DOMAIN
}

fn is_upsample_add(node: &pb::NodeProto) -> bool {
    node.op_type == OWN_UPSAMPLE_ADD && node.domain == DOMAIN
}

fn has_flag(node: &pb::NodeProto, name: &str) -> bool {
    node.attribute.iter().any(|a| a.name == name && a.i != 0)
}

/// Whether node `j` can read codes written for it.
fn can_read_codes(node: &pb::NodeProto) -> bool {
    is_qconv(node)
        && !has_flag(node, INPUT_CODES)
        && COPIED
            .iter()
            .all(|name| node.attribute.iter().any(|a| a.name == *name))
}

/// Chain every eligible producer of `model` to its quantized readers (see the module
/// docs).
pub fn chain_quantized_convs(model: &mut pb::ModelProto, chaining: Chaining) -> ChainReport {
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
    // producer -> its readers, each reading the value as its input (slot 0), and whether
    // others read its floats
    let mut chains: Vec<(usize, Vec<usize>, bool)> = Vec::new();
    for (i, producer) in graph.node.iter().enumerate() {
        let full = chaining == Chaining::Full;
        if !(is_qconv(producer) || full && is_upsample_add(producer))
            || producer.output.len() != 1
            || has_flag(producer, OUTPUT_CODES)
        {
            continue;
        }
        let value = producer.output[0].as_str();
        if graph_outputs.contains(value) {
            continue;
        }
        let all_reads = reads.get(value).map(Vec::as_slice).unwrap_or_default();
        let (consumers, keeps_float): (Vec<usize>, bool) = match *all_reads {
            [(j, 0)] => (vec![j], false),
            [(j, 0), (k, 0)]
                if full
                    && is_qconv(producer)
                    && j != k
                    && can_read_codes(&graph.node[j])
                    && can_read_codes(&graph.node[k]) =>
            {
                (vec![j, k], false)
            }
            // one quantized convolution reads it as its input, the others in float (the
            // residual stream: the next block's conv1, and its last conv's residual)
            _ if full && is_qconv(producer) => {
                let mut readers = all_reads
                    .iter()
                    .filter(|&&(j, slot)| slot == 0 && can_read_codes(&graph.node[j]));
                match (readers.next(), readers.next()) {
                    (Some(&(j, _)), None) => (vec![j], true),
                    _ => continue,
                }
            }
            _ => continue,
        };
        if consumers
            .iter()
            .all(|&j| j != i && can_read_codes(&graph.node[j]))
        {
            chains.push((i, consumers, keeps_float));
        }
    }
    for (i, consumers, keeps_float) in chains {
        for (n, &j) in consumers.iter().enumerate() {
            let prefix = if n == 0 { "output_" } else { "output2_" };
            move_to_producer(graph, i, j, prefix);
            report.chained += 1;
            // the one reader beside kept floats, or a second reader, reads a new output
            // of the producer; a first reader without kept floats reads output 0
            let new_output = match (keeps_float, n) {
                (true, 0) => Some("codes"),
                (_, 1) => Some("codes2"),
                _ => None,
            };
            if let Some(suffix) = new_output {
                let value = format!("{}.{suffix}", graph.node[i].output[0]);
                graph.node[j].input[0] = value.clone();
                graph.node[i].output.push(value);
            }
        }
        report.two_readers += usize::from(consumers.len() == 2);
        report.float_kept += usize::from(keeps_float);
        let producer = &mut graph.node[i];
        producer
            .attribute
            .push(onnx::int(OUTPUT_CODES, consumers.len() as i64));
        if keeps_float {
            producer.attribute.push(onnx::int(OUTPUT_FLOAT, 1));
        }
    }
    report
}

/// Move consumer `j`'s pre-activation (and copy its quantization) to producer `i`'s
/// attributes under `prefix`, and mark `j` as reading codes.
fn move_to_producer(graph: &mut pb::GraphProto, i: usize, j: usize, prefix: &str) {
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
        a.name = format!("{prefix}{}", a.name);
        producer.attribute.push(a);
    }
}

/// Undo what [`Chaining::Full`] adds to [`Chaining::ConvToConv`]: each convolution that
/// writes the codes of two readers, and each up-sampling add that writes codes, writes
/// floats again, and its readers read them (their pre-activations back in place). For
/// the embedded format, which holds one output per node and adds in floats. Returns the
/// producers changed.
pub fn unchain_for_embedded(model: &mut pb::ModelProto) -> usize {
    let Some(graph) = model.graph.as_mut() else {
        return 0;
    };
    let producers: Vec<usize> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            (is_qconv(n) && n.output.len() == 2 || is_upsample_add(n)) && has_flag(n, OUTPUT_CODES)
        })
        .map(|(i, _)| i)
        .collect();
    for &i in &producers {
        let values = graph.node[i].output.clone();
        // the code outputs, after the floats if the producer keeps them
        let codes = match has_flag(&graph.node[i], OUTPUT_FLOAT) {
            true => &values[1..],
            false => &values[..],
        };
        for (value, prefix) in codes.iter().zip(["output_", "output2_"]) {
            let Some(j) = graph
                .node
                .iter()
                .position(|n| n.input.first() == Some(value) && has_flag(n, INPUT_CODES))
            else {
                continue;
            };
            let (taken, kept): (Vec<_>, Vec<_>) = graph.node[i]
                .attribute
                .drain(..)
                .partition(|a| a.name.starts_with(prefix));
            graph.node[i].attribute = kept;
            let consumer = &mut graph.node[j];
            consumer.attribute.retain(|a| a.name != INPUT_CODES);
            for mut a in taken {
                let name = a.name[prefix.len()..].to_string();
                if MOVED.contains(&name.as_str()) {
                    a.name = name;
                    consumer.attribute.push(a);
                }
            }
            consumer.input[0] = values[0].clone();
        }
        let producer = &mut graph.node[i];
        producer.output.truncate(1);
        producer
            .attribute
            .retain(|a| a.name != OUTPUT_CODES && a.name != OUTPUT_FLOAT);
    }
    producers.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph's nodes with each node's attributes in name order: chaining then
    /// unchaining may reorder attributes, which means nothing.
    fn nodes_attributes_sorted(m: &pb::ModelProto) -> Vec<pb::NodeProto> {
        let mut nodes = m.graph.as_ref().expect("graph").node.clone();
        for n in &mut nodes {
            n.attribute.sort_by(|a, b| a.name.cmp(&b.name));
        }
        nodes
    }

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
        let report = chain_quantized_convs(&mut m, Chaining::ConvToConv);
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
        assert_eq!(
            chain_quantized_convs(&mut m, Chaining::ConvToConv).chained,
            0
        );
    }

    /// The classifier's case: 8 -> 1, below the size at which a float input is worth
    /// quantizing for the integer kernel, reads codes all the same.
    #[test]
    fn a_small_consumer_reads_codes_too() {
        let mut small = qconv("b", &["ya"], "yb", true);
        small.attribute[0] =
            onnx::tensor_attr("weight", onnx::i8_tensor("weight", &[1, 8, 1, 1], &[0; 8]));
        let mut m = model(vec![qconv("a", &["x"], "ya", true), small], &["yb"]);
        assert_eq!(
            chain_quantized_convs(&mut m, Chaining::ConvToConv).chained,
            1
        );
        let b = &m.graph.as_ref().expect("graph").node[1];
        assert_eq!(attr(b, INPUT_CODES).map(|x| x.i), Some(1));
    }

    /// A decoder level's entry: `p` writes the sum `s` that `conv1` (batch norm, ReLU) and
    /// the shortcut read. With up to two readers, `p` writes each one's codes as its own
    /// output; with one reader, nothing changes; undoing gives the one-reader graph back.
    #[test]
    fn a_value_two_quantized_convs_read_gets_two_code_outputs() {
        let graph = || {
            model(
                vec![
                    qconv("p", &["x"], "s", false),
                    qconv("conv1", &["s"], "y1", true),
                    qconv("shortcut", &["s"], "y2", false),
                    qconv("conv3", &["y1", "y2"], "y", false),
                ],
                &["y"],
            )
        };
        let mut one = graph();
        let report = chain_quantized_convs(&mut one, Chaining::ConvToConv);
        assert_eq!(
            (report.chained, report.two_readers),
            (1, 0),
            "conv1 -> conv3 only"
        );
        let mut two = graph();
        let report = chain_quantized_convs(&mut two, Chaining::Full);
        assert_eq!((report.chained, report.two_readers), (3, 1));
        let g = two.graph.as_ref().expect("graph");
        let [p, conv1, shortcut] = [&g.node[0], &g.node[1], &g.node[2]];
        assert_eq!(p.output, ["s", "s.codes2"]);
        assert_eq!(attr(p, OUTPUT_CODES).map(|a| a.i), Some(2));
        assert_eq!(attr(p, "output_pre_relu").map(|a| a.i), Some(1), "conv1's");
        assert_eq!(
            attr(p, "output2_pre_relu").map(|a| a.i),
            Some(0),
            "the shortcut's"
        );
        assert_eq!(attr(p, "output2_x_zero_point").map(|a| a.i), Some(3));
        assert_eq!(
            (conv1.input[0].as_str(), shortcut.input[0].as_str()),
            ("s", "s.codes2")
        );
        for reader in [conv1, shortcut] {
            assert_eq!(attr(reader, INPUT_CODES).map(|a| a.i), Some(1));
            assert!(attr(reader, "pre_relu").is_none(), "moved to the producer");
        }
        assert_eq!(unchain_for_embedded(&mut two), 1);
        let mut again = graph();
        chain_quantized_convs(&mut again, Chaining::ConvToConv);
        assert_eq!(
            nodes_attributes_sorted(&two),
            nodes_attributes_sorted(&again)
        );
        // a reader that is not a quantized conv, or three readers: no codes
        for extra in [
            pb::NodeProto {
                op_type: "Relu".into(),
                input: vec!["s".into()],
                output: vec!["r".into()],
                ..Default::default()
            },
            qconv("third", &["s"], "y3", false),
        ] {
            let mut m = graph();
            m.graph.as_mut().expect("graph").node.push(extra);
            assert_eq!(chain_quantized_convs(&mut m, Chaining::Full).two_readers, 0);
        }
    }

    /// The last long skip: an up-sampling add whose sum the head conv alone reads
    /// writes the head conv's codes, with [`Chaining::Full`] only; undone for the
    /// embedded format.
    #[test]
    fn an_up_sampling_add_writes_its_one_readers_codes() {
        let graph = || {
            let add = pb::NodeProto {
                op_type: OWN_UPSAMPLE_ADD.into(),
                domain: DOMAIN.into(),
                name: "skip.head.add".into(),
                input: vec!["low".into(), "stem".into()],
                output: vec!["sum".into()],
                ..Default::default()
            };
            model(vec![add, qconv("head", &["sum"], "y", true)], &["y"])
        };
        let mut plain = graph();
        assert_eq!(
            chain_quantized_convs(&mut plain, Chaining::ConvToConv).chained,
            0
        );
        let mut full = graph();
        assert_eq!(chain_quantized_convs(&mut full, Chaining::Full).chained, 1);
        let g = full.graph.as_ref().expect("graph");
        assert_eq!(attr(&g.node[0], OUTPUT_CODES).map(|a| a.i), Some(1));
        assert_eq!(attr(&g.node[0], "output_pre_relu").map(|a| a.i), Some(1));
        assert_eq!(attr(&g.node[1], INPUT_CODES).map(|a| a.i), Some(1));
        assert_eq!(unchain_for_embedded(&mut full), 1);
        let g = full.graph.as_ref().expect("graph");
        assert!(g.node[0].attribute.is_empty());
        assert_eq!(attr(&g.node[1], "pre_relu").map(|a| a.i), Some(1));
        assert!(attr(&g.node[1], INPUT_CODES).is_none());
        // read by two convolutions: floats (the operator writes one output)
        let mut two = graph();
        two.graph
            .as_mut()
            .expect("graph")
            .node
            .push(qconv("other", &["sum"], "z", false));
        assert_eq!(chain_quantized_convs(&mut two, Chaining::Full).chained, 0);
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
        assert_eq!(
            chain_quantized_convs(&mut m, Chaining::ConvToConv).chained,
            0
        );
    }

    /// The residual stream: block 1's sum `s` is read by block 2's conv1 (batch norm,
    /// ReLU) as its input and by block 2's conv3 as its residual. With
    /// [`Chaining::Full`], block 1's conv3 writes `s` in float (output 0, for the residual)
    /// and conv1's codes (output 1); undone for the embedded format. Two quantized
    /// readers beside a float one, or a value that is a graph output: floats only.
    #[test]
    fn a_value_read_in_float_as_well_keeps_its_floats() {
        let graph = |extra: Option<pb::NodeProto>, outputs: &[&str]| {
            let mut nodes = vec![
                qconv("conv3a", &["t", "x"], "s", false),
                qconv("conv1", &["s"], "y1", true),
                qconv("conv3b", &["y1", "s"], "y", false),
            ];
            nodes.extend(extra);
            model(nodes, outputs)
        };
        let mut plain = graph(None, &["y"]);
        assert_eq!(
            chain_quantized_convs(&mut plain, Chaining::ConvToConv).chained,
            1,
            "conv1 -> conv3b only"
        );
        let mut full = graph(None, &["y"]);
        let report = chain_quantized_convs(&mut full, Chaining::Full);
        assert_eq!(
            (report.chained, report.float_kept, report.two_readers),
            (2, 1, 0)
        );
        let g = full.graph.as_ref().expect("graph");
        let [producer, conv1, conv3b] = [&g.node[0], &g.node[1], &g.node[2]];
        assert_eq!(producer.output, ["s", "s.codes"]);
        assert_eq!(attr(producer, OUTPUT_CODES).map(|a| a.i), Some(1));
        assert_eq!(attr(producer, OUTPUT_FLOAT).map(|a| a.i), Some(1));
        assert_eq!(attr(producer, "output_pre_relu").map(|a| a.i), Some(1));
        assert_eq!(attr(producer, "output_x_scale").map(|a| a.f), Some(0.5));
        assert_eq!(conv1.input, ["s.codes"]);
        assert_eq!(attr(conv1, INPUT_CODES).map(|a| a.i), Some(1));
        assert!(attr(conv1, "pre_relu").is_none(), "moved to the producer");
        assert_eq!(conv3b.input, ["y1", "s"], "the residual reads the floats");
        assert_eq!(unchain_for_embedded(&mut full), 1);
        let mut again = graph(None, &["y"]);
        chain_quantized_convs(&mut again, Chaining::ConvToConv);
        assert_eq!(
            nodes_attributes_sorted(&full),
            nodes_attributes_sorted(&again)
        );
        // a second quantized reader of `s` as its input, or `s` a graph output
        for (extra, outputs) in [
            (Some(qconv("other", &["s"], "z", false)), &["y", "z"][..]),
            (None, &["y", "s"][..]),
        ] {
            let mut m = graph(extra, outputs);
            let report = chain_quantized_convs(&mut m, Chaining::Full);
            assert_eq!(report.float_kept, 0, "outputs {outputs:?}");
            let g = m.graph.as_ref().expect("graph");
            assert_eq!(g.node[0].output, ["s"]);
        }
    }
}
