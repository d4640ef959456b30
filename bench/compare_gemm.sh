#!/usr/bin/env bash
# Runs the engine's GEMM bench and the numpy/OpenBLAS baseline on the same shapes, alternating
# them for ROUNDS rounds in the same run, and prints per shape the best GFLOP/s of each over all
# rounds (median of the best round's repetitions in brackets) and engine / numpy. Alternating
# and keeping the best makes the ratio robust to other load on the machine.
#
#   bash bench/compare_gemm.sh                       # threads = all cores, 3 rounds
#   THREADS=1 ROUNDS=5 bash bench/compare_gemm.sh    # single thread for both, 5 rounds
#
# Needs python3 with numpy (pip install numpy threadpoolctl). OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE are unset for the baseline so that OpenBLAS picks its best kernel for this CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-$(nproc)}"
ROUNDS="${ROUNDS:-3}"
MS="${MS:-600}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

cargo build --release -q -p bench
RAYON_NUM_THREADS="$THREADS" ./target/release/bench fma-peak | tee "$out/peak.jsonl" >&2
for _ in $(seq "$ROUNDS"); do
    RAYON_NUM_THREADS="$THREADS" ./target/release/bench gemm --ms "$MS" | tee -a "$out/engine.jsonl" >&2
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS="$THREADS" \
        python3 bench/baseline/numpy_gemm.py --ms "$MS" | tee -a "$out/numpy.jsonl" >&2
done
RAYON_NUM_THREADS="$THREADS" ./target/release/bench fma-peak | tee -a "$out/peak.jsonl" >&2

python3 - "$out" "$ROUNDS" <<'PY'
import json, sys, os
d = sys.argv[1]
load = lambda f: [json.loads(l) for l in open(os.path.join(d, f)) if l.strip()]
key = lambda r: (r["m"], r["n"], r["k"], r["b_layout"])
def best(rows):
    out = {}
    for r in rows:
        if key(r) not in out or r["gflops"] > out[key(r)]["gflops"]:
            out[key(r)] = r
    return out
eng, npy = best(load("engine.jsonl")), best(load("numpy.jsonl"))
peak = {}
for r in load("peak.jsonl"):
    k = (r["impl"], r["threads"])
    peak[k] = max(peak.get(k, 0), r["gflops"])
arch = next(iter(npy.values()), {}).get("openblas_arch")
threads = next(iter(eng.values()), {}).get("threads")
top = max((g for (impl, t), g in peak.items() if t == threads), default=0)
print(f"threads: {threads}, OpenBLAS kernel: {arch}, best of {sys.argv[2]} rounds")
print(f"{'shape (m×n×k, B)':<24}{'engine':>16}{'numpy':>16}{'ratio':>8}{'of peak':>9}")
for kk, e in eng.items():
    n = npy.get(kk)
    if n is None:
        continue
    shape = f"{kk[0]}×{kk[1]}×{kk[2]} {'Wᵀ' if kk[3] == 'transposed' else 'B'}"
    print(f"{shape:<24}{e['gflops']:>7.1f} ({e['gflops_median']:>5.0f}) "
          f"{n['gflops']:>7.1f} ({n['gflops_median']:>5.0f}) {e['gflops']/n['gflops']:>7.3f}"
          f"{e['gflops']/top if top else 0:>8.0%}")
for (impl, t), g in sorted(peak.items()):
    print(f"FMA peak {impl:>7} threads={t}: {g:.1f} GFLOP/s")
PY
