//! Timing the engine on one window (`segment-run bench`): start-up and the median of
//! repeated runs on a deterministic input, optionally tract's per-node profile.

use std::time::Instant;

use ndarray::Array4;

use super::{Profile, Segmenter};
use crate::error::Result;

/// A deterministic, standardised-looking `[1, channels, h, w]` input (speed does not
/// depend on the values): what the benchmarks and checks run on.
pub fn texture(channels: usize, h: usize, w: usize) -> Array4<f32> {
    Array4::from_shape_fn((1, channels, h, w), |(_, c, y, x)| {
        (((y * 31 + x * 17 + c * 7) % 97) as f32 / 48.0 - 1.0) * 1.7
    })
}

/// What [`time_window`] measured (seconds).
#[derive(Debug, Clone)]
pub struct WindowTiming {
    pub size: usize,
    /// Compiling tract's plan for the size.
    pub optimise: f64,
    pub first_run: f64,
    /// Every timed run, in order.
    pub runs: Vec<f64>,
    pub median: f64,
    /// FLOPs of one window (2 per multiply-accumulate).
    pub flops: f64,
    pub profile: Option<Profile>,
}

/// Time `seg` on a `size` x `size` window: the plan's compilation, a first run, one more
/// warm-up, then `repeats` timed runs; with `profile`, tract's per-node times too.
pub fn time_window(
    seg: &Segmenter,
    size: usize,
    repeats: usize,
    profile: bool,
) -> Result<WindowTiming> {
    let repeats = repeats.max(1);
    let channels = seg.meta().arch.in_channels;
    seg.check_input_shape(&[1, channels, size, size])?;
    let input = texture(channels, size, size).into_dyn();
    let t = Instant::now();
    seg.plan_ops(size, size)?;
    let optimise = t.elapsed().as_secs_f64();
    let t = Instant::now();
    seg.run(input.view())?;
    let first_run = t.elapsed().as_secs_f64();
    seg.run(input.view())?; // second warm-up
    let mut runs = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        seg.run(input.view())?;
        runs.push(t.elapsed().as_secs_f64());
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let flops = seg.meta().arch.plan().cost(size, size).flops() as f64;
    let profile = profile
        .then(|| seg.profile(input.view(), repeats))
        .transpose()?;
    Ok(WindowTiming {
        size,
        optimise,
        first_run,
        runs,
        median,
        flops,
        profile,
    })
}

/// What [`compare_embedded`] measured: per-run seconds of each engine, alternating.
#[derive(Debug, Clone)]
pub struct EmbeddedComparison {
    pub size: usize,
    pub tract_runs: Vec<f64>,
    pub embedded_runs: Vec<f64>,
    /// Size of the embedded model file.
    pub bytes_converted: usize,
}

impl EmbeddedComparison {
    fn median(runs: &[f64]) -> f64 {
        let mut s = runs.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }
    pub fn tract_median(&self) -> f64 {
        Self::median(&self.tract_runs)
    }
    pub fn embedded_median(&self) -> f64 {
        Self::median(&self.embedded_runs)
    }
}

/// Time tract's plan of `seg` and the embedded executor of the same graph
/// ([`crate::embedded`], converted in memory, same threads) on one `size` x `size`
/// window, alternating run by run so that both see the same machine; `repeats` timed
/// runs each after two warm-ups. Checks on the way that both give the same bits (build
/// `seg` with [`crate::Options::fuse_every_convolution`]: on ARM tract keeps some
/// convolutions otherwise).
pub fn compare_embedded(
    seg: &Segmenter,
    size: usize,
    repeats: usize,
    threads: usize,
) -> Result<EmbeddedComparison> {
    let graph = seg.embedded_graph()?;
    let bytes = crate::embedded::format::encode(&graph);
    let embedded = crate::embedded::EmbeddedModel::from_bytes(&bytes, seg.source_name(), threads)?;
    let channels = seg.meta().arch.in_channels;
    seg.check_input_shape(&[1, channels, size, size])?;
    let input = texture(channels, size, size);
    let want = seg.run(input.view().into_dyn())?;
    let got = embedded.run(input.view())?;
    if want
        .iter()
        .zip(&got)
        .any(|(a, b)| a.to_bits() != b.to_bits())
    {
        return Err(crate::error::Error::Engine {
            source_name: seg.source_name().into(),
            reason: "the embedded executor's output differs from tract's plan".into(),
        });
    }
    // (those two runs were both engines' warm-up)
    let (mut tract_runs, mut embedded_runs) = (Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        seg.run(input.view().into_dyn())?;
        tract_runs.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        embedded.run(input.view())?;
        embedded_runs.push(t.elapsed().as_secs_f64());
    }
    Ok(EmbeddedComparison {
        size,
        tract_runs,
        embedded_runs,
        bytes_converted: bytes.len(),
    })
}
