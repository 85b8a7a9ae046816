//! Segmenting a chunked (OME-Zarr) image or volume, whole or as one of N shards
//! (feature `zarr`).
//!
//! The output is cut into *blocks*: chunk-aligned rectangles of one chunk along the
//! leading (slice) axes and, in y and x, as many whole chunks as make at least one tile
//! core (so a tile is rarely computed twice). Blocks are numbered in C order over
//! (leading chunks, block rows, block columns); shard `I/N` takes the I-th of N
//! contiguous runs of block numbers. Shards never write the same chunk, so N workers on
//! N machines fill one output with no coordination beyond the store, and each block's
//! pixels are computed exactly as a single-process run computes them
//! ([`crate::segment_region`] is bit-identical to whole-image tiling), so the union of
//! the shards is bit-identical to one run.
//!
//! When a worker finds every block done, it fills the output's lower-resolution levels
//! (the input pyramid's, each the mean of the level above) and marks them done.
//!
//! Crash safety: chunks are written atomically; after a block's chunks are stored, its
//! number is appended to the worker's log `.skipseg/done-I-of-N.log` in the output. A
//! worker (re)started on the same output skips the blocks any log lists; a block cut
//! short by a crash is not in a log and is computed again. `.skipseg/run.json` records
//! what the output is being made from (model, input, options): a worker with anything
//! else is refused instead of mixing two runs in one output.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde_json::{Value, json};

use crate::engine::{Inference, Segmenter, segment_region};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::io::zarr::{ZarrImage, ZarrOutput};
use crate::onnx::{IntensityStats, Normalisation};
use crate::tiling::{Region, TilePlan};

/// Shard `index` of `count` (0-based: a Slurm array's `$SLURM_ARRAY_TASK_ID`, a
/// Kubernetes Indexed Job's `$JOB_COMPLETION_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole output in one process.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The contiguous run of block numbers of this shard among `blocks`.
    pub fn blocks(&self, blocks: usize) -> std::ops::Range<usize> {
        let at = |i: usize| (i as u128 * blocks as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    /// `I/N` with 0 <= I < N.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?}: expected I/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("shard {s:?}: {i:?} is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("shard {s:?}: {n:?} is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "shard {s:?}: need 0 <= I < N (shards are numbered from 0)"
            ));
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The chunk-aligned blocks of an array `shape` chunked by `chunks`, at least a tile
/// core (`core`: height, width) in y and x (where the array allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockGrid {
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    /// Block size in y and x (a multiple of the chunk size).
    pub block_h: usize,
    pub block_w: usize,
    /// Chunk grid shape of the leading axes.
    pub lead_grid: Vec<u64>,
    pub rows: usize,
    pub cols: usize,
}

/// One block: its leading chunk index and its rectangle of every slice in that chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub lead_chunk: Vec<u64>,
    pub region: Region,
}

impl BlockGrid {
    pub fn new(shape: &[u64], chunks: &[u64], core: (usize, usize)) -> Self {
        let n = shape.len();
        assert!(
            n >= 2 && chunks.len() == n,
            "shape and chunks of (..., y, x)"
        );
        let (ch, cw) = (chunks[n - 2] as usize, chunks[n - 1] as usize);
        let block_h = ch * core.0.div_ceil(ch).max(1);
        let block_w = cw * core.1.div_ceil(cw).max(1);
        let (h, w) = (shape[n - 2] as usize, shape[n - 1] as usize);
        Self {
            shape: shape.to_vec(),
            chunks: chunks.to_vec(),
            block_h,
            block_w,
            lead_grid: (0..n - 2).map(|i| shape[i].div_ceil(chunks[i])).collect(),
            rows: h.div_ceil(block_h),
            cols: w.div_ceil(block_w),
        }
    }

    pub fn len(&self) -> usize {
        self.lead_grid.iter().product::<u64>() as usize * self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Block number `b` (C order over leading chunks, rows, columns).
    pub fn block(&self, b: usize) -> Block {
        let n = self.shape.len();
        let (h, w) = (self.shape[n - 2] as usize, self.shape[n - 1] as usize);
        let col = b % self.cols;
        let row = (b / self.cols) % self.rows;
        let mut rest = (b / self.cols / self.rows) as u64;
        let mut lead_chunk = vec![0; n - 2];
        for i in (0..n - 2).rev() {
            lead_chunk[i] = rest % self.lead_grid[i];
            rest /= self.lead_grid[i];
        }
        let (y0, x0) = (row * self.block_h, col * self.block_w);
        Block {
            lead_chunk,
            region: Region {
                y0,
                y1: (y0 + self.block_h).min(h),
                x0,
                x1: (x0 + self.block_w).min(w),
            },
        }
    }

    /// The leading indices of the slices of leading chunk `lead_chunk` that lie inside
    /// the array, in C order.
    pub fn slices_of(&self, lead_chunk: &[u64]) -> Vec<Vec<u64>> {
        let n = self.shape.len();
        let mut out = vec![vec![]];
        for (i, &c) in lead_chunk.iter().enumerate().take(n - 2) {
            let start = c * self.chunks[i];
            let end = (start + self.chunks[i]).min(self.shape[i]);
            out = out
                .into_iter()
                .flat_map(|prefix| {
                    (start..end).map(move |v| {
                        let mut p = prefix.clone();
                        p.push(v);
                        p
                    })
                })
                .collect();
        }
        out
    }
}

/// How a volume is segmented (everything but the model and the files).
#[derive(Debug, Clone, Copy)]
pub struct VolumeOptions {
    pub inference: Inference,
    /// float32 output instead of uint8.
    pub float: bool,
    pub shard: Shard,
}

/// What a worker did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeReport {
    pub blocks_total: usize,
    pub blocks_in_shard: usize,
    /// Blocks of this shard found finished (by this or an earlier worker) and skipped.
    pub blocks_skipped: usize,
    pub blocks_computed: usize,
    pub slices: usize,
    pub pixels_computed: u64,
    /// Lower-resolution levels this worker filled (the last to finish does it).
    pub pyramid_levels_built: usize,
    pub seconds: f64,
}

/// FNV-1a, 64-bit: a stable fingerprint of the model bytes (not a security hash).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        path,
        action,
        source,
    }
}

/// The run record `.skipseg/run.json`: what must be equal for two workers to share an
/// output (the shard count is not in it: a run may be resumed with another N).
fn run_record(
    seg: &Segmenter,
    input: &ZarrImage,
    opts: &VolumeOptions,
    plan: &TilePlan,
    grid: &BlockGrid,
) -> Value {
    let how = &opts.inference;
    json!({
        "model": seg.source_name(),
        "model_fnv1a64": format!("{:016x}", fnv1a(&crate::onnx::encode_model(seg.proto()))),
        "input": input.root.canonicalize().unwrap_or_else(|_| input.root.clone()),
        "input_array": input.array_path,
        "shape": input.shape,
        "chunks": input.chunks,
        "tile": [plan.core_h, plan.core_w],
        "halo": plan.halo,
        "blend": format!("{:?}", how.blend),
        "averaging": format!("{:?}", how.averaging),
        "monte_carlo": how.monte_carlo.map(|m| json!({"samples": m.samples, "seed": m.seed})),
        "float": opts.float,
        "block": [grid.block_h, grid.block_w],
    })
}

/// Block numbers listed by every worker log in `dir` (lines are `<number>\n`; a line
/// cut by a crash has no newline and is ignored).
fn finished_blocks(dir: &Path) -> Result<BTreeSet<usize>> {
    let mut done = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(io_err(dir, "cannot list")(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(dir, "cannot list"))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("done-") && name.ends_with(".log")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(io_err(&path, "cannot read"))?;
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        done.extend(
            complete
                .lines()
                .filter_map(|l| l.trim().parse::<usize>().ok()),
        );
    }
    Ok(done)
}

/// This worker's log, opened for appending; a line cut short by an earlier crash is
/// removed first so that the next line starts on its own.
fn open_log(path: &Path) -> Result<std::fs::File> {
    if let Ok(text) = std::fs::read(path) {
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep < text.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path, "cannot open"))?;
            f.set_len(keep as u64)
                .map_err(io_err(path, "cannot truncate"))?;
        }
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path, "cannot open"))
}

/// Claim `output` for this run: a new or empty folder gets `.skipseg/run.json`; a folder
/// with the same record is resumed; anything else is refused. Workers starting together
/// may all find no record and all write it (the same bytes, atomically); the record is
/// written before any Zarr document, so a folder with Zarr documents but no record was
/// not made by a worker.
fn claim_output(output: &Path, record: &Value) -> Result<PathBuf> {
    let state = output.join(".skipseg");
    let record_path = state.join("run.json");
    let bad = |reason: String| Error::Zarr {
        path: output.to_path_buf(),
        reason,
    };
    let read_record = || -> Result<Option<Value>> {
        if !record_path.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&record_path).map_err(io_err(&record_path, "cannot read"))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| bad(format!(".skipseg/run.json is damaged: {e}")))
    };
    let mut existing = read_record()?;
    if existing.is_none() && output.exists() {
        let foreign = !output.is_dir()
            || std::fs::read_dir(output)
                .map_err(io_err(output, "cannot list"))?
                .any(|e| e.map(|e| e.file_name() != ".skipseg").unwrap_or(true));
        if foreign {
            // another worker may have claimed it since we looked
            existing = read_record()?;
            if existing.is_none() {
                return Err(bad(
                    "exists and was not made by segment-run (no .skipseg/run.json); choose \
                     another output"
                        .into(),
                ));
            }
        }
    }
    match existing {
        Some(existing) if &existing != record => {
            let differs: Vec<String> = record
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| existing.get(k.as_str()) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k}: {} here, {} in the output",
                        v,
                        existing.get(k.as_str()).unwrap_or(&Value::Null)
                    )
                })
                .collect();
            Err(bad(format!(
                "this output was started by another run ({}); use the same model, input \
                 and options to resume it, or another output",
                differs.join("; ")
            )))
        }
        Some(_) => Ok(state),
        None => {
            std::fs::create_dir_all(&state).map_err(io_err(&state, "cannot create"))?;
            let bytes = serde_json::to_vec_pretty(record).expect("JSON values serialize");
            write_atomic(&record_path, &bytes)?;
            Ok(state)
        }
    }
}

/// Statistics of slice `s` of `input`, read in bands of one chunk row (full width) in
/// row order, so they equal a row-by-row pass over the same image bit for bit.
fn slice_stats(input: &ZarrImage, s: usize) -> Result<IntensityStats> {
    let n = input.shape.len();
    let band = input.chunks[n - 2] as usize;
    let (h, w) = (input.height(), input.width());
    let mut stats = IntensityStats::default();
    for y0 in (0..h).step_by(band) {
        let rows = input.read_rect(
            s,
            &Region {
                y0,
                y1: (y0 + band).min(h),
                x0: 0,
                x1: w,
            },
        )?;
        for row in rows.rows() {
            stats.add(row.iter());
        }
    }
    Ok(stats)
}

/// Segment shard `opts.shard` of `input` into the OME-Zarr image `output` (created by
/// the first worker, resumed by the others). `progress(done, total)` is called after
/// each tile with this shard's tile counts.
pub fn segment_volume(
    seg: &Segmenter,
    input: &ZarrImage,
    output: &Path,
    opts: &VolumeOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VolumeReport> {
    let started = std::time::Instant::now();
    let how = &opts.inference;
    let (h, w) = (input.height(), input.width());
    let plan = seg.tile_plan(&how.tiling, h, w)?;
    let grid = BlockGrid::new(&input.shape, &input.chunks, plan.core_size());
    let record = run_record(seg, input, opts, &plan, &grid);
    let state = claim_output(output, &record)?;
    let provenance = json!({
        "model": seg.source_name(),
        "input": input.root.display().to_string(),
        "tile": [plan.core_h, plan.core_w],
        "halo": plan.halo,
        "averaging": format!("{:?}", how.averaging),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let out = ZarrOutput::create_or_open(output, input, opts.float, provenance)?;
    let done = finished_blocks(&state)?;
    let mine = opts.shard.blocks(grid.len());
    let todo: Vec<usize> = mine.clone().filter(|b| !done.contains(b)).collect();
    let log_path = state.join(format!(
        "done-{}-of-{}.log",
        opts.shard.index, opts.shard.count
    ));
    let mut log = open_log(&log_path)?;
    // tiles this shard will run, for progress
    let tiles_of = |b: usize| {
        let block = grid.block(b);
        (grid.slices_of(&block.lead_chunk).len()
            * plan.tiles_reaching(how.blend, &block.region).len()) as u64
    };
    let total: u64 = todo.iter().map(|&b| tiles_of(b)).sum();
    let mut tiles_done = 0u64;
    let per_image = seg.meta().preprocessing.per_image;
    // normalisation of the slices of the current leading chunk (a shard's blocks are
    // contiguous in C order, so a leading chunk's blocks come together)
    let mut norms: HashMap<usize, Normalisation> = HashMap::new();
    let mut norms_of: Option<Vec<u64>> = None;
    let mut report = VolumeReport {
        blocks_total: grid.len(),
        blocks_in_shard: mine.len(),
        blocks_skipped: mine.len() - todo.len(),
        blocks_computed: 0,
        slices: input.slices(),
        pixels_computed: 0,
        pyramid_levels_built: 0,
        seconds: 0.0,
    };
    for &b in &todo {
        let block = grid.block(b);
        if norms_of.as_ref() != Some(&block.lead_chunk) {
            norms.clear();
            norms_of = Some(block.lead_chunk.clone());
        }
        let mut outputs: Vec<Array2<f32>> = Vec::new();
        for idx in grid.slices_of(&block.lead_chunk) {
            let s = input.slice_number(&idx);
            let norm = match norms.get(&s) {
                Some(n) => *n,
                None => {
                    let stats = if per_image {
                        let stats = slice_stats(input, s)?;
                        crate::engine::require_finite_pixels(
                            &stats,
                            &format!("{} slice {s}", input.root.display()),
                        )?;
                        stats
                    } else {
                        IntensityStats::default()
                    };
                    let n = seg.meta().preprocessing.for_image(&stats);
                    norms.insert(s, n);
                    n
                }
            };
            let prob = segment_region(
                seg,
                &plan,
                &mut |r| input.read_rect(s, r),
                norm,
                how,
                &block.region,
                &mut || {
                    tiles_done += 1;
                    progress(tiles_done, total);
                },
            )?;
            report.pixels_computed += prob.len() as u64;
            outputs.push(prob);
        }
        out.write_block(&block.lead_chunk, &block.region, &outputs)?;
        writeln!(log, "{b}")
            .and_then(|_| log.flush())
            .map_err(io_err(&log_path, "cannot append"))?;
        report.blocks_computed += 1;
    }
    // the worker that finds every block done fills the lower-resolution levels (two
    // that finish together both do, writing the same bytes)
    let pyramid_done = state.join("pyramid.done");
    if out.level_count() > 0
        && !pyramid_done.is_file()
        && finished_blocks(&state)?.len() == grid.len()
    {
        out.build_pyramid()?;
        write_atomic(&pyramid_done, b"")?;
        report.pyramid_levels_built = out.level_count();
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The blocks tile the array exactly once, are chunk-aligned, and the shards
        /// split the block numbers into disjoint runs that cover them all.
        #[test]
        fn blocks_cover_the_array_once_and_shards_are_disjoint(
            lead in proptest::collection::vec(1u64..6, 0..3),
            lead_chunk in proptest::collection::vec(1u64..4, 3),
            h in 1u64..70, w in 1u64..70, ch in 1u64..20, cw in 1u64..20,
            core in 1usize..40, count in 1usize..9,
        ) {
            let mut shape = lead.clone();
            shape.extend([h, w]);
            let mut chunks: Vec<u64> = lead_chunk[..lead.len()].to_vec();
            chunks.extend([ch, cw]);
            let grid = BlockGrid::new(&shape, &chunks, (core, core));
            let slices: u64 = lead.iter().product();
            let mut seen = vec![0u8; (slices * h * w) as usize];
            for b in 0..grid.len() {
                let block = grid.block(b);
                let r = block.region;
                prop_assert!((r.y0 as u64).is_multiple_of(ch) && (r.x0 as u64).is_multiple_of(cw));
                prop_assert!(r.y1 as u64 == h || (r.y1 as u64).is_multiple_of(ch));
                prop_assert!(r.x1 as u64 == w || (r.x1 as u64).is_multiple_of(cw));
                prop_assert!(r.height() >= core.min(h as usize) || r.y1 as u64 == h);
                for idx in grid.slices_of(&block.lead_chunk) {
                    let s = idx.iter().zip(&lead).fold(0u64, |a, (&i, &n)| a * n + i);
                    for y in r.y0..r.y1 {
                        for x in r.x0..r.x1 {
                            seen[(s * h * w + y as u64 * w + x as u64) as usize] += 1;
                        }
                    }
                }
            }
            prop_assert!(seen.iter().all(|&c| c == 1), "a pixel is not in exactly one block");
            let mut owner = vec![0u8; grid.len()];
            for index in 0..count {
                for b in (Shard { index, count }).blocks(grid.len()) {
                    owner[b] += 1;
                }
            }
            prop_assert!(owner.iter().all(|&c| c == 1), "a block is not in exactly one shard");
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert!("4/4".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x/2".parse::<Shard>().is_err());
        assert!("3".parse::<Shard>().is_err());
    }

    #[test]
    fn a_log_line_cut_by_a_crash_is_ignored_and_removed() {
        let dir = std::env::temp_dir().join(format!("skipseg-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let log = dir.join("done-0-of-2.log");
        std::fs::write(&log, b"3\n17\n4").expect("write");
        std::fs::write(dir.join("done-1-of-2.log"), b"9\n").expect("write");
        std::fs::write(dir.join("notes.txt"), b"5\n").expect("write");
        let done = finished_blocks(&dir).expect("read");
        assert_eq!(done.into_iter().collect::<Vec<_>>(), vec![3, 9, 17]);
        let mut f = open_log(&log).expect("open");
        writeln!(f, "41").expect("append");
        drop(f);
        assert_eq!(std::fs::read_to_string(&log).expect("read"), "3\n17\n41\n");
        std::fs::remove_dir_all(&dir).ok();
    }
}
