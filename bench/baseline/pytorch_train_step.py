#!/usr/bin/env python3
"""PyTorch + PEFT side of the LoRA training-step benchmark (`train-step`).

Needs the reference environment (scripts/python-reference-env.sh):

    assets/pyenv/bin/python bench/baseline/pytorch_train_step.py --model bert
    assets/pyenv/bin/python bench/baseline/pytorch_train_step.py --model llama
    assets/pyenv/bin/python bench/baseline/pytorch_train_step.py          # both, one process each

Fixed configurations (random weights from seed 0, random tokens, float32, 2 threads):
  bert:  BertForSequenceClassification, 2 labels, all-MiniLM-L6-v2's shape (hidden 384, 6 layers,
         12 heads, intermediate 1536, vocab 30522, 512 positions; BertConfig's defaults otherwise,
         which are MiniLM's: GELU, hidden/attention dropout 0.1 — `--bert-dropout 0` turns them
         off); batch 16 x 128 tokens, random labels; LoRA r=8, alpha=16, dropout 0 on query,value,
         task_type SEQ_CLS (so the classifier head is trained too).
  llama: LlamaForCausalLM (hidden 512, 8 layers, 8 heads, 4 key/value heads, intermediate 1376,
         vocab 32000; LlamaConfig's defaults otherwise: untied head, RMS eps 1e-6, rope 10000);
         batch 4 x 256 tokens, causal LM loss with labels = input_ids; LoRA r=16, alpha=32,
         dropout 0 on q,k,v,o,gate,up,down projections.
Both: AdamW (lr 1e-4, torch's defaults otherwise), model in train mode. `--device cuda` runs on the
GPU in float32 with TF32 off (what our f32 kernels compute; cuda/device-check.sh uses it), timing each
step to a torch.cuda.synchronize() and adding the peak GPU memory PyTorch allocated. A step is forward + loss +
backward + optimizer.step() + optimizer.zero_grad(); `--bf16` runs forward + loss under
torch.autocast(device_type, dtype=torch.bfloat16) (the Trainer's bf16=True; its matmul outputs are bf16,
the engine's `--bf16` keeps them f32); --warmup steps are run untimed, then --steps
steps are timed one by one. One JSON line per model:
  {"bench":"train-step","impl":"pytorch","model":..,"tokens_per_s":..,"step_s":..,"peak_rss_mib":..,...}
step_s is the mean over the timed steps (tokens_per_s = batch*seq/step_s); the extra fields give
the median, min and max step, the final loss and the set-up. peak_rss_mib is the process's peak
resident set (ru_maxrss), which is why each model runs in a process of its own; it includes
what importing torch maps in (its CPU and CUDA libraries, ~0.9 GiB resident here even with no GPU),
so rss_after_import_mib gives the resident set after the imports for comparison. loadavg_1m is the
machine's 1-minute load average before and after the run: on a shared 2-core machine anything
above ~0.5 before the run means the figures are contaminated by other work; cpu_s_per_step (the
process's CPU time per timed step, all threads) is less sensitive to that than step_s — with no
contention it is close to 2 x step_s.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

THREADS = 2
SEED = 0
LR = 1e-4


def current_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def build(model_name, bert_dropout):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    if model_name == "bert":
        kwargs = {}
        if bert_dropout is not None:
            kwargs = {"hidden_dropout_prob": bert_dropout, "attention_probs_dropout_prob": bert_dropout}
        config = BertConfig(
            vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
            intermediate_size=1536, max_position_embeddings=512, num_labels=2, **kwargs,
        )
        model = BertForSequenceClassification(config)
        lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
                          target_modules=["query", "value"])
        batch, seq = 16, 128
        input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones(batch, seq, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch,), generator=gen),
        }
    elif model_name == "llama":
        config = LlamaConfig(
            vocab_size=32000, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
            num_key_value_heads=4, intermediate_size=1376,
        )
        model = LlamaForCausalLM(config)
        lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=16, lora_alpha=32, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                          "gate_proj", "up_proj", "down_proj"])
        batch, seq = 4, 256
        input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
        inputs = {"input_ids": input_ids, "labels": input_ids}
    else:
        raise ValueError(model_name)
    model = get_peft_model(model, lora)
    model.train()
    return model, inputs, batch, seq


def run_one(model_name, warmup, steps, bert_dropout, device="cpu", bf16=False):
    import peft
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    import_rss_mib = current_rss_mib()
    load_before = os.getloadavg()[0]
    model, inputs, batch, seq = build(model_name, bert_dropout)
    if device != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model = model.to(device)
        inputs = {k: v.to(device) for k, v in inputs.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR)

    def step():
        if bf16:
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
                loss = model(**inputs).loss
        else:
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device != "cpu":
            torch.cuda.synchronize()
        return loss.item()

    for _ in range(warmup):
        step()
    times = []
    loss = None
    cpu0 = time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)

    cpu_s = (time.process_time() - cpu0) / steps
    load_after = os.getloadavg()[0]
    step_s = sum(times) / len(times)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    base = model.get_base_model()
    record = {
        "bench": "train-step",
        "impl": "pytorch",
        "model": model_name,
        "tokens_per_s": round(batch * seq / step_s, 1),
        "step_s": round(step_s, 4),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "rss_after_import_mib": import_rss_mib,
        "step_s_median": round(statistics.median(times), 4),
        "step_s_min": round(min(times), 4),
        "step_s_max": round(max(times), 4),
        "cpu_s_per_step": round(cpu_s, 4),
        "warmup": warmup,
        "steps": steps,
        "batch": batch,
        "seq": seq,
        "final_loss": round(loss, 4),
        "trainable_params": sum(p.numel() for p in params),
        "total_params": sum(p.numel() for p in model.parameters()),
        "attn": base.config._attn_implementation,
        "threads": torch.get_num_threads(),
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": device,
        "mixed_precision": "bf16" if bf16 else "no",
    }
    if device != "cpu":
        record["gpu_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        record["gpu"] = torch.cuda.get_device_name()
    if model_name == "bert":
        record["dropout"] = base.config.hidden_dropout_prob
    print(json.dumps(record), flush=True)


def main():
    ap = argparse.ArgumentParser(description="PyTorch + PEFT LoRA training-step benchmark")
    ap.add_argument("--model", choices=["bert", "llama"],
                    help="model to run in this process (default: both, each in a child process)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    ap.add_argument("--bert-dropout", type=float, default=None,
                    help="BERT hidden and attention dropout (default: BertConfig's 0.1, as MiniLM)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the step runs")
    ap.add_argument("--bf16", action="store_true",
                    help="forward + loss under torch.autocast(dtype=torch.bfloat16) (mixed precision)")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        sys.exit("--steps must be >= 1 and --warmup >= 0")

    if args.model:
        run_one(args.model, args.warmup, args.steps, args.bert_dropout, args.device, args.bf16)
        return
    status = 0
    for name in ("bert", "llama"):
        cmd = [sys.executable, os.path.abspath(__file__), "--model", name,
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--device", args.device]
        if args.bert_dropout is not None:
            cmd += ["--bert-dropout", str(args.bert_dropout)]
        if args.bf16:
            cmd.append("--bf16")
        status |= subprocess.run(cmd).returncode
    sys.exit(status)


if __name__ == "__main__":
    main()
