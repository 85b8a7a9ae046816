//! `segment-run quantize`: int8 QDQ ONNX calibrated on real images.

use std::path::PathBuf;

use anyhow::Result;
use skipseg_runtime::calibrate::{self, QuantizeJob, RangeChoice};
use skipseg_runtime::{io, onnx};

use crate::model::{ModelFile, read_model};

#[derive(clap::Args)]
pub struct Args {
    /// Float model (default: the shipped model built into segment-run).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Calibration images: PNG/TIFF files, a folder or a stack (e.g. training slices).
    #[arg(long, required = true)]
    calibration: Vec<PathBuf>,
    /// Output ONNX file.
    #[arg(short, long)]
    output: PathBuf,
    /// How activation ranges are taken from the calibration values (default: auto with
    /// --validation-images and --validation-labels, percentile without).
    #[arg(long, value_enum)]
    method: Option<RangeChoice>,
    /// Percentile for --method percentile / auto.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Labelled images to choose the method on and to report V_rand (with
    /// --validation-labels), e.g. ISBI slices 25-29.
    #[arg(long)]
    validation_images: Option<PathBuf>,
    /// Labels of --validation-images (255 = cell, 0 = membrane).
    #[arg(long)]
    validation_labels: Option<PathBuf>,
    /// Largest calibration window side (images are cut from their top-left corner).
    #[arg(long, default_value_t = 1024)]
    max_side: usize,
}

pub fn run(args: Args) -> Result<()> {
    let ModelFile { proto, name, .. } = read_model(args.model.as_deref())?;
    let validation = match (&args.validation_images, &args.validation_labels) {
        (Some(i), Some(l)) => {
            let images = io::read_slices(i)?;
            let labels = io::read_slices(l)?;
            anyhow::ensure!(
                images.len() == labels.len() && !images.is_empty(),
                "{}: {} images, but {} has {} labels",
                i.display(),
                images.len(),
                l.display(),
                labels.len()
            );
            Some(calibrate::Validation {
                images: images.into_iter().map(|s| s.pixels).collect(),
                cell_labels: labels.into_iter().map(|s| s.pixels).collect(),
                threads: crate::all_cores(),
            })
        }
        (None, None) => None,
        _ => anyhow::bail!("--validation-images and --validation-labels go together"),
    };
    let mut calibration = Vec::new();
    for path in &args.calibration {
        calibration.extend(io::read_slices(path)?.into_iter().map(|s| s.pixels));
    }
    let outcome = calibrate::quantize(
        &proto,
        &name,
        &QuantizeJob {
            calibration,
            choice: args.method,
            percentile: args.percentile,
            validation,
            max_side: args.max_side,
        },
    )?;
    if outcome.skipped > 0 {
        eprintln!(
            "warning: {} calibration images smaller than the down-sampling factor, skipped",
            outcome.skipped
        );
    }
    println!(
        "calibrated {} tensors on {} windows in {:.1} s",
        outcome.tensors, outcome.windows, outcome.calibration_seconds
    );
    if let Some((r, i)) = outcome.float_scores {
        println!("float model:      V_rand {r:.4}  V_info {i:.4}");
    }
    for c in &outcome.candidates {
        for (conv, why) in &c.report.left {
            eprintln!("warning: {conv} stays float: {why}");
        }
        match c.scores {
            Some((r, i)) => println!(
                "int8, {}: V_rand {r:.4}  V_info {i:.4}  ({} convs)",
                c.method, c.report.convs
            ),
            None => println!("int8, {}: {} convs", c.method, c.report.convs),
        }
    }
    let best = &outcome.candidates[outcome.best];
    onnx::write_model(&best.model, &args.output)?;
    println!("wrote {} ({})", args.output.display(), best.method);
    Ok(())
}
