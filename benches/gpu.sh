#!/usr/bin/env bash
# GPU benchmark: biomedgpt-rs on a GPU backend (default cuda) next to transformers on CUDA, on the
# same random-weight checkpoints, in the same run. Not a test.
#
#   cargo build --release -p biomedgpt-cli --features cuda     # or tests/gpu/pack.sh + run.sh
#   benches/gpu.sh
#
# Env: BIN (default target/release/biomedgpt), DEVICE (ours: cuda (default), cuda:N, wgpu),
# PYTHON (torch + transformers with a CUDA GPU; default python3), BENCH_DIR (random checkpoints:
# LLaMA-2-7B f16 13.5 GB, BioMedGPT-10B f16 20 GB), OUT (results; default BENCH_DIR), CASES (a
# subset of the default "llama2-7b tinyllama batch8 esm 10b", run in that order).
#
# LLaMA (f16 both sides): prefill tokens/s of a 512-token prompt and decode tokens/s of 128 new
# tokens (KV cache, greedy, the token id back on the host each step); batch8: 8 sequences decoded
# together, tokens/s over all rows. ESM-2 t33 (650M): residues/s at 1024 residues, f16. 10b:
# BioMedGPT-10B's shape in f16 (`init`: LLaMA-2-7B + ESM-2 3B + GIN), `ask` with a molecule and a
# protein: load time, time to first token, decode tokens/s, the GPU memory it took (nvidia-smi).
# Each result is a JSON line in OUT/results.jsonl; OUT/summary.md has the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./target/release/biomedgpt}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench-gpu}
OUT=${OUT:-$DIR}
CASES=${CASES-llama2-7b tinyllama batch8 esm 10b}  # set and empty: only the summary of OUT/results.jsonl
mkdir -p "$DIR" "$OUT"
RESULTS="$OUT/results.jsonl"
[ -z "$CASES" ] || : > "$RESULTS"

llama() {  # shape, label, batch
  local model="$DIR/$1-f16"
  [ -f "$model/model.safetensors" ] || $BIN bench random-llama --shape "$1" --dtype f16 --out "$model" >/dev/null
  local ours theirs
  ours=$($BIN bench lm --model "$model" --dtype f16 --device "$DEVICE" --prompt-len 512 --new-tokens 128 --batch "$3")
  theirs=$(TORCH_DEVICE=cuda $PYTHON benches/llama_transformers.py "$model" f16 512 128 "$3" 2>/dev/null)
  echo "{\"kind\": \"lm\", \"case\": \"$2\", \"shape\": \"$1\", \"ours\": $ours, \"theirs\": $theirs}" >> "$RESULTS"
}

esm() {
  local model="$DIR/esm2-t33"
  [ -f "$model/model.safetensors" ] || $BIN bench random-esm --shape t33 --dtype f16 --out "$model" 2>/dev/null
  local ours theirs
  ours=$($BIN bench esm --model "$model" --seq-len 1024 --repeats 10 --dtype f16 --device "$DEVICE")
  theirs=$(TORCH_DEVICE=cuda $PYTHON benches/esm_transformers.py "$model" 1024 10 f16 2>/dev/null)
  echo "{\"kind\": \"esm\", \"shape\": \"t33\", \"ours\": $ours, \"theirs\": $theirs}" >> "$RESULTS"
}

# The most GPU memory in use while the command runs, in MiB (nvidia-smi every 100 ms).
with_peak_gpu_memory() {
  local log; log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$log" 2>/dev/null &
  local smi=$!
  "$@"
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null || true
  PEAK_MIB=$(sort -n "$log" | tail -1); rm -f "$log"
}

ten_b() {
  local model="$DIR/biomedgpt-10b-f16"
  [ -f "$model/model.safetensors" ] || $BIN init --out "$model" --tokenizer tests/fixtures/tokenizer/llama2/tokenizer.json \
    --dtype f16 --hidden-size 4096 --num-hidden-layers 32 --num-attention-heads 32 --intermediate-size 11008 \
    --max-position-embeddings 2048 --esm-hidden-size 2560 --esm-num-hidden-layers 36 --esm-num-attention-heads 40 \
    --gin-num-layer 5 --gin-emb-dim 300 >/dev/null
  local idle answer
  # A 256-residue protein (ESM-2 positions: 258) of the common residues.
  PROTEIN=$(printf 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEG%.0s' 1 2 3 | cut -c1-256)
  idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  answer=$(mktemp)
  with_peak_gpu_memory sh -c "$BIN ask --model '$model' --dtype f16 --device '$DEVICE' --smiles 'CC(=O)Oc1ccccc1C(=O)O' \
    --protein '$PROTEIN' \
    --question 'Describe the molecule and the protein.' --max-new-tokens 32 --json --timings > '$answer'"
  local timing; timing=$(tail -1 "$answer" | $PYTHON -c 'import json,sys; a=json.load(sys.stdin); print(json.dumps({**a["timing"], "prompt_tokens": a["prompt_tokens"], "new_tokens": len(a["token_ids"])}))')
  rm -f "$answer"
  echo "{\"kind\": \"10b\", \"ours\": $timing, \"gpu_mib_idle\": $idle, \"gpu_mib_peak\": $PEAK_MIB}" >> "$RESULTS"
}

for case in $CASES; do
  echo "== $case" >&2
  case $case in
    llama2-7b) llama llama2-7b "LLaMA-2-7B" 1 ;;
    tinyllama) llama tinyllama-1.1b "TinyLlama-1.1B" 1 ;;
    batch8) llama llama2-7b "LLaMA-2-7B, 8 sequences" 8 ;;
    esm) esm ;;
    10b) ten_b ;;
    *) echo "unknown case $case" >&2; exit 2 ;;
  esac
done

$PYTHON - "$RESULTS" "$DEVICE" <<'PY' | tee "$OUT/summary.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
dev = sys.argv[2]
lm = [r for r in rows if r["kind"] == "lm"]
if lm:
    print(f"| model (f16, prompt 512, 128 new) | ours ({dev}) prefill tok/s | decode tok/s | transformers prefill tok/s | decode tok/s | prefill ratio | decode ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in lm:
        a, b = r["ours"], r["theirs"]
        print(f"| {r['case']} | {a['prefill_tok_s']:.0f} | {a['decode_tok_s']:.1f} | {b['prefill_tok_s']:.0f} | {b['decode_tok_s']:.1f} | "
              f"{a['prefill_tok_s'] / b['prefill_tok_s']:.2f}x | {a['decode_tok_s'] / b['decode_tok_s']:.2f}x |")
    one = {r["shape"]: r for r in lm if r["ours"].get("batch", 1) == 1}
    for r in (r for r in lm if r["ours"].get("batch", 1) > 1 and r["shape"] in one):
        print(f"\nbatched decoding ({r['ours']['batch']} sequences) vs one: ours "
              f"{r['ours']['decode_tok_s'] / one[r['shape']]['ours']['decode_tok_s']:.2f}x, transformers "
              f"{r['theirs']['decode_tok_s'] / one[r['shape']]['theirs']['decode_tok_s']:.2f}x")
for r in (r for r in rows if r["kind"] == "esm"):
    a, b = r["ours"], r["theirs"]
    print(f"\n| ESM-2 {r['shape']} ({a['dtype']}) | length | ours ({dev}) residues/s | transformers residues/s | ratio |")
    print("|---|---|---|---|---|")
    print(f"| | {a['seq_len']} | {a['residues_per_s']:.0f} | {b['residues_per_s']:.0f} | {a['residues_per_s'] / b['residues_per_s']:.2f}x |")
for r in (r for r in rows if r["kind"] == "10b"):
    a = r["ours"]
    fmt = lambda v, f: "n/a" if v is None else format(v, f)
    print(f"\nBioMedGPT-10B shape, f16, `ask` with a molecule and a 256-residue protein ({a['prompt_tokens']} prompt positions): "
          f"load {a['load_s']:.1f} s, first token {fmt(a['first_token_s'], '.2f')} s, decode {fmt(a['decode_tok_s'], '.1f')} tok/s, "
          f"GPU memory {r['gpu_mib_peak'] - r['gpu_mib_idle']} MiB above idle (peak {r['gpu_mib_peak']} MiB)")
PY
