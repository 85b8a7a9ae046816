#!/usr/bin/env bash
# Convert the shipped models and the golden fixtures to embedded models (docs/EDGE.md):
# models/isbi-small-bce{,-int8}.skipseg and fixtures/*/model.skipseg. Run after a change
# to skipseg's passes or to the embedded format; runtime/tests/embedded.rs fails while
# a committed file differs from what the build converts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p skipseg-runtime --bin segment-run
run=target/release/segment-run
for m in isbi-small-bce isbi-small-bce-int8; do
  "$run" optimize --model "models/$m.onnx" --embedded -o "models/$m.skipseg"
done
for d in fixtures/*/; do
  "$run" optimize --model "$d/model.onnx" --embedded -o "$d/model.skipseg"
done
