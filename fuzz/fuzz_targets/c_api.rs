//! The C entry points with arbitrary sizes, strides, pixel types and options over a
//! buffer of the stated length, on a small fixture model; the first byte also sends
//! some inputs to `skipseg_model_load_bytes`. Every call must return a status.
#![no_main]
#![allow(unsafe_code)]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skipseg_runtime::ffi::*;

struct Model(*mut SkipsegModel);
// SAFETY: the C interface documents a model as usable from several threads
unsafe impl Sync for Model {}
unsafe impl Send for Model {}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let bytes = include_bytes!("../../fixtures/basic-no-short-skips-no-bn/model.onnx");
        let mut m = std::ptr::null_mut();
        // SAFETY: valid buffer and slot
        let status =
            unsafe { skipseg_model_load_bytes(bytes.as_ptr(), bytes.len(), std::ptr::null(), &mut m) };
        assert_eq!(status, SkipsegStatus::Ok);
        Model(m)
    })
}

#[path = "panic_policy.rs"]
mod panic_policy;

fuzz_target!(init: panic_policy::install(), |data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (head, pixels) = data.split_at(10);
    if head[0] == 0xff {
        let mut m = std::ptr::null_mut();
        // SAFETY: valid buffer and slot
        let status =
            unsafe { skipseg_model_load_bytes(pixels.as_ptr(), pixels.len(), std::ptr::null(), &mut m) };
        if status == SkipsegStatus::Ok {
            // SAFETY: loaded just now
            unsafe { skipseg_model_free(m) };
        }
        return;
    }
    let pixel_type = i32::from(head[0] % 4); // 3 is invalid on purpose
    let (w, h) = (usize::from(head[1] % 80), usize::from(head[2] % 80));
    let stride = w * [1, 2, 4, 1][usize::from(head[0] % 4)] + usize::from(head[3] % 8);
    let options = SkipsegOptions {
        tile: u32::from(head[4] % 96),
        halo: i32::from(head[5] % 40),
        averaging: i32::from(head[6] as i8 % 4),
        blend: i32::from(head[7] as i8 % 3),
        threads: u32::from(head[8] % 3),
    };
    let out_len = (w * h).saturating_add_signed(isize::from(head[9] as i8 % 4));
    let mut out = vec![0.0f32; out_len];
    let m = model().0;
    // SAFETY: `pixels` has `pixels.len()` bytes, `out` has `out_len` floats
    let status = unsafe {
        skipseg_segment(
            m,
            pixels.as_ptr(),
            pixels.len(),
            pixel_type,
            w,
            h,
            stride,
            &options,
            out.as_mut_ptr(),
            out_len,
        )
    };
    if status == SkipsegStatus::Ok {
        assert!(out[..w * h].iter().all(|v| v.is_finite()), "non-finite probability");
    }
});
