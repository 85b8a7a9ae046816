//! `segment-run predict`: images (PNG/TIFF pages, folders) or an OME-Zarr volume in,
//! probability maps out. The work is the library's ([`skipseg_runtime::images`],
//! [`skipseg_runtime::volume`]); this module parses, shows progress and prints.

use std::path::PathBuf;

use anyhow::Result;
use skipseg_runtime::images::{self, Event, ImageOptions};
use skipseg_runtime::tiling::{Blend, Tiling};
use skipseg_runtime::volume::{Shard, VolumeOptions, segment_volume};
use skipseg_runtime::{Averaging, Inference, MonteCarlo, Segmenter, io};

use crate::model::load_model;

#[derive(clap::Args)]
pub struct Args {
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
    shard: Option<Shard>,
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
    #[command(flatten)]
    pub how: InferenceArgs,
}

/// How the network runs on an image (shared by `predict` and `label`).
#[derive(clap::Args)]
pub struct InferenceArgs {
    /// Tile core size (rounded up to the model's down-sampling factor). Default: windows
    /// as large as memory allows (`segment-run info`), the whole image when it fits.
    #[arg(long)]
    pub tile: Option<usize>,
    /// Context around each tile, in pixels (rounded up to the down-sampling factor).
    /// Default: the halo the model records, measured so that tiles equal the whole
    /// image within 1/255 (`segment-run info`).
    #[arg(long)]
    pub halo: Option<usize>,
    /// How tiles are combined: crop = keep each tile's centre; linear = blend overlaps.
    #[arg(long, value_enum, default_value = "crop")]
    pub blend: Blend,
    /// Threads of the inference engine (default: every core of this machine).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Test-time averaging over flipped (flips: 4 passes) or flipped and transposed
    /// (dihedral: 8 passes) copies of every tile, 4 or 8 times slower. Default: what
    /// the model records (`segment-run info`; the shipped model: dihedral, see
    /// models/isbi-small-bce.md).
    #[arg(long, value_enum)]
    pub tta: Option<Averaging>,
    /// Monte-Carlo dropout (models trained with dropout): average K passes per window,
    /// each with fresh dropout masks (K x the passes of --tta); 0 = the deterministic
    /// model.
    #[arg(long, default_value_t = 0)]
    pub mc_samples: usize,
    /// Seed of the Monte-Carlo dropout masks: the same seed gives the same output (any
    /// thread count), another seed other samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl InferenceArgs {
    /// How every window is run: tiles, blending, averaging (the model's default unless
    /// --tta) and Monte-Carlo dropout, as the command line says.
    pub fn inference(&self, seg: &Segmenter) -> Inference {
        Inference {
            tiling: Tiling {
                tile: self.tile,
                halo: self.halo,
            },
            blend: self.blend,
            averaging: self.tta.unwrap_or(seg.meta().inference.averaging),
            monte_carlo: (self.mc_samples > 0).then_some(MonteCarlo {
                samples: self.mc_samples,
                seed: self.seed,
            }),
        }
    }

    /// The model (`--model`, or the shipped one) loaded for these options, refused for
    /// --mc-samples when it has no dropout.
    pub fn load(&self, model: Option<&std::path::Path>) -> Result<(Segmenter, usize)> {
        let threads = self.threads.unwrap_or_else(crate::all_cores);
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        let seg = load_model(model, threads, self.mc_samples > 0, false)?;
        if self.mc_samples > 0 {
            anyhow::ensure!(
                !seg.dropout_masks().is_empty(),
                "{}: --mc-samples needs a model trained with dropout (segment-train --dropout P); this one has none",
                seg.source_name()
            );
        }
        Ok((seg, threads))
    }
}

/// A progress bar counting tiles, drawn on a terminal only.
fn tile_progress_bar(tiles: Option<u64>, prefix: String) -> indicatif::ProgressBar {
    progress_bar(tiles, prefix, "tiles")
}

/// A progress bar counting `unit`, drawn on a terminal only.
pub fn progress_bar(len: Option<u64>, prefix: String, unit: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    let bar = ProgressBar::with_draw_target(
        len,
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

pub fn run(args: Args) -> Result<()> {
    let (seg, threads) = args.how.load(args.model.as_deref())?;
    if args.inputs.len() == 1 && io::zarr::is_zarr_store(&args.inputs[0]) {
        return predict_zarr(&args, &seg, threads);
    }
    anyhow::ensure!(
        args.shard.is_none(),
        "--shard applies to an OME-Zarr input only ({} is not a Zarr store)",
        args.inputs[0].display()
    );
    let pages = images::list_inputs(&args.inputs)?;
    let opts = ImageOptions {
        float: args.float,
        threshold: args.threshold,
        overlay: args.overlay,
        ..ImageOptions::new(args.how.inference(&seg))
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let per_symmetry = match opts.inference.averaging {
        Averaging::None => "",
        Averaging::Flips => " x 4 flips",
        Averaging::Dihedral => " x 8 symmetries",
    };
    let started = std::time::Instant::now();
    let network_before = seg.network_seconds();
    let mut pages_done = 0usize;
    let mut pages_started = 0usize;
    // (instant, network seconds) when the second page starts: the steady state, after
    // the first page has compiled the plan for its window size
    let mut second_page: Option<(std::time::Instant, f64)> = None;
    images::segment_images(
        &seg,
        &pages,
        &args.output,
        &opts,
        &mut |event| match event {
            Event::PageStarted { name, tiles } => {
                pages_started += 1;
                if pages_started == 2 {
                    second_page = Some((std::time::Instant::now(), seg.network_seconds()));
                }
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                bar = Some(tile_progress_bar(Some(tiles as u64), name.to_string()));
            }
            Event::TileDone => {
                if let Some(b) = &bar {
                    b.inc(1);
                }
            }
            Event::PageWritten(r) => {
                if r.missing > 0 {
                    eprintln!(
                        "warning: {}: {} NaN/infinite pixels treated as missing (left out of \
                     the image statistics, seen by the network as the mean intensity)",
                        r.name, r.missing
                    );
                }
                let p = &r.plan;
                pages_done += 1;
                println!(
                    "{}: {}x{}, {} tiles of {}x{}{per_symmetry}, {:.2} s (network {:.2} s), \
                     {:.2} MP/s -> {}",
                    r.name,
                    r.width,
                    r.height,
                    p.rows * p.cols,
                    p.window_w,
                    p.window_h,
                    r.compute_seconds,
                    r.network_seconds,
                    (r.width * r.height) as f64 / 1e6 / r.compute_seconds.max(1e-9),
                    r.written
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // wall time from the first read to the last rename (model load and the plan's
    // compilation before it are not in it; compilation on a new window size is), against
    // the time inside the network: what reading, statistics, tiling and writing add
    let wall = started.elapsed().as_secs_f64();
    let network_now = seg.network_seconds();
    let network = network_now - network_before;
    let steady = second_page
        .map(|(t, n)| {
            let (w, n) = (t.elapsed().as_secs_f64(), network_now - n);
            format!(
                "; after the first page: {w:.2} s, network {n:.2} s ({:.2}x)",
                w / n.max(1e-9)
            )
        })
        .unwrap_or_default();
    println!(
        "total: {pages_done} pages in {wall:.2} s, network {network:.2} s \
         ({:.2}x the network alone){steady}",
        wall / network.max(1e-9)
    );
    Ok(())
}

/// `predict` on an OME-Zarr input: the whole volume or one shard of it.
fn predict_zarr(args: &Args, seg: &Segmenter, threads: usize) -> Result<()> {
    let input = &args.inputs[0];
    anyhow::ensure!(
        args.threshold.is_none() && !args.overlay,
        "--threshold and --overlay are for image outputs; a Zarr output holds the \
         probability (threshold it when reading)"
    );
    let image = io::zarr::ZarrImage::open(input)?;
    let opts = VolumeOptions {
        inference: args.how.inference(seg),
        float: args.float,
        shard: args.shard.unwrap_or(Shard::ALL),
    };
    let bar = tile_progress_bar(None, format!("shard {}", opts.shard));
    let report = segment_volume(seg, &image, &args.output, &opts, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
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
