//! `segment-run`: the command-line front end of the skipseg runtime.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skipseg_runtime::{Segmenter, onnx};

#[derive(Parser)]
#[command(
    name = "segment-run",
    version,
    about = "Segment microscopy images with a skipseg ONNX model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model: architecture, preprocessing, operators.
    Info {
        /// ONNX model exported by segment-train.
        #[arg(long)]
        model: PathBuf,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { model } => {
            let seg = Segmenter::from_path(&model)?;
            let meta = seg.meta();
            let proto = onnx::read_model(&model).context("re-reading model")?;
            let cost = meta.arch.plan().cost(512, 512);
            println!("model: {}", model.display());
            println!("architecture: {}", meta.arch.name);
            println!("  down-sampling factor: {}", meta.arch.down_factor());
            println!("  learnable parameters: {}", cost.params());
            println!(
                "  FLOPs per 512x512 image: {:.3} G",
                cost.flops() as f64 / 1e9
            );
            println!(
                "preprocessing: input = (intensity in [0, 1] - {}) / {}",
                meta.preprocessing.mean, meta.preprocessing.std
            );
            let ops = onnx::op_histogram(&proto)
                .into_iter()
                .map(|(op, n)| format!("{op} x{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!("operators: {ops}");
            Ok(())
        }
    }
}
