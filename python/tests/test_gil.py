"""The GIL is released while the engine runs: two Python threads segmenting at once
(one engine thread each) finish sooner than the same two calls one after the other.
A ratio measured in this one run, not a timing: with the GIL held the threads would
run one at a time and the ratio would be about 1."""

import os
import threading
import time

import numpy as np
import pytest


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_two_threads_overlap(model, isbi_volume):
    image = isbi_volume[2, :256, :256]
    model.predict(image, averaging="none", threads=1)  # the plan for this size

    def one():
        return model.predict(image, averaging="none", threads=1)

    ratios = []
    for _ in range(5):
        t = time.perf_counter()
        a, b = one(), one()
        serial = time.perf_counter() - t
        results = [None, None]

        def work(k):
            results[k] = one()

        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        parallel = time.perf_counter() - t
        assert np.array_equal(results[0], a) and np.array_equal(results[1], b)
        ratios.append(parallel / serial)
    print(f"two threads / one after the other: {', '.join(f'{r:.2f}' for r in ratios)}")
    # 2 cores: 0.5 ideal, 0.54-0.63 measured on an idle machine; with the GIL held the
    # calls cannot overlap (about 1). The best of five rounds must show overlap. On a
    # machine busy with other work the ratio is noise (0.9 with the GIL released while a
    # build ran; the GIL held on purpose once passed it by luck): the test below is
    # the robust one.
    assert min(ratios) < 0.75, ratios


def test_other_python_threads_run_while_the_engine_works(model, isbi_volume):
    image = isbi_volume[2, :512, :512]
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    th = threading.Thread(target=count)
    th.start()
    t = time.perf_counter()
    model.predict(image, averaging="flips", threads=1)
    elapsed = time.perf_counter() - t
    done.set()
    th.join()
    # a thread that sleeps 1 ms per tick gets at least a tick per 10 ms of engine time
    # when the GIL is free; with the GIL held it gets none until the call returns (2
    # ticks in 0.61 s when the release was removed on purpose: this test failed)
    assert ticks >= elapsed / 0.01, (ticks, elapsed)
