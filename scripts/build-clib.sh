#!/usr/bin/env bash
# Build skipseg's C library (runtime/src/ffi.rs, header runtime/include/skipseg.h) as a
# shared and a static library, without the image and command-line dependencies:
#   bash scripts/build-clib.sh             # workstation library (ONNX and embedded models),
#                                          # profile clib (release + fat LTO, stripped):
#                                          # target/clib/libskipseg_runtime.{so,a}
#   bash scripts/build-clib.sh --dev       # test build: target/debug/ (what the tests use);
#                                          # with the feature `unify`, so it reuses the
#                                          # dependencies `cargo test --workspace` builds
#   bash scripts/build-clib.sh --embedded [--target TRIPLE]
#                                          # the embedded library (docs/EDGE.md): embedded
#                                          # models only, no tract, no protobuf, profile clib:
#                                          # target/clib-embedded[/TRIPLE]/libskipseg_runtime.{so,a}
# Link with: cc -I runtime/include app.c -L target/clib -lskipseg_runtime -lm
#            (static: target/clib/libskipseg_runtime.a -lpthread -ldl -lm)
# A cross target needs its linker set (scripts/cross.sh does it).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--profile clib); dir=target/clib; features=(--features ffi,onnx); target=(); out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) profile=(); dir=target/debug; features=(--features ffi,onnx,unify) ;;
    --embedded) features=(--features ffi); out=target/clib-embedded ;;
    --target) target=(--target "$2"); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ ${#target[@]} -gt 0 ]; then
  dir=target/${target[1]}/${dir#target/}
  [ -n "$out" ] && out=$out/${target[1]}
fi
cargo rustc -p skipseg-runtime --lib "${profile[@]}" "${target[@]}" --no-default-features \
  "${features[@]}" --crate-type cdylib,staticlib >&2
if [ -n "$out" ]; then
  # the embedded build shares the profile's folder with the workstation one: keep a copy
  mkdir -p "$out"
  cp "$dir/libskipseg_runtime.so" "$dir/libskipseg_runtime.a" "$out/"
  dir=$out
fi
ls -l "$dir/libskipseg_runtime.so" "$dir/libskipseg_runtime.a" >&2
