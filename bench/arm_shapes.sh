#!/usr/bin/env bash
# Instructions per run of every convolution shape of the shipped model (256x256 window),
# on ARM under qemu-user, skipseg's kernel against tract's, f32 and int8 (docs/EDGE.md,
# "Kernels on ARM, per layer shape"): the evidence behind the fuse pass's choice per
# shape and target (runtime/src/passes/fuse_conv.rs, `ArmChoice`). Each layer is ReLU +
# conv + bias, run by runtime/examples/conv_shapes.rs 0 and 2 times in one process; the
# difference / 2 is one run. Needs what bench/arm_insn.sh builds (the insn plugin) and
# what scripts/cross.sh installs.
#
#     bash bench/arm_shapes.sh [aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf ...]
#
# CPUS="a b" overrides the CPU models. Prints one markdown table per target.
set -euo pipefail
cd "$(dirname "$0")/.."
plugin=target/arm-insn/libinsn.so
[ -f "$plugin" ] || { echo "no $plugin: run bench/arm_insn.sh first (it builds the plugin)" >&2; exit 2; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# cin cout k size count: the convolutions of models/isbi-small-bce.onnx on a 256x256 window
shapes="1 8 3 256 1
8 8 3 256 1
8 1 1 256 1
8 8 3 128 1
8 32 1 128 1
32 8 3 128 1
32 8 1 128 1
8 8 1 64 1
8 8 3 64 2
8 32 1 64 3
32 64 1 64 1
64 8 1 64 1
64 32 1 64 1
32 16 1 32 1
16 16 3 32 4
16 64 1 32 4
32 64 1 32 1
64 16 1 32 2
64 128 1 32 1
128 16 1 32 1
128 64 1 32 1
64 32 1 16 1
32 32 3 16 6
32 128 1 16 6
64 128 1 16 1
128 32 1 16 4
128 64 1 16 1
64 64 3 16 1
64 256 1 16 1
128 256 1 16 2
256 32 1 16 1
256 128 1 16 1"
for target in "${targets[@]}"; do
  case "$target" in
    aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu; qemu=qemu-aarch64; cpus=(max cortex-a53) ;;
    armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf; qemu=qemu-arm; cpus=(cortex-a15) ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
  if [ -n "${CPUS:-}" ]; then read -r -a cpus <<< "$CPUS"; fi
  up=$(echo "$target" | tr 'a-z-' 'A-Z_'); low=$(echo "$target" | tr '-' '_')
  export "CARGO_TARGET_${up}_LINKER=$gnu-gcc" "CC_${low}=$gnu-gcc" "CXX_${low}=$gnu-g++" \
    "AR_${low}=$gnu-ar" QEMU_LD_PREFIX=/usr/$gnu
  cargo build --release -q --target "$target" -p skipseg-runtime --example conv_shapes
  exe=target/$target/release/examples/conv_shapes
  out=target/arm-insn/shapes-$target.txt
  : > "$out"
  # one line per measurement: cpu cin cout k size engine precision runs instructions
  jobs=$(for cpu in "${cpus[@]}"; do
    while read -r cin cout k size _; do
      for e in skipseg tract; do for p in f32 int8; do for n in 0 2; do
        echo "$cpu $cin $cout $k $size $e $p $n"
      done; done; done
    done <<< "$shapes"
  done)
  export qemu exe plugin
  # shellcheck disable=SC2016
  echo "$jobs" | xargs -P "$(nproc)" -L 1 bash -c \
    'echo "$0 $*" $("$qemu" -cpu "$0" -plugin "$plugin" -d plugin "$exe" "$1" "$2" "$3" "$4" "$7" "$5" "$6" 2>&1 | sed -n "s/^total insns: //p")' \
    >> "$out"
  echo "## $target ($(basename "$exe") under $("$qemu" --version | head -1)), instructions per run, thousands"
  echo
  echo "| qemu CPU | layer | at | layers | skipseg f32 | tract f32 | skipseg / tract f32 | skipseg int8 | tract int8 | skipseg / tract int8 |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  SHAPES="$shapes" python3 - "$out" "${cpus[@]}" <<'EOF'
import os, sys
path, cpus = sys.argv[1], sys.argv[2:]
m = {}
for line in open(path):
    f = line.split()
    if len(f) != 9:
        sys.exit(f"bad measurement line: {line!r}")
    m[tuple(f[:8])] = int(f[8])
shapes = [l.split() for l in os.environ["SHAPES"].splitlines() if l.strip()]
for cpu in cpus:
    tot = {}
    for cin, cout, k, size, count in shapes:
        row = [cpu, f"{cin}->{cout} {k}x{k}", f"{size}^2", count]
        for p in ("f32", "int8"):
            per = {}
            for e in ("skipseg", "tract"):
                key = lambda n: (cpu, cin, cout, k, size, e, p, n)
                per[e] = (m[key("2")] - m[key("0")]) / 2
                tot[(e, p)] = tot.get((e, p), 0) + per[e] * int(count)
            row += [f"{per['skipseg'] / 1e3:.0f}", f"{per['tract'] / 1e3:.0f}",
                    f"{per['skipseg'] / per['tract']:.2f}"]
        print("| " + " | ".join(map(str, row)) + " |")
    print(f"| {cpu} | all layers, weighted by count | | | "
          + " | ".join(f"{tot[('skipseg', p)] / 1e3:.0f} | {tot[('tract', p)] / 1e3:.0f} | "
                       f"{tot[('skipseg', p)] / tot[('tract', p)]:.2f}" for p in ("f32", "int8"))
          + " |")
EOF
  echo
done
