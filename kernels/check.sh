#!/usr/bin/env bash
# CPU-only checks of the committed PTX (CI runs this):
# 1. regenerating from kernels/cu/ gives kernels/ptx/ byte for byte (and no stale .ptx is left);
# 2. every PTX assembles with ptxas (CUDA 12.0.140) for sm_80 and sm_90, with no spill stores/loads and
#    no stack frame (none is chosen anywhere yet, so any is a regression).
# 3. the kernels' CUDA C runs on the CPU (kernels/emu/) against naive references: the grid-stride ones as
#    one thread looping over the grid, the block-cooperative ones (SIMT GEMM, row softmax / norm /
#    cross-entropy / reduction, attention softmax) with each block's threads as cooperative fibers,
#    barriers and a warp-shuffle shim (emu/cuda_threads.h, shared with cuda/emulator/). The tensor-core
#    GEMM runs with mma.sync emulated, the f16 casts with g++'s _Float16 conversions.
# The launcher-vs-.entry parameter check is a Rust test (kernels/src/signatures.rs), run by cargo test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tool="$("$here/toolchain.sh")"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
"$here/generate.sh" "$fresh"
diff -r "$here/ptx" "$fresh" || { echo "kernels/ptx differs from kernels/generate.sh output: regenerate and commit" >&2; exit 1; }
status=0
for ptx in "$here"/ptx/*.ptx; do
  for arch in sm_80 sm_90; do
    log="$("$tool/nvidia/cuda_nvcc/bin/ptxas" -v -arch="$arch" "$ptx" -o /dev/null 2>&1)" || {
      echo "$log" >&2; echo "ptxas failed: $ptx ($arch)" >&2; status=1; continue; }
    # Lines read "N bytes stack frame, N bytes spill stores, N bytes spill loads" per entry.
    bad="$(echo "$log" | grep -E 'bytes stack frame' | grep -Ev '^ *0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads$' || true)"
    if [[ -n "$bad" ]]; then
      echo "$log" >&2; echo "unexpected stack/spills: $ptx ($arch)" >&2; status=1; continue
    fi
    entries="$(echo "$log" | grep -c 'Compiling entry function')"
    echo "ok $(basename "$ptx") $arch: $entries entries, no spills"
  done
done
cxx="${CXX:-g++} -O1 -Wall -Wno-unknown-pragmas"
$cxx -std=c++17 -o "$fresh/emulate" "$here/emu/emulate.cpp" && "$fresh/emulate" || status=1
$cxx -std=c++20 -o "$fresh/emulate_blocks" "$here/emu/emulate_blocks.cpp" && "$fresh/emulate_blocks" || status=1
exit $status
