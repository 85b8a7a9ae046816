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

/// What [`own_resampling`] replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResampleReport {
    pub decimations: usize,
    pub upsamplings: usize,
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
    report
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
                upsamplings: 1
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
