//! Parity 1: burn (eval mode) vs tract on the exported ONNX, over random architectures,
//! random weights and random non-trivial batch-norm statistics.
//!
//! Tolerance 1e-4 on the sigmoid output: both engines compute in f32 with different
//! summation orders (im2col/GEMM blocking); over a dozen layers the accumulated rounding
//! stays around 1e-6, so 1e-4 leaves room while still catching any wrong weight, padding,
//! layout or wiring, which moves outputs by 1e-2 or more.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use skipseg_parity::{describe, export_case, level, max_abs_diff};
use skipseg_runtime::Segmenter;
use skipseg_runtime::arch::{ArchSpec, BlockKind};

const TOLERANCE: f32 = 1e-4;

fn block_kind() -> impl Strategy<Value = BlockKind> {
    prop_oneof![
        Just(BlockKind::Simple),
        Just(BlockKind::Basic),
        Just(BlockKind::Bottleneck)
    ]
}

fn level_strategy() -> impl Strategy<Value = skipseg_runtime::arch::Level> {
    (
        block_kind(),
        prop_oneof![Just(4usize), Just(8), Just(12), Just(16)],
        1usize..=2,
    )
        .prop_map(|(b, w, r)| level(b, w, r))
}

prop_compose! {
    fn arch_spec()(
        levels in 1usize..=3,
        stem_width in prop_oneof![Just(4usize), Just(6), Just(8)],
        head_width in prop_oneof![Just(4usize), Just(8)],
        all_levels in prop::collection::vec(level_strategy(), 7),
        long_skips in any::<bool>(),
        short_skips in any::<bool>(),
        batch_norm in any::<bool>(),
        dropout in prop_oneof![Just(0.0f64), Just(0.2)],
    ) -> ArchSpec {
        ArchSpec {
            name: "random".into(),
            in_channels: 1,
            stem_width,
            down: all_levels[..levels].to_vec(),
            across: all_levels[3].clone(),
            up: all_levels[4..4 + levels].to_vec(),
            head_width,
            long_skips,
            short_skips,
            batch_norm,
            dropout,
            bn_epsilon: 1e-5,
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 32, rng_seed: RngSeed::Fixed(0x5EED_2016), ..Config::default() })]

    #[test]
    fn burn_and_tract_agree(
        spec in arch_spec(),
        seed in any::<u64>(),
        m1 in 1usize..=3, n1 in 1usize..=3, m2 in 1usize..=4, n2 in 1usize..=2,
    ) {
        let f = spec.down_factor();
        // two sizes: a square-ish one and a non-square one, multiples of the factor
        let sizes = [(f * m1 * 2, f * n1 * 2), (f * (m2 + 1), f * (n2 + 2))];
        let case = export_case(&spec, seed, &sizes);
        let seg = Segmenter::from_proto(case.proto.clone(), "random").expect("exported model loads");
        for (x, expected) in case.inputs.iter().zip(&case.burn_outputs) {
            let got = seg.run(x.view().into_dyn()).expect("tract runs");
            let d = max_abs_diff(&got, expected);
            eprintln!("case {:?}: max abs diff {d:e}", x.shape());
            prop_assert!(d <= TOLERANCE, "max abs diff {d} > {TOLERANCE} at {:?} for {}", x.shape(), describe(&spec));
        }
    }
}

/// The Table 1 preset is too heavy for a property test, but its graph must load and
/// agree on one small input.
#[test]
fn table1_graph_agrees_on_one_input() {
    let spec =
        skipseg_train::presets::load(&skipseg_train::presets::models_dir().join("table1.json"))
            .expect("table1 preset");
    let case = export_case(&spec, 7, &[(32, 32)]);
    let seg = Segmenter::from_proto(case.proto, "table1").expect("loads");
    let got = seg.run(case.inputs[0].view().into_dyn()).expect("runs");
    let d = max_abs_diff(&got, &case.burn_outputs[0]);
    eprintln!("table1 32x32: max abs diff burn vs tract = {d:e}");
    assert!(d <= TOLERANCE, "max abs diff {d}");
}
