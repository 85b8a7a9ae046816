//! Backend selection. The CPU backend is burn's pure-Rust `flex`, with its rayon threads
//! and SIMD switched on (the workspace Cargo.toml names them: burn's `flex` feature alone
//! leaves them off and trains at half the speed);
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
