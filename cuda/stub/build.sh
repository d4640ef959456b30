#!/usr/bin/env bash
# Builds the stub driver library into DIR/lib64/ (default: target/cuda-stub) and prints DIR, which is
# what CUDA_LIBRARY_PATH must name for cust_raw's build script. Tests also need LD_LIBRARY_PATH=DIR/lib64.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$root/target/cuda-stub}"
mkdir -p "$dir/lib64"
cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$dir/lib64/libcuda.so.1" "$root/cuda/stub/libcuda_stub.c"
ln -sf libcuda.so.1 "$dir/lib64/libcuda.so"
echo "$dir"
