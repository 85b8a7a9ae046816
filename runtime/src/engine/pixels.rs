//! Images held in memory by a caller (a numpy array, a buffer of an instrument's
//! camera): 8-bit, 16-bit or float pixels with any strides, segmented exactly as
//! `segment-run predict` segments an image file with the same pixels.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::error::{Error, Result};
use crate::tiling::RowSource;

use super::{Inference, Segmenter, intensity_stats, require_finite_pixels, segment_tiled};

/// A 2-D single-channel image in memory, `[height, width]`, any strides. Intensities are
/// scaled as image files are read: 8-bit by 1/255, 16-bit by 1/65535, float as is (NaN
/// and infinities are missing pixels).
#[derive(Debug, Clone, Copy)]
pub enum PixelView<'a> {
    U8(ArrayView2<'a, u8>),
    U16(ArrayView2<'a, u16>),
    F32(ArrayView2<'a, f32>),
}

impl PixelView<'_> {
    /// `(height, width)`.
    pub fn dim(&self) -> (usize, usize) {
        match self {
            PixelView::U8(a) => a.dim(),
            PixelView::U16(a) => a.dim(),
            PixelView::F32(a) => a.dim(),
        }
    }
}

/// A [`PixelView`] as a [`RowSource`].
#[derive(Debug, Clone)]
pub struct PixelRows<'a> {
    pixels: PixelView<'a>,
    next: usize,
}

impl<'a> PixelRows<'a> {
    pub fn new(pixels: PixelView<'a>) -> Self {
        Self { pixels, next: 0 }
    }
}

impl RowSource for PixelRows<'_> {
    fn height(&self) -> usize {
        self.pixels.dim().0
    }

    fn width(&self) -> usize {
        self.pixels.dim().1
    }

    fn read_row(&mut self, row: &mut [f32]) -> Result<()> {
        let y = self.next;
        self.next += 1;
        match self.pixels {
            PixelView::U8(a) => {
                for (o, &v) in row.iter_mut().zip(a.row(y)) {
                    *o = f32::from(v) / 255.0;
                }
            }
            PixelView::U16(a) => {
                for (o, &v) in row.iter_mut().zip(a.row(y)) {
                    *o = f32::from(v) / 65535.0;
                }
            }
            PixelView::F32(a) => {
                for (o, &v) in row.iter_mut().zip(a.row(y)) {
                    *o = v;
                }
            }
        }
        Ok(())
    }
}

/// Segment an in-memory image into `out` (same size): the image's statistics (a
/// refusal, naming `name`, when no pixel is finite), then tiled inference as `how`
/// says, normalised as the model's metadata says: what `segment-run predict` computes
/// for an image file with these pixels and options. `on_tile` runs after each tile;
/// `cancelled` is asked after each finished row, and a `true` stops the work with
/// [`Error::Cancelled`].
pub fn segment_pixels(
    seg: &Segmenter,
    pixels: PixelView<'_>,
    name: &str,
    how: &Inference,
    on_tile: &mut dyn FnMut(),
    cancelled: &dyn Fn() -> bool,
    mut out: ArrayViewMut2<'_, f32>,
) -> Result<()> {
    let (h, w) = pixels.dim();
    if h == 0 || w == 0 {
        return Err(Error::Input {
            name: name.to_string(),
            reason: format!("an image of {w}x{h} pixels"),
        });
    }
    if out.dim() != (h, w) {
        return Err(Error::Input {
            name: name.to_string(),
            reason: format!(
                "the output is {:?}, the image {:?}: they must be the same size",
                out.dim(),
                (h, w)
            ),
        });
    }
    let stats = intensity_stats(&mut PixelRows::new(pixels))?;
    require_finite_pixels(&stats, name)?;
    segment_tiled(
        seg,
        &mut PixelRows::new(pixels),
        seg.meta().preprocessing.for_image(&stats),
        how,
        on_tile,
        &mut |y, _, row| {
            if cancelled() {
                return Err(Error::Cancelled {
                    name: name.to_string(),
                });
            }
            out.row_mut(y).assign(&ndarray::ArrayView1::from(&row));
            Ok(())
        },
    )
}
