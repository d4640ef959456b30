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
# The path of a test binary that `cargo test --no-run` builds: the executable of its artifact message.
test_binary() {
  cargo test --release "$@" --no-run --message-format=json 2>/dev/null | python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])'
}
bin="$(test_binary -p cuda --features driver --test gpu)"
[[ -n "$bin" ]] || { echo "could not build the cuda gpu tests" >&2; exit 1; }
cp "$bin" "$out/gpu-tests"
bin="$(test_binary -p cuda --features driver --test cache)"
[[ -n "$bin" ]] || { echo "could not build the cuda cache tests" >&2; exit 1; }
cp "$bin" "$out/cache-tests"
bin="$(test_binary -p engine --features cuda --test cuda_backend)"
[[ -n "$bin" ]] || { echo "could not build the engine cuda_backend tests" >&2; exit 1; }
cp "$bin" "$out/engine-cuda-tests"
bin="$(test_binary -p engine --features cuda --test gpu_ops)"
[[ -n "$bin" ]] || { echo "could not build the engine gpu_ops tests" >&2; exit 1; }
cp "$bin" "$out/engine-gpu-ops"
bin="$(test_binary -p peft --features cuda --test gpu_train)"
[[ -n "$bin" ]] || { echo "could not build the peft gpu_train tests" >&2; exit 1; }
cp "$bin" "$out/peft-gpu-train"
cargo build --release -p bench --features cuda
cp target/release/bench "$out/bench"
# Without debug info they fit the run tool's carry limit (64 MiB) with room to spare.
strip --strip-debug "$out"/*
ls -la "$out"
