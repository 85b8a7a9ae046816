//! skipseg training: the residual FCN of Drozdzal et al. 2016 ("The Importance of Skip
//! Connections in Biomedical Image Segmentation") in burn, and its export to ONNX.
//!
//! The architecture itself is data: [`skipseg_runtime::arch::ArchSpec`], shared with the
//! runtime, which reads it back from the exported model.

pub mod ablation;
pub mod augment;
pub mod backend;
pub mod cv;
pub mod data;
pub mod export;
pub mod fixtures;
pub mod layers;
pub mod loss;
pub mod model;
pub mod plot;
pub mod presets;
pub mod report;
pub mod synthetic;
pub mod tensor;
pub mod training;

pub use skipseg_runtime::arch::ArchSpec;
