//! ONNX -> ONNX rewrites run before tract sees a model. Each pass finds its pattern,
//! returns early when it is absent, rewrites, and reports what it changed.

pub mod chain_int8;
pub mod dropout;
pub mod fold_bn;
pub mod fuse_conv;
pub mod quantize;
pub mod resample;
pub mod sigmoid;

pub use chain_int8::{ChainReport, Chaining, chain_quantized_convs};
pub use fold_bn::{FoldReport, fold_batch_norms};
pub use fuse_conv::{FuseReport, fuse_convolutions, fuse_convolutions_where_faster};
pub use quantize::{ActivationRange, QuantizeReport, conv_inputs, quantize_convs};
pub use resample::{ResampleReport, own_resampling};
pub use sigmoid::own_sigmoid;
