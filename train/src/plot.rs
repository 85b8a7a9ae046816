//! Charts as RGB pixels, with no font files and no plotting dependency: an RGB
//! [`Canvas`], a built-in 5x7 bitmap font (upper case, digits, a little punctuation),
//! a [`LineChart`] with axes, tick labels, a legend and epoch markers, and a
//! [`Heatmap`] with labelled axes and a colour bar. The training report draws its PNGs
//! with these.

/// An RGB image, white to start with; drawing outside it is clipped.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

pub type Colour = [u8; 3];
pub const BLACK: Colour = [0, 0, 0];
pub const GREY: Colour = [110, 110, 110];
pub const LIGHT_GREY: Colour = [225, 225, 225];

/// Glyph cell: 5 columns and 7 rows of ink plus one column of spacing.
const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;
const ADVANCE: usize = GLYPH_W + 1;

/// Rows of a glyph, top first; bit 4 is the leftmost column. Lower case draws as upper
/// case; characters without a glyph draw as `?`.
fn glyph(c: char) -> [u8; GLYPH_H] {
    match c.to_ascii_uppercase() {
        ' ' => [0, 0, 0, 0, 0, 0, 0],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04], // '?'
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    let n = text.chars().count();
    if n == 0 { 0 } else { (n * ADVANCE - 1) * scale }
}

/// Height in pixels of a line of text at `scale`.
pub fn text_height(scale: usize) -> usize {
    GLYPH_H * scale
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            rgb: vec![255; width * height * 3],
        }
    }

    pub fn pixel(&self, x: usize, y: usize) -> Colour {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    pub fn put(&mut self, x: isize, y: isize, c: Colour) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn fill_rect(&mut self, x: isize, y: isize, w: usize, h: usize, c: Colour) {
        for dy in 0..h as isize {
            for dx in 0..w as isize {
                self.put(x + dx, y + dy, c);
            }
        }
    }

    /// A line `thickness` pixels wide (thickness grows right and down).
    pub fn line(
        &mut self,
        (x0, y0): (f64, f64),
        (x1, y1): (f64, f64),
        thickness: usize,
        c: Colour,
    ) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for k in 0..=steps {
            let t = k as f64 / steps as f64;
            let (x, y) = (
                (x0 + t * (x1 - x0)).round() as isize,
                (y0 + t * (y1 - y0)).round() as isize,
            );
            self.fill_rect(x, y, thickness, thickness, c);
        }
    }

    /// A vertical dashed line from `y0` to `y1` (inclusive).
    pub fn dashed_vline(&mut self, x: isize, y0: isize, y1: isize, c: Colour) {
        for y in y0..=y1 {
            if (y - y0) % 8 < 5 {
                self.put(x, y, c);
            }
        }
    }

    /// `text` with its top-left corner at (x, y), each font pixel `scale` x `scale`.
    pub fn text(&mut self, x: isize, y: isize, text: &str, scale: usize, c: Colour) {
        self.glyphs(text, scale, c, |gx, gy| (x + gx, y + gy));
    }

    /// `text` read bottom to top (rotated a quarter turn anticlockwise), with the
    /// bottom-left corner of its first character at (x, y).
    pub fn text_up(&mut self, x: isize, y: isize, text: &str, scale: usize, c: Colour) {
        self.glyphs(text, scale, c, |gx, gy| (x + gy, y - gx));
    }

    /// Draw the glyphs of `text`, mapping horizontal-text pixel offsets through `at`.
    fn glyphs(
        &mut self,
        text: &str,
        scale: usize,
        c: Colour,
        at: impl Fn(isize, isize) -> (isize, isize),
    ) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            for (gy, bits) in rows.iter().enumerate() {
                for gx in 0..GLYPH_W {
                    if bits & (0x10 >> gx) == 0 {
                        continue;
                    }
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let hx = ((i * ADVANCE + gx) * scale + sx) as isize;
                            let hy = (gy * scale + sy) as isize;
                            let (px, py) = at(hx, hy);
                            self.put(px, py, c);
                        }
                    }
                }
            }
        }
    }
}

/// Tick positions for an axis over [lo, hi]: multiples of a step of 1, 2 or 5 times a
/// power of ten, chosen so that about `target` ticks fall in the range.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (f64, Vec<f64>) {
    if !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return (1.0, vec![lo]);
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (step, ticks)
}

/// A tick label with as many decimals as the step needs.
pub fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{value:.decimals$}")
}

/// A named curve of a [`LineChart`]: `values[i]` belongs to epoch `i + 1`.
pub struct Series<'a> {
    pub name: &'a str,
    pub values: &'a [f64],
    pub colour: Colour,
}

/// A dashed vertical line at an epoch, labelled near the bottom of the plot.
#[derive(Debug, Clone, Copy)]
pub struct Marker<'a> {
    pub epoch: usize,
    pub label: &'a str,
    pub colour: Colour,
}

/// Curves over epochs 1..=n with a title, axis titles, tick labels, grid, legend and
/// markers.
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_title: &'a str,
    pub y_title: &'a str,
    pub series: Vec<Series<'a>>,
    pub markers: Vec<Marker<'a>>,
    /// y range; `None`: from 0 to the largest finite value, rounded up to a tick.
    pub y_range: Option<(f64, f64)>,
}

/// Where the plot area of a chart lies on its canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotArea {
    pub left: usize,
    pub top: usize,
    pub width: usize,
    pub height: usize,
}

const SCALE: usize = 2;

impl LineChart<'_> {
    /// The plot area of a `width` x `height` canvas.
    pub fn area(width: usize, height: usize) -> PlotArea {
        let (left, right, top, bottom) = (84, 20, 44, 56);
        PlotArea {
            left,
            top,
            width: width.saturating_sub(left + right).max(1),
            height: height.saturating_sub(top + bottom).max(1),
        }
    }

    pub fn render(&self, width: usize, height: usize) -> Canvas {
        let mut canvas = Canvas::new(width, height);
        let a = Self::area(width, height);
        let (l, t, pw, ph) = (a.left as isize, a.top as isize, a.width, a.height);
        let n = self
            .series
            .iter()
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0);
        let (y_lo, y_hi, y_step, y_ticks) = match self.y_range {
            Some((lo, hi)) => {
                let (step, ticks) = nice_ticks(lo, hi, 5);
                (lo, hi, step, ticks)
            }
            None => {
                let top = self
                    .series
                    .iter()
                    .flat_map(|s| s.values.iter())
                    .copied()
                    .filter(|v| v.is_finite())
                    .fold(0.0f64, f64::max);
                let top = if top > 0.0 { top } else { 1.0 };
                let (step, _) = nice_ticks(0.0, top, 5);
                let hi = (top / step - 1e-9).ceil() * step;
                let (step, ticks) = nice_ticks(0.0, hi, 5);
                (0.0, hi, step, ticks)
            }
        };
        let x_of = |epoch: f64| -> f64 {
            if n > 1 {
                l as f64 + (epoch - 1.0) / (n - 1) as f64 * pw as f64
            } else {
                l as f64 + pw as f64 / 2.0
            }
        };
        let y_of = |v: f64| -> f64 {
            let f = ((v - y_lo) / (y_hi - y_lo)).clamp(0.0, 1.0);
            t as f64 + ph as f64 - f * ph as f64
        };
        // grid and y ticks
        for &v in &y_ticks {
            let y = y_of(v).round() as isize;
            for x in l..=l + pw as isize {
                canvas.put(x, y, LIGHT_GREY);
            }
            let label = tick_label(v, y_step);
            let tw = text_width(&label, SCALE) as isize;
            canvas.text(
                l - 8 - tw,
                y - (text_height(SCALE) / 2) as isize,
                &label,
                SCALE,
                BLACK,
            );
            canvas.fill_rect(l - 5, y, 5, 1, BLACK);
        }
        // x ticks (epochs)
        if n > 0 {
            let (x_step, x_ticks) = nice_ticks(1.0, n as f64, 8);
            let x_step = x_step.max(1.0);
            let mut ticks: Vec<f64> = x_ticks.into_iter().filter(|e| *e >= 1.0).collect();
            if ticks.first() != Some(&1.0) && ticks.first().is_none_or(|f| *f - 1.0 >= x_step / 2.0)
            {
                ticks.insert(0, 1.0);
            }
            for e in ticks {
                let x = x_of(e).round() as isize;
                for y in t..=t + ph as isize {
                    canvas.put(x, y, LIGHT_GREY);
                }
                canvas.fill_rect(x, t + ph as isize, 1, 5, BLACK);
                let label = tick_label(e, 1.0);
                let tw = text_width(&label, SCALE) as isize;
                canvas.text(x - tw / 2, t + ph as isize + 9, &label, SCALE, BLACK);
            }
        }
        // frame
        canvas.fill_rect(l, t + ph as isize, pw + 1, 1, BLACK);
        canvas.fill_rect(l, t, 1, ph + 1, BLACK);
        canvas.fill_rect(l, t, pw + 1, 1, GREY);
        canvas.fill_rect(l + pw as isize, t, 1, ph + 1, GREY);
        // titles
        let tw = text_width(self.title, SCALE) as isize;
        canvas.text(l + pw as isize / 2 - tw / 2, 12, self.title, SCALE, BLACK);
        let tw = text_width(self.x_title, SCALE) as isize;
        canvas.text(
            l + pw as isize / 2 - tw / 2,
            height as isize - 4 - text_height(SCALE) as isize,
            self.x_title,
            SCALE,
            BLACK,
        );
        let tw = text_width(self.y_title, SCALE) as isize;
        canvas.text_up(6, t + ph as isize / 2 + tw / 2, self.y_title, SCALE, BLACK);
        // markers, under the curves; labels stacked upwards so neighbours stay legible
        let shown = self
            .markers
            .iter()
            .filter(|m| m.epoch >= 1 && m.epoch <= n.max(1));
        for (k, m) in shown.enumerate() {
            let x = x_of(m.epoch as f64).round() as isize;
            canvas.dashed_vline(x, t + 1, t + ph as isize - 1, m.colour);
            let tw = text_width(m.label, 1) as isize;
            let lx = if x + 4 + tw < l + pw as isize {
                x + 4
            } else {
                x - 4 - tw
            };
            canvas.text(
                lx,
                t + ph as isize - 12 - 11 * k as isize,
                m.label,
                1,
                m.colour,
            );
        }
        // curves
        for s in &self.series {
            let points: Vec<(f64, f64)> = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, v)| (x_of((i + 1) as f64), y_of(*v)))
                .collect();
            for pair in points.windows(2) {
                canvas.line(pair[0], pair[1], 2, s.colour);
            }
            if let [only] = points[..] {
                canvas.fill_rect(only.0 as isize - 2, only.1 as isize - 2, 5, 5, s.colour);
            }
        }
        // legend inside the plot, in the corner the curves cross least
        let widest = self
            .series
            .iter()
            .map(|s| text_width(s.name, SCALE))
            .max()
            .unwrap_or(0);
        let line_h = text_height(SCALE) + 8;
        let box_w = 36 + widest + 10;
        let box_h = self.series.len() * line_h + 8;
        let curve_pixels = |x: isize, y: isize| {
            let mut count = 0;
            for yy in y.max(0)..(y + box_h as isize).min(height as isize) {
                for xx in x.max(0)..(x + box_w as isize).min(width as isize) {
                    let p = canvas.pixel(xx as usize, yy as usize);
                    count += usize::from(self.series.iter().any(|s| s.colour == p));
                }
            }
            count
        };
        let (right, bottom) = (
            l + pw as isize - box_w as isize - 8,
            t + ph as isize - box_h as isize - 8,
        );
        let corners = [
            (right, t + 8),
            (l + 8, t + 8),
            (right, bottom),
            (l + 8, bottom),
        ];
        let (bx, by) = corners
            .iter()
            .copied()
            .min_by_key(|&(x, y)| curve_pixels(x, y))
            .unwrap_or(corners[0]);
        if !self.series.is_empty() {
            canvas.fill_rect(bx, by, box_w, box_h, [255, 255, 255]);
            canvas.fill_rect(bx, by, box_w, 1, GREY);
            canvas.fill_rect(bx, by + box_h as isize - 1, box_w, 1, GREY);
            canvas.fill_rect(bx, by, 1, box_h, GREY);
            canvas.fill_rect(bx + box_w as isize - 1, by, 1, box_h, GREY);
        }
        for (i, s) in self.series.iter().enumerate() {
            let y = by + 6 + (i * line_h) as isize;
            canvas.fill_rect(
                bx + 8,
                y + text_height(SCALE) as isize / 2 - 1,
                20,
                3,
                s.colour,
            );
            canvas.text(bx + 36, y, s.name, SCALE, BLACK);
        }
        canvas
    }
}

/// A map of values (rows: epochs, top = first; columns: layers, input -> output), colour
/// = log10 of the value on a viridis scale, with labelled axes, column-group labels
/// (e.g. network stages) and a colour bar.
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub x_title: &'a str,
    pub y_title: &'a str,
    pub rows: &'a [Vec<f64>],
    /// Label of each column; a group label is drawn where it changes.
    pub column_groups: Vec<String>,
    pub cell: usize,
}

impl Heatmap<'_> {
    /// The map area of the rendered canvas.
    pub fn area(&self) -> PlotArea {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        PlotArea {
            left: 84,
            top: 44,
            width: columns * self.cell,
            height: self.rows.len().max(1) * self.cell,
        }
    }

    pub fn render(&self) -> Canvas {
        let a = self.area();
        let widest_group = self
            .column_groups
            .iter()
            .map(|g| text_width(g, 1))
            .max()
            .unwrap_or(0);
        let title_w = text_width(self.title, SCALE).max(text_width(self.x_title, SCALE));
        let width = (a.left + a.width + 150).max(a.left + title_w + 20);
        let height = a.top + a.height + 12 + widest_group + 12 + text_height(SCALE) + 8;
        let mut canvas = Canvas::new(width, height);
        let (l, t) = (a.left as isize, a.top as isize);
        let logs: Vec<f64> = self
            .rows
            .iter()
            .flatten()
            .filter(|v| **v > 0.0 && v.is_finite())
            .map(|v| v.log10())
            .collect();
        let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for (e, row) in self.rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let f = if *v > 0.0 && hi > lo {
                    (v.log10() - lo) / (hi - lo)
                } else {
                    0.0
                };
                canvas.fill_rect(
                    l + (c * self.cell) as isize,
                    t + (e * self.cell) as isize,
                    self.cell,
                    self.cell,
                    viridis(f),
                );
            }
        }
        let bottom = t + a.height as isize;
        // epoch ticks on the left (row e is epoch e + 1)
        let epochs = self.rows.len();
        if epochs > 0 {
            let (_, ticks) = nice_ticks(1.0, epochs as f64, 8);
            let mut ticks: Vec<usize> = ticks
                .into_iter()
                .map(|e| e as usize)
                .filter(|e| *e >= 1)
                .collect();
            if ticks.first() != Some(&1) {
                ticks.insert(0, 1);
            }
            for e in ticks {
                let y = t + ((e - 1) * self.cell + self.cell / 2) as isize;
                canvas.fill_rect(l - 5, y, 5, 1, BLACK);
                let label = e.to_string();
                let tw = text_width(&label, SCALE) as isize;
                canvas.text(
                    l - 8 - tw,
                    y - text_height(SCALE) as isize / 2,
                    &label,
                    SCALE,
                    BLACK,
                );
            }
        }
        // column groups below the map: a tick where a group starts, its name read upwards
        let mut start = 0;
        for c in 0..=self.column_groups.len() {
            if c == self.column_groups.len() || self.column_groups[c] != self.column_groups[start] {
                let x0 = l + (start * self.cell) as isize;
                canvas.fill_rect(x0, bottom, 1, 8, BLACK);
                let mid = l + ((start + c) * self.cell / 2) as isize;
                let name = &self.column_groups[start];
                canvas.text_up(
                    mid - 3,
                    bottom + 10 + text_width(name, 1) as isize,
                    name,
                    1,
                    BLACK,
                );
                start = c;
            }
        }
        canvas.fill_rect(l + a.width as isize, bottom, 1, 8, BLACK);
        // titles
        canvas.text(l, 12, self.title, SCALE, BLACK);
        canvas.text(
            l,
            height as isize - 6 - text_height(SCALE) as isize,
            self.x_title,
            SCALE,
            BLACK,
        );
        let tw = text_width(self.y_title, SCALE) as isize;
        canvas.text_up(
            6,
            t + a.height as isize / 2 + tw / 2,
            self.y_title,
            SCALE,
            BLACK,
        );
        // colour bar: log10 scale, top = largest
        if hi.is_finite() && lo.is_finite() {
            let bx = l + a.width as isize + 24;
            let bh = a.height.min(240);
            for y in 0..bh {
                let f = 1.0 - y as f64 / (bh.max(2) - 1) as f64;
                canvas.fill_rect(bx, t + y as isize, 16, 1, viridis(f));
            }
            canvas.text(bx + 22, t, &format!("{:.0e}", 10f64.powf(hi)), SCALE, BLACK);
            canvas.text(
                bx + 22,
                t + bh as isize - text_height(SCALE) as isize,
                &format!("{:.0e}", 10f64.powf(lo)),
                SCALE,
                BLACK,
            );
            canvas.text(bx, t + bh as isize + 8, "log scale", 1, BLACK);
        }
        canvas
    }
}

/// A few stops of the viridis colour map, linearly interpolated.
pub fn viridis(t: f64) -> Colour {
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

    fn ink(c: &Canvas, colour: Colour) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for y in 0..c.height {
            for x in 0..c.width {
                if c.pixel(x, y) == colour {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn every_glyph_is_distinct_and_lower_case_draws_as_upper_case() {
        let chars: Vec<char> = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,-_/:()+%><="
            .chars()
            .collect();
        for (i, a) in chars.iter().enumerate() {
            assert_ne!(glyph(*a), glyph('?'), "{a} has no glyph of its own");
            assert!(
                glyph(*a).iter().all(|row| *row < 0x20),
                "{a} is wider than 5"
            );
            for b in &chars[i + 1..] {
                assert_ne!(glyph(*a), glyph(*b), "{a} and {b} look the same");
            }
        }
        assert_eq!(glyph('v'), glyph('V'));
        assert_eq!(glyph('\u{e9}'), glyph('?'));
    }

    #[test]
    fn text_ink_matches_the_glyph_bits_inside_its_box() {
        // '1' has rows 00100, 01100, 00100 (x4), 01110: 1+2+1+1+1+1+3 = 10 pixels
        let mut c = Canvas::new(40, 30);
        c.text(3, 5, "1", 2, BLACK);
        let px = ink(&c, BLACK);
        assert_eq!(px.len(), 10 * 4, "each font pixel is 2 x 2");
        for (x, y) in &px {
            assert!((3..3 + text_width("1", 2)).contains(x) && (5..5 + text_height(2)).contains(y));
        }
        // the top of the '1' is its third column: x = 3 + 2 * 2
        assert!(px.contains(&(7, 5)) && px.contains(&(8, 6)) && !px.contains(&(6, 5)));
        assert_eq!(text_width("10", 1), 11);
    }

    #[test]
    fn upward_text_is_the_horizontal_text_turned_a_quarter() {
        let mut flat = Canvas::new(60, 60);
        flat.text(0, 0, "V2", 1, BLACK);
        let mut up = Canvas::new(60, 60);
        up.text_up(0, 40, "V2", 1, BLACK);
        let mut turned: Vec<(usize, usize)> = ink(&flat, BLACK)
            .into_iter()
            .map(|(x, y)| (y, 40 - x))
            .collect();
        turned.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(ink(&up, BLACK), turned);
    }

    #[test]
    fn ticks_are_round_steps_inside_the_range() {
        // range 0.341 / 5 = 0.068 -> the next of 1, 2, 5 x 10^-2 is 0.1
        let (step, ticks) = nice_ticks(0.0, 0.341, 5);
        assert!((step - 0.1).abs() < 1e-12);
        assert_eq!(ticks.len(), 4);
        assert!((ticks[3] - 0.3).abs() < 1e-12);
        // epochs 1..60, about 8 ticks: 59 / 8 = 7.4 -> 10
        let (step, ticks) = nice_ticks(1.0, 60.0, 8);
        assert_eq!(step, 10.0);
        assert_eq!(ticks, vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
        assert_eq!(tick_label(0.30000000000000004, 0.1), "0.3");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(40.0, 10.0), "40");
        // degenerate ranges do not loop or divide by zero
        assert_eq!(nice_ticks(1.0, 1.0, 5).1, vec![1.0]);
    }

    #[test]
    fn a_constant_series_is_drawn_at_its_height_and_listed_in_the_legend() {
        // y = 0.25 on a 0..1 axis: a quarter of the way up from the bottom of the plot
        let values = [0.25; 10];
        let colour = [10, 200, 30];
        let chart = LineChart {
            title: "t",
            x_title: "epoch",
            y_title: "y",
            series: vec![Series {
                name: "quarter",
                values: &values,
                colour,
            }],
            markers: vec![],
            y_range: Some((0.0, 1.0)),
        };
        let (w, h) = (400, 300);
        let c = chart.render(w, h);
        let a = LineChart::area(w, h);
        let curve_y = a.top + a.height * 3 / 4;
        let x = a.left + a.width / 2;
        assert!((curve_y - 1..=curve_y + 2).any(|y| c.pixel(x, y) == colour));
        // that colour appears only on the curve and in the legend swatch (top corner,
        // which the curve does not cross)
        let (curve, elsewhere): (Vec<_>, Vec<_>) = ink(&c, colour)
            .into_iter()
            .partition(|&(_, y)| y + 3 >= curve_y && y <= curve_y + 3);
        assert!(curve.len() >= a.width, "the curve spans the plot");
        assert!(!elsewhere.is_empty(), "legend swatch");
        assert!(
            elsewhere.iter().all(|&(_, y)| y < a.top + 40),
            "{elsewhere:?}"
        );
    }

    #[test]
    fn heatmap_orders_colours_by_magnitude() {
        let rows = vec![vec![1e-6, 1e-3], vec![1e-4, 1e-5]];
        let map = Heatmap {
            title: "t",
            x_title: "x",
            y_title: "y",
            rows: &rows,
            column_groups: vec!["a".into(), "b".into()],
            cell: 4,
        };
        let a = map.area();
        let c = map.render();
        let at = |col: usize, row: usize| c.pixel(a.left + col * 4 + 1, a.top + row * 4 + 1);
        assert_eq!(at(0, 0), viridis(0.0)); // smallest
        assert_eq!(at(1, 0), viridis(1.0)); // largest
        // 1e-4: two thirds of the way from 1e-6 to 1e-3 in log10
        let (got, want) = (at(0, 1), viridis(2.0 / 3.0));
        assert!(
            (0..3).all(|k| got[k].abs_diff(want[k]) <= 1),
            "{got:?} vs {want:?}"
        );
    }
}
