//! Running a skipseg ONNX model with tract.
//!
//! A [`Segmenter`] holds the decoded model and its metadata, and compiles one optimised
//! tract plan per input size on first use (tiles share one size, so this is one plan in
//! practice).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ndarray::{Array4, ArrayView4, ArrayViewD, Ix4};
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::onnx::{self, ModelMeta, pb};

type Plan = Arc<TypedRunnableModel>;

/// A loaded model, ready to segment network-normalised input arrays.
pub struct Segmenter {
    source_name: String,
    proto: pb::ModelProto,
    meta: ModelMeta,
    plans: Mutex<HashMap<(usize, usize), Plan>>,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("source", &self.source_name)
            .field("arch", &self.meta.arch.name)
            .finish()
    }
}

impl Segmenter {
    /// Load an ONNX file exported by skipseg.
    pub fn from_path(path: &Path) -> Result<Self> {
        let proto = onnx::read_model(path)?;
        Self::from_proto(proto, &path.display().to_string())
    }

    /// Load from bytes (an embedded model); `source_name` names it in errors.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Self> {
        Self::from_proto(onnx::decode_model(bytes, source_name)?, source_name)
    }

    /// Wrap an already decoded model.
    pub fn from_proto(proto: pb::ModelProto, source_name: &str) -> Result<Self> {
        let meta = ModelMeta::from_model(&proto, source_name)?;
        Ok(Self {
            source_name: source_name.to_string(),
            proto,
            meta,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Architecture and preprocessing recorded in the model.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The file (or label) the model came from.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Check an input shape without running anything.
    pub fn check_input_shape(&self, shape: &[usize]) -> Result<(usize, usize)> {
        let channels = self.meta.arch.in_channels;
        if shape.len() != 4
            || shape[0] != 1
            || shape[1] != channels
            || shape[2] == 0
            || shape[3] == 0
        {
            return Err(Error::InputShape {
                source_name: self.source_name.clone(),
                shape: shape.to_vec(),
                expected_channels: channels,
            });
        }
        let factor = self.meta.arch.down_factor();
        let (height, width) = (shape[2], shape[3]);
        if !height.is_multiple_of(factor) || !width.is_multiple_of(factor) {
            return Err(Error::NotMultiple {
                source_name: self.source_name.clone(),
                height,
                width,
                factor,
            });
        }
        Ok((height, width))
    }

    /// Run the network on a normalised `[1, C, H, W]` input; returns the membrane
    /// probability `[1, 1, H, W]`.
    pub fn run(&self, input: ArrayViewD<'_, f32>) -> Result<Array4<f32>> {
        let (h, w) = self.check_input_shape(input.shape())?;
        let input = input.into_dimensionality::<Ix4>().expect("rank checked");
        self.run4(input, h, w)
    }

    fn run4(&self, input: ArrayView4<'_, f32>, h: usize, w: usize) -> Result<Array4<f32>> {
        let plan = self.plan(h, w)?;
        let tensor: Tensor = input.to_owned().into_tensor();
        let outputs = plan
            .run(tvec!(tensor.into_tvalue()))
            .map_err(|e| self.engine_err(e))?;
        let out = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| self.engine_err(e))?
            .into_dimensionality::<Ix4>()
            .map_err(|e| self.engine_err(e))?
            .to_owned();
        Ok(out)
    }

    fn engine_err(&self, e: impl std::fmt::Display) -> Error {
        Error::Engine {
            source_name: self.source_name.clone(),
            reason: format!("{e:#}"),
        }
    }

    fn plan(&self, h: usize, w: usize) -> Result<Plan> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plans.get(&(h, w)) {
            return Ok(p.clone());
        }
        let channels = self.meta.arch.in_channels;
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&self.proto)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, channels, h, w]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| self.engine_err(e))?;
        plans.insert((h, w), plan.clone());
        Ok(plan)
    }
}
