#!/usr/bin/env bash
# ESM-2 embedding benchmark: biomedgpt-rs (Burn flex CPU backend) next to transformers' EsmModel
# (torch, 2 threads) on the same random-weight checkpoints, f32, one sequence, in the same run.
#
#   benches/esm.sh [shape ...]        shapes: t6 t33 t36 (default: all); lengths 256 and 1024
#
# Needs the release binary and a Python with torch + transformers (PYTHON, default .venv/bin/python).
# The two sides alternate ROUNDS times (default 3; 1 for t36) per shape and length, so that both
# see the same moments of a noisy machine; the table shows medians and the median of the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
ROUNDS=${ROUNDS:-3}
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
    reps=3 rounds=$ROUNDS; [ "$shape" = t36 ] && reps=1 rounds=1
    ours=() theirs=()
    for _ in $(seq "$rounds"); do
      ours+=("$($BIN bench esm --model "$model" --seq-len "$len" --repeats $reps)")
      theirs+=("$($PYTHON benches/esm_transformers.py "$model" "$len" $reps 2>/dev/null)")
    done
    $PYTHON - "$shape" "$len" "$rounds" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, statistics, sys
n = int(sys.argv[3])
a = [json.loads(x)["residues_per_s"] for x in sys.argv[4:4 + n]]
b = [json.loads(x)["residues_per_s"] for x in sys.argv[4 + n:4 + 2 * n]]
r = [x / y for x, y in zip(a, b)]
med = statistics.median
span = f" ({min(r):.2f}-{max(r):.2f})" if n > 1 else ""
print(f"| {sys.argv[1]} | {sys.argv[2]} | {med(a):.0f} | {med(b):.0f} | {med(r):.2f}x{span} |")
PY
  done
done
