#!/usr/bin/env python3
"""The transformers side of benches/llama.sh and benches/gpt2.sh: prefill and KV-cache decode speed
of a LLaMA or GPT-2 directory with torch on 2 threads. Prints one JSON line in the format of
`biomedgpt bench lm`.

usage: llama_transformers.py MODEL_DIR DTYPE [PROMPT_LEN] [NEW_TOKENS] [BATCH]
BATCH rows decode together (the same prompt in each, as `bench lm --batch`); tokens/s count every row.
TORCH_DEVICE=cuda runs it on the GPU instead (benches/gpu.sh).
"""
import inspect
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM

torch.set_num_threads(2)
DEVICE = torch.device(os.environ.get("TORCH_DEVICE", "cpu"))


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main():
    model_dir, dtype = sys.argv[1], sys.argv[2]
    prompt_len = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    new_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).eval().to(DEVICE)
    load_s = time.perf_counter() - start
    peak_after_load = peak_rss()
    prompt = torch.tensor([[3 + (i * 7919) % 28000 for i in range(prompt_len)]] * batch, device=DEVICE)  # as `bench lm`
    # The prompt's logits for its last position only, as `model.generate` asks for them (and as
    # `bench lm` computes them), where the model takes `logits_to_keep`.
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with torch.inference_mode():
        # Warm-up as `bench lm`: the whole prompt and two decoding steps, not measured.
        out = model(prompt, use_cache=True, **last_only)
        for _ in range(2):
            out = model(out.logits[:, -1].argmax(-1, keepdim=True), past_key_values=out.past_key_values, use_cache=True)
        sync()
        # The prompt timed 3 times, median (as `bench lm`: a small model's run lasts milliseconds).
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            out = model(prompt, use_cache=True, **last_only)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            token.tolist()  # as ours: the chosen ids reach the host (a GPU sync)
            runs.append(time.perf_counter() - t)
        prefill_s = sorted(runs)[1]
        past = out.past_key_values
        t = time.perf_counter()
        for _ in range(new_tokens):
            out = model(token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            token.tolist()
        decode_s = time.perf_counter() - t
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "impl": f"transformers {__import__('transformers').__version__} / torch {torch.__version__}",
        "dtype": dtype, "parameters": n_params,
        "weight_bytes": n_params * torch.finfo(torch_dtype).bits // 8,
        "load_s": load_s, "peak_rss_after_load": peak_after_load,
        "prompt_len": prompt_len, "new_tokens": new_tokens, "batch": batch,
        "prefill_tok_s": prompt_len * batch / prefill_s, "decode_tok_s": new_tokens * batch / decode_s,
    }))


if __name__ == "__main__":
    main()
