//! OME-Zarr (feature `zarr`): images and volumes in Zarr v2 (OME-NGFF 0.4) or Zarr v3
//! (OME-NGFF 0.5) on a filesystem, read and written with the `zarrs` crate.
//!
//! An input is a store whose root is an OME-Zarr multiscale image group (its first,
//! full-resolution dataset is read) or a bare array. The last two axes are y and x;
//! leading axes (z, t, or a channel axis of length 1) index 2-D slices, segmented one
//! by one. Samples are uint8 or uint16 (scaled to [0, 1] by 255 or 65535, as PNG/TIFF
//! readers do) or float32 (as is).
//!
//! The output is an OME-Zarr image of the same Zarr version, shape, chunking (and
//! sharding) and NGFF axes and scale as the input's full-resolution level, holding the
//! membrane probability as uint8 (0-255) or float32. Every chunk and metadata document
//! is written through [`super::atomic`] (temporary file, then rename), so a reader, or
//! a worker resuming after a crash, never sees a half-written chunk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::Array2;
use serde_json::{Value, json};
use zarrs::array::{Array, ArrayMetadata};
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::{
    Bytes, OffsetBytesIterator, StorageError, StoreKey, StorePrefix, WritableStorageTraits,
};

use super::atomic::write_atomic;

use crate::error::{Error, Result};
use crate::tiling::Region;
/// The Zarr library skipseg reads and writes with (for tools and tests that make stores).
pub use zarrs;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Zarr {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Zarr format version of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ZarrVersion {
    V2,
    V3,
}

/// Sample type of an input array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SampleType {
    U8,
    U16,
    F32,
}

/// Is `path` a Zarr store (a folder with Zarr v2 or v3 metadata at its root)?
pub fn is_zarr_store(path: &Path) -> bool {
    path.is_dir()
        && ["zarr.json", ".zgroup", ".zarray"]
            .iter()
            .any(|f| path.join(f).is_file())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "cannot read Zarr metadata",
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not valid JSON: {e}")))
}

fn read_json_if_exists(path: &Path) -> Result<Option<Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A lower-resolution level of an input pyramid (OME-NGFF dataset k >= 1) whose shape
/// follows from the level above by integer factors: the output gets the same level,
/// averaged from its own level above.
#[derive(Debug, Clone)]
pub struct PyramidLevel {
    /// The dataset path.
    pub path: String,
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    /// Per axis: how many pixels of the level above make one here.
    pub factors: Vec<u64>,
    /// The input level's array metadata document.
    metadata: Value,
}

/// An OME-Zarr (or bare Zarr) image or volume opened for reading.
pub struct ZarrImage {
    /// The store's root folder.
    pub root: PathBuf,
    /// The array's path inside the store ("" when the root is the array).
    pub array_path: String,
    pub version: ZarrVersion,
    pub shape: Vec<u64>,
    /// Chunk shape (for a sharded v3 array: the shard shape).
    pub chunks: Vec<u64>,
    pub sample: SampleType,
    /// Axis names (from the NGFF metadata, or z/y/x by position).
    pub axes: Vec<String>,
    /// The NGFF version of the input, when it had NGFF metadata.
    pub ngff_version: Option<String>,
    /// The input's first multiscale (NGFF), kept for the output's metadata.
    multiscale: Option<Value>,
    /// The input array's own metadata document (`.zarray` or `zarr.json`).
    array_metadata: Value,
    /// The input's lower-resolution levels (those with integer factors, in order).
    pub levels: Vec<PyramidLevel>,
    array: Array<FilesystemStore>,
}

impl std::fmt::Debug for ZarrImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrImage")
            .field("root", &self.root)
            .field("array_path", &self.array_path)
            .field("version", &self.version)
            .field("shape", &self.shape)
            .field("chunks", &self.chunks)
            .field("sample", &self.sample)
            .field("axes", &self.axes)
            .finish()
    }
}

/// Group attributes of a store's root, and its Zarr version.
fn root_node(root: &Path) -> Result<(ZarrVersion, Option<Value>, bool)> {
    if let Some(doc) = read_json_if_exists(&root.join("zarr.json"))? {
        let is_group = doc.get("node_type").and_then(Value::as_str) == Some("group");
        let attrs = doc.get("attributes").cloned();
        return Ok((ZarrVersion::V3, attrs, is_group));
    }
    if root.join(".zgroup").is_file() {
        return Ok((
            ZarrVersion::V2,
            read_json_if_exists(&root.join(".zattrs"))?,
            true,
        ));
    }
    if root.join(".zarray").is_file() {
        return Ok((ZarrVersion::V2, None, false));
    }
    Err(bad(
        root,
        "not a Zarr store (no zarr.json, .zgroup or .zarray at its root)",
    ))
}

/// The elements of `ranges` of `array` as floats divided by `full_scale` (255 or 65535
/// for 8/16-bit samples: intensities or probabilities in [0, 1]; 1 for float32).
fn retrieve_unit<T, S>(
    array: &Array<S>,
    ranges: &[std::ops::Range<u64>],
    full_scale: f32,
) -> std::result::Result<Vec<f32>, zarrs::array::ArrayError>
where
    T: zarrs::array::ElementOwned + Into<f32>,
    S: ?Sized + zarrs::storage::ReadableStorageTraits + 'static,
{
    Ok(array
        .retrieve_array_subset::<Vec<T>>(&ranges)?
        .into_iter()
        .map(|v| v.into() / full_scale)
        .collect())
}

/// Shape and chunk shape from an array metadata document (v2 or v3).
fn shape_and_chunks(version: ZarrVersion, doc: &Value) -> Option<(Vec<u64>, Vec<u64>)> {
    let nums =
        |v: &Value| -> Option<Vec<u64>> { v.as_array()?.iter().map(Value::as_u64).collect() };
    let shape = nums(doc.get("shape")?)?;
    let chunks = match version {
        ZarrVersion::V2 => nums(doc.get("chunks")?)?,
        ZarrVersion::V3 => nums(
            doc.get("chunk_grid")?
                .get("configuration")?
                .get("chunk_shape")?,
        )?,
    };
    Some((shape, chunks))
}

/// The scale of an NGFF dataset (its `scale` coordinate transformation).
fn dataset_scale(dataset: &Value) -> Option<Vec<f64>> {
    dataset
        .get("coordinateTransformations")?
        .as_array()?
        .iter()
        .find(|t| t.get("type").and_then(Value::as_str) == Some("scale"))?
        .get("scale")?
        .as_array()?
        .iter()
        .map(Value::as_f64)
        .collect()
}

/// The levels below the first of a multiscale, as long as each follows from the one
/// above by integer scale factors (the NGFF scales' ratios) with the matching shape.
fn pyramid_levels(
    root: &Path,
    version: ZarrVersion,
    ms: &Value,
    shape0: &[u64],
) -> Result<Vec<PyramidLevel>> {
    let datasets = ms
        .get("datasets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut levels = Vec::new();
    let mut above_shape = shape0.to_vec();
    for pair in datasets.windows(2) {
        let (Some(path), Some(s_above), Some(s_here)) = (
            pair[1].get("path").and_then(Value::as_str),
            dataset_scale(&pair[0]),
            dataset_scale(&pair[1]),
        ) else {
            break;
        };
        let doc_path = root.join(path).join(match version {
            ZarrVersion::V2 => ".zarray",
            ZarrVersion::V3 => "zarr.json",
        });
        let Some(doc) = read_json_if_exists(&doc_path)? else {
            break;
        };
        let Some((shape, chunks)) = shape_and_chunks(version, &doc) else {
            break;
        };
        if s_above.len() != shape.len()
            || s_here.len() != shape.len()
            || shape.len() != above_shape.len()
        {
            break;
        }
        let factors: Option<Vec<u64>> = s_above
            .iter()
            .zip(&s_here)
            .zip(shape.iter().zip(&above_shape))
            .map(|((&a, &b), (&n, &above))| {
                let r = b / a;
                let f = r.round();
                let fits = f >= 1.0
                    && (r - f).abs() < 1e-6
                    && (n == above.div_ceil(f as u64) || n == (above / f as u64).max(1));
                fits.then_some(f as u64)
            })
            .collect();
        let Some(factors) = factors else {
            break;
        };
        above_shape = shape.clone();
        levels.push(PyramidLevel {
            path: path.trim_matches('/').to_string(),
            shape,
            chunks,
            factors,
            metadata: doc,
        });
    }
    Ok(levels)
}

impl ZarrImage {
    /// Open the store at `root`: an OME-Zarr image group (its first dataset) or an array.
    pub fn open(root: &Path) -> Result<Self> {
        let (version, attrs, is_group) = root_node(root)?;
        let (multiscale, ngff_version) = match (&attrs, version) {
            (Some(a), ZarrVersion::V3) => {
                let ome = a.get("ome");
                (
                    ome.and_then(|o| o.get("multiscales"))
                        .and_then(|m| m.get(0))
                        .cloned(),
                    ome.and_then(|o| o.get("version"))
                        .and_then(Value::as_str)
                        .map(String::from),
                )
            }
            (Some(a), ZarrVersion::V2) => {
                let m = a.get("multiscales").and_then(|m| m.get(0)).cloned();
                let v = m
                    .as_ref()
                    .and_then(|m| m.get("version"))
                    .and_then(Value::as_str)
                    .map(String::from);
                (m, v)
            }
            _ => (None, None),
        };
        let array_path = if is_group {
            let ms = multiscale.as_ref().ok_or_else(|| {
                bad(
                    root,
                    "a Zarr group without OME-NGFF multiscales metadata: give the path of \
                     the image group or of the array itself",
                )
            })?;
            ms.get("datasets")
                .and_then(|d| d.get(0))
                .and_then(|d| d.get("path"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad(root, "OME-NGFF multiscales without datasets[0].path"))?
                .trim_matches('/')
                .to_string()
        } else {
            String::new()
        };
        let array_dir = root.join(&array_path);
        let array_metadata = match version {
            ZarrVersion::V3 => read_json(&array_dir.join("zarr.json"))?,
            ZarrVersion::V2 => read_json(&array_dir.join(".zarray"))?,
        };
        let store = FilesystemStore::new(root)
            .map_err(|e| bad(root, format!("cannot open as a Zarr store: {e}")))?;
        let array = Array::open(Arc::new(store), &format!("/{array_path}"))
            .map_err(|e| bad(&array_dir, format!("cannot open the Zarr array: {e}")))?;
        let shape = array.shape().to_vec();
        let n = shape.len();
        if !(2..=5).contains(&n) {
            return Err(bad(
                &array_dir,
                format!("the array has {n} dimensions; 2 to 5 (..., y, x) are supported"),
            ));
        }
        if shape.contains(&0) {
            return Err(bad(
                &array_dir,
                format!("the array is empty: shape {shape:?}"),
            ));
        }
        let dt = array.data_type();
        let sample = if *dt == zarrs::array::data_type::uint8() {
            SampleType::U8
        } else if *dt == zarrs::array::data_type::uint16() {
            SampleType::U16
        } else if *dt == zarrs::array::data_type::float32() {
            SampleType::F32
        } else {
            return Err(bad(
                &array_dir,
                format!("data type {dt} is not supported (uint8, uint16 or float32)"),
            ));
        };
        let chunks: Vec<u64> = array
            .chunk_shape(&vec![0; n])
            .map_err(|e| bad(&array_dir, format!("chunk grid: {e}")))?
            .iter()
            .map(|c| c.get())
            .collect();
        let regular = array
            .chunk_grid_shape()
            .iter()
            .zip(shape.iter().zip(&chunks))
            .all(|(&g, (&s, &c))| g == s.div_ceil(c));
        if !regular {
            return Err(bad(
                &array_dir,
                "only regular chunk grids are supported (every chunk the same shape)",
            ));
        }
        let axes: Vec<String> = match multiscale.as_ref().and_then(|m| m.get("axes")) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|ax| match ax {
                    Value::String(s) => s.clone(),
                    other => other
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                })
                .collect(),
            _ => ["t", "c", "z", "y", "x"][5 - n..]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        if axes.len() != n {
            return Err(bad(
                root,
                format!(
                    "OME-NGFF lists {} axes for an array of {n} dimensions",
                    axes.len()
                ),
            ));
        }
        let yx: Vec<String> = axes[n - 2..].iter().map(|a| a.to_lowercase()).collect();
        if yx != ["y", "x"] {
            return Err(bad(
                root,
                format!(
                    "the last two axes must be y and x, not {:?}",
                    &axes[n - 2..]
                ),
            ));
        }
        for (a, &len) in axes.iter().zip(&shape).take(n - 2) {
            let channel = a.eq_ignore_ascii_case("c")
                || multiscale
                    .as_ref()
                    .and_then(|m| m.get("axes"))
                    .and_then(Value::as_array)
                    .and_then(|v| v.iter().find(|x| x.get("name") == Some(&json!(a))))
                    .and_then(|x| x.get("type"))
                    == Some(&json!("channel"));
            if channel && len > 1 {
                return Err(bad(
                    root,
                    format!(
                        "axis {a} holds {len} channels; the model reads one (extract the \
                         channel to segment first)"
                    ),
                ));
            }
        }
        let levels = match &multiscale {
            Some(ms) => pyramid_levels(root, version, ms, &shape)?,
            None => Vec::new(),
        };
        Ok(Self {
            root: root.to_path_buf(),
            array_path,
            version,
            shape,
            chunks,
            sample,
            axes,
            ngff_version,
            multiscale,
            array_metadata,
            levels,
            array,
        })
    }

    pub fn height(&self) -> usize {
        self.shape[self.shape.len() - 2] as usize
    }

    pub fn width(&self) -> usize {
        self.shape[self.shape.len() - 1] as usize
    }

    /// Shape of the leading (slice-indexing) axes.
    pub fn leading_shape(&self) -> &[u64] {
        &self.shape[..self.shape.len() - 2]
    }

    /// Number of 2-D slices.
    pub fn slices(&self) -> usize {
        self.leading_shape().iter().product::<u64>() as usize
    }

    /// The leading-axis index of slice `s` (C order).
    pub fn slice_index(&self, s: usize) -> Vec<u64> {
        let lead = self.leading_shape();
        let mut idx = vec![0; lead.len()];
        let mut rest = s as u64;
        for (i, &n) in lead.iter().enumerate().rev() {
            idx[i] = rest % n;
            rest /= n;
        }
        idx
    }

    /// The slice number of a leading-axis index (C order).
    pub fn slice_number(&self, idx: &[u64]) -> usize {
        idx.iter()
            .zip(self.leading_shape())
            .fold(0u64, |acc, (&i, &n)| acc * n + i) as usize
    }

    /// Intensities of rectangle `r` of slice `s`, scaled to [0, 1] by the sample type.
    pub fn read_rect(&self, s: usize, r: &Region) -> Result<Array2<f32>> {
        let mut ranges: Vec<std::ops::Range<u64>> =
            self.slice_index(s).into_iter().map(|i| i..i + 1).collect();
        ranges.push(r.y0 as u64..r.y1 as u64);
        ranges.push(r.x0 as u64..r.x1 as u64);
        let err = |e: zarrs::array::ArrayError| {
            bad(
                &self.root.join(&self.array_path),
                format!(
                    "cannot read chunks of slice {s}, rows {}..{}: {e}",
                    r.y0, r.y1
                ),
            )
        };
        let values = match self.sample {
            SampleType::U8 => retrieve_unit::<u8, _>(&self.array, &ranges, 255.0),
            SampleType::U16 => retrieve_unit::<u16, _>(&self.array, &ranges, 65535.0),
            SampleType::F32 => retrieve_unit::<f32, _>(&self.array, &ranges, 1.0),
        }
        .map_err(err)?;
        Array2::from_shape_vec((r.height(), r.width()), values)
            .map_err(|e| bad(&self.root, format!("chunk data of the wrong size: {e}")))
    }
}

/// A filesystem store whose every write is a temporary file renamed into place (zarrs'
/// own filesystem store writes in place). Partial writes are not offered, so zarrs
/// always writes whole chunks.
#[derive(Debug)]
pub struct AtomicDirStore {
    root: PathBuf,
}

impl AtomicDirStore {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key.trim_start_matches('/'))
    }
}

fn storage_error(e: Error) -> StorageError {
    StorageError::Other(e.to_string())
}

impl WritableStorageTraits for AtomicDirStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let path = self.path_of(key.as_str());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomic(&path, &value).map_err(storage_error)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        _offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        Err(StorageError::Other(format!(
            "{}: partial writes are not atomic and not offered",
            key.as_str()
        )))
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        match std::fs::remove_file(self.path_of(key.as_str())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        match std::fs::remove_dir_all(self.path_of(prefix.as_str())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}

/// Set every `bytes` codec's endianness to little and every `blosc` codec's type size
/// to `typesize`, recursively (sharding nests codecs), and drop array-to-array codecs
/// other than `transpose` (they were for the input's data type).
fn adapt_codecs(codecs: &Value, typesize: usize) -> Value {
    let Some(list) = codecs.as_array() else {
        return codecs.clone();
    };
    let mut out = Vec::new();
    for c in list {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| c.as_str())
            .unwrap_or("");
        let mut c = if c.is_string() {
            json!({ "name": name })
        } else {
            c.clone()
        };
        match name {
            "bytes" => {
                c["configuration"] = json!({ "endian": "little" });
            }
            "blosc" => {
                if let Some(cfg) = c.get_mut("configuration").and_then(Value::as_object_mut) {
                    cfg.insert("typesize".into(), json!(typesize));
                }
            }
            "sharding_indexed" => {
                if let Some(cfg) = c.get_mut("configuration").and_then(Value::as_object_mut) {
                    for key in ["codecs", "index_codecs"] {
                        if let Some(inner) = cfg.get(key).cloned() {
                            cfg.insert(key.into(), adapt_codecs(&inner, typesize));
                        }
                    }
                }
            }
            "transpose" => {}
            // array-to-array codecs made for the input's values (scale/offset, bit
            // rounding, ...) have no meaning for probabilities
            n if !is_bytes_to_bytes(n) => continue,
            _ => {}
        }
        out.push(c);
    }
    Value::Array(out)
}

fn is_bytes_to_bytes(name: &str) -> bool {
    matches!(
        name,
        "blosc" | "gzip" | "zstd" | "crc32c" | "bz2" | "zlib" | "numcodecs.zlib"
    )
}

/// The metadata document of an output array like an input array (`m`: its document).
fn output_array_metadata(
    version: ZarrVersion,
    m: &Value,
    shape: &[u64],
    chunks: &[u64],
    axes: &[String],
    float: bool,
) -> Value {
    match version {
        ZarrVersion::V2 => json!({
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": if float { "<f4" } else { "|u1" },
            "compressor": m.get("compressor").cloned().unwrap_or(Value::Null),
            "fill_value": if float { json!(0.0) } else { json!(0) },
            "order": "C",
            "filters": Value::Null,
            "dimension_separator": m.get("dimension_separator").cloned().unwrap_or(json!(".")),
        }),
        ZarrVersion::V3 => json!({
            "zarr_format": 3,
            "node_type": "array",
            "shape": shape,
            "data_type": if float { "float32" } else { "uint8" },
            "chunk_grid": m["chunk_grid"].clone(),
            "chunk_key_encoding": m["chunk_key_encoding"].clone(),
            "fill_value": if float { json!(0.0) } else { json!(0) },
            "codecs": adapt_codecs(&m["codecs"], if float { 4 } else { 1 }),
            "attributes": {},
            // OME-NGFF 0.5 requires the axis names as the array's dimension names
            "dimension_names": axes,
        }),
    }
}

/// The output's multiscale: the input's, with its full-resolution dataset and the
/// levels the output reproduces (or one made from the axes when the input had no NGFF
/// metadata).
fn output_multiscale(like: &ZarrImage, array_path: &str, name: &str) -> Value {
    let mut ms = like.multiscale.clone().unwrap_or_else(|| {
        json!({
            "axes": like.axes.iter().map(|a| json!({
                "name": a,
                "type": if a == "t" { "time" } else if a == "c" { "channel" } else { "space" },
            })).collect::<Vec<_>>(),
            "datasets": [{
                "path": array_path,
                "coordinateTransformations": [{"type": "scale", "scale": vec![1.0; like.shape.len()]}],
            }],
        })
    });
    if let Some(all) = ms.get("datasets").and_then(Value::as_array).cloned() {
        let mut kept: Vec<Value> = all.into_iter().take(1 + like.levels.len()).collect();
        kept[0]["path"] = json!(array_path);
        ms["datasets"] = json!(kept);
    }
    ms["name"] = json!(name);
    if like.version == ZarrVersion::V2 {
        ms["version"] = json!("0.4");
    } else if let Some(obj) = ms.as_object_mut() {
        // NGFF 0.5 keeps the version beside "multiscales", not inside
        obj.remove("version");
    }
    ms
}

/// An OME-Zarr probability map being written, chunk by chunk.
pub struct ZarrOutput {
    pub root: PathBuf,
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    pub float: bool,
    array: Array<AtomicDirStore>,
    /// Path of the full-resolution array.
    array_path: String,
    /// The lower-resolution levels, with their arrays.
    levels: Vec<(PyramidLevel, Array<AtomicDirStore>)>,
}

impl ZarrOutput {
    /// Create the output image at `root` shaped like `like` (or open it, when a
    /// previous or concurrent run created it: every run writes the same documents, each
    /// atomically, so concurrent workers may race here harmlessly). `provenance` is
    /// stored in the group's attributes under "skipseg".
    pub fn create_or_open(
        root: &Path,
        like: &ZarrImage,
        float: bool,
        provenance: Value,
    ) -> Result<Self> {
        let array_path = if like.array_path.is_empty() {
            "0".to_string()
        } else {
            like.array_path.clone()
        };
        let store = Arc::new(AtomicDirStore::new(root));
        let make = |doc: &Value, path: &str| -> Result<Array<AtomicDirStore>> {
            let metadata: ArrayMetadata = serde_json::from_value(doc.clone())
                .map_err(|e| bad(root, format!("output array metadata: {e}")))?;
            Array::new_with_metadata(store.clone(), &format!("/{path}"), metadata).map_err(|e| {
                bad(
                    root,
                    format!("cannot make an output array like the input's: {e}"),
                )
            })
        };
        let array_doc = output_array_metadata(
            like.version,
            &like.array_metadata,
            &like.shape,
            &like.chunks,
            &like.axes,
            float,
        );
        let array = make(&array_doc, &array_path)?;
        let mut level_docs = Vec::new();
        let mut levels = Vec::new();
        for level in &like.levels {
            let doc = output_array_metadata(
                like.version,
                &level.metadata,
                &level.shape,
                &level.chunks,
                &like.axes,
                float,
            );
            levels.push((level.clone(), make(&doc, &level.path)?));
            level_docs.push((level.path.clone(), doc));
        }
        let ms = output_multiscale(like, &array_path, "membrane probability (skipseg)");
        let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialize");
        let write_if_absent = |path: PathBuf, doc: &Value| -> Result<()> {
            if path.is_file() {
                return Ok(());
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                    path: parent.to_path_buf(),
                    action: "cannot create folder",
                    source,
                })?;
            }
            write_atomic(&path, &pretty(doc))
        };
        match like.version {
            ZarrVersion::V2 => {
                write_if_absent(root.join(&array_path).join(".zarray"), &array_doc)?;
                for (path, doc) in &level_docs {
                    write_if_absent(root.join(path).join(".zarray"), doc)?;
                }
                write_if_absent(
                    root.join(".zattrs"),
                    &json!({ "multiscales": [ms], "skipseg": provenance }),
                )?;
                write_if_absent(root.join(".zgroup"), &json!({ "zarr_format": 2 }))?;
            }
            ZarrVersion::V3 => {
                write_if_absent(root.join(&array_path).join("zarr.json"), &array_doc)?;
                for (path, doc) in &level_docs {
                    write_if_absent(root.join(path).join("zarr.json"), doc)?;
                }
                write_if_absent(
                    root.join("zarr.json"),
                    &json!({
                        "zarr_format": 3,
                        "node_type": "group",
                        "attributes": {
                            "ome": { "version": "0.5", "multiscales": [ms] },
                            "skipseg": provenance,
                        },
                    }),
                )?;
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            shape: like.shape.clone(),
            chunks: like.chunks.clone(),
            float,
            array,
            array_path,
            levels,
        })
    }

    /// Number of lower-resolution levels the output has.
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// Fill every lower-resolution level from the level above (which must be complete):
    /// each output chunk is the mean of the `factors` block of pixels above it (blocks
    /// cut by the array's edge average what they hold), read and written chunk by
    /// chunk, atomically. Deterministic: workers that run it at once write the same
    /// bytes.
    pub fn build_pyramid(&self) -> Result<()> {
        let reader = Arc::new(
            FilesystemStore::new(&self.root)
                .map_err(|e| bad(&self.root, format!("cannot open as a Zarr store: {e}")))?,
        );
        let mut above_path = self.array_path.clone();
        let mut above_shape = self.shape.clone();
        for (level, dst) in &self.levels {
            let src = Array::open(reader.clone(), &format!("/{above_path}"))
                .map_err(|e| bad(&self.root, format!("cannot open level {above_path}: {e}")))?;
            let n = level.shape.len();
            let grid: Vec<u64> = (0..n)
                .map(|a| level.shape[a].div_ceil(level.chunks[a]))
                .collect();
            let chunk_count: u64 = grid.iter().product();
            for c in 0..chunk_count {
                // chunk index (C order), its clipped region here and the region above
                let mut index = vec![0u64; n];
                let mut rest = c;
                for a in (0..n).rev() {
                    index[a] = rest % grid[a];
                    rest /= grid[a];
                }
                let d0: Vec<u64> = (0..n).map(|a| index[a] * level.chunks[a]).collect();
                let dl: Vec<u64> = (0..n)
                    .map(|a| level.chunks[a].min(level.shape[a] - d0[a]))
                    .collect();
                let ranges: Vec<std::ops::Range<u64>> = (0..n)
                    .map(|a| {
                        let f = level.factors[a];
                        d0[a] * f..((d0[a] + dl[a]) * f).min(above_shape[a])
                    })
                    .collect();
                let err = |e: zarrs::array::ArrayError| {
                    bad(&self.root, format!("level {above_path}: {e}"))
                };
                let values = if self.float {
                    retrieve_unit::<f32, _>(&src, &ranges, 1.0)
                } else {
                    retrieve_unit::<u8, _>(&src, &ranges, 255.0)
                }
                .map_err(err)?;
                let sl: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
                // mean of each factor block, into the chunk (C order, full chunk shape)
                let chunk_len: usize = level.chunks.iter().product::<u64>() as usize;
                let mut sums = vec![0f64; chunk_len];
                let mut counts = vec![0u32; chunk_len];
                let mut src_index = vec![0u64; n];
                for v in values {
                    let at = src_index
                        .iter()
                        .zip(level.chunks.iter().zip(&level.factors))
                        .fold(0usize, |at, (&i, (&c, &f))| {
                            at * c as usize + (i / f) as usize
                        });
                    sums[at] += v as f64;
                    counts[at] += 1;
                    for a in (0..n).rev() {
                        src_index[a] += 1;
                        if src_index[a] < sl[a] {
                            break;
                        }
                        src_index[a] = 0;
                    }
                }
                let means: Vec<f32> = sums
                    .iter()
                    .zip(&counts)
                    .map(|(&s, &k)| if k > 0 { (s / k as f64) as f32 } else { 0.0 })
                    .collect();
                let stored = if self.float {
                    dst.store_chunk(&index, means.as_slice())
                } else {
                    let bytes: Vec<u8> = means.iter().map(|&p| super::probability_u8(p)).collect();
                    dst.store_chunk(&index, bytes.as_slice())
                };
                stored.map_err(|e| {
                    bad(
                        &self.root,
                        format!("cannot write chunk {index:?} of level {}: {e}", level.path),
                    )
                })?;
            }
            above_path = level.path.clone();
            above_shape = level.shape.clone();
        }
        Ok(())
    }

    /// Write the chunks of a chunk-aligned block: `lead_chunk` is the block's chunk
    /// index along the leading axes, rows and columns span `region` (whose edges are
    /// chunk edges or the array's), and `slices[i]` is the region's probability for the
    /// i-th slice of that leading chunk (C order, slices inside the array only). Every
    /// chunk is written whole (the part outside the array as 0), atomically.
    pub fn write_block(
        &self,
        lead_chunk: &[u64],
        region: &Region,
        slices: &[Array2<f32>],
    ) -> Result<()> {
        let n = self.shape.len();
        let (ch, cw) = (self.chunks[n - 2] as usize, self.chunks[n - 1] as usize);
        assert!(
            region.y0.is_multiple_of(ch) && region.x0.is_multiple_of(cw),
            "block not chunk-aligned"
        );
        let lead_chunks = &self.chunks[..n - 2];
        let lead_shape = &self.shape[..n - 2];
        // in-bounds extent of the leading chunk, per axis
        let lead_extent: Vec<u64> = (0..n - 2)
            .map(|i| {
                let start = lead_chunk[i] * lead_chunks[i];
                lead_chunks[i].min(lead_shape[i] - start)
            })
            .collect();
        assert_eq!(
            slices.len() as u64,
            lead_extent.iter().product::<u64>(),
            "one output per slice of the block"
        );
        let chunk_len: usize = self.chunks.iter().product::<u64>() as usize;
        let lead_len: usize = lead_chunks.iter().product::<u64>() as usize;
        for cy in (region.y0..region.y1).step_by(ch) {
            for cx in (region.x0..region.x1).step_by(cw) {
                let mut probs = vec![0f32; chunk_len];
                for l in 0..lead_len {
                    // local leading index of chunk element block l (C order over the
                    // chunk's leading shape), and whether it is inside the array
                    let mut rest = l as u64;
                    let mut local = vec![0u64; n - 2];
                    for i in (0..n - 2).rev() {
                        local[i] = rest % lead_chunks[i];
                        rest /= lead_chunks[i];
                    }
                    if local.iter().zip(&lead_extent).any(|(a, e)| a >= e) {
                        continue;
                    }
                    let s = local
                        .iter()
                        .zip(&lead_extent)
                        .fold(0u64, |acc, (&a, &e)| acc * e + a)
                        as usize;
                    let src = &slices[s];
                    for y in 0..ch.min(region.y1 - cy) {
                        let ry = cy + y - region.y0;
                        let base = l * ch * cw + y * cw;
                        for x in 0..cw.min(region.x1 - cx) {
                            probs[base + x] = src[[ry, cx + x - region.x0]];
                        }
                    }
                }
                let mut index: Vec<u64> = lead_chunk.to_vec();
                index.push((cy / ch) as u64);
                index.push((cx / cw) as u64);
                let result = if self.float {
                    self.array.store_chunk(&index, probs.as_slice())
                } else {
                    let bytes: Vec<u8> = probs.iter().map(|&p| super::probability_u8(p)).collect();
                    self.array.store_chunk(&index, bytes.as_slice())
                };
                result
                    .map_err(|e| bad(&self.root, format!("cannot write chunk {index:?}: {e}")))?;
            }
        }
        Ok(())
    }
}
