//! The training loop (paper Section 3.1): full 512x512 slices, batch size 1, on-the-fly
//! augmentation, RMSprop, best-validation checkpoint, per-layer weight-update log,
//! atomic per-epoch checkpoints that `resume` continues from with the same optimizer
//! state, and an ONNX export of the best model at the end.
//!
//! Determinism: every epoch re-seeds its own RNG (shuffling, augmentation) and the
//! backend's RNG (dropout) from `(seed, epoch)`, so a resumed run follows exactly the
//! path of an uninterrupted one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{GradientsParams, Optimizer, RmsPropConfig};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use ndarray::{Array2, Array4};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use skipseg_runtime::arch::ArchSpec;
use skipseg_runtime::onnx::{self, InferenceDefaults, IntensityStats, Preprocessing};

use crate::augment::{AugmentConfig, augment_pair};
use crate::data::{Dataset, Sample};
use crate::loss::LossKind;
use crate::model::ResFcn;
use crate::{export, tensor};

/// Everything that defines a run (written to `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub arch: ArchSpec,
    pub loss: LossKind,
    pub epochs: usize,
    pub seed: u64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// RMSprop smoothing constant (Keras' rho).
    pub rms_alpha: f32,
    pub rms_epsilon: f32,
    pub augment: bool,
    pub preprocessing: Preprocessing,
    pub images: PathBuf,
    pub labels: PathBuf,
    pub val: Vec<usize>,
    /// From this epoch on (exclusive), batch norms are frozen: each epoch starts by
    /// re-estimating their statistics with precise BN and trains with those fixed
    /// statistics, as inference uses them (`None`: batch statistics throughout).
    #[serde(default)]
    pub freeze_bn_after: Option<usize>,
    /// Images per step: each step stacks this many augmented slices (the step's own and
    /// the next ones in the epoch's order), so batch norm sees a batch of more than one
    /// image (1: the paper's batch size 1, one slice per step).
    #[serde(default = "one")]
    pub crops: usize,
    /// Side of the random square crop taken from each augmented slice (a multiple of the
    /// down-sampling factor; `None`: whole slices). Normalisation uses the whole slice's
    /// statistics, as inference does.
    #[serde(default)]
    pub crop_size: Option<usize>,
}

fn one() -> usize {
    1
}

impl TrainConfig {
    /// The paper's recipe: RMSprop, learning rate 1e-3, weight decay 1e-3.
    pub fn paper(
        arch: ArchSpec,
        loss: LossKind,
        epochs: usize,
        images: PathBuf,
        labels: PathBuf,
    ) -> Self {
        Self {
            arch,
            loss,
            epochs,
            seed: 2016,
            learning_rate: 1e-3,
            weight_decay: 1e-3,
            rms_alpha: 0.9,
            rms_epsilon: 1e-7,
            augment: true,
            preprocessing: Preprocessing::default(),
            images,
            labels,
            val: (25..30).collect(),
            freeze_bn_after: None,
            crops: 1,
            crop_size: None,
        }
    }

    /// Does `epoch` train with frozen batch-norm statistics?
    pub fn frozen_bn(&self, epoch: usize) -> bool {
        self.arch.batch_norm && self.freeze_bn_after.is_some_and(|e| epoch > e)
    }

    /// RMSprop as the paper: no momentum, L2 weight decay added to the gradient.
    pub fn optimizer_config(&self) -> RmsPropConfig {
        RmsPropConfig::new()
            .with_alpha(self.rms_alpha)
            .with_momentum(0.0)
            .with_epsilon(self.rms_epsilon)
            .with_weight_decay(Some(WeightDecayConfig::new(self.weight_decay as f32)))
    }
}

/// One epoch's numbers (a row of `metrics.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_v_rand: Option<f64>,
    pub val_v_info: Option<f64>,
    pub seconds: f64,
}

/// What survives a crash: written last, atomically, after the checkpoint it names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    pub best_val_loss: f64,
    pub best_epoch: usize,
    /// Best validation V_rand so far and its epoch (`best-vrand.model.mpk`), when a
    /// scorer is wired in.
    #[serde(default)]
    pub best_v_rand: Option<f64>,
    #[serde(default)]
    pub best_v_rand_epoch: usize,
    pub history: Vec<EpochRecord>,
    pub layer_names: Vec<String>,
    /// Mean absolute update per layer (rows: epochs, columns: layers input -> output).
    pub weight_updates: Vec<Vec<f64>>,
    pub checkpoint: String,
}

/// Progress reported to the caller (the binary draws a progress bar).
#[derive(Debug, Clone)]
pub enum Event<'a> {
    EpochStart {
        epoch: usize,
        epochs: usize,
        steps: usize,
    },
    Step {
        loss: f64,
    },
    EpochEnd(&'a EpochRecord),
}

/// Validation scores from probability maps and membrane targets, if a scorer is wired in.
pub type Scorer = dyn Fn(&[Array2<f32>], &[Array2<f32>]) -> Option<(f64, f64)>;

/// Training errors, naming the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    #[error(transparent)]
    Runtime(#[from] skipseg_runtime::Error),
}

pub(crate) fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// A sample turned into network input `[1, 1, H, W]` and target.
fn to_tensors<B: Backend>(
    image: &Array2<f32>,
    membrane: &Array2<f32>,
    prep: &Preprocessing,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let (h, w) = image.dim();
    let norm = prep.for_image(&IntensityStats::of(image.iter()));
    let x = Array4::from_shape_fn((1, 1, h, w), |(_, _, y, x)| norm.apply(image[[y, x]]));
    let t = Array4::from_shape_fn((1, 1, h, w), |(_, _, y, x)| membrane[[y, x]]);
    (
        tensor::from_array(&x, device),
        tensor::from_array(&t, device),
    )
}

/// One training step's batch: `cfg.crops` slices starting at position `i` of the
/// epoch's `order`, each augmented (when on), normalised with its own statistics and
/// cropped at a random position to `cfg.crop_size`, stacked into `[crops, 1, S, S]`.
/// With one crop and no crop size this is exactly the paper's step (one whole slice).
pub fn training_batch<B: Backend, R: rand::Rng>(
    rng: &mut R,
    train: &[Sample],
    order: &[usize],
    i: usize,
    cfg: &TrainConfig,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let crops = cfg.crops.max(1);
    let mut xs = Vec::with_capacity(crops);
    let mut ts = Vec::with_capacity(crops);
    for k in 0..crops {
        let s = &train[order[(i + k) % order.len()]];
        let (img, lab) = if cfg.augment {
            augment_pair(rng, &AugmentConfig::default(), &s.image, &s.membrane)
        } else {
            (s.image.clone(), s.membrane.clone())
        };
        let norm = cfg.preprocessing.for_image(&IntensityStats::of(img.iter()));
        let (h, w) = img.dim();
        let (ch, cw) = match cfg.crop_size {
            Some(c) => (c.min(h), c.min(w)),
            None => (h, w),
        };
        let (y0, x0) = if (ch, cw) == (h, w) {
            (0, 0)
        } else {
            (rng.random_range(0..=h - ch), rng.random_range(0..=w - cw))
        };
        let x = Array4::from_shape_fn((1, 1, ch, cw), |(_, _, y, x)| {
            norm.apply(img[[y0 + y, x0 + x]])
        });
        let t = Array4::from_shape_fn((1, 1, ch, cw), |(_, _, y, x)| lab[[y0 + y, x0 + x]]);
        xs.push(tensor::from_array::<B>(&x, device));
        ts.push(tensor::from_array::<B>(&t, device));
    }
    (Tensor::cat(xs, 0), Tensor::cat(ts, 0))
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .map(|v| v[0])
        .unwrap_or(f64::NAN)
}

fn flat_weights<B: Backend>(model: &ResFcn<B>) -> Vec<Vec<f32>> {
    model
        .layer_weights()
        .into_iter()
        .map(|(_, w)| {
            w.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default()
        })
        .collect()
}

/// `model` with precise batch-norm statistics over the (unaugmented) training slices:
/// what validation, checkpoints, export and frozen-statistics training use.
pub fn recalibrated<B: AutodiffBackend>(
    model: &ResFcn<B>,
    train: &[Sample],
    cfg: &TrainConfig,
    device: &B::Device,
) -> ResFcn<B::InnerBackend> {
    let valid = model.valid();
    if cfg.arch.batch_norm {
        valid.recalibrate_batch_norm(train.iter().map(|s| {
            to_tensors::<B::InnerBackend>(&s.image, &s.membrane, &cfg.preprocessing, device).0
        }));
    }
    valid
}

/// The training-time forward pass with frozen batch norms: every batch norm normalises
/// with its stored (running) statistics, as inference does, while gradients flow.
pub fn frozen_forward<B: Backend>(model: &ResFcn<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    model.forward_with(x, &mut |bn, x| {
        let (mean, var) = (bn.running_mean.value(), bn.running_var.value());
        crate::model::normalise(bn, x, mean, var)
    })
}

/// Validation loss and membrane probability maps, in inference mode.
pub fn validate<B: Backend>(
    model: &ResFcn<B>,
    val: &[Sample],
    cfg: &TrainConfig,
    device: &B::Device,
) -> (f64, Vec<Array2<f32>>) {
    let mut total = 0.0;
    let mut maps = Vec::new();
    for s in val {
        let (x, t) = to_tensors::<B>(&s.image, &s.membrane, &cfg.preprocessing, device);
        let logits = model.forward(x);
        total += scalar(cfg.loss.compute(logits.clone(), t));
        let p = tensor::to_array(burn::tensor::activation::sigmoid(logits));
        let (h, w) = s.image.dim();
        maps.push(
            p.into_shape_with_order((h, w))
                .unwrap_or_else(|_| Array2::zeros((h, w))),
        );
    }
    (total / val.len().max(1) as f64, maps)
}

/// Run (or resume) training into `out`; returns the final state.
pub fn train<B: AutodiffBackend>(
    cfg: &TrainConfig,
    data: &Dataset,
    out: &Path,
    resume: bool,
    device: &B::Device,
    scorer: Option<&Scorer>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<TrainState, TrainError> {
    std::fs::create_dir_all(out).map_err(io_err(out, "cannot create run folder"))?;
    let recorder = Rec::default();
    let optim_cfg = cfg.optimizer_config();
    let mut optim = optim_cfg.init::<B, ResFcn<B>>();
    let (mut model, mut state) = if resume {
        // the config as resumed (new total of epochs, schedule of the epochs to come)
        let text = serde_json::to_string_pretty(cfg).expect("config serialises");
        skipseg_runtime::io::write_atomic(&out.join("config.json"), text.as_bytes())?;
        let state = read_state(out)?;
        let ck = out.join(&state.checkpoint);
        let (model_bytes, optim_bytes) = (
            read(&ck.with_extension("model.mpk"))?,
            read(&ck.with_extension("optim.mpk"))?,
        );
        let model_record =
            recorder
                .load(model_bytes, device)
                .map_err(|e| TrainError::Checkpoint {
                    path: ck.clone(),
                    reason: format!("model record: {e}"),
                })?;
        let optim_record =
            recorder
                .load(optim_bytes, device)
                .map_err(|e| TrainError::Checkpoint {
                    path: ck.clone(),
                    reason: format!("optimizer record: {e}"),
                })?;
        optim = optim.load_record(optim_record);
        (
            ResFcn::<B>::new(&cfg.arch, device).load_record(model_record),
            state,
        )
    } else {
        B::seed(device, cfg.seed);
        // burn initialises parameters lazily, on first use; materialise them now, right
        // after seeding, so later draws (dropout) cannot change the initial weights
        let lazy = ResFcn::<B>::new(&cfg.arch, device);
        let model = ResFcn::<B>::new(&cfg.arch, device).load_record(lazy.into_record());
        let config_path = out.join("config.json");
        let text = serde_json::to_string_pretty(cfg).expect("config serialises");
        skipseg_runtime::io::write_atomic(&config_path, text.as_bytes())?;
        let layer_names = model.layer_weights().into_iter().map(|(n, _)| n).collect();
        let state = TrainState {
            epochs_done: 0,
            best_val_loss: f64::INFINITY,
            best_epoch: 0,
            best_v_rand: None,
            best_v_rand_epoch: 0,
            history: Vec::new(),
            layer_names,
            weight_updates: Vec::new(),
            checkpoint: String::new(),
        };
        (model, state)
    };

    // the end-of-epoch model with precise statistics, which a following frozen epoch
    // starts from (the weights have not moved since)
    let mut calibrated: Option<ResFcn<B::InnerBackend>> = None;
    for epoch in state.epochs_done + 1..=cfg.epochs {
        let started = Instant::now();
        let epoch_seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64);
        B::seed(device, epoch_seed);
        let mut rng = StdRng::seed_from_u64(epoch_seed);
        let before = flat_weights(&model);
        let mut order: Vec<usize> = (0..data.train.len()).collect();
        order.shuffle(&mut rng);
        on_event(Event::EpochStart {
            epoch,
            epochs: cfg.epochs,
            steps: order.len(),
        });
        let frozen = cfg.frozen_bn(epoch);
        if frozen {
            // start from precise statistics of the weights as they are now (deterministic,
            // so a resumed run, which recomputes them, computes the same)
            let inner = calibrated
                .take()
                .unwrap_or_else(|| recalibrated(&model, &data.train, cfg, device));
            model = ResFcn::from_inner(inner);
        }
        let mut total = 0.0;
        for i in 0..order.len() {
            let (x, t) = training_batch::<B, _>(&mut rng, &data.train, &order, i, cfg, device);
            let logits = if frozen {
                frozen_forward(&model, x)
            } else {
                model.forward(x)
            };
            let loss = cfg.loss.compute(logits, t);
            let value = scalar(loss.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.learning_rate, model, grads);
            total += value;
            on_event(Event::Step { loss: value });
        }
        let train_loss = total / order.len().max(1) as f64;
        let valid = recalibrated(&model, &data.train, cfg, device);
        let (val_loss, maps) = validate(&valid, &data.val, cfg, device);
        let targets: Vec<_> = data.val.iter().map(|s| s.membrane.clone()).collect();
        let scores = scorer.and_then(|f| f(&maps, &targets));
        let after = flat_weights(&model);
        state.weight_updates.push(
            before
                .iter()
                .zip(&after)
                .map(|(a, b)| {
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs() as f64)
                        .sum::<f64>()
                        / a.len().max(1) as f64
                })
                .collect(),
        );
        let record = EpochRecord {
            epoch,
            train_loss,
            val_loss,
            val_v_rand: scores.map(|s| s.0),
            val_v_info: scores.map(|s| s.1),
            seconds: started.elapsed().as_secs_f64(),
        };
        let better_loss = val_loss < state.best_val_loss;
        let better_v_rand = record
            .val_v_rand
            .is_some_and(|v| state.best_v_rand.is_none_or(|best| v > best));
        if better_loss || better_v_rand {
            let bytes = recorder
                .record(valid.clone().into_record(), ())
                .map_err(|e| ck_err(out, e))?;
            if better_loss {
                state.best_val_loss = val_loss;
                state.best_epoch = epoch;
                skipseg_runtime::io::write_atomic(
                    &out.join(Selection::ValLoss.file_name()),
                    &bytes,
                )?;
            }
            if better_v_rand {
                state.best_v_rand = record.val_v_rand;
                state.best_v_rand_epoch = epoch;
                skipseg_runtime::io::write_atomic(&out.join(Selection::VRand.file_name()), &bytes)?;
            }
        }
        if cfg.frozen_bn(epoch + 1) {
            calibrated = Some(valid);
        }
        // checkpoint first, then the state that names it (the commit point)
        let name = format!("checkpoint-{epoch:04}");
        let ck = out.join(&name);
        let model_bytes = recorder
            .record(model.clone().into_record(), ())
            .map_err(|e| ck_err(out, e))?;
        let optim_bytes = recorder
            .record(optim.to_record(), ())
            .map_err(|e| ck_err(out, e))?;
        skipseg_runtime::io::write_atomic(&ck.with_extension("model.mpk"), &model_bytes)?;
        skipseg_runtime::io::write_atomic(&ck.with_extension("optim.mpk"), &optim_bytes)?;
        let previous = std::mem::replace(&mut state.checkpoint, name);
        state.epochs_done = epoch;
        state.history.push(record);
        let text = serde_json::to_string(&state).expect("state serialises");
        skipseg_runtime::io::write_atomic(&out.join("state.json"), text.as_bytes())?;
        if !previous.is_empty() {
            let old = out.join(previous);
            let _ = std::fs::remove_file(old.with_extension("model.mpk"));
            let _ = std::fs::remove_file(old.with_extension("optim.mpk"));
        }
        crate::report::write_all(out, &state, cfg)?;
        on_event(Event::EpochEnd(state.history.last().expect("just pushed")));
    }
    Ok(state)
}

/// The `state.json` of a run folder: history, checkpoint names, weight updates.
pub fn read_state(out: &Path) -> Result<TrainState, TrainError> {
    let path = out.join("state.json");
    let text =
        std::fs::read_to_string(&path).map_err(io_err(&path, "cannot read training state"))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        reason: format!("corrupt state: {e}"),
    })
}

/// The `config.json` of a run folder.
pub fn read_config(out: &Path) -> Result<TrainConfig, TrainError> {
    let path = out.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path, "cannot read run config"))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        reason: format!("not a run config: {e}"),
    })
}

/// Epochs a run folder has completed (from its `state.json`).
pub fn epochs_done(out: &Path) -> Result<usize, TrainError> {
    Ok(read_state(out)?.epochs_done)
}

fn ck_err(out: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: out.to_path_buf(),
        reason: e.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TrainError> {
    std::fs::read(path).map_err(io_err(path, "cannot read checkpoint"))
}

/// Which of a run's best checkpoints to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Selection {
    /// Lowest validation loss (the paper's rule).
    #[default]
    ValLoss,
    /// Highest validation V_rand (the challenge's score).
    VRand,
}

impl Selection {
    /// The checkpoint file this selection keeps in the run folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Selection::ValLoss => "best.model.mpk",
            Selection::VRand => "best-vrand.model.mpk",
        }
    }

    /// The epoch of this selection's checkpoint in `state` (0: none yet).
    pub fn epoch(self, state: &TrainState) -> usize {
        match self {
            Selection::ValLoss => state.best_epoch,
            Selection::VRand => state.best_v_rand_epoch,
        }
    }
}

/// Load a best checkpoint of a run and export it as ONNX to `path`, recording how the
/// model is meant to be run (`inference`) in its metadata.
pub fn export_best<B: Backend>(
    cfg: &TrainConfig,
    out: &Path,
    selection: Selection,
    inference: InferenceDefaults,
    path: &Path,
    device: &B::Device,
) -> Result<ResFcn<B>, TrainError> {
    let best = out.join(selection.file_name());
    let record = Rec::default()
        .load(read(&best)?, device)
        .map_err(|e| TrainError::Checkpoint {
            path: best.clone(),
            reason: e.to_string(),
        })?;
    let model = ResFcn::<B>::new(&cfg.arch, device).load_record(record);
    let mut proto = export::to_onnx(&model, cfg.preprocessing);
    let mut meta = onnx::ModelMeta::from_model(&proto, &path.display().to_string())?;
    meta.inference = inference;
    meta.write_into(&mut proto);
    onnx::write_model(&proto, path)?;
    Ok(model)
}
