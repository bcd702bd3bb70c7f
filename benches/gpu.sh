#!/usr/bin/env bash
# GPU benchmark: biomedgpt-rs on a GPU backend (default wgpu) next to transformers on CUDA, on the
# same random-weight checkpoints, in the same run. Not a test.
#
#   cargo build --release -p biomedgpt-cli --features wgpu
#   benches/gpu.sh
#
# Env: BIN (default target/release/biomedgpt), DEVICE (ours, default wgpu), PYTHON (with torch,
# transformers and a CUDA GPU; default python3), BENCH_DIR (random checkpoints; llama2-7b f16 is
# 13.5 GB). LLaMA: prefill tokens/s (prompt 128) and decode tokens/s (64 new tokens, KV cache),
# f32 and f16 on both sides; ESM-2: residues/s at lengths 256 and 1024 (f32).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./target/release/biomedgpt}
DEVICE=${DEVICE:-wgpu}
PYTHON=${PYTHON:-python3}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench-gpu}
mkdir -p "$DIR"
RESULTS="$DIR/results.jsonl"
: > "$RESULTS"

for case in tinyllama-1.1b:f32 tinyllama-1.1b:f16 llama2-7b:f16; do
  shape=${case%:*} dt=${case#*:}
  model="$DIR/$shape-$dt"
  [ -f "$model/model.safetensors" ] || $BIN bench random-llama --shape "$shape" --dtype "$dt" --out "$model" >/dev/null
  ours=$($BIN bench lm --model "$model" --dtype "$dt" --device "$DEVICE")
  theirs=$(TORCH_DEVICE=cuda $PYTHON benches/llama_transformers.py "$model" "$dt" 2>/dev/null)
  echo "{\"kind\": \"lm\", \"shape\": \"$shape\", \"ours\": $ours, \"theirs\": $theirs}" >> "$RESULTS"
done

for shape in t33; do
  model="$DIR/esm2-$shape"
  [ -f "$model/model.safetensors" ] || $BIN bench random-esm --shape "$shape" --dtype f32 --out "$model" 2>/dev/null
  for len in 256 1024; do
    ours=$($BIN bench esm --model "$model" --seq-len "$len" --repeats 10 --device "$DEVICE")
    theirs=$(TORCH_DEVICE=cuda $PYTHON benches/esm_transformers.py "$model" "$len" 10 2>/dev/null)
    echo "{\"kind\": \"esm\", \"shape\": \"$shape\", \"ours\": $ours, \"theirs\": $theirs}" >> "$RESULTS"
  done
done

$PYTHON - "$RESULTS" "$DEVICE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n| model | dtype | ours ({sys.argv[2]}) prefill tok/s | decode tok/s | transformers (cuda) prefill tok/s | decode tok/s | prefill ratio | decode ratio |")
print("|---|---|---|---|---|---|---|---|")
for r in (r for r in rows if r["kind"] == "lm"):
    a, b = r["ours"], r["theirs"]
    print(f"| {r['shape']} | {a['dtype']} | {a['prefill_tok_s']:.0f} | {a['decode_tok_s']:.1f} | {b['prefill_tok_s']:.0f} | "
          f"{b['decode_tok_s']:.1f} | {a['prefill_tok_s'] / b['prefill_tok_s']:.2f}x | {a['decode_tok_s'] / b['decode_tok_s']:.2f}x |")
print(f"\n| ESM-2 | length | ours ({sys.argv[2]}) residues/s | transformers (cuda) residues/s | ratio |")
print("|---|---|---|---|---|")
for r in (r for r in rows if r["kind"] == "esm"):
    a, b = r["ours"], r["theirs"]
    print(f"| {r['shape']} | {a['seq_len']} | {a['residues_per_s']:.0f} | {b['residues_per_s']:.0f} | "
          f"{a['residues_per_s'] / b['residues_per_s']:.2f}x |")
PY
