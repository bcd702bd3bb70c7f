#!/usr/bin/env bash
# GPT-2 (BioMedLM's architecture) prefill/decode benchmark: biomedgpt-rs (Burn flex CPU backend)
# next to transformers (torch, 2 threads) on the same random-weight checkpoints, in the same run.
# Not a test.
#
#   benches/gpt2.sh [shape ...]        shapes: tiny biomedlm (default: both)
#
# Needs the release binary and a Python with torch + transformers (PYTHON, default
# .venv/bin/python). Writes random checkpoints under ${BENCH_DIR:-/tmp/biomedgpt-bench}
# (biomedlm f16: 5.4 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
SHAPES=("${@:-tiny biomedlm}")
SHAPES=(${SHAPES[*]})
mkdir -p "$DIR"
RESULTS="$DIR/gpt2-results.jsonl"
: > "$RESULTS"

BW=$($BIN bench bandwidth --threads 2 | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["read_gb_per_s"])')
echo "memory read bandwidth (2 threads): $BW GB/s"

for shape in "${SHAPES[@]}"; do
  for dt in f16; do
    model="$DIR/gpt2-$shape-$dt"
    [ -f "$model/model.safetensors" ] || $BIN bench random-gpt2 --shape "$shape" --dtype "$dt" --out "$model"
    rust=$($BIN bench lm --model "$model" --dtype "$dt")
    echo "{\"shape\": \"$shape\", \"side\": \"rust\", \"result\": $rust}" >> "$RESULTS"
    # torch's CPU kernels are fastest in bf16 among 16-bit types: compare with both.
    for tdt in f16 bf16; do
      py=$($PYTHON benches/llama_transformers.py "$model" "$tdt")
      echo "{\"shape\": \"$shape\", \"side\": \"torch\", \"result\": $py}" >> "$RESULTS"
    done
  done
done

$PYTHON - "$RESULTS" "$BW" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bw = float(sys.argv[2]) * 1e9
print("\n| shape | ours | prefill tok/s | decode tok/s | bandwidth used | transformers | prefill tok/s | decode tok/s | prefill ratio | decode ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in (x for x in rows if x["side"] == "rust"):
    a = r["result"]
    for t in (x for x in rows if x["side"] == "torch" and x["shape"] == r["shape"]):
        b = t["result"]
        used = a["weight_bytes"] * a["decode_tok_s"] / bw
        print(f"| {r['shape']} | {a['dtype']} | {a['prefill_tok_s']:.1f} | {a['decode_tok_s']:.2f} | {used:.0%} | "
              f"{b['dtype']} | {b['prefill_tok_s']:.1f} | {b['decode_tok_s']:.2f} | "
              f"{a['prefill_tok_s'] / b['prefill_tok_s']:.2f}x | {a['decode_tok_s'] / b['decode_tok_s']:.2f}x |")
PY
