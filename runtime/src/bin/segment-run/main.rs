//! `segment-run`: the command-line front end of the skipseg runtime. One module per
//! subcommand; each parses its arguments, calls the library, and prints.

mod bench;
mod eval;
mod info;
mod model;
mod optimize;
mod package;
mod predict;
mod quantize;
mod tune_halo;

use anyhow::Result;
use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Command {
    /// Segment images: write membrane probability maps (and masks, overlays).
    Predict(predict::Args),
    /// Fold batch norms into convolutions and write the rewritten model.
    Optimize(optimize::Args),
    /// Measure the smallest halo at which tiles equal the whole image (within 1/255) on
    /// reference images, and write the model with it recorded as its default halo.
    TuneHalo(tune_halo::Args),
    /// Write a bioimage.io model package (rdf.yaml, ONNX weights, test tensors made by
    /// this runtime, cover, documentation) into a folder, and the folder as a zip.
    Package(package::Args),
    /// Describe a model: architecture, receptive radius, preprocessing, operators.
    Info(info::Args),
    /// Quantize a model to int8 (standard QDQ ONNX: int8 weights per output channel,
    /// uint8 activations per tensor), calibrated on real images.
    Quantize(quantize::Args),
    /// Time the engine on one window: start-up (load, optimise, first run) and the
    /// median of repeated runs; --profile adds tract's per-node times.
    Bench(bench::Args),
    /// Score a proposal against labels with the ISBI 2012 metrics (V_rand, V_info).
    Eval(eval::Args),
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
        Command::Predict(args) => predict::run(args),
        Command::Optimize(args) => optimize::run(args),
        Command::TuneHalo(args) => tune_halo::run(args),
        Command::Package(args) => package::run(args),
        Command::Info(args) => info::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
    }
}

/// Every core of this machine.
fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
