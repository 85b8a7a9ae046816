//! Run one model N times on one window with skipseg's kernels on every convolution
//! (`skipseg`), with tract's own (`tract`), or as the engine chooses per layer shape on
//! this CPU (`default`), and nothing else: for counting instructions under qemu's `insn`
//! plugin (docs/EDGE.md, "Kernels on ARM"), where the difference between N = 1 and N = 3
//! is two runs' worth.
//!
//!     engine_runs MODEL.onnx SIZE RUNS skipseg|tract|default

use skipseg_runtime::{Options, Segmenter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, size, runs, engine] = args.as_slice() else {
        return Err("usage: engine_runs MODEL.onnx SIZE RUNS skipseg|tract|default".into());
    };
    let (size, runs): (usize, usize) = (size.parse()?, runs.parse()?);
    let options = Options {
        fuse_convolutions: engine != "tract",
        fuse_every_convolution: match engine.as_str() {
            "skipseg" => true,
            "tract" | "default" => false,
            other => return Err(format!("engine {other}: skipseg, tract or default").into()),
        },
        threads: 1,
        ..Options::default()
    };
    let seg = Segmenter::with_options(
        skipseg_runtime::onnx::read_model(model.as_ref())?,
        model,
        &options,
    )?;
    let input = skipseg_runtime::engine::bench::texture(1, size, size).into_dyn();
    let mut checksum = 0.0f64;
    for _ in 0..runs {
        checksum += seg
            .run(input.view())?
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>();
    }
    println!("{engine}: {runs} runs of {size}x{size}, checksum {checksum:.3}");
    Ok(())
}
