#!/usr/bin/env python3
"""Bottleneck adapters made with AdapterHub's `adapters` 1.3.0 on the tiny GPT-2, LLaMA and BERT
classifier fixtures, in its own file format, with the outputs it computes and the parameter counts
it reports, for the tests that our bottleneck adapters compute and count what `adapters` does on
every architecture (the team fixtures in tests/fixtures cover BERT only).

`adapters` is installed beside the reference environment, not into it (its torch/transformers stay
as they are; adapters 1.3.0 requires transformers ~=4.57.6, which is what it has):
    assets/pyenv/bin/pip install --no-deps --target assets/adapters-lib adapters==1.3.0
    PYTHONPATH=assets/adapters-lib assets/pyenv/bin/python scripts/make-adapterhub-fixtures.py \
        tests/fixtures tests/fixtures-extra/adapterhub
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertForSequenceClassification, GPT2LMHeadModel, LlamaForCausalLM

import adapters
from adapters import DoubleSeqBnConfig, ParBnConfig, SeqBnConfig

fixtures, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)

CASES = [
    # (case, model folder, model class, adapter name, config)
    ("gpt2-houlsby", "gpt2", GPT2LMHeadModel, "houlsby", DoubleSeqBnConfig(reduction_factor=8)),
    ("gpt2-pfeiffer", "gpt2", GPT2LMHeadModel, "pfeiffer", SeqBnConfig(reduction_factor=8)),
    ("gpt2-parallel-learned", "gpt2", GPT2LMHeadModel, "scaled", ParBnConfig(reduction_factor=8, scaling="learned")),
    (
        "llama-houlsby-ln",
        "llama",
        LlamaForCausalLM,
        "houlsby_ln",
        DoubleSeqBnConfig(reduction_factor=8, ln_before=True, ln_after=True, non_linearity="gelu"),
    ),
    ("llama-pfeiffer", "llama", LlamaForCausalLM, "pfeiffer", SeqBnConfig(reduction_factor=4)),
    ("llama-parallel-channel", "llama", LlamaForCausalLM, "parallel", ParBnConfig(reduction_factor=8, scaling="channel")),
    (
        "bert-cls-pfeiffer-gated",
        "bert-cls",
        BertForSequenceClassification,
        "gated",
        SeqBnConfig(reduction_factor=8, residual_before_ln="post_add", use_gating=True, leave_out=[0]),
    ),
]

manifest = []
for case, model_dir, cls, name, config in CASES:
    model = cls.from_pretrained(fixtures / "models" / model_dir)
    adapters.init(model)
    model.add_adapter(name, config=config)
    with torch.no_grad():
        # Noise on every adapter tensor, so no part of the computation is a no-op (a fresh adapter is
        # near identity; par_bn's up-projection starts at zero).
        for key, p in model.named_parameters():
            if f"adapters.{name}." in key:
                p.add_(torch.randn_like(p) * 0.2)
    model.train_adapter(name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    summary = model.adapter_summary(as_dict=True)
    adapter_params = next(r["#param"] for r in summary if r["name"] == name)
    model.eval()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 7))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    if config["ln_before"]:
        # adapters 1.3.0 cannot write this adapter as safetensors: `ln_before`'s LayerNorm is registered
        # twice (adapter_norm_before, adapter_down.0) and safetensors refuses shared tensors. Save its
        # torch format and write the same state dict, each name with its own copy, as safetensors.
        model.save_adapter(str(out / case), name, with_head=False, use_safetensors=False)
        state = torch.load(out / case / "pytorch_adapter.bin", weights_only=True)
        save_file({k: v.clone().contiguous() for k, v in state.items()}, out / case / "adapter.safetensors")
        (out / case / "pytorch_adapter.bin").unlink()
    else:
        model.save_adapter(str(out / case), name, with_head=False, use_safetensors=True)
    save_file({"input_ids": ids, "logits": logits.contiguous()}, out / f"{case}-expected.safetensors")
    manifest.append(
        {
            "name": case,
            "model_dir": f"models/{model_dir}",
            "adapter_dir": case,
            "expected": f"{case}-expected.safetensors",
            "trainable_params": trainable,
            "all_params": total,
            "adapter_params": adapter_params,
        }
    )
    print(case, tuple(logits.shape), trainable, total, adapter_params)

(out / "manifest.json").write_text(json.dumps({"generated_with": f"adapters {adapters.__version__}", "cases": manifest}, indent=2) + "\n")
