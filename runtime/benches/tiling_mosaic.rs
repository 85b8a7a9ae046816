//! Tiled against whole-image inference on a mosaic of ISBI 2012 slices: the 30 test
//! slices (unlabelled) and the 30 training slices (labelled) are each assembled into a
//! 6 x 5 mosaic (3072 x 2560) and segmented (a) as one window with a halo of the
//! receptive radius (the reference: every pixel sees all the context the network can
//! use) and (b) tiled as `segment-run predict` does, for several halos and both blends.
//! Reported: max and mean absolute difference of the probabilities, the fraction of
//! pixels whose membrane decision at 0.5 flips, and V_rand / V_info differences (test
//! mosaic: against the reference segmentation thresholded at 0.5; training mosaic:
//! against the labels, tiled minus whole).
//!
//! Every window is averaged as `segment-run predict` does by default: the model's
//! recorded test-time averaging, or the one named as the second argument.
//!
//! `cargo bench -p skipseg-runtime --bench tiling_mosaic -- [MODEL.onnx] [none|flips|dihedral]`

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array2, Slice};
use skipseg_runtime::metrics::evaluate_membrane_maps;
use skipseg_runtime::tiling::{Blend, Tiling, round_up};
use skipseg_runtime::{Averaging, Inference, Options, Segmenter, io, segment_image_with};

const COLS: usize = 6;
const ROWS: usize = 5;

/// Rows (axis 0) or columns (axis 1) of mosaic block (r, c).
fn block(axis: usize, r: usize, c: usize, h: usize, w: usize) -> Slice {
    if axis == 0 {
        Slice::from(r * h..(r + 1) * h)
    } else {
        Slice::from(c * w..(c + 1) * w)
    }
}

fn mosaic(slices: &[Array2<f32>]) -> Array2<f32> {
    let (h, w) = slices[0].dim();
    let mut m = Array2::zeros((ROWS * h, COLS * w));
    for (k, sl) in slices.iter().enumerate().take(ROWS * COLS) {
        let (r, c) = (k / COLS, k % COLS);
        m.slice_each_axis_mut(|ax| block(ax.axis.index(), r, c, h, w))
            .assign(sl);
    }
    m
}

fn split(m: &Array2<f32>, h: usize, w: usize) -> Vec<Vec<f32>> {
    (0..ROWS * COLS)
        .map(|k| {
            let (r, c) = (k / COLS, k % COLS);
            m.slice_each_axis(|ax| block(ax.axis.index(), r, c, h, w))
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

/// Official scores of membrane-probability slices against cell-high ground truth.
fn scores(prob: &[Vec<f32>], truth: &[Vec<f32>], w: usize) -> (f64, f64) {
    let e = evaluate_membrane_maps(prob, truth, w, true);
    (e.v_rand, e.v_info)
}

mod common;

fn main() {
    let (model, args) = common::model_and_args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let seg = Segmenter::with_options(
        skipseg_runtime::onnx::read_model(&model).expect("model"),
        &model.display().to_string(),
        &Options {
            threads: 2,
            monte_carlo_dropout: false,
            ..Default::default()
        },
    )
    .expect("model loads");
    let averaging: Averaging = match args.first() {
        None => seg.meta().inference.averaging,
        Some(name) => name.parse().unwrap_or_else(|e| panic!("{e}")),
    };
    let run = |image: &Array2<f32>, tiling: Tiling, blend: Blend| {
        let how = Inference {
            tiling,
            blend,
            averaging,
            monte_carlo: None,
        };
        segment_image_with(&seg, image.view(), &how).expect("inference")
    };
    let factor = seg.meta().arch.down_factor();
    let radius = seg.meta().arch.plan().receptive_radius();
    let read = |dir: &str| -> Vec<Array2<f32>> {
        io::read_slices(&root.join(dir))
            .expect("ISBI slices")
            .into_iter()
            .map(|s| s.pixels)
            .collect()
    };
    println!(
        "model {}, receptive radius {radius} px, default halo {} / largest window {}, test-time averaging {averaging:?}",
        model.display(),
        seg.default_halo(),
        seg.default_max_window(3072)
    );
    for (title, images, labels) in [
        ("test slices (no labels)", "data/isbi2012/test/images", None),
        (
            "training slices (labelled)",
            "data/isbi2012/train/images",
            Some("data/isbi2012/train/labels"),
        ),
    ] {
        let slices = read(images);
        let (sh, sw) = slices[0].dim();
        let image = mosaic(&slices);
        let (h, w) = image.dim();
        let whole_tiling = Tiling {
            tile: Some(h.max(w)),
            halo: Some(0),
        };
        let whole_plan = seg.tile_plan(&whole_tiling, h, w).expect("plan");
        let t = Instant::now();
        let whole = run(&image, whole_tiling, Blend::Crop);
        let whole_s = t.elapsed().as_secs_f64();
        let whole_slices = split(&whole, sh, sw);
        // test mosaic: the reference segmentation stands in for labels
        let truth: Vec<Vec<f32>> = match labels {
            Some(dir) => read(dir)
                .iter()
                .map(|l| l.iter().copied().collect())
                .collect(),
            None => whole_slices
                .iter()
                .map(|p| p.iter().map(|&v| if v > 0.5 { 0.0 } else { 1.0 }).collect())
                .collect(),
        };
        let (wr, wi) = scores(&whole_slices, &truth, sw);
        println!();
        println!("## {title}: mosaic {w}x{h} of {} slices", ROWS * COLS);
        println!(
            "whole image (one {}x{} window): {whole_s:.1} s; V_rand {wr:.4}, V_info {wi:.4} {}",
            whole_plan.window_w,
            whole_plan.window_h,
            if labels.is_some() {
                "against the labels"
            } else {
                "against itself (by construction 1)"
            }
        );
        println!(
            "| tiling | tiles | s | max abs diff | mean abs diff | decisions flipped at 0.5 | V_rand diff | V_info diff |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let halo_exact = round_up(radius, factor);
        let tiles = |tile: usize, halo: usize| Tiling {
            tile: Some(tile),
            halo: Some(halo),
        };
        for (tiling, blend) in [
            (tiles(512, 0), Blend::Crop),
            (tiles(512, 32), Blend::Crop),
            (tiles(512, 64), Blend::Crop),
            (tiles(512, 64), Blend::Linear),
            (tiles(512, 128), Blend::Crop),
            (tiles(512, halo_exact), Blend::Crop),
            (Tiling::default(), Blend::Crop),
            (Tiling::default(), Blend::Linear),
        ] {
            let plan = seg.tile_plan(&tiling, h, w).expect("plan");
            let t = Instant::now();
            let tiled = run(&image, tiling, blend);
            let secs = t.elapsed().as_secs_f64();
            let diffs: Vec<f32> = tiled
                .iter()
                .zip(whole.iter())
                .map(|(a, b)| (a - b).abs())
                .collect();
            let max = diffs.iter().copied().fold(0.0f32, f32::max);
            let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
            let flipped = tiled
                .iter()
                .zip(whole.iter())
                .filter(|(a, b)| (**a > 0.5) != (**b > 0.5))
                .count() as f64
                / diffs.len() as f64;
            let (tr, ti) = scores(&split(&tiled, sh, sw), &truth, sw);
            println!(
                "| {} tile {}, halo {}, {} | {} | {secs:.1} | {max:.2e} | {mean:.2e} | {:.4}% | {:+.4} | {:+.4} |",
                if tiling.tile.is_none() {
                    "default:"
                } else {
                    ""
                },
                plan.core_h,
                plan.halo,
                match blend {
                    Blend::Crop => "crop",
                    Blend::Linear => "linear",
                },
                plan.rows * plan.cols,
                100.0 * flipped,
                tr - wr,
                ti - wi
            );
        }
    }
}
