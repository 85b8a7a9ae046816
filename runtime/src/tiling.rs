//! The one place that knows tile geometry.
//!
//! An image of any size is covered by a grid of non-overlapping *cores* (`tile` x
//! `tile`, the last row and column cut at the image edge). Each core is run inside a
//! *window* that extends it by `halo` pixels on every side and is rounded up to the
//! model's down-sampling factor; every window of an image has the same size, so one
//! compiled plan serves them all. Windows start at multiples of the factor (core origins
//! and the halo are multiples of it), so decimation inside the network sees the same
//! pixel grid as whole-image inference. Window pixels outside the image are read by
//! reflection (mirror without repeating the edge pixel).
//!
//! With `crop` blending each output pixel comes from exactly one tile (the core that
//! contains it); with `linear` blending neighbouring windows overlap by the halo and
//! are averaged with weights that fall linearly to zero across the halo.

/// How overlapping tile outputs are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blend {
    /// Keep each tile's core only.
    Crop,
    /// Weighted average over the halo overlap.
    Linear,
}

/// One tile: its window (input, in image coordinates, may extend past the image) and
/// its core (the output it owns with `Blend::Crop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub row: usize,
    pub col: usize,
    /// Window origin in image coordinates (negative: above/left of the image).
    pub window_y: isize,
    pub window_x: isize,
    pub core_y: usize,
    pub core_x: usize,
    pub core_h: usize,
    pub core_w: usize,
}

/// Tile layout of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    pub height: usize,
    pub width: usize,
    /// Core size (a multiple of `factor`).
    pub tile: usize,
    /// Context on every side (a multiple of `factor`).
    pub halo: usize,
    pub factor: usize,
    /// Window size (all windows of this image).
    pub window_h: usize,
    pub window_w: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Round `v` up to a multiple of `m` (m >= 1).
pub fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

impl TilePlan {
    /// Plan tiles of (at most) `tile` x `tile` with `halo` context for an image of
    /// `height` x `width`; `tile` and `halo` are rounded up to `factor`, and a tile larger
    /// than the image shrinks to the image (rounded up).
    pub fn new(height: usize, width: usize, tile: usize, halo: usize, factor: usize) -> Self {
        assert!(
            height > 0 && width > 0 && factor > 0,
            "empty image or zero factor"
        );
        let tile = round_up(tile.max(1), factor);
        let halo = round_up(halo, factor);
        let core_h = tile.min(round_up(height, factor));
        let core_w = tile.min(round_up(width, factor));
        Self {
            height,
            width,
            tile,
            halo,
            factor,
            window_h: core_h + 2 * halo,
            window_w: core_w + 2 * halo,
            rows: height.div_ceil(core_h),
            cols: width.div_ceil(core_w),
        }
    }

    fn core_size(&self) -> (usize, usize) {
        (self.window_h - 2 * self.halo, self.window_w - 2 * self.halo)
    }

    /// Tile at grid position (row, col).
    pub fn tile(&self, row: usize, col: usize) -> Tile {
        let (ch, cw) = self.core_size();
        let (core_y, core_x) = (row * ch, col * cw);
        Tile {
            row,
            col,
            window_y: core_y as isize - self.halo as isize,
            window_x: core_x as isize - self.halo as isize,
            core_y,
            core_x,
            core_h: ch.min(self.height - core_y),
            core_w: cw.min(self.width - core_x),
        }
    }

    /// Tiles in reading order (row by row).
    pub fn tiles(&self) -> impl Iterator<Item = Tile> + '_ {
        (0..self.rows).flat_map(move |r| (0..self.cols).map(move |c| self.tile(r, c)))
    }

    /// Image row (or column) read for window coordinate `v` of an axis of length `n`.
    pub fn source_index(v: isize, n: usize) -> usize {
        reflect_index(v, n)
    }

    /// Blending weight of window pixel (wy, wx) for `Blend::Linear`: 1 in the core,
    /// falling linearly to 0 across the halo (never exactly 0 inside the window).
    pub fn linear_weight(&self, wy: usize, wx: usize) -> f32 {
        let ramp = |v: usize, n: usize| {
            let h = self.halo as f32;
            if self.halo == 0 {
                return 1.0;
            }
            let d = (v as f32 + 0.5).min(n as f32 - v as f32 - 0.5);
            (d / h).min(1.0)
        };
        ramp(wy, self.window_h) * ramp(wx, self.window_w)
    }
}

/// Reflect an index into [0, n) without repeating the edge (numpy's "reflect").
pub fn reflect_index(v: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let t = v.rem_euclid(period);
    (if t >= n as isize { period - t } else { t }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_pixel_is_owned_by_exactly_one_core(
            h in 1usize..300, w in 1usize..300, tile in 1usize..200, halo in 0usize..40,
            factor_log in 0u32..5,
        ) {
            let factor = 1usize << factor_log;
            let plan = TilePlan::new(h, w, tile, halo, factor);
            let mut owner = vec![0u8; h * w];
            for t in plan.tiles() {
                prop_assert!(t.core_h > 0 && t.core_w > 0);
                for y in t.core_y..t.core_y + t.core_h {
                    for x in t.core_x..t.core_x + t.core_w {
                        owner[y * w + x] += 1;
                    }
                }
                // the core lies inside its window, at offset `halo`
                prop_assert_eq!(t.window_y + plan.halo as isize, t.core_y as isize);
                prop_assert!(t.core_h <= plan.window_h - 2 * plan.halo);
                // windows are aligned to the down-sampling grid and sized for the network
                prop_assert_eq!(t.window_y.rem_euclid(factor as isize), 0);
                prop_assert_eq!(t.window_x.rem_euclid(factor as isize), 0);
                prop_assert_eq!(plan.window_h % factor, 0);
                prop_assert_eq!(plan.window_w % factor, 0);
            }
            prop_assert!(owner.iter().all(|&c| c == 1), "some pixel is not written exactly once");
        }

        #[test]
        fn windows_never_read_outside_the_padded_image(
            h in 1usize..300, w in 1usize..300, tile in 1usize..200, halo in 0usize..40,
            factor_log in 0u32..5,
        ) {
            let factor = 1usize << factor_log;
            let plan = TilePlan::new(h, w, tile, halo, factor);
            for t in plan.tiles() {
                for wy in [0, plan.window_h - 1] {
                    let y = TilePlan::source_index(t.window_y + wy as isize, h);
                    prop_assert!(y < h);
                }
                for wx in [0, plan.window_w - 1] {
                    let x = TilePlan::source_index(t.window_x + wx as isize, w);
                    prop_assert!(x < w);
                }
                // the padded image a window spans: at most halo + factor beyond each edge
                prop_assert!(t.window_y >= -(plan.halo as isize));
                prop_assert!(t.window_y + plan.window_h as isize <= (h + plan.halo + plan.tile) as isize);
            }
        }
    }

    #[test]
    fn reflection_mirrors_without_edge_repeat() {
        assert_eq!(reflect_index(-1, 5), 1);
        assert_eq!(reflect_index(-2, 5), 2);
        assert_eq!(reflect_index(5, 5), 3);
        assert_eq!(reflect_index(12, 5), 4);
        assert_eq!(reflect_index(7, 1), 0);
    }

    #[test]
    fn small_image_is_one_tile() {
        let p = TilePlan::new(30, 20, 512, 8, 16);
        assert_eq!((p.rows, p.cols), (1, 1));
        assert_eq!((p.window_h, p.window_w), (32 + 32, 32 + 32));
        assert_eq!(p.halo, 16);
    }
}
