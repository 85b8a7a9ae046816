//! Checks a model must pass before any pass or tract sees it, so that a damaged or
//! foreign file fails at load with one line naming the file and the problem, instead
//! of deep inside tract (or, worse, running with weights nobody chose).

use std::collections::HashSet;

use super::pb;
use super::pb::tensor_proto::DataType;
use crate::error::{Error, Result};

/// What [`validate`] needs of the metadata: the input channels the architecture takes.
pub struct Expected {
    pub in_channels: usize,
}

/// Check `model`'s graph:
/// - single assignment: no tensor is defined twice (initializers, inputs, node outputs);
/// - every node input is defined (a missing initializer is named);
/// - exactly one runtime input, `[1, in_channels, H, W]` where dimensions are given,
///   and exactly one output;
/// - initializers hold as many elements as their dimensions say, and float ones are
///   all finite.
pub fn validate(model: &pb::ModelProto, expected: &Expected, source_name: &str) -> Result<()> {
    let bad = |reason: String| Error::BadModel {
        source_name: source_name.to_string(),
        reason,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bad("the model has no graph".into()))?;
    check_single_assignment(graph, source_name)?;
    check_arity(graph, source_name)?;

    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let runtime_inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    let [input] = runtime_inputs[..] else {
        return Err(bad(format!(
            "the graph has {} inputs besides its weights; a skipseg model has one image input",
            runtime_inputs.len()
        )));
    };
    if graph.output.len() != 1 {
        return Err(bad(format!(
            "the graph has {} outputs; a skipseg model has one (the membrane probability)",
            graph.output.len()
        )));
    }
    if let Some(dims) = value_dims(input) {
        let channels_ok = dims
            .get(1)
            .is_none_or(|d| d.is_none_or(|c| c == expected.in_channels as i64));
        if dims.len() != 4 || !channels_ok {
            let shown: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                .collect();
            return Err(bad(format!(
                "graph input `{}` has shape [{}]; the model's metadata describes an image input \
                 [1, {}, H, W] (is this another network?)",
                input.name,
                shown.join(", "),
                expected.in_channels
            )));
        }
    }

    let mut defined: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    defined.extend(initializers.iter().copied());
    for node in &graph.node {
        for name in node.input.iter().filter(|n| !n.is_empty()) {
            if !defined.contains(name.as_str()) {
                let node_name = if node.name.is_empty() {
                    format!("a {} node", node.op_type)
                } else {
                    format!("node `{}`", node.name)
                };
                return Err(bad(format!(
                    "{node_name} reads `{name}`, which nothing defines (a missing initializer, \
                     or nodes out of order)"
                )));
            }
        }
        defined.extend(node.output.iter().map(String::as_str));
    }

    for t in &graph.initializer {
        check_initializer(t).map_err(|why| bad(format!("initializer `{}`: {why}", t.name)))?;
    }
    for node in graph.node.iter().filter(|n| n.op_type == "Conv") {
        check_conv(node, graph).map_err(|why| {
            let name = if node.name.is_empty() {
                "a Conv node"
            } else {
                &node.name
            };
            bad(format!("`{name}`: {why}"))
        })?;
    }
    Ok(())
}

/// A Conv's geometry attributes agree with its weight's rank (tract indexes them
/// without checking).
fn check_conv(node: &pb::NodeProto, graph: &pb::GraphProto) -> std::result::Result<(), String> {
    let Some(weight) = node
        .input
        .get(1)
        .and_then(|w| graph.initializer.iter().find(|t| &t.name == w))
    else {
        return Ok(()); // a computed weight: tract checks shapes as it infers them
    };
    let spatial = weight
        .dims
        .len()
        .checked_sub(2)
        .filter(|&s| s >= 1)
        .ok_or_else(|| format!("weight of rank {} (expected 3 or more)", weight.dims.len()))?;
    for a in &node.attribute {
        let expected = match a.name.as_str() {
            "kernel_shape" | "strides" | "dilations" => spatial,
            "pads" => 2 * spatial,
            "group" if a.i < 1 => return Err(format!("group {} (expected >= 1)", a.i)),
            _ => continue,
        };
        if a.ints.len() != expected {
            return Err(format!(
                "attribute `{}` has {} values; a weight of rank {} needs {expected}",
                a.name,
                a.ints.len(),
                weight.dims.len()
            ));
        }
        if a.ints
            .iter()
            .any(|&v| v < 0 || (a.name != "pads" && v == 0))
        {
            return Err(format!(
                "attribute `{}` = {:?} is out of range",
                a.name, a.ints
            ));
        }
    }
    Ok(())
}

/// Inputs (at least, at most) and outputs (at least) of the operators skipseg's passes
/// read; any other operator needs one output.
fn arity(op: &str) -> (usize, usize, usize) {
    match op {
        "Conv" => (2, 3, 1),
        "BatchNormalization" => (5, 5, 1),
        "Relu" | "Sigmoid" => (1, 1, 1),
        "Add" | "Mul" => (2, 2, 1),
        "QuantizeLinear" | "DequantizeLinear" => (2, 3, 1),
        "Slice" => (3, 5, 1),
        "Resize" => (1, 4, 1),
        _ => (0, usize::MAX, 1),
    }
}

/// Every node has as many inputs and outputs as its operator takes (the passes index
/// them; a fuzzed `Relu` without inputs used to panic in one).
pub fn check_arity(graph: &pb::GraphProto, source_name: &str) -> Result<()> {
    for node in &graph.node {
        let (min_in, max_in, min_out) = arity(&node.op_type);
        let (n_in, n_out) = (node.input.len(), node.output.len());
        if n_in < min_in || n_in > max_in || n_out < min_out {
            let name = if node.name.is_empty() {
                format!("a {} node", node.op_type)
            } else {
                format!("{} node `{}`", node.op_type, node.name)
            };
            return Err(Error::BadModel {
                source_name: source_name.to_string(),
                reason: format!("{name} has {n_in} inputs and {n_out} outputs"),
            });
        }
    }
    Ok(())
}

/// Refuse a graph that defines one tensor twice (two initializers of one name, or two
/// producers of one value): ONNX graphs are single-assignment, and a loader that kept
/// either definition would run weights nobody chose. (A graph input may also be an
/// initializer: its default value.)
pub fn check_single_assignment(graph: &pb::GraphProto, source_name: &str) -> Result<()> {
    let twice = |name: &str| Error::BadModel {
        source_name: source_name.to_string(),
        reason: format!("tensor `{name}` is defined more than once"),
    };
    let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    let mut defined: HashSet<&str> = HashSet::new();
    for name in graph.initializer.iter().map(|t| t.name.as_str()) {
        if !name.is_empty() && !defined.insert(name) {
            return Err(twice(name));
        }
    }
    // a node output may be neither an initializer nor a graph input
    for name in graph.node.iter().flat_map(|n| n.output.iter()) {
        if !name.is_empty() && (!defined.insert(name) || inputs.contains(name.as_str())) {
            return Err(twice(name));
        }
    }
    Ok(())
}

/// Dimensions of a tensor value (None: unknown dimension), or None if no shape is given.
fn value_dims(v: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect(),
    )
}

/// Element count matches the dimensions; float data is finite.
fn check_initializer(t: &pb::TensorProto) -> std::result::Result<(), String> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        return Err("stored in an external file, which skipseg does not read".into());
    }
    let elements = t
        .dims
        .iter()
        .try_fold(1u64, |n, &d| {
            u64::try_from(d).ok().and_then(|d| n.checked_mul(d))
        })
        .ok_or_else(|| format!("invalid dimensions {:?}", t.dims))?;
    let width = match DataType::try_from(t.data_type) {
        Ok(DataType::Float | DataType::Int32 | DataType::Uint32) => 4,
        Ok(DataType::Int64 | DataType::Uint64 | DataType::Double) => 8,
        Ok(DataType::Int8 | DataType::Uint8 | DataType::Bool) => 1,
        Ok(DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16) => 2,
        _ => return Ok(()), // strings and others: tract decides
    };
    let stored = if !t.raw_data.is_empty() {
        t.raw_data.len() as u64 / width
    } else {
        (t.float_data.len() + t.int32_data.len() + t.int64_data.len() + t.double_data.len()) as u64
    };
    if !t.raw_data.is_empty() && !(t.raw_data.len() as u64).is_multiple_of(width) {
        return Err(format!(
            "{} bytes of data is not a whole number of {width}-byte elements",
            t.raw_data.len()
        ));
    }
    if stored != elements {
        return Err(format!(
            "dimensions {:?} need {elements} values, the file holds {stored}",
            t.dims
        ));
    }
    if t.data_type == DataType::Float as i32 {
        let bad = super::tensor_f32(t)
            .unwrap_or_default()
            .iter()
            .filter(|v| !v.is_finite())
            .count();
        if bad > 0 {
            return Err(format!("{bad} of {elements} weights are NaN or infinite"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphBuilder, f32_tensor};

    fn small() -> pb::ModelProto {
        let mut b = GraphBuilder::new("g", "input", 1);
        let y = b.conv("conv", "input", &[0.5; 9], [1, 1, 3, 3], Some(&[0.1]));
        b.finish(&y, "output", "test")
    }

    fn check(m: &pb::ModelProto) -> Result<()> {
        validate(m, &Expected { in_channels: 1 }, "m.onnx")
    }

    fn reason(m: &pb::ModelProto) -> String {
        check(m).expect_err("must be refused").to_string()
    }

    #[test]
    fn a_sound_graph_passes() {
        check(&small()).expect("valid");
    }

    #[test]
    fn each_defect_is_named() {
        let mut m = small();
        m.graph
            .as_mut()
            .expect("g")
            .initializer
            .retain(|t| t.name != "conv.weight");
        let r = reason(&m);
        assert!(
            r.starts_with("m.onnx:") && r.contains("`conv.weight`") && r.contains("missing"),
            "{r}"
        );

        let mut m = small();
        let g = m.graph.as_mut().expect("g");
        let dup = f32_tensor("conv.weight", &[1, 1, 3, 3], &[9.0; 9]);
        g.initializer.push(dup);
        assert!(reason(&m).contains("defined more than once"));

        let mut m = small();
        let g = m.graph.as_mut().expect("g");
        g.initializer[0] = f32_tensor(
            "conv.weight",
            &[1, 1, 3, 3],
            &[0.5, f32::NAN, 0.5, 0.5, f32::INFINITY, 0.5, 0.5, 0.5, 0.5],
        );
        assert!(
            reason(&m).contains("2 of 9 weights are NaN or infinite"),
            "{}",
            reason(&m)
        );

        let mut m = small();
        m.graph.as_mut().expect("g").initializer[0].dims = vec![1, 1, 3, 4];
        assert!(
            reason(&m).contains("need 12 values, the file holds 9"),
            "{}",
            reason(&m)
        );

        let mut m = small();
        m.graph.as_mut().expect("g").initializer[0].dims = vec![-1, 9];
        assert!(reason(&m).contains("invalid dimensions"), "{}", reason(&m));

        let r = validate(&small(), &Expected { in_channels: 3 }, "m.onnx")
            .expect_err("channels differ")
            .to_string();
        assert!(r.contains("another network"), "{r}");

        let mut m = small();
        let conv = &mut m.graph.as_mut().expect("g").node[0];
        let pads = conv
            .attribute
            .iter_mut()
            .find(|a| a.name == "pads")
            .expect("pads");
        pads.ints.truncate(1); // what the fuzzer found: tract indexed past the end
        let r = reason(&m);
        assert!(r.contains("`conv`: attribute `pads` has 1 values"), "{r}");

        let mut m = small();
        let mut b = GraphBuilder::new("g", "input", 1);
        let y = b.relu("relu", "input");
        let mut relu = b.finish(&y, "output", "test");
        relu.graph.as_mut().expect("g").node[0].input.clear(); // found by fuzzing
        let r = reason(&relu);
        assert!(
            r.contains("Relu node `relu` has 0 inputs and 1 outputs"),
            "{r}"
        );

        let extra = m.graph.as_ref().expect("g").input[0].clone();
        let g = m.graph.as_mut().expect("g");
        g.input.push(pb::ValueInfoProto {
            name: "second".into(),
            ..extra
        });
        assert!(reason(&m).contains("2 inputs"));
    }
}
