//! Image files (feature `image`): grayscale PNG (8/16-bit) and TIFF (8/16-bit integer or
//! 32-bit float, single or multi-page), single files or folders of them.
//!
//! Every reader returns intensities scaled to [0, 1] by the file's bit depth (float TIFF
//! is taken as is), so preprocessing never needs to know where an image came from.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::error::{Error, Result};
use crate::tiling::RowSource;

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

/// One image of a file: a PNG, or one page of a (multi-page) TIFF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub path: PathBuf,
    /// Page index within a TIFF (0 for PNG).
    pub index: usize,
    /// Whether the file holds more than one page.
    pub in_stack: bool,
    /// `file` or `file[page]` for stacks of more than one page.
    pub name: String,
    pub width: usize,
    pub height: usize,
}

/// The images of a file or of every image file of a folder (sorted by name), without
/// decoding pixels.
pub fn list_pages(path: &Path) -> Result<Vec<Page>> {
    if path.is_dir() {
        let mut out = Vec::new();
        for f in list_images(path)? {
            out.extend(file_pages(&f)?);
        }
        return Ok(out);
    }
    file_pages(path)
}

fn file_kind(path: &Path) -> Result<Kind> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Ok(Kind::Png),
        Some("tif" | "tiff") => Ok(Kind::Tiff),
        _ => Err(bad(
            path,
            "unknown image type (expected .png, .tif or .tiff)",
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Png,
    Tiff,
}

/// Widest image the readers accept: tiled inference holds a band of about `window +
/// tile` full rows as floats (at 256 Ki pixels: 640 rows x 1 MB). Heights are not
/// limited: rows stream.
pub const MAX_IMAGE_WIDTH: usize = 1 << 18;

/// Largest interlaced PNG (decoded whole, unlike every other input) in bytes.
const MAX_INTERLACED_PNG_BYTES: usize = 1 << 30;

fn file_pages(path: &Path) -> Result<Vec<Page>> {
    let dims: Vec<(usize, usize)> = match file_kind(path)? {
        Kind::Png => {
            let r = PngRows::open(path)?;
            vec![(r.width, r.height)]
        }
        Kind::Tiff => {
            let mut dec = tiff_decoder(path)?;
            let mut dims = Vec::new();
            loop {
                let (w, h) = dec.dimensions().map_err(tiff_err(path))?;
                dims.push((w as usize, h as usize));
                if !dec.more_images() {
                    break;
                }
                dec.next_image().map_err(tiff_err(path))?;
            }
            dims
        }
    };
    let many = dims.len() > 1;
    dims.into_iter()
        .enumerate()
        .map(|(index, (width, height))| {
            if width == 0 || height == 0 {
                return Err(bad(path, "image has zero width or height"));
            }
            if width > MAX_IMAGE_WIDTH {
                return Err(bad(
                    path,
                    format!(
                        "image width {width} exceeds the {MAX_IMAGE_WIDTH} pixels a row may \
                         have (tiling holds a band of full rows)"
                    ),
                ));
            }
            Ok(Page {
                path: path.to_path_buf(),
                index,
                in_stack: many,
                name: if many {
                    format!("{}[{index}]", file_name(path))
                } else {
                    file_name(path)
                },
                width,
                height,
            })
        })
        .collect()
}

/// A page opened for reading row by row: PNG rows are decoded one at a time, TIFF strips
/// (or rows of tiles) one at a time, so memory does not grow with the image height.
/// Interlaced PNGs are the exception: they are decoded whole on opening.
pub struct PageReader {
    page: Page,
    inner: Inner,
    /// 8, 16 or 32 (float), known once the first row is read.
    bit_depth: u8,
    next: usize,
}

enum Inner {
    Png(Box<PngRows>),
    Tiff(Box<TiffRows>),
}

impl Page {
    /// Open this page for streaming.
    pub fn open(&self) -> Result<PageReader> {
        let inner = match file_kind(&self.path)? {
            Kind::Png => Inner::Png(Box::new(PngRows::open(&self.path)?)),
            Kind::Tiff => Inner::Tiff(Box::new(TiffRows::open(&self.path, self.index)?)),
        };
        Ok(PageReader {
            page: self.clone(),
            inner,
            bit_depth: 0,
            next: 0,
        })
    }

    /// Decode the whole page.
    pub fn read(&self) -> Result<Slice> {
        let mut r = self.open()?;
        let mut pixels = Array2::<f32>::zeros((self.height, self.width));
        for mut row in pixels.rows_mut() {
            r.read_row(row.as_slice_mut().expect("standard layout"))?;
        }
        Ok(Slice {
            name: self.name.clone(),
            pixels,
            bit_depth: r.bit_depth,
        })
    }
}

impl PageReader {
    pub fn page(&self) -> &Page {
        &self.page
    }
}

impl RowSource for PageReader {
    fn height(&self) -> usize {
        self.page.height
    }
    fn width(&self) -> usize {
        self.page.width
    }
    fn read_row(&mut self, row: &mut [f32]) -> Result<()> {
        if self.next >= self.page.height {
            return Err(bad(&self.page.path, "read past the last row"));
        }
        self.bit_depth = match &mut self.inner {
            Inner::Png(p) => p.read_row(row)?,
            Inner::Tiff(t) => t.read_row(row)?,
        };
        self.next += 1;
        Ok(())
    }
}

/// Read a PNG, a (multi-page) TIFF, or every image of a folder (sorted by name), whole.
pub fn read_slices(path: &Path) -> Result<Vec<Slice>> {
    list_pages(path)?.iter().map(Page::read).collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Collapse interleaved samples to one gray channel, scaled to [0, 1] by dividing by
/// `full_scale` (255, 65535, or 1 for float), into `out` (one value per pixel). RGB(A)
/// is accepted only when the colour channels are equal (a grayscale image saved as
/// colour).
fn to_gray<T: Copy + PartialEq + Into<f32>>(
    path: &Path,
    samples: &[T],
    channels: usize,
    what: &str,
    full_scale: f32,
    out: &mut [f32],
) -> Result<()> {
    if !(1..=4).contains(&channels) {
        return Err(bad(
            path,
            format!("{channels} channels; expected one grayscale channel"),
        ));
    }
    for (o, c) in out.iter_mut().zip(samples.chunks_exact(channels)) {
        if channels >= 3 && (c[0] != c[1] || c[0] != c[2]) {
            return Err(bad(
                path,
                format!(
                    "{what} image has {channels} channels with colour; expected one grayscale channel"
                ),
            ));
        }
        *o = c[0].into() / full_scale;
    }
    Ok(())
}

/// Rows of a PNG, decoded one at a time (interlaced files: whole, on opening).
struct PngRows {
    path: PathBuf,
    reader: png::Reader<BufReader<File>>,
    width: usize,
    height: usize,
    channels: usize,
    sixteen: bool,
    raw: Vec<u8>,
    /// The whole decoded image of an interlaced PNG, and the next row to hand out.
    deinterlaced: Option<(Vec<u8>, usize)>,
}

impl PngRows {
    fn open(path: &Path) -> Result<Self> {
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
    fn read_row(&mut self, out: &mut [f32]) -> Result<u8> {
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

fn tiff_err(path: &Path) -> impl Fn(tiff::TiffError) -> Error + '_ {
    move |e| bad(path, format!("not a readable TIFF: {e}"))
}

fn tiff_decoder(path: &Path) -> Result<tiff::decoder::Decoder<BufReader<File>>> {
    Ok(tiff::decoder::Decoder::new(open(path)?)
        .map_err(tiff_err(path))?
        .with_limits(tiff::decoder::Limits::unlimited()))
}

/// Largest strip (or row of tiles) the TIFF reader decodes at once, in pixels (64 Mi:
/// 256 MB as floats; the tiff crate's own decoding limit is 256 MB too).
const MAX_BAND_PIXELS: usize = 64 << 20;

/// Rows of one TIFF page, decoded a strip (or a row of tiles) at a time.
struct TiffRows {
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
    fn open(path: &Path, page: usize) -> Result<Self> {
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

    fn read_row(&mut self, out: &mut [f32]) -> Result<u8> {
        if self.pending.is_empty() {
            self.decode_band()?;
        }
        let row = self.pending.pop_front().expect("decoded band");
        out.copy_from_slice(&row);
        Ok(self.depth)
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

/// A new temporary file beside `path` (renamed into place when complete).
fn create_temp(path: &Path) -> Result<(PathBuf, File)> {
    let tmp = crate::onnx::temp_sibling(path);
    let file = File::create(&tmp).map_err(|source| Error::Io {
        path: tmp.clone(),
        action: "cannot create output",
        source,
    })?;
    Ok((tmp, file))
}

/// A streamed 8-bit PNG (gray or RGB) written to a temporary file, renamed on `finish`.
struct PngStream {
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<png::StreamWriter<'static, BufWriter<File>>>,
    /// Renamed into place: the temporary file is gone.
    committed: bool,
}

impl PngStream {
    fn create(path: PathBuf, width: usize, height: usize, rgb: bool) -> Result<Self> {
        let (tmp, file) = create_temp(&path)?;
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
                committed: false,
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
        let done = crate::onnx::rename_into_place(&self.tmp, &self.path)?;
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

/// Rows of a 32-bit float grayscale TIFF, written strip by strip to a temporary file by
/// a writer thread (which owns the encoder) and renamed into place by `finish`.
struct FloatTiffStream {
    tmp: PathBuf,
    path: PathBuf,
    rows: Option<std::sync::mpsc::SyncSender<Vec<f32>>>,
    writer: Option<std::thread::JoinHandle<Result<()>>>,
    /// Renamed into place: the temporary file is gone.
    committed: bool,
}

/// Rows per TIFF strip (a strip is the unit a reader decodes).
const ROWS_PER_STRIP: usize = 16;

impl FloatTiffStream {
    fn create(path: PathBuf, width: usize, height: usize) -> Result<Self> {
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

    fn write(&mut self, row: &[f32]) -> Result<()> {
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

    fn finish(mut self) -> Result<PathBuf> {
        self.rows = None; // closes the channel: the writer finishes the file
        self.join()?;
        let done = crate::onnx::rename_into_place(&self.tmp, &self.path)?;
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

/// Where `segment-run predict` writes one slice, row by row: the membrane probability
/// (8-bit PNG `<name>.png`, or 32-bit float TIFF `<name>.tif`), optionally a binary mask
/// (`<name>_mask.png`, 255 = membrane) and an overlay (`<name>_overlay.png`). Every file
/// is streamed (PNG row by row, TIFF strip by strip), so memory does not grow with the
/// image, and appears only when complete (temporary name, then rename); a sink dropped
/// before `finish` removes its temporary files.
pub struct ProbabilitySink {
    width: usize,
    height: usize,
    threshold: Option<f32>,
    prob_png: Option<PngStream>,
    float: Option<FloatTiffStream>,
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
        let float = float
            .then(|| FloatTiffStream::create(dir.join(format!("{name}.tif")), width, height))
            .transpose()?;
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
        if let Some(s) = &mut self.float {
            s.write(prob)?;
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
        if let Some(s) = self.float.take() {
            out.push(s.finish()?);
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
