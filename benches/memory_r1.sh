#!/usr/bin/env bash
# Peak resident memory of `ask` on a BioMedGPT-R1-shaped model: DeepSeek-R1-Distill-Qwen-14B's
# Qwen2 (48 x 5120, GQA 40/8, 151,665 rows), ESM-2 3B, the 5 x 300 GIN, written by `bench
# r1-shape` with zero weights in a sparse f16 file (35 GB that take no disk; zeros change no
# size), converted with `convert --dtype MIX --esm-dtype q8_0`, next to the files' size. Not a test.
#
#   benches/memory_r1.sh            MIXES="q4_k_m q8_0" (default), BENCH_DIR (default /tmp/biomedgpt-bench)
#
# Disk: each conversion 12-19 GB, removed after its measurement (KEEP=1 keeps them). The f16
# model itself is not run here: its 35 GB are more than a 24 GB machine holds.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
SRC="$DIR/biomedgpt-r1-f16"
mkdir -p "$DIR"
[ -f "$SRC/model.safetensors" ] || $BIN bench r1-shape --out "$SRC"
echo "| model | files GB | peak RSS GB | RSS / files | wall (load + prompt + 1 token) |"
echo "|---|---|---|---|---|"
for mix in ${MIXES:-q4_k_m q8_0}; do
  out="$DIR/biomedgpt-r1-$mix"
  if [ ! -f "$out/llm.gguf" ]; then
    rm -rf "$out"
    /usr/bin/time -f "convert $mix: %e s, peak RSS %M KB" $BIN convert --model "$SRC" --out "$out" --dtype "$mix" --esm-dtype q8_0
  fi
  bytes=$(( $(stat -c %s "$out/llm.gguf") + $(stat -c %s "$out/encoders.gguf") ))
  log=$(mktemp)
  /usr/bin/time -v $BIN ask --model "$out" --smiles "CC(=O)Oc1ccccc1C(=O)O" --protein MKTAYIAKQRQISFVKSHFSRQ \
    --question "Describe them." --max-new-tokens 1 --num-beams 1 --json >/dev/null 2>"$log"
  peak_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
  rm -f "$log"
  python3 -c "b=$bytes; p=$peak_kb*1024; print(f'| llm.gguf $mix + encoders.gguf (ESM q8_0) | {b/1e9:.2f} | {p/1e9:.2f} | {p/b:.2f}x | $wall |')"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$out"
done
