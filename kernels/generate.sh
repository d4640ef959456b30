#!/usr/bin/env bash
# Regenerates kernels/ptx/NAME.ptx from every kernels/cu/NAME.cu with the pinned NVRTC (CUDA 12.0.140,
# see toolchain.sh and README.md). Output goes to $1 if given (check.sh compares a fresh copy), else
# to kernels/ptx/. Byte for byte reproducible: fixed options, no host compiler, no paths in the output.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/ptx}"
tool="$("$here/toolchain.sh")"
mkdir -p "$out"
for src in "$here"/cu/*.cu; do
  name="$(basename "$src" .cu)"
  python3 "$here/nvrtc_compile.py" "$tool/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" "$src" "$out/$name.ptx"
done
