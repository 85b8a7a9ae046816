//! Segmenting image files: PNG and TIFF pages (single files, multi-page stacks, folders
//! of them) in, probability maps (8-bit PNG or float TIFF, optionally a mask and an
//! overlay) out. This is `segment-run predict` on images, as a library function, as
//! [`crate::volume::segment_volume`] is for OME-Zarr volumes.
//!
//! Three threads work as a pipeline, so that file I/O hides behind the network:
//! - a *reader* decodes the next page (and its intensity statistics) while the network
//!   runs on this one;
//! - the calling thread runs the network ([`crate::segment_tiled`]);
//! - a *writer* encodes and writes the previous page's outputs (temporary files, renamed
//!   into place when complete).
//!
//! Memory stays bounded: the reader holds at most one decoded page ahead (pages larger
//! than [`ImageOptions::prefetch_pixels`] are not decoded ahead but streamed row by row
//! by the calling thread, in two passes, as before), and the queue to the writer holds at
//! most about as many rows as one prefetched page. Pages are written in input order. An
//! error stops the run with the file it is about named; outputs already written stay,
//! the page being written leaves no file behind.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use ndarray::Array2;

use crate::engine::{Inference, Segmenter, intensity_stats, require_finite_pixels, segment_tiled};
use crate::error::{Error, Result};
use crate::io::{self, Page, ProbabilitySink};
use crate::onnx::IntensityStats;
use crate::tiling::{ArrayRows, RowSource, TilePlan};

/// Pages of at most this many pixels are decoded ahead by the reader thread (64 MB of
/// f32 for the page, as much again for its rows queued to the writer).
pub const DEFAULT_PREFETCH_PIXELS: usize = 16 << 20;

/// What to write, and how to run the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageOptions {
    pub inference: Inference,
    /// 32-bit float TIFF probabilities instead of 8-bit PNG.
    pub float: bool,
    /// Also write a binary mask (probability > threshold) as PNG.
    pub threshold: Option<f32>,
    /// Also write an RGB overlay of the mask (or the probability) on the input.
    pub overlay: bool,
    /// Largest page decoded ahead (pixels); larger pages stream.
    pub prefetch_pixels: usize,
}

impl ImageOptions {
    /// 8-bit PNG probabilities only, with `inference`.
    pub fn new(inference: Inference) -> Self {
        Self {
            inference,
            float: false,
            threshold: None,
            overlay: false,
            prefetch_pixels: DEFAULT_PREFETCH_PIXELS,
        }
    }
}

/// What happened to one page.
#[derive(Debug, Clone, PartialEq)]
pub struct PageReport {
    /// The page's name (`file`, or `file[page]` in a stack).
    pub name: String,
    pub width: usize,
    pub height: usize,
    /// The tiles it was cut into, and their window size.
    pub plan: TilePlan,
    /// Pixels that were NaN or infinite (left out of the statistics, seen by the network
    /// as the mean intensity).
    pub missing: u64,
    /// Seconds the calling thread spent on the page (normalisation, the network,
    /// stitching; reading and writing overlap with other pages and are not counted).
    pub compute_seconds: f64,
    /// Of which in the network itself ([`Segmenter::network_seconds`]).
    pub network_seconds: f64,
    /// Files written.
    pub written: Vec<PathBuf>,
}

/// Progress of [`segment_images`], reported on the calling thread.
#[derive(Debug)]
pub enum Event<'a> {
    /// The network starts on a page of `tiles` tiles.
    PageStarted { name: &'a str, tiles: usize },
    /// One more tile of the current page is done.
    TileDone,
    /// A page's files are written.
    PageWritten(&'a PageReport),
}

/// Every page of `inputs` (files, or folders of image files, sorted by name), without
/// decoding pixels, checked for readability of their headers.
pub fn list_inputs(inputs: &[PathBuf]) -> Result<Vec<Page>> {
    let mut pages = Vec::new();
    for input in inputs {
        pages.extend(io::list_pages(input)?);
    }
    Ok(pages)
}

/// The output name of a page: the file's stem, `stem_p007` for page 7 of a stack.
pub fn output_name(page: &Page) -> String {
    let stem = page
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    if page.in_stack {
        format!("{stem}_p{:03}", page.index)
    } else {
        stem
    }
}

/// A page as the reader hands it over: decoded with its statistics, or to be streamed.
struct Loaded {
    page: Page,
    pixels: Option<(Array2<f32>, IntensityStats)>,
}

/// What the calling thread tells the writer.
enum ToWriter {
    Begin {
        page: Page,
        plan: TilePlan,
    },
    /// Finished rows (input intensities and probabilities, `width` values each).
    Rows(Vec<(Vec<f32>, Vec<f32>)>),
    End {
        missing: u64,
        compute_seconds: f64,
        network_seconds: f64,
    },
}

/// Segment every page of `pages` into `output` (a folder, created if missing) with the
/// three-thread pipeline of this module; `events` sees progress on the calling thread.
/// Returns the reports of the pages written, in order.
pub fn segment_images(
    seg: &Segmenter,
    pages: &[Page],
    output: &Path,
    opts: &ImageOptions,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<PageReport>> {
    if output.exists() && !output.is_dir() {
        return Err(Error::Image {
            path: output.to_path_buf(),
            reason: "the output must be a folder, and this is a file".into(),
        });
    }
    std::fs::create_dir_all(output).map_err(|source| Error::Io {
        path: output.to_path_buf(),
        action: "cannot create the output folder",
        source,
    })?;
    // rows per message to the writer, and messages queued: about one prefetched page
    let batch_pixels = 1usize << 18;
    let queued = (opts.prefetch_pixels / batch_pixels).max(4);
    std::thread::scope(|scope| {
        let (page_tx, page_rx) = sync_channel::<Result<Loaded>>(1);
        let (row_tx, row_rx) = sync_channel::<ToWriter>(queued);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<PageReport>();
        let prefetch = opts.prefetch_pixels;
        let reader = scope.spawn(move || read_pages(pages, prefetch, &page_tx));
        let writer = scope.spawn(move || write_pages(output, opts, row_rx, &done_tx));
        let computed = compute_pages(seg, opts, page_rx, &row_tx, &done_rx, events, batch_pixels);
        // closing the queue lets the writer finish (or notice the run stopped)
        drop(row_tx);
        let written = writer.join().unwrap_or_else(|p| {
            Err(Error::Engine {
                source_name: "writer thread".into(),
                reason: crate::engine::panic_message(p.as_ref()),
            })
        });
        // the reader stops at its next send once the calling thread has let go
        let _ = reader.join();
        // a writer that failed made the calling thread stop too: its error is the cause
        written?;
        let mut reports = computed?;
        reports.extend(
            done_rx
                .try_iter()
                .inspect(|r| events(Event::PageWritten(r))),
        );
        Ok(reports)
    })
}

/// The reader thread: every page, decoded whole when small enough.
fn read_pages(pages: &[Page], prefetch: usize, out: &SyncSender<Result<Loaded>>) {
    for page in pages {
        let loaded = if page.width * page.height <= prefetch {
            page.read().map(|slice| {
                let stats = IntensityStats::of(slice.pixels.iter());
                Loaded {
                    page: page.clone(),
                    pixels: Some((slice.pixels, stats)),
                }
            })
        } else {
            Ok(Loaded {
                page: page.clone(),
                pixels: None,
            })
        };
        let failed = loaded.is_err();
        if out.send(loaded).is_err() || failed {
            return;
        }
    }
}

/// The calling thread's part: the network over each page, rows to the writer.
fn compute_pages(
    seg: &Segmenter,
    opts: &ImageOptions,
    pages: Receiver<Result<Loaded>>,
    to_writer: &SyncSender<ToWriter>,
    written: &Receiver<PageReport>,
    events: &mut dyn FnMut(Event<'_>),
    batch_pixels: usize,
) -> Result<Vec<PageReport>> {
    let prep = seg.meta().preprocessing;
    let mut reports = Vec::new();
    let writer_gone = || Error::Engine {
        source_name: "writer thread".into(),
        reason: "stopped".into(),
    };
    for loaded in pages.iter() {
        let Loaded { page, pixels } = loaded?;
        let started = Instant::now();
        let network_before = seg.network_seconds();
        let (stats, mut source): (IntensityStats, Box<dyn RowSource + '_>) = match &pixels {
            Some((image, stats)) => (*stats, Box::new(ArrayRows::new(image.view()))),
            None => {
                // first pass: the statistics, streamed like the second
                let stats = intensity_stats(&mut page.open()?)?;
                (stats, Box::new(page.open()?))
            }
        };
        require_finite_pixels(&stats, &page.name)?;
        let plan = seg.tile_plan(&opts.inference.tiling, page.height, page.width)?;
        events(Event::PageStarted {
            name: &page.name,
            tiles: plan.rows * plan.cols,
        });
        to_writer
            .send(ToWriter::Begin {
                page: page.clone(),
                plan,
            })
            .map_err(|_| writer_gone())?;
        let rows_per_batch = (batch_pixels / page.width).max(1);
        let mut batch = Vec::with_capacity(rows_per_batch);
        segment_tiled(
            seg,
            source.as_mut(),
            prep.for_image(&stats),
            &opts.inference,
            &mut || events(Event::TileDone),
            &mut |_, input, prob| {
                // the image row only where the overlay needs it (else a copy of the
                // page for nothing)
                let input = if opts.overlay {
                    input.to_vec()
                } else {
                    Vec::new()
                };
                batch.push((input, prob));
                if batch.len() == rows_per_batch {
                    to_writer
                        .send(ToWriter::Rows(std::mem::take(&mut batch)))
                        .map_err(|_| writer_gone())?;
                }
                Ok(())
            },
        )?;
        if !batch.is_empty() {
            to_writer
                .send(ToWriter::Rows(batch))
                .map_err(|_| writer_gone())?;
        }
        let missing = stats.missing();
        to_writer
            .send(ToWriter::End {
                missing,
                compute_seconds: started.elapsed().as_secs_f64(),
                network_seconds: seg.network_seconds() - network_before,
            })
            .map_err(|_| writer_gone())?;
        for r in written.try_iter() {
            events(Event::PageWritten(&r));
            reports.push(r);
        }
    }
    Ok(reports)
}

/// The writer thread: each page's rows into its files, in order.
fn write_pages(
    output: &Path,
    opts: &ImageOptions,
    messages: Receiver<ToWriter>,
    done: &std::sync::mpsc::Sender<PageReport>,
) -> Result<()> {
    let mut current: Option<(Page, TilePlan, ProbabilitySink)> = None;
    for message in messages.iter() {
        match message {
            ToWriter::Begin { page, plan } => {
                let sink = ProbabilitySink::create(
                    output,
                    &output_name(&page),
                    page.width,
                    page.height,
                    opts.float,
                    opts.threshold,
                    opts.overlay,
                )?;
                current = Some((page, plan, sink));
            }
            ToWriter::Rows(rows) => {
                let (_, _, sink) = current.as_mut().expect("rows after Begin");
                for (input, prob) in &rows {
                    sink.write_row(input, prob)?;
                }
            }
            ToWriter::End {
                missing,
                compute_seconds,
                network_seconds,
            } => {
                let (page, plan, sink) = current.take().expect("End after Begin");
                let written = sink.finish()?;
                // the calling thread may have stopped; nothing is lost by not telling it
                let _ = done.send(PageReport {
                    name: page.name,
                    width: page.width,
                    height: page.height,
                    plan,
                    missing,
                    compute_seconds,
                    network_seconds,
                    written,
                });
            }
        }
    }
    // a page begun but never ended (the run stopped): its sink is dropped here and
    // removes its temporary files
    Ok(())
}
