//! Reading the model a caller names: an ONNX file, an embedded model (`segment-run
//! optimize --embedded`), a bioimage.io package (folder or zip), or, with feature
//! `shipped-model`, the shipped model compiled in. `segment-run`, the Python binding
//! and any other front end load models here, so they all read the same files the same
//! way.

use std::path::Path;

use crate::error::{Error, Result};
use crate::{Segmenter, onnx, package};

/// The shipped model's ONNX bytes, compiled in.
#[cfg(feature = "shipped-model")]
pub const SHIPPED_MODEL: &[u8] = include_bytes!("../../models/isbi-small-bce.onnx");
/// How the shipped model is named in messages.
#[cfg(feature = "shipped-model")]
pub const SHIPPED_NAME: &str = "models/isbi-small-bce.onnx (built in)";
/// The shipped model's card (the documentation of its bioimage.io package).
#[cfg(feature = "shipped-model")]
pub const SHIPPED_CARD: &str = include_str!("../../models/isbi-small-bce.md");

/// A model file as read: its graph, its name, and what its bioimage.io package declares
/// (when it came from one).
pub struct ModelFile {
    pub proto: onnx::pb::ModelProto,
    pub name: String,
    pub declared: Option<package::Declared>,
}

/// The model at `path` (an ONNX file, or a bioimage.io package folder or zip), or the
/// shipped one (`None`; without feature `shipped-model` that is an error).
pub fn read_model(path: Option<&Path>) -> Result<ModelFile> {
    Ok(match path {
        Some(p) if package::is_package(p) => {
            let pkg = package::read_package(p)?;
            ModelFile {
                proto: pkg.model,
                name: pkg.declared.source_name.clone(),
                declared: Some(pkg.declared),
            }
        }
        Some(p) if is_embedded_model(p) => {
            return Err(Error::BadModel {
                source_name: p.display().to_string(),
                reason: "an embedded model (segment-run optimize --embedded): this needs the \
                         ONNX model it was converted from"
                    .into(),
            });
        }
        Some(p) => ModelFile {
            proto: onnx::read_model(p)?,
            name: p.display().to_string(),
            declared: None,
        },
        None => shipped()?,
    })
}

#[cfg(feature = "shipped-model")]
fn shipped() -> Result<ModelFile> {
    Ok(ModelFile {
        proto: onnx::decode_model(SHIPPED_MODEL, SHIPPED_NAME)?,
        name: SHIPPED_NAME.to_string(),
        declared: None,
    })
}

#[cfg(not(feature = "shipped-model"))]
fn shipped() -> Result<ModelFile> {
    Err(Error::BadModel {
        source_name: "(no model given)".into(),
        reason: "this build has no shipped model compiled in (feature `shipped-model`): \
                 name a model file"
            .into(),
    })
}

/// Whether `path` is a file in the embedded model format (its first bytes).
pub fn is_embedded_model(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == crate::embedded::format::MAGIC
}

/// How [`load_model`] prepares the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Threads of the engine's own pool (1: the caller's thread, or the pool a
    /// [`crate::ThreadPool::install`] around the call sets).
    pub threads: usize,
    /// Expose the dropout masks for Monte-Carlo sampling (a model trained with dropout).
    pub monte_carlo_dropout: bool,
    /// skipseg's kernels take every convolution, also where tract's are faster on this
    /// CPU (to compare with the embedded executor, which has no other engine).
    pub every_convolution: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            monte_carlo_dropout: false,
            every_convolution: false,
        }
    }
}

/// The engine for the model at `path` (or the shipped one): an embedded model, an ONNX
/// file, or a bioimage.io package, whose declarations are checked against the network
/// and whose declared size step becomes the engine's window step.
pub fn load_model(path: Option<&Path>, options: &LoadOptions) -> Result<Segmenter> {
    if let Some(p) = path.filter(|p| is_embedded_model(p)) {
        if options.monte_carlo_dropout {
            return Err(Error::BadModel {
                source_name: p.display().to_string(),
                reason: "Monte-Carlo dropout needs the ONNX model (an embedded model is the \
                         deterministic network)"
                    .into(),
            });
        }
        let bytes = std::fs::read(p).map_err(|source| Error::Io {
            path: p.to_path_buf(),
            action: "read",
            source,
        })?;
        return Segmenter::from_embedded(&bytes, &p.display().to_string(), options.threads);
    }
    let file = read_model(path)?;
    let engine = crate::Options {
        threads: options.threads,
        monte_carlo_dropout: options.monte_carlo_dropout,
        fuse_every_convolution: options.every_convolution,
        ..Default::default()
    };
    let mut seg = Segmenter::with_options(file.proto, &file.name, &engine)?;
    if let Some(declared) = &file.declared {
        // what the package's rdf.yaml declares must be what the network computes
        package::check_package_model(declared, &seg)?;
        let step = declared.tile_multiple(seg.meta().arch.down_factor());
        seg.set_size_step(step);
    }
    Ok(seg)
}
