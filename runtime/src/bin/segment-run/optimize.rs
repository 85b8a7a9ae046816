//! `segment-run optimize`: fold batch norms and write the rewritten model, or, with
//! `--embedded`, write the graph after every pass as an embedded model.

use std::path::PathBuf;

use anyhow::Result;
use skipseg_runtime::onnx;

#[derive(clap::Args)]
pub struct Args {
    /// Model to rewrite.
    #[arg(long)]
    model: PathBuf,
    /// Output file: ONNX, or the embedded model with --embedded.
    #[arg(short, long)]
    output: PathBuf,
    /// Write the embedded model (docs/EDGE.md): the graph after every pass (batch norms
    /// folded, dropout removed, convolutions fused, int8 chained) in skipseg's own
    /// format, for the embedded library; checked against the ONNX path before it is
    /// written.
    #[arg(long)]
    embedded: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.embedded {
        return embedded(&args);
    }
    let mut proto = onnx::read_model(&args.model)?;
    let before = onnx::op_histogram(&proto);
    skipseg_runtime::passes::dropout::strip_masks(&mut proto);
    let report =
        skipseg_runtime::passes::fold_batch_norms(&mut proto, &args.model.display().to_string())?;
    onnx::write_model(&proto, &args.output)?;
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
    println!("wrote {}", args.output.display());
    Ok(())
}

fn embedded(args: &Args) -> Result<()> {
    use anyhow::Context;
    use skipseg_runtime::embedded::{EmbeddedModel, format};
    // every convolution on skipseg's kernels, as in the embedded executor: the check
    // below compares bits
    let seg = crate::model::load_model(Some(&args.model), 1, false, true)?;
    let graph = seg.embedded_graph()?;
    let bytes = format::encode(&graph);
    // the file must give the ONNX path's bits: one window of a deterministic texture
    let name = args.model.display().to_string();
    let model = EmbeddedModel::from_bytes(&bytes, &name, 1)?;
    let f = seg.meta().arch.down_factor();
    let (h, w) = (4 * f, 6 * f);
    let c = seg.meta().arch.in_channels;
    let input = skipseg_runtime::engine::bench::texture(c, h, w);
    let want = seg.run(input.view().into_dyn())?;
    let got = model.run(input.view())?;
    let differ = want
        .iter()
        .zip(&got)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    anyhow::ensure!(
        differ == 0,
        "{name}: the embedded model differs from the ONNX path on {differ} of {} pixels of a \
         test window; not written",
        want.len()
    );
    skipseg_runtime::io::atomic::write_atomic(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let mut ops = std::collections::BTreeMap::<&str, usize>::new();
    for n in &graph.nodes {
        *ops.entry(match n.op {
            skipseg_runtime::embedded::Op::Conv(_) => "fused conv",
            skipseg_runtime::embedded::Op::Add => "add",
            skipseg_runtime::embedded::Op::Decimate => "decimate",
            skipseg_runtime::embedded::Op::Upsample => "up-sample",
            skipseg_runtime::embedded::Op::Sigmoid => "sigmoid",
        })
        .or_default() += 1;
    }
    println!(
        "embedded model, format version {}: {} nodes ({}), {} bytes; same bits as the ONNX \
         path on a {h}x{w} test window",
        format::VERSION,
        graph.nodes.len(),
        ops.iter()
            .map(|(o, n)| format!("{o} x{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        bytes.len()
    );
    println!("wrote {}", args.output.display());
    Ok(())
}
