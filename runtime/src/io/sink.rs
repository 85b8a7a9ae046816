//! The shared sink of `segment-run predict` for image files.

use std::path::{Path, PathBuf};

use super::png::PngStream;
use super::tiff::FloatTiffStream;
use crate::error::Result;

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
        let to8 = super::probability_u8;
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
