//! `segment-run package`: a bioimage.io model package and its zip.

use std::path::PathBuf;

use anyhow::{Context, Result};
use skipseg_runtime::{Segmenter, io, package};

use crate::model::{BUILT_IN_CARD, ModelFile, read_model};

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model (default: the shipped model built into segment-run). A model card `M.md` beside
    /// `M.onnx` becomes the package's documentation.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output folder (the zip is written beside it, as FOLDER.zip).
    #[arg(short, long)]
    output: PathBuf,
    /// Name of the model in the package (default: the model file's name).
    #[arg(long)]
    name: Option<String>,
    /// Test image (PNG/TIFF; its centre, up to 256 x 256, becomes the test tensor).
    /// Default: a synthetic EM-like image.
    #[arg(long)]
    sample: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let ModelFile {
        proto,
        name: source,
        ..
    } = read_model(args.model.as_deref())?;
    let seg = Segmenter::from_proto(proto.clone(), &source)?;
    let (stem, card) = match &args.model {
        Some(m) => {
            let card_path = m.with_extension("md");
            let card = if card_path.is_file() {
                Some(std::fs::read_to_string(&card_path).with_context(|| {
                    format!("{}: cannot read the model card", card_path.display())
                })?)
            } else {
                None
            };
            (
                m.file_stem()
                    .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
                card,
            )
        }
        None => (
            "isbi-small-bce".to_string(),
            Some(BUILT_IN_CARD.to_string()),
        ),
    };
    let sample = match &args.sample {
        Some(p) => io::read_slices(p)?
            .into_iter()
            .next()
            .map(|s| s.pixels)
            .with_context(|| format!("{}: no image", p.display()))?,
        None => package::synthetic_em(256, 256),
    };
    let name = args.name.unwrap_or_else(|| format!("skipseg {stem}"));
    let description = format!(
        "Membrane probability for electron microscopy (ISBI 2012 style), {} residual \
         FCN (Drozdzal et al. 2016), by skipseg",
        seg.meta().arch.name
    );
    let written = package::write_package(
        &seg,
        &package::PackageSpec {
            name: &name,
            description: &description,
            card: card.as_deref(),
            onnx: &proto,
            sample: &sample,
        },
        &args.output,
    )?;
    println!(
        "wrote {} ({}) and {}",
        written.dir.display(),
        written.files.join(", "),
        written.zip.display()
    );
    Ok(())
}
