//! The paper's skip-connection ablation (Section 3.2, Table 3, Fig. 3): one architecture
//! trained four times with the same recipe and seed, (1) long and short skips, (2) short
//! skips only, (3) long skips only, (4) neither; then a table of each variant's best
//! validation loss with its training loss and validation V_rand, and one chart with the
//! training and validation curves of all four.
//!
//! Each variant trains into its own run folder (`OUT/<variant>/`), which is an ordinary
//! resumable run: running the ablation again continues unfinished variants and skips
//! finished ones.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use skipseg_runtime::io::write_atomic;

use crate::training::{TrainConfig, TrainError, TrainState, read_config, read_state};

/// One of the four skip configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Variant {
    /// Long (encoder -> decoder) and short (residual) skips: the paper's model 1.
    LongShort,
    /// Short skips only: model 2.
    ShortOnly,
    /// Long skips only: model 3.
    LongOnly,
    /// Neither ("could not be trained" at the paper's depth).
    Neither,
}

impl Variant {
    /// All four, in the paper's order.
    pub const ALL: [Variant; 4] = [
        Variant::LongShort,
        Variant::ShortOnly,
        Variant::LongOnly,
        Variant::Neither,
    ];

    /// The run folder's name.
    pub fn dir(self) -> &'static str {
        match self {
            Variant::LongShort => "long-short",
            Variant::ShortOnly => "short-only",
            Variant::LongOnly => "long-only",
            Variant::Neither => "neither",
        }
    }

    /// A label for tables and legends.
    pub fn label(self) -> &'static str {
        match self {
            Variant::LongShort => "long and short skips",
            Variant::ShortOnly => "only short skips",
            Variant::LongOnly => "only long skips",
            Variant::Neither => "no skips",
        }
    }

    /// (long skips, short skips).
    pub fn switches(self) -> (bool, bool) {
        match self {
            Variant::LongShort => (true, true),
            Variant::ShortOnly => (false, true),
            Variant::LongOnly => (true, false),
            Variant::Neither => (false, false),
        }
    }

    /// `base` with this variant's skips: everything else (recipe, seed, data) identical.
    pub fn config(self, base: &TrainConfig) -> TrainConfig {
        let mut cfg = base.clone();
        let (long, short) = self.switches();
        cfg.arch.long_skips = long;
        cfg.arch.short_skips = short;
        cfg.arch.name = format!("{}-{}", base.arch.name, self.dir());
        cfg
    }
}

/// One row of the ablation table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub variant: Variant,
    pub label: &'static str,
    pub epochs_done: usize,
    /// Epoch of the lowest validation loss.
    pub best_epoch: usize,
    pub best_val_loss: f64,
    /// Training loss of that epoch.
    pub train_loss_at_best: f64,
    /// Validation V_rand (one pass) of that epoch.
    pub val_v_rand_at_best: Option<f64>,
    /// Highest validation V_rand of the run.
    pub best_val_v_rand: Option<f64>,
    /// Wall time of the run's epochs.
    pub seconds: f64,
}

impl Row {
    /// The row of a finished (or partly finished) variant run.
    pub fn of(variant: Variant, state: &TrainState) -> Row {
        let best = state
            .history
            .iter()
            .filter(|r| r.val_loss.is_finite())
            .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss));
        Row {
            variant,
            label: variant.label(),
            epochs_done: state.epochs_done,
            best_epoch: best.map_or(0, |r| r.epoch),
            best_val_loss: best.map_or(f64::NAN, |r| r.val_loss),
            train_loss_at_best: best.map_or(f64::NAN, |r| r.train_loss),
            val_v_rand_at_best: best.and_then(|r| r.val_v_rand),
            best_val_v_rand: state
                .history
                .iter()
                .filter_map(|r| r.val_v_rand)
                .filter(|v| v.is_finite())
                .max_by(f64::total_cmp),
            seconds: state.history.iter().map(|r| r.seconds).sum(),
        }
    }
}

/// The run folder of `variant` under `out`.
pub fn run_dir(out: &Path, variant: Variant) -> PathBuf {
    out.join(variant.dir())
}

/// The variants of `out` that have a `state.json`, with their states.
pub fn states(out: &Path) -> Result<Vec<(Variant, TrainState)>, TrainError> {
    let mut found = Vec::new();
    for v in Variant::ALL {
        let dir = run_dir(out, v);
        if dir.join("state.json").exists() {
            found.push((v, read_state(&dir)?));
        }
    }
    Ok(found)
}

/// Write `ablation.csv`, `ablation.md`, `ablation.json` and `curves.png` into `out`
/// from the variant runs found there; returns the rows.
pub fn write_report(out: &Path) -> Result<Vec<Row>, TrainError> {
    let runs = states(out)?;
    let rows: Vec<Row> = runs.iter().map(|(v, s)| Row::of(*v, s)).collect();
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());

    let mut csv = String::from(
        "variant,epochs,best_epoch,train_loss_at_best,best_val_loss,val_v_rand_at_best,best_val_v_rand,seconds\n",
    );
    let mut md = String::from(
        "| model | training loss | validation loss | epoch | val V_rand (that epoch) | best val V_rand | epochs run | wall time |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let _ = writeln!(
            csv,
            "{},{},{},{:.6},{:.6},{},{},{:.0}",
            r.variant.dir(),
            r.epochs_done,
            r.best_epoch,
            r.train_loss_at_best,
            r.best_val_loss,
            opt(r.val_v_rand_at_best),
            opt(r.best_val_v_rand),
            r.seconds
        );
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {} | {} | {} | {} | {:.0} s |",
            r.label,
            r.train_loss_at_best,
            r.best_val_loss,
            r.best_epoch,
            opt(r.val_v_rand_at_best),
            opt(r.best_val_v_rand),
            r.epochs_done,
            r.seconds
        );
    }
    write_atomic(&out.join("ablation.csv"), csv.as_bytes())?;
    write_atomic(&out.join("ablation.md"), md.as_bytes())?;
    let json = serde_json::to_string_pretty(&rows).expect("rows serialise");
    write_atomic(&out.join("ablation.json"), json.as_bytes())?;
    if !runs.is_empty() {
        let curves: Vec<crate::plot::RunCurves> = runs
            .iter()
            .map(|(v, s)| crate::plot::RunCurves {
                name: v.label().to_string(),
                train: s.history.iter().map(|r| r.train_loss).collect(),
                val: s.history.iter().map(|r| r.val_loss).collect(),
            })
            .collect();
        let loss = read_config(&run_dir(out, runs[0].0))?.loss.title();
        let path = out.join("curves.png");
        let chart = crate::plot::loss_curves(
            "Skip ablation: training (dashed) and validation (solid) loss per epoch",
            loss,
            &curves,
            1000,
            560,
        )
        .map_err(|e| TrainError::Checkpoint {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        chart.write_png(&path)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::EpochRecord;

    fn base() -> TrainConfig {
        let spec =
            crate::presets::load(&crate::presets::models_dir().join("small.json")).expect("preset");
        TrainConfig::paper(
            spec,
            crate::loss::LossKind::Bce,
            3,
            "imgs".into(),
            "labs".into(),
        )
    }

    #[test]
    fn variants_change_the_skips_and_nothing_else() {
        let base = base();
        let mut seen = std::collections::HashSet::new();
        for v in Variant::ALL {
            let cfg = v.config(&base);
            assert_eq!(
                (cfg.arch.long_skips, cfg.arch.short_skips),
                v.switches(),
                "{v:?}"
            );
            assert!(seen.insert(v.switches()), "{v:?} repeats another variant");
            // everything but the switches and the name is the base recipe
            let mut back = cfg.clone();
            back.arch.long_skips = base.arch.long_skips;
            back.arch.short_skips = base.arch.short_skips;
            back.arch.name = base.arch.name.clone();
            assert_eq!(back, base, "{v:?}");
        }
    }

    #[test]
    fn variants_build_networks_with_and_without_each_skip() {
        // the exported graph of each variant: long skips are `skip.*` nodes, short skips
        // the `*.add` sums inside blocks
        let base = base();
        for v in Variant::ALL {
            let cfg = v.config(&base);
            let model =
                crate::model::ResFcn::<crate::backend::Cpu>::new(&cfg.arch, &Default::default());
            let proto = crate::export::to_onnx(&model, Default::default());
            let names: Vec<&str> = proto
                .graph
                .as_ref()
                .expect("graph")
                .node
                .iter()
                .map(|n| n.name.as_str())
                .collect();
            let long = names.iter().filter(|n| n.starts_with("skip.")).count();
            let short = names
                .iter()
                .filter(|n| n.contains(".block") && n.ends_with(".add"))
                .count();
            let (want_long, want_short) = v.switches();
            assert_eq!(long > 0, want_long, "{v:?}: {long} long-skip nodes");
            assert_eq!(short > 0, want_short, "{v:?}: {short} block sums");
        }
    }

    #[test]
    fn the_report_takes_the_lowest_validation_loss_and_its_training_loss() {
        let out =
            std::env::temp_dir().join(format!("skipseg-ablation-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let base = base();
        // two variants with hand-made histories
        for (v, vals) in [
            (Variant::LongShort, [0.5, 0.3, 0.35]),
            (Variant::LongOnly, [0.6, 0.55, 0.4]),
        ] {
            let dir = run_dir(&out, v);
            std::fs::create_dir_all(&dir).expect("test file");
            let cfg = v.config(&base);
            std::fs::write(
                dir.join("config.json"),
                serde_json::to_string(&cfg).expect("test file"),
            )
            .expect("test file");
            let history: Vec<EpochRecord> = vals
                .iter()
                .enumerate()
                .map(|(i, &val_loss)| EpochRecord {
                    epoch: i + 1,
                    train_loss: 1.0 - 0.1 * i as f64,
                    val_loss,
                    val_v_rand: Some(0.8 + 0.01 * i as f64),
                    val_v_info: Some(0.9),
                    seconds: 10.0,
                })
                .collect();
            let state = TrainState {
                epochs_done: 3,
                best_val_loss: 0.0,
                best_epoch: 0,
                best_v_rand: None,
                best_v_rand_epoch: 0,
                history,
                layer_names: vec![],
                weight_updates: vec![],
                checkpoint: String::new(),
            };
            std::fs::write(
                dir.join("state.json"),
                serde_json::to_string(&state).expect("test file"),
            )
            .expect("test file");
        }
        let rows = write_report(&out).expect("report");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].variant, Variant::LongShort);
        assert_eq!((rows[0].best_epoch, rows[0].best_val_loss), (2, 0.3));
        assert!((rows[0].train_loss_at_best - 0.9).abs() < 1e-12);
        assert_eq!(rows[0].val_v_rand_at_best, Some(0.81));
        assert_eq!((rows[1].best_epoch, rows[1].best_val_loss), (3, 0.4));
        assert_eq!(rows[1].best_val_v_rand, Some(0.8 + 0.02));
        assert_eq!(rows[0].seconds, 30.0);
        let md = std::fs::read_to_string(out.join("ablation.md")).expect("test file");
        assert!(
            md.contains("| long and short skips | 0.900 | 0.300 | 2 |"),
            "{md}"
        );
        let png = std::fs::read(out.join("curves.png")).expect("test file");
        assert_eq!(&png[1..4], b"PNG");
        let _ = std::fs::remove_dir_all(&out);
    }
}
