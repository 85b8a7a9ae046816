//! Building an ONNX graph node by node, with deterministic names.
//!
//! Every value is named after the node that produces it, so node names and tensor names
//! agree (`down3.block2.conv1`), and weights are initializers named `<node>.weight` etc.

use std::collections::HashSet;

use super::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};
use super::{f32_tensor, i64_tensor};

/// The ONNX operator set the builder targets.
pub const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;

/// Accumulates nodes and initializers of one graph.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: pb::GraphProto,
    names: HashSet<String>,
}

impl GraphBuilder {
    /// A graph with one float input `[1, channels, "height", "width"]`.
    pub fn new(graph_name: &str, input_name: &str, channels: usize) -> Self {
        let mut b = Self {
            graph: pb::GraphProto {
                name: graph_name.into(),
                ..Default::default()
            },
            names: HashSet::new(),
        };
        b.graph.input.push(value_info(input_name, channels));
        b.names.insert(input_name.to_string());
        b
    }

    fn claim(&mut self, name: &str) {
        assert!(
            self.names.insert(name.to_string()),
            "duplicate ONNX name {name}"
        );
    }

    fn initializer(&mut self, t: pb::TensorProto) -> String {
        let name = t.name.clone();
        if !self.names.contains(&name) {
            self.claim(&name);
            self.graph.initializer.push(t);
        }
        name
    }

    /// Add a node whose single output is named like the node; returns that name.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        self.claim(name);
        self.graph.node.push(pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs,
            output: vec![name.into()],
            attribute: attrs,
            ..Default::default()
        });
        name.to_string()
    }

    /// `Conv` with `weight` laid out `[out, in, k, k]`, same padding, stride 1.
    pub fn conv(
        &mut self,
        name: &str,
        x: &str,
        weight: &[f32],
        dims: [usize; 4],
        bias: Option<&[f32]>,
    ) -> String {
        let k = dims[2];
        let w = self.initializer(f32_tensor(&format!("{name}.weight"), &dims, weight));
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = bias {
            inputs.push(self.initializer(f32_tensor(&format!("{name}.bias"), &[dims[0]], b)));
        }
        let pad = (k / 2) as i64;
        let attrs = vec![
            ints("kernel_shape", &[k as i64, dims[3] as i64]),
            ints(
                "pads",
                &[pad, (dims[3] / 2) as i64, pad, (dims[3] / 2) as i64],
            ),
            ints("strides", &[1, 1]),
            ints("dilations", &[1, 1]),
            int("group", 1),
        ];
        self.node("Conv", name, inputs, attrs)
    }

    /// Inference-mode `BatchNormalization`.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &mut self,
        name: &str,
        x: &str,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        epsilon: f32,
    ) -> String {
        let c = [gamma.len()];
        let inputs = vec![
            x.to_string(),
            self.initializer(f32_tensor(&format!("{name}.scale"), &c, gamma)),
            self.initializer(f32_tensor(&format!("{name}.bias"), &c, beta)),
            self.initializer(f32_tensor(&format!("{name}.mean"), &c, mean)),
            self.initializer(f32_tensor(&format!("{name}.var"), &c, var)),
        ];
        self.node(
            "BatchNormalization",
            name,
            inputs,
            vec![float("epsilon", epsilon)],
        )
    }

    pub fn relu(&mut self, name: &str, x: &str) -> String {
        self.node("Relu", name, vec![x.into()], vec![])
    }

    pub fn sigmoid(&mut self, name: &str, x: &str) -> String {
        self.node("Sigmoid", name, vec![x.into()], vec![])
    }

    pub fn add(&mut self, name: &str, a: &str, b: &str) -> String {
        self.node("Add", name, vec![a.into(), b.into()], vec![])
    }

    /// Keep every second row and column (`Slice` with steps 2 on axes 2 and 3).
    pub fn decimate(&mut self, name: &str, x: &str) -> String {
        let starts = self.initializer(i64_tensor("const.decimate.starts", &[0, 0]));
        let ends = self.initializer(i64_tensor("const.decimate.ends", &[i64::MAX, i64::MAX]));
        let axes = self.initializer(i64_tensor("const.decimate.axes", &[2, 3]));
        let steps = self.initializer(i64_tensor("const.decimate.steps", &[2, 2]));
        self.node(
            "Slice",
            name,
            vec![x.into(), starts, ends, axes, steps],
            vec![],
        )
    }

    /// Repeat every row and column twice (`Resize`, nearest, asymmetric, floor).
    pub fn upsample(&mut self, name: &str, x: &str) -> String {
        let scales = self.initializer(f32_tensor(
            "const.upsample.scales",
            &[4],
            &[1.0, 1.0, 2.0, 2.0],
        ));
        let attrs = vec![
            string("mode", "nearest"),
            string("coordinate_transformation_mode", "asymmetric"),
            string("nearest_mode", "floor"),
        ];
        self.node("Resize", name, vec![x.into(), String::new(), scales], attrs)
    }

    /// `Mul(a, b)` (broadcasting).
    pub fn mul(&mut self, name: &str, a: &str, b: &str) -> String {
        self.node("Mul", name, vec![a.into(), b.into()], vec![])
    }

    /// A dropout mask input `[1, channels, h, w]` named `name`, whose default value (an
    /// initializer of the same name) is ones `[1, channels, 1, 1]`: the model run as it
    /// is computes the deterministic network; a caller may feed samples (see
    /// [`crate::passes::dropout`]).
    pub fn dropout_mask(&mut self, name: &str, channels: usize) -> String {
        self.claim(name);
        let mut input = value_info(name, channels);
        if let Some(pb::type_proto::Value::TensorType(t)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(shape) = t.shape.as_mut()
        {
            use pb::tensor_shape_proto::dimension::Value;
            shape.dim[2].value = Some(Value::DimParam(format!("{name}.height")));
            shape.dim[3].value = Some(Value::DimParam(format!("{name}.width")));
        }
        self.graph.input.push(input);
        self.graph
            .initializer
            .push(f32_tensor(name, &[1, channels, 1, 1], &vec![1.0; channels]));
        name.to_string()
    }

    /// Finish the model: `value` becomes the graph output, renamed `output_name`
    /// `[1, 1, "height", "width"]`.
    pub fn finish(
        mut self,
        value: &str,
        output_name: &str,
        producer_version: &str,
    ) -> pb::ModelProto {
        for node in &mut self.graph.node {
            for v in node.input.iter_mut().chain(node.output.iter_mut()) {
                if v == value {
                    *v = output_name.to_string();
                }
            }
        }
        self.graph.output.push(value_info(output_name, 1));
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "skipseg".into(),
            producer_version: producer_version.into(),
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}

fn value_info(name: &str, channels: usize) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = |v: Value| Dimension {
        value: Some(v),
        ..Default::default()
    };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        dim(Value::DimValue(1)),
                        dim(Value::DimValue(channels as i64)),
                        dim(Value::DimParam("height".into())),
                        dim(Value::DimParam("width".into())),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

/// A float attribute.
pub fn float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

/// A string attribute.
pub fn string(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A tensor attribute.
pub fn tensor_attr(name: &str, t: pb::TensorProto) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t),
        ..Default::default()
    }
}
