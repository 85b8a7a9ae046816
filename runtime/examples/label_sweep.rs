//! Choose `segment-run label`'s parameters on slices whose probability maps are given:
//! labels every map of PROB (a folder of float TIFF membrane maps, e.g. `segment-run
//! predict --float`'s) with each setting of a grid, scores the labels against the ground
//! truth GT (`metrics::score_instances`, direct V_rand / V_info, the mean over
//! slices) and prints every setting, best last. Also prints the best threshold of the
//! maps themselves (the official score of the probability maps), for comparison.
//! Run it on training slices only: the defaults in runtime/src/labels.rs came from it
//! (docs/EVALUATION.md, "Instance labels").
//!
//!   cargo run --release -p skipseg-runtime --example label_sweep -- PROB GT

use std::path::PathBuf;

use rayon::prelude::*;
use skipseg_runtime::labels::{LabelOptions, SeedKind, label_membranes};
use skipseg_runtime::{io, metrics};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [prob, gt] = args.as_slice() else {
        return Err("usage: label_sweep PROB_DIR GT_DIR".into());
    };
    let maps = io::read_slices(prob)?;
    let truth = io::read_slices(gt)?;
    if maps.len() != truth.len() {
        return Err(format!(
            "{} maps but {} ground-truth slices",
            maps.len(),
            truth.len()
        )
        .into());
    }
    let gt_arrays: Vec<_> = truth.iter().map(|s| s.pixels.clone()).collect();
    let cells: Vec<_> = maps.iter().map(|m| m.pixels.mapv(|v| 1.0 - v)).collect();
    let official = metrics::evaluate_images(&gt_arrays, &cells, true);
    println!(
        "probability maps, official (best threshold {:.1}): V_rand {:.4}, V_info {:.4}",
        official.v_rand_threshold, official.v_rand, official.v_info
    );
    let mut grid = Vec::new();
    for seeds in [SeedKind::Minima, SeedKind::Distance] {
        for seed_sigma in [1.0f32, 2.0, 3.0] {
            for seed_max_probability in [0.3f32, 0.5, 0.7] {
                for merge_threshold in [0.4f32, 0.45, 0.5, 0.55, 0.6] {
                    for min_size in [0usize, 100, 300] {
                        grid.push(LabelOptions {
                            seeds,
                            seed_sigma,
                            seed_max_probability,
                            merge_threshold,
                            min_size,
                        });
                    }
                }
            }
        }
    }
    let mut rows: Vec<(f64, f64, LabelOptions)> = grid
        .par_iter()
        .map(|opts| {
            let labels: Vec<_> = maps
                .iter()
                .map(|m| {
                    let (h, w) = m.pixels.dim();
                    let p: Vec<f32> = m.pixels.iter().copied().collect();
                    let l = label_membranes(&p, w, opts, 1);
                    ndarray::Array2::from_shape_vec((h, w), l.labels).expect("h x w")
                })
                .collect();
            let direct: Vec<_> = gt_arrays
                .iter()
                .zip(&labels)
                .map(|(g, l)| metrics::score_instances(g, l))
                .collect();
            let mean = |f: fn(&metrics::SliceScores) -> f64| {
                let v: Vec<f64> = direct.iter().flatten().map(f).collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            (mean(|s| s.rand.f), mean(|s| s.info.f), *opts)
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("V_rand  V_info  seeds     sigma  seed_max  merge  min_size   (best last)");
    for (r, i, o) in &rows {
        println!(
            "{r:.4}  {i:.4}  {:<8}  {:>5}  {:>8}  {:>5}  {:>8}",
            format!("{:?}", o.seeds),
            o.seed_sigma,
            o.seed_max_probability,
            o.merge_threshold,
            o.min_size
        );
    }
    Ok(())
}
