//! The ISBI 2012 training data: image slices and membrane targets, split into training
//! and validation sets.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use skipseg_runtime::io;

/// Failure to load training data, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Read(#[from] skipseg_runtime::Error),
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// One slice and its target.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    /// Intensities in [0, 1].
    pub image: Array2<f32>,
    /// 1 = membrane (label 0), 0 = cell interior (label 255).
    pub membrane: Array2<f32>,
}

/// Training and validation samples.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
}

/// Membrane target from a label slice scaled to [0, 1]: label below one half is membrane.
pub fn membrane_from_label(label: &Array2<f32>) -> Array2<f32> {
    label.mapv(|v| if v < 0.5 { 1.0 } else { 0.0 })
}

/// Load images and labels (PNG folders or TIFF stacks, paired by order) and put the
/// slices whose indices are in `val` into the validation set.
pub fn load(images: &Path, labels: &Path, val: &[usize]) -> Result<Dataset, DataError> {
    let imgs = io::read_slices(images)?;
    let labs = io::read_slices(labels)?;
    if imgs.len() != labs.len() {
        return Err(DataError::Invalid {
            path: labels.into(),
            reason: format!(
                "{} label slices but {} image slices in {}",
                labs.len(),
                imgs.len(),
                images.display()
            ),
        });
    }
    if let Some(&bad) = val.iter().find(|&&i| i >= imgs.len()) {
        return Err(DataError::Invalid {
            path: images.into(),
            reason: format!(
                "validation slice {bad} does not exist ({} slices)",
                imgs.len()
            ),
        });
    }
    let mut ds = Dataset {
        train: Vec::new(),
        val: Vec::new(),
    };
    for (i, (im, lab)) in imgs.into_iter().zip(labs).enumerate() {
        if im.pixels.dim() != lab.pixels.dim() {
            return Err(DataError::Invalid {
                path: labels.into(),
                reason: format!(
                    "{} is {:?} but its image {} is {:?}",
                    lab.name,
                    lab.pixels.dim(),
                    im.name,
                    im.pixels.dim()
                ),
            });
        }
        let sample = Sample {
            name: im.name,
            membrane: membrane_from_label(&lab.pixels),
            image: im.pixels,
        };
        if val.contains(&i) {
            ds.val.push(sample)
        } else {
            ds.train.push(sample)
        }
    }
    if ds.train.is_empty() {
        return Err(DataError::Invalid {
            path: images.into(),
            reason: "no training slices left after the split".into(),
        });
    }
    Ok(ds)
}

/// Parse a validation list like `25-29` or `3,7,11`.
pub fn parse_indices(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}` is not a slice index"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("empty range `{part}`"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists() {
        assert_eq!(
            parse_indices("25-29").expect("ok"),
            vec![25, 26, 27, 28, 29]
        );
        assert_eq!(parse_indices("1, 4,7-8").expect("ok"), vec![1, 4, 7, 8]);
        assert!(parse_indices("a").is_err());
        assert!(parse_indices("5-3").is_err());
    }

    #[test]
    fn isbi_split_and_label_convention() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/isbi2012/train");
        let ds = load(
            &root.join("images"),
            &root.join("labels"),
            &[25, 26, 27, 28, 29],
        )
        .expect("data");
        assert_eq!((ds.train.len(), ds.val.len()), (25, 5));
        assert_eq!(ds.val[0].name, "25.png");
        // about 22% of pixels are membrane (README of the data)
        let frac = ds
            .train
            .iter()
            .map(|s| s.membrane.mean().unwrap_or(0.0))
            .sum::<f32>()
            / 25.0;
        assert!((0.15..0.3).contains(&frac), "membrane fraction {frac}");
    }
}
