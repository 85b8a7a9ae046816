//! `segment-run`: the command-line front end of the skipseg runtime.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skipseg_runtime::metrics::{self, SlicePair};
use skipseg_runtime::tiling::{Blend, TilePlan};
use skipseg_runtime::{Segmenter, io, onnx, package};

#[derive(Parser)]
#[command(
    name = "segment-run",
    version,
    about = "Segment microscopy images with a skipseg ONNX model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Activation buffers of every layer are allocated and freed per window; mimalloc keeps
/// them mapped for the next window where glibc returns large blocks to the kernel and
/// page-faults them back in (docs/PERFORMANCE.md: the allocator is worth 10-40%).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shipped model, compiled into the binary.
const EMBEDDED_MODEL: &[u8] = include_bytes!("../../../models/isbi-small-bce.onnx");
const EMBEDDED_NAME: &str = "models/isbi-small-bce.onnx (embedded)";
/// The embedded model's card (the documentation of its bioimage.io package).
const EMBEDDED_CARD: &str = include_str!("../../../models/isbi-small-bce.md");

#[derive(Subcommand)]
enum Command {
    /// Segment images: write membrane probability maps (and masks, overlays).
    Predict(PredictArgs),
    /// Fold batch norms into convolutions and write the rewritten model.
    Optimize {
        /// Model to rewrite.
        #[arg(long)]
        model: PathBuf,
        /// Output ONNX file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write a bioimage.io model package (rdf.yaml, ONNX weights, test tensors made by
    /// this runtime, cover, documentation) into a folder, and the folder as a zip.
    Package(PackageArgs),
    /// Describe a model: architecture, receptive radius, preprocessing, operators.
    Info {
        /// ONNX model exported by segment-train (default: the embedded shipped model).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Quantize a model to int8 (standard QDQ ONNX: int8 weights per output channel,
    /// uint8 activations per tensor), calibrated on real images.
    Quantize(QuantizeArgs),
    /// Time the engine on one window: start-up (load, optimise, first run) and the
    /// median of repeated runs; --profile adds tract's per-node times.
    Bench(BenchArgs),
    /// Score a proposal against labels with the ISBI 2012 metrics (V_rand, V_info).
    Eval {
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
    },
}

#[derive(clap::Args)]
struct PredictArgs {
    /// PNG or TIFF images (8/16-bit grayscale, multi-page stacks) or folders of them; or
    /// one OME-Zarr image or volume (Zarr v2/v3, uint8/uint16/float32, ..., y, x).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output folder (image inputs), or the output OME-Zarr store (a Zarr input: same
    /// Zarr version, shape, chunks and axes; uint8, or float32 with --float).
    #[arg(short, long)]
    output: PathBuf,
    /// Zarr input: process only shard I of N (0 <= I < N) of the output's chunks, e.g.
    /// `--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`; N workers fill one output.
    /// Re-running a shard skips its finished chunks. See docs/SCALING.md.
    #[arg(long)]
    shard: Option<skipseg_runtime::volume::Shard>,
    /// ONNX model; without it, the shipped models/isbi-small-bce.onnx compiled into this
    /// binary is used.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Write 32-bit float TIFF probability maps instead of 8-bit PNG (Zarr: float32
    /// instead of uint8).
    #[arg(long)]
    float: bool,
    /// Also write a binary membrane mask (probability > T) as PNG.
    #[arg(long)]
    threshold: Option<f32>,
    /// Also write an RGB PNG with the mask (or the probability) drawn over the input.
    #[arg(long)]
    overlay: bool,
    /// Tile core size (rounded up to the model's down-sampling factor).
    #[arg(long, default_value_t = skipseg_runtime::tiling::DEFAULT_TILE)]
    tile: usize,
    /// Context around each tile, in pixels (rounded up to the down-sampling factor);
    /// `segment-run info` prints the receptive radius that makes tiles seam-free.
    #[arg(long, default_value_t = skipseg_runtime::tiling::DEFAULT_HALO)]
    halo: usize,
    /// How tiles are combined: crop = keep each tile's centre; linear = blend overlaps.
    #[arg(long, value_enum, default_value = "crop")]
    blend: Blend,
    /// Threads of the inference engine (default: every core of this machine).
    #[arg(long)]
    threads: Option<usize>,
    /// Test-time averaging over flipped (flips: 4 passes) or flipped and transposed
    /// (dihedral: 8 passes) copies of every tile, 4 or 8 times slower. Default: what
    /// the model records (`segment-run info`; the shipped model: dihedral, see
    /// models/isbi-small.md).
    #[arg(long, value_enum)]
    tta: Option<skipseg_runtime::Averaging>,
    /// Monte-Carlo dropout (models trained with dropout): average K passes per window,
    /// each with fresh dropout masks (K x the passes of --tta); 0 = the deterministic
    /// model.
    #[arg(long, default_value_t = 0)]
    mc_samples: usize,
    /// Seed of the Monte-Carlo dropout masks: the same seed gives the same output (any
    /// thread count), another seed other samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct PackageArgs {
    /// ONNX model (default: the embedded shipped model). A model card `M.md` beside
    /// `M.onnx` becomes the package's documentation.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output folder (the zip is written beside it, as FOLDER.zip).
    #[arg(short, long)]
    output: PathBuf,
    /// Name of the model in the package (default: the model file's name).
    #[arg(long)]
    name: Option<String>,
    /// Test image (PNG/TIFF; its centre, up to 256 x 256, becomes the test tensor).
    /// Default: a synthetic EM-like image.
    #[arg(long)]
    sample: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RangeChoice {
    /// Smallest and largest calibration value of each tensor.
    MinMax,
    /// The --percentile of each tensor's values (outliers saturate).
    Percentile,
    /// Both, keeping the one with the higher V_rand on the validation images.
    Auto,
}

#[derive(clap::Args)]
struct QuantizeArgs {
    /// Float model (default: the embedded shipped model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Calibration images: PNG/TIFF files, a folder or a stack (e.g. training slices).
    #[arg(long, required = true)]
    calibration: Vec<PathBuf>,
    /// Output ONNX file.
    #[arg(short, long)]
    output: PathBuf,
    /// How activation ranges are taken from the calibration values.
    #[arg(long, value_enum, default_value = "auto")]
    method: RangeChoice,
    /// Percentile for --method percentile / auto.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Labelled images to choose the method on and to report V_rand (with
    /// --validation-labels), e.g. ISBI slices 25-29.
    #[arg(long)]
    validation_images: Option<PathBuf>,
    /// Labels of --validation-images (255 = cell, 0 = membrane).
    #[arg(long)]
    validation_labels: Option<PathBuf>,
    /// Largest calibration window side (images are cut from their top-left corner).
    #[arg(long, default_value_t = 1024)]
    max_side: usize,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// ONNX model (default: the embedded shipped model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Window height and width in pixels.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Threads of the inference engine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed runs after the warm-up (the median is reported).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Also time every node of tract's plan and print the slowest operators and nodes.
    #[arg(long)]
    profile: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

/// mimalloc returns memory freed for more than its purge delay to the kernel; the
/// activation maps of a large window (512 MB a map for Table 1 at 2048²) are freed and
/// allocated again every window, and faulting them back in cost 25 % of the run
/// (docs/PERFORMANCE.md). The option is read from the environment only, so segment-run
/// starts itself again with it set (same process id, arguments and environment
/// otherwise) unless the user chose a value.
const ALLOCATOR_SETTING: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "-1");

fn configure_allocator() {
    #[cfg(unix)]
    if std::env::var_os(ALLOCATOR_SETTING.0).is_none()
        && let Ok(exe) = std::env::current_exe()
    {
        use std::os::unix::process::CommandExt;
        // exec returns only if it failed: then run as is
        let _ = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(ALLOCATOR_SETTING.0, ALLOCATOR_SETTING.1)
            .exec();
    }
}

fn main() {
    configure_allocator();
    let cli = Cli::parse();
    quiet_panics();
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
        Err(panic) => {
            eprintln!(
                "error: internal error, please report it: {} (RUST_BACKTRACE=1 shows where)",
                skipseg_runtime::engine::panic_message(panic.as_ref())
            );
            std::process::exit(2);
        }
    }
}

/// A panic is reported once, as the error line of `main` (the library turns the
/// engine's panics into errors naming the model): the default hook's multi-line report
/// appears only with RUST_BACKTRACE set.
fn quiet_panics() {
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval {
            labels,
            proposal,
            thinning,
            membrane_high,
            json,
        } => eval(
            &labels,
            &proposal,
            thinning == Switch::On,
            membrane_high,
            json,
        ),
        Command::Predict(args) => predict(args),
        Command::Package(args) => package(args),
        Command::Bench(args) => bench(args),
        Command::Quantize(args) => quantize(args),
        Command::Optimize { model, output } => {
            let mut proto = onnx::read_model(&model)?;
            let before = onnx::op_histogram(&proto);
            skipseg_runtime::passes::dropout::strip_masks(&mut proto);
            let report = skipseg_runtime::passes::fold_batch_norms(
                &mut proto,
                &model.display().to_string(),
            )?;
            onnx::write_model(&proto, &output)?;
            println!(
                "folded {} batch norms into the preceding conv, turned {} into scale+shift",
                report.folded.len(),
                report.to_affine.len()
            );
            let show = |h: Vec<(String, usize)>| {
                h.into_iter()
                    .map(|(o, n)| format!("{o} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!("before: {}", show(before));
            println!("after:  {}", show(onnx::op_histogram(&proto)));
            println!("wrote {}", output.display());
            Ok(())
        }
        Command::Info { model } => {
            let ModelFile { proto, name, .. } = read_model(model.as_deref())?;
            let seg = Segmenter::from_proto(proto.clone(), &name)?;
            let meta = seg.meta();
            let cost = meta.arch.plan().cost(512, 512);
            println!("model: {name}");
            println!("architecture: {}", meta.arch.name);
            println!("  down-sampling factor: {}", meta.arch.down_factor());
            println!(
                "  receptive radius: {} px (a --halo of at least this makes tiling seam-free)",
                meta.arch.plan().receptive_radius()
            );
            println!("  learnable parameters: {}", cost.params());
            println!(
                "  FLOPs per 512x512 image: {:.3} G",
                cost.flops() as f64 / 1e9
            );
            println!("preprocessing: {}", meta.preprocessing.describe());
            let masks = proto.graph.as_ref().map_or(0, |g| {
                skipseg_runtime::passes::dropout::mask_inputs(g).len()
            });
            if masks > 0 {
                println!(
                    "dropout: p = {} at {masks} residual blocks (Monte-Carlo sampling: predict --mc-samples K --seed S)",
                    meta.arch.dropout
                );
            }
            let averaging = meta.inference.averaging;
            println!(
                "test-time averaging by default: {}{}",
                averaging.describe(),
                if averaging == skipseg_runtime::Averaging::None {
                    ""
                } else {
                    "; --tta none for one"
                }
            );
            let ops = onnx::op_histogram(&proto)
                .into_iter()
                .map(|(op, n)| format!("{op} x{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!("operators: {ops}");
            Ok(())
        }
    }
}

fn eval(
    labels: &std::path::Path,
    proposal: &std::path::Path,
    thinning: bool,
    membrane_high: bool,
    json: bool,
) -> Result<()> {
    let gt = io::read_slices(labels)?;
    let mut prop = io::read_slices(proposal)?;
    anyhow::ensure!(
        gt.len() == prop.len(),
        "{}: {} slices, but {} has {}",
        proposal.display(),
        prop.len(),
        labels.display(),
        gt.len()
    );
    for (g, p) in gt.iter().zip(prop.iter_mut()) {
        anyhow::ensure!(
            g.pixels.dim() == p.pixels.dim(),
            "{}: slice {} is {:?} but label slice {} is {:?}",
            proposal.display(),
            p.name,
            p.pixels.dim(),
            g.name,
            g.pixels.dim()
        );
        if membrane_high {
            p.pixels.mapv_inplace(|v| 1.0 - v);
        }
    }
    let gt_data: Vec<Vec<f32>> = gt
        .iter()
        .map(|s| s.pixels.iter().copied().collect())
        .collect();
    let prop_data: Vec<Vec<f32>> = prop
        .iter()
        .map(|s| s.pixels.iter().copied().collect())
        .collect();
    let pairs: Vec<SlicePair<'_>> = gt
        .iter()
        .zip(&gt_data)
        .zip(&prop_data)
        .map(|((s, g), p)| SlicePair {
            ground_truth: g,
            proposal: p,
            width: s.pixels.ncols(),
        })
        .collect();
    let e = metrics::evaluate_stack(&pairs, thinning);
    let ri = e
        .thresholds
        .iter()
        .position(|&t| t == e.v_rand_threshold)
        .unwrap_or(0);
    let ii = e
        .thresholds
        .iter()
        .position(|&t| t == e.v_info_threshold)
        .unwrap_or(0);
    if json {
        let slices: Vec<serde_json::Value> = gt
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let r = e.per_slice[ri][k];
                let i = e.per_slice[ii][k];
                serde_json::json!({
                    "name": s.name,
                    "rand_f": r.map(|v| v.rand.f),
                    "rand_precision": r.map(|v| v.rand.precision),
                    "rand_recall": r.map(|v| v.rand.recall),
                    "info_f": i.map(|v| v.info.f),
                    "info_precision": i.map(|v| v.info.precision),
                    "info_recall": i.map(|v| v.info.recall),
                })
            })
            .collect();
        let by_threshold: Vec<serde_json::Value> = e
            .thresholds
            .iter()
            .zip(e.rand_by_threshold.iter().zip(&e.info_by_threshold))
            .map(|(t, (r, i))| serde_json::json!({"threshold": t, "rand_f": r, "info_f": i}))
            .collect();
        let out = serde_json::json!({
            "v_rand": e.v_rand,
            "v_info": e.v_info,
            "v_rand_threshold": e.v_rand_threshold,
            "v_info_threshold": e.v_info_threshold,
            "thinning": thinning,
            "slices": slices,
            "by_threshold": by_threshold,
        });
        println!("{out}");
        return Ok(());
    }
    println!("{:<16} {:>8} {:>8}", "slice", "V_rand", "V_info");
    for (k, s) in gt.iter().enumerate() {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:>8} {:>8}",
            s.name,
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

fn quantize(args: QuantizeArgs) -> Result<()> {
    use skipseg_runtime::calibrate::{self, RangeMethod};
    let ModelFile { proto, name, .. } = read_model(args.model.as_deref())?;
    let meta = onnx::ModelMeta::from_model(&proto, &name)?;
    anyhow::ensure!(
        args.percentile > 50.0 && args.percentile <= 100.0,
        "--percentile must be in (50, 100], got {}",
        args.percentile
    );
    let validation = match (&args.validation_images, &args.validation_labels) {
        (Some(i), Some(l)) => {
            let images = io::read_slices(i)?;
            let labels = io::read_slices(l)?;
            anyhow::ensure!(
                images.len() == labels.len() && !images.is_empty(),
                "{}: {} images, but {} has {} labels",
                i.display(),
                images.len(),
                l.display(),
                labels.len()
            );
            Some(calibrate::Validation {
                images: images.into_iter().map(|s| s.pixels).collect(),
                cell_labels: labels.into_iter().map(|s| s.pixels).collect(),
                threads: all_cores(),
            })
        }
        (None, None) => None,
        _ => anyhow::bail!("--validation-images and --validation-labels go together"),
    };
    let methods = match args.method {
        RangeChoice::MinMax => vec![RangeMethod::MinMax],
        RangeChoice::Percentile => vec![RangeMethod::Percentile(args.percentile)],
        RangeChoice::Auto => {
            anyhow::ensure!(
                validation.is_some(),
                "--method auto chooses on labelled images: give --validation-images and \
                 --validation-labels, or choose --method min-max or percentile"
            );
            vec![
                RangeMethod::MinMax,
                RangeMethod::Percentile(args.percentile),
            ]
        }
    };
    let mut windows = Vec::new();
    for path in &args.calibration {
        for slice in io::read_slices(path)? {
            match calibrate::window(slice.pixels.view(), &meta, args.max_side) {
                Some(w) => windows.push(w),
                None => eprintln!(
                    "warning: {}: smaller than the down-sampling factor, skipped",
                    slice.name
                ),
            }
        }
    }
    anyhow::ensure!(!windows.is_empty(), "no calibration image");
    let mut folded = proto.clone();
    // the deterministic network: dropout masks (if any) at their default
    skipseg_runtime::passes::dropout::strip_masks(&mut folded);
    skipseg_runtime::passes::fold_batch_norms(&mut folded, &name)?;
    let started = std::time::Instant::now();
    let calibration = calibrate::calibrate(&folded, &windows, &name)?;
    println!(
        "calibrated {} tensors on {} windows in {:.1} s",
        calibration.tensors().count(),
        windows.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(v) = &validation {
        let (r, i) = calibrate::score(&proto, v, &name)?;
        println!("float model:      V_rand {r:.4}  V_info {i:.4}");
    }
    let (candidates, best) =
        calibrate::candidates(&folded, &calibration, &methods, validation.as_ref(), &name)?;
    for c in &candidates {
        for (conv, why) in &c.report.left {
            eprintln!("warning: {conv} stays float: {why}");
        }
        match c.scores {
            Some((r, i)) => println!(
                "int8, {}: V_rand {r:.4}  V_info {i:.4}  ({} convs)",
                c.method, c.report.convs
            ),
            None => println!("int8, {}: {} convs", c.method, c.report.convs),
        }
    }
    let best = &candidates[best];
    onnx::write_model(&best.model, &args.output)?;
    println!("wrote {} ({})", args.output.display(), best.method);
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    use std::time::Instant;
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let started = Instant::now();
    let (seg, _) = load_model(args.model.as_deref(), args.threads, false)?;
    let load = started.elapsed().as_secs_f64();
    let channels = seg.meta().arch.in_channels;
    seg.check_input_shape(&[1, channels, args.size, args.size])?;
    let input =
        ndarray::Array4::from_shape_fn((1, channels, args.size, args.size), |(_, c, y, x)| {
            // deterministic standardised-looking texture; speed does not depend on values
            (((y * 31 + x * 17 + c * 7) % 97) as f32 / 48.0 - 1.0) * 1.7
        })
        .into_dyn();
    let t = Instant::now();
    seg.plan_ops(args.size, args.size)?;
    let optimise = t.elapsed().as_secs_f64();
    let t = Instant::now();
    seg.run(input.view())?;
    let first = t.elapsed().as_secs_f64();
    seg.run(input.view())?; // second warm-up
    let mut runs = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let t = Instant::now();
        seg.run(input.view())?;
        runs.push(t.elapsed().as_secs_f64());
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let flops = seg.meta().arch.plan().cost(args.size, args.size).flops() as f64;
    let profile = if args.profile {
        Some(seg.profile(input.view(), args.repeats)?)
    } else {
        None
    };
    if args.json {
        let mut out = serde_json::json!({
            "engine": format!("skipseg-runtime {} (tract-onnx)", env!("CARGO_PKG_VERSION")),
            "model": seg.source_name(),
            "size": args.size,
            "threads": args.threads,
            "load_ms": load * 1e3,
            "optimise_ms": optimise * 1e3,
            "first_run_ms": first * 1e3,
            "startup_ms": (load + optimise + first) * 1e3,
            "runs_ms": runs.iter().map(|r| r * 1e3).collect::<Vec<_>>(),
            "median_ms": median * 1e3,
            "gflops": flops / 1e9,
        });
        if let Some(p) = &profile {
            out["profile"] = serde_json::json!({
                "seconds_per_run": p.seconds_per_run,
                "by_op": p.by_op().iter().map(|(op, s, n)| serde_json::json!({"op": op, "ms": s * 1e3, "nodes": n})).collect::<Vec<_>>(),
                "nodes": p.nodes.iter().map(|n| serde_json::json!({"name": n.name, "op": n.op, "ms": n.seconds * 1e3})).collect::<Vec<_>>(),
            });
        }
        println!("{out}");
        return Ok(());
    }
    println!(
        "{}: {}x{} window, {} thread(s)",
        seg.source_name(),
        args.size,
        args.size,
        args.threads
    );
    println!(
        "start-up {:.0} ms (load + passes {:.0}, optimise {:.0}, first run {:.0})",
        (load + optimise + first) * 1e3,
        load * 1e3,
        optimise * 1e3,
        first * 1e3
    );
    println!(
        "median of {} runs: {:.1} ms, {:.1} GFLOP/s, {:.2} MP/s",
        args.repeats,
        median * 1e3,
        flops / median / 1e9,
        (args.size * args.size) as f64 / 1e6 / median
    );
    if let Some(p) = profile {
        println!(
            "\nprofile ({} runs, {:.1} ms per run with profiling):",
            p.runs,
            p.seconds_per_run * 1e3
        );
        println!("| operator | nodes | ms | share |");
        println!("|---|---|---|---|");
        for (op, s, n) in p.by_op() {
            println!(
                "| {op} | {n} | {:.2} | {:.1}% |",
                s * 1e3,
                100.0 * s / p.seconds_per_run
            );
        }
        println!("\nslowest nodes:");
        for n in p.nodes.iter().take(25) {
            println!("  {:>8.2} ms  {:<24} {}", n.seconds * 1e3, n.op, n.name);
        }
    }
    Ok(())
}

/// A model file as read: its graph, its name, and what its bioimage.io package declares
/// (when it came from one).
struct ModelFile {
    proto: onnx::pb::ModelProto,
    name: String,
    declared: Option<package::Declared>,
}

/// The model at `path` (an ONNX file, or a bioimage.io package folder or zip), or the
/// shipped one compiled into this binary.
fn read_model(path: Option<&std::path::Path>) -> Result<ModelFile> {
    Ok(match path {
        Some(p) if package::is_package(p) => {
            let pkg = package::read_package(p)?;
            ModelFile {
                proto: pkg.model,
                name: pkg.declared.source_name.clone(),
                declared: Some(pkg.declared),
            }
        }
        Some(p) => ModelFile {
            proto: onnx::read_model(p)?,
            name: p.display().to_string(),
            declared: None,
        },
        None => ModelFile {
            proto: onnx::decode_model(EMBEDDED_MODEL, EMBEDDED_NAME)?,
            name: EMBEDDED_NAME.to_string(),
            declared: None,
        },
    })
}

/// The engine for the model at `path`, and what tile sizes must be multiples of: the
/// network's down-sampling factor, or the size step a package declares. A package's
/// declarations are checked against the network.
fn load_model(
    path: Option<&std::path::Path>,
    threads: usize,
    monte_carlo_dropout: bool,
) -> Result<(Segmenter, usize)> {
    let file = read_model(path)?;
    let options = skipseg_runtime::Options {
        threads,
        monte_carlo_dropout,
        ..Default::default()
    };
    let seg = Segmenter::with_options(file.proto, &file.name, &options)?;
    let factor = seg.meta().arch.down_factor();
    let multiple = match &file.declared {
        Some(declared) => {
            // what the package's rdf.yaml declares must be what the network computes
            package::check_package_model(declared, &seg)?;
            declared.tile_multiple(factor)
        }
        None => factor,
    };
    Ok((seg, multiple))
}

fn package(args: PackageArgs) -> Result<()> {
    let ModelFile {
        proto,
        name: source,
        ..
    } = read_model(args.model.as_deref())?;
    let seg = Segmenter::from_proto(proto.clone(), &source)?;
    let (stem, card) = match &args.model {
        Some(m) => {
            let card_path = m.with_extension("md");
            let card = if card_path.is_file() {
                Some(std::fs::read_to_string(&card_path).with_context(|| {
                    format!("{}: cannot read the model card", card_path.display())
                })?)
            } else {
                None
            };
            (
                m.file_stem()
                    .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
                card,
            )
        }
        None => (
            "isbi-small-bce".to_string(),
            Some(EMBEDDED_CARD.to_string()),
        ),
    };
    let sample = match &args.sample {
        Some(p) => io::read_slices(p)?
            .into_iter()
            .next()
            .map(|s| s.pixels)
            .with_context(|| format!("{}: no image", p.display()))?,
        None => package::synthetic_em(256, 256),
    };
    let name = args.name.unwrap_or_else(|| format!("skipseg {stem}"));
    let description = format!(
        "Membrane probability for electron microscopy (ISBI 2012 style), {} residual \
         FCN (Drozdzal et al. 2016), by skipseg",
        seg.meta().arch.name
    );
    let written = package::write_package(
        &seg,
        &package::PackageSpec {
            name: &name,
            description: &description,
            card: card.as_deref(),
            onnx: &proto,
            sample: &sample,
        },
        &args.output,
    )?;
    println!(
        "wrote {} ({}) and {}",
        written.dir.display(),
        written.files.join(", "),
        written.zip.display()
    );
    Ok(())
}

/// Every core of this machine.
fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How `predict` runs every window: its tile plan, and the blending, averaging and
/// Monte-Carlo options of the command line (averaging: the model's default unless
/// --tta).
fn inference(args: &PredictArgs, seg: &Segmenter, plan: TilePlan) -> skipseg_runtime::Inference {
    skipseg_runtime::Inference {
        plan,
        blend: args.blend,
        averaging: args.tta.unwrap_or(seg.meta().inference.averaging),
        monte_carlo: (args.mc_samples > 0).then_some(skipseg_runtime::MonteCarlo {
            samples: args.mc_samples,
            seed: args.seed,
        }),
    }
}

/// A progress bar counting tiles, drawn on a terminal only.
fn tile_progress_bar(tiles: Option<u64>, prefix: String) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    let bar = ProgressBar::with_draw_target(
        tiles,
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} tiles ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

fn predict(args: PredictArgs) -> Result<()> {
    let threads = args.threads.unwrap_or_else(all_cores);
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    let (seg, factor) = load_model(args.model.as_deref(), threads, args.mc_samples > 0)?;
    if args.mc_samples > 0 {
        anyhow::ensure!(
            !seg.dropout_masks().is_empty(),
            "{}: --mc-samples needs a model trained with dropout (segment-train --dropout P); this one has none",
            seg.source_name()
        );
    }
    if args.inputs.len() == 1 && io::zarr::is_zarr_store(&args.inputs[0]) {
        return predict_zarr(&args, &seg, factor, threads);
    }
    anyhow::ensure!(
        args.shard.is_none(),
        "--shard applies to an OME-Zarr input only ({} is not a Zarr store)",
        args.inputs[0].display()
    );
    anyhow::ensure!(
        !args.output.exists() || args.output.is_dir(),
        "{}: the output (-o) must be a folder, and this is a file",
        args.output.display()
    );
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create output folder", args.output.display()))?;
    let mut files = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            files.extend(io::list_images(input)?);
        } else {
            files.push(input.clone());
        }
    }
    let mut pages = Vec::new();
    for file in &files {
        pages.extend(io::list_pages(file)?);
    }
    for page in pages {
        let stem = page
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let name = if page.in_stack {
            format!("{stem}_p{:03}", page.index)
        } else {
            stem
        };
        let (h, w) = (page.height, page.width);
        let plan = TilePlan::new(h, w, args.tile, args.halo, factor);
        let tiles = (plan.rows * plan.cols) as u64;
        let bar = tile_progress_bar(Some(tiles), name.clone());
        let started = std::time::Instant::now();
        let prep = seg.meta().preprocessing;
        let stats = if prep.per_image {
            // first pass: the image's intensity statistics, streamed like the second
            skipseg_runtime::intensity_stats(&mut page.open()?)?
        } else {
            skipseg_runtime::IntensityStats::default()
        };
        let mut reader = page.open()?;
        let mut sink = io::ProbabilitySink::create(
            &args.output,
            &name,
            w,
            h,
            args.float,
            args.threshold,
            args.overlay,
        )?;
        let how = inference(&args, &seg, plan);
        let mut missing = 0usize;
        skipseg_runtime::segment_tiled(
            &seg,
            &mut reader,
            prep.for_image(&stats),
            &how,
            &mut || bar.inc(1),
            &mut |_, input, row| {
                missing += input.iter().filter(|v| !v.is_finite()).count();
                sink.write_row(input, row)
            },
        )?;
        let written = sink.finish()?;
        bar.finish_and_clear();
        if missing > 0 {
            eprintln!(
                "warning: {}: {missing} NaN/infinite pixels treated as missing (left out of \
                 the image statistics, seen by the network as the mean intensity)",
                page.name
            );
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}: {w}x{h}, {tiles} tiles of {}x{}{}, {secs:.2} s, {:.2} MP/s -> {}",
            page.name,
            plan.window_w,
            plan.window_h,
            match how.averaging {
                skipseg_runtime::Averaging::None => "",
                skipseg_runtime::Averaging::Flips => " x 4 flips",
                skipseg_runtime::Averaging::Dihedral => " x 8 symmetries",
            },
            (w * h) as f64 / 1e6 / secs.max(1e-9),
            written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// `predict` on an OME-Zarr input: the whole volume or one shard of it.
fn predict_zarr(args: &PredictArgs, seg: &Segmenter, factor: usize, threads: usize) -> Result<()> {
    let input = &args.inputs[0];
    anyhow::ensure!(
        args.threshold.is_none() && !args.overlay,
        "--threshold and --overlay are for image outputs; a Zarr output holds the \
         probability (threshold it when reading)"
    );
    let image = io::zarr::ZarrImage::open(input)?;
    let plan = TilePlan::new(image.height(), image.width(), args.tile, args.halo, factor);
    let opts = skipseg_runtime::volume::VolumeOptions {
        inference: inference(args, seg, plan),
        float: args.float,
        shard: args.shard.unwrap_or(skipseg_runtime::volume::Shard::ALL),
    };
    let bar = tile_progress_bar(None, format!("shard {}", opts.shard));
    let report = skipseg_runtime::volume::segment_volume(
        seg,
        &image,
        &args.output,
        &opts,
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )?;
    bar.finish_and_clear();
    println!(
        "{}: shard {} of {:?} {:?}, {} slices of {}x{}: {} of {} blocks in this shard \
         computed, {} already done{}; {:.2} s, {:.2} MP/s ({threads} threads) -> {}",
        input.display(),
        opts.shard,
        image.version,
        image.sample,
        image.slices(),
        image.width(),
        image.height(),
        report.blocks_computed,
        report.blocks_in_shard,
        report.blocks_skipped,
        if report.pyramid_levels_built > 0 {
            format!(
                "; {} lower-resolution levels filled",
                report.pyramid_levels_built
            )
        } else {
            String::new()
        },
        report.seconds,
        report.pixels_computed as f64 / 1e6 / report.seconds.max(1e-9),
        args.output.display()
    );
    Ok(())
}
