#!/usr/bin/env bash
# Molecule path benchmark: featurize (RDKit) + GIN (5 layers, 300 wide, mean-pooled) on 10,000 real
# SMILES (the first 10,000 unique SMILES of ChEBI in Debian's emboss-data), biomedgpt-rs next to
# RDKit + torch_geometric (2 threads) on the same random weights, in the same run.
#
#   benches/gin.sh [batch_size]       (default 256)
#
# Needs the release binary, `apt install emboss-data`, and a Python with torch, torch_geometric,
# rdkit and safetensors (PYTHON, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/biomedgpt
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${BENCH_DIR:-/tmp/biomedgpt-bench}
BATCH=${1:-256}
mkdir -p "$DIR"
SMILES="$DIR/chebi-10k.smi"
[ -f "$SMILES" ] || awk -F'"' '/^synonym: ".*" RELATED SMILES/ && !seen[$2]++ { print $2; if (++n == 10000) exit }' \
  /usr/share/EMBOSS/data/OBO/chebi.obo > "$SMILES"
[ -f "$DIR/gin-5x300/model.safetensors" ] || $BIN bench random-gin --out "$DIR/gin-5x300" 2>/dev/null
ours=$($BIN bench gin --model "$DIR/gin-5x300" --smiles "$SMILES" --batch-size "$BATCH" 2>/dev/null)
theirs=$($PYTHON benches/gin_pyg.py "$DIR/gin-5x300" "$SMILES" "$BATCH" 2>/dev/null)
$PYTHON - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("| implementation | molecules | featurize s | GIN s | molecules/s |")
print("|---|---|---|---|---|")
for r in (a, b):
    print(f"| {r['impl']} | {r['molecules']} | {r['featurize_s']:.2f} | {r['gin_s']:.2f} | {r['molecules_per_s']:.0f} |")
print(f"ratio (ours / Python): {a['molecules_per_s'] / b['molecules_per_s']:.2f}x")
PY
