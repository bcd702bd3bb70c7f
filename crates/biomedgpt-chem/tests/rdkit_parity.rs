//! The featurizer against RDKit's Python bindings (2022.09, the fixture script in
//! tests/fixtures/gin): identical node features, edge order and edge features, and identical
//! accept/reject decisions.

use std::path::Path;

use biomedgpt_chem::{FeaturizeError, MolGraph, featurize};

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gin/graphs.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn graphs_are_identical_to_rdkit_python() {
    let fx = fixture();
    let smiles = fx["smiles"].as_array().unwrap();
    let graphs: Vec<MolGraph> = serde_json::from_value(fx["graphs"].clone()).unwrap();
    assert!(smiles.len() >= 30);
    for (s, want) in smiles.iter().zip(&graphs) {
        let s = s.as_str().unwrap();
        assert_eq!(&featurize(s).unwrap(), want, "{s}");
    }
}

#[test]
fn accept_and_reject_like_rdkit_and_quote_its_reason() {
    for case in fixture()["decisions"].as_array().unwrap() {
        let s = case["smiles"].as_str().unwrap();
        let accepted = case["accepted"].as_bool().unwrap();
        let got = featurize(s);
        assert_eq!(got.is_ok(), accepted, "{s}: {got:?}");
        if let Err(FeaturizeError::Invalid { reason, .. }) = &got {
            assert!(!reason.is_empty() && !reason.starts_with('['), "{s}: {reason}");
        }
    }
    let err = featurize("C1CC").unwrap_err().to_string();
    assert!(err.contains("unclosed ring"), "{err}");
    let err = featurize("Cl[Pt](Cl)([NH3])[NH3]").unwrap_err().to_string();
    assert!(err.contains("valence"), "{err}");
}

#[test]
fn features_the_model_cannot_represent_are_named() {
    let err = featurize("F[Pt@SP1](Cl)(Br)I").unwrap_err();
    assert!(matches!(err, FeaturizeError::Chirality { atom: 1, tag: "CHI_SQUAREPLANAR", .. }), "{err}");
    let err = featurize("[NH3]->[Pt]").unwrap_err();
    assert!(matches!(err, FeaturizeError::BondType { bond: 0, kind: "DATIVE", .. }), "{err}");
}

/// 2,000 real molecules (a fixed sample of ChEBI's SMILES): every graph identical, and the same
/// molecules refused.
#[test]
fn chebi_sample_is_identical_to_rdkit_python() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gin/chebi_graphs.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let (mut graphs, mut refused) = (0, 0);
    for line in text.lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let smiles = case["smiles"].as_str().unwrap();
        let got = featurize(smiles);
        match case.get("graph") {
            Some(graph) => {
                let want: MolGraph = serde_json::from_value(graph.clone()).unwrap();
                assert_eq!(got.as_ref().ok(), Some(&want), "{smiles}: {got:?}");
                graphs += 1;
            }
            None => {
                let outcome = case["outcome"].as_str().unwrap();
                match (&got, outcome) {
                    (Err(FeaturizeError::Invalid { .. }), "invalid") => {}
                    (Err(FeaturizeError::Chirality { .. } | FeaturizeError::BondType { .. } | FeaturizeError::BondDir { .. }), "unrepresentable") => {}
                    _ => panic!("{smiles}: reference says {outcome}, got {got:?}"),
                }
                refused += 1;
            }
        }
    }
    assert_eq!(graphs + refused, 2000);
    assert!(graphs >= 1900, "{graphs}");
}

#[test]
fn molecule_graph_keeps_rdkit_atom_and_bond_order() {
    use biomedgpt_chem::{parse_molecule, petgraph::algo::connected_components};
    let mol = parse_molecule("[Na+].[O-]C(=O)c1ccccc1").unwrap();
    assert_eq!((mol.node_count(), mol.edge_count()), (10, 9));
    assert_eq!(connected_components(&mol), 2);
    assert_eq!(mol.node_weights().next().unwrap().atomic_num, 11);
    assert_eq!(MolGraph::from_molecule(&mol), featurize("[Na+].[O-]C(=O)c1ccccc1").unwrap());
}

/// On bits printed by Python RDKit 2022.9.5 `AllChem.GetMorganFingerprintAsBitVect(mol, 2, 2048)`
/// and its `DataStructs.TanimotoSimilarity`.
#[test]
fn morgan_fingerprints_match_rdkit() {
    let aspirin = biomedgpt_chem::morgan_fingerprint("CC(=O)Oc1ccccc1C(=O)O").unwrap();
    assert_eq!(
        aspirin.0,
        [389, 456, 650, 695, 807, 909, 1017, 1035, 1047, 1057, 1088, 1199, 1380, 1410, 1447, 1468, 1616, 1729, 1750, 1775, 1873, 1917, 1970, 1991]
    );
    let phenol = biomedgpt_chem::morgan_fingerprint("c1ccccc1O").unwrap();
    assert_eq!(phenol.0, [65, 389, 745, 807, 1088, 1199, 1380, 1602, 1750, 1778, 1873]);
    let alanine = biomedgpt_chem::morgan_fingerprint("C[C@H](N)C(=O)O").unwrap();
    assert_eq!(alanine.0, [1, 132, 283, 389, 473, 650, 786, 807, 1057, 1171, 1844, 1917]);
    assert_eq!(aspirin.tanimoto(&phenol), 0.25);
    assert_eq!(aspirin.tanimoto(&aspirin), 1.0);
    let err = biomedgpt_chem::morgan_fingerprint("C1CC").unwrap_err().to_string();
    assert!(err.contains("C1CC"), "{err}");
}
