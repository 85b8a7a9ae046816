//! The bad-input matrix of docs/RELIABILITY.md, one test per row (rows already covered
//! in tests/cli.rs are listed there with their test): `segment-run predict` answers each
//! with one line naming the file and the problem, exit code 2, no panic and no partial
//! or truncated output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use skipseg_runtime::onnx::{self, GraphBuilder};

mod common;
use common::{crc32, file_names as files_in, root};

fn tmp(name: &str) -> PathBuf {
    common::tmp(&format!("bad-input/{name}"))
}

fn slice() -> PathBuf {
    root().join("data/isbi2012/test/images/07.png")
}

fn predict(image: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segment-run"))
        .arg("predict")
        .arg(image)
        .arg("-o")
        .arg(out)
        .args(["--tta", "none"])
        .args(extra)
        .output()
        .expect("segment-run runs")
}

/// `predict` run by bash after `limits` (e.g. `ulimit -v 3000000`).
fn predict_limited(limits: &str, image: &Path, out: &Path, extra: &[&str]) -> Output {
    let script = format!(
        "{limits}; exec '{}' predict '{}' -o '{}' --tta none {}",
        env!("CARGO_BIN_EXE_segment-run"),
        image.display(),
        out.display(),
        extra.join(" ")
    );
    Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash")
}

/// Exit code 2, one line on stderr containing every one of `needles`, no panic.
fn assert_refused(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from: {err}");
    }
    eprintln!("refused (exit 2): {}", err.trim());
}

/// Run predict with a damaged model: refused, nothing written.
fn refuse_model(dir: &Path, model: &Path, needles: &[&str]) {
    let out = dir.join("out");
    let o = predict(&slice(), &out, &["--model", model.to_str().expect("utf-8")]);
    assert_refused(&o, needles);
    assert!(
        files_in(&out).is_empty(),
        "outputs written: {:?}",
        files_in(&out)
    );
}

fn shipped() -> onnx::pb::ModelProto {
    onnx::read_model(&root().join("models/isbi-small.onnx")).expect("shipped model")
}

#[test]
fn truncated_onnx() {
    let dir = tmp("truncated-onnx");
    let bytes = std::fs::read(root().join("models/isbi-small.onnx")).expect("model");
    let model = dir.join("cut.onnx");
    std::fs::write(&model, &bytes[..bytes.len() * 2 / 3]).expect("write");
    refuse_model(&dir, &model, &["cut.onnx", "not an ONNX model"]);
}

#[test]
fn random_bytes_named_onnx() {
    let dir = tmp("random-onnx");
    let mut s = 0x9e3779b97f4a7c15u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    let model = dir.join("random.onnx");
    std::fs::write(&model, bytes).expect("write");
    refuse_model(&dir, &model, &["random.onnx", "not an ONNX model"]);
}

#[test]
fn onnx_of_another_network() {
    let dir = tmp("other-network");
    // a valid ONNX file without skipseg's metadata (someone else's 3-channel network)
    let mut b = GraphBuilder::new("rgb", "image", 3);
    let y = b.conv("conv", "image", &[0.1; 27], [1, 3, 3, 3], None);
    let foreign = dir.join("foreign.onnx");
    onnx::write_model(&b.finish(&y, "out", "other"), &foreign).expect("write");
    refuse_model(&dir, &foreign, &["foreign.onnx", "metadata"]);
    // skipseg's metadata on a graph that takes 3 channels: the graph is not the model
    // the metadata describes
    let mut m = shipped();
    let g = m.graph.as_mut().expect("graph");
    let Some(onnx::pb::type_proto::Value::TensorType(t)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("tensor input")
    };
    t.shape.as_mut().expect("shape").dim[1].value =
        Some(onnx::pb::tensor_shape_proto::dimension::Value::DimValue(3));
    let grafted = dir.join("grafted.onnx");
    onnx::write_model(&m, &grafted).expect("write");
    refuse_model(
        &dir,
        &grafted,
        &["grafted.onnx", "invalid model", "another network"],
    );
}

#[test]
fn missing_initializer() {
    let dir = tmp("missing-initializer");
    let mut m = shipped();
    let g = m.graph.as_mut().expect("graph");
    let gone = g.initializer.remove(g.initializer.len() / 2).name;
    let model = dir.join("holed.onnx");
    onnx::write_model(&m, &model).expect("write");
    refuse_model(
        &dir,
        &model,
        &[
            "holed.onnx",
            "invalid model",
            &format!("`{gone}`"),
            "nothing defines",
        ],
    );
}

#[test]
fn nan_and_infinite_weights() {
    let dir = tmp("nan-weights");
    for (name, value) in [("nan.onnx", f32::NAN), ("inf.onnx", f32::NEG_INFINITY)] {
        let mut m = shipped();
        let g = m.graph.as_mut().expect("graph");
        let t = g
            .initializer
            .iter_mut()
            .find(|t| t.dims.len() == 4 && !t.raw_data.is_empty())
            .expect("a conv weight stored raw");
        t.raw_data[4..8].copy_from_slice(&value.to_le_bytes());
        let target = t.name.clone();
        let model = dir.join(name);
        onnx::write_model(&m, &model).expect("write");
        refuse_model(
            &dir,
            &model,
            &[
                name,
                "invalid model",
                &format!("`{target}`"),
                "NaN or infinite",
            ],
        );
    }
}

#[test]
fn empty_image_file() {
    let dir = tmp("empty-file");
    for name in ["empty.png", "empty.tif"] {
        let image = dir.join(name);
        std::fs::write(&image, b"").expect("write");
        let out = dir.join("out");
        assert_refused(&predict(&image, &out, &[]), &[name]);
        assert!(files_in(&out).is_empty());
    }
}

/// A little-endian baseline TIFF: one strip of 8-bit gray pixels.
fn tiff_u8(width: u32, height: u32, strip: &[u8], declared_bytes: u32) -> Vec<u8> {
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, declared_bytes),
    ];
    let mut b = b"II*\0".to_vec();
    b.extend_from_slice(&(8 + strip.len() as u32).to_le_bytes());
    b.extend_from_slice(strip);
    b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        if kind == 3 {
            b.extend_from_slice(&(value as u16).to_le_bytes());
            b.extend_from_slice(&[0, 0]);
        } else {
            b.extend_from_slice(&value.to_le_bytes());
        }
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

#[test]
fn truncated_tiff() {
    let dir = tmp("truncated-tiff");
    // a sound 64x64 TIFF first, then the same with its strip cut to a third
    let pixels: Vec<u8> = (0..64 * 64).map(|i| (i * 7 % 256) as u8).collect();
    let whole = tiff_u8(64, 64, &pixels, pixels.len() as u32);
    let ok = dir.join("whole.tif");
    std::fs::write(&ok, &whole).expect("write");
    let out = dir.join("out");
    let o = predict(&ok, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(out.join("cut.png"), b"earlier result").expect("write");
    let cut = dir.join("cut.tif");
    std::fs::write(&cut, &whole[..8 + pixels.len() / 3]).expect("write");
    assert_refused(&predict(&cut, &out, &[]), &["cut.tif"]);
    assert_eq!(files_in(&out), ["cut.png", "whole.png"]);
    assert_eq!(
        std::fs::read(out.join("cut.png")).expect("kept"),
        b"earlier result"
    );
}

/// A 200-byte file that declares 100000 x 100000 pixels (10 GB) is refused quickly,
/// without allocating for the declared size.
#[test]
fn tiff_declaring_100000_squared_pixels() {
    let dir = tmp("huge-tiff");
    let image = dir.join("huge.tif");
    std::fs::write(&image, tiff_u8(100_000, 100_000, &[7; 64], 64)).expect("write");
    let out = dir.join("out");
    let started = std::time::Instant::now();
    let o = predict(&image, &out, &[]);
    assert_refused(&o, &["huge.tif"]);
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    assert!(files_in(&out).is_empty());
}

/// Float TIFF input with a small NaN patch: the rule (docs/RELIABILITY.md) is that
/// non-finite pixels are missing: they stay out of the image statistics and the network
/// sees the mean intensity there. The run succeeds with a warning, and the patch cannot
/// ruin the rest of the map (before this rule the statistics became NaN and so did every
/// output pixel).
#[test]
fn float_tiff_with_a_nan_patch() {
    let dir = tmp("nan-patch");
    let s = skipseg_runtime::io::read_slices(&slice()).expect("slice");
    let (h, w) = s[0].pixels.dim();
    let clean: Vec<f32> = s[0].pixels.iter().copied().collect();
    let (py, px) = (250usize, 250usize);
    let mut patched = clean.clone();
    for y in py..py + 6 {
        for x in px..px + 6 {
            patched[y * w + x] = if (x + y) % 3 == 0 {
                f32::INFINITY
            } else {
                f32::NAN
            };
        }
    }
    let write = |name: &str, v: &[f32]| {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).expect("create");
        let mut enc = tiff::encoder::TiffEncoder::new(file).expect("tiff");
        enc.write_image::<tiff::encoder::colortype::Gray32Float>(w as u32, h as u32, v)
            .expect("write tiff");
        path
    };
    let (a, b) = (write("clean.tif", &clean), write("patched.tif", &patched));
    let out = dir.join("out");
    let o = predict(&a, &out, &["--float"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = predict(&b, &out, &["--float"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("patched.tif") && err.contains("36 NaN/infinite pixels"),
        "{err}"
    );
    let read = |name: &str| {
        skipseg_runtime::io::read_slices(&out.join(name)).expect("output")[0]
            .pixels
            .clone()
    };
    let (pa, pb) = (read("clean.tif"), read("patched.tif"));
    assert!(pb.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    // by distance from the patch (Chebyshev): near it the network sees the mean
    // intensity instead of the image; beyond the model's receptive radius (218 px) only
    // the shift of the image statistics (36 of 262144 pixels fewer) remains
    let rings = [0usize, 8, 32, 96, 219, usize::MAX];
    let mut max_abs = [0f32; 5];
    let (mut outside, mut flips) = (0usize, 0usize);
    for y in 0..h {
        for x in 0..w {
            let dist = if y < py {
                py - y
            } else {
                y.saturating_sub(py + 5)
            }
            .max(if x < px {
                px - x
            } else {
                x.saturating_sub(px + 5)
            });
            let ring = rings
                .windows(2)
                .position(|r| dist >= r[0] && dist < r[1])
                .expect("ring");
            let d = (pa[[y, x]] - pb[[y, x]]).abs();
            max_abs[ring] = max_abs[ring].max(d);
            if dist > 0 {
                outside += 1;
                flips += usize::from((pa[[y, x]] > 0.5) != (pb[[y, x]] > 0.5));
            }
        }
    }
    eprintln!(
        "NaN patch: max abs by distance <8: {:.1e}, 8-31: {:.1e}, 32-95: {:.1e}, 96-218: {:.1e}, \
         beyond: {:.1e}; {flips} of {outside} decisions outside the patch flipped",
        max_abs[0], max_abs[1], max_abs[2], max_abs[3], max_abs[4]
    );
    assert!(
        max_abs[4] < 0.01,
        "beyond the receptive radius: {}",
        max_abs[4]
    );
    assert!(max_abs[2] < 0.05, "32-95 px away: {}", max_abs[2]);
    assert!(
        flips * 1000 <= outside,
        "{flips} of {outside} decisions flipped"
    );
}

#[test]
fn output_path_is_an_existing_file() {
    let dir = tmp("output-is-file");
    let target = dir.join("results.png");
    std::fs::write(&target, b"precious").expect("write");
    assert_refused(
        &predict(&slice(), &target, &[]),
        &["results.png", "must be a folder"],
    );
    assert_eq!(std::fs::read(&target).expect("kept"), b"precious");
}

/// Disk full, simulated with a file-size limit (`ulimit -f`, SIGXFSZ ignored so that
/// writes fail with EFBIG as on a full disk): refused, the earlier output of the same
/// name kept, no temporary file left.
#[test]
fn disk_full_while_writing() {
    let dir = tmp("disk-full");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("dir");
    std::fs::write(out.join("07.tif"), b"earlier result").expect("write");
    // the float map of a 512x512 slice is 1 MiB; allow 64 KiB
    let o = predict_limited("trap '' XFSZ; ulimit -f 64", &slice(), &out, &["--float"]);
    assert_refused(&o, &["07.tif"]);
    assert_eq!(files_in(&out), ["07.tif"]);
    assert_eq!(
        std::fs::read(out.join("07.tif")).expect("kept"),
        b"earlier result"
    );
}

/// An interlaced PNG whose header declares 8 x 268435462 pixels (found by fuzzing:
/// interlaced PNGs are decoded whole, and the reader allocated the declared 4 GB). Under
/// a 3 GB address-space limit the old reader aborted on the allocation; now it is
/// refused at once.
#[test]
fn interlaced_png_declaring_4_gb() {
    let dir = tmp("interlaced-png");
    let found = root().join("runtime/tests/fuzz-regressions/image_read/interlaced-png-4gb.bin");
    let bytes = std::fs::read(found).expect("regression input");
    let image = dir.join("tall.png");
    std::fs::write(&image, &bytes[1..]).expect("write"); // byte 0: the fuzz target's kind
    let out = dir.join("out");
    let o = predict_limited("ulimit -v 3000000", &image, &out, &[]);
    assert_refused(&o, &["tall.png", "interlaced PNG of 8x268435462 pixels"]);
    assert!(files_in(&out).is_empty());
}

/// A PNG header declaring a row wider than tiling can hold is refused before any row
/// buffer is allocated.
#[test]
fn png_wider_than_a_band_can_hold() {
    let dir = tmp("wide-png");
    let image = dir.join("wide.png");
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&300_000u32.to_be_bytes());
    ihdr.extend_from_slice(&4u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // an IDAT chunk (a zlib stream of nothing) so the header is read in full
    let idat = b"IDATx\x9c\x03\x00\x00\x00\x00\x01";
    png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32(idat).to_be_bytes());
    std::fs::write(&image, png).expect("write");
    let out = dir.join("out");
    assert_refused(
        &predict(&image, &out, &[]),
        &["wide.png", "width 300000 exceeds"],
    );
}

/// A model with an empty convolution (found by fuzzing), which made tract's decimation
/// panic and now runs to an output of 0 rows: one error line, exit 2, no panic report.
#[test]
fn a_model_that_makes_the_engine_panic() {
    let dir = tmp("engine-panic");
    let model = dir.join("panics.onnx");
    std::fs::copy(
        root().join("runtime/tests/fuzz-regressions/onnx_load/empty-conv-output.onnx"),
        &model,
    )
    .expect("copy");
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_segment-run"))
        .arg("predict")
        .arg(slice())
        .arg("-o")
        .arg(&out)
        .arg("--model")
        .arg(&model)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("runs");
    assert_refused(&o, &["panics.onnx", "engine failed"]);
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}

/// A float image without a single finite pixel has nothing to segment: refused with
/// exit 2 and a line naming it, no output written, and the pages before it in the
/// same run keep their outputs.
#[test]
fn an_all_nan_image_is_refused() {
    let dir = tmp("all-nan");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).expect("dir");
    std::fs::copy(slice(), input.join("a_good.png")).expect("copy");
    let path = input.join("b_blank.tif");
    let file = std::fs::File::create(&path).expect("create");
    let mut enc = tiff::encoder::TiffEncoder::new(file).expect("tiff");
    enc.write_image::<tiff::encoder::colortype::Gray32Float>(64, 48, &vec![f32::NAN; 64 * 48])
        .expect("write tiff");
    let out = dir.join("out");
    let o = predict(&input, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("b_blank.tif") && err.contains("no finite pixel"),
        "{err}"
    );
    assert_eq!(files_in(&out), vec!["a_good.png".to_string()]);
}

/// A tile much smaller than the halo would compute many times the pixels it keeps:
/// refused with the numbers, before anything is written.
#[test]
fn a_tile_smaller_than_the_halo_is_refused() {
    let out = tmp("tile-below-halo").join("out");
    let o = predict(&slice(), &out, &["--tile", "16", "--halo", "128"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tile of 16 px") && err.contains("halo of 128 px"),
        "{err}"
    );
    assert!(files_in(&out).is_empty());
}
