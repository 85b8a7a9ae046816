//! `segment-run label` and `segment-run eval --instances` from the command line: label
//! images of a stack with ids unique across it, the ground truth's own cells scoring 1,
//! and refusals that lose nothing.

use std::path::Path;
use std::process::{Command, Output};

use ndarray::Array2;
use skipseg_runtime::io;
use skipseg_runtime::metrics::components4;

mod common;
use common::{root, tmp};

fn segment_run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segment-run"))
        .args(args)
        .output()
        .expect("segment-run runs")
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// A membrane map from ground truth: 1 on membrane, 0 in cells (cell-high label PNG).
fn membrane_from_labels(slice: usize) -> Array2<f32> {
    let gt = &io::read_slices(&root().join(format!("data/isbi2012/train/labels/{slice:02}.png")))
        .expect("labels")[0];
    gt.pixels.mapv(|v| if v > 0.5 { 0.0 } else { 1.0 })
}

fn write_png(path: &Path, membrane: &Array2<f32>) {
    io::write_png_u8(path, &membrane.mapv(io::probability_u8)).expect("png");
}

#[test]
fn labels_of_a_stack_have_unique_ids_and_cover_every_pixel() {
    let dir = tmp("labels-cli-stack");
    let input = dir.join("maps");
    std::fs::create_dir_all(&input).expect("dir");
    for k in [3usize, 4] {
        write_png(&input.join(format!("{k:02}.png")), &membrane_from_labels(k));
    }
    let out = dir.join("out");
    let o = segment_run(&[
        os("label"),
        os("--probabilities"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = &io::read_label_tiff(&out.join("03_labels.tif")).expect("tif")[0];
    let b = &io::read_label_tiff(&out.join("04_labels.tif")).expect("tif")[0];
    assert!(out.join("03_labels.png").exists() && out.join("04_labels.png").exists());
    assert!(
        a.iter().chain(b.iter()).all(|&v| v != 0),
        "every pixel gets a label"
    );
    let max_a = a.iter().copied().max().expect("pixels");
    let min_b = b.iter().copied().min().expect("pixels");
    assert_eq!(a.iter().copied().min(), Some(1));
    assert_eq!(
        min_b,
        max_a + 1,
        "the second slice's ids follow the first's"
    );
    // clean membranes from ground truth: one label per ground-truth cell, give or take
    // the smallest (fragments under the minimum size join a neighbour)
    let cells: Vec<bool> = membrane_from_labels(3).iter().map(|&v| v < 0.5).collect();
    let (_, n_cells) = components4(&cells, 512);
    let n_labels = max_a;
    assert!(
        n_labels <= n_cells && n_labels as f64 >= 0.8 * n_cells as f64,
        "{n_labels} labels for {n_cells} ground-truth cells"
    );
}

#[test]
fn ground_truth_cells_as_labels_score_one_both_ways() {
    let dir = tmp("labels-cli-eval");
    let gt_dir = dir.join("gt");
    let lab_dir = dir.join("labels");
    std::fs::create_dir_all(&gt_dir).expect("dir");
    std::fs::create_dir_all(&lab_dir).expect("dir");
    for k in [0usize, 1] {
        let name = format!("{k:02}.png");
        std::fs::copy(
            root().join("data/isbi2012/train/labels").join(&name),
            gt_dir.join(&name),
        )
        .expect("copy");
        // every cell its own id; each membrane pixel joins its upper or left cell, so the
        // label image has no 0 and its boundaries fall on the membranes
        let membrane = membrane_from_labels(k);
        let cells: Vec<bool> = membrane.iter().map(|&v| v < 0.5).collect();
        let (mut ids, _) = components4(&cells, 512);
        for i in 0..ids.len() {
            if ids[i] == 0 {
                ids[i] = if i >= 512 && ids[i - 512] != 0 {
                    ids[i - 512]
                } else if i % 512 > 0 {
                    ids[i - 1]
                } else {
                    0
                };
            }
        }
        let labels = Array2::from_shape_vec((512, 512), ids).expect("shape");
        io::write_label_tiff(&lab_dir.join(format!("{k:02}_labels.tif")), &labels).expect("tif");
    }
    let o = segment_run(&[
        os("eval"),
        os("--instances"),
        os("--json"),
        os("--labels"),
        gt_dir.as_os_str(),
        os("--proposal"),
        lab_dir.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let direct = v["direct"]["v_rand"].as_f64().expect("number");
    let submitted = v["as_submission"]["v_rand"].as_f64().expect("number");
    // direct: membrane pixels inside no ground-truth cell are not scored, so the cells
    // are matched exactly
    assert!(direct > 0.9999, "direct V_rand {direct}");
    // as a submission: one-pixel boundaries between labels instead of the true
    // membranes, thinned back: nearly exact
    assert!(submitted > 0.99, "V_rand as a submission {submitted}");
}

#[test]
fn a_zarr_input_is_refused_with_the_reason_and_outputs_survive_a_bad_input() {
    let dir = tmp("labels-cli-refusals");
    let store = dir.join("v.zarr");
    std::fs::create_dir_all(&store).expect("dir");
    std::fs::write(store.join("zarr.json"), "{}").expect("write");
    let out = dir.join("out");
    let o = segment_run(&[os("label"), store.as_os_str(), os("-o"), out.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("v.zarr") && err.contains("not written yet"),
        "{err}"
    );
    // a label file from an earlier run, then a run on a corrupt PNG of the same name
    std::fs::create_dir_all(&out).expect("dir");
    let earlier = out.join("05_labels.tif");
    std::fs::write(&earlier, b"earlier run").expect("write");
    let bad = dir.join("05.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").expect("write");
    let o = segment_run(&[
        os("label"),
        os("--probabilities"),
        bad.as_os_str(),
        os("-o"),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("05.png"));
    assert_eq!(std::fs::read(&earlier).expect("read"), b"earlier run");
}

#[test]
fn the_flags_a_parameter_search_reports_select_the_same_labels() {
    // `LabelOptions::command_line_flags` is what `segment-train cv` prints for a chosen
    // setting: pasted into `segment-run label`, it must give what the library gives
    use skipseg_runtime::labels::{LabelOptions, SeedKind, label_membranes};
    let options = LabelOptions {
        seeds: SeedKind::Components,
        seed_sigma: 2.0,
        seed_max_probability: 0.3,
        merge_threshold: 0.4,
        min_size: 300,
    };
    assert_ne!(options, LabelOptions::default());
    let dir = tmp("labels-cli-flags");
    let map = membrane_from_labels(5).mapv(|v| v * 0.8 + 0.1);
    let input = dir.join("map.png");
    write_png(&input, &map);
    let out = dir.join("out");
    let flags = options.command_line_flags();
    let mut args = vec![
        os("label"),
        os("--probabilities"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
    ];
    args.extend(flags.split_whitespace().map(os));
    let o = segment_run(&args);
    assert!(
        o.status.success(),
        "{flags}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = &io::read_label_tiff(&out.join("map_labels.tif")).expect("tif")[0];
    // the library on the map as the CLI read it (8-bit, scaled to [0, 1])
    let read = &io::read_slices(&input).expect("png")[0].pixels;
    let p: Vec<f32> = read.iter().copied().collect();
    let want = label_membranes(&p, read.ncols(), &options, 1);
    assert_eq!(
        got.iter().copied().collect::<Vec<u32>>(),
        want.labels,
        "{flags}"
    );
    // and the defaults would have given something else (the flags took effect)
    let default = label_membranes(&p, read.ncols(), &LabelOptions::default(), 1);
    assert_ne!(default.labels, want.labels);
}
