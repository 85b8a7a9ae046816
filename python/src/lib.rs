//! `skipseg._skipseg`: the Python binding of the skipseg runtime (PyO3). numpy in, numpy
//! out; the GIL is released while the engine runs; the runtime's errors become the
//! exceptions of `skipseg` (see python/skipseg/__init__.py and _skipseg.pyi, which
//! document the API). Every call goes through the same library functions as
//! `segment-run`: `models::load_model`, `engine::pixels::segment_pixels`,
//! `volume::segment_volume`, `metrics::evaluate_stack`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyReadonlyArray3, PyUntypedArray};
use numpy::{PyArrayDescrMethods, PyArrayMethods, PyUntypedArrayMethods, dtype};
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use skipseg_runtime::engine::pixels::{PixelView, segment_pixels};
use skipseg_runtime::metrics;
use skipseg_runtime::models::{self, LoadOptions};
use skipseg_runtime::tiling::{Blend, Tiling};
use skipseg_runtime::volume::{Shard, VolumeOptions, segment_volume};
use skipseg_runtime::{Averaging, Error, Inference, MonteCarlo, Segmenter, ThreadPool};

pyo3::create_exception!(
    _skipseg,
    SkipsegError,
    PyException,
    "Base class of every error skipseg raises."
);
pyo3::create_exception!(
    _skipseg,
    ModelError,
    SkipsegError,
    "The model file is unreadable, not a skipseg model, or not what its package declares."
);
pyo3::create_exception!(
    _skipseg,
    InputError,
    SkipsegError,
    "The image cannot be segmented as given (shape, size, no finite pixel, tiling)."
);
pyo3::create_exception!(
    _skipseg,
    FileError,
    SkipsegError,
    "A file or Zarr store could not be read or written, or is not what it should be."
);
pyo3::create_exception!(
    _skipseg,
    EngineError,
    SkipsegError,
    "The inference engine failed."
);
pyo3::create_exception!(
    _skipseg,
    CancelledError,
    SkipsegError,
    "The progress callback asked the work to stop (it returned False)."
);

/// The runtime's error as the matching Python exception, with the runtime's message.
fn py_err(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::NotOnnx { .. }
        | Error::BadModel { .. }
        | Error::Metadata { .. }
        | Error::Package { .. }
        | Error::Arch(_) => ModelError::new_err(message),
        Error::InputShape { .. }
        | Error::NotMultiple { .. }
        | Error::Tiling(_)
        | Error::Input { .. } => InputError::new_err(message),
        Error::Io { .. } | Error::Image { .. } | Error::Zarr { .. } => FileError::new_err(message),
        Error::Engine { .. } => EngineError::new_err(message),
        Error::Cancelled { .. } => CancelledError::new_err(message),
    }
}

fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn parse_averaging(text: Option<&str>, seg: &Segmenter) -> PyResult<Averaging> {
    Ok(match text {
        None => seg.meta().inference.averaging,
        Some("none") => Averaging::None,
        Some("flips") => Averaging::Flips,
        Some("dihedral") => Averaging::Dihedral,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "averaging={other:?}: expected None (the model's default), 'none', 'flips' or \
                 'dihedral'"
            )));
        }
    })
}

fn averaging_name(a: Averaging) -> &'static str {
    match a {
        Averaging::None => "none",
        Averaging::Flips => "flips",
        Averaging::Dihedral => "dihedral",
    }
}

fn parse_blend(text: &str) -> PyResult<Blend> {
    match text {
        "crop" => Ok(Blend::Crop),
        "linear" => Ok(Blend::Linear),
        other => Err(PyValueError::new_err(format!(
            "blend={other:?}: expected 'crop' or 'linear'"
        ))),
    }
}

/// Options shared by `predict` and `segment_zarr`, as `segment-run predict` reads them.
struct RunOptions {
    tile: Option<usize>,
    halo: Option<usize>,
    averaging: Option<String>,
    blend: String,
    threads: Option<usize>,
    mc_samples: usize,
    seed: u64,
}

impl RunOptions {
    fn inference(&self, seg: &Segmenter) -> PyResult<Inference> {
        Ok(Inference {
            tiling: Tiling {
                tile: self.tile,
                halo: self.halo,
            },
            blend: parse_blend(&self.blend)?,
            averaging: parse_averaging(self.averaging.as_deref(), seg)?,
            monte_carlo: (self.mc_samples > 0).then_some(MonteCarlo {
                samples: self.mc_samples,
                seed: self.seed,
            }),
        })
    }

    fn threads(&self) -> PyResult<usize> {
        match self.threads {
            Some(0) => Err(PyValueError::new_err("threads must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(all_cores()),
        }
    }
}

/// A segmentation model: the shipped one, an ONNX file, an embedded model or a
/// bioimage.io package (folder or zip).
#[pyclass(module = "skipseg._skipseg", frozen)]
struct Model {
    path: Option<PathBuf>,
    /// The deterministic network, as `segment-run predict` loads it.
    seg: Arc<Segmenter>,
    /// The network with its dropout masks exposed, loaded at the first `mc_samples > 0`.
    monte_carlo: Mutex<Option<Arc<Segmenter>>>,
    /// One thread pool per thread count asked for, kept for the next call.
    pools: Mutex<Vec<(usize, ThreadPool)>>,
}

impl Model {
    fn load(path: Option<&Path>, monte_carlo_dropout: bool) -> Result<Segmenter, Error> {
        models::load_model(
            path,
            &LoadOptions {
                threads: 1,
                monte_carlo_dropout,
                every_convolution: false,
            },
        )
    }

    fn pool(&self, threads: usize) -> Result<ThreadPool, Error> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
            return Ok(p.clone());
        }
        let p = ThreadPool::new(threads)?;
        pools.push((threads, p.clone()));
        Ok(p)
    }

    /// The engine for `mc_samples` (the Monte-Carlo one, loaded once, when > 0).
    fn engine(&self, mc_samples: usize) -> Result<Arc<Segmenter>, Error> {
        if mc_samples == 0 {
            return Ok(self.seg.clone());
        }
        if !self.seg.has_dropout_masks() {
            return Err(Error::BadModel {
                source_name: self.seg.source_name().to_string(),
                reason: "mc_samples needs a model trained with dropout (segment-train \
                         --dropout P); this one has none"
                    .into(),
            });
        }
        let mut mc = self.monte_carlo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seg) = mc.as_ref() {
            return Ok(seg.clone());
        }
        let seg = Arc::new(Self::load(self.path.as_deref(), true)?);
        *mc = Some(seg.clone());
        Ok(seg)
    }
}

/// A 2-D numpy array of a supported dtype, borrowed read-only.
enum Pixels<'py> {
    U8(PyReadonlyArray2<'py, u8>),
    U16(PyReadonlyArray2<'py, u16>),
    F32(PyReadonlyArray2<'py, f32>),
}

impl Pixels<'_> {
    fn view(&self) -> PixelView<'_> {
        match self {
            Pixels::U8(a) => PixelView::U8(a.as_array()),
            Pixels::U16(a) => PixelView::U16(a.as_array()),
            Pixels::F32(a) => PixelView::F32(a.as_array()),
        }
    }
}

fn describe(array: &Bound<'_, PyUntypedArray>) -> String {
    format!("{} array of shape {:?}", array.dtype(), array.shape())
}

/// `image` as 2-D uint8 / uint16 / float32 pixels, or a TypeError / InputError saying
/// what it is instead.
fn pixels<'py>(image: &Bound<'py, PyAny>) -> PyResult<Pixels<'py>> {
    let py = image.py();
    let array = image.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "image must be a numpy array, got {}",
            image
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    if array.ndim() != 2 {
        return Err(InputError::new_err(format!(
            "image must be 2-D [height, width] (segment a stack slice by slice), got a {}",
            describe(array)
        )));
    }
    let dt = array.dtype();
    if dt.is_equiv_to(&dtype::<u8>(py)) {
        Ok(Pixels::U8(image.extract()?))
    } else if dt.is_equiv_to(&dtype::<u16>(py)) {
        Ok(Pixels::U16(image.extract()?))
    } else if dt.is_equiv_to(&dtype::<f32>(py)) {
        Ok(Pixels::F32(image.extract()?))
    } else {
        Err(PyTypeError::new_err(format!(
            "image must be uint8, uint16 or float32 (as segment-run reads 8-bit, 16-bit and \
             float images), got a {}; convert it first, e.g. image.astype(numpy.float32) \
             for intensities already in [0, 1]",
            describe(array)
        )))
    }
}

/// A Python progress callback `(done, total) -> bool | None`, called with the GIL taken
/// again; `False` or an exception stops the work.
struct Progress<'a> {
    callback: Option<&'a Py<PyAny>>,
    total: u64,
    done: u64,
    stop: &'a AtomicBool,
    raised: &'a Mutex<Option<PyErr>>,
}

impl Progress<'_> {
    fn tick(&mut self) {
        self.done += 1;
        let Some(cb) = self.callback else { return };
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        Python::attach(|py| match cb.call1(py, (self.done, self.total)) {
            Ok(v) => {
                if v.bind(py).is_instance_of::<pyo3::types::PyBool>()
                    && !v.bind(py).is_truthy().unwrap_or(true)
                {
                    self.stop.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                *self.raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                self.stop.store(true, Ordering::Relaxed);
            }
        });
    }
}

#[pymethods]
impl Model {
    /// Load a model: None for the shipped model (models/isbi-small-bce.onnx, compiled
    /// in), or the path of an ONNX file exported by segment-train, an embedded model
    /// (segment-run optimize --embedded) or a bioimage.io package (folder or .zip).
    #[new]
    #[pyo3(signature = (path=None))]
    fn new(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Self> {
        let p = path.clone();
        let seg = py
            .detach(move || Self::load(p.as_deref(), false))
            .map_err(py_err)?;
        Ok(Self {
            path,
            seg: Arc::new(seg),
            monte_carlo: Mutex::new(None),
            pools: Mutex::new(Vec::new()),
        })
    }

    /// What the model is and how it runs by default: a dict with `source`,
    /// `architecture`, `channels`, `down_factor`, `receptive_radius` (px),
    /// `default_halo` (px), `default_averaging`, `preprocessing` (dict, with a
    /// `description`), `dropout` (whether it has dropout masks for mc_samples).
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let meta = self.seg.meta();
        let d = PyDict::new(py);
        d.set_item("source", self.seg.source_name())?;
        d.set_item("architecture", &meta.arch.name)?;
        d.set_item("channels", meta.arch.in_channels)?;
        d.set_item("down_factor", meta.arch.down_factor())?;
        d.set_item("receptive_radius", meta.arch.plan().receptive_radius())?;
        d.set_item("default_halo", self.seg.default_halo())?;
        d.set_item(
            "default_averaging",
            averaging_name(meta.inference.averaging),
        )?;
        let prep = PyDict::new(py);
        prep.set_item("per_image", meta.preprocessing.per_image)?;
        prep.set_item("mean", meta.preprocessing.mean)?;
        prep.set_item("std", meta.preprocessing.std)?;
        prep.set_item("description", meta.preprocessing.describe())?;
        d.set_item("preprocessing", prep)?;
        d.set_item("dropout", self.seg.has_dropout_masks())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "skipseg.Model({:?}, architecture={:?})",
            self.seg.source_name(),
            self.seg.meta().arch.name
        )
    }

    /// Membrane probabilities (float32, same shape) of a 2-D uint8 / uint16 / float32
    /// image, computed as `segment-run predict --float` computes them for an image file
    /// with these pixels and options.
    ///
    /// tile, halo: tile core and context in pixels (None: the model's defaults, the
    /// whole image when it fits); averaging: None (the model's default), 'none',
    /// 'flips' or 'dihedral'; blend: 'crop' or 'linear'; threads: engine threads (None:
    /// every core); mc_samples, seed: Monte-Carlo dropout (models trained with dropout);
    /// progress: called as progress(done_tiles, total_tiles) after each tile; returning
    /// False stops the work with CancelledError; out: a float32 array of the image's
    /// shape to write into (and return) instead of a new one. The GIL is released while
    /// the engine runs. NaN / inf pixels are missing (an image with no finite pixel is
    /// refused).
    #[pyo3(signature = (image, *, tile=None, halo=None, averaging=None, blend="crop", threads=None, mc_samples=0, seed=0, progress=None, out=None))]
    #[allow(clippy::too_many_arguments)]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        tile: Option<usize>,
        halo: Option<usize>,
        averaging: Option<String>,
        blend: &str,
        threads: Option<usize>,
        mc_samples: usize,
        seed: u64,
        progress: Option<Py<PyAny>>,
        out: Option<Bound<'py, PyArray2<f32>>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let opts = RunOptions {
            tile,
            halo,
            averaging,
            blend: blend.to_string(),
            threads,
            mc_samples,
            seed,
        };
        let threads = opts.threads()?;
        let pixels = pixels(image)?;
        let view = pixels.view();
        let (h, w) = view.dim();
        let seg = self.engine(mc_samples).map_err(py_err)?;
        let how = opts.inference(&seg)?;
        let total = if h > 0 && w > 0 {
            let plan = seg.tile_plan(&how.tiling, h, w).map_err(py_err)?;
            (plan.rows * plan.cols) as u64
        } else {
            0
        };
        let pool = self.pool(threads).map_err(py_err)?;
        // the caller's float32 array of the image's shape, written in place (any
        // strides), or a new one
        let target = match out {
            Some(a) => {
                if a.shape() != [h, w] {
                    return Err(InputError::new_err(format!(
                        "out has shape {:?}, the image [{h}, {w}]",
                        a.shape()
                    )));
                }
                a
            }
            None => Array2::<f32>::zeros((h, w)).into_pyarray(py),
        };
        let mut writable = target.try_readwrite().map_err(|e| {
            PyValueError::new_err(format!("out is not writable (or is the image): {e}"))
        })?;
        let mut result_view = writable.as_array_mut();
        let stop = AtomicBool::new(false);
        let raised = Mutex::new(None);
        let seg_ref: &Segmenter = &seg;
        let result = py.detach(|| {
            let mut progress = Progress {
                callback: progress.as_ref(),
                total,
                done: 0,
                stop: &stop,
                raised: &raised,
            };
            let mut run = || {
                segment_pixels(
                    seg_ref,
                    view,
                    "image",
                    &how,
                    &mut || progress.tick(),
                    &|| stop.load(Ordering::Relaxed),
                    result_view.view_mut(),
                )
            };
            if threads == 1 {
                run()
            } else {
                pool.install(run)
            }
        });
        drop(writable);
        if let Some(e) = raised.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        result.map_err(py_err)?;
        Ok(target)
    }
}

/// The shard worker of `segment-run predict IN.zarr -o OUT.zarr --shard I/N`: segment
/// an OME-Zarr image or volume (uint8 / uint16 / float32, ..., y, x) into an OME-Zarr
/// output of the same shape and chunks (uint8, or float32 with float=True). shard=(i, n)
/// computes the i-th of n parts of the output's chunks; n workers fill one output, and
/// re-running skips finished chunks (resumable). model: a Model, or None for the
/// shipped one. progress(done_blocks, total_blocks) is called as blocks finish (its
/// return value is ignored: stop a worker by interrupting it and run it again later).
/// Returns the worker's report as a dict.
#[pyfunction]
#[pyo3(signature = (input, output, *, shard=(0, 1), model=None, tile=None, halo=None, averaging=None, blend="crop", threads=None, float=false, mc_samples=0, seed=0, progress=None))]
#[allow(clippy::too_many_arguments)]
fn segment_zarr<'py>(
    py: Python<'py>,
    input: PathBuf,
    output: PathBuf,
    shard: (usize, usize),
    model: Option<Py<Model>>,
    tile: Option<usize>,
    halo: Option<usize>,
    averaging: Option<String>,
    blend: &str,
    threads: Option<usize>,
    float: bool,
    mc_samples: usize,
    seed: u64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let (index, count) = shard;
    if count == 0 || index >= count {
        return Err(PyValueError::new_err(format!(
            "shard=({index}, {count}): expected (i, n) with 0 <= i < n"
        )));
    }
    let model = match model {
        Some(m) => m,
        None => Py::new(py, Model::new(py, None)?)?,
    };
    let model = model.get();
    let opts = RunOptions {
        tile,
        halo,
        averaging,
        blend: blend.to_string(),
        threads,
        mc_samples,
        seed,
    };
    let threads = opts.threads()?;
    let seg = model.engine(mc_samples).map_err(py_err)?;
    let inference = opts.inference(&seg)?;
    let pool = model.pool(threads).map_err(py_err)?;
    let seg_ref: &Segmenter = &seg;
    let raised = Mutex::new(None);
    let report = py.detach(|| {
        let run = || {
            let image = skipseg_runtime::io::zarr::ZarrImage::open(&input)?;
            let opts = VolumeOptions {
                inference,
                float,
                shard: Shard { index, count },
            };
            segment_volume(seg_ref, &image, &output, &opts, &mut |done, total| {
                if let Some(cb) = &progress {
                    Python::attach(|py| {
                        if let Err(e) = cb.call1(py, (done, total)) {
                            *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        }
                    });
                }
            })
        };
        if threads == 1 {
            run()
        } else {
            pool.install(run)
        }
    });
    if let Some(e) = raised.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let r = report.map_err(py_err)?;
    let d = PyDict::new(py);
    d.set_item("blocks_total", r.blocks_total)?;
    d.set_item("blocks_in_shard", r.blocks_in_shard)?;
    d.set_item("blocks_skipped", r.blocks_skipped)?;
    d.set_item("blocks_computed", r.blocks_computed)?;
    d.set_item("slices", r.slices)?;
    d.set_item("pixels_computed", r.pixels_computed)?;
    d.set_item("pyramid_levels_built", r.pyramid_levels_built)?;
    d.set_item("seconds", r.seconds)?;
    Ok(d)
}

/// Slices of a 2-D or 3-D uint8 / uint16 / float32 / bool array as float images in
/// [0, 1], scaled as image files are read.
fn slices(name: &str, a: &Bound<'_, PyAny>) -> PyResult<Vec<Array2<f32>>> {
    fn stack<T: Copy + numpy::Element>(
        a: &Bound<'_, PyAny>,
        ndim: usize,
        f: impl Fn(T) -> f32,
    ) -> PyResult<Vec<Array2<f32>>> {
        if ndim == 2 {
            let v: PyReadonlyArray2<'_, T> = a.extract()?;
            Ok(vec![v.as_array().mapv(&f)])
        } else {
            let v: PyReadonlyArray3<'_, T> = a.extract()?;
            Ok(v.as_array().outer_iter().map(|s| s.mapv(&f)).collect())
        }
    }
    let py = a.py();
    let array = a
        .cast::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a numpy array")))?;
    let ndim = array.ndim();
    if ndim != 2 && ndim != 3 {
        return Err(InputError::new_err(format!(
            "{name} must be 2-D [height, width] or a stack [slices, height, width], got a {}",
            describe(array)
        )));
    }
    let dt = array.dtype();
    if dt.is_equiv_to(&dtype::<u8>(py)) {
        stack::<u8>(a, ndim, |v| f32::from(v) / 255.0)
    } else if dt.is_equiv_to(&dtype::<u16>(py)) {
        stack::<u16>(a, ndim, |v| f32::from(v) / 65535.0)
    } else if dt.is_equiv_to(&dtype::<f32>(py)) {
        stack::<f32>(a, ndim, |v| v)
    } else if dt.is_equiv_to(&dtype::<bool>(py)) {
        stack::<bool>(a, ndim, |v| if v { 1.0 } else { 0.0 })
    } else {
        Err(PyTypeError::new_err(format!(
            "{name} must be uint8, uint16, float32 or bool, got a {}",
            describe(array)
        )))
    }
}

/// The ISBI 2012 scores of a proposal, as `segment-run eval --json` reports them for
/// image files with these pixels: labels (ground truth: cell 255 / 1.0, membrane 0) and
/// proposal (cell-high in [0, 1]; a membrane probability with membrane_high=True), each
/// 2-D or a stack [slices, height, width] of the same shape; thinning=True is the
/// official definition. Returns a dict: v_rand, v_info, their thresholds, per-slice
/// scores and the mean scores at every threshold.
#[pyfunction]
#[pyo3(signature = (labels, proposal, *, thinning=true, membrane_high=false))]
fn evaluate<'py>(
    py: Python<'py>,
    labels: &Bound<'py, PyAny>,
    proposal: &Bound<'py, PyAny>,
    thinning: bool,
    membrane_high: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let gt = slices("labels", labels)?;
    let mut prop = slices("proposal", proposal)?;
    if gt.len() != prop.len() || gt.iter().zip(&prop).any(|(g, p)| g.dim() != p.dim()) {
        return Err(InputError::new_err(format!(
            "labels and proposal differ in shape: {} slices of {:?} vs {} of {:?}",
            gt.len(),
            gt.first().map(|g| g.dim()),
            prop.len(),
            prop.first().map(|p| p.dim())
        )));
    }
    if membrane_high {
        for p in &mut prop {
            p.mapv_inplace(|v| 1.0 - v);
        }
    }
    let json = py.detach(|| {
        let names: Vec<String> = (0..gt.len()).map(|k| format!("slice {k}")).collect();
        metrics::evaluate_images(&gt, &prop, thinning)
            .to_json(&names, thinning)
            .to_string()
    });
    py.import("json")?.call_method1("loads", (json,))
}

/// Instance labels of a membrane probability map, as `segment-run label --probabilities`
/// computes them (runtime/src/labels.rs): seeds, seeded watershed, agglomeration by the
/// mean probability along shared borders, fragments joined to a neighbour. probability:
/// 2-D [height, width] or a stack [slices, height, width], float32 in [0, 1] (uint8 and
/// uint16 are scaled by 1/255 and 1/65535). Returns uint32 ids of the same shape, every
/// pixel labelled, ids running on across a stack's slices from first_id. Options left at
/// None take `segment-run label`'s defaults.
#[pyfunction]
#[pyo3(signature = (probability, *, seeds=None, seed_sigma=None, seed_max=None,
    merge_threshold=None, min_size=None, first_id=1))]
#[allow(clippy::too_many_arguments)] // the keyword options of `segment-run label`
fn label<'py>(
    py: Python<'py>,
    probability: &Bound<'py, PyAny>,
    seeds: Option<&str>,
    seed_sigma: Option<f32>,
    seed_max: Option<f32>,
    merge_threshold: Option<f32>,
    min_size: Option<usize>,
    first_id: u32,
) -> PyResult<Bound<'py, PyAny>> {
    use skipseg_runtime::labels::{LabelOptions, SeedKind, label_membranes};
    let d = LabelOptions::default();
    let seeds = match seeds {
        None => d.seeds,
        Some("distance") => SeedKind::Distance,
        Some("minima") => SeedKind::Minima,
        Some("components") => SeedKind::Components,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "seeds must be 'distance', 'minima' or 'components', not {other:?}"
            )));
        }
    };
    let options = LabelOptions {
        seeds,
        seed_sigma: seed_sigma.unwrap_or(d.seed_sigma),
        seed_max_probability: seed_max.unwrap_or(d.seed_max_probability),
        merge_threshold: merge_threshold.unwrap_or(d.merge_threshold),
        min_size: min_size.unwrap_or(d.min_size),
    };
    options.check().map_err(PyValueError::new_err)?;
    if first_id == 0 {
        return Err(PyValueError::new_err(
            "first_id must be at least 1 (0 means no label)",
        ));
    }
    let stack = probability
        .cast::<PyUntypedArray>()
        .map(|a| a.ndim() == 3)
        .unwrap_or(false);
    let maps = slices("probability", probability)?;
    let labelled = py.detach(|| {
        let mut next = first_id;
        let mut out = Vec::with_capacity(maps.len());
        for m in &maps {
            let p: Vec<f32> = m.iter().copied().collect();
            let l = label_membranes(&p, m.ncols(), &options, next);
            next = next.saturating_add(l.count);
            out.push(l.labels);
        }
        out
    });
    let (h, w) = maps.first().map_or((0, 0), |m| m.dim());
    let flat: Vec<u32> = labelled.concat();
    if stack {
        let a = ndarray::Array3::from_shape_vec((maps.len(), h, w), flat).expect("stack shape");
        Ok(a.into_pyarray(py).into_any())
    } else {
        let a = Array2::from_shape_vec((h, w), flat).expect("slice shape");
        Ok(a.into_pyarray(py).into_any())
    }
}

#[pymodule]
fn _skipseg(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(segment_zarr, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(label, m)?)?;
    m.add("SkipsegError", py.get_type::<SkipsegError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("FileError", py.get_type::<FileError>())?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("CancelledError", py.get_type::<CancelledError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
