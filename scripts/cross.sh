#!/usr/bin/env bash
# skipseg on ARM: cross-built here, run under qemu-user (docs/EDGE.md).
#
#   bash scripts/cross.sh [--ci] [TARGET ...]
#
# TARGET: aarch64-unknown-linux-gnu (the default) and/or armv7-unknown-linux-gnueabihf.
# For each target it installs what is missing (the Rust standard library with rustup;
# Debian's cross C/C++ compilers and qemu-user with apt: blosc, under Zarr, is C++),
# cross-builds segment-run and the runtime's test binaries, and under qemu-user, for
# each emulated CPU model:
#  1. segment-run predict, one pass, float TIFF out, on ISBI test slices with the shipped
#     fp32 and int8 models: the maximum absolute difference from this machine's x86-64
#     build of the same command (tolerances below);
#  2. the runtime's unit tests (kernels against their definitions, tiling, passes) and
#     the golden fixtures (burn's outputs); on the first CPU model also fusion and
#     folding parity, tiling against the whole image and the int8 ladder on ISBI slices
#     (3-10 emulated minutes each): the same tests as on x86, same tolerances.
# Tests that start segment-run as a second process are left out: qemu-user runs one
# process, and an ARM child needs binfmt_misc, which a CI machine may not have.
# Prints one table: check | target | qemu CPU | result | max abs vs x86.
#
# --ci: what CI runs (docs/EDGE.md says what each part costs): aarch64 only, CPU model
# `max`, the runtime library without its optional features, its unit tests and the
# fixtures; no segment-run build, no predict.
# CPUS="a b": emulate these CPU models instead of the target's list.
#
# Tolerances against x86 (float TIFF of probabilities): fp32 1e-5. The same network in
# f32 on another instruction set sums the same products in another order (NEON 4 lanes,
# AVX-512 16, different FMA use): ~1e-7 relative per conv, ~1e-6 through the network;
# a wrong kernel moves probabilities by 1e-2 or more. int8: mean abs <= 1e-3 and 0.5
# decisions the same on >= 99.9 % of pixels. On ARM the quantized convolutions run the
# f32 route (the integer kernel is AVX512-VNNI only); its float sums put a value within
# a rounding error of a quantization step on the neighbouring code now and then, and a
# code step moves a probability by up to a few 1e-2 on those pixels. The bound is under
# half of what quantization itself costs (int8 against fp32: mean abs 2.2e-3, 99.78 % of
# decisions, runtime/tests/quantization.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

ci=""
targets=()
for a in "$@"; do
  case "$a" in
    --ci) ci=1 ;;
    -*) echo "usage: bash scripts/cross.sh [--ci] [TARGET ...]" >&2; exit 2 ;;
    *) targets+=("$a") ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=(aarch64-unknown-linux-gnu)

sudo_if() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# target -> Debian triple, qemu binary, CPU models to emulate (with and without the
# features the kernels dispatch on: `max` has NEON, dot product and i8mm; Cortex-A53 has
# no dot product; Cortex-A72 neither; Cortex-A15 is a 32-bit NEON core)
setup() {
  case "$1" in
    aarch64-unknown-linux-gnu)
      gnu=aarch64-linux-gnu; qemu=qemu-aarch64; cpus=(max cortex-a53 cortex-a72) ;;
    armv7-unknown-linux-gnueabihf)
      gnu=arm-linux-gnueabihf; qemu=qemu-arm; cpus=(max cortex-a15 cortex-a7) ;;
    *) echo "error: unsupported target $1 (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2; exit 2 ;;
  esac
  [ -n "$ci" ] && cpus=(max)
  if [ -n "${CPUS:-}" ]; then read -r -a cpus <<< "$CPUS"; fi
  local missing=()
  command -v "$gnu-gcc" > /dev/null || missing+=("gcc-$gnu")
  command -v "$gnu-g++" > /dev/null || missing+=("g++-$gnu")
  command -v "$qemu" > /dev/null || missing+=(qemu-user)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    sudo_if apt-get install -y -q "${missing[@]}" > /dev/null
  fi
  if ! rustup target list --installed | grep -qx "$1"; then
    if ! rustup target add "$1" >&2; then
      echo "WARNING: rustup could not add $1 (offline?): the $1 leg is SKIPPED" >&2
      return 1
    fi
  fi
  local up; up=$(echo "$1" | tr 'a-z-' 'A-Z_')
  local low; low=$(echo "$1" | tr '-' '_')
  export "CARGO_TARGET_${up}_LINKER=$gnu-gcc"
  export "CC_${low}=$gnu-gcc" "CXX_${low}=$gnu-g++" "AR_${low}=$gnu-ar"
  # qemu finds the target's dynamic loader and libc here
  export QEMU_LD_PREFIX=/usr/$gnu
  return 0
}

work=target/cross
mkdir -p "$work"
models=(models/isbi-small-bce.onnx models/isbi-small-bce-int8.onnx)
slices=(data/isbi2012/test/images/00.png data/isbi2012/test/images/07.png)
predict() { # RUNNER... -- BIN MODEL OUT
  local args=()
  while [ "$1" != "--" ]; do args+=("$1"); shift; done; shift
  rm -rf "$3"
  "${args[@]}" "$1" predict --model "$2" "$work/in" -o "$3" --float --tta none --threads 2 > /dev/null
}
py=python3
if [ -z "$ci" ]; then
  bash scripts/oracle-venv.sh > /dev/null
  py=target/oracle-venv/bin/python
  echo "building segment-run for x86-64 (the reference)" >&2
  cargo build --release -q -p skipseg-runtime --bin segment-run
  rm -rf "$work/in"; mkdir -p "$work/in"; cp "${slices[@]}" "$work/in/"
  for m in "${models[@]}"; do
    predict env -- target/release/segment-run "$m" "$work/x86-$(basename "$m" .onnx)"
  done
fi

compare() { # REFERENCE_DIR DIR KIND -> "result|max abs"
  "$py" - "$1" "$2" "$3" <<'EOF'
import sys, pathlib
import numpy as np, tifffile
ref, got, kind = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
worst, total, within, agree, n = 0.0, 0.0, 0, 0, 0
files = sorted(ref.glob("*.tif*"))
if not files:
    print("FAIL (no outputs)|-"); sys.exit()
for f in files:
    a = tifffile.imread(f).astype(np.float64)
    b = tifffile.imread(got / f.name).astype(np.float64)
    d = np.abs(a - b)
    worst = max(worst, float(d.max())); total += float(d.sum())
    within += int((d <= 1 / 255).sum()); agree += int(((a >= 0.5) == (b >= 0.5)).sum()); n += d.size
if kind == "fp32":
    ok = worst <= 1e-5
else:
    ok = total <= 1e-3 * n and agree >= 0.999 * n
extra = "" if kind == "fp32" else f" (mean abs {total / n:.1e}, {100 * within / n:.2f} % within 1/255, {100 * agree / n:.3f} % same 0.5 decision)"
print(f"{'ok' if ok else 'FAIL'}{extra}|{worst:.2e}")
EOF
}

rows=()
failed=0
row() { rows+=("| $1 | $2 | $3 | $4 | $5 |"); case "$4" in ok*) ;; *) failed=1 ;; esac; }
tests=(fixtures fusion tiling_and_folding quantization)
light="skipseg_runtime fixtures"   # run on every CPU model; the rest on the first only
# the int8 ladder on the shipped model calibrates and runs tract's own f32 kernels on
# ISBI windows: over 40 emulated minutes; its fixture ladder and the u8 hand-over run
declare -A only=([quantization]="quantization_ladder_on_the_fixtures chained_int8")
features=()
if [ -n "$ci" ]; then tests=(fixtures); features=(--no-default-features); fi
for target in "${targets[@]}"; do
  if ! setup "$target"; then
    rows+=("| all | $target | - | SKIPPED: no Rust standard library for it | - |")
    continue
  fi
  echo "cross-building segment-run and the runtime's tests for $target" >&2
  if [ -z "$ci" ]; then
    cargo build --release -q --target "$target" -p skipseg-runtime --bin segment-run
  fi
  bin=target/$target/release/segment-run
  # the test binaries, built once: cargo prints their paths
  test_bins=$(cargo test -q --target "$target" -p skipseg-runtime "${features[@]}" --lib \
    $(printf -- '--test %s ' "${tests[@]}") --no-run --message-format=json 2> /dev/null \
    | "$py" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"] + " " + m["executable"])')
  for cpu in "${cpus[@]}"; do
    for m in "${models[@]}"; do
      [ -n "$ci" ] && break
      name=$(basename "$m" .onnx); kind=fp32; [[ "$name" == *int8 ]] && kind=int8
      out="$work/$target-$cpu-$name"
      if predict "$qemu" -cpu "$cpu" -- "$bin" "$m" "$out" 2> "$out.log"; then
        IFS='|' read -r result worst <<< "$(compare "$work/x86-$name" "$out" "$kind")"
      else
        result="FAIL (see $out.log)"; worst="-"
      fi
      row "predict $name ($kind, ${#slices[@]} slices)" "$target" "$cpu" "$result" "$worst"
    done
    while read -r tname exe; do
      [ -z "$tname" ] && continue
      [ "$cpu" != "${cpus[0]}" ] && [[ " $light " != *" $tname "* ]] && continue
      log="$work/$target-$cpu-$tname.log"
      read -r -a filter <<< "${only[$tname]:-}"
      if "$qemu" -cpu "$cpu" "$exe" "${filter[@]}" > "$log" 2>&1; then
        summary=$(grep -E "^test result" "$log" | tail -1 | sed -E 's/test result: ok\. ([0-9]+) passed.*/\1 passed/')
        row "tests: $tname" "$target" "$cpu" "ok ($summary)" "(the test's own tolerance)"
      else
        row "tests: $tname" "$target" "$cpu" "FAIL (see $log)" "-"
      fi
    done <<< "$test_bins"
  done
done

echo "## skipseg under qemu-user (host: $(uname -m), $("${qemu:-qemu-aarch64}" --version 2>/dev/null | head -1 || true))"
echo
echo "| check | target | qemu CPU | result | max abs vs x86 |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit "$failed"
