#!/usr/bin/env python3
"""The transformers side of benches/esm.sh: residues per second of EsmModel (torch, 2 threads)
on one sequence. Prints one JSON line like `biomedgpt bench esm`.

usage: esm_transformers.py MODEL_DIR SEQ_LEN [REPEATS] [DTYPE]   (DTYPE f32 (default), f16 or bf16)
TORCH_DEVICE=cuda runs it on the GPU instead (benches/gpu.sh).
"""
import json
import os
import sys
import time

import torch
from transformers import EsmModel

torch.set_num_threads(2)
DEVICE = torch.device(os.environ.get("TORCH_DEVICE", "cpu"))


def main():
    model_dir, seq_len = sys.argv[1], int(sys.argv[2])
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    dtype = sys.argv[4] if len(sys.argv) > 4 else "f32"
    torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    model = EsmModel.from_pretrained(model_dir, add_pooling_layer=False, dtype=torch_dtype).eval().to(DEVICE)
    letters = "LAGVSERTIDPKQNFYMHWC"
    vocab = open(f"{model_dir}/vocab.txt").read().split()
    seq = [letters[(i * 7 + i // 3) % len(letters)] for i in range(seq_len)]
    ids = torch.tensor([[0] + [vocab.index(c) for c in seq] + [2]], device=DEVICE)
    with torch.inference_mode():
        model(ids).last_hidden_state.cpu()  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            model(ids).last_hidden_state.cpu()  # as ours: the output reaches the host
        seconds = (time.perf_counter() - t) / repeats
    print(json.dumps({"impl": f"transformers {__import__('transformers').__version__}", "dtype": dtype,
                      "seq_len": seq_len, "seconds": seconds, "residues_per_s": seq_len / seconds}))


if __name__ == "__main__":
    main()
