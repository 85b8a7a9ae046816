//! The runtime's typed errors. Every variant names the file (or source) it is about.

use std::path::PathBuf;

/// Errors of the skipseg runtime library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An image file is unreadable, corrupt or of an unsupported kind.
    #[error("{}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// A Zarr store (or its OME-NGFF metadata) is unreadable, unsupported, or not the
    /// one a resumed run started with.
    #[error("{}: {reason}", path.display())]
    Zarr { path: PathBuf, reason: String },
    /// A bioimage.io model package is unreadable, or declares what the model does not do.
    #[error("{}: {reason}", path.display())]
    Package { path: PathBuf, reason: String },
    /// The bytes are not a decodable ONNX `ModelProto`.
    #[error("{source_name}: not an ONNX model: {reason}")]
    NotOnnx { source_name: String, reason: String },
    /// The file is ONNX, but its graph cannot be run as it stands (a missing or damaged
    /// initializer, NaN weights, a tensor defined twice, another network's input).
    #[error("{source_name}: invalid model: {reason}")]
    BadModel { source_name: String, reason: String },
    /// The ONNX model lacks skipseg metadata, or it is malformed.
    #[error("{source_name}: model metadata: {reason}")]
    Metadata { source_name: String, reason: String },
    /// The input array is not `[1, channels, H, W]`.
    #[error("{source_name}: input must have shape [1, {expected_channels}, H, W], got {shape:?}")]
    InputShape {
        source_name: String,
        shape: Vec<usize>,
        expected_channels: usize,
    },
    /// Spatial size is not a multiple of the model's total down-sampling factor.
    #[error(
        "{source_name}: input size {height}x{width} is not a multiple of the model's \
         down-sampling factor {factor} (pad or tile the image)"
    )]
    NotMultiple {
        source_name: String,
        height: usize,
        width: usize,
        factor: usize,
    },
    /// Tile and halo sizes that cannot make a tiling (a tile smaller than the halo).
    #[error("tiling: {0}")]
    Tiling(String),
    /// An image that cannot be segmented as it is (no finite pixel at all).
    #[error("{name}: {reason}")]
    Input { name: String, reason: String },
    /// The caller asked the work to stop (a progress callback, a cancel button).
    #[error("{name}: cancelled")]
    Cancelled { name: String },
    /// The architecture description is inconsistent.
    #[error("invalid architecture: {0}")]
    Arch(String),
    /// tract refused to load, optimise or run the model.
    #[error("{source_name}: inference engine: {reason}")]
    Engine { source_name: String, reason: String },
}

/// Result alias for the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;
