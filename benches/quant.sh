#!/usr/bin/env bash
# GGUF benchmark: biomedgpt-rs next to llama.cpp's llama-bench on the same GGUF files, made from
# one random-weight f16 checkpoint with our `convert` (byte-identical to llama-quantize's output,
# tests/fixtures/gguf). Prefill and decode speed, and our resident memory after load against the
# file's size. Not a test.
#
#   LLAMA_BENCH=/path/to/llama-bench benches/quant.sh [shape ...]   shapes: tinyllama-1.1b llama2-7b
#   TYPES="f16 q8_0 q6_k q4_k_m q4_0" ROUNDS=3 THREADS=2 PROMPT=128 DECODE=64
#
# llama-bench: from the PyPI sdist llama-cpp-python (its vendor/llama.cpp): cmake -B build
# -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build -j2 --target
# llama-bench. Without it only our side runs. Files go under ${BENCH_DIR:-/tmp/biomedgpt-bench}.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-128}
DECODE=${DECODE:-64}
TYPES=(${TYPES:-f16 q8_0 q6_k q4_k_m q4_0})
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
SHAPES=("${@:-tinyllama-1.1b}")
mkdir -p "$DIR"
RESULTS="$DIR/quant.jsonl"
: > "$RESULTS"
PY=$(command -v python3)

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ISA: $($BIN inspect isa --detected)"
BW=$($BIN bench bandwidth --threads "$THREADS" | $PY -c 'import json,sys; print(json.load(sys.stdin)["read_gb_per_s"])')
echo "memory read bandwidth ($THREADS threads): $BW GB/s"

for shape in "${SHAPES[@]}"; do
  src="$DIR/$shape-f16"
  [ -f "$src/model.safetensors" ] || $BIN bench random-llama --shape "$shape" --dtype f16 --out "$src"
  # A real LLaMA-2 vocabulary, so that llama.cpp loads the files (32000 tokens, as both shapes).
  cp tests/fixtures/tokenizer/llama2/tokenizer.json "$src/"
  for ty in "${TYPES[@]}"; do
    gguf="$DIR/$shape-$ty.gguf"
    [ -f "$gguf" ] || $BIN convert --model "$src" --out "$gguf" --dtype "$ty"
    for round in $(seq "$ROUNDS"); do
      ours=$(RAYON_NUM_THREADS=$THREADS $BIN bench lm --model "$gguf" --prompt-len "$PROMPT" --new-tokens "$DECODE")
      echo "{\"shape\": \"$shape\", \"type\": \"$ty\", \"round\": $round, \"side\": \"ours\", \"file_bytes\": $(stat -c %s "$gguf"), \"result\": $ours}" >> "$RESULTS"
      if [ -n "${LLAMA_BENCH:-}" ]; then
        theirs=$($LLAMA_BENCH -m "$gguf" -p "$PROMPT" -n "$DECODE" -t "$THREADS" -r 1 -o json 2>/dev/null)
        echo "{\"shape\": \"$shape\", \"type\": \"$ty\", \"round\": $round, \"side\": \"llama.cpp\", \"result\": $(echo "$theirs" | $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))')}" >> "$RESULTS"
      fi
    done
  done
done

$PY - "$RESULTS" "$BW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bw = float(sys.argv[2]) * 1e9
med = statistics.median
def llama_cpp(result):
    # llama-bench's JSON: one entry with n_prompt > 0 (prefill) and one with n_gen > 0 (decode).
    p = next(e["avg_ts"] for e in result if e["n_prompt"] > 0)
    d = next(e["avg_ts"] for e in result if e["n_gen"] > 0)
    return p, d
print("| shape | type | file MB | our peak RSS / file | ours prefill / decode tok/s | decode bandwidth used | llama.cpp prefill / decode tok/s | prefill ratio | decode ratio |")
print("|---|---|---|---|---|---|---|---|---|")
keys = []
for r in rows:
    if (r["shape"], r["type"]) not in keys:
        keys.append((r["shape"], r["type"]))
for shape, ty in keys:
    ours = {r["round"]: r for r in rows if (r["shape"], r["type"], r["side"]) == (shape, ty, "ours")}
    theirs = {r["round"]: llama_cpp(r["result"]) for r in rows if (r["shape"], r["type"], r["side"]) == (shape, ty, "llama.cpp")}
    first = next(iter(ours.values()))
    size = first["file_bytes"]
    op = med(o["result"]["prefill_tok_s"] for o in ours.values())
    od = med(o["result"]["decode_tok_s"] for o in ours.values())
    rss = first["result"].get("peak_rss", first["result"]["rss_after_load"]) / size
    line = f"| {shape} | {ty} | {size / 1e6:.0f} | {rss:.2f} | {op:.1f} / {od:.2f} | {size * od / bw:.0%} |"
    if theirs:
        rounds = sorted(set(ours) & set(theirs))
        tp, td = med(theirs[k][0] for k in rounds), med(theirs[k][1] for k in rounds)
        pr = [ours[k]["result"]["prefill_tok_s"] / theirs[k][0] for k in rounds]
        dr = [ours[k]["result"]["decode_tok_s"] / theirs[k][1] for k in rounds]
        span = lambda v: f"{med(v):.2f}x ({min(v):.2f}-{max(v):.2f})" if len(v) > 1 else f"{v[0]:.2f}x"
        line += f" {tp:.1f} / {td:.2f} | {span(pr)} | {span(dr)} |"
    else:
        line += " - | - | - |"
    print(line)
PY
