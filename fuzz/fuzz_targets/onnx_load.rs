//! The ONNX loading path as `segment-run` takes it: decode, validate, fold batch norms,
//! fuse convolutions, compile with tract, and run one small window. Any outcome but a
//! panic (or a sanitizer report) is fine: errors are the expected answer to garbage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skipseg_runtime::Segmenter;

#[path = "panic_policy.rs"]
mod panic_policy;

fuzz_target!(init: panic_policy::install(), |data: &[u8]| {
    let Ok(seg) = Segmenter::from_bytes(data, "fuzz.onnx") else {
        return;
    };
    let arch = &seg.meta().arch;
    let factor = arch.down_factor();
    if arch.in_channels > 8 || factor > 16 || factor == 0 {
        return; // valid but too large to run at fuzzing speed
    }
    let side = factor.max(4);
    let input = ndarray::ArrayD::<f32>::from_elem(vec![1, arch.in_channels, side, side], 0.25);
    let _ = seg.run(input.view());
});
