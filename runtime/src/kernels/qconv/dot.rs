//! The integer micro-kernels: sums of `u8` codes times `i8` weights, four input channels
//! per dot product, for one strip of [`STRIP`] pixels and one block of [`OC_BLOCK`]
//! output channels. Everything around them (the panel, requantization, the epilogue) is
//! [`integer_run`], expanded into each kernel's function so that it is compiled for the
//! same CPU features.
//!
//! - x86-64, AVX512-VNNI: `vpdpbusd` multiplies `u8` by `i8` (the codes as they are),
//!   16 pixels x 4 channels per instruction.
//! - aarch64, dot-product extension: `SDOT` (by element) multiplies `i8` by `i8`, 4
//!   pixels x 4 channels per instruction; the codes are shifted to `code - 128` (one
//!   `eor` per 16 bytes) and [`integer_run`] corrects with `offset = 128`. Written as inline
//!   assembly: Rust's `vdotq_laneq_s32` is not stable yet.
//!
//! This file holds the kernels' `unsafe`: calling functions compiled for CPU features
//! that are checked at run time right here, and the `SDOT` instruction itself.

#![allow(unsafe_code)]

// what `integer_run!` expands to uses
use super::super::conv::{Activation, PixelAt, residual_strip, store};
use super::{
    Dst, InputTransform, OC_BLOCK, QRun, QuantInput, QuantKernel, STRIP, Src, Strip, Sums,
    panel_bytes,
};

/// Run `run` with `kernel`, if this CPU has it (the caller has checked; a kernel the CPU
/// lacks does nothing).
pub(super) fn run_strips(kernel: QuantKernel, run: QRun<'_, '_>) {
    if kernel != QuantKernel::detect() {
        return;
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `run_vnni` is sound on any CPU with the features it enables, and
        // `detect` has just found avx512f, avx512bw and avx512vnni on this one.
        QuantKernel::Avx512Vnni => unsafe { run_vnni(run) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `run_sdot` is sound on any CPU with the features it enables, and
        // `detect` has just found the dot-product extension on this one (NEON is part of
        // every aarch64 CPU Rust targets).
        QuantKernel::NeonDot => unsafe { run_sdot(run) },
        _ => {}
    }
}

integer_run!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn run_vnni,
    offset = 0,
    strip = vnni_strip
);

/// One strip with `vpdpbusd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn vnni_strip(s: &Strip<'_>, sums: &mut Sums) {
    {
        use std::arch::x86_64::*;
        let kernel = s.kernel;
        let kk = kernel * kernel;
        let mut acc = [[_mm512_setzero_si512(); 2]; OC_BLOCK];
        if kernel == 1 {
            // 1x1: one panel row per group, no taps (the loop below, with its tap loops and
            // their index arithmetic per group, ran 1x1 layers at 40 % of 3x3's rate)
            for (row, wk) in s
                .panel
                .chunks_exact(s.pw)
                .zip(s.weights.chunks_exact(OC_BLOCK))
            {
                let row = &row[s.x0..s.x0 + STRIP];
                let a0: __m512i = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&row[..16]));
                let a1: __m512i = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&row[16..]));
                for o in 0..OC_BLOCK {
                    let wv = _mm512_set1_epi32(wk[o]);
                    acc[o][0] = _mm512_dpbusd_epi32(acc[o][0], a0, wv);
                    acc[o][1] = _mm512_dpbusd_epi32(acc[o][1], a1, wv);
                }
            }
            for (sum, acc) in sums.iter_mut().zip(&acc) {
                *sum = bytemuck::cast(*acc);
            }
            return;
        }
        for (g, wg) in s.weights.chunks_exact(kk * OC_BLOCK).enumerate() {
            for ky in 0..kernel {
                let row =
                    &s.panel[(g * kernel + s.slots[ky]) * s.pw + s.x0..][..STRIP + kernel - 1];
                for kx in 0..kernel {
                    let a0: __m512i =
                        bytemuck::pod_read_unaligned(bytemuck::cast_slice(&row[kx..kx + 16]));
                    let a1: __m512i =
                        bytemuck::pod_read_unaligned(bytemuck::cast_slice(&row[kx + 16..kx + 32]));
                    let wk: &[i32; OC_BLOCK] = wg[(ky * kernel + kx) * OC_BLOCK..][..OC_BLOCK]
                        .try_into()
                        .expect("a block of weights");
                    for o in 0..OC_BLOCK {
                        let wv = _mm512_set1_epi32(wk[o]);
                        acc[o][0] = _mm512_dpbusd_epi32(acc[o][0], a0, wv);
                        acc[o][1] = _mm512_dpbusd_epi32(acc[o][1], a1, wv);
                    }
                }
            }
        }
        for (sum, acc) in sums.iter_mut().zip(&acc) {
            *sum = bytemuck::cast(*acc);
        }
    }
}

/// Pixels per NEON sub-strip: two vectors of four `i32`, times eight output channels,
/// are 16 accumulators of the 32 vector registers.
#[cfg(target_arch = "aarch64")]
const SUB: usize = 8;

/// `acc += a (16 x i8) . lane `$lane` of w (4 x i8), per 32-bit lane`.
#[cfg(target_arch = "aarch64")]
macro_rules! sdot {
    ($acc:expr, $a:expr, $w:expr, $lane:literal) => {
        // SAFETY: one SDOT on three vector registers; no memory, stack or flags. The
        // function that expands it enables "dotprod".
        unsafe {
            std::arch::asm!(
                concat!("sdot {acc:v}.4s, {a:v}.16b, {w:v}.4b[", $lane, "]"),
                acc = inout(vreg) $acc,
                a = in(vreg) $a,
                w = in(vreg) $w,
                options(pure, nomem, nostack, preserves_flags)
            )
        }
    };
}

integer_run!(
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon,dotprod")]
    fn run_sdot,
    offset = 128,
    strip = sdot_strip
);

/// One strip with `SDOT`.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn sdot_strip(s: &Strip<'_>, sums: &mut Sums) {
    {
        use std::arch::aarch64::*;
        let kernel = s.kernel;
        let kk = kernel * kernel;
        let flip = vdupq_n_u8(0x80);
        let signed = |pixels: &[u32]| -> int8x16_t {
            let codes: uint8x16_t = bytemuck::pod_read_unaligned(bytemuck::cast_slice(pixels));
            vreinterpretq_s8_u8(veorq_u8(codes, flip))
        };
        for sub in 0..STRIP / SUB {
            let mut acc = [[vdupq_n_s32(0); 2]; OC_BLOCK];
            for (g, wg) in s.weights.chunks_exact(kk * OC_BLOCK).enumerate() {
                for ky in 0..kernel {
                    let row = &s.panel[(g * kernel + s.slots[ky]) * s.pw + s.x0 + sub * SUB..]
                        [..SUB + kernel - 1];
                    for kx in 0..kernel {
                        let a0 = signed(&row[kx..kx + 4]);
                        let a1 = signed(&row[kx + 4..kx + 8]);
                        let wk = &wg[(ky * kernel + kx) * OC_BLOCK..][..OC_BLOCK];
                        let w0: int8x16_t =
                            bytemuck::pod_read_unaligned(bytemuck::cast_slice(&wk[..4]));
                        let w1: int8x16_t =
                            bytemuck::pod_read_unaligned(bytemuck::cast_slice(&wk[4..]));
                        sdot!(acc[0][0], a0, w0, 0);
                        sdot!(acc[0][1], a1, w0, 0);
                        sdot!(acc[1][0], a0, w0, 1);
                        sdot!(acc[1][1], a1, w0, 1);
                        sdot!(acc[2][0], a0, w0, 2);
                        sdot!(acc[2][1], a1, w0, 2);
                        sdot!(acc[3][0], a0, w0, 3);
                        sdot!(acc[3][1], a1, w0, 3);
                        sdot!(acc[4][0], a0, w1, 0);
                        sdot!(acc[4][1], a1, w1, 0);
                        sdot!(acc[5][0], a0, w1, 1);
                        sdot!(acc[5][1], a1, w1, 1);
                        sdot!(acc[6][0], a0, w1, 2);
                        sdot!(acc[6][1], a1, w1, 2);
                        sdot!(acc[7][0], a0, w1, 3);
                        sdot!(acc[7][1], a1, w1, 3);
                    }
                }
            }
            for (sum, acc) in sums.iter_mut().zip(&acc) {
                let lanes: [i32; SUB] = bytemuck::cast(*acc);
                sum[sub * SUB..][..SUB].copy_from_slice(&lanes);
            }
        }
    }
}
