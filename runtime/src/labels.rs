//! Instance labels from a membrane probability map: one id per cell profile.
//!
//! Four steps, each deterministic (the same map gives the same labels on every machine
//! and thread count):
//! 1. **Seeds** ([`SeedKind`]): the regional minima of the probability, smoothed by a
//!    Gaussian of [`LabelOptions::seed_sigma`] pixels and quantised to steps of 1/255
//!    (so that the noise inside a cell does not make a seed of every pixel), where the
//!    smoothed probability is below [`LabelOptions::seed_max_probability`] (a minimum
//!    is an 8-connected plateau of equal values with no lower neighbour; each is one
//!    seed); or the maxima of the distance to the membrane; or each 4-connected
//!    component of the smoothed map below the seed threshold, i.e. the cells of the
//!    thresholded map (the default).
//! 2. **Seeded watershed** on the probability itself, 4-connected: a priority flood from
//!    the seeds, lowest probability first, ties first come first served. This is
//!    scikit-image's `watershed(p, markers, connectivity=1)` algorithm (a pixel takes
//!    the label of the neighbour that reaches it first; heap ordered by value, then by
//!    age), so the two agree up to the order of seeds of equal value.
//! 3. **Agglomeration** by average linkage: every pair of adjacent regions has a boundary
//!    statistic, the mean over the 4-neighbour pixel pairs on their shared border of the
//!    higher of the two probabilities (the membrane ridge between them). The pair with the
//!    lowest mean is merged, the means of the merged region's borders are the means over
//!    the union of their pixel pairs, and so on while the lowest mean is below
//!    [`LabelOptions::merge_threshold`] (as waterz and GASP's average linkage do).
//! 4. **Fragments**: a region smaller than [`LabelOptions::min_size`] pixels is merged
//!    into the neighbour with the lowest boundary mean, smallest regions first.
//!
//! Labels are then numbered 1, 2, ... in raster order of their first pixel, from a
//! caller's first id (so that the slices of a stack get ids unique across it). Every
//! pixel gets a label: the membranes are shared out between the cells they separate.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// The parameters of [`label_membranes`]. The defaults were chosen on the ISBI 2012
/// training slices 0-24 only (docs/EVALUATION.md, "Instance labels").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelOptions {
    /// Where seeds come from.
    pub seeds: SeedKind,
    /// Gaussian sigma (pixels) of the smoothing before seeds are found; 0 = none.
    pub seed_sigma: f32,
    /// Seeds only where the smoothed probability is below this.
    pub seed_max_probability: f32,
    /// Adjacent regions are merged while the lowest mean boundary probability is below
    /// this; 0 = no agglomeration (the watershed's regions as they are).
    pub merge_threshold: f32,
    /// Regions of fewer pixels are merged into their best neighbour; 0 = none.
    pub min_size: usize,
}

impl Default for LabelOptions {
    fn default() -> Self {
        // the best of `tuning_grid` on the shipped model's dihedral maps of the slices it
        // trained on, ISBI 2012 training slices 0-24 (`segment-train cv`'s "model's own
        // setting" for the fold it is; docs/EVALUATION.md, "Instance labels")
        Self {
            seeds: SeedKind::Components,
            seed_sigma: 0.0,
            seed_max_probability: 0.2,
            merge_threshold: 0.45,
            min_size: 300,
        }
    }
}

impl LabelOptions {
    /// The `segment-run label` flags that select these options (as a parameter search
    /// reports its choice, so that it can be pasted).
    pub fn command_line_flags(&self) -> String {
        format!(
            "--seeds {} --seed-sigma {} --seed-max {} --merge-threshold {} --min-size {}",
            format!("{:?}", self.seeds).to_lowercase(),
            self.seed_sigma,
            self.seed_max_probability,
            self.merge_threshold,
            self.min_size
        )
    }

    /// Why these options cannot be used, if they cannot: probabilities outside [0, 1],
    /// a negative or non-finite sigma. (`label_membranes` itself clamps; the front ends
    /// refuse instead of clamping silently.)
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("seed_max_probability", self.seed_max_probability),
            ("merge_threshold", self.merge_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be within [0, 1], not {v}"));
            }
        }
        if !(self.seed_sigma.is_finite() && self.seed_sigma >= 0.0) {
            return Err(format!(
                "seed_sigma must be 0 or more, not {}",
                self.seed_sigma
            ));
        }
        Ok(())
    }
}

/// How seeds are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SeedKind {
    /// Regional minima of the smoothed probability below `seed_max_probability`.
    Minima,
    /// Regional maxima of the distance to the nearest membrane pixel (smoothed
    /// probability >= `seed_max_probability`), smoothed by `seed_sigma`, quantised to
    /// half a pixel: one seed per cell body, however uneven its inside.
    Distance,
    /// Each 4-connected component of the smoothed probability below
    /// `seed_max_probability` is one seed: the cells of a thresholded map, which the
    /// watershed then grows over the membranes and the agglomeration merges.
    Components,
}

/// A label image: `labels[y * width + x]`, ids `first_id..first_id + count`.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelling {
    pub labels: Vec<u32>,
    pub width: usize,
    pub count: u32,
}

/// Instance labels of a membrane probability map (`[height * width]`, row-major, values
/// in [0, 1]; NaN counts as 1, membrane) with ids starting at `first_id` (>= 1).
pub fn label_membranes(
    probability: &[f32],
    width: usize,
    options: &LabelOptions,
    first_id: u32,
) -> Labelling {
    Oversegmentation::new(probability, width, options).merge(options, first_id)
}

/// Steps 1-2 (seeds, watershed) of [`label_membranes`] with the region adjacency graph,
/// kept so that steps 3-4 can be tried with several merge thresholds and fragment sizes
/// without repeating them (the parameter search of [`tuning_grid`]).
#[derive(Clone)]
pub struct Oversegmentation {
    width: usize,
    regions: Regions,
    graph: RegionGraph,
}

impl Oversegmentation {
    /// Seeds and watershed with `options.seeds`, `seed_sigma`, `seed_max_probability`
    /// (the other fields are [`Self::merge`]'s).
    pub fn new(probability: &[f32], width: usize, options: &LabelOptions) -> Self {
        let p = sanitised(probability);
        let seeds = match options.seeds {
            SeedKind::Minima => {
                minima_seeds(&p, width, options.seed_sigma, options.seed_max_probability)
            }
            SeedKind::Distance => {
                distance_seeds(&p, width, options.seed_sigma, options.seed_max_probability)
            }
            SeedKind::Components => {
                component_seeds(&p, width, options.seed_sigma, options.seed_max_probability)
            }
        };
        let regions = watershed(&p, width, &seeds);
        let graph = RegionGraph::new(&p, width, &regions.labels, regions.count);
        Self {
            width,
            regions,
            graph,
        }
    }

    /// Steps 3-4 with `options.merge_threshold` and `min_size`, then the numbering.
    pub fn merge(&self, options: &LabelOptions, first_id: u32) -> Labelling {
        let mut graph = self.graph.clone();
        graph.agglomerate(options.merge_threshold as f64);
        graph.absorb_fragments(options.min_size);
        let roots: Vec<u32> = (0..=self.regions.count).map(|r| graph.find(r)).collect();
        let merged: Vec<u32> = self
            .regions
            .labels
            .iter()
            .map(|&l| roots[l as usize])
            .collect();
        relabel(&merged, self.width, first_id)
    }
}

/// The settings a parameter search tries (`examples/label_sweep.rs`, `segment-train
/// cv`): minima and distance seeds with seed sigma 1 / 2 / 3 and seed threshold 0.3 /
/// 0.5 / 0.7; component seeds with sigma 0 / 1 / 2 and threshold 0.1 / 0.2 / 0.3 (the
/// range where thresholded maps separate cells); each with merge threshold 0.3 to 0.6 in
/// steps of 0.05 and minimum size 0 / 50 / 100 / 300 (27 oversegmentations x 28 = 756
/// settings). Ordered with the seed settings outermost, so settings sharing an
/// [`Oversegmentation`] are neighbours.
pub fn tuning_grid() -> Vec<LabelOptions> {
    let mut grid = Vec::new();
    for (seeds, sigmas, limits) in [
        (SeedKind::Minima, [1.0f32, 2.0, 3.0], [0.3f32, 0.5, 0.7]),
        (SeedKind::Distance, [1.0, 2.0, 3.0], [0.3, 0.5, 0.7]),
        (SeedKind::Components, [0.0, 1.0, 2.0], [0.1, 0.2, 0.3]),
    ] {
        for seed_sigma in sigmas {
            for seed_max_probability in limits {
                for merge_threshold in [0.3f32, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6] {
                    for min_size in [0usize, 50, 100, 300] {
                        grid.push(LabelOptions {
                            seeds,
                            seed_sigma,
                            seed_max_probability,
                            merge_threshold,
                            min_size,
                        });
                    }
                }
            }
        }
    }
    grid
}

/// Probabilities clamped to [0, 1], NaN as 1.
fn sanitised(p: &[f32]) -> Vec<f32> {
    p.iter()
        .map(|&v| if v.is_nan() { 1.0 } else { v.clamp(0.0, 1.0) })
        .collect()
}

/// A separable Gaussian blur (kernel radius ceil(3 sigma), borders mirrored).
pub fn gaussian_blur(image: &[f32], width: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 || image.is_empty() || width == 0 {
        return image.to_vec();
    }
    let height = image.len() / width;
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let mirror = |i: isize, n: usize| -> usize {
        let n = n as isize;
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let m = i.rem_euclid(period);
        (if m < n { m } else { period - m }) as usize
    };
    let mut rows = vec![0.0f32; image.len()];
    for y in 0..height {
        let row = &image[y * width..(y + 1) * width];
        for x in 0..width {
            let mut acc = 0.0;
            for (k, &g) in kernel.iter().enumerate() {
                acc += g * row[mirror(x as isize + k as isize - radius, width)];
            }
            rows[y * width + x] = acc;
        }
    }
    let mut out = vec![0.0f32; image.len()];
    for y in 0..height {
        for (k, &g) in kernel.iter().enumerate() {
            let sy = mirror(y as isize + k as isize - radius, height);
            let src = &rows[sy * width..(sy + 1) * width];
            let dst = &mut out[y * width..(y + 1) * width];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += g * s;
            }
        }
    }
    out
}

/// The 8 neighbours of `i` inside a `width` x `height` image.
fn neighbours8(i: usize, width: usize, height: usize) -> impl Iterator<Item = usize> {
    let (y, x) = ((i / width) as isize, (i % width) as isize);
    (-1isize..=1)
        .flat_map(move |dy| (-1isize..=1).map(move |dx| (dy, dx)))
        .filter(|&(dy, dx)| dy != 0 || dx != 0)
        .filter_map(move |(dy, dx)| {
            let (ny, nx) = (y + dy, x + dx);
            (ny >= 0 && nx >= 0 && (ny as usize) < height && (nx as usize) < width)
                .then(|| ny as usize * width + nx as usize)
        })
}

/// The 4 neighbours of `i` inside a `width` x `height` image.
fn neighbours4(i: usize, width: usize, height: usize) -> impl Iterator<Item = usize> {
    let (y, x) = (i / width, i % width);
    [
        (y > 0).then(|| i - width),
        (x > 0).then(|| i - 1),
        (x + 1 < width).then(|| i + 1),
        (y + 1 < height).then(|| i + width),
    ]
    .into_iter()
    .flatten()
}

/// Seed markers (`0` = no seed, `1..=n` one per seed) from the regional minima of the
/// smoothed, 1/255-quantised probability below `max_probability`. An image without such
/// a minimum gets one seed: its global minimum plateau.
pub fn minima_seeds(p: &[f32], width: usize, sigma: f32, max_probability: f32) -> Vec<u32> {
    let smooth = gaussian_blur(p, width, sigma);
    let q: Vec<u32> = smooth
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u32)
        .collect();
    let limit = max_probability.clamp(0.0, 1.0) * 255.0;
    plateau_minima(&q, width, |v| (v as f32) < limit)
}

/// Seed markers from the 4-connected components of the smoothed probability below
/// `max_probability` (1, 2, ... in raster order; 0 elsewhere). An image without such a
/// pixel gets one seed, the whole image (as the other seed kinds, which fall back on
/// their global minimum: every pixel is then labelled).
pub fn component_seeds(p: &[f32], width: usize, sigma: f32, max_probability: f32) -> Vec<u32> {
    let smooth = gaussian_blur(p, width, sigma);
    let cell: Vec<bool> = smooth.iter().map(|&v| v < max_probability).collect();
    let (mut seeds, count) = crate::metrics::components4(&cell, width);
    if count == 0 {
        seeds.fill(1);
    }
    seeds
}

/// Seed markers from the regional maxima of the distance transform of the cell mask
/// (smoothed probability below `max_probability`), smoothed by `sigma` and quantised to
/// half a pixel; maxima at a distance of at least one pixel.
pub fn distance_seeds(p: &[f32], width: usize, sigma: f32, max_probability: f32) -> Vec<u32> {
    let smooth = gaussian_blur(p, width, sigma.min(1.0));
    let cell: Vec<bool> = smooth.iter().map(|&v| v < max_probability).collect();
    let dist = gaussian_blur(&distance_transform(&cell, width), width, sigma);
    // maxima of the distance = minima of its negation, in half-pixel steps
    let top = dist.iter().copied().fold(0.0f32, f32::max);
    let q: Vec<u32> = dist
        .iter()
        .map(|&d| ((top - d) * 2.0).round() as u32)
        .collect();
    let limit = ((top - 1.0) * 2.0).round();
    plateau_minima(&q, width, |v| (v as f32) <= limit)
}

/// Euclidean distance of every pixel to the nearest `false` pixel (0 on them; the image
/// border is not a boundary), by Felzenszwalb and Huttenlocher's separable transform.
pub fn distance_transform(inside: &[bool], width: usize) -> Vec<f32> {
    let height = inside.len().checked_div(width).unwrap_or(0);
    let far = ((width * width + height * height) as f32) * 4.0 + 1.0;
    let mut f: Vec<f32> = inside.iter().map(|&c| if c { far } else { 0.0 }).collect();
    let mut line = Vec::new();
    let mut out = Vec::new();
    // columns, then rows
    for x in 0..width {
        line.clear();
        line.extend((0..height).map(|y| f[y * width + x]));
        squared_distance_1d(&line, &mut out);
        for y in 0..height {
            f[y * width + x] = out[y];
        }
    }
    for y in 0..height {
        line.clear();
        line.extend_from_slice(&f[y * width..(y + 1) * width]);
        squared_distance_1d(&line, &mut out);
        f[y * width..(y + 1) * width].copy_from_slice(&out);
    }
    f.iter().map(|v| v.sqrt()).collect()
}

/// The 1-D squared distance transform of sampled function `f` (lower envelope of
/// parabolas).
fn squared_distance_1d(f: &[f32], out: &mut Vec<f32>) {
    let n = f.len();
    out.clear();
    out.resize(n, 0.0);
    if n == 0 {
        return;
    }
    let mut v = vec![0usize; n];
    let mut z = vec![0.0f32; n + 1];
    let mut k = 0usize;
    z[0] = f32::NEG_INFINITY;
    z[1] = f32::INFINITY;
    let inter = |q: usize, p: usize| -> f32 {
        ((f[q] + (q * q) as f32) - (f[p] + (p * p) as f32)) / (2.0 * q as f32 - 2.0 * p as f32)
    };
    for q in 1..n {
        let mut s = inter(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = inter(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f32::INFINITY;
    }
    k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while z[k + 1] < q as f32 {
            k += 1;
        }
        let d = q as f32 - v[k] as f32;
        *o = d * d + f[v[k]];
    }
}

/// Markers of the 8-connected plateaus of `q` with no lower neighbour whose value
/// `keep` accepts; without any, the global minimum plateau.
fn plateau_minima(q: &[u32], width: usize, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let height = q.len().checked_div(width).unwrap_or(0);
    let mut plateau = vec![0u32; q.len()];
    let mut markers = vec![0u32; q.len()];
    let mut seeds = 0u32;
    let mut stack = Vec::new();
    let mut members = Vec::new();
    let mut next_plateau = 0u32;
    let mut global: Option<(u32, usize)> = None;
    for start in 0..q.len() {
        if plateau[start] != 0 {
            continue;
        }
        next_plateau += 1;
        let value = q[start];
        if global.is_none_or(|(v, _)| value < v) {
            global = Some((value, start));
        }
        plateau[start] = next_plateau;
        stack.push(start);
        members.clear();
        let mut is_minimum = true;
        while let Some(i) = stack.pop() {
            members.push(i);
            for n in neighbours8(i, width, height) {
                if q[n] < value {
                    is_minimum = false;
                } else if q[n] == value && plateau[n] == 0 {
                    plateau[n] = next_plateau;
                    stack.push(n);
                }
            }
        }
        if is_minimum && keep(value) {
            seeds += 1;
            for &i in &members {
                markers[i] = seeds;
            }
        }
    }
    if seeds == 0
        && let Some((_, start)) = global
    {
        let id = plateau[start];
        for (m, &pl) in markers.iter_mut().zip(&plateau) {
            if pl == id {
                *m = 1;
            }
        }
    }
    markers
}

/// Regions of a watershed: `labels` in `1..=count` (0 where no seed reaches).
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    pub labels: Vec<u32>,
    pub count: u32,
}

/// Seeded watershed (4-connected priority flood) of `p` from `markers` (0 = none),
/// scikit-image's algorithm: each marker pixel enters a heap ordered by (value, age)
/// with age 0 (here: then by pixel index); the lowest is taken out and gives its label
/// to each unlabelled neighbour, which enters the heap with the next age.
pub fn watershed(p: &[f32], width: usize, markers: &[u32]) -> Regions {
    assert_eq!(p.len(), markers.len(), "image and markers differ in size");
    let height = p.len().checked_div(width).unwrap_or(0);
    // non-negative floats order as their bit patterns
    let key = |i: usize| {
        let v = p[i];
        if v.is_nan() { 1.0f32 } else { v.max(0.0) }.to_bits()
    };
    let mut labels = markers.to_vec();
    let mut heap: BinaryHeap<Reverse<(u32, u64, u32)>> = BinaryHeap::new();
    for (i, &m) in markers.iter().enumerate() {
        if m != 0 {
            heap.push(Reverse((key(i), 0, i as u32)));
        }
    }
    let mut age = 0u64;
    while let Some(Reverse((_, _, i))) = heap.pop() {
        let i = i as usize;
        for n in neighbours4(i, width, height) {
            if labels[n] == 0 {
                age += 1;
                labels[n] = labels[i];
                heap.push(Reverse((key(n), age, n as u32)));
            }
        }
    }
    let count = markers.iter().copied().max().unwrap_or(0);
    Regions { labels, count }
}

/// Border statistics between regions: the sum of the boundary values and the number of
/// 4-neighbour pixel pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Border {
    sum: f64,
    pairs: u64,
}

impl Border {
    fn mean(&self) -> f64 {
        self.sum / self.pairs.max(1) as f64
    }
}

/// A total order on non-negative finite f64 (boundary means).
fn ordered(v: f64) -> u64 {
    v.max(0.0).to_bits()
}

/// The region adjacency graph of a labelling, merged by union-find.
#[derive(Clone)]
struct RegionGraph {
    parent: Vec<u32>,
    size: Vec<u64>,
    /// Borders of each root region with its neighbouring roots.
    borders: Vec<HashMap<u32, Border>>,
}

impl RegionGraph {
    fn new(p: &[f32], width: usize, labels: &[u32], count: u32) -> Self {
        let n = count as usize + 1;
        let mut size = vec![0u64; n];
        let mut borders: Vec<HashMap<u32, Border>> = vec![HashMap::new(); n];
        let height = p.len().checked_div(width).unwrap_or(0);
        for i in 0..labels.len() {
            let a = labels[i];
            size[a as usize] += 1;
            let (y, x) = (i / width, i % width);
            let right = (x + 1 < width).then(|| i + 1);
            let down = (y + 1 < height).then(|| i + width);
            for j in [right, down].into_iter().flatten() {
                let b = labels[j];
                if a != b && a != 0 && b != 0 {
                    let v = p[i].max(p[j]) as f64;
                    for (u, w) in [(a, b), (b, a)] {
                        let e = borders[u as usize].entry(w).or_default();
                        e.sum += v;
                        e.pairs += 1;
                    }
                }
            }
        }
        Self {
            parent: (0..n as u32).collect(),
            size,
            borders,
        }
    }

    fn find(&mut self, mut r: u32) -> u32 {
        while self.parent[r as usize] != r {
            let up = self.parent[self.parent[r as usize] as usize];
            self.parent[r as usize] = up;
            r = up;
        }
        r
    }

    /// Merge roots `a` and `b`; the region with more neighbours keeps its table.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        let (keep, gone) = if self.borders[a as usize].len() >= self.borders[b as usize].len() {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[gone as usize] = keep;
        self.size[keep as usize] += self.size[gone as usize];
        let moved = std::mem::take(&mut self.borders[gone as usize]);
        self.borders[keep as usize].remove(&gone);
        for (c, border) in moved {
            if c == keep {
                continue;
            }
            let theirs = &mut self.borders[c as usize];
            theirs.remove(&gone);
            let e = theirs.entry(keep).or_default();
            e.sum += border.sum;
            e.pairs += border.pairs;
            let combined = *e;
            self.borders[keep as usize].insert(c, combined);
        }
        keep
    }

    /// Average-linkage agglomeration while the lowest boundary mean is below `threshold`.
    fn agglomerate(&mut self, threshold: f64) {
        let mut heap: BinaryHeap<Reverse<(u64, u32, u32)>> = BinaryHeap::new();
        for (a, table) in self.borders.iter().enumerate() {
            for (&b, border) in table {
                if (a as u32) < b && border.mean() < threshold {
                    heap.push(Reverse((ordered(border.mean()), a as u32, b)));
                }
            }
        }
        while let Some(Reverse((mean, a, b))) = heap.pop() {
            // stale entries: a side already merged away, or the border changed since
            if self.parent[a as usize] != a || self.parent[b as usize] != b {
                continue;
            }
            match self.borders[a as usize].get(&b) {
                Some(border) if ordered(border.mean()) == mean => {}
                _ => continue,
            }
            let keep = self.merge(a, b);
            for (&c, border) in &self.borders[keep as usize] {
                if border.mean() < threshold {
                    heap.push(Reverse((ordered(border.mean()), keep.min(c), keep.max(c))));
                }
            }
        }
    }

    /// Merge every region of fewer than `min_size` pixels into the neighbour with the
    /// lowest boundary mean (ties: the smaller id), smallest regions first.
    fn absorb_fragments(&mut self, min_size: usize) {
        loop {
            let mut small: Vec<(u64, u32)> = (1..self.parent.len() as u32)
                .filter(|&r| {
                    self.parent[r as usize] == r
                        && self.size[r as usize] < min_size as u64
                        && self.size[r as usize] > 0
                        && !self.borders[r as usize].is_empty()
                })
                .map(|r| (self.size[r as usize], r))
                .collect();
            if small.is_empty() {
                return;
            }
            small.sort_unstable();
            let mut merged = false;
            for (_, r) in small {
                if self.parent[r as usize] != r || self.size[r as usize] >= min_size as u64 {
                    continue;
                }
                let best = self.borders[r as usize]
                    .iter()
                    .map(|(&c, b)| (ordered(b.mean()), c))
                    .min();
                if let Some((_, c)) = best {
                    self.merge(r, c);
                    merged = true;
                }
            }
            if !merged {
                return;
            }
        }
    }
}

/// Number the labels of `merged` (0 stays 0) `first_id, first_id + 1, ...` in raster
/// order of their first pixel.
fn relabel(merged: &[u32], width: usize, first_id: u32) -> Labelling {
    let mut map: HashMap<u32, u32> = HashMap::new();
    let mut next = first_id.max(1);
    let labels = merged
        .iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            *map.entry(l).or_insert_with(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    Labelling {
        labels,
        width,
        count: map.len() as u32,
    }
}

/// The label image as the challenge took submissions: a cell map in {0, 1} with 0 on
/// every pixel whose right or lower neighbour has another label (a one-pixel boundary
/// between touching cells) and on label 0.
pub fn boundary_map(labels: &[u32], width: usize) -> Vec<f32> {
    let height = labels.len().checked_div(width).unwrap_or(0);
    (0..labels.len())
        .map(|i| {
            let (y, x) = (i / width, i % width);
            let l = labels[i];
            let differs =
                (x + 1 < width && labels[i + 1] != l) || (y + 1 < height && labels[i + width] != l);
            if l == 0 || differs { 0.0 } else { 1.0 }
        })
        .collect()
}

/// An RGB overlay: each label in a colour from a hash of its id (the same id, the same
/// colour, in every slice), mixed `alpha` with the grey image (`[0, 1]`), and the borders
/// between labels drawn dark.
pub fn overlay_rgb(image: &[f32], labels: &[u32], width: usize, alpha: f32) -> Vec<u8> {
    let boundary = boundary_map(labels, width);
    let mut rgb = Vec::with_capacity(labels.len() * 3);
    for i in 0..labels.len() {
        let g = image[i].clamp(0.0, 1.0) * 255.0;
        let l = labels[i];
        if l == 0 || boundary[i] == 0.0 {
            rgb.extend_from_slice(&[(g * 0.3) as u8; 3]);
            continue;
        }
        let c = label_colour(l);
        for ch in c {
            rgb.push((g * (1.0 - alpha) + ch as f32 * alpha).round() as u8);
        }
    }
    rgb
}

/// A bright colour for a label id (splitmix64 of the id, as HSV with full saturation).
pub fn label_colour(id: u32) -> [u8; 3] {
    let mut z = (id as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let hue = (z % 360) as f32;
    let value = 0.75 + 0.25 * ((z >> 16) % 100) as f32 / 100.0;
    let c = value;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two square cells separated by a vertical membrane of probability `wall`.
    fn two_cells(wall: f32) -> (Vec<f32>, usize) {
        let (w, h) = (21, 10);
        let mut p = vec![0.05f32; w * h];
        for y in 0..h {
            p[y * w + 10] = wall;
        }
        (p, w)
    }

    #[test]
    fn a_strong_membrane_separates_two_cells_and_a_weak_one_does_not() {
        let opts = LabelOptions {
            seeds: SeedKind::Minima,
            seed_sigma: 0.0,
            seed_max_probability: 0.5,
            merge_threshold: 0.5,
            min_size: 0,
        };
        let (p, w) = two_cells(0.9);
        let l = label_membranes(&p, w, &opts, 1);
        assert_eq!(l.count, 2);
        assert_ne!(l.labels[0], l.labels[20]);
        // every pixel of a row left of the wall has the left label
        assert!(l.labels[..10].iter().all(|&v| v == l.labels[0]));
        let (p, w) = two_cells(0.3);
        let l = label_membranes(&p, w, &opts, 1);
        assert_eq!(l.count, 1, "a boundary mean of 0.3 < 0.5 merges");
    }

    #[test]
    fn options_out_of_range_are_named() {
        assert!(LabelOptions::default().check().is_ok());
        let bad = LabelOptions {
            merge_threshold: 2.0,
            ..LabelOptions::default()
        };
        assert!(
            bad.check()
                .expect_err("refused")
                .contains("merge_threshold")
        );
        let bad = LabelOptions {
            seed_sigma: f32::NAN,
            ..LabelOptions::default()
        };
        assert!(bad.check().expect_err("refused").contains("seed_sigma"));
    }

    #[test]
    fn ids_start_at_first_id_in_raster_order() {
        let (p, w) = two_cells(0.9);
        let opts = LabelOptions {
            seed_sigma: 0.0,
            min_size: 0,
            ..LabelOptions::default()
        };
        let l = label_membranes(&p, w, &opts, 100);
        assert_eq!(l.labels[0], 100);
        assert_eq!(l.labels[w - 1], 101);
    }

    #[test]
    fn watershed_floods_lowest_first_from_each_seed() {
        // 1-D valley: seeds at both ends; the ridge at index 3 (value 0.9) is reached
        // from the left first, whose path is lower (0.1, 0.2) than the right's (0.5)
        let p = [0.0f32, 0.1, 0.2, 0.9, 0.5, 0.0];
        let markers = [1u32, 0, 0, 0, 0, 2];
        let r = watershed(&p, 6, &markers);
        assert_eq!(r.labels, vec![1, 1, 1, 1, 2, 2]);
    }

    #[test]
    fn a_seedless_image_gets_one_region() {
        let p = vec![0.8f32; 30];
        for seeds in [SeedKind::Minima, SeedKind::Distance, SeedKind::Components] {
            let options = LabelOptions {
                seeds,
                ..LabelOptions::default()
            };
            let l = label_membranes(&p, 6, &options, 1);
            assert_eq!(l.count, 1, "{seeds:?}");
            assert!(l.labels.iter().all(|&v| v == 1), "{seeds:?}");
        }
    }

    #[test]
    fn fragments_join_the_neighbour_behind_the_weakest_border() {
        // a 3x3 fragment (9 px) inside a big region, with a strong ring
        let w = 20;
        let mut p = vec![0.0f32; w * w];
        for y in 4..11 {
            for x in 4..11 {
                let ring = y == 4 || y == 10 || x == 4 || x == 10;
                p[y * w + x] = if ring { 0.95 } else { 0.0 };
            }
        }
        let opts = LabelOptions {
            seeds: SeedKind::Minima,
            seed_sigma: 0.0,
            seed_max_probability: 0.5,
            merge_threshold: 0.5,
            min_size: 0,
        };
        assert_eq!(label_membranes(&p, w, &opts, 1).count, 2);
        let opts = LabelOptions {
            min_size: 60,
            ..opts
        };
        assert_eq!(label_membranes(&p, w, &opts, 1).count, 1);
    }

    #[test]
    fn gaussian_blur_keeps_a_constant_image_and_the_mean() {
        let w = 17;
        let c = vec![0.4f32; w * 13];
        for v in gaussian_blur(&c, w, 2.0) {
            assert!((v - 0.4).abs() < 1e-6);
        }
        // a single spike in the middle spreads but keeps its mass (far from the borders)
        let mut s = vec![0.0f32; 41 * 41];
        s[20 * 41 + 20] = 1.0;
        let b = gaussian_blur(&s, 41, 1.5);
        let mass: f32 = b.iter().sum();
        assert!((mass - 1.0).abs() < 1e-5, "mass {mass}");
        assert!(b[20 * 41 + 20] < 0.1 && b[20 * 41 + 21] > 0.0);
    }

    #[test]
    fn distance_transform_matches_brute_force() {
        let (w, h) = (13, 9);
        let inside: Vec<bool> = (0..w * h).map(|i| (i * 7919 % 11) != 0).collect();
        let d = distance_transform(&inside, w);
        for (i, &di) in d.iter().enumerate() {
            let (y, x) = ((i / w) as f32, (i % w) as f32);
            let brute = (0..w * h)
                .filter(|&j| !inside[j])
                .map(|j| ((j / w) as f32 - y).hypot((j % w) as f32 - x))
                .fold(f32::INFINITY, f32::min);
            assert!((di - brute).abs() < 1e-4, "pixel {i}: {di} vs {brute}");
        }
    }

    #[test]
    fn distance_seeds_give_one_seed_per_round_cell() {
        // two discs of radius 6 separated by membrane
        let (w, h) = (32, 16);
        let p: Vec<f32> = (0..w * h)
            .map(|i| {
                let (y, x) = ((i / w) as f32, (i % w) as f32);
                let inside = |cx: f32| (x - cx).hypot(y - 7.5) < 6.0;
                if inside(7.5) || inside(23.5) {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let seeds = distance_seeds(&p, w, 1.0, 0.5);
        assert_eq!(seeds.iter().copied().max(), Some(2));
    }

    #[test]
    fn component_seeds_are_the_cells_of_the_thresholded_map() {
        // rows: two cells (0.1) split by a ridge (0.9) with a 0.25 saddle, which the
        // threshold 0.2 closes and 0.3 opens; no smoothing
        #[rustfmt::skip]
        let p = [
            0.1, 0.1, 0.9, 0.1,
            0.1, 0.1, 0.25, 0.1,
            0.9, 0.9, 0.9, 0.9,
        ];
        assert_eq!(
            component_seeds(&p, 4, 0.0, 0.2),
            vec![1, 1, 0, 2, 1, 1, 0, 2, 0, 0, 0, 0]
        );
        assert_eq!(
            component_seeds(&p, 4, 0.0, 0.3),
            vec![1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]
        );
        // labelled: the watershed gives the ridge to the cells, both cells survive
        let l = label_membranes(
            &p,
            4,
            &LabelOptions {
                seeds: SeedKind::Components,
                seed_sigma: 0.0,
                seed_max_probability: 0.2,
                merge_threshold: 0.0,
                min_size: 0,
            },
            1,
        );
        assert_eq!(l.count, 2);
        assert!(l.labels.iter().all(|&v| v >= 1));
    }

    #[test]
    fn boundary_map_marks_one_pixel_between_labels() {
        let labels = [1u32, 1, 2, 2, 1, 1, 2, 2];
        assert_eq!(
            boundary_map(&labels, 4),
            vec![1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            /// Every pixel is labelled, ids are 1..=count with no gap, the same input
            /// gives the same output, and a transposed map gives the transposed labels
            /// up to renaming when there are no ties (distinct random values).
            #[test]
            fn labels_cover_the_image_with_consecutive_ids(
                w in 2usize..24, h in 2usize..24, seed in any::<u64>(),
                sigma in 0.0f32..2.0, merge in 0.0f32..1.0, min_size in 0usize..20
            ) {
                let mut z = seed;
                let p: Vec<f32> = (0..w * h).map(|_| {
                    z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (z >> 40) as f32 / (1u64 << 24) as f32
                }).collect();
                let opts = LabelOptions { seeds: SeedKind::Minima, seed_sigma: sigma,
                    seed_max_probability: 1.0, merge_threshold: merge, min_size };
                let l = label_membranes(&p, w, &opts, 1);
                prop_assert!(l.labels.iter().all(|&v| v >= 1 && v <= l.count));
                let mut seen = vec![false; l.count as usize + 1];
                for &v in &l.labels { seen[v as usize] = true; }
                prop_assert!(seen[1..].iter().all(|&s| s));
                prop_assert_eq!(&label_membranes(&p, w, &opts, 1), &l);
            }
        }
    }
}
