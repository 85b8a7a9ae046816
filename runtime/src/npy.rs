//! Minimal NumPy `.npy` reader and writer for little-endian `float32` C-order arrays,
//! the exchange format of the parity fixtures (any engine can read them).

use std::path::Path;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Encode an array as `.npy` version 1.0 bytes.
pub fn encode(a: ArrayViewD<'_, f32>) -> Vec<u8> {
    // Python's tuple repr, as numpy writes it: (3,) (1, 2, 3) ()
    let dims = a.shape().iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let shape = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + a.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in a.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decode `.npy` bytes holding a little-endian float32 C-order array.
pub fn decode(bytes: &[u8], source_name: &str) -> Result<ArrayD<f32>> {
    let bad = |reason: &str| Error::Io {
        path: source_name.into(),
        action: "not a float32 .npy file",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string()),
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unsupported .npy version")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    if !header.contains("'descr': '<f4'") {
        return Err(bad("dtype is not little-endian float32 ('<f4')"));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order is not supported"));
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape in header"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad("shape is not a tuple of integers"))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = &bytes[start + header_len..];
    let count: usize = shape.iter().product();
    if data.len() != count * 4 {
        return Err(bad("data length does not match the shape"));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|_| bad("shape mismatch"))
}

/// Read a `.npy` file.
pub fn read(path: &Path) -> Result<ArrayD<f32>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.into(),
        action: "cannot read",
        source,
    })?;
    decode(&bytes, &path.display().to_string())
}

/// Write a `.npy` file atomically.
pub fn write(path: &Path, a: ArrayViewD<'_, f32>) -> Result<()> {
    crate::io::write_atomic(path, &encode(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_numpy_layout() {
        let a = ArrayD::from_shape_vec(IxDyn(&[1, 2, 3]), (0..6).map(|v| v as f32).collect())
            .expect("shape");
        let bytes = encode(a.view());
        // what numpy.save writes for this array
        let expected = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }";
        let header = std::str::from_utf8(&bytes[10..10 + expected.len()]).expect("utf8");
        assert_eq!(header, expected);
        assert_eq!((bytes.len() - 24) % 64, 0, "header padded to 64 bytes");
        let back = decode(&bytes, "mem").expect("decodes");
        assert_eq!(back, a);
    }

    #[test]
    fn one_dimensional_shape_keeps_trailing_comma() {
        let a = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, 2.0, 3.0]).expect("shape");
        let bytes = encode(a.view());
        assert!(
            std::str::from_utf8(&bytes[10..70])
                .expect("utf8")
                .contains("(3,)")
        );
        assert_eq!(decode(&bytes, "mem").expect("decodes"), a);
    }

    #[test]
    fn rejects_other_dtypes() {
        let mut bytes = encode(ArrayD::zeros(IxDyn(&[2])).view());
        let pos = bytes.windows(3).position(|w| w == b"<f4").expect("descr");
        bytes[pos + 2] = b'8';
        assert!(decode(&bytes, "mem").is_err());
    }
}
