#!/usr/bin/env python3
"""Loads the adapters `cargo run -p peft --example interop_adapters -- DIR` wrote with Hugging Face
PEFT and compares PEFT's outputs with ours. Needs torch, transformers and peft (see
scripts/python-reference-env.sh):  assets/pyenv/bin/python scripts/check-python-interop.py DIR"""
import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

root = Path(sys.argv[1])
worst_overall = 0.0
for case in sorted(p for p in root.iterdir() if p.is_dir()):
    model_dir = (case / "model_dir").read_text().strip()
    task = json.loads((case / "adapter" / "adapter_config.json").read_text())["task_type"]
    cls = {"SEQ_CLS": AutoModelForSequenceClassification, "CAUSAL_LM": AutoModelForCausalLM}.get(task, AutoModel)
    base = cls.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(base, case / "adapter").eval()
    expected = load_file(case / "expected.safetensors")
    name = "logits" if "logits" in expected else "last_hidden_state"
    with torch.no_grad():
        out = model(input_ids=expected["input_ids"])
    got = out.logits if name == "logits" else out.last_hidden_state
    diff = (got - expected[name]).abs().max().item()
    scale = expected[name].abs().max().item()
    with torch.no_grad():
        with model.disable_adapter():
            plain = model(input_ids=expected["input_ids"])
    plain = plain.logits if name == "logits" else plain.last_hidden_state
    effect = (plain - expected[name]).abs().max().item()
    worst_overall = max(worst_overall, diff)
    trainable = PeftModel.from_pretrained(cls.from_pretrained(model_dir), case / "adapter", is_trainable=True)
    theirs = trainable.get_nb_trainable_parameters()
    ours = tuple(int(x) for x in (case / "counts").read_text().split())
    print(f"{case.name}: trainable/all parameters: PEFT {theirs}, ours {ours}")
    assert theirs == ours, f"{case.name}: parameter counts differ"
    print(f"{case.name}: max |PEFT - ours| = {diff:.3g} (outputs up to {scale:.3g}; the adapter changes them by up to {effect:.3g})")
    assert effect > 1e-3, f"{case.name}: the adapter has no visible effect, the check would prove nothing"
    assert diff < 1e-4, f"{case.name}: PEFT disagrees with us"
print(f"all adapters load in PEFT and agree (worst {worst_overall:.3g})")
