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
#  3. the embedded library (no tract, no protobuf; docs/EDGE.md): its unit tests and
#     tests/embedded_only.rs (embedded fixture models against burn's outputs), and the C
#     example statically linked against it (the target's gcc), segmenting a synthetic
#     slice with models/isbi-small-bce.skipseg: the maximum absolute difference from the
#     same C program built for x86-64, and its refusal of an ONNX model.
# Tests that start segment-run as a second process are left out: qemu-user runs one
# process, and an ARM child needs binfmt_misc, which a CI machine may not have.
# Prints one table: check | target | qemu CPU | result | max abs vs x86.
#
# --ci: what CI runs (docs/EDGE.md says what each part costs): aarch64 only, CPU model
# `max`, part 3 only (the embedded library builds without tract: minutes, not a quarter
# of an hour); no segment-run build, no predict.
# CPUS="a b": emulate these CPU models instead of the target's list.
#
# Tolerances against x86 (float TIFF of probabilities): fp32 1e-5. The same network in
# f32 on another instruction set sums the same products in another order (NEON 4 lanes,
# AVX-512 16, different FMA use): ~1e-7 relative per conv, ~1e-6 through the network;
# a wrong kernel moves probabilities by 1e-2 or more. int8: mean abs <= 1e-3 and 0.5
# decisions the same on >= 99.9 % of pixels. On ARM CPUs with the dot product (`max`,
# Cortex-A76) the SDOT kernel computes the integer definition as VNNI does (0 pixels
# differ); without it (A53, A72, armv7) the quantized convolutions run the f32 route,
# whose float sums put a value within
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
    if ! { sudo_if apt-get install -y -q "${missing[@]}" > /dev/null 2>&1 \
        || { sudo_if apt-get update -q > /dev/null 2>&1 \
             && sudo_if apt-get install -y -q "${missing[@]}" > /dev/null; }; }; then
      echo "WARNING: could not install ${missing[*]} (no apt, no root, offline?): the $1 leg is SKIPPED" >&2
      return 1
    fi
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
# one run at a time: runs share the x86 reference outputs and the C host under $work
exec 9> "$work/.lock"
if ! flock -n 9; then
  echo "another scripts/cross.sh is running; waiting for it" >&2
  flock 9
fi
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
declare -A only=([quantization]="quantization_ladder_on_the_fixtures chained_int8"
  [embedded-memory_report]="network")   # tiled calls with averaging: hundreds of runs
# the embedded library's tests: its own build (no onnx feature); in full runs its unit
# tests are the same source as the default build's, so only embedded_only runs there
# (release: the memory test runs the network a few dozen times, minutes under
# emulation at the test profile's opt-level 1, seconds optimised)
embedded_features=(--release --no-default-features --features ffi)
embedded_tests=(--test embedded_only --test memory_report)
if [ -n "$ci" ]; then tests=(); embedded_tests=(--lib --test embedded_only --test memory_report); fi
# the C host: the example, linked statically against the embedded library
c_input=$work/c-input.pgm
python3 - "$c_input" <<'PY'
import sys
# a synthetic 8-bit slice, 300 x 260: dark curved lines (membranes) on a textured field
w, h = 300, 260
px = []
for y in range(h):
    for x in range(w):
        v = 170 + ((x * 7 + y * 13) % 23) - 11
        if (x + (y * y) // 97) % 41 < 3 or (y + (x * 3) // 7) % 53 < 3:
            v = 40 + (x * y) % 17
        px.append(v)
open(sys.argv[1], "wb").write(b"P5\n%d %d\n255\n" % (w, h) + bytes(px))
PY
c_host() { # TARGET(or empty) CC OUT_EXE
  if [ -n "$1" ]; then
    bash scripts/build-clib.sh --embedded --target "$1" 2> /dev/null
  else
    bash scripts/build-clib.sh --embedded 2> /dev/null
  fi
  local lib=target/clib-embedded${1:+/$1}
  "$2" -O2 -static -I runtime/include examples/c/segment.c "$lib/libskipseg_runtime.a" \
    -lpthread -ldl -lm -o "$3"
}
c_compare() { # REFERENCE.pfm GOT.pfm -> "result|max abs"
  python3 - "$1" "$2" <<'PY'
import struct, sys
def read(p):
    data = open(p, "rb").read()
    parts = data.split(b"\n", 3)
    w, h = map(int, parts[1].split())
    scale = float(parts[2])
    fmt = ("<" if scale < 0 else ">") + "%df" % (w * h)
    return struct.unpack(fmt, parts[3][: 4 * w * h])
a, b = read(sys.argv[1]), read(sys.argv[2])
worst = max(abs(x - y) for x, y in zip(a, b))
lo, hi = min(b), max(b)
ok = len(a) == len(b) and worst <= 1e-5 and lo < 0.05 and hi > 0.95
print(f"{'ok' if ok else 'FAIL'} ({len(b)} pixels, outputs in [{lo:.3f}, {hi:.3f}])|{worst:.2e}")
PY
}
echo "building the C host for x86-64 (the reference) on the embedded library" >&2
c_host "" cc "$work/segment-x86"
"$work/segment-x86" models/isbi-small-bce.skipseg "$c_input" "$work/c-x86.pfm" \
  --tile 128 --halo 32 --averaging none --threads 2 2> "$work/c-x86.log"
for target in "${targets[@]}"; do
  if ! setup "$target"; then
    rows+=("| all | $target | - | SKIPPED: cross toolchain or standard library unavailable (warning above) | - |")
    continue
  fi
  echo "cross-building segment-run and the runtime's tests for $target" >&2
  if [ -z "$ci" ]; then
    cargo build --release -q --target "$target" -p skipseg-runtime --bin segment-run
  fi
  bin=target/$target/release/segment-run
  # the test binaries, built once: cargo prints their paths
  list_tests() { # PREFIX
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(sys.argv[1] + m["target"]["name"] + " " + m["executable"])' "$1"
  }
  test_bins=""
  if [ ${#tests[@]} -gt 0 ]; then
    test_bins=$(cargo test -q --target "$target" -p skipseg-runtime --lib \
      $(printf -- '--test %s ' "${tests[@]}") --no-run --message-format=json 2> /dev/null \
      | list_tests "")
  fi
  test_bins+=$'\n'$(cargo test -q --target "$target" -p skipseg-runtime \
    "${embedded_features[@]}" "${embedded_tests[@]}" --no-run --message-format=json \
    2> /dev/null | list_tests embedded-)
  echo "building the C host for $target on the embedded library" >&2
  c_host "$target" "$gnu-gcc" "$work/segment-$target"
  light+=" embedded-skipseg_runtime embedded-embedded_only embedded-memory_report"
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
    # the C host: the x86 build's output, and an ONNX model refused with a clear error
    out="$work/c-$target-$cpu.pfm"
    if "$qemu" -cpu "$cpu" "$work/segment-$target" models/isbi-small-bce.skipseg "$c_input" \
        "$out" --tile 128 --halo 32 --averaging none --threads 2 2> "$out.log"; then
      IFS='|' read -r result worst <<< "$(c_compare "$work/c-x86.pfm" "$out")"
    else
      result="FAIL (see $out.log)"; worst="-"
    fi
    row "C host (static, embedded library), isbi-small-bce.skipseg" "$target" "$cpu" "$result" "$worst"
    if "$qemu" -cpu "$cpu" "$work/segment-$target" models/isbi-small-bce.onnx "$c_input" \
        "$out.onnx.pfm" 2> "$out.onnx.log" || ! grep -q "looks like ONNX" "$out.onnx.log"; then
      row "C host refuses an ONNX model" "$target" "$cpu" "FAIL (see $out.onnx.log)" "-"
    else
      row "C host refuses an ONNX model" "$target" "$cpu" "ok (exit 2, 'it looks like ONNX')" "-"
    fi
    # the memory report before the call, and a limit under it refused before anything runs
    need=$(sed -n 's/^peak memory of this call: \([0-9]*\) bytes$/\1/p' "$out.log")
    if [ -n "$need" ] && ! "$qemu" -cpu "$cpu" "$work/segment-$target" models/isbi-small-bce.skipseg \
        "$c_input" "$out.limit.pfm" --tile 128 --halo 32 --averaging none --threads 2 \
        --max-bytes $((need - 1)) 2> "$out.limit.log" && grep -q "needs $need bytes" "$out.limit.log"; then
      row "C host: memory report, limit 1 byte under it refused" "$target" "$cpu" "ok ($need bytes reported)" "-"
    else
      row "C host: memory report, limit 1 byte under it refused" "$target" "$cpu" "FAIL (see $out.limit.log)" "-"
    fi
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
