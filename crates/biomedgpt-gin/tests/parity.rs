//! GIN parity with the reference module in tests/fixtures/gin/make_fixtures.py (PyTorch, eval
//! mode) on RDKit graphs of hand-picked molecules.
//!
//! Tolerance |rust - torch| <= 1e-4 + 1e-4 |torch| (f32): sums over at most a few dozen
//! neighbours and 2-3 layers of 64-wide MLPs differ only in summation order (~1e-6).

use std::path::{Path, PathBuf};

use biomedgpt_chem::MolGraph;
use biomedgpt_gin::{Gin, GinConfig, GraphBatch, JumpingKnowledge};
use biomedgpt_io::{Checkpoint, FloatType, npy};
use burn::tensor::{DType, Device};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gin")
}

fn graphs() -> Vec<MolGraph> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("graphs.json")).unwrap()).unwrap();
    serde_json::from_value(json["graphs"].clone()).unwrap()
}

fn expected(dir: &str, file: &str) -> (Vec<usize>, Vec<f32>) {
    npy::read_f32(&std::fs::read(fixtures().join(dir).join(file)).unwrap()).unwrap()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{what}[{i}]: rust {g} vs torch {w}");
    }
}

fn load(dir: &str, prefix: Option<&str>, jk: JumpingKnowledge) -> Gin {
    let path = fixtures().join(dir);
    let mut config = GinConfig::from_file(&path.join("config.json")).unwrap();
    config.jk = jk;
    let ckpt = Checkpoint::open(&path).unwrap();
    let root = ckpt.root();
    let vb = match prefix {
        Some(p) => root.pp(p),
        None => root,
    };
    Gin::load(&config, &vb, FloatType::F32, &Device::flex()).unwrap()
}

#[test]
fn batched_molecules_match_the_reference_from_a_pth_checkpoint() {
    let gin = load("gin_d64_l3", None, JumpingKnowledge::Last);
    let graphs = graphs();
    let got: Vec<f32> = gin.node_features(&graphs).unwrap().concat();
    let (shape, want) = expected("gin_d64_l3", "expected.npy");
    assert_eq!(shape, vec![graphs.iter().map(MolGraph::num_atoms).sum::<usize>(), 64]);
    close("batch", &got, &want);
}

#[test]
fn single_molecules_equal_their_rows_of_the_batch() {
    let gin = load("gin_d64_l3", None, JumpingKnowledge::Last);
    let graphs = graphs();
    let (_, want) = expected("gin_d64_l3", "expected.npy");
    let mut start = 0;
    for (i, g) in graphs.iter().enumerate() {
        let got = gin.node_features(std::slice::from_ref(g)).unwrap().remove(0);
        close(&format!("molecule {i}"), &got, &want[start..start + got.len()]);
        start += got.len();
    }
}

#[test]
fn every_jumping_knowledge_mode_matches_with_the_fused_checkpoint_prefix() {
    let graphs = graphs();
    for (jk, name) in [
        (JumpingKnowledge::Last, "last"),
        (JumpingKnowledge::Concat, "concat"),
        (JumpingKnowledge::Max, "max"),
        (JumpingKnowledge::Sum, "sum"),
    ] {
        let gin = load("gin_d32_l2_prefixed", Some("mol_structure_encoder"), jk);
        let got: Vec<f32> = gin.node_features(&graphs).unwrap().concat();
        let (shape, want) = expected("gin_d32_l2_prefixed", &format!("expected_{name}.npy"));
        assert_eq!(shape[1], gin.config().output_dim());
        close(name, &got, &want);
    }
}

#[test]
fn mean_pooling_averages_each_molecules_atoms() {
    let gin = load("gin_d64_l3", None, JumpingKnowledge::Last);
    let graphs = graphs();
    let batch = GraphBatch::new(&graphs, &Device::flex()).unwrap();
    let pooled = gin.mean_pool(&batch, gin.forward(&batch));
    assert_eq!(pooled.dims(), [graphs.len(), 64]);
    let got = pooled.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap();
    let (_, nodes) = expected("gin_d64_l3", "expected.npy");
    let mut start = 0;
    for (g, graph) in graphs.iter().enumerate() {
        let n = graph.num_atoms();
        let mean: Vec<f32> = (0..64).map(|j| (0..n).map(|a| nodes[(start + a) * 64 + j]).sum::<f32>() / n as f32).collect();
        close(&format!("pool {g}"), &got[g * 64..(g + 1) * 64], &mean);
        start += n;
    }
}

#[test]
fn wrong_sizes_and_bad_graphs_are_named() {
    let path = fixtures().join("gin_d64_l3");
    let ckpt = Checkpoint::open(&path).unwrap();
    let config = GinConfig { num_layer: 3, emb_dim: 48, ..GinConfig::biomedgpt() };
    let err = Gin::load(&config, &ckpt.root(), FloatType::F32, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("gnns.0.mlp.0.weight") && err.contains("[128, 64]") && err.contains("[96, 48]"), "{err}");
    let config = GinConfig { num_layer: 4, emb_dim: 64, ..GinConfig::biomedgpt() };
    let err = Gin::load(&config, &ckpt.root(), FloatType::F32, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("gnns.3."), "{err}");

    let gin = load("gin_d64_l3", None, JumpingKnowledge::Last);
    let mut bad = graphs()[0].clone();
    bad.atoms[2][1] = 3; // CHI_OTHER has no embedding row
    let err = gin.node_features(&[bad]).unwrap_err().to_string();
    assert!(err.contains("atom 2") && err.contains("chirality"), "{err}");
}
