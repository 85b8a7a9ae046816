//! The embedded graph of an ONNX model after skipseg's passes (the graph
//! [`crate::Segmenter`] hands to tract).

use std::collections::HashMap;

use crate::engine::ops::conv_spec;
use crate::error::{Error, Result};
use crate::onnx::{self, pb};
use crate::passes::fuse_conv::{DOMAIN, FUSED_CONV, FUSED_QCONV, is_upsample_x2};
use crate::passes::resample::{OWN_DECIMATE, OWN_UPSAMPLE, OWN_UPSAMPLE_ADD, is_decimate_x2};
use crate::passes::sigmoid::OWN_SIGMOID;

use super::{Graph, Node, Op, ValueId};

impl Graph {
    /// The embedded graph of `model`, an ONNX model after skipseg's passes (fused
    /// convolutions, skipseg's sigmoid and resampling; ONNX's own x2 `Slice` and `Resize`
    /// are taken too); refuses any operation the executor does not run, naming the node.
    pub fn from_fused_onnx(model: &pb::ModelProto, source_name: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadModel {
            source_name: source_name.to_string(),
            reason: format!("no embedded form: {reason}"),
        };
        let graph = model.graph.as_ref().ok_or_else(|| bad("no graph".into()))?;
        let inits = onnx::initializers(graph);
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !inits.contains_key(i.name.as_str()))
            .collect();
        let [image] = inputs.as_slice() else {
            return Err(bad(format!(
                "{} graph inputs (dropout masks kept for Monte-Carlo sampling?); the embedded \
                 executor runs the deterministic network, of one input",
                inputs.len()
            )));
        };
        let in_channels = image
            .r#type
            .as_ref()
            .and_then(|t| match &t.value {
                Some(pb::type_proto::Value::TensorType(tt)) => tt.shape.as_ref(),
                _ => None,
            })
            .and_then(|s| s.dim.get(1))
            .and_then(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                    usize::try_from(v).ok()
                }
                _ => None,
            })
            .ok_or_else(|| bad(format!("input {} has no fixed channel count", image.name)))?;
        let mut ids: HashMap<&str, ValueId> = HashMap::from([(image.name.as_str(), 0)]);
        let mut nodes = Vec::with_capacity(graph.node.len());
        for n in &graph.node {
            let name = n.name.clone();
            let input = |i: usize| -> Result<ValueId> {
                let v = n
                    .input
                    .get(i)
                    .ok_or_else(|| bad(format!("{name}: no input {i}")))?;
                ids.get(v.as_str())
                    .copied()
                    .ok_or_else(|| bad(format!("{name}: input {v} is not computed before it")))
            };
            let (op, inputs) = match (n.domain.as_str(), n.op_type.as_str()) {
                (DOMAIN, FUSED_CONV | FUSED_QCONV) => {
                    let spec = conv_spec(n).map_err(|e| bad(format!("{name}: {e}")))?;
                    let inputs = (0..n.input.len()).map(&input).collect::<Result<Vec<_>>>()?;
                    (Op::Conv(Box::new(spec)), inputs)
                }
                (DOMAIN, OWN_SIGMOID) => (Op::Sigmoid, vec![input(0)?]),
                (DOMAIN, OWN_DECIMATE) => (Op::Decimate, vec![input(0)?]),
                (DOMAIN, OWN_UPSAMPLE) => (Op::Upsample, vec![input(0)?]),
                // the executor's own nodes: the up-sampling, then the Add (in place where
                // the up-sampled map is the last reader's)
                (DOMAIN, OWN_UPSAMPLE_ADD) => {
                    let (x, added) = (input(0)?, input(1)?);
                    nodes.push(Node {
                        name: format!("{name}.upsample"),
                        op: Op::Upsample,
                        inputs: vec![x],
                    });
                    (Op::Add, vec![nodes.len(), added])
                }
                ("", "Add") => (Op::Add, vec![input(0)?, input(1)?]),
                ("", "Slice") if is_decimate_x2(n, &inits) => (Op::Decimate, vec![input(0)?]),
                ("", "Resize") if is_upsample_x2(n, &inits) => (Op::Upsample, vec![input(0)?]),
                (domain, op) => {
                    return Err(bad(format!(
                        "{name}: operation {domain}{}{op} (the embedded executor runs fused \
                         convolutions, Add, x2 decimation, x2 nearest up-sampling and the \
                         final sigmoid)",
                        if domain.is_empty() { "" } else { "." }
                    )));
                }
            };
            let [output] = n.output.as_slice() else {
                return Err(bad(format!("{name}: {} outputs", n.output.len())));
            };
            ids.insert(output.as_str(), nodes.len() + 1);
            nodes.push(Node { name, op, inputs });
        }
        let [out] = graph.output.as_slice() else {
            return Err(bad(format!("{} graph outputs", graph.output.len())));
        };
        let output = *ids
            .get(out.name.as_str())
            .ok_or_else(|| bad(format!("output {} is computed by no node", out.name)))?;
        Ok(Graph {
            metadata: model
                .metadata_props
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect(),
            in_channels,
            nodes,
            output,
        })
    }
}
