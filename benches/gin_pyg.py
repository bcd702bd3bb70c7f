#!/usr/bin/env python3
"""The Python stack's molecule path: RDKit featurization (GraphMVP `mol_to_graph_data_obj_simple`)
plus a torch_geometric GIN in GraphMVP's form (MessagePassing, aggr="add", self loops [4, 0]),
batched with `Batch.from_data_list` and mean-pooled, weights from the same safetensors file.

    benches/gin_pyg.py GIN_DIR SMILES_FILE [BATCH_SIZE]      prints one JSON line

Both threads of the machine (torch.set_num_threads(2)), as our side uses.
"""

import json
import sys
import time
from pathlib import Path

import torch
from rdkit import Chem, RDLogger
from safetensors.torch import load_file
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing, global_mean_pool
from torch_geometric.utils import add_self_loops

torch.set_num_threads(2)
RDLogger.DisableLog("rdApp.*")
CHIRALITY = [Chem.rdchem.ChiralType.CHI_UNSPECIFIED, Chem.rdchem.ChiralType.CHI_TETRAHEDRAL_CW,
             Chem.rdchem.ChiralType.CHI_TETRAHEDRAL_CCW, Chem.rdchem.ChiralType.CHI_OTHER]
BONDS = [Chem.rdchem.BondType.SINGLE, Chem.rdchem.BondType.DOUBLE, Chem.rdchem.BondType.TRIPLE,
         Chem.rdchem.BondType.AROMATIC]
DIRS = [Chem.rdchem.BondDir.NONE, Chem.rdchem.BondDir.ENDUPRIGHT, Chem.rdchem.BondDir.ENDDOWNRIGHT]


def mol_to_graph(smiles):
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    try:
        x = [[a.GetAtomicNum() - 1 if 1 <= a.GetAtomicNum() <= 118 else 118, CHIRALITY.index(a.GetChiralTag())]
             for a in mol.GetAtoms()]
        edges, attrs = [], []
        for b in mol.GetBonds():
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            f = [BONDS.index(b.GetBondType()), DIRS.index(b.GetBondDir())]
            edges += [(i, j), (j, i)]
            attrs += [f, f]
    except ValueError:
        return None
    edge_index = torch.tensor(edges, dtype=torch.long).t().contiguous() if edges else torch.empty((2, 0), dtype=torch.long)
    edge_attr = torch.tensor(attrs, dtype=torch.long) if attrs else torch.empty((0, 2), dtype=torch.long)
    return Data(x=torch.tensor(x, dtype=torch.long), edge_index=edge_index, edge_attr=edge_attr)


class GINConv(MessagePassing):
    def __init__(self, d):
        super().__init__(aggr="add")
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.ReLU(), torch.nn.Linear(2 * d, d))
        self.edge_embedding1 = torch.nn.Embedding(6, d)
        self.edge_embedding2 = torch.nn.Embedding(3, d)

    def forward(self, x, edge_index, edge_attr):
        edge_index = add_self_loops(edge_index, num_nodes=x.size(0))[0]
        self_loop_attr = torch.zeros(x.size(0), 2, dtype=edge_attr.dtype)
        self_loop_attr[:, 0] = 4
        edge_attr = torch.cat((edge_attr, self_loop_attr), dim=0)
        edge_embeddings = self.edge_embedding1(edge_attr[:, 0]) + self.edge_embedding2(edge_attr[:, 1])
        return self.propagate(edge_index, x=x, edge_attr=edge_embeddings)

    def message(self, x_j, edge_attr):
        return x_j + edge_attr

    def update(self, aggr_out):
        return self.mlp(aggr_out)


class GNN(torch.nn.Module):
    def __init__(self, num_layer, d):
        super().__init__()
        self.x_embedding1 = torch.nn.Embedding(120, d)
        self.x_embedding2 = torch.nn.Embedding(3, d)
        self.gnns = torch.nn.ModuleList([GINConv(d) for _ in range(num_layer)])
        self.batch_norms = torch.nn.ModuleList([torch.nn.BatchNorm1d(d) for _ in range(num_layer)])

    def forward(self, x, edge_index, edge_attr):
        h = self.x_embedding1(x[:, 0]) + self.x_embedding2(x[:, 1])
        for i, (conv, norm) in enumerate(zip(self.gnns, self.batch_norms)):
            h = norm(conv(h, edge_index, edge_attr))
            if i < len(self.gnns) - 1:
                h = torch.relu(h)
        return h


def main():
    model_dir, smiles_file = Path(sys.argv[1]), Path(sys.argv[2])
    batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    config = json.loads((model_dir / "config.json").read_text())
    model = GNN(config["num_layer"], config["emb_dim"])
    model.load_state_dict(load_file(model_dir / "model.safetensors"), strict=False)
    model.eval()
    smiles = [l.strip() for l in smiles_file.read_text().splitlines() if l.strip()]

    def run(smiles):
        done, featurize_s, gin_s = 0, 0.0, 0.0
        for start in range(0, len(smiles), batch_size):
            t = time.perf_counter()
            graphs = [g for g in map(mol_to_graph, smiles[start:start + batch_size]) if g is not None]
            featurize_s += time.perf_counter() - t
            t = time.perf_counter()
            with torch.no_grad():
                batch = Batch.from_data_list(graphs)
                pooled = global_mean_pool(model(batch.x, batch.edge_index, batch.edge_attr), batch.batch)
            done += pooled.shape[0]
            gin_s += time.perf_counter() - t
        return done, featurize_s, gin_s

    run(smiles[:batch_size])
    done, featurize_s, gin_s = run(smiles)
    seconds = featurize_s + gin_s
    print(json.dumps({"impl": "rdkit+torch_geometric", "molecules": done, "featurize_s": featurize_s, "gin_s": gin_s,
                      "seconds": seconds, "molecules_per_s": done / seconds}))


if __name__ == "__main__":
    main()
