//! The network's two changes of resolution, on `[channels, h, w]` planes: decimation
//! (every second row and column, from the first: what the exporter's `Slice` with steps 2
//! means) and nearest up-sampling by two (each pixel repeated into a 2x2 square: its
//! `Resize`), alone or summed with a map of its output's size (a long skip). One
//! definition for every engine that runs a skipseg graph (tract's plan and the embedded
//! executor), split by output rows over a pool's threads: tract's own operators run these
//! single-threaded, in two passes for the decimation, 10 % of the int8 model's time at 2
//! threads (docs/PERFORMANCE.md).

use rayon::prelude::*;

use super::conv::ConvError;
use super::qconv::CodeOutput;

/// The side of a decimated plane: `ceil(side / 2)`, as `Slice` with step 2 from 0.
pub fn decimated(side: usize) -> usize {
    side.div_ceil(2)
}

/// Output rows per task: several tasks per thread, none smaller than about 16 KiB of
/// output (a task's overhead is microseconds).
fn rows_per_task(rows: usize, row_len: usize, threads: usize) -> usize {
    let min_rows = (16 * 1024 / row_len.max(1)).max(1);
    rows.div_ceil(4 * threads).max(min_rows).max(1)
}

/// Write `output` row by row with `row(index, row)`, on `pool`'s threads if any.
fn for_each_row<T: Send>(
    output: &mut [T],
    row_len: usize,
    pool: Option<&rayon::ThreadPool>,
    row: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    if row_len == 0 {
        return;
    }
    let rows = output.len() / row_len;
    match pool {
        Some(pool) if pool.current_num_threads() > 1 => {
            let per = rows_per_task(rows, row_len, pool.current_num_threads());
            pool.install(|| {
                output
                    .par_chunks_mut(per * row_len)
                    .enumerate()
                    .for_each(|(t, chunk)| {
                        for (i, r) in chunk.chunks_mut(row_len).enumerate() {
                            row(t * per + i, r);
                        }
                    })
            });
        }
        _ => {
            for (i, r) in output.chunks_mut(row_len).enumerate() {
                row(i, r);
            }
        }
    }
}

fn check(what: &str, got: usize, want: usize) -> Result<(), ConvError> {
    if got == want {
        Ok(())
    } else {
        Err(ConvError::Shape(format!(
            "{what} of {got} values, expected {want}"
        )))
    }
}

/// `output[c, y, x] = input[c, 2y, 2x]`; `output` is `[channels, ceil(h/2), ceil(w/2)]`.
pub fn decimate_x2<T: Copy + Send + Sync>(
    input: &[T],
    channels: usize,
    h: usize,
    w: usize,
    output: &mut [T],
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), ConvError> {
    let (h2, w2) = (decimated(h), decimated(w));
    check("decimation input", input.len(), channels * h * w)?;
    check("decimation output", output.len(), channels * h2 * w2)?;
    for_each_row(output, w2, pool, &|r, dst| {
        let (c, y) = (r / h2, r % h2);
        let src = &input[(c * h + 2 * y) * w..][..w];
        for (d, s) in dst.iter_mut().zip(src.iter().step_by(2)) {
            *d = *s;
        }
    });
    Ok(())
}

/// `output[c, y, x] = input[c, y / 2, x / 2]`; `output` is `[channels, 2h, 2w]`.
pub fn upsample_x2<T: Copy + Send + Sync>(
    input: &[T],
    channels: usize,
    h: usize,
    w: usize,
    output: &mut [T],
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), ConvError> {
    check("up-sampling input", input.len(), channels * h * w)?;
    check("up-sampling output", output.len(), channels * 4 * h * w)?;
    for_each_row(output, 2 * w, pool, &|r, dst| {
        let (c, y) = (r / (2 * h), r % (2 * h) / 2);
        let src = &input[(c * h + y) * w..][..w];
        for (d, s) in dst.chunks_exact_mut(2).zip(src) {
            d[0] = *s;
            d[1] = *s;
        }
    });
    Ok(())
}

/// `output[c, y, x] = input[c, y / 2, x / 2] + added[c, y, x]`; `added` and `output` are
/// `[channels, 2h, 2w]`: a decoder's up-sampled map summed with a long skip in one pass,
/// without writing the up-sampled map (the sum is the `Add` it replaces, to the bit:
/// one float addition, commutative).
pub fn upsample_x2_add(
    input: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    added: &[f32],
    output: &mut [f32],
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), ConvError> {
    check("up-sampling input", input.len(), channels * h * w)?;
    check("added map", added.len(), channels * 4 * h * w)?;
    check("up-sampling output", output.len(), channels * 4 * h * w)?;
    for_each_row(output, 2 * w, pool, &|r, dst| {
        let (c, y) = (r / (2 * h), r % (2 * h) / 2);
        let src = &input[(c * h + y) * w..][..w];
        let add = &added[r * 2 * w..][..2 * w];
        for ((d, a), s) in dst.chunks_exact_mut(2).zip(add.chunks_exact(2)).zip(src) {
            d[0] = *s + a[0];
            d[1] = *s + a[1];
        }
    });
    Ok(())
}

/// [`upsample_x2_add`] written as the `u8` codes of the convolution that reads the sum:
/// its pre-activation and quantization applied to each summed value (`code`), the same
/// float operations that convolution applies when it reads the float sum, so the codes
/// are those it would quantize (bit for bit). A quarter of the bytes to write and read.
#[allow(clippy::too_many_arguments)]
pub fn upsample_x2_add_codes(
    input: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    added: &[f32],
    code: &CodeOutput,
    output: &mut [u8],
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), ConvError> {
    check("up-sampling input", input.len(), channels * h * w)?;
    check("added map", added.len(), channels * 4 * h * w)?;
    check("up-sampling output", output.len(), channels * 4 * h * w)?;
    if code.pre.scale.as_ref().is_some_and(|s| s.len() < channels)
        || code.pre.shift.as_ref().is_some_and(|s| s.len() < channels)
    {
        return Err(ConvError::Shape(format!(
            "the code output's pre-activation has fewer than {channels} channels"
        )));
    }
    for_each_row(output, 2 * w, pool, &|r, dst| {
        let (c, y) = (r / (2 * h), r % (2 * h) / 2);
        pulp::Arch::new().dispatch(SumCodes {
            code,
            channel: c,
            src: &input[(c * h + y) * w..][..w],
            add: &added[r * 2 * w..][..2 * w],
            dst,
        })
    });
    Ok(())
}

/// One output row of [`upsample_x2_add_codes`], compiled for the CPU's features (the
/// rounding of a plain loop is a `rintf` call per value).
struct SumCodes<'a> {
    code: &'a CodeOutput,
    channel: usize,
    src: &'a [f32],
    add: &'a [f32],
    dst: &'a mut [u8],
}

impl pulp::WithSimd for SumCodes<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        const CHUNK: usize = 64;
        let mut sums = [0.0f32; CHUNK];
        for ((dst, add), src) in self
            .dst
            .chunks_mut(CHUNK)
            .zip(self.add.chunks(CHUNK))
            .zip(self.src.chunks(CHUNK / 2))
        {
            let sums = &mut sums[..dst.len()];
            for ((d, a), s) in sums.chunks_exact_mut(2).zip(add.chunks_exact(2)).zip(src) {
                d[0] = *s + a[0];
                d[1] = *s + a[1];
            }
            self.code
                .pre
                .quantize_row(self.channel, self.code.quant, sums, dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("test setup")
    }

    proptest! {
        /// Against the definitions, index by index: any plane (odd sides, one row or
        /// column, no channel), 1 to 3 threads, floats and codes.
        #[test]
        fn resampling_follows_the_definitions(
            channels in 0usize..5, h in 1usize..40, w in 1usize..40, threads in 1usize..4,
        ) {
            let x: Vec<f32> = (0..channels * h * w).map(|i| i as f32).collect();
            let codes: Vec<u8> = x.iter().map(|&v| (v as usize % 251) as u8).collect();
            let p = pool(threads);
            let p = (threads > 1).then_some(&p);
            let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
            let mut down = vec![-1.0f32; channels * h2 * w2];
            decimate_x2(&x, channels, h, w, &mut down, p).expect("sizes fit");
            let mut down_codes = vec![0u8; channels * h2 * w2];
            decimate_x2(&codes, channels, h, w, &mut down_codes, p).expect("sizes fit");
            let mut up = vec![-1.0f32; channels * 4 * h * w];
            upsample_x2(&x, channels, h, w, &mut up, p).expect("sizes fit");
            let added: Vec<f32> = (0..channels * 4 * h * w).map(|i| 0.25 - i as f32 * 0.5).collect();
            let mut up_add = vec![-1.0f32; channels * 4 * h * w];
            upsample_x2_add(&x, channels, h, w, &added, &mut up_add, p).expect("sizes fit");
            for c in 0..channels {
                for y in 0..h2 {
                    for xx in 0..w2 {
                        let at = (c * h2 + y) * w2 + xx;
                        let from = (c * h + 2 * y) * w + 2 * xx;
                        prop_assert_eq!(down[at], x[from]);
                        prop_assert_eq!(down_codes[at], codes[from]);
                    }
                }
                for y in 0..2 * h {
                    for xx in 0..2 * w {
                        let at = (c * 2 * h + y) * 2 * w + xx;
                        let from = x[(c * h + y / 2) * w + xx / 2];
                        prop_assert_eq!(up[at], from);
                        prop_assert_eq!(up_add[at], from + added[at]);
                    }
                }
            }
        }

        /// The codes of the sum: each value the next convolution's pre-activation
        /// (`max(scale * v + shift, 0)`) and quantization of the sum, computed value by
        /// value here; rows longer than the kernel's 64-value chunks included.
        #[test]
        fn up_sampled_sums_as_codes_follow_the_definition(
            channels in 1usize..4, h in 1usize..12, w in 1usize..70, threads in 1usize..3,
            relu in any::<bool>(), seed in 0u64..100,
        ) {
            use crate::kernels::conv::{FakeQuant, InputTransform};
            let x = crate::kernels::test_values(channels * h * w, seed);
            let added = crate::kernels::test_values(channels * 4 * h * w, seed + 1);
            let (scale, shift) = (
                crate::kernels::test_values(channels, seed + 2).iter().map(|v| v + 1.5).collect::<Vec<_>>(),
                crate::kernels::test_values(channels, seed + 3),
            );
            let code = CodeOutput {
                pre: InputTransform { scale: Some(scale.clone()), shift: Some(shift.clone()), relu, fake_quant: None },
                quant: FakeQuant { scale: 3.0 / 255.0, zero: 120 },
            };
            let p = pool(threads);
            let p = (threads > 1).then_some(&p);
            let mut codes = vec![0u8; channels * 4 * h * w];
            upsample_x2_add_codes(&x, channels, h, w, &added, &code, &mut codes, p).expect("sizes fit");
            for c in 0..channels {
                for y in 0..2 * h {
                    for xx in 0..2 * w {
                        let at = (c * 2 * h + y) * 2 * w + xx;
                        let sum = x[(c * h + y / 2) * w + xx / 2] + added[at];
                        let pre = sum * scale[c] + shift[c];
                        let pre = if relu { pre.max(0.0) } else { pre };
                        // the scalar formula, and the ONNX definition (a division: one
                        // code apart at most, see FakeQuant)
                        prop_assert_eq!(codes[at], code.quant.quantize(pre), "channel {} ({}, {})", c, y, xx);
                        let onnx = ((pre / (3.0 / 255.0)).round_ties_even() + 120.0).clamp(0.0, 255.0) as u8;
                        prop_assert!((codes[at] as i32 - onnx as i32).abs() <= 1);
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let x = vec![0.0f32; 2 * 4 * 4];
        let mut small = vec![0.0f32; 7];
        assert!(decimate_x2(&x, 2, 4, 4, &mut small, None).is_err());
        assert!(decimate_x2(&x[1..], 2, 4, 4, &mut [0.0; 8], None).is_err());
        assert!(upsample_x2(&x, 2, 4, 4, &mut small, None).is_err());
        let mut out = vec![0.0f32; 2 * 8 * 8];
        assert!(upsample_x2_add(&x, 2, 4, 4, &x, &mut out, None).is_err());
        assert!(upsample_x2_add(&x, 2, 4, 4, &out.clone(), &mut small, None).is_err());
    }
}
