//! Reading the model a subcommand names: an ONNX file, a bioimage.io package (folder or
//! zip), or the shipped model compiled into the binary.

use std::path::Path;

use anyhow::{Context, Result};
use skipseg_runtime::{Segmenter, onnx, package};

/// The shipped model, compiled into the binary.
const BUILT_IN_MODEL: &[u8] = include_bytes!("../../../../models/isbi-small-bce.onnx");
const BUILT_IN_NAME: &str = "models/isbi-small-bce.onnx (built in)";
/// The embedded model's card (the documentation of its bioimage.io package).
pub const BUILT_IN_CARD: &str = include_str!("../../../../models/isbi-small-bce.md");

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
        Some(p) if is_embedded_model(p) => anyhow::bail!(
            "{}: an embedded model (segment-run optimize --embedded): this command needs the \
             ONNX model it was converted from",
            p.display()
        ),
        Some(p) => ModelFile {
            proto: onnx::read_model(p)?,
            name: p.display().to_string(),
            declared: None,
        },
        None => ModelFile {
            proto: onnx::decode_model(BUILT_IN_MODEL, BUILT_IN_NAME)?,
            name: BUILT_IN_NAME.to_string(),
            declared: None,
        },
    })
}

/// Whether `path` is a file in the embedded model format (its first bytes).
pub fn is_embedded_model(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == skipseg_runtime::embedded::format::MAGIC
}

/// The engine for the model at `path` (an embedded model too); a package's declarations are checked against the
/// network, and its declared size step becomes the engine's window step.
/// `every_convolution`: skipseg's kernels take every convolution, also where tract's are
/// faster on this CPU (to compare with the embedded executor, which has no other engine).
pub fn load_model(
    path: Option<&Path>,
    threads: usize,
    monte_carlo_dropout: bool,
    every_convolution: bool,
) -> Result<Segmenter> {
    if let Some(p) = path.filter(|p| is_embedded_model(p)) {
        anyhow::ensure!(
            !monte_carlo_dropout,
            "{}: Monte-Carlo dropout needs the ONNX model (an embedded model is the \
             deterministic network)",
            p.display()
        );
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        return Ok(Segmenter::from_embedded(
            &bytes,
            &p.display().to_string(),
            threads,
        )?);
    }
    let file = read_model(path)?;
    let options = skipseg_runtime::Options {
        threads,
        monte_carlo_dropout,
        fuse_every_convolution: every_convolution,
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
