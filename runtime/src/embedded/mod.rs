//! The embedded model: skipseg's graph after every pass (batch norms folded, dropout
//! removed, convolutions fused, int8 chained), in a file format of its own
//! ([`format`]), run by a small executor on skipseg's kernels without tract.
//!
//! A firmware host converts once on a workstation (`segment-run optimize --embedded`)
//! and ships the result; loading it needs neither protobuf nor an ONNX front end nor
//! tract's optimiser. The graph is what skipseg's passes leave of a skipseg network:
//! fused convolutions ([`ConvSpec`]), residual sums, x2 decimation, x2 nearest
//! up-sampling and the final sigmoid, and nothing else: [`Graph::from_fused_onnx`]
//! refuses a graph with any other operation.
//!
//! The executor runs the same kernels on the same buffers as tract's plan of the same
//! graph (the sigmoid included: [`crate::kernels::sigmoid`]), so its outputs are the
//! same bits (tested in `tests/embedded.rs`).

pub mod format;
#[cfg(feature = "onnx")]
mod from_onnx;

use ndarray::{Array4, ArrayView2, ArrayView4, ArrayViewMut2};

use crate::error::{Error, Result};
use crate::kernels::conv::Residual;
use crate::kernels::fused::{ConvKernel, ConvSpec, ResidualInput};
use crate::kernels::qconv::{Activations, ActivationsMut};
use crate::kernels::resample;
use crate::kernels::sigmoid::sigmoid_in_place;
use crate::onnx::ModelMeta;

/// Where a node's input comes from: the graph's input (0) or node `i`'s output (`i + 1`).
pub type ValueId = usize;

/// One operation of a [`Graph`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A fused convolution; inputs: the activations, then the residual when
    /// [`ConvSpec::residual`] says.
    Conv(Box<ConvSpec>),
    /// Element-wise sum of two f32 maps of one shape.
    Add,
    /// Every second row and column, from the first: `[C, H, W] -> [C, H/2, W/2]`.
    Decimate,
    /// Nearest-neighbour x2: `[C, H, W] -> [C, 2H, 2W]`.
    Upsample,
    /// The logistic sigmoid, element-wise.
    Sigmoid,
}

/// A node: its name (the ONNX node's), operation and inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
}

/// A skipseg network after every pass, in execution order.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// The ONNX model's metadata entries (architecture, preprocessing, defaults).
    pub metadata: Vec<(String, String)>,
    /// Input channels of the image.
    pub in_channels: usize,
    pub nodes: Vec<Node>,
    /// The membrane probability `[1, H, W]`.
    pub output: ValueId,
}

/// A value between nodes, `[channels, h * w]`.
enum Buffer {
    Float(Vec<f32>),
    Codes(Vec<u8>),
}

struct Value {
    data: Buffer,
    channels: usize,
    h: usize,
    w: usize,
}

/// The channels, and floats or codes, of every value: checked once, at load.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ValueType {
    channels: usize,
    codes: bool,
    /// Down-sampling level relative to the input (`h = H >> level`), negative never.
    level: i32,
}

/// A loaded embedded model: the graph with its convolutions' weights packed.
pub struct EmbeddedModel {
    source_name: String,
    graph: Graph,
    meta: ModelMeta,
    kernels: Vec<Option<ConvKernel>>,
    /// For each value, the last node that reads it (its buffer is freed after).
    last_use: Vec<usize>,
    /// For each value, its channels, kind and level (checked at load).
    types: Vec<ValueType>,
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for EmbeddedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedModel")
            .field("source_name", &self.source_name)
            .field("nodes", &self.graph.nodes.len())
            .finish()
    }
}

impl EmbeddedModel {
    /// Read an embedded model file ([`format`]); `threads` > 1 starts a thread pool.
    pub fn from_path(path: &std::path::Path, threads: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            action: "read",
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string(), threads)
    }

    /// An embedded model from its bytes; `source_name` names it in errors.
    pub fn from_bytes(bytes: &[u8], source_name: &str, threads: usize) -> Result<Self> {
        let graph = format::decode(bytes, source_name)?;
        Self::new(graph, source_name, threads)
    }

    /// Check `graph` and pack its weights.
    pub fn new(graph: Graph, source_name: &str, threads: usize) -> Result<Self> {
        let bad = |reason: String| Error::BadModel {
            source_name: source_name.to_string(),
            reason,
        };
        let props: Vec<(&str, &str)> = graph
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let meta = ModelMeta::from_props(&props, source_name)?;
        if meta.arch.in_channels != graph.in_channels {
            return Err(bad(format!(
                "the graph takes {} channels, its architecture {}",
                graph.in_channels, meta.arch.in_channels
            )));
        }
        let types = graph.check_types().map_err(bad)?;
        let kernels = graph
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(spec) => spec
                    .build()
                    .map(Some)
                    .map_err(|e| bad(format!("{}: {e}", n.name))),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut last_use = vec![0; graph.nodes.len() + 1];
        for (i, n) in graph.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last_use[v] = i;
            }
        }
        last_use[graph.output] = usize::MAX;
        let pool = (threads > 1)
            .then(|| crate::engine::rayon_pool(threads))
            .transpose()?;
        Ok(Self {
            source_name: source_name.to_string(),
            graph,
            meta,
            kernels,
            last_use,
            types,
            pool,
        })
    }

    /// The input whose buffer node `i`'s output takes over, if any: one read last here
    /// (and only once) by an operation that can write over it. A residual is summed in
    /// place as tract's plan does when it holds the only reference. The executor and
    /// [`Self::peak_bytes`] both follow this.
    fn reused_input(&self, i: usize, node: &Node) -> Option<ValueId> {
        let last = |v: ValueId| {
            self.last_use[v] == i && node.inputs.iter().filter(|&&x| x == v).count() == 1
        };
        match &node.op {
            Op::Conv(spec) => (spec.residual == ResidualInput::Same
                && !self.types[i + 1].codes
                && last(node.inputs[1]))
            .then(|| node.inputs[1]),
            Op::Add => node.inputs.iter().copied().find(|&v| last(v)),
            Op::Sigmoid => last(node.inputs[0]).then(|| node.inputs[0]),
            Op::Decimate | Op::Upsample => None,
        }
    }

    /// Threads the kernels use: the model's own pool, else the one a
    /// [`crate::ThreadPool::install`] around the caller set, else 1.
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map(|p| p.current_num_threads())
            .or_else(|| crate::engine::current_pool().map(|p| p.current_num_threads()))
            .unwrap_or(1)
    }

    /// An upper bound of the bytes [`Self::run`] allocates on an `h x w` window with
    /// `threads` threads, all at once at its peak: the copy of the input, every value
    /// from the node that writes it to its last reader (a residual summed in place, an
    /// operand taken over, as the executor does), and each convolution's scratch
    /// ([`ConvKernel::scratch_bytes`]). The returned output is included; the input is the
    /// caller's. Computed from the graph, without running it.
    pub fn peak_bytes(&self, h: usize, w: usize, threads: usize) -> usize {
        let bytes_of = |t: &ValueType| {
            let (vh, vw) = (h >> t.level, w >> t.level);
            t.channels * vh * vw * if t.codes { 1 } else { 4 }
        };
        let n = self.graph.nodes.len();
        // the executor's list of values
        let mut live = (n + 1) * std::mem::size_of::<Option<Value>>() + bytes_of(&self.types[0]);
        let mut peak = live;
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let out = bytes_of(&self.types[i + 1]);
            let taken = self.reused_input(i, node);
            let scratch = match (&node.op, self.kernels[i].as_ref()) {
                (Op::Conv(_), Some(conv)) => {
                    let t = &self.types[node.inputs[0]];
                    conv.scratch_bytes(h >> t.level, w >> t.level, threads)
                }
                _ => 0,
            };
            let allocated = if taken.is_some() { 0 } else { out };
            peak = peak.max(live + allocated + scratch);
            live += allocated;
            for (k, &v) in node.inputs.iter().enumerate() {
                let first_mention = !node.inputs[..k].contains(&v);
                if first_mention && self.last_use[v] == i && Some(v) != taken {
                    live -= bytes_of(&self.types[v]);
                }
            }
        }
        peak
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Run the network on a normalised `[1, C, H, W]` input (H and W multiples of the
    /// architecture's down-sampling factor); returns the membrane probability
    /// `[1, 1, H, W]`.
    pub fn run(&self, input: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        let (n, c, h, w) = input.dim();
        // the graph's own deepest level decides too (a graph that decimates more often
        // than its architecture says must not meet odd or empty maps)
        let deepest = self.types.iter().map(|t| t.level).max().unwrap_or(0);
        let factor = self.meta.arch.down_factor().max(1 << deepest);
        if n != 1 || c != self.graph.in_channels {
            return Err(Error::InputShape {
                source_name: self.source_name.clone(),
                shape: input.shape().to_vec(),
                expected_channels: self.graph.in_channels,
            });
        }
        if !h.is_multiple_of(factor) || !w.is_multiple_of(factor) || h == 0 || w == 0 {
            return Err(Error::NotMultiple {
                source_name: self.source_name.clone(),
                height: h,
                width: w,
                factor,
            });
        }
        let engine_err = |node: &str, reason: String| Error::Engine {
            source_name: self.source_name.clone(),
            reason: format!("{node}: {reason}"),
        };
        let mut values: Vec<Option<Value>> = Vec::with_capacity(self.graph.nodes.len() + 1);
        values.push(Some(Value {
            data: Buffer::Float(input.iter().copied().collect()),
            channels: c,
            h,
            w,
        }));
        // the model's own pool, else one a ThreadPool::install around the caller set
        let current = if self.pool.is_none() {
            crate::engine::current_pool()
        } else {
            None
        };
        let pool = self.pool.as_ref().or(current.as_deref());
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let out = self
                .run_node(i, node, &mut values, pool)
                .map_err(|reason| engine_err(&node.name, reason))?;
            values.push(Some(out));
            for &v in &node.inputs {
                if self.last_use[v] == i {
                    values[v] = None;
                }
            }
        }
        let out = values
            .get_mut(self.graph.output)
            .and_then(Option::take)
            .ok_or_else(|| engine_err("output", "no value".into()))?;
        match out.data {
            Buffer::Float(v) if out.channels == 1 => {
                Array4::from_shape_vec((1, 1, out.h, out.w), v)
                    .map_err(|e| engine_err("output", e.to_string()))
            }
            _ => Err(engine_err("output", "not one channel of floats".into())),
        }
    }

    /// One node; a value read last here may be taken instead of copied.
    fn run_node(
        &self,
        i: usize,
        node: &Node,
        values: &mut [Option<Value>],
        pool: Option<&rayon::ThreadPool>,
    ) -> std::result::Result<Value, String> {
        let reused = self.reused_input(i, node);
        let get = |values: &[Option<Value>], v: ValueId| -> std::result::Result<usize, String> {
            values
                .get(v)
                .and_then(Option::as_ref)
                .map(|_| v)
                .ok_or_else(|| format!("input value {v} is not available"))
        };
        match &node.op {
            Op::Conv(spec) => {
                let conv = self.kernels[i].as_ref().ok_or("no kernel")?;
                let x = get(values, node.inputs[0])?;
                let (h, w) = {
                    let v = values[x].as_ref().ok_or("no input")?;
                    (v.h, v.w)
                };
                let plane = h * w;
                let cout = spec.cout;
                let codes_out = conv.writes_codes();
                let in_place = reused.is_some();
                let mut out = if in_place {
                    let r = values[node.inputs[1]].take().ok_or("no residual")?;
                    match r.data {
                        Buffer::Float(v) if v.len() == cout * plane => v,
                        _ => return Err("residual of the wrong kind or size".into()),
                    }
                } else {
                    Vec::new()
                };
                let mut codes = Vec::new();
                if codes_out {
                    codes = vec![0u8; cout * plane];
                } else if !in_place {
                    out = vec![0f32; cout * plane];
                }
                let xv = values[x].as_ref().ok_or("no input")?;
                let input = match &xv.data {
                    Buffer::Float(v) => Activations::Float(
                        ArrayView2::from_shape((xv.channels, plane), v)
                            .map_err(|e| e.to_string())?,
                    ),
                    Buffer::Codes(v) => Activations::Codes(
                        ArrayView2::from_shape((xv.channels, plane), v)
                            .map_err(|e| e.to_string())?,
                    ),
                };
                let residual_value = match spec.residual {
                    ResidualInput::None => None,
                    _ if in_place => None,
                    _ => values[node.inputs[1]].as_ref(),
                };
                let residual = match (spec.residual, residual_value) {
                    _ if in_place => Residual::InOutput,
                    (ResidualInput::None, _) => Residual::None,
                    (
                        kind,
                        Some(Value {
                            data: Buffer::Float(r),
                            h: rh,
                            w: rw,
                            ..
                        }),
                    ) => {
                        let view = ArrayView2::from_shape((cout, rh * rw), r.as_slice())
                            .map_err(|e| e.to_string())?;
                        match kind {
                            ResidualInput::Same => Residual::Add(view),
                            _ => Residual::AddUpsampled(view),
                        }
                    }
                    _ => return Err("residual missing or not floats".into()),
                };
                let output = if codes_out {
                    ActivationsMut::Codes(
                        ArrayViewMut2::from_shape((cout, plane), codes.as_mut_slice())
                            .map_err(|e| e.to_string())?,
                    )
                } else {
                    ActivationsMut::Float(
                        ArrayViewMut2::from_shape((cout, plane), out.as_mut_slice())
                            .map_err(|e| e.to_string())?,
                    )
                };
                conv.run_image(input, h, w, residual, output, pool)
                    .map_err(|e| e.to_string())?;
                Ok(Value {
                    data: if codes_out {
                        Buffer::Codes(codes)
                    } else {
                        Buffer::Float(out)
                    },
                    channels: cout,
                    h,
                    w,
                })
            }
            Op::Add => {
                let (a, b) = (node.inputs[0], node.inputs[1]);
                // into the operand read last here (IEEE addition commutes), else a copy
                let (mut sum, other) = match reused {
                    Some(v) => (
                        values[v].take().ok_or("no operand")?,
                        if v == a { b } else { a },
                    ),
                    None => (
                        float_copy(values[get(values, a)?].as_ref().ok_or("no operand")?)?,
                        b,
                    ),
                };
                let ov = values[get(values, other)?].as_ref().ok_or("no operand")?;
                match (&mut sum.data, &ov.data) {
                    (Buffer::Float(s), Buffer::Float(o)) if s.len() == o.len() => {
                        for (s, y) in s.iter_mut().zip(o) {
                            *s += y;
                        }
                    }
                    _ => return Err("operands differ in kind or size".into()),
                }
                Ok(sum)
            }
            Op::Decimate | Op::Upsample => {
                let v = values[get(values, node.inputs[0])?]
                    .as_ref()
                    .ok_or("no input")?;
                let Buffer::Float(x) = &v.data else {
                    return Err("decimation or up-sampling of codes".into());
                };
                let (h2, w2) = match node.op {
                    Op::Decimate => (v.h.div_ceil(2), v.w.div_ceil(2)),
                    _ => (v.h * 2, v.w * 2),
                };
                let mut out = vec![0f32; v.channels * h2 * w2];
                match node.op {
                    Op::Decimate => resample::decimate_x2(x, v.channels, v.h, v.w, &mut out, pool),
                    _ => resample::upsample_x2(x, v.channels, v.h, v.w, &mut out, pool),
                }
                .map_err(|e| e.to_string())?;
                Ok(Value {
                    data: Buffer::Float(out),
                    channels: v.channels,
                    h: h2,
                    w: w2,
                })
            }
            Op::Sigmoid => {
                let v = node.inputs[0];
                let mut value = match reused {
                    Some(v) => values[v].take().ok_or("no input")?,
                    None => float_copy(values[get(values, v)?].as_ref().ok_or("no input")?)?,
                };
                match &mut value.data {
                    Buffer::Float(d) => sigmoid_in_place(d),
                    Buffer::Codes(_) => return Err("sigmoid of codes".into()),
                }
                Ok(value)
            }
        }
    }
}

/// A copy of a value of floats (codes are refused: no operation copies them).
fn float_copy(v: &Value) -> std::result::Result<Value, String> {
    match &v.data {
        Buffer::Float(d) => Ok(Value {
            data: Buffer::Float(d.clone()),
            channels: v.channels,
            h: v.h,
            w: v.w,
        }),
        Buffer::Codes(_) => Err("an operation on floats got codes".into()),
    }
}

impl Graph {
    /// Check that every node reads earlier values of the kinds and channel counts its
    /// operation takes, and that the output is one channel of floats at full size.
    fn check_types(&self) -> std::result::Result<Vec<ValueType>, String> {
        let mut types = vec![ValueType {
            channels: self.in_channels,
            codes: false,
            level: 0,
        }];
        for (i, n) in self.nodes.iter().enumerate() {
            let err = |reason: String| format!("node {i} ({}): {reason}", n.name);
            let arity = match &n.op {
                Op::Conv(s) if s.residual != ResidualInput::None => 2,
                Op::Add => 2,
                _ => 1,
            };
            if n.inputs.len() != arity {
                return Err(err(format!("{} inputs, takes {arity}", n.inputs.len())));
            }
            if let Some(&v) = n.inputs.iter().find(|&&v| v > i) {
                return Err(err(format!("reads value {v}, not computed before it")));
            }
            let t: Vec<ValueType> = n.inputs.iter().map(|&v| types[v]).collect();
            let floats = |k: usize| {
                if t[k].codes {
                    Err(err(format!("input {k} is codes, takes floats")))
                } else {
                    Ok(())
                }
            };
            let out = match &n.op {
                Op::Conv(s) => {
                    let reads_codes = s.quant.as_ref().is_some_and(|q| q.input_codes);
                    let writes_codes = s.quant.as_ref().is_some_and(|q| q.output_codes.is_some());
                    if t[0].channels != s.cin || t[0].codes != reads_codes {
                        return Err(err(format!(
                            "input has {} channels of {}, the convolution takes {} of {}",
                            t[0].channels,
                            if t[0].codes { "codes" } else { "floats" },
                            s.cin,
                            if reads_codes { "codes" } else { "floats" }
                        )));
                    }
                    if arity == 2 {
                        floats(1)?;
                        let level = match s.residual {
                            ResidualInput::Upsampled => t[0].level + 1,
                            _ => t[0].level,
                        };
                        if t[1].channels != s.cout || t[1].level != level {
                            return Err(err("residual of another shape".into()));
                        }
                    }
                    ValueType {
                        channels: s.cout,
                        codes: writes_codes,
                        level: t[0].level,
                    }
                }
                Op::Add => {
                    floats(0)?;
                    floats(1)?;
                    if t[0] != t[1] {
                        return Err(err("operands of different shapes".into()));
                    }
                    t[0]
                }
                Op::Decimate => {
                    floats(0)?;
                    if t[0].level >= 16 {
                        return Err(err("decimates a map 2^16 times smaller already".into()));
                    }
                    ValueType {
                        level: t[0].level + 1,
                        ..t[0]
                    }
                }
                Op::Upsample => {
                    floats(0)?;
                    if t[0].level == 0 {
                        return Err(err("up-samples beyond the input's size".into()));
                    }
                    ValueType {
                        level: t[0].level - 1,
                        ..t[0]
                    }
                }
                Op::Sigmoid => {
                    floats(0)?;
                    t[0]
                }
            };
            types.push(out);
        }
        match types.get(self.output) {
            Some(ValueType {
                channels: 1,
                codes: false,
                level: 0,
            }) => Ok(types),
            Some(t) => Err(format!(
                "the output is {t:?}, not one channel of floats at full size"
            )),
            None => Err(format!("the output value {} does not exist", self.output)),
        }
    }
}
