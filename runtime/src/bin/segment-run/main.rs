//! `segment-run`: the command-line front end of the skipseg runtime. One module per
//! subcommand; each parses its arguments, calls the library, and prints.

mod bench;
mod eval;
mod info;
mod label;
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
    /// Instance labels: one id per cell (seeds, seeded watershed, agglomeration by mean
    /// boundary probability, fragment removal), as uint32 TIFF and a colour overlay.
    Label(label::Args),
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
/// (docs/PERFORMANCE.md). So segment-run turns purging off (delay -1) as it starts,
/// through mimalloc's option API, unless the user set `MIMALLOC_PURGE_DELAY` (mimalloc
/// reads that itself). No re-execution: the binary runs wherever it can start (under
/// qemu-user, in sandboxes that forbid exec of /proc/self/exe).
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (its 16th entry in v2 and v3),
/// and its defaults (v3, which libmimalloc-sys builds by default: 1000 ms; v2: 10 ms).
/// The option is changed only where it reads as one of them, so that a renumbered enum
/// in a future mimalloc changes nothing rather than another option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULTS: [std::os::raw::c_long; 2] = [1000, 10];

/// Turn mimalloc's purging off (see [`PURGE_DELAY_ENV`]); returns the delay in force.
#[allow(unsafe_code)]
fn configure_allocator() -> std::os::raw::c_long {
    // SAFETY: mimalloc's option getters and setters read and write one integer of its
    // static option table (no pointers); mimalloc is initialised before `main`.
    unsafe {
        if std::env::var_os(PURGE_DELAY_ENV).is_none()
            && MI_PURGE_DELAY_DEFAULTS
                .contains(&libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY))
        {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
    }
}

fn main() {
    let purge_delay = configure_allocator();
    let cli = Cli::parse();
    quiet_panics();
    match std::panic::catch_unwind(|| run(cli, purge_delay)) {
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

fn run(cli: Cli, purge_delay: std::os::raw::c_long) -> Result<()> {
    match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Optimize(args) => optimize::run(args),
        Command::TuneHalo(args) => tune_halo::run(args),
        Command::Package(args) => package::run(args),
        Command::Info(args) => info::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Bench(args) => bench::run(args, purge_delay),
        Command::Eval(args) => eval::run(args),
        Command::Label(args) => label::run(args),
    }
}

/// Every core of this machine.
fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
