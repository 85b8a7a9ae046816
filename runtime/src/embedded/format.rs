//! The embedded model file, version 1. Little-endian throughout:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `SKSEGEMB` |
//! | 4 | format version (u32): a reader refuses a newer one |
//! | 4 | CRC-32 (IEEE, as zlib's `crc32`) of every byte after this field |
//! | ... | the body |
//!
//! Body: the metadata (u32 count, then key and value strings), the input channels (u32),
//! the nodes (u32 count; each: name, operation tag (u8), inputs (u32 count, then u32
//! value ids), the operation's fields), the output value id (u32). A string is a u32
//! byte length and UTF-8; a float array a u32 length and f32 values; an int8 array a u32
//! length and bytes. Operation tags: 1 convolution, 2 add, 3 decimate, 4 up-sample, 5
//! sigmoid. A convolution: cin, cout, kernel (u32); weights tag (u8: 0 f32, 1 int8 with
//! per-channel scales) and arrays; bias; pre-activation (optional scale and shift arrays,
//! each behind a u8 present flag; u8 ReLU); residual (u8: 0 none, 1 same size, 2 half
//! size, up-sampled); for int8: u8 input is codes, input quantization (f32 scale, u8
//! zero), u8 writes codes, and if so that pre-activation and quantization.
//!
//! Every read is bounds-checked: a truncated or corrupted file is refused with the byte
//! offset, never read past its end.

use crate::error::{Error, Result};
use crate::kernels::conv::{FakeQuant, InputTransform};
use crate::kernels::fused::{ConvSpec, ConvWeights, QuantSpec, ResidualInput};

use super::{Graph, Node, Op};

/// The first 8 bytes of an embedded model.
pub const MAGIC: &[u8; 8] = b"SKSEGEMB";
/// The version this build writes and the newest it reads.
pub const VERSION: u32 = 1;

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// The bytes of `graph`.
pub fn encode(graph: &Graph) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.u32(graph.metadata.len() as u32);
    for (k, v) in &graph.metadata {
        w.str(k);
        w.str(v);
    }
    w.u32(graph.in_channels as u32);
    w.u32(graph.nodes.len() as u32);
    for n in &graph.nodes {
        w.str(&n.name);
        w.u8(match n.op {
            Op::Conv(_) => 1,
            Op::Add => 2,
            Op::Decimate => 3,
            Op::Upsample => 4,
            Op::Sigmoid => 5,
        });
        w.u32(n.inputs.len() as u32);
        for &i in &n.inputs {
            w.u32(i as u32);
        }
        if let Op::Conv(s) = &n.op {
            w.conv(s);
        }
    }
    w.u32(graph.output as u32);
    let body = w.0;
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The graph in `bytes`; `source_name` names the file in errors.
pub fn decode(bytes: &[u8], source_name: &str) -> Result<Graph> {
    let bad = |reason: String| Error::BadModel {
        source_name: source_name.to_string(),
        reason,
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        let hint = if bytes.first() == Some(&0x08) {
            " (it looks like ONNX: this build loads embedded models only; convert it with \
             `segment-run optimize --embedded`)"
        } else {
            ""
        };
        return Err(bad(format!(
            "not a skipseg embedded model: no {:?} header{hint}",
            "SKSEGEMB"
        )));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version > VERSION || version == 0 {
        return Err(bad(format!(
            "embedded model format version {version}; this build reads versions 1 to {VERSION} \
             (convert the model again with this build's `segment-run optimize --embedded`, or \
             use a newer skipseg)"
        )));
    }
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let body = &bytes[16..];
    let actual = crc32(body);
    if actual != crc {
        return Err(bad(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x}): the file is damaged \
             or truncated"
        )));
    }
    let mut r = Reader { bytes: body, at: 0 };
    let graph = read_graph(&mut r).map_err(|e| bad(format!("at byte {}: {e}", 16 + r.at)))?;
    if r.at != body.len() {
        return Err(bad(format!("{} bytes after the graph", body.len() - r.at)));
    }
    Ok(graph)
}

fn read_graph(r: &mut Reader<'_>) -> std::result::Result<Graph, String> {
    let n = r.count(8)?;
    let mut metadata = Vec::with_capacity(n);
    for _ in 0..n {
        metadata.push((r.str()?, r.str()?));
    }
    let in_channels = r.u32()? as usize;
    let n = r.count(6)?;
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?;
        let tag = r.u8()?;
        let k = r.count(4)?;
        let inputs = (0..k)
            .map(|_| r.u32().map(|v| v as usize))
            .collect::<std::result::Result<_, _>>()?;
        let op = match tag {
            1 => Op::Conv(Box::new(r.conv()?)),
            2 => Op::Add,
            3 => Op::Decimate,
            4 => Op::Upsample,
            5 => Op::Sigmoid,
            t => return Err(format!("node {name}: unknown operation tag {t}")),
        };
        nodes.push(Node { name, op, inputs });
    }
    let output = r.u32()? as usize;
    Ok(Graph {
        metadata,
        in_channels,
        nodes,
        output,
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        self.u32(v.len() as u32);
        for &x in v {
            self.f32(x);
        }
    }
    fn opt_f32s(&mut self, v: &Option<Vec<f32>>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.f32s(v);
            }
            None => self.u8(0),
        }
    }
    fn pre(&mut self, p: &InputTransform) {
        self.opt_f32s(&p.scale);
        self.opt_f32s(&p.shift);
        self.u8(p.relu as u8);
    }
    fn quant(&mut self, q: &FakeQuant) {
        self.f32(q.scale);
        self.u8(q.zero);
    }
    fn conv(&mut self, s: &ConvSpec) {
        self.u32(s.cin as u32);
        self.u32(s.cout as u32);
        self.u32(s.kernel as u32);
        match &s.weights {
            ConvWeights::Float(w) => {
                self.u8(0);
                self.f32s(w);
            }
            ConvWeights::Int8 { weight, scales } => {
                self.u8(1);
                self.u32(weight.len() as u32);
                self.0.extend(weight.iter().map(|&b| b as u8));
                self.f32s(scales);
            }
        }
        self.f32s(&s.bias);
        self.pre(&s.pre);
        self.u8(match s.residual {
            ResidualInput::None => 0,
            ResidualInput::Same => 1,
            ResidualInput::Upsampled => 2,
        });
        if let Some(q) = &s.quant {
            self.u8(q.input_codes as u8);
            self.quant(&q.input);
            match &q.output_codes {
                Some((pre, quant)) => {
                    self.u8(1);
                    self.pre(pre);
                    self.quant(quant);
                }
                None => self.u8(0),
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "{n} bytes wanted, {} left (truncated?)",
                    self.bytes.len() - self.at
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> std::result::Result<f32, String> {
        Ok(f32::from_bits(self.u32()?))
    }
    /// A count of items of at least `min_bytes` each: no larger than what is left, so a
    /// damaged count cannot make the reader allocate more than the file holds.
    fn count(&mut self, min_bytes: usize) -> std::result::Result<usize, String> {
        let n = self.u32()? as usize;
        let left = self.bytes.len() - self.at;
        if n.saturating_mul(min_bytes) > left {
            return Err(format!("a count of {n} with {left} bytes left"));
        }
        Ok(n)
    }
    fn flag(&mut self) -> std::result::Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("flag {v}, not 0 or 1")),
        }
    }
    fn str(&mut self) -> std::result::Result<String, String> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| format!("string: {e}"))
    }
    fn f32s(&mut self) -> std::result::Result<Vec<f32>, String> {
        let n = self.count(4)?;
        (0..n).map(|_| self.f32()).collect()
    }
    fn opt_f32s(&mut self) -> std::result::Result<Option<Vec<f32>>, String> {
        Ok(if self.flag()? {
            Some(self.f32s()?)
        } else {
            None
        })
    }
    fn pre(&mut self) -> std::result::Result<InputTransform, String> {
        Ok(InputTransform {
            scale: self.opt_f32s()?,
            shift: self.opt_f32s()?,
            relu: self.flag()?,
            fake_quant: None,
        })
    }
    fn quant(&mut self) -> std::result::Result<FakeQuant, String> {
        Ok(FakeQuant {
            scale: self.f32()?,
            zero: self.u8()?,
        })
    }
    fn conv(&mut self) -> std::result::Result<ConvSpec, String> {
        let (cin, cout, kernel) = (
            self.u32()? as usize,
            self.u32()? as usize,
            self.u32()? as usize,
        );
        let int8 = self.flag()?;
        let weights = if int8 {
            let n = self.count(1)?;
            let weight = self.take(n)?.iter().map(|&b| b as i8).collect();
            ConvWeights::Int8 {
                weight,
                scales: self.f32s()?,
            }
        } else {
            ConvWeights::Float(self.f32s()?)
        };
        let bias = self.f32s()?;
        let pre = self.pre()?;
        let residual = match self.u8()? {
            0 => ResidualInput::None,
            1 => ResidualInput::Same,
            2 => ResidualInput::Upsampled,
            v => return Err(format!("residual kind {v}")),
        };
        let quant = if int8 {
            let input_codes = self.flag()?;
            let input = self.quant()?;
            let output_codes = if self.flag()? {
                Some((self.pre()?, self.quant()?))
            } else {
                None
            };
            Some(QuantSpec {
                input_codes,
                input,
                output_codes,
                second_output_codes: None,
                keeps_float: false,
            })
        } else {
            None
        };
        Ok(ConvSpec {
            cin,
            cout,
            kernel,
            weights,
            bias,
            pre,
            quant,
            residual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_standard_check_string() {
        // the CRC-32 check value of every catalogue of CRCs: crc32("123456789")
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
