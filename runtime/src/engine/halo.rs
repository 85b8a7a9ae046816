//! Measuring the halo a model needs: the smallest context at which tiled inference
//! equals running the whole image as one window, within one 8-bit step.
//!
//! The receptive radius bounds the halo from above (beyond it nothing can change), but
//! the network's output depends on far-away pixels only faintly: in practice a much
//! smaller halo already gives the whole-image output to within what an 8-bit map can
//! show. That halo is measured on reference images (it is a property of the trained
//! weights, not of the architecture alone) and recorded in the model's metadata
//! ([`crate::onnx::InferenceDefaults::halo`]), where default tiling takes it from.

use ndarray::{Array2, ArrayView2};

use super::{Inference, Segmenter, segment_image_with};
use crate::error::{Error, Result};
use crate::tiling::{Blend, Tiling, round_up};

/// Largest difference from the whole image a measured halo allows: one 8-bit step.
pub const HALO_TOLERANCE: f32 = 1.0 / 255.0;
/// [`HALO_TOLERANCE`] as people read it.
pub const HALO_TOLERANCE_TEXT: &str = "1/255";

/// The core size tiles are cut to while measuring: small, so that the reference images
/// hold many seams.
pub const MEASURE_TILE_PX: usize = 128;

/// The difference tiling with one halo makes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HaloTrial {
    pub halo: usize,
    /// Largest absolute difference from the whole image, over every reference image.
    pub max_abs: f32,
    /// Share of pixels within [`HALO_TOLERANCE`] of the whole image.
    pub within: f64,
}

/// The outcome of [`measure_halo`].
#[derive(Debug, Clone, PartialEq)]
pub struct HaloMeasurement {
    /// The smallest halo tried with `max_abs <= HALO_TOLERANCE` (the receptive radius,
    /// rounded up to the down-sampling factor, if none was).
    pub halo: usize,
    /// Every halo tried, smallest first.
    pub trials: Vec<HaloTrial>,
    /// The receptive radius (an upper bound that needs no measurement).
    pub receptive_radius: usize,
}

/// The whole image as one window: every pixel sees all the context the image has.
pub fn whole_image(seg: &Segmenter, image: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    let (h, w) = image.dim();
    segment_image_with(
        seg,
        image,
        &Inference {
            tiling: Tiling {
                tile: Some(h.max(w)),
                halo: Some(0),
            },
            ..Inference::one_pass()
        },
    )
}

/// Measure the smallest halo (a multiple of the down-sampling factor) at which cores of
/// [`MEASURE_TILE_PX`] tiled over each of `references` equal the whole image within
/// [`HALO_TOLERANCE`] everywhere (one pass, crop blending). References must be larger
/// than a window (`MEASURE_TILE_PX + 2 x halo`) for a halo to be tested on them at all:
/// smaller ones are one window and equal the whole image whatever the halo.
pub fn measure_halo(seg: &Segmenter, references: &[Array2<f32>]) -> Result<HaloMeasurement> {
    let step = seg.size_step();
    let radius = seg.meta().arch.plan().receptive_radius();
    let limit = round_up(radius, step);
    let tile = round_up(MEASURE_TILE_PX, step);
    if references.is_empty() {
        return Err(Error::Tiling(
            "no reference image to measure the halo on".into(),
        ));
    }
    let wholes = references
        .iter()
        .map(|r| whole_image(seg, r.view()))
        .collect::<Result<Vec<_>>>()?;
    let mut trials = Vec::new();
    let mut halo = step;
    while halo < limit {
        let window = round_up(tile.max(halo), step) + 2 * halo;
        let mut max_abs = 0.0f32;
        let (mut close, mut pixels, mut tested) = (0u64, 0u64, false);
        for (image, whole) in references.iter().zip(&wholes) {
            let (h, w) = image.dim();
            if round_up(h, step) <= window && round_up(w, step) <= window {
                continue;
            }
            tested = true;
            let tiled = segment_image_with(
                seg,
                image.view(),
                &Inference {
                    tiling: Tiling {
                        tile: Some(tile.max(halo)),
                        halo: Some(halo),
                    },
                    blend: Blend::Crop,
                    ..Inference::one_pass()
                },
            )?;
            for (a, b) in tiled.iter().zip(whole.iter()) {
                let d = (a - b).abs();
                max_abs = max_abs.max(d);
                close += u64::from(d <= HALO_TOLERANCE);
            }
            pixels += tiled.len() as u64;
        }
        if !tested {
            return Err(Error::Tiling(format!(
                "the reference images are too small to measure a halo of {halo} px (windows \
                 of {window} px cover them whole): give images larger than {window} px"
            )));
        }
        trials.push(HaloTrial {
            halo,
            max_abs,
            within: close as f64 / pixels as f64,
        });
        if max_abs <= HALO_TOLERANCE {
            return Ok(HaloMeasurement {
                halo,
                trials,
                receptive_radius: radius,
            });
        }
        halo += step;
    }
    Ok(HaloMeasurement {
        halo: limit,
        trials,
        receptive_radius: radius,
    })
}

/// Measure the halo of the model in `proto` on `references` ([`measure_halo`], with
/// `threads` engine threads) and record it in `proto`'s metadata as its default halo.
pub fn record_halo(
    proto: &mut crate::onnx::pb::ModelProto,
    source_name: &str,
    references: &[Array2<f32>],
    threads: usize,
) -> Result<HaloMeasurement> {
    let seg = Segmenter::with_options(
        proto.clone(),
        source_name,
        &super::Options {
            threads,
            ..Default::default()
        },
    )?;
    let m = measure_halo(&seg, references)?;
    let mut meta = crate::onnx::ModelMeta::from_model(proto, source_name)?;
    meta.inference.halo = Some(m.halo);
    meta.write_into(proto);
    Ok(m)
}
