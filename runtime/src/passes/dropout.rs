//! Monte-Carlo dropout in ONNX.
//!
//! A model trained with dropout is exported with its dropout layers as
//! `Mul(activation, dropout_mask.<block>)`, where each `dropout_mask.<block>` is a graph
//! input `[1, C, h, w]` whose default value (an initializer of the same name, which ONNX
//! lets a caller override) is ones `[1, C, 1, 1]`. So the model run as it is, by any ONNX
//! runtime, is the deterministic network (inverted dropout: weights need no rescaling);
//! a caller that feeds masks of zeros and `1 / (1 - p)` samples it.
//!
//! Two rewrites prepare such a model for tract:
//! - [`strip_masks`] removes the masks and their `Mul` nodes (the deterministic network,
//!   and the graph the other passes know how to fuse);
//! - [`expose_masks`] removes the default values, so the masks become inputs that the
//!   engine fills with samples ([`MaskSite`], [`sample_mask`]).

use crate::arch::ArchSpec;
use crate::onnx::pb;

/// Name prefix of the mask inputs.
pub const MASK_PREFIX: &str = "dropout_mask.";

/// The mask input of the block named `block` (`down2.block3`).
pub fn mask_name(block: &str) -> String {
    format!("{MASK_PREFIX}{block}")
}

/// Where a dropout mask goes: its input name, its channels, and the resolution divisor
/// (log2) of the block it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskSite {
    pub name: String,
    pub channels: usize,
    pub scale_log2: u32,
}

impl MaskSite {
    /// The mask's shape for an input of `height` x `width` (multiples of the network's
    /// down-sampling factor).
    pub fn shape(&self, height: usize, width: usize) -> [usize; 4] {
        [
            1,
            self.channels,
            height >> self.scale_log2,
            width >> self.scale_log2,
        ]
    }
}

/// The dropout sites of an architecture (none when its dropout is 0): one per residual
/// block, before the block's last convolution, in forward order.
pub fn mask_sites(arch: &ArchSpec) -> Vec<MaskSite> {
    if arch.dropout <= 0.0 {
        return Vec::new();
    }
    let plan = arch.plan();
    plan.down
        .iter()
        .chain(std::iter::once(&plan.across))
        .chain(&plan.up)
        .flat_map(|level| &level.blocks)
        .filter_map(|b| {
            b.convs().last().map(|c| MaskSite {
                name: mask_name(&b.name),
                channels: c.in_ch,
                scale_log2: b.scale_log2,
            })
        })
        .collect()
}

/// The graph inputs of `graph` that are dropout masks.
pub fn mask_inputs(graph: &pb::GraphProto) -> Vec<String> {
    graph
        .input
        .iter()
        .filter(|i| i.name.starts_with(MASK_PREFIX))
        .map(|i| i.name.clone())
        .collect()
}

/// Remove every dropout mask and its `Mul`: the deterministic network. Returns the
/// number of masks removed.
pub fn strip_masks(model: &mut pb::ModelProto) -> usize {
    let Some(graph) = model.graph.as_mut() else {
        return 0;
    };
    let masks = mask_inputs(graph);
    if masks.is_empty() {
        return 0;
    }
    let is_mask = |v: &str| masks.iter().any(|m| m == v);
    // each Mul(x, mask) -> its output is renamed to x everywhere it is read
    let mut renames = std::collections::HashMap::new();
    graph.node.retain(|n| {
        if n.op_type == "Mul" && n.input.len() == 2 && n.output.len() == 1 {
            let other = match (is_mask(&n.input[0]), is_mask(&n.input[1])) {
                (false, true) => Some(&n.input[0]),
                (true, false) => Some(&n.input[1]),
                _ => None,
            };
            if let Some(x) = other {
                renames.insert(n.output[0].clone(), x.clone());
                return false;
            }
        }
        true
    });
    let resolve = |v: &String| {
        let mut v = v.clone();
        while let Some(next) = renames.get(&v) {
            v = next.clone();
        }
        v
    };
    for n in &mut graph.node {
        for i in &mut n.input {
            *i = resolve(i);
        }
    }
    for o in &mut graph.output {
        o.name = resolve(&o.name);
    }
    graph.input.retain(|i| !is_mask(&i.name));
    graph.initializer.retain(|t| !is_mask(&t.name));
    masks.len()
}

/// Remove the masks' default values so that they are inputs the caller must feed.
/// Returns the mask input names, in graph-input order.
pub fn expose_masks(model: &mut pb::ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_mut() else {
        return Vec::new();
    };
    let masks = mask_inputs(graph);
    graph.initializer.retain(|t| !masks.contains(&t.name));
    masks
}

/// The random numbers of the masks: SplitMix64 (Steele, Lea and Flood 2014), spelled out
/// here so that a seed means the same masks on every platform and in every version.
#[derive(Debug, Clone)]
pub struct MaskRng(u64);

impl MaskRng {
    /// A generator for one stream, e.g. `(seed, sample, tile)`: the parts are mixed so
    /// that nearby seeds give unrelated streams.
    pub fn new(parts: &[u64]) -> Self {
        let mut r = MaskRng(0x5EED_5EED_5EED_5EED);
        for &p in parts {
            r.0 ^= p;
            r.0 = r.next_u64();
        }
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// A dropout mask of `shape`: each element is 0 with probability `p`, else `1 / (1 - p)`
/// (inverted dropout), drawn from `rng`.
pub fn sample_mask(rng: &mut MaskRng, shape: [usize; 4], p: f64) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p) as f32;
    // p as a threshold on 32 random bits
    let threshold = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
    (0..shape.iter().product::<usize>())
        .map(|_| {
            if rng.next_u32() < threshold {
                0.0
            } else {
                keep
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_drop_about_p_and_keep_the_mean() {
        let mut rng = MaskRng::new(&[7]);
        let n = 200_000;
        let m = sample_mask(&mut rng, [1, 1, 1, n], 0.2);
        let zeros = m.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
        // binomial: sd of the fraction sqrt(0.2 * 0.8 / n) = 0.0009; 5 sd
        assert!((zeros - 0.2).abs() < 0.0045, "{zeros}");
        let mean = m.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.006, "{mean}");
        assert!(m.iter().all(|v| *v == 0.0 || *v == 1.25));
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // SplitMix64 seeded with 0 (state 0 before the first step): the reference
        // implementation's first outputs
        let mut r = MaskRng(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        // different stream parts, different streams
        assert_ne!(
            MaskRng::new(&[1, 0]).next_u64(),
            MaskRng::new(&[0, 1]).next_u64()
        );
    }
}
