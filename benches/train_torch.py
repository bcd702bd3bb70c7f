#!/usr/bin/env python3
"""PyTorch peer of `biomedgpt train --trainable adapters` for benches/train.sh: the same fused
model (LLM from the fused .pth, the reference GIN and ESM of the test fixtures), the same loss
(prompt masked, answer + EOS, right padding), AdamW on the adapters, batches of a fixed number of
examples taken in order from a PubChemQA-format file. Prints training tokens/s (prompt + answer
positions, padding excluded) over the steps after the first.

    python benches/train_torch.py MODEL_DIR DATA_JSON EXAMPLES_PER_BATCH STEPS
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/fixtures/gin"))
spec = importlib.util.spec_from_file_location("train_fixture", ROOT / "tests/fixtures/train/make_fixtures.py")
fixture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixture)


def main():
    model_dir, data, per_batch, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(2)
    fixture.TINY = model_dir  # same layout: llm/, esm/, biomedgpt_10b.pth
    models = fixture.load_tiny()
    records = json.loads(Path(data).read_text())
    proj_mol, proj_prot = models[4], models[5]
    optimizer = torch.optim.AdamW([proj_mol.weight, proj_mol.bias, proj_prot.weight, proj_prot.bias], lr=1e-4)
    tokens, start = 0, None
    for step in range(steps):
        batch = records[step * per_batch:(step + 1) * per_batch]
        fixture.EXAMPLES = [{"kind": "molecule", "payload": r["smiles"][0], "question": r["question"], "answer": r["answer"]}
                            for r in batch]
        if step == 1:
            start = time.perf_counter()
        optimizer.zero_grad()
        loss, rows = fixture.batch_loss(models)
        loss.backward()
        optimizer.step()
        if step >= 1:
            tokens += sum(len(r[1]) for r in rows)
    elapsed = time.perf_counter() - start
    print(json.dumps({"tokens_per_s": tokens / elapsed, "steps": steps - 1, "tokens": tokens}))


if __name__ == "__main__":
    main()
