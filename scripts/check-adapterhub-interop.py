#!/usr/bin/env python3
"""Loads bottleneck adapters we wrote in AdapterHub's format with `adapters` 1.3.0 and compares its
outputs and parameter counts with ours.

`adapters` is installed beside the reference environment (scripts/python-reference-env.sh), not into it:
    assets/pyenv/bin/pip install --no-deps --target assets/adapters-lib adapters==1.3.0

Cases from `cargo run -p peft --example interop_bottleneck -- DIR`:
    PYTHONPATH=assets/adapters-lib assets/pyenv/bin/python scripts/check-adapterhub-interop.py DIR
One adapter against what `peft forward --model MODEL --adapter ADAPTER --input IN --out OUT` wrote:
    PYTHONPATH=assets/adapters-lib assets/pyenv/bin/python scripts/check-adapterhub-interop.py \
        --forward MODEL ADAPTER IN OUT
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, BertModel, GPT2LMHeadModel, LlamaForCausalLM

import adapters

CLASSES = {
    "BertModel": BertModel,
    "BertForSequenceClassification": BertForSequenceClassification,
    "GPT2LMHeadModel": GPT2LMHeadModel,
    "LlamaForCausalLM": LlamaForCausalLM,
}


def load(model_dir, adapter_dir):
    """The base model as the adapter was saved from (a saved head gives its label count), with the
    adapter (and head) loaded by `adapters` and active."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    cls = CLASSES[config["model_class"]]
    kwargs = {}
    head = Path(adapter_dir) / "model_head.safetensors"
    if head.exists():
        kwargs["num_labels"] = load_file(head)["classifier.weight"].shape[0]
    model = cls.from_pretrained(model_dir, **kwargs)
    adapters.init(model)
    name = model.load_adapter(str(adapter_dir), use_safetensors=True, set_active=True)
    return model.eval(), name


def outputs(model, inputs, name):
    with torch.no_grad():
        return getattr(model(**inputs), name)


def check_cases(root):
    worst = 0.0
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        model_dir = (case / "model_dir").read_text().strip()
        model, name = load(model_dir, case / "adapter")
        expected = load_file(case / "expected.safetensors")
        out = "logits" if "logits" in expected else "last_hidden_state"
        inputs = {"input_ids": expected["input_ids"]}
        got = outputs(model, inputs, out)
        diff = (got - expected[out]).abs().max().item()
        model.train_adapter(name)
        theirs = (
            sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()),
        )
        model.eval()
        model.set_active_adapters(None)
        effect = (outputs(model, inputs, out) - expected[out]).abs().max().item()
        ours = tuple(int(x) for x in (case / "counts").read_text().split())
        print(f"{case.name}: trainable/all parameters: adapters {theirs}, ours {ours}")
        print(f"{case.name}: max |adapters - ours| = {diff:.3g} (the adapter changes outputs by up to {effect:.3g})")
        assert theirs == ours, f"{case.name}: parameter counts differ"
        assert effect > 1e-3, f"{case.name}: the adapter has no visible effect, the check would prove nothing"
        assert diff < 1e-4, f"{case.name}: adapters disagrees with us"
        worst = max(worst, diff)
    print(f"all bottleneck adapters load in adapters and agree (worst {worst:.3g})")


def check_forward(model_dir, adapter_dir, inp, out):
    model, _ = load(model_dir, adapter_dir)
    given = load_file(inp)
    ours = load_file(out)
    name = "logits" if "logits" in ours else "last_hidden_state"
    inputs = {k: v for k, v in given.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    got = outputs(model, inputs, name)
    diff = (got - ours[name]).abs().max().item()
    print(f"{adapter_dir}: max |adapters - peft forward| = {diff:.3g}")
    print(f"adapters' {name}: {got.tolist()}")
    assert diff < 1e-4, "adapters disagrees with peft forward"


if len(sys.argv) == 6 and sys.argv[1] == "--forward":
    check_forward(*sys.argv[2:6])
elif len(sys.argv) == 2:
    check_cases(Path(sys.argv[1]))
else:
    sys.exit(__doc__)
