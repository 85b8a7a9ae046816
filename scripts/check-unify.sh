#!/usr/bin/env bash
# Checks that the builds scripts/test.sh makes besides `cargo test --workspace` (the dev C
# library, the Python wheel, the library without image/CLI dependencies) reuse the test build's compiled
# dependencies instead of compiling them (tract among them) again with other features.
# unify/Cargo.toml says why they could differ; add what this reports there.
# `--unit-graph` is unstable: it is asked of the project's own (stable) cargo with
# RUSTC_BOOTSTRAP=1 for these queries only (they compile nothing), so the graphs are the
# resolver's that the builds use, and no nightly toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
graph() { # name, cargo arguments...
  local name=$1; shift
  RUSTC_BOOTSTRAP=1 cargo "$@" --unit-graph -Z unstable-options > "$tmp/$name.json"
}
graph test test --workspace --features skipseg-runtime/ffi --no-run
graph clib rustc -p skipseg-runtime --lib --no-default-features --features ffi,onnx,unify \
  --crate-type cdylib,staticlib
graph wheel rustc -p skipseg-python --lib --features pyo3/abi3-py39
graph build-onnx build -p skipseg-runtime --no-default-features --features onnx,unify --lib
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]

def units(name):
    """Each unit's identity as cargo's artifact hash sees it: package, features, profile
    (less its name), mode, target and, recursively, its dependencies."""
    graph = json.load(open(f"{tmp}/{name}.json"))["units"]
    memo = {}
    def key(i):
        if i not in memo:
            u = graph[i]
            profile = dict(u["profile"]); profile.pop("name")
            memo[i] = hash((u["pkg_id"], tuple(sorted(u["features"])),
                            json.dumps(profile, sort_keys=True), u["mode"], u["target"]["name"],
                            tuple(u["target"]["kind"]), u.get("platform"),
                            tuple(sorted(key(d["index"]) for d in u["dependencies"]))))
        return memo[i]
    return {key(i): u for i, u in enumerate(graph)}

# skipseg's own crates and the binding's own dependencies are expected to be built anew
own = ("path+file://", "pyo3", "numpy@", "rustc-hash@", "target-lexicon@", "once_cell@")
failed = False
for base, other in [("test", "clib"), ("test", "wheel"), ("test", "build-onnx")]:
    b, o = units(base), units(other)
    by_pkg = {}
    for u in b.values():
        by_pkg.setdefault(u["pkg_id"], set()).add(tuple(sorted(u["features"])))
    extra = [u for k, u in o.items() if k not in b and not any(
        u["pkg_id"].startswith(p) or f"#{p}" in u["pkg_id"] for p in own)]
    if extra:
        failed = True
        print(f"check-unify: `{other}` compiles {len(extra)} dependency units that `{base}` "
              "does not (features differ here or below):")
        for u in sorted({(u["pkg_id"].split("#")[-1], tuple(sorted(u["features"])))
                         for u in extra}):
            print(f"  {u[0]}: {', '.join(u[1]) or '(none)'}")
    else:
        print(f"check-unify: `{other}` reuses every dependency `{base}` builds")
if failed:
    print("add the workspace's features of the crates listed first to unify/Cargo.toml")
    sys.exit(1)
PY
