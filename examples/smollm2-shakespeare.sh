#!/usr/bin/env bash
# LoRA on SmolLM2-135M-Instruct (the llama.cpp GGUF file, dequantized) for Shakespeare's style:
# held-out perplexity (Macbeth and Twelfth Night, never trained on) and greedy generations before
# and after 80 steps of 8 × 128 tokens. Results: examples/smollm2-shakespeare.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh smollm2 shakespeare
cargo build --release -p peft
peft=target/release/peft
model=assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
run=runs/smollm2-shakespeare-lora
prompts=("ROMEO:
" "KING:
What news from France?

MESSENGER:
" "My lord, the")
generate() { # ARGS... -> each prompt's greedy continuation
    for p in "${prompts[@]}"; do
        printf -- '--- prompt: %q\n' "$p"
        "$peft" generate --model "$model" --prompt "$p" --max-new-tokens 40 "$@"
    done
}
echo "== before"
generate
"$peft" train --config examples/smollm2-shakespeare-lora.json
echo "== after"
generate --adapter "$run/adapter"
python3 -c "import json,sys; s=json.load(open('$run/summary.json')); print('held-out perplexity', s['eval_before']['dev']['perplexity'], '->', s['eval_after']['dev']['perplexity'])"
