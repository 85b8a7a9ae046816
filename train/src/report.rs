//! What a training run writes for people: `metrics.csv` + `loss.png` (training and
//! validation loss per epoch) + `val_scores.png` (validation V_rand and V_info per epoch) and `weight_updates.csv` + `weight_updates.png` (mean
//! absolute parameter update per layer per epoch, layers input -> output: the paper's
//! Fig. 4 view). All files are written atomically.

use std::fmt::Write as _;
use std::path::Path;

use skipseg_runtime::io::write_png_rgb;
use skipseg_runtime::onnx::write_atomic;

use crate::training::{TrainError, TrainState};

/// Write every report file of `state` into `out`.
pub fn write_all(out: &Path, state: &TrainState) -> Result<(), TrainError> {
    let mut csv = String::from("epoch,train_loss,val_loss,val_v_rand,val_v_info,seconds\n");
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for r in &state.history {
        let _ = writeln!(
            csv,
            "{},{:.6},{:.6},{},{},{:.1}",
            r.epoch,
            r.train_loss,
            r.val_loss,
            opt(r.val_v_rand),
            opt(r.val_v_info),
            r.seconds
        );
    }
    write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;

    let mut wu = String::from("epoch");
    for n in &state.layer_names {
        let _ = write!(wu, ",{n}");
    }
    wu.push('\n');
    for (e, row) in state.weight_updates.iter().enumerate() {
        let _ = write!(wu, "{}", e + 1);
        for v in row {
            let _ = write!(wu, ",{v:.4e}");
        }
        wu.push('\n');
    }
    write_atomic(&out.join("weight_updates.csv"), wu.as_bytes())?;

    let train: Vec<f64> = state.history.iter().map(|r| r.train_loss).collect();
    let val: Vec<f64> = state.history.iter().map(|r| r.val_loss).collect();
    let (w, h, rgb) = line_plot(
        &[(&train, [31, 119, 180]), (&val, [255, 127, 14])],
        640,
        400,
        None,
    );
    write_png_rgb(&out.join("loss.png"), w, h, &rgb)?;
    let v_rand: Vec<f64> = state.history.iter().filter_map(|r| r.val_v_rand).collect();
    let v_info: Vec<f64> = state.history.iter().filter_map(|r| r.val_v_info).collect();
    if !v_rand.is_empty() {
        // green = validation V_rand, red = validation V_info (y from 0 to 1)
        let (w, h, rgb) = line_plot(
            &[(&v_rand, [44, 160, 44]), (&v_info, [214, 39, 40])],
            640,
            400,
            Some(1.0),
        );
        write_png_rgb(&out.join("val_scores.png"), w, h, &rgb)?;
    }
    let (w, h, rgb) = heatmap(&state.weight_updates, 8);
    write_png_rgb(&out.join("weight_updates.png"), w, h, &rgb)?;
    Ok(())
}

/// Curves on a white canvas with a frame; y from 0 to `y_max` (default: the largest
/// value).
pub fn line_plot(
    series: &[(&[f64], [u8; 3])],
    width: usize,
    height: usize,
    y_max: Option<f64>,
) -> (usize, usize, Vec<u8>) {
    let mut img = vec![255u8; width * height * 3];
    let margin = 30usize;
    let (pw, ph) = (width - 2 * margin, height - 2 * margin);
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        if x < width && y < height {
            let i = (y * width + x) * 3;
            img[i..i + 3].copy_from_slice(&c);
        }
    };
    for x in margin..=margin + pw {
        put(x, margin + ph, [0, 0, 0]);
        put(x, margin, [200, 200, 200]);
    }
    for y in margin..=margin + ph {
        put(margin, y, [0, 0, 0]);
        put(margin + pw, y, [200, 200, 200]);
    }
    let n = series.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    let ymax = y_max.unwrap_or_else(|| {
        series
            .iter()
            .flat_map(|(s, _)| s.iter())
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
    });
    if n == 0 || ymax <= 0.0 {
        return (width, height, img);
    }
    let to_px = |i: usize, v: f64| {
        let x = margin as f64
            + if n > 1 {
                i as f64 / (n - 1) as f64 * pw as f64
            } else {
                0.0
            };
        let y = (margin + ph) as f64 - (v / ymax).clamp(0.0, 1.0) * ph as f64;
        (x, y)
    };
    for (s, colour) in series {
        for i in 0..s.len() {
            let (x0, y0) = to_px(i, s[i]);
            let (x1, y1) = if i + 1 < s.len() {
                to_px(i + 1, s[i + 1])
            } else {
                (x0, y0)
            };
            let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
            for k in 0..=steps {
                let t = k as f64 / steps as f64;
                let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
                for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
                    put(x as usize + dx, y as usize + dy, *colour);
                }
            }
        }
    }
    (width, height, img)
}

/// Layers (x, input -> output) by epochs (y, top = first), each cell `cell` pixels,
/// colour = log10 of the update, normalised over the whole map (dark blue = smallest,
/// yellow = largest).
pub fn heatmap(rows: &[Vec<f64>], cell: usize) -> (usize, usize, Vec<u8>) {
    let layers = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let epochs = rows.len().max(1);
    let (w, h) = (layers * cell, epochs * cell);
    let logs: Vec<f64> = rows
        .iter()
        .flatten()
        .filter(|v| **v > 0.0)
        .map(|v| v.log10())
        .collect();
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut img = vec![0u8; w * h * 3];
    for (e, row) in rows.iter().enumerate() {
        for (l, v) in row.iter().enumerate() {
            let t = if *v > 0.0 && hi > lo {
                (v.log10() - lo) / (hi - lo)
            } else {
                0.0
            };
            let c = viridis(t);
            for y in e * cell..(e + 1) * cell {
                for x in l * cell..(l + 1) * cell {
                    let i = (y * w + x) * 3;
                    img[i..i + 3].copy_from_slice(&c);
                }
            }
        }
    }
    (w, h, img)
}

/// A few stops of the viridis colour map, linearly interpolated.
fn viridis(t: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let mix = |k: usize| (STOPS[i][k] * (1.0 - f) + STOPS[i + 1][k] * f) as u8;
    [mix(0), mix(1), mix(2)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_orders_colours_by_magnitude() {
        let (w, h, img) = heatmap(&[vec![1e-6, 1e-3], vec![1e-4, 1e-5]], 2);
        assert_eq!((w, h), (4, 4));
        let px = |x: usize, y: usize| &img[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(px(0, 0), viridis(0.0)); // smallest
        assert_eq!(px(2, 0), viridis(1.0)); // largest
    }
}
