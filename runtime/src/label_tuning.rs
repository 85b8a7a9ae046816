//! Choosing [`LabelOptions`] on slices that have ground truth: every setting of a grid
//! ([`crate::labels::tuning_grid`]) scored on every slice (direct V_rand / V_info, as
//! [`crate::metrics::score_instances`]), the best setting for a set of slices, and nested
//! selection: each group of slices (a cross-validation fold) labelled with the setting
//! that is best on the other groups, so that no slice's score comes from parameters
//! chosen on it. Used by `examples/label_sweep.rs` and `segment-train cv`.

use ndarray::Array2;
use rayon::prelude::*;

use crate::labels::{LabelOptions, Oversegmentation};
use crate::metrics::{SliceScores, components4, scores};

/// Scores of every setting on every slice.
#[derive(Debug, Clone)]
pub struct LabelSweep {
    pub options: Vec<LabelOptions>,
    /// `scores[o][s]`: setting `o` on slice `s` (`None`: the slice's ground truth has no
    /// cell).
    pub scores: Vec<Vec<Option<SliceScores>>>,
}

/// Label every map (membrane probabilities, `[height, width]`) with every setting and
/// score it against the slice's ground truth (cell-high, as the ISBI labels). Settings
/// that share seeds and watershed share one [`Oversegmentation`] per slice. `threads`:
/// 0 = rayon's global pool.
///
/// # Panics
/// When `maps` and `truth` differ in length or a pair in size (callers check and name
/// the files).
pub fn sweep(
    maps: &[Array2<f32>],
    truth: &[Array2<f32>],
    options: &[LabelOptions],
    threads: usize,
) -> LabelSweep {
    assert_eq!(
        maps.len(),
        truth.len(),
        "maps and ground truth differ in count"
    );
    let same_seeds = |a: &LabelOptions, b: &LabelOptions| {
        a.seeds == b.seeds
            && a.seed_sigma == b.seed_sigma
            && a.seed_max_probability == b.seed_max_probability
    };
    // runs of settings with the same seeds: (first, end)
    let mut groups = Vec::new();
    let mut start = 0;
    for o in 1..=options.len() {
        if o == options.len() || !same_seeds(&options[o], &options[start]) {
            groups.push((start, o));
            start = o;
        }
    }
    let work: Vec<(usize, (usize, usize))> = (0..maps.len())
        .flat_map(|s| groups.iter().map(move |&g| (s, g)))
        .collect();
    let run = || -> Vec<(usize, usize, Option<SliceScores>)> {
        let ground: Vec<Vec<u32>> = truth
            .par_iter()
            .map(|g| {
                let cell: Vec<bool> = g.iter().map(|&v| v > 0.5).collect();
                components4(&cell, g.ncols()).0
            })
            .collect();
        work.par_iter()
            .flat_map_iter(|&(s, (first, end))| {
                let map = &maps[s];
                assert_eq!(
                    map.dim(),
                    truth[s].dim(),
                    "map and ground truth differ in size"
                );
                let p = map.as_standard_layout();
                let p = p.as_slice().expect("standard layout");
                let over = Oversegmentation::new(p, map.ncols(), &options[first]);
                let ground = &ground[s];
                (first..end)
                    .map(move |o| {
                        let l = over.merge(&options[o], 1);
                        (o, s, scores(ground, &l.labels))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let pool = (threads > 0)
        .then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .ok()
        })
        .flatten();
    let results = match pool {
        Some(pool) => pool.install(run),
        None => run(),
    };
    let mut table = vec![vec![None; maps.len()]; options.len()];
    for (o, s, score) in results {
        table[o][s] = score;
    }
    LabelSweep {
        options: options.to_vec(),
        scores: table,
    }
}

impl LabelSweep {
    /// Mean V_rand and V_info of setting `o` over `slices` (those with a score); `None`
    /// when none has one.
    pub fn mean(&self, o: usize, slices: &[usize]) -> Option<(f64, f64)> {
        let scored: Vec<&SliceScores> = slices
            .iter()
            .filter_map(|&s| self.scores[o].get(s).and_then(Option::as_ref))
            .collect();
        if scored.is_empty() {
            return None;
        }
        let n = scored.len() as f64;
        Some((
            scored.iter().map(|x| x.rand.f).sum::<f64>() / n,
            scored.iter().map(|x| x.info.f).sum::<f64>() / n,
        ))
    }

    /// The setting with the highest mean V_rand over `slices` (the first in grid order
    /// among equals); `None` when no setting has a score there.
    pub fn best(&self, slices: &[usize]) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for o in 0..self.options.len() {
            if let Some((r, _)) = self.mean(o, slices)
                && best.is_none_or(|(_, b)| r > b)
            {
                best = Some((o, r));
            }
        }
        best.map(|(o, _)| o)
    }

    /// For each group of slices, the setting best on all the other groups' slices
    /// (`None` for a group when the others have no score, e.g. a single group).
    pub fn nested(&self, groups: &[Vec<usize>]) -> Vec<Option<usize>> {
        (0..groups.len())
            .map(|k| {
                let others: Vec<usize> = groups
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != k)
                    .flat_map(|(_, g)| g.iter().copied())
                    .collect();
                self.best(&others)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{SeedKind, label_membranes, tuning_grid};
    use crate::metrics::{Score, score_instances};

    /// Membrane lines every 9 px (probability 0.9) with a gap, noise inside the cells.
    fn map_and_truth(shift: usize) -> (Array2<f32>, Array2<f32>) {
        let truth = Array2::from_shape_fn((40, 44), |(y, x)| {
            if (y + shift).is_multiple_of(9) || (x + 2 * shift).is_multiple_of(11) {
                0.0
            } else {
                1.0
            }
        });
        let map = Array2::from_shape_fn((40, 44), |(y, x)| {
            let noise = ((x * 31 + y * 17 + shift * 7) % 23) as f32 / 100.0;
            if truth[(y, x)] == 0.0 && !(x > 20 && x < 24) {
                0.9 - noise
            } else {
                noise
            }
        });
        (map, truth)
    }

    #[test]
    fn every_setting_scores_what_labelling_from_scratch_scores() {
        // the shared oversegmentation (and the cloned region graph) must not change
        // what a setting gives: each cell of the table equals label_membranes + scoring
        let data: Vec<_> = (0..2).map(map_and_truth).collect();
        let maps: Vec<_> = data.iter().map(|d| d.0.clone()).collect();
        let truth: Vec<_> = data.iter().map(|d| d.1.clone()).collect();
        let grid: Vec<LabelOptions> = tuning_grid().into_iter().step_by(7).collect();
        let table = sweep(&maps, &truth, &grid, 2);
        for (o, opts) in grid.iter().enumerate() {
            for s in 0..maps.len() {
                let p: Vec<f32> = maps[s].iter().copied().collect();
                let l = label_membranes(&p, maps[s].ncols(), opts, 1);
                let ids = Array2::from_shape_vec(maps[s].dim(), l.labels).expect("size");
                assert_eq!(
                    table.scores[o][s],
                    score_instances(&truth[s], &ids),
                    "{opts:?}"
                );
            }
        }
    }

    fn fake(values: &[&[f64]]) -> LabelSweep {
        let score = |f: f64| SliceScores {
            rand: Score {
                precision: f,
                recall: f,
                f,
            },
            info: Score {
                precision: f,
                recall: f,
                f: 1.0 - f,
            },
            entropy_gt_given_proposal: 0.0,
            entropy_proposal_given_gt: 0.0,
        };
        LabelSweep {
            options: values
                .iter()
                .enumerate()
                .map(|(o, _)| LabelOptions {
                    seeds: SeedKind::Minima,
                    seed_sigma: o as f32,
                    seed_max_probability: 0.5,
                    merge_threshold: 0.5,
                    min_size: 0,
                })
                .collect(),
            scores: values
                .iter()
                .map(|row| row.iter().map(|&f| (f >= 0.0).then(|| score(f))).collect())
                .collect(),
        }
    }

    #[test]
    fn best_and_nested_choices_by_hand() {
        // settings x slices; slices 0-1 are group 0, slices 2-3 group 1; -1 = no score
        let t = fake(&[
            &[0.9, 0.9, 0.5, 0.5], // best on group 0 (0.9)
            &[0.6, 0.6, 0.8, 0.8], // best on group 1 (0.8), best overall (0.7 vs 0.7: tie)
            &[0.2, -1.0, 0.95, 0.1],
        ]);
        assert_eq!(t.mean(2, &[0, 1]), Some((0.2, 0.8)));
        assert_eq!(t.mean(2, &[1]), None);
        // means over all: 0.7, 0.7, 0.4167: the first of equals
        assert_eq!(t.best(&[0, 1, 2, 3]), Some(0));
        assert_eq!(t.best(&[2]), Some(2));
        // group 0 gets the setting best on group 1, and the other way round
        assert_eq!(t.nested(&[vec![0, 1], vec![2, 3]]), vec![Some(1), Some(0)]);
        assert_eq!(t.nested(&[vec![0, 1, 2, 3]]), vec![None]);
    }
}
