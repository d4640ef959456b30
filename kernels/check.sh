#!/usr/bin/env bash
# CPU-only checks of the committed PTX (CI runs this):
# 1. regenerating from kernels/cu/ gives kernels/ptx/ byte for byte (and no stale .ptx is left);
# 2. every PTX assembles with ptxas (CUDA 12.0.140) for sm_80 and sm_90, with no spill stores/loads and
#    no stack frame (none is chosen anywhere yet, so any is a regression).
# 3. the grid-stride kernels run on the CPU (kernels/emu/: one emulated thread looping over the grid)
#    against naive references, and the C Philox against Random123's known answers.
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
emu="$fresh/emulate"
"${CXX:-g++}" -std=c++17 -O1 -Wall -Wno-unknown-pragmas -o "$emu" "$here/emu/emulate.cpp" && "$emu" || status=1
exit $status
