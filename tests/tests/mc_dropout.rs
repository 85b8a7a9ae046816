//! Monte-Carlo dropout, burn vs the runtime.
//!
//! - With the same fixed masks, burn's forward pass and the runtime's (tract, with and
//!   without batch-norm folding and convolution fusion) agree within 1e-4, the tolerance
//!   of the other parity tests (f32 sums in different orders over up to a few hundred
//!   terms).
//! - With all masks at their default (ones), and with the masks removed, the runtime
//!   computes burn's deterministic network.
//! - Over many samples, the runtime's per-pixel mean and variance match those of burn's
//!   own dropout (its training-mode `Dropout`, an independent random source): a z test on
//!   the means and a ratio test on the variances, not single samples.
//! - Same seed, same map; another seed, another map; thread count does not matter.

use burn::tensor::Tensor;
use ndarray::{Array2, Array4, ArrayD};
use skipseg_parity::{level, max_abs_diff};
use skipseg_runtime::arch::{ArchSpec, BlockKind};
use skipseg_runtime::passes::dropout::{MaskRng, mask_sites, sample_mask};
use skipseg_runtime::tiling::{Blend, Tiling};
use skipseg_runtime::{Averaging, Inference, MonteCarlo, Options, Preprocessing, Segmenter};
use skipseg_train::backend::{Cpu, CpuTrain};
use skipseg_train::model::ResFcn;
use skipseg_train::{export, synthetic, tensor};

const TOLERANCE: f32 = 1e-4;
const P: f64 = 0.3;

fn spec(block: BlockKind) -> ArchSpec {
    ArchSpec {
        name: "mc".into(),
        in_channels: 1,
        stem_width: 4,
        down: vec![level(block, 8, 2), level(block, 12, 1)],
        across: level(block, 16, 1),
        up: vec![level(block, 12, 1), level(block, 8, 2)],
        head_width: 4,
        long_skips: true,
        short_skips: true,
        batch_norm: true,
        dropout: P,
        bn_epsilon: 1e-5,
    }
}

fn segmenter(proto: &skipseg_runtime::onnx::pb::ModelProto, options: Options) -> Segmenter {
    Segmenter::with_options(proto.clone(), "mc.onnx", &options).expect("loads")
}

fn mc_options(fold: bool) -> Options {
    Options {
        fold_batch_norm: fold,
        fuse_convolutions: fold,
        fuse_every_convolution: false,
        chain_int8: true,
        threads: 1,
        monte_carlo_dropout: true,
    }
}

fn masks_for(spec: &ArchSpec, h: usize, w: usize, seed: u64) -> Vec<ArrayD<f32>> {
    let mut rng = MaskRng::new(&[seed]);
    mask_sites(spec)
        .iter()
        .map(|s| {
            let shape = s.shape(h, w);
            ArrayD::from_shape_vec(shape.to_vec(), sample_mask(&mut rng, shape, P))
                .expect("mask shape")
        })
        .collect()
}

#[test]
fn fixed_masks_give_burn_outputs_and_ones_give_the_deterministic_network() {
    let device = Default::default();
    for (i, block) in [BlockKind::Simple, BlockKind::Basic, BlockKind::Bottleneck]
        .into_iter()
        .enumerate()
    {
        let spec = spec(block);
        let model = synthetic::randomize(ResFcn::<Cpu>::new(&spec, &device), 40 + i as u64);
        let proto = export::to_onnx(&model, Preprocessing::default());
        let (h, w) = (32, 48);
        let x = synthetic::random_input(1, h, w, 7 + i as u64);
        let masks = masks_for(&spec, h, w, 11 + i as u64);
        assert_eq!(masks.len(), 7, "one mask per residual block");
        let burn_masks: Vec<Tensor<Cpu, 4>> = masks
            .iter()
            .map(|m| {
                let a: Array4<f32> = m.clone().into_dimensionality().expect("rank 4");
                tensor::from_array(&a, &device)
            })
            .collect();
        let burn_sample = tensor::to_array(burn::tensor::activation::sigmoid(
            model.forward_with_masks(tensor::from_array(&x, &device), &burn_masks),
        ));
        let burn_plain = tensor::to_array(model.probability(tensor::from_array(&x, &device)));
        let views: Vec<_> = masks.iter().map(|m| m.view()).collect();
        for fold in [false, true] {
            let seg = segmenter(&proto, mc_options(fold));
            assert_eq!(seg.dropout_masks().len(), 7);
            let got = seg
                .run_with_masks(x.view().into_dyn(), &views)
                .expect("runs");
            let d = max_abs_diff(&got, &burn_sample);
            eprintln!("{block:?} fold={fold}: fixed masks, max abs {d:.2e}");
            assert!(d < TOLERANCE, "{block:?} fold={fold}: max abs {d}");
            // every mask at 1: the deterministic network
            let ones = seg.run(x.view().into_dyn()).expect("runs");
            let d = max_abs_diff(&ones, &burn_plain);
            assert!(d < TOLERANCE, "{block:?} fold={fold} ones: max abs {d}");
        }
        // a sample really differs from the deterministic output (the masks act)
        assert!(max_abs_diff(&burn_sample, &burn_plain) > 1e-3);
        // masks removed (the default load): the deterministic network, no mask inputs
        let seg = segmenter(&proto, Options::default());
        assert!(seg.dropout_masks().is_empty());
        let got = seg.run(x.view().into_dyn()).expect("runs");
        let d = max_abs_diff(&got, &burn_plain);
        assert!(d < TOLERANCE, "{block:?} stripped: max abs {d}");
    }
}

/// Per-element mean, (unbiased) variance and the standard error of that variance
/// (from the fourth central moment: the outputs are far from normal, so the normal
/// theory's `2 s^4 / (n - 1)` would understate it).
fn moments(samples: &[Array4<f32>]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = samples.len() as f64;
    let len = samples[0].len();
    let mut mean = vec![0.0; len];
    let (mut m2, mut m4) = (vec![0.0; len], vec![0.0; len]);
    for s in samples {
        for (m, v) in mean.iter_mut().zip(s.iter()) {
            *m += *v as f64 / n;
        }
    }
    for s in samples {
        for (i, v) in s.iter().enumerate() {
            let d = *v as f64 - mean[i];
            m2[i] += d * d / n;
            m4[i] += d.powi(4) / n;
        }
    }
    let var: Vec<f64> = m2.iter().map(|m| m * n / (n - 1.0)).collect();
    let se: Vec<f64> = m2
        .iter()
        .zip(&m4)
        .map(|(m2, m4)| ((m4 - m2 * m2 * (n - 3.0) / (n - 1.0)).max(0.0) / n).sqrt())
        .collect();
    (mean, var, se)
}

#[test]
fn sample_statistics_converge_to_burns_dropout() {
    let device = Default::default();
    let spec = spec(BlockKind::Basic);
    let model = synthetic::randomize(ResFcn::<CpuTrain>::new(&spec, &device), 5);
    let proto = export::to_onnx(&model, Preprocessing::default());
    let (h, w) = (16, 16);
    let x = synthetic::random_input(1, h, w, 3);
    let n = 300;
    // burn: its own Dropout (active on the autodiff backend), batch norms with their
    // running statistics as at inference
    <CpuTrain as burn::tensor::backend::Backend>::seed(&device, 99);
    let burn: Vec<Array4<f32>> = (0..n)
        .map(|_| {
            let logits = model.forward_hooks(
                tensor::from_array(&x, &device),
                &mut |bn, x| {
                    let (m, v) = (bn.running_mean.value(), bn.running_var.value());
                    skipseg_train::model::normalise(bn, x, m, v)
                },
                &mut |d, x| d.forward(x),
            );
            tensor::to_array(burn::tensor::activation::sigmoid(logits))
        })
        .collect();
    let seg = segmenter(&proto, mc_options(true));
    let ours: Vec<Array4<f32>> = (0..n as u64)
        .map(|k| {
            seg.run_sample(x.view().into_dyn(), &[1234, k])
                .expect("runs")
        })
        .collect();
    let (bm, bv, bse) = moments(&burn);
    let (om, ov, ose) = moments(&ours);
    let (mut worst_mean_z, mut worst_var_z) = (0.0f64, 0.0f64);
    let (mut ratios, mut checked) = (Vec::new(), 0);
    for i in 0..bm.len() {
        if bv[i] < 1e-8 || ov[i] < 1e-8 {
            continue;
        }
        checked += 1;
        let z = (bm[i] - om[i]).abs() / ((bv[i] + ov[i]) / n as f64).sqrt();
        worst_mean_z = worst_mean_z.max(z);
        let z = (bv[i] - ov[i]).abs() / (bse[i].powi(2) + ose[i].powi(2)).sqrt();
        worst_var_z = worst_var_z.max(z);
        ratios.push(ov[i] / bv[i]);
    }
    assert!(checked > 200, "{checked} pixels vary");
    // 256 pixels: a max |z| over 4.5 is far beyond chance (p < 7e-6 each)
    assert!(worst_mean_z < 4.5, "means differ: max z {worst_mean_z}");
    assert!(worst_var_z < 4.5, "variances differ: max z {worst_var_z}");
    // and over all pixels together the variances agree closely
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    assert!(
        (0.85..1.18).contains(&median),
        "median variance ratio {median}"
    );
    // and the sampled mean is not the deterministic output (dropout changes it)
    let plain = seg.run(x.view().into_dyn()).expect("runs");
    let moved = plain
        .iter()
        .zip(&om)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "the sampled mean equals the deterministic map"
    );
}

#[test]
fn a_seed_fixes_the_map_and_threads_do_not_matter() {
    let device = Default::default();
    let spec = spec(BlockKind::Bottleneck);
    let model = synthetic::randomize(ResFcn::<Cpu>::new(&spec, &device), 8);
    let proto = export::to_onnx(&model, Preprocessing::per_image());
    let image = Array2::from_shape_fn((70, 90), |(y, x)| {
        ((y * 7 + x * 3) % 23) as f32 / 23.0 * 0.8 + 0.1
    });
    // segment the image with a model loaded with or without its masks kept
    let segment = |threads: usize, keep_masks: bool, mc: Option<MonteCarlo>| {
        let seg = Segmenter::with_options(
            proto.clone(),
            "mc.onnx",
            &Options {
                threads,
                monte_carlo_dropout: keep_masks,
                ..Default::default()
            },
        )
        .expect("loads");
        let how = Inference {
            tiling: Tiling {
                tile: Some(32),
                halo: Some(16),
            },
            blend: Blend::Crop,
            averaging: Averaging::Flips,
            monte_carlo: mc,
        };
        skipseg_runtime::segment_image_with(&seg, image.view(), &how).expect("runs")
    };
    let run = |threads: usize, mc: Option<MonteCarlo>| segment(threads, true, mc);
    let mc = |seed| Some(MonteCarlo { samples: 3, seed });
    let a = run(1, mc(1));
    assert_eq!(a, run(1, mc(1)), "same seed, same map");
    assert_eq!(a, run(2, mc(1)), "2 threads, same map");
    let b = run(1, mc(2));
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(
        differ > a.len() / 2,
        "another seed changes the map ({differ} pixels)"
    );
    // 0 samples: the deterministic model, as loaded without masks
    let zero = run(
        1,
        Some(MonteCarlo {
            samples: 0,
            seed: 1,
        }),
    );
    let plain = segment(1, false, None);
    let d = zero
        .iter()
        .zip(&plain)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d < TOLERANCE, "K = 0 vs deterministic: {d}");
}
