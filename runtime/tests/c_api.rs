//! The C interface: the committed header is current, the C example built with the
//! system compiler segments a slice exactly as `segment-run` does, bad arguments get
//! error codes, and one model serves several threads at once.
//!
//! Needs the C library built first (`bash scripts/build-clib.sh --dev`; the README's
//! test command, scripts/test.sh, does it).
#![allow(unsafe_code)] // calls the extern "C" functions as a C program would

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

use skipseg_runtime::ffi::*;

mod common;
use common::{root, tmp};

fn last_error() -> String {
    // SAFETY: never null, NUL-terminated, valid until this thread's next call
    unsafe { CStr::from_ptr(skipseg_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("config");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi.rs"))
        .generate()
        .expect("cbindgen parses src/ffi.rs")
        .write(&mut generated);
    let header = crate_dir.join("include/skipseg.h");
    if std::env::var_os("SKIPSEG_BLESS").is_some() {
        std::fs::create_dir_all(header.parent().expect("dir")).expect("dir");
        std::fs::write(&header, &generated).expect("write header");
    }
    let committed = std::fs::read(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "runtime/include/skipseg.h is not what cbindgen makes of src/ffi.rs; regenerate with \
         SKIPSEG_BLESS=1 cargo test -p skipseg-runtime --features ffi --test c_api header"
    );
}

/// The library the test command built (`scripts/build-clib.sh --dev`).
fn library_dir() -> PathBuf {
    // cargo's target folder (CARGO_TARGET_DIR or target/), as build-clib.sh uses it
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../debug");
    assert!(
        dir.join("libskipseg_runtime.so").exists(),
        "{}/libskipseg_runtime.so missing: run `bash scripts/build-clib.sh --dev` first \
         (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A crop of a test slice (odd size: tiles, padding and strides all matter), as 8-bit
/// gray PNG for segment-run and binary PGM for the C program.
fn write_slice(dir: &Path) -> (PathBuf, PathBuf, usize, usize) {
    let s = skipseg_runtime::io::read_slices(&root().join("data/isbi2012/test/images/03.png"))
        .expect("slice");
    let (h, w) = (203usize, 261usize);
    let bytes: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (y, x)))
        .map(|(y, x)| (s[0].pixels[[y + 40, x + 100]] * 255.0).round() as u8)
        .collect();
    let png_path = dir.join("crop.png");
    let file = std::fs::File::create(&png_path).expect("create");
    let mut enc = png::Encoder::new(file, w as u32, h as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .expect("header")
        .write_image_data(&bytes)
        .expect("data");
    let pgm_path = dir.join("crop.pgm");
    let mut pgm = format!("P5\n{w} {h}\n255\n").into_bytes();
    pgm.extend_from_slice(&bytes);
    std::fs::write(&pgm_path, pgm).expect("write pgm");
    (png_path, pgm_path, w, h)
}

/// The C example, compiled with the system C compiler against the shared library, gives
/// byte-identical 8-bit maps and bit-identical floats to `segment-run predict` with the
/// same options (same library code, same arithmetic: no tolerance is needed).
#[test]
fn c_example_segments_like_segment_run() {
    let lib = library_dir();
    let dir = tmp("c-example");
    let exe = dir.join("segment");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = Command::new(&cc)
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("runtime/include"))
        .arg(root().join("examples/c/segment.c"))
        .arg("-L")
        .arg(&lib)
        .args(["-lskipseg_runtime", "-lm"])
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        o.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let (png_path, pgm_path, w, h) = write_slice(&dir);
    let model = root().join("models/isbi-small.onnx");
    let opts = ["--tile", "96", "--halo", "32"];
    for (ext, averaging) in [("pgm", "none"), ("pfm", "flips")] {
        let out = dir.join(format!("c-{averaging}.{ext}"));
        let o = Command::new(&exe)
            .arg(&model)
            .arg(&pgm_path)
            .arg(&out)
            .args(opts)
            .args(["--averaging", averaging, "--threads", "2"])
            .output()
            .expect("runs");
        assert!(
            o.status.success(),
            "C example: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let rust_out = dir.join(format!("rust-{averaging}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_segment-run"));
        cmd.arg("predict")
            .arg(&png_path)
            .arg("-o")
            .arg(&rust_out)
            .arg("--model")
            .arg(&model)
            .args(opts)
            .args(["--tta", averaging, "--threads", "1"]);
        if ext == "pfm" {
            cmd.arg("--float");
        }
        let o = cmd.output().expect("runs");
        assert!(
            o.status.success(),
            "segment-run: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let c_bytes = std::fs::read(&out).expect("C output");
        if ext == "pgm" {
            let header = format!("P5\n{w} {h}\n255\n");
            assert!(c_bytes.starts_with(header.as_bytes()));
            let ours = skipseg_runtime::io::read_slices(&rust_out.join("crop.png")).expect("png");
            let rust8: Vec<u8> = ours[0]
                .pixels
                .iter()
                .map(|v| (v * 255.0).round() as u8)
                .collect();
            let c8 = &c_bytes[header.len()..];
            let differing = rust8.iter().zip(c8).filter(|(a, b)| a != b).count();
            eprintln!("8-bit maps: {differing} of {} pixels differ", w * h);
            assert_eq!(c8.len(), w * h);
            assert_eq!(differing, 0);
        } else {
            let header = format!("Pf\n{w} {h}\n-1.0\n");
            assert!(c_bytes.starts_with(header.as_bytes()));
            let floats: Vec<f32> = c_bytes[header.len()..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(floats.len(), w * h);
            let ours = skipseg_runtime::io::read_slices(&rust_out.join("crop.tif")).expect("tif");
            let mut max_abs = 0f32;
            for y in 0..h {
                for x in 0..w {
                    // PFM stores the bottom row first
                    let c = floats[(h - 1 - y) * w + x];
                    max_abs = max_abs.max((c - ours[0].pixels[[y, x]]).abs());
                }
            }
            eprintln!("float maps (2 threads in C, 1 in segment-run): max abs {max_abs:e}");
            assert_eq!(max_abs, 0.0);
        }
    }
    // a bad model is reported through skipseg_last_error, exit code 2
    let bad = dir.join("bad.onnx");
    std::fs::write(&bad, b"not a model").expect("write");
    let o = Command::new(&exe)
        .arg(&bad)
        .arg(&pgm_path)
        .arg(dir.join("x.pgm"))
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );
}

fn load_shipped() -> *mut SkipsegModel {
    let path = CString::new(
        root()
            .join("models/isbi-small.onnx")
            .to_string_lossy()
            .as_bytes(),
    )
    .expect("path");
    let mut model = std::ptr::null_mut();
    // SAFETY: valid C string and pointer slot
    let status = unsafe { skipseg_model_load(path.as_ptr(), &mut model) };
    assert_eq!(status, SkipsegStatus::Ok, "{}", last_error());
    model
}

/// Run `skipseg_segment` on a u8 image.
fn segment(
    model: *const SkipsegModel,
    pixels: &[u8],
    w: usize,
    h: usize,
    threads: u32,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; w * h];
    let mut options = std::mem::MaybeUninit::<SkipsegOptions>::uninit();
    // SAFETY: writable options struct
    assert_eq!(
        unsafe { skipseg_options_default(options.as_mut_ptr()) },
        SkipsegStatus::Ok
    );
    // SAFETY: initialised by the call above
    let mut options = unsafe { options.assume_init() };
    options.averaging = SkipsegAveraging::None as i32;
    options.tile = 64;
    options.halo = 16;
    options.threads = threads;
    // SAFETY: live model, buffers of the stated sizes
    let status = unsafe {
        skipseg_segment(
            model,
            pixels.as_ptr(),
            pixels.len(),
            SkipsegPixelType::U8 as i32,
            w,
            h,
            w,
            &options,
            out.as_mut_ptr(),
            out.len(),
        )
    };
    assert_eq!(status, SkipsegStatus::Ok, "{}", last_error());
    out
}

fn test_image(w: usize, h: usize, seed: usize) -> Vec<u8> {
    (0..w * h)
        .map(|i| (((i % w) * 7 + (i / w) * 13 + seed * 31) % 251) as u8)
        .collect()
}

/// docs/EMBEDDING.md: "one model may be used from any number of threads at once".
/// Four threads segment different images through one model at the same time (with
/// 1 and 2 threads per call); each result equals the same call made alone.
#[test]
fn one_model_serves_several_threads_at_once() {
    let model = load_shipped();
    let (w, h) = (72usize, 56usize);
    let images: Vec<Vec<u8>> = (0..4).map(|s| test_image(w, h, s)).collect();
    let alone: Vec<Vec<f32>> = images
        .iter()
        .map(|im| segment(model, im, w, h, 1))
        .collect();
    assert!(alone.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
    assert_ne!(alone[0], alone[1], "different images give different maps");
    struct Shared(*mut SkipsegModel);
    // SAFETY: the C interface documents a model as usable from several threads
    unsafe impl Sync for Shared {}
    let shared = Shared(model);
    for _round in 0..3 {
        std::thread::scope(|s| {
            let handles: Vec<_> = images
                .iter()
                .enumerate()
                .map(|(k, im)| {
                    let shared = &shared;
                    s.spawn(move || segment(shared.0, im, w, h, 1 + (k % 2) as u32))
                })
                .collect();
            for (k, h) in handles.into_iter().enumerate() {
                assert_eq!(
                    h.join().expect("no panic"),
                    alone[k],
                    "image {k} differs when concurrent"
                );
            }
        });
    }
    // SAFETY: loaded above, no call in flight
    unsafe { skipseg_model_free(model) };
}

/// Each bad argument gets its status and a message naming the problem; nothing is
/// written to `out`.
#[test]
fn bad_arguments_get_error_codes() {
    let model = load_shipped();
    let (w, h) = (16usize, 16usize);
    let pixels = vec![128u8; w * h];
    let mut out = vec![-1.0f32; w * h];
    let call = |model: *const SkipsegModel,
                pixels: *const u8,
                len: usize,
                kind: i32,
                w: usize,
                h: usize,
                stride: usize,
                out: *mut f32,
                out_len: usize| {
        // SAFETY: every pointer is null or valid for the sizes the test states
        unsafe {
            skipseg_segment(
                model,
                pixels,
                len,
                kind,
                w,
                h,
                stride,
                std::ptr::null(),
                out,
                out_len,
            )
        }
    };
    let u8t = SkipsegPixelType::U8 as i32;
    let o = out.as_mut_ptr();
    type Case<'a> = (&'a str, Box<dyn Fn() -> SkipsegStatus + 'a>, &'a str);
    let (p, n) = (pixels.as_ptr(), w * h);
    let u16t = SkipsegPixelType::U16 as i32;
    let cases: Vec<Case<'_>> = vec![
        (
            "null model",
            Box::new(|| call(std::ptr::null(), p, n, u8t, w, h, w, o, n)),
            "model: null",
        ),
        (
            "null pixels",
            Box::new(|| call(model, std::ptr::null(), n, u8t, w, h, w, o, n)),
            "null pointer",
        ),
        (
            "null out",
            Box::new(|| call(model, p, n, u8t, w, h, w, std::ptr::null_mut(), n)),
            "null pointer",
        ),
        (
            "zero width",
            Box::new(|| call(model, p, n, u8t, 0, h, w, o, n)),
            "empty image",
        ),
        (
            "stride below a row",
            Box::new(|| call(model, p, n, u8t, w, h, w - 1, o, n)),
            "row_stride",
        ),
        (
            "buffer too short",
            Box::new(|| call(model, p, n - 1, u8t, w, h, w, o, n)),
            "pixels_len",
        ),
        (
            "output too short",
            Box::new(|| call(model, p, n, u8t, w, h, w, o, n - 1)),
            "out holds",
        ),
        (
            "unknown pixel type",
            Box::new(|| call(model, p, n, 7, w, h, w, o, n)),
            "pixel_type",
        ),
        // a u16 image needs twice the bytes of a u8 one: the size check knows pixel widths
        (
            "u16 in a u8-sized buffer",
            Box::new(|| call(model, p, n, u16t, w, h, 2 * w, o, n)),
            "pixels_len",
        ),
    ];
    for (what, run, message) in cases {
        assert_eq!(run(), SkipsegStatus::ErrInvalidArgument, "{what}");
        let e = last_error();
        assert!(e.contains(message), "{what}: {e}");
    }
    assert!(
        out.iter().all(|&v| v == -1.0),
        "out written by a refused call"
    );
    // bad options
    let mut options = std::mem::MaybeUninit::<SkipsegOptions>::uninit();
    // SAFETY: writable
    unsafe { skipseg_options_default(options.as_mut_ptr()) };
    // SAFETY: initialised above
    let options = unsafe { options.assume_init() };
    for (field, value) in [
        ("halo", -2i64),
        ("averaging", 9),
        ("blend", -3),
        ("threads", 0),
    ] {
        let mut o2 = options;
        match field {
            "halo" => o2.halo = value as i32,
            "averaging" => o2.averaging = value as i32,
            "blend" => o2.blend = value as i32,
            _ => o2.threads = value as u32,
        }
        // SAFETY: valid buffers
        let status = unsafe {
            skipseg_segment(
                model,
                pixels.as_ptr(),
                w * h,
                u8t,
                w,
                h,
                w,
                &o2,
                out.as_mut_ptr(),
                w * h,
            )
        };
        assert_eq!(
            status,
            SkipsegStatus::ErrInvalidArgument,
            "{field} = {value}"
        );
    }
    // loading: null path, null out, bytes that are not a model, missing file
    let mut m = std::ptr::dangling_mut::<SkipsegModel>();
    // SAFETY: null path is refused; `m` is a valid slot
    assert_eq!(
        unsafe { skipseg_model_load(std::ptr::null(), &mut m) },
        SkipsegStatus::ErrInvalidArgument
    );
    assert!(m.is_null(), "out is nulled on failure");
    let garbage = b"\x08\x07garbage";
    let name = CString::new("garbage.onnx").expect("name");
    // SAFETY: valid buffer, name and slot
    let status =
        unsafe { skipseg_model_load_bytes(garbage.as_ptr(), garbage.len(), name.as_ptr(), &mut m) };
    assert_eq!(status, SkipsegStatus::ErrModel);
    assert!(last_error().contains("garbage.onnx"), "{}", last_error());
    let missing = CString::new("/nonexistent/model.onnx").expect("path");
    // SAFETY: valid path and slot
    assert_eq!(
        unsafe { skipseg_model_load(missing.as_ptr(), &mut m) },
        SkipsegStatus::ErrIo
    );
    assert!(last_error().contains("/nonexistent/model.onnx"));
    // SAFETY: null info pointer is refused
    assert_eq!(
        unsafe { skipseg_model_info(model, std::ptr::null_mut()) },
        SkipsegStatus::ErrInvalidArgument
    );
    // SAFETY: freeing null is a no-op; then the real model
    unsafe {
        skipseg_model_free(std::ptr::null_mut());
        skipseg_model_free(model);
    }
}

/// Loading from bytes gives the same model as loading from the file, and the info
/// matches what `segment-run info` derives from the same metadata.
#[test]
fn model_from_bytes_and_its_info() {
    let bytes = std::fs::read(root().join("models/isbi-small.onnx")).expect("model");
    let mut m = std::ptr::null_mut();
    // SAFETY: valid buffer and slot; a null name is allowed
    let status =
        unsafe { skipseg_model_load_bytes(bytes.as_ptr(), bytes.len(), std::ptr::null(), &mut m) };
    assert_eq!(status, SkipsegStatus::Ok, "{}", last_error());
    drop(bytes); // the library keeps its own copy
    let mut info = std::mem::MaybeUninit::<SkipsegModelInfo>::uninit();
    // SAFETY: live model, writable info
    assert_eq!(
        unsafe { skipseg_model_info(m, info.as_mut_ptr()) },
        SkipsegStatus::Ok
    );
    // SAFETY: initialised by the successful call
    let info = unsafe { info.assume_init() };
    let seg = skipseg_runtime::Segmenter::from_path(&root().join("models/isbi-small.onnx"))
        .expect("loads");
    let arch = &seg.meta().arch;
    assert_eq!(info.in_channels as usize, arch.in_channels);
    assert_eq!(info.down_factor as usize, arch.down_factor());
    assert_eq!(
        info.receptive_radius as usize,
        arch.plan().receptive_radius()
    );
    assert_eq!(
        info.default_averaging,
        SkipsegAveraging::Dihedral as i32,
        "the card says dihedral"
    );
    let (w, h) = (40usize, 36usize);
    let image = test_image(w, h, 9);
    let from_file = load_shipped();
    assert_eq!(
        segment(m, &image, w, h, 1),
        segment(from_file, &image, w, h, 1)
    );
    // SAFETY: both loaded above
    unsafe {
        skipseg_model_free(m);
        skipseg_model_free(from_file);
    }
    assert_eq!(skipseg_abi_version(), SKIPSEG_ABI_VERSION);
}

/// A panic inside the engine does not cross the C boundary: a model found by fuzzing
/// makes tract panic when it runs (a Resize of an empty tensor); the library catches it
/// and the call returns an error code with the reason.
#[test]
fn a_panic_inside_the_engine_becomes_an_error_code() {
    let bytes = std::fs::read(
        root().join("runtime/tests/fuzz-regressions/onnx_load/empty-conv-output.onnx"),
    )
    .expect("regression model");
    let mut m = std::ptr::null_mut();
    // SAFETY: valid buffer and slot
    let status =
        unsafe { skipseg_model_load_bytes(bytes.as_ptr(), bytes.len(), std::ptr::null(), &mut m) };
    assert_eq!(status, SkipsegStatus::Ok, "{}", last_error());
    let (w, h) = (16usize, 16usize);
    let pixels = test_image(w, h, 3);
    let mut out = vec![0.0f32; w * h];
    // SAFETY: live model, buffers of the stated sizes, default options
    let status = unsafe {
        skipseg_segment(
            m,
            pixels.as_ptr(),
            pixels.len(),
            SkipsegPixelType::U8 as i32,
            w,
            h,
            w,
            std::ptr::null(),
            out.as_mut_ptr(),
            out.len(),
        )
    };
    assert_eq!(status, SkipsegStatus::ErrInference, "{}", last_error());
    assert!(last_error().contains("engine failed"), "{}", last_error());
    // SAFETY: loaded above
    unsafe { skipseg_model_free(m) };
}
