#!/usr/bin/env bash
# Build skipseg's C library (runtime/src/ffi.rs, header runtime/include/skipseg.h) as a
# shared and a static library, without the image and command-line dependencies:
#   bash scripts/build-clib.sh            # release: target/release/libskipseg_runtime.{so,a}
#   bash scripts/build-clib.sh --dev      # test build: target/debug/ (what the tests use)
# Link with: cc -I runtime/include app.c -L target/release -lskipseg_runtime
#            (static: target/release/libskipseg_runtime.a -lpthread -ldl -lm)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release); dir=target/release
if [ "${1:-}" = "--dev" ]; then profile=(); dir=target/debug; fi
cargo rustc -p skipseg-runtime --lib "${profile[@]}" --no-default-features --features ffi \
  --crate-type cdylib,staticlib >&2
ls -l "$dir/libskipseg_runtime.so" "$dir/libskipseg_runtime.a" >&2
