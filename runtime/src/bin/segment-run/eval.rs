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
    /// The proposal is instance labels (a uint32/uint16/uint8 label TIFF, one page per
    /// slice, or a folder of them, e.g. `segment-run label`'s `*_labels.tif`): scored
    /// directly (each id one segment) and as the challenge took a submission (a cell map
    /// with one-pixel boundaries between labels, thresholds and thinning).
    #[arg(long, conflicts_with = "membrane_high")]
    instances: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let thinning = args.thinning == Switch::On;
    if args.instances {
        return run_instances(&args, thinning);
    }
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

/// `eval --instances`: label images, scored directly and as a submission.
fn run_instances(args: &Args, thinning: bool) -> Result<()> {
    let (names, e) = metrics::evaluate_label_files(&args.labels, &args.proposal, thinning)?;
    let sub = &e.as_submission;
    if args.json {
        let f = |x: Option<f64>| x.map_or(serde_json::Value::Null, |v| v.into());
        let out = serde_json::json!({
            "instances": true,
            "direct": {
                "v_rand": e.v_rand,
                "v_info": e.v_info,
                "per_slice": names.iter().zip(&e.direct).map(|(n, s)| serde_json::json!({
                    "slice": n,
                    "v_rand": f(s.map(|s| s.rand.f)),
                    "v_info": f(s.map(|s| s.info.f)),
                })).collect::<Vec<_>>(),
            },
            "as_submission": sub.to_json(&names, thinning),
        });
        println!("{out}");
        return Ok(());
    }
    let at = |t: f64| sub.thresholds.iter().position(|&x| x == t).unwrap_or(0);
    let ri = at(sub.v_rand_threshold);
    let ii = at(sub.v_info_threshold);
    println!(
        "{:<16} {:>15} {:>15} {:>15} {:>15}",
        "slice", "V_rand direct", "V_info direct", "V_rand submit", "V_info submit"
    );
    let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    for (k, name) in names.iter().enumerate() {
        println!(
            "{:<16} {:>15} {:>15} {:>15} {:>15}",
            name,
            f(e.direct[k].map(|s| s.rand.f)),
            f(e.direct[k].map(|s| s.info.f)),
            f(sub.per_slice[ri][k].map(|s| s.rand.f)),
            f(sub.per_slice[ii][k].map(|s| s.info.f)),
        );
    }
    println!(
        "{:<16} {:>15.4} {:>15.4} {:>15.4} {:>15.4}",
        "mean", e.v_rand, e.v_info, sub.v_rand, sub.v_info
    );
    println!(
        "direct: each label one segment; submit: labels as a cell map with one-pixel \
         boundaries, scored officially (thinning {})",
        if thinning { "on" } else { "off" }
    );
    Ok(())
}
