//! Cross-validation (`segment-train cv`): K models with one recipe, each validated (its
//! checkpoint chosen included) on its own contiguous block of slices, so that every
//! slice is scored by the one model that never saw it. Each fold is an ordinary training
//! run in `OUT/fold-K` (resumable like any run); the report scores every slice with its
//! fold's exported `model.onnx` through the runtime, four ways:
//!
//! - **one pass**: the official score of the one-pass maps (the threshold that is best
//!   for the mean over all scored slices, thinning on);
//! - **averaged**: the same for the maps averaged over the symmetries the model records
//!   (dihedral when it records none, as a training run's own `model.onnx` does; the
//!   shipped model records dihedral): the best threshold of these maps;
//! - **averaged at 0.5**: the averaged maps cut at membrane probability 0.5, what a user
//!   without labels to choose a threshold gets (`segment-run predict --threshold 0.5`);
//! - **averaged, model's own threshold**: the official score of the averaged maps at the
//!   threshold best on the fold model's own maps of the slices it trained on (the
//!   threshold chosen the way the own label setting below is);
//! - **labels**: instance labels of the averaged maps with `segment-run label`'s defaults
//!   ([`skipseg_runtime::labels`]), each id one segment;
//! - **labels, nested**: the same with the setting of [`tuning_grid`] that is best on the
//!   other scored folds' slices (`label_tuning::LabelSweep::nested`), so that no slice
//!   is labelled with parameters chosen on it; the report also names the setting best
//!   on all scored slices and its (optimistic, like the best threshold's) score;
//! - **labels, model's own setting**: the same with the setting of [`tuning_grid`] that
//!   is best on the fold model's own training slices (its averaged maps of them against
//!   their labels), the way `segment-run label`'s defaults were chosen for the shipped
//!   model: each model labels with parameters chosen on the slices it trained on, so
//!   they follow its calibration, and no held-out slice takes part.
//!
//! The averaged out-of-fold maps are written to `OUT/maps/slice-NN.tif` (32-bit float),
//! so that `examples/label_sweep.rs` can search label parameters on them, and their
//! labels with the defaults to `OUT/labels/slice-NN.tif` (uint32).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::Serialize;
use skipseg_runtime::engine::pixels::{PixelView, segment_pixels};
use skipseg_runtime::label_tuning;
use skipseg_runtime::labels::{LabelOptions, label_membranes, tuning_grid};
use skipseg_runtime::metrics::{self, SliceScores};
use skipseg_runtime::{Averaging, Inference, Options, Segmenter, io};

use crate::training::{TrainError, io_err};

/// `k` contiguous blocks of `0..slices`, sizes differing by at most one.
pub fn folds(slices: usize, k: usize) -> Vec<Vec<usize>> {
    let k = k.clamp(1, slices.max(1));
    (0..k)
        .map(|f| (f * slices / k..(f + 1) * slices / k).collect())
        .collect()
}

/// The run folder of fold `fold`.
pub fn fold_dir(out: &Path, fold: usize) -> PathBuf {
    out.join(format!("fold-{fold}"))
}

/// A validation list as `--val` takes it (`5-9`).
pub fn val_spec(slices: &[usize]) -> String {
    match (slices.first(), slices.last()) {
        (Some(a), Some(b)) if b - a + 1 == slices.len() => format!("{a}-{b}"),
        _ => slices
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// V_rand and V_info of one slice one way (`None`: no ground-truth cell).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pair {
    pub v_rand: Option<f64>,
    pub v_info: Option<f64>,
}

impl Pair {
    fn of(s: Option<SliceScores>) -> Self {
        Self {
            v_rand: s.map(|s| s.rand.f),
            v_info: s.map(|s| s.info.f),
        }
    }
}

/// One slice, scored by the fold that held it out.
#[derive(Debug, Clone, Serialize)]
pub struct SliceRow {
    pub slice: usize,
    pub fold: usize,
    pub one_pass: Pair,
    pub averaged: Pair,
    pub averaged_at_half: Pair,
    /// The averaged map at the threshold its fold's model scores best at on its own
    /// training slices.
    pub averaged_own_threshold: Pair,
    pub labels: Pair,
    /// Labels with the setting chosen on the other folds (`None` with one fold scored).
    pub labels_nested: Pair,
    /// Labels with the setting the fold's model chose on its own training slices.
    pub labels_own: Pair,
}

/// A label setting, as the report names it: its fields, and `segment-run label`'s flags
/// for it.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub seeds: String,
    pub seed_sigma: f32,
    pub seed_max_probability: f32,
    pub merge_threshold: f32,
    pub min_size: usize,
    pub flags: String,
}

impl Setting {
    pub fn of(o: &LabelOptions) -> Self {
        Self {
            seeds: format!("{:?}", o.seeds).to_lowercase(),
            seed_sigma: o.seed_sigma,
            seed_max_probability: o.seed_max_probability,
            merge_threshold: o.merge_threshold,
            min_size: o.min_size,
            flags: o.command_line_flags(),
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.flags)
    }
}

/// The label setting a fold's slices were labelled with in a column that chooses one per
/// fold.
#[derive(Debug, Clone, Serialize)]
pub struct LabelChoice {
    pub fold: usize,
    /// The mean V_rand of the setting on the slices that chose it (the other folds'
    /// slices in the nested column, the fold's training slices in the own-setting one).
    pub v_rand_where_chosen: f64,
    pub setting: Setting,
}

/// Means over the scored slices.
#[derive(Debug, Clone, Serialize)]
pub struct Means {
    pub slices: usize,
    pub one_pass: (f64, f64),
    pub averaged: (f64, f64),
    pub averaged_at_half: (f64, f64),
    /// The thresholds (on the cell map, as the official evaluation thresholds it) the
    /// one-pass and the averaged maps scored best at.
    pub one_pass_threshold: f64,
    pub averaged_threshold: f64,
    /// `None` when no fold had training slices with labels.
    pub averaged_own_threshold: Option<(f64, f64)>,
    pub labels: (f64, f64),
    /// `None` with one fold scored.
    pub labels_nested: Option<(f64, f64)>,
    /// `None` when no fold had training slices with labels to choose on.
    pub labels_own: Option<(f64, f64)>,
    /// The setting best on all scored slices and its mean there (chosen on the slices it
    /// is scored on: optimistic, like the best threshold).
    pub labels_best_setting: Option<((f64, f64), Setting)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub folds: Vec<Vec<usize>>,
    /// Folds with an exported model (the others are not scored yet).
    pub folds_scored: Vec<usize>,
    pub averaging: String,
    pub rows: Vec<SliceRow>,
    pub means: Means,
    /// The settings of the nested column.
    pub label_choices: Vec<LabelChoice>,
    /// The settings of the own-setting column.
    pub own_label_choices: Vec<LabelChoice>,
    /// (fold, threshold on the cell map) of the own-threshold column.
    pub own_thresholds: Vec<(usize, f64)>,
}

/// Score every slice of the folds that have `model.onnx`, from the images and labels
/// the runs trained on. `threads`: the engine's.
pub fn score(
    out: &Path,
    folds: &[Vec<usize>],
    images: &Path,
    labels: &Path,
    threads: usize,
    on_slice: &mut dyn FnMut(usize, usize),
) -> Result<Report, TrainError> {
    let image_slices = io::read_slices(images)?;
    let label_slices = io::read_slices(labels)?;
    let mut scored = Vec::new();
    let mut maps_one = Vec::new();
    let mut maps_avg = Vec::new();
    let mut truth = Vec::new();
    let mut which = Vec::new();
    let mut averaging = Averaging::None;
    let total: usize = folds.iter().map(Vec::len).sum();
    let maps_dir = created(out.join("maps"))?;
    let grid = tuning_grid();
    // (fold, index into `grid` of the setting best on its own training slices, its mean
    // V_rand there), and (fold, the official threshold best there)
    let mut own_label_choices = Vec::new();
    let mut own_thresholds = Vec::new();
    for (f, slices) in folds.iter().enumerate() {
        let model = fold_dir(out, f).join("model.onnx");
        if !model.exists() {
            continue;
        }
        let proto = skipseg_runtime::onnx::read_model(&model)?;
        let seg = Segmenter::with_options(
            proto,
            &model.display().to_string(),
            &Options {
                threads,
                ..Options::default()
            },
        )?;
        averaging = match seg.meta().inference.averaging {
            Averaging::None => Averaging::Dihedral,
            a => a,
        };
        scored.push(f);
        for &s in slices {
            let (Some(image), Some(label)) = (image_slices.get(s), label_slices.get(s)) else {
                return Err(TrainError::Runtime(skipseg_runtime::Error::Input {
                    name: images.display().to_string(),
                    reason: format!("fold {f} holds slice {s}, which is not there"),
                }));
            };
            maps_one.push(probability_map(&seg, image, Averaging::None)?);
            let avg = probability_map(&seg, image, averaging)?;
            io::write_float_tiff(&maps_dir.join(format!("slice-{s:02}.tif")), &avg)?;
            maps_avg.push(avg);
            truth.push(label.pixels.clone());
            which.push((s, f));
            on_slice(which.len(), total);
        }
        // the model's own label setting: the grid's best on the slices it trained on
        let mut own_maps = Vec::new();
        let mut own_truth = Vec::new();
        for (s, (image, label)) in image_slices.iter().zip(&label_slices).enumerate() {
            if !slices.contains(&s) {
                own_maps.push(probability_map(&seg, image, averaging)?);
                own_truth.push(label.pixels.clone());
            }
        }
        if !own_maps.is_empty() {
            let own = metrics::evaluate_images(&own_truth, &cells(&own_maps), true);
            own_thresholds.push((f, own.v_rand_threshold));
        }
        let own = label_tuning::sweep(&own_maps, &own_truth, &grid, threads);
        let trained_on: Vec<usize> = (0..own_maps.len()).collect();
        if let Some(o) = own.best(&trained_on) {
            own_label_choices.push((f, o, own.mean(o, &trained_on).map_or(f64::NAN, |m| m.0)));
        }
    }
    let one = metrics::evaluate_images(&truth, &cells(&maps_one), true);
    let avg = metrics::evaluate_images(&truth, &cells(&maps_avg), true);
    let half = nearest(&avg.thresholds, 0.5);
    let best_one = nearest(&one.thresholds, one.v_rand_threshold);
    let best = nearest(&avg.thresholds, avg.v_rand_threshold);
    let own_threshold_for_row = for_each_row(
        &which,
        own_thresholds
            .iter()
            .map(|&(f, t)| (f, nearest(&avg.thresholds, t))),
    );
    let options = LabelOptions::default();
    let labels_dir = created(out.join("labels"))?;
    let mut label_scores: Vec<Option<SliceScores>> = Vec::new();
    for ((m, g), &(slice, _)) in maps_avg.iter().zip(&truth).zip(&which) {
        let p: Vec<f32> = m.iter().copied().collect();
        let l = label_membranes(&p, m.ncols(), &options, 1);
        let ids = Array2::from_shape_vec(m.dim(), l.labels).expect("same size");
        io::write_label_tiff(&labels_dir.join(format!("slice-{slice:02}.tif")), &ids)?;
        label_scores.push(metrics::score_instances(g, &ids));
    }
    // nested label settings: each fold's slices with the setting best on the others
    let sweep = label_tuning::sweep(&maps_avg, &truth, &grid, threads);
    let groups: Vec<Vec<usize>> = scored
        .iter()
        .map(|&f| (0..which.len()).filter(|&k| which[k].1 == f).collect())
        .collect();
    let nested = sweep.nested(&groups);
    let mut chosen_for_row = vec![None; which.len()];
    let mut label_choices = Vec::new();
    for ((&f, group), choice) in scored.iter().zip(&groups).zip(&nested) {
        let Some(o) = *choice else { continue };
        let others: Vec<usize> = (0..which.len()).filter(|k| !group.contains(k)).collect();
        label_choices.push(LabelChoice {
            fold: f,
            v_rand_where_chosen: sweep.mean(o, &others).map_or(f64::NAN, |m| m.0),
            setting: Setting::of(&grid[o]),
        });
        for &k in group {
            chosen_for_row[k] = Some(o);
        }
    }
    // the model's own setting, scored by the same sweep of the out-of-fold maps
    let own_for_row = for_each_row(&which, own_label_choices.iter().map(|&(f, o, _)| (f, o)));
    let all: Vec<usize> = (0..which.len()).collect();
    let labels_best_setting = sweep
        .best(&all)
        .and_then(|o| Some((sweep.mean(o, &all)?, Setting::of(&grid[o]))));
    let rows: Vec<SliceRow> = which
        .iter()
        .enumerate()
        .map(|(k, &(slice, fold))| SliceRow {
            slice,
            fold,
            one_pass: Pair::of(one.per_slice[best_one][k]),
            averaged: Pair::of(avg.per_slice[best][k]),
            averaged_at_half: Pair::of(avg.per_slice[half][k]),
            averaged_own_threshold: Pair::of(
                own_threshold_for_row[k].and_then(|t| avg.per_slice[t][k]),
            ),
            labels: Pair::of(label_scores[k]),
            labels_nested: Pair::of(chosen_for_row[k].and_then(|o| sweep.scores[o][k])),
            labels_own: Pair::of(own_for_row[k].and_then(|o| sweep.scores[o][k])),
        })
        .collect();
    let mean = |f: &dyn Fn(&SliceRow) -> Pair| {
        let r: Vec<f64> = rows.iter().filter_map(|x| f(x).v_rand).collect();
        let i: Vec<f64> = rows.iter().filter_map(|x| f(x).v_info).collect();
        let m = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        (m(&r), m(&i))
    };
    let means = Means {
        slices: rows.len(),
        one_pass: mean(&|r| r.one_pass),
        averaged: mean(&|r| r.averaged),
        averaged_at_half: mean(&|r| r.averaged_at_half),
        one_pass_threshold: one.v_rand_threshold,
        averaged_threshold: avg.v_rand_threshold,
        averaged_own_threshold: (!own_thresholds.is_empty())
            .then(|| mean(&|r| r.averaged_own_threshold)),
        labels: mean(&|r| r.labels),
        labels_nested: (!label_choices.is_empty()).then(|| mean(&|r| r.labels_nested)),
        labels_own: (!own_label_choices.is_empty()).then(|| mean(&|r| r.labels_own)),
        labels_best_setting,
    };
    let own_label_choices = own_label_choices
        .into_iter()
        .map(|(fold, o, v_rand_where_chosen)| LabelChoice {
            fold,
            v_rand_where_chosen,
            setting: Setting::of(&grid[o]),
        })
        .collect();
    Ok(Report {
        folds: folds.to_vec(),
        folds_scored: scored,
        averaging: format!("{averaging:?}").to_lowercase(),
        rows,
        means,
        label_choices,
        own_label_choices,
        own_thresholds,
    })
}

/// Per scored row (`which`: (slice, fold) of each), the value its fold was given.
fn for_each_row<T: Copy>(
    which: &[(usize, usize)],
    per_fold: impl IntoIterator<Item = (usize, T)>,
) -> Vec<Option<T>> {
    let mut rows = vec![None; which.len()];
    for (f, value) in per_fold {
        for (row, &(_, fold)) in rows.iter_mut().zip(which) {
            if fold == f {
                *row = Some(value);
            }
        }
    }
    rows
}

/// Cell maps (1 - p) of membrane maps, as the official evaluation takes them.
fn cells(maps: &[Array2<f32>]) -> Vec<Array2<f32>> {
    maps.iter().map(|m| m.mapv(|v| 1.0 - v)).collect()
}

/// `image`'s membrane probability map from `seg`, averaged over `averaging`.
fn probability_map(
    seg: &Segmenter,
    image: &io::Slice,
    averaging: Averaging,
) -> Result<Array2<f32>, TrainError> {
    let how = Inference {
        averaging,
        ..Inference::one_pass()
    };
    let mut p = Array2::<f32>::zeros(image.pixels.dim());
    segment_pixels(
        seg,
        PixelView::F32(image.pixels.view()),
        &image.name,
        &how,
        &mut || {},
        &|| false,
        p.view_mut(),
    )?;
    Ok(p)
}

/// `dir`, created if missing.
fn created(dir: PathBuf) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(&dir).map_err(io_err(&dir, "cannot create the folder"))?;
    Ok(dir)
}

/// Index of the threshold nearest `t`.
fn nearest(thresholds: &[f64], t: f64) -> usize {
    thresholds
        .iter()
        .enumerate()
        .min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs()))
        .map_or(0, |(i, _)| i)
}

/// Write `cv-report.md`, `cv-report.json` and `cv-slices.csv` into `out`.
pub fn write_report(out: &Path, r: &Report) -> Result<(), TrainError> {
    let f = |p: Pair| {
        (
            p.v_rand.map_or("-".into(), |v| format!("{v:.4}")),
            p.v_info.map_or("-".into(), |v| format!("{v:.4}")),
        )
    };
    let pair = |m: Option<(f64, f64)>| {
        m.map_or(("-".to_string(), "-".to_string()), |(a, b)| {
            (format!("{a:.4}"), format!("{b:.4}"))
        })
    };
    let mut csv = String::from(
        "slice,fold,one_pass_v_rand,one_pass_v_info,averaged_v_rand,averaged_v_info,averaged_at_half_v_rand,averaged_at_half_v_info,averaged_own_threshold_v_rand,averaged_own_threshold_v_info,labels_v_rand,labels_v_info,labels_nested_v_rand,labels_nested_v_info,labels_own_v_rand,labels_own_v_info\n",
    );
    let mut md = format!(
        "# Cross-validation: {} folds, {} of them scored ({} slices)\n\n\
         Each slice is scored by the fold model that never saw it (V_rand / V_info). one \
         pass and averaged ({}): official scores, thinning on, at the threshold best for \
         the mean over these slices ({:.1} and {:.1} on the cell map); averaged at 0.5: \
         membrane probability < 0.5 is cell; averaged, own threshold: at the threshold \
         best on the slices the fold's model trained on (below); labels: `segment-run label`'s defaults on \
         the averaged maps, each id one segment; labels, nested: the label setting best \
         on the other folds' slices; labels, model's own setting: the label setting best \
         on the slices the fold's model trained on (both below).\n\n\
         | | one pass | averaged | averaged at 0.5 | averaged, own threshold | labels | labels, nested | labels, model's own setting |\n|---|---|---|---|---|---|---|---|\n",
        r.folds.len(),
        r.folds_scored.len(),
        r.means.slices,
        r.averaging,
        r.means.one_pass_threshold,
        r.means.averaged_threshold,
    );
    let m = &r.means;
    let nested = pair(m.labels_nested);
    let own = pair(m.labels_own);
    let own_t = pair(m.averaged_own_threshold);
    let _ = writeln!(
        md,
        "| mean V_rand | {:.4} | {:.4} | {:.4} | {} | {:.4} | {} | {} |\n| mean V_info | {:.4} | {:.4} | {:.4} | {} | {:.4} | {} | {} |\n",
        m.one_pass.0,
        m.averaged.0,
        m.averaged_at_half.0,
        own_t.0,
        m.labels.0,
        nested.0,
        own.0,
        m.one_pass.1,
        m.averaged.1,
        m.averaged_at_half.1,
        own_t.1,
        m.labels.1,
        nested.1,
        own.1
    );
    for (choices, what) in [
        (
            &r.label_choices,
            "the nested column (each chosen on the other folds' slices)",
        ),
        (
            &r.own_label_choices,
            "the model's-own-setting column (each chosen on the slices the fold's model trained on)",
        ),
    ] {
        if choices.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "Label settings of {what}:\n\n| fold | V_rand there | setting |\n|---|---|---|"
        );
        for c in choices {
            let _ = writeln!(
                md,
                "| {} | {:.4} | `{}` |",
                c.fold, c.v_rand_where_chosen, c.setting
            );
        }
        md.push('\n');
    }
    if !r.own_thresholds.is_empty() {
        md.push_str("Thresholds of the own-threshold column (on the cell map; each best on the slices the fold's model trained on):\n\n| fold | threshold |\n|---|---|\n");
        for (fold, t) in &r.own_thresholds {
            let _ = writeln!(md, "| {fold} | {t:.1} |");
        }
        md.push('\n');
    }
    if let Some(((v_rand, v_info), setting)) = &m.labels_best_setting {
        let _ = writeln!(
            md,
            "Best label setting on all {} slices (chosen on them: optimistic, like the best \
             threshold): V_rand {v_rand:.4}, V_info {v_info:.4}, `{setting}`.\n",
            m.slices
        );
    }
    md.push_str("| slice | fold | one pass | averaged | averaged at 0.5 | averaged, own threshold | labels | labels, nested | labels, model's own setting |\n|---|---|---|---|---|---|---|---|---|\n");
    for row in &r.rows {
        let columns = [
            f(row.one_pass),
            f(row.averaged),
            f(row.averaged_at_half),
            f(row.averaged_own_threshold),
            f(row.labels),
            f(row.labels_nested),
            f(row.labels_own),
        ];
        let _ = write!(csv, "{},{}", row.slice, row.fold);
        let _ = write!(md, "| {} | {} |", row.slice, row.fold);
        for (v_rand, v_info) in &columns {
            let _ = write!(csv, ",{v_rand},{v_info}");
            let _ = write!(md, " {v_rand} / {v_info} |");
        }
        csv.push('\n');
        md.push('\n');
    }
    let json = serde_json::to_string_pretty(r).expect("serialisable");
    skipseg_runtime::io::write_atomic(&out.join("cv-slices.csv"), csv.as_bytes())?;
    skipseg_runtime::io::write_atomic(&out.join("cv-report.md"), md.as_bytes())?;
    skipseg_runtime::io::write_atomic(&out.join("cv-report.json"), json.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_folds_of_thirty_are_blocks_of_five_covering_every_slice_once() {
        let f = folds(30, 6);
        assert_eq!(f.len(), 6);
        assert_eq!(f[0], vec![0, 1, 2, 3, 4]);
        assert_eq!(f[5], vec![25, 26, 27, 28, 29]);
        let all: Vec<usize> = f.concat();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        assert_eq!(val_spec(&f[1]), "5-9");
        // uneven: sizes differ by at most one
        let g = folds(7, 3);
        assert_eq!(g.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 3]);
    }

    #[test]
    fn val_spec_parses_back() {
        for f in folds(30, 6) {
            assert_eq!(
                crate::data::parse_indices(&val_spec(&f)).expect("parses"),
                f
            );
        }
    }
}
