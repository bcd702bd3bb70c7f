"""Ask BioMedGPT about molecules and compare their GIN embeddings, in-process.

    pip install ./crates/biomedgpt-py
    python examples/python/describe_and_embed.py [MODEL_DIR]

MODEL_DIR defaults to the demo model shipped in models/demo (trained on sample data: its
answers only show the mechanics); give the released BioMedGPT-10B directory for real ones.
"""

import sys
from pathlib import Path

import numpy as np

import biomedgpt

model_dir = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2] / "models" / "demo")
model = biomedgpt.BioMedGPT.load(model_dir)

molecules = {"aspirin": "CC(=O)Oc1ccccc1C(=O)O", "salicylic acid": "O=C(O)c1ccccc1O", "ethanol": "CCO"}
for name, smiles in molecules.items():
    print(f"{name}: ", end="", flush=True)
    for piece in model.ask("Please describe this molecule.", smiles=smiles, stream=True):
        print(piece, end="", flush=True)
    print()

# Mean-pooled GIN features, [3, 300]: cosine similarity between the molecules.
features = model.embed_molecules(list(molecules.values()))
unit = features / np.linalg.norm(features, axis=1, keepdims=True)
names = list(molecules)
for i in range(len(names)):
    for j in range(i + 1, len(names)):
        print(f"cosine({names[i]}, {names[j]}) = {unit[i] @ unit[j]:.3f}")

graph = biomedgpt.featurize(molecules["aspirin"])
print("aspirin's graph:", graph["atoms"].shape[0], "atoms,", graph["edge_index"].shape[1], "directed bonds")
