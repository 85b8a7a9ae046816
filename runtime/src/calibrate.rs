//! Calibration for static quantization ([`crate::passes::quantize`]): run the float model
//! on real images and record, for every tensor a convolution reads, the distribution of
//! its values; a range is then the min-max or a percentile of it.

use std::collections::HashMap;

use ndarray::{Array4, ArrayView2, Ix4, s};
use tract_onnx::prelude::*;

use crate::engine::{Inference, Segmenter, segment_image_with};
use crate::error::{Error, Result};
use crate::metrics::{StackEvaluation, evaluate_membrane_maps};
use crate::onnx::{IntensityStats, ModelMeta, pb};
use crate::passes::quantize::{ActivationRange, QuantizeReport, conv_inputs, quantize_convs};

/// Metadata entry of a quantized model: how it was calibrated (JSON).
pub const META_QUANTIZATION: &str = "skipseg.quantization";

/// Histogram bins between a tensor's min and max.
const BINS: usize = 4096;

/// How a tensor's range is taken from its calibration values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// The smallest and largest value seen.
    MinMax,
    /// The values at these percentiles from both ends (e.g. 99.99: the 0.01% largest
    /// values, and as many smallest ones where the tensor goes negative, saturate).
    Percentile(f64),
}

impl std::fmt::Display for RangeMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RangeMethod::MinMax => write!(f, "min-max"),
            RangeMethod::Percentile(p) => write!(f, "percentile {p}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Stats {
    min: f32,
    max: f32,
    count: u64,
    histogram: Vec<u64>,
}

/// The value distributions of the tensors convolutions read.
#[derive(Debug, Clone)]
pub struct Calibration {
    stats: HashMap<String, Stats>,
    /// Windows the model ran on.
    pub windows: usize,
}

impl Calibration {
    /// The tensors measured.
    pub fn tensors(&self) -> impl Iterator<Item = &str> {
        self.stats.keys().map(String::as_str)
    }

    /// The range of every tensor by `method`.
    pub fn ranges(&self, method: RangeMethod) -> HashMap<String, ActivationRange> {
        self.stats
            .iter()
            .map(|(name, st)| (name.clone(), st.range(method)))
            .collect()
    }
}

impl Stats {
    fn range(&self, method: RangeMethod) -> ActivationRange {
        let full = ActivationRange {
            min: self.min,
            max: self.max,
        };
        let RangeMethod::Percentile(p) = method else {
            return full;
        };
        if self.count == 0 || self.max <= self.min {
            return full;
        }
        let width = (self.max - self.min) / BINS as f32;
        let tail = ((1.0 - p / 100.0).max(0.0) * self.count as f64).floor() as u64;
        // largest value once the `tail` largest are let go
        let mut above = 0u64;
        let mut hi = self.max;
        for (b, &n) in self.histogram.iter().enumerate().rev() {
            if above + n > tail {
                hi = self.min + (b + 1) as f32 * width;
                break;
            }
            above += n;
        }
        let mut lo = self.min;
        if self.min < 0.0 {
            let mut below = 0u64;
            for (b, &n) in self.histogram.iter().enumerate() {
                if below + n > tail {
                    lo = self.min + b as f32 * width;
                    break;
                }
                below += n;
            }
        }
        ActivationRange {
            min: lo.max(self.min),
            max: hi.min(self.max),
        }
    }
}

/// A calibration window: `image` (intensities in [0, 1]) cut to a multiple of the
/// model's down-sampling factor (at most `max_side` a side, from the top-left corner)
/// and normalised as the model's metadata says. None when the image is smaller than
/// one factor.
pub fn window(
    image: ArrayView2<'_, f32>,
    meta: &ModelMeta,
    max_side: usize,
) -> Option<Array4<f32>> {
    let factor = meta.arch.down_factor();
    let (h, w) = image.dim();
    let (ch, cw) = (
        (h.min(max_side) / factor) * factor,
        (w.min(max_side) / factor) * factor,
    );
    if ch == 0 || cw == 0 {
        return None;
    }
    let crop = image.slice(s![..ch, ..cw]);
    let norm = meta
        .preprocessing
        .for_image(&IntensityStats::of(crop.iter()));
    let channels = meta.arch.in_channels;
    Some(Array4::from_shape_fn(
        (1, channels, ch, cw),
        |(_, _, y, x)| norm.apply(crop[[y, x]]),
    ))
}

/// Run `model` (batch norms folded, float) on every window and measure the input of
/// every convolution: a first pass for the extremes, a second for histograms.
pub fn calibrate(
    model: &pb::ModelProto,
    windows: &[Array4<f32>],
    source_name: &str,
) -> Result<Calibration> {
    let engine = |e: TractError| Error::Engine {
        source_name: source_name.to_string(),
        reason: format!("calibration: {e:#}"),
    };
    let tensors = conv_inputs(model);
    let graph = model.graph.as_ref().ok_or_else(|| Error::NotOnnx {
        source_name: source_name.to_string(),
        reason: "no graph".into(),
    })?;
    let input_names: Vec<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    // every measured tensor becomes an output (the graph input is read directly)
    let measured: Vec<String> = tensors
        .iter()
        .filter(|t| !input_names.contains(t))
        .cloned()
        .collect();
    let mut probe = model.clone();
    if let Some(g) = probe.graph.as_mut() {
        g.output = measured
            .iter()
            .map(|name| crate::onnx::float_value_info(name))
            .collect();
    }
    let mut plans: HashMap<(usize, usize, usize), Arc<TypedRunnableModel>> = HashMap::new();
    let mut stats: HashMap<String, Stats> = tensors
        .iter()
        .map(|t| {
            (
                t.clone(),
                Stats {
                    min: f32::INFINITY,
                    max: f32::NEG_INFINITY,
                    count: 0,
                    histogram: vec![0; BINS],
                },
            )
        })
        .collect();
    for pass in 0..2 {
        for x in windows {
            let (_, c, h, w) = x.dim();
            let plan = match plans.get(&(c, h, w)) {
                Some(p) => p.clone(),
                None => {
                    let p = crate::engine::compile(&probe, c, h, w, &[]).map_err(engine)?;
                    plans.insert((c, h, w), p.clone());
                    p
                }
            };
            let outputs = plan
                .run(tvec!(x.clone().into_tensor().into_tvalue()))
                .map_err(engine)?;
            let mut record = |name: &str, values: &[f32]| {
                let Some(st) = stats.get_mut(name) else {
                    return;
                };
                if pass == 0 {
                    for &v in values.iter().filter(|v| v.is_finite()) {
                        st.min = st.min.min(v);
                        st.max = st.max.max(v);
                    }
                } else if st.max > st.min {
                    let scale = BINS as f32 / (st.max - st.min);
                    for &v in values.iter().filter(|v| v.is_finite()) {
                        let b = (((v - st.min) * scale) as usize).min(BINS - 1);
                        st.histogram[b] += 1;
                        st.count += 1;
                    }
                } else {
                    st.count += values.len() as u64;
                }
            };
            for name in tensors.iter().filter(|t| input_names.contains(t)) {
                if let Some(v) = x.as_slice() {
                    record(name, v);
                }
            }
            for (name, out) in measured.iter().zip(outputs.iter()) {
                let view = out
                    .to_plain_array_view::<f32>()
                    .map_err(&engine)?
                    .into_dimensionality::<Ix4>()
                    .map_err(|e| engine(e.into()))?;
                let values = view.as_standard_layout();
                record(name, values.as_slice().unwrap_or(&[]));
            }
        }
    }
    if let Some((name, _)) = stats.iter().find(|(_, st)| !st.min.is_finite()) {
        return Err(Error::Engine {
            source_name: source_name.to_string(),
            reason: format!("calibration: no finite value seen for `{name}`"),
        });
    }
    Ok(Calibration {
        stats,
        windows: windows.len(),
    })
}

/// `folded` (batch norms folded) quantized with the ranges `method` takes from
/// `calibration`; the method is recorded in the metadata ([`META_QUANTIZATION`]).
pub fn quantize_with(
    folded: &pb::ModelProto,
    calibration: &Calibration,
    method: RangeMethod,
    source_name: &str,
) -> Result<(pb::ModelProto, QuantizeReport)> {
    let mut model = folded.clone();
    let report = quantize_convs(&mut model, &calibration.ranges(method), source_name)?;
    let (kind, percentile) = match method {
        RangeMethod::MinMax => ("min-max", None),
        RangeMethod::Percentile(p) => ("percentile", Some(p)),
    };
    model.metadata_props.retain(|p| p.key != META_QUANTIZATION);
    model.metadata_props.push(pb::StringStringEntryProto {
        key: META_QUANTIZATION.into(),
        value: serde_json::json!({
            "weights": "int8, symmetric, per output channel",
            "activations": "uint8, per tensor",
            "range": kind,
            "percentile": percentile,
            "calibration_windows": calibration.windows,
        })
        .to_string(),
    });
    Ok((model, report))
}

/// Labelled images to choose a range rule on.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Intensities in [0, 1].
    pub images: Vec<ndarray::Array2<f32>>,
    /// 1 = cell, 0 = membrane, one per image.
    pub cell_labels: Vec<ndarray::Array2<f32>>,
    /// Threads of the segmenter that scores.
    pub threads: usize,
}

/// `model` as skipseg runs it, scored on `validation` ([`validation_scores`]): (V_rand,
/// V_info).
pub fn score(
    model: &pb::ModelProto,
    validation: &Validation,
    source_name: &str,
) -> Result<(f64, f64)> {
    let seg = Segmenter::with_options(
        model.clone(),
        source_name,
        &crate::Options {
            threads: validation.threads,
            monte_carlo_dropout: false,
            ..Default::default()
        },
    )?;
    let e = validation_scores(&seg, &validation.images, &validation.cell_labels)?;
    Ok((e.v_rand, e.v_info))
}

/// A model quantized with one range rule, with its scores when there was a validation.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub method: RangeMethod,
    pub model: pb::ModelProto,
    pub report: QuantizeReport,
    pub scores: Option<(f64, f64)>,
}

/// `folded` quantized with each of `methods`, each scored on `validation` if given; and
/// the index of the one to keep: the highest V_rand (the first on ties, or without
/// validation).
pub fn candidates(
    folded: &pb::ModelProto,
    calibration: &Calibration,
    methods: &[RangeMethod],
    validation: Option<&Validation>,
    source_name: &str,
) -> Result<(Vec<Candidate>, usize)> {
    let mut out: Vec<Candidate> = Vec::with_capacity(methods.len());
    for &method in methods {
        let (model, report) = quantize_with(folded, calibration, method, source_name)?;
        let scores = validation
            .map(|v| score(&model, v, source_name))
            .transpose()?;
        out.push(Candidate {
            method,
            model,
            report,
            scores,
        });
    }
    let v_rand = |c: &Candidate| c.scores.map_or(0.0, |s| s.0);
    let best = (0..out.len()).fold(0, |b, i| {
        if v_rand(&out[i]) > v_rand(&out[b]) {
            i
        } else {
            b
        }
    });
    Ok((out, best))
}

/// Which range rules `quantize` tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RangeChoice {
    /// Smallest and largest calibration value of each tensor.
    MinMax,
    /// The percentile of each tensor's values (outliers saturate).
    Percentile,
    /// Both, keeping the one with the higher V_rand on labelled validation images.
    Auto,
}

/// What [`quantize`] is asked to do.
#[derive(Debug, Clone)]
pub struct QuantizeJob {
    /// Calibration images, intensities in [0, 1] (e.g. training slices).
    pub calibration: Vec<ndarray::Array2<f32>>,
    /// The range rule; `None`: `Auto` when there are validation images, `Percentile`
    /// when there are none (so that quantizing needs no labels).
    pub choice: Option<RangeChoice>,
    /// Percentile for `Percentile` / `Auto`, in (50, 100].
    pub percentile: f64,
    /// Labelled images to choose on and to report V_rand with.
    pub validation: Option<Validation>,
    /// Largest calibration window side (images are cut from their top-left corner).
    pub max_side: usize,
}

/// What [`quantize`] did.
#[derive(Debug, Clone)]
pub struct QuantizeOutcome {
    pub windows: usize,
    /// Calibration images smaller than the down-sampling factor, left out.
    pub skipped: usize,
    pub tensors: usize,
    pub calibration_seconds: f64,
    /// The float model's (V_rand, V_info) on the validation images.
    pub float_scores: Option<(f64, f64)>,
    pub candidates: Vec<Candidate>,
    /// Index of the candidate kept.
    pub best: usize,
}

/// Quantize `proto` (as exported: batch norms are folded and dropout masks set to their
/// default here) to int8, calibrated on `job.calibration`.
pub fn quantize(
    proto: &pb::ModelProto,
    source_name: &str,
    job: &QuantizeJob,
) -> Result<QuantizeOutcome> {
    let meta = ModelMeta::from_model(proto, source_name)?;
    if !(job.percentile > 50.0 && job.percentile <= 100.0) {
        return Err(Error::Arch(format!(
            "the percentile must be in (50, 100], got {}",
            job.percentile
        )));
    }
    let choice = job.choice.unwrap_or(if job.validation.is_some() {
        RangeChoice::Auto
    } else {
        RangeChoice::Percentile
    });
    let methods = match choice {
        RangeChoice::MinMax => vec![RangeMethod::MinMax],
        RangeChoice::Percentile => vec![RangeMethod::Percentile(job.percentile)],
        RangeChoice::Auto => {
            if job.validation.is_none() {
                return Err(Error::Arch(
                    "the auto range rule chooses on labelled images: give validation images \
                     and labels, or choose min-max or percentile"
                        .into(),
                ));
            }
            vec![RangeMethod::MinMax, RangeMethod::Percentile(job.percentile)]
        }
    };
    let windows: Vec<Array4<f32>> = job
        .calibration
        .iter()
        .filter_map(|image| window(image.view(), &meta, job.max_side))
        .collect();
    if windows.is_empty() {
        return Err(Error::Arch("no calibration image".into()));
    }
    let mut folded = proto.clone();
    // the deterministic network: dropout masks (if any) at their default
    crate::passes::dropout::strip_masks(&mut folded);
    crate::passes::fold_batch_norms(&mut folded, source_name)?;
    let started = std::time::Instant::now();
    let calibration = calibrate(&folded, &windows, source_name)?;
    let calibration_seconds = started.elapsed().as_secs_f64();
    let float_scores = job
        .validation
        .as_ref()
        .map(|v| score(proto, v, source_name))
        .transpose()?;
    let (candidates, best) = candidates(
        &folded,
        &calibration,
        &methods,
        job.validation.as_ref(),
        source_name,
    )?;
    Ok(QuantizeOutcome {
        windows: windows.len(),
        skipped: job.calibration.len() - windows.len(),
        tensors: calibration.tensors().count(),
        calibration_seconds,
        float_scores,
        candidates,
        best,
    })
}

/// The official ISBI scores (V_rand, V_info, thinning on) of `seg` on labelled images
/// (`images` intensities in [0, 1], `cell_labels` 1 = cell, 0 = membrane, all of one
/// width), segmented with the model's own defaults (tiles, halo, averaging) and scored
/// as the 8-bit probability maps `segment-run predict` writes (what
/// `scripts/validate.sh` scores).
pub fn validation_scores(
    seg: &Segmenter,
    images: &[ndarray::Array2<f32>],
    cell_labels: &[ndarray::Array2<f32>],
) -> Result<StackEvaluation> {
    let mut maps = Vec::with_capacity(images.len());
    let mut truth = Vec::with_capacity(images.len());
    let width = images.first().map_or(0, |i| i.ncols());
    for (img, gt) in images.iter().zip(cell_labels) {
        if img.dim() != gt.dim() || img.ncols() != width {
            return Err(Error::Arch(format!(
                "validation image {:?} and label {:?} differ in size (or from the first image)",
                img.dim(),
                gt.dim()
            )));
        }
        let how = Inference::model_default(seg);
        let map = segment_image_with(seg, img.view(), &how)?;
        let eight_bit = |p: f32| (p.clamp(0.0, 1.0) * 255.0).round() / 255.0;
        maps.push(map.iter().map(|&p| eight_bit(p)).collect::<Vec<f32>>());
        truth.push(gt.iter().copied().collect::<Vec<f32>>());
    }
    Ok(evaluate_membrane_maps(&maps, &truth, width, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(values: &[f32]) -> Stats {
        let (min, max) = values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let mut histogram = vec![0; BINS];
        for &v in values {
            let b = (((v - min) * BINS as f32 / (max - min)) as usize).min(BINS - 1);
            histogram[b] += 1;
        }
        Stats {
            min,
            max,
            count: values.len() as u64,
            histogram,
        }
    }

    #[test]
    fn percentile_lets_the_outliers_go() {
        // 9999 values uniform on [0, 1) and one outlier at 100: the 99.99th percentile
        // keeps about 1, min-max keeps the outlier
        let mut v: Vec<f32> = (0..9999).map(|i| i as f32 / 9999.0).collect();
        v.push(100.0);
        let st = stats_of(&v);
        let mm = st.range(RangeMethod::MinMax);
        assert_eq!((mm.min, mm.max), (0.0, 100.0));
        let p = st.range(RangeMethod::Percentile(99.99));
        assert_eq!(p.min, 0.0);
        // bins are 100/4096 wide: the largest kept value's bin ends within one bin of 1
        assert!(
            p.max >= 0.99 && p.max <= 1.0 + 100.0 / 4096.0 + 1e-6,
            "{}",
            p.max
        );
        // and symmetric for a negative tail
        let neg: Vec<f32> = v.iter().map(|x| -x).collect();
        let p = stats_of(&neg).range(RangeMethod::Percentile(99.99));
        assert!(
            p.min <= -0.99 && p.min >= -1.0 - 100.0 / 4096.0 - 1e-6,
            "{}",
            p.min
        );
    }
}
