#!/usr/bin/env bash
# Build skipseg's C library (runtime/src/ffi.rs, header runtime/include/skipseg.h) as a
# shared and a static library, without the image and command-line dependencies:
#   bash scripts/build-clib.sh            # profile clib (release + fat LTO, stripped):
#                                         # target/clib/libskipseg_runtime.{so,a}
#   bash scripts/build-clib.sh --dev      # test build: target/debug/ (what the tests use)
# Link with: cc -I runtime/include app.c -L target/clib -lskipseg_runtime -lm
#            (static: target/clib/libskipseg_runtime.a -lpthread -ldl -lm)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--profile clib); dir=target/clib
if [ "${1:-}" = "--dev" ]; then profile=(); dir=target/debug; fi
cargo rustc -p skipseg-runtime --lib "${profile[@]}" --no-default-features --features ffi \
  --crate-type cdylib,staticlib >&2
ls -l "$dir/libskipseg_runtime.so" "$dir/libskipseg_runtime.a" >&2
