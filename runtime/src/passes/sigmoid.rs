//! `Sigmoid` -> skipseg's own ([`crate::kernels::sigmoid`]), an ONNX -> ONNX rewrite run
//! with convolution fusion: the graph's last operation then has one definition in every
//! engine that runs skipseg's graphs (tract's plan, the embedded executor), and they
//! agree to the bit.

use crate::onnx::pb;
use crate::passes::fuse_conv::DOMAIN;

/// The operator type of skipseg's sigmoid.
pub const OWN_SIGMOID: &str = "SkipsegSigmoid";

/// Replace every ONNX `Sigmoid`; returns how many.
pub fn own_sigmoid(model: &mut pb::ModelProto) -> usize {
    let Some(graph) = model.graph.as_mut() else {
        return 0;
    };
    let mut replaced = 0;
    for node in graph
        .node
        .iter_mut()
        .filter(|n| n.op_type == "Sigmoid" && n.domain.is_empty())
    {
        node.op_type = OWN_SIGMOID.into();
        node.domain = DOMAIN.into();
        replaced += 1;
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_onnx_sigmoids_only() {
        let node = |op: &str, domain: &str| pb::NodeProto {
            op_type: op.into(),
            domain: domain.into(),
            ..Default::default()
        };
        let mut model = pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![
                    node("Sigmoid", ""),
                    node("Relu", ""),
                    node("Sigmoid", "other"),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(own_sigmoid(&mut model), 1);
        let ops: Vec<(String, String)> = model
            .graph
            .expect("graph")
            .node
            .into_iter()
            .map(|n| (n.op_type, n.domain))
            .collect();
        assert_eq!(ops[0], (OWN_SIGMOID.to_string(), DOMAIN.to_string()));
        assert_eq!(ops[1].0, "Relu");
        assert_eq!(ops[2], ("Sigmoid".to_string(), "other".to_string()));
    }
}
