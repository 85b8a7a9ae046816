//! The golden parity fixtures: small architectures with seeded random weights, exported
//! to ONNX, with burn's outputs on seeded inputs stored as `.npy` (see fixtures/README.md).

use std::path::{Path, PathBuf};

use skipseg_runtime::arch::{ArchSpec, BlockKind, Level};
use skipseg_runtime::npy;
use skipseg_runtime::onnx::{self, Preprocessing};

use crate::backend::Cpu;
use crate::model::ResFcn;
use crate::{export, synthetic, tensor};

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
