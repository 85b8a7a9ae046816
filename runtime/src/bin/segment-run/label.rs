//! `segment-run label`: instance labels (one id per cell) from images or from membrane
//! probability maps: seeds, seeded watershed, agglomeration, fragment removal
//! ([`skipseg_runtime::labels`]); the work is [`skipseg_runtime::label_images`].

use std::path::PathBuf;

use anyhow::Result;
use skipseg_runtime::io;
use skipseg_runtime::label_images::{Probability, label_pages};
use skipseg_runtime::labels::{LabelOptions, SeedKind};

use crate::predict::InferenceArgs;

#[derive(clap::Args)]
pub struct Args {
    /// PNG or TIFF images (8/16-bit grayscale, multi-page stacks) or folders of them; with
    /// --probabilities, membrane probability maps (e.g. `segment-run predict`'s outputs).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output folder: `<name>_labels.tif` (uint32 ids, 0 = none) and `<name>_labels.png`
    /// (each cell in a colour over the image) per slice.
    #[arg(short, long)]
    output: PathBuf,
    /// The inputs are membrane probability maps (1 = membrane; 8/16-bit scaled to
    /// [0, 1], float as is): label them without running a network.
    #[arg(long)]
    probabilities: bool,
    /// ONNX model; without it, the shipped models/isbi-small-bce.onnx.
    #[arg(long, conflicts_with = "probabilities")]
    model: Option<PathBuf>,
    #[command(flatten)]
    how: InferenceArgs,
    /// Seeds: regional minima of the smoothed probability, regional maxima of the
    /// distance to the nearest membrane (one per cell body), or the 4-connected
    /// components of the smoothed probability below --seed-max (the cells of the
    /// thresholded map).
    #[arg(long, value_enum, default_value_t = LabelOptions::default().seeds)]
    seeds: SeedKind,
    /// Gaussian sigma (pixels) of the smoothing before the seeds are found (0 = none);
    /// larger = fewer seeds.
    #[arg(long, default_value_t = LabelOptions::default().seed_sigma)]
    seed_sigma: f32,
    /// Seeds only where the smoothed membrane probability is below this.
    #[arg(long, default_value_t = LabelOptions::default().seed_max_probability)]
    seed_max: f32,
    /// Merge adjacent regions while the mean membrane probability along their shared
    /// border is below this (0 = keep the watershed's regions).
    #[arg(long, default_value_t = LabelOptions::default().merge_threshold)]
    merge_threshold: f32,
    /// Regions of fewer pixels join the neighbour behind their weakest border.
    #[arg(long, default_value_t = LabelOptions::default().min_size)]
    min_size: usize,
    /// The first id (ids are unique across all the slices of one run, counted on from
    /// here: give a later run the next free id to keep them unique across runs).
    #[arg(long, default_value_t = 1)]
    first_id: u32,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.first_id >= 1,
        "--first-id must be at least 1 (0 means no label)"
    );
    if let Some(store) = args.inputs.iter().find(|p| io::zarr::is_zarr_store(p)) {
        anyhow::bail!(
            "{}: labels of OME-Zarr volumes are not written yet: a shard worker sees blocks, \
             and ids consistent across blocks and workers need a relabelling pass over the \
             seams that skipseg does not have. Predict the volume (`segment-run predict`), \
             export its slices as TIFF and label those: ids stay unique across slices.",
            store.display()
        );
    }
    let pages = skipseg_runtime::images::list_inputs(&args.inputs)?;
    let options = LabelOptions {
        seeds: args.seeds,
        seed_sigma: args.seed_sigma,
        seed_max_probability: args.seed_max,
        merge_threshold: args.merge_threshold,
        min_size: args.min_size,
    };
    let loaded;
    let source = if args.probabilities {
        Probability::Given
    } else {
        loaded = args.how.load(args.model.as_deref())?;
        Probability::Network {
            segmenter: &loaded.0,
            inference: args.how.inference(&loaded.0),
        }
    };
    let bar = crate::predict::progress_bar(Some(pages.len() as u64), "label".into(), "slices");
    let started = std::time::Instant::now();
    let reports = label_pages(
        &pages,
        &args.output,
        source,
        &options,
        args.first_id,
        &mut |r| {
            bar.suspend(|| {
                println!(
                    "{}: {}x{}, {} labels (ids {}-{}) -> {}",
                    r.name,
                    r.width,
                    r.height,
                    r.count,
                    r.first_id,
                    r.first_id + r.count.saturating_sub(1),
                    r.written
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    let total: u64 = reports.iter().map(|r| r.count as u64).sum();
    println!(
        "total: {} slices, {total} labels, next free id {}, {:.2} s",
        reports.len(),
        args.first_id as u64 + total,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
