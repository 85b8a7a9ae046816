//! bioimage.io model packages (feature `package`): a skipseg ONNX model as a package of
//! the bioimage.io model spec 0.5 (what ilastik, deepImageJ and bioimageio.core load),
//! and such a package read back as a model.
//!
//! A package is a folder (and the same files zipped): `rdf.yaml`; `model.onnx`; test
//! input and output tensors (`test_input.npy` holds intensities in [0, 1], the output is
//! what this runtime computes on it); `cover.png` (input | probability); `README.md`
//! (the model card when there is one). The input's pre-processing reproduces skipseg's
//! normalisation: `zero_mean_unit_variance` over y and x for a model that standardises
//! each image, `fixed_zero_mean_unit_variance` with the training data's mean and
//! standard deviation otherwise; the output is the membrane probability (the network
//! ends in a sigmoid), so there is no post-processing. Spatial sizes are declared as
//! multiples of the model's down-sampling factor.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array2, Array4, s};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::engine::Segmenter;
use crate::error::{Error, Result};
use crate::io::atomic::{create_temp, rename_into_place};
use crate::io::{encode_png_rgb, probability_u8, write_atomic};
use crate::onnx::{self, IntensityStats, Preprocessing, pb};

/// The bioimage.io model spec version the packages follow.
pub const FORMAT_VERSION: &str = "0.5.4";
/// bioimage.io's epsilon of `zero_mean_unit_variance` (skipseg floors the standard
/// deviation at [`crate::onnx::MIN_IMAGE_STD`] instead; on any image with contrast the
/// two agree to about 1e-5 of the input).
const ZMUV_EPS: f64 = 1e-6;
/// Largest side of the test tensors.
const TEST_SIDE: usize = 256;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Package {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Is `path` a bioimage.io package: a folder with `rdf.yaml`, or a `.zip`?
pub fn is_package(path: &Path) -> bool {
    (path.is_dir() && path.join("rdf.yaml").is_file())
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// What [`write_package`] writes.
pub struct PackageSpec<'a> {
    /// Model name in the package (letters, digits, spaces, `_-()`).
    pub name: &'a str,
    pub description: &'a str,
    /// The model card (markdown), the package's documentation; `None`: a short one is
    /// written.
    pub card: Option<&'a str>,
    /// The model as exported (standard ONNX operators: the file that was loaded, not
    /// the engine's rewritten graph).
    pub onnx: &'a pb::ModelProto,
    /// The test image, intensities in [0, 1] (cropped to at most 256 x 256 at its
    /// centre, to a multiple of the down-sampling factor).
    pub sample: &'a Array2<f32>,
}

/// The package folder's files and the zip written by [`write_package`].
#[derive(Debug, Clone)]
pub struct WrittenPackage {
    pub dir: PathBuf,
    pub zip: PathBuf,
    pub files: Vec<String>,
}

/// Write the bioimage.io package of `seg` (loaded from `spec.onnx`) into `dir`, and
/// `dir` zipped as `<dir>.zip`. Every file is written atomically.
pub fn write_package(
    seg: &Segmenter,
    spec: &PackageSpec<'_>,
    dir: &Path,
) -> Result<WrittenPackage> {
    let meta = seg.meta();
    let factor = meta.arch.down_factor();
    let (h, w) = spec.sample.dim();
    let side = |n: usize| (n.min(TEST_SIDE) / factor) * factor;
    let (th, tw) = (side(h), side(w));
    if th == 0 || tw == 0 {
        return Err(bad(
            dir,
            format!("the sample image ({w}x{h}) is smaller than the down-sampling factor {factor}"),
        ));
    }
    let (y0, x0) = ((h - th) / 2, (w - tw) / 2);
    let crop = spec.sample.slice(s![y0..y0 + th, x0..x0 + tw]).to_owned();
    let norm = meta
        .preprocessing
        .for_image(&IntensityStats::of(crop.iter()));
    let input = crop
        .view()
        .insert_axis(ndarray::Axis(0))
        .insert_axis(ndarray::Axis(0));
    let normalised: Array4<f32> = input.mapv(|v| norm.apply(v));
    let output = seg.run(normalised.view().into_dyn())?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        action: "cannot create folder",
        source,
    })?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let onnx_bytes = onnx::encode_model(spec.onnx);
    let test_input = crate::npy::encode(input.into_dyn());
    let test_output = crate::npy::encode(output.view().into_dyn());
    // cover: input | probability (membrane dark on white, as the labels), 2:1
    let prob = output.slice(s![0, 0, .., ..]);
    let mut rgb = Vec::with_capacity(th * tw * 2 * 3);
    for y in 0..th {
        for x in 0..2 * tw {
            let v = if x < tw {
                probability_u8(crop[[y, x]])
            } else {
                255 - probability_u8(prob[[y, x - tw]])
            };
            rgb.extend([v, v, v]);
        }
    }
    let cover = encode_png_rgb(&dir.join("cover.png"), 2 * tw, th, &rgb)?;
    let readme = match spec.card {
        Some(card) => card.to_string(),
        None => format!(
            "# {}\n\n{}\n\nA residual fully-convolutional network (Drozdzal et al. 2016) \
             exported by skipseg. Input: a grayscale EM image, intensities in [0, 1]; \
             output: the membrane probability.\n",
            spec.name, spec.description
        ),
    };
    let preprocessing = if meta.preprocessing.per_image {
        json!([{ "id": "zero_mean_unit_variance",
                 "kwargs": { "axes": ["y", "x"], "eps": ZMUV_EPS } }])
    } else {
        json!([{ "id": "fixed_zero_mean_unit_variance",
                 "kwargs": { "mean": meta.preprocessing.mean, "std": meta.preprocessing.std } }])
    };
    let opset = spec
        .onnx
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty())
        .map_or(17, |o| o.version);
    let space =
        |id: &str| json!({ "type": "space", "id": id, "size": { "min": factor, "step": factor } });
    let same = |id: &str| json!({ "type": "space", "id": id, "size": { "tensor_id": "raw", "axis_id": id } });
    let rdf = json!({
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "description": spec.description,
        "version": "0.1.0",
        "authors": [{ "name": "skipseg" }],
        "cite": [{
            "text": "Drozdzal M, Vorontsov E, Chartrand G, Kadoury S, Pal C. The Importance of \
                     Skip Connections in Biomedical Image Segmentation. DLMIA 2016.",
            "doi": "10.1007/978-3-319-46976-8_19",
        }],
        "license": "MIT",
        "tags": ["electron-microscopy", "membrane-segmentation", "semantic-segmentation",
                 "2d", "onnx", "skipseg", "residual-fcn"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "inputs": [{
            "id": "raw",
            "description": "grayscale EM image, intensities scaled to [0, 1] (uint8 / 255, uint16 / 65535)",
            "axes": [
                // the exported graph's batch dimension is 1
                { "type": "batch", "size": 1 },
                { "type": "channel", "channel_names": ["raw"] },
                space("y"),
                space("x"),
            ],
            "test_tensor": { "source": "test_input.npy", "sha256": sha256_hex(&test_input) },
            "data": { "type": "float32" },
            "preprocessing": preprocessing,
        }],
        "outputs": [{
            "id": "membrane_probability",
            "description": "probability that a pixel is membrane (cell boundary)",
            "axes": [
                { "type": "batch", "size": 1 },
                { "type": "channel", "channel_names": ["membrane"] },
                same("y"),
                same("x"),
            ],
            "test_tensor": { "source": "test_output.npy", "sha256": sha256_hex(&test_output) },
            "data": { "type": "float32", "range": [0.0, 1.0] },
        }],
        "weights": {
            "onnx": {
                "source": "model.onnx",
                "sha256": sha256_hex(&onnx_bytes),
                "opset_version": opset,
            },
        },
        "config": {
            "skipseg": {
                "architecture": meta.arch.name,
                "down_sampling_factor": factor,
                "receptive_radius": meta.arch.plan().receptive_radius(),
                "preprocessing": meta.preprocessing.describe(),
                "test_time_averaging": format!("{:?}", meta.inference.averaging),
                "source_model": seg.source_name(),
            },
        },
    });
    let yaml = serde_norway::to_string(&rdf).map_err(|e| bad(dir, format!("rdf.yaml: {e}")))?;
    files.push(("rdf.yaml".into(), yaml.into_bytes()));
    files.push(("model.onnx".into(), onnx_bytes));
    files.push(("test_input.npy".into(), test_input));
    files.push(("test_output.npy".into(), test_output));
    files.push(("README.md".into(), readme.into_bytes()));
    files.push(("cover.png".into(), cover));
    for (name, bytes) in &files {
        write_atomic(&dir.join(name), bytes)?;
    }
    let zip = dir.with_extension("zip");
    let (tmp, file) = create_temp(&zip)?;
    let zipped = (|| -> zip::result::ZipResult<()> {
        let mut z = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in &files {
            z.start_file(name.as_str(), options)?;
            z.write_all(bytes)?;
        }
        z.finish()?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = zipped {
        let _ = std::fs::remove_file(&tmp);
        return Err(bad(&zip, format!("cannot write the zip: {e}")));
    }
    rename_into_place(&tmp, &zip)?;
    Ok(WrittenPackage {
        dir: dir.to_path_buf(),
        zip,
        files: files.into_iter().map(|(n, _)| n).collect(),
    })
}

/// A synthetic EM-like image (bright cells, dark curved membranes, a little texture),
/// intensities in [0, 1]: the default test image of a package.
pub fn synthetic_em(height: usize, width: usize) -> Array2<f32> {
    Array2::from_shape_fn((height, width), |(y, x)| {
        let (fy, fx) = (y as f32, x as f32);
        let m = ((fy * 0.11 + (fx * 0.05).sin() * 3.0).sin()
            * (fx * 0.09 + (fy * 0.07).cos() * 2.0).sin())
        .abs();
        let base = if m < 0.12 { 0.25 } else { 0.75 };
        let texture = (((y * 131 + x * 71) % 29) as f32 - 14.0) / 300.0;
        (base + texture).clamp(0.0, 1.0)
    })
}

/// A bioimage.io package read as a skipseg model: the ONNX weights and what rdf.yaml
/// declares about them.
#[derive(Debug, Clone)]
pub struct Package {
    pub model: pb::ModelProto,
    pub declared: Declared,
}

/// What a package's rdf.yaml declares about its model.
#[derive(Debug, Clone)]
pub struct Declared {
    /// `package/model.onnx` (for messages).
    pub source_name: String,
    /// The input normalisation.
    pub preprocessing: Preprocessing,
    /// The spatial size step (sizes must be multiples of it).
    pub size_step: usize,
}

impl Declared {
    /// What tile sizes must be multiples of for a network with down-sampling `factor`
    /// (the step is checked by [`check_package_model`] to be a multiple of it).
    pub fn tile_multiple(&self, factor: usize) -> usize {
        self.size_step.max(factor)
    }
}

/// The files of a package folder or zip.
fn package_file(path: &Path, name: &str) -> Result<Vec<u8>> {
    if path.is_dir() {
        let p = path.join(name);
        return std::fs::read(&p).map_err(|source| Error::Io {
            path: p,
            action: "cannot read package file",
            source,
        });
    }
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "cannot open package",
        source,
    })?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| bad(path, format!("not a readable zip: {e}")))?;
    let mut entry = archive
        .by_name(name)
        .map_err(|e| bad(path, format!("{name}: {e}")))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| bad(path, format!("{name}: {e}")))?;
    Ok(bytes)
}

/// Read the package at `path` (folder or zip): its ONNX weights (checked against the
/// declared SHA-256), and the input pre-processing and size step its rdf.yaml declares,
/// which must be ones skipseg computes.
pub fn read_package(path: &Path) -> Result<Package> {
    let text = package_file(path, "rdf.yaml")?;
    let rdf: Value = serde_norway::from_slice(&text)
        .map_err(|e| bad(path, format!("rdf.yaml is not valid YAML: {e}")))?;
    if rdf.get("type").and_then(Value::as_str) != Some("model") {
        return Err(bad(
            path,
            "rdf.yaml does not describe a model (type: model)",
        ));
    }
    let weights = rdf.get("weights").and_then(Value::as_object);
    let onnx_w = weights.and_then(|w| w.get("onnx")).ok_or_else(|| {
        let has: Vec<&str> = weights
            .map(|w| w.keys().map(String::as_str).collect())
            .unwrap_or_default();
        bad(
            path,
            format!(
                "the package has no ONNX weights (it has: {})",
                has.join(", ")
            ),
        )
    })?;
    let source = onnx_w
        .get("source")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(path, "weights.onnx has no source"))?;
    let bytes = package_file(path, source)?;
    if let Some(want) = onnx_w.get("sha256").and_then(Value::as_str)
        && !want.eq_ignore_ascii_case(&sha256_hex(&bytes))
    {
        return Err(bad(
            path,
            format!("{source}: SHA-256 differs from the one rdf.yaml declares (damaged?)"),
        ));
    }
    let source_name = format!("{}/{source}", path.display());
    let model = onnx::decode_model(&bytes, &source_name)?;
    let input = rdf
        .get("inputs")
        .and_then(|i| i.get(0))
        .ok_or_else(|| bad(path, "rdf.yaml has no inputs"))?;
    let steps: Vec<usize> = input
        .get("axes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("space"))
        .map(|a| {
            a.get("size")
                .and_then(|s| s.get("step"))
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize
        })
        .collect();
    if steps.len() != 2 {
        return Err(bad(path, "the input must have two space axes (y, x)"));
    }
    let pre: Vec<&Value> = input
        .get("preprocessing")
        .and_then(Value::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    let preprocessing = match pre.as_slice() {
        [p] if p.get("id").and_then(Value::as_str) == Some("zero_mean_unit_variance") => {
            Preprocessing::per_image()
        }
        [p] if p.get("id").and_then(Value::as_str) == Some("fixed_zero_mean_unit_variance") => {
            let k = p.get("kwargs");
            let num = |n: &str| {
                k.and_then(|k| k.get(n))
                    .and_then(Value::as_f64)
                    .ok_or_else(|| bad(path, format!("fixed_zero_mean_unit_variance without {n}")))
            };
            Preprocessing {
                mean: num("mean")? as f32,
                std: num("std")? as f32,
                per_image: false,
            }
        }
        other => {
            let ids: Vec<&str> = other
                .iter()
                .filter_map(|p| p.get("id").and_then(Value::as_str))
                .collect();
            return Err(bad(
                path,
                format!(
                    "pre-processing [{}] is not one skipseg computes (one \
                     zero_mean_unit_variance or fixed_zero_mean_unit_variance)",
                    ids.join(", ")
                ),
            ));
        }
    };
    Ok(Package {
        model,
        declared: Declared {
            source_name,
            preprocessing,
            size_step: steps[0].max(steps[1]),
        },
    })
}

/// Check that the model loaded from a package computes what its rdf.yaml declares:
/// the same pre-processing, and tiles that fit the declared size step.
pub fn check_package_model(package: &Declared, seg: &Segmenter) -> Result<()> {
    let meta = seg.meta();
    let path = PathBuf::from(&package.source_name);
    let same = package.preprocessing.per_image == meta.preprocessing.per_image
        && (package.preprocessing.per_image
            || ((package.preprocessing.mean - meta.preprocessing.mean).abs() < 1e-6
                && (package.preprocessing.std - meta.preprocessing.std).abs() < 1e-6));
    if !same {
        return Err(bad(
            &path,
            format!(
                "rdf.yaml declares pre-processing \"{}\", the model was trained with \"{}\"",
                package.preprocessing.describe(),
                meta.preprocessing.describe()
            ),
        ));
    }
    let factor = meta.arch.down_factor();
    if !package.size_step.is_multiple_of(factor) {
        return Err(bad(
            &path,
            format!(
                "rdf.yaml allows sizes in steps of {}, the network needs multiples of {factor}",
                package.size_step
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package_dir(name: &str, rdf: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skipseg-pkg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        std::fs::write(dir.join("rdf.yaml"), rdf).expect("write");
        dir
    }

    #[test]
    fn packages_without_onnx_weights_or_of_another_type_are_refused() {
        let dir = package_dir(
            "torch",
            "type: model\nweights:\n  pytorch_state_dict:\n    source: w.pt\n",
        );
        assert!(is_package(&dir));
        let e = read_package(&dir).expect_err("no onnx").to_string();
        assert!(
            e.contains("no ONNX weights") && e.contains("pytorch_state_dict"),
            "{e}"
        );
        let dir2 = package_dir("dataset", "type: dataset\nname: x\n");
        let e = read_package(&dir2).expect_err("not a model").to_string();
        assert!(e.contains("does not describe a model"), "{e}");
        let dir3 = package_dir("yaml", "type: model\n  weights: [\n");
        let e = read_package(&dir3).expect_err("bad yaml").to_string();
        assert!(e.contains("not valid YAML"), "{e}");
        for d in [dir, dir2, dir3] {
            std::fs::remove_dir_all(d).ok();
        }
    }

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        // FIPS 180-2 example: SHA-256("abc")
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
