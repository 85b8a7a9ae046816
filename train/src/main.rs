//! `segment-train`: inspect architectures, write parity fixtures (and, later, train).

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::Module;
use clap::{Parser, Subcommand};
use skipseg_runtime::arch::{BlockKind, Level};
use skipseg_train::backend::Cpu;
use skipseg_train::loss::LossKind;
use skipseg_train::model::ResFcn;
use skipseg_train::training::{self, Event, Selection, TrainConfig};
use skipseg_train::{data, fixtures, presets};

#[derive(Parser)]
#[command(
    name = "segment-train",
    version,
    about = "Train and export the skipseg residual FCN"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print parameter count, FLOPs per 512x512 image and structure of architectures.
    Arch {
        /// Architecture JSON files (e.g. models/table1.json).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Image size for the FLOP count.
        #[arg(long, default_value_t = 512)]
        size: usize,
    },
    /// Train on a folder of images and labels (ISBI 2012 by default); resumable.
    Train(TrainArgs),
    /// Export the best checkpoint of a run (or of a run still in progress) to ONNX.
    Export {
        /// Run folder (holds config.json and best.model.mpk).
        #[arg(long)]
        run: PathBuf,
        /// Output ONNX file.
        #[arg(short, long)]
        output: PathBuf,
        /// Which checkpoint: lowest validation loss (the paper's rule) or highest
        /// validation V_rand.
        #[arg(long, value_enum, default_value = "val-loss")]
        select: Selection,
        /// Test-time averaging recorded in the model as its default (segment-run uses
        /// it unless told otherwise with --tta): none, flips (4 passes) or dihedral (8).
        #[arg(long, value_enum, default_value = "none")]
        averaging: skipseg_runtime::Averaging,
        /// Reference images (PNG/TIFF, larger than 1024 px a side, e.g. a 1536 x 1536
        /// mosaic from `segment-run`'s examples/synthetic_image) to measure the halo at
        /// which tiles equal the whole image on, recorded in the model as its default
        /// halo (as `segment-run tune-halo` does). Without it, none is recorded.
        #[arg(long)]
        halo_reference: Vec<PathBuf>,
    },
    /// The paper's skip ablation (Table 3, Fig. 3): train one architecture four times
    /// with the same recipe and seed (long+short skips, short only, long only, neither)
    /// into OUT/<variant>/, then write OUT/ablation.{md,csv,json} and OUT/curves.png.
    /// Resumable: run it again to continue unfinished variants.
    Ablation(AblationArgs),
    /// Cross-validation: one model per fold of contiguous validation slices (resumable),
    /// then every slice scored by the model that never saw it (one pass, averaged, best
    /// threshold, instance labels): OUT/cv-report.{md,json}, OUT/cv-slices.csv.
    Cv(CvArgs),
    /// Redraw the charts and CSV files of a run folder from its state (after a crash,
    /// or to get the current chart style for an old run).
    Report {
        /// Run folder (holds config.json and state.json).
        #[arg(long)]
        run: PathBuf,
    },
    /// Write a model of an architecture with seeded random weights and batch-norm
    /// statistics (for benchmarks of architectures nobody has trained, e.g. Table 1).
    RandomModel {
        /// Architecture JSON (e.g. models/table1.json).
        #[arg(long)]
        arch: PathBuf,
        /// Seed of the weights.
        #[arg(long, default_value_t = 2016)]
        seed: u64,
        /// Output ONNX file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write the golden parity fixtures (model.onnx + input/output .npy per case); with
    /// `--device cuda`, only the GPU's outputs of the committed fixtures
    /// (`gpu-output{k}.npy`, scripts/gpu-parity.sh).
    Fixtures {
        /// Output folder.
        #[arg(long, default_value = "fixtures")]
        out: PathBuf,
        /// cpu: write the fixtures; cuda: add burn-cuda's outputs to them, and the
        /// shipped model's on ISBI slices (fixtures/shipped/).
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
        /// With --device cuda: the shipped model (ONNX as `export` writes it).
        #[arg(long, default_value = "models/isbi-small-bce.onnx")]
        shipped: PathBuf,
        /// With --device cuda: the image stack (a multi-page TIFF, or a folder of slices
        /// taken in name order) the shipped model runs on.
        #[arg(long, default_value = "data/isbi2012/train/images")]
        volume: PathBuf,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Architecture JSON (e.g. models/small.json). Not needed with --resume.
    #[arg(long, required_unless_present = "resume")]
    arch: Option<PathBuf>,
    /// Loss function.
    #[arg(long, value_enum, default_value = "dice")]
    loss: LossKind,
    /// Total number of epochs (with --resume: the new total).
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    /// Run folder (metrics, plots, checkpoints, model.onnx).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this folder after a crash, with its optimizer state (and
    /// its config.json; --epochs sets the new total).
    #[arg(long, conflicts_with_all = ["arch", "out", "loss", "images", "labels", "val", "seed", "dropout", "no_augment", "normalise", "lr", "crops", "crop_size"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Freeze batch norms after this epoch (default: after three quarters of the epochs;
    /// `--freeze-bn-after EPOCHS` never freezes): every later epoch re-estimates their
    /// statistics over the training slices (precise BN) and trains with them fixed, as
    /// inference uses them. Batch size 1 makes per-image batch statistics a poor guide to
    /// fixed ones; see models/isbi-small.md. With --resume: changes the schedule of the
    /// epochs not yet run.
    #[arg(long)]
    freeze_bn_after: Option<usize>,
    /// Where to train.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
    /// Which best checkpoint becomes `model.onnx` at the end: lowest validation loss
    /// (the paper's rule) or highest validation V_rand. Both are kept in the run folder
    /// (`segment-train export --select` exports the other).
    #[arg(long, value_enum, default_value = "val-loss")]
    select: Selection,
}

/// The recipe options `train`, `ablation` and `cv` share.
#[derive(clap::Args, Clone)]
struct RecipeArgs {
    /// Training images: a folder of PNG/TIFF slices or a multi-page TIFF.
    #[arg(long, default_value = "data/isbi2012/train/images")]
    images: PathBuf,
    /// Labels (255 = cell interior, 0 = membrane), paired with the images by order.
    #[arg(long, default_value = "data/isbi2012/train/labels")]
    labels: PathBuf,
    /// Validation slices, e.g. `25-29` or `3,7,11`.
    #[arg(long, default_value = "25-29")]
    val: String,
    /// Random seed (weights, shuffling, augmentation, dropout).
    #[arg(long, default_value_t = 2016)]
    seed: u64,
    /// Dropout probability on the residual paths (overrides the architecture file).
    #[arg(long)]
    dropout: Option<f64>,
    /// Disable augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Input normalisation, recorded in the exported model: per-image standardisation
    /// (each image to zero mean, unit variance) or the fixed (x - 0.5) / 0.25.
    #[arg(long, value_enum, default_value = "per-image")]
    normalise: Normalise,
    /// Learning rate of RMSprop (the paper: 1e-3; its Fig. 4(d), without batch norm,
    /// needed a lower one).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Images per step (batch size): each step stacks this many augmented slices, so
    /// batch norm sees more than one image. 1 is the paper's batch size.
    #[arg(long, default_value_t = 1)]
    crops: usize,
    /// Train on random square crops of this side (a multiple of the down-sampling
    /// factor) instead of whole slices; with --crops 4 --crop-size 256 a step costs what
    /// one whole 512x512 slice does.
    #[arg(long)]
    crop_size: Option<usize>,
}

#[derive(clap::Args)]
struct AblationArgs {
    /// Architecture JSON; its skip switches are overridden per variant (not needed
    /// with --report-only).
    #[arg(long, required_unless_present = "report_only")]
    arch: Option<PathBuf>,
    /// Loss function (the paper's ablation used binary cross-entropy).
    #[arg(long, value_enum, default_value = "bce")]
    loss: LossKind,
    /// Epochs per variant.
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    /// Output folder: one run folder per variant plus the table and chart.
    #[arg(long)]
    out: PathBuf,
    /// Which variants to train (default: all four); e.g. to spread them over machines.
    #[arg(long, value_enum, value_delimiter = ',')]
    variants: Vec<skipseg_train::ablation::Variant>,
    /// Only redraw the table and chart from the variant runs found in OUT.
    #[arg(long)]
    report_only: bool,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Freeze batch norms after this epoch (default: three quarters of the epochs).
    #[arg(long)]
    freeze_bn_after: Option<usize>,
    /// Where to train.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(clap::Args)]
struct CvArgs {
    /// Architecture JSON (not needed with --report-only).
    #[arg(long, required_unless_present = "report_only")]
    arch: Option<PathBuf>,
    /// Loss function.
    #[arg(long, value_enum, default_value = "bce")]
    loss: LossKind,
    /// Epochs per fold.
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Number of folds: the slices are cut into this many contiguous blocks, each the
    /// validation set of one model.
    #[arg(long, default_value_t = 6)]
    folds: usize,
    /// Train only these folds (e.g. `--only 0,1` here and `--only 2,3` on another
    /// machine sharing OUT); default: every fold.
    #[arg(long, value_delimiter = ',')]
    only: Vec<usize>,
    /// Output folder: OUT/fold-K (ordinary run folders) and the report.
    #[arg(long)]
    out: PathBuf,
    /// Only score the folds that have a model and write the report.
    #[arg(long)]
    report_only: bool,
    /// Which checkpoint each fold exports (its own validation slices choose it).
    #[arg(long, value_enum, default_value = "v-rand")]
    select: Selection,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Freeze batch norms after this epoch (default: three quarters of the epochs).
    #[arg(long)]
    freeze_bn_after: Option<usize>,
    /// Where to train.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
    /// Threads of the engine that scores the folds.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Normalise {
    PerImage,
    Fixed,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeviceKind {
    Cpu,
    Cuda,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Arch { files, size } => {
            for f in files {
                arch(&f, size)?;
            }
            Ok(())
        }
        Command::Train(args) => train(args),
        Command::Ablation(args) => ablation(args),
        Command::Cv(args) => cross_validate(args),
        Command::Export {
            run,
            output,
            select,
            averaging,
            halo_reference,
        } => {
            let cfg = training::read_config(&run)?;
            let inference = skipseg_runtime::onnx::InferenceDefaults {
                averaging,
                ..Default::default()
            };
            training::export_best::<Cpu>(
                &cfg,
                &run,
                select,
                inference,
                &output,
                &Default::default(),
            )?;
            if !halo_reference.is_empty() {
                let mut references = Vec::new();
                for path in &halo_reference {
                    references.extend(
                        skipseg_runtime::io::read_slices(path)?
                            .into_iter()
                            .map(|s| s.pixels),
                    );
                }
                let mut proto = skipseg_runtime::onnx::read_model(&output)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let m = skipseg_runtime::engine::record_halo(
                    &mut proto,
                    &output.display().to_string(),
                    &references,
                    threads,
                )?;
                skipseg_runtime::onnx::write_model(&proto, &output)?;
                println!(
                    "measured halo {} px (tiles equal the whole image within 1/255), recorded",
                    m.halo
                );
            }
            println!(
                "exported the {} checkpoint of {} to {}",
                match select {
                    Selection::ValLoss => "best-validation-loss",
                    Selection::VRand => "best-validation-V_rand",
                },
                run.display(),
                output.display()
            );
            Ok(())
        }
        Command::Report { run } => {
            let cfg = training::read_config(&run)?;
            let state = training::read_state(&run)?;
            skipseg_train::report::write_all(&run, &state, &cfg)?;
            println!(
                "redrew the report of {} ({} epochs): metrics.csv, loss.png, val_scores.png, weight_updates.csv, weight_updates.png",
                run.display(),
                state.epochs_done
            );
            Ok(())
        }
        Command::RandomModel { arch, seed, output } => {
            let spec = presets::load(&arch)?;
            let model = skipseg_train::synthetic::randomize(
                ResFcn::<Cpu>::new(&spec, &Default::default()),
                seed,
            );
            let proto = skipseg_train::export::to_onnx(&model, Default::default());
            skipseg_runtime::onnx::write_model(&proto, &output)?;
            println!(
                "wrote {} ({} with random weights, seed {seed})",
                output.display(),
                spec.name
            );
            Ok(())
        }
        Command::Fixtures {
            out,
            device,
            shipped,
            volume,
        } => {
            let written = match device {
                DeviceKind::Cpu => fixtures::write_all(&out)?,
                DeviceKind::Cuda => cuda_fixtures(&out, &shipped, &volume)?,
            };
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

fn arch(path: &Path, size: usize) -> Result<()> {
    let spec = presets::load(path)?;
    let plan = spec.plan();
    let factor = spec.down_factor();
    anyhow::ensure!(
        size.is_multiple_of(factor),
        "--size {size} is not a multiple of the down-sampling factor {factor}"
    );
    let cost = plan.cost(size, size);
    // independent count: instantiate the burn model and count its parameters
    let model = ResFcn::<Cpu>::new(&spec, &Default::default());
    let burn_params = model.num_params();
    println!("architecture {} ({})", spec.name, path.display());
    println!(
        "  switches: long_skips={} short_skips={} batch_norm={} dropout={}",
        spec.long_skips, spec.short_skips, spec.batch_norm, spec.dropout
    );
    println!(
        "  {:<10} {:<11} {:>6} {:>8} {:>12}",
        "level", "block", "width", "repeats", "resolution"
    );
    println!(
        "  {:<10} {:<11} {:>6} {:>8} {:>12}",
        "stem",
        "conv 3x3",
        spec.stem_width,
        1,
        format!("{size}x{size}")
    );
    let row = |name: String, l: &Level, res: usize| {
        let block = match l.block {
            BlockKind::Simple => "simple",
            BlockKind::Basic => "basic",
            BlockKind::Bottleneck => "bottleneck",
        };
        println!(
            "  {:<10} {:<11} {:>6} {:>8} {:>12}",
            name,
            block,
            l.width,
            l.repeats,
            format!("{res}x{res}")
        );
    };
    for (i, l) in spec.down.iter().enumerate() {
        row(format!("down{}", i + 1), l, size >> (i + 1));
    }
    row("across".into(), &spec.across, size / factor);
    let n = spec.up.len();
    for (j, l) in spec.up.iter().enumerate() {
        row(format!("up{}", j + 1), l, size >> (n - j - 1));
    }
    println!(
        "  {:<10} {:<11} {:>6} {:>8} {:>12}",
        "head",
        "conv 3x3",
        spec.head_width,
        1,
        format!("{size}x{size}")
    );
    println!(
        "  {:<10} {:<11} {:>6} {:>8} {:>12}",
        "classifier",
        "conv 1x1",
        1,
        1,
        format!("{size}x{size}")
    );
    println!(
        "  parameters: {} learnable ({} conv weights+biases, {} batch-norm scale/shift) + {} batch-norm running statistics",
        cost.params(),
        cost.conv_params,
        cost.bn_params,
        cost.bn_buffers
    );
    println!(
        "  of the conv parameters, 1x1 projections: {} on short skips, {} on long skips",
        cost.short_projection_params, cost.long_projection_params
    );
    println!("  burn model parameter count (includes running statistics): {burn_params}");
    println!(
        "  FLOPs per {size}x{size} image: {:.3} G (2 x {:.3} G multiply-accumulates, convolutions only)",
        cost.flops() as f64 / 1e9,
        cost.macs as f64 / 1e9
    );
    println!("  down-sampling factor: {factor} (input height and width must be multiples)");
    anyhow::ensure!(
        burn_params == cost.params() + cost.bn_buffers,
        "burn counts {burn_params} parameters but the architecture formula gives {} + {} running statistics",
        cost.params(),
        cost.bn_buffers
    );
    Ok(())
}

fn train(args: TrainArgs) -> Result<()> {
    use anyhow::Context;
    let (cfg, out, resume) = match &args.resume {
        Some(dir) => {
            let mut cfg = training::read_config(dir)?;
            cfg.epochs = args.epochs;
            if let Some(e) = args.freeze_bn_after {
                let done = training::epochs_done(dir)?;
                anyhow::ensure!(
                    e >= done,
                    "--freeze-bn-after {e}: {} has run {done} epochs already; the schedule can only change for epochs not yet run",
                    dir.display()
                );
                cfg.freeze_bn_after = Some(e);
            }
            (cfg, dir.clone(), true)
        }
        None => {
            let arch_path = args.arch.as_deref().context("--arch is required")?;
            let cfg = recipe_config(
                arch_path,
                args.loss,
                args.epochs,
                args.freeze_bn_after,
                &args.recipe,
            )?;
            let out = args.out.clone().context("--out is required")?;
            anyhow::ensure!(
                !out.join("state.json").exists(),
                "{}: holds a run already; use --resume {} to continue it or choose another --out",
                out.display(),
                out.display()
            );
            (cfg, out, false)
        }
    };
    let data = load_data(&cfg)?;
    println!(
        "training {} ({} loss) on {} slices, validating on {}, {} epochs -> {}",
        cfg.arch.name,
        loss_name(cfg.loss),
        data.train.len(),
        data.val.len(),
        cfg.epochs,
        out.display()
    );
    train_on(args.device, &cfg, &data, &out, resume, args.select)
}

fn loss_name(loss: LossKind) -> &'static str {
    match loss {
        LossKind::Bce => "bce",
        LossKind::Dice => "dice",
    }
}

/// A run's configuration from an architecture file and the recipe options.
fn recipe_config(
    arch_path: &Path,
    loss: LossKind,
    epochs: usize,
    freeze_bn_after: Option<usize>,
    recipe: &RecipeArgs,
) -> Result<TrainConfig> {
    let mut arch = presets::load(arch_path)?;
    if let Some(p) = recipe.dropout {
        arch.dropout = p;
        arch.validate()?;
    }
    let mut cfg = TrainConfig::paper(
        arch,
        loss,
        epochs,
        recipe.images.clone(),
        recipe.labels.clone(),
    );
    cfg.seed = recipe.seed;
    cfg.augment = !recipe.no_augment;
    anyhow::ensure!(
        recipe.lr > 0.0 && recipe.lr.is_finite(),
        "--lr {}: must be a positive number",
        recipe.lr
    );
    cfg.learning_rate = recipe.lr;
    anyhow::ensure!(recipe.crops >= 1, "--crops must be at least 1");
    cfg.crops = recipe.crops;
    cfg.crop_size = recipe.crop_size;
    cfg.freeze_bn_after = Some(freeze_bn_after.unwrap_or(epochs - epochs / 4).min(epochs));
    cfg.preprocessing = match recipe.normalise {
        Normalise::PerImage => skipseg_runtime::Preprocessing::per_image(),
        Normalise::Fixed => skipseg_runtime::Preprocessing::default(),
    };
    cfg.val = data::parse_indices(&recipe.val).map_err(|e| anyhow::anyhow!("--val: {e}"))?;
    Ok(cfg)
}

/// The run's data, checked against the architecture's down-sampling factor.
fn load_data(cfg: &TrainConfig) -> Result<data::Dataset> {
    let data = data::load(&cfg.images, &cfg.labels, &cfg.val)?;
    let factor = cfg.arch.down_factor();
    if let Some(c) = cfg.crop_size {
        anyhow::ensure!(
            c > 0 && c % factor == 0,
            "--crop-size {c}: not a positive multiple of the architecture's down-sampling factor {factor}"
        );
    }
    for s in data.train.iter().chain(&data.val) {
        let (h, w) = s.image.dim();
        anyhow::ensure!(
            h % factor == 0 && w % factor == 0,
            "{}: {h}x{w} is not a multiple of the architecture's down-sampling factor {factor}",
            s.name
        );
    }
    Ok(data)
}

fn train_on(
    device: DeviceKind,
    cfg: &TrainConfig,
    data: &data::Dataset,
    out: &Path,
    resume: bool,
    select: Selection,
) -> Result<()> {
    match device {
        DeviceKind::Cpu => run_training::<skipseg_train::backend::CpuTrain>(
            cfg,
            data,
            out,
            resume,
            select,
            &Default::default(),
        ),
        DeviceKind::Cuda => cuda_training(cfg, data, out, resume, select),
    }
}

fn ablation(args: AblationArgs) -> Result<()> {
    use skipseg_train::ablation::{self, Variant};
    if !args.report_only {
        use anyhow::Context;
        let arch = args.arch.as_deref().context("--arch is required")?;
        let base = recipe_config(
            arch,
            args.loss,
            args.epochs,
            args.freeze_bn_after,
            &args.recipe,
        )?;
        let data = load_data(&base)?;
        let variants = if args.variants.is_empty() {
            Variant::ALL.to_vec()
        } else {
            args.variants.clone()
        };
        for v in variants {
            let cfg = v.config(&base);
            let dir = ablation::run_dir(&args.out, v);
            let Some(resume) = run_to_continue(&dir, &cfg, false)? else {
                continue;
            };
            println!(
                "ablation variant {} ({}): {} loss, {} epochs -> {}",
                v.dir(),
                v.label(),
                loss_name(cfg.loss),
                cfg.epochs,
                dir.display()
            );
            train_on(args.device, &cfg, &data, &dir, resume, Selection::ValLoss)?;
        }
    }
    let rows = ablation::write_report(&args.out)?;
    anyhow::ensure!(
        !rows.is_empty(),
        "{}: no variant runs found",
        args.out.display()
    );
    println!(
        "{:<22} {:>10} {:>10} {:>6} {:>10}",
        "model", "train loss", "val loss", "epoch", "val V_rand"
    );
    for r in &rows {
        println!(
            "{:<22} {:>10.4} {:>10.4} {:>6} {:>10}",
            r.label,
            r.train_loss_at_best,
            r.best_val_loss,
            r.best_epoch,
            r.val_v_rand_at_best
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    println!(
        "wrote {}/ablation.md, ablation.csv, ablation.json, curves.png",
        args.out.display()
    );
    Ok(())
}

/// What to do with the run folder `dir` of a multi-run command (ablation, cv) for
/// `cfg`: `None` when its run is finished (and, with `needs_model`, exported), else
/// `Some(resume)`. A folder holding a run of another recipe is refused.
fn run_to_continue(dir: &Path, cfg: &TrainConfig, needs_model: bool) -> Result<Option<bool>> {
    if !dir.join("state.json").exists() {
        return Ok(Some(false));
    }
    let done = training::epochs_done(dir)?;
    let mut same = training::read_config(dir)?;
    same.epochs = cfg.epochs;
    same.freeze_bn_after = cfg.freeze_bn_after;
    anyhow::ensure!(
        same == *cfg,
        "{}: holds a run with another recipe; choose another --out",
        dir.display()
    );
    if done >= cfg.epochs && (!needs_model || dir.join("model.onnx").exists()) {
        println!("{}: {done} epochs done already", dir.display());
        return Ok(None);
    }
    println!("{}: resuming after epoch {done}", dir.display());
    Ok(Some(true))
}

fn cross_validate(args: CvArgs) -> Result<()> {
    use skipseg_train::cv;
    let slices = skipseg_runtime::io::list_pages(&args.recipe.images)?.len();
    anyhow::ensure!(
        args.folds >= 2 && args.folds <= slices,
        "--folds {}: needs 2 to {slices} folds ({} has {slices} slices)",
        args.folds,
        args.recipe.images.display()
    );
    let folds = cv::folds(slices, args.folds);
    if let Some(bad) = args.only.iter().find(|&&f| f >= args.folds) {
        anyhow::bail!("--only {bad}: there are folds 0 to {}", args.folds - 1);
    }
    if !args.report_only {
        use anyhow::Context;
        let arch = args.arch.as_deref().context("--arch is required")?;
        for (k, val) in folds.iter().enumerate() {
            if !args.only.is_empty() && !args.only.contains(&k) {
                continue;
            }
            let mut recipe = args.recipe.clone();
            recipe.val = cv::val_spec(val);
            let cfg = recipe_config(arch, args.loss, args.epochs, args.freeze_bn_after, &recipe)?;
            let dir = cv::fold_dir(&args.out, k);
            if dir.join("model.onnx").exists() && !dir.join("state.json").exists() {
                // a model placed there (e.g. models/cv's, or the shipped model as the
                // fold it is): scored, never trained over
                println!(
                    "{}: a model without a training run: scored as it is",
                    dir.display()
                );
                continue;
            }
            let Some(resume) = run_to_continue(&dir, &cfg, true)? else {
                continue;
            };
            let data = load_data(&cfg)?;
            println!(
                "fold {k} of {}: training on {} slices, validating on {} ({}), {} epochs -> {}",
                args.folds,
                data.train.len(),
                data.val.len(),
                recipe.val,
                cfg.epochs,
                dir.display()
            );
            train_on(args.device, &cfg, &data, &dir, resume, args.select)?;
        }
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let report = cv::score(
        &args.out,
        &folds,
        &args.recipe.images,
        &args.recipe.labels,
        threads,
        &mut |done, total| {
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprint!("\rscoring slice {done} of {total}   ");
            }
        },
    )?;
    anyhow::ensure!(
        !report.rows.is_empty(),
        "{}: no fold has a model.onnx yet; train them first",
        args.out.display()
    );
    cv::write_report(&args.out, &report)?;
    let m = &report.means;
    println!(
        "{} of {} folds scored, {} slices: V_rand / V_info one pass {:.4} / {:.4}, averaged \
         {:.4} / {:.4}, averaged at 0.5 {:.4} / {:.4}, labels {:.4} / {:.4}{}{}{}",
        report.folds_scored.len(),
        args.folds,
        m.slices,
        m.one_pass.0,
        m.one_pass.1,
        m.averaged.0,
        m.averaged.1,
        m.averaged_at_half.0,
        m.averaged_at_half.1,
        m.labels.0,
        m.labels.1,
        m.labels_nested.map_or(String::new(), |(r, i)| format!(
            ", labels nested {r:.4} / {i:.4}"
        )),
        m.labels_own.map_or(String::new(), |(r, i)| format!(
            ", labels with each model's own setting {r:.4} / {i:.4}"
        )),
        m.averaged_own_threshold
            .map_or(String::new(), |(r, i)| format!(
                " (averaged at each model's own threshold {r:.4} / {i:.4})"
            ))
    );
    println!(
        "wrote {}/cv-report.md, cv-report.json, cv-slices.csv",
        args.out.display()
    );
    Ok(())
}

#[cfg(not(feature = "cuda"))]
const NO_CUDA: &str =
    "--device cuda: this binary was built without the `cuda` feature (cargo build --features cuda)";

#[cfg(feature = "cuda")]
fn cuda_fixtures(out: &Path, shipped: &Path, volume: &Path) -> Result<Vec<PathBuf>> {
    use skipseg_train::backend::Gpu;
    let device = cuda_device()?;
    let mut written = fixtures::write_device_outputs::<Gpu>(out, "gpu", &device)?;
    written.extend(fixtures::write_shipped_outputs::<Gpu>(
        shipped,
        volume,
        &fixtures::SHIPPED_SLICES,
        out,
        "gpu",
        &device,
    )?);
    Ok(written)
}

#[cfg(not(feature = "cuda"))]
fn cuda_fixtures(_: &Path, _: &Path, _: &Path) -> Result<Vec<PathBuf>> {
    anyhow::bail!(NO_CUDA)
}

/// The first CUDA device, probed: burn-cuda panics on its first call when libcuda is
/// missing, so the probe runs with the panic's own report silenced (the error says what
/// is wrong).
#[cfg(feature = "cuda")]
fn cuda_device() -> Result<burn::backend::cuda::CudaDevice> {
    use skipseg_train::backend::Gpu;
    let device = burn::backend::cuda::CudaDevice::default();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let t = burn::tensor::Tensor::<Gpu, 1>::ones([1], &device);
        t.into_data()
    });
    std::panic::set_hook(hook);
    if probe.is_err() {
        anyhow::bail!("--device cuda: no usable CUDA driver (libcuda) or GPU on this machine");
    }
    Ok(device)
}

#[cfg(feature = "cuda")]
fn cuda_training(
    cfg: &TrainConfig,
    data: &data::Dataset,
    out: &Path,
    resume: bool,
    select: Selection,
) -> Result<()> {
    use skipseg_train::backend::GpuTrain;
    let device = cuda_device()?;
    run_training::<GpuTrain>(cfg, data, out, resume, select, &device)
}

#[cfg(not(feature = "cuda"))]
fn cuda_training(
    _: &TrainConfig,
    _: &data::Dataset,
    _: &Path,
    _: bool,
    _: Selection,
) -> Result<()> {
    anyhow::bail!(NO_CUDA)
}

fn run_training<B: burn::tensor::backend::AutodiffBackend>(
    cfg: &TrainConfig,
    data: &data::Dataset,
    out: &Path,
    resume: bool,
    select: Selection,
    device: &B::Device,
) -> Result<()> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(0),
        if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut running = (0.0, 0usize);
    let scorer =
        |maps: &[ndarray::Array2<f32>], targets: &[ndarray::Array2<f32>]| score(maps, targets);
    let state = training::train::<B>(
        cfg,
        data,
        out,
        resume,
        device,
        Some(&scorer),
        &mut |e| match e {
            Event::EpochStart {
                epoch,
                epochs,
                steps,
            } => {
                bar.reset();
                bar.set_length(steps as u64);
                bar.set_prefix(format!("{epoch}/{epochs}"));
                running = (0.0, 0);
            }
            Event::Step { loss } => {
                running = (running.0 + loss, running.1 + 1);
                bar.set_message(format!("loss {:.4}", running.0 / running.1 as f64));
                bar.inc(1);
            }
            Event::EpochEnd(r) => {
                let scores = match (r.val_v_rand, r.val_v_info) {
                    (Some(a), Some(b)) => format!(" val V_rand {a:.4} V_info {b:.4}"),
                    _ => String::new(),
                };
                let line = format!(
                    "epoch {:>4}: train loss {:.4}  val loss {:.4}{scores}  ({:.0} s)",
                    r.epoch, r.train_loss, r.val_loss, r.seconds
                );
                if terminal {
                    bar.println(line);
                } else {
                    // a hidden bar prints nothing: logs get one line per epoch
                    println!("{line}");
                }
            }
        },
    )?;
    bar.finish_and_clear();
    let onnx_path = out.join("model.onnx");
    training::export_best::<B::InnerBackend>(
        cfg,
        out,
        select,
        Default::default(),
        &onnx_path,
        &device.clone(),
    )?;
    let v_rand = match state.best_v_rand {
        Some(v) => format!(
            "; best validation V_rand {v:.4} at epoch {}",
            state.best_v_rand_epoch
        ),
        None => String::new(),
    };
    println!(
        "best validation loss {:.4} at epoch {}{v_rand}; exported epoch {} to {}",
        state.best_val_loss,
        state.best_epoch,
        select.epoch(&state),
        onnx_path.display()
    );
    Ok(())
}

/// Validation V_rand / V_info of membrane probability maps (official definition: the
/// proposal is 1 - p, ground truth cell = not membrane, thinning on).
fn score(maps: &[ndarray::Array2<f32>], targets: &[ndarray::Array2<f32>]) -> Option<(f64, f64)> {
    let width = maps.first()?.ncols();
    let flat = |a: &ndarray::Array2<f32>| a.iter().copied().collect::<Vec<f32>>();
    let membrane: Vec<Vec<f32>> = maps.iter().map(flat).collect();
    let cells: Vec<Vec<f32>> = targets
        .iter()
        .map(|t| t.iter().map(|m| 1.0 - m).collect())
        .collect();
    let e = skipseg_runtime::metrics::evaluate_membrane_maps(&membrane, &cells, width, true);
    Some((e.v_rand, e.v_info))
}
