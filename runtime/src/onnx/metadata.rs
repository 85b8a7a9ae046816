//! skipseg metadata in `ModelProto.metadata_props`: the architecture and the input
//! normalisation the model was trained with.

use serde::{Deserialize, Serialize};

#[cfg(feature = "onnx")]
use super::pb;
use crate::arch::ArchSpec;
use crate::error::{Error, Result};

/// Key holding the [`ArchSpec`] as JSON.
pub const META_ARCH: &str = "skipseg.arch";
/// Key holding the [`Preprocessing`] as JSON.
pub const META_PREPROCESSING: &str = "skipseg.preprocessing";
/// Key holding the [`InferenceDefaults`] as JSON (optional: absent means the defaults).
pub const META_INFERENCE: &str = "skipseg.inference";
/// Key holding the metadata format version.
pub const META_FORMAT: &str = "skipseg.format";

/// How raw image intensities become network input. `x` is the intensity scaled to
/// [0, 1] by the image's bit depth (8-bit: v / 255, 16-bit: v / 65535); then
/// - fixed (`per_image` false): `input = (x - mean) / std`;
/// - per image (`per_image` true): `input = (x - m) / s` with `m`, `s` the mean and
///   standard deviation of all pixels of the image being segmented (`s` at least
///   [`MIN_IMAGE_STD`]); `mean` and `std` are then 0 and 1 and unused. This makes the
///   network blind to the brightness and contrast of an acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    pub mean: f32,
    pub std: f32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_image: bool,
}

/// Floor of the per-image standard deviation (a constant image must not divide by 0).
pub const MIN_IMAGE_STD: f64 = 1e-3;

impl Default for Preprocessing {
    fn default() -> Self {
        Self {
            mean: 0.5,
            std: 0.25,
            per_image: false,
        }
    }
}

impl Preprocessing {
    /// Per-image standardisation.
    pub fn per_image() -> Self {
        Self {
            mean: 0.0,
            std: 1.0,
            per_image: true,
        }
    }

    /// The normalisation of an image with intensity statistics `stats` (ignored by fixed
    /// preprocessing).
    pub fn for_image(&self, stats: &IntensityStats) -> Normalisation {
        if self.per_image {
            Normalisation {
                offset: stats.mean() as f32,
                scale: stats.std().max(MIN_IMAGE_STD) as f32,
            }
        } else {
            Normalisation {
                offset: self.mean,
                scale: self.std,
            }
        }
    }

    /// The network input `[1, 1, H, W]` of one whole single-channel image of
    /// intensities in [0, 1], normalised as this preprocessing says (its statistics
    /// taken over the whole image). What `segment-run` feeds a model that takes the image
    /// in one window; the GPU leg of the parity suite feeds burn the same.
    pub fn network_input(&self, image: ndarray::ArrayView2<'_, f32>) -> ndarray::Array4<f32> {
        let norm = self.for_image(&IntensityStats::of(image.iter()));
        image
            .mapv(|v| norm.apply(v))
            .insert_axis(ndarray::Axis(0))
            .insert_axis(ndarray::Axis(0))
    }

    /// Human-readable form, as `segment-run info` prints it.
    pub fn describe(&self) -> String {
        if self.per_image {
            "input = (intensity in [0, 1] - image mean) / image standard deviation".into()
        } else {
            format!(
                "input = (intensity in [0, 1] - {}) / {}",
                self.mean, self.std
            )
        }
    }
}

/// The affine map from intensities in [0, 1] to network input for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    pub offset: f32,
    pub scale: f32,
}

impl Normalisation {
    /// Normalise one intensity already scaled to [0, 1]. A non-finite intensity (a
    /// missing pixel) becomes 0, the mean of the network's input, so it cannot spread
    /// NaN through the convolutions to the rest of the image.
    pub fn apply(&self, unit: f32) -> f32 {
        if unit.is_finite() {
            (unit - self.offset) / self.scale
        } else {
            0.0
        }
    }
}

/// Mean and standard deviation of an image's intensities, accumulated row by row (in
/// f64, so a 16k x 16k image loses nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IntensityStats {
    count: u64,
    sum: f64,
    sum_sq: f64,
    /// Non-finite pixels (NaN, +-inf) seen and left out.
    missing: u64,
}

impl IntensityStats {
    /// Statistics of `values`.
    pub fn of<'a>(values: impl IntoIterator<Item = &'a f32>) -> Self {
        let mut s = Self::default();
        s.add(values);
        s
    }

    /// Add pixels. Non-finite values (NaN, +-inf: a float image's missing or saturated
    /// pixels) are counted as missing and kept out of the statistics.
    pub fn add<'a>(&mut self, values: impl IntoIterator<Item = &'a f32>) {
        for &v in values {
            if !v.is_finite() {
                self.missing += 1;
                continue;
            }
            let v = v as f64;
            self.count += 1;
            self.sum += v;
            self.sum_sq += v * v;
        }
    }

    /// Pixels in the statistics (finite ones).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Non-finite pixels left out of the statistics.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let m = self.mean();
        (self.sum_sq / self.count as f64 - m * m).max(0.0).sqrt()
    }
}

/// Test-time averaging: each window is also run flipped (and transposed), the outputs
/// mapped back and averaged. The network is not equivariant to these transforms, so
/// the average smooths its orientation-specific errors (U-Net averaged 7 rotations;
/// the paper averaged over dropout samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Averaging {
    /// One pass.
    #[default]
    None,
    /// The 4 flips (none, rows, columns, both).
    Flips,
    /// The 8 symmetries of the square: the 4 flips, with and without a transpose.
    Dihedral,
}

impl Averaging {
    /// How `segment-run` describes it.
    pub fn describe(self) -> &'static str {
        match self {
            Averaging::None => "none (one pass per tile)",
            Averaging::Flips => "flips (4 passes per tile)",
            Averaging::Dihedral => "dihedral (8 passes per tile)",
        }
    }
}

impl std::str::FromStr for Averaging {
    type Err = String;

    /// The names of the metadata (and of the command-line options).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("averaging must be none, flips or dihedral, not {s:?}"))
    }
}

/// How a model is meant to be run, unless its user says otherwise (the exporter records
/// what validation measured the model with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceDefaults {
    #[serde(default)]
    pub averaging: Averaging,
    /// The smallest halo (pixels) at which tiled output equals the whole image run as one
    /// window within 1/255 on a reference image, measured by `segment-run tune-halo`
    /// ([`crate::engine::measure_halo`]); the default halo of tiled inference. `None`:
    /// not measured (tiling then uses [`crate::tiling::FALLBACK_HALO`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halo: Option<usize>,
}

/// What the runtime needs to know about a skipseg model beyond its graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub arch: ArchSpec,
    pub preprocessing: Preprocessing,
    pub inference: InferenceDefaults,
}

impl ModelMeta {
    /// Read the metadata of `model`; `source_name` names the file in errors.
    #[cfg(feature = "onnx")]
    pub fn from_model(model: &pb::ModelProto, source_name: &str) -> Result<Self> {
        let props: Vec<(&str, &str)> = model
            .metadata_props
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        Self::from_props(&props, source_name)
    }

    /// Read the metadata from its key / value entries (`ModelProto.metadata_props`, or
    /// an embedded model's copy of them).
    pub fn from_props(props: &[(&str, &str)], source_name: &str) -> Result<Self> {
        let err = |reason: String| Error::Metadata {
            source_name: source_name.to_string(),
            reason,
        };
        let find = |key: &str| props.iter().find(|p| p.0 == key).map(|p| p.1);
        let get = |key: &str| {
            find(key).ok_or_else(|| err(format!("no `{key}` entry (not exported by skipseg?)")))
        };
        let arch =
            ArchSpec::from_json(get(META_ARCH)?).map_err(|e| err(format!("`{META_ARCH}`: {e}")))?;
        let preprocessing: Preprocessing = serde_json::from_str(get(META_PREPROCESSING)?)
            .map_err(|e| err(format!("`{META_PREPROCESSING}`: {e}")))?;
        if preprocessing.std.is_nan() || preprocessing.std <= 0.0 || !preprocessing.mean.is_finite()
        {
            return Err(err(format!(
                "`{META_PREPROCESSING}`: std must be > 0, got {preprocessing:?}"
            )));
        }
        let inference = match find(META_INFERENCE) {
            Some(v) => {
                serde_json::from_str(v).map_err(|e| err(format!("`{META_INFERENCE}`: {e}")))?
            }
            None => InferenceDefaults::default(),
        };
        Ok(Self {
            arch,
            preprocessing,
            inference,
        })
    }

    /// Write (replace) the metadata entries of `model`.
    #[cfg(feature = "onnx")]
    pub fn write_into(&self, model: &mut pb::ModelProto) {
        model.metadata_props.retain(|p| p.key != META_INFERENCE);
        if self.inference != InferenceDefaults::default() {
            model.metadata_props.push(pb::StringStringEntryProto {
                key: META_INFERENCE.to_string(),
                value: serde_json::to_string(&self.inference).expect("inference serialises"),
            });
        }
        let entries = [
            (META_FORMAT, "1".to_string()),
            (META_ARCH, self.arch.to_json()),
            (
                META_PREPROCESSING,
                serde_json::to_string(&self.preprocessing).expect("preprocessing serialises"),
            ),
        ];
        for (key, value) in entries {
            model.metadata_props.retain(|p| p.key != key);
            model.metadata_props.push(pb::StringStringEntryProto {
                key: key.to_string(),
                value,
            });
        }
    }
}

#[cfg(all(test, feature = "onnx"))]
mod tests {
    use super::*;

    fn meta(prep: Preprocessing, averaging: Averaging) -> ModelMeta {
        ModelMeta {
            arch: ArchSpec::from_json(
                &std::fs::read_to_string(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/small.json"),
                )
                .expect("preset"),
            )
            .expect("arch"),
            preprocessing: prep,
            inference: InferenceDefaults {
                averaging,
                halo: None,
            },
        }
    }

    #[test]
    fn averaging_names_parse_as_the_metadata_writes_them() {
        for a in [Averaging::None, Averaging::Flips, Averaging::Dihedral] {
            let name = serde_json::to_value(a).expect("serialises");
            let name = name.as_str().expect("a string");
            assert_eq!(name.parse::<Averaging>(), Ok(a));
        }
        assert_eq!("dihedral".parse::<Averaging>(), Ok(Averaging::Dihedral));
        let e = "rotations".parse::<Averaging>().expect_err("unknown");
        assert!(e.contains("rotations"), "{e}");
    }

    #[test]
    fn metadata_round_trips_and_old_files_read_as_defaults() {
        for (prep, avg) in [
            (Preprocessing::default(), Averaging::None),
            (Preprocessing::per_image(), Averaging::Dihedral),
            (Preprocessing::per_image(), Averaging::Flips),
        ] {
            let mut model = pb::ModelProto::default();
            let m = meta(prep, avg);
            m.write_into(&mut model);
            // written twice: entries are replaced, not duplicated
            m.write_into(&mut model);
            assert_eq!(ModelMeta::from_model(&model, "m").expect("reads"), m);
            let keys: Vec<&str> = model
                .metadata_props
                .iter()
                .map(|p| p.key.as_str())
                .collect();
            // a model of the defaults carries no inference entry (files of earlier
            // versions look exactly like it), and the fixed preprocessing keeps its old form
            assert_eq!(
                keys.contains(&META_INFERENCE),
                avg != Averaging::None,
                "{keys:?}"
            );
            let prep_json = &model
                .metadata_props
                .iter()
                .find(|p| p.key == META_PREPROCESSING)
                .expect("entry")
                .value;
            assert_eq!(
                prep_json.contains("per_image"),
                prep.per_image,
                "{prep_json}"
            );
        }
    }

    #[test]
    fn unknown_averaging_is_a_metadata_error_naming_the_key() {
        let mut model = pb::ModelProto::default();
        meta(Preprocessing::default(), Averaging::None).write_into(&mut model);
        model.metadata_props.push(pb::StringStringEntryProto {
            key: META_INFERENCE.into(),
            value: r#"{"averaging": "rotations"}"#.into(),
        });
        let e = ModelMeta::from_model(&model, "odd.onnx").expect_err("rejected");
        let msg = e.to_string();
        assert!(
            msg.contains("odd.onnx") && msg.contains(META_INFERENCE),
            "{msg}"
        );
    }

    #[test]
    fn per_image_normalisation_standardises_by_hand() {
        // values 0.2, 0.4, 0.6, 0.8: mean 0.5, population std sqrt(0.05)
        let v = [0.2f32, 0.4, 0.6, 0.8];
        let n = Preprocessing::per_image().for_image(&IntensityStats::of(v.iter()));
        let sd = 0.05f32.sqrt();
        for x in v {
            assert!((n.apply(x) - (x - 0.5) / sd).abs() < 1e-5);
        }
        // a constant image does not divide by zero
        let c = Preprocessing::per_image().for_image(&IntensityStats::of([0.3f32; 9].iter()));
        assert!(c.apply(0.3).abs() < 1e-3 && c.apply(0.3).is_finite());
        // fixed preprocessing ignores the statistics
        let f = Preprocessing::default().for_image(&IntensityStats::of(v.iter()));
        assert_eq!(f.apply(0.75), 1.0);
    }
}
