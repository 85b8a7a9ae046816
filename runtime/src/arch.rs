//! The architecture of the residual FCN as data (Drozdzal et al. 2016, Table 1).
//!
//! [`ArchSpec`] is the one definition shared by training (the burn model is built from its
//! [`ArchPlan`]), export (node names come from the plan) and the runtime (down-sampling
//! factor, receptive field). It lives in the runtime crate because the runtime reads it
//! back from a model's metadata and must not depend on burn.
//!
//! Topology (names used everywhere, including ONNX node names):
//! - `stem`: plain 3x3 conv from the input channels ("Down 1" in Table 1);
//! - `down1..downN`: levels of residual blocks; the first block of each level decimates
//!   its input (keeps every 2nd row and column);
//! - `across`: blocks at the lowest resolution, no resampling;
//! - `up1..upN`: levels of residual blocks; the last block of each level repeats rows and
//!   columns of its output (nearest x2);
//! - `head`: pre-activated 3x3 conv at full resolution ("Up 5");
//! - `classifier`: pre-activated 1x1 conv to one channel, then a sigmoid.
//!
//! Long skips: the output of `down{N+1-j}` is summed into the input of `up{j}`, and the
//! stem output into the input of `head` (same resolution by construction); a 1x1
//! projection is applied to the skipped map only where widths differ.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Residual block type (paper Fig. 1 b-d).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// One 3x3 conv.
    Simple,
    /// Two 3x3 convs.
    Basic,
    /// 1x1 (width/4) -> 3x3 (width/4) -> 1x1 (width).
    Bottleneck,
}

impl BlockKind {
    /// The convolutions of the residual path: (kernel, in, out) for a block of
    /// `in_ch` -> `width` channels.
    pub fn convs(self, in_ch: usize, width: usize) -> Vec<ConvShape> {
        match self {
            BlockKind::Simple => vec![ConvShape::new(3, in_ch, width)],
            BlockKind::Basic => vec![
                ConvShape::new(3, in_ch, width),
                ConvShape::new(3, width, width),
            ],
            BlockKind::Bottleneck => {
                let inner = (width / 4).max(1);
                vec![
                    ConvShape::new(1, in_ch, inner),
                    ConvShape::new(3, inner, inner),
                    ConvShape::new(1, inner, width),
                ]
            }
        }
    }
}

/// One row of Table 1: a block type, output width and repetition count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub block: BlockKind,
    pub width: usize,
    pub repeats: usize,
}

/// The whole network, row by row, plus global switches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    /// Preset name, informational.
    pub name: String,
    /// Input channels (1 for grayscale EM).
    #[serde(default = "one")]
    pub in_channels: usize,
    /// Width of the stem 3x3 conv ("Down 1").
    pub stem_width: usize,
    /// Down levels; each halves the resolution at its first block.
    pub down: Vec<Level>,
    /// Blocks at the lowest resolution.
    pub across: Level,
    /// Up levels; each doubles the resolution at its last block. Same count as `down`.
    pub up: Vec<Level>,
    /// Width of the full-resolution 3x3 conv before the classifier ("Up 5").
    pub head_width: usize,
    /// Sum encoder maps into the decoder (long skips).
    #[serde(default = "yes")]
    pub long_skips: bool,
    /// Residual connections around each block (short skips).
    #[serde(default = "yes")]
    pub short_skips: bool,
    /// Batch normalisation on every pre-activation.
    #[serde(default = "yes")]
    pub batch_norm: bool,
    /// Dropout probability on the residual path (0 = none).
    #[serde(default)]
    pub dropout: f64,
    /// Batch-norm epsilon.
    #[serde(default = "bn_epsilon")]
    pub bn_epsilon: f64,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn bn_epsilon() -> f64 {
    1e-5
}

/// Kernel size and channel counts of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub kernel: usize,
    pub in_ch: usize,
    pub out_ch: usize,
}

impl ConvShape {
    pub fn new(kernel: usize, in_ch: usize, out_ch: usize) -> Self {
        Self {
            kernel,
            in_ch,
            out_ch,
        }
    }
    /// Weights plus bias.
    pub fn params(&self) -> usize {
        self.kernel * self.kernel * self.in_ch * self.out_ch + self.out_ch
    }
    /// Multiply-accumulates per output pixel.
    pub fn macs_per_pixel(&self) -> usize {
        self.kernel * self.kernel * self.in_ch * self.out_ch
    }
}

/// One residual block with concrete widths.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlan {
    /// `down2.block3` etc.
    pub name: String,
    pub kind: BlockKind,
    pub in_ch: usize,
    pub width: usize,
    /// Decimate the input (and shortcut) by 2.
    pub down: bool,
    /// Repeat rows/columns of the output by 2.
    pub up: bool,
    /// log2 of the resolution divisor the convolutions run at.
    pub scale_log2: u32,
}

impl BlockPlan {
    /// Residual-path convolutions.
    pub fn convs(&self) -> Vec<ConvShape> {
        self.kind.convs(self.in_ch, self.width)
    }
    /// 1x1 projection on the short skip, present only when widths change.
    pub fn shortcut(&self, short_skips: bool) -> Option<ConvShape> {
        (short_skips && self.in_ch != self.width).then(|| ConvShape::new(1, self.in_ch, self.width))
    }
}

/// A long skip merged into the input of an up level (or of the head).
#[derive(Debug, Clone, PartialEq)]
pub struct SkipPlan {
    /// `skip.up1` etc.
    pub name: String,
    /// Name of the level whose output is skipped (`down4`, `stem`).
    pub from: String,
    /// Index into the encoder outputs: 0 = stem, i = down level i.
    pub from_index: usize,
    pub in_ch: usize,
    pub out_ch: usize,
    pub scale_log2: u32,
}

impl SkipPlan {
    /// 1x1 projection, present only where widths differ.
    pub fn projection(&self) -> Option<ConvShape> {
        (self.in_ch != self.out_ch).then(|| ConvShape::new(1, self.in_ch, self.out_ch))
    }
}

/// A level of blocks with concrete widths (down, across or up).
#[derive(Debug, Clone, PartialEq)]
pub struct LevelPlan {
    pub name: String,
    /// Long skip summed into this level's input (up levels only).
    pub skip: Option<SkipPlan>,
    pub blocks: Vec<BlockPlan>,
}

/// The network with every width and resolution resolved: what the burn model, the ONNX
/// exporter and the counters walk.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchPlan {
    pub in_channels: usize,
    pub stem: ConvShape,
    pub down: Vec<LevelPlan>,
    pub across: LevelPlan,
    pub up: Vec<LevelPlan>,
    pub head_skip: Option<SkipPlan>,
    pub head: ConvShape,
    pub classifier: ConvShape,
    pub short_skips: bool,
    pub batch_norm: bool,
}

impl ArchSpec {
    /// Parse and validate a JSON description.
    pub fn from_json(text: &str) -> Result<Self> {
        let spec: ArchSpec =
            serde_json::from_str(text).map_err(|e| Error::Arch(format!("JSON: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Compact JSON (what goes into model metadata).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("ArchSpec serialises")
    }

    /// Check the description is buildable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Arch(m));
        if self.in_channels == 0 || self.stem_width == 0 || self.head_width == 0 {
            return bad("in_channels, stem_width and head_width must be > 0".into());
        }
        if self.down.len() != self.up.len() {
            return bad(format!(
                "{} down levels but {} up levels: they must be equal so every up level has \
                 a resolution to return to",
                self.down.len(),
                self.up.len()
            ));
        }
        if self.down.len() > 8 {
            return bad(format!("{} down levels is more than 8", self.down.len()));
        }
        let levels = self
            .down
            .iter()
            .map(|l| ("down", l))
            .chain(std::iter::once(("across", &self.across)))
            .chain(self.up.iter().map(|l| ("up", l)));
        for (i, (kind, level)) in levels.enumerate() {
            if level.width == 0 || level.repeats == 0 {
                return bad(format!("level {i} ({kind}): width and repeats must be > 0"));
            }
            if level.block == BlockKind::Bottleneck && level.width < 4 {
                return bad(format!("level {i} ({kind}): a bottleneck needs width >= 4"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if self.bn_epsilon.is_nan() || self.bn_epsilon <= 0.0 {
            return bad(format!("bn_epsilon {} must be > 0", self.bn_epsilon));
        }
        Ok(())
    }

    /// Total down-sampling factor: input height and width must be multiples of it.
    pub fn down_factor(&self) -> usize {
        1 << self.down.len()
    }

    /// Resolve widths, resolutions and long-skip pairings.
    pub fn plan(&self) -> ArchPlan {
        let n = self.down.len() as u32;
        let mut width = self.stem_width;
        // encoder output widths: 0 = stem, i = down level i
        let mut encoder_widths = vec![width];
        let make_level = |name: String,
                          level: &Level,
                          first_down: bool,
                          last_up: bool,
                          scale: u32,
                          width: &mut usize| {
            let blocks = (0..level.repeats)
                .map(|r| {
                    let b = BlockPlan {
                        name: format!("{name}.block{}", r + 1),
                        kind: level.block,
                        in_ch: *width,
                        width: level.width,
                        down: first_down && r == 0,
                        up: last_up && r + 1 == level.repeats,
                        scale_log2: scale,
                    };
                    *width = level.width;
                    b
                })
                .collect::<Vec<_>>();
            LevelPlan {
                name,
                skip: None,
                blocks,
            }
        };
        let mut down = Vec::new();
        for (i, level) in self.down.iter().enumerate() {
            down.push(make_level(
                format!("down{}", i + 1),
                level,
                true,
                false,
                i as u32 + 1,
                &mut width,
            ));
            encoder_widths.push(width);
        }
        let across = make_level("across".into(), &self.across, false, false, n, &mut width);
        let mut up = Vec::new();
        for (j, level) in self.up.iter().enumerate() {
            let name = format!("up{}", j + 1);
            let from_index = self.down.len() - j;
            let skip = self.long_skips.then(|| SkipPlan {
                name: format!("skip.{name}"),
                from: format!("down{from_index}"),
                from_index,
                in_ch: encoder_widths[from_index],
                out_ch: width,
                scale_log2: n - j as u32,
            });
            let mut lp = make_level(name, level, false, true, n - j as u32, &mut width);
            lp.skip = skip;
            up.push(lp);
        }
        let head_skip = self.long_skips.then(|| SkipPlan {
            name: "skip.head".into(),
            from: "stem".into(),
            from_index: 0,
            in_ch: encoder_widths[0],
            out_ch: width,
            scale_log2: 0,
        });
        let head = ConvShape::new(3, width, self.head_width);
        ArchPlan {
            in_channels: self.in_channels,
            stem: ConvShape::new(3, self.in_channels, self.stem_width),
            down,
            across,
            up,
            head_skip,
            head,
            classifier: ConvShape::new(1, self.head_width, 1),
            short_skips: self.short_skips,
            batch_norm: self.batch_norm,
        }
    }
}

/// Parameter and compute totals of an architecture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Convolution weights and biases.
    pub conv_params: usize,
    /// Batch-norm scale and shift (learnable).
    pub bn_params: usize,
    /// Batch-norm running mean and variance (not learnable, stored).
    pub bn_buffers: usize,
    /// Multiply-accumulates of all convolutions for one image.
    pub macs: u64,
    /// Of `conv_params`: the 1x1 projections on short skips (width changes).
    pub short_projection_params: usize,
    /// Of `conv_params`: the 1x1 projections on long skips (width differences).
    pub long_projection_params: usize,
}

impl Cost {
    /// Learnable parameters (what Table 2 of the paper counts).
    pub fn params(&self) -> usize {
        self.conv_params + self.bn_params
    }
    /// FLOPs, counting a multiply-accumulate as 2 (convolutions only; batch norm,
    /// ReLU and additions add well under 1%).
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }
}

impl ArchPlan {
    /// Every level in forward order: down levels, across, up levels.
    pub fn levels(&self) -> impl Iterator<Item = &LevelPlan> {
        self.down
            .iter()
            .chain(std::iter::once(&self.across))
            .chain(self.up.iter())
    }

    /// An upper bound on the receptive radius in input pixels: how far (on each side) an
    /// output pixel can see. Each 3x3 convolution at resolution divisor 2^s widens it by
    /// 2^s; each decimation and each repetition by 2^s more for the grid offset. A tile
    /// halo of at least this many pixels makes tiled inference seam-free.
    pub fn receptive_radius(&self) -> usize {
        let mut r = 0usize;
        let conv = |s: &ConvShape, scale: u32| if s.kernel == 3 { 1usize << scale } else { 0 };
        r += conv(&self.stem, 0);
        for level in self.levels() {
            for b in &level.blocks {
                r += b
                    .convs()
                    .iter()
                    .map(|s| conv(s, b.scale_log2))
                    .sum::<usize>();
                if b.down || b.up {
                    r += 1 << b.scale_log2;
                }
            }
        }
        r + conv(&self.head, 0)
    }

    /// Every block in forward order.
    pub fn blocks(&self) -> impl Iterator<Item = &BlockPlan> {
        self.levels().flat_map(|l| l.blocks.iter())
    }

    /// Bytes per input pixel of the widest f32 activation map: the most channels any
    /// convolution writes or reads, scaled by the resolution it runs at (what a window's
    /// memory grows with).
    pub fn widest_map_bytes_per_pixel(&self) -> usize {
        let at = |ch: usize, scale: u32| ch * 4 / (1usize << (2 * scale)).max(1);
        let mut widest = at(self.stem.out_ch, 0)
            .max(at(self.head.in_ch, 0))
            .max(at(self.head.out_ch, 0));
        for b in self.blocks() {
            for s in b.convs() {
                widest = widest
                    .max(at(s.in_ch, b.scale_log2))
                    .max(at(s.out_ch, b.scale_log2));
            }
        }
        widest.max(4)
    }

    /// Count parameters and MACs for an `height` x `width` input.
    pub fn cost(&self, height: usize, width: usize) -> Cost {
        let mut c = Cost::default();
        let pixels = |scale: u32| ((height >> scale) * (width >> scale)) as u64;
        let conv = |c: &mut Cost, s: ConvShape, scale: u32| {
            c.conv_params += s.params();
            c.macs += s.macs_per_pixel() as u64 * pixels(scale);
        };
        let bn = |c: &mut Cost, ch: usize| {
            if self.batch_norm {
                c.bn_params += 2 * ch;
                c.bn_buffers += 2 * ch;
            }
        };
        conv(&mut c, self.stem, 0);
        for level in self.levels() {
            if let Some((skip, p)) = level.skip.as_ref().and_then(|s| Some((s, s.projection()?))) {
                conv(&mut c, p, skip.scale_log2);
                c.long_projection_params += p.params();
            }
            for b in &level.blocks {
                for s in b.convs() {
                    bn(&mut c, s.in_ch);
                    conv(&mut c, s, b.scale_log2);
                }
                if let Some(s) = b.shortcut(self.short_skips) {
                    conv(&mut c, s, b.scale_log2);
                    c.short_projection_params += s.params();
                }
            }
        }
        if let Some(p) = self.head_skip.as_ref().and_then(SkipPlan::projection) {
            conv(&mut c, p, 0);
            c.long_projection_params += p.params();
        }
        bn(&mut c, self.head.in_ch);
        conv(&mut c, self.head, 0);
        bn(&mut c, self.classifier.in_ch);
        conv(&mut c, self.classifier, 0);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widest_map_of_the_small_preset_by_hand() {
        // small.json: stem 8 channels at full resolution (32 B/px); down2's bottleneck
        // reads 32 channels at 1/2 (32 * 4 / 4 = 32 B/px); across 256 at 1/16: 4 B/px
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/small.json"),
        )
        .expect("preset");
        let plan = ArchSpec::from_json(&text).expect("valid").plan();
        assert_eq!(plan.widest_map_bytes_per_pixel(), 32);
    }

    fn tiny(block: BlockKind) -> ArchSpec {
        ArchSpec {
            name: "tiny".into(),
            in_channels: 1,
            stem_width: 4,
            down: vec![Level {
                block,
                width: 8,
                repeats: 2,
            }],
            across: Level {
                block,
                width: 8,
                repeats: 1,
            },
            up: vec![Level {
                block,
                width: 4,
                repeats: 1,
            }],
            head_width: 4,
            long_skips: true,
            short_skips: true,
            batch_norm: true,
            dropout: 0.0,
            bn_epsilon: 1e-5,
        }
    }

    #[test]
    fn simple_tiny_counts_by_hand() {
        // stem 3x3 1->4: 36+4 = 40
        // down1.block1 simple 4->8: bn 4 (8 params), conv 3x3 4->8: 288+8 = 296, proj 1x1 4->8: 32+8 = 40
        // down1.block2 simple 8->8: bn 8 (16), conv 576+8 = 584
        // across.block1 simple 8->8: bn 16, conv 584
        // skip.up1 from down1 (8) into 8: no projection
        // up1.block1 simple 8->4: bn 16, conv 288+4 = 292, proj 1x1 8->4: 32+4 = 36
        // skip.head from stem (4) into 4: no projection
        // head: bn 4 (8), conv 3x3 4->4: 144+4 = 148
        // classifier: bn 4 (8), conv 1x1 4->1: 4+1 = 5
        let c = tiny(BlockKind::Simple).plan().cost(8, 8);
        assert_eq!(
            c.conv_params,
            40 + 296 + 40 + 584 + 584 + 292 + 36 + 148 + 5
        );
        assert_eq!(c.bn_params, 8 + 16 + 16 + 16 + 8 + 8);
        // MACs: stem 36*64, down1.b1 (288+32)*16, down1.b2 576*16, across 576*16,
        // up1 (288+32)*16, head 144*64, classifier 4*64
        assert_eq!(
            c.macs,
            36 * 64 + 320 * 16 + 576 * 16 + 576 * 16 + 320 * 16 + 144 * 64 + 4 * 64
        );
    }

    #[test]
    fn bottleneck_inner_width_is_a_quarter() {
        let convs = BlockKind::Bottleneck.convs(16, 32);
        assert_eq!(
            convs,
            vec![
                ConvShape::new(1, 16, 8),
                ConvShape::new(3, 8, 8),
                ConvShape::new(1, 8, 32)
            ]
        );
    }

    #[test]
    fn long_skips_pair_equal_resolutions() {
        let mut spec = tiny(BlockKind::Basic);
        spec.down.push(Level {
            block: BlockKind::Basic,
            width: 16,
            repeats: 1,
        });
        spec.up.insert(
            0,
            Level {
                block: BlockKind::Basic,
                width: 8,
                repeats: 1,
            },
        );
        let plan = spec.plan();
        assert_eq!(spec.down_factor(), 4);
        // down2 works at 1/4, up1 works at 1/4 and receives down2
        let up1 = &plan.up[0];
        let skip = up1.skip.as_ref().expect("long skip");
        assert_eq!(skip.from, "down2");
        assert_eq!(skip.scale_log2, plan.down[1].blocks[0].scale_log2);
        assert_eq!(up1.blocks[0].scale_log2, 2);
        assert!(up1.blocks.last().map(|b| b.up).unwrap_or(false));
        assert_eq!(
            plan.up[1].skip.as_ref().map(|s| s.from.as_str()),
            Some("down1")
        );
        assert_eq!(
            plan.head_skip.as_ref().map(|s| s.from.as_str()),
            Some("stem")
        );
    }

    #[test]
    fn validation_rejects_unbalanced_levels() {
        let mut spec = tiny(BlockKind::Simple);
        spec.up.clear();
        assert!(spec.validate().is_err());
        let mut spec = tiny(BlockKind::Bottleneck);
        spec.across.width = 2;
        assert!(spec.validate().is_err());
    }

    #[test]
    fn json_roundtrip() {
        let spec = tiny(BlockKind::Bottleneck);
        let back = ArchSpec::from_json(&spec.to_json()).expect("parses");
        assert_eq!(spec, back);
        assert!(ArchSpec::from_json("{\"name\": 3}").is_err());
    }
}
