#!/bin/sh
# Rebuilds the demo model in models/demo from the sample data in datasets/, with the biomedgpt
# binary only: a new random model (`init`), training of everything (`train`, models/demo/train.toml),
# conversion to f16 safetensors (`convert`), then the evaluation on the held-out test splits
# beside both baselines (`eval`). Run from anywhere; it works in the repository's runs/demo/.
# Took about 1 h 40 min on 2 CPU cores (training 1 h 31 min) (see models/demo/README.md).
set -eu
cd "$(dirname "$0")/../.."
cargo build --release -p biomedgpt-cli
biomedgpt=target/release/biomedgpt
notice="the small demo model (models/demo/README.md: 9.2M parameters trained here on sample ChEBI and Swiss-Prot questions), not BioMedGPT-10B: for the real model pass --model DIR with its weights (README, Quickstart)"

rm -rf runs/demo
"$biomedgpt" init --out runs/demo/init --tokenizer tests/fixtures/tokenizer/llama2/tokenizer.json --max-protein-tokens 256
"$biomedgpt" train --config models/demo/train.toml
last=$(ls -d runs/demo/train/checkpoint-* | sort -t- -k2 -n | tail -1)
"$biomedgpt" convert --model "$last" --out runs/demo/f16 --dtype f16 --notice "$notice"

# The model's files replace the previous ones; the card, recipe and this script stay.
rm -rf models/demo/llm models/demo/esm models/demo/model-*.safetensors models/demo/model.safetensors.index.json
cp -r runs/demo/f16/* models/demo/
cp runs/demo/train/loss.png runs/demo/train/metrics.jsonl models/demo/training/

"$biomedgpt" eval --model models/demo --task pubchemqa --data datasets/chebi --split test --out runs/demo/eval-chebi
"$biomedgpt" eval --model models/demo --task uniprotqa --data datasets/swissprot --split test --out runs/demo/eval-swissprot
cp runs/demo/eval-chebi/metrics.json models/demo/training/eval-chebi.json
cp runs/demo/eval-swissprot/metrics.json models/demo/training/eval-swissprot.json
