//! On-the-fly augmentation as pure functions: one random geometric warp (flips, rotation
//! by any angle, shear, elastic deformation by a smooth spline displacement field on a
//! coarse grid, as U-Net) applied identically to an image and its label.
//!
//! A [`Warp`] maps every output pixel to a source coordinate; images are sampled
//! bilinearly with reflect padding, labels the same way and then re-binarised.

use ndarray::Array2;
use rand::Rng;

/// Augmentation strengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentConfig {
    /// Random horizontal and vertical flips.
    pub flips: bool,
    /// Rotation angle drawn uniformly in [-max, max] degrees (180 = any angle).
    pub max_rotation_deg: f32,
    /// Horizontal shear factor drawn uniformly in [-max, max].
    pub max_shear: f32,
    /// Standard deviation (pixels) of the displacement at each control point.
    pub elastic_sigma: f32,
    /// Control points per side of the coarse elastic grid.
    pub elastic_grid: usize,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        // U-Net: 3x3 grid, 10 px standard deviation
        Self {
            flips: true,
            max_rotation_deg: 180.0,
            max_shear: 0.2,
            elastic_sigma: 10.0,
            elastic_grid: 3,
        }
    }
}

/// A geometric transform from output pixels to source coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Warp {
    pub height: usize,
    pub width: usize,
    pub flip_x: bool,
    pub flip_y: bool,
    /// Inverse of the rotation-shear matrix, row-major [[a, b], [c, d]] acting on (y, x).
    pub inverse: [[f32; 2]; 2],
    /// Elastic displacement (dy, dx) at the control points, `[grid, grid]`.
    pub control: Array2<(f32, f32)>,
}

impl Warp {
    /// The identity transform.
    pub fn identity(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            flip_x: false,
            flip_y: false,
            inverse: [[1.0, 0.0], [0.0, 1.0]],
            control: Array2::from_elem((2, 2), (0.0, 0.0)),
        }
    }

    /// Draw a random warp.
    pub fn random<R: Rng>(rng: &mut R, cfg: &AugmentConfig, height: usize, width: usize) -> Self {
        let flip_x = cfg.flips && rng.random_bool(0.5);
        let flip_y = cfg.flips && rng.random_bool(0.5);
        let angle = if cfg.max_rotation_deg > 0.0 {
            rng.random_range(-cfg.max_rotation_deg..=cfg.max_rotation_deg)
                .to_radians()
        } else {
            0.0
        };
        let shear = if cfg.max_shear > 0.0 {
            rng.random_range(-cfg.max_shear..=cfg.max_shear)
        } else {
            0.0
        };
        // forward matrix F = R(angle) * S(shear) on (y, x); store F^-1
        let (s, c) = angle.sin_cos();
        let r = [[c, -s], [s, c]];
        let sh = [[1.0, 0.0], [shear, 1.0]]; // x += shear * y
        let f = mat_mul(r, sh);
        let det = f[0][0] * f[1][1] - f[0][1] * f[1][0];
        let inverse = [
            [f[1][1] / det, -f[0][1] / det],
            [-f[1][0] / det, f[0][0] / det],
        ];
        let g = cfg.elastic_grid.max(2);
        let control = Array2::from_shape_simple_fn((g, g), || {
            if cfg.elastic_sigma > 0.0 {
                (
                    normal(rng) * cfg.elastic_sigma,
                    normal(rng) * cfg.elastic_sigma,
                )
            } else {
                (0.0, 0.0)
            }
        });
        Self {
            height,
            width,
            flip_x,
            flip_y,
            inverse,
            control,
        }
    }

    /// Elastic displacement at output pixel (y, x): Catmull-Rom spline through the
    /// control points, which span the image corner to corner.
    fn displacement(&self, y: f32, x: f32) -> (f32, f32) {
        let (gy, gx) = self.control.dim();
        let ty = y / (self.height.max(2) - 1) as f32 * (gy - 1) as f32;
        let tx = x / (self.width.max(2) - 1) as f32 * (gx - 1) as f32;
        let (iy, fy) = (ty.floor() as isize, ty - ty.floor());
        let (ix, fx) = (tx.floor() as isize, tx - tx.floor());
        let wy = catmull_rom(fy);
        let wx = catmull_rom(fx);
        let mut d = (0.0, 0.0);
        for (a, wya) in wy.iter().enumerate() {
            let cy = (iy + a as isize - 1).clamp(0, gy as isize - 1) as usize;
            for (b, wxb) in wx.iter().enumerate() {
                let cx = (ix + b as isize - 1).clamp(0, gx as isize - 1) as usize;
                let (dy, dx) = self.control[[cy, cx]];
                d.0 += wya * wxb * dy;
                d.1 += wya * wxb * dx;
            }
        }
        d
    }

    /// Source coordinate (y, x) of output pixel (y, x).
    pub fn source(&self, y: usize, x: usize) -> (f32, f32) {
        let (yf, xf) = (y as f32, x as f32);
        let (dy, dx) = self.displacement(yf, xf);
        let cy = (self.height as f32 - 1.0) / 2.0;
        let cx = (self.width as f32 - 1.0) / 2.0;
        let (qy, qx) = (yf + dy - cy, xf + dx - cx);
        let m = self.inverse;
        let mut sy = cy + m[0][0] * qy + m[0][1] * qx;
        let mut sx = cx + m[1][0] * qy + m[1][1] * qx;
        if self.flip_y {
            sy = self.height as f32 - 1.0 - sy;
        }
        if self.flip_x {
            sx = self.width as f32 - 1.0 - sx;
        }
        (sy, sx)
    }

    /// Resample `img` (same size as the warp) bilinearly with reflect padding.
    pub fn apply(&self, img: &Array2<f32>) -> Array2<f32> {
        assert_eq!(
            img.dim(),
            (self.height, self.width),
            "warp and image sizes differ"
        );
        Array2::from_shape_fn((self.height, self.width), |(y, x)| {
            let (sy, sx) = self.source(y, x);
            bilinear_reflect(img, sy, sx)
        })
    }
}

/// Apply one random warp to an image and its binary label; the label is re-binarised.
pub fn augment_pair<R: Rng>(
    rng: &mut R,
    cfg: &AugmentConfig,
    image: &Array2<f32>,
    label: &Array2<f32>,
) -> (Array2<f32>, Array2<f32>) {
    let (h, w) = image.dim();
    let warp = Warp::random(rng, cfg, h, w);
    let img = warp.apply(image);
    let lab = warp.apply(label).mapv(|v| if v >= 0.5 { 1.0 } else { 0.0 });
    (img, lab)
}

/// Mirror left-right (exact).
pub fn flip_horizontal(a: &Array2<f32>) -> Array2<f32> {
    let (h, w) = a.dim();
    Array2::from_shape_fn((h, w), |(y, x)| a[[y, w - 1 - x]])
}

/// Mirror top-bottom (exact).
pub fn flip_vertical(a: &Array2<f32>) -> Array2<f32> {
    let (h, w) = a.dim();
    Array2::from_shape_fn((h, w), |(y, x)| a[[h - 1 - y, x]])
}

/// Rotate by 90 degrees counter-clockwise (exact).
pub fn rotate90(a: &Array2<f32>) -> Array2<f32> {
    let (h, w) = a.dim();
    Array2::from_shape_fn((w, h), |(y, x)| a[[x, w - 1 - y]])
}

fn mat_mul(a: [[f32; 2]; 2], b: [[f32; 2]; 2]) -> [[f32; 2]; 2] {
    [
        [
            a[0][0] * b[0][0] + a[0][1] * b[1][0],
            a[0][0] * b[0][1] + a[0][1] * b[1][1],
        ],
        [
            a[1][0] * b[0][0] + a[1][1] * b[1][0],
            a[1][0] * b[0][1] + a[1][1] * b[1][1],
        ],
    ]
}

fn normal<R: Rng>(rng: &mut R) -> f32 {
    // Box-Muller
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Catmull-Rom weights of the 4 neighbours at fraction t.
fn catmull_rom(t: f32) -> [f32; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

/// Reflect a coordinate into [0, n-1] (mirror without repeating the edge pixel).
pub fn reflect(v: f32, n: usize) -> f32 {
    if n == 1 {
        return 0.0;
    }
    let period = 2.0 * (n - 1) as f32;
    let t = v.rem_euclid(period);
    if t > (n - 1) as f32 { period - t } else { t }
}

fn bilinear_reflect(img: &Array2<f32>, y: f32, x: f32) -> f32 {
    let (h, w) = img.dim();
    let (y, x) = (reflect(y, h), reflect(x, w));
    let (y0, x0) = (y.floor() as usize, x.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (fy, fx) = (y - y0 as f32, x - x0 as f32);
    let top = img[[y0, x0]] * (1.0 - fx) + img[[y0, x1]] * fx;
    let bottom = img[[y1, x0]] * (1.0 - fx) + img[[y1, x1]] * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn blobs(h: usize, w: usize) -> Array2<f32> {
        Array2::from_shape_fn((h, w), |(y, x)| {
            let (y, x) = (y as f32, x as f32);
            let g = |cy: f32, cx: f32, s: f32| {
                (-((y - cy).powi(2) + (x - cx).powi(2)) / (2.0 * s * s)).exp()
            };
            g(20.0, 30.0, 8.0) + g(45.0, 15.0, 6.0) + 0.8 * g(50.0, 50.0, 10.0)
        })
    }

    #[test]
    fn flips_and_quarter_turns_are_invertible() {
        let a = Array2::from_shape_fn((5, 7), |(y, x)| (y * 7 + x) as f32);
        assert_eq!(flip_horizontal(&flip_horizontal(&a)), a);
        assert_eq!(flip_vertical(&flip_vertical(&a)), a);
        let r4 = rotate90(&rotate90(&rotate90(&rotate90(&a))));
        assert_eq!(r4, a);
        assert_eq!(rotate90(&a).dim(), (7, 5));
        // a quarter turn moves the top-right corner to the top-left
        assert_eq!(rotate90(&a)[[0, 0]], a[[0, 6]]);
    }

    #[test]
    fn warp_flips_match_exact_flips() {
        let a = blobs(16, 12);
        let mut w = Warp::identity(16, 12);
        assert_eq!(w.apply(&a), a);
        w.flip_x = true;
        assert_eq!(w.apply(&a), flip_horizontal(&a));
        w.flip_x = false;
        w.flip_y = true;
        assert_eq!(w.apply(&a), flip_vertical(&a));
    }

    #[test]
    fn warp_quarter_turn_matches_rotate90_on_square_images() {
        let a = Array2::from_shape_fn((9, 9), |(y, x)| (y * 9 + x) as f32);
        let mut w = Warp::identity(9, 9);
        // inverse of a +90 degree rotation about the centre
        let (s, c) = std::f32::consts::FRAC_PI_2.sin_cos();
        w.inverse = [[c, s], [-s, c]];
        let got = w.apply(&a);
        let expected = rotate90(&a);
        let other = rotate90(&rotate90(&rotate90(&a)));
        let close = |b: &Array2<f32>| got.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-3);
        assert!(
            close(&expected) || close(&other),
            "a quarter-turn warp must equal an exact quarter turn"
        );
    }

    #[test]
    fn image_and_label_share_geometry_and_labels_stay_binary() {
        let mut rng = StdRng::seed_from_u64(3);
        let img = blobs(64, 64);
        let label = img.mapv(|v| if v >= 0.5 { 1.0 } else { 0.0 });
        for _ in 0..10 {
            let (ai, al) = augment_pair(&mut rng, &AugmentConfig::default(), &img, &label);
            assert!(
                al.iter().all(|&v| v == 0.0 || v == 1.0),
                "labels must stay binary"
            );
            let derived = ai.mapv(|v| if v >= 0.5 { 1.0 } else { 0.0 });
            let agree = derived
                .iter()
                .zip(al.iter())
                .filter(|(a, b)| a == b)
                .count() as f32
                / al.len() as f32;
            assert!(agree > 0.97, "image and label geometries differ: {agree}");
        }
    }

    #[test]
    fn independent_warps_do_not_agree() {
        // the test above must be able to fail: warping image and label with two
        // different random warps breaks the agreement
        let mut rng = StdRng::seed_from_u64(4);
        let img = blobs(64, 64);
        let label = img.mapv(|v| if v >= 0.5 { 1.0 } else { 0.0 });
        let cfg = AugmentConfig::default();
        let w1 = Warp::random(&mut rng, &cfg, 64, 64);
        let w2 = Warp::random(&mut rng, &cfg, 64, 64);
        let derived = w1.apply(&img).mapv(|v| if v >= 0.5 { 1.0 } else { 0.0 });
        let other = w2.apply(&label).mapv(|v| if v >= 0.5 { 1.0 } else { 0.0 });
        let agree = derived
            .iter()
            .zip(other.iter())
            .filter(|(a, b)| a == b)
            .count() as f32
            / 4096.0;
        assert!(agree < 0.97, "{agree}");
    }

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        assert_eq!(reflect(-1.0, 5), 1.0);
        assert_eq!(reflect(5.0, 5), 3.0);
        assert_eq!(reflect(9.0, 5), 1.0);
        assert_eq!(reflect(2.5, 5), 2.5);
    }
}
