//! `segment-run bench`: the engine alone on one window.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use skipseg_runtime::engine::bench::time_window;

use crate::model::load_model;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model (default: the shipped model built into segment-run).
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
    /// Compare tract's plan with the embedded executor (`optimize --embedded`) on the
    /// same graph, runs alternating in this process.
    #[arg(long, conflicts_with_all = ["profile", "json"])]
    embedded: bool,
}

/// `purge_delay`: mimalloc's purge delay in force (ms; -1: never), reported with the
/// timings because it changes them (main.rs).
pub fn run(args: Args, purge_delay: std::os::raw::c_long) -> Result<()> {
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let started = Instant::now();
    let seg = load_model(args.model.as_deref(), args.threads, false, args.embedded)?;
    let load = started.elapsed().as_secs_f64();
    if args.embedded {
        let c = skipseg_runtime::engine::bench::compare_embedded(
            &seg,
            args.size,
            args.repeats,
            args.threads,
        )?;
        println!(
            "{}: {}x{} window, {} thread(s), {} alternating runs each (same output bits checked)",
            seg.source_name(),
            args.size,
            args.size,
            args.threads,
            args.repeats
        );
        println!(
            "tract's plan: median {:.1} ms; embedded executor: median {:.1} ms; embedded / tract {:.2}; \
             embedded model {} bytes",
            c.tract_median() * 1e3,
            c.embedded_median() * 1e3,
            c.embedded_median() / c.tract_median(),
            c.bytes_converted
        );
        return Ok(());
    }
    let t = time_window(&seg, args.size, args.repeats, args.profile)?;
    if args.json {
        let mut out = serde_json::json!({
            "engine": format!("skipseg-runtime {} (tract-onnx)", env!("CARGO_PKG_VERSION")),
            "model": seg.source_name(),
            "size": args.size,
            "threads": args.threads,
            "load_ms": load * 1e3,
            "optimise_ms": t.optimise * 1e3,
            "first_run_ms": t.first_run * 1e3,
            "startup_ms": (load + t.optimise + t.first_run) * 1e3,
            "runs_ms": t.runs.iter().map(|r| r * 1e3).collect::<Vec<_>>(),
            "median_ms": t.median * 1e3,
            "gflops": t.flops / 1e9,
            "allocator_purge_delay_ms": purge_delay,
        });
        if let Some(p) = &t.profile {
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
    println!("allocator: mimalloc, purge delay {purge_delay} ms (-1: never)");
    println!(
        "start-up {:.0} ms (load + passes {:.0}, optimise {:.0}, first run {:.0})",
        (load + t.optimise + t.first_run) * 1e3,
        load * 1e3,
        t.optimise * 1e3,
        t.first_run * 1e3
    );
    println!(
        "median of {} runs: {:.1} ms, {:.1} GFLOP/s, {:.2} MP/s",
        args.repeats,
        t.median * 1e3,
        t.flops / t.median / 1e9,
        (args.size * args.size) as f64 / 1e6 / t.median
    );
    if let Some(p) = t.profile {
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
