//! `segment-run` as a user meets it: exit codes, error lines naming the file, and no
//! partial or truncated outputs after a failure.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_segment-run"))
}

mod common;
use common::{crc32, file_names, root, tmp};

#[test]
fn predicts_a_test_slice_with_the_embedded_model() {
    let out = tmp("predict-ok");
    let o = bin()
        .arg("predict")
        .arg(root().join("data/isbi2012/test/images/00.png"))
        .arg("-o")
        .arg(&out)
        .args(["--threshold", "0.5", "--overlay"])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["00.png", "00_mask.png", "00_overlay.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let s = skipseg_runtime::io::read_slices(&out.join("00.png")).expect("readable output");
    assert_eq!(s[0].pixels.dim(), (512, 512));
    // a membrane map of EM: a minority of pixels are membrane, but some are
    let frac = s[0].pixels.iter().filter(|&&v| v > 0.5).count() as f32 / (512.0 * 512.0);
    assert!((0.05..0.5).contains(&frac), "membrane fraction {frac}");
    // nothing temporary left behind
    assert!(file_names(&out).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn corrupt_image_fails_cleanly_and_keeps_existing_outputs() {
    let out = tmp("predict-bad");
    let bad = out.join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n garbage").expect("write");
    // an existing output of the same name must survive a failed run
    std::fs::write(out.join("broken_mask.png"), b"keep me").expect("write");
    let o = bin()
        .arg("predict")
        .arg(&bad)
        .arg("-o")
        .arg(&out)
        .args(["--threshold", "0.5"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("broken.png"),
        "error must name the file: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert_eq!(
        std::fs::read(out.join("broken_mask.png")).expect("kept"),
        b"keep me"
    );
    assert!(!out.join("broken.tif").exists());
}

#[test]
fn bad_model_and_unwritable_output_exit_2() {
    let out = tmp("predict-model");
    let model = out.join("model.onnx");
    std::fs::write(&model, b"not onnx").expect("write");
    let o = bin()
        .arg("predict")
        .arg(root().join("data/isbi2012/test/images/00.png"))
        .arg("-o")
        .arg(&out)
        .arg("--model")
        .arg(&model)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("model.onnx"));
    let file_not_dir = out.join("plain-file");
    std::fs::write(&file_not_dir, b"x").expect("write");
    let o = bin()
        .arg("predict")
        .arg(root().join("data/isbi2012/test/images/00.png"))
        .arg("-o")
        .arg(file_not_dir.join("sub"))
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("plain-file"));
}

#[test]
fn eval_of_labels_against_themselves_is_perfect() {
    let labels = root().join("data/isbi2012/train/labels");
    let o = bin()
        .arg("eval")
        .arg("--labels")
        .arg(&labels)
        .arg("--proposal")
        .arg(&labels)
        .arg("--json")
        .output()
        .expect("runs");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["v_rand"].as_f64(), Some(1.0));
    assert!((v["v_info"].as_f64().expect("number") - 1.0).abs() < 1e-12);
    assert_eq!(v["slices"].as_array().map(Vec::len), Some(30));
}

/// The streamed path (PNG read row by row, float TIFF written strip by strip) gives the
/// same probabilities as in-memory tiled inference through the library.
#[test]
fn float_tiff_output_equals_in_memory_inference() {
    use skipseg_runtime::tiling::{Blend, Tiling};
    let out = tmp("predict-float");
    let input = root().join("data/isbi2012/test/images/03.png");
    let o = bin()
        .arg("predict")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(["--float", "--tile", "200", "--halo", "40"])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = skipseg_runtime::io::read_slices(&out.join("03.tif")).expect("float TIFF");
    assert_eq!(got[0].bit_depth, 32);
    let seg = skipseg_runtime::Segmenter::from_path(&root().join("models/isbi-small-bce.onnx"))
        .expect("model");
    let image = skipseg_runtime::io::read_slices(&input).expect("input");
    // the library with what the model records as its defaults (averaging included)
    let how = skipseg_runtime::Inference {
        tiling: Tiling {
            tile: Some(200),
            halo: Some(40),
        },
        blend: Blend::Crop,
        averaging: seg.meta().inference.averaging,
        monte_carlo: None,
    };
    let want =
        skipseg_runtime::segment_image_with(&seg, image[0].pixels.view(), &how).expect("library");
    let worst = got[0]
        .pixels
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "max abs difference {worst}");
}

fn write_tiff_stack(path: &Path, pages: usize, h: usize, w: usize) {
    let file = std::fs::File::create(path).expect("create");
    let mut enc = tiff::encoder::TiffEncoder::new(file).expect("encoder");
    for p in 0..pages {
        let data: Vec<u16> = (0..h * w)
            .map(|i| ((i * 37 + p * 1000) % 65536) as u16)
            .collect();
        enc.write_image::<tiff::encoder::colortype::Gray16>(w as u32, h as u32, &data)
            .expect("page");
    }
}

#[test]
fn a_sixteen_bit_stack_gives_one_output_per_page_of_any_size() {
    let out = tmp("predict-stack");
    let stack = out.join("stack.tif");
    // 70 x 45: smaller than a tile and no multiple of the down-sampling factor
    write_tiff_stack(&stack, 3, 70, 45);
    let o = bin()
        .arg("predict")
        .arg(&stack)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for p in 0..3 {
        let f = out.join(format!("stack_p{p:03}.png"));
        let s = skipseg_runtime::io::read_slices(&f).expect("output");
        assert_eq!(s[0].pixels.dim(), (70, 45), "{}", f.display());
    }
    let summary = String::from_utf8_lossy(&o.stdout);
    let (totals, pages): (Vec<&str>, Vec<&str>) =
        summary.lines().partition(|l| l.starts_with("total: "));
    assert_eq!(pages.len(), 3, "one summary line per page: {summary}");
    assert_eq!(totals.len(), 1, "and one total: {summary}");
    assert!(totals[0].starts_with("total: 3 pages"), "{summary}");
    assert!(
        summary.contains("45x70") && summary.contains("MP/s"),
        "{summary}"
    );
}

#[test]
fn colour_and_zero_sized_images_fail_with_one_line_naming_the_file() {
    let out = tmp("predict-bad-shape");
    // a colour RGB PNG: the model takes one grayscale channel
    let colour = out.join("colour.png");
    {
        let file = std::fs::File::create(&colour).expect("create");
        let mut enc = png::Encoder::new(file, 4, 3);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let data: Vec<u8> = (0..4 * 3).flat_map(|i| [i as u8 * 20, 0, 255]).collect();
        enc.write_header()
            .expect("header")
            .write_image_data(&data)
            .expect("data");
    }
    // a PNG whose header says width 0
    let empty = out.join("empty.png");
    {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&0u32.to_be_bytes());
        chunk.extend_from_slice(&5u32.to_be_bytes());
        chunk.extend_from_slice(&[8, 0, 0, 0, 0]);
        bytes.extend_from_slice(&13u32.to_be_bytes());
        bytes.extend_from_slice(&chunk);
        bytes.extend_from_slice(&crc32(&chunk).to_be_bytes());
        std::fs::write(&empty, bytes).expect("write");
    }
    for (file, why) in [(&colour, "channels"), (&empty, "")] {
        let o = bin()
            .arg("predict")
            .arg(file)
            .arg("-o")
            .arg(&out)
            .output()
            .expect("runs");
        assert_eq!(o.status.code(), Some(2), "{}", file.display());
        let err = String::from_utf8_lossy(&o.stderr);
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(err.contains(&name) && err.contains(why), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // nothing but the inputs is left in the folder (no partial outputs)
    assert_eq!(file_names(&out), ["colour.png", "empty.png"]);
}

/// A file cut off mid-image fails while its outputs are being streamed: the error names
/// the file, and the same-named outputs of an earlier run stay as they were.
#[test]
fn a_truncated_image_fails_mid_stream_and_keeps_earlier_outputs() {
    let out = tmp("predict-truncated");
    let bytes = std::fs::read(root().join("data/isbi2012/test/images/05.png")).expect("slice");
    let cut = out.join("05.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let results = out.join("results");
    std::fs::create_dir_all(&results).expect("dir");
    for f in ["05.png", "05_mask.png", "05_overlay.png"] {
        std::fs::write(results.join(f), b"earlier result").expect("write");
    }
    // a fixed-normalisation model fails during tiling (outputs open); the shipped
    // per-image model fails in its statistics pass (before any output is opened)
    let fixture = root().join("fixtures/basic-no-short-skips-no-bn/model.onnx");
    for model in [Some(fixture), None] {
        let mut cmd = bin();
        cmd.arg("predict").arg(&cut).arg("-o").arg(&results).args([
            "--threshold",
            "0.5",
            "--overlay",
        ]);
        if let Some(m) = &model {
            cmd.arg("--model").arg(m);
        }
        let o = cmd.output().expect("runs");
        assert_eq!(o.status.code(), Some(2), "{model:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("05.png"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        let names = file_names(&results);
        assert_eq!(
            names,
            ["05.png", "05_mask.png", "05_overlay.png"],
            "{model:?}"
        );
        for f in &names {
            assert_eq!(
                std::fs::read(results.join(f)).expect("kept"),
                b"earlier result",
                "{f} changed"
            );
        }
    }
}

/// The shipped model records dihedral averaging: predict uses it unless --tta says
/// otherwise, and says so in its summary line.
#[test]
fn the_model_default_averaging_applies_unless_overridden() {
    let out = tmp("predict-tta");
    let input = root().join("data/isbi2012/test/images/07.png");
    let run = |extra: &[&str], dir: &str| {
        let o = bin()
            .arg("predict")
            .arg(&input)
            .arg("-o")
            .arg(out.join(dir))
            .args(["--float"])
            .args(extra)
            .output()
            .expect("runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary = String::from_utf8_lossy(&o.stdout).into_owned();
        let p = skipseg_runtime::io::read_slices(&out.join(dir).join("07.tif")).expect("output");
        (summary, p.into_iter().next().expect("slice").pixels)
    };
    let (s_default, p_default) = run(&[], "default");
    let (s_dihedral, p_dihedral) = run(&["--tta", "dihedral"], "dihedral");
    let (s_none, p_none) = run(&["--tta", "none"], "none");
    assert!(s_default.contains("x 8 symmetries"), "{s_default}");
    assert!(s_dihedral.contains("x 8 symmetries"), "{s_dihedral}");
    assert!(!s_none.contains("symmetries"), "{s_none}");
    assert_eq!(p_default, p_dihedral);
    let change = p_default
        .iter()
        .zip(p_none.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(change > 1e-3, "averaging changed nothing: {change}");
}

#[test]
fn monte_carlo_sampling_of_a_model_without_dropout_is_refused() {
    // the shipped model was trained without dropout: nothing to sample
    let out = tmp("predict-mc");
    let o = bin()
        .arg("predict")
        .arg(root().join("data/isbi2012/test/images/00.png"))
        .arg("-o")
        .arg(&out)
        .args(["--mc-samples", "4"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("trained with dropout"), "{err}");
    assert!(!out.join("00.png").exists(), "no output written");
}

/// `quantize` without labels uses the percentile rule (it needed --validation-images
/// before issue 18); the written model is int8 (QDQ) and segments; `--method auto`
/// without labels is refused with the reason.
#[test]
fn quantize_needs_no_labels_by_default() {
    let dir = tmp("quantize-plain");
    let cal = dir.join("cal");
    std::fs::create_dir_all(&cal).expect("dir");
    std::fs::copy(
        root().join("data/isbi2012/train/images/00.png"),
        cal.join("00.png"),
    )
    .expect("copy");
    let model = common::fixture_dirs()[0].join("model.onnx");
    let quantize = |extra: &[&str], out: &Path| {
        bin()
            .arg("quantize")
            .arg("--model")
            .arg(&model)
            .arg("--calibration")
            .arg(&cal)
            .args(extra)
            .arg("-o")
            .arg(out)
            .output()
            .expect("runs")
    };
    let out = dir.join("int8.onnx");
    let o = quantize(&["--max-side", "128"], &out);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("percentile 99.99"), "{text}");
    let proto = skipseg_runtime::onnx::read_model(&out).expect("written");
    let ops = skipseg_runtime::onnx::op_histogram(&proto);
    assert!(
        ops.iter().any(|(op, _)| op == "QuantizeLinear"),
        "not quantized: {ops:?}"
    );
    let o = quantize(&["--method", "auto"], &dir.join("auto.onnx"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("labelled"));
    assert!(!dir.join("auto.onnx").exists());
}

/// segment-run sets mimalloc's purge delay without starting itself again: by default it
/// reports -1 (purging off) from the process it is; a delay the user puts in the
/// environment is read by mimalloc itself and reported as given, which also shows that
/// the option segment-run sets is that one (`bench --json` reports the delay in force).
#[test]
fn the_allocator_is_configured_in_process_and_the_users_choice_wins() {
    let run = |delay: Option<&str>| {
        let mut cmd = bin();
        cmd.args(["bench", "--size", "64", "--repeats", "1", "--json"]);
        cmd.env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(d) = delay {
            cmd.env("MIMALLOC_PURGE_DELAY", d);
        }
        let out = cmd.output().expect("runs");
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let default = run(None);
    assert_eq!(default["allocator_purge_delay_ms"], -1, "{default}");
    let chosen = run(Some("123"));
    assert_eq!(chosen["allocator_purge_delay_ms"], 123, "{chosen}");
}

/// `--model` takes an embedded model (`optimize --embedded`) as well as the ONNX file it
/// came from, with the same output bits; a command that needs the ONNX graph says so.
#[test]
fn predict_with_the_embedded_model_equals_the_onnx_model() {
    let out = tmp("predict-embedded");
    let slice = root().join("data/isbi2012/test/images/05.png");
    let mut maps = Vec::new();
    for model in [
        "models/isbi-small-bce.onnx",
        "models/isbi-small-bce.skipseg",
    ] {
        let dir = out.join(model.replace('/', "_"));
        let o = bin()
            .args(["predict", "--model"])
            .arg(root().join(model))
            .arg(&slice)
            .arg("-o")
            .arg(&dir)
            .args([
                "--float",
                "--tta",
                "flips",
                "--tile",
                "256",
                "--threads",
                "2",
            ])
            .output()
            .expect("runs");
        assert!(
            o.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let files = file_names(&dir);
        assert_eq!(files.len(), 1, "{files:?}");
        maps.push(
            skipseg_runtime::io::read_slices(&dir.join(&files[0]))
                .expect("float output")
                .remove(0)
                .pixels,
        );
    }
    let differ = maps[0]
        .iter()
        .zip(maps[1].iter())
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differ, 0,
        "pixels differ between the ONNX and the embedded model"
    );
    let o = bin()
        .args(["info", "--model"])
        .arg(root().join("models/isbi-small-bce.skipseg"))
        .output()
        .expect("runs");
    let info = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && info.contains("architecture: small")
            && info.contains("embedded model"),
        "{info}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = bin()
        .args(["quantize", "--model"])
        .arg(root().join("models/isbi-small-bce.skipseg"))
        .args(["--calibration"])
        .arg(root().join("data/isbi2012/train/images"))
        .arg("-o")
        .arg(out.join("q.onnx"))
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("embedded model") && err.contains("ONNX"),
        "{err}"
    );
}
