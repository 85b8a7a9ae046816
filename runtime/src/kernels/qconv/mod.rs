//! Quantized direct convolution: what a QDQ-quantized ONNX `Conv` means,
//! `DequantizeLinear(QuantizeLinear(x)) * DequantizeLinear(w_int8)`, computed in
//! integers.
//!
//! The input is float (the previous layer's output, [`QuantInput::Float`]): the
//! pre-activation (scale, shift, ReLU) and the quantization to `u8` happen as it is
//! copied into the panel. Or it is already `u8` codes ([`QuantInput::Codes`]), written
//! by the convolution before, which then only need copying. The output is float
//! (requantization `(acc - zero * sum(w)) * x_scale * w_scale[oc] + bias`, the residual
//! sum and the ReLU as it is written), or, with a [`CodeOutput`], the `u8` codes of the
//! next quantized convolution: its pre-activation and its quantization applied to that
//! float value in the same epilogue, so that between two quantized convolutions the
//! activations stay 8-bit (a quarter of the memory traffic, no float pass). Both routes
//! do the same float operations in the same order: chained or not, the codes are equal.
//! In between, the multiply-accumulates are `u8 x i8 -> i32` dot products of four input
//! channels (`vpdpbusd`, AVX512-VNNI: 64 per instruction, four times the f32 rate).
//!
//! Without VNNI the same convolution runs on the f32 kernels with dequantized weights
//! and the input quantized and dequantized in the panel ([`crate::kernels::conv::FakeQuant`])
//! or dequantized from its codes: the same values, up to the order of float sums, at
//! float speed.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::conv::{
    Activation, ConvError, DirectConv, FakeQuant, InputTransform, OC_BLOCK, Residual,
};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::conv::{Source, check_shapes, for_each_run, run_all};

/// Bytes of quantized input a segment of a run keeps. A 1x1 panel is read once per block
/// of 8 output channels and should stay in L1 (32 KiB on Zen 3/4: on 256->1024 1x1 a
/// 64 KiB panel ran at 0.7x the rate of a 24 KiB one); a 3x3 panel does better whole
/// rows wide, in L2 (32->32 3x3 at 512 wide: 24 KiB segments ran at 0.75x).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const PANEL_BYTES: [usize; 2] = [24 * 1024, 256 * 1024];

/// The panel budget of a `kernel` x `kernel` convolution: [`PANEL_BYTES`], but four
/// times the 1x1 one where the input is floats. Filling from floats reads each input
/// channel's row of the segment: with 24 KiB and 512 channels that is 32 pixels, 128
/// bytes from each of 512 rows, which no hardware prefetcher follows, and the fill waits
/// on its loads. With 96 KiB (or the whole run, at most `64 Ki / cin` pixels), Table 1's
/// int8 window took 194-199 ms against 205-210 (six alternating rounds, 1 thread, AVX512
/// VNNI); codes in gained nothing measurable from it (194 against 196) and keep the L1
/// budget.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn panel_bytes(kernel: usize, reads_floats: bool) -> usize {
    match (kernel, reads_floats) {
        (3, _) => PANEL_BYTES[1],
        (_, true) => 4 * PANEL_BYTES[0],
        (_, false) => PANEL_BYTES[0],
    }
}

/// Output pixels per strip: two 16-lane vectors of AVX-512; four times two 4-lane
/// vectors of NEON.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const STRIP: usize = 32;

/// Below this many multiply-accumulates per output pixel a quantized convolution runs
/// on the f32 emulation (see [`QuantConv::kernel_choice`]).
pub const MIN_MACS_FOR_INTEGER: usize = 256;

/// What a quantized convolution reads.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantInput {
    /// Float values, transformed by `pre` (scale, shift, ReLU; no quantization) and
    /// quantized by `quant` as they are read.
    Float {
        pre: InputTransform,
        quant: FakeQuant,
    },
    /// The `u8` codes of `quant`, written by the convolution before (its [`CodeOutput`]).
    Codes { quant: FakeQuant },
}

impl QuantInput {
    pub fn quant(&self) -> FakeQuant {
        match self {
            QuantInput::Float { quant, .. } | QuantInput::Codes { quant } => *quant,
        }
    }

    pub fn reads_codes(&self) -> bool {
        matches!(self, QuantInput::Codes { .. })
    }
}

/// An output written as the `u8` codes the next quantized convolution reads: its
/// pre-activation (`pre`: scale, shift, ReLU) and its input quantization (`quant`),
/// applied to this convolution's float output in the epilogue.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeOutput {
    pub pre: InputTransform,
    pub quant: FakeQuant,
}

/// The activations a quantized convolution reads, `[channels, h*w]`.
#[derive(Debug, Clone, Copy)]
pub enum Activations<'a> {
    Float(ArrayView2<'a, f32>),
    Codes(ArrayView2<'a, u8>),
}

/// The activations a quantized convolution writes, `[channels, h*w]`.
#[derive(Debug)]
pub enum ActivationsMut<'a> {
    Float(ArrayViewMut2<'a, f32>),
    Codes(ArrayViewMut2<'a, u8>),
    /// The codes of two readers (the convolution's [`CodeOutput`] and its second one).
    CodePair(ArrayViewMut2<'a, u8>, ArrayViewMut2<'a, u8>),
    /// The float values, and the codes of one reader of them (a convolution that keeps
    /// its float output, [`QuantConv::with_float_output_kept`]).
    FloatAndCodes(ArrayViewMut2<'a, f32>, ArrayViewMut2<'a, u8>),
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl ActivationsMut<'_> {
    fn dim(&self) -> (usize, usize) {
        match self {
            ActivationsMut::Float(a) | ActivationsMut::FloatAndCodes(a, _) => a.dim(),
            ActivationsMut::Codes(a) | ActivationsMut::CodePair(a, _) => a.dim(),
        }
    }
}

/// A quantized convolution, weights packed for the integer kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantConv {
    cin: usize,
    cout: usize,
    kernel: usize,
    /// Groups of four input channels (the last one padded with zero weights).
    groups: usize,
    /// `[cout blocks][groups][kernel * kernel][OC_BLOCK]`: four `i8` weights of
    /// consecutive input channels in one little-endian `i32`.
    packed: Vec<i32>,
    /// The sum of each output channel's weights, padded: the accumulator holds
    /// `sum(code * w)`, the definition wants `sum((code - zero) * w)`.
    weight_sums: Vec<i32>,
    /// `x_scale * w_scale[oc]`, padded.
    out_scale: Vec<f32>,
    /// Padded.
    bias: Vec<f32>,
    input: QuantInput,
    post: Activation,
    /// Codes for the next quantized convolution instead of floats.
    output: Option<CodeOutput>,
    /// Codes for a second reader as well (with `output`): a value two quantized
    /// convolutions read, each with its own pre-activation and quantization.
    second_output: Option<CodeOutput>,
    /// With `output`, the float values are written as well (a value that one quantized
    /// convolution reads as its input and others read in float: the residual stream).
    keeps_float: bool,
    /// The same convolution in f32 (dequantized weights; float input fake-quantized in
    /// the panel, codes dequantized before).
    float: DirectConv,
}

/// Which code runs a [`QuantConv`] on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKernel {
    /// `u8 x i8` dot products in `i32` (x86-64 with AVX512-VNNI).
    Avx512Vnni,
    /// `i8 x i8` dot products in `i32` (aarch64 with the dot-product extension, `SDOT`:
    /// Cortex-A55/A76/A78 and later, Apple, Neoverse), on codes shifted by 128.
    NeonDot,
    /// The f32 kernels on dequantized weights: every other CPU (Cortex-A53/A72, armv7,
    /// x86-64 without VNNI).
    Float,
}

impl QuantKernel {
    /// The best kernel this CPU has.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return QuantKernel::Avx512Vnni;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            return QuantKernel::NeonDot;
        }
        QuantKernel::Float
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantKernel::Avx512Vnni => "int8 avx512-vnni",
            QuantKernel::NeonDot => "int8 neon sdot",
            QuantKernel::Float => "int8 emulated in f32",
        }
    }

    /// The CPU feature an integer kernel needs.
    fn feature(self) -> &'static str {
        match self {
            QuantKernel::Avx512Vnni => "AVX512-VNNI",
            QuantKernel::NeonDot => "the aarch64 dot-product extension (SDOT)",
            QuantKernel::Float => "nothing",
        }
    }
}

impl QuantConv {
    /// `weights` `i8` in ONNX order `[cout, cin, kernel, kernel]` with one scale per
    /// output channel (zero point 0); `bias` float of `cout` (or empty); `input` says
    /// how the input is read and quantized, `output` whether the output is written as
    /// the next convolution's codes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        weights: &[i8],
        weight_scales: &[f32],
        bias: &[f32],
        input: QuantInput,
        post: Activation,
        output: Option<CodeOutput>,
    ) -> Result<Self, ConvError> {
        let input_quant = input.quant();
        let kk = kernel * kernel;
        if weight_scales.len() != cout {
            return Err(ConvError::Shape(format!(
                "{} weight scales for {cout} channels",
                weight_scales.len()
            )));
        }
        if !(input_quant.scale.is_finite() && input_quant.scale > 0.0)
            || weight_scales.iter().any(|s| !s.is_finite())
        {
            return Err(ConvError::Unsupported(
                "quantization scales must be finite and the input scale positive".into(),
            ));
        }
        let pre_quantizes = match &input {
            QuantInput::Float { pre, .. } => pre.fake_quant.is_some(),
            QuantInput::Codes { .. } => false,
        };
        if pre_quantizes || output.as_ref().is_some_and(|o| o.pre.fake_quant.is_some()) {
            return Err(ConvError::Unsupported(
                "the input transform of a quantized conv quantizes already".into(),
            ));
        }
        if let Some(o) = &output
            && !(o.quant.scale.is_finite() && o.quant.scale > 0.0)
        {
            return Err(ConvError::Unsupported(
                "the output quantization scale must be finite and positive".into(),
            ));
        }
        let dequantized: Vec<f32> = weights
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * weight_scales.get(i / (cin * kk).max(1)).unwrap_or(&0.0))
            .collect();
        let float_pre = match &input {
            QuantInput::Float { pre, quant } => InputTransform {
                fake_quant: Some(*quant),
                ..pre.clone()
            },
            // dequantized codes are the values already
            QuantInput::Codes { .. } => InputTransform::default(),
        };
        let float = DirectConv::new(cin, cout, kernel, &dequantized, bias, float_pre, post)?;
        let groups = cin.div_ceil(4);
        let blocks = cout.div_ceil(OC_BLOCK);
        let mut packed = vec![0i32; blocks * groups * kk * OC_BLOCK];
        let mut weight_sums = vec![0i32; blocks * OC_BLOCK];
        let w = |oc: usize, ic: usize, k: usize| -> i8 {
            if ic < cin {
                weights[(oc * cin + ic) * kk + k]
            } else {
                0
            }
        };
        for (oc, weight_sum) in weight_sums.iter_mut().enumerate().take(cout) {
            let (b, o) = (oc / OC_BLOCK, oc % OC_BLOCK);
            let mut sum = 0i32;
            for g in 0..groups {
                for k in 0..kk {
                    let four = [0, 1, 2, 3].map(|j| w(oc, 4 * g + j, k));
                    sum += four.iter().map(|&v| v as i32).sum::<i32>();
                    packed[((b * groups + g) * kk + k) * OC_BLOCK + o] =
                        i32::from_le_bytes(four.map(|v| v as u8));
                }
            }
            *weight_sum = sum;
        }
        let mut out_scale = vec![0.0; blocks * OC_BLOCK];
        for (o, s) in out_scale.iter_mut().zip(weight_scales) {
            *o = input_quant.scale * s;
        }
        let mut padded_bias = vec![0.0; blocks * OC_BLOCK];
        padded_bias[..bias.len()].copy_from_slice(bias);
        Ok(Self {
            cin,
            cout,
            kernel,
            groups,
            packed,
            weight_sums,
            out_scale,
            bias: padded_bias,
            input,
            post,
            output,
            second_output: None,
            keeps_float: false,
            float,
        })
    }

    /// The same convolution writing the codes of a second reader as well: `second`'s
    /// pre-activation and quantization applied to the same float value as the first
    /// code output's (a sum that two quantized convolutions read). Needs a code output.
    pub fn with_second_code_output(mut self, second: CodeOutput) -> Result<Self, ConvError> {
        if self.output.is_none() {
            return Err(ConvError::Unsupported(
                "a second code output needs a first one".into(),
            ));
        }
        if second.pre.fake_quant.is_some()
            || !(second.quant.scale.is_finite() && second.quant.scale > 0.0)
        {
            return Err(ConvError::Unsupported(
                "the second output's transform quantizes already, or its scale is not finite and positive"
                    .into(),
            ));
        }
        if self.keeps_float {
            return Err(ConvError::Unsupported(
                "a convolution that keeps its float output writes one code output".into(),
            ));
        }
        self.second_output = Some(second);
        Ok(self)
    }

    /// The same convolution writing its float output as well as its code output: the
    /// codes for the one quantized convolution that reads the value as its input, the
    /// floats for the rest (a residual sum, a down-sampling). Needs one code output.
    pub fn with_float_output_kept(mut self) -> Result<Self, ConvError> {
        if self.output.is_none() || self.second_output.is_some() {
            return Err(ConvError::Unsupported(
                "keeping the float output needs exactly one code output".into(),
            ));
        }
        self.keeps_float = true;
        Ok(self)
    }

    /// Whether the float values are written (alone, or beside the codes).
    pub fn writes_float(&self) -> bool {
        self.output.is_none() || self.keeps_float
    }

    /// How the input is read.
    pub fn input(&self) -> &QuantInput {
        &self.input
    }

    /// The codes written for the next convolution, if the output is not float.
    pub fn code_output(&self) -> Option<&CodeOutput> {
        self.output.as_ref()
    }

    /// How many code outputs the convolution writes: 0 (floats), 1 or 2.
    pub fn code_outputs(&self) -> usize {
        self.output.is_some() as usize + self.second_output.is_some() as usize
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

    /// The kernel [`Self::run_image`] uses: the integer one where the CPU has it and the
    /// convolution reads codes or has at least [`MIN_MACS_FOR_INTEGER`]
    /// multiply-accumulates per pixel, else the f32 emulation (same values: below that,
    /// quantizing a float input costs more than the integer products save; measured on
    /// 1->8 3x3 and 8->1 1x1 at 512^2, the integer kernel took 1.6-2x the time of the f32
    /// one). Codes in need no quantization, and the f32 route would dequantize them into a
    /// whole float copy first.
    pub fn kernel_choice(&self) -> QuantKernel {
        if !self.input.reads_codes() && self.macs_per_pixel() < MIN_MACS_FOR_INTEGER {
            QuantKernel::Float
        } else {
            QuantKernel::detect()
        }
    }

    /// An upper bound of the bytes [`Self::run_image`] allocates while it runs on an
    /// `h x w` image with `threads` threads, on the route [`Self::kernel_choice`] takes
    /// on this CPU: the integer route's panels per task, or the f32 route's dequantized
    /// input and float output (whole images) and its kernel's panels.
    pub fn scratch_bytes(&self, h: usize, w: usize, threads: usize) -> usize {
        let plane = h * w;
        match self.kernel_choice() {
            QuantKernel::Float => {
                let mut bytes = self.float.scratch_bytes(h, w, threads);
                if self.input.reads_codes() {
                    bytes += self.cin * plane * 4;
                }
                if self.output.is_some() {
                    bytes += (self.cout + 1) * plane * 4;
                }
                bytes
            }
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            QuantKernel::Avx512Vnni | QuantKernel::NeonDot => {
                self.float.scratch_bytes(h, w, threads)
            }
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            QuantKernel::Avx512Vnni | QuantKernel::NeonDot => {
                let k = self.kernel;
                let budget = panel_bytes(k, !self.input.reads_codes());
                let seg = (budget / (k * self.groups * 4)).max(STRIP);
                let row = if k == 3 {
                    w
                } else {
                    super::conv::one_by_one_run_bound(self.cin, plane)
                };
                let pw = seg.min(row) + STRIP + k - 1;
                // panel of u32; four rows of floats (a group's channels) and a row of
                // zero-point codes; each output channel's row slice
                let per_task = self.groups * k * pw * 4
                    + 4 * pw * 4
                    + pw
                    + self.cout * std::mem::size_of::<&mut [f32]>();
                threads.max(1) * per_task + super::conv::run_list_bytes(plane, threads)
            }
        }
    }

    /// Run on one image with [`Self::kernel_choice`] (see [`DirectConv::run_image`] for
    /// the arguments).
    pub fn run_image(
        &self,
        input: Activations<'_>,
        h: usize,
        w: usize,
        residual: Residual<'_>,
        output: ActivationsMut<'_>,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<(), ConvError> {
        self.run_image_with(self.kernel_choice(), input, h, w, residual, output, pool)
    }

    /// Run with a given kernel; [`QuantKernel::Float`] runs anywhere, an integer kernel
    /// the CPU lacks is refused. The input and output must be floats or codes as the
    /// convolution was built ([`QuantInput`], [`CodeOutput`]); a residual in the output
    /// buffer needs a float output.
    #[allow(clippy::too_many_arguments)]
    pub fn run_image_with(
        &self,
        kernel: QuantKernel,
        input: Activations<'_>,
        h: usize,
        w: usize,
        residual: Residual<'_>,
        output: ActivationsMut<'_>,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<(), ConvError> {
        let kind = |codes: bool| if codes { "u8 codes" } else { "floats" };
        let reads_codes = matches!(input, Activations::Codes(_));
        if reads_codes != self.input.reads_codes() {
            return Err(ConvError::Shape(format!(
                "input of {} for a convolution that reads {}",
                kind(reads_codes),
                kind(self.input.reads_codes())
            )));
        }
        // (floats written, code outputs)
        let outputs = match output {
            ActivationsMut::Float(_) => (true, 0),
            ActivationsMut::Codes(_) => (false, 1),
            ActivationsMut::CodePair(..) => (false, 2),
            ActivationsMut::FloatAndCodes(..) => (true, 1),
        };
        let pair = match &output {
            ActivationsMut::CodePair(first, second) => Some((first.dim(), second.dim())),
            ActivationsMut::FloatAndCodes(first, second) => Some((first.dim(), second.dim())),
            _ => None,
        };
        if let Some((first, second)) = pair
            && first != second
        {
            return Err(ConvError::Shape(format!(
                "two outputs of shapes {first:?} and {second:?}"
            )));
        }
        let own = (self.writes_float(), self.code_outputs());
        if outputs != own || (!outputs.0 && matches!(residual, Residual::InOutput)) {
            let kinds = |(floats, codes): (bool, usize)| match (floats, codes) {
                (true, 0) => "floats",
                (true, _) => "floats and u8 codes",
                (false, 1) => "u8 codes",
                (false, _) => "two u8 code outputs",
            };
            return Err(ConvError::Shape(format!(
                "output of {} for a convolution that writes {}{}",
                kinds(outputs),
                kinds(own),
                if outputs.0 {
                    ""
                } else {
                    " (a residual in the output needs floats)"
                }
            )));
        }
        match kernel {
            QuantKernel::Float => self.run_float(input, h, w, residual, output, pool),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            integer if integer == QuantKernel::detect() => {
                self.run_integer(integer, input, h, w, residual, output, pool)
            }
            missing => Err(ConvError::Unsupported(format!(
                "this CPU has no {}",
                missing.feature()
            ))),
        }
    }

    /// An integer route (the caller has checked that the CPU has it).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[allow(clippy::too_many_arguments)]
    fn run_integer(
        &self,
        kernel: QuantKernel,
        input: Activations<'_>,
        h: usize,
        w: usize,
        residual: Residual<'_>,
        output: ActivationsMut<'_>,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<(), ConvError> {
        let out_dim = output.dim();
        let (input, residual) = match input {
            Activations::Float(x) => {
                let (x, r) = check_shapes(self.cin, self.cout, h, w, x, residual, out_dim)?;
                (Src::Float(x), r)
            }
            Activations::Codes(x) => {
                let (x, r) = check_shapes(self.cin, self.cout, h, w, x, residual, out_dim)?;
                (Src::Codes(x), r)
            }
        };
        let run = |start: usize, out: Dst<'_>| {
            dot::run_strips(
                kernel,
                QRun {
                    conv: self,
                    input,
                    residual,
                    h,
                    w,
                    start,
                    out,
                },
            )
        };
        match output {
            ActivationsMut::Float(mut out) => {
                let job =
                    |start: usize, chunk: ArrayViewMut2<'_, f32>| run(start, Dst::Float(chunk));
                for_each_run(self.kernel, 1, self.cin, h, w, out.view_mut(), pool, &job);
            }
            ActivationsMut::Codes(mut out) => {
                let job = |start: usize, chunk: ArrayViewMut2<'_, u8>| {
                    run(start, Dst::Codes(chunk, None))
                };
                for_each_run(self.kernel, 1, self.cin, h, w, out.view_mut(), pool, &job);
            }
            ActivationsMut::CodePair(mut first, mut second) => {
                // the runs of the first output, and the same columns of the second
                let threads = pool.map_or(1, |p| p.current_num_threads());
                let len = super::conv::run_length(self.kernel, 1, self.cin, h, w, threads);
                let runs = first
                    .axis_chunks_iter_mut(ndarray::Axis(1), len)
                    .zip(second.axis_chunks_iter_mut(ndarray::Axis(1), len))
                    .enumerate()
                    .map(|(i, (a, b))| (i * len, Dst::Codes(a, Some(b))));
                run_all(runs, pool, &|(start, out)| run(start, out));
            }
            ActivationsMut::FloatAndCodes(mut floats, mut codes) => {
                // the runs of the floats, and the same columns of the codes
                let threads = pool.map_or(1, |p| p.current_num_threads());
                let len = super::conv::run_length(self.kernel, 1, self.cin, h, w, threads);
                let runs = floats
                    .axis_chunks_iter_mut(ndarray::Axis(1), len)
                    .zip(codes.axis_chunks_iter_mut(ndarray::Axis(1), len))
                    .enumerate()
                    .map(|(i, (a, b))| (i * len, Dst::FloatAndCodes(a, b)));
                run_all(runs, pool, &|(start, out)| run(start, out));
            }
        }
        Ok(())
    }

    /// The f32 route: codes in are dequantized first, codes out are written from a float
    /// output.
    fn run_float(
        &self,
        input: Activations<'_>,
        h: usize,
        w: usize,
        residual: Residual<'_>,
        output: ActivationsMut<'_>,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<(), ConvError> {
        let dequantized;
        let input = match input {
            Activations::Float(x) => x,
            Activations::Codes(x) => {
                let q = self.input.quant();
                dequantized = x.mapv(|c| (c as f32 - q.zero as f32) * q.scale);
                dequantized.view()
            }
        };
        match (output, &self.output) {
            (ActivationsMut::Float(out), _) => {
                self.float.run_image(input, h, w, residual, out, pool)
            }
            (ActivationsMut::FloatAndCodes(mut out, codes), Some(code)) => {
                self.float
                    .run_image(input, h, w, residual, out.view_mut(), pool)?;
                codes_of_rows(out.view(), code, codes, pool);
                Ok(())
            }
            (ActivationsMut::CodePair(first, second), Some(code)) => {
                let second_code = self
                    .second_output
                    .as_ref()
                    .expect("checked by run_image_with");
                let mut values = Array2::<f32>::zeros(first.dim());
                self.float
                    .run_image(input, h, w, residual, values.view_mut(), pool)?;
                codes_of_rows(values.view(), code, first, pool);
                codes_of_rows(values.view(), second_code, second, pool);
                Ok(())
            }
            (ActivationsMut::Codes(out), Some(code)) => {
                let mut values = Array2::<f32>::zeros(out.dim());
                self.float
                    .run_image(input, h, w, residual, values.view_mut(), pool)?;
                codes_of_rows(values.view(), code, out, pool);
                Ok(())
            }
            (_, None) => unreachable!("checked by run_image_with"),
        }
    }
}

/// Each output channel's codes from its float values, one task per channel on the pool's
/// threads; the rounding compiled for the CPU's features (a plain loop calls `rintf` per
/// value).
fn codes_of_rows(
    values: ArrayView2<'_, f32>,
    code: &CodeOutput,
    mut out: ArrayViewMut2<'_, u8>,
    pool: Option<&rayon::ThreadPool>,
) {
    let plane = values.ncols();
    let values = values
        .to_slice()
        .expect("a new array, or an output laid out [channels, h*w], is contiguous");
    let rows: Vec<(usize, &[f32], &mut [u8])> = values
        .chunks(plane.max(1))
        .zip(super::conv::row_slices(&mut out))
        .enumerate()
        .map(|(oc, (src, dst))| (oc, src, dst))
        .collect();
    let convert = |(oc, src, dst): (usize, &[f32], &mut [u8])| {
        pulp::Arch::new().dispatch(CodesOfRow { code, oc, src, dst })
    };
    match pool {
        Some(pool) if pool.current_num_threads() > 1 => pool.install(|| {
            use rayon::prelude::*;
            rows.into_par_iter().for_each(convert)
        }),
        _ => rows.into_iter().for_each(convert),
    }
}

/// One output channel's codes from its float values: the next convolution's
/// pre-activation, then its quantization.
struct CodesOfRow<'a> {
    code: &'a CodeOutput,
    oc: usize,
    src: &'a [f32],
    dst: &'a mut [u8],
}

impl pulp::WithSimd for CodesOfRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let CodesOfRow { code, oc, src, dst } = self;
        code.pre.quantize_row(oc, code.quant, src, dst);
    }
}

/// The input of a run: floats to transform and quantize, or codes.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[derive(Clone, Copy)]
enum Src<'a> {
    Float(&'a [f32]),
    Codes(&'a [u8]),
}

/// The output of a run: floats, or codes (and a second reader's codes), or floats and
/// codes.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
enum Dst<'o> {
    Float(ArrayViewMut2<'o, f32>),
    Codes(ArrayViewMut2<'o, u8>, Option<ArrayViewMut2<'o, u8>>),
    FloatAndCodes(ArrayViewMut2<'o, f32>, ArrayViewMut2<'o, u8>),
}

/// One run of output pixels `[start, start + out.ncols())` of every output channel.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct QRun<'a, 'o> {
    conv: &'a QuantConv,
    input: Src<'a>,
    residual: Source<'a>,
    h: usize,
    w: usize,
    start: usize,
    out: Dst<'o>,
}

/// What a micro-kernel sees of one strip: the panel (`[groups][kernel rows][pw]` of four
/// `u8` codes in a `u32`), the panel row of each kernel row, the first pixel, and a
/// block's weights (`[groups][kernel * kernel][OC_BLOCK]` of four `i8` in an `i32`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct Strip<'a> {
    panel: &'a [u32],
    pw: usize,
    slots: [usize; 3],
    x0: usize,
    kernel: usize,
    weights: &'a [i32],
}

/// `[OC_BLOCK][STRIP]` sums of `code * weight` (minus `offset * weight` for a kernel
/// that shifts the codes, see [`integer_run`]).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
type Sums = [[i32; STRIP]; OC_BLOCK];

/// Defines one integer kernel's run, `fn $name(run: QRun)` with the attributes given
/// (its `#[target_feature]`): fill the panel of quantized input, let `$strip` sum each
/// strip of [`STRIP`] pixels for each block of [`OC_BLOCK`] output channels, then
/// requantize, add the residual, activate and store (floats, or the next convolution's
/// codes). `$offset` is what the micro-kernel subtracts from every code before its
/// products (128 for signed-by-signed dot products, else 0). A macro, not a generic
/// function: the closures in it must be compiled for the kernel's CPU features, and only
/// the closures of a `#[target_feature]` function are (a shared function cost 4x in
/// `rintf` calls).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! integer_run {
    ($(#[$attr:meta])* fn $name:ident, offset = $offset:expr, strip = $strip:path) => {
        $(#[$attr])*
        fn $name(mut run: QRun<'_, '_>) {
            let offset: i32 = $offset;

            let conv = run.conv;
            let (kernel, groups) = (conv.kernel, conv.groups);
            let kk = kernel * kernel;
            let blocks = conv.cout.div_ceil(OC_BLOCK);
            let plane = run.h * run.w;
            let len = match &run.out {
                Dst::Float(o) | Dst::FloatAndCodes(o, _) => o.ncols(),
                Dst::Codes(o, _) => o.ncols(),
            };
            // each output channel's slice of this run, taken once
            let (mut float_rows, mut code_rows, mut second_rows) = match &mut run.out {
                Dst::Float(o) => (crate::kernels::conv::row_slices(o), Vec::new(), Vec::new()),
                Dst::FloatAndCodes(o, codes) => (
                    crate::kernels::conv::row_slices(o),
                    crate::kernels::conv::row_slices(codes),
                    Vec::new(),
                ),
                Dst::Codes(o, second) => (
                    Vec::new(),
                    crate::kernels::conv::row_slices(o),
                    second.as_mut().map_or_else(Vec::new, crate::kernels::conv::row_slices),
                ),
            };
            let writes_floats = !float_rows.is_empty();
            let q = conv.input.quant();
            let identity = InputTransform::default();
            let pre = match &conv.input {
                QuantInput::Float { pre, .. } => pre,
                QuantInput::Codes { .. } => &identity,
            };
            let (rows, row_len) = if kernel == 3 {
                (len / run.w, run.w)
            } else {
                (1, len)
            };
            let budget = panel_bytes(kernel, matches!(run.input, Src::Float(_)));
            let seg_len = ((budget / (kernel * groups * 4)) / STRIP * STRIP).max(STRIP);
            let padded_len = seg_len.min(row_len).div_ceil(STRIP) * STRIP;
            // panel: [groups][kernel rows][pw pixels] of four u8 codes (4 input channels) in a
            // u32; the zero point (dequantized 0.0) wherever the conv pads or a channel is
            // padding
            let pw = padded_len + kernel - 1;
            let mut panel = vec![0u32; groups * kernel * pw];
            // the four channels of a group transformed (0.0 for channels beyond the input's,
            // which quantizes to the zero point; `floats[0]` stays 0.0 when the input is
            // read as it is)
            let mut floats: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0f32; pw]);
            let reads_as_is = *pre == identity;
            let mut values = [0.0f32; STRIP];
            let mut rtile = [0.0f32; STRIP];
            let no_output = [0.0f32; STRIP];
            let mut sums: Sums = [[0; STRIP]; OC_BLOCK];
            let zero_codes = vec![q.zero; pw];
            let zero4 = u32::from_le_bytes([q.zero; 4]);
            // 1. transformed, quantized input, four channels interleaved per pixel: panel row
            // `slot` of every group gets input row `sy` (3x3: columns `base % w - 1 ..= base % w +
            // seg`) or pixels `[base, base + seg)` (1x1). The image's columns are `[first,
            // first + count)` of the panel row, from pixel `from`; the rest is the zero point.
            let mut fill = |panel: &mut [u32], slot: usize, sy: isize, base: usize, seg: usize| {
                let (first, from, count) = if kernel == 3 {
                    if sy < 0 || sy >= run.h as isize {
                        (0, 0, 0)
                    } else {
                        let x_start = base % run.w;
                        let lo = x_start.saturating_sub(1);
                        let hi = (x_start + seg + 1).min(run.w);
                        (lo + 1 - x_start, sy as usize * run.w + lo, hi - lo)
                    }
                } else {
                    (0, base, seg)
                };
                for g in 0..groups {
                    let dst = &mut panel[(g * kernel + slot) * pw..][..pw];
                    dst[..first].fill(zero4);
                    dst[first + count..].fill(zero4);
                    let dst = &mut dst[first..first + count];
                    match run.input {
                        // codes in: interleaved straight from the input rows
                        Src::Codes(x) => {
                            let lane = |j: usize| -> &[u8] {
                                let ic = 4 * g + j;
                                if ic < conv.cin {
                                    &x[ic * plane + from..][..count]
                                } else {
                                    &zero_codes[..count]
                                }
                            };
                            let (l0, l1, l2, l3) = (lane(0), lane(1), lane(2), lane(3));
                            for ((((d, &a), &b), &c), &e) in
                                dst.iter_mut().zip(l0).zip(l1).zip(l2).zip(l3)
                            {
                                *d = u32::from_le_bytes([a, b, c, e]);
                            }
                        }
                        // floats in: each channel transformed, then the four quantized as
                        // they are interleaved
                        Src::Float(x) => {
                            // without a pre-activation (a shortcut's input), straight
                            // from the input rows: a copy of each row first was 3 % of
                            // Table 1's int8 time (`perf record`)
                            let lanes: [&[f32]; 4] = if reads_as_is {
                                std::array::from_fn(|j| {
                                    let ic = 4 * g + j;
                                    if ic < conv.cin {
                                        &x[ic * plane + from..][..count]
                                    } else {
                                        &floats[0][..count]
                                    }
                                })
                            } else {
                                for (j, lane) in floats.iter_mut().enumerate() {
                                    let ic = 4 * g + j;
                                    if ic < conv.cin {
                                        pre.apply_row_float(ic, &x[ic * plane + from..][..count], &mut lane[..count]);
                                    } else {
                                        lane[..count].fill(0.0);
                                    }
                                }
                                std::array::from_fn(|j| &floats[j][..count])
                            };
                            let [f0, f1, f2, f3] = lanes;
                            for ((((d, &a), &b), &c), &e) in dst
                                .iter_mut()
                                .zip(f0)
                                .zip(f1)
                                .zip(f2)
                                .zip(f3)
                            {
                                *d = u32::from_le_bytes([
                                    q.quantize(a),
                                    q.quantize(b),
                                    q.quantize(c),
                                    q.quantize(e),
                                ]);
                            }
                        }
                    }
                }
            };
            // 3x3 over whole rows: the panel is a ring of three input rows, and each output row
            // quantizes one new input row instead of three
            let ring = kernel == 3 && seg_len >= row_len;
            let mut held = [isize::MIN; 3];
            for r in 0..rows {
                let mut seg0 = 0;
                while seg0 < row_len {
                    let seg = seg_len.min(row_len - seg0);
                    let base = run.start + r * row_len + seg0;
                    // the panel row of each kernel row
                    let mut slots = [0usize, 1, 2];
                    if kernel == 3 {
                        let y = (base / run.w) as isize;
                        for (ky, slot) in slots.iter_mut().enumerate() {
                            let sy = y + ky as isize - 1;
                            if ring {
                                *slot = sy.rem_euclid(3) as usize;
                                if held[*slot] == sy {
                                    continue;
                                }
                                held[*slot] = sy;
                            }
                            fill(&mut panel, *slot, sy, base, seg);
                        }
                    } else {
                        fill(&mut panel, 0, 0, base, seg);
                    }
                    // 2. blocks of 8 output channels, 32 pixels at a time, in i32
                    for b in 0..blocks {
                        let wb = &conv.packed[b * groups * kk * OC_BLOCK..][..groups * kk * OC_BLOCK];
                        let mut x0 = 0;
                        while x0 < seg {
                            $strip(
                                &Strip {
                                    panel: &panel,
                                    pw,
                                    slots,
                                    x0,
                                    kernel,
                                    weights: wb,
                                },
                                &mut sums,
                            );
                            // 3. requantize, residual, activation, store the valid part (as
                            // floats, or as the next convolution's codes)
                            let n = STRIP.min(seg - x0);
                            let local = r * row_len + seg0 + x0;
                            let at = PixelAt::new(run.start + local, run.w);
                            for (o, ints) in sums.iter().enumerate() {
                                let oc = b * OC_BLOCK + o;
                                if oc >= conv.cout {
                                    break;
                                }
                                let corr = (q.zero as i32 - offset) * conv.weight_sums[oc];
                                let (scale, bias) = (conv.out_scale[oc], conv.bias[oc]);
                                for (v, &i) in values.iter_mut().zip(ints) {
                                    *v = (i - corr) as f32 * scale + bias;
                                }
                                let vals = &mut values[..n];
                                let relu = conv.post == Activation::Relu;
                                match writes_floats {
                                    true => {
                                        let dst = &mut float_rows[oc][local..local + n];
                                        if let Some(res) = residual_strip(
                                            run.residual,
                                            oc,
                                            plane,
                                            at,
                                            dst,
                                            &mut rtile,
                                        ) {
                                            for (v, r) in vals.iter_mut().zip(res) {
                                                *v += r;
                                            }
                                        }
                                        store(vals, None, relu, dst);
                                        // the codes of the value just written
                                        if let Some(row) = code_rows.get_mut(oc) {
                                            let code = conv.output.as_ref().expect("a code output");
                                            let codes = &mut row[local..local + n];
                                            code.pre.quantize_row(oc, code.quant, dst, codes);
                                        }
                                    }
                                    false => {
                                        // the same operations as a float output read by the next
                                        // convolution: residual, activation, its pre-activation,
                                        // its quantization
                                        if let Some(res) = residual_strip(
                                            run.residual,
                                            oc,
                                            plane,
                                            at,
                                            &no_output[..n],
                                            &mut rtile,
                                        ) {
                                            for (v, r) in vals.iter_mut().zip(res) {
                                                *v += r;
                                            }
                                        }
                                        if relu {
                                            for v in vals.iter_mut() {
                                                *v = v.max(0.0);
                                            }
                                        }
                                        let code = conv.output.as_ref().expect("a code output");
                                        let dst = &mut code_rows[oc][local..local + n];
                                        code.pre.quantize_row(oc, code.quant, vals, dst);
                                        if let (Some(code), Some(row)) =
                                            (&conv.second_output, second_rows.get_mut(oc))
                                        {
                                            let dst = &mut row[local..local + n];
                                            code.pre.quantize_row(oc, code.quant, vals, dst);
                                        }
                                    }
                                }
                            }
                            x0 += STRIP;
                        }
                    }
                    seg0 += seg;
                }
            }
        }
    };
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod dot;

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use proptest::prelude::*;

    use crate::kernels::test_values as values;

    /// The f32 route, and the integer kernel if this CPU has one.
    fn kernels_here() -> Vec<QuantKernel> {
        let mut kernels = vec![QuantKernel::Float];
        if QuantKernel::detect() != QuantKernel::Float {
            kernels.push(QuantKernel::detect());
        }
        kernels
    }

    /// The definition: quantize the transformed input (padding is the zero point, i.e.
    /// 0 after subtracting it), sum (x - zero) * w (whole numbers: exact in f64), scale,
    /// add bias and residual.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        cin: usize,
        cout: usize,
        k: usize,
        h: usize,
        w: usize,
        x: &[f32],
        wq: &[i8],
        ws: &[f32],
        bias: &[f32],
        q: FakeQuant,
        pre: &InputTransform,
        residual: Option<&[f32]>,
        post: Activation,
    ) -> Vec<f32> {
        let code = |ic: usize, y: usize, xx: usize| {
            let mut t = [0.0f32];
            pre.apply_row_float(ic, &[x[(ic * h + y) * w + xx]], &mut t);
            q.quantize(t[0]) as f64 - q.zero as f64
        };
        crate::kernels::reference_conv(
            (cin, cout, k, h, w),
            code,
            |oc, ic, ky, kx| wq[((oc * cin + ic) * k + ky) * k + kx] as f64,
            |oc, sum| sum * q.scale as f64 * ws[oc] as f64 + bias[oc] as f64,
            residual,
            post == Activation::Relu,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(60))]
        /// Both kernels agree with the integer definition: the integer one up to the
        /// float rounding of the requantization (relative 1e-6 of the output's size), the
        /// f32 one up to f32 sums of exactly representable products (1e-5 relative to
        /// the sum of |terms|). Channel counts cover partial groups of 4 and blocks of 8.
        /// The input is floats, or the codes of the definition (`codes_in`); the output
        /// floats, or the codes of a next convolution's pre-activation and quantization
        /// (`codes_out`), which must lie between the codes of the definition's value
        /// plus and minus that bound.
        #[test]
        fn kernels_match_the_integer_definition(
            cin in 1usize..21, cout in 1usize..19, k in prop::sample::select(vec![1usize, 3]),
            h in 1usize..7, w in 1usize..75, seed in 0u64..500, zero in 0u8..=255,
            relu in any::<bool>(), shift in any::<bool>(), with_residual in any::<bool>(),
            threads in 1usize..3, codes_in in any::<bool>(), codes_out in any::<bool>(),
            out_zero in 0u8..=255, out_relu in any::<bool>(),
        ) {
            let x = values(cin * h * w, seed);
            let wq: Vec<i8> = values(cout * cin * k * k, seed + 1)
                .iter().map(|v| (v * 127.0).round() as i8).collect();
            let ws: Vec<f32> = values(cout, seed + 2).iter().map(|v| (v.abs() + 0.1) / 100.0).collect();
            let bias = values(cout, seed + 3);
            let q = FakeQuant { scale: 2.0 / 255.0, zero };
            let pre = InputTransform {
                scale: None,
                shift: shift.then(|| values(cin, seed + 4)),
                relu,
                fake_quant: None,
            };
            let res = with_residual.then(|| values(cout * h * w, seed + 5));
            let post = Activation::None;
            let input = if codes_in {
                QuantInput::Codes { quant: q }
            } else {
                QuantInput::Float { pre: pre.clone(), quant: q }
            };
            let code_output = codes_out.then(|| CodeOutput {
                pre: InputTransform {
                    scale: Some(values(cout, seed + 6).iter().map(|v| v.abs() + 0.5).collect()),
                    shift: Some(values(cout, seed + 7)),
                    relu: out_relu,
                    fake_quant: None,
                },
                quant: FakeQuant { scale: 3.0 / 255.0, zero: out_zero },
            });
            let conv = QuantConv::new(cin, cout, k, &wq, &ws, &bias, input, post, code_output.clone())
                .expect("test setup");
            let want = reference(cin, cout, k, h, w, &x, &wq, &ws, &bias, q, &pre, res.as_deref(), post);
            let xin = Array2::from_shape_vec((cin, h * w), x.clone()).expect("test setup");
            // the definition's codes of the input, for a convolution that reads codes
            let mut xcodes = Array2::<u8>::zeros((cin, h * w));
            for ic in 0..cin {
                let mut t = vec![0.0f32; h * w];
                pre.apply_row_float(ic, xin.row(ic).as_slice().expect("row"), &mut t);
                for (c, v) in xcodes.row_mut(ic).iter_mut().zip(&t) {
                    *c = q.quantize(*v);
                }
            }
            let rin = res.as_ref().map(|r| Array2::from_shape_vec((cout, h * w), r.clone()).expect("test setup"));
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("test setup");
            let pool = (threads > 1).then_some(&pool);
            let kernels = kernels_here();
            let terms = (cin * k * k) as f32 * 127.0 * 255.0 * q.scale * 0.0127 + 2.0;
            for kernel in kernels {
                let residual = match &rin { Some(r) => Residual::Add(r.view()), None => Residual::None };
                let input = if codes_in {
                    Activations::Codes(xcodes.view())
                } else {
                    Activations::Float(xin.view())
                };
                let bound = if kernel == QuantKernel::Float { 1e-5 * terms } else { 1e-6 * terms };
                match &code_output {
                    None => {
                        let mut out = Array2::<f32>::from_elem((cout, h * w), f32::NAN);
                        conv.run_image_with(kernel, input, h, w, residual, ActivationsMut::Float(out.view_mut()), pool)
                            .expect("test setup");
                        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                            prop_assert!((a - b).abs() <= bound, "{kernel:?} pixel {i}: {a} vs {b}");
                        }
                    }
                    Some(code) => {
                        let mut out = Array2::<u8>::from_elem((cout, h * w), 7);
                        conv.run_image_with(kernel, input, h, w, residual, ActivationsMut::Codes(out.view_mut()), pool)
                            .expect("test setup");
                        for (i, (&c, &b)) in out.iter().zip(&want).enumerate() {
                            let oc = i / (h * w);
                            let code_of = |v: f32| {
                                let mut t = [0.0f32];
                                code.pre.apply_row_float(oc, &[v], &mut t);
                                code.quant.quantize(t[0])
                            };
                            let (lo, hi) = (code_of(b - bound), code_of(b + bound));
                            prop_assert!(
                                lo.min(hi) <= c && c <= lo.max(hi),
                                "{kernel:?} pixel {i}: code {c}, the definition's value {b} gives {lo}..{hi}"
                            );
                        }
                    }
                }
            }
        }

        /// Chained or not, the same codes: a producer that writes the next convolution's
        /// codes and a consumer that reads them give bit for bit the output of the
        /// producer writing floats that the consumer transforms and quantizes itself.
        #[test]
        fn chained_codes_equal_the_float_hand_over(
            c0 in 1usize..13, c1 in 1usize..13, c2 in 1usize..11,
            k1 in prop::sample::select(vec![1usize, 3]), k2 in prop::sample::select(vec![1usize, 3]),
            h in 1usize..6, w in 1usize..70, seed in 0u64..500, threads in 1usize..3,
        ) {
            let weights = |n: usize, s: u64| -> Vec<i8> {
                values(n, s).iter().map(|v| (v * 127.0).round() as i8).collect()
            };
            let scales = |n: usize, s: u64| -> Vec<f32> {
                values(n, s).iter().map(|v| (v.abs() + 0.1) / 50.0).collect()
            };
            let q1 = FakeQuant { scale: 2.0 / 255.0, zero: 100 };
            let q2 = FakeQuant { scale: 1.0 / 255.0, zero: 0 };
            let pre1 = InputTransform { relu: true, ..Default::default() };
            let pre2 = InputTransform {
                scale: Some(values(c1, seed + 1).iter().map(|v| v + 1.5).collect()),
                shift: Some(values(c1, seed + 2)),
                relu: true,
                fake_quant: None,
            };
            let (w1, w2) = (weights(c1 * c0 * k1 * k1, seed + 3), weights(c2 * c1 * k2 * k2, seed + 4));
            let (s1, s2) = (scales(c1, seed + 5), scales(c2, seed + 6));
            let (b1, b2) = (values(c1, seed + 7), values(c2, seed + 8));
            let make = |chained: bool| {
                let first = QuantConv::new(
                    c0, c1, k1, &w1, &s1, &b1,
                    QuantInput::Float { pre: pre1.clone(), quant: q1 }, Activation::None,
                    chained.then(|| CodeOutput { pre: pre2.clone(), quant: q2 }),
                ).expect("test setup");
                let second = QuantConv::new(
                    c1, c2, k2, &w2, &s2, &b2,
                    if chained { QuantInput::Codes { quant: q2 } } else { QuantInput::Float { pre: pre2.clone(), quant: q2 } },
                    Activation::None, None,
                ).expect("test setup");
                (first, second)
            };
            let x = Array2::from_shape_vec((c0, h * w), values(c0 * h * w, seed)).expect("test setup");
            let r = Array2::from_shape_vec((c1, h * w), values(c1 * h * w, seed + 9)).expect("test setup");
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("test setup");
            let pool = (threads > 1).then_some(&pool);
            let kernels = kernels_here();
            for kernel in kernels {
                let run = |chained: bool| {
                    let (first, second) = make(chained);
                    let mut out = Array2::<f32>::zeros((c2, h * w));
                    if chained {
                        let mut mid = Array2::<u8>::zeros((c1, h * w));
                        first.run_image_with(kernel, Activations::Float(x.view()), h, w, Residual::Add(r.view()), ActivationsMut::Codes(mid.view_mut()), pool).expect("runs");
                        second.run_image_with(kernel, Activations::Codes(mid.view()), h, w, Residual::None, ActivationsMut::Float(out.view_mut()), pool).expect("runs");
                    } else {
                        let mut mid = Array2::<f32>::zeros((c1, h * w));
                        first.run_image_with(kernel, Activations::Float(x.view()), h, w, Residual::Add(r.view()), ActivationsMut::Float(mid.view_mut()), pool).expect("runs");
                        second.run_image_with(kernel, Activations::Float(mid.view()), h, w, Residual::None, ActivationsMut::Float(out.view_mut()), pool).expect("runs");
                    }
                    out
                };
                let (plain, chained) = (run(false), run(true));
                for (i, (a, b)) in plain.iter().zip(chained.iter()).enumerate() {
                    prop_assert!(a.to_bits() == b.to_bits(), "{kernel:?} pixel {i}: {a} vs {b}");
                }
            }
        }
        /// Two code outputs (a value two quantized convolutions read): each is bit for bit
        /// what a convolution writing only that reader's codes writes, on every kernel
        /// here, with the runs split over 1 and 2 threads.
        #[test]
        fn two_code_outputs_equal_one_each(
            c0 in 1usize..13, c1 in 1usize..13, k in prop::sample::select(vec![1usize, 3]),
            h in 1usize..6, w in 1usize..90, seed in 0u64..500, threads in 1usize..3,
        ) {
            // the block's first conv (batch norm and ReLU) and its shortcut (as it is)
            let (layer, first) = output_case(c0, c1, k, seed);
            let second = CodeOutput {
                pre: InputTransform::default(),
                quant: FakeQuant { scale: 3.0 / 255.0, zero: 131 },
            };
            let conv = |output: &CodeOutput| layer(Activation::None, Some(output.clone()));
            let both = conv(&first).with_second_code_output(second.clone()).expect("test setup");
            prop_assert_eq!(both.code_outputs(), 2);
            let x = Array2::from_shape_vec((c0, h * w), values(c0 * h * w, seed)).expect("test setup");
            let r = Array2::from_shape_vec((c1, h * w), values(c1 * h * w, seed + 9)).expect("test setup");
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("test setup");
            let pool = (threads > 1).then_some(&pool);
            for kernel in kernels_here() {
                let one = |conv: &QuantConv| {
                    let mut out = Array2::<u8>::zeros((c1, h * w));
                    conv.run_image_with(kernel, Activations::Float(x.view()), h, w, Residual::Add(r.view()), ActivationsMut::Codes(out.view_mut()), pool).expect("runs");
                    out
                };
                let (a, b) = (one(&conv(&first)), one(&conv(&second)));
                let (mut pa, mut pb) = (Array2::<u8>::zeros((c1, h * w)), Array2::<u8>::zeros((c1, h * w)));
                both.run_image_with(kernel, Activations::Float(x.view()), h, w, Residual::Add(r.view()), ActivationsMut::CodePair(pa.view_mut(), pb.view_mut()), pool).expect("runs");
                prop_assert!(a == pa, "{:?}: first reader's codes differ", kernel);
                prop_assert!(b == pb, "{:?}: second reader's codes differ", kernel);
                // and the two differ from each other (else the test shows nothing)
                prop_assert!(h * w * c1 < 8 || pa != pb);
            }
        }
        /// Floats and codes (a value one quantized convolution reads as its input and
        /// others in float, e.g. as their residual): the floats are bit for bit those of
        /// the convolution writing floats alone, and the codes those of the one writing
        /// codes alone, on every kernel here, 1 and 2 threads, with the residual added
        /// from its own array or already in the output (written over the residual).
        #[test]
        fn floats_and_codes_equal_each_alone(
            c0 in 1usize..13, c1 in 1usize..13, k in prop::sample::select(vec![1usize, 3]),
            h in 1usize..6, w in 1usize..90, seed in 0u64..500, threads in 1usize..3,
            in_output in any::<bool>(), relu in any::<bool>(),
        ) {
            // the next block's conv1: batch norm and ReLU, then its quantization
            let (layer, code) = output_case(c0, c1, k, seed);
            let post = if relu { Activation::Relu } else { Activation::None };
            let conv = |output: Option<CodeOutput>| layer(post, output);
            let both = conv(Some(code.clone())).with_float_output_kept().expect("test setup");
            prop_assert!(both.writes_float() && both.code_outputs() == 1);
            let x = Array2::from_shape_vec((c0, h * w), values(c0 * h * w, seed)).expect("test setup");
            let r = Array2::from_shape_vec((c1, h * w), values(c1 * h * w, seed + 9)).expect("test setup");
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("test setup");
            let pool = (threads > 1).then_some(&pool);
            for kernel in kernels_here() {
                let mut floats = Array2::<f32>::zeros((c1, h * w));
                conv(None).run_image_with(kernel, Activations::Float(x.view()), h, w, Residual::Add(r.view()), ActivationsMut::Float(floats.view_mut()), pool).expect("runs");
                let mut codes = Array2::<u8>::zeros((c1, h * w));
                conv(Some(code.clone())).run_image_with(kernel, Activations::Float(x.view()), h, w, Residual::Add(r.view()), ActivationsMut::Codes(codes.view_mut()), pool).expect("runs");
                let (mut f, mut c) = (Array2::<f32>::zeros((c1, h * w)), Array2::<u8>::zeros((c1, h * w)));
                let residual = if in_output {
                    f.assign(&r);
                    Residual::InOutput
                } else {
                    Residual::Add(r.view())
                };
                both.run_image_with(kernel, Activations::Float(x.view()), h, w, residual, ActivationsMut::FloatAndCodes(f.view_mut(), c.view_mut()), pool).expect("runs");
                for (i, (a, b)) in floats.iter().zip(f.iter()).enumerate() {
                    prop_assert!(a.to_bits() == b.to_bits(), "{:?} value {}: {} vs {}", kernel, i, a, b);
                }
                prop_assert!(codes == c, "{:?}: the codes differ", kernel);
            }
        }
    }

    /// The layer of the output-kind tests: `c0 -> c1`, `k x k`, reading floats through a
    /// ReLU, built with the post-activation and code output given; and the code output
    /// of a reader with batch norm and ReLU.
    fn output_case(
        c0: usize,
        c1: usize,
        k: usize,
        seed: u64,
    ) -> (
        impl Fn(Activation, Option<CodeOutput>) -> QuantConv,
        CodeOutput,
    ) {
        let weights: Vec<i8> = values(c1 * c0 * k * k, seed + 3)
            .iter()
            .map(|v| (v * 127.0).round() as i8)
            .collect();
        let scales: Vec<f32> = values(c1, seed + 5)
            .iter()
            .map(|v| (v.abs() + 0.1) / 50.0)
            .collect();
        let bias = values(c1, seed + 7);
        let q0 = FakeQuant {
            scale: 2.0 / 255.0,
            zero: 100,
        };
        let layer = move |post, output| {
            QuantConv::new(
                c0,
                c1,
                k,
                &weights,
                &scales,
                &bias,
                QuantInput::Float {
                    pre: InputTransform {
                        relu: true,
                        ..Default::default()
                    },
                    quant: q0,
                },
                post,
                output,
            )
            .expect("test setup")
        };
        let reader = CodeOutput {
            pre: InputTransform {
                scale: Some(values(c1, seed + 1).iter().map(|v| v + 1.5).collect()),
                shift: Some(values(c1, seed + 2)),
                relu: true,
                fake_quant: None,
            },
            quant: FakeQuant {
                scale: 1.0 / 255.0,
                zero: 0,
            },
        };
        (layer, reader)
    }

    /// Rows too wide for one panel are cut into segments (3x3 with 256 input channels:
    /// 320-pixel segments, so 700 pixels make three); there the integer kernel fills the
    /// panel per segment instead of as a ring of rows. It must still agree with the f32
    /// route (checked against the definition above), float or code input.
    #[test]
    fn segmented_rows_agree_with_the_f32_route() {
        let integer = QuantKernel::detect();
        if integer == QuantKernel::Float {
            eprintln!("NOTE: no integer int8 kernel on this CPU: SKIPPED");
            return;
        }
        let (cin, cout, h, w) = (256, 9, 3, 700);
        let wq: Vec<i8> = values(cout * cin * 9, 1)
            .iter()
            .map(|v| (v * 127.0) as i8)
            .collect();
        let ws = vec![0.001; cout];
        let q = FakeQuant {
            scale: 2.0 / 255.0,
            zero: 128,
        };
        let x = Array2::from_shape_vec((cin, h * w), values(cin * h * w, 2)).expect("test setup");
        let codes = x.mapv(|v| q.quantize(v));
        for codes_in in [false, true] {
            let input = if codes_in {
                QuantInput::Codes { quant: q }
            } else {
                QuantInput::Float {
                    pre: InputTransform {
                        relu: true,
                        ..Default::default()
                    },
                    quant: q,
                }
            };
            let conv = QuantConv::new(cin, cout, 3, &wq, &ws, &[], input, Activation::None, None)
                .expect("test setup");
            let run = |kernel| {
                let mut out = Array2::<f32>::zeros((cout, h * w));
                let x = if codes_in {
                    Activations::Codes(codes.view())
                } else {
                    Activations::Float(x.view())
                };
                conv.run_image_with(
                    kernel,
                    x,
                    h,
                    w,
                    Residual::None,
                    ActivationsMut::Float(out.view_mut()),
                    None,
                )
                .expect("runs");
                out
            };
            let (a, b) = (run(QuantKernel::Float), run(integer));
            // f32 sums of up to 2304 exactly representable products of size <= 0.32
            let bound = 1e-5 * (cin * 9) as f32 * 0.32;
            let worst = a
                .iter()
                .zip(b.iter())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= bound,
                "codes in {codes_in}: max abs {worst} > {bound}"
            );
        }
    }

    /// Inputs and outputs of the wrong kind, and a residual in a code output, are
    /// refused; so are a second code output beside kept floats and the reverse.
    #[test]
    fn activations_of_the_wrong_kind_are_refused() {
        let q = FakeQuant {
            scale: 0.1,
            zero: 0,
        };
        let code_of = |quant| CodeOutput {
            pre: InputTransform::default(),
            quant,
        };
        let code = code_of(q);
        let conv = QuantConv::new(
            4,
            4,
            1,
            &[1; 16],
            &[0.1; 4],
            &[],
            QuantInput::Codes { quant: q },
            Activation::None,
            Some(code),
        )
        .expect("test setup");
        let x = Array2::<f32>::zeros((4, 4));
        let c = Array2::<u8>::zeros((4, 4));
        let mut o = Array2::<f32>::zeros((4, 4));
        let mut oc = Array2::<u8>::zeros((4, 4));
        for kernel in [QuantKernel::Float, QuantKernel::detect()] {
            let run =
                |input: Activations<'_>, residual: Residual<'_>, output: ActivationsMut<'_>| {
                    conv.run_image_with(kernel, input, 2, 2, residual, output, None)
                };
            let refused = |r: Result<(), ConvError>| {
                assert!(matches!(r, Err(ConvError::Shape(_))), "{r:?}");
            };
            refused(run(
                Activations::Float(x.view()),
                Residual::None,
                ActivationsMut::Codes(oc.view_mut()),
            ));
            refused(run(
                Activations::Codes(c.view()),
                Residual::None,
                ActivationsMut::Float(o.view_mut()),
            ));
            refused(run(
                Activations::Codes(c.view()),
                Residual::InOutput,
                ActivationsMut::Codes(oc.view_mut()),
            ));
            // two code outputs for a convolution built with one; two of different shapes
            let mut oc2 = Array2::<u8>::zeros((4, 4));
            refused(run(
                Activations::Codes(c.view()),
                Residual::None,
                ActivationsMut::CodePair(oc.view_mut(), oc2.view_mut()),
            ));
            let two = conv
                .clone()
                .with_second_code_output(CodeOutput {
                    pre: InputTransform::default(),
                    quant: q,
                })
                .expect("test setup");
            assert!(two.clone().with_float_output_kept().is_err());
            assert!(
                conv.clone()
                    .with_float_output_kept()
                    .and_then(|c| c.with_second_code_output(code_of(q)))
                    .is_err()
            );
            let mut narrow = Array2::<u8>::zeros((4, 2));
            refused(two.run_image_with(
                kernel,
                Activations::Codes(c.view()),
                2,
                2,
                Residual::None,
                ActivationsMut::CodePair(oc.view_mut(), narrow.view_mut()),
                None,
            ));
            two.run_image_with(
                kernel,
                Activations::Codes(c.view()),
                2,
                2,
                Residual::None,
                ActivationsMut::CodePair(oc.view_mut(), oc2.view_mut()),
                None,
            )
            .expect("two outputs of the same shape run");
            // floats and codes for a convolution that writes codes only, and codes only (or
            // floats only) for one that writes both
            refused(run(
                Activations::Codes(c.view()),
                Residual::None,
                ActivationsMut::FloatAndCodes(o.view_mut(), oc2.view_mut()),
            ));
            let kept = conv.clone().with_float_output_kept().expect("test setup");
            for output in [
                ActivationsMut::Codes(oc.view_mut()),
                ActivationsMut::Float(o.view_mut()),
            ] {
                refused(kept.run_image_with(
                    kernel,
                    Activations::Codes(c.view()),
                    2,
                    2,
                    Residual::None,
                    output,
                    None,
                ));
            }
            kept.run_image_with(
                kernel,
                Activations::Codes(c.view()),
                2,
                2,
                Residual::InOutput,
                ActivationsMut::FloatAndCodes(o.view_mut(), oc2.view_mut()),
                None,
            )
            .expect("floats and codes run, the residual in the floats");
            run(
                Activations::Codes(c.view()),
                Residual::None,
                ActivationsMut::Codes(oc.view_mut()),
            )
            .expect("the right kinds run");
        }
    }

    /// The integer kernel runs wherever the CPU has its feature, and one the CPU lacks is
    /// refused with its feature's name.
    #[test]
    fn the_integer_kernel_is_used_where_the_cpu_has_it() {
        let kernel = QuantKernel::detect();
        eprintln!("int8 kernel on this CPU: {}", kernel.name());
        #[cfg(target_arch = "x86_64")]
        let expected = if std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            QuantKernel::Avx512Vnni
        } else {
            QuantKernel::Float
        };
        #[cfg(target_arch = "aarch64")]
        let expected = if std::arch::is_aarch64_feature_detected!("dotprod") {
            QuantKernel::NeonDot
        } else {
            QuantKernel::Float
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let expected = QuantKernel::Float;
        assert_eq!(kernel, expected);
        if kernel == QuantKernel::Float {
            eprintln!("NOTE: no integer int8 kernel here: the integer kernel's tests are SKIPPED");
        }
        let q = FakeQuant {
            scale: 0.1,
            zero: 3,
        };
        let conv = QuantConv::new(
            4,
            4,
            1,
            &[1; 16],
            &[0.1; 4],
            &[],
            QuantInput::Codes { quant: q },
            Activation::None,
            None,
        )
        .expect("test setup");
        let c = Array2::<u8>::zeros((4, 4));
        let mut o = Array2::<f32>::zeros((4, 4));
        for other in [QuantKernel::Avx512Vnni, QuantKernel::NeonDot] {
            if other == kernel {
                continue;
            }
            let r = conv.run_image_with(
                other,
                Activations::Codes(c.view()),
                2,
                2,
                Residual::None,
                ActivationsMut::Float(o.view_mut()),
                None,
            );
            assert!(
                matches!(&r, Err(ConvError::Unsupported(m)) if m.contains(other.feature())),
                "{other:?}: {r:?}"
            );
        }
    }
}
