//! Run one convolution layer (ReLU, then a 1x1 or 3x3 convolution with bias) N times,
//! on skipseg's kernel or tract's, f32 or int8, and nothing else: for counting
//! instructions per layer shape under qemu's `insn` plugin (bench/arm_shapes.sh,
//! docs/EDGE.md "Kernels on ARM, per layer shape"), where N = 0 and N = 2 differ by two
//! runs' worth.
//!
//!     conv_shapes CIN COUT K SIZE RUNS skipseg|tract f32|int8
//!
//! skipseg: the fused kernel the engine builds (`ConvSpec::build`; the ReLU is its
//! pre-activation; int8 takes the CPU's integer kernel if it has one). tract: a one-layer
//! ONNX graph (`Relu`, then `Conv`; int8 as QDQ: `QuantizeLinear` / `DequantizeLinear`
//! on the input, int8 weights through `DequantizeLinear`), optimised by tract, as the
//! engine runs a convolution that the fuse pass leaves alone.

use ndarray::Array2;
use skipseg_runtime::kernels::conv::{FakeQuant, InputTransform, Residual};
use skipseg_runtime::kernels::fused::{ConvSpec, ConvWeights, QuantSpec, ResidualInput};
use skipseg_runtime::kernels::qconv::{Activations, ActivationsMut};
use skipseg_runtime::kernels::test_values as values;
use skipseg_runtime::onnx::{self, pb};
use tract_onnx::prelude::*;

type Failure = Box<dyn std::error::Error>;

struct Layer {
    cin: usize,
    cout: usize,
    k: usize,
    weight: Vec<f32>,
    weight_i8: Vec<i8>,
    scales: Vec<f32>,
    bias: Vec<f32>,
    input_quant: FakeQuant,
}

impl Layer {
    fn new(cin: usize, cout: usize, k: usize) -> Self {
        let weight = values(cout * cin * k * k, 1);
        let weight_i8 = weight.iter().map(|v| (v * 127.0).round() as i8).collect();
        Self {
            cin,
            cout,
            k,
            weight,
            weight_i8,
            scales: vec![1.0 / 127.0; cout],
            bias: values(cout, 2),
            input_quant: FakeQuant {
                scale: 1.0 / 255.0,
                zero: 0,
            },
        }
    }

    fn skipseg(&self, int8: bool) -> Result<ConvSpec, Failure> {
        Ok(ConvSpec {
            cin: self.cin,
            cout: self.cout,
            kernel: self.k,
            weights: if int8 {
                ConvWeights::Int8 {
                    weight: self.weight_i8.clone(),
                    scales: self.scales.clone(),
                }
            } else {
                ConvWeights::Float(self.weight.clone())
            },
            bias: self.bias.clone(),
            pre: InputTransform {
                relu: true,
                ..Default::default()
            },
            quant: int8.then_some(QuantSpec {
                input_codes: false,
                input: self.input_quant,
                output_codes: None,
                second_output_codes: None,
                keeps_float: false,
            }),
            residual: ResidualInput::None,
        })
    }

    fn onnx(&self, int8: bool) -> pb::ModelProto {
        let (cin, cout, k) = (self.cin, self.cout, self.k);
        let mut inits = vec![onnx::f32_tensor("b", &[cout], &self.bias)];
        let node =
            |op: &str, inputs: &[&str], out: &str, attrs: Vec<pb::AttributeProto>| pb::NodeProto {
                op_type: op.into(),
                name: out.into(),
                input: inputs.iter().map(|s| s.to_string()).collect(),
                output: vec![out.into()],
                attribute: attrs,
                ..Default::default()
            };
        let mut nodes = vec![node("Relu", &["x"], "r", vec![])];
        let (x, w) = if int8 {
            let q = self.input_quant;
            inits.push(onnx::f32_tensor("xs", &[], &[q.scale]));
            inits.push(onnx::u8_tensor("xz", &[], &[q.zero]));
            inits.push(onnx::i8_tensor("wq", &[cout, cin, k, k], &self.weight_i8));
            inits.push(onnx::f32_tensor("ws", &[cout], &self.scales));
            inits.push(onnx::i8_tensor("wz", &[cout], &vec![0; cout]));
            nodes.push(node("QuantizeLinear", &["r", "xs", "xz"], "q", vec![]));
            nodes.push(node("DequantizeLinear", &["q", "xs", "xz"], "dq", vec![]));
            nodes.push(node(
                "DequantizeLinear",
                &["wq", "ws", "wz"],
                "w",
                vec![onnx::int("axis", 0)],
            ));
            ("dq", "w")
        } else {
            inits.push(onnx::f32_tensor("w", &[cout, cin, k, k], &self.weight));
            ("r", "w")
        };
        let pad = (k / 2) as i64;
        nodes.push(node(
            "Conv",
            &[x, w, "b"],
            "y",
            vec![
                onnx::ints("kernel_shape", &[k as i64, k as i64]),
                onnx::ints("pads", &[pad; 4]),
            ],
        ));
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: onnx::OPSET,
            }],
            graph: Some(pb::GraphProto {
                name: "layer".into(),
                node: nodes,
                initializer: inits,
                input: vec![onnx::float_value_info("x")],
                output: vec![onnx::float_value_info("y")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let [_, cin, cout, k, size, runs, engine, precision] = args.as_slice() else {
        return Err("usage: conv_shapes CIN COUT K SIZE RUNS skipseg|tract f32|int8".into());
    };
    let (cin, cout, k, size, runs): (usize, usize, usize, usize, usize) = (
        cin.parse()?,
        cout.parse()?,
        k.parse()?,
        size.parse()?,
        runs.parse()?,
    );
    let int8 = match precision.as_str() {
        "f32" => false,
        "int8" => true,
        other => return Err(format!("precision {other}: f32 or int8").into()),
    };
    let layer = Layer::new(cin, cout, k);
    let plane = size * size;
    let input = values(cin * plane, 3);
    let mut checksum = 0.0f64;
    match engine.as_str() {
        "skipseg" => {
            let conv = layer.skipseg(int8)?.build()?;
            let x = Array2::from_shape_vec((cin, plane), input)?;
            let mut out = Array2::<f32>::zeros((cout, plane));
            for _ in 0..runs {
                conv.run_image(
                    Activations::Float(x.view()),
                    size,
                    size,
                    Residual::None,
                    ActivationsMut::Float(out.view_mut()),
                    None,
                )?;
                checksum += out.iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        "tract" => {
            let plan = tract_onnx::onnx()
                .model_for_proto_model(&layer.onnx(int8))?
                .with_input_fact(0, f32::fact([1, cin, size, size]).into())?
                .into_optimized()?
                .into_runnable()?;
            let x = tract_ndarray::Array4::from_shape_vec((1, cin, size, size), input)?;
            let x: TValue = x.into_tensor().into();
            for _ in 0..runs {
                let out = plan.run(tvec!(x.clone()))?;
                checksum += out[0]
                    .to_plain_array_view::<f32>()?
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>();
            }
        }
        other => return Err(format!("engine {other}: skipseg or tract").into()),
    }
    println!(
        "{engine} {precision}: {runs} runs of {cin}->{cout} {k}x{k} at {size}x{size}, checksum {checksum:.3}"
    );
    Ok(())
}
