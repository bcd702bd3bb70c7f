#!/usr/bin/env bash
# LLaMA prefill/decode benchmark: biomedgpt-rs (Burn flex CPU backend) next to transformers
# (torch, 2 threads) on the same random-weight checkpoints, in the same run. Not a test.
#
#   benches/llama.sh [shape ...]        shapes: tiny tinyllama-1.1b llama2-7b (default: all)
#
# Needs the release binary (cargo build --release) and a Python with torch + transformers
# (PYTHON, default .venv/bin/python; see tests/fixtures/requirements.txt).
# Writes random checkpoints under ${BENCH_DIR:-/tmp/biomedgpt-bench} (llama2-7b in 16 bits: 13.5 GB).
# The two sides alternate ROUNDS times (default 3) per shape, so that both see the same moments of
# a noisy machine; the table shows medians over the rounds and the median of the rounds' ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
ROUNDS=${ROUNDS:-3}
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
SHAPES=("${@:-tiny tinyllama-1.1b llama2-7b}")
SHAPES=(${SHAPES[*]})
mkdir -p "$DIR"
RESULTS="$DIR/results.jsonl"
: > "$RESULTS"

BW=$($BIN bench bandwidth --threads 2 | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["read_gb_per_s"])')
echo "memory read bandwidth (2 threads): $BW GB/s"

# 16-bit: torch's CPU kernels are fastest in bf16, ours too on CPUs with AVX512_BF16 (bf16 dot
# products); elsewhere ours run f16 (widened to f32 in registers), still against torch's bf16.
HALF=$(grep -qw avx512_bf16 /proc/cpuinfo && echo bf16 || echo f16)
for shape in "${SHAPES[@]}"; do
  # f32 fits for the small shapes; 7B runs in 16-bit so that it fits in 24 GiB.
  case $shape in llama2-7b) dtypes="$HALF";; *) dtypes="f32 $HALF";; esac
  for dt in $dtypes; do
    model="$DIR/$shape-$dt"
    [ -f "$model/model.safetensors" ] || $BIN bench random-llama --shape "$shape" --dtype "$dt" --out "$model"
    tdt=$( [ "$dt" = f32 ] && echo f32 || echo bf16 )
    for round in $(seq "$ROUNDS"); do
      rust=$($BIN bench lm --model "$model" --dtype "$dt")
      echo "{\"shape\": \"$shape\", \"round\": $round, \"side\": \"rust\", \"result\": $rust}" >> "$RESULTS"
      py=$($PYTHON benches/llama_transformers.py "$model" "$tdt")
      echo "{\"shape\": \"$shape\", \"round\": $round, \"side\": \"torch\", \"result\": $py}" >> "$RESULTS"
    done
  done
done

$PYTHON - "$RESULTS" "$BW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bw = float(sys.argv[2]) * 1e9
med = statistics.median
print(f"\n| shape | ours (dtype) | prefill tok/s | decode tok/s | bandwidth used | transformers (dtype) | prefill tok/s | decode tok/s | prefill ratio | decode ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
keys = []
for r in rows:
    k = (r["shape"], r["result"]["dtype"] == "f32")
    if r["side"] == "rust" and k not in keys:
        keys.append(k)
for shape, f32 in keys:
    runs = [r for r in rows if r["shape"] == shape and (r["result"]["dtype"] == "f32") == f32]
    ours = {r["round"]: r["result"] for r in runs if r["side"] == "rust"}
    theirs = {r["round"]: r["result"] for r in runs if r["side"] == "torch"}
    rounds = sorted(set(ours) & set(theirs))
    a, b = ours[rounds[0]], theirs[rounds[0]]
    pa, da = med(ours[k]["prefill_tok_s"] for k in rounds), med(ours[k]["decode_tok_s"] for k in rounds)
    pb, db = med(theirs[k]["prefill_tok_s"] for k in rounds), med(theirs[k]["decode_tok_s"] for k in rounds)
    pr = [ours[k]["prefill_tok_s"] / theirs[k]["prefill_tok_s"] for k in rounds]
    dr = [ours[k]["decode_tok_s"] / theirs[k]["decode_tok_s"] for k in rounds]
    span = lambda v: f"{med(v):.2f}x ({min(v):.2f}-{max(v):.2f})" if len(v) > 1 else f"{v[0]:.2f}x"
    print(f"| {shape} | {a['dtype']} | {pa:.1f} | {da:.2f} | {a['weight_bytes'] * da / bw:.0%} | "
          f"{b['dtype']} | {pb:.1f} | {db:.2f} | {span(pr)} | {span(dr)} |")
print(f"\n{len(rounds)} rounds; ratios: median (range) of the rounds' ratios, ours / transformers")
PY
