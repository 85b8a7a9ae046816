//! Batch-norm folding preserves outputs; tiled inference with a halo of at least the
//! receptive radius equals whole-image inference. Runs on the golden fixture models
//! (three architectures with random weights and random batch-norm statistics).

use ndarray::Array2;
use skipseg_runtime::onnx::{self, op_histogram};
use skipseg_runtime::tiling::{Blend, Tiling};
use skipseg_runtime::{Options, Segmenter, npy, segment_image};

mod common;
use common::fixture_dirs as fixtures;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    common::max_abs(a, b)
}

/// Tolerance 1e-5: folding changes the order of a few float operations per pixel
/// (scale folded into weights), worth ~1e-7 relative on probabilities; a wrong scale,
/// shift or channel order moves outputs by 1e-2 or more.
#[test]
fn folding_removes_every_batch_norm_and_keeps_outputs() {
    for dir in fixtures() {
        let proto = onnx::read_model(&dir.join("model.onnx")).expect("model");
        let name = dir.display().to_string();
        let plain = Segmenter::with_options(
            proto.clone(),
            &name,
            &Options {
                fold_batch_norm: false,
                fuse_convolutions: false,
                fuse_every_convolution: false,
                chain_int8: true,
                threads: 1,
                monte_carlo_dropout: false,
            },
        )
        .expect("loads");
        let folded = Segmenter::with_options(
            proto.clone(),
            &name,
            &Options {
                fuse_convolutions: false,
                fuse_every_convolution: false,
                ..Options::default()
            },
        )
        .expect("loads");
        let bn_before = op_histogram(&proto)
            .iter()
            .find(|(op, _)| op == "BatchNormalization")
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let bn_after = op_histogram(folded.proto())
            .iter()
            .find(|(op, _)| op == "BatchNormalization")
            .map(|(_, n)| *n)
            .unwrap_or(0);
        assert_eq!(bn_after, 0, "{name}: batch norms left after folding");
        for k in 0..2 {
            let x = npy::read(&dir.join(format!("input{k}.npy"))).expect("input");
            let a = plain.run(x.view()).expect("plain");
            let b = folded.run(x.view()).expect("folded");
            let d = max_abs(
                a.as_slice().expect("contiguous"),
                b.as_slice().expect("contiguous"),
            );
            eprintln!(
                "{name} input{k}: {bn_before} batch norms, folded vs unfolded max abs diff {d:e}"
            );
            assert!(d <= 1e-5, "{name}: folding changed outputs by {d}");
        }
    }
}

fn random_image(h: usize, w: usize, seed: u64) -> Array2<f32> {
    let mut s = seed;
    Array2::from_shape_simple_fn((h, w), || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32
    })
}

/// Tiles whose windows are moved inside the image and carry a halo of the receptive
/// radius equal the whole image run as one window (computed without the tiler) to
/// float rounding: every core pixel sees all the context it would in one window, and
/// the network's own zero padding at the image border.
#[test]
fn tiles_with_receptive_halo_equal_whole_image() {
    for dir in fixtures() {
        let seg = Segmenter::from_path(&dir.join("model.onnx")).expect("loads");
        let arch = &seg.meta().arch;
        let (factor, radius) = (arch.down_factor(), arch.plan().receptive_radius());
        let halo = radius.div_ceil(factor) * factor;
        // large enough for windows (tile + 2 halo) smaller than the image; sides that are
        // and are not multiples of the factor
        for (h, w) in [(5 * halo + 11, 4 * halo + 3), (4 * halo, 6 * halo)] {
            let img = random_image(h, w, (h * w) as u64);
            let whole = common::one_window(&seg, &img);
            for tile in [halo, halo + 2 * factor] {
                let tiling = Tiling {
                    tile: Some(tile),
                    halo: Some(radius),
                };
                let plan = seg.tile_plan(&tiling, h, w).expect("plan");
                assert!(plan.rows * plan.cols > 1 && plan.window_h < h);
                let tiled = segment_image(&seg, img.view(), tiling, Blend::Crop).expect("tiled");
                let d = common::max_abs(whole.iter(), tiled.iter());
                assert!(
                    d <= 1e-5,
                    "{}: tile {tile} differs from whole-image by {d}",
                    dir.display()
                );
                // linear blending mixes in halo pixels, which see the window edge: close
                // to, but not exactly, the whole-image result
                let linear =
                    segment_image(&seg, img.view(), tiling, Blend::Linear).expect("linear");
                let d = common::max_abs(whole.iter(), linear.iter());
                assert!(
                    d <= 0.1,
                    "{}: linear blend far from whole-image ({d})",
                    dir.display()
                );
            }
            // a halo far below the radius shows seams: the equality above can fail
            let tiling = Tiling {
                tile: Some(factor),
                halo: Some(0),
            };
            let tiled = segment_image(&seg, img.view(), tiling, Blend::Crop).expect("tiled");
            let d = common::max_abs(whole.iter(), tiled.iter());
            assert!(d > 1e-3, "{}: no halo yet no seams ({d})", dir.display());
        }
    }
}

/// Test-time averaging inside the tiler equals averaging done by hand: segment each
/// flipped / transposed copy of the whole image, map it back, average. (Image sides are
/// multiples of the down-sampling factor so the single window is symmetric.)
#[test]
fn dihedral_averaging_equals_averaging_by_hand() {
    use skipseg_runtime::{Averaging, Inference, segment_image_with};
    let dir = fixtures().into_iter().next().expect("a fixture");
    let seg = Segmenter::from_path(&dir.join("model.onnx")).expect("model");
    let factor = seg.meta().arch.down_factor();
    let (h, w) = (4 * factor, 3 * factor);
    let img = Array2::from_shape_fn((h, w), |(y, x)| {
        (((y * 37 + x * 11) % 29) as f32 / 29.0 + (y as f32 / h as f32)) / 2.0
    });
    let whole = Tiling {
        tile: Some(4096),
        halo: Some(2 * factor),
    };
    let how = Inference {
        tiling: whole,
        blend: Blend::Crop,
        averaging: Averaging::Dihedral,
        monte_carlo: None,
    };
    let averaged = segment_image_with(&seg, img.view(), &how).expect("averaged");
    let mut by_hand = Array2::<f32>::zeros((h, w));
    for t in Averaging::Dihedral.symmetries() {
        let seen = t.apply(img.view());
        let out = segment_image(&seg, seen.view(), whole, Blend::Crop).expect("run");
        by_hand = by_hand + t.undo(out.view());
    }
    by_hand.mapv_inplace(|v| v / 8.0);
    let single = segment_image(&seg, img.view(), whole, Blend::Crop).expect("single");
    let diff = max_abs(
        averaged.as_slice().expect("std"),
        by_hand.as_slice().expect("std"),
    );
    // the order of the eight additions differs: float rounding only
    assert!(diff < 1e-6, "max abs difference {diff}");
    let change = max_abs(
        averaged.as_slice().expect("std"),
        single.as_slice().expect("std"),
    );
    assert!(change > 1e-4, "averaging must change the output: {change}");
}

/// The measured halo is what it claims, checked against one whole-image window computed
/// without the tiler: tiles with it equal the whole image within 1/255; one step less
/// (if it was tried) does not. It is recorded in the model's metadata, and the default
/// plan uses it.
#[test]
fn measured_halo_is_the_smallest_that_equals_the_whole_image() {
    use skipseg_runtime::engine::{HALO_TOLERANCE, MEASURE_TILE_PX, record_halo};
    for dir in fixtures() {
        let mut proto = onnx::read_model(&dir.join("model.onnx")).expect("model");
        let seg = Segmenter::from_proto(proto.clone(), "fixture").expect("loads");
        let factor = seg.meta().arch.down_factor();
        let radius = seg.meta().arch.plan().receptive_radius();
        let side = MEASURE_TILE_PX + 2 * radius.div_ceil(factor) * factor + 3 * factor;
        let reference = random_image(side, side + factor, 7);
        let m = record_halo(&mut proto, "fixture", std::slice::from_ref(&reference), 1)
            .expect("measured");
        let tuned = Segmenter::from_proto(proto, "fixture").expect("loads");
        assert_eq!(tuned.meta().inference.halo, Some(m.halo));
        assert_eq!(tuned.default_halo(), m.halo);
        let whole = common::one_window(&seg, &reference);
        let tiled = |halo: usize| {
            let tiling = Tiling {
                tile: Some(MEASURE_TILE_PX.max(halo)),
                halo: Some(halo),
            };
            segment_image(&seg, reference.view(), tiling, Blend::Crop).expect("tiled")
        };
        let d = common::max_abs(whole.iter(), tiled(m.halo).iter());
        assert!(
            d <= HALO_TOLERANCE,
            "{}: halo {} differs by {d}",
            dir.display(),
            m.halo
        );
        if m.halo > factor {
            let d = common::max_abs(whole.iter(), tiled(m.halo - factor).iter());
            assert!(
                d > HALO_TOLERANCE,
                "{}: a smaller halo would do ({d})",
                dir.display()
            );
        }
    }
}
