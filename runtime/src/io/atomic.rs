//! Write-then-rename: every file skipseg writes appears complete or not at all, and an
//! existing file is never truncated by a failed run. Used by every writer (models,
//! images, arrays, Zarr chunks, checkpoints), so it does not depend on any format.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Write bytes to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            path: p,
            action,
            source,
        }
    };
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io("cannot create", &tmp))?;
        f.write_all(bytes).map_err(io("cannot write", &tmp))?;
        f.sync_all().map_err(io("cannot sync", &tmp))?;
        rename_into_place(&tmp, path).map(drop)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Move a finished temporary file `tmp` to `path` (the commit point of write-then-rename).
pub fn rename_into_place(tmp: &Path, path: &Path) -> Result<PathBuf> {
    std::fs::rename(tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "cannot rename into place",
        source,
    })?;
    Ok(path.to_path_buf())
}

/// A hidden temporary name beside `path`, for write-then-rename.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// A new temporary file beside `path` (renamed into place when complete).
pub fn create_temp(path: &Path) -> Result<(PathBuf, File)> {
    let tmp = temp_sibling(path);
    let file = File::create(&tmp).map_err(|source| Error::Io {
        path: tmp.clone(),
        action: "cannot create output",
        source,
    })?;
    Ok((tmp, file))
}
