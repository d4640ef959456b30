#!/usr/bin/env python3
"""Tiny random Mistral and Qwen2 checkpoints with the logits transformers computes for them, for the
test that these LLaMA-shaped architectures load and compute what transformers computes.
Run with the reference environment (scripts/python-reference-env.sh):
    assets/pyenv/bin/python scripts/make-extra-fixtures.py tests/fixtures-extra"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

out = Path(sys.argv[1])
torch.manual_seed(0)
common = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
              tie_word_embeddings=False)
for name, cfg, cls in [
    ("mistral", MistralConfig(sliding_window=32, **common), MistralForCausalLM),
    ("qwen2", Qwen2Config(**common), Qwen2ForCausalLM),
]:
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # no norm weight exactly 1, no bias exactly 0
    model.save_pretrained(out / name, safe_serialization=True)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    save_file({"input_ids": ids, "logits": logits.contiguous()}, out / f"{name}-expected.safetensors")
    print(name, tuple(logits.shape))
