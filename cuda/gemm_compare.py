"""PyTorch side of the GEMM bench, and the comparison table (run by cuda/device-check.sh on a GPU machine).

  gemm_compare.py torch MxNxK...            one JSON line per (dtype, shape): torch.matmul, TF32 off for f32
  gemm_compare.py report OURS.jsonl TORCH.jsonl OUT.md   markdown table of TFLOP/s and ours/torch ratios
"""
import json
import sys
import time


def torch_bench(shapes):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for s in shapes:
        m, n, k = (int(v) for v in s.split("x"))
        for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.rand(m, k, device="cuda", dtype=dtype) - 0.5
            b = torch.rand(k, n, device="cuda", dtype=dtype) - 0.5
            for _ in range(3):
                torch.matmul(a, b)
            torch.cuda.synchronize()
            times = []
            for _ in range(10):
                t = time.perf_counter()
                torch.matmul(a, b)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            t = sorted(times)[len(times) // 2]
            print(json.dumps({"impl": "torch", "dtype": name, "m": m, "n": n, "k": k, "seconds": t,
                              "tflops": 2 * m * n * k / t / 1e12}), flush=True)


def report(ours_path, torch_path, out_path):
    def load(p):
        rows = {}
        with open(p) as f:
            for line in f:
                if line.startswith("{"):
                    r = json.loads(line)
                    rows[(r["dtype"], r["m"], r["n"], r["k"])] = r
        return rows

    ours, ref = load(ours_path), load(torch_path)
    lines = ["| dtype | m x n x k | ours TFLOP/s | torch TFLOP/s | ours / torch |", "| --- | --- | --- | --- | --- |"]
    for key in sorted(ours):
        o, t = ours[key], ref.get(key)
        ratio = f"{o['tflops'] / t['tflops']:.2f}" if t else "n/a"
        tt = f"{t['tflops']:.1f}" if t else "n/a"
        lines.append(f"| {key[0]} | {key[1]}x{key[2]}x{key[3]} | {o['tflops']:.1f} | {tt} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(out_path + ".tmp", "w") as f:
        f.write(text)
    import os

    os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    if sys.argv[1] == "torch":
        torch_bench(sys.argv[2:])
    else:
        report(*sys.argv[2:5])
