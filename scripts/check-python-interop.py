#!/usr/bin/env python3
"""Loads the adapters `cargo run -p peft --example interop_adapters -- DIR` wrote with Hugging Face
PEFT and compares PEFT's outputs with ours. Needs torch, transformers and peft (see
scripts/python-reference-env.sh):  assets/pyenv/bin/python scripts/check-python-interop.py DIR
With `--prefix DIR`: the prompt-learning adapters of `--example interop_prefix` (prefix tuning) or
`--example interop_prompt` (prompt tuning, P-tuning) instead; with
`--trained MODEL_DIR ADAPTER_DIR`: a sequence-classification adapter `peft train` wrote."""
import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification


def check_prefix_adapters(root):
    """Prefix tuning / P-tuning v2 adapters from `cargo run -p peft --example interop_prefix -- DIR`:
    PEFT loads each folder (ignoring our prompt_encoder.safetensors and prefix_dropout) and computes
    our outputs; a fresh PEFT model of the same config counts the parameters we count."""
    from peft import PeftConfig, get_peft_model
    from transformers import AutoModelForTokenClassification

    classes = {
        "SEQ_CLS": AutoModelForSequenceClassification,
        "TOKEN_CLS": AutoModelForTokenClassification,
        "CAUSAL_LM": AutoModelForCausalLM,
    }
    worst = 0.0
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        model_dir = (case / "model_dir").read_text().strip()
        config = json.loads((case / "adapter" / "adapter_config.json").read_text())
        cls = classes[config["task_type"]]
        saved = load_file(case / "adapter" / "adapter_model.safetensors")
        head = saved.get("base_model.classifier.weight")
        kwargs = {"num_labels": head.shape[0]} if head is not None else {}
        model = PeftModel.from_pretrained(cls.from_pretrained(model_dir, **kwargs), case / "adapter").eval()
        expected = load_file(case / "expected.safetensors")
        name = "logits" if "logits" in expected else "last_hidden_state"
        with torch.no_grad():
            got = getattr(model(input_ids=expected["input_ids"]), name)
            if config["peft_type"] in ("PROMPT_TUNING", "P_TUNING") and got.dim() == 3:
                # PEFT returns a causal LM's logits for the virtual positions too; ours are the input's.
                got = got[:, -expected[name].shape[1] :]
            # (PEFT's disable_adapter fails on prompt-learning classifiers; the base model runs
            # without the prefixes, with the trained head.)
            plain = getattr(model.get_base_model()(input_ids=expected["input_ids"]), name)
        diff = (got - expected[name]).abs().max().item()
        effect = (plain - expected[name]).abs().max().item()
        fresh_config = PeftConfig.from_pretrained(case / "adapter")
        fresh_config.inference_mode = False
        fresh = get_peft_model(cls.from_pretrained(model_dir, **kwargs), fresh_config)
        theirs = fresh.get_nb_trainable_parameters()
        ours = tuple(int(x) for x in (case / "counts").read_text().split())
        print(f"{case.name}: trainable/all parameters: PEFT {theirs}, ours {ours}")
        print(f"{case.name}: max |PEFT - ours| = {diff:.3g} (the adapter changes outputs by up to {effect:.3g})")
        assert theirs == ours, f"{case.name}: parameter counts differ"
        assert effect > 1e-3, f"{case.name}: the adapter has no visible effect, the check would prove nothing"
        assert diff < 1e-4, f"{case.name}: PEFT disagrees with us"
        worst = max(worst, diff)
    print(f"all prefix adapters load in PEFT and agree (worst {worst:.3g})")


if len(sys.argv) == 3 and sys.argv[1] == "--prefix":
    check_prefix_adapters(Path(sys.argv[2]))
    sys.exit(0)


def check_trained_adapter(model_dir, adapter_dir):
    """A sequence-classification adapter `peft train` wrote (e.g. runs/sentiment-p-tuning-v2/adapter):
    PEFT's logits on two padded review sentences against `peft forward --adapter` (the binary at
    $PEFT_BIN, default target/release/peft)."""
    import os
    import subprocess
    import tempfile

    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    sentences = ["a gripping, beautifully acted film.", "dull and far too long; i wanted to leave."]
    batch = AutoTokenizer.from_pretrained(model_dir)(sentences, padding=True, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with tempfile.TemporaryDirectory() as tmp:
        inputs, out = Path(tmp) / "in.safetensors", Path(tmp) / "out.safetensors"
        save_file({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, inputs)
        binary = os.environ.get("PEFT_BIN", "target/release/peft")
        subprocess.run([binary, "forward", "--model", str(model_dir), "--adapter", str(adapter_dir),
                        "--input", str(inputs), "--out", str(out)], check=True)
        ours = load_file(out)["logits"]
    diff = (theirs - ours).abs().max().item()
    print(f"{adapter_dir}: PEFT logits {theirs.tolist()}, max |PEFT - ours| = {diff:.3g}")
    assert diff < 1e-4, f"{adapter_dir}: PEFT disagrees with us"


if len(sys.argv) == 4 and sys.argv[1] == "--trained":
    check_trained_adapter(sys.argv[2], sys.argv[3])
    sys.exit(0)

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
