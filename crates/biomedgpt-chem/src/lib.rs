//! The molecular graph BioMedGPT's molecule encoder reads, in the featurization of GraphMVP and
//! Hu et al. (`mol_to_graph_data_obj_simple`):
//!
//! - node features `[atom_type, chirality]`: atom_type = atomic number - 1 (118 for anything
//!   outside 1..=118), chirality index in [CHI_UNSPECIFIED, CHI_TETRAHEDRAL_CW, CHI_TETRAHEDRAL_CCW];
//! - for each bond `(i, j)`, in bond order, the directed edges `i -> j` then `j -> i`, each with
//!   `[bond_type, bond_dir]`: bond_type in [SINGLE, DOUBLE, TRIPLE, AROMATIC], bond_dir in
//!   [NONE, ENDUPRIGHT, ENDDOWNRIGHT]. Self loops (`[4, 0]`) are added by the GIN layer, not here.
//!
//! [`featurize`] parses SMILES with RDKit itself (the C++ library, through a small `cxx` shim), so
//! sanitization, kekulization, aromaticity and atom order are RDKit's.

mod featurize;
mod fingerprint;
mod molecule_list;
mod rdkit;

pub use featurize::{FeaturizeError, MAX_ATOMS, MAX_FUSED_RINGS, MAX_RING_DUMMIES, MAX_SMILES_BYTES, count_atoms, featurize, parse_molecule, shown};
pub use fingerprint::{Fingerprint, morgan_fingerprint, morgan_fingerprint_with};
pub use molecule_list::{ListFormat, read_molecule_list};
pub use petgraph;

use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

/// Number of atom types the embedding table has rows for (118 elements, an unknown type, and
/// the mask token of pre-training).
pub const NUM_ATOM_TYPES: usize = 120;
/// Chirality tags the reference can represent.
pub const NUM_CHIRALITY_TAGS: usize = 3;
/// Bond types including the self loop (4) and pre-training's mask token (5).
pub const NUM_BOND_TYPES: usize = 6;
pub const NUM_BOND_DIRECTIONS: usize = 3;
/// The bond type of self loops.
pub const SELF_LOOP_BOND_TYPE: i64 = 4;

/// An atom as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Atom {
    pub atomic_num: u32,
    /// Index in [CHI_UNSPECIFIED, CHI_TETRAHEDRAL_CW, CHI_TETRAHEDRAL_CCW].
    pub chirality: u8,
}

impl Atom {
    /// The embedding row: atomic number - 1, or 118 for anything outside 1..=118 (e.g. `*`).
    pub fn atom_type(&self) -> i64 {
        if (1..=118).contains(&self.atomic_num) { self.atomic_num as i64 - 1 } else { 118 }
    }
}

/// A bond as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bond {
    /// Index in [SINGLE, DOUBLE, TRIPLE, AROMATIC].
    pub bond_type: u8,
    /// Index in [NONE, ENDUPRIGHT, ENDDOWNRIGHT].
    pub direction: u8,
}

/// A parsed molecule: node `i` is RDKit's atom `i` and edge `k` its bond `k`, so graph
/// algorithms (fragments, rings, neighbourhoods) run on exactly what the model reads.
pub type Molecule = petgraph::graph::UnGraph<Atom, Bond, u32>;

/// One molecule as the GIN sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MolGraph {
    /// `[atom_type, chirality]` per atom, in SMILES order.
    pub atoms: Vec<[i64; 2]>,
    /// `[[src, ...], [dst, ...]]`
    pub edge_index: [Vec<i64>; 2],
    /// `[bond_type, bond_dir]` per directed edge.
    pub edge_attr: Vec<[i64; 2]>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("molecule has no atoms")]
    Empty,
    #[error("atom {atom}: {what} {value} is outside 0..{limit}")]
    AtomFeature { atom: usize, what: &'static str, value: i64, limit: usize },
    #[error("edge {edge}: {what} {value} is outside 0..{limit}")]
    EdgeFeature { edge: usize, what: &'static str, value: i64, limit: usize },
    #[error("edge {edge} joins atom {atom}, but the molecule has {atoms} atoms")]
    EdgeAtom { edge: usize, atom: i64, atoms: usize },
    #[error("edge_index has {src} sources and {dst} targets but edge_attr has {attrs} rows")]
    EdgeCount { src: usize, dst: usize, attrs: usize },
}

impl MolGraph {
    /// The reference's tensor layout: one row per atom, and per bond (in bond order) the
    /// directed edges begin -> end then end -> begin.
    pub fn from_molecule(mol: &Molecule) -> Self {
        let atoms = mol.node_weights().map(|a| [a.atom_type(), a.chirality as i64]).collect();
        let (mut src, mut dst, mut attr) = (Vec::new(), Vec::new(), Vec::new());
        for edge in mol.edge_references() {
            let (i, j) = (edge.source().index() as i64, edge.target().index() as i64);
            let feature = [edge.weight().bond_type as i64, edge.weight().direction as i64];
            src.extend([i, j]);
            dst.extend([j, i]);
            attr.extend([feature, feature]);
        }
        MolGraph { atoms, edge_index: [src, dst], edge_attr: attr }
    }

    pub fn num_atoms(&self) -> usize {
        self.atoms.len()
    }

    pub fn num_edges(&self) -> usize {
        self.edge_attr.len()
    }

    /// Checks that every index fits the embedding tables and every edge joins existing atoms,
    /// so that a bad graph is an error here rather than an out-of-bounds gather in the model.
    pub fn validate(&self) -> Result<(), GraphError> {
        if self.atoms.is_empty() {
            return Err(GraphError::Empty);
        }
        let check = |value: i64, limit: usize| value >= 0 && (value as usize) < limit;
        for (atom, &[t, c]) in self.atoms.iter().enumerate() {
            if !check(t, NUM_ATOM_TYPES) {
                return Err(GraphError::AtomFeature { atom, what: "atom type", value: t, limit: NUM_ATOM_TYPES });
            }
            if !check(c, NUM_CHIRALITY_TAGS) {
                return Err(GraphError::AtomFeature { atom, what: "chirality", value: c, limit: NUM_CHIRALITY_TAGS });
            }
        }
        let [src, dst] = &self.edge_index;
        if src.len() != dst.len() || src.len() != self.edge_attr.len() {
            return Err(GraphError::EdgeCount { src: src.len(), dst: dst.len(), attrs: self.edge_attr.len() });
        }
        for (edge, &[b, d]) in self.edge_attr.iter().enumerate() {
            // Bond types 4 and 5 are reserved for self loops and masking; molecules use 0..4.
            if !check(b, SELF_LOOP_BOND_TYPE as usize) {
                return Err(GraphError::EdgeFeature { edge, what: "bond type", value: b, limit: 4 });
            }
            if !check(d, NUM_BOND_DIRECTIONS) {
                return Err(GraphError::EdgeFeature { edge, what: "bond direction", value: d, limit: NUM_BOND_DIRECTIONS });
            }
            for atom in [src[edge], dst[edge]] {
                if !check(atom, self.atoms.len()) {
                    return Err(GraphError::EdgeAtom { edge, atom, atoms: self.atoms.len() });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ethanol() -> MolGraph {
        MolGraph {
            atoms: vec![[5, 0], [5, 0], [7, 0]],
            edge_index: [vec![0, 1, 1, 2], vec![1, 0, 2, 1]],
            edge_attr: vec![[0, 0]; 4],
        }
    }

    #[test]
    fn valid_graph_passes_and_bad_indices_are_named() {
        assert_eq!(ethanol().validate(), Ok(()));
        let mut g = ethanol();
        g.atoms[1][1] = 3; // CHI_OTHER cannot be embedded
        assert!(matches!(g.validate(), Err(GraphError::AtomFeature { atom: 1, what: "chirality", .. })));
        let mut g = ethanol();
        g.edge_index[1][3] = 9;
        assert!(matches!(g.validate(), Err(GraphError::EdgeAtom { edge: 3, atom: 9, .. })));
        let mut g = ethanol();
        g.edge_attr.pop();
        assert!(matches!(g.validate(), Err(GraphError::EdgeCount { .. })));
    }

    #[test]
    fn json_round_trip_uses_the_cli_format() {
        let text = serde_json::to_string(&ethanol()).unwrap();
        assert_eq!(text, r#"{"atoms":[[5,0],[5,0],[7,0]],"edge_index":[[0,1,1,2],[1,0,2,1]],"edge_attr":[[0,0],[0,0],[0,0],[0,0]]}"#);
        assert_eq!(serde_json::from_str::<MolGraph>(&text).unwrap(), ethanol());
    }
}
