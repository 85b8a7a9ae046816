//! Image files (feature `image`): grayscale PNG (8/16-bit) and TIFF (8/16-bit integer or
//! 32-bit float, single or multi-page), single files or folders of them.
//!
//! Every reader returns intensities scaled to [0, 1] by the file's bit depth (float TIFF
//! is taken as is), so preprocessing never needs to know where an image came from.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::error::{Error, Result};

/// One grayscale slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// `file` or `file[page]` for stacks.
    pub name: String,
    /// Intensities in [0, 1] (float TIFF: raw values), `[height, width]`.
    pub pixels: Array2<f32>,
    /// 8, 16 or 32 (float).
    pub bit_depth: u8,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            action: "cannot open image",
            source,
        })
}

/// Is this a file name the readers handle?
pub fn is_image_file(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "tif" | "tiff")
    )
}

/// Image files of a folder, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        action: "cannot list folder",
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_image_file(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(bad(dir, "folder holds no .png, .tif or .tiff file"));
    }
    Ok(files)
}

/// Read a PNG, a (multi-page) TIFF, or every image of a folder (sorted by name).
pub fn read_slices(path: &Path) -> Result<Vec<Slice>> {
    if path.is_dir() {
        let mut out = Vec::new();
        for f in list_images(path)? {
            out.extend(read_file(&f)?);
        }
        return Ok(out);
    }
    read_file(path)
}

fn read_file(path: &Path) -> Result<Vec<Slice>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let slices = match ext.as_deref() {
        Some("png") => vec![read_png(path)?],
        Some("tif" | "tiff") => read_tiff(path)?,
        _ => {
            return Err(bad(
                path,
                "unknown image type (expected .png, .tif or .tiff)",
            ));
        }
    };
    for s in &slices {
        if s.pixels.is_empty() {
            return Err(bad(path, "image has zero width or height"));
        }
    }
    Ok(slices)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Collapse interleaved samples to one gray channel; RGB(A) is accepted only when the
/// colour channels are equal (a grayscale image saved as colour).
fn to_gray<T: Copy + PartialEq>(
    path: &Path,
    samples: Vec<T>,
    channels: usize,
    what: &str,
) -> Result<Vec<T>> {
    match channels {
        1 => Ok(samples),
        2 => Ok(samples.chunks_exact(2).map(|c| c[0]).collect()),
        3 | 4 => {
            let mut out = Vec::with_capacity(samples.len() / channels);
            for c in samples.chunks_exact(channels) {
                if c[0] != c[1] || c[0] != c[2] {
                    return Err(bad(
                        path,
                        format!(
                            "{what} image has {channels} channels with colour; expected one grayscale channel"
                        ),
                    ));
                }
                out.push(c[0]);
            }
            Ok(out)
        }
        n => Err(bad(
            path,
            format!("{n} channels; expected one grayscale channel"),
        )),
    }
}

fn read_png(path: &Path) -> Result<Slice> {
    let mut decoder = png::Decoder::new(open(path)?);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder
        .read_info()
        .map_err(|e| bad(path, format!("not a readable PNG: {e}")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(path, "PNG too large"))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(path, format!("corrupt PNG: {e}")))?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let (values, depth): (Vec<f32>, u8) = match info.bit_depth {
        png::BitDepth::Sixteen => {
            let s: Vec<u16> = buf
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            (
                to_gray(path, s, channels, "PNG")?
                    .into_iter()
                    .map(|v| v as f32 / 65535.0)
                    .collect(),
                16,
            )
        }
        _ => (
            to_gray(path, buf, channels, "PNG")?
                .into_iter()
                .map(|v| v as f32 / 255.0)
                .collect(),
            8,
        ),
    };
    let pixels =
        Array2::from_shape_vec((h, w), values).map_err(|_| bad(path, "PNG size mismatch"))?;
    Ok(Slice {
        name: file_name(path),
        pixels,
        bit_depth: depth,
    })
}

fn read_tiff(path: &Path) -> Result<Vec<Slice>> {
    use tiff::decoder::{Decoder, DecodingResult};
    let terr = |e: tiff::TiffError| bad(path, format!("not a readable TIFF: {e}"));
    let mut dec = Decoder::new(open(path)?)
        .map_err(terr)?
        .with_limits(tiff::decoder::Limits::unlimited());
    let mut out = Vec::new();
    loop {
        let (w, h) = dec.dimensions().map_err(terr)?;
        let channels = match dec.colortype().map_err(terr)? {
            tiff::ColorType::Gray(_) => 1,
            tiff::ColorType::GrayA(_) => 2,
            tiff::ColorType::RGB(_) => 3,
            tiff::ColorType::RGBA(_) => 4,
            other => return Err(bad(path, format!("unsupported TIFF colour type {other:?}"))),
        };
        let (values, depth): (Vec<f32>, u8) = match dec.read_image().map_err(terr)? {
            DecodingResult::U8(v) => (
                to_gray(path, v, channels, "TIFF")?
                    .into_iter()
                    .map(|v| v as f32 / 255.0)
                    .collect(),
                8,
            ),
            DecodingResult::U16(v) => (
                to_gray(path, v, channels, "TIFF")?
                    .into_iter()
                    .map(|v| v as f32 / 65535.0)
                    .collect(),
                16,
            ),
            DecodingResult::F32(v) => (to_gray(path, v, channels, "TIFF")?, 32),
            _ => {
                return Err(bad(
                    path,
                    "unsupported TIFF sample format (expected 8/16-bit integer or 32-bit float)",
                ));
            }
        };
        let pixels = Array2::from_shape_vec((h as usize, w as usize), values)
            .map_err(|_| bad(path, "TIFF page size mismatch"))?;
        out.push(Slice {
            name: format!("{}[{}]", file_name(path), out.len()),
            pixels,
            bit_depth: depth,
        });
        if !dec.more_images() {
            break;
        }
        dec.next_image().map_err(terr)?;
    }
    if out.len() == 1 {
        out[0].name = file_name(path);
    }
    Ok(out)
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
    crate::onnx::write_atomic(path, &bytes)
}

/// Write an 8-bit RGB PNG atomically; `rgb` is `[height, width, 3]` flattened row-major.
pub fn write_png_rgb(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
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
    crate::onnx::write_atomic(path, &bytes)
}

/// A streamed 8-bit PNG (gray or RGB) written to a temporary file, renamed on `finish`.
struct PngStream {
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<png::StreamWriter<'static, BufWriter<File>>>,
}

impl PngStream {
    fn create(path: PathBuf, width: usize, height: usize, rgb: bool) -> Result<Self> {
        let tmp = crate::onnx::temp_sibling(&path);
        let file = File::create(&tmp).map_err(|source| Error::Io {
            path: tmp.clone(),
            action: "cannot create output",
            source,
        })?;
        let mut enc = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        enc.set_color(if rgb {
            png::ColorType::Rgb
        } else {
            png::ColorType::Grayscale
        });
        enc.set_depth(png::BitDepth::Eight);
        let stream = enc
            .write_header()
            .and_then(|w| w.into_stream_writer())
            .map_err(|e| bad(&path, format!("PNG encoding: {e}")));
        match stream {
            Ok(w) => Ok(Self {
                tmp,
                path,
                writer: Some(w),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.writer.as_mut().expect("open stream");
        w.write_all(bytes).map_err(|source| Error::Io {
            path: self.tmp.clone(),
            action: "cannot write",
            source,
        })
    }

    fn finish(mut self) -> Result<PathBuf> {
        let w = self.writer.take().expect("open stream");
        w.finish()
            .map_err(|e| bad(&self.path, format!("PNG encoding: {e}")))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            action: "cannot rename into place",
            source,
        })?;
        Ok(self.path.clone())
    }
}

impl Drop for PngStream {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Where `segment-run predict` writes one slice, row by row: the membrane probability
/// (8-bit PNG `<name>.png`, or 32-bit float TIFF `<name>.tif`), optionally a binary mask
/// (`<name>_mask.png`, 255 = membrane) and an overlay (`<name>_overlay.png`). PNGs are
/// streamed; the float TIFF is buffered and written at `finish`. Every file appears only
/// when complete (temporary name, then rename).
pub struct ProbabilitySink {
    width: usize,
    height: usize,
    threshold: Option<f32>,
    prob_png: Option<PngStream>,
    float: Option<(PathBuf, Vec<f32>)>,
    mask: Option<PngStream>,
    overlay: Option<PngStream>,
    rows: usize,
}

impl ProbabilitySink {
    pub fn create(
        dir: &Path,
        name: &str,
        width: usize,
        height: usize,
        float: bool,
        threshold: Option<f32>,
        overlay: bool,
    ) -> Result<Self> {
        let prob_png = (!float)
            .then(|| PngStream::create(dir.join(format!("{name}.png")), width, height, false))
            .transpose()?;
        let float = float.then(|| {
            (
                dir.join(format!("{name}.tif")),
                Vec::with_capacity(width * height),
            )
        });
        let mask = threshold
            .map(|_| PngStream::create(dir.join(format!("{name}_mask.png")), width, height, false))
            .transpose()?;
        let overlay = overlay
            .then(|| {
                PngStream::create(dir.join(format!("{name}_overlay.png")), width, height, true)
            })
            .transpose()?;
        Ok(Self {
            width,
            height,
            threshold,
            prob_png,
            float,
            mask,
            overlay,
            rows: 0,
        })
    }

    /// Write the next row: `image` intensities in [0, 1] and membrane probabilities.
    pub fn write_row(&mut self, image: &[f32], prob: &[f32]) -> Result<()> {
        assert_eq!(prob.len(), self.width, "row width");
        let to8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        if let Some(s) = &mut self.prob_png {
            let bytes: Vec<u8> = prob.iter().map(|&p| to8(p)).collect();
            s.write(&bytes)?;
        }
        if let Some((_, buf)) = &mut self.float {
            buf.extend_from_slice(prob);
        }
        let membrane = |p: f32| self.threshold.map(|t| p > t);
        if let Some(s) = &mut self.mask {
            let bytes: Vec<u8> = prob
                .iter()
                .map(|&p| if membrane(p) == Some(true) { 255 } else { 0 })
                .collect();
            s.write(&bytes)?;
        }
        if let Some(s) = &mut self.overlay {
            let mut bytes = Vec::with_capacity(3 * self.width);
            for (x, &p) in prob.iter().enumerate() {
                let g = to8(image.get(x).copied().unwrap_or(0.0));
                // red where membrane: the mask if thresholded, else the probability
                let a = match membrane(p) {
                    Some(true) => 0.6,
                    Some(false) => 0.0,
                    None => 0.6 * p.clamp(0.0, 1.0),
                };
                let mix = |c: f32| (g as f32 * (1.0 - a) + c * a).round() as u8;
                bytes.extend_from_slice(&[mix(255.0), mix(0.0), mix(0.0)]);
            }
            s.write(&bytes)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Close every file and move it into place; returns the paths written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        assert_eq!(self.rows, self.height, "not every row was written");
        let mut out = Vec::new();
        if let Some(s) = self.prob_png.take() {
            out.push(s.finish()?);
        }
        if let Some((path, buf)) = self.float.take() {
            let mut bytes = Vec::new();
            {
                let mut enc = tiff::encoder::TiffEncoder::new(std::io::Cursor::new(&mut bytes))
                    .map_err(|e| bad(&path, format!("TIFF encoding: {e}")))?;
                enc.write_image::<tiff::encoder::colortype::Gray32Float>(
                    self.width as u32,
                    self.height as u32,
                    &buf,
                )
                .map_err(|e| bad(&path, format!("TIFF encoding: {e}")))?;
            }
            crate::onnx::write_atomic(&path, &bytes)?;
            out.push(path);
        }
        if let Some(s) = self.mask.take() {
            out.push(s.finish()?);
        }
        if let Some(s) = self.overlay.take() {
            out.push(s.finish()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_roundtrip_and_scaling() {
        let dir = std::env::temp_dir().join(format!("skipseg-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("a.png");
        let px = Array2::from_shape_fn((3, 5), |(y, x)| (y * 50 + x * 10) as u8);
        write_png_u8(&path, &px).expect("write");
        let s = read_slices(&path).expect("read");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].pixels.dim(), (3, 5));
        assert_eq!(s[0].pixels[[2, 4]], 140.0 / 255.0);
        assert_eq!(s[0].bit_depth, 8);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn corrupt_and_unknown_files_name_the_path() {
        let dir = std::env::temp_dir().join(format!("skipseg-io-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = dir.join("broken.png");
        std::fs::write(&p, b"\x89PNG\r\n\x1a\nnot really").expect("write");
        let e = read_slices(&p).expect_err("corrupt");
        assert!(e.to_string().contains("broken.png"), "{e}");
        let q = dir.join("notes.txt");
        std::fs::write(&q, b"hello").expect("write");
        assert!(read_slices(&q).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
