//! The one module that knows ONNX protobufs (`tract_onnx::pb`): reading, writing,
//! building graphs and the skipseg metadata.
//!
//! The exporter in the training crate and every graph pass use this module; nothing
//! else touches `pb` types directly.

#[cfg(feature = "onnx")]
mod builder;
mod metadata;
#[cfg(feature = "onnx")]
mod proto;
#[cfg(feature = "onnx")]
mod validate;

#[cfg(feature = "onnx")]
pub use builder::{GraphBuilder, OPSET, float, int, ints, string, tensor_attr};
pub use metadata::{
    Averaging, InferenceDefaults, IntensityStats, META_ARCH, META_FORMAT, META_INFERENCE,
    META_PREPROCESSING, MIN_IMAGE_STD, ModelMeta, Normalisation, Preprocessing,
};
#[cfg(feature = "onnx")]
pub use proto::*;
#[cfg(feature = "onnx")]
pub use tract_onnx::pb;
#[cfg(feature = "onnx")]
pub use validate::{Expected, check_arity, check_single_assignment, validate};
