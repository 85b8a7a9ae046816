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
/// rounded. Every 8-bit output (PNG, Zarr) uses it.
pub fn probability_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}
