//! The golden parity fixtures: small architectures with seeded random weights, exported
//! to ONNX, with burn's outputs on seeded inputs stored as `.npy` (see fixtures/README.md).

use std::path::{Path, PathBuf};

use skipseg_runtime::arch::{ArchSpec, BlockKind, Level};
use skipseg_runtime::npy;
use skipseg_runtime::onnx::{self, Preprocessing};

use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::Backend;

use crate::backend::Cpu;
use crate::model::ResFcn;
use crate::{export, synthetic, tensor};

/// The name of case output `k` computed on another backend `tag` (`gpu-output0.npy`).
pub fn device_output_name(tag: &str, k: usize) -> String {
    format!("{tag}-output{k}.npy")
}

/// The fixture cases: small architectures that together cover every block type and
/// every switch, each run at two input sizes.
pub fn cases() -> Vec<(ArchSpec, [(usize, usize); 2])> {
    let level = |block, width, repeats| Level {
        block,
        width,
        repeats,
    };
    use BlockKind::*;
    let base = |name: &str| ArchSpec {
        name: name.into(),
        in_channels: 1,
        stem_width: 4,
        down: vec![],
        across: level(Simple, 8, 1),
        up: vec![],
        head_width: 4,
        long_skips: true,
        short_skips: true,
        batch_norm: true,
        dropout: 0.0,
        bn_epsilon: 1e-5,
    };
    vec![
        (
            ArchSpec {
                down: vec![level(Simple, 8, 1), level(Bottleneck, 16, 2)],
                across: level(Bottleneck, 32, 1),
                up: vec![level(Bottleneck, 16, 2), level(Simple, 8, 1)],
                ..base("bottleneck-two-levels")
            },
            [(32, 32), (24, 40)],
        ),
        (
            ArchSpec {
                down: vec![level(Basic, 8, 2)],
                across: level(Basic, 8, 1),
                up: vec![level(Basic, 6, 1)],
                short_skips: false,
                batch_norm: false,
                ..base("basic-no-short-skips-no-bn")
            },
            [(16, 16), (22, 34)],
        ),
        (
            ArchSpec {
                down: vec![
                    level(Simple, 8, 1),
                    level(Simple, 12, 1),
                    level(Simple, 16, 1),
                ],
                across: level(Simple, 16, 1),
                up: vec![
                    level(Simple, 12, 1),
                    level(Simple, 8, 1),
                    level(Simple, 4, 1),
                ],
                long_skips: false,
                dropout: 0.3,
                ..base("simple-three-levels-no-long-skips")
            },
            [(32, 32), (40, 56)],
        ),
    ]
}

/// Write every case into `out/<case name>/`; returns the folders written.
pub fn write_all(out: &Path) -> Result<Vec<PathBuf>, skipseg_runtime::Error> {
    let device = Default::default();
    let mut written = Vec::new();
    for (i, (spec, sizes)) in cases().into_iter().enumerate() {
        spec.validate()?;
        let dir = out.join(&spec.name);
        std::fs::create_dir_all(&dir).map_err(|source| skipseg_runtime::Error::Io {
            path: dir.clone(),
            action: "cannot create folder",
            source,
        })?;
        let model = synthetic::randomize(ResFcn::<Cpu>::new(&spec, &device), 1000 + i as u64);
        let proto = export::to_onnx(&model, Preprocessing::default());
        onnx::write_model(&proto, &dir.join("model.onnx"))?;
        for (k, (h, w)) in sizes.into_iter().enumerate() {
            let input =
                synthetic::random_input(spec.in_channels, h, w, 2000 + 10 * i as u64 + k as u64);
            let output =
                tensor::to_array(model.probability(tensor::from_array::<Cpu>(&input, &device)));
            npy::write(&dir.join(format!("input{k}.npy")), input.into_dyn().view())?;
            npy::write(
                &dir.join(format!("output{k}.npy")),
                output.into_dyn().view(),
            )?;
        }
        written.push(dir);
    }
    Ok(written)
}

/// Run every case's model (the same seeded weights as [`write_all`], built on the CPU and
/// moved through a binary record) on backend `B`'s `device`, on the case's committed
/// inputs, and write the probabilities as `out/<case>/<tag>-output{k}.npy` beside them.
/// The committed `model.onnx` must hold the weights these seeds give (else the outputs
/// would belong to another model): its initializers are compared bit for bit. Returns the files written.
pub fn write_device_outputs<B: Backend>(
    out: &Path,
    tag: &str,
    device: &B::Device,
) -> Result<Vec<PathBuf>, skipseg_runtime::Error> {
    let cpu = Default::default();
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let mut written = Vec::new();
    for (i, (spec, sizes)) in cases().into_iter().enumerate() {
        let dir = out.join(&spec.name);
        let model = synthetic::randomize(ResFcn::<Cpu>::new(&spec, &cpu), 1000 + i as u64);
        let onnx_path = dir.join("model.onnx");
        let committed = onnx::read_model(&onnx_path)?;
        let proto = export::to_onnx(&model, Preprocessing::default());
        // every committed initializer as the seeds give it (today's export may add
        // constants, e.g. the dropout masks' default ones)
        let fresh: Vec<&onnx::pb::TensorProto> =
            proto.graph.iter().flat_map(|g| &g.initializer).collect();
        let same = committed
            .graph
            .iter()
            .flat_map(|g| &g.initializer)
            .all(|t| fresh.iter().any(|f| f.name == t.name && *f == t));
        if !same {
            return Err(skipseg_runtime::Error::BadModel {
                source_name: onnx_path.display().to_string(),
                reason: "its weights are not the ones the fixture seeds give: regenerate the \
                         fixtures (segment-train fixtures) first"
                    .into(),
            });
        }
        let bytes = recorder
            .record(model.into_record(), ())
            .map_err(|e| record_error(&dir, e))?;
        let record = recorder
            .load(bytes, device)
            .map_err(|e| record_error(&dir, e))?;
        let moved = ResFcn::<B>::new(&spec, device).load_record(record);
        for k in 0..sizes.len() {
            let input = npy::read(&dir.join(format!("input{k}.npy")))?;
            let input = input.into_dimensionality::<ndarray::Ix4>().map_err(|e| {
                skipseg_runtime::Error::BadModel {
                    source_name: dir.join(format!("input{k}.npy")).display().to_string(),
                    reason: format!("not [1, C, H, W]: {e}"),
                }
            })?;
            let output =
                tensor::to_array(moved.probability(tensor::from_array::<B>(&input, device)));
            let path = dir.join(device_output_name(tag, k));
            npy::write(&path, output.into_dyn().view())?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The folder (under the fixtures folder) of the shipped model's outputs on ISBI slices.
pub const SHIPPED_DIR: &str = "shipped";
/// The slices of the ISBI training volume the shipped model is run on: one of the
/// training slices and one of the validation slices (25-29).
pub const SHIPPED_SLICES: [usize; 2] = [0, 27];

/// The name of the shipped model's output on slice `slice` computed on backend `tag`
/// (`gpu-slice27.npy`).
pub fn shipped_output_name(tag: &str, slice: usize) -> String {
    format!("{tag}-slice{slice:02}.npy")
}

/// The file recording which model the shipped outputs belong to: its file name and the
/// CRC-32 of its bytes (`models/isbi-small-bce.onnx crc32 1a2b3c4d`).
pub const SHIPPED_MODEL_RECORD: &str = "model.txt";

/// One line naming `model` and the CRC-32 of its bytes, as [`SHIPPED_MODEL_RECORD`] holds.
pub fn model_record(model: &Path, bytes: &[u8]) -> String {
    format!(
        "{} crc32 {:08x}\n",
        model.display(),
        skipseg_runtime::embedded::format::crc32(bytes)
    )
}

/// The shipped model (an ONNX file as `segment-train export` writes it), loaded into burn
/// on backend `B`'s `device`, run on whole slices `slices` of the image stack `volume`
/// (normalised as its metadata says, one 512x512 window, no averaging: what
/// `segment-run predict --tta none` computes for these slices): the probabilities go to
/// `out/shipped/<tag>-sliceNN.npy`, and `out/shipped/model.txt` records which model they
/// belong to. Returns the files written.
pub fn write_shipped_outputs<B: Backend>(
    model: &Path,
    volume: &Path,
    slices: &[usize],
    out: &Path,
    tag: &str,
    device: &B::Device,
) -> Result<Vec<PathBuf>, skipseg_runtime::Error> {
    let bytes = std::fs::read(model).map_err(|source| skipseg_runtime::Error::Io {
        path: model.into(),
        action: "reading the model",
        source,
    })?;
    let name = model.display().to_string();
    let proto = onnx::decode_model(&bytes, &name)?;
    let (net, prep) = crate::layers::from_onnx::<B>(&proto, &name, device)?;
    let stack = skipseg_runtime::io::read_slices(volume)?;
    let dir = out.join(SHIPPED_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| skipseg_runtime::Error::Io {
        path: dir.clone(),
        action: "creating the folder",
        source,
    })?;
    let mut written = Vec::new();
    for &i in slices {
        let slice = stack.get(i).ok_or_else(|| skipseg_runtime::Error::Image {
            path: volume.into(),
            reason: format!("slice {i} does not exist ({} slices)", stack.len()),
        })?;
        let input = prep.network_input(slice.pixels.view());
        let p = tensor::to_array(net.probability(tensor::from_array::<B>(&input, device)));
        let path = dir.join(shipped_output_name(tag, i));
        npy::write(&path, p.into_dyn().view())?;
        written.push(path);
    }
    let record = dir.join(SHIPPED_MODEL_RECORD);
    skipseg_runtime::io::write_atomic(&record, model_record(model, &bytes).as_bytes())?;
    written.push(record);
    Ok(written)
}

fn record_error(dir: &Path, e: burn::record::RecorderError) -> skipseg_runtime::Error {
    skipseg_runtime::Error::BadModel {
        source_name: dir.display().to_string(),
        reason: format!("moving the weights between backends: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device path on the CPU backend reproduces the committed CPU outputs: the
    /// weights survive the record, the inputs are read back, the files land where the
    /// parity suite looks. (On a GPU, scripts/gpu-parity.sh runs the same function.)
    #[test]
    fn device_outputs_on_the_cpu_backend_equal_the_committed_outputs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let tmp =
            std::env::temp_dir().join(format!("skipseg-device-fixtures-{}", std::process::id()));
        for (spec, _) in cases() {
            let (from, to) = (root.join("fixtures").join(&spec.name), tmp.join(&spec.name));
            std::fs::create_dir_all(&to).expect("test setup");
            for f in ["model.onnx", "input0.npy", "input1.npy"] {
                std::fs::copy(from.join(f), to.join(f)).expect("test setup");
            }
        }
        let written =
            write_device_outputs::<Cpu>(&tmp, "cpu", &Default::default()).expect("writes");
        assert_eq!(written.len(), 2 * cases().len());
        for path in &written {
            let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
            let case = path.parent().and_then(|p| p.file_name()).expect("a case");
            let want = npy::read(
                &root
                    .join("fixtures")
                    .join(case)
                    .join(name.trim_start_matches("cpu-")),
            )
            .expect("committed output");
            let got = npy::read(path).expect("written output");
            assert_eq!(want.shape(), got.shape(), "{}", path.display());
            let worst = want
                .iter()
                .zip(got.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            // the same backend, weights and inputs: the same numbers up to thread timing
            assert!(worst <= 1e-6, "{}: max abs {worst}", path.display());
        }
        // a model.onnx with other weights is refused
        let case = tmp.join(&cases()[0].0.name);
        let other = synthetic::randomize(ResFcn::<Cpu>::new(&cases()[0].0, &Default::default()), 7);
        onnx::write_model(
            &export::to_onnx(&other, Preprocessing::default()),
            &case.join("model.onnx"),
        )
        .expect("test setup");
        assert!(write_device_outputs::<Cpu>(&tmp, "cpu", &Default::default()).is_err());
        std::fs::remove_dir_all(&tmp).ok();
    }

    /// The shipped model's leg on the CPU backend: the ONNX loaded into burn and run on
    /// an ISBI slice equals tract running the same file on the same input (an independent
    /// engine) within 1e-4, the parity suite's tolerance; the record names the model.
    /// On a GPU, scripts/gpu-parity.sh runs the same function on burn-cuda.
    #[test]
    fn shipped_model_in_burn_equals_tract_on_an_isbi_slice() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let model = root.join("models/isbi-small-bce.onnx");
        let volume = root.join("data/isbi2012/train/images");
        let tmp =
            std::env::temp_dir().join(format!("skipseg-shipped-fixtures-{}", std::process::id()));
        let written =
            write_shipped_outputs::<Cpu>(&model, &volume, &[27], &tmp, "cpu", &Default::default())
                .expect("writes");
        assert_eq!(written.len(), 2);
        let got = npy::read(&tmp.join(SHIPPED_DIR).join(shipped_output_name("cpu", 27)))
            .expect("written output");
        let seg = skipseg_runtime::Segmenter::from_path(&model).expect("loads in tract");
        let slice = &skipseg_runtime::io::read_slices(&volume).expect("ISBI slices")[27];
        let input = seg.meta().preprocessing.network_input(slice.pixels.view());
        let want = seg.run(input.into_dyn().view()).expect("tract runs");
        assert_eq!(want.shape(), got.shape());
        let worst = want
            .iter()
            .zip(got.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("shipped model, slice 27: burn (CPU) vs tract max abs {worst:e}");
        assert!(worst <= 1e-4, "max abs {worst}");
        // a real membrane map, not a constant one
        let membrane = want.iter().filter(|v| **v > 0.5).count() as f64 / want.len() as f64;
        assert!(
            (0.1..0.5).contains(&membrane),
            "membrane fraction {membrane}"
        );
        let record = std::fs::read_to_string(tmp.join(SHIPPED_DIR).join(SHIPPED_MODEL_RECORD))
            .expect("record");
        let bytes = std::fs::read(&model).expect("model");
        assert_eq!(record, model_record(&model, &bytes));
        std::fs::remove_dir_all(&tmp).ok();
    }
}
