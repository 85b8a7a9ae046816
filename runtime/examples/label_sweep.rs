//! Choose `segment-run label`'s parameters on slices whose probability maps are given:
//! labels every map of PROB (a folder of float TIFF membrane maps: `segment-run predict
//! --float`'s, or the out-of-fold maps `segment-train cv` writes to OUT/maps) with each
//! setting of `labels::tuning_grid`, scores the labels against the ground truth GT
//! (direct V_rand / V_info, the mean over slices; `label_tuning::sweep`) and prints the
//! best settings, best last, then the best as `segment-run label` flags (the choice
//! `segment-train cv` makes). Also prints the best threshold of the maps themselves
//! (the official score of the probability maps), for comparison.
//!
//! Maps named `slice-NN.tif` (cv's) are matched to page NN of GT; otherwise the maps,
//! sorted by name, are matched to GT's pages in order. Run it on slices that chose
//! nothing else you will report: the defaults in runtime/src/labels.rs came from it
//! (docs/EVALUATION.md, "Instance labels").
//!
//!   cargo run --release -p skipseg-runtime --example label_sweep -- PROB GT [SHOW]

use std::path::PathBuf;

use skipseg_runtime::labels::tuning_grid;
use skipseg_runtime::{io, label_tuning, metrics};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (prob, gt, show) = match args.as_slice() {
        [p, g] => (PathBuf::from(p), PathBuf::from(g), 20),
        [p, g, n] => (PathBuf::from(p), PathBuf::from(g), n.parse()?),
        _ => return Err("usage: label_sweep PROB_DIR GT [SHOW]".into()),
    };
    let maps = io::read_slices(&prob)?;
    let truth = io::read_slices(&gt)?;
    let page = |name: &str| -> Option<usize> {
        let file = std::path::Path::new(name).file_stem()?.to_str()?;
        file.strip_prefix("slice-")?.parse().ok()
    };
    let pages: Vec<usize> = match maps.iter().map(|m| page(&m.name)).collect::<Option<_>>() {
        Some(pages) => pages,
        None if maps.len() == truth.len() => (0..maps.len()).collect(),
        None => {
            return Err(format!(
                "{} maps but {} ground-truth slices (and the maps are not named slice-NN)",
                maps.len(),
                truth.len()
            )
            .into());
        }
    };
    let mut gt_arrays = Vec::new();
    for (m, &k) in maps.iter().zip(&pages) {
        let g = truth
            .get(k)
            .ok_or(format!("{}: no page {k} in {}", m.name, gt.display()))?;
        if g.pixels.dim() != m.pixels.dim() {
            return Err(format!("{}: size differs from {}", m.name, g.name).into());
        }
        gt_arrays.push(g.pixels.clone());
    }
    println!("{} maps, ground-truth pages {pages:?}", maps.len());
    let cells: Vec<_> = maps.iter().map(|m| m.pixels.mapv(|v| 1.0 - v)).collect();
    let official = metrics::evaluate_images(&gt_arrays, &cells, true);
    println!(
        "probability maps, official (best threshold {:.1}): V_rand {:.4}, V_info {:.4}",
        official.v_rand_threshold, official.v_rand, official.v_info
    );
    let all: Vec<usize> = (0..maps.len()).collect();
    let arrays: Vec<_> = maps.into_iter().map(|m| m.pixels).collect();
    let grid = tuning_grid();
    let table = label_tuning::sweep(&arrays, &gt_arrays, &grid, 0);
    let mut rows: Vec<(f64, f64, usize)> = (0..grid.len())
        .filter_map(|o| table.mean(o, &all).map(|(r, i)| (r, i, o)))
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("V_rand  V_info  seeds     sigma  seed_max  merge  min_size   (best last)");
    for &(r, i, o) in rows.iter().skip(rows.len().saturating_sub(show)) {
        let o = &grid[o];
        println!(
            "{r:.4}  {i:.4}  {:<8}  {:>5}  {:>8}  {:>5}  {:>8}",
            format!("{:?}", o.seeds),
            o.seed_sigma,
            o.seed_max_probability,
            o.merge_threshold,
            o.min_size
        );
    }
    // the choice `segment-train cv` makes (the first of equals), as segment-run label flags
    if let Some(best) = table.best(&all) {
        println!("best: {}", grid[best].command_line_flags());
    }
    Ok(())
}
