#!/usr/bin/env bash
# Builds, on a machine with a Rust toolchain (no GPU needed), what cuda/device-check.sh runs on a GPU
# machine that has no toolchain: the GPU test binary and the GEMM bench, linked against the stub driver
# (their NEEDED entry is libcuda.so.1, which the GPU machine's real driver provides). Output:
# target/device-check/{gpu-tests,cache-tests,engine-cuda-tests,engine-gpu-ops,peft-gpu-train,gemm-bench,bench}. Then, from a session that has a GPU lent:
#   run(command="cuda/device-check.sh", carry=["target/device-check"], timeout_s=420)
# and copy the returned $OUT/cuda-gemm.md and $OUT/device-check.log into bench/results/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
stub="$(cuda/stub/build.sh)"
out="$root/target/device-check"
mkdir -p "$out"
export CUDA_LIBRARY_PATH="$stub"
cargo build --release -p cuda --features driver --bin gemm-bench
cp target/release/gemm-bench "$out/gemm-bench"
# Builds one test target (`PACKAGE FEATURE TEST`) and copies its executable (from the artifact
# message `cargo test --no-run` prints) to $out/NAME.
copy_test() {
  local name="$1" package="$2" feature="$3" test="$4" bin
  bin="$(cargo test --release -p "$package" --features "$feature" --test "$test" --no-run --message-format=json \
    2>/dev/null | python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')"
  [[ -n "$bin" ]] || { echo "could not build the $package $test tests" >&2; exit 1; }
  cp "$bin" "$out/$name"
}
copy_test gpu-tests cuda driver gpu
copy_test cache-tests cuda driver cache
copy_test engine-cuda-tests engine cuda cuda_backend
copy_test engine-gpu-ops engine cuda gpu_ops
copy_test peft-gpu-train peft cuda gpu_train
cargo build --release -p bench --features cuda
cp target/release/bench "$out/bench"
# Without debug info they fit the run tool's carry limit (64 MiB) with room to spare.
strip --strip-debug "$out"/*
ls -la "$out"
