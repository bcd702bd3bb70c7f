#!/usr/bin/env bash
# ESM-2 embedding benchmark: biomedgpt-rs (Burn flex CPU backend) next to transformers' EsmModel
# (torch, 2 threads) on the same random-weight checkpoints, f32, one sequence, in the same run.
#
#   benches/esm.sh [shape ...]        shapes: t6 t33 t36 (default: all); lengths 256 and 1024
#
# Needs the release binary and a Python with torch + transformers (PYTHON, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
SHAPES=(${@:-t6 t33 t36})
mkdir -p "$DIR"
echo "| shape | length | ours residues/s | transformers residues/s | ratio |"
echo "|---|---|---|---|---|"
for shape in "${SHAPES[@]}"; do
  model="$DIR/esm2-$shape"
  [ -f "$model/model.safetensors" ] || $BIN bench random-esm --shape "$shape" --dtype f32 --out "$model" 2>/dev/null
  for len in 256 1024; do
    reps=3; [ "$shape" = t36 ] && reps=1
    ours=$($BIN bench esm --model "$model" --seq-len "$len" --repeats $reps)
    theirs=$($PYTHON benches/esm_transformers.py "$model" "$len" $reps 2>/dev/null)
    $PYTHON - "$shape" "$len" "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(f"| {sys.argv[1]} | {sys.argv[2]} | {a['residues_per_s']:.0f} | {b['residues_per_s']:.0f} | {a['residues_per_s'] / b['residues_per_s']:.2f}x |")
PY
  done
done
