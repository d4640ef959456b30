"""transformers loads what `peft quantize` writes, and it is what transformers itself makes.

Usage: assets/pyenv/bin/python scripts/check_bnb_quantize.py FLOAT_MODEL_DIR OUR_4BIT_DIR

Loads OUR_4BIT_DIR with `from_pretrained` (bitsandbytes 4-bit on CPU), quantizes FLOAT_MODEL_DIR with
transformers' own BitsAndBytesConfig taken from OUR_4BIT_DIR/config.json, and compares every saved
tensor byte for byte (the double-quantization offset is PyTorch's f32 mean, whose last bit depends
on the summation order: it and the nested absmax are compared within one part in 1e6) and the logits of both models.
Exits non-zero on any difference.
"""
import json
import sys
import tempfile

import torch
from safetensors.torch import load_file
import transformers
from transformers import BitsAndBytesConfig

float_dir, ours_dir = sys.argv[1], sys.argv[2]
config = json.load(open(f"{ours_dir}/config.json"))
qc = config["quantization_config"]
Model = getattr(transformers, config["architectures"][0])  # e.g. LlamaForCausalLM
ours = Model.from_pretrained(ours_dir, device_map="cpu", dtype=torch.float32)
cfg = BitsAndBytesConfig(
    load_in_4bit=True,
    bnb_4bit_quant_type=qc["bnb_4bit_quant_type"],
    bnb_4bit_use_double_quant=qc["bnb_4bit_use_double_quant"],
    bnb_4bit_compute_dtype=getattr(torch, qc["bnb_4bit_compute_dtype"]),
)
theirs = Model.from_pretrained(float_dir, quantization_config=cfg, device_map="cpu", dtype=torch.float32)
with tempfile.TemporaryDirectory() as d:
    theirs.save_pretrained(d)
    want = load_file(f"{d}/model.safetensors")
got = load_file(f"{ours_dir}/model.safetensors")
bad = 0
if sorted(got) != sorted(want):
    print("key sets differ:", sorted(set(got) ^ set(want)))
    bad += 1
for k in sorted(set(got) & set(want)):
    a, b = got[k], want[k]
    if k.endswith("quant_state.bitsandbytes__nf4") or k.endswith("quant_state.bitsandbytes__fp4"):
        ja, jb = json.loads(bytes(a.tolist())), json.loads(bytes(b.tolist()))
        oa, ob = ja.pop("nested_offset", 0.0), jb.pop("nested_offset", 0.0)
        same = ja == jb and abs(oa - ob) <= 1e-6 * abs(ob)
    elif k.endswith("nested_absmax"):
        # max |absmax - offset|: moves with the offset's last bit.
        same = a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=0)
    else:
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if not same:
        print("differs:", k)
        bad += 1
print(f"{len(got)} saved tensors compared, {bad} differ")
# The loaded 4-bit layers, dequantized by bitsandbytes, must agree exactly.
import bitsandbytes.functional as F
n = 0
for (name, ma), mb in zip(ours.named_modules(), theirs.modules()):
    if hasattr(ma, "weight") and hasattr(ma.weight, "quant_state") and ma.weight.quant_state is not None:
        wa = F.dequantize_4bit(ma.weight.data, ma.weight.quant_state)
        wb = F.dequantize_4bit(mb.weight.data, mb.weight.quant_state)
        n += 1
        if not torch.allclose(wa, wb, rtol=1e-6, atol=0):
            print("dequantized weight differs:", name)
            bad += 1
print(f"{n} loaded 4-bit layers dequantized by bitsandbytes and compared")
ids = torch.tensor([[5, 81, 65, 96, 48, 14, 5], [51, 35, 56, 85, 43, 43, 40]])
try:
    with torch.no_grad():
        oa, ob = ours(ids), theirs(ids)
        la, lb = (oa.logits, ob.logits) if hasattr(oa, "logits") else (oa.last_hidden_state, ob.last_hidden_state)
    diff = (la - lb).abs().max().item()
    print(f"max |output difference| = {diff:.3g}")
    bad += diff > 1e-4
except RuntimeError as e:
    # bitsandbytes 0.50.2's CPU forward repacks weights assuming in_features >= blocksize.
    print(f"bitsandbytes cannot run this model's forward on CPU ({e}); compared weights only")
sys.exit(1 if bad else 0)
