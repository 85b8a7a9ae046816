//! The operators skipseg adds to tract: the ONNX parser learns the `ai.skipseg` nodes that
//! [`crate::passes::fuse_conv`] writes, and tract runs them as ordinary operators of its
//! plan, with skipseg's kernels ([`crate::kernels`]) inside.

use tract_hir::internal::*;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;

use crate::kernels::conv::{FakeQuant, InputTransform, Residual};
pub use crate::kernels::fused::{ConvKernel, ConvSpec, ConvWeights, QuantSpec, ResidualInput};
use crate::kernels::qconv::{Activations, ActivationsMut, CodeOutput};
use crate::passes::chain_int8::{INPUT_CODES, OUTPUT_CODES, OUTPUT_FLOAT};
use crate::passes::fuse_conv::{FUSED_CONV, FUSED_QCONV};
use crate::passes::resample::{OWN_DECIMATE, OWN_UPSAMPLE, OWN_UPSAMPLE_ADD};
use crate::passes::sigmoid::OWN_SIGMOID;

/// tract's ONNX front end with skipseg's operators registered.
pub fn onnx_with_skipseg_ops() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert(FUSED_CONV, parse_fused_conv);
    onnx.op_register.insert(FUSED_QCONV, parse_fused_conv);
    onnx.op_register.insert(OWN_SIGMOID, |_, _| {
        Ok((expand(OwnSigmoidExpansion), vec![]))
    });
    onnx.op_register.insert(OWN_DECIMATE, |_, _| {
        Ok((expand(OwnResample::Decimate), vec![]))
    });
    onnx.op_register.insert(OWN_UPSAMPLE, |_, _| {
        Ok((expand(OwnResample::Upsample), vec![]))
    });
    onnx.op_register.insert(OWN_UPSAMPLE_ADD, |_, node| {
        let codes = match node.get_attr_opt::<i64>(OUTPUT_CODES)?.unwrap_or(0) {
            0 => None,
            1 => Some(std::sync::Arc::new(CodeOutput {
                pre: pre_transform(node, "output_")?,
                quant: quantization(node, "output_")?,
            })),
            n => bail!(
                "{}: {OUTPUT_CODES} {n} (an up-sampling add writes one output)",
                node.name
            ),
        };
        Ok((expand(OwnUpsampleAdd { codes }), vec![]))
    });
    onnx
}

/// The output tensor of one of skipseg's operators, left uninitialised: zeroing it first
/// was a single-threaded pass over every output (3-4 ms of the int8 shipped model's 19
/// ms at 2 threads on a 2-core Xeon, 15-20 %). The one `unsafe` of the engine.
#[allow(unsafe_code)]
fn output_tensor<T: Datum>(dims: &[usize]) -> TractResult<Tensor> {
    // SAFETY: every caller hands the whole tensor to a kernel that writes each element
    // before anything reads it: the convolutions store every pixel of every output
    // channel of each run, and the runs cover the plane (their tests start from outputs
    // filled with NaN and check every value), as do the decimation and up-sampling
    // (their test starts from -1, a value the input lacks). tract allocates its own
    // operators' outputs the same way.
    unsafe { Tensor::uninitialized::<T>(dims) }
}

/// The pool of an executor (tract's current one: `current_tract_executor()`), if it has
/// one: skipseg's kernels run on the threads tract's own operators use.
fn pool_of(executor: &tract_linalg::multithread::Executor) -> Option<&rayon::ThreadPool> {
    match executor {
        tract_linalg::multithread::Executor::MultiThread(pool) => Some(pool.as_ref()),
        _ => None,
    }
}

/// skipseg's change of resolution by two ([`crate::kernels::resample`]) on `[N, C, H, W]`
/// floats or codes: the ONNX-level operator (shape inference) and tract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnResample {
    /// Every second row and column from the first: `ceil(H / 2) x ceil(W / 2)`.
    Decimate,
    /// Each pixel into a 2x2 square: `2H x 2W`.
    Upsample,
}

impl OwnResample {
    fn side(self, side: &TDim) -> TDim {
        match self {
            OwnResample::Decimate => side.clone().div_ceil(2),
            OwnResample::Upsample => side.clone() * 2,
        }
    }

    fn run<T: Datum + Copy>(
        self,
        x: &Tensor,
        out: &mut Tensor,
        [n, c, h, w]: [usize; 4],
        pool: Option<&rayon::ThreadPool>,
    ) -> TractResult<()> {
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<T>()?;
        let mut o = out.try_as_plain_ram_mut()?;
        let o = o.as_slice_mut::<T>()?;
        let (per_in, per_out) = (c * h * w, o.len() / n.max(1));
        for i in 0..n {
            let (xi, oi) = (&x[i * per_in..][..per_in], &mut o[i * per_out..][..per_out]);
            match self {
                OwnResample::Decimate => {
                    crate::kernels::resample::decimate_x2(xi, c, h, w, oi, pool)?
                }
                OwnResample::Upsample => {
                    crate::kernels::resample::upsample_x2(xi, c, h, w, oi, pool)?
                }
            }
        }
        Ok(())
    }
}

impl Expansion for OwnResample {
    fn name(&self) -> StaticName {
        Op::name(self)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        for axis in [0, 1] {
            s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
        }
        let kind = *self;
        for axis in [2, 3] {
            s.given(&inputs[0].shape[axis], move |s, side| {
                s.equals(&outputs[0].shape[axis], kind.side(&side))
            })?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, *self, inputs)
    }
}

impl Op for OwnResample {
    fn name(&self) -> StaticName {
        match self {
            OwnResample::Decimate => OWN_DECIMATE.into(),
            OwnResample::Upsample => OWN_UPSAMPLE.into(),
        }
    }

    op_as_typed_op!();
}

impl EvalOp for OwnResample {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let [n, c, h, w] = shape4(x, "input")?;
        let (oh, ow) = match self {
            OwnResample::Decimate => (h.div_ceil(2), w.div_ceil(2)),
            OwnResample::Upsample => (2 * h, 2 * w),
        };
        let dims = [n, c, oh, ow];
        let mut out = if x.datum_type() == u8::datum_type() {
            output_tensor::<u8>(&dims)?
        } else {
            ensure!(
                x.datum_type() == f32::datum_type(),
                "{}: input of {:?}, expected f32 or u8",
                Op::name(self),
                x.datum_type()
            );
            output_tensor::<f32>(&dims)?
        };
        let executor = tract_linalg::multithread::current_tract_executor();
        let pool = pool_of(&executor);
        if x.datum_type() == u8::datum_type() {
            self.run::<u8>(x, &mut out, [n, c, h, w], pool)?
        } else {
            self.run::<f32>(x, &mut out, [n, c, h, w], pool)?
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for OwnResample {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(
            x.rank() == 4,
            "{}: input of rank {}",
            Op::name(self),
            x.rank()
        );
        let mut shape = x.shape.to_tvec();
        for axis in [2, 3] {
            shape[axis] = self.side(&shape[axis]);
        }
        Ok(tvec!(x.datum_type.fact(shape)))
    }

    as_op!();
}

/// skipseg's x2 up-sampling summed with a map of the output's size
/// ([`crate::kernels::resample::upsample_x2_add`]), `[N, C, H, W]` and `[N, C, 2H, 2W]`
/// floats: the ONNX-level operator and tract's. Where the second input turns out to have
/// another shape (an `Add` that broadcasts), it is wired as skipseg's up-sampling and
/// tract's `Add`, what it replaced. With `codes` it writes the `u8` codes of the
/// quantized convolution that reads the sum ([`crate::passes::chain_int8`]).
#[derive(Debug, Clone)]
pub struct OwnUpsampleAdd {
    pub codes: Option<std::sync::Arc<CodeOutput>>,
}

/// Equal when they write floats, or share their code output (identity, as
/// [`FusedConv`]'s weights: equality is then total).
impl PartialEq for OwnUpsampleAdd {
    fn eq(&self, other: &Self) -> bool {
        match (&self.codes, &other.codes) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for OwnUpsampleAdd {}

impl OwnUpsampleAdd {
    fn output_type(&self) -> DatumType {
        match self.codes {
            Some(_) => u8::datum_type(),
            None => f32::datum_type(),
        }
    }
}

impl Expansion for OwnUpsampleAdd {
    fn name(&self) -> StaticName {
        OWN_UPSAMPLE_ADD.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        for proxy in [&inputs[0], &inputs[1]] {
            s.equals(&proxy.datum_type, f32::datum_type())?;
        }
        s.equals(&outputs[0].datum_type, self.output_type())?;
        for proxy in [&inputs[0], &inputs[1], &outputs[0]] {
            s.equals(&proxy.rank, 4)?;
        }
        for axis in [0, 1] {
            s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
        }
        for axis in [2, 3] {
            s.given(&inputs[0].shape[axis], move |s, side| {
                s.equals(&outputs[0].shape[axis], side * 2)
            })?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let upsampled = OwnResample::Upsample.output_facts(&[model.outlet_fact(inputs[0])?])?;
        if model.outlet_fact(inputs[1])?.shape == upsampled[0].shape {
            model.wire_node(prefix, self.clone(), inputs)
        } else if self.codes.is_some() {
            // not a graph skipseg's exporter writes: the long skips have the up-sampled
            // map's shape
            bail!(
                "{prefix}: an up-sampling add that writes codes needs an added map of the \
                 up-sampled shape {:?}, not {:?}",
                upsampled[0].shape,
                model.outlet_fact(inputs[1])?.shape
            )
        } else {
            let up = model.wire_node(
                format!("{prefix}.upsample"),
                OwnResample::Upsample,
                &inputs[..1],
            )?;
            tract_core::ops::change_axes::wire_with_rank_broadcast(
                prefix,
                model,
                tract_core::ops::math::add(),
                &[up[0], inputs[1]],
            )
        }
    }
}

impl Op for OwnUpsampleAdd {
    fn name(&self) -> StaticName {
        OWN_UPSAMPLE_ADD.into()
    }

    op_as_typed_op!();
}

impl EvalOp for OwnUpsampleAdd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [n, c, h, w] = shape4(&inputs[0], "input")?;
        let dims = [n, c, 2 * h, 2 * w];
        ensure!(
            inputs[1].shape() == dims,
            "{OWN_UPSAMPLE_ADD}: added map of shape {:?}, expected {dims:?}",
            inputs[1].shape()
        );
        let executor = tract_linalg::multithread::current_tract_executor();
        let pool = pool_of(&executor);
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let b = inputs[1].try_as_plain_ram()?;
        let b = b.as_slice::<f32>()?;
        let (per_in, per_out) = (c * h * w, 4 * c * h * w);
        // the output, each image's part written by `image(its index, its part)`
        fn per_image<T: Datum>(
            n: usize,
            dims: &[usize; 4],
            mut image: impl FnMut(usize, &mut [T]) -> TractResult<()>,
        ) -> TractResult<Tensor> {
            let mut out = output_tensor::<T>(dims)?;
            {
                let mut o = out.try_as_plain_ram_mut()?;
                let per_out = dims[1..].iter().product::<usize>();
                for (i, o) in o
                    .as_slice_mut::<T>()?
                    .chunks_mut(per_out.max(1))
                    .take(n)
                    .enumerate()
                {
                    image(i, o)?;
                }
            }
            Ok(out)
        }
        let (x, b) = (
            |i: usize| &x[i * per_in..][..per_in],
            |i: usize| &b[i * per_out..][..per_out],
        );
        let out = match &self.codes {
            None => per_image::<f32>(n, &dims, |i, o| {
                Ok(crate::kernels::resample::upsample_x2_add(
                    x(i),
                    c,
                    h,
                    w,
                    b(i),
                    o,
                    pool,
                )?)
            })?,
            Some(code) => per_image::<u8>(n, &dims, |i, o| {
                Ok(crate::kernels::resample::upsample_x2_add_codes(
                    x(i),
                    c,
                    h,
                    w,
                    b(i),
                    code,
                    o,
                    pool,
                )?)
            })?,
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for OwnUpsampleAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let upsampled = OwnResample::Upsample.output_facts(&inputs[..1])?;
        ensure!(
            inputs[1].shape == upsampled[0].shape,
            "{OWN_UPSAMPLE_ADD}: added map of shape {:?}, expected {:?}",
            inputs[1].shape,
            upsampled[0].shape
        );
        Ok(tvec!(self.output_type().fact(upsampled[0].shape.clone())))
    }

    as_op!();
}

/// skipseg's sigmoid ([`crate::kernels::sigmoid`]) at the ONNX level (shape inference).
#[derive(Debug, Clone)]
struct OwnSigmoidExpansion;

impl Expansion for OwnSigmoidExpansion {
    fn name(&self) -> StaticName {
        OWN_SIGMOID.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, OwnSigmoid, inputs)
    }
}

/// skipseg's sigmoid in tract's plan, in place when tract has released its input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnSigmoid;

impl Op for OwnSigmoid {
    fn name(&self) -> StaticName {
        OWN_SIGMOID.into()
    }

    op_as_typed_op!();
}

impl EvalOp for OwnSigmoid {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut t = inputs.remove(0).into_tensor();
        crate::kernels::sigmoid::sigmoid_in_place(t.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for OwnSigmoid {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// The datum types a [`ConvKernel`] reads and writes, in tract's terms.
trait DatumTypes {
    fn input_type(&self) -> DatumType;
    fn output_type(&self) -> DatumType;
    /// The datum type of output `k`: the floats first, if written, then the codes.
    fn output_type_of(&self, k: usize) -> DatumType;
}

impl DatumTypes for ConvKernel {
    fn input_type(&self) -> DatumType {
        if self.reads_codes() {
            u8::datum_type()
        } else {
            f32::datum_type()
        }
    }

    fn output_type(&self) -> DatumType {
        if self.writes_codes() {
            u8::datum_type()
        } else {
            f32::datum_type()
        }
    }

    fn output_type_of(&self, k: usize) -> DatumType {
        if k == 0 {
            self.output_type()
        } else {
            u8::datum_type()
        }
    }
}

fn float_attr(node: &NodeProto, name: &str) -> TractResult<Option<(Vec<usize>, Vec<f32>)>> {
    let Some(t) = node.get_attr_opt::<&tract_onnx::pb::TensorProto>(name)? else {
        return Ok(None);
    };
    let data = crate::onnx::tensor_f32(t)
        .ok_or_else(|| format_err!("{}: attribute {name} is not a float tensor", node.name))?;
    Ok(Some((t.dims.iter().map(|&d| d as usize).collect(), data)))
}

/// The pre-activation attributes `{prefix}pre_scale`, `{prefix}pre_shift`,
/// `{prefix}pre_relu`.
fn pre_transform(node: &NodeProto, prefix: &str) -> TractResult<InputTransform> {
    Ok(InputTransform {
        scale: float_attr(node, &format!("{prefix}pre_scale"))?.map(|v| v.1),
        shift: float_attr(node, &format!("{prefix}pre_shift"))?.map(|v| v.1),
        relu: node
            .get_attr_opt::<i64>(&format!("{prefix}pre_relu"))?
            .unwrap_or(0)
            != 0,
        fake_quant: None,
    })
}

/// The quantization attributes `{prefix}x_scale`, `{prefix}x_zero_point`.
fn quantization(node: &NodeProto, prefix: &str) -> TractResult<FakeQuant> {
    let zero: i64 = node.get_attr(&format!("{prefix}x_zero_point"))?;
    Ok(FakeQuant {
        scale: node.get_attr(&format!("{prefix}x_scale"))?,
        zero: u8::try_from(zero)
            .map_err(|_| format_err!("{}: {prefix}x_zero_point {zero} is not a u8", node.name))?,
    })
}

/// The [`ConvSpec`] of a fused node written by [`crate::passes::fuse_conv`].
pub fn conv_spec(node: &NodeProto) -> TractResult<ConvSpec> {
    let kernel: usize = node.get_attr("kernel")?;
    let t = node
        .get_attr_opt::<&tract_onnx::pb::TensorProto>("weight")?
        .ok_or_else(|| format_err!("{}: no weight", node.name))?;
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    ensure!(
        dims.len() == 4 && dims[2] == kernel && dims[3] == kernel,
        "{}: weight dims {dims:?} for kernel {kernel}",
        node.name
    );
    let bias = float_attr(node, "bias")?.map(|b| b.1).unwrap_or_default();
    let pre = pre_transform(node, "")?;
    let (weights, quant) = if node.op_type == FUSED_QCONV {
        let weight = crate::onnx::tensor_i8(t)
            .ok_or_else(|| format_err!("{}: weight is not int8", node.name))?;
        let scales = float_attr(node, "weight_scale")?
            .ok_or_else(|| format_err!("{}: no weight_scale", node.name))?
            .1;
        // 0: floats; 1: the codes of the one reader; 2: those of two readers, each an
        // output (`output_*` and `output2_*` attributes); with OUTPUT_FLOAT, the floats
        // first, then one reader's codes
        let code_outputs = node.get_attr_opt::<i64>(OUTPUT_CODES)?.unwrap_or(0);
        let keeps_float = node.get_attr_opt::<i64>(OUTPUT_FLOAT)?.unwrap_or(0) != 0;
        let outputs = match (code_outputs, keeps_float) {
            (0..=2, false) => code_outputs.max(1),
            (1, true) => 2,
            _ => -1,
        };
        ensure!(
            node.output.len() as i64 == outputs,
            "{}: {OUTPUT_CODES} {code_outputs}{} with {} outputs",
            node.name,
            if keeps_float {
                format!(" and {OUTPUT_FLOAT}")
            } else {
                String::new()
            },
            node.output.len()
        );
        let codes = |prefix: &str| -> TractResult<_> {
            Ok((pre_transform(node, prefix)?, quantization(node, prefix)?))
        };
        let output_codes = (code_outputs >= 1).then(|| codes("output_")).transpose()?;
        let second_output_codes = (code_outputs == 2).then(|| codes("output2_")).transpose()?;
        (
            ConvWeights::Int8 { weight, scales },
            Some(QuantSpec {
                input_codes: node.get_attr_opt::<i64>(INPUT_CODES)?.unwrap_or(0) != 0,
                input: quantization(node, "")?,
                output_codes,
                second_output_codes,
                keeps_float,
            }),
        )
    } else {
        let weight = crate::onnx::tensor_f32(t)
            .ok_or_else(|| format_err!("{}: weight is not float", node.name))?;
        (ConvWeights::Float(weight), None)
    };
    let residual = match (
        node.input.len(),
        node.get_attr_opt::<i64>("residual_upsample")?,
    ) {
        (1, None) => ResidualInput::None,
        (2, None) => ResidualInput::Same,
        (2, Some(2)) => ResidualInput::Upsampled,
        (n, up) => bail!("{}: {n} inputs with residual_upsample {up:?}", node.name),
    };
    Ok(ConvSpec {
        cin: dims[1],
        cout: dims[0],
        kernel,
        weights,
        bias,
        pre,
        quant,
        residual,
    })
}

fn parse_fused_conv(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let spec = conv_spec(node)?;
    let conv = spec
        .build()
        .map_err(|e| format_err!("{}: {e}", node.name))?;
    Ok((
        expand(FusedConvExpansion(FusedConv {
            conv,
            residual: spec.residual,
        })),
        vec![],
    ))
}

/// The ONNX-level operator (shape inference), which wires [`FusedConv`].
#[derive(Debug, Clone)]
struct FusedConvExpansion(FusedConv);

impl Expansion for FusedConvExpansion {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    /// Floats, one or two code outputs (each of two readers' codes), or floats and one
    /// reader's codes.
    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.0.conv.outputs())
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(
            inputs,
            1 + (self.0.residual != ResidualInput::None) as usize,
        )?;
        check_output_arity(outputs, self.0.conv.outputs())?;
        s.equals(&inputs[0].datum_type, self.0.conv.input_type())?;
        for (k, output) in outputs.iter().enumerate() {
            s.equals(&output.datum_type, self.0.conv.output_type_of(k))?;
            s.equals(&output.shape, &outputs[0].shape)?;
        }
        if self.0.residual != ResidualInput::None {
            s.equals(&inputs[1].datum_type, f32::datum_type())?;
        }
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        s.equals(&inputs[0].shape[1], self.0.conv.input_channels().to_dim())?;
        s.equals(&outputs[0].shape[1], self.0.conv.output_channels().to_dim())?;
        for axis in [0, 2, 3] {
            s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
        }
        match self.0.residual {
            ResidualInput::None => {}
            ResidualInput::Same => s.equals(&inputs[1].shape, &outputs[0].shape)?,
            ResidualInput::Upsampled => {
                s.equals(&inputs[1].rank, 4)?;
                s.equals(&inputs[1].shape[0], &inputs[0].shape[0])?;
                s.equals(&inputs[1].shape[1], self.0.conv.output_channels().to_dim())?;
            }
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

/// A convolution run by [`DirectConv`]: input `[N, Cin, H, W]` (and the residual
/// [`ResidualInput`] says), output `[N, Cout, H, W]`.
#[derive(Debug, Clone)]
pub struct FusedConv {
    pub conv: ConvKernel,
    pub residual: ResidualInput,
}

impl FusedConv {
    fn name(&self) -> &'static str {
        match self.conv {
            ConvKernel::Float(_) => FUSED_CONV,
            ConvKernel::Int8(_) => FUSED_QCONV,
        }
    }
}

/// Two operators are equal when they share their packed weights (identity, so that
/// equality is total whatever the weights hold).
impl PartialEq for FusedConv {
    fn eq(&self, other: &Self) -> bool {
        self.residual == other.residual && self.conv.same(&other.conv)
    }
}

impl Eq for FusedConv {}

impl Op for FusedConv {
    fn name(&self) -> StaticName {
        FusedConv::name(self).into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let c = &self.conv;
        Ok(vec![format!(
            "{}{}x{} {}->{}{}{}",
            match c {
                ConvKernel::Float(f) if f.is_winograd() => "winograd F(2x2,3x3) ".into(),
                ConvKernel::Float(_) => String::new(),
                ConvKernel::Int8(q) => format!("{} ", q.kernel_choice().name()),
            },
            c.kernel(),
            c.kernel(),
            c.input_channels(),
            c.output_channels(),
            match self.residual {
                ResidualInput::None => "",
                ResidualInput::Same => " + residual",
                ResidualInput::Upsampled => " + up-sampled residual",
            },
            match (c.reads_codes(), c.writes_float(), c.code_outputs()) {
                (false, _, 0) => "",
                (true, _, 0) => ", u8 in",
                (false, false, 1) => ", u8 out",
                (true, false, 1) => ", u8 in and out",
                (false, true, _) => ", f32 and u8 out",
                (true, true, _) => ", u8 in, f32 and u8 out",
                (false, false, _) => ", u8 out x2",
                (true, false, _) => ", u8 in, u8 out x2",
            }
        )])
    }

    op_as_typed_op!();
}

fn shape4(t: &Tensor, what: &str) -> TractResult<[usize; 4]> {
    let s = t.shape();
    ensure!(
        s.len() == 4,
        "{FUSED_CONV}: {what} has shape {s:?}, not rank 4"
    );
    Ok([s[0], s[1], s[2], s[3]])
}

impl EvalOp for FusedConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let conv = &self.conv;
        let [n, c, h, w] = shape4(&inputs[0], "input")?;
        ensure!(
            c == conv.input_channels(),
            "{FUSED_CONV}: {c} input channels"
        );
        let cout = conv.output_channels();
        let plane = h * w;
        let executor = tract_linalg::multithread::current_tract_executor();
        let pool = pool_of(&executor);
        let want = match self.residual {
            ResidualInput::None => None,
            ResidualInput::Same => Some([n, cout, h, w]),
            ResidualInput::Upsampled => Some([n, cout, h / 2, w / 2]),
        };
        if let Some(want) = want {
            ensure!(
                shape4(&inputs[1], "residual")? == want,
                "{FUSED_CONV}: residual shape {:?} does not fit an output of {:?}",
                inputs[1].shape(),
                [n, cout, h, w]
            );
        }
        ensure!(
            inputs[0].datum_type() == conv.input_type()
                && inputs
                    .get(1)
                    .is_none_or(|r| r.datum_type() == f32::datum_type()),
            "{FUSED_CONV}: inputs of {:?}, expected {:?} and f32 residuals",
            inputs.iter().map(|i| i.datum_type()).collect::<Vec<_>>(),
            conv.input_type()
        );
        // The residual sum is written over the residual itself when nothing else holds
        // it (tract has released it): no output buffer to allocate and fault in.
        let in_place = self.residual == ResidualInput::Same
            && !conv.writes_codes()
            && inputs[1].is_exclusive();
        let mut out = if in_place {
            inputs.pop().expect("two inputs").into_tensor()
        } else if conv.writes_codes() {
            output_tensor::<u8>(&[n, cout, h, w])?
        } else {
            output_tensor::<f32>(&[n, cout, h, w])?
        };
        // the second output: a second reader's codes, or the one reader's beside floats
        let mut second = match conv.outputs() {
            2 => Some(output_tensor::<u8>(&[n, cout, h, w])?),
            _ => None,
        };
        let outputs = |out: Tensor, second: Option<Tensor>| {
            let mut values = tvec!(out.into_tvalue());
            values.extend(second.map(Tensor::into_tvalue));
            values
        };
        if out.len() == 0 {
            // an empty plane or no output channels (a malformed graph; found by fuzzing):
            // nothing to compute
            return Ok(outputs(out, second));
        }
        let x = inputs[0].try_as_plain_ram()?;
        let residual = match self.residual {
            ResidualInput::None => None,
            _ if in_place => None,
            _ => Some(inputs[1].try_as_plain_ram()?),
        };
        let residual = match &residual {
            Some(r) => Some(r.as_slice::<f32>()?),
            None => None,
        };
        let rplane = match self.residual {
            ResidualInput::Upsampled => plane / 4,
            _ => plane,
        };
        {
            let mut o = out.try_as_plain_ram_mut()?;
            let mut o2 = second
                .as_mut()
                .map(|t| t.try_as_plain_ram_mut())
                .transpose()?;
            for i in 0..n {
                let xi = match conv.reads_codes() {
                    true => Activations::Codes(ndarray::ArrayView2::from_shape(
                        (c, plane),
                        &x.as_slice::<u8>()?[i * c * plane..][..c * plane],
                    )?),
                    false => Activations::Float(ndarray::ArrayView2::from_shape(
                        (c, plane),
                        &x.as_slice::<f32>()?[i * c * plane..][..c * plane],
                    )?),
                };
                let ri = residual
                    .map(|r| {
                        ndarray::ArrayView2::from_shape(
                            (cout, rplane),
                            &r[i * cout * rplane..][..cout * rplane],
                        )
                    })
                    .transpose()?;
                let residual = match (self.residual, ri) {
                    _ if in_place => Residual::InOutput,
                    (ResidualInput::Same, Some(r)) => Residual::Add(r),
                    (ResidualInput::Upsampled, Some(r)) => Residual::AddUpsampled(r),
                    _ => Residual::None,
                };
                /// Image `i`'s `cout` planes of one output.
                fn plane_rows<T>(
                    o: &mut [T],
                    i: usize,
                    cout: usize,
                    plane: usize,
                ) -> TractResult<ndarray::ArrayViewMut2<'_, T>> {
                    Ok(ndarray::ArrayViewMut2::from_shape(
                        (cout, plane),
                        &mut o[i * cout * plane..][..cout * plane],
                    )?)
                }
                let oi = match (conv.writes_codes(), o2.as_mut()) {
                    (true, Some(o2)) => ActivationsMut::CodePair(
                        plane_rows(o.as_slice_mut::<u8>()?, i, cout, plane)?,
                        plane_rows(o2.as_slice_mut::<u8>()?, i, cout, plane)?,
                    ),
                    (true, None) => {
                        ActivationsMut::Codes(plane_rows(o.as_slice_mut::<u8>()?, i, cout, plane)?)
                    }
                    (false, Some(o2)) => ActivationsMut::FloatAndCodes(
                        plane_rows(o.as_slice_mut::<f32>()?, i, cout, plane)?,
                        plane_rows(o2.as_slice_mut::<u8>()?, i, cout, plane)?,
                    ),
                    (false, None) => {
                        ActivationsMut::Float(plane_rows(o.as_slice_mut::<f32>()?, i, cout, plane)?)
                    }
                };
                conv.run_image(xi, h, w, residual, oi, pool)?;
            }
        }
        Ok(outputs(out, second))
    }
}

impl TypedOp for FusedConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(x.rank() == 4 && x.datum_type == self.conv.input_type());
        let mut shape = x.shape.to_tvec();
        shape[1] = self.conv.output_channels().to_dim();
        if self.residual == ResidualInput::Same {
            ensure!(
                inputs[1].shape.to_tvec() == shape,
                "residual shape differs from the output's"
            );
        }
        Ok((0..self.conv.outputs())
            .map(|k| self.conv.output_type_of(k).fact(shape.clone()))
            .collect())
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let x = &inputs[0].shape;
        let pixels = x[0].clone() * &x[2] * &x[3];
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            pixels * self.conv.macs_per_pixel()
        )))
    }

    as_op!();
}
