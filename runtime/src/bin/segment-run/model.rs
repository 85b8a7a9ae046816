//! Reading the model a subcommand names: an ONNX file, a bioimage.io package (folder or
//! zip), or the shipped model compiled into the binary.

use std::path::Path;

use anyhow::Result;
use skipseg_runtime::{Segmenter, onnx, package};

/// The shipped model, compiled into the binary.
const EMBEDDED_MODEL: &[u8] = include_bytes!("../../../../models/isbi-small-bce.onnx");
const EMBEDDED_NAME: &str = "models/isbi-small-bce.onnx (embedded)";
/// The embedded model's card (the documentation of its bioimage.io package).
pub const EMBEDDED_CARD: &str = include_str!("../../../../models/isbi-small-bce.md");

/// A model file as read: its graph, its name, and what its bioimage.io package declares
/// (when it came from one).
pub struct ModelFile {
    pub proto: onnx::pb::ModelProto,
    pub name: String,
    pub declared: Option<package::Declared>,
}

/// The model at `path` (an ONNX file, or a bioimage.io package folder or zip), or the
/// shipped one compiled into this binary.
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
        Some(p) => ModelFile {
            proto: onnx::read_model(p)?,
            name: p.display().to_string(),
            declared: None,
        },
        None => ModelFile {
            proto: onnx::decode_model(EMBEDDED_MODEL, EMBEDDED_NAME)?,
            name: EMBEDDED_NAME.to_string(),
            declared: None,
        },
    })
}

/// The engine for the model at `path`; a package's declarations are checked against the
/// network, and its declared size step becomes the engine's window step.
pub fn load_model(
    path: Option<&Path>,
    threads: usize,
    monte_carlo_dropout: bool,
) -> Result<Segmenter> {
    let file = read_model(path)?;
    let options = skipseg_runtime::Options {
        threads,
        monte_carlo_dropout,
        ..Default::default()
    };
    let mut seg = Segmenter::with_options(file.proto, &file.name, &options)?;
    if let Some(declared) = &file.declared {
        // what the package's rdf.yaml declares must be what the network computes
        package::check_package_model(declared, &seg)?;
        let step = declared.tile_multiple(seg.meta().arch.down_factor());
        seg.set_size_step(step);
    }
    Ok(seg)
}
