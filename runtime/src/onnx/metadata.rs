//! skipseg metadata in `ModelProto.metadata_props`: the architecture and the input
//! normalisation the model was trained with.

use serde::{Deserialize, Serialize};

use super::pb;
use crate::arch::ArchSpec;
use crate::error::{Error, Result};

/// Key holding the [`ArchSpec`] as JSON.
pub const META_ARCH: &str = "skipseg.arch";
/// Key holding the [`Preprocessing`] as JSON.
pub const META_PREPROCESSING: &str = "skipseg.preprocessing";
/// Key holding the metadata format version.
pub const META_FORMAT: &str = "skipseg.format";

/// How raw image intensities become network input:
/// `input = (x - mean) / std` where `x` is the intensity scaled to [0, 1] by the image's
/// bit depth (8-bit: v / 255, 16-bit: v / 65535).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    pub mean: f32,
    pub std: f32,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Self {
            mean: 0.5,
            std: 0.25,
        }
    }
}

impl Preprocessing {
    /// Normalise one intensity already scaled to [0, 1].
    pub fn apply(&self, unit: f32) -> f32 {
        (unit - self.mean) / self.std
    }
}

/// What the runtime needs to know about a skipseg model beyond its graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub arch: ArchSpec,
    pub preprocessing: Preprocessing,
}

impl ModelMeta {
    /// Read the metadata of `model`; `source_name` names the file in errors.
    pub fn from_model(model: &pb::ModelProto, source_name: &str) -> Result<Self> {
        let err = |reason: String| Error::Metadata {
            source_name: source_name.to_string(),
            reason,
        };
        let get = |key: &str| {
            model
                .metadata_props
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.value.as_str())
                .ok_or_else(|| err(format!("no `{key}` entry (not exported by skipseg?)")))
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
        Ok(Self {
            arch,
            preprocessing,
        })
    }

    /// Write (replace) the metadata entries of `model`.
    pub fn write_into(&self, model: &mut pb::ModelProto) {
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
