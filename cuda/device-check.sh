#!/usr/bin/env bash
# One call on a lent GPU machine (no network, no Rust toolchain): run from the repository root with
# target/device-check/ carried over (built by cuda/build-device-check.sh). Prints the driver version
# and compute capability, runs the GPU tests with REQUIRE_GPU=1 (so a missing GPU fails: the launchers,
# every engine op and tiny whole models against the host), then our GEMM
# bench next to PyTorch's matmul on the same shapes (TF32 off), printing the ratios, and a LoRA training
# step (bench train-step) on the GPU, f32 and bf16 mixed precision, next to PyTorch's. Results go to $OUT
# (the run tool brings that folder back) or bench/results/ when $OUT is unset.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=target/device-check
out="${OUT:-bench/results}"
mkdir -p "$out"
log="$out/device-check.log"
exec > >(tee "$log") 2>&1
status=0

echo "== device"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv || status=1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true

echo "== GPU tests (REQUIRE_GPU=1)"
REQUIRE_GPU=1 "$bin/gpu-tests" --test-threads=4 || status=1
REQUIRE_GPU=1 "$bin/cache-tests" || status=1
REQUIRE_GPU=1 "$bin/engine-cuda-tests" --test-threads=4 || status=1
# Every engine op and whole tiny models (fixtures from the tree) on the GPU against the host.
REQUIRE_GPU=1 PEFT_FIXTURES_DIR="$PWD/tests/fixtures" "$bin/engine-gpu-ops" --test-threads=4 || status=1
# Every PEFT method trained on the GPU against the same run on the host.
REQUIRE_GPU=1 PEFT_FIXTURES_DIR="$PWD/tests/fixtures" "$bin/peft-gpu-train" --test-threads=2 || status=1

echo "== GEMM bench: ours vs torch.matmul"
shapes="4096x4096x4096 8192x2048x2048 8192x8192x2048 8192x2048x8192 2048x768x3072"
# shellcheck disable=SC2086
timeout 240 "$bin/gemm-bench" $shapes | tee "$out/gemm-ours.jsonl" || status=1
# shellcheck disable=SC2086
timeout 120 python3 cuda/gemm_compare.py torch $shapes | tee "$out/gemm-torch.jsonl" || status=1
python3 cuda/gemm_compare.py report "$out/gemm-ours.jsonl" "$out/gemm-torch.jsonl" "$out/cuda-gemm.md" || status=1
echo "== LoRA training step on the GPU: ours (bench train-step) and PyTorch + transformers + PEFT, f32, TF32 off"
timeout 150 "$bin/bench" train-step --device cuda:0 --steps 5 | tee "$out/train-step-gpu.jsonl" || status=1
# Our BERT has no dropout inside the base model: PyTorch's is turned off for the same computation.
timeout 150 python3 bench/baseline/pytorch_train_step.py --device cuda --bert-dropout 0 --warmup 3 --steps 5 \
  | tee "$out/train-step-gpu-pytorch.jsonl" || status=1
echo "== the same steps in bf16 mixed precision: ours (--bf16: bf16 GEMM operands, f32 accumulation and outputs) and PyTorch (torch.autocast bf16)"
timeout 150 "$bin/bench" train-step --device cuda:0 --steps 5 --bf16 | tee "$out/train-step-gpu-bf16.jsonl" || status=1
timeout 150 python3 bench/baseline/pytorch_train_step.py --device cuda --bert-dropout 0 --warmup 3 --steps 5 --bf16 \
  | tee "$out/train-step-gpu-pytorch-bf16.jsonl" || status=1
echo "device-check: exit $status"
exit $status
