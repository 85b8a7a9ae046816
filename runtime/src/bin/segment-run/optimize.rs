//! `segment-run optimize`: fold batch norms and write the rewritten model.

use std::path::PathBuf;

use anyhow::Result;
use skipseg_runtime::onnx;

#[derive(clap::Args)]
pub struct Args {
    /// Model to rewrite.
    #[arg(long)]
    model: PathBuf,
    /// Output ONNX file.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let mut proto = onnx::read_model(&args.model)?;
    let before = onnx::op_histogram(&proto);
    skipseg_runtime::passes::dropout::strip_masks(&mut proto);
    let report =
        skipseg_runtime::passes::fold_batch_norms(&mut proto, &args.model.display().to_string())?;
    onnx::write_model(&proto, &args.output)?;
    println!(
        "folded {} batch norms into the preceding conv, turned {} into scale+shift",
        report.folded.len(),
        report.to_affine.len()
    );
    let show = |h: Vec<(String, usize)>| {
        h.into_iter()
            .map(|(o, n)| format!("{o} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("before: {}", show(before));
    println!("after:  {}", show(onnx::op_histogram(&proto)));
    println!("wrote {}", args.output.display());
    Ok(())
}
