//! Batch-norm folding on graphs whose node names are empty or repeated (names are
//! optional in ONNX and many exporters leave them empty), and whose tensor names look
//! like the names the pass derives. The folded graph must compute what the unfolded one
//! computes, evaluated by tract's own BatchNormalization.

use proptest::prelude::*;
use skipseg_runtime::onnx::{GraphBuilder, name_nodes_uniquely, pb};
use skipseg_runtime::passes::fold_batch_norms;
use tract_onnx::prelude::*;

mod common;

/// Names a node may get: empty (unnamed), repeated, or shaped like the pass's own
/// derived names.
const NODE_NAMES: [&str; 5] = ["", "", "bn", "conv", ".mul"];
/// Tensor names that collide with what a naive pass derives from empty node names.
const TENSOR_NAMES: [&str; 6] = [
    ".mul",
    ".scale",
    ".shift",
    ".add",
    ".weight.bn_folded",
    "bn.mul",
];

#[derive(Debug, Clone)]
enum Layer {
    /// Conv then batch norm (foldable into the conv).
    ConvBn { k: usize },
    /// Batch norm after a ReLU (becomes scale and shift).
    ReluBn,
    /// Conv whose output feeds a batch norm and a residual sum (not foldable).
    ConvBnResidual,
}

fn layer() -> impl Strategy<Value = Layer> {
    prop_oneof![
        (0usize..2).prop_map(|k| Layer::ConvBn { k: 2 * k + 1 }),
        Just(Layer::ReluBn),
        Just(Layer::ConvBnResidual),
    ]
}

struct Values(u64);
impl Values {
    fn take(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }
}

/// A chain of `layers` on `c` channels ending in a 1x1 conv to one channel; every
/// tensor gets a unique name (some of them tricky), then node names are replaced by
/// `node_names` (cycled), which may be empty or repeated.
fn graph(
    layers: &[Layer],
    c: usize,
    seed: u64,
    tensor_pick: &[usize],
    node_pick: &[usize],
) -> pb::ModelProto {
    let mut v = Values(seed);
    let mut used = std::collections::HashSet::new();
    let mut fresh = |i: usize| {
        let tricky = TENSOR_NAMES[tensor_pick[i % tensor_pick.len()] % TENSOR_NAMES.len()];
        let name = if used.insert(tricky.to_string()) {
            tricky.to_string()
        } else {
            format!("t{i}")
        };
        used.insert(name.clone());
        name
    };
    let mut b = GraphBuilder::new("g", "input", c);
    let mut x = "input".to_string();
    let mut n = 0;
    let bn = |b: &mut GraphBuilder, v: &mut Values, name: String, x: &str| {
        let (g, be, m) = (
            v.take(c, 0.5, 1.5),
            v.take(c, -0.5, 0.5),
            v.take(c, -0.5, 0.5),
        );
        let var = v.take(c, 0.2, 2.0);
        b.batch_norm(&name, x, &g, &be, &m, &var, 1e-5)
    };
    for l in layers {
        match *l {
            Layer::ConvBn { k } => {
                let w = v.take(c * c * k * k, -0.5, 0.5);
                let y = b.conv(&fresh(n), &x, &w, [c, c, k, k], Some(&v.take(c, -0.1, 0.1)));
                x = bn(&mut b, &mut v, fresh(n + 1), &y);
            }
            Layer::ReluBn => {
                let y = b.relu(&fresh(n), &x);
                x = bn(&mut b, &mut v, fresh(n + 1), &y);
            }
            Layer::ConvBnResidual => {
                let w = v.take(c * c * 9, -0.5, 0.5);
                let y = b.conv(&fresh(n), &x, &w, [c, c, 3, 3], None);
                let z = bn(&mut b, &mut v, fresh(n + 1), &y);
                x = b.add(&fresh(n + 2), &y, &z);
            }
        }
        n += 3;
    }
    let w = v.take(c, -0.5, 0.5);
    let y = b.conv(&fresh(n), &x, &w, [1, c, 1, 1], None);
    let mut model = b.finish(&y, "output", "test");
    let graph = model.graph.as_mut().expect("graph");
    for (i, node) in graph.node.iter_mut().enumerate() {
        node.name = NODE_NAMES[node_pick[i % node_pick.len()] % NODE_NAMES.len()].to_string();
    }
    model
}

/// Run with tract (which keys nodes by name: both graphs get unique node names first,
/// as `Segmenter` gives them, after the passes).
fn run(model: &pb::ModelProto, c: usize, input: &Tensor) -> TractResult<Vec<f32>> {
    let mut model = model.clone();
    name_nodes_uniquely(model.graph.as_mut().expect("graph"));
    let out = tract_onnx::onnx()
        .model_for_proto_model(&model)?
        .with_input_fact(0, f32::fact([1, c, 8, 8]).into())?
        .into_optimized()?
        .into_runnable()?
        .run(tvec!(input.clone().into()))?;
    Ok(out[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Tolerance 1e-4 on outputs of magnitude ~1-10: folding reorders a few float
    /// operations per layer (~1e-6 relative each); taking the wrong initializer (a name
    /// collision) or the wrong channel moves outputs by 1e-1 or more.
    #[test]
    fn folding_is_exact_whatever_the_node_names(
        layers in prop::collection::vec(layer(), 1..6),
        c in 1usize..4,
        seed in any::<u64>(),
        tensor_pick in prop::collection::vec(0usize..12, 1..8),
        node_pick in prop::collection::vec(0usize..5, 1..8),
    ) {
        let model = graph(&layers, c, seed, &tensor_pick, &node_pick);
        let input = Tensor::from(tract_ndarray::Array4::from_shape_vec(
            (1, c, 8, 8),
            Values(seed ^ 0x5eed).take(c * 64, -1.0, 1.0),
        ).expect("shape"));
        let reference = run(&model, c, &input).map_err(|e| TestCaseError::fail(format!("unfolded: {e:?}")))?;
        let mut folded = model.clone();
        fold_batch_norms(&mut folded, "prop").expect("folds");
        let graph = folded.graph.as_ref().expect("graph");
        prop_assert!(graph.node.iter().all(|n| n.op_type != "BatchNormalization"));
        // every value and initializer name is produced once
        let mut seen = std::collections::HashSet::new();
        for name in graph.node.iter().flat_map(|n| n.output.iter()).chain(graph.initializer.iter().map(|t| &t.name)) {
            prop_assert!(seen.insert(name.clone()), "`{}` defined twice", name);
        }
        let got = run(&folded, c, &input).map_err(|e| TestCaseError::fail(format!("folded graph: {e:#}")))?;
        let d = common::max_abs(&reference, &got);
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        prop_assert!(d <= 1e-4 * scale, "folded vs unfolded max abs {} (scale {})", d, scale);
    }
}
