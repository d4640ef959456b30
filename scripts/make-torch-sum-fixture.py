"""Vectors and PyTorch's f32 sum and mean of each (torch 2.15, CPU, one thread: under 32,768 values),
for the test of engine::quant::bnb4::torch_sum_f32 (the double-quantization offset is torch's mean).

Usage: assets/pyenv/bin/python scripts/make-torch-sum-fixture.py  (writes tests/fixtures-extra/torch-f32-sums.safetensors)
"""
import torch
from safetensors.torch import save_file

g = torch.Generator().manual_seed(0)
out = {}
for n in list(range(1, 41)) + [63, 64, 65, 100, 300, 1000, 2304, 9216, 32767]:
    v = (torch.rand(n, generator=g) * 0.3).float()
    out[f"v{n}"] = v
    out[f"sum{n}"] = v.sum().reshape(1)
    out[f"mean{n}"] = v.mean().reshape(1)
save_file(out, "tests/fixtures-extra/torch-f32-sums.safetensors")
