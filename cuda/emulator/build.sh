#!/usr/bin/env bash
# Builds the emulated CUDA driver into DIR/lib64/ (default: target/cuda-emulator) and prints DIR. A
# binary linked against the stub (cuda/stub/build.sh) runs on it with LD_LIBRARY_PATH=DIR/lib64: one
# device whose launches run kernels/cu compiled for the host (see cuda/README.md, "Emulated device").
# Rebuilds only when a source is newer than the library. Also checks that the kernel table registers
# exactly the kernels of kernels/src/signatures.rs.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/cuda/emulator"
dir="${1:-$root/target/cuda-emulator}"
lib="$dir/lib64/libcuda.so.1"
mkdir -p "$dir/lib64" "$dir/obj"

# The table's names (EMU_KERNEL wrappers in kernels/*.cpp) against the launcher table's.
table="$(grep -ohE '(GRID_STRIDE|BLOCK)_KERNEL\([a-z0-9_]+\)' "$here"/kernels/*.cpp | sed -E 's/.*\((.*)\)/\1/' | sort)"
wanted="$(grep -oE '^kernel!\([A-Z0-9_]+, [A-Za-z0-9]+, "[a-z0-9_]+"' "$root/kernels/src/signatures.rs" | sed -E 's/.*"(.*)"/\1/' | sort)"
if [[ "$table" != "$wanted" ]]; then
  diff <(echo "$wanted") <(echo "$table") >&2 || true
  echo "cuda/emulator: kernel table differs from kernels/src/signatures.rs (<: only there, >: only in the table)" >&2
  exit 1
fi

sources=("$here"/*.cpp "$here"/*.h "$here"/kernels/*.cpp "$root"/kernels/emu/cuda_threads.h "$root"/kernels/cu/* "$root/cuda/stub/libcuda_stub.c" "$0")
stale=0
[[ -f "$lib" ]] || stale=1
for s in "${sources[@]}"; do [[ "$s" -nt "$lib" ]] && stale=1; done
if (( stale )); then
  cxx="${CXX:-g++} -std=c++20 -O2 -fPIC -fvisibility=hidden -Wall -Wno-unknown-pragmas -Wno-unused-function"
  pids=() objs=("$dir/obj/libcuda_stub.o")
  for src in "$here"/driver.cpp "$here"/kernels/*.cpp; do
    objs+=("$dir/obj/$(basename "$src" .cpp).o")
    $cxx -c "$src" -o "${objs[-1]}" >&2 & pids+=($!)
  done
  ${CC:-cc} -c -fPIC -O1 -o "${objs[0]}" "$root/cuda/stub/libcuda_stub.c" >&2 & pids+=($!)
  for p in "${pids[@]}"; do wait "$p"; done
  ${CXX:-g++} -shared -Wl,-soname,libcuda.so.1 -Wl,-z,defs -o "$lib.tmp" "${objs[@]}"
  mv "$lib.tmp" "$lib"
fi
ln -sf libcuda.so.1 "$dir/lib64/libcuda.so"
echo "$dir"
