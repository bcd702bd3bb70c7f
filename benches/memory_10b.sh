#!/usr/bin/env bash
# Peak resident memory of `ask` on a BioMedGPT-10B-shaped model (random weights: the LLM of
# LLaMA-2-7B's shape with the 32001-row vocabulary, ESM-2 3B's shape, the GraphMVP GIN), converted
# with `convert --dtype MIX --esm-dtype q8_0`, next to the files' size. Not a test.
#
#   benches/memory_10b.sh            MIXES="q4_k_m q8_0" (default), BENCH_DIR (default /tmp/biomedgpt-bench)
#
# Disk: the f16 source is about 20 GB, each conversion 7-11 GB. The f16 source itself is not
# loaded here (about 20 GB resident: more than a 24 GB machine has room for next to the page cache).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
SRC="$DIR/biomedgpt-10b-f16"
mkdir -p "$DIR"
if [ ! -f "$SRC/model.safetensors" ]; then
  $BIN init --out "$SRC" --tokenizer tests/fixtures/tokenizer/llama2/tokenizer.json --dtype f16 \
    --hidden-size 4096 --num-hidden-layers 32 --num-attention-heads 32 --intermediate-size 11008 \
    --max-position-embeddings 2048 --esm-hidden-size 2560 --esm-num-hidden-layers 36 \
    --esm-num-attention-heads 40 --gin-num-layer 5 --gin-emb-dim 300
fi
echo "source: $(du -sh "$SRC" | cut -f1) ($SRC)"
echo "| model | files GB | peak RSS GB | RSS / files | wall (load + answer of 1 token) |"
echo "|---|---|---|---|---|"
for mix in ${MIXES:-q4_k_m q8_0}; do
  out="$DIR/biomedgpt-10b-$mix"
  [ -f "$out/llm.gguf" ] || $BIN convert --model "$SRC" --out "$out" --dtype "$mix" --esm-dtype q8_0
  bytes=$(( $(stat -c %s "$out/llm.gguf") + $(stat -c %s "$out/encoders.gguf") ))
  log=$(mktemp)
  /usr/bin/time -v $BIN ask --model "$out" --smiles "CC(=O)Oc1ccccc1C(=O)O" --protein MKTAYIAKQRQISFVKSHFSRQ \
    --question "Describe them." --max-new-tokens 1 --json >/dev/null 2>"$log"
  peak_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
  rm -f "$log"
  python3 -c "b=$bytes; p=$peak_kb*1024; print(f'| llm.gguf $mix + encoders.gguf (ESM q8_0) | {b/1e9:.2f} | {p/1e9:.2f} | {p/b:.2f}x | $wall |')"
done
