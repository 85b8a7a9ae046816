//! `segment-train cv`'s scoring: every slice is scored by the fold model that held it
//! out, checked against scoring the slice with that model directly (and the fold models
//! made to differ, so a slice scored by the wrong fold would show).

use std::path::{Path, PathBuf};

use ndarray::Array2;
use skipseg_runtime::arch::{ArchSpec, BlockKind, Level};
use skipseg_runtime::engine::pixels::{PixelView, segment_pixels};
use skipseg_runtime::labels::{LabelOptions, label_membranes, tuning_grid};
use skipseg_runtime::metrics::{evaluate_images, score_instances, score_slice};
use skipseg_runtime::{Averaging, Inference, Segmenter, io};
use skipseg_train::backend::Cpu;
use skipseg_train::cv;
use skipseg_train::model::ResFcn;

fn tiny_spec() -> ArchSpec {
    let level = Level {
        block: BlockKind::Basic,
        width: 8,
        repeats: 1,
    };
    ArchSpec {
        name: "tiny".into(),
        in_channels: 1,
        stem_width: 8,
        down: vec![level.clone()],
        across: level.clone(),
        up: vec![level],
        head_width: 8,
        long_skips: true,
        short_skips: true,
        batch_norm: true,
        dropout: 0.0,
        bn_epsilon: 1e-5,
    }
}

fn tmp(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("tmp");
    p
}

/// Slice k: cells of 12 px separated by membrane lines (label), an image of the lines
/// darker plus a slice-dependent texture.
fn write_slices(images: &Path, labels: &Path, n: usize) {
    std::fs::create_dir_all(images).expect("dir");
    std::fs::create_dir_all(labels).expect("dir");
    for k in 0..n {
        let label = Array2::from_shape_fn((48, 48), |(y, x)| {
            if (y + k) % 12 == 0 || (x + 2 * k) % 12 == 0 {
                0u8
            } else {
                255
            }
        });
        let image = Array2::from_shape_fn((48, 48), |(y, x)| {
            let base = if label[(y, x)] == 0 { 60 } else { 180 };
            (base + ((x * 7 + y * 13 + k * 29) % 40)) as u8
        });
        io::write_png_u8(&images.join(format!("{k:02}.png")), &image).expect("png");
        io::write_png_u8(&labels.join(format!("{k:02}.png")), &label).expect("png");
    }
}

/// `image`'s membrane map from `seg`, averaged over `averaging`.
fn map_of(seg: &Segmenter, image: &Array2<f32>, averaging: Averaging) -> Array2<f32> {
    let how = Inference {
        averaging,
        ..Inference::one_pass()
    };
    let mut p = Array2::zeros(image.dim());
    segment_pixels(
        seg,
        PixelView::F32(image.view()),
        "t",
        &how,
        &mut || {},
        &|| false,
        p.view_mut(),
    )
    .expect("segment");
    p
}

#[test]
fn every_slice_is_scored_by_the_fold_that_held_it_out() {
    let dir = tmp("cv-scoring");
    let (images, labels, out) = (dir.join("images"), dir.join("labels"), dir.join("cv"));
    write_slices(&images, &labels, 4);
    let folds = cv::folds(4, 2);
    let spec = tiny_spec();
    let mut models = Vec::new();
    for f in 0..2 {
        let model = skipseg_train::synthetic::randomize(
            ResFcn::<Cpu>::new(&spec, &Default::default()),
            300 + f as u64,
        );
        let proto = skipseg_train::export::to_onnx(&model, Default::default());
        let path = cv::fold_dir(&out, f).join("model.onnx");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        skipseg_runtime::onnx::write_model(&proto, &path).expect("write");
        models.push(Segmenter::from_proto(proto, "fold").expect("load"));
    }
    let report = cv::score(&out, &folds, &images, &labels, 1, &mut |_, _| {}).expect("score");
    assert_eq!(report.folds_scored, vec![0, 1]);
    assert_eq!(
        report
            .rows
            .iter()
            .map(|r| (r.slice, r.fold))
            .collect::<Vec<_>>(),
        vec![(0, 0), (1, 0), (2, 1), (3, 1)]
    );
    let image_slices = io::read_slices(&images).expect("images");
    let label_slices = io::read_slices(&labels).expect("labels");
    let mut differ = 0.0f32;
    for row in &report.rows {
        let image = &image_slices[row.slice].pixels;
        let gt: Vec<f32> = label_slices[row.slice].pixels.iter().copied().collect();
        let own = map_of(&models[row.fold], image, Averaging::None);
        let other = map_of(&models[1 - row.fold], image, Averaging::None);
        differ = differ.max(
            own.iter()
                .zip(other.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max),
        );
        let cell: Vec<f32> = own.iter().map(|p| 1.0 - p).collect();
        let direct =
            score_slice(&gt, &cell, 48, report.means.one_pass_threshold, true).map(|s| s.rand.f);
        assert_eq!(row.one_pass.v_rand, direct, "slice {}", row.slice);
    }
    assert!(
        differ > 1e-3,
        "the fold models must differ for this test to mean anything"
    );
    let m = &report.means;
    let mean = report
        .rows
        .iter()
        .filter_map(|r| r.one_pass.v_rand)
        .sum::<f64>()
        / 4.0;
    assert!((m.one_pass.0 - mean).abs() < 1e-12);
    cv::write_report(&out, &report).expect("report");
    for f in ["cv-report.md", "cv-report.json", "cv-slices.csv"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(out.join("cv-slices.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 5, "a header and one row per slice");

    // the out-of-fold maps: each slice's averaged map from its own fold's model
    let mut averaged = Vec::new();
    for row in &report.rows {
        let p = map_of(
            &models[row.fold],
            &image_slices[row.slice].pixels,
            Averaging::Dihedral,
        );
        let written = io::read_slices(&out.join(format!("maps/slice-{:02}.tif", row.slice)))
            .expect("map")
            .remove(0)
            .pixels;
        assert_eq!(written, p, "slice {}: the written map", row.slice);
        averaged.push(p);
    }

    // nested labels: fold f's slices labelled with the setting that labelling the other
    // fold's slices from scratch, setting by setting, finds best (first of equals)
    let grid = tuning_grid();
    let labelled = |o: &LabelOptions, m: &Array2<f32>, slice: usize| -> Option<f64> {
        let p: Vec<f32> = m.iter().copied().collect();
        let l = label_membranes(&p, m.ncols(), o, 1);
        let ids = Array2::from_shape_vec(m.dim(), l.labels).expect("size");
        score_instances(&label_slices[slice].pixels, &ids).map(|s| s.rand.f)
    };
    let direct = |o: &LabelOptions, k: usize| labelled(o, &averaged[k], report.rows[k].slice);
    // the first of equals, as the report's choices
    let best_of = |scores: &dyn Fn(&LabelOptions) -> Vec<f64>| -> (f64, usize) {
        let mut best: Option<(f64, usize)> = None;
        for (o, opts) in grid.iter().enumerate() {
            let v = scores(opts);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            if !v.is_empty() && best.is_none_or(|(b, _)| mean > b) {
                best = Some((mean, o));
            }
        }
        best.expect("scored")
    };
    assert_eq!(report.label_choices.len(), 2);
    for choice in &report.label_choices {
        let others: Vec<usize> = (0..4)
            .filter(|&k| report.rows[k].fold != choice.fold)
            .collect();
        let (mean, o) = best_of(&|opts| others.iter().filter_map(|&k| direct(opts, k)).collect());
        let want = cv::Setting::of(&grid[o]);
        assert_eq!(
            format!("{}", choice.setting),
            format!("{want}"),
            "fold {}",
            choice.fold
        );
        assert!((choice.v_rand_where_chosen - mean).abs() < 1e-12);
        for k in (0..4).filter(|&k| report.rows[k].fold == choice.fold) {
            assert_eq!(report.rows[k].labels_nested.v_rand, direct(&grid[o], k));
        }
    }
    assert!(report.means.labels_nested.is_some());

    // the model's own setting: fold f's slices labelled with the setting best on the
    // maps fold f's model makes of the slices it trained on (the other fold's), which
    // here differ from the out-of-fold maps of those slices (another model's)
    assert_eq!(report.own_label_choices.len(), 2);
    for choice in &report.own_label_choices {
        let f = choice.fold;
        let trained_on: Vec<usize> = (0..4).filter(|s| !folds[f].contains(s)).collect();
        let own_maps: Vec<Array2<f32>> = trained_on
            .iter()
            .map(|&s| map_of(&models[f], &image_slices[s].pixels, Averaging::Dihedral))
            .collect();
        let (mean, o) = best_of(&|opts| {
            own_maps
                .iter()
                .zip(&trained_on)
                .filter_map(|(m, &s)| labelled(opts, m, s))
                .collect()
        });
        assert_eq!(
            format!("{}", choice.setting),
            format!("{}", cv::Setting::of(&grid[o])),
            "fold {f}"
        );
        assert!((choice.v_rand_where_chosen - mean).abs() < 1e-12);
        for k in (0..4).filter(|&k| report.rows[k].fold == f) {
            assert_eq!(report.rows[k].labels_own.v_rand, direct(&grid[o], k));
        }
        // the own threshold: the official best of those maps, applied to fold f's slices
        let truth: Vec<Array2<f32>> = trained_on
            .iter()
            .map(|&s| label_slices[s].pixels.clone())
            .collect();
        let cells: Vec<Array2<f32>> = own_maps.iter().map(|m| m.mapv(|v| 1.0 - v)).collect();
        let t = evaluate_images(&truth, &cells, true).v_rand_threshold;
        assert!(report.own_thresholds.contains(&(f, t)), "fold {f}: {t}");
        for k in (0..4).filter(|&k| report.rows[k].fold == f) {
            let gt: Vec<f32> = label_slices[report.rows[k].slice]
                .pixels
                .iter()
                .copied()
                .collect();
            let cell: Vec<f32> = averaged[k].iter().map(|p| 1.0 - p).collect();
            let want = score_slice(&gt, &cell, 48, t, true).map(|s| s.rand.f);
            assert_eq!(
                report.rows[k].averaged_own_threshold.v_rand, want,
                "slice {k}"
            );
        }
    }
    assert!(report.means.labels_own.is_some());
    assert!(report.means.averaged_own_threshold.is_some());
    assert!(
        report
            .rows
            .iter()
            .any(|r| r.averaged_own_threshold.v_rand != r.averaged.v_rand),
        "a slice must score differently at its model's own threshold ({:?}) than at the \
         stack's best ({}) for this test to mean anything",
        report.own_thresholds,
        report.means.averaged_threshold
    );
}
