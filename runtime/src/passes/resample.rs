//! `Slice` (x2 decimation) and `Resize` (x2 nearest up-sampling) -> skipseg's own
//! ([`crate::kernels::resample`]), an ONNX -> ONNX rewrite run after convolution fusion
//! (which takes the up-samplings it can into a convolution's residual): the changes of
//! resolution left then run on every thread of the pool, in one pass, with one
//! definition in every engine that runs skipseg's graphs.

use crate::onnx::{self, pb};
use crate::passes::fuse_conv::{DOMAIN, is_upsample_x2};

/// The operator type of skipseg's x2 decimation (one input, `[N, C, H, W]`).
pub const OWN_DECIMATE: &str = "SkipsegDecimate";
/// The operator type of skipseg's x2 nearest up-sampling (one input, `[N, C, H, W]`).
pub const OWN_UPSAMPLE: &str = "SkipsegUpsample";

/// The operator type of skipseg's x2 nearest up-sampling summed with a map of its
/// output's size (two inputs: `[N, C, H, W]` and `[N, C, 2H, 2W]`), an `Add` of an
/// up-sampling that nothing else reads.
pub const OWN_UPSAMPLE_ADD: &str = "SkipsegUpsampleAdd";

/// What [`own_resampling`] replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResampleReport {
    pub decimations: usize,
    /// Up-samplings, those taken into an `Add` included.
    pub upsamplings: usize,
    /// `Add`s of an up-sampling read by nothing else, now [`OWN_UPSAMPLE_ADD`].
    pub upsample_adds: usize,
}

/// Whether `node` keeps every second row and column from the first: `Slice` with
/// constant starts 0, steps 2, on axes 2 and 3 (H, W) only, to the end.
pub(crate) fn is_decimate_x2(node: &pb::NodeProto, inits: &onnx::Initializers<'_>) -> bool {
    let get = |i: usize| {
        node.input
            .get(i)
            .and_then(|n| inits.get(n.as_str()))
            .and_then(|t| onnx::tensor_i64(t))
    };
    let (Some(starts), Some(ends), Some(axes), Some(steps)) = (get(1), get(2), get(3), get(4))
    else {
        return false;
    };
    let mut axes_sorted: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + 4 } else { a })
        .collect();
    axes_sorted.sort_unstable();
    node.op_type == "Slice"
        && node.domain.is_empty()
        && node.input.len() == 5
        && axes_sorted == [2, 3]
        && starts.iter().all(|&s| s == 0)
        && steps.iter().all(|&s| s == 2)
        && ends.iter().all(|&e| e >= i32::MAX as i64)
}

/// Replace every x2 decimation and x2 nearest up-sampling of the ONNX domain; their
/// constant operands stay as initializers (other nodes may share them).
pub fn own_resampling(model: &mut pb::ModelProto) -> ResampleReport {
    let mut report = ResampleReport::default();
    let Some(graph) = model.graph.as_mut() else {
        return report;
    };
    let inits = onnx::initializers(graph);
    let kinds: Vec<Option<&'static str>> = graph
        .node
        .iter()
        .map(|n| {
            if n.domain.is_empty() && is_decimate_x2(n, &inits) {
                Some(OWN_DECIMATE)
            } else if n.domain.is_empty() && is_upsample_x2(n, &inits) {
                Some(OWN_UPSAMPLE)
            } else {
                None
            }
        })
        .collect();
    for (node, kind) in graph.node.iter_mut().zip(kinds) {
        let Some(kind) = kind else { continue };
        node.op_type = kind.into();
        node.domain = DOMAIN.into();
        node.input.truncate(1);
        node.attribute.clear();
        match kind {
            OWN_DECIMATE => report.decimations += 1,
            _ => report.upsamplings += 1,
        }
    }
    report.upsample_adds = take_upsamplings_into_adds(graph);
    report
}

/// Turn `Add(up, b)` (or `Add(b, up)`), where `up` is a [`OWN_UPSAMPLE`] read by that
/// `Add` alone and not a graph output, into [`OWN_UPSAMPLE_ADD`]`(up's input, b)`; the
/// up-sampling node goes. Whether `b` has the up-sampled shape is known only once shapes
/// are: tract's operator checks it as it wires the node, and falls back to an
/// up-sampling and tract's `Add` where it has not.
fn take_upsamplings_into_adds(graph: &mut pb::GraphProto) -> usize {
    let mut readers: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *readers.entry(o.name.as_str()).or_default() += 1;
    }
    // output of a lone-read up-sampling -> (its node's index, its input)
    let upsamplings: std::collections::HashMap<String, (usize, String)> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.domain == DOMAIN && n.op_type == OWN_UPSAMPLE && n.input.len() == 1)
        .filter_map(|(i, n)| {
            let [out] = n.output.as_slice() else {
                return None;
            };
            (readers.get(out.as_str()) == Some(&1)).then(|| (out.clone(), (i, n.input[0].clone())))
        })
        .collect();
    let mut taken = Vec::new();
    for node in graph.node.iter_mut() {
        if !(node.domain.is_empty() && node.op_type == "Add" && node.input.len() == 2) {
            continue;
        }
        let Some(k) = (0..2).find(|&k| upsamplings.contains_key(&node.input[k])) else {
            continue;
        };
        let (index, input) = &upsamplings[&node.input[k]];
        let other = node.input[1 - k].clone();
        node.input = vec![input.clone(), other];
        node.op_type = OWN_UPSAMPLE_ADD.into();
        node.domain = DOMAIN.into();
        node.attribute.clear();
        taken.push(*index);
    }
    taken.sort_unstable();
    for index in taken.iter().rev() {
        graph.node.remove(*index);
    }
    taken.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::GraphBuilder;
    use tract_onnx::prelude::*;

    /// input -> decimate -> up-sample -> decimate, and a `Slice` of step 1 (not a
    /// decimation) at the end.
    fn model() -> pb::ModelProto {
        let mut b = GraphBuilder::new("g", "input", 1);
        let d = b.decimate("down", "input");
        let u = b.upsample("up", &d);
        let d2 = b.decimate("down2", &u);
        let mut model = b.finish(&d2, "output", "test");
        let graph = model.graph.as_mut().expect("a graph");
        let steps = graph
            .node
            .iter()
            .find(|n| n.name == "down2")
            .map(|n| n.input[4].clone())
            .expect("down2");
        // a copy of down2's steps, then made 1: a Slice that keeps every row
        let mut ones = graph
            .initializer
            .iter()
            .find(|t| t.name == steps)
            .cloned()
            .expect("steps");
        ones.name = "ones".into();
        ones.raw_data.clear();
        ones.int64_data = vec![1, 1];
        graph.initializer.push(ones);
        let last = graph.node.len() - 1;
        let mut keep = graph.node[last].clone();
        keep.name = "keep".into();
        keep.input[0] = "down2.tmp".into();
        keep.input[4] = "ones".into();
        graph.node[last].output[0] = "down2.tmp".into();
        graph.node.push(keep);
        model
    }

    fn run(model: &pb::ModelProto, h: usize, w: usize) -> Tensor {
        let x = Tensor::from_shape(
            &[1, 1, h, w],
            &(0..h * w).map(|i| i as f32 * 0.5 - 3.0).collect::<Vec<_>>(),
        )
        .expect("test setup");
        let plan = crate::engine::compile(model, 1, h, w, &[]).expect("compiles");
        let mut out = plan.run(tvec!(x.into_tvalue())).expect("runs");
        out.remove(0).into_tensor()
    }

    #[test]
    fn replaces_decimations_and_upsamplings_only() {
        let mut m = model();
        let report = own_resampling(&mut m);
        assert_eq!(
            report,
            ResampleReport {
                decimations: 2,
                upsamplings: 1,
                upsample_adds: 0,
            }
        );
        let ops: Vec<(&str, &str, usize)> = m
            .graph
            .as_ref()
            .expect("a graph")
            .node
            .iter()
            .map(|n| (n.op_type.as_str(), n.domain.as_str(), n.input.len()))
            .collect();
        assert_eq!(
            ops,
            [
                (OWN_DECIMATE, DOMAIN, 1),
                (OWN_UPSAMPLE, DOMAIN, 1),
                (OWN_DECIMATE, DOMAIN, 1),
                ("Slice", "", 5)
            ]
        );
        // nothing left to replace
        assert_eq!(own_resampling(&mut m), ResampleReport::default());
    }

    /// input -> decimate -> up-sample, added to the input (taken into the `Add`); the
    /// sum decimated, up-sampled and added to a constant `[1, 1, 1, 1]` (an `Add` that
    /// broadcasts: wired back as up-sampling and tract's `Add`); that sum decimated and
    /// up-sampled, added to itself twice (read twice: kept).
    fn model_with_adds() -> pb::ModelProto {
        let mut b = GraphBuilder::new("g", "input", 1);
        let d = b.decimate("down", "input");
        let u = b.upsample("up", &d);
        let s = b.add("skip", &u, "input");
        let d2 = b.decimate("down2", &s);
        let u2 = b.upsample("up2", &d2);
        let t = b.add("bias.add", "bias", &u2);
        let d3 = b.decimate("down3", &t);
        let u3 = b.upsample("up3", &d3);
        let a = b.add("twice.1", &u3, &t);
        let a = b.add("twice.2", &a, &u3);
        let mut model = b.finish(&a, "output", "test");
        let graph = model.graph.as_mut().expect("a graph");
        graph
            .initializer
            .push(onnx::f32_tensor("bias", &[1, 1, 1, 1], &[0.375]));
        model
    }

    #[test]
    fn takes_lone_upsamplings_into_their_adds() {
        let mut m = model_with_adds();
        let report = own_resampling(&mut m);
        assert_eq!(
            report,
            ResampleReport {
                decimations: 3,
                upsamplings: 3,
                upsample_adds: 2,
            }
        );
        let ops: Vec<(&str, &str)> = m
            .graph
            .as_ref()
            .expect("a graph")
            .node
            .iter()
            .map(|n| (n.name.as_str(), n.op_type.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("down", OWN_DECIMATE),
                ("skip", OWN_UPSAMPLE_ADD),
                ("down2", OWN_DECIMATE),
                ("bias.add", OWN_UPSAMPLE_ADD),
                ("down3", OWN_DECIMATE),
                ("up3", OWN_UPSAMPLE),
                ("twice.1", "Add"),
                ("twice.2", "Add"),
            ]
        );
        let skip = &m.graph.as_ref().expect("a graph").node[1];
        assert_eq!(skip.input, ["down", "input"]);
        assert_eq!(own_resampling(&mut m), ResampleReport::default());
    }

    /// The fused sums give tract's bits, where the added map has the up-sampled shape and
    /// where it broadcasts, on 1 and 2 threads.
    #[test]
    fn upsampling_adds_give_the_bits_of_tracts() {
        let original = model_with_adds();
        let mut own = original.clone();
        own_resampling(&mut own);
        // the sum with the input runs as skipseg's operator, the broadcasting one as
        // tract's up-sampling and Add
        let plan = crate::engine::compile(&own, 1, 8, 12, &[]).expect("compiles");
        let ops: Vec<String> = plan
            .model()
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect();
        let count = |op: &str| ops.iter().filter(|o| o.as_str() == op).count();
        assert_eq!(
            (count(OWN_UPSAMPLE_ADD), count(OWN_UPSAMPLE)),
            (1, 2),
            "{ops:?}"
        );
        let pool = crate::engine::ThreadPool::new(2).expect("test setup");
        for (h, w) in [(8, 12), (2, 2), (64, 36)] {
            let want = run(&original, h, w);
            assert_eq!(want.shape(), &[1, 1, h, w]);
            assert_eq!(run(&own, h, w), want, "{h}x{w}");
            assert_eq!(pool.install(|| run(&own, h, w)), want, "{h}x{w}, 2 threads");
        }
    }

    /// tract's `Slice` and `Resize` and skipseg's operators give the same bits, on odd
    /// and even sides, one thread or two.
    #[test]
    fn own_operators_give_the_bits_of_tracts() {
        let original = model();
        let mut own = original.clone();
        own_resampling(&mut own);
        let pool = crate::engine::ThreadPool::new(2).expect("test setup");
        for (h, w) in [(8, 12), (7, 9), (1, 1), (33, 64)] {
            let want = run(&original, h, w);
            assert_eq!(want.shape(), &[1, 1, h.div_ceil(2), w.div_ceil(2)]);
            assert_eq!(run(&own, h, w), want, "{h}x{w}");
            assert_eq!(pool.install(|| run(&own, h, w)), want, "{h}x{w}, 2 threads");
        }
    }
}
