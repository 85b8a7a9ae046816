//! Image files (PNG, TIFF) as pages: listing, sizes, and row-by-row reading that
//! dispatches to the format modules.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::png::PngRows;
use super::tiff::{TiffRows, tiff_decoder, tiff_err};
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

pub(super) fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(super) fn open(path: &Path) -> Result<BufReader<File>> {
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

pub(super) fn file_kind(path: &Path) -> Result<Kind> {
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
pub(super) enum Kind {
    Png,
    Tiff,
}

/// Widest image the readers accept: tiled inference holds a band of about `window +
/// tile` full rows as floats (at 256 Ki pixels: 640 rows x 1 MB). Heights are not
/// limited: rows stream.
pub const MAX_IMAGE_WIDTH: usize = 1 << 18;

/// Largest interlaced PNG (decoded whole, unlike every other input) in bytes.
pub(super) const MAX_INTERLACED_PNG_BYTES: usize = 1 << 30;

pub(super) fn file_pages(path: &Path) -> Result<Vec<Page>> {
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

pub(super) enum Inner {
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

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Collapse interleaved samples to one gray channel, scaled to [0, 1] by dividing by
/// `full_scale` (255, 65535, or 1 for float), into `out` (one value per pixel). RGB(A)
/// is accepted only when the colour channels are equal (a grayscale image saved as
/// colour).
pub(super) fn to_gray<T: Copy + PartialEq + Into<f32>>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::write_png_u8;

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
