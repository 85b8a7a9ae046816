//! Architecture presets: JSON files under `models/` (`table1.json`, `small.json`).

use std::path::{Path, PathBuf};

use skipseg_runtime::arch::ArchSpec;

/// Failure to load a preset, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("{}: cannot read architecture: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: skipseg_runtime::Error,
    },
}

/// Load and validate an architecture description.
pub fn load(path: &Path) -> Result<ArchSpec, PresetError> {
    let text = std::fs::read_to_string(path).map_err(|source| PresetError::Read {
        path: path.into(),
        source,
    })?;
    ArchSpec::from_json(&text).map_err(|source| PresetError::Invalid {
        path: path.into(),
        source,
    })
}

/// The `models/` folder of this workspace (for tests and defaults).
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
}
