//! Direct 2-D convolution, f32, NCHW, stride 1, "same" zero padding, 1x1 or 3x3 kernels,
//! with the pre-activation of a residual block (per-channel scale and shift, ReLU) applied
//! to the input as it is read, and the bias, a residual sum and a ReLU applied to the
//! output as it is written: one pass over memory where tract runs up to four.
//!
//! Written once over [`pulp::Simd`] and dispatched at run time to AVX-512, AVX2+FMA or
//! scalar code (pulp's safe target-feature dispatch: no `unsafe` here).
//!
//! Layout of the work: the output is cut into runs of whole rows (3x3) or of pixels of
//! the flattened plane (1x1), which threads share. For a run, the input it needs is
//! first copied into a small panel, transformed (scale, shift, ReLU) and zero-padded
//! (3x3); then each block of [`OC_BLOCK`] output channels is computed in registers, a
//! strip of `NV` vectors of pixels at a time, by broadcasting weights packed per block.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use pulp::{Simd, WithSimd};

use super::winograd::{WinogradRun, WinogradWeights};

/// Output channels per packed weight block (the register tile covers 8 or 2 x 4).
pub const OC_BLOCK: usize = 8;

/// Largest panel of transformed input one run keeps (floats): it should stay in L2.
const PANEL_FLOATS: usize = 64 * 1024;

/// The per-input-channel transform of a pre-activated convolution:
/// `x -> max(scale * x + shift, 0)` (each part optional), then, for the float
/// execution of a quantized convolution, [`FakeQuant`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputTransform {
    pub scale: Option<Vec<f32>>,
    pub shift: Option<Vec<f32>>,
    pub relu: bool,
    pub fake_quant: Option<FakeQuant>,
}

/// ONNX `QuantizeLinear` then `DequantizeLinear` to `u8` with one scale and zero point:
/// `x -> (clamp(round_half_even(x * (1 / scale)) + zero, 0, 255) - zero) * scale`.
///
/// `x * (1 / scale)` is how tract's `QuantizeLinear` computes the definition's
/// `x / scale`: the two differ only where `x / scale` lies within a rounding of a half
/// (a code off by one, rarely). The division is the costly step of quantizing: with it,
/// Table 1's int8 window took 215-220 ms, with the reciprocal 199-209 (eight alternating
/// rounds, 1 thread, AVX512-VNNI, convolutions writing two readers' codes, see
/// [`crate::passes::chain_int8`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FakeQuant {
    pub scale: f32,
    pub zero: u8,
}

impl FakeQuant {
    /// The `u8` code of `x` (ONNX `QuantizeLinear`, by the reciprocal as tract computes
    /// it; NaN goes to 0). Written so that loops of it vectorise (the reciprocal leaves
    /// the loop): the clamped value is a whole number in [0, 255], read off the low
    /// mantissa bits of `v + 1.5 * 2^23` (exact for such values).
    #[inline(always)]
    #[allow(clippy::manual_clamp)] // max/min send NaN to 0, clamp would keep it
    pub fn quantize(self, x: f32) -> u8 {
        let v = ((x * self.scale.recip()).round_ties_even() + self.zero as f32)
            .max(0.0)
            .min(255.0);
        (v + 12_582_912.0).to_bits() as u8
    }

    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        (self.quantize(x) as f32 - self.zero as f32) * self.scale
    }
}

impl InputTransform {
    #[inline(always)]
    pub(crate) fn apply_row(&self, ic: usize, src: &[f32], dst: &mut [f32]) {
        self.apply_row_float(ic, src, dst);
        if let Some(q) = self.fake_quant {
            for d in dst.iter_mut() {
                *d = q.apply(*d);
            }
        }
    }

    /// Scale, shift and ReLU, then the `u8` codes of `q`, in one pass (a loop that
    /// vectorises under the caller's target features): code outputs.
    #[inline(always)]
    pub(crate) fn quantize_row(&self, ic: usize, q: FakeQuant, src: &[f32], dst: &mut [u8]) {
        self.map_row(ic, src, dst, |v| q.quantize(v));
    }

    /// Scale, shift and ReLU only.
    #[inline(always)]
    pub(crate) fn apply_row_float(&self, ic: usize, src: &[f32], dst: &mut [f32]) {
        self.map_row(ic, src, dst, |v| v);
    }

    /// `dst[i] = store(transformed src[i])`, one loop per combination of the transform's
    /// parts so that each vectorises without per-value branches.
    #[inline(always)]
    fn map_row<D>(&self, ic: usize, src: &[f32], dst: &mut [D], store: impl Fn(f32) -> D) {
        let a = self.scale.as_ref().map_or(1.0, |s| s[ic]);
        let b = self.shift.as_ref().map_or(0.0, |s| s[ic]);
        match (self.scale.is_some() || self.shift.is_some(), self.relu) {
            (false, false) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = store(s);
                }
            }
            (false, true) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = store(s.max(0.0));
                }
            }
            (true, false) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = store(s * a + b);
                }
            }
            (true, true) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = store((s * a + b).max(0.0));
                }
            }
        }
    }
}

/// What the output gets after the bias (and the residual sum, if any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    #[default]
    None,
    Relu,
}

/// A convolution with its weights packed for the kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectConv {
    cin: usize,
    cout: usize,
    kernel: usize,
    /// Output channels per packed block: [`OC_BLOCK`], or 1 for a single channel.
    block: usize,
    /// `[cout blocks][cin][kernel * kernel][block]`, zero beyond `cout`.
    packed: Vec<f32>,
    /// Padded to a whole number of blocks.
    bias: Vec<f32>,
    pre: InputTransform,
    post: Activation,
    /// The Winograd form of a wide 3x3 convolution (see [`WINOGRAD_MIN_CHANNELS`]).
    winograd: Option<WinogradWeights>,
}

/// 3x3 convolutions with at least this many input and output channels run as Winograd
/// F(2x2, 3x3) ([`super::winograd`]); narrower ones spend more on the transforms than the
/// 2.25x fewer multiplications save.
pub const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Why a convolution cannot run on these kernels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvError {
    #[error("unsupported convolution: {0}")]
    Unsupported(String),
    #[error("shape mismatch: {0}")]
    Shape(String),
}

impl DirectConv {
    /// `weights` in ONNX order `[cout, cin, kernel, kernel]`; `bias` of `cout` (or
    /// empty for none); `pre` of `cin` channels.
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        weights: &[f32],
        bias: &[f32],
        pre: InputTransform,
        post: Activation,
    ) -> Result<Self, ConvError> {
        if kernel != 1 && kernel != 3 {
            return Err(ConvError::Unsupported(format!("{kernel}x{kernel} kernel")));
        }
        if cin == 0 || cout == 0 {
            return Err(ConvError::Shape("no channels".into()));
        }
        let kk = kernel * kernel;
        if weights.len() != cout * cin * kk {
            return Err(ConvError::Shape(format!(
                "{} weights for {cout}x{cin}x{kernel}x{kernel}",
                weights.len()
            )));
        }
        if !bias.is_empty() && bias.len() != cout {
            return Err(ConvError::Shape(format!(
                "{} biases for {cout} channels",
                bias.len()
            )));
        }
        for (what, v) in [("scale", &pre.scale), ("shift", &pre.shift)] {
            if let Some(v) = v
                && v.len() != cin
            {
                return Err(ConvError::Shape(format!(
                    "input {what} of {} for {cin} channels",
                    v.len()
                )));
            }
        }
        let block = if cout == 1 { 1 } else { OC_BLOCK };
        let blocks = cout.div_ceil(block);
        let mut packed = vec![0.0; blocks * cin * kk * block];
        for oc in 0..cout {
            let (b, o) = (oc / block, oc % block);
            for ic in 0..cin {
                for k in 0..kk {
                    packed[((b * cin + ic) * kk + k) * block + o] =
                        weights[(oc * cin + ic) * kk + k];
                }
            }
        }
        let mut padded_bias = vec![0.0; blocks * block];
        padded_bias[..bias.len()].copy_from_slice(bias);
        let winograd =
            (kernel == 3 && cin >= WINOGRAD_MIN_CHANNELS && cout >= WINOGRAD_MIN_CHANNELS)
                .then(|| WinogradWeights::new(weights, cin, cout));
        Ok(Self {
            cin,
            cout,
            kernel,
            block,
            packed,
            bias: padded_bias,
            pre,
            post,
            winograd,
        })
    }

    pub fn input_channels(&self) -> usize {
        self.cin
    }

    pub fn output_channels(&self) -> usize {
        self.cout
    }

    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Multiply-accumulates per output pixel.
    pub fn macs_per_pixel(&self) -> usize {
        self.cin * self.cout * self.kernel * self.kernel
    }

    /// Run on one image of `h x w` pixels: `input` `[cin, h*w]`, `output` `[cout, h*w]`,
    /// plus the residual sum `residual` says. `pool`: share the work among a rayon
    /// pool's threads (None: this thread only).
    pub fn run_image(
        &self,
        input: ArrayView2<'_, f32>,
        h: usize,
        w: usize,
        residual: Residual<'_>,
        mut output: ArrayViewMut2<'_, f32>,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<(), ConvError> {
        let (input, residual) =
            check_shapes(self.cin, self.cout, h, w, input, residual, output.dim())?;
        if let Some(weights) = &self.winograd {
            let job = |start: usize, chunk: ArrayViewMut2<'_, f32>| {
                pulp::Arch::new().dispatch(WinogradRun {
                    weights,
                    pre: &self.pre,
                    bias: &self.bias,
                    post: self.post,
                    input,
                    residual,
                    h,
                    w,
                    start,
                    out: chunk,
                })
            };
            for_each_run(
                self.kernel,
                2,
                self.cin,
                h,
                w,
                output.view_mut(),
                pool,
                &job,
            );
            return Ok(());
        }
        let job = |start: usize, chunk: ArrayViewMut2<'_, f32>| {
            pulp::Arch::new().dispatch(Run {
                conv: self,
                input,
                residual,
                h,
                w,
                start,
                out: chunk,
            })
        };
        for_each_run(
            self.kernel,
            1,
            self.cin,
            h,
            w,
            output.view_mut(),
            pool,
            &job,
        );
        Ok(())
    }

    /// An upper bound of the bytes [`Self::run_image`] allocates while it runs on an
    /// `h x w` image with `threads` threads: each task's panels (at most `threads` tasks
    /// at once) and the list of tasks. The output is the caller's.
    pub fn scratch_bytes(&self, h: usize, w: usize, threads: usize) -> usize {
        let plane = h * w;
        let per_task = if self.winograd.is_some() {
            super::winograd::task_floats_bound(self.cin, self.cout)
        } else if self.kernel == 3 {
            // segments of at most PANEL_FLOATS / (3 cin) pixels (one strip at least),
            // padded to a strip, plus the two columns of padding
            let seg = (PANEL_FLOATS / (3 * self.cin)).max(MAX_STRIP);
            self.cin * 3 * (seg.min(w) + MAX_STRIP + 2) + 2 * MAX_STRIP
        } else {
            self.cin * (one_by_one_run_bound(self.cin, plane) + MAX_STRIP) + 2 * MAX_STRIP
        };
        // and each output channel's row slice
        let rows = self.cout * std::mem::size_of::<&mut [f32]>();
        threads.max(1) * (per_task * 4 + rows) + run_list_bytes(plane, threads)
    }

    /// Whether this convolution runs as Winograd F(2x2, 3x3).
    pub fn is_winograd(&self) -> bool {
        self.winograd.is_some()
    }
}

/// Check a convolution's arrays against its channels and image size; the input and the
/// residual as slices.
pub(crate) fn check_shapes<'a, 'r, T>(
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    input: ArrayView2<'a, T>,
    residual: Residual<'r>,
    output: (usize, usize),
) -> Result<(&'a [T], Source<'r>), ConvError> {
    let plane = h * w;
    let residual_dim = match residual {
        Residual::Add(r) | Residual::AddUpsampled(r) => Some(r.dim()),
        _ => None,
    };
    let want_residual = match residual {
        Residual::AddUpsampled(_) if h.is_multiple_of(2) && w.is_multiple_of(2) => {
            Some((cout, plane / 4))
        }
        Residual::AddUpsampled(_) => Some((usize::MAX, 0)),
        _ => Some((cout, plane)),
    };
    if input.dim() != (cin, plane)
        || output != (cout, plane)
        || residual_dim.is_some_and(|d| Some(d) != want_residual)
    {
        return Err(ConvError::Shape(format!(
            "input {:?}, output {output:?}, residual {residual_dim:?} for {cin}->{cout} \
             channels of {h}x{w}",
            input.dim(),
        )));
    }
    let layout = |what: &str| ConvError::Shape(format!("{what} is not in standard layout"));
    let input = input.to_slice().ok_or_else(|| layout("input"))?;
    let residual = match residual {
        Residual::None => Source::None,
        Residual::InOutput => Source::InOutput,
        Residual::Add(r) => Source::Same(r.to_slice().ok_or_else(|| layout("residual"))?),
        Residual::AddUpsampled(r) => {
            Source::Upsampled(r.to_slice().ok_or_else(|| layout("residual"))?)
        }
    };
    Ok((input, residual))
}

/// The widest strip of pixels any SIMD level computes at once (4 vectors of 16 lanes).
pub(crate) const MAX_STRIP: usize = 64;

/// The most pixels a run of a 1x1 convolution covers ([`for_each_run`]).
pub(crate) fn one_by_one_run_bound(cin: usize, plane: usize) -> usize {
    (PANEL_FLOATS / cin.max(1))
        .clamp(64, 4096)
        .min(plane.max(1))
}

/// An upper bound of the bytes of the task list [`for_each_run`] builds for a pool:
/// at most `4 threads + 1` runs, or one per 64 pixels where 1x1 runs are capped.
pub(crate) fn run_list_bytes(plane: usize, threads: usize) -> usize {
    if threads <= 1 {
        return 0;
    }
    let runs = (4 * threads + 1).max(plane / 64 + 1);
    runs * std::mem::size_of::<(usize, ArrayViewMut2<'_, f32>)>()
}

/// The pixels of one run of [`for_each_run`]: whole rows (times `row_multiple`) for a 3x3
/// kernel, a bounded panel for a 1x1, about four runs per thread.
pub(crate) fn run_length(
    kernel: usize,
    row_multiple: usize,
    cin: usize,
    h: usize,
    w: usize,
    threads: usize,
) -> usize {
    let plane = h * w;
    let unit = if kernel == 3 { w * row_multiple } else { 1 };
    let max_units = if kernel == 3 {
        usize::MAX
    } else {
        one_by_one_run_bound(cin, plane)
    };
    let units = plane.div_ceil(unit);
    let per_run = units
        .div_ceil(threads.max(1) * 4)
        .clamp(1, max_units)
        .min(units.max(1));
    per_run * unit
}

/// Cut the output `[cout, h*w]` into runs, whole rows for 3x3 (the panel holds 3 input
/// rows per channel; `row_multiple` rows at a time), pixel ranges for 1x1, small enough
/// for a panel and several per thread, and call `job(first pixel, run)` for each, on
/// `pool`'s threads if any.
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_each_run<T: Send>(
    kernel: usize,
    row_multiple: usize,
    cin: usize,
    h: usize,
    w: usize,
    mut output: ArrayViewMut2<'_, T>,
    pool: Option<&rayon::ThreadPool>,
    job: &(dyn Fn(usize, ArrayViewMut2<'_, T>) + Sync),
) {
    let threads = pool.map_or(1, |p| p.current_num_threads());
    let run_len = run_length(kernel, row_multiple, cin, h, w, threads);
    let runs = output
        .axis_chunks_iter_mut(Axis(1), run_len)
        .enumerate()
        .map(|(i, c)| (i * run_len, c));
    run_all(runs, pool, &|(start, run)| job(start, run));
}

/// Call `job` on each item, on `pool`'s threads if it has more than one (the items are
/// then collected first), else in order on this thread.
pub(crate) fn run_all<D: Send>(
    items: impl Iterator<Item = D>,
    pool: Option<&rayon::ThreadPool>,
    job: &(dyn Fn(D) + Sync),
) {
    match pool {
        Some(pool) if pool.current_num_threads() > 1 => {
            let items: Vec<D> = items.collect();
            pool.install(|| {
                use rayon::prelude::*;
                items.into_par_iter().for_each(job);
            });
        }
        _ => items.for_each(job),
    }
}

/// Each output channel's slice of a run (`[channels, pixels]`, rows contiguous), taken
/// once by a kernel: an ndarray row per strip and channel cost a third of a 1x1
/// convolution's time.
pub(crate) fn row_slices<'a, T>(out: &'a mut ArrayViewMut2<'_, T>) -> Vec<&'a mut [T]> {
    out.rows_mut()
        .into_iter()
        .map(|r| r.into_slice().expect("output rows are contiguous"))
        .collect()
}

/// A pixel of a plane `w` wide: its index, row and column, worked out once per strip
/// rather than once per channel (an up-sampled residual's two divisions per channel and
/// strip were half its cost).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PixelAt {
    pub p: usize,
    pub y: usize,
    pub x: usize,
    pub w: usize,
}

impl PixelAt {
    #[inline(always)]
    pub(crate) fn new(p: usize, w: usize) -> Self {
        Self {
            p,
            y: p / w.max(1),
            x: p % w.max(1),
            w,
        }
    }
}

/// Pixels `[at.p, at.p + n)` of output channel `oc` of the residual, if any (`dst`: the
/// output's pixels, which hold the residual when it is added in place; `scratch`: room
/// for an up-sampled strip).
#[inline(always)]
pub(crate) fn residual_strip<'r>(
    residual: Source<'r>,
    oc: usize,
    plane: usize,
    at: PixelAt,
    dst: &'r [f32],
    scratch: &'r mut [f32],
) -> Option<&'r [f32]> {
    let n = dst.len();
    match residual {
        Source::None => None,
        Source::Same(r) => Some(&r[oc * plane + at.p..][..n]),
        Source::InOutput => Some(dst),
        Source::Upsampled(r) => {
            let half = plane / 4;
            upsampled_strip(&r[oc * half..][..half], at, &mut scratch[..n]);
            Some(&scratch[..n])
        }
    }
}

/// `dst = act(values + residual)`.
#[inline(always)]
pub(crate) fn store(values: &[f32], residual: Option<&[f32]>, relu: bool, dst: &mut [f32]) {
    match (residual, relu) {
        (Some(r), false) => {
            for ((d, v), r) in dst.iter_mut().zip(values).zip(r) {
                *d = v + r;
            }
        }
        (Some(r), true) => {
            for ((d, v), r) in dst.iter_mut().zip(values).zip(r) {
                *d = (v + r).max(0.0);
            }
        }
        (None, false) => dst.copy_from_slice(values),
        (None, true) => {
            for (d, v) in dst.iter_mut().zip(values) {
                *d = v.max(0.0);
            }
        }
    }
}

/// The residual sum a convolution adds to its output.
#[derive(Debug, Clone, Copy)]
pub enum Residual<'a> {
    None,
    /// `[cout, h*w]`, added pixel by pixel.
    Add(ArrayView2<'a, f32>),
    /// `[cout, h/2 * w/2]`, repeated to `h x w` (nearest-neighbour x2) as it is added:
    /// the up-sampling of a decoder level, never materialised.
    AddUpsampled(ArrayView2<'a, f32>),
    /// The output buffer already holds the residual (`output = conv(input) + output`).
    InOutput,
}

#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    None,
    Same(&'a [f32]),
    Upsampled(&'a [f32]),
    InOutput,
}

/// One run of output pixels `[start, start + out.ncols())` of every output channel.
struct Run<'a, 'o> {
    conv: &'a DirectConv,
    input: &'a [f32],
    residual: Source<'a>,
    h: usize,
    w: usize,
    start: usize,
    out: ArrayViewMut2<'o, f32>,
}

impl WithSimd for Run<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // 16 accumulators: 8 channels x 2 vectors on AVX-512 (32 registers), 4 x 2 as
        // two halves of a block on AVX2 (16 registers); one channel x 4 vectors for a
        // single output channel.
        match (S::F32_LANES >= 16, self.conv.cout == 1) {
            (_, true) => self.go::<S, 1, 4>(simd),
            (true, false) => self.go::<S, 8, 2>(simd),
            (false, false) => self.go::<S, 4, 2>(simd),
        }
    }
}

/// Pixels `[at.p, at.p + dst.len())` of a plane of width `at.w`, read from the plane
/// `half` of size `h/2 x w/2` repeated x2 in both directions.
#[inline(always)]
pub(crate) fn upsampled_strip(half: &[f32], at: PixelAt, dst: &mut [f32]) {
    let w = at.w;
    let hw = w.div_ceil(2);
    let (mut y, mut x) = (at.y, at.x);
    let mut rest = dst;
    while !rest.is_empty() {
        let n = (w - x).min(rest.len());
        let (now, later) = rest.split_at_mut(n);
        let src = &half[(y / 2) * hw..][..hw];
        // an odd first column, then pairs (vectorises), then an odd last column
        let (head, body) = now.split_at_mut(x % 2);
        if let Some(d) = head.first_mut() {
            *d = src[x / 2];
        }
        let first = x.div_ceil(2);
        let npairs = body.len() / 2;
        // 8 values to 16 as one shuffle and one vector store: pairs stored one float at
        // a time, then read as a vector by the caller, stalled on store forwarding (a
        // quarter of an up-sampled-residual convolution's time, `perf annotate`)
        let mut sixteens = body.chunks_exact_mut(16);
        for (d, s) in (&mut sixteens).zip(src[first..].chunks_exact(8)) {
            let s: [f32; 8] = s.try_into().expect("8 values");
            let d: &mut [f32; 16] = d.try_into().expect("16 values");
            *d = std::array::from_fn(|i| s[i / 2]);
        }
        let done = npairs / 8 * 8;
        let mut pairs = sixteens.into_remainder().chunks_exact_mut(2);
        for (pair, &v) in (&mut pairs).zip(&src[first + done..]) {
            pair[0] = v;
            pair[1] = v;
        }
        let tail = pairs.into_remainder();
        if let Some(d) = tail.first_mut() {
            *d = src[first + npairs];
        }
        rest = later;
        (y, x) = (y + 1, 0);
    }
}

/// `NV` vectors from `xs` (at least `NV * lanes` long).
#[inline(always)]
pub(crate) fn load<S: Simd, const NV: usize>(simd: S, xs: &[f32]) -> [S::f32s; NV] {
    let (v, _) = S::as_simd_f32s(xs);
    let mut out = [simd.splat_f32s(0.0); NV];
    out.copy_from_slice(&v[..NV]);
    out
}

/// Accumulators of one strip of `NV * lanes` pixels from `x0` for `OB` channels.
/// `panel`: `[cin][kernel rows][pw]`; `wb`: this block's weights
/// `[cin][kernel * kernel][block]`, of which channels `[off, off + OB)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn strip_acc<S: Simd, const OB: usize, const NV: usize>(
    simd: S,
    kernel: usize,
    panel: &[f32],
    pw: usize,
    x0: usize,
    wb: &[f32],
    block: usize,
    off: usize,
    bias: &[f32],
) -> [[S::f32s; NV]; OB] {
    let lanes = S::F32_LANES;
    let strip = NV * lanes;
    let mut acc = [[simd.splat_f32s(0.0); NV]; OB];
    for (acc_o, &b) in acc.iter_mut().zip(bias) {
        *acc_o = [simd.splat_f32s(b); NV];
    }
    if kernel == 1 {
        for (row, wk) in panel.chunks_exact(pw).zip(wb.chunks_exact(block)) {
            let iv = load::<S, NV>(simd, &row[x0..x0 + strip]);
            let wk = &wk[off..off + OB];
            for o in 0..OB {
                let wo = simd.splat_f32s(wk[o]);
                for v in 0..NV {
                    acc[o][v] = simd.mul_add_e_f32s(iv[v], wo, acc[o][v]);
                }
            }
        }
    } else {
        for (rows, wk) in panel.chunks_exact(3 * pw).zip(wb.chunks_exact(9 * block)) {
            for (ky, row) in rows.chunks_exact(pw).enumerate() {
                let row = &row[x0..x0 + strip + 2];
                for kx in 0..3 {
                    let iv = load::<S, NV>(simd, &row[kx..]);
                    let wk = &wk[(ky * 3 + kx) * block + off..][..OB];
                    for o in 0..OB {
                        let wo = simd.splat_f32s(wk[o]);
                        for v in 0..NV {
                            acc[o][v] = simd.mul_add_e_f32s(iv[v], wo, acc[o][v]);
                        }
                    }
                }
            }
        }
    }
    acc
}

impl Run<'_, '_> {
    #[inline(always)]
    fn go<S: Simd, const OB: usize, const NV: usize>(mut self, simd: S) {
        let conv = self.conv;
        let lanes = S::F32_LANES;
        let strip = NV * lanes;
        let (cin, kernel) = (conv.cin, conv.kernel);
        let kk = kernel * kernel;
        let block = conv.block;
        let blocks = conv.cout.div_ceil(block);
        let plane = self.h * self.w;
        let len = self.out.ncols();
        let mut out_rows = row_slices(&mut self.out);
        // pixels computed per output row of the panel (whole strips, then cut)
        let (rows, row_len) = if kernel == 3 {
            (len / self.w, self.w)
        } else {
            (1, len)
        };
        // 3x3 rows wider than the panel allows are done in segments
        let seg_len = if kernel == 3 {
            ((PANEL_FLOATS / (3 * cin)) / strip * strip).max(strip)
        } else {
            row_len
        };
        let padded_len = seg_len.min(row_len).div_ceil(strip) * strip;
        // panel: [cin][kernel rows][padded_len + kernel - 1]
        let pw = padded_len + kernel - 1;
        let mut panel = vec![0.0f32; cin * kernel * pw];
        let mut tile = vec![0.0f32; strip];
        let mut rtile = vec![0.0f32; strip];
        let zero = simd.splat_f32s(0.0);
        for r in 0..rows {
            let mut seg0 = 0;
            while seg0 < row_len {
                let seg = seg_len.min(row_len - seg0);
                let base = self.start + r * row_len + seg0;
                // 1. transformed input
                if kernel == 3 {
                    let (y, x_start) = (base / self.w, base % self.w);
                    for (ic, rows3) in panel.chunks_exact_mut(3 * pw).enumerate() {
                        for (ky, dst) in rows3.chunks_exact_mut(pw).enumerate() {
                            let sy = y as isize + ky as isize - 1;
                            if sy < 0 || sy >= self.h as isize {
                                dst.fill(0.0);
                                continue;
                            }
                            let row = &self.input[ic * plane + sy as usize * self.w..][..self.w];
                            // panel column j holds input column x_start + j - 1
                            let lo = x_start.saturating_sub(1);
                            let hi = (x_start + seg + 1).min(self.w);
                            let first = lo + 1 - x_start;
                            dst[..first].fill(0.0);
                            conv.pre
                                .apply_row(ic, &row[lo..hi], &mut dst[first..first + hi - lo]);
                            dst[first + hi - lo..].fill(0.0);
                        }
                    }
                } else {
                    for (ic, dst) in panel.chunks_exact_mut(pw).enumerate() {
                        let src = &self.input[ic * plane + base..][..seg];
                        conv.pre.apply_row(ic, src, &mut dst[..seg]);
                        dst[seg..].fill(0.0);
                    }
                }
                // 2. every block of output channels, strip by strip
                for b in 0..blocks {
                    let wb = &conv.packed[b * cin * kk * block..(b + 1) * cin * kk * block];
                    for off in (0..block).step_by(OB) {
                        let oc0 = b * block + off;
                        if oc0 >= conv.cout {
                            break;
                        }
                        let mut x0 = 0;
                        while x0 < seg {
                            let acc = strip_acc::<S, OB, NV>(
                                simd,
                                kernel,
                                &panel,
                                pw,
                                x0,
                                wb,
                                block,
                                off,
                                &conv.bias[oc0..oc0 + OB],
                            );
                            // 3. epilogue: residual, activation, store the valid part
                            let n = strip.min(seg - x0);
                            let local = r * row_len + seg0 + x0;
                            let at = PixelAt::new(self.start + local, self.w);
                            for (o, acc_o) in acc.iter().enumerate() {
                                let oc = oc0 + o;
                                if oc >= conv.cout {
                                    break;
                                }
                                let dst = &mut out_rows[oc][local..local + n];
                                let relu = conv.post == Activation::Relu;
                                if n == strip {
                                    let mut v = *acc_o;
                                    if let Some(res) = residual_strip(
                                        self.residual,
                                        oc,
                                        plane,
                                        at,
                                        dst,
                                        &mut rtile,
                                    ) {
                                        let rv = load::<S, NV>(simd, res);
                                        for (v, r) in v.iter_mut().zip(rv) {
                                            *v = simd.add_f32s(*v, r);
                                        }
                                    }
                                    if relu {
                                        for v in v.iter_mut() {
                                            *v = simd.max_f32s(*v, zero);
                                        }
                                    }
                                    let (dv, _) = S::as_mut_simd_f32s(dst);
                                    dv[..NV].copy_from_slice(&v);
                                } else {
                                    let (tv, _) = S::as_mut_simd_f32s(&mut tile);
                                    tv[..NV].copy_from_slice(acc_o);
                                    let values = &mut tile[..n];
                                    if let Some(res) = residual_strip(
                                        self.residual,
                                        oc,
                                        plane,
                                        at,
                                        dst,
                                        &mut rtile,
                                    ) {
                                        for (v, r) in values.iter_mut().zip(res) {
                                            *v += r;
                                        }
                                    }
                                    store(values, None, relu, dst);
                                }
                            }
                            x0 += strip;
                        }
                    }
                }
                seg0 += seg;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use proptest::prelude::*;

    /// The definition in f64: transform, pad with zeros, sum, bias, residual, ReLU.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        cin: usize,
        cout: usize,
        k: usize,
        h: usize,
        w: usize,
        x: &[f32],
        wt: &[f32],
        bias: &[f32],
        pre: &InputTransform,
        residual: Option<&[f32]>,
        post: Activation,
    ) -> Vec<f32> {
        let t = |ic: usize, y: usize, xx: usize| {
            let mut v = x[(ic * h + y) * w + xx] as f64;
            if let Some(s) = &pre.scale {
                v *= s[ic] as f64;
            }
            if let Some(s) = &pre.shift {
                v += s[ic] as f64;
            }
            let v = if pre.relu { v.max(0.0) } else { v };
            match pre.fake_quant {
                Some(q) => q.apply(v as f32) as f64,
                None => v,
            }
        };
        crate::kernels::reference_conv(
            (cin, cout, k, h, w),
            t,
            |oc, ic, ky, kx| wt[((oc * cin + ic) * k + ky) * k + kx] as f64,
            |oc, sum| sum + bias.get(oc).copied().unwrap_or(0.0) as f64,
            residual,
            post == Activation::Relu,
        )
    }

    use crate::kernels::test_values as values;

    /// The kernel against the direct definition in f64 for one configuration; errors
    /// are bounded by 4e-4 per term (values in [-1, 1]; f32 sums of at most 9 * 40 terms,
    /// and Winograd's transforms, stay far below).
    #[allow(clippy::too_many_arguments)]
    fn check_against_definition(
        cin: usize,
        cout: usize,
        k: usize,
        hh: usize,
        ww: usize,
        seed: u64,
        scale: bool,
        shift: bool,
        relu: bool,
        mode: usize,
        post_relu: bool,
        threads: usize,
        odd: bool,
        quant: Option<u8>,
    ) -> Result<(), TestCaseError> {
        // modes: 0 no residual, 1 added, 2 added up-sampled, 3 already in the output
        let (h, w) = if mode == 2 || !odd {
            (2 * hh, 2 * ww)
        } else {
            (2 * hh - 1, 2 * ww - 1)
        };
        let x = values(cin * h * w, seed);
        let wt = values(cout * cin * k * k, seed + 1);
        let bias = values(cout, seed + 2);
        let pre = InputTransform {
            scale: scale.then(|| values(cin, seed + 3)),
            shift: shift.then(|| values(cin, seed + 4)),
            relu,
            fake_quant: quant.map(|zero| FakeQuant {
                scale: 3.0 / 255.0,
                zero,
            }),
        };
        let half = values(cout * (h / 2) * (w / 2), seed + 5);
        let res: Option<Vec<f32>> = match mode {
            0 => None,
            2 => Some(
                (0..cout * h * w)
                    .map(|i| {
                        let (c, y, x) = (i / (h * w), i / w % h, i % w);
                        half[(c * (h / 2) + y / 2) * (w / 2) + x / 2]
                    })
                    .collect(),
            ),
            _ => Some(values(cout * h * w, seed + 6)),
        };
        let post = if post_relu {
            Activation::Relu
        } else {
            Activation::None
        };
        let conv =
            DirectConv::new(cin, cout, k, &wt, &bias, pre.clone(), post).expect("test setup");
        let xin = Array2::from_shape_vec((cin, h * w), x.clone()).expect("test setup");
        let rin = res
            .as_ref()
            .map(|r| Array2::from_shape_vec((cout, h * w), r.clone()).expect("test setup"));
        let hin = Array2::from_shape_vec((cout, (h / 2) * (w / 2)), half).expect("test setup");
        let mut out = Array2::<f32>::from_elem((cout, h * w), f32::NAN);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("test setup");
        let pool = (threads > 1).then_some(&pool);
        let residual = match (mode, &rin) {
            (1, Some(r)) => Residual::Add(r.view()),
            (2, _) => Residual::AddUpsampled(hin.view()),
            (3, Some(r)) => {
                out.assign(r);
                Residual::InOutput
            }
            _ => Residual::None,
        };
        conv.run_image(xin.view(), h, w, residual, out.view_mut(), pool)
            .expect("test setup");
        let want = reference(
            cin,
            cout,
            k,
            h,
            w,
            &x,
            &wt,
            &bias,
            &pre,
            res.as_deref(),
            post,
        );
        let bound = (cin * k * k + 2) as f32 * 4.0 * 1e-4;
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            prop_assert!((a - b).abs() <= bound, "pixel {i}: {a} vs {b}");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any channel counts (blocks and partial blocks), sizes (partial strips, odd),
        /// kernels, transforms, residuals and thread counts.
        #[test]
        fn matches_direct_definition(
            cin in 1usize..40, cout in 1usize..20, k in prop::sample::select(vec![1usize, 3]),
            hh in 1usize..5, ww in 1usize..35, seed in 0u64..1000,
            scale in any::<bool>(), shift in any::<bool>(), relu in any::<bool>(),
            mode in 0usize..4, post_relu in any::<bool>(), threads in 1usize..4, odd in any::<bool>(),
            quant in prop::option::of(0u8..=255),
        ) {
            check_against_definition(cin, cout, k, hh, ww, seed, scale, shift, relu, mode,
                post_relu, threads, odd, quant)?;
        }

        /// The same for the wide 3x3 convolutions, which run as Winograd F(2x2, 3x3).
        #[test]
        fn winograd_matches_direct_definition(
            cin in WINOGRAD_MIN_CHANNELS..40, cout in WINOGRAD_MIN_CHANNELS..30,
            hh in 1usize..6, ww in 1usize..40, seed in 0u64..1000,
            scale in any::<bool>(), shift in any::<bool>(), relu in any::<bool>(),
            mode in 0usize..4, post_relu in any::<bool>(), threads in 1usize..4, odd in any::<bool>(),
        ) {
            let conv = DirectConv::new(cin, cout, 3, &vec![0.0; cout * cin * 9], &[],
                Default::default(), Activation::None).expect("test setup");
            prop_assert!(conv.is_winograd());
            check_against_definition(cin, cout, 3, hh, ww, seed, scale, shift, relu, mode,
                post_relu, threads, odd, None)?;
        }
    }

    #[test]
    fn hand_computed_3x3_with_padding() {
        // one channel 3x3 of 1..9, all-ones kernel, bias 0.5: each output is the sum of
        // its in-image neighbourhood + 0.5; corner (0,0) = 1+2+4+5 + 0.5 = 12.5,
        // centre = 45 + 0.5.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let conv = DirectConv::new(
            1,
            1,
            3,
            &[1.0; 9],
            &[0.5],
            InputTransform::default(),
            Activation::None,
        )
        .expect("test setup");
        let xin = Array2::from_shape_vec((1, 9), x).expect("test setup");
        let mut out = Array2::<f32>::zeros((1, 9));
        conv.run_image(xin.view(), 3, 3, Residual::None, out.view_mut(), None)
            .expect("test setup");
        assert_eq!(out[[0, 0]], 12.5);
        assert_eq!(out[[0, 4]], 45.5);
        assert_eq!(out[[0, 8]], 5.0 + 6.0 + 8.0 + 9.0 + 0.5);
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert!(
            DirectConv::new(
                2,
                2,
                5,
                &[0.0; 100],
                &[],
                Default::default(),
                Activation::None
            )
            .is_err()
        );
        assert!(
            DirectConv::new(
                2,
                2,
                3,
                &[0.0; 35],
                &[],
                Default::default(),
                Activation::None
            )
            .is_err()
        );
        let conv = DirectConv::new(
            2,
            2,
            1,
            &[0.0; 4],
            &[],
            Default::default(),
            Activation::None,
        )
        .expect("test setup");
        let x = Array2::<f32>::zeros((3, 4));
        let mut out = Array2::<f32>::zeros((2, 4));
        assert!(
            conv.run_image(x.view(), 2, 2, Residual::None, out.view_mut(), None)
                .is_err()
        );
    }
}
