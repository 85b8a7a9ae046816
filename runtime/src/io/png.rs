//! PNG: 8/16-bit grayscale (or gray saved as RGB/RGBA) read row by row, and 8-bit gray
//! or RGB written atomically, whole or streamed row by row.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::atomic::{create_temp, write_atomic};
use super::pages::{MAX_INTERLACED_PNG_BYTES, bad, open, to_gray};
use crate::error::{Error, Result};

/// Rows of a PNG, decoded one at a time (interlaced files: whole, on opening).
pub(super) struct PngRows {
    path: PathBuf,
    reader: png::Reader<BufReader<File>>,
    pub(super) width: usize,
    pub(super) height: usize,
    channels: usize,
    sixteen: bool,
    raw: Vec<u8>,
    /// The whole decoded image of an interlaced PNG, and the next row to hand out.
    deinterlaced: Option<(Vec<u8>, usize)>,
}

impl PngRows {
    pub(super) fn open(path: &Path) -> Result<Self> {
        let mut decoder = png::Decoder::new(open(path)?);
        decoder.set_transformations(png::Transformations::EXPAND);
        let reader = decoder
            .read_info()
            .map_err(|e| bad(path, format!("not a readable PNG: {e}")))?;
        let (color, depth) = reader.output_color_type();
        let (width, height) = (reader.info().width as usize, reader.info().height as usize);
        if width == 0 || height == 0 {
            return Err(bad(path, "image has zero width or height"));
        }
        let line = reader
            .output_line_size(width as u32)
            .ok_or_else(|| bad(path, "PNG too large"))?;
        let mut rows = Self {
            path: path.to_path_buf(),
            width,
            height,
            channels: color.samples(),
            sixteen: depth == png::BitDepth::Sixteen,
            raw: vec![0; line],
            deinterlaced: None,
            reader,
        };
        if rows.reader.info().interlaced {
            let size = rows
                .reader
                .output_buffer_size()
                .filter(|&s| s <= MAX_INTERLACED_PNG_BYTES)
                .ok_or_else(|| {
                    bad(
                        path,
                        format!(
                            "interlaced PNG of {width}x{height} pixels: interlaced images are \
                             decoded whole, and this one would take more than {} MB \
                             (re-save it without interlacing to stream it)",
                            MAX_INTERLACED_PNG_BYTES >> 20
                        ),
                    )
                })?;
            let mut buf = vec![0; size];
            rows.reader
                .next_frame(&mut buf)
                .map_err(|e| bad(path, format!("corrupt PNG: {e}")))?;
            rows.deinterlaced = Some((buf, 0));
        }
        Ok(rows)
    }

    /// Decode the next row into `out`; returns the bit depth.
    pub(super) fn read_row(&mut self, out: &mut [f32]) -> Result<u8> {
        let line = self.raw.len();
        match &mut self.deinterlaced {
            Some((buf, next)) => {
                self.raw
                    .copy_from_slice(&buf[*next * line..(*next + 1) * line]);
                *next += 1;
            }
            None => {
                let got = self
                    .reader
                    .read_row(&mut self.raw)
                    .map_err(|e| bad(&self.path, format!("corrupt PNG: {e}")))?;
                if got.is_none() {
                    return Err(bad(
                        &self.path,
                        "corrupt PNG: fewer rows than its header says",
                    ));
                }
            }
        }
        if self.sixteen {
            let samples: Vec<u16> = self
                .raw
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            to_gray(&self.path, &samples, self.channels, "PNG", 65535.0, out)?;
            Ok(16)
        } else {
            to_gray(&self.path, &self.raw, self.channels, "PNG", 255.0, out)?;
            Ok(8)
        }
    }
}

/// Write an 8-bit grayscale PNG atomically (temporary file, then rename).
pub fn write_png_u8(path: &Path, pixels: &Array2<u8>) -> Result<()> {
    let (h, w) = pixels.dim();
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| bad(path, format!("PNG encoding: {e}")))?;
        let data: Vec<u8> = pixels.iter().copied().collect();
        writer
            .write_image_data(&data)
            .map_err(|e| bad(path, format!("PNG encoding: {e}")))?;
    }
    write_atomic(path, &bytes)
}

/// Write an 8-bit RGB PNG atomically; `rgb` is `[height, width, 3]` flattened row-major.
pub fn write_png_rgb(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    write_atomic(path, &encode_png_rgb(path, width, height, rgb)?)
}

/// An 8-bit RGB PNG file's bytes; `path` names it in errors.
pub fn encode_png_rgb(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut buf = BufWriter::new(&mut bytes);
        let mut enc = png::Encoder::new(&mut buf, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| bad(path, format!("PNG encoding: {e}")))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| bad(path, format!("PNG encoding: {e}")))?;
        writer
            .finish()
            .map_err(|e| bad(path, format!("PNG encoding: {e}")))?;
        buf.flush().map_err(|source| Error::Io {
            path: path.to_path_buf(),
            action: "cannot encode",
            source,
        })?;
    }
    Ok(bytes)
}

/// A streamed 8-bit PNG (gray or RGB) written to a temporary file, renamed on `finish`.
pub(super) struct PngStream {
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<png::StreamWriter<'static, BufWriter<File>>>,
    /// Renamed into place: the temporary file is gone.
    committed: bool,
}

impl PngStream {
    pub(super) fn create(path: PathBuf, width: usize, height: usize, rgb: bool) -> Result<Self> {
        let (tmp, file) = create_temp(&path)?;
        let mut enc = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        enc.set_color(if rgb {
            png::ColorType::Rgb
        } else {
            png::ColorType::Grayscale
        });
        enc.set_depth(png::BitDepth::Eight);
        // fdeflate's fast mode, on the writer thread beside the network: a 2048 x 2048
        // probability map is 4 % larger than PIL's default (bench/pipeline.sh)
        enc.set_compression(png::Compression::Fast);
        let stream = enc
            .write_header()
            .and_then(|w| w.into_stream_writer())
            .map_err(|e| bad(&path, format!("PNG encoding: {e}")));
        match stream {
            Ok(w) => Ok(Self {
                tmp,
                path,
                writer: Some(w),
                committed: false,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.writer.as_mut().expect("open stream");
        w.write_all(bytes).map_err(|source| Error::Io {
            path: self.tmp.clone(),
            action: "cannot write",
            source,
        })
    }

    pub(super) fn finish(mut self) -> Result<PathBuf> {
        let w = self.writer.take().expect("open stream");
        w.finish()
            .map_err(|e| bad(&self.path, format!("PNG encoding: {e}")))?;
        let done = super::atomic::rename_into_place(&self.tmp, &self.path)?;
        self.committed = true;
        Ok(done)
    }
}

impl Drop for PngStream {
    /// Whatever failed (a write, the encoder's finish, the rename), no temporary file
    /// stays behind.
    fn drop(&mut self) {
        if !self.committed {
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
