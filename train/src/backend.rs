//! Backend selection. The CPU backend is burn's pure-Rust `flex` (multi-threaded, SIMD);
//! the `cuda` feature adds burn-cuda for GPU training.

use burn::backend::{Autodiff, Flex};

/// CPU inference backend.
pub type Cpu = Flex;
/// CPU training backend.
pub type CpuTrain = Autodiff<Cpu>;

#[cfg(feature = "cuda")]
/// CUDA inference backend.
pub type Gpu = burn::backend::Cuda;
#[cfg(feature = "cuda")]
/// CUDA training backend.
pub type GpuTrain = Autodiff<Gpu>;
