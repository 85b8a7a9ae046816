//! `segment-run info`: what a model is and how it is run by default.

use std::path::PathBuf;

use anyhow::Result;
use skipseg_runtime::{Averaging, Segmenter, onnx};

use crate::model::{ModelFile, is_embedded_model, load_model, read_model};

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model exported by segment-train, or an embedded model (default: the shipped
    /// model built into segment-run).
    #[arg(long)]
    model: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let (seg, name, proto) = match args.model.as_deref().filter(|p| is_embedded_model(p)) {
        Some(p) => (
            load_model(Some(p), 1, false, false)?,
            p.display().to_string(),
            None,
        ),
        None => {
            let ModelFile { proto, name, .. } = read_model(args.model.as_deref())?;
            (
                Segmenter::from_proto(proto.clone(), &name)?,
                name,
                Some(proto),
            )
        }
    };
    let meta = seg.meta();
    let plan = meta.arch.plan();
    let cost = plan.cost(512, 512);
    println!("model: {name}");
    println!("architecture: {}", meta.arch.name);
    println!("  down-sampling factor: {}", meta.arch.down_factor());
    println!(
        "  receptive radius: {} px (an upper bound on the halo tiling needs)",
        plan.receptive_radius()
    );
    println!("  learnable parameters: {}", cost.params());
    println!(
        "  FLOPs per 512x512 image: {:.3} G",
        cost.flops() as f64 / 1e9
    );
    println!("preprocessing: {}", meta.preprocessing.describe());
    println!(
        "default tiling: halo {} px ({}); windows up to {} px a side for images 2048 px wide, {} px for 16384 (the whole image when it fits; peak memory about 1 GiB)",
        seg.default_halo(),
        match meta.inference.halo {
            Some(_) => "measured: tiles equal the whole image within 1/255",
            None => "not measured for this model: segment-run tune-halo records it",
        },
        seg.default_max_window(2048),
        seg.default_max_window(16384)
    );
    let masks = proto
        .as_ref()
        .and_then(|p| p.graph.as_ref())
        .map_or(0, |g| {
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
        if averaging == Averaging::None {
            ""
        } else {
            "; --tta none for one"
        }
    );
    let Some(proto) = proto else {
        let graph = seg.embedded_graph()?;
        let convs = graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, skipseg_runtime::embedded::Op::Conv(_)))
            .count();
        println!(
            "embedded model (format version {}): {} nodes, {convs} of them fused convolutions",
            skipseg_runtime::embedded::format::VERSION,
            graph.nodes.len()
        );
        return Ok(());
    };
    let ops = onnx::op_histogram(&proto)
        .into_iter()
        .map(|(op, n)| format!("{op} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("operators: {ops}");
    Ok(())
}
