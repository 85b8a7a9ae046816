//! The model a subcommand names: the library's [`skipseg_runtime::models`], with the
//! option flags segment-run passes.

use std::path::Path;

use anyhow::Result;
use skipseg_runtime::Segmenter;
use skipseg_runtime::models::{self, LoadOptions};

pub use models::{ModelFile, SHIPPED_CARD as BUILT_IN_CARD, is_embedded_model, read_model};

/// The engine for the model at `path` (see [`models::load_model`]).
/// `every_convolution`: skipseg's kernels take every convolution, also where tract's are
/// faster on this CPU (to compare with the embedded executor, which has no other engine).
pub fn load_model(
    path: Option<&Path>,
    threads: usize,
    monte_carlo_dropout: bool,
    every_convolution: bool,
) -> Result<Segmenter> {
    Ok(models::load_model(
        path,
        &LoadOptions {
            threads,
            monte_carlo_dropout,
            every_convolution,
        },
    )?)
}
