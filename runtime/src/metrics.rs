//! The ISBI 2012 challenge metrics, as the reference implementation computes them
//! (Fiji Trainable_Segmentation, `trainableSegmentation.metrics`; definitions in
//! `shared/data/isbi2012/METRICS.md`):
//!
//! - V_rand: maximal foreground-restricted Rand F-score (N^2 normalisation) after border
//!   thinning, over thresholds 0.0, 0.1, ... (floating accumulation, 11 values);
//! - V_info: the same with the information-theoretic F-score.
//!
//! Ground truth and proposal are cell-high maps in [0, 1] (1 = cell interior): a network
//! predicting membrane probability `p` submits `1 - p`. Per threshold t the ground truth
//! foreground (> t) is split into 4-connected components (background excluded from
//! scoring); the proposal (> t = cell) is labelled by a 4-connected watershed of its
//! binary border map ("thinning"), whose 1-pixel watershed lines keep label 0 and count
//! as singletons. Stack scores average the per-slice F-scores.
//!
//! Everything is linear in the number of pixels (a sort of label pairs builds the
//! contingency table); no pixel-pair loops.

use std::collections::VecDeque;

/// Precision, recall and F-score of one comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Merge score (Rand) or I / H(ground truth) (information).
    pub precision: f64,
    /// Split score (Rand) or I / H(proposal) (information).
    pub recall: f64,
    /// 2 P R / (P + R).
    pub f: f64,
}

impl Score {
    fn from_pr(precision: f64, recall: f64) -> Self {
        let f = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            f,
        }
    }
}

/// Both scores of one comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceScores {
    pub rand: Score,
    pub info: Score,
    /// H(ground truth | proposal), natural log (the "split" half of the VI).
    pub entropy_gt_given_proposal: f64,
    /// H(proposal | ground truth), natural log (the "merge" half of the VI).
    pub entropy_proposal_given_gt: f64,
}

/// Label the 4-connected components of `mask` (row-major, `width` columns): 1, 2, ...
/// for foreground, 0 for background. Returns the labels and the component count.
pub fn components4(mask: &[bool], width: usize) -> (Vec<u32>, u32) {
    let mut labels = vec![0u32; mask.len()];
    let height = mask.len().checked_div(width).unwrap_or(0);
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        next += 1;
        labels[start] = next;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (y, x) = (p / width, p % width);
            let mut visit = |q: usize| {
                if mask[q] && labels[q] == 0 {
                    labels[q] = next;
                    stack.push(q);
                }
            };
            if x > 0 {
                visit(p - 1);
            }
            if x + 1 < width {
                visit(p + 1);
            }
            if y > 0 {
                visit(p - width);
            }
            if y + 1 < height {
                visit(p + width);
            }
        }
    }
    (labels, next)
}

/// Border thinning as the reference does it: the Vincent-Soille watershed (4-connected,
/// FIFO, the reference's scan and neighbour orders) of the binary map `cell`
/// (true = cell = low, false = border = high). Cell regions become basins 1, 2, ...;
/// border pixels join the basin that reaches them first, pixels reached by two basins
/// stay 0 (watershed lines); border regions no basin reaches become basins of their own.
pub fn thin_borders(cell: &[bool], width: usize) -> Vec<u32> {
    const MASK: i64 = -2;
    const WSHED: i64 = 0;
    const INIT: i64 = -1;
    const INQUEUE: i64 = -3;
    let n = cell.len();
    let height = n.checked_div(width).unwrap_or(0);
    let mut lab = vec![INIT; n];
    let mut current: i64 = 0;
    // ImageJ scans x outer, y inner; neighbours (x-1,y), (x,y-1), (x+1,y), (x,y+1)
    let order: Vec<usize> = (0..width)
        .flat_map(|x| (0..height).map(move |y| y * width + x))
        .collect();
    let neighbours = |p: usize| {
        let (y, x) = (p / width, p % width);
        [
            (x > 0).then(|| p - 1),
            (y > 0).then(|| p - width),
            (x + 1 < width).then(|| p + 1),
            (y + 1 < height).then(|| p + width),
        ]
    };
    let mut fifo = VecDeque::new();
    // two levels: cells (low) then borders (high)
    for level_is_cell in [true, false] {
        let level: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&p| cell[p] == level_is_cell)
            .collect();
        for &p in &level {
            lab[p] = MASK;
            if neighbours(p).into_iter().flatten().any(|q| lab[q] >= WSHED) {
                fifo.push_back(p);
                lab[p] = INQUEUE;
            }
        }
        let mut flag = false;
        while let Some(p) = fifo.pop_front() {
            for q in neighbours(p).into_iter().flatten() {
                if lab[q] > 0 {
                    if lab[p] == INQUEUE || (lab[p] == WSHED && flag) {
                        lab[p] = lab[q];
                    } else if lab[p] > 0 && lab[p] != lab[q] {
                        lab[p] = WSHED;
                        flag = false;
                    }
                } else if lab[q] == WSHED {
                    if lab[p] == INQUEUE {
                        lab[p] = WSHED;
                        flag = true;
                    }
                } else if lab[q] == MASK {
                    lab[q] = INQUEUE;
                    fifo.push_back(q);
                }
            }
        }
        // new minima at this level
        for &p in &level {
            if lab[p] == MASK {
                current += 1;
                lab[p] = current;
                fifo.push_back(p);
                while let Some(p2) = fifo.pop_front() {
                    for q in neighbours(p2).into_iter().flatten() {
                        if lab[q] == MASK {
                            lab[q] = current;
                            fifo.push_back(q);
                        }
                    }
                }
            }
        }
    }
    lab.into_iter()
        .map(|v| if v > 0 { v as u32 } else { 0 })
        .collect()
}

/// Foreground-restricted Rand and information scores of a proposal labelling against a
/// ground-truth labelling (label 0 of the ground truth is excluded; label 0 of the
/// proposal inside ground-truth foreground counts as singletons). `None` when the ground
/// truth has no foreground.
pub fn scores(ground_truth: &[u32], proposal: &[u32]) -> Option<SliceScores> {
    assert_eq!(
        ground_truth.len(),
        proposal.len(),
        "label images differ in size"
    );
    let mut pairs: Vec<u64> = ground_truth
        .iter()
        .zip(proposal)
        .filter(|(a, _)| **a != 0)
        .map(|(&a, &b)| ((a as u64) << 32) | b as u64)
        .collect();
    let n = pairs.len() as f64;
    if pairs.is_empty() {
        return None;
    }
    pairs.sort_unstable();
    // contingency cells (i, j, count), plus row (a_i) and column (b_j) sums
    let mut sum_a2 = 0.0;
    let mut h_a = 0.0;
    let mut sum_ab2 = 0.0;
    let mut h_ab = 0.0;
    let mut aux = 0.0; // fraction of GT-foreground pixels with proposal label 0
    // ordered by label, so the column sums below add up in one order every run (a
    // HashMap's random order moved the scores' last bits from run to run)
    let mut col: std::collections::BTreeMap<u32, f64> = std::collections::BTreeMap::new();
    let mut k = 0;
    while k < pairs.len() {
        let i = pairs[k] >> 32;
        let mut row = 0.0;
        while k < pairs.len() && pairs[k] >> 32 == i {
            let cell = pairs[k];
            let mut count = 0usize;
            while k < pairs.len() && pairs[k] == cell {
                count += 1;
                k += 1;
            }
            let p = count as f64 / n;
            row += p;
            let j = (cell & 0xffff_ffff) as u32;
            if j == 0 {
                aux += p;
            } else {
                sum_ab2 += p * p;
                h_ab -= p * p.ln();
                *col.entry(j).or_default() += p;
            }
        }
        sum_a2 += row * row;
        h_a -= row * row.ln();
    }
    let mut sum_b2 = 0.0;
    let mut h_b = 0.0;
    for &b in col.values() {
        sum_b2 += b * b;
        h_b -= b * b.ln();
    }
    // singletons
    sum_b2 += aux / n;
    sum_ab2 += aux / n;
    h_b += aux * n.ln();
    h_ab += aux * n.ln();
    let rand = Score::from_pr(sum_ab2 / sum_b2, sum_ab2 / sum_a2);
    let mutual = h_a + h_b - h_ab;
    let (precision, recall) = if h_a <= 0.0 {
        (0.0, 1.0)
    } else if h_b <= 0.0 {
        (1.0, 0.0)
    } else {
        (mutual / h_a, mutual / h_b)
    };
    Some(SliceScores {
        rand,
        info: Score::from_pr(precision, recall),
        entropy_gt_given_proposal: h_ab - h_b,
        entropy_proposal_given_gt: h_ab - h_a,
    })
}

/// The reference's thresholds: `for (t = 0.0; t <= 1.0; t += 0.1)` with floating
/// accumulation (the last one is 0.9999999999999999).
pub fn thresholds() -> Vec<f64> {
    let mut out = Vec::new();
    let mut t = 0.0f64;
    while t <= 1.0 {
        out.push(t);
        t += 0.1;
    }
    out
}

/// Score one slice at one threshold. `ground_truth` and `proposal` are cell-high maps
/// in [0, 1], row-major with `width` columns.
pub fn score_slice(
    ground_truth: &[f32],
    proposal: &[f32],
    width: usize,
    threshold: f64,
    thinning: bool,
) -> Option<SliceScores> {
    assert_eq!(
        ground_truth.len(),
        proposal.len(),
        "ground truth and proposal differ in size"
    );
    let gt_mask: Vec<bool> = ground_truth.iter().map(|&v| v as f64 > threshold).collect();
    let (gt, _) = components4(&gt_mask, width);
    let cell: Vec<bool> = proposal.iter().map(|&v| v as f64 > threshold).collect();
    let prop = if thinning {
        thin_borders(&cell, width)
    } else {
        components4(&cell, width).0
    };
    scores(&gt, &prop)
}

/// Scores of a stack at every threshold, and the maxima (the official numbers).
#[derive(Debug, Clone, PartialEq)]
pub struct StackEvaluation {
    pub thresholds: Vec<f64>,
    /// `per_slice[t][s]`: scores of slice s at threshold t (`None`: no GT foreground).
    pub per_slice: Vec<Vec<Option<SliceScores>>>,
    /// Mean Rand F over slices per threshold.
    pub rand_by_threshold: Vec<f64>,
    /// Mean information F over slices per threshold.
    pub info_by_threshold: Vec<f64>,
    /// max over thresholds of the mean Rand F.
    pub v_rand: f64,
    pub v_rand_threshold: f64,
    /// max over thresholds of the mean information F.
    pub v_info: f64,
    pub v_info_threshold: f64,
}

impl StackEvaluation {
    /// The report `segment-run eval --json` prints (and the Python binding's
    /// `evaluate` returns): the official V_rand / V_info with their thresholds, each
    /// slice's scores at those thresholds (`names`: the slices' names), and the mean
    /// F-scores at every threshold.
    pub fn to_json(&self, names: &[String], thinning: bool) -> serde_json::Value {
        let at = |t: f64| self.thresholds.iter().position(|&x| x == t).unwrap_or(0);
        let (ri, ii) = (at(self.v_rand_threshold), at(self.v_info_threshold));
        let slices: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let r = self.per_slice[ri][k];
                let i = self.per_slice[ii][k];
                serde_json::json!({
                    "name": name,
                    "rand_f": r.map(|v| v.rand.f),
                    "rand_precision": r.map(|v| v.rand.precision),
                    "rand_recall": r.map(|v| v.rand.recall),
                    "info_f": i.map(|v| v.info.f),
                    "info_precision": i.map(|v| v.info.precision),
                    "info_recall": i.map(|v| v.info.recall),
                })
            })
            .collect();
        let by_threshold: Vec<serde_json::Value> = self
            .thresholds
            .iter()
            .zip(self.rand_by_threshold.iter().zip(&self.info_by_threshold))
            .map(|(t, (r, i))| serde_json::json!({"threshold": t, "rand_f": r, "info_f": i}))
            .collect();
        serde_json::json!({
            "v_rand": self.v_rand,
            "v_info": self.v_info,
            "v_rand_threshold": self.v_rand_threshold,
            "v_info_threshold": self.v_info_threshold,
            "thinning": thinning,
            "slices": slices,
            "by_threshold": by_threshold,
        })
    }
}

/// One slice of a stack: ground truth and proposal (cell-high, [0, 1]) of equal size.
#[derive(Debug, Clone, Copy)]
pub struct SlicePair<'a> {
    pub ground_truth: &'a [f32],
    pub proposal: &'a [f32],
    pub width: usize,
}

/// Evaluate membrane probability maps (1 = membrane) against cell-high ground truth
/// (cell > 0.5, membrane 0), as the challenge scored submissions: the proposal is the
/// cell probability `1 - p`, thinning as given. All slices are `width` wide.
pub fn evaluate_membrane_maps<M: AsRef<[f32]>, G: AsRef<[f32]>>(
    membrane: &[M],
    cell_truth: &[G],
    width: usize,
    thinning: bool,
) -> StackEvaluation {
    let proposals: Vec<Vec<f32>> = membrane
        .iter()
        .map(|m| m.as_ref().iter().map(|p| 1.0 - p).collect())
        .collect();
    let pairs: Vec<SlicePair<'_>> = cell_truth
        .iter()
        .zip(&proposals)
        .map(|(g, p)| SlicePair {
            ground_truth: g.as_ref(),
            proposal: p,
            width,
        })
        .collect();
    evaluate_stack(&pairs, thinning)
}

/// Evaluate a stack the official way: per threshold, average the per-slice F-scores;
/// V_rand and V_info are the maxima over thresholds.
pub fn evaluate_stack(slices: &[SlicePair<'_>], thinning: bool) -> StackEvaluation {
    let ts = thresholds();
    let per_slice: Vec<Vec<Option<SliceScores>>> = ts
        .iter()
        .map(|&t| {
            slices
                .iter()
                .map(|s| score_slice(s.ground_truth, s.proposal, s.width, t, thinning))
                .collect()
        })
        .collect();
    let mean = |row: &Vec<Option<SliceScores>>, f: fn(&SliceScores) -> f64| {
        let v: Vec<f64> = row.iter().flatten().map(f).collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let rand_by_threshold: Vec<f64> = per_slice.iter().map(|r| mean(r, |s| s.rand.f)).collect();
    let info_by_threshold: Vec<f64> = per_slice.iter().map(|r| mean(r, |s| s.info.f)).collect();
    let best = |v: &[f64]| {
        v.iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |acc, (i, &x)| {
                if x > acc.1 { (i, x) } else { acc }
            })
    };
    let (ri, rv) = best(&rand_by_threshold);
    let (ii, iv) = best(&info_by_threshold);
    StackEvaluation {
        v_rand: rv,
        v_rand_threshold: ts[ri],
        v_info: iv,
        v_info_threshold: ts[ii],
        thresholds: ts,
        per_slice,
        rand_by_threshold,
        info_by_threshold,
    }
}

/// [`evaluate_stack`] on image files: a label image (PNG, folder of PNGs, or multi-page
/// TIFF; 255 = cell, 0 = membrane) and a proposal of the same kind (cell-high, or
/// membrane-high with `membrane_high`). Returns the slice names and the evaluation; a
/// mismatch in slice count or size names both files.
#[cfg(feature = "image")]
pub fn evaluate_files(
    labels: &std::path::Path,
    proposal: &std::path::Path,
    thinning: bool,
    membrane_high: bool,
) -> crate::error::Result<(Vec<String>, StackEvaluation)> {
    let bad = |reason: String| crate::error::Error::Image {
        path: proposal.to_path_buf(),
        reason,
    };
    let gt = crate::io::read_slices(labels)?;
    let mut prop = crate::io::read_slices(proposal)?;
    if gt.len() != prop.len() {
        return Err(bad(format!(
            "{} slices, but {} has {}",
            prop.len(),
            labels.display(),
            gt.len()
        )));
    }
    for (g, p) in gt.iter().zip(prop.iter_mut()) {
        if g.pixels.dim() != p.pixels.dim() {
            return Err(bad(format!(
                "slice {} is {:?} but label slice {} is {:?}",
                p.name,
                p.pixels.dim(),
                g.name,
                g.pixels.dim()
            )));
        }
        if membrane_high {
            p.pixels.mapv_inplace(|v| 1.0 - v);
        }
    }
    let names = gt.iter().map(|s| s.name.clone()).collect();
    let gt: Vec<ndarray::Array2<f32>> = gt.into_iter().map(|s| s.pixels).collect();
    let prop: Vec<ndarray::Array2<f32>> = prop.into_iter().map(|s| s.pixels).collect();
    Ok((names, evaluate_images(&gt, &prop, thinning)))
}

/// Instance label images scored against cell-high ground truth, two ways.
#[derive(Debug, Clone)]
pub struct InstanceEvaluation {
    /// Directly: each label id one segment, label 0 singletons; ground-truth cells are
    /// its 4-connected components above 0.5. One score per slice (`None`: no cell).
    pub direct: Vec<Option<SliceScores>>,
    /// Means over slices of `direct`.
    pub v_rand: f64,
    pub v_info: f64,
    /// As the challenge took a submission: the label image becomes a cell map, 0 on a
    /// one-pixel boundary between labels ([`crate::labels::boundary_map`]), and is scored
    /// the official way (thresholds, thinning).
    pub as_submission: StackEvaluation,
}

/// One slice of instance labels (ids, 0 = none) scored directly against cell-high
/// ground truth: each id one segment, the ground truth's 4-connected cells above 0.5.
/// `None` when the ground truth has no cell.
///
/// # Panics
/// When the two differ in size.
pub fn score_instances(
    ground_truth: &ndarray::Array2<f32>,
    labels: &ndarray::Array2<u32>,
) -> Option<SliceScores> {
    assert_eq!(ground_truth.dim(), labels.dim(), "slice sizes differ");
    let cell: Vec<bool> = ground_truth.iter().map(|&v| v > 0.5).collect();
    let (gt, _) = components4(&cell, ground_truth.ncols());
    let ids: Vec<u32> = labels.iter().copied().collect();
    scores(&gt, &ids)
}

/// Score instance label images (`labels`, ids, 0 = none) against cell-high ground truth.
///
/// # Panics
/// When the two lists differ in length or a pair in size (callers check and name them).
pub fn evaluate_instances(
    ground_truth: &[ndarray::Array2<f32>],
    labels: &[ndarray::Array2<u32>],
    thinning: bool,
) -> InstanceEvaluation {
    assert_eq!(ground_truth.len(), labels.len(), "slice counts differ");
    let direct: Vec<Option<SliceScores>> = ground_truth
        .iter()
        .zip(labels)
        .map(|(g, l)| score_instances(g, l))
        .collect();
    let mean = |f: fn(&SliceScores) -> f64| {
        let v: Vec<f64> = direct.iter().flatten().map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let maps: Vec<ndarray::Array2<f32>> = labels
        .iter()
        .map(|l| {
            let ids: Vec<u32> = l.iter().copied().collect();
            ndarray::Array2::from_shape_vec(l.dim(), crate::labels::boundary_map(&ids, l.ncols()))
                .expect("same size")
        })
        .collect();
    InstanceEvaluation {
        v_rand: mean(|s| s.rand.f),
        v_info: mean(|s| s.info.f),
        direct,
        as_submission: evaluate_images(ground_truth, &maps, thinning),
    }
}

/// [`evaluate_instances`] on files: the ground truth as for [`evaluate_files`]; the
/// labels a label TIFF (one page per slice) or a folder of them (sorted by name, e.g.
/// `segment-run label`'s `*_labels.tif`). Returns the slice names and the evaluation.
#[cfg(feature = "image")]
pub fn evaluate_label_files(
    ground_truth: &std::path::Path,
    labels: &std::path::Path,
    thinning: bool,
) -> crate::error::Result<(Vec<String>, InstanceEvaluation)> {
    let bad = |path: &std::path::Path, reason: String| crate::error::Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let files: Vec<std::path::PathBuf> = if labels.is_dir() {
        let mut f: Vec<_> = std::fs::read_dir(labels)
            .map_err(|source| crate::error::Error::Io {
                path: labels.to_path_buf(),
                action: "cannot list label folder",
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff")
                })
            })
            .collect();
        f.sort();
        if f.is_empty() {
            return Err(bad(labels, "no .tif label images in this folder".into()));
        }
        f
    } else {
        vec![labels.to_path_buf()]
    };
    let mut pages = Vec::new();
    let mut page_files = Vec::new();
    for f in &files {
        for page in crate::io::read_label_tiff(f)? {
            pages.push(page);
            page_files.push(f.clone());
        }
    }
    let gt = crate::io::read_slices(ground_truth)?;
    if gt.len() != pages.len() {
        return Err(bad(
            labels,
            format!(
                "{} label slices, but {} has {}",
                pages.len(),
                ground_truth.display(),
                gt.len()
            ),
        ));
    }
    for ((g, p), f) in gt.iter().zip(&pages).zip(&page_files) {
        if g.pixels.dim() != p.dim() {
            return Err(bad(
                f,
                format!(
                    "a label slice is {:?} but ground-truth slice {} is {:?}",
                    p.dim(),
                    g.name,
                    g.pixels.dim()
                ),
            ));
        }
    }
    let names = gt.iter().map(|s| s.name.clone()).collect();
    let gt: Vec<ndarray::Array2<f32>> = gt.into_iter().map(|s| s.pixels).collect();
    Ok((names, evaluate_instances(&gt, &pages, thinning)))
}

/// [`evaluate_stack`] on images in memory: cell-high ground truth and proposal slices
/// in [0, 1], pairwise of equal size (any strides).
///
/// # Panics
/// When the two lists differ in length or a pair in size (callers check and name them).
pub fn evaluate_images(
    ground_truth: &[ndarray::Array2<f32>],
    proposal: &[ndarray::Array2<f32>],
    thinning: bool,
) -> StackEvaluation {
    assert_eq!(ground_truth.len(), proposal.len(), "slice counts differ");
    let flat = |a: &ndarray::Array2<f32>| a.iter().copied().collect::<Vec<f32>>();
    let gt_data: Vec<Vec<f32>> = ground_truth.iter().map(flat).collect();
    let prop_data: Vec<Vec<f32>> = proposal.iter().map(flat).collect();
    let pairs: Vec<SlicePair<'_>> = ground_truth
        .iter()
        .zip(gt_data.iter().zip(&prop_data))
        .map(|(s, (g, p))| SlicePair {
            ground_truth: g,
            proposal: p,
            width: s.ncols(),
        })
        .collect();
    evaluate_stack(&pairs, thinning)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn eleven_thresholds_ending_just_below_one() {
        let t = thresholds();
        assert_eq!(t.len(), 11);
        assert!(t[10] < 1.0 && t[10] > 0.99);
    }

    #[test]
    fn identical_segmentations_score_one() {
        let gt = [1, 1, 0, 2, 2, 2, 0, 3];
        let s = scores(&gt, &gt).expect("foreground");
        assert!(
            (s.rand.f - 1.0).abs() < 1e-12 && (s.info.f - 1.0).abs() < 1e-12,
            "{s:?}"
        );
    }

    #[test]
    fn membrane_maps_are_inverted_before_scoring() {
        // two cells separated by a membrane column; truth cell-high, maps membrane-high
        let truth: Vec<f32> = (0..5 * 7)
            .map(|i| if i % 7 == 3 { 0.0 } else { 1.0 })
            .collect();
        let right: Vec<f32> = truth.iter().map(|c| 1.0 - c).collect();
        let e = evaluate_membrane_maps(&[&right[..]], &[&truth[..]], 7, true);
        assert!((e.v_rand - 1.0).abs() < 1e-12, "{}", e.v_rand);
        // no membrane predicted: the two cells merge and Rand precision halves
        let none = [0.0f32; 5 * 7];
        let e = evaluate_membrane_maps(&[&none[..]], &[&truth[..]], 7, true);
        assert!(e.v_rand < 0.7, "{}", e.v_rand);
    }

    #[test]
    fn a_split_halves_recall() {
        // one GT segment of 4 pixels split into two halves: precision 1, recall 0.5
        let s = scores(&[1, 1, 1, 1], &[1, 1, 2, 2]).expect("fg");
        assert!((s.rand.precision - 1.0).abs() < 1e-12);
        assert!((s.rand.recall - 0.5).abs() < 1e-12);
        // information: H(A) = 0 -> precision 0, recall 1 (reference edge case)
        assert_eq!((s.info.precision, s.info.recall), (0.0, 1.0));
    }

    #[test]
    fn a_merge_halves_precision() {
        let s = scores(&[1, 1, 2, 2], &[1, 1, 1, 1]).expect("fg");
        assert!((s.rand.precision - 0.5).abs() < 1e-12);
        assert!((s.rand.recall - 1.0).abs() < 1e-12);
        // by hand: H(A) = ln 2, H(B) = 0 -> precision 1, recall 0
        assert_eq!((s.info.precision, s.info.recall), (1.0, 0.0));
    }

    #[test]
    fn proposal_labels_on_gt_background_are_ignored() {
        let base = scores(&[1, 1, 2, 2, 0, 0], &[1, 1, 2, 2, 3, 3]).expect("fg");
        let other = scores(&[1, 1, 2, 2, 0, 0], &[1, 1, 2, 2, 1, 2]).expect("fg");
        assert_eq!(base, other);
        assert!((base.rand.f - 1.0).abs() < 1e-12);
    }

    #[test]
    fn proposal_membrane_inside_gt_counts_as_singletons() {
        // GT one segment of 4; proposal: 2 pixels labelled 1, 2 pixels label 0
        // p = (1/2 for j=1), aux = 1/2, n = 4
        // sumA2 = 1; sumB2 = 1/4 + (1/2)/4 = 3/8; sumAB2 = 1/4 + 1/8 = 3/8
        // precision = 1, recall = 3/8
        let s = scores(&[1, 1, 1, 1], &[1, 1, 0, 0]).expect("fg");
        assert!((s.rand.precision - 1.0).abs() < 1e-12, "{s:?}");
        assert!((s.rand.recall - 0.375).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn components_are_four_connected() {
        // diagonal neighbours are separate components
        let mask = [true, false, false, true];
        let (l, n) = components4(&mask, 2);
        assert_eq!(n, 2);
        assert_ne!(l[0], l[3]);
        let (l, n) = components4(&[true, true, false, true], 2);
        assert_eq!(n, 1);
        assert_eq!(l[0], l[3]);
    }

    #[test]
    fn thinning_leaves_one_pixel_lines_between_basins() {
        // two cells separated by a 3-pixel-wide border, 1 row: C B B B C
        let cell = [true, false, false, false, true];
        let l = thin_borders(&cell, 5);
        assert_eq!(l[0], l[1]);
        assert_eq!(l[4], l[3]);
        assert_ne!(l[0], l[4]);
        assert_eq!(
            l[2], 0,
            "the middle border pixel is reached from both sides at once"
        );
        // an even-width border: C B B C -> the reference's FIFO gives the first border
        // pixel to the left basin; the second then sees both basins and becomes a line
        let l = thin_borders(&[true, false, false, true], 4);
        assert_eq!((l[1], l[2]), (l[0], 0));
        // a border region no basin reaches becomes a basin
        let l = thin_borders(&[false, false, false, false], 2);
        assert!(l.iter().all(|&v| v == l[0] && v > 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn relabelling_invariance_and_range(
            gt in prop::collection::vec(0u32..5, 36),
            prop in prop::collection::vec(0u32..5, 36),
            perm_seed in any::<u64>(),
        ) {
            prop_assume!(gt.iter().any(|&v| v != 0));
            let s = scores(&gt, &prop).expect("fg");
            // a permutation of non-zero proposal labels changes nothing
            let mut map: Vec<u32> = (1..5).collect();
            let mut state = perm_seed;
            for i in (1..map.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                map.swap(i, (state >> 33) as usize % (i + 1));
            }
            let relabelled: Vec<u32> = prop.iter().map(|&v| if v == 0 { 0 } else { 10 + map[v as usize - 1] }).collect();
            let r = scores(&gt, &relabelled).expect("fg");
            prop_assert!((s.rand.f - r.rand.f).abs() < 1e-12 && (s.info.f - r.info.f).abs() < 1e-12);
            prop_assert!(s.rand.f > 0.0 && s.rand.f <= 1.0 + 1e-12, "{s:?}");
            prop_assert!(s.info.f >= 0.0 && s.info.f <= 1.0 + 1e-12, "{s:?}");
        }

        #[test]
        fn rand_f_is_symmetric_without_background(
            a in prop::collection::vec(1u32..5, 30),
            b in prop::collection::vec(1u32..5, 30),
        ) {
            // with no label 0 anywhere the definitions are symmetric: swapping the roles
            // swaps precision and recall and keeps F
            let ab = scores(&a, &b).expect("fg");
            let ba = scores(&b, &a).expect("fg");
            prop_assert!((ab.rand.f - ba.rand.f).abs() < 1e-12);
            prop_assert!((ab.rand.precision - ba.rand.recall).abs() < 1e-12);
            prop_assert!((ab.info.f - ba.info.f).abs() < 1e-9);
        }
    }
}
