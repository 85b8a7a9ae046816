//! What a training run writes for people: `metrics.csv` + `loss.png` (training and
//! validation loss per epoch) + `val_scores.png` (validation V_rand and V_info per
//! epoch) and `weight_updates.csv` + `weight_updates.png` (mean absolute parameter
//! update per layer per epoch, layers input -> output: the paper's Fig. 4 view). The
//! charts mark the epoch batch norm was frozen from and the epochs each checkpoint
//! rule picks. All files are written atomically.

use std::fmt::Write as _;
use std::path::Path;

use skipseg_runtime::io::write_atomic;

use crate::plot::{BLUE, Chart, GREEN, GREY, Heatmap, LineChart, Marker, ORANGE, RED, Series};
use crate::training::{TrainConfig, TrainError, TrainState};

/// Write every report file of `state` into `out`.
pub fn write_all(out: &Path, state: &TrainState, cfg: &TrainConfig) -> Result<(), TrainError> {
    let mut csv = String::from("epoch,train_loss,val_loss,val_v_rand,val_v_info,seconds\n");
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for r in &state.history {
        let _ = writeln!(
            csv,
            "{},{:.6},{:.6},{},{},{:.1}",
            r.epoch,
            r.train_loss,
            r.val_loss,
            opt(r.val_v_rand),
            opt(r.val_v_info),
            r.seconds
        );
    }
    write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;

    let mut wu = String::from("epoch");
    for n in &state.layer_names {
        let _ = write!(wu, ",{n}");
    }
    wu.push('\n');
    for (e, row) in state.weight_updates.iter().enumerate() {
        let _ = write!(wu, "{}", e + 1);
        for v in row {
            let _ = write!(wu, ",{v:.4e}");
        }
        wu.push('\n');
    }
    write_atomic(&out.join("weight_updates.csv"), wu.as_bytes())?;

    for (name, chart) in charts(state, cfg) {
        let path = out.join(name);
        match chart {
            Ok(chart) => chart.write_png(&path)?,
            Err(e) => {
                return Err(TrainError::Checkpoint {
                    path,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The run's charts, by file name: `loss.png`, `val_scores.png` (when the run scored
/// V_rand / V_info) and `weight_updates.png`.
pub fn charts(
    state: &TrainState,
    cfg: &TrainConfig,
) -> Vec<(&'static str, Result<Chart, crate::plot::PlotError>)> {
    let mut out = Vec::new();
    let epoch_of_min = |values: &[f64]| {
        values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i + 1)
    };
    let freeze = (1..=state.history.len())
        .find(|&e| cfg.frozen_bn(e))
        .map(|epoch| Marker {
            epoch,
            label: "batch norm frozen from here",
            colour: GREY,
        });

    let train: Vec<f64> = state.history.iter().map(|r| r.train_loss).collect();
    let val: Vec<f64> = state.history.iter().map(|r| r.val_loss).collect();
    let loss_name = cfg.loss.title();
    let mut markers: Vec<Marker> = freeze.clone().into_iter().collect();
    if let Some(best) = epoch_of_min(&val) {
        markers.push(Marker {
            epoch: best,
            label: "lowest val loss",
            colour: ORANGE,
        });
    }
    let title = format!("{loss_name} per epoch");
    let loss = LineChart {
        title: &title,
        x_title: "epoch",
        y_title: loss_name,
        series: vec![
            Series {
                name: "training",
                values: &train,
                colour: BLUE,
                dashed: false,
            },
            Series {
                name: "validation",
                values: &val,
                colour: ORANGE,
                dashed: false,
            },
        ],
        markers,
        y_range: None,
    };
    out.push(("loss.png", loss.render(800, 480)));

    // V_rand / V_info exist for every epoch or for none (the scorer is wired in or not)
    let v_rand: Vec<f64> = state.history.iter().filter_map(|r| r.val_v_rand).collect();
    let v_info: Vec<f64> = state.history.iter().filter_map(|r| r.val_v_info).collect();
    if !v_rand.is_empty() {
        let negated: Vec<f64> = v_rand.iter().map(|v| -v).collect();
        let mut markers: Vec<Marker> = freeze.clone().into_iter().collect();
        if let Some(best) = epoch_of_min(&negated) {
            markers.push(Marker {
                epoch: best,
                label: "highest V_rand",
                colour: GREEN,
            });
        }
        let scores = LineChart {
            title: "validation scores, one pass (ISBI 2012 definition)",
            x_title: "epoch",
            y_title: "score",
            series: vec![
                Series {
                    name: "V_rand",
                    values: &v_rand,
                    colour: GREEN,
                    dashed: false,
                },
                Series {
                    name: "V_info",
                    values: &v_info,
                    colour: RED,
                    dashed: false,
                },
            ],
            markers,
            y_range: Some((0.0, 1.0)),
        };
        out.push(("val_scores.png", scores.render(800, 480)));
    }

    let stages: Vec<String> = state
        .layer_names
        .iter()
        .map(|n| n.split('.').next().unwrap_or(n).to_string())
        .collect();
    let updates = Heatmap {
        title: "mean abs weight update per layer",
        x_title: "layers, input -> output",
        y_title: "epoch",
        rows: &state.weight_updates,
        cell: heatmap_cell(state.layer_names.len(), state.weight_updates.len()),
        column_groups: stages,
    };
    out.push(("weight_updates.png", updates.render()));
    out
}

/// Cell size of the weight-update map: about 900 x 600 pixels of cells, 2 to 12 pixels
/// wide and 2 to 24 high.
pub fn heatmap_cell(columns: usize, rows: usize) -> (usize, usize) {
    let fit = |px: usize, n: usize, most: usize| (px / n.max(1)).clamp(2, most);
    (fit(900, columns, 12), fit(600, rows, 24))
}
