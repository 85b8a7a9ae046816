//! The operators skipseg adds to tract: the ONNX parser learns the `ai.skipseg` nodes that
//! [`crate::passes::fuse_conv`] writes, and tract runs them as ordinary operators of its
//! plan, with skipseg's kernels ([`crate::kernels`]) inside.

use std::sync::Arc;

use tract_hir::internal::*;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;

use crate::kernels::conv::{Activation, DirectConv, InputTransform, Residual};
use crate::passes::fuse_conv::FUSED_CONV;

/// tract's ONNX front end with skipseg's operators registered.
pub fn onnx_with_skipseg_ops() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert(FUSED_CONV, parse_fused_conv);
    onnx
}

fn float_attr(node: &NodeProto, name: &str) -> TractResult<Option<(Vec<usize>, Vec<f32>)>> {
    let Some(t) = node.get_attr_opt::<&tract_onnx::pb::TensorProto>(name)? else {
        return Ok(None);
    };
    let data = crate::onnx::tensor_f32(t)
        .ok_or_else(|| format_err!("{}: attribute {name} is not a float tensor", node.name))?;
    Ok(Some((t.dims.iter().map(|&d| d as usize).collect(), data)))
}

fn parse_fused_conv(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let kernel: usize = node.get_attr("kernel")?;
    let (dims, weight) =
        float_attr(node, "weight")?.ok_or_else(|| format_err!("{}: no weight", node.name))?;
    ensure!(
        dims.len() == 4 && dims[2] == kernel && dims[3] == kernel,
        "{}: weight dims {dims:?} for kernel {kernel}",
        node.name
    );
    let bias = float_attr(node, "bias")?.map(|b| b.1).unwrap_or_default();
    let pre = InputTransform {
        scale: float_attr(node, "pre_scale")?.map(|v| v.1),
        shift: float_attr(node, "pre_shift")?.map(|v| v.1),
        relu: node.get_attr_opt::<i64>("pre_relu")?.unwrap_or(0) != 0,
    };
    let conv = DirectConv::new(
        dims[1],
        dims[0],
        kernel,
        &weight,
        &bias,
        pre,
        Activation::None,
    )
    .map_err(|e| format_err!("{}: {e}", node.name))?;
    let residual = match (
        node.input.len(),
        node.get_attr_opt::<i64>("residual_upsample")?,
    ) {
        (1, None) => ResidualInput::None,
        (2, None) => ResidualInput::Same,
        (2, Some(2)) => ResidualInput::Upsampled,
        (n, up) => bail!("{}: {n} inputs with residual_upsample {up:?}", node.name),
    };
    Ok((
        expand(FusedConvExpansion(FusedConv {
            conv: Arc::new(conv),
            residual,
        })),
        vec![],
    ))
}

/// The ONNX-level operator (shape inference), which wires [`FusedConv`].
#[derive(Debug, Clone)]
struct FusedConvExpansion(FusedConv);

impl Expansion for FusedConvExpansion {
    fn name(&self) -> StaticName {
        FUSED_CONV.into()
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
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
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

/// The second input of a [`FusedConv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidualInput {
    None,
    /// `[N, Cout, H, W]`, added.
    Same,
    /// `[N, Cout, H/2, W/2]`, repeated x2 and added.
    Upsampled,
}

/// A convolution run by [`DirectConv`]: input `[N, Cin, H, W]` (and the residual
/// [`ResidualInput`] says), output `[N, Cout, H, W]`.
#[derive(Debug, Clone)]
pub struct FusedConv {
    pub conv: Arc<DirectConv>,
    pub residual: ResidualInput,
}

/// Two operators are equal when they share their packed weights (identity, so that
/// equality is total whatever the weights hold).
impl PartialEq for FusedConv {
    fn eq(&self, other: &Self) -> bool {
        self.residual == other.residual && Arc::ptr_eq(&self.conv, &other.conv)
    }
}

impl Eq for FusedConv {}

impl Op for FusedConv {
    fn name(&self) -> StaticName {
        FUSED_CONV.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let c = &self.conv;
        Ok(vec![format!(
            "{}x{} {}->{}{}",
            c.kernel(),
            c.kernel(),
            c.input_channels(),
            c.output_channels(),
            match self.residual {
                ResidualInput::None => "",
                ResidualInput::Same => " + residual",
                ResidualInput::Upsampled => " + up-sampled residual",
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
        let pool = match &executor {
            tract_linalg::multithread::Executor::MultiThread(pool) => Some(pool.as_ref()),
            _ => None,
        };
        let want = match self.residual {
            ResidualInput::None => None,
            ResidualInput::Same => Some([n, cout, h, w]),
            ResidualInput::Upsampled => Some([n, cout, h / 2, w / 2]),
        };
        if let Some(want) = want {
            ensure!(
                shape4(&inputs[1], "residual")? == want && (want[2] * (h / want[2].max(1)) == h),
                "{FUSED_CONV}: residual shape {:?} does not fit an output of {:?}",
                inputs[1].shape(),
                [n, cout, h, w]
            );
        }
        // The residual sum is written over the residual itself when nothing else holds
        // it (tract has released it): no output buffer to allocate and fault in.
        if self.residual == ResidualInput::Same && inputs[1].is_exclusive() {
            let mut out = inputs.pop().expect("two inputs").into_tensor();
            let x = inputs[0].try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            {
                let mut o = out.try_as_plain_ram_mut()?;
                let o = o.as_slice_mut::<f32>()?;
                for (i, out_i) in o.chunks_mut(cout * plane).enumerate() {
                    let xi = ndarray::ArrayView2::from_shape(
                        (c, plane),
                        &x[i * c * plane..][..c * plane],
                    )?;
                    let oi = ndarray::ArrayViewMut2::from_shape((cout, plane), out_i)?;
                    conv.run_image(xi, h, w, Residual::InOutput, oi, pool)?;
                }
            }
            return Ok(tvec!(out.into_tvalue()));
        }
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let residual = match self.residual {
            ResidualInput::None => None,
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
        let mut out = vec![0.0f32; n * cout * plane];
        for (i, out_i) in out.chunks_mut(cout * plane).enumerate() {
            let xi = ndarray::ArrayView2::from_shape((c, plane), &x[i * c * plane..][..c * plane])?;
            let ri = residual
                .map(|r| {
                    ndarray::ArrayView2::from_shape(
                        (cout, rplane),
                        &r[i * cout * rplane..][..cout * rplane],
                    )
                })
                .transpose()?;
            let residual = match (self.residual, ri) {
                (ResidualInput::Same, Some(r)) => Residual::Add(r),
                (ResidualInput::Upsampled, Some(r)) => Residual::AddUpsampled(r),
                _ => Residual::None,
            };
            let oi = ndarray::ArrayViewMut2::from_shape((cout, plane), out_i)?;
            conv.run_image(xi, h, w, residual, oi, pool)?;
        }
        let out = ndarray::Array4::from_shape_vec((n, cout, h, w), out)?;
        Ok(tvec!(out.into_tensor().into_tvalue()))
    }
}

impl TypedOp for FusedConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(x.rank() == 4 && x.datum_type == f32::datum_type());
        let mut shape = x.shape.to_tvec();
        shape[1] = self.conv.output_channels().to_dim();
        if self.residual == ResidualInput::Same {
            ensure!(
                inputs[1].shape.to_tvec() == shape,
                "residual shape differs from the output's"
            );
        }
        Ok(tvec!(f32::fact(shape)))
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
