//! `segment-run tune-halo`: measure the halo at which tiles equal the whole image, and
//! record it in the model as its default.

use std::path::PathBuf;

use anyhow::Result;
use skipseg_runtime::engine::{HALO_TOLERANCE_TEXT, record_halo};
use skipseg_runtime::{io, onnx};

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model to measure (its graph is written back unchanged).
    #[arg(long)]
    model: PathBuf,
    /// Reference images (PNG/TIFF files or folders), larger than the windows tried
    /// (e.g. a 1536 x 1536 mosaic of ISBI slices: examples/synthetic_image).
    #[arg(long, required = true)]
    reference: Vec<PathBuf>,
    /// Output ONNX file: the model with the measured halo in its metadata (may be the
    /// input file).
    #[arg(short, long)]
    output: PathBuf,
    /// Threads of the inference engine (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let mut proto = onnx::read_model(&args.model)?;
    let name = args.model.display().to_string();
    let mut references = Vec::new();
    for path in &args.reference {
        references.extend(io::read_slices(path)?.into_iter().map(|s| s.pixels));
    }
    let threads = args.threads.unwrap_or_else(crate::all_cores);
    let m = record_halo(&mut proto, &name, &references, threads)?;
    println!("| halo px | max abs difference | pixels within {HALO_TOLERANCE_TEXT} |");
    println!("|---|---|---|");
    for t in &m.trials {
        println!(
            "| {} | {:.2e} | {:.4}% |",
            t.halo,
            t.max_abs,
            100.0 * t.within
        );
    }
    onnx::write_model(&proto, &args.output)?;
    println!(
        "halo {} px (receptive radius {} px): tiles equal the whole image within {HALO_TOLERANCE_TEXT}; wrote {}",
        m.halo,
        m.receptive_radius,
        args.output.display()
    );
    Ok(())
}
