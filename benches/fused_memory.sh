#!/usr/bin/env bash
# Peak resident memory of loading a fused BioMedGPT checkpoint (`biomedgpt_10b.pth` layout) whose
# LLM has TinyLlama-1.1B's shape (random f16 weights), next to the weights' size; then the same
# model converted to a GGUF LLM + encoders (`convert --dtype q8_0|q4_k_m`), its blocks used in
# place (`--dtype auto`).
#
#   benches/fused_memory.sh
#
# Needs the release binary and a Python with torch + safetensors (PYTHON, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
MODEL="$DIR/fused-1.1b"
mkdir -p "$DIR"
[ -f "$DIR/tinyllama-1.1b/model.safetensors" ] || $BIN bench random-llama --shape tinyllama-1.1b --dtype f16 --out "$DIR/tinyllama-1.1b" 2>/dev/null
if [ ! -f "$MODEL/biomedgpt_10b.pth" ]; then
  mkdir -p "$MODEL/llm" "$MODEL/esm"
  cp "$DIR/tinyllama-1.1b/config.json" "$MODEL/llm/"
  cp tests/fixtures/tokenizer/llama2/tokenizer.json "$MODEL/llm/"
  cp tests/fixtures/biomedgpt/tiny/esm/* "$MODEL/esm/"
  $PYTHON - "$DIR/tinyllama-1.1b/model.safetensors" tests/fixtures/biomedgpt/tiny/biomedgpt_10b.pth "$MODEL" <<'PY'
import sys, json, torch
from safetensors.torch import load_file
llm = load_file(sys.argv[1])
tiny = torch.load(sys.argv[2])
hidden = llm["model.embed_tokens.weight"].shape[1]
state = {k: v for k, v in tiny.items() if k.startswith(("mol_structure_encoder.", "prot_structure_encoder."))}
state.update({"llm." + k: v for k, v in llm.items()})
torch.manual_seed(0)
state["proj_mol.weight"] = torch.randn(hidden, 16) * 0.1
state["proj_mol.bias"] = torch.zeros(hidden)
state["proj_prot.weight"] = torch.randn(hidden, 48) * 0.1
state["proj_prot.bias"] = torch.zeros(hidden)
torch.save(state, sys.argv[3] + "/biomedgpt_10b.pth")
PY
fi
measure() { # model dir, dtype, weight bytes, label
  local log; log=$(mktemp)
  /usr/bin/time -v $BIN ask --model "$1" --smiles "CC(=O)Oc1ccccc1C(=O)O" --question "Describe it." \
    --dtype "$2" --max-new-tokens 1 --json >/dev/null 2>"$log"
  local peak_kb elapsed
  peak_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
  elapsed=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
  rm -f "$log"
  $PYTHON - "$3" "$peak_kb" "$elapsed" "$4" <<'PY'
import sys
w, peak = int(sys.argv[1]), int(sys.argv[2]) * 1024
print(f"| {sys.argv[4]} | {w / 1e9:.2f} | {peak / 1e9:.2f} | {peak / w:.2f}x | {sys.argv[3]} |")
PY
}
echo "| model | weights GB | peak RSS GB | RSS / weights | wall (load + 1 token) |"
echo "|---|---|---|---|---|"
measure "$MODEL" f16 "$(stat -c %s "$MODEL/biomedgpt_10b.pth")" "fused .pth, f16"
for mix in ${MIXES:-q8_0 q4_k_m}; do
  out="$DIR/fused-1.1b-$mix"
  [ -f "$out/llm.gguf" ] || $BIN convert --model "$MODEL" --out "$out" --dtype "$mix" 2>/dev/null
  bytes=$(( $(stat -c %s "$out/llm.gguf") + $(stat -c %s "$out/encoders.safetensors") ))
  measure "$out" auto "$bytes" "llm.gguf $mix + encoders"
done
