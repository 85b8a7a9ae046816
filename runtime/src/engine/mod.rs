//! Running a skipseg model: an ONNX model with tract, or an embedded model
//! ([`crate::embedded`]) with skipseg's own executor.
//!
//! A [`Segmenter`] holds the model and its metadata. For an ONNX model it compiles one
//! optimised tract plan per input size on first use (tiles share one size, so this is
//! one plan in practice); an embedded model needs no compilation. Without the `onnx`
//! feature only embedded models load.

use std::path::Path;
use std::sync::Arc;
#[cfg(feature = "onnx")]
use std::sync::Mutex;

use ndarray::{Array2, Array4, ArrayView2, ArrayView4, ArrayViewD, Axis, Ix4};
#[cfg(feature = "onnx")]
use tract_onnx::prelude::*;

#[cfg(feature = "onnx")]
pub mod bench;
#[cfg(feature = "onnx")]
pub mod halo;
#[cfg(feature = "onnx")]
pub mod ops;
pub mod pixels;

#[cfg(feature = "onnx")]
pub use halo::{
    HALO_TOLERANCE, HALO_TOLERANCE_TEXT, HaloMeasurement, HaloTrial, MEASURE_TILE_PX, measure_halo,
    record_halo, whole_image,
};

use crate::embedded::EmbeddedModel;
use crate::error::{Error, Result};
pub use crate::onnx::Averaging;
#[cfg(feature = "onnx")]
use crate::onnx::{self, pb};
use crate::onnx::{IntensityStats, ModelMeta, Normalisation};
#[cfg(feature = "onnx")]
use crate::passes::dropout::{MaskRng, MaskSite};
use crate::tiling::{self, ArrayRows, Blend, Region, RowSink, RowSource, Tile, TilePlan, Tiling};

#[cfg(feature = "onnx")]
type Plan = Arc<TypedRunnableModel>;

/// Compiled plans a [`Segmenter`] keeps. Tiled inference needs one per window shape
/// (two with dihedral averaging of non-square windows); a caller feeding whole images of
/// many sizes recompiles the least recently used size instead of growing without bound.
pub const MAX_CACHED_PLANS: usize = 4;

/// A loaded model, ready to segment network-normalised input arrays.
pub struct Segmenter {
    source_name: String,
    /// The ONNX graph after the passes (empty for an embedded model).
    #[cfg(feature = "onnx")]
    proto: pb::ModelProto,
    meta: ModelMeta,
    /// Compiled plans by input size, most recently used first (at most
    /// [`MAX_CACHED_PLANS`]).
    #[cfg(feature = "onnx")]
    plans: Mutex<Vec<((usize, usize), Plan)>>,
    /// tract's multithread executor when more than one thread is asked for.
    #[cfg(feature = "onnx")]
    executor: Option<tract_linalg::multithread::Executor>,
    /// The dropout mask inputs (graph inputs 1..), when kept for Monte-Carlo sampling.
    #[cfg(feature = "onnx")]
    masks: Vec<MaskSite>,
    /// An embedded model, run by skipseg's executor instead of tract.
    embedded: Option<Box<EmbeddedModel>>,
    /// What window sizes must be multiples of: the down-sampling factor, or the size
    /// step a bioimage.io package declares.
    size_step: usize,
    /// Nanoseconds spent in tract's plan (every run, summed), for
    /// [`Self::network_seconds`].
    network_nanos: std::sync::atomic::AtomicU64,
}

/// How a [`Segmenter`] prepares and runs its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Fold batch norms into convolutions / affine ops before tract sees the graph.
    pub fold_batch_norm: bool,
    /// Run convolutions (with their pre-activations and residual sums) on skipseg's own
    /// kernels ([`crate::passes::fuse_conv`]) instead of tract's, where they are faster
    /// on this CPU (every convolution on x86-64; by layer shape on ARM:
    /// [`crate::passes::fuse_conv::skipseg_beats_tract`]).
    pub fuse_convolutions: bool,
    /// With `fuse_convolutions`, take over every convolution skipseg's kernels support,
    /// also where tract's are faster on this CPU (tests and comparisons of the kernels).
    pub fuse_every_convolution: bool,
    /// Between two fused quantized convolutions, pass the `u8` codes the second one reads
    /// instead of floats ([`crate::passes::chain_int8`]; same values, less memory
    /// traffic). Needs `fuse_convolutions`.
    pub chain_int8: bool,
    /// Threads of tract's executor (1 = single-threaded).
    pub threads: usize,
    /// Keep the dropout masks of a model trained with dropout as inputs, so that
    /// [`Inference::monte_carlo`] can sample them; otherwise they are removed and the
    /// model is the deterministic network ([`crate::passes::dropout`]).
    pub monte_carlo_dropout: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fold_batch_norm: true,
            fuse_convolutions: true,
            fuse_every_convolution: false,
            chain_int8: true,
            threads: 1,
            monte_carlo_dropout: false,
        }
    }
}

/// Monte-Carlo dropout at inference (the paper's best entry): every window is run
/// `samples` times with fresh dropout masks and the outputs averaged. Masks are drawn
/// from `seed`, the window's index and the sample's, so a seed gives the same output
/// every time, whatever the thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonteCarlo {
    pub samples: usize,
    pub seed: u64,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("source", &self.source_name)
            .field("arch", &self.meta.arch.name)
            .finish()
    }
}

impl Segmenter {
    /// Load a model file: an ONNX file exported by skipseg, or an embedded model
    /// (`segment-run optimize --embedded`), told apart by the embedded format's header.
    pub fn from_path(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            action: "read",
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Load from bytes (ONNX, or an embedded model); `source_name` names it in errors.
    /// Without the `onnx` feature, an ONNX model is refused with a clear error.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Self> {
        #[cfg(feature = "onnx")]
        if !bytes.starts_with(crate::embedded::format::MAGIC) {
            return Self::from_proto(onnx::decode_model(bytes, source_name)?, source_name);
        }
        Self::from_embedded(bytes, source_name, 1)
    }

    /// Load an embedded model ([`crate::embedded::format`]); `threads` > 1 runs it on a
    /// pool of its own.
    pub fn from_embedded(bytes: &[u8], source_name: &str, threads: usize) -> Result<Self> {
        let model = EmbeddedModel::from_bytes(bytes, source_name, threads)?;
        let meta = model.meta().clone();
        let size_step = meta.arch.down_factor();
        Ok(Self {
            source_name: source_name.to_string(),
            #[cfg(feature = "onnx")]
            proto: pb::ModelProto::default(),
            meta,
            #[cfg(feature = "onnx")]
            plans: Mutex::new(Vec::new()),
            #[cfg(feature = "onnx")]
            executor: None,
            #[cfg(feature = "onnx")]
            masks: Vec::new(),
            embedded: Some(Box::new(model)),
            size_step,
            network_nanos: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// An upper bound of the bytes tiled inference ([`segment_tiled`]) over a `height x
    /// width` image allocates at its peak with `how` and `threads` threads, computed
    /// without running anything: the tiler's rows and window
    /// ([`TilePlan::stitch_bytes`]), the window's copies for test-time averaging and their
    /// outputs, and the network's own peak ([`EmbeddedModel::peak_bytes`], for the
    /// window and, with dihedral averaging, its transpose). The image and the output
    /// are the caller's; the loaded model's weights are not counted.
    ///
    /// Embedded models only: tract's plan of an ONNX model allocates as it sees fit.
    pub fn peak_bytes(
        &self,
        how: &Inference,
        height: usize,
        width: usize,
        threads: usize,
    ) -> Result<usize> {
        let Some(e) = &self.embedded else {
            return Err(self.engine_err(
                "a memory report needs an embedded model (segment-run optimize --embedded): \
                 tract's plan of an ONNX model allocates as it sees fit",
            ));
        };
        if how.monte_carlo.is_some_and(|mc| mc.samples > 0) {
            return Err(self.engine_err("an embedded model runs no Monte-Carlo samples"));
        }
        if height == 0 || width == 0 {
            return Err(Error::Input {
                name: self.source_name.clone(),
                reason: format!("an image of {width}x{height} pixels"),
            });
        }
        let plan = self.tile_plan(&how.tiling, height, width)?;
        let (wh, ww) = (plan.window_h, plan.window_w);
        let n = how.averaging.symmetries().len();
        let channels = self.meta.arch.in_channels;
        let window = channels * wh * ww * 4;
        let output = wh * ww * 4;
        // while the network runs on symmetry k, the inputs not yet run (k..n) and the
        // outputs of those run (..k) are held: at most n of the larger; before and
        // after the runs, one transformed copy of the window or of an output besides
        let larger = window.max(output);
        let averaging = n * larger
            + if n > 1 { larger } else { 0 }
            + 2 * n * std::mem::size_of::<Array4<f32>>();
        let mut network = e.peak_bytes(wh, ww, threads);
        if how.averaging == Averaging::Dihedral {
            network = network.max(e.peak_bytes(ww, wh, threads));
        }
        Ok(plan.stitch_bytes(how.blend) + averaging + network)
    }

    /// Whether the model is an embedded one (run by skipseg's executor, not tract).
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    #[cfg(feature = "onnx")]
    /// Wrap an already decoded model; batch norms are folded first (see
    /// [`crate::passes::fold_bn`]).
    pub fn from_proto(proto: pb::ModelProto, source_name: &str) -> Result<Self> {
        Self::with_options(proto, source_name, &Options::default())
    }

    #[cfg(feature = "onnx")]
    /// Wrap a decoded model with explicit options.
    pub fn with_options(
        mut proto: pb::ModelProto,
        source_name: &str,
        options: &Options,
    ) -> Result<Self> {
        let meta = ModelMeta::from_model(&proto, source_name)?;
        onnx::validate(
            &proto,
            &onnx::Expected {
                in_channels: meta.arch.in_channels,
            },
            source_name,
        )?;
        let masks =
            if options.monte_carlo_dropout {
                let sites = crate::passes::dropout::mask_sites(&meta.arch);
                let names = crate::passes::dropout::expose_masks(&mut proto);
                names
                    .iter()
                    .map(|n| {
                        sites.iter().find(|s| &s.name == n).cloned().ok_or_else(|| {
                            Error::BadModel {
                                source_name: source_name.to_string(),
                                reason: format!(
                                    "dropout mask input `{n}` belongs to no residual block of the \
                                 architecture in the metadata (dropout {})",
                                    meta.arch.dropout
                                ),
                            }
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            } else {
                crate::passes::dropout::strip_masks(&mut proto);
                Vec::new()
            };
        if options.fold_batch_norm {
            crate::passes::fold_batch_norms(&mut proto, source_name)?;
        }
        if options.fuse_convolutions {
            if options.fuse_every_convolution {
                crate::passes::fuse_convolutions(&mut proto, source_name)?;
            } else {
                crate::passes::fuse_convolutions_where_faster(&mut proto, source_name)?;
            }
            crate::passes::own_sigmoid(&mut proto);
            crate::passes::own_resampling(&mut proto);
            // after the resampling pass: an up-sampling add can write codes
            if options.chain_int8 {
                crate::passes::chain_quantized_convs(&mut proto, crate::passes::Chaining::Full);
            }
        }
        if let Some(graph) = proto.graph.as_mut() {
            onnx::name_nodes_uniquely(graph);
        }
        let size_step = meta.arch.down_factor();
        Ok(Self {
            source_name: source_name.to_string(),
            proto,
            meta,
            size_step,
            network_nanos: std::sync::atomic::AtomicU64::new(0),
            plans: Mutex::new(Vec::new()),
            executor: (options.threads > 1)
                .then(|| thread_pool(options.threads))
                .transpose()?,
            masks,
            embedded: None,
        })
    }

    /// Make window sizes multiples of `step` (a multiple of the down-sampling factor, as
    /// a bioimage.io package may declare); a step the network cannot take is ignored.
    pub fn set_size_step(&mut self, step: usize) {
        let factor = self.meta.arch.down_factor();
        if step >= factor && step.is_multiple_of(factor) {
            self.size_step = step;
        }
    }

    /// What window sizes are multiples of ([`Self::set_size_step`]).
    pub fn size_step(&self) -> usize {
        self.size_step
    }

    /// The halo of default tiling: the one the model records (measured by
    /// [`measure_halo`]), else [`tiling::FALLBACK_HALO`].
    pub fn default_halo(&self) -> usize {
        self.meta.inference.halo.unwrap_or(tiling::FALLBACK_HALO)
    }

    /// The largest window side of default tiling for images `width` wide: one window's
    /// activations and the row bands stay within [`tiling::DEFAULT_MEMORY_BYTES`]
    /// ([`tiling::default_max_window`]).
    pub fn default_max_window(&self, width: usize) -> usize {
        let map = self.meta.arch.plan().widest_map_bytes_per_pixel();
        tiling::default_max_window(map, width).max(self.size_step)
    }

    /// The tiles for an image of `height` x `width`: `tiling`'s tile and halo, or the
    /// defaults ([`Self::default_halo`]; cores fitted to [`Self::default_max_window`]).
    pub fn tile_plan(&self, tiling: &Tiling, height: usize, width: usize) -> Result<TilePlan> {
        let halo = tiling.halo.unwrap_or_else(|| self.default_halo());
        match tiling.tile {
            Some(tile) => TilePlan::new(height, width, tile, halo, self.size_step),
            None => TilePlan::fitted(
                height,
                width,
                self.default_max_window(width),
                halo,
                self.size_step,
            ),
        }
    }

    /// The dropout mask inputs kept for Monte-Carlo sampling (empty: the model has no
    /// dropout, or it was loaded without [`Options::monte_carlo_dropout`]).
    #[cfg(feature = "onnx")]
    pub fn dropout_masks(&self) -> &[MaskSite] {
        &self.masks
    }

    /// Whether Monte-Carlo sampling is possible: dropout masks kept (ONNX models only).
    pub fn has_dropout_masks(&self) -> bool {
        #[cfg(feature = "onnx")]
        return !self.masks.is_empty();
        #[cfg(not(feature = "onnx"))]
        false
    }

    #[cfg(feature = "onnx")]
    /// Run the network on a normalised `[1, C, H, W]` input with the given dropout
    /// masks (one per [`Self::dropout_masks`] site, each of its
    /// [`MaskSite::shape`]); returns the membrane probability `[1, 1, H, W]`.
    pub fn run_with_masks(
        &self,
        input: ArrayViewD<'_, f32>,
        masks: &[ArrayViewD<'_, f32>],
    ) -> Result<Array4<f32>> {
        let (h, w) = self.check_input_shape(input.shape())?;
        if masks.len() != self.masks.len()
            || self
                .masks
                .iter()
                .zip(masks)
                .any(|(site, m)| m.shape() != site.shape(h, w))
        {
            return Err(self.engine_err(format!(
                "{} dropout masks of shapes {:?} given; this model takes {} of shapes {:?}",
                masks.len(),
                masks.iter().map(|m| m.shape().to_vec()).collect::<Vec<_>>(),
                self.masks.len(),
                self.masks.iter().map(|s| s.shape(h, w)).collect::<Vec<_>>()
            )));
        }
        let mut inputs: TVec<TValue> = tvec!(input.to_owned().into_tensor().into_tvalue());
        inputs.extend(
            masks
                .iter()
                .map(|m| m.to_owned().into_tensor().into_tvalue()),
        );
        self.execute(h, w, inputs)
    }

    #[cfg(feature = "onnx")]
    /// Run the plan for `h x w` on `inputs` (the image, then any masks); the membrane
    /// probability `[1, 1, H, W]`.
    fn execute(&self, h: usize, w: usize, inputs: TVec<TValue>) -> Result<Array4<f32>> {
        let plan = self.plan(h, w)?;
        let mut outputs = self.timed(|| self.guarded(|| self.in_pool(|| plan.run(inputs))))?;
        if outputs.is_empty() {
            return Err(self.engine_err("the plan returned no output"));
        }
        // the output tensor is this run's own: taken without a copy
        let out = outputs
            .remove(0)
            .into_tensor()
            .into_plain_array::<f32>()
            .map_err(|e| self.engine_err(e))?
            .into_dimensionality::<Ix4>()
            .map_err(|e| self.engine_err(e))?;
        // a malformed graph can run to an output of another size (one found by fuzzing
        // has an empty convolution: 0 rows out)
        match out.shape() {
            [1, c, oh, ow] if *c >= 1 && (*oh, *ow) == (h, w) => Ok(out),
            shape => Err(self.engine_err(format!(
                "the engine failed on this graph: its output is {shape:?} for a {h}x{w} window, \
                 expected [1, 1, {h}, {w}]"
            ))),
        }
    }

    /// Monte-Carlo sampling needs an ONNX model loaded with its dropout masks; this build
    /// has no ONNX front end.
    #[cfg(not(feature = "onnx"))]
    pub fn run_sample(&self, _input: ArrayViewD<'_, f32>, _stream: &[u64]) -> Result<Array4<f32>> {
        Err(self.engine_err(
            "Monte-Carlo dropout needs the ONNX model with its dropout masks (this build loads \
             embedded models only)",
        ))
    }

    #[cfg(feature = "onnx")]
    /// One Monte-Carlo sample for the window `input` (`[1, C, H, W]`): masks drawn from
    /// `stream` (e.g. seed, window, sample).
    pub fn run_sample(&self, input: ArrayViewD<'_, f32>, stream: &[u64]) -> Result<Array4<f32>> {
        let (h, w) = self.check_input_shape(input.shape())?;
        let mut rng = MaskRng::new(stream);
        let p = self.meta.arch.dropout;
        let masks: Vec<ndarray::ArrayD<f32>> = self
            .masks
            .iter()
            .map(|site| {
                let shape = site.shape(h, w);
                ndarray::ArrayD::from_shape_vec(
                    shape.to_vec(),
                    crate::passes::dropout::sample_mask(&mut rng, shape, p),
                )
                .expect("mask length is the shape's product")
            })
            .collect();
        let views: Vec<ArrayViewD<'_, f32>> = masks.iter().map(|m| m.view()).collect();
        self.run_with_masks(input, &views)
    }

    #[cfg(feature = "onnx")]
    /// The ONNX graph tract runs (after the passes).
    pub fn proto(&self) -> &pb::ModelProto {
        &self.proto
    }

    /// Architecture and preprocessing recorded in the model.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The file (or label) the model came from.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Check an input shape without running anything.
    pub fn check_input_shape(&self, shape: &[usize]) -> Result<(usize, usize)> {
        let channels = self.meta.arch.in_channels;
        if shape.len() != 4
            || shape[0] != 1
            || shape[1] != channels
            || shape[2] == 0
            || shape[3] == 0
        {
            return Err(Error::InputShape {
                source_name: self.source_name.clone(),
                shape: shape.to_vec(),
                expected_channels: channels,
            });
        }
        let factor = self.meta.arch.down_factor();
        let (height, width) = (shape[2], shape[3]);
        if !height.is_multiple_of(factor) || !width.is_multiple_of(factor) {
            return Err(Error::NotMultiple {
                source_name: self.source_name.clone(),
                height,
                width,
                factor,
            });
        }
        Ok((height, width))
    }

    /// Run the network on a normalised `[1, C, H, W]` input; returns the membrane
    /// probability `[1, 1, H, W]`.
    pub fn run(&self, input: ArrayViewD<'_, f32>) -> Result<Array4<f32>> {
        let (h, w) = self.check_input_shape(input.shape())?;
        let input = input.into_dimensionality::<Ix4>().expect("rank checked");
        self.run4(input, h, w)
    }

    fn run4(&self, input: ArrayView4<'_, f32>, h: usize, w: usize) -> Result<Array4<f32>> {
        if let Some(e) = &self.embedded {
            return self.timed(|| e.run(input));
        }
        #[cfg(not(feature = "onnx"))]
        return Err(self.engine_err(format!("no engine for a {h}x{w} input")));
        #[cfg(feature = "onnx")]
        if !self.masks.is_empty() {
            // the deterministic network: every mask at its default, ones
            let ones: Vec<ndarray::ArrayD<f32>> = self
                .masks
                .iter()
                .map(|s| ndarray::ArrayD::ones(s.shape(h, w).to_vec()))
                .collect();
            let views: Vec<ArrayViewD<'_, f32>> = ones.iter().map(|m| m.view()).collect();
            return self.run_with_masks(input.into_dyn(), &views);
        }
        #[cfg(feature = "onnx")]
        self.execute(h, w, tvec!(input.to_owned().into_tensor().into_tvalue()))
    }

    /// `f`, its time added to [`Self::network_seconds`].
    fn timed<R>(&self, f: impl FnOnce() -> R) -> R {
        let started = std::time::Instant::now();
        let out = f();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.network_nanos
            .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
        out
    }

    /// Run several independent windows (e.g. the symmetries of one tile), each a
    /// normalised `[1, C, H, W]` input handed to the engine without a copy: concurrently
    /// on the thread pool when there is one (each window is a task; its convolutions
    /// still split into tasks that idle threads steal), in order otherwise. Outputs come
    /// in the order of `inputs`.
    pub fn run_many(&self, inputs: Vec<Array4<f32>>) -> Result<Vec<Array4<f32>>> {
        if self.embedded.is_some() {
            // the executor's kernels already use every thread of its pool
            return inputs
                .into_iter()
                .map(|x| {
                    let (h, w) = self.check_input_shape(x.shape())?;
                    self.run4(x.view(), h, w)
                })
                .collect();
        }
        #[cfg(not(feature = "onnx"))]
        return Err(self.engine_err("no engine"));
        #[cfg(feature = "onnx")]
        let one = |x: Array4<f32>| -> Result<Array4<f32>> {
            let (h, w) = self.check_input_shape(x.shape())?;
            if !self.masks.is_empty() {
                return self.run4(x.view(), h, w);
            }
            self.execute(h, w, tvec!(x.into_tensor().into_tvalue()))
        };
        #[cfg(feature = "onnx")]
        match &self.executor {
            Some(tract_linalg::multithread::Executor::MultiThread(pool)) if inputs.len() > 1 => {
                use rayon::prelude::*;
                pool.install(|| inputs.into_par_iter().map(one).collect())
            }
            _ => inputs.into_iter().map(one).collect(),
        }
    }

    /// The graph this segmenter runs (after every pass) as an embedded model
    /// ([`crate::embedded`]): what `segment-run optimize --embedded` writes.
    pub fn embedded_graph(&self) -> Result<crate::embedded::Graph> {
        if let Some(e) = &self.embedded {
            return Ok(e.graph().clone());
        }
        // the embedded executor has no other engine: the convolutions left to tract
        // (where its kernels are faster on this CPU, e.g. on ARM) are fused now
        #[cfg(feature = "onnx")]
        {
            let mut proto = self.proto.clone();
            // one output per node in the embedded format
            crate::passes::chain_int8::unchain_for_embedded(&mut proto);
            if crate::passes::fuse_convolutions(&mut proto, &self.source_name)?.convs > 0 {
                crate::passes::chain_quantized_convs(
                    &mut proto,
                    crate::passes::Chaining::ConvToConv,
                );
            }
            crate::embedded::Graph::from_fused_onnx(&proto, &self.source_name)
        }
        #[cfg(not(feature = "onnx"))]
        Err(self.engine_err("no graph"))
    }

    /// Seconds spent running the network since this segmenter was built: the time inside
    /// tract's plan, summed over every window (plan compilation, normalisation, tiling
    /// and I/O left out). Windows run concurrently (test-time averaging on a thread
    /// pool) each count their own time, so the sum can then exceed the wall time.
    pub fn network_seconds(&self) -> f64 {
        self.network_nanos
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e9
    }

    #[cfg(feature = "onnx")]
    /// Input sizes (height, width) with a compiled plan, most recently used first.
    pub fn cached_plan_sizes(&self) -> Vec<(usize, usize)> {
        let plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.iter().map(|(size, _)| *size).collect()
    }

    #[cfg(feature = "onnx")]
    /// Operators of the plan tract optimised for a `height x width` input, by name with
    /// their counts (what actually runs, after tract's own declutter and optimisation).
    pub fn plan_ops(&self, height: usize, width: usize) -> Result<Vec<(String, usize)>> {
        let plan = self.plan(height, width)?;
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for node in plan.model().nodes() {
            *counts.entry(node.op().name().to_string()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    #[cfg(feature = "onnx")]
    /// Time every node of the plan for a normalised `[1, C, H, W]` input over `runs`
    /// runs (after one warm-up run): what tract's own per-node profiler reports, summed
    /// per node, slowest first. Use it to see where a model spends its time before
    /// changing anything.
    pub fn profile(&self, input: ArrayViewD<'_, f32>, runs: usize) -> Result<Profile> {
        let (h, w) = self.check_input_shape(input.shape())?;
        let plan = self.plan(h, w)?;
        let tensor: Tensor = input.to_owned().into_tensor();
        let model = plan.model();
        let mut seconds = vec![0.0f64; model.nodes().len()];
        let mut wall = 0.0f64;
        let runs = runs.max(1);
        for run in 0..=runs {
            let mut state = plan.spawn().map_err(|e| self.engine_err(e))?;
            let mut timed =
                |ctx: &tract_onnx::tract_core::plan::EvalContext<'_>,
                 op_state: Option<&mut (dyn tract_onnx::tract_core::ops::OpState + 'static)>,
                 node: &TypedNode,
                 inputs: TVec<TValue>|
                 -> TractResult<TVec<TValue>> {
                    let started = std::time::Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    if run > 0 {
                        seconds[node.id] += started.elapsed().as_secs_f64();
                    }
                    out
                };
            let started = std::time::Instant::now();
            self.guarded(|| {
                self.in_pool(|| {
                    state.run_plan_with_eval(tvec!(tensor.clone().into_tvalue()), &mut timed)
                })
            })?;
            if run > 0 {
                wall += started.elapsed().as_secs_f64();
            }
        }
        let mut nodes: Vec<NodeTime> = model
            .nodes()
            .iter()
            .map(|n| NodeTime {
                name: n.name.clone(),
                op: n.op().name().to_string(),
                seconds: seconds[n.id] / runs as f64,
            })
            .filter(|n| n.seconds > 0.0)
            .collect();
        nodes.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        Ok(Profile {
            runs,
            seconds_per_run: wall / runs as f64,
            nodes,
        })
    }

    #[cfg(feature = "onnx")]
    /// Run `f` with this segmenter's thread pool as tract's executor (which skipseg's
    /// kernels use too), else with the pool of the caller's scope ([`ThreadPool::install`]),
    /// or on this thread alone.
    ///
    /// With a pool, `f` runs on one of the pool's threads: the convolutions' tasks are
    /// then split by work stealing from a thread of the pool, instead of handed over
    /// from outside it, which costs a wake-up of this thread at the end of every node
    /// (about 40 us a node on a 2-core VM; see docs/PERFORMANCE.md).
    fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        use tract_linalg::multithread::{
            Executor, current_tract_executor, multithread_tract_scope,
        };
        let executor = match &self.executor {
            Some(ex) => ex.clone(),
            None => current_tract_executor(),
        };
        match &executor {
            Executor::MultiThread(pool) => {
                pool.install(|| multithread_tract_scope(executor.clone(), f))
            }
            _ if self.executor.is_some() => multithread_tract_scope(executor, f),
            _ => f(),
        }
    }

    #[cfg(feature = "onnx")]
    /// Run a tract call, turning its errors and its panics into [`Error::Engine`]: tract
    /// asserts rather than errs on some malformed graphs (found by fuzzing, see
    /// docs/RELIABILITY.md), and an embedding process must not go down with it.
    fn guarded<R>(&self, f: impl FnOnce() -> TractResult<R>) -> Result<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(result) => result.map_err(|e| self.engine_err(e)),
            Err(panic) => Err(self.engine_err(format!(
                "the engine failed on this graph ({})",
                panic_message(panic.as_ref())
            ))),
        }
    }

    fn engine_err(&self, e: impl std::fmt::Display) -> Error {
        Error::Engine {
            source_name: self.source_name.clone(),
            reason: format!("{e:#}"),
        }
    }

    #[cfg(feature = "onnx")]
    fn plan(&self, h: usize, w: usize) -> Result<Plan> {
        if self.embedded.is_some() {
            return Err(self
                .engine_err("an embedded model runs on skipseg's executor and has no tract plan"));
        }
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = plans.iter().position(|(size, _)| *size == (h, w)) {
            let hit = plans.remove(i);
            let plan = hit.1.clone();
            plans.insert(0, hit);
            return Ok(plan);
        }
        let masks: Vec<[usize; 4]> = self.masks.iter().map(|s| s.shape(h, w)).collect();
        let plan =
            self.guarded(|| compile(&self.proto, self.meta.arch.in_channels, h, w, &masks))?;
        plans.insert(0, ((h, w), plan.clone()));
        plans.truncate(MAX_CACHED_PLANS);
        Ok(plan)
    }
}

/// Time of one node of a compiled plan, per run.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// The node's name in tract's plan (ONNX node names, with tract's suffixes).
    pub name: String,
    /// The operator tract runs (after its own optimisation).
    pub op: String,
    pub seconds: f64,
}

/// Where a plan spends its time ([`Segmenter::profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub runs: usize,
    /// Wall time of one whole run, profiling overhead included.
    pub seconds_per_run: f64,
    /// Every node that took time, slowest first.
    pub nodes: Vec<NodeTime>,
}

impl Profile {
    /// Time per operator, summed over its nodes, slowest first: (op, seconds, nodes).
    pub fn by_op(&self) -> Vec<(String, f64, usize)> {
        let mut by = std::collections::BTreeMap::<&str, (f64, usize)>::new();
        for n in &self.nodes {
            let e = by.entry(&n.op).or_default();
            e.0 += n.seconds;
            e.1 += 1;
        }
        let mut v: Vec<_> = by
            .into_iter()
            .map(|(op, (s, k))| (op.to_string(), s, k))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

#[cfg(feature = "onnx")]
/// tract's optimised plan of `proto` (with skipseg's operators) for a `[1, channels, h,
/// w]` input and dropout masks of the shapes `masks` (graph inputs 1..).
pub(crate) fn compile(
    proto: &pb::ModelProto,
    channels: usize,
    h: usize,
    w: usize,
    masks: &[[usize; 4]],
) -> TractResult<Plan> {
    let mut model = ops::onnx_with_skipseg_ops()
        .model_for_proto_model(proto)?
        .with_input_fact(0, f32::fact([1, channels, h, w]).into())?;
    for (i, shape) in masks.iter().enumerate() {
        model = model.with_input_fact(i + 1, f32::fact(*shape).into())?;
    }
    model.into_optimized()?.into_runnable()
}

#[cfg(feature = "onnx")]
/// One rayon pool of `threads` threads, shared by tract's executor (its matrix products)
/// and skipseg's kernels (which find it through tract's executor scope).
fn thread_pool(threads: usize) -> Result<tract_linalg::multithread::Executor> {
    Ok(tract_linalg::multithread::Executor::MultiThread(Arc::new(
        rayon_pool(threads)?,
    )))
}

/// A rayon pool of `threads` threads named `skipseg-N`.
pub(crate) fn rayon_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("skipseg-{i}"))
        .build()
        .map_err(|e| Error::Engine {
            source_name: "thread pool".into(),
            reason: format!("cannot start {threads} threads: {e}"),
        })
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A thread pool to run calls of a single-threaded [`Segmenter`] on (tract's matrix
/// products and skipseg's kernels use it): lets a caller pick the thread count per call
/// rather than per loaded model.
#[derive(Clone)]
pub struct ThreadPool(Arc<rayon::ThreadPool>);

thread_local! {
    /// The pool [`ThreadPool::install`] set on this thread, for the embedded executor.
    static CURRENT_POOL: std::cell::RefCell<Option<Arc<rayon::ThreadPool>>> =
        const { std::cell::RefCell::new(None) };
}

/// The pool a [`ThreadPool::install`] around the caller set, if any.
pub(crate) fn current_pool() -> Option<Arc<rayon::ThreadPool>> {
    CURRENT_POOL.with(|c| c.borrow().clone())
}

impl ThreadPool {
    /// A pool of `threads` threads (at least 1).
    pub fn new(threads: usize) -> Result<Self> {
        rayon_pool(threads.max(1)).map(|p| Self(Arc::new(p)))
    }

    /// Run `f` with this pool as the executor: tract's, and the embedded executor's.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT_POOL.with(|c| c.replace(Some(self.0.clone())));
        #[cfg(feature = "onnx")]
        let out = tract_linalg::multithread::multithread_tract_scope(
            tract_linalg::multithread::Executor::MultiThread(self.0.clone()),
            f,
        );
        #[cfg(not(feature = "onnx"))]
        let out = f();
        CURRENT_POOL.with(|c| c.replace(previous));
        out
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadPool")
    }
}

/// One symmetry of the square: transpose first, then flips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symmetry {
    pub transpose: bool,
    pub flip_rows: bool,
    pub flip_cols: bool,
}

impl Symmetry {
    /// No transpose, no flip.
    pub fn is_identity(self) -> bool {
        !(self.transpose || self.flip_rows || self.flip_cols)
    }

    /// The image seen through this symmetry.
    pub fn apply(self, a: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut v = if self.transpose { a.reversed_axes() } else { a };
        if self.flip_rows {
            v.invert_axis(Axis(0));
        }
        if self.flip_cols {
            v.invert_axis(Axis(1));
        }
        v.as_standard_layout().into_owned()
    }

    /// Back from this symmetry (`undo(apply(a)) == a`).
    pub fn undo(self, a: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut v = a;
        if self.flip_rows {
            v.invert_axis(Axis(0));
        }
        if self.flip_cols {
            v.invert_axis(Axis(1));
        }
        let v = if self.transpose { v.reversed_axes() } else { v };
        v.as_standard_layout().into_owned()
    }
}

impl Averaging {
    /// The symmetries averaged over (the identity first).
    pub fn symmetries(self) -> Vec<Symmetry> {
        let (transposes, flips): (&[bool], &[(bool, bool)]) = match self {
            Averaging::None => (&[false], &[(false, false)]),
            Averaging::Flips => (&[false], &FLIPS),
            Averaging::Dihedral => (&[false, true], &FLIPS),
        };
        transposes
            .iter()
            .flat_map(|&transpose| {
                flips.iter().map(move |&(flip_rows, flip_cols)| Symmetry {
                    transpose,
                    flip_rows,
                    flip_cols,
                })
            })
            .collect()
    }
}

const FLIPS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

/// How an image is run through the network: its tiles (the plan for each image is made
/// by [`Segmenter::tile_plan`]), how they are blended, and the test-time averaging of
/// each window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inference {
    pub tiling: Tiling,
    pub blend: Blend,
    pub averaging: Averaging,
    /// Monte-Carlo dropout (needs a model with dropout loaded with
    /// [`Options::monte_carlo_dropout`]); `None` or 0 samples: the deterministic model.
    pub monte_carlo: Option<MonteCarlo>,
}

impl Inference {
    /// One pass per window, default tiles, crop blending: the model's network as it is.
    pub fn one_pass() -> Self {
        Self {
            tiling: Tiling::default(),
            blend: Blend::Crop,
            averaging: Averaging::None,
            monte_carlo: None,
        }
    }

    /// The model's defaults: default tiles, crop blending, the averaging it records.
    pub fn model_default(seg: &Segmenter) -> Self {
        Self {
            averaging: seg.meta().inference.averaging,
            ..Self::one_pass()
        }
    }
}

/// The intensity statistics of an image read row by row (the first of two passes over a
/// streamed image when the model standardises per image: reopen the source for the
/// second). Holds one row.
pub fn intensity_stats(source: &mut dyn RowSource) -> Result<IntensityStats> {
    let mut stats = IntensityStats::default();
    let mut row = vec![0.0; source.width()];
    for _ in 0..source.height() {
        source.read_row(&mut row)?;
        stats.add(&row);
    }
    Ok(stats)
}

/// Refuse an image without a single finite pixel (all NaN or infinite): there is
/// nothing to segment, and its statistics would be undefined. `name` names the image.
pub fn require_finite_pixels(stats: &IntensityStats, name: &str) -> Result<()> {
    if stats.count() == 0 {
        return Err(Error::Input {
            name: name.to_string(),
            reason: "no finite pixel (every value is NaN or infinite): nothing to segment".into(),
        });
    }
    Ok(())
}

/// Tiled inference over an image of any size (see [`crate::tiling`]): `source` yields
/// intensities in [0, 1] row by row, `norm` maps them to network input (from
/// `seg.meta().preprocessing.for_image(..)`, which needs the image's statistics when the
/// model standardises per image); finished rows of the membrane probability map are
/// handed to `emit_row(y, input_row, probability_row)` in order, so neither the image
/// nor the output ever has to be held whole. `on_tile` is called after each tile (for
/// progress).
pub fn segment_tiled(
    seg: &Segmenter,
    source: &mut dyn RowSource,
    norm: Normalisation,
    how: &Inference,
    on_tile: &mut dyn FnMut(),
    emit_row: &mut RowSink<'_>,
) -> Result<()> {
    let plan = seg.tile_plan(&how.tiling, source.height(), source.width())?;
    let mut run_window = window_runner(seg, norm, how, &plan)?;
    tiling::stitch(source, &plan, how.blend, &mut run_window, on_tile, emit_row)
}

/// Tiled inference over one rectangle of an image (see [`tiling::stitch_region`]):
/// bit-identical to the same pixels of [`segment_tiled`] over the whole image (same
/// windows, same blending, same Monte-Carlo masks), reading only the pixels its tiles
/// need through `read`. `norm` must come from the whole image's statistics, `plan` is
/// the whole image's ([`Segmenter::tile_plan`]).
pub fn segment_region(
    seg: &Segmenter,
    plan: &TilePlan,
    read: &mut dyn FnMut(&Region) -> Result<Array2<f32>>,
    norm: Normalisation,
    how: &Inference,
    region: &Region,
    on_tile: &mut dyn FnMut(),
) -> Result<Array2<f32>> {
    let mut run_window = window_runner(seg, norm, how, plan)?;
    tiling::stitch_region(plan, how.blend, region, read, &mut run_window, on_tile)
}

/// The network over one window: normalisation, test-time averaging and Monte-Carlo
/// samples. Monte-Carlo masks are drawn from the tile's position in the plan, so a tile
/// gets the same masks whoever runs it and in whatever order.
fn window_runner<'a>(
    seg: &'a Segmenter,
    norm: Normalisation,
    how: &Inference,
    plan: &TilePlan,
) -> Result<impl FnMut(&Tile, ArrayView2<'_, f32>) -> Result<Array2<f32>> + 'a> {
    let channels = seg.meta().arch.in_channels;
    let symmetries = how.averaging.symmetries();
    let monte_carlo = how.monte_carlo.filter(|mc| mc.samples > 0);
    if monte_carlo.is_some() && !seg.has_dropout_masks() {
        return Err(Error::Engine {
            source_name: seg.source_name().to_string(),
            reason: if seg.meta().arch.dropout > 0.0 {
                "Monte-Carlo dropout needs the model loaded with its dropout masks kept \
                 (Options::monte_carlo_dropout)"
                    .into()
            } else {
                "Monte-Carlo dropout needs a model trained with dropout; this one has none".into()
            },
        });
    }
    let cols = plan.cols as u64;
    Ok(
        move |tile: &Tile, window: ArrayView2<'_, f32>| -> Result<Array2<f32>> {
            // the tile's place in reading order
            let window_index = tile.row as u64 * cols + tile.col as u64;
            let inputs: Vec<Array4<f32>> = symmetries
                .iter()
                .map(|t| {
                    // the identity needs no transformed copy of the window
                    let seen = if t.is_identity() {
                        ndarray::CowArray::from(window)
                    } else {
                        ndarray::CowArray::from(t.apply(window))
                    };
                    let (h, w) = seen.dim();
                    let mut data = Vec::with_capacity(channels * h * w);
                    for _ in 0..channels {
                        // a contiguous window as a slice: a loop that vectorises (the
                        // element iterator of an array does not)
                        match seen.as_slice() {
                            Some(px) => data.extend(px.iter().map(|&v| norm.apply(v))),
                            None => data.extend(seen.iter().map(|&v| norm.apply(v))),
                        }
                    }
                    Array4::from_shape_vec((1, channels, h, w), data)
                        .expect("length is the shape's product")
                })
                .collect();
            let (outputs, per_symmetry) = match monte_carlo {
                None => (seg.run_many(inputs)?, 1),
                Some(mc) => {
                    // symmetry-major: sample k of symmetry s at s * samples + k
                    let mut outs = Vec::with_capacity(inputs.len() * mc.samples);
                    for (s, v) in inputs.iter().enumerate() {
                        for k in 0..mc.samples {
                            outs.push(seg.run_sample(
                                v.view().into_dyn(),
                                &[mc.seed, window_index, s as u64, k as u64],
                            )?);
                        }
                    }
                    (outs, mc.samples)
                }
            };
            let n = outputs.len();
            let mut sum: Option<Array2<f32>> = None;
            for (i, out) in outputs.into_iter().enumerate() {
                let t = symmetries[i / per_symmetry];
                let out = out.index_axis_move(Axis(0), 0).index_axis_move(Axis(0), 0);
                let out = if t.is_identity() {
                    // a plane of the engine's own standard-layout output: no copy
                    out
                } else {
                    t.undo(out.view())
                };
                sum = Some(match sum {
                    Some(acc) => acc + out,
                    None => out,
                });
            }
            let sum = sum.expect("at least the identity");
            Ok(if n == 1 {
                sum
            } else {
                sum.mapv_into(|v| v / n as f32)
            })
        },
    )
}

/// [`segment_image_with`] without test-time averaging, with explicit tiles.
pub fn segment_image(
    seg: &Segmenter,
    image: ArrayView2<'_, f32>,
    tiling: Tiling,
    blend: Blend,
) -> Result<Array2<f32>> {
    segment_image_with(
        seg,
        image,
        &Inference {
            tiling,
            blend,
            ..Inference::one_pass()
        },
    )
}

/// Tiled inference into an in-memory map (convenience for tests and small images):
/// `image` holds intensities in [0, 1], normalised as the model's metadata says.
pub fn segment_image_with(
    seg: &Segmenter,
    image: ArrayView2<'_, f32>,
    how: &Inference,
) -> Result<Array2<f32>> {
    let mut out = Array2::<f32>::zeros(image.dim());
    let norm = seg
        .meta()
        .preprocessing
        .for_image(&IntensityStats::of(image.iter()));
    segment_tiled(
        seg,
        &mut ArrayRows::new(image),
        norm,
        how,
        &mut || {},
        &mut |y, _, row| {
            out.row_mut(y).assign(&ndarray::ArrayView1::from(&row));
            Ok(())
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn symmetries_invert_and_are_distinct(h in 2usize..9, w in 2usize..9) {
            let a = Array2::from_shape_fn((h, w), |(y, x)| (y * 10 + x) as f32);
            let all = Averaging::Dihedral.symmetries();
            prop_assert_eq!(all.len(), 8);
            prop_assert_eq!(all[0], Symmetry { transpose: false, flip_rows: false, flip_cols: false });
            let mut seen: Vec<Vec<f32>> = Vec::new();
            for t in &all {
                let b = t.apply(a.view());
                prop_assert_eq!(b.dim(), if t.transpose { (w, h) } else { (h, w) });
                prop_assert_eq!(t.undo(b.view()), a.clone());
                let mut key = b.iter().copied().collect::<Vec<_>>();
                key.push(b.nrows() as f32);
                prop_assert!(!seen.contains(&key), "{:?} repeats another symmetry", t);
                seen.push(key);
            }
            prop_assert_eq!(Averaging::Flips.symmetries().len(), 4);
            prop_assert_eq!(Averaging::None.symmetries().len(), 1);
        }
    }

    #[test]
    fn network_seconds_count_the_runs_and_only_the_runs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut models = vec!["models/isbi-small-bce.skipseg"];
        if cfg!(feature = "onnx") {
            models.push("models/isbi-small.onnx");
        }
        for model in models {
            let seg = Segmenter::from_path(&root.join(model)).expect("model");
            assert_eq!(seg.network_seconds(), 0.0, "nothing has run yet");
            let input = ndarray::Array4::<f32>::zeros((1, 1, 64, 64)).into_dyn();
            seg.run(input.view()).expect("first run");
            let after_first = seg.network_seconds();
            let started = std::time::Instant::now();
            for _ in 0..3 {
                seg.run(input.view()).expect("run");
            }
            let wall = started.elapsed().as_secs_f64();
            let three = seg.network_seconds() - after_first;
            assert!(three > 0.0, "{model}: three runs took no time: {three}");
            assert!(three <= wall, "{model}: network {three} s > wall {wall} s");
        }
    }

    #[test]
    fn streamed_intensity_stats_by_hand() {
        // 2 x 3 image of 0, 0.25, ..., 1.25: mean 0.625, population variance
        // 0.25^2 * 2 * (2.5^2 + 1.5^2 + 0.5^2) / 6 = 0.0625 * 17.5 / 6 = 0.18229..
        let image = Array2::from_shape_fn((2, 3), |(y, x)| (y * 3 + x) as f32 * 0.25);
        let mut rows = ArrayRows::new(image.view());
        let stats = intensity_stats(&mut rows).expect("in-memory rows");
        assert_eq!(rows.rows_read(), 2);
        assert_eq!(stats.count(), 6);
        assert!((stats.mean() - 0.625).abs() < 1e-12, "{}", stats.mean());
        let std = (0.0625f64 * 17.5 / 6.0).sqrt();
        assert!(
            (stats.std() - std).abs() < 1e-12,
            "{} vs {std}",
            stats.std()
        );
    }
}
