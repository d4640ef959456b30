#!/usr/bin/env python3
"""numpy (OpenBLAS) float32 matmul on the same shapes as `bench gemm`, same JSON fields.

Run through bench/compare_gemm.sh, or directly:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 python3 bench/baseline/numpy_gemm.py
(OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, if set for an old OpenBLAS, force a slower kernel on a
current numpy; leave them unset for a fair baseline.) Options: --ms N (time budget per case).
"""
import json
import os
import statistics
import sys
import time

# Thread count must be fixed before numpy loads OpenBLAS.
THREADS = int(os.environ.setdefault("OPENBLAS_NUM_THREADS", str(os.cpu_count() or 1)))

import numpy as np  # noqa: E402

try:
    from threadpoolctl import threadpool_info  # noqa: E402
except ImportError:  # optional: only used to report which kernel OpenBLAS picked
    threadpool_info = None


def cases():
    for s in (256, 512, 1024, 2048):
        yield s, s, s, False
    for n, k in ((384, 384), (1536, 384), (384, 1536)):
        yield 2048, n, k, True


def main():
    budget = 0.6
    args = sys.argv[1:]
    if args[:1] == ["--ms"] and len(args) == 2:
        budget = float(args[1]) / 1000
    elif args:
        sys.exit("usage: numpy_gemm.py [--ms N]")
    arch = None
    if threadpool_info is not None:
        for pool in threadpool_info():
            if pool.get("internal_api") == "openblas":
                arch = pool.get("architecture")
    rng = np.random.default_rng(0)
    for m, n, k, b_t in cases():
        a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
        if b_t:
            w = rng.uniform(-1, 1, (n, k)).astype(np.float32)  # Linear weight [n×k]
            b = w.T  # transposed view, no copy
        else:
            b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
        c = np.empty((m, n), dtype=np.float32)

        def run():
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            return time.perf_counter() - t

        first = run()
        run()
        reps = max(5, min(200, int(budget / max(first, 1e-6))))
        times = [run() for _ in range(reps)]
        flops = 2.0 * m * n * k
        print(json.dumps({
            "bench": "gemm",
            "impl": "numpy",
            "m": m, "n": n, "k": k,
            "b_layout": "transposed" if b_t else "row-major",
            "threads": THREADS,
            "gflops": flops / min(times) / 1e9,
            "gflops_median": flops / statistics.median(times) / 1e9,
            "reps": reps,
            "openblas_arch": arch,
            "numpy": np.__version__,
        }), flush=True)


if __name__ == "__main__":
    main()
