//! skipseg runtime: dependency-light inference for the residual FCN of Drozdzal et al.
//! 2016, exported to ONNX by `skipseg-train` and executed with tract.
//!
//! The library core takes and returns `ndarray` arrays; it builds without image I/O or
//! command-line dependencies (`default-features = false`) so instrument host software
//! can embed it.

pub mod arch;
#[cfg(feature = "onnx")]
pub mod calibrate;
pub mod embedded;
pub mod engine;
pub mod error;
#[cfg(feature = "ffi")]
pub mod ffi;
#[cfg(feature = "image")]
pub mod images;
pub mod io;
pub mod kernels;
#[cfg(feature = "image")]
pub mod label_images;
pub mod label_tuning;
pub mod labels;
pub mod metrics;
#[cfg(feature = "package")]
pub mod models;
pub mod npy;
pub mod onnx;
#[cfg(feature = "package")]
pub mod package;
#[cfg(feature = "onnx")]
pub mod passes;
pub mod tiling;
#[cfg(feature = "zarr")]
pub mod volume;

pub use arch::ArchSpec;
pub use engine::{
    Averaging, Inference, MonteCarlo, Options, Segmenter, Symmetry, ThreadPool, intensity_stats,
    require_finite_pixels, segment_image, segment_image_with, segment_region, segment_tiled,
};
pub use error::{Error, Result};
pub use onnx::{IntensityStats, ModelMeta, Normalisation, Preprocessing};
pub use tiling::Tiling;
