//! A fused convolution as skipseg's graph holds it: the kernel ([`ConvKernel`], weights
//! packed) and the plain numbers it is built from ([`ConvSpec`]), which the engines
//! (tract's plan through [`crate::engine`], the embedded executor [`crate::embedded`])
//! and the embedded model format share.

use std::sync::Arc;

use super::conv::{Activation, ConvError, DirectConv, FakeQuant, InputTransform, Residual};
use super::qconv::{Activations, ActivationsMut, CodeOutput, QuantConv, QuantInput};

/// The kernel of a fused convolution: f32 or int8.
#[derive(Debug, Clone)]
pub enum ConvKernel {
    Float(Arc<DirectConv>),
    Int8(Arc<QuantConv>),
}

impl ConvKernel {
    pub fn input_channels(&self) -> usize {
        match self {
            ConvKernel::Float(c) => c.input_channels(),
            ConvKernel::Int8(c) => c.input_channels(),
        }
    }

    pub fn output_channels(&self) -> usize {
        match self {
            ConvKernel::Float(c) => c.output_channels(),
            ConvKernel::Int8(c) => c.output_channels(),
        }
    }

    pub fn kernel(&self) -> usize {
        match self {
            ConvKernel::Float(c) => c.kernel(),
            ConvKernel::Int8(c) => c.kernel(),
        }
    }

    pub fn macs_per_pixel(&self) -> usize {
        match self {
            ConvKernel::Float(c) => c.macs_per_pixel(),
            ConvKernel::Int8(c) => c.macs_per_pixel(),
        }
    }

    /// Whether the input is the `u8` codes the convolution before wrote.
    pub fn reads_codes(&self) -> bool {
        matches!(self, ConvKernel::Int8(c) if c.input().reads_codes())
    }

    /// Whether the (first) output is the `u8` codes of the next convolution.
    pub fn writes_codes(&self) -> bool {
        !self.writes_float()
    }

    /// Whether the float values are written: as the only output, or as the first, beside
    /// one reader's codes.
    pub fn writes_float(&self) -> bool {
        match self {
            ConvKernel::Float(_) => true,
            ConvKernel::Int8(c) => c.writes_float(),
        }
    }

    /// How many code outputs the convolution writes: 0 (one float output), 1 or 2 (the
    /// codes of each of two readers), each after the float output if there is one.
    pub fn code_outputs(&self) -> usize {
        match self {
            ConvKernel::Float(_) => 0,
            ConvKernel::Int8(c) => c.code_outputs(),
        }
    }

    /// How many outputs the convolution has: the float values and the code outputs.
    pub fn outputs(&self) -> usize {
        self.writes_float() as usize + self.code_outputs()
    }

    /// An upper bound of the bytes [`Self::run_image`] allocates on an `h x w` image
    /// with `threads` threads (beyond the input, residual and output).
    pub fn scratch_bytes(&self, h: usize, w: usize, threads: usize) -> usize {
        match self {
            ConvKernel::Float(c) => c.scratch_bytes(h, w, threads),
            ConvKernel::Int8(c) => c.scratch_bytes(h, w, threads),
        }
    }

    pub fn run_image(
        &self,
        input: Activations<'_>,
        h: usize,
        w: usize,
        residual: Residual<'_>,
        output: ActivationsMut<'_>,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<(), ConvError> {
        match (self, input, output) {
            (ConvKernel::Float(c), Activations::Float(x), ActivationsMut::Float(o)) => {
                c.run_image(x, h, w, residual, o, pool)
            }
            (ConvKernel::Float(_), _, _) => Err(ConvError::Shape(
                "a float convolution reads and writes floats".into(),
            )),
            (ConvKernel::Int8(c), x, o) => c.run_image(x, h, w, residual, o, pool),
        }
    }

    pub fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (ConvKernel::Float(a), ConvKernel::Float(b)) => Arc::ptr_eq(a, b),
            (ConvKernel::Int8(a), ConvKernel::Int8(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The second input of a fused convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidualInput {
    None,
    /// `[N, Cout, H, W]`, added.
    Same,
    /// `[N, Cout, H/2, W/2]`, repeated x2 and added.
    Upsampled,
}

/// The weights of a [`ConvSpec`]: `[cout, cin, k, k]`.
#[derive(Debug, Clone, PartialEq)]
pub enum ConvWeights {
    Float(Vec<f32>),
    /// Symmetric int8 with one scale per output channel.
    Int8 {
        weight: Vec<i8>,
        scales: Vec<f32>,
    },
}

/// How an int8 convolution takes its input.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantSpec {
    /// The input is the `u8` codes the convolution before wrote (its pre-activation
    /// applied there); otherwise floats, transformed by [`ConvSpec::pre`] and quantized.
    pub input_codes: bool,
    pub input: FakeQuant,
    /// Write the `u8` codes of the next convolution: its pre-activation and quantization.
    pub output_codes: Option<(InputTransform, FakeQuant)>,
    /// With `output_codes`, also write those of a second reader (a second output).
    pub second_output_codes: Option<(InputTransform, FakeQuant)>,
    /// With `output_codes` (and no second), write the float values as well: the first
    /// output, the codes the second.
    pub keeps_float: bool,
}

/// Everything a fused convolution is, as plain numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    /// 1 or 3.
    pub kernel: usize,
    pub weights: ConvWeights,
    /// One per output channel, or empty.
    pub bias: Vec<f32>,
    /// The pre-activation of the input (per input channel scale, shift; ReLU).
    pub pre: InputTransform,
    /// Int8 only.
    pub quant: Option<QuantSpec>,
    pub residual: ResidualInput,
}

impl ConvSpec {
    /// Pack the weights for the kernels.
    pub fn build(&self) -> Result<ConvKernel, ConvError> {
        match (&self.weights, &self.quant) {
            (ConvWeights::Int8 { weight, scales }, Some(q)) => {
                let input = if q.input_codes {
                    if self.pre != InputTransform::default() {
                        return Err(ConvError::Shape(
                            "an input of codes has its pre-activation applied already".into(),
                        ));
                    }
                    QuantInput::Codes { quant: q.input }
                } else {
                    QuantInput::Float {
                        pre: self.pre.clone(),
                        quant: q.input,
                    }
                };
                let output = q
                    .output_codes
                    .clone()
                    .map(|(pre, quant)| CodeOutput { pre, quant });
                let conv = QuantConv::new(
                    self.cin,
                    self.cout,
                    self.kernel,
                    weight,
                    scales,
                    &self.bias,
                    input,
                    Activation::None,
                    output,
                )?;
                let conv = match &q.second_output_codes {
                    Some((pre, quant)) => conv.with_second_code_output(CodeOutput {
                        pre: pre.clone(),
                        quant: *quant,
                    })?,
                    None => conv,
                };
                let conv = match q.keeps_float {
                    true => conv.with_float_output_kept()?,
                    false => conv,
                };
                Ok(ConvKernel::Int8(Arc::new(conv)))
            }
            (ConvWeights::Float(weight), None) => Ok(ConvKernel::Float(Arc::new(DirectConv::new(
                self.cin,
                self.cout,
                self.kernel,
                weight,
                &self.bias,
                self.pre.clone(),
                Activation::None,
            )?))),
            _ => Err(ConvError::Shape(
                "int8 weights need input quantization and float weights none".into(),
            )),
        }
    }
}
