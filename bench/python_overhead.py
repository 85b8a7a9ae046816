"""What the Python binding adds to a call: skipseg.Model.predict against the C library's
skipseg_segment (called through ctypes, in the same process, on the same model and the
same 2048x2048 uint8 slice, same options), alternating over rounds. Prints a table; the
goal (issue 20) is Python within 3 % of C.

    python bench/python_overhead.py LIBSKIPSEG_RUNTIME.so MODEL.onnx [--rounds N] [--threads T]

Both sides must be built with the same profile (bench/python_overhead.sh: release).
"""

import argparse
import ctypes
import statistics
import time

import numpy as np

import skipseg


class Options(ctypes.Structure):
    _fields_ = [("tile", ctypes.c_uint32), ("halo", ctypes.c_int32), ("averaging", ctypes.c_int32),
                ("blend", ctypes.c_int32), ("threads", ctypes.c_uint32)]


def em_like(n, seed=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n]
    m = np.abs(np.sin(y * 0.11 + np.sin(x * 0.05) * 3) * np.sin(x * 0.09 + np.cos(y * 0.07) * 2))
    v = np.where(m < 0.12, 0.25, 0.75) + rng.normal(0, 0.05, m.shape)
    return (np.clip(v, 0, 1) * 255).round().astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=2048)
    a = ap.parse_args()

    lib = ctypes.CDLL(a.lib)
    lib.skipseg_model_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.skipseg_segment.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32,
                                    ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                                    ctypes.POINTER(Options), ctypes.c_void_p, ctypes.c_size_t]
    lib.skipseg_last_error.restype = ctypes.c_char_p
    handle = ctypes.c_void_p()
    assert lib.skipseg_model_load(a.model.encode(), ctypes.byref(handle)) == 0, lib.skipseg_last_error()
    opts = Options()
    lib.skipseg_options_default(ctypes.byref(opts))
    opts.averaging = 0  # one pass: the network, not the averaging, is what both call
    opts.threads = a.threads
    image = em_like(a.size)
    out = np.empty(image.shape, np.float32)

    def c_call():
        s = lib.skipseg_segment(handle, image.ctypes.data, image.nbytes, 0, a.size, a.size, a.size,
                                ctypes.byref(opts), out.ctypes.data, out.size)
        assert s == 0, lib.skipseg_last_error()
        return out

    model = skipseg.Model(a.model)

    def py_call():
        return model.predict(image, averaging="none", threads=a.threads)

    py_out = np.empty(image.shape, np.float32)

    def py_out_call():
        return model.predict(image, averaging="none", threads=a.threads, out=py_out)

    # warm-up: plans compiled, pools started; and the same numbers from both
    assert np.array_equal(py_call(), c_call().copy())
    calls = {
        "C (ctypes -> skipseg_segment, caller's buffer)": c_call,
        "Python (predict, new array)": py_call,
        "Python (predict, out= caller's array)": py_out_call,
    }
    times = {name: [] for name in calls}
    for r in range(a.rounds):
        order = list(calls.items())
        order = order[r % 3:] + order[:r % 3]  # each call first, second, third in turn
        for name, f in order:
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    c, p, po = (statistics.median(v) for v in times.values())
    print(f"{a.size}x{a.size} uint8, one pass, {a.threads} threads, {a.rounds} alternating rounds")
    print("| call | median s | min s |")
    print("|---|---|---|")
    for name, v in times.items():
        print(f"| {name} | {statistics.median(v):.3f} | {min(v):.3f} |")
    print(f"Python / C (medians): new array {p / c:.3f}, out= {po / c:.3f}   (goal <= 1.03)")


if __name__ == "__main__":
    main()
