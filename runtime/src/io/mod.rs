//! Files in and out. Every format has its own module; what they share is here.
//!
//! - [`atomic`]: write-then-rename, used by every writer (always built);
//! - `png`, `tiff` (feature `image`): grayscale PNG (8/16-bit) and TIFF (8/16-bit integer
//!   or 32-bit float, single or multi-page), single files or folders of them, read row by
//!   row; label images as uint32 TIFF (`write_label_tiff`, `read_label_tiff`); [`sink`] writes `segment-run predict`'s outputs row by row;
//! - [`zarr`] (feature `zarr`): OME-Zarr images and volumes (Zarr v2 and v3), read and
//!   written chunk by chunk.
//!
//! Every reader returns intensities scaled to [0, 1] by the file's bit depth (float is
//! taken as is), so preprocessing never needs to know where an image came from.

pub mod atomic;
#[cfg(feature = "image")]
mod label_tiff;
#[cfg(feature = "image")]
mod pages;
#[cfg(feature = "image")]
mod png;
#[cfg(feature = "image")]
pub mod sink;
#[cfg(feature = "image")]
mod tiff;
#[cfg(feature = "zarr")]
pub mod zarr;

pub use atomic::write_atomic;
#[cfg(feature = "image")]
pub use label_tiff::{read_label_tiff, write_label_tiff};
#[cfg(feature = "image")]
pub use pages::*;
#[cfg(feature = "image")]
pub use png::{encode_png_rgb, write_png_rgb, write_png_u8};
#[cfg(feature = "image")]
pub use sink::ProbabilitySink;
#[cfg(feature = "image")]
pub use tiff::write_float_tiff;

/// A probability (or an intensity in [0, 1]) as an 8-bit value: clamped, times 255,
/// rounded half to even (numpy's `np.round`, which the onnxruntime pipeline of
/// `bench/ort_pipeline.py` uses); NaN gives 0. Every 8-bit output (PNG, Zarr) uses it.
///
/// The rounding is read off the low mantissa bits of `x + 1.5 * 2^23` (exact for `x` in
/// [0, 255]) so that a loop of it vectorises: `f32::round` was a call to `roundf` per
/// pixel, about a third of the writer thread's time at 2048² (`perf record`).
#[inline]
#[allow(clippy::manual_clamp)] // max/min send NaN to 0, clamp would keep it
pub fn probability_u8(v: f32) -> u8 {
    let x = v.max(0.0).min(1.0) * 255.0;
    (x + 12_582_912.0).to_bits() as u8
}

#[cfg(test)]
mod tests {
    /// Against the definition through std's own rounding, on every 8-bit step, the
    /// exact half-way points between them, their neighbours, values outside [0, 1]
    /// and NaN.
    #[test]
    fn probability_u8_rounds_half_to_even() {
        let definition = |v: f32| -> u8 {
            if v.is_nan() {
                0
            } else {
                (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
            }
        };
        let mut values = vec![
            f32::NAN,
            -1.0,
            -0.0,
            1.0,
            1.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for k in 0..=255 {
            for x in [k as f32, k as f32 + 0.5] {
                let v = x / 255.0;
                values.extend([v, v.next_down(), v.next_up()]);
            }
        }
        for i in 0..=100_000 {
            values.push(i as f32 / 100_000.0);
        }
        let mut halves = 0;
        for v in values {
            assert_eq!(super::probability_u8(v), definition(v), "{v:e}");
            halves += ((v * 255.0).fract() == 0.5) as usize;
        }
        // the ties the two rounding rules disagree on are among them
        assert!(halves > 100, "{halves} exact halves");
    }
}
