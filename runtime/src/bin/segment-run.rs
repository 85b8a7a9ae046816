//! `segment-run`: the command-line front end of the skipseg runtime.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skipseg_runtime::metrics::{self, SlicePair};
use skipseg_runtime::{Segmenter, io, onnx};

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
    /// Score a proposal against labels with the ISBI 2012 metrics (V_rand, V_info).
    Eval {
        /// Ground truth: PNG, folder of PNGs, or multi-page TIFF (255 = cell, 0 = membrane).
        #[arg(long)]
        labels: PathBuf,
        /// Proposal of the same kind: cell-high map (or membrane-high with --membrane-high).
        #[arg(long)]
        proposal: PathBuf,
        /// Border thinning before scoring (on = the official definition).
        #[arg(long, value_enum, default_value = "on")]
        thinning: Switch,
        /// The proposal is a membrane probability: invert it (1 - p) before scoring.
        #[arg(long)]
        membrane_high: bool,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval {
            labels,
            proposal,
            thinning,
            membrane_high,
            json,
        } => eval(
            &labels,
            &proposal,
            thinning == Switch::On,
            membrane_high,
            json,
        ),
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

fn eval(
    labels: &std::path::Path,
    proposal: &std::path::Path,
    thinning: bool,
    membrane_high: bool,
    json: bool,
) -> Result<()> {
    let gt = io::read_slices(labels)?;
    let mut prop = io::read_slices(proposal)?;
    anyhow::ensure!(
        gt.len() == prop.len(),
        "{}: {} slices, but {} has {}",
        proposal.display(),
        prop.len(),
        labels.display(),
        gt.len()
    );
    for (g, p) in gt.iter().zip(prop.iter_mut()) {
        anyhow::ensure!(
            g.pixels.dim() == p.pixels.dim(),
            "{}: slice {} is {:?} but label slice {} is {:?}",
            proposal.display(),
            p.name,
            p.pixels.dim(),
            g.name,
            g.pixels.dim()
        );
        if membrane_high {
            p.pixels.mapv_inplace(|v| 1.0 - v);
        }
    }
    let gt_data: Vec<Vec<f32>> = gt
        .iter()
        .map(|s| s.pixels.iter().copied().collect())
        .collect();
    let prop_data: Vec<Vec<f32>> = prop
        .iter()
        .map(|s| s.pixels.iter().copied().collect())
        .collect();
    let pairs: Vec<SlicePair<'_>> = gt
        .iter()
        .zip(&gt_data)
        .zip(&prop_data)
        .map(|((s, g), p)| SlicePair {
            ground_truth: g,
            proposal: p,
            width: s.pixels.ncols(),
        })
        .collect();
    let e = metrics::evaluate_stack(&pairs, thinning);
    let ri = e
        .thresholds
        .iter()
        .position(|&t| t == e.v_rand_threshold)
        .unwrap_or(0);
    let ii = e
        .thresholds
        .iter()
        .position(|&t| t == e.v_info_threshold)
        .unwrap_or(0);
    if json {
        let slices: Vec<serde_json::Value> = gt
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let r = e.per_slice[ri][k];
                let i = e.per_slice[ii][k];
                serde_json::json!({
                    "name": s.name,
                    "rand_f": r.map(|v| v.rand.f),
                    "rand_precision": r.map(|v| v.rand.precision),
                    "rand_recall": r.map(|v| v.rand.recall),
                    "info_f": i.map(|v| v.info.f),
                    "info_precision": i.map(|v| v.info.precision),
                    "info_recall": i.map(|v| v.info.recall),
                })
            })
            .collect();
        let by_threshold: Vec<serde_json::Value> = e
            .thresholds
            .iter()
            .zip(e.rand_by_threshold.iter().zip(&e.info_by_threshold))
            .map(|(t, (r, i))| serde_json::json!({"threshold": t, "rand_f": r, "info_f": i}))
            .collect();
        let out = serde_json::json!({
            "v_rand": e.v_rand,
            "v_info": e.v_info,
            "v_rand_threshold": e.v_rand_threshold,
            "v_info_threshold": e.v_info_threshold,
            "thinning": thinning,
            "slices": slices,
            "by_threshold": by_threshold,
        });
        println!("{out}");
        return Ok(());
    }
    println!("{:<16} {:>8} {:>8}", "slice", "V_rand", "V_info");
    for (k, s) in gt.iter().enumerate() {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:>8} {:>8}",
            s.name,
            f(e.per_slice[ri][k].map(|v| v.rand.f)),
            f(e.per_slice[ii][k].map(|v| v.info.f))
        );
    }
    println!(
        "{:<16} {:>8.4} {:>8.4}",
        "mean (official)", e.v_rand, e.v_info
    );
    println!(
        "best thresholds: V_rand at {:.1}, V_info at {:.1}; thinning {}",
        e.v_rand_threshold,
        e.v_info_threshold,
        if thinning { "on" } else { "off" }
    );
    Ok(())
}
