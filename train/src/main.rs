//! `segment-train`: inspect architectures, write parity fixtures (and, later, train).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use clap::{Parser, Subcommand};
use skipseg_runtime::arch::{ArchSpec, BlockKind, Level};
use skipseg_runtime::onnx::{self, Preprocessing};
use skipseg_train::backend::Cpu;
use skipseg_train::model::ResFcn;
use skipseg_train::{export, presets, synthetic, tensor};

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
    /// Write the golden parity fixtures (model.onnx + input/output .npy per case).
    Fixtures {
        /// Output folder.
        #[arg(long, default_value = "fixtures")]
        out: PathBuf,
    },
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
        Command::Fixtures { out } => fixtures(&out),
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

/// The fixture cases: small architectures that together cover every block type and
/// every switch, each run at two input sizes.
fn fixture_cases() -> Vec<(ArchSpec, [(usize, usize); 2])> {
    let level = |block, width, repeats| Level {
        block,
        width,
        repeats,
    };
    use BlockKind::*;
    let base = |name: &str| ArchSpec {
        name: name.into(),
        in_channels: 1,
        stem_width: 4,
        down: vec![],
        across: level(Simple, 8, 1),
        up: vec![],
        head_width: 4,
        long_skips: true,
        short_skips: true,
        batch_norm: true,
        dropout: 0.0,
        bn_epsilon: 1e-5,
    };
    vec![
        (
            ArchSpec {
                down: vec![level(Simple, 8, 1), level(Bottleneck, 16, 2)],
                across: level(Bottleneck, 32, 1),
                up: vec![level(Bottleneck, 16, 2), level(Simple, 8, 1)],
                ..base("bottleneck-two-levels")
            },
            [(32, 32), (24, 40)],
        ),
        (
            ArchSpec {
                down: vec![level(Basic, 8, 2)],
                across: level(Basic, 8, 1),
                up: vec![level(Basic, 6, 1)],
                short_skips: false,
                batch_norm: false,
                ..base("basic-no-short-skips-no-bn")
            },
            [(16, 16), (22, 34)],
        ),
        (
            ArchSpec {
                down: vec![
                    level(Simple, 8, 1),
                    level(Simple, 12, 1),
                    level(Simple, 16, 1),
                ],
                across: level(Simple, 16, 1),
                up: vec![
                    level(Simple, 12, 1),
                    level(Simple, 8, 1),
                    level(Simple, 4, 1),
                ],
                long_skips: false,
                dropout: 0.3,
                ..base("simple-three-levels-no-long-skips")
            },
            [(32, 32), (40, 56)],
        ),
    ]
}

fn fixtures(out: &Path) -> Result<()> {
    let device = Default::default();
    for (i, (spec, sizes)) in fixture_cases().into_iter().enumerate() {
        spec.validate()?;
        let dir = out.join(&spec.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
        let model = synthetic::randomize(ResFcn::<Cpu>::new(&spec, &device), 1000 + i as u64);
        let proto = export::to_onnx(&model, Preprocessing::default());
        onnx::write_model(&proto, &dir.join("model.onnx"))?;
        for (k, (h, w)) in sizes.into_iter().enumerate() {
            let input =
                synthetic::random_input(spec.in_channels, h, w, 2000 + 10 * i as u64 + k as u64);
            let output =
                tensor::to_array(model.probability(tensor::from_array::<Cpu>(&input, &device)));
            skipseg_runtime::npy::write(
                &dir.join(format!("input{k}.npy")),
                input.into_dyn().view(),
            )?;
            skipseg_runtime::npy::write(
                &dir.join(format!("output{k}.npy")),
                output.into_dyn().view(),
            )?;
        }
        println!("wrote {}", dir.display());
    }
    Ok(())
}
