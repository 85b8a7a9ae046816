//! Reading, writing and inspecting ONNX protobufs.

use std::path::Path;

use super::pb;
use prost::Message;

use crate::error::{Error, Result};

/// Decode an ONNX model from bytes; `source_name` names the file in errors.
pub fn decode_model(bytes: &[u8], source_name: &str) -> Result<pb::ModelProto> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| Error::NotOnnx {
        source_name: source_name.to_string(),
        reason: format!("protobuf decoding failed: {e}"),
    })?;
    if model.graph.is_none() || model.opset_import.is_empty() {
        return Err(Error::NotOnnx {
            source_name: source_name.to_string(),
            reason: "no graph or no opset import (is this an ONNX file?)".into(),
        });
    }
    Ok(model)
}

/// Read an ONNX model from a file.
pub fn read_model(path: &Path) -> Result<pb::ModelProto> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "cannot read model",
        source,
    })?;
    decode_model(&bytes, &path.display().to_string())
}

/// Encode a model to bytes.
pub fn encode_model(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Write a model atomically: to a temporary file beside `path`, then rename.
/// An existing file at `path` is left untouched if anything fails.
pub fn write_model(model: &pb::ModelProto, path: &Path) -> Result<()> {
    crate::io::write_atomic(path, &encode_model(model))
}

/// Float data of an initializer, whether stored as `float_data` or `raw_data`.
pub fn tensor_f32(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return None;
        }
        Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    } else {
        Some(t.float_data.clone())
    }
}

/// Int8 data of an initializer (`raw_data` or `int32_data`).
pub fn tensor_i8(t: &pb::TensorProto) -> Option<Vec<i8>> {
    if t.data_type != pb::tensor_proto::DataType::Int8 as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        Some(t.raw_data.iter().map(|&b| b as i8).collect())
    } else {
        t.int32_data.iter().map(|&v| i8::try_from(v).ok()).collect()
    }
}

/// The values of an `int64` tensor, raw or listed.
pub fn tensor_i64(t: &pb::TensorProto) -> Option<Vec<i64>> {
    if t.data_type != pb::tensor_proto::DataType::Int64 as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        return t.raw_data.len().is_multiple_of(8).then(|| {
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect()
        });
    }
    Some(t.int64_data.clone())
}

/// Uint8 data of an initializer (`raw_data` or `int32_data`).
pub fn tensor_u8(t: &pb::TensorProto) -> Option<Vec<u8>> {
    if t.data_type != pb::tensor_proto::DataType::Uint8 as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        Some(t.raw_data.clone())
    } else {
        t.int32_data.iter().map(|&v| u8::try_from(v).ok()).collect()
    }
}

/// A float graph input or output of unknown shape, named `name`.
pub fn float_value_info(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An int8 initializer.
pub fn i8_tensor(name: &str, dims: &[usize], data: &[i8]) -> pb::TensorProto {
    debug_assert_eq!(dims.iter().product::<usize>(), data.len());
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Int8 as i32,
        raw_data: data.iter().map(|&v| v as u8).collect(),
        ..Default::default()
    }
}

/// A uint8 initializer.
pub fn u8_tensor(name: &str, dims: &[usize], data: &[u8]) -> pb::TensorProto {
    debug_assert_eq!(dims.iter().product::<usize>(), data.len());
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Uint8 as i32,
        raw_data: data.to_vec(),
        ..Default::default()
    }
}

/// A float initializer stored as little-endian `raw_data`.
pub fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    debug_assert_eq!(dims.iter().product::<usize>(), data.len());
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int64 initializer.
pub fn i64_tensor(name: &str, data: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: vec![data.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A graph's initializers by name, borrowed.
pub type Initializers<'a> = std::collections::HashMap<&'a str, &'a pb::TensorProto>;

/// The initializers of `graph` by name.
pub fn initializers(graph: &pb::GraphProto) -> Initializers<'_> {
    graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect()
}

/// Give every node a name no other node has (tract keys nodes by name; ONNX names are
/// optional and may repeat): an empty or taken name becomes one derived from the node's
/// first output.
pub fn name_nodes_uniquely(graph: &mut pb::GraphProto) {
    // every name in use, explicit node names included, so a drawn name never takes the
    // name a later node already has
    let mut names = Names::of(graph);
    let mut kept = std::collections::HashSet::new();
    for node in &mut graph.node {
        if node.name.is_empty() || !kept.insert(node.name.clone()) {
            let base = match node.output.first() {
                Some(o) if !o.is_empty() => format!("{o}.node"),
                _ => format!("{}.node", node.op_type),
            };
            node.name = names.unique(&base);
        }
    }
}

/// The names a graph uses (nodes, values, initializers, inputs, outputs), to draw new
/// ones that collide with none, whatever names (or empty names) the graph has.
#[derive(Debug, Clone, Default)]
pub struct Names(std::collections::HashSet<String>);

impl Names {
    pub fn of(graph: &pb::GraphProto) -> Self {
        Self(
            graph
                .node
                .iter()
                .flat_map(|n| std::iter::once(n.name.clone()).chain(n.output.iter().cloned()))
                .chain(graph.initializer.iter().map(|t| t.name.clone()))
                .chain(graph.input.iter().map(|i| i.name.clone()))
                .chain(graph.output.iter().map(|o| o.name.clone()))
                .collect(),
        )
    }

    /// `base`, or else `base.2`, `base.3`, ...: the first one not taken, now taken.
    pub fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while !self.0.insert(name.clone()) {
            k += 1;
            name = format!("{base}.{k}");
        }
        name
    }
}

/// Count nodes by operator type, sorted by name.
pub fn op_histogram(model: &pb::ModelProto) -> Vec<(String, usize)> {
    let mut map = std::collections::BTreeMap::<String, usize>::new();
    for n in model.graph.iter().flat_map(|g| g.node.iter()) {
        *map.entry(n.op_type.clone()).or_default() += 1;
    }
    map.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names_are_unique_whatever_the_graph_holds() {
        let graph = pb::GraphProto {
            node: vec![
                pb::NodeProto {
                    name: "x.fused".into(),
                    output: vec!["x".into()],
                    ..Default::default()
                },
                // an unnamed node: its empty name counts as taken
                pb::NodeProto {
                    output: vec!["x.fused.2".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut names = Names::of(&graph);
        assert_eq!(names.unique("x.fused"), "x.fused.3");
        assert_eq!(names.unique("x.fused"), "x.fused.4");
        assert_eq!(names.unique("y"), "y");
        assert_eq!(names.unique(""), ".2");
    }
}
