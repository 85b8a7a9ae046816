//! Label images as TIFF: one 32-bit unsigned integer page per slice (ids, 0 = none),
//! written atomically; read back as ids (8, 16 or 32-bit unsigned pages; a float page is
//! refused: a label is an integer).

use std::io::Cursor;
use std::path::Path;

use ndarray::Array2;

use super::atomic::write_atomic;
use super::pages::bad;
use super::tiff::tiff_decoder;
use crate::error::Result;

/// Write `labels` (`[height, width]`) as a single-page uint32 TIFF, atomically.
pub fn write_label_tiff(path: &Path, labels: &Array2<u32>) -> Result<()> {
    use tiff::encoder::{Compression, TiffEncoder, colortype::Gray32};
    let (h, w) = labels.dim();
    let enc_err = |e: tiff::TiffError| bad(path, format!("TIFF encoding: {e}"));
    let mut bytes = Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut bytes)
            .map_err(enc_err)?
            .with_compression(Compression::Deflate(Default::default()));
        let data: Vec<u32> = labels.iter().copied().collect();
        enc.write_image::<Gray32>(w as u32, h as u32, &data)
            .map_err(enc_err)?;
    }
    write_atomic(path, bytes.get_ref())
}

/// Every page of a label TIFF as ids.
pub fn read_label_tiff(path: &Path) -> Result<Vec<Array2<u32>>> {
    use tiff::decoder::DecodingResult;
    let mut dec = tiff_decoder(path)?;
    let mut pages = Vec::new();
    loop {
        let (w, h) = dec
            .dimensions()
            .map_err(|e| bad(path, format!("not a readable TIFF: {e}")))?;
        let colour = dec
            .colortype()
            .map_err(|e| bad(path, format!("not a readable TIFF: {e}")))?;
        if !matches!(colour, tiff::ColorType::Gray(_)) {
            return Err(bad(
                path,
                format!("a label image must be one grey channel, this page is {colour:?}"),
            ));
        }
        let ids: Vec<u32> = match dec
            .read_image()
            .map_err(|e| bad(path, format!("not a readable TIFF: {e}")))?
        {
            DecodingResult::U8(v) => v.into_iter().map(u32::from).collect(),
            DecodingResult::U16(v) => v.into_iter().map(u32::from).collect(),
            DecodingResult::U32(v) => v,
            other => {
                return Err(bad(
                    path,
                    format!(
                        "a label image holds unsigned integer ids (8, 16 or 32-bit); this page \
                         holds {}",
                        result_kind(&other)
                    ),
                ));
            }
        };
        let page = Array2::from_shape_vec((h as usize, w as usize), ids)
            .map_err(|e| bad(path, format!("page of {w}x{h}: {e}")))?;
        pages.push(page);
        if !dec.more_images() {
            break;
        }
        dec.next_image()
            .map_err(|e| bad(path, format!("not a readable TIFF: {e}")))?;
    }
    Ok(pages)
}

fn result_kind(r: &tiff::decoder::DecodingResult) -> &'static str {
    use tiff::decoder::DecodingResult::*;
    match r {
        F32(_) | F64(_) | F16(_) => "floating-point values",
        I8(_) | I16(_) | I32(_) | I64(_) => "signed integers",
        U64(_) => "64-bit integers",
        _ => "another sample type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_tiff_round_trips_large_ids() {
        let dir = std::env::temp_dir().join(format!("skipseg-label-tiff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("l.tif");
        let labels = Array2::from_shape_fn((7, 5), |(y, x)| (y * 5 + x) as u32 * 70_001);
        write_label_tiff(&path, &labels).expect("write");
        assert_eq!(read_label_tiff(&path).expect("read"), vec![labels]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
