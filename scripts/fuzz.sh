#!/usr/bin/env bash
# Fuzz the ONNX loading path, the image readers and the C entry points with cargo-fuzz
# (libFuzzer + AddressSanitizer, nightly toolchain), SECONDS each (default 600), and
# print a table of executions. Crashes land in fuzz/artifacts/TARGET/; turn each into a
# regression test (runtime/tests/fuzz_regressions.rs) before fixing it.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(onnx_load image_read c_api)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >&2
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz >&2
cargo +nightly fuzz build -O >&2

# seed corpora: the fixture models; small PNG and TIFF images (first byte: 0 PNG, 1 TIFF)
mkdir -p fuzz/corpus/onnx_load fuzz/corpus/image_read fuzz/corpus/c_api
for d in fixtures/*/; do cp "$d/model.onnx" "fuzz/corpus/onnx_load/$(basename "$d").onnx"; done
cp models/isbi-small-int8.onnx fuzz/corpus/onnx_load/   # int8 (QDQ): the SkipsegQConv fusion
python3 - <<'PY'
import pathlib, struct, zlib
out = pathlib.Path("fuzz/corpus/image_read")
def png(w, h, depth, color, data):
    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
rows8 = b"".join(b"\x00" + bytes((x * 16 + y) % 256 for x in range(16)) for y in range(12))
(out / "gray8.png").write_bytes(b"\x00" + png(16, 12, 8, 0, rows8))
rows16 = b"".join(b"\x00" + b"".join(struct.pack(">H", x * 4000 + y) for x in range(8)) for y in range(6))
(out / "gray16.png").write_bytes(b"\x00" + png(8, 6, 16, 0, rows16))
def tiff(w, h, bits, fmt, data):
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 1, bits), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 3, 1, h), (279, 4, 1, len(data)), (339, 3, 1, fmt)]
    ifd_off = 8 + len(data)
    b = b"II*\x00" + struct.pack("<I", ifd_off) + data + struct.pack("<H", len(entries))
    for tag, typ, n, v in entries:
        b += struct.pack("<HHI", tag, typ, n) + (struct.pack("<HH", v, 0) if typ == 3 else struct.pack("<I", v))
    return b + struct.pack("<I", 0)
(out / "gray8.tif").write_bytes(b"\x01" + tiff(16, 12, 8, 1, bytes(range(192))))
(out / "float.tif").write_bytes(b"\x01" + tiff(4, 4, 32, 3, struct.pack("<16f", *[i / 16 for i in range(16)])))
c = pathlib.Path("fuzz/corpus/c_api")
(c / "u8.bin").write_bytes(bytes([0, 20, 12, 0, 16, 8, 0, 0, 1, 0]) + bytes(range(240)))
(c / "f32.bin").write_bytes(bytes([2, 6, 5, 4, 8, 4, 1, 1, 2, 0]) + struct.pack("<36f", *[i / 36 for i in range(36)]))
PY

echo "## fuzzing, $seconds s per target ($(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p'))"
echo "| target | executions | seconds | exec/s | crashes, OOMs, timeouts | slow inputs (> 10 s) | tract panics caught by the library |"
echo "|---|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
  log=fuzz/artifacts/$t.log; mkdir -p "fuzz/artifacts/$t"
  status=0
  cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=4096 \
    -max_len=524288 -timeout=30 -print_final_stats=1 > "$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/.*Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  crashes=$(find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
  slow=$(find "fuzz/artifacts/$t" -type f -name 'slow-unit-*' | wc -l)
  caught=$(grep -c "caught by the library" "$log" || true)
  echo "| $t | ${runs:-?} | ${secs:-$seconds} | $(( ${runs:-0} / ${secs:-$seconds} )) | $crashes (exit $status) | $slow | $caught |"
done
