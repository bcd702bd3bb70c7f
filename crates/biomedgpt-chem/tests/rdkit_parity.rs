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
