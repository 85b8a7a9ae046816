//! Instance labels of image files: `segment-run label` as a library function. Each page
//! (PNG/TIFF, multi-page stacks, folders) is segmented by the network as `predict` does
//! it, or read as a membrane probability map already computed; then labelled
//! ([`crate::labels::label_membranes`]) and written as a uint32 label TIFF and an RGB
//! overlay PNG. Ids are unique across the whole run: page k's ids follow page k-1's, so
//! the slices of a stack can be stacked again without a clash.
//!
//! A page is labelled whole (the watershed and the agglomeration see the whole slice);
//! memory is about 20 bytes a pixel of the largest page.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::engine::pixels::{PixelView, segment_pixels};
use crate::engine::{Inference, Segmenter};
use crate::error::{Error, Result};
use crate::images::output_name;
use crate::io::{self, Page};
use crate::labels::{LabelOptions, label_membranes, overlay_rgb};

/// Where a page's membrane probability comes from.
#[derive(Clone, Copy)]
pub enum Probability<'a> {
    /// The network, run as `segment-run predict` runs it.
    Network {
        segmenter: &'a Segmenter,
        inference: Inference,
    },
    /// The input pages are membrane probability maps (8/16-bit scaled to [0, 1], float as
    /// is), e.g. `segment-run predict`'s outputs.
    Given,
}

/// What one page gave.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelReport {
    pub name: String,
    pub width: usize,
    pub height: usize,
    /// Labels of this page: ids `first_id..first_id + count`.
    pub first_id: u32,
    pub count: u32,
    pub written: Vec<PathBuf>,
}

/// Label every page of `pages` into `output` (created if missing): `<name>_labels.tif`
/// and `<name>_labels.png` per page. `first_id` is the first page's first id (>= 1).
/// Options that [`LabelOptions::check`] refuses are an [`Error::Input`].
/// `on_page` runs after each page is written. Stops at the first error, which names the
/// file; the pages written before it stay.
pub fn label_pages(
    pages: &[Page],
    output: &Path,
    source: Probability<'_>,
    options: &LabelOptions,
    first_id: u32,
    on_page: &mut dyn FnMut(&LabelReport),
) -> Result<Vec<LabelReport>> {
    options.check().map_err(|reason| Error::Input {
        name: "label options".into(),
        reason,
    })?;
    std::fs::create_dir_all(output).map_err(|source| Error::Io {
        path: output.to_path_buf(),
        action: "cannot create output folder",
        source,
    })?;
    let mut next_id = first_id.max(1);
    let mut reports = Vec::with_capacity(pages.len());
    for page in pages {
        let slice = page.read()?;
        let (h, w) = slice.pixels.dim();
        let (probability, background) = match source {
            Probability::Network {
                segmenter,
                inference,
            } => {
                let mut p = Array2::<f32>::zeros((h, w));
                segment_pixels(
                    segmenter,
                    PixelView::F32(slice.pixels.view()),
                    &slice.name,
                    &inference,
                    &mut || {},
                    &|| false,
                    p.view_mut(),
                )?;
                (p, slice.pixels)
            }
            Probability::Given => {
                let cells = slice.pixels.mapv(|v| 1.0 - v);
                (slice.pixels, cells)
            }
        };
        let p = probability.as_standard_layout();
        let p = p.as_slice().expect("standard layout");
        let labelling = label_membranes(p, w, options, next_id);
        let room = u32::MAX - next_id;
        if labelling.count > room {
            return Err(Error::Input {
                name: slice.name,
                reason: "more labels than a uint32 label image can number".into(),
            });
        }
        let stem = output_name(page);
        let tif = output.join(format!("{stem}_labels.tif"));
        let png = output.join(format!("{stem}_labels.png"));
        let labels = Array2::from_shape_vec((h, w), labelling.labels).expect("h x w labels");
        io::write_label_tiff(&tif, &labels)?;
        let bg = background.as_standard_layout();
        let rgb = overlay_rgb(
            bg.as_slice().expect("standard layout"),
            labels.as_slice().expect("standard layout"),
            w,
            0.45,
        );
        io::write_png_rgb(&png, w, h, &rgb)?;
        let report = LabelReport {
            name: slice.name,
            width: w,
            height: h,
            first_id: next_id,
            count: labelling.count,
            written: vec![tif, png],
        };
        next_id += labelling.count;
        on_page(&report);
        reports.push(report);
    }
    Ok(reports)
}
