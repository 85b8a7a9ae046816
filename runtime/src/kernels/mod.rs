//! skipseg's own compute kernels, for the operations where tract's generic ones lose to
//! onnxruntime (see docs/PERFORMANCE.md): safe Rust over `pulp`'s run-time SIMD
//! dispatch. tract still runs the graph; [`crate::engine`] plugs these in as operators.

pub mod conv;
pub mod qconv;
mod winograd;
