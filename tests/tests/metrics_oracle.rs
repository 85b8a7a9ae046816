//! Independent oracle for the ISBI metrics: scikit-image's `adapted_rand_error` and
//! `variation_of_information` on random label images and on real ISBI label images,
//! with thinning off and no proposal background (where the definitions coincide up to
//! the 1/n difference between the N^2 and the pair-count normalisations).
//! Tolerance 1e-3: with n >= 4096 foreground pixels the normalisation difference is
//! below 5e-4, while a wrong contingency table or log base moves scores by > 1e-2.

use ndarray::ArrayD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skipseg_parity::{oracle_python, run_oracle, workspace_root};
use skipseg_runtime::metrics::{components4, scores};
use skipseg_runtime::{io, npy};

const TOLERANCE: f64 = 1e-3;

/// Random rectangles painted over each other: blocky segments like a segmentation.
fn blocky(rng: &mut StdRng, h: usize, w: usize, labels: u32, zero_ok: bool) -> Vec<u32> {
    let mut img = vec![if zero_ok { 0 } else { 1 }; h * w];
    for _ in 0..40 {
        let (y0, x0) = (rng.random_range(0..h), rng.random_range(0..w));
        let (dy, dx) = (rng.random_range(4..h / 2), rng.random_range(4..w / 2));
        let l = rng.random_range(if zero_ok { 0 } else { 1 }..=labels);
        for y in y0..(y0 + dy).min(h) {
            for x in x0..(x0 + dx).min(w) {
                img[y * w + x] = l;
            }
        }
    }
    img
}

#[test]
fn metrics_agree_with_scikit_image() {
    let Some(python) = oracle_python("metrics_agree_with_scikit_image") else {
        return;
    };
    let dir = workspace_root().join("target/metrics-oracle");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut cases: Vec<(Vec<usize>, Vec<u32>, Vec<u32>)> = Vec::new();
    let mut rng = StdRng::seed_from_u64(12);
    for _ in 0..6 {
        let (h, w) = (192, 160);
        cases.push((
            vec![h, w],
            blocky(&mut rng, h, w, 12, true),
            blocky(&mut rng, h, w, 9, false),
        ));
    }
    // real ISBI labels: GT = 4-connected cells of slice k; proposal = cells of slice k+1
    // with all of its membrane pixels as one more segment (so no proposal background)
    let slices =
        io::read_slices(&workspace_root().join("data/isbi2012/train/labels")).expect("ISBI labels");
    for k in 0..4 {
        let w = slices[k].pixels.ncols();
        let cell = |s: &io::Slice| s.pixels.iter().map(|&v| v > 0.5).collect::<Vec<bool>>();
        let (gt, _) = components4(&cell(&slices[k]), w);
        let (mut prop, n) = components4(&cell(&slices[k + 1]), w);
        prop.iter_mut()
            .filter(|v| **v == 0)
            .for_each(|v| *v = n + 1);
        cases.push((vec![slices[k].pixels.nrows(), w], gt, prop));
    }
    for (i, (shape, gt, prop)) in cases.iter().enumerate() {
        let to_array = |v: &Vec<u32>| {
            ArrayD::from_shape_vec(shape.clone(), v.iter().map(|&x| x as f32).collect())
                .expect("shape")
        };
        npy::write(&dir.join(format!("gt{i:02}.npy")), to_array(gt).view()).expect("npy");
        npy::write(&dir.join(format!("prop{i:02}.npy")), to_array(prop).view()).expect("npy");
    }
    let stdout = run_oracle(&python, "skimage_metrics.py", [&dir]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len());
    let mut worst = (0.0f64, 0.0f64);
    for (line, (_, gt, prop)) in lines.iter().zip(&cases) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let ours = scores(gt, prop).expect("foreground");
        let num = |k: &str| v[k].as_f64().expect("number");
        let dr = (ours.rand.f - num("rand_f")).abs();
        let dv = (ours.entropy_gt_given_proposal - num("h_gt_given_prop"))
            .abs()
            .max((ours.entropy_proposal_given_gt - num("h_prop_given_gt")).abs());
        worst = (worst.0.max(dr), worst.1.max(dv));
        assert!(
            dr <= TOLERANCE,
            "{}: Rand F {} vs skimage {}",
            v["name"],
            ours.rand.f,
            num("rand_f")
        );
        assert!(dv <= TOLERANCE, "{}: VI halves differ by {dv}", v["name"]);
    }
    eprintln!(
        "metrics vs scikit-image: {} cases, worst |dRand F| {:e}, worst |dH| {:e}",
        cases.len(),
        worst.0,
        worst.1
    );
}
