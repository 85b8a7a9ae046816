//! `segment-run eval`: the ISBI 2012 scores of a proposal.

use std::path::PathBuf;

use anyhow::Result;
use skipseg_runtime::metrics;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(args: Args) -> Result<()> {
    let thinning = args.thinning == Switch::On;
    let (names, e) =
        metrics::evaluate_files(&args.labels, &args.proposal, thinning, args.membrane_high)?;
    let at = |t: f64| e.thresholds.iter().position(|&x| x == t).unwrap_or(0);
    let (ri, ii) = (at(e.v_rand_threshold), at(e.v_info_threshold));
    if args.json {
        let out = e.to_json(&names, thinning);
        println!("{out}");
        return Ok(());
    }
    println!("{:<16} {:>8} {:>8}", "slice", "V_rand", "V_info");
    for (k, name) in names.iter().enumerate() {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:>8} {:>8}",
            name,
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
