//! Charts for the training reports, drawn with `plotters` (its bitmap backend, with
//! DejaVu Sans from the `dejavu` crate compiled in, so no system font is needed):
//!
//! - [`LineChart`]: per-epoch curves with epoch markers and a legend (`loss.png`,
//!   `val_scores.png`, and the ablation's multi-run chart, the paper's Fig. 3);
//! - [`Heatmap`]: a value per layer per epoch on a log colour scale with a colour bar
//!   (`weight_updates.png`, the paper's Fig. 4).
//!
//! Every chart renders into RGB pixels and says where its plot area lies and which data
//! ranges it shows ([`Frame`]), so tests can check that data lands where it should.

use std::ops::Range;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

/// An RGB colour.
pub type Colour = [u8; 3];
pub const BLACK: Colour = [0, 0, 0];
pub const GREY: Colour = [110, 110, 110];
pub const BLUE: Colour = [31, 119, 180];
pub const ORANGE: Colour = [255, 127, 14];
pub const GREEN: Colour = [44, 160, 44];
pub const RED: Colour = [214, 39, 40];
pub const PURPLE: Colour = [148, 103, 189];
/// Distinct colours for several runs in one chart, in order.
pub const PALETTE: [Colour; 6] = [BLUE, ORANGE, GREEN, RED, PURPLE, [140, 86, 75]];

/// The chart could not be drawn (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw chart: {0}")]
pub struct PlotError(String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

const FONT: &str = "sans-serif";

/// Register the bundled font with plotters (once per process).
fn fonts() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the bundled DejaVu Sans font does not parse".to_string())
        })
        .clone()
        .map_err(PlotError)
}

fn rgb(c: Colour) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Where a chart's plot area lies in pixels and which data ranges it spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Pixel columns of the plot area (left..right).
    pub x_px: Range<i32>,
    /// Pixel rows of the plot area (top..bottom).
    pub y_px: Range<i32>,
    /// Data range along x (left to right).
    pub x: Range<f64>,
    /// Data range along y (bottom to top).
    pub y: Range<f64>,
}

impl Frame {
    /// The pixel of data point `(x, y)` by linear interpolation over the plot area.
    pub fn pixel(&self, x: f64, y: f64) -> (i32, i32) {
        let fx = (x - self.x.start) / (self.x.end - self.x.start);
        let fy = (y - self.y.start) / (self.y.end - self.y.start);
        let px = self.x_px.start as f64 + fx * (self.x_px.end - self.x_px.start) as f64;
        let py = self.y_px.end as f64 - fy * (self.y_px.end - self.y_px.start) as f64;
        (px.round() as i32, py.round() as i32)
    }
}

/// A drawn chart: RGB pixels, row-major, and its plot area.
#[derive(Debug, Clone)]
pub struct Chart {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub frame: Frame,
}

impl Chart {
    /// The colour at pixel `(x, y)` (black outside the image).
    pub fn pixel(&self, x: i32, y: i32) -> Colour {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return BLACK;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Write the chart as a PNG file (atomically).
    pub fn write_png(&self, path: &std::path::Path) -> Result<(), skipseg_runtime::Error> {
        skipseg_runtime::io::write_png_rgb(path, self.width, self.height, &self.rgb)
    }
}

/// Draw with `draw` on a white `width` x `height` canvas; `draw` returns the frame.
fn render(
    width: usize,
    height: usize,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<Frame, PlotError>,
) -> Result<Chart, PlotError> {
    fonts()?;
    let mut rgb = vec![255u8; width * height * 3];
    let frame = {
        let root =
            BitMapBackend::with_buffer(&mut rgb, (width as u32, height as u32)).into_drawing_area();
        let frame = draw(&root)?;
        root.present().map_err(err)?;
        frame
    };
    Ok(Chart {
        width,
        height,
        rgb,
        frame,
    })
}

/// One curve: a value per epoch (epoch 1 first); non-finite values are left out. An
/// empty name keeps it out of the legend.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    pub name: &'a str,
    pub values: &'a [f64],
    pub colour: Colour,
    /// Dashed instead of solid.
    pub dashed: bool,
}

/// A vertical dashed line at an epoch, named in the legend.
#[derive(Debug, Clone)]
pub struct Marker<'a> {
    pub epoch: usize,
    pub label: &'a str,
    pub colour: Colour,
}

/// Curves over epochs with axes, a legend and epoch markers.
#[derive(Debug, Clone)]
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_title: &'a str,
    pub y_title: &'a str,
    pub series: Vec<Series<'a>>,
    pub markers: Vec<Marker<'a>>,
    /// Fixed y range; `None`: the data's range with a 5 % margin.
    pub y_range: Option<(f64, f64)>,
}

impl LineChart<'_> {
    /// The y range the chart shows.
    fn y_span(&self) -> Range<f64> {
        if let Some((lo, hi)) = self.y_range {
            return lo..hi;
        }
        let finite = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if !lo.is_finite() {
            return 0.0..1.0;
        }
        let pad = ((hi - lo) * 0.05).max(1e-3);
        (lo - pad)..(hi + pad)
    }

    /// Draw the chart.
    pub fn render(&self, width: usize, height: usize) -> Result<Chart, PlotError> {
        let epochs = self
            .series
            .iter()
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0);
        let x = 1.0..(epochs.max(2) as f64);
        let y = self.y_span();
        render(width, height, |root| {
            root.fill(&WHITE).map_err(err)?;
            let mut chart = ChartBuilder::on(root)
                .caption(self.title, (FONT, 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(x.clone(), y.clone())
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(self.x_title)
                .y_desc(self.y_title)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 15))
                .light_line_style(RGBColor(238, 238, 238))
                .x_labels(epochs.clamp(2, 12))
                .x_label_formatter(&|v| {
                    // epochs are whole numbers: no label between them
                    if (v - v.round()).abs() < 1e-9 {
                        format!("{}", v.round() as i64)
                    } else {
                        String::new()
                    }
                })
                .draw()
                .map_err(err)?;
            for m in &self.markers {
                let style = ShapeStyle::from(&rgb(m.colour)).stroke_width(1);
                chart
                    .draw_series(DashedLineSeries::new(
                        [(m.epoch as f64, y.start), (m.epoch as f64, y.end)],
                        6,
                        4,
                        style,
                    ))
                    .map_err(err)?
                    .label(m.label)
                    .legend(move |(lx, ly)| {
                        PathElement::new([(lx, ly), (lx + 18, ly)], style.stroke_width(2))
                    });
            }
            for s in &self.series {
                let points: Vec<(f64, f64)> = s
                    .values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| ((i + 1) as f64, v))
                    .collect();
                let style = ShapeStyle::from(&rgb(s.colour)).stroke_width(2);
                let drawn = if s.dashed {
                    chart.draw_series(DashedLineSeries::new(points, 7, 4, style))
                } else {
                    chart.draw_series(LineSeries::new(points, style))
                };
                let drawn = drawn.map_err(err)?;
                if !s.name.is_empty() {
                    drawn
                        .label(s.name)
                        .legend(move |(lx, ly)| PathElement::new([(lx, ly), (lx + 18, ly)], style));
                }
            }
            // the legend goes in the right-hand corner the curves leave free: where the
            // last third of the epochs lies in the lower half, at the top, else below
            let tail: Vec<f64> = self
                .series
                .iter()
                .flat_map(|s| s.values.iter().skip(s.values.len() * 2 / 3).copied())
                .filter(|v| v.is_finite())
                .collect();
            let high = !tail.is_empty()
                && tail.iter().sum::<f64>() / tail.len() as f64 > (y.start + y.end) / 2.0;
            chart
                .configure_series_labels()
                .position(if high {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperRight
                })
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(rgb(BLACK))
                .draw()
                .map_err(err)?;
            let (x_px, y_px) = chart.plotting_area().get_pixel_range();
            Ok(Frame { x_px, y_px, x, y })
        })
    }
}

/// The training and validation loss of one run, for a multi-run chart.
#[derive(Debug, Clone)]
pub struct RunCurves {
    pub name: String,
    pub train: Vec<f64>,
    pub val: Vec<f64>,
}

/// Several runs' training (dashed) and validation (solid) losses in one chart, one
/// colour per run, named once in the legend: the paper's Fig. 3 in one panel.
pub fn loss_curves(
    title: &str,
    y_title: &str,
    runs: &[RunCurves],
    width: usize,
    height: usize,
) -> Result<Chart, PlotError> {
    let mut series = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        series.push(Series {
            name: "",
            values: &r.train,
            colour,
            dashed: true,
        });
        series.push(Series {
            name: &r.name,
            values: &r.val,
            colour,
            dashed: false,
        });
    }
    LineChart {
        title,
        x_title: "epoch",
        y_title,
        series,
        markers: vec![],
        y_range: None,
    }
    .render(width, height)
}

/// A value per row (epoch, top first) and column (layer, input -> output) on a log
/// colour scale (viridis: dark = small), with the layers' stage names under the columns
/// and a colour bar.
#[derive(Debug, Clone)]
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub x_title: &'a str,
    pub y_title: &'a str,
    pub rows: &'a [Vec<f64>],
    /// The stage of each column; runs of the same name are labelled once.
    pub column_groups: Vec<String>,
    /// Cell size in pixels (width, height).
    pub cell: (usize, usize),
}

/// The log10 range of the positive finite values (`None`: there are none).
fn log_range(rows: &[Vec<f64>]) -> Option<(f64, f64)> {
    let logs = rows
        .iter()
        .flatten()
        .filter(|v| v.is_finite() && **v > 0.0)
        .map(|v| v.log10());
    let (lo, hi) = logs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    lo.is_finite().then_some((lo, hi.max(lo + 1e-9)))
}

/// The viridis colour of `t` in [0, 1].
pub fn viridis(t: f64) -> Colour {
    let c = ViridisRGB::get_color(t.clamp(0.0, 1.0));
    [c.0, c.1, c.2]
}

impl Heatmap<'_> {
    /// The colour of `value` given the map's log10 range.
    pub fn colour(value: f64, (lo, hi): (f64, f64)) -> Colour {
        if !(value.is_finite() && value > 0.0) {
            return viridis(0.0);
        }
        viridis((value.log10() - lo) / (hi - lo))
    }

    /// Draw the map.
    pub fn render(&self) -> Result<Chart, PlotError> {
        let nrows = self.rows.len().max(1);
        let ncols = self.rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let cw = self.cell.0.max(1);
        // at least 240 pixels of rows, so the colour bar beside them has room
        let ch = self.cell.1.max(1).max(240usize.div_ceil(nrows));
        let (left, bar, top, bottom) = (70, 120, 50, 76);
        let width = left + ncols * cw + bar + 20;
        let height = top + nrows * ch + bottom;
        let range = log_range(self.rows).unwrap_or((0.0, 1.0));
        render(width, height, |root| {
            root.fill(&WHITE).map_err(err)?;
            let (map_area, bar_area) = root.split_horizontally((width - bar) as u32);
            let x = 0.0..ncols as f64;
            let y = nrows as f64..0.0;
            let mut chart = ChartBuilder::on(&map_area)
                .caption(self.title, (FONT, 18))
                .margin_top(10)
                .margin_right(10)
                .x_label_area_size(bottom as u32 - 10)
                .y_label_area_size(left as u32 - 10)
                .build_cartesian_2d(x.clone(), y.clone())
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(0)
                .y_labels(0)
                .x_desc(self.x_title)
                .y_desc(self.y_title)
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 14))
                .draw()
                .map_err(err)?;
            // epoch numbers beside their rows (every k-th row when rows are thin)
            let every = 14usize.div_ceil(ch).max(1);
            for r in (0..nrows).filter(|r| (r + 1) % every == 0 || *r == 0) {
                let (px, py) = chart.backend_coord(&(0.0, r as f64 + 0.5));
                let style = TextStyle::from((FONT, 11).into_font())
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Right,
                        plotters::style::text_anchor::VPos::Center,
                    ))
                    .color(&plotters::style::colors::BLACK);
                root.draw(&Text::new(format!("{}", r + 1), (px - 4, py), style))
                    .map_err(err)?;
            }
            chart
                .draw_series(self.rows.iter().enumerate().flat_map(|(r, row)| {
                    row.iter().enumerate().map(move |(c, &v)| {
                        Rectangle::new(
                            [(c as f64, r as f64), ((c + 1) as f64, (r + 1) as f64)],
                            rgb(Self::colour(v, range)).filled(),
                        )
                    })
                }))
                .map_err(err)?;
            // stage names under the columns, staggered on two lines; thin white lines
            // between stages
            let mut start = 0;
            let mut k = 0;
            while start < self.column_groups.len() {
                let name = &self.column_groups[start];
                let end = (start..self.column_groups.len())
                    .find(|&i| &self.column_groups[i] != name)
                    .unwrap_or(self.column_groups.len());
                if start > 0 {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            [(start as f64, 0.0), (start as f64, nrows as f64)],
                            WHITE.stroke_width(1),
                        )))
                        .map_err(err)?;
                }
                let (px, py) = chart.backend_coord(&((start + end) as f64 / 2.0, nrows as f64));
                let style = TextStyle::from((FONT, 11).into_font())
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Top,
                    ))
                    .color(&plotters::style::colors::BLACK);
                root.draw(&Text::new(name.clone(), (px, py + 4 + 13 * (k % 2)), style))
                    .map_err(err)?;
                k += 1;
                start = end;
            }
            let (x_px, y_px) = chart.plotting_area().get_pixel_range();
            let frame = Frame { x_px, y_px, x, y };

            // the colour bar: log10 of the value, bottom = smallest
            let mut scale = ChartBuilder::on(&bar_area)
                .margin_top(top as u32)
                .margin_bottom(bottom as u32)
                .margin_right(10)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..1.0, range.0..range.1)
                .map_err(err)?;
            scale
                .configure_mesh()
                .disable_mesh()
                .x_labels(0)
                .y_labels(6)
                .label_style((FONT, 11))
                .y_label_formatter(&|v| format!("{:.0e}", 10f64.powf(*v)))
                .draw()
                .map_err(err)?;
            let steps = 64;
            scale
                .draw_series((0..steps).map(|i| {
                    let a = range.0 + (range.1 - range.0) * i as f64 / steps as f64;
                    let b = range.0 + (range.1 - range.0) * (i + 1) as f64 / steps as f64;
                    Rectangle::new(
                        [(0.0, a), (1.0, b)],
                        rgb(viridis((i as f64 + 0.5) / steps as f64)).filled(),
                    )
                }))
                .map_err(err)?;
            Ok(frame)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chart of one solid curve named `name`, no markers.
    fn one_series<'a>(
        name: &'a str,
        values: &'a [f64],
        colour: Colour,
        y_range: Option<(f64, f64)>,
    ) -> LineChart<'a> {
        LineChart {
            title: "t",
            x_title: "epoch",
            y_title: "y",
            series: vec![Series {
                name,
                values,
                colour,
                dashed: false,
            }],
            markers: vec![],
            y_range,
        }
    }

    fn ink(c: &Chart, colour: Colour) -> Vec<(i32, i32)> {
        let mut out = Vec::new();
        for y in 0..c.height as i32 {
            for x in 0..c.width as i32 {
                if c.pixel(x, y) == colour {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn a_constant_series_is_drawn_at_its_height_across_the_plot() {
        // y = 0.25 on a 0..1 axis: a quarter of the way up from the bottom of the plot
        let values = [0.25; 10];
        let colour = [10, 200, 30];
        let chart = one_series("quarter", &values, colour, Some((0.0, 1.0)));
        let c = chart.render(400, 300).expect("chart draws");
        let f = &c.frame;
        let curve_y = f.y_px.end - (f.y_px.end - f.y_px.start) / 4;
        let (curve, elsewhere): (Vec<_>, Vec<_>) = ink(&c, colour)
            .into_iter()
            .partition(|&(_, y)| (y - curve_y).abs() <= 2);
        // the curve spans the plot from epoch 1 to epoch 10 (its columns)
        let cols: std::collections::BTreeSet<i32> = curve.iter().map(|p| p.0).collect();
        let span = (f.x_px.end - f.x_px.start) as usize;
        assert!(cols.len() + 3 >= span, "{} of {span} columns", cols.len());
        // the only other ink of that colour is the legend swatch, top right
        assert!(!elsewhere.is_empty(), "legend swatch");
        assert!(
            elsewhere
                .iter()
                .all(|&(x, y)| y < f.y_px.start + 60 && x > f.x_px.start + span as i32 / 2),
            "{elsewhere:?}"
        );
    }

    #[test]
    fn a_rising_series_passes_through_its_points() {
        let values: Vec<f64> = (0..20).map(|i| (i * i) as f64).collect();
        let colour = [200, 10, 30];
        let chart = one_series("square", &values, colour, None);
        let c = chart.render(500, 350).expect("chart draws");
        for (i, &v) in values.iter().enumerate() {
            let (px, py) = c.frame.pixel((i + 1) as f64, v);
            let near = (-2..=2).any(|dy| (-2..=2).any(|dx| c.pixel(px + dx, py + dy) == colour));
            assert!(near, "epoch {} value {v}: no ink near ({px}, {py})", i + 1);
        }
        // nothing of that colour below the curve's lowest point in the plot's left half
        // (the legend, for a rising curve, sits at the lower right)
        let (_, y_first) = c.frame.pixel(1.0, 0.0);
        let mid = (c.frame.x_px.start + c.frame.x_px.end) / 2;
        assert!(
            ink(&c, colour)
                .iter()
                .filter(|&&(x, _)| x < mid)
                .all(|&(_, y)| y <= y_first + 3)
        );
    }

    #[test]
    fn the_legend_leaves_high_curves_alone() {
        // a curve near the top: the legend swatch goes to the lower right
        let values = [0.9; 10];
        let colour = [10, 200, 30];
        let chart = one_series("high", &values, colour, Some((0.0, 1.0)));
        let c = chart.render(400, 300).expect("chart draws");
        let f = &c.frame;
        let curve_y = f.y_px.start + (f.y_px.end - f.y_px.start) / 10;
        let swatch: Vec<_> = ink(&c, colour)
            .into_iter()
            .filter(|&(_, y)| (y - curve_y).abs() > 3)
            .collect();
        assert!(!swatch.is_empty(), "legend swatch");
        let mid_y = (f.y_px.start + f.y_px.end) / 2;
        assert!(swatch.iter().all(|&(_, y)| y > mid_y), "{swatch:?}");
    }

    #[test]
    fn a_marker_is_a_vertical_line_at_its_epoch() {
        // a falling curve: the legend sits at the top right, above the checked rows
        let values = [5.0, 4.0, 3.0, 2.0, 1.0];
        let chart = LineChart {
            markers: vec![Marker {
                epoch: 3,
                label: "here",
                colour: [250, 0, 250],
            }],
            ..one_series("s", &values, BLUE, Some((0.0, 6.0)))
        };
        let c = chart.render(400, 300).expect("chart draws");
        let (mx, _) = c.frame.pixel(3.0, 0.0);
        let magenta: Vec<_> = ink(&c, [250, 0, 250])
            .into_iter()
            .filter(|&(_, y)| y > c.frame.y_px.start + 60)
            .collect();
        assert!(magenta.len() > 50, "dashed line drawn");
        assert!(magenta.iter().all(|&(x, _)| (x - mx).abs() <= 1));
    }

    #[test]
    fn the_multi_run_chart_draws_each_run_in_its_own_colour() {
        let runs = vec![
            RunCurves {
                name: "a".into(),
                train: vec![0.5, 0.4, 0.3],
                val: vec![0.6, 0.5, 0.45],
            },
            RunCurves {
                name: "b".into(),
                train: vec![0.7, 0.69, 0.68],
                val: vec![0.7, 0.7, 0.7],
            },
        ];
        let c = loss_curves("t", "loss", &runs, 600, 400).expect("chart draws");
        for (i, r) in runs.iter().enumerate() {
            let colour = PALETTE[i];
            // the validation curve is solid: ink at every point
            for (e, &v) in r.val.iter().enumerate() {
                let (px, py) = c.frame.pixel((e + 1) as f64, v);
                let near =
                    (-2..=2).any(|dy| (-2..=2).any(|dx| c.pixel(px + dx, py + dy) == colour));
                assert!(near, "run {} epoch {}", r.name, e + 1);
            }
        }
    }

    #[test]
    fn heatmap_colours_cells_by_log_magnitude() {
        let rows = vec![vec![1e-6, 1e-3, 0.0], vec![1e-4, 1e-5, 1e-3]];
        let map = Heatmap {
            title: "t",
            x_title: "x",
            y_title: "y",
            rows: &rows,
            column_groups: vec!["a".into(), "b".into(), "b".into()],
            cell: (20, 20),
        };
        let c = map.render().expect("chart draws");
        let at = |col: usize, row: usize| {
            let (x, y) = c.frame.pixel(col as f64 + 0.5, row as f64 + 0.5);
            c.pixel(x, y)
        };
        let close = |got: Colour, want: Colour| (0..3).all(|k| got[k].abs_diff(want[k]) <= 2);
        assert!(close(at(0, 0), viridis(0.0)), "smallest is dark");
        assert!(close(at(1, 0), viridis(1.0)), "largest is bright");
        assert!(close(at(2, 0), viridis(0.0)), "zero counts as smallest");
        // 1e-4: two thirds of the way from 1e-6 to 1e-3 in log10
        assert!(close(at(0, 1), viridis(2.0 / 3.0)), "{:?}", at(0, 1));
        assert!(close(at(1, 1), viridis(1.0 / 3.0)), "{:?}", at(1, 1));
    }
}
