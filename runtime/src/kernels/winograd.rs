//! Winograd F(2x2, 3x3) for the wide 3x3 convolutions of [`super::conv::DirectConv`]:
//! each 2x2 block of outputs comes from a 4x4 patch of input through 16 products per
//! (input, output) channel pair instead of 36, 2.25x fewer multiplications (Lavin and
//! Gray 2016). With `d` a 4x4 input patch and `g` a 3x3 kernel:
//!
//! ```text
//! V = B^T d B,  U = G g G^T,  M = sum over input channels of U * V (element-wise),
//! Y = A^T M A (2x2)
//! B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//! A^T = [1 1 1 0; 0 1 -1 -1]
//! ```
//!
//! The sum over input channels is 16 matrix products (one per position of the 4x4
//! transform), computed by the same register tile as the 1x1 convolution, over blocks
//! of tiles sized for L2. The pre-activation is applied as patches are read, bias,
//! residual and ReLU as outputs are written, as in the direct kernel.

use ndarray::ArrayViewMut2;
use pulp::{Simd, WithSimd};

use super::conv::{
    Activation, InputTransform, OC_BLOCK, PixelAt, Source, residual_strip, store, strip_acc,
};

/// Floats of transformed input (and of products) a block of tiles keeps.
const BLOCK_FLOATS: usize = 64 * 1024;

/// An upper bound of the floats one task of [`WinogradRun`] allocates (its transformed
/// input and output blocks and row scratch, `tb` tiles wide), for
/// [`super::conv::DirectConv::scratch_bytes`].
pub(crate) fn task_floats_bound(cin: usize, cout: usize) -> usize {
    // tb = ((BLOCK_FLOATS / (16 max(cin, cout))) / strip * strip).clamp(strip, 256), strip
    // at most 64
    let tb = (BLOCK_FLOATS / (16 * cin.max(cout).max(1))).clamp(64, 256);
    16 * tb * (cin + cout) + 36 * tb + 4
}

/// `U = G g G^T` for every (output, input) channel pair, packed per position for the
/// register tile: `[16][cout blocks][cin][OC_BLOCK]`, zero beyond `cout`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WinogradWeights {
    cin: usize,
    cout: usize,
    packed: Vec<f32>,
}

impl WinogradWeights {
    /// `weights` in ONNX order `[cout, cin, 3, 3]`.
    pub(crate) fn new(weights: &[f32], cin: usize, cout: usize) -> Self {
        let blocks = cout.div_ceil(OC_BLOCK);
        let mut packed = vec![0.0; 16 * blocks * cin * OC_BLOCK];
        for oc in 0..cout {
            for ic in 0..cin {
                let g = &weights[(oc * cin + ic) * 9..][..9];
                // G g: 4 rows of 3
                let mut gg = [[0.0f32; 3]; 4];
                for c in 0..3 {
                    let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
                    gg[0][c] = a;
                    gg[1][c] = 0.5 * (a + b + d);
                    gg[2][c] = 0.5 * (a - b + d);
                    gg[3][c] = d;
                }
                // (G g) G^T: 4 x 4
                for (i, row) in gg.iter().enumerate() {
                    let [a, b, d] = *row;
                    let u = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                    for (k, v) in u.into_iter().enumerate() {
                        let pos = i * 4 + k;
                        let (blk, o) = (oc / OC_BLOCK, oc % OC_BLOCK);
                        packed[((pos * blocks + blk) * cin + ic) * OC_BLOCK + o] = v;
                    }
                }
            }
        }
        Self { cin, cout, packed }
    }
}

/// One run of output rows `[start / w, start / w + out.ncols() / w)` (the first one
/// even) of every output channel.
pub(crate) struct WinogradRun<'a, 'o> {
    pub weights: &'a WinogradWeights,
    pub pre: &'a InputTransform,
    /// Padded to whole blocks.
    pub bias: &'a [f32],
    pub post: Activation,
    pub input: &'a [f32],
    pub residual: Source<'a>,
    pub h: usize,
    pub w: usize,
    pub start: usize,
    pub out: ArrayViewMut2<'o, f32>,
}

impl WithSimd for WinogradRun<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        if S::F32_LANES >= 16 {
            self.go::<S, 8, 2>(simd)
        } else {
            self.go::<S, 4, 2>(simd)
        }
    }
}

impl WinogradRun<'_, '_> {
    #[inline(always)]
    fn go<S: Simd, const OB: usize, const NV: usize>(mut self, simd: S) {
        let (cin, cout) = (self.weights.cin, self.weights.cout);
        let blocks = cout.div_ceil(OC_BLOCK);
        let (h, w) = (self.h, self.w);
        let plane = h * w;
        let strip = NV * S::F32_LANES;
        let y0 = self.start / w;
        let rows = self.out.ncols() / w;
        let mut out_rows = super::conv::row_slices(&mut self.out);
        let tiles_x = w.div_ceil(2);
        let tiles = rows.div_ceil(2) * tiles_x;
        let tb = ((BLOCK_FLOATS / (16 * cin.max(cout))) / strip * strip)
            .clamp(strip, 256)
            .min(tiles.div_ceil(strip) * strip);
        let mut v = vec![0.0f32; 16 * cin * tb];
        let mut m = vec![0.0f32; 16 * cout * tb];
        let zeros = [0.0f32; OC_BLOCK];
        // scratch: one padded input row segment, its even and odd columns, the row
        // transforms of the 4 input rows of a patch row, output rows, residual strip
        let mut padded = vec![0.0f32; 2 * tb + 2];
        let (mut even, mut odd) = (vec![0.0f32; tb + 1], vec![0.0f32; tb + 1]);
        let mut r = vec![0.0f32; 16 * tb];
        let mut s = vec![0.0f32; 8 * tb];
        let (mut row0, mut row1) = (vec![0.0f32; 2 * tb], vec![0.0f32; 2 * tb]);
        let mut rtile = vec![0.0f32; 2 * tb];
        let mut ye = vec![0.0f32; 2 * tb];
        let mut t0 = 0;
        while t0 < tiles {
            let nb = tb.min(tiles - t0);
            // segments of this block: (tile row, first tile column, count, block column)
            let mut segments = Vec::new();
            let mut t = t0;
            while t < t0 + nb {
                let (ty, tx) = (t / tiles_x, t % tiles_x);
                let n = (tiles_x - tx).min(t0 + nb - t);
                segments.push((ty, tx, n, t - t0));
                t += n;
            }
            // 1. V = B^T d B for every tile of the block and input channel
            for ic in 0..cin {
                for &(ty, tx, n, c0) in &segments {
                    for pr in 0..4 {
                        let iy = (y0 + 2 * ty + pr) as isize - 1;
                        // padded[p] holds input column 2 tx - 1 + p
                        let seg = &mut padded[..2 * n + 2];
                        if iy < 0 || iy >= h as isize {
                            seg.fill(0.0);
                        } else {
                            let row = &self.input[ic * plane + iy as usize * w..][..w];
                            let first_col = 2 * tx as isize - 1;
                            let lo = first_col.max(0) as usize;
                            let hi = ((first_col + 2 * n as isize + 2) as usize).min(w);
                            let skip = (lo as isize - first_col) as usize;
                            seg[..skip].fill(0.0);
                            self.pre
                                .apply_row(ic, &row[lo..hi], &mut seg[skip..skip + hi - lo]);
                            seg[skip + hi - lo..].fill(0.0);
                        }
                        for ((e, o), pair) in even[..=n]
                            .iter_mut()
                            .zip(&mut odd[..=n])
                            .zip(padded[..2 * n + 2].chunks_exact(2))
                        {
                            *e = pair[0];
                            *o = pair[1];
                        }
                        let rr = &mut r[pr * 4 * tb..(pr + 1) * 4 * tb];
                        let (r0, rest) = rr.split_at_mut(tb);
                        let (r1, rest) = rest.split_at_mut(tb);
                        let (r2, r3) = rest.split_at_mut(tb);
                        for k in 0..n {
                            let (e0, o0, e1, o1) = (even[k], odd[k], even[k + 1], odd[k + 1]);
                            r0[k] = e0 - e1;
                            r1[k] = o0 + e1;
                            r2[k] = e1 - o0;
                            r3[k] = o0 - o1;
                        }
                    }
                    for k in 0..4 {
                        let row = |pr: usize| &r[(pr * 4 + k) * tb..][..n];
                        let (a0, a1, a2, a3) = (row(0), row(1), row(2), row(3));
                        for (i, dst) in [0usize, 1, 2, 3].into_iter().map(|i| (i, i * 4 + k)) {
                            let out = &mut v[(dst * cin + ic) * tb + c0..][..n];
                            match i {
                                0 => out
                                    .iter_mut()
                                    .zip(a0.iter().zip(a2))
                                    .for_each(|(o, (x, y))| *o = x - y),
                                1 => out
                                    .iter_mut()
                                    .zip(a1.iter().zip(a2))
                                    .for_each(|(o, (x, y))| *o = x + y),
                                2 => out
                                    .iter_mut()
                                    .zip(a2.iter().zip(a1))
                                    .for_each(|(o, (x, y))| *o = x - y),
                                _ => out
                                    .iter_mut()
                                    .zip(a1.iter().zip(a3))
                                    .for_each(|(o, (x, y))| *o = x - y),
                            }
                        }
                    }
                }
            }
            // 2. M = U V, position by position, on the register tile
            for pos in 0..16 {
                let panel = &v[pos * cin * tb..(pos + 1) * cin * tb];
                for b in 0..blocks {
                    let wb = &self.weights.packed[((pos * blocks + b) * cin) * OC_BLOCK..]
                        [..cin * OC_BLOCK];
                    for off in (0..OC_BLOCK).step_by(OB) {
                        let oc0 = b * OC_BLOCK + off;
                        if oc0 >= cout {
                            break;
                        }
                        let mut x0 = 0;
                        while x0 < nb {
                            let acc = strip_acc::<S, OB, NV>(
                                simd,
                                1,
                                panel,
                                tb,
                                x0,
                                wb,
                                OC_BLOCK,
                                off,
                                &zeros[..OB],
                            );
                            for (o, acc_o) in acc.iter().enumerate() {
                                let oc = oc0 + o;
                                if oc >= cout {
                                    break;
                                }
                                let dst = &mut m[(pos * cout + oc) * tb + x0..][..strip];
                                let (dv, _) = S::as_mut_simd_f32s(dst);
                                dv[..NV].copy_from_slice(acc_o);
                            }
                            x0 += strip;
                        }
                    }
                }
            }
            // 3. Y = A^T M A, bias, residual, activation
            for oc in 0..cout {
                let bias = self.bias[oc];
                for &(ty, tx, n, c0) in &segments {
                    let mm = |pos: usize| &m[(pos * cout + oc) * tb + c0..][..n];
                    // s[i][k] = (A^T M)[i][k]
                    for k in 0..4 {
                        let (m0, m1, m2, m3) = (mm(k), mm(4 + k), mm(8 + k), mm(12 + k));
                        let (s0, s1) = s.split_at_mut(4 * tb);
                        let s0 = &mut s0[k * tb..][..n];
                        let s1 = &mut s1[k * tb..][..n];
                        for t in 0..n {
                            s0[t] = m0[t] + m1[t] + m2[t];
                            s1[t] = m1[t] - m2[t] - m3[t];
                        }
                    }
                    for (i, out_row) in [&mut row0, &mut row1].into_iter().enumerate() {
                        let base = i * 4 * tb;
                        let sk = |k: usize| &s[base + k * tb..][..n];
                        let (a, b, c, d) = (sk(0), sk(1), sk(2), sk(3));
                        let (y0, y1) = ye.split_at_mut(tb);
                        for t in 0..n {
                            y0[t] = a[t] + b[t] + c[t] + bias;
                            y1[t] = b[t] - c[t] - d[t] + bias;
                        }
                        for ((pair, &p), &q) in out_row[..2 * n]
                            .chunks_exact_mut(2)
                            .zip(&y0[..n])
                            .zip(&y1[..n])
                        {
                            pair[0] = p;
                            pair[1] = q;
                        }
                    }
                    let x = 2 * tx;
                    let cols = (2 * n).min(w - x);
                    for (i, vals) in [&mut row0, &mut row1].into_iter().enumerate() {
                        let local_row = 2 * ty + i;
                        if local_row >= rows {
                            continue;
                        }
                        let local = local_row * w + x;
                        let dst = &mut out_rows[oc][local..local + cols];
                        let vals = &mut vals[..cols];
                        if let Some(res) = residual_strip(
                            self.residual,
                            oc,
                            plane,
                            PixelAt::new(self.start + local, w),
                            dst,
                            &mut rtile,
                        ) {
                            for (v, r) in vals.iter_mut().zip(res) {
                                *v += r;
                            }
                        }
                        store(vals, None, self.post == Activation::Relu, dst);
                    }
                }
            }
            t0 += nb;
        }
    }
}
