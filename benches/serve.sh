#!/usr/bin/env bash
# Serving benchmark: `biomedgpt serve` next to llama.cpp's `llama-server` on the same GGUF file,
# same machine, same minute. C concurrent clients (1 4 16 64) each send streamed, greedy
# /v1/completions requests with a fixed answer length (ignore_eos); reports aggregate generated
# tokens/s and p50/p99 time to first token. Both servers batch up to MAX_BATCH sequences
# (llama-server: --parallel MAX_BATCH slots, continuous batching on). Not a test.
#
# The prompts share a preamble of about 300 tokens (a system prompt's length) and differ in their
# last few, as a service's requests do: both servers reuse what they cached of it (our prefix
# cache; llama-server's per-slot prompt cache), and the table shows the share of prompt positions
# each took from its cache. `biomedgpt-nocache` is our server with --prefix-cache-mb 0 (set
# NOCACHE=0 to skip it).
#
#   LLAMA_SERVER=/path/to/llama-server benches/serve.sh [model.gguf]
#   CLIENTS="1 4 16 64" ROUNDS=2 MAX_TOKENS=64 MAX_BATCH=16 THREADS=2
#
# Without a model argument: TinyLlama-1.1B's shape, random f16 weights (benches/quant.sh makes
# it). llama-server: cmake --build build --target llama-server in the PyPI sdist
# llama-cpp-python's vendor/llama.cpp (see benches/quant.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./target/release/biomedgpt}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
MODEL=${1:-$DIR/tinyllama-1.1b-f16.gguf}
CLIENTS=(${CLIENTS:-1 4 16 64})
ROUNDS=${ROUNDS:-2}
MAX_TOKENS=${MAX_TOKENS:-64}
MAX_BATCH=${MAX_BATCH:-16}
THREADS=${THREADS:-2}
PORT=${PORT:-8391}
PY=$(command -v python3)
PREAMBLE="You are a careful assistant for medicinal chemists and molecular biologists. Answer questions about small molecules, proteins and their interactions precisely and concisely. When a molecule is given, consider its functional groups, its likely physicochemical properties such as solubility, lipophilicity and charge at physiological pH, its known or plausible biological targets, and any structural alerts for toxicity. When a protein is given, consider its domains, conserved motifs, catalytic residues, post-translational modifications, subcellular localization and known disease associations. Cite the reasoning behind each statement, say when evidence is weak or missing, and never invent references, identifiers or experimental values. Prefer standard nomenclature (IUPAC names for molecules, UniProt names and gene symbols for proteins) and give units for every quantity. If a question is ambiguous, state the interpretation you chose before answering it."
PROMPT="$PREAMBLE Question: describe the structure and the function of the protein kinase domain, its activation loop and how inhibitors bind"
RESULTS="$DIR/serve.jsonl"
mkdir -p "$DIR"
: > "$RESULTS"
[ -f "$MODEL" ] || { mkdir -p "$DIR"; src="$DIR/tinyllama-1.1b-f16"; [ -f "$src/model.safetensors" ] || $BIN bench random-llama --shape tinyllama-1.1b --dtype f16 --out "$src"; cp tests/fixtures/tokenizer/llama2/tokenizer.json "$src/"; $BIN convert --model "$src" --out "$MODEL" --dtype f16; }
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ISA: $($BIN inspect isa --detected); model $MODEL"

wait_ready() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "server did not come up" >&2; return 1
}

run_side() { # name, command...
  local name=$1; shift
  "$@" > "$DIR/$name-server.log" 2>&1 &
  local pid=$!
  wait_ready
  # One request first, not counted: weights paged in from the file, buffers allocated.
  $PY benches/serve_load.py 127.0.0.1 "$PORT" 1 1 8 "$PROMPT" > /dev/null
  for c in "${CLIENTS[@]}"; do
    line=$($PY benches/serve_load.py 127.0.0.1 "$PORT" "$c" "$ROUNDS" "$MAX_TOKENS" "$PROMPT")
    echo "{\"server\": \"$name\", $(echo "$line" | cut -c2-)" | tee -a "$RESULTS"
  done
  kill -TERM "$pid"; wait "$pid" || true
}

run_side biomedgpt $BIN serve --model "$MODEL" --port "$PORT" --max-batch "$MAX_BATCH" --max-queue 1024
if [ "${NOCACHE:-1}" != 0 ]; then
  run_side biomedgpt-nocache $BIN serve --model "$MODEL" --port "$PORT" --max-batch "$MAX_BATCH" --max-queue 1024 --prefix-cache-mb 0
fi
if [ -n "${LLAMA_SERVER:-}" ]; then
  run_side llama-server "$LLAMA_SERVER" -m "$MODEL" --port "$PORT" -t "$THREADS" --parallel "$MAX_BATCH" \
    -c $((MAX_BATCH * 512)) --cont-batching --no-warmup
fi

$PY - "$RESULTS" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["server"], r["clients"]): r for r in rows}
solo = by.get(("biomedgpt", 1), {}).get("tokens_per_s")
print(f"{'clients':>7} {'ours tok/s':>10} {'x solo':>6} {'llama tok/s':>11} {'ratio':>6} {'ours ttft p50/p99':>18} {'llama ttft p50/p99':>19} "
      f"{'ours cached':>11} {'llama cached':>12} {'no-cache tok/s':>14} {'no-cache ttft p50':>17}")
for c in sorted({r["clients"] for r in rows}):
    o, l, n = by.get(("biomedgpt", c)), by.get(("llama-server", c)), by.get(("biomedgpt-nocache", c))
    f = lambda r: f"{r['ttft_p50_s']:.2f}/{r['ttft_p99_s']:.2f}" if r else "-"
    hit = lambda r: f"{r['cached_tokens'] / r['prompt_tokens']:.0%}" if r and r.get("prompt_tokens") else "-"
    print(f"{c:>7} {o['tokens_per_s'] if o else 0:>10.1f} {(o['tokens_per_s'] / solo) if o and solo else 0:>6.2f} "
          f"{l['tokens_per_s'] if l else 0:>11.1f} {(o['tokens_per_s'] / l['tokens_per_s']) if o and l else 0:>6.2f} {f(o):>18} {f(l):>19} "
          f"{hit(o):>11} {hit(l):>12} {n['tokens_per_s'] if n else 0:>14.1f} {n['ttft_p50_s'] if n else 0:>17.2f}")
PYEOF
