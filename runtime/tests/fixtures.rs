//! Parity 3: the golden fixtures written by `segment-train fixtures` (burn's outputs on
//! committed inputs). A runtime change that breaks parity fails here without burn.
//! Tolerance 1e-4 on probabilities, as in the parity suite.

use std::path::{Path, PathBuf};

use skipseg_runtime::{Segmenter, npy};

const TOLERANCE: f32 = 1e-4;

mod common;
use common::fixture_dirs;

fn sorted(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with(prefix) && n.ends_with(".npy")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn runtime_reproduces_golden_outputs() {
    let dirs = fixture_dirs();
    assert!(
        dirs.len() >= 3,
        "expected at least 3 fixture cases, found {}",
        dirs.len()
    );
    for dir in dirs {
        let seg = Segmenter::from_path(&dir.join("model.onnx")).expect("fixture model loads");
        let inputs = sorted(&dir, "input");
        let outputs = sorted(&dir, "output");
        assert_eq!(
            inputs.len(),
            outputs.len(),
            "{}: unpaired npy files",
            dir.display()
        );
        assert!(!inputs.is_empty());
        for (i, o) in inputs.iter().zip(&outputs) {
            let x = npy::read(i).expect("input npy");
            let want = npy::read(o).expect("output npy");
            let got = seg.run(x.view()).expect("runs").into_dyn();
            assert_eq!(got.shape(), want.shape());
            let d = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{}: max abs diff {d:e}", i.display());
            assert!(
                d <= TOLERANCE,
                "{}: max abs diff {d} > {TOLERANCE}",
                i.display()
            );
            // the outputs must not be trivially saturated, or the comparison proves little
            let spread = want.iter().filter(|v| **v > 0.02 && **v < 0.98).count();
            assert!(
                spread * 4 > want.len(),
                "{}: golden output is saturated",
                o.display()
            );
        }
    }
}

/// The GPU leg: burn-cuda's outputs of the same fixtures (`gpu-output{k}.npy`, written by
/// scripts/gpu-parity.sh on a machine with an NVIDIA GPU; fixtures/GPU.md records the GPU
/// and driver). Tolerance 1e-4 as for burn's CPU backend: cuda kernels sum in other
/// orders (and may use fused multiply-adds), ~1e-6 relative per layer. Without them the
/// test says so and checks nothing; with some but not all, it fails.
#[test]
fn runtime_reproduces_gpu_outputs_where_recorded() {
    let dirs = fixture_dirs();
    let mut found = 0;
    let mut expected = 0;
    for dir in &dirs {
        let seg = Segmenter::from_path(&dir.join("model.onnx")).expect("fixture model loads");
        for (k, input) in sorted(dir, "input").iter().enumerate() {
            expected += 1;
            let path = dir.join(format!("gpu-output{k}.npy"));
            if !path.exists() {
                continue;
            }
            found += 1;
            let want = npy::read(&path).expect("gpu output npy");
            let got = seg
                .run(npy::read(input).expect("input npy").view())
                .expect("runs")
                .into_dyn();
            assert_eq!(got.shape(), want.shape(), "{}", path.display());
            let d = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{}: max abs diff to the GPU {d:e}", path.display());
            assert!(d <= TOLERANCE, "{}: max abs diff {d}", path.display());
        }
    }
    if found == 0 {
        eprintln!(
            "NOTE: no GPU outputs in fixtures/ (scripts/gpu-parity.sh on a GPU machine): SKIPPED"
        );
    } else {
        assert_eq!(found, expected, "GPU outputs for some fixture inputs only");
    }
}

/// The GPU leg on the shipped model: burn-cuda's probabilities on whole ISBI slices
/// (`fixtures/shipped/gpu-sliceNN.npy`, written by scripts/gpu-parity.sh; `model.txt`
/// names the model and the CRC-32 of its bytes). The runtime on the same slice, one
/// window, no averaging: the float model within 1e-4 (as above); the int8 model keeps
/// at least 99.5 % of the 0.5 decisions with a mean absolute difference of at most 0.01
/// (the bar of the quantization ladder, tests/quantization.rs: int8 is an approximation,
/// not a reordering). Without them the test says so and checks nothing.
#[test]
fn runtime_reproduces_gpu_shipped_model_outputs_where_recorded() {
    let dir = common::root().join("fixtures/shipped");
    let outputs = if dir.exists() {
        sorted(&dir, "gpu-slice")
    } else {
        Vec::new()
    };
    if outputs.is_empty() {
        eprintln!(
            "NOTE: no GPU outputs of the shipped model in fixtures/shipped \
             (scripts/gpu-parity.sh on a GPU machine): SKIPPED"
        );
        return;
    }
    let record =
        std::fs::read_to_string(dir.join("model.txt")).expect("fixtures/shipped/model.txt");
    let mut fields = record.split_whitespace();
    let (model, crc) = match (fields.next(), fields.next(), fields.next()) {
        (Some(m), Some("crc32"), Some(c)) => (common::root().join(m), c.to_string()),
        _ => panic!("fixtures/shipped/model.txt: expected `PATH crc32 HEX`, got {record:?}"),
    };
    let bytes = std::fs::read(&model).expect("the recorded model");
    assert_eq!(
        format!("{:08x}", common::crc32(&bytes)),
        crc,
        "{}: not the model the GPU outputs were computed with: run scripts/gpu-parity.sh again",
        model.display()
    );
    let float = Segmenter::from_bytes(&bytes, &model.display().to_string()).expect("loads");
    let int8_path = model.with_file_name(format!(
        "{}-int8.onnx",
        model
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name")
    ));
    let int8 = Segmenter::from_path(&int8_path).expect("the int8 model beside it");
    let stack =
        skipseg_runtime::io::read_slices(&common::root().join("data/isbi2012/train/images"))
            .expect("ISBI training slices");
    for path in outputs {
        let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
        let k: usize = name
            .trim_start_matches("gpu-slice")
            .trim_end_matches(".npy")
            .parse()
            .expect("gpu-sliceNN.npy");
        let want = npy::read(&path).expect("gpu output npy");
        let input = float
            .meta()
            .preprocessing
            .network_input(stack[k].pixels.view());
        let got = float.run(input.view().into_dyn()).expect("runs").into_dyn();
        assert_eq!(got.shape(), want.shape(), "{}", path.display());
        let d = common::max_abs(got.iter(), want.iter());
        eprintln!("{name}: fp32 max abs diff to the GPU {d:e}");
        assert!(d <= TOLERANCE, "{}: max abs diff {d}", path.display());
        let q = int8.run(input.view().into_dyn()).expect("runs");
        let n = want.len() as f64;
        let agree = q
            .iter()
            .zip(want.iter())
            .filter(|(a, b)| (**a > 0.5) == (**b > 0.5))
            .count() as f64
            / n;
        let mean = q
            .iter()
            .zip(want.iter())
            .map(|(a, b)| f64::from((a - b).abs()))
            .sum::<f64>()
            / n;
        eprintln!(
            "{name}: int8 ({}) vs GPU: {:.3} % of decisions agree, mean abs {mean:.4}",
            skipseg_runtime::kernels::qconv::QuantKernel::detect().name(),
            100.0 * agree
        );
        assert!(agree >= 0.995 && mean <= 0.01, "{}", path.display());
    }
}

/// The plan cache is bounded: whole images of many sizes evict the least recently used
/// plan, and a size compiled again still reproduces the golden output.
#[test]
fn plan_cache_is_bounded_and_recompiles_evicted_sizes() {
    use skipseg_runtime::engine::MAX_CACHED_PLANS;
    let dir = &fixture_dirs()[0];
    let seg = Segmenter::from_path(&dir.join("model.onnx")).expect("fixture model loads");
    let x = npy::read(&sorted(dir, "input")[0]).expect("input npy");
    let want = npy::read(&sorted(dir, "output")[0]).expect("output npy");
    let first = seg.run(x.view()).expect("runs");
    let size = (x.shape()[2], x.shape()[3]);
    assert_eq!(seg.cached_plan_sizes(), vec![size]);
    let factor = seg.meta().arch.down_factor();
    let others: Vec<(usize, usize)> = (1..=MAX_CACHED_PLANS)
        .map(|k| (factor * k, factor * (k + 1)))
        .filter(|s| *s != size)
        .take(MAX_CACHED_PLANS)
        .collect();
    for &(h, w) in &others {
        let z = ndarray::ArrayD::<f32>::zeros(vec![1, x.shape()[1], h, w]);
        assert_eq!(seg.run(z.view()).expect("runs").dim(), (1, 1, h, w));
    }
    let cached = seg.cached_plan_sizes();
    assert_eq!(cached.len(), MAX_CACHED_PLANS);
    assert!(
        !cached.contains(&size),
        "the least recently used size stays: {cached:?}"
    );
    assert_eq!(cached[0], *others.last().expect("sizes"));
    let again = seg.run(x.view()).expect("runs");
    assert_eq!(seg.cached_plan_sizes()[0], size);
    assert_eq!(again, first, "a recompiled plan computes the same");
    let d = again
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(d <= TOLERANCE, "max abs diff {d}");
}
