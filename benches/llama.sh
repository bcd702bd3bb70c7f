#!/usr/bin/env bash
# LLaMA prefill/decode benchmark: biomedgpt-rs (Burn flex CPU backend) next to transformers
# (torch, 2 threads) on the same random-weight checkpoints, in the same run. Not a test.
#
#   benches/llama.sh [shape ...]        shapes: tiny tinyllama-1.1b llama2-7b (default: all)
#
# Needs the release binary (cargo build --release) and a Python with torch + transformers
# (PYTHON, default .venv/bin/python; see tests/fixtures/requirements.txt).
# Writes random checkpoints under ${BENCH_DIR:-/tmp/biomedgpt-bench} (llama2-7b f16: 13.5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
SHAPES=("${@:-tiny tinyllama-1.1b llama2-7b}")
SHAPES=(${SHAPES[*]})
mkdir -p "$DIR"
RESULTS="$DIR/results.jsonl"
: > "$RESULTS"

BW=$($BIN bench bandwidth --threads 2 | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["read_gb_per_s"])')
echo "memory read bandwidth (2 threads): $BW GB/s"

for shape in "${SHAPES[@]}"; do
  # f32 fits for the small shapes; 7B runs in 16-bit so that it fits in 24 GiB.
  case $shape in llama2-7b) dtypes="f16";; *) dtypes="f32 f16";; esac
  for dt in $dtypes; do
    model="$DIR/$shape-$dt"
    [ -f "$model/model.safetensors" ] || $BIN bench random-llama --shape "$shape" --dtype "$dt" --out "$model"
    rust=$($BIN bench lm --model "$model" --dtype "$dt")
    echo "{\"shape\": \"$shape\", \"side\": \"rust\", \"result\": $rust}" >> "$RESULTS"
    # torch's CPU kernels are fastest in bf16 among 16-bit types; compare with its best.
    for tdt in $( [ "$dt" = f32 ] && echo f32 || echo bf16 ); do
      py=$($PYTHON benches/llama_transformers.py "$model" "$tdt")
      echo "{\"shape\": \"$shape\", \"side\": \"torch\", \"result\": $py}" >> "$RESULTS"
    done
  done
done

$PYTHON - "$RESULTS" "$BW" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bw = float(sys.argv[2]) * 1e9
print(f"\n| shape | ours (dtype) | prefill tok/s | decode tok/s | bandwidth used | transformers (dtype) | prefill tok/s | decode tok/s | prefill ratio | decode ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
rust = [r for r in rows if r["side"] == "rust"]
torch_rows = [r for r in rows if r["side"] == "torch"]
for r in rust:
    t = next(x for x in torch_rows if x["shape"] == r["shape"] and
             (x["result"]["dtype"] == "f32") == (r["result"]["dtype"] == "f32"))
    a, b = r["result"], t["result"]
    used = a["weight_bytes"] * a["decode_tok_s"] / bw
    print(f"| {r['shape']} | {a['dtype']} | {a['prefill_tok_s']:.1f} | {a['decode_tok_s']:.2f} | {used:.0%} | "
          f"{b['dtype']} | {b['prefill_tok_s']:.1f} | {b['decode_tok_s']:.2f} | "
          f"{a['prefill_tok_s'] / b['prefill_tok_s']:.2f}x | {a['decode_tok_s'] / b['decode_tok_s']:.2f}x |")
PY
