#!/usr/bin/env bash
# Training throughput of `biomedgpt train --trainable adapters` (BioMedGPT's alignment recipe)
# next to the same step in PyTorch (benches/train_torch.py), on the fused model of
# benches/fused_memory.sh (an LLM of TinyLlama-1.1B's shape, random weights; ours with the frozen
# LLM in f32 and in f16, PyTorch in f32), with
# batches of 4 molecule questions from datasets/chebi. Prints tokens/s, the ratio and peak memory.
#
#   benches/train.sh            (PYTHON=.venv/bin/python, BENCH_DIR=/tmp/biomedgpt-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
MODEL="$DIR/fused-1.1b"
STEPS=${STEPS:-6}
[ -f "$MODEL/biomedgpt_10b.pth" ] || benches/fused_memory.sh >/dev/null
# Ours twice: the frozen LLM and ESM in f32 (as PyTorch runs them) and in f16 (`--dtype f16`).
declare -A rust rust_peak
log=$(mktemp)
for dtype in f32 f16; do
  OUT="$DIR/train-rs-$dtype"
  rm -rf "$OUT"
  /usr/bin/time -v $BIN train --model "$MODEL" --dataset pubchemqa=datasets/chebi --out "$OUT" --max-steps "$STEPS" \
    --max-batch-examples 4 --batch-tokens 1000000 --lr 1e-4 --valid-limit 0 --dtype "$dtype" >/dev/null 2>"$log"
  rust_peak[$dtype]=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
  # Steps after the first (warm-up), as the PyTorch side counts them.
  rust[$dtype]=$($PYTHON - "$OUT/metrics.jsonl" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
# tokens_per_s is cumulative since the first step: recover each step's end time, drop step 1.
cumulative, times = 0, []
for s in steps:
    cumulative += s["tokens"]
    times.append(cumulative / s["tokens_per_s"])
print((cumulative - steps[0]["tokens"]) / (times[-1] - times[0]))
PY
)
done
/usr/bin/time -v $PYTHON benches/train_torch.py "$MODEL" datasets/chebi/train.json 4 "$STEPS" >"$log.out" 2>"$log"
torch_peak=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
torch=$($PYTHON -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens_per_s"])' "$log.out")
rm -f "$log" "$log.out"
for dtype in f32 f16; do
  $PYTHON - "${rust[$dtype]}" "$torch" "${rust_peak[$dtype]}" "$torch_peak" "$dtype" <<'PY'
import sys
rust, torch, rp, tp, dtype = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print(f"adapters-only training, 1.1B LLM (ours {dtype}, PyTorch f32), batches of 4: biomedgpt {rust:.1f} tok/s, "
      f"PyTorch {torch:.1f} tok/s, ratio {rust / torch:.2f}x; peak RSS {rp / 1e6:.1f} GB vs {tp / 1e6:.1f} GB")
PY
done
