#!/usr/bin/env python3
"""PyTorch side of the `gguf` benchmark: SmolLM2-135M-Instruct loaded by transformers from the same
GGUF file (dequantized to float32, Q/K permutation undone by transformers' GGUF loader), then the
same measurements as `cargo run --release -p bench -- gguf`: forward tokens/s with no grad
(batch 1 x 128 and 4 x 128, random ids) and one LoRA training step (PEFT, r 16, alpha 32, dropout 0
on the seven projections, AdamW lr 1e-4; batch 4 x 128, causal-LM loss with labels = ids), medians
of --steps after a warm-up, 2 threads. Also checks the model against issue 8's reference (the
logit of " Paris" after "The capital of France is" is 17.371).

Needs the reference environment plus the `gguf` package transformers reads GGUF files with:

    assets/pyenv/bin/pip install --no-deps gguf==0.19.0
    assets/pyenv/bin/python bench/baseline/pytorch_gguf.py [--steps 3]

Prints one JSON line.
"""

import argparse
import json
import os
import resource
import statistics
import time


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def median_s(steps, fn):
    fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--assets", default=os.environ.get("PEFT_ASSETS_DIR", os.path.join(os.path.dirname(__file__), "../../assets")))
    args = ap.parse_args()
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    torch.manual_seed(0)
    rss_import = rss_mib()
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        os.path.join(args.assets, "smollm2"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", torch_dtype=torch.float32
    )
    load_s = time.perf_counter() - t
    rss_load = rss_mib()
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([[504, 3575, 282, 4649, 314]])).logits[0, -1]
    paris = float(logits[7042])
    if abs(paris - 17.371) > 1e-2:
        raise SystemExit(f"transformers' model gives {paris} for ' Paris', the reference is 17.371")
    vocab = model.config.vocab_size
    forward = {}
    for batch in (1, 4):
        ids = torch.randint(0, vocab, (batch, 128))

        def fwd():
            with torch.no_grad():
                model(ids)

        forward[f"{batch}x128"] = batch * 128 / median_s(args.steps, fwd)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets, task_type=TaskType.CAUSAL_LM)
    peft_model = get_peft_model(model, cfg)
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab, (4, 128))

    def step():
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    step_s = median_s(args.steps, step)
    print(json.dumps({
        "bench": "gguf", "impl": "pytorch", "torch": torch.__version__, "base": "dense",
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "threads": torch.get_num_threads(), "load_s": load_s,
        "rss_after_import_mib": rss_import, "rss_after_load_mib": rss_load, "paris_logit": paris,
        "forward_tokens_per_s": forward, "lora_step_4x128_s": step_s, "lora_step_tokens_per_s": 512 / step_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steps": args.steps,
        "loadavg_1m": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
