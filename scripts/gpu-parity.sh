#!/usr/bin/env bash
# The GPU leg of the parity suite (issue 19): on a machine with an NVIDIA GPU, burn-cuda's
# forward pass of the fixture models (the same seeded weights as fixtures/*/model.onnx)
# on the committed fixture inputs, written as fixtures/*/gpu-output{k}.npy with the GPU
# and driver in fixtures/GPU.md; and the shipped model (models/isbi-small-bce.onnx, loaded
# into burn from its ONNX initializers) on whole ISBI slices 0 and 27, written as
# fixtures/shipped/gpu-slice{00,27}.npy with fixtures/shipped/model.txt (the model's
# CRC-32). Then the runtime's fixture tests check tract against them
# (runtime/tests/fixtures.rs: fp32 within 1e-4; the int8 model keeps >= 99.5 % of the 0.5
# decisions), and scripts/cross.sh does the same on ARM under qemu. Commit the files it
# writes (about 2 MB).
#
#     bash scripts/gpu-parity.sh            # on the GPU machine
#     SEGMENT_TRAIN=path bash scripts/gpu-parity.sh   # a segment-train built elsewhere
#                                           # with --features cuda
#
# Without a GPU it stops with segment-train's own error (no usable CUDA driver).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SEGMENT_TRAIN:-}
if [ -z "$bin" ]; then
  cargo build --release -p skipseg-train --features cuda
  bin=target/release/segment-train
fi
command -v nvidia-smi > /dev/null || { echo "nvidia-smi not found: no NVIDIA driver here" >&2; exit 2; }
"$bin" fixtures --device cuda --out fixtures \
  --shipped models/isbi-small-bce.onnx --volume data/isbi2012/train/images
{
  echo "# GPU outputs of the fixtures"
  echo
  echo "Written by \`bash scripts/gpu-parity.sh\` on $(date -u +%Y-%m-%d) with burn-cuda:"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo '```'
} > fixtures/GPU.md
if command -v cargo > /dev/null; then
  cargo test --release -p skipseg-runtime --test fixtures -- --nocapture 2>&1 | grep -E "GPU|test result"
fi
