//! The one place that knows tile geometry.
//!
//! An image of any size is covered by a grid of non-overlapping *cores* (at most
//! `core_h` x `core_w`, the last row and column cut at the image edge). Each core is run
//! inside a *window* of `window_h` x `window_w` pixels: its core plus `halo` pixels of
//! context on every side, **moved inside the image** where it would cross the image's
//! border, so that the network's own zero padding applies at the border exactly as when
//! the whole image is run as one window. Every window of an image has the same size, so
//! one compiled plan serves them all, and windows start at multiples of the model's
//! down-sampling factor (so decimation inside the network sees the same pixel grid as
//! whole-image inference).
//!
//! The image is first extended to the *padded size*: height and width rounded up to the
//! factor, the few extra rows and columns (fewer than the factor) read by reflection.
//! This is the one input a whole-image run can take, and a window never reaches past it:
//! a window is at most the padded image (an image smaller than a tile is one window, the
//! whole image). With a halo at least the distance over which the network's output
//! depends on its input (the model records the one measured, see
//! [`crate::onnx::InferenceDefaults::halo`]), tiled output equals whole-image output.
//!
//! With `crop` blending each output pixel comes from exactly one tile (the core that
//! contains it); with `linear` blending neighbouring windows overlap and are averaged
//! with weights that fall linearly to zero towards window edges inside the image (an
//! edge on the image border keeps full weight: nothing lies beyond it).
//!
//! [`stitch`] runs a window function over every tile in bounded memory: the image comes
//! from a [`RowSource`] read top to bottom once, a [`RowCache`] keeps only the rows the
//! current band of tiles still needs, and finished output rows are handed out in order
//! as soon as no later tile touches them. Peak memory is about `(window + tile) x width`
//! input rows plus `tile x width` output rows, whatever the image height.

use std::collections::VecDeque;

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};

/// Peak memory default tiling plans for, in bytes. Measured (bench/memory.sh, small
/// model): a window's activations take about 4x its widest map, the row bands about 3
/// window heights of full-width f32 rows, and the process, model and plan about
/// [`BASELINE_BYTES`]; windows are the largest that keep the sum within this.
pub const DEFAULT_MEMORY_BYTES: usize = 1 << 30;
/// What the process needs besides windows and row bands (model, plan, buffers).
pub const BASELINE_BYTES: usize = 144 << 20;

/// The largest window side default tiling uses for images `width` wide with a network
/// whose widest map takes `map_bytes_per_pixel`: the largest `s` with
/// `4 x map x s^2 + 12 x width x s <= DEFAULT_MEMORY_BYTES - BASELINE_BYTES` (activations
/// of one window, plus the input band of window + core rows and the output band of core
/// rows, 4 bytes a value).
pub fn default_max_window(map_bytes_per_pixel: usize, width: usize) -> usize {
    let a = 4.0 * map_bytes_per_pixel.max(1) as f64;
    let b = 12.0 * width as f64;
    let c = (DEFAULT_MEMORY_BYTES - BASELINE_BYTES) as f64;
    ((-b + (b * b + 4.0 * a * c).sqrt()) / (2.0 * a)) as usize
}

/// Halo used when neither the user nor the model says (a model exported before the
/// halo was measured): a trade of speed for exactness; `segment-run tune-halo` measures
/// and records a model's own.
pub const FALLBACK_HALO: usize = 128;

/// How overlapping tile outputs are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Blend {
    /// Keep each tile's core only.
    Crop,
    /// Weighted average over the halo overlap.
    Linear,
}

/// One tile: its window (input, in image coordinates, inside the padded image) and its
/// core (the output it owns with `Blend::Crop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub row: usize,
    pub col: usize,
    /// Window origin in image coordinates (never negative).
    pub window_y: isize,
    pub window_x: isize,
    pub core_y: usize,
    pub core_x: usize,
    pub core_h: usize,
    pub core_w: usize,
}

/// Tile layout of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    pub height: usize,
    pub width: usize,
    /// Core height and width (multiples of `factor`; the last row and column of cores
    /// are cut at the image edge).
    pub core_h: usize,
    pub core_w: usize,
    /// Context on every side (a multiple of `factor`) that windows give their cores,
    /// where the image has it.
    pub halo: usize,
    pub factor: usize,
    /// Window size (all windows of this image; at most the padded image).
    pub window_h: usize,
    pub window_w: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Plans are for non-empty images and a non-zero factor (callers check images first).
fn assert_sizes(height: usize, width: usize, factor: usize) {
    assert!(
        height > 0 && width > 0 && factor > 0,
        "empty image or zero factor"
    );
}

/// Round `v` up to a multiple of `m` (m >= 1).
pub fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

/// What tiles to cut: a core size and a halo, each `None` for the default (the halo the
/// model records; cores as large as [`DEFAULT_MEMORY_BYTES`] allows, balanced so
/// that windows overlap as little as they can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tiling {
    pub tile: Option<usize>,
    pub halo: Option<usize>,
}

impl TilePlan {
    /// An upper bound of the bytes [`stitch`] allocates for this plan with `blend`, all
    /// at once: the cached input rows (at most a window and a core of rows, checked by
    /// the property tests below), the window, the accumulated output rows (at most two
    /// windows of rows; with linear blending their weights too) and the bookkeeping.
    /// The network's output for a window is the window function's.
    pub fn stitch_bytes(&self, blend: Blend) -> usize {
        let row = self.width * 4;
        let cache_rows = self.window_h + self.core_h;
        let sum_rows = 2 * self.window_h;
        let per_sum_row = if blend == Blend::Linear { 2 * row } else { row };
        // deque slots (capacity grows by doubling): 24-byte Vec headers, 48-byte pairs
        self.window_h * self.window_w * 4
            + cache_rows * row
            + 2 * cache_rows * 24
            + sum_rows * per_sum_row
            + 2 * sum_rows * 48
            + self.rows * 32
    }

    /// Plan cores of (at most) `tile` x `tile` with `halo` context for an image of
    /// `height` x `width`; `tile` and `halo` are rounded up to `factor`, and a tile larger
    /// than the image shrinks to the padded image. Refused: a tile smaller than the halo
    /// where the image needs more than one tile (each window would compute many times
    /// the pixels it keeps).
    pub fn new(
        height: usize,
        width: usize,
        tile: usize,
        halo: usize,
        factor: usize,
    ) -> Result<Self> {
        assert_sizes(height, width, factor);
        let tile = round_up(tile.max(1), factor);
        let halo = round_up(halo, factor);
        let (ph, pw) = (round_up(height, factor), round_up(width, factor));
        if tile < halo && (tile < ph || tile < pw) {
            let window = tile + 2 * halo;
            return Err(Error::Tiling(format!(
                "a tile of {tile} px is smaller than the halo of {halo} px: every {window} x \
                 {window} window would keep only its {tile} x {tile} core ({:.0}x the work); \
                 use a tile of at least {halo} px (or leave --tile out for the default)",
                (window * window) as f64 / (tile * tile) as f64
            )));
        }
        Ok(Self::with_cores(
            height,
            width,
            tile.min(ph),
            tile.min(pw),
            halo,
            factor,
        ))
    }

    /// The default plan: windows of at most `max_window` x `max_window` pixels (rounded
    /// down to `factor`), as few per axis as fit, with cores of equal size (so that
    /// windows overlap as little as they can); an image whose padded size fits is one
    /// window, the whole image.
    pub fn fitted(
        height: usize,
        width: usize,
        max_window: usize,
        halo: usize,
        factor: usize,
    ) -> Result<Self> {
        assert_sizes(height, width, factor);
        let halo = round_up(halo, factor);
        let max_window = max_window / factor * factor;
        let core = |n: usize| -> Result<usize> {
            let padded = round_up(n, factor);
            if padded <= max_window {
                return Ok(padded);
            }
            if max_window < 2 * halo + factor {
                return Err(Error::Tiling(format!(
                    "windows of at most {max_window} px cannot hold a halo of {halo} px on \
                     both sides of a core"
                )));
            }
            let pieces = (1..=padded)
                .find(|&k| round_up(padded.div_ceil(k), factor) + 2 * halo <= max_window)
                .expect("one core per factor fits");
            Ok(round_up(padded.div_ceil(pieces), factor))
        };
        Ok(Self::with_cores(
            height,
            width,
            core(height)?,
            core(width)?,
            halo,
            factor,
        ))
    }

    fn with_cores(
        height: usize,
        width: usize,
        core_h: usize,
        core_w: usize,
        halo: usize,
        factor: usize,
    ) -> Self {
        let (ph, pw) = (round_up(height, factor), round_up(width, factor));
        Self {
            height,
            width,
            core_h,
            core_w,
            halo,
            factor,
            window_h: (core_h + 2 * halo).min(ph),
            window_w: (core_w + 2 * halo).min(pw),
            rows: height.div_ceil(core_h),
            cols: width.div_ceil(core_w),
        }
    }

    /// Core height and width (every core but the last row's and column's).
    pub fn core_size(&self) -> (usize, usize) {
        (self.core_h, self.core_w)
    }

    /// Height and width of the padded image (rounded up to the factor).
    pub fn padded_size(&self) -> (usize, usize) {
        (
            round_up(self.height, self.factor),
            round_up(self.width, self.factor),
        )
    }

    /// Pixels computed per image pixel (1.0: one window, the whole image).
    pub fn overhead(&self) -> f64 {
        (self.rows * self.cols * self.window_h * self.window_w) as f64
            / (self.height * self.width) as f64
    }

    /// Tile at grid position (row, col).
    pub fn tile(&self, row: usize, col: usize) -> Tile {
        let (ch, cw) = self.core_size();
        let (core_y, core_x) = (row * ch, col * cw);
        let (ph, pw) = self.padded_size();
        // the core with its halo, moved inside the padded image
        let place = |core: usize, window: usize, padded: usize| {
            core.saturating_sub(self.halo).min(padded - window) as isize
        };
        Tile {
            row,
            col,
            window_y: place(core_y, self.window_h, ph),
            window_x: place(core_x, self.window_w, pw),
            core_y,
            core_x,
            core_h: ch.min(self.height - core_y),
            core_w: cw.min(self.width - core_x),
        }
    }

    /// Tiles in reading order (row by row).
    pub fn tiles(&self) -> impl Iterator<Item = Tile> + '_ {
        (0..self.rows).flat_map(move |r| (0..self.cols).map(move |c| self.tile(r, c)))
    }

    /// Image row (or column) read for window coordinate `v` of an axis of length `n`.
    pub fn source_index(v: isize, n: usize) -> usize {
        reflect_index(v, n)
    }

    /// Blending weight of window pixel (wy, wx) of `tile` for `Blend::Linear`: 1 in the
    /// core, falling linearly towards window edges inside the image over the halo
    /// (never exactly 0 inside the window); an edge on the padded image's border keeps
    /// weight 1.
    pub fn linear_weight(&self, tile: &Tile, wy: usize, wx: usize) -> f32 {
        let (ph, pw) = self.padded_size();
        let ramp = |v: usize, origin: isize, n: usize, padded: usize| {
            if self.halo == 0 {
                return 1.0;
            }
            let h = self.halo as f32;
            let low = if origin == 0 {
                f32::INFINITY
            } else {
                v as f32 + 0.5
            };
            let high = if origin as usize + n >= padded {
                f32::INFINITY
            } else {
                n as f32 - v as f32 - 0.5
            };
            (low.min(high) / h).min(1.0)
        };
        ramp(wy, tile.window_y, self.window_h, ph) * ramp(wx, tile.window_x, self.window_w, pw)
    }
}

/// One row of a window: image row `src` from column `x0` on, reflected past its end
/// (a window reaches at most into the padding of fewer columns than the factor).
fn fill_window_row(dst: &mut [f32], src: &[f32], x0: isize) {
    let n = src.len();
    let start = x0 as usize;
    let inside = n.saturating_sub(start).min(dst.len());
    dst[..inside].copy_from_slice(&src[start..start + inside]);
    for (k, v) in dst.iter_mut().enumerate().skip(inside) {
        *v = src[reflect_index(x0 + k as isize, n)];
    }
}

/// Reflect an index into [0, n) without repeating the edge (numpy's "reflect").
pub fn reflect_index(v: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let t = v.rem_euclid(period);
    (if t >= n as isize { period - t } else { t }) as usize
}

/// A grayscale image delivered top to bottom, one row at a time, intensities in [0, 1].
/// Readers of large files implement it to stream; [`ArrayRows`] wraps an array.
pub trait RowSource {
    /// Rows.
    fn height(&self) -> usize;
    /// Columns.
    fn width(&self) -> usize;
    /// Read the next row (rows come in order 0, 1, ...) into `row` (`width` values).
    fn read_row(&mut self, row: &mut [f32]) -> Result<()>;
}

/// An in-memory image as a [`RowSource`].
#[derive(Debug, Clone)]
pub struct ArrayRows<'a> {
    image: ArrayView2<'a, f32>,
    next: usize,
}

impl<'a> ArrayRows<'a> {
    pub fn new(image: ArrayView2<'a, f32>) -> Self {
        Self { image, next: 0 }
    }

    /// Rows handed out so far.
    pub fn rows_read(&self) -> usize {
        self.next
    }
}

impl RowSource for ArrayRows<'_> {
    fn height(&self) -> usize {
        self.image.nrows()
    }
    fn width(&self) -> usize {
        self.image.ncols()
    }
    fn read_row(&mut self, row: &mut [f32]) -> Result<()> {
        assert!(self.next < self.image.nrows(), "read past the last row");
        for (o, v) in row.iter_mut().zip(self.image.row(self.next)) {
            *o = *v;
        }
        self.next += 1;
        Ok(())
    }
}

impl TilePlan {
    /// The image rows (lowest, highest) that the windows of tile row `band` read,
    /// reflection included.
    pub fn band_rows(&self, band: usize) -> (usize, usize) {
        let y0 = self.tile(band, 0).window_y;
        (0..self.window_h as isize)
            .map(|wy| reflect_index(y0 + wy, self.height))
            .fold((usize::MAX, 0), |(lo, hi), y| (lo.min(y), hi.max(y)))
    }
}

/// The rows of a streamed image that the current band of tiles needs: rows are read in
/// order and dropped once no later band reads them.
#[derive(Debug)]
pub struct RowCache {
    width: usize,
    /// Image row of `rows[0]`.
    first: usize,
    rows: VecDeque<Vec<f32>>,
    /// Per band: the lowest row it or any later band reads.
    keep_from: Vec<usize>,
    /// Per band: the highest row it reads.
    need_to: Vec<usize>,
    /// Most rows held at once (for tests and benchmarks).
    pub peak_rows: usize,
}

impl RowCache {
    pub fn new(plan: &TilePlan) -> Self {
        let bands: Vec<(usize, usize)> = (0..plan.rows).map(|b| plan.band_rows(b)).collect();
        let mut keep_from = vec![0; bands.len()];
        let mut low = usize::MAX;
        for (b, &(lo, _)) in bands.iter().enumerate().rev() {
            low = low.min(lo);
            keep_from[b] = low;
        }
        Self {
            width: plan.width,
            first: 0,
            rows: VecDeque::new(),
            keep_from,
            need_to: bands.iter().map(|&(_, hi)| hi).collect(),
            peak_rows: 0,
        }
    }

    /// Make every row that `band` reads available, reading from `source` as needed and
    /// dropping rows no band from `band` on reads.
    pub fn load_band<S: RowSource + ?Sized>(&mut self, band: usize, source: &mut S) -> Result<()> {
        while self.first + self.rows.len() <= self.need_to[band] {
            // reuse a dropped row's buffer where there is one
            let mut row = if self.first < self.keep_from[band] && !self.rows.is_empty() {
                self.first += 1;
                self.rows.pop_front().expect("non-empty")
            } else {
                vec![0.0; self.width]
            };
            source.read_row(&mut row)?;
            self.rows.push_back(row);
            self.peak_rows = self.peak_rows.max(self.rows.len());
        }
        while self.first < self.keep_from[band] && !self.rows.is_empty() {
            self.rows.pop_front();
            self.first += 1;
        }
        Ok(())
    }

    /// Image row `y` (must be loaded).
    pub fn row(&self, y: usize) -> &[f32] {
        &self.rows[y - self.first]
    }
}

/// Receives each finished output row: `(y, input_row, output_row)`, the output row
/// handed over (a folder's writer thread takes it as it is, no copy).
pub type RowSink<'a> = dyn FnMut(usize, &[f32], Vec<f32>) -> Result<()> + 'a;

/// Runs the network on one tile's window (`window_h x window_w` intensities) and returns
/// the window's output, the same size.
pub type WindowFn<'a> = dyn FnMut(&Tile, ArrayView2<'_, f32>) -> Result<Array2<f32>> + 'a;

/// A rectangle of an image: rows `y0..y1`, columns `x0..x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
}

impl Region {
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }
}

impl TilePlan {
    /// The output rows (or columns, `vertical = false`) tile row (column) `i` writes with
    /// `blend`: its core, or its window clipped to the image.
    fn reach(&self, blend: Blend, i: usize, vertical: bool) -> (usize, usize) {
        let t = if vertical {
            self.tile(i, 0)
        } else {
            self.tile(0, i)
        };
        let (origin, core, size, n) = if vertical {
            (t.window_y, (t.core_y, t.core_h), self.window_h, self.height)
        } else {
            (t.window_x, (t.core_x, t.core_w), self.window_w, self.width)
        };
        match blend {
            Blend::Crop => (core.0, core.0 + core.1),
            Blend::Linear => (
                origin.max(0) as usize,
                ((origin + size as isize) as usize).min(n),
            ),
        }
    }

    /// The tiles whose output reaches into `region` with `blend`, in reading order (the
    /// order [`stitch`] runs them in).
    pub fn tiles_reaching(&self, blend: Blend, region: &Region) -> Vec<Tile> {
        let rows: Vec<usize> = (0..self.rows)
            .filter(|&r| {
                let (a, b) = self.reach(blend, r, true);
                a < region.y1 && region.y0 < b
            })
            .collect();
        let cols: Vec<usize> = (0..self.cols)
            .filter(|&c| {
                let (a, b) = self.reach(blend, c, false);
                a < region.x1 && region.x0 < b
            })
            .collect();
        rows.iter()
            .flat_map(|&r| cols.iter().map(move |&c| self.tile(r, c)))
            .collect()
    }

    /// The image rectangle that the windows of `tiles` read (reflection included).
    pub fn read_extent(&self, tiles: &[Tile]) -> Option<Region> {
        let span = |origin: isize, size: usize, n: usize| {
            (0..size as isize)
                .map(|d| reflect_index(origin + d, n))
                .fold((usize::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v + 1)))
        };
        tiles.iter().fold(None, |acc: Option<Region>, t| {
            let (y0, y1) = span(t.window_y, self.window_h, self.height);
            let (x0, x1) = span(t.window_x, self.window_w, self.width);
            Some(match acc {
                None => Region { y0, y1, x0, x1 },
                Some(r) => Region {
                    y0: r.y0.min(y0),
                    y1: r.y1.max(y1),
                    x0: r.x0.min(x0),
                    x1: r.x1.max(x1),
                },
            })
        })
    }
}

/// [`stitch`] for one rectangle of the image only: runs the tiles whose output reaches
/// into `region` (in the same order, with the same windows and the same blending
/// arithmetic as [`stitch`], so the result is bit-identical to the same rows and
/// columns of a whole-image run) and returns the region's output. `read(extent)` returns
/// the image pixels of a rectangle (the one [`TilePlan::read_extent`] gives for those
/// tiles); memory is that rectangle plus the region, whatever the image size. This is
/// what lets independent workers fill disjoint parts of one output (Zarr chunks).
pub fn stitch_region(
    plan: &TilePlan,
    blend: Blend,
    region: &Region,
    read: &mut dyn FnMut(&Region) -> Result<Array2<f32>>,
    run_window: &mut WindowFn<'_>,
    on_tile: &mut dyn FnMut(),
) -> Result<Array2<f32>> {
    assert!(
        region.y0 < region.y1
            && region.y1 <= plan.height
            && region.x0 < region.x1
            && region.x1 <= plan.width,
        "region outside the image"
    );
    let tiles = plan.tiles_reaching(blend, region);
    let extent = plan
        .read_extent(&tiles)
        .expect("a region is reached by a tile");
    let pixels = read(&extent)?;
    assert_eq!(
        pixels.dim(),
        (extent.height(), extent.width()),
        "read() returned another size"
    );
    let (h, w) = (plan.height, plan.width);
    let (wh, ww) = (plan.window_h, plan.window_w);
    let (rh, rw) = (region.height(), region.width());
    let weighted = blend == Blend::Linear;
    let mut sums = Array2::<f32>::zeros((rh, rw));
    let mut weights = Array2::<f32>::zeros(if weighted { (rh, rw) } else { (0, 0) });
    let mut window = Array2::<f32>::zeros((wh, ww));
    for t in &tiles {
        for wy in 0..wh {
            let sy = reflect_index(t.window_y + wy as isize, h) - extent.y0;
            for (wx, v) in window.row_mut(wy).iter_mut().enumerate() {
                *v = pixels[[sy, reflect_index(t.window_x + wx as isize, w) - extent.x0]];
            }
        }
        let out = run_window(t, window.view())?;
        assert_eq!(out.dim(), (wh, ww), "window output size");
        let (ty0, ty1) = plan.reach(blend, t.row, true);
        let (tx0, tx1) = plan.reach(blend, t.col, false);
        for y in ty0.max(region.y0)..ty1.min(region.y1) {
            let wy = (y as isize - t.window_y) as usize;
            for x in tx0.max(region.x0)..tx1.min(region.x1) {
                let wx = (x as isize - t.window_x) as usize;
                let (ry, rx) = (y - region.y0, x - region.x0);
                if weighted {
                    let weight = plan.linear_weight(t, wy, wx);
                    sums[[ry, rx]] += weight * out[[wy, wx]];
                    weights[[ry, rx]] += weight;
                } else {
                    sums[[ry, rx]] = out[[wy, wx]];
                }
            }
        }
        on_tile();
    }
    if weighted {
        for (v, k) in sums.iter_mut().zip(&weights) {
            *v = if *k > 0.0 { *v / k } else { 0.0 };
        }
    }
    Ok(sums)
}

/// Run `run_window` over every tile of `plan` and blend the outputs: the input window
/// (intensities, reflected at the image border) is `window_h x window_w`, its output the
/// same size. Finished output rows go to `emit_row(y, input_row, output_row)` in order;
/// `on_tile` is called after each tile.
pub fn stitch<S: RowSource + ?Sized>(
    source: &mut S,
    plan: &TilePlan,
    blend: Blend,
    run_window: &mut WindowFn<'_>,
    on_tile: &mut dyn FnMut(),
    emit_row: &mut RowSink<'_>,
) -> Result<()> {
    let (h, w) = (plan.height, plan.width);
    assert_eq!(
        (source.height(), source.width()),
        (h, w),
        "plan and image sizes differ"
    );
    let (wh, ww) = (plan.window_h, plan.window_w);
    let mut cache = RowCache::new(plan);
    let mut window = Array2::<f32>::zeros((wh, ww));
    // accumulated rows not yet emitted (sums, and weights when blending), starting at
    // image row `first`
    let mut first = 0usize;
    let mut sums: VecDeque<(Vec<f32>, Vec<f32>)> = VecDeque::new();
    let weighted = blend == Blend::Linear;
    for r in 0..plan.rows {
        cache.load_band(r, source)?;
        for c in 0..plan.cols {
            let t = plan.tile(r, c);
            for wy in 0..wh {
                let src = cache.row(reflect_index(t.window_y + wy as isize, h));
                fill_window_row(
                    window.row_mut(wy).as_slice_mut().expect("standard layout"),
                    src,
                    t.window_x,
                );
            }
            let out = run_window(&t, window.view())?;
            assert_eq!(out.dim(), (wh, ww), "window output size");
            // rows are copied as slices (no copy when the output is standard already)
            let out = out.as_standard_layout();
            // output rows/cols this tile contributes to
            let (y0, y1) = plan.reach(blend, r, true);
            let (x0, x1) = plan.reach(blend, c, false);
            while first + sums.len() < y1 {
                // cropped cores fill a row left to right, each pixel once: no zeros first
                sums.push_back(match weighted {
                    true => (vec![0.0; w], vec![0.0; w]),
                    false => (Vec::with_capacity(w), Vec::new()),
                });
            }
            for y in y0..y1 {
                let wy = (y as isize - t.window_y) as usize;
                let (s, wt) = &mut sums[y - first];
                let out_row = out.row(wy);
                let out_row = out_row.as_slice().expect("standard layout");
                let wx0 = (x0 as isize - t.window_x) as usize;
                if weighted {
                    for x in x0..x1 {
                        let wx = (x as isize - t.window_x) as usize;
                        let weight = plan.linear_weight(&t, wy, wx);
                        s[x] += weight * out_row[wx];
                        wt[x] += weight;
                    }
                } else {
                    // each pixel belongs to exactly one core, and the cores of a band of
                    // rows come left to right
                    assert_eq!(s.len(), x0, "cropped cores in order");
                    s.extend_from_slice(&out_row[wx0..wx0 + (x1 - x0)]);
                }
            }
            on_tile();
        }
        // rows no later tile touches are final
        let done = match blend {
            Blend::Crop => ((r + 1) * plan.core_h).min(h),
            Blend::Linear => {
                if r + 1 == plan.rows {
                    h
                } else {
                    (plan.tile(r + 1, 0).window_y as usize).min(h)
                }
            }
        };
        while first < done {
            let (mut s, wt) = sums.pop_front().expect("accumulated row");
            if weighted {
                for (v, k) in s.iter_mut().zip(&wt) {
                    *v = if *k > 0.0 { *v / k } else { 0.0 };
                }
            }
            emit_row(first, cache.row(first), s)?;
            first += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_pixel_is_owned_by_exactly_one_core(
            h in 1usize..300, w in 1usize..300, tile in 1usize..200, halo in 0usize..40,
            factor_log in 0u32..5, fitted in any::<bool>(),
        ) {
            let factor = 1usize << factor_log;
            let plan = if fitted {
                TilePlan::fitted(h, w, round_up(tile, factor) + 2 * round_up(halo, factor) + factor, halo, factor)
            } else {
                TilePlan::new(h, w, tile.max(halo), halo, factor)
            }.expect("a plan");
            let (ph, pw) = plan.padded_size();
            let mut owner = vec![0u8; h * w];
            for t in plan.tiles() {
                prop_assert!(t.core_h > 0 && t.core_w > 0);
                for y in t.core_y..t.core_y + t.core_h {
                    for x in t.core_x..t.core_x + t.core_w {
                        owner[y * w + x] += 1;
                    }
                }
                // the core lies inside its window with `halo` of context on each side,
                // or all the padded image has on that side
                let (wy, wx) = (t.window_y as usize, t.window_x as usize);
                prop_assert!(wy <= t.core_y.saturating_sub(plan.halo));
                prop_assert!(wx <= t.core_x.saturating_sub(plan.halo));
                prop_assert!(wy + plan.window_h >= (t.core_y + t.core_h + plan.halo).min(ph));
                prop_assert!(wx + plan.window_w >= (t.core_x + t.core_w + plan.halo).min(pw));
                // windows are aligned to the down-sampling grid and sized for the network
                prop_assert_eq!(wy % factor, 0);
                prop_assert_eq!(wx % factor, 0);
                prop_assert_eq!(plan.window_h % factor, 0);
                prop_assert_eq!(plan.window_w % factor, 0);
            }
            prop_assert!(owner.iter().all(|&c| c == 1), "some pixel is not written exactly once");
        }

        #[test]
        fn windows_stay_inside_the_padded_image(
            h in 1usize..300, w in 1usize..300, tile in 1usize..200, halo in 0usize..40,
            factor_log in 0u32..5,
        ) {
            let factor = 1usize << factor_log;
            let plan = TilePlan::new(h, w, tile.max(halo), halo, factor).expect("a plan");
            let (ph, pw) = plan.padded_size();
            for t in plan.tiles() {
                prop_assert!(t.window_y >= 0 && t.window_x >= 0);
                prop_assert!(t.window_y as usize + plan.window_h <= ph);
                prop_assert!(t.window_x as usize + plan.window_w <= pw);
                // only the padding (fewer rows than the factor) is read by reflection
                prop_assert!(ph - h < factor && pw - w < factor);
            }
        }

        /// The default plan: windows within the limit, cores of one size per axis, and
        /// as few of them as fit.
        #[test]
        fn fitted_plans_use_the_fewest_windows_that_fit(
            h in 1usize..3000, w in 1usize..3000, spare in 0usize..1200,
            halo in 0usize..24, factor_log in 0u32..5,
        ) {
            let factor = 1usize << factor_log;
            // a limit that holds the halo twice and one factor (smaller ones are refused,
            // see fitted_plans_by_hand)
            let max_window = 2 * round_up(halo, factor) + factor + spare;
            let plan = TilePlan::fitted(h, w, max_window, halo, factor).expect("a plan");
            prop_assert!(plan.window_h <= max_window / factor * factor || plan.rows == 1);
            prop_assert!(plan.window_w <= max_window / factor * factor || plan.cols == 1);
            if plan.rows > 1 {
                // one core fewer would not fit
                let fewer = round_up(round_up(h, factor).div_ceil(plan.rows - 1), factor);
                prop_assert!(fewer + 2 * plan.halo > max_window / factor * factor);
            }
        }
    }

    #[test]
    fn default_window_keeps_the_memory_formula() {
        let budget = (DEFAULT_MEMORY_BYTES - BASELINE_BYTES) as f64;
        let cost = |s: usize, map: usize, width: usize| {
            4.0 * map as f64 * (s * s) as f64 + 12.0 * (width * s) as f64
        };
        for (map, width) in [(32, 2048), (32, 16384), (128, 4096), (4, 1 << 18)] {
            let s = default_max_window(map, width);
            // the largest side within the budget: one more pixel would exceed it
            assert!(cost(s, map, width) <= budget, "{map} {width}: {s}");
            assert!(cost(s + 1, map, width) > budget, "{map} {width}: {s}");
        }
        // the small preset (32 B/px): a 2048-wide slice fits one 2048 window
        assert!(default_max_window(32, 2048) >= 2048);
        assert!(default_max_window(32, 16384) < 2048);
    }

    #[test]
    fn fitted_plans_by_hand() {
        // the whole image when it fits: one window, no halo needed
        let p = TilePlan::fitted(2048, 1536, 2880, 128, 16).expect("plan");
        assert_eq!((p.rows, p.cols, p.window_h, p.window_w), (1, 1, 2048, 1536));
        assert_eq!(p.overhead(), 1.0);
        // 4096: two cores of 2048 per axis, windows of 2048 + 2 x 128
        let p = TilePlan::fitted(4096, 4096, 2880, 128, 16).expect("plan");
        assert_eq!((p.rows, p.core_h, p.window_h), (2, 2048, 2304));
        assert_eq!(p.tile(0, 0).window_y, 0);
        assert_eq!(p.tile(1, 1).window_x, 4096 - 2304);
        assert!((p.overhead() - 4.0 * 2304.0 * 2304.0 / 4096.0 / 4096.0).abs() < 1e-12);
        // a window limit that cannot hold the halo twice is refused
        assert!(TilePlan::fitted(4096, 4096, 256, 128, 16).is_err());
    }

    #[test]
    fn a_tile_smaller_than_the_halo_is_refused_with_the_numbers() {
        let e = TilePlan::new(1000, 1000, 16, 128, 16).expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains("16 px") && msg.contains("128 px"), "{msg}");
        // unless the tile covers the image anyway
        assert!(TilePlan::new(100, 100, 112, 128, 16).is_ok());
    }

    #[test]
    fn windows_are_moved_inside_the_image_by_hand() {
        // 100 rows, factor 4 (padded 100), tile 40, halo 8: windows of 56 rows
        let p = TilePlan::new(100, 8, 40, 8, 4).expect("plan");
        assert_eq!((p.rows, p.window_h), (3, 56));
        let origins: Vec<isize> = (0..3).map(|r| p.tile(r, 0).window_y).collect();
        // 0 (not -8), 32, and 44 = 100 - 56 (not 72, which would cross the border)
        assert_eq!(origins, vec![0, 32, 44]);
    }

    fn pattern(h: usize, w: usize) -> Array2<f32> {
        Array2::from_shape_fn((h, w), |(y, x)| ((y * 31 + x * 17) % 97) as f32 / 97.0)
    }

    /// The 3x3 filter run on the whole image as one window: the image reflected to the
    /// padded size (a multiple of `factor`), zero beyond it, cut back to the image.
    fn box3_whole(img: &Array2<f32>, factor: usize) -> Array2<f32> {
        let (h, w) = img.dim();
        let padded = Array2::from_shape_fn((round_up(h, factor), round_up(w, factor)), |(y, x)| {
            img[[reflect_index(y as isize, h), reflect_index(x as isize, w)]]
        });
        box3_window(padded.view())
            .slice(ndarray::s![..h, ..w])
            .to_owned()
    }

    /// The same filter inside one window (zero outside it, as a network's padding).
    fn box3_window(win: ArrayView2<'_, f32>) -> Array2<f32> {
        let (h, w) = win.dim();
        Array2::from_shape_fn((h, w), |(y, x)| {
            let mut s = 0.0;
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (yy, xx) = (y as isize + dy, x as isize + dx);
                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                        s += win[[yy as usize, xx as usize]];
                    }
                }
            }
            s / 9.0
        })
    }

    fn run_stitch(
        img: &Array2<f32>,
        plan: &TilePlan,
        blend: Blend,
        f: fn(ArrayView2<'_, f32>) -> Array2<f32>,
    ) -> (Array2<f32>, usize, usize) {
        let (h, w) = img.dim();
        let mut src = ArrayRows::new(img.view());
        let mut out = Array2::<f32>::from_elem((h, w), f32::NAN);
        let mut next_row = 0;
        let mut tiles = 0;
        stitch(
            &mut src,
            plan,
            blend,
            &mut |_, win| Ok(f(win)),
            &mut || tiles += 1,
            &mut |y, input, row| {
                assert_eq!(y, next_row, "rows are emitted in order, once");
                next_row += 1;
                assert_eq!(input, img.row(y).as_slice().expect("contiguous"));
                out.row_mut(y).assign(&ndarray::ArrayView1::from(&row));
                Ok(())
            },
        )
        .expect("stitch");
        assert_eq!(next_row, h, "every row emitted");
        (out, tiles, src.rows_read())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// A pointwise window function is reproduced exactly by any tiling and blend,
        /// the image is read once, in order, and the row cache stays within
        /// window + tile rows.
        #[test]
        fn stitching_a_pointwise_function_reproduces_it(
            h in 1usize..120, w in 1usize..120, tile in 1usize..64, halo in 0usize..24,
            factor_log in 0u32..4, linear in any::<bool>(),
        ) {
            let factor = 1usize << factor_log;
            let plan = TilePlan::new(h, w, tile.max(halo), halo, factor).expect("plan");
            let img = pattern(h, w);
            let blend = if linear { Blend::Linear } else { Blend::Crop };
            let (out, tiles, read) = run_stitch(&img, &plan, blend, |win| win.mapv(|v| 2.0 * v + 1.0));
            prop_assert_eq!(tiles, plan.rows * plan.cols);
            prop_assert_eq!(read, h);
            // crop writes each pixel once: exact; linear sums the weighted outputs of up
            // to k x k overlapping windows in f32: rounding grows with k^2
            let core = plan.core_h as f32;
            let k = plan.window_h as f32 / core + 1.0;
            let tol = if linear { 1e-6 * k * k } else { 0.0 };
            for (o, i) in out.iter().zip(img.iter()) {
                let want = 2.0 * i + 1.0;
                prop_assert!((o - want).abs() <= tol * want, "{} vs {} (tolerance {})", o, want, tol);
            }
            let mut cache = RowCache::new(&plan);
            let mut src = ArrayRows::new(img.view());
            for b in 0..plan.rows {
                cache.load_band(b, &mut src).expect("load");
            }
            let core = plan.core_h;
            prop_assert!(cache.peak_rows <= plan.window_h + core,
                "{} rows cached, window {} + tile {}", cache.peak_rows, plan.window_h, core);
        }

        /// A 3x3 filter (receptive radius 1) tiled with a halo of at least 1 equals the
        /// filter run on the whole image as one window (zero beyond the padded image):
        /// windows moved inside the image see the border as it is. (Linear blending is
        /// not exact: it mixes in window margins, which see the window's edge.)
        #[test]
        fn a_halo_covering_the_receptive_radius_is_seam_free(
            h in 2usize..90, w in 2usize..90, tile in 1usize..40, halo in 1usize..12,
            factor_log in 0u32..3,
        ) {
            let factor = 1usize << factor_log;
            let plan = TilePlan::new(h, w, tile.max(halo), halo, factor).expect("plan");
            let img = pattern(h, w);
            let (out, _, _) = run_stitch(&img, &plan, Blend::Crop, box3_window);
            let whole = box3_whole(&img, factor);
            for (o, r) in out.iter().zip(whole.iter()) {
                prop_assert!((o - r).abs() < 1e-5, "{} vs {}", o, r);
            }
        }
    }

    #[test]
    fn without_a_halo_the_box_filter_shows_seams() {
        let img = pattern(64, 64);
        let plan = TilePlan::new(64, 64, 16, 0, 1).expect("plan");
        let (out, _, _) = run_stitch(&img, &plan, Blend::Crop, box3_window);
        let whole = box3_whole(&img, 1);
        let worst = out
            .iter()
            .zip(whole.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst > 0.01, "the test filter must need context: {worst}");
    }

    #[test]
    fn reflection_mirrors_without_edge_repeat() {
        assert_eq!(reflect_index(-1, 5), 1);
        assert_eq!(reflect_index(-2, 5), 2);
        assert_eq!(reflect_index(5, 5), 3);
        assert_eq!(reflect_index(12, 5), 4);
        assert_eq!(reflect_index(7, 1), 0);
    }

    #[test]
    fn small_image_is_one_tile() {
        let p = TilePlan::new(30, 20, 512, 8, 16).expect("plan");
        assert_eq!((p.rows, p.cols), (1, 1));
        // the whole padded image, no mirrored halo around it
        assert_eq!((p.window_h, p.window_w), (32, 32));
        assert_eq!(p.halo, 16);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any rectangle computed alone (reading only its tiles' extent) equals the same
        /// pixels of a whole-image stitch, bit for bit, with either blend and a window
        /// function that sees window borders (so wrong windows would show).
        #[test]
        fn a_region_equals_the_same_pixels_of_the_whole_image(
            h in 1usize..90, w in 1usize..90, tile in 1usize..40, halo in 0usize..16,
            factor_log in 0u32..3, linear in any::<bool>(),
            a in 0.0f64..1.0, b in 0.0f64..1.0, c in 0.0f64..1.0, d in 0.0f64..1.0,
        ) {
            let factor = 1usize << factor_log;
            let plan = TilePlan::new(h, w, tile.max(halo), halo, factor).expect("plan");
            let img = pattern(h, w);
            let blend = if linear { Blend::Linear } else { Blend::Crop };
            let (whole, _, _) = run_stitch(&img, &plan, blend, box3_window);
            let pick = |u: f64, v: f64, n: usize| {
                let (p, q) = ((u * n as f64) as usize, (v * n as f64) as usize);
                (p.min(q).min(n - 1), p.max(q).min(n - 1) + 1)
            };
            let (y0, y1) = pick(a, b, h);
            let (x0, x1) = pick(c, d, w);
            let region = Region { y0, y1, x0, x1 };
            let mut extent_seen = None;
            let part = stitch_region(
                &plan,
                blend,
                &region,
                &mut |e| {
                    extent_seen = Some(*e);
                    Ok(img.slice(ndarray::s![e.y0..e.y1, e.x0..e.x1]).to_owned())
                },
                &mut |_, win| Ok(box3_window(win)),
                &mut || {},
            ).expect("region");
            let want = whole.slice(ndarray::s![y0..y1, x0..x1]);
            prop_assert!(part == want, "region {:?} differs from the whole-image run", region);
            // it read no more than its tiles' windows need
            let e = extent_seen.expect("read once");
            prop_assert!(e.height() <= (y1 - y0) + 2 * plan.window_h);
            prop_assert!(e.width() <= (x1 - x0) + 2 * plan.window_w);
        }
    }
}
