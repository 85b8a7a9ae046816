"""The speed benchmark of docs/PERFORMANCE.md: skipseg's engine against onnxruntime on
the same ONNX files, in one run, on this machine. Run it through bench/speed.sh.

For every model x window size x thread count x precision it runs `segment-run bench
--json` and bench/ort_time.py one after the other (each a fresh process: start-up is
measured too), takes the median of REPEATS runs after two warm-up runs, and prints one
markdown table; the raw numbers, the CPU and its flags go to bench/results/NAME.json.
Ratios are ours / onnxruntime: below 1.0 we are faster.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, env=None):
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=env)
    return out.stdout


def cpu_info():
    info = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        for line in sh(["lscpu"]).splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("Model name", "Flags", "L1d cache", "L2 cache", "L3 cache", "CPU(s)"):
                info[key] = value
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = info.get("Flags", "").split()
    info["simd"] = " ".join(f for f in flags if f.startswith(("avx", "fma", "f16c", "amx")) or f in ("sse4_2",))
    return info


def ours(binary, model, size, threads, repeats):
    cmd = [binary, "bench", "--model", model, "--size", str(size), "--threads", str(threads),
           "--repeats", str(repeats), "--json"]
    return json.loads(sh(cmd))


def ort(python, model, size, threads, repeats):
    cmd = [python, "bench/ort_time.py", model, str(size), str(threads), str(repeats)]
    return json.loads(sh(cmd))


def merge(results):
    """One result from several rounds: every timed run, their median, the median
    start-up."""
    out = dict(results[0])
    out["runs_ms"] = [r for res in results for r in res["runs_ms"]]
    out["median_ms"] = statistics.median(out["runs_ms"])
    out["startup_ms"] = statistics.median(res["startup_ms"] for res in results)
    out["rounds"] = len(results)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/segment-run")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--model", action="append", required=True,
                    help="LABEL=PATH[:ORT_PATH] (ORT_PATH: the peer's own file, e.g. its int8 model)")
    ap.add_argument("--sizes", default="512,2048")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate the two engines this many times per row (windows up to 1024^2; "
                         "larger ones run once: each run is long enough to average the noise)")
    ap.add_argument("--skip", action="append", default=[], help="LABEL@SIZE to leave out")
    ap.add_argument("--out", default=None, help="results file (default bench/results/speed-DATE.json)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    cpu = cpu_info()
    rows = []
    print(f"CPU: {cpu.get('Model name', '?')}, {cpu.get('CPU(s)', '?')} cores; SIMD flags: {cpu['simd']}",
          flush=True)
    for spec in args.model:
        label, _, paths = spec.partition("=")
        path, _, ort_path = paths.partition(":")
        ort_path = ort_path or path
        for size in sizes:
            if f"{label}@{size}" in args.skip:
                continue
            for t in threads:
                # alternate the engines so that a slow minute of this (virtual) machine
                # hits both; the median is taken over every timed run of every round
                rounds = args.rounds if size <= 1024 else 1
                ra, rb = [], []
                for _ in range(rounds):
                    ra.append(ours(args.binary, path, size, t, args.repeats))
                    rb.append(ort(args.python, ort_path, size, t, args.repeats))
                a, b = merge(ra), merge(rb)
                row = {"model": label, "file": path, "ort_file": ort_path, "size": size, "threads": t,
                       "gflop": a["gflops"] if "gflops" in a else ra[0]["gflops"], "ours": a,
                       "onnxruntime": b, "rounds": rounds,
                       "ratio": a["median_ms"] / b["median_ms"]}
                rows.append(row)
                print(f"  {label} {size}^2 {t} thread(s): ours {a['median_ms']:.1f} ms, "
                      f"onnxruntime {b['median_ms']:.1f} ms, ratio {row['ratio']:.2f}", file=sys.stderr,
                      flush=True)
    print()
    print("| model | window | threads | ours ms | ORT ms | ours GFLOP/s | ORT GFLOP/s | ours / ORT | start-up ours ms | start-up ORT ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, b = r["ours"], r["onnxruntime"]
        print(f"| {r['model']} | {r['size']}² | {r['threads']} | {a['median_ms']:.1f} | {b['median_ms']:.1f} | "
              f"{r['gflop'] / a['median_ms'] * 1e3:.1f} | {r['gflop'] / b['median_ms'] * 1e3:.1f} | "
              f"**{r['ratio']:.2f}** | {a['startup_ms']:.0f} | {b['startup_ms']:.0f} |")
    # int8 rows next to the float peer: ours int8 / onnxruntime fp32 (the goal)
    by_key = {(r["model"], r["size"], r["threads"]): r for r in rows}
    int8 = [r for r in rows if r["model"].endswith("-int8") and
            (r["model"][:-5], r["size"], r["threads"]) in by_key]
    if int8:
        print()
        print("| model | window | threads | ours int8 ms | ORT int8 ms (its quantizer) | ORT fp32 ms | "
              "ours int8 / ORT fp32 | ours int8 / ORT int8 | ORT int8 / ORT fp32 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in int8:
            f = by_key[(r["model"][:-5], r["size"], r["threads"])]
            a, b, c = r["ours"]["median_ms"], r["onnxruntime"]["median_ms"], f["onnxruntime"]["median_ms"]
            r["ratio_to_ort_fp32"] = a / c
            print(f"| {r['model'][:-5]} | {r['size']}² | {r['threads']} | {a:.1f} | {b:.1f} | {c:.1f} | "
                  f"**{a / c:.2f}** | {a / b:.2f} | {b / c:.2f} |")
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   f"speed-{datetime.date.today().isoformat()}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
                   "repeats": args.repeats, "rows": rows}, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"\n(median of {args.repeats} runs after 2 warm-up runs per process, {args.rounds} rounds "
          f"alternating the engines up to 1024², one above; start-up: median over rounds; ratio < 1: "
          f"skipseg faster) -> {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
