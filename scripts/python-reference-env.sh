#!/usr/bin/env bash
# Creates the Python reference environment used for cross-checks and baselines
# (bench/baseline/*.py) in assets/pyenv (assets/ is git-ignored).
#
#   scripts/python-reference-env.sh          # create or update assets/pyenv
#   scripts/python-reference-env.sh --fresh  # delete it first
#   assets/pyenv/bin/python bench/baseline/pytorch_train_step.py --model bert
#
# Only PyPI is reachable from our machines, and PyPI has no CPU-only torch
# build for Linux x86_64: its manylinux wheel links libtorch_cuda.so, whose
# DT_NEEDED entries (libcudart, libcublas, libcudnn, libnccl, libcusparseLt,
# libnvshmem, ...) must resolve even when no GPU is used, so the CUDA wheels
# that torch depends on are installed too (the environment is ~6 GiB; see
# bench/results/train-step-pytorch.md for the measured size and time).
# Everything runs on the CPU: nothing here needs or uses a GPU.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_dir="$root/assets/pyenv"
python="${PYTHON:-python3}"

if [[ "${1:-}" == "--fresh" ]]; then
    rm -rf "$env_dir"
fi

# Pinned versions. torch/transformers/peft are the ones our baselines and
# parity checks are written against; the others are pinned so that a rebuild
# resolves the same environment.
pins=(
    torch==2.15.0
    transformers==4.57.6
    peft==0.21.2
    safetensors==0.8.0
    numpy==2.4.6
    accelerate==1.15.0
    tokenizers==0.22.2
    huggingface-hub==0.36.2
)

start=$(date +%s)
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "torch 2.15 needs Python >= 3.11"'
mkdir -p "$root/assets"
if [[ ! -x "$env_dir/bin/python" ]]; then
    "$python" -m venv "$env_dir"
fi
"$env_dir/bin/python" -m pip install --quiet --upgrade pip
"$env_dir/bin/python" -m pip install --quiet "${pins[@]}"
"$env_dir/bin/python" -m pip freeze > "$env_dir/freeze.txt"

"$env_dir/bin/python" - <<'EOF'
import numpy, peft, safetensors, torch, transformers
print(f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, peft {peft.__version__}, "
      f"safetensors {safetensors.__version__}, numpy {numpy.__version__}")
EOF
end=$(date +%s)
echo "assets/pyenv ready in $((end - start)) s, $(du -sh "$env_dir" | cut -f1) on disk"
