//! TIFF: 8/16-bit integer or 32-bit float pages (single or multi-page, strips or tiles)
//! read a strip or a row of tiles at a time, and float probability maps written strip by
//! strip.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use super::atomic::create_temp;
use super::pages::{bad, open, to_gray};
use crate::error::{Error, Result};

pub(super) fn tiff_err(path: &Path) -> impl Fn(tiff::TiffError) -> Error + '_ {
    move |e| bad(path, format!("not a readable TIFF: {e}"))
}

pub(super) fn tiff_decoder(path: &Path) -> Result<tiff::decoder::Decoder<BufReader<File>>> {
    Ok(tiff::decoder::Decoder::new(open(path)?)
        .map_err(tiff_err(path))?
        .with_limits(tiff::decoder::Limits::unlimited()))
}

/// Largest strip (or row of tiles) the TIFF reader decodes at once, in pixels (64 Mi:
/// 256 MB as floats; the tiff crate's own decoding limit is 256 MB too).
pub(super) const MAX_BAND_PIXELS: usize = 64 << 20;

/// Rows of one TIFF page, decoded a strip (or a row of tiles) at a time.
pub(super) struct TiffRows {
    path: PathBuf,
    dec: tiff::decoder::Decoder<BufReader<File>>,
    width: usize,
    height: usize,
    channels: usize,
    tiled: bool,
    /// Chunk (strip or tile) size.
    chunk_w: usize,
    chunk_h: usize,
    /// Decoded rows not yet handed out, and the next band of chunks to decode.
    pending: VecDeque<Vec<f32>>,
    next_band: usize,
    depth: u8,
}

impl TiffRows {
    pub(super) fn open(path: &Path, page: usize) -> Result<Self> {
        let terr = tiff_err(path);
        let mut dec = tiff_decoder(path)?;
        dec.seek_to_image(page).map_err(&terr)?;
        let (w, h) = dec.dimensions().map_err(&terr)?;
        let (channels, bits) = match dec.colortype().map_err(&terr)? {
            tiff::ColorType::Gray(b) => (1, b),
            tiff::ColorType::GrayA(b) => (2, b),
            tiff::ColorType::RGB(b) => (3, b),
            tiff::ColorType::RGBA(b) => (4, b),
            other => return Err(bad(path, format!("unsupported TIFF colour type {other:?}"))),
        };
        if !matches!(bits, 8 | 16 | 32) {
            return Err(bad(
                path,
                format!("unsupported TIFF bit depth {bits} (expected 8, 16 or 32-bit float)"),
            ));
        }
        let planar = dec
            .find_tag_unsigned::<u16>(tiff::tags::Tag::PlanarConfiguration)
            .map_err(&terr)?
            == Some(2);
        if planar && channels > 1 {
            return Err(bad(
                path,
                "planar multi-channel TIFF; expected one grayscale channel",
            ));
        }
        let tiled = dec.get_chunk_type() == tiff::decoder::ChunkType::Tile;
        let (chunk_w, chunk_h) = dec.chunk_dimensions();
        Ok(Self {
            path: path.to_path_buf(),
            dec,
            width: w as usize,
            height: h as usize,
            channels,
            tiled,
            chunk_w: chunk_w.max(1) as usize,
            chunk_h: chunk_h.max(1) as usize,
            pending: VecDeque::new(),
            next_band: 0,
            depth: 0,
        })
    }

    /// Decode one chunk into gray values in [0, 1] (float: as stored); returns them and
    /// the bit depth.
    fn chunk(&mut self, index: usize) -> Result<(Vec<f32>, u8)> {
        use tiff::decoder::DecodingResult;
        let path = self.path.clone();
        let result = self.dec.read_chunk(index as u32).map_err(tiff_err(&path))?;
        let c = self.channels;
        let gray = |samples: usize| vec![0.0f32; samples / c];
        Ok(match result {
            DecodingResult::U8(v) => {
                let mut g = gray(v.len());
                to_gray(&path, &v, c, "TIFF", 255.0, &mut g)?;
                (g, 8)
            }
            DecodingResult::U16(v) => {
                let mut g = gray(v.len());
                to_gray(&path, &v, c, "TIFF", 65535.0, &mut g)?;
                (g, 16)
            }
            DecodingResult::F32(v) => {
                let mut g = gray(v.len());
                to_gray(&path, &v, c, "TIFF", 1.0, &mut g)?;
                (g, 32)
            }
            _ => {
                return Err(bad(
                    &path,
                    "unsupported TIFF sample format (expected 8/16-bit integer or 32-bit float)",
                ));
            }
        })
    }

    /// Decode the next band of chunks (a strip, or a row of tiles) into `pending`.
    fn decode_band(&mut self) -> Result<()> {
        let band = self.next_band;
        let y0 = band * self.chunk_h;
        if y0 >= self.height {
            return Err(bad(
                &self.path,
                "corrupt TIFF: fewer rows than its header says",
            ));
        }
        let rows = self.chunk_h.min(self.height - y0);
        // a band is held decoded: refuse strips no streaming reader should hold (a tiny
        // file may declare 100000 x 100000 pixels in one strip)
        if rows.saturating_mul(self.width) > MAX_BAND_PIXELS {
            return Err(bad(
                &self.path,
                format!(
                    "TIFF strips of {rows} rows x {} pixels are larger than the {} Mpixels a \
                     band may hold (re-save with smaller strips or tiles)",
                    self.width,
                    MAX_BAND_PIXELS >> 20
                ),
            ));
        }
        if self.tiled {
            let mut out = vec![vec![0.0f32; self.width]; rows];
            let across = self.width.div_ceil(self.chunk_w);
            for i in 0..across {
                let x0 = i * self.chunk_w;
                let cw = self.chunk_w.min(self.width - x0);
                let (data, depth) = self.chunk(band * across + i)?;
                self.depth = depth;
                if data.len() < cw * rows {
                    return Err(bad(&self.path, "corrupt TIFF: short tile"));
                }
                // the decoder returns the tile without its padding: cw x rows
                for (r, out_row) in out.iter_mut().enumerate() {
                    out_row[x0..x0 + cw].copy_from_slice(&data[r * cw..(r + 1) * cw]);
                }
            }
            self.pending.extend(out);
        } else {
            let (data, depth) = self.chunk(band)?;
            self.depth = depth;
            if data.len() < self.width * rows {
                return Err(bad(&self.path, "corrupt TIFF: short strip"));
            }
            self.pending.extend(
                data.chunks_exact(self.width)
                    .take(rows)
                    .map(<[f32]>::to_vec),
            );
        }
        self.next_band += 1;
        Ok(())
    }

    pub(super) fn read_row(&mut self, out: &mut [f32]) -> Result<u8> {
        if self.pending.is_empty() {
            self.decode_band()?;
        }
        let row = self.pending.pop_front().expect("decoded band");
        out.copy_from_slice(&row);
        Ok(self.depth)
    }
}

/// Rows of a 32-bit float grayscale TIFF, written strip by strip to a temporary file by
/// a writer thread (which owns the encoder) and renamed into place by `finish`.
pub(super) struct FloatTiffStream {
    tmp: PathBuf,
    path: PathBuf,
    rows: Option<std::sync::mpsc::SyncSender<Vec<f32>>>,
    writer: Option<std::thread::JoinHandle<Result<()>>>,
    /// Renamed into place: the temporary file is gone.
    committed: bool,
}

/// Rows per TIFF strip (a strip is the unit a reader decodes).
pub(super) const ROWS_PER_STRIP: usize = 16;

impl FloatTiffStream {
    pub(super) fn create(path: PathBuf, width: usize, height: usize) -> Result<Self> {
        let (tmp, file) = create_temp(&path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<f32>>(2 * ROWS_PER_STRIP);
        let err_path = path.clone();
        let writer = std::thread::spawn(move || -> Result<()> {
            use tiff::encoder::{TiffEncoder, colortype::Gray32Float};
            let enc_err = |e: tiff::TiffError| bad(&err_path, format!("TIFF encoding: {e}"));
            let mut enc = TiffEncoder::new(BufWriter::new(file)).map_err(enc_err)?;
            let mut image = enc
                .new_image::<Gray32Float>(width as u32, height as u32)
                .map_err(enc_err)?;
            image
                .rows_per_strip(ROWS_PER_STRIP as u32)
                .map_err(enc_err)?;
            let mut strip = Vec::with_capacity(width * ROWS_PER_STRIP);
            let mut written = 0usize;
            for row in rx {
                strip.extend_from_slice(&row);
                written += 1;
                if strip.len() == width * ROWS_PER_STRIP || written == height {
                    image.write_strip(&strip).map_err(enc_err)?;
                    strip.clear();
                }
            }
            if written != height {
                return Err(bad(&err_path, "TIFF encoding: not every row was written"));
            }
            image.finish().map_err(enc_err)
        });
        Ok(Self {
            tmp,
            path,
            rows: Some(tx),
            writer: Some(writer),
            committed: false,
        })
    }

    pub(super) fn write(&mut self, row: &[f32]) -> Result<()> {
        let sent = self.rows.as_ref().map(|tx| tx.send(row.to_vec()).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // the writer stopped: its error says why
        self.rows = None;
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| bad(&self.path, "TIFF encoding: the writer stopped early")))
    }

    fn join(&mut self) -> Result<()> {
        match self.writer.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(bad(&self.path, "TIFF encoding: the writer panicked"))),
            None => Ok(()),
        }
    }

    pub(super) fn finish(mut self) -> Result<PathBuf> {
        self.rows = None; // closes the channel: the writer finishes the file
        self.join()?;
        let done = super::atomic::rename_into_place(&self.tmp, &self.path)?;
        self.committed = true;
        Ok(done)
    }
}

impl Drop for FloatTiffStream {
    /// Whatever failed (the writer thread, the rename), no temporary file stays behind.
    fn drop(&mut self) {
        if !self.committed {
            self.rows = None;
            let _ = self.join();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write `pixels` as a 32-bit float TIFF (temporary file, then renamed into place).
pub fn write_float_tiff(path: &Path, pixels: &ndarray::Array2<f32>) -> Result<()> {
    let (height, width) = pixels.dim();
    let mut stream = FloatTiffStream::create(path.to_path_buf(), width, height)?;
    for row in pixels.as_standard_layout().rows() {
        stream.write(row.as_slice().expect("a row of a standard-layout array"))?;
    }
    stream.finish().map(|_| ())
}
