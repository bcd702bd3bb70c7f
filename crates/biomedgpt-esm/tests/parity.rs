//! Parity with transformers' `EsmModel` on `tests/fixtures/esm` (made by make_fixtures.py there).
//!
//! Tolerance: |rust - torch| <= 1e-4 + 1e-4 |torch| (f32). Final outputs are LayerNorm-ed, so
//! values are O(1); the two sides differ only in summation order (~1e-6).

use std::path::{Path, PathBuf};

use biomedgpt_esm::{Alphabet, open_fair_esm, open_hf_dir};
use biomedgpt_io::{FloatType, npy};
use burn::tensor::{DType, Device, Tensor};
use serde_json::Value;

const CASES: &[&str] = &["t2_h4_safetensors", "t3_h8_bin", "t1_h2_masked_lm_prefix"];

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/esm").join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir(name).join("expected.json")).unwrap()).unwrap()
}

fn npy(name: &str, file: &str) -> (Vec<usize>, Vec<f32>) {
    npy::read_f32(&std::fs::read(dir(name).join(file)).unwrap()).unwrap()
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{what}[{i}]: rust {g} vs torch {w}");
    }
}

fn batch_ids(exp: &Value) -> Vec<Vec<u32>> {
    exp["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect()
}

#[test]
fn padded_batch_matches_transformers_last_and_all_hidden_states() {
    for name in CASES {
        let (esm, alphabet) = open_hf_dir(&dir(name), FloatType::F32, &Device::flex()).unwrap();
        let exp = expected(name);
        let ids = batch_ids(&exp);
        // Our alphabet encodes the sequences to the ids HF's tokenizer produced.
        for (seq, row) in exp["sequences"].as_array().unwrap().iter().zip(&ids) {
            let enc = alphabet.encode("s", seq.as_str().unwrap(), 1024, false).unwrap().ids;
            assert_eq!(&row[..enc.len()], enc.as_slice());
        }
        let out = esm.forward(&ids, true);
        let (shape, want) = npy(name, "last_hidden_state.npy");
        assert_eq!(out.last_hidden_state.dims().to_vec(), shape);
        let got = values(out.last_hidden_state);
        // Padded positions are not compared (HF leaves arbitrary values there).
        let mask: Vec<bool> = exp["attention_mask"].as_array().unwrap().iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|m| m.as_u64() == Some(1)).collect::<Vec<_>>())
            .collect();
        let h = shape[2];
        for (pos, &real) in mask.iter().enumerate() {
            if real {
                close(&format!("{name} last pos {pos}"), &got[pos * h..(pos + 1) * h], &want[pos * h..(pos + 1) * h]);
            }
        }
        let (hs_shape, hs_want) = npy(name, "hidden_states.npy");
        assert_eq!(out.hidden_states.len(), hs_shape[0]);
        let per = mask.len() * h;
        for (k, state) in out.hidden_states.into_iter().enumerate() {
            let got = values(state);
            for (pos, &real) in mask.iter().enumerate() {
                if real {
                    let at = k * per + pos * h;
                    close(&format!("{name} hidden {k} pos {pos}"), &got[pos * h..(pos + 1) * h], &hs_want[at..at + h]);
                }
            }
        }
    }
}

#[test]
fn single_sequences_equal_their_batch_rows_and_mean_pool_matches() {
    let name = "t2_h4_safetensors";
    let (esm, alphabet) = open_hf_dir(&dir(name), FloatType::F32, &Device::flex()).unwrap();
    let exp = expected(name);
    let batch = values(esm.forward(&batch_ids(&exp), false).last_hidden_state);
    let l_max = batch_ids(&exp)[0].len();
    let h = esm.config().hidden_size;
    for (row, (seq, pooled)) in exp["sequences"].as_array().unwrap().iter().zip(exp["mean_pooled"].as_array().unwrap()).enumerate() {
        let ids = alphabet.encode("s", seq.as_str().unwrap(), 1024, false).unwrap().ids;
        let single = values(esm.forward(&[ids.clone()], false).last_hidden_state);
        let l = ids.len();
        // Batch row vs single run: same computation apart from padding, so 1e-5.
        for (g, w) in single.iter().zip(&batch[row * l_max * h..row * l_max * h + l * h]) {
            assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "row {row}: {g} vs {w}");
        }
        let mean: Vec<f32> = (0..h).map(|j| (1..l - 1).map(|p| single[p * h + j]).sum::<f32>() / (l - 2) as f32).collect();
        let want: Vec<f32> = pooled.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        close("mean pool", &mean, &want);
    }
}

#[test]
fn fair_esm_checkpoint_maps_to_the_same_model() {
    let name = "t2_h4_safetensors";
    let (hf, _) = open_hf_dir(&dir(name), FloatType::F32, &Device::flex()).unwrap();
    let config = hf.config().clone();
    // The fixture's size is not a published ESM-2 size, so the config is passed explicitly.
    let err = open_fair_esm(&dir(name).join("fair_esm.pt"), None, FloatType::F32, &Device::flex()).unwrap_err();
    assert!(err.to_string().contains("not a published ESM-2 size"), "{err}");
    let fair = open_fair_esm(&dir(name).join("fair_esm.pt"), Some(config), FloatType::F32, &Device::flex()).unwrap();
    let ids = batch_ids(&expected(name));
    let a = values(hf.forward(&ids, false).last_hidden_state);
    let b = values(fair.forward(&ids, false).last_hidden_state);
    assert_eq!(a, b, "same weights, same outputs");
}

#[test]
fn missing_and_misshaped_parameters_are_named() {
    let src = dir("t2_h4_safetensors");
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let tmp = scratch.path().join(format!("biomedgpt-esm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["model.safetensors", "vocab.txt"] {
        std::fs::copy(src.join(f), tmp.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(tmp.join("config.json"), config.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3")).unwrap();
    let err = open_hf_dir(&tmp, FloatType::F32, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("encoder.layer.2."), "{err}");
    std::fs::write(tmp.join("config.json"), config.replace("\"intermediate_size\": 256", "\"intermediate_size\": 128")).unwrap();
    let err = open_hf_dir(&tmp, FloatType::F32, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("intermediate.dense.weight") && err.contains("[256, 64]"), "{err}");
    assert!(Alphabet::from_vocab_file(tmp.join("nope.txt")).is_err());
}

/// ESM-2 with its projections as Q8_0 blocks (what `convert --esm-dtype q8_0` writes; the file
/// is made here from the t2_h4 fixture with the reference quantizer): the block products equal the
/// same Q8_0 weights dequantized at load to 1e-4 (f32 both, only the summation order differs),
/// and stay close to transformers' f32 output: Q8_0 rounds each weight to 1/254 of its block's
/// largest magnitude; on these LayerNorm-ed O(1) outputs of a random model that was measured at
/// 5.9e-2 largest and 1.0e-2 mean absolute difference (about the 0.5% relative error of Q8_0
/// weights carried through 8 products; bounds 0.15 and 2e-2: a wrong block layout or scale gives
/// O(1) differences).
#[test]
fn q8_0_projections_match_their_dequantized_weights() {
    use biomedgpt_io::gguf_writer::{GgufTensorSpec, append_as, write_gguf};
    use biomedgpt_io::{Checkpoint, MetaValue};
    use biomedgpt_kernels::quant::GgmlType;
    let name = "t2_h4_safetensors";
    let src = Checkpoint::open(dir(name)).unwrap();
    let keys: Vec<String> = src.keys().filter(|k| src.info(k).unwrap().dtype.is_float()).map(String::from).collect();
    let projection = |k: &str| [".query.weight", ".key.weight", ".value.weight", ".dense.weight"].iter().any(|s| k.ends_with(s));
    let specs: Vec<GgufTensorSpec> = keys
        .iter()
        .map(|k| {
            let shape = src.info(k).unwrap().shape;
            let ty = if projection(k) && shape.len() == 2 { GgmlType::Q8_0 } else { GgmlType::F32 };
            GgufTensorSpec { name: k.clone(), shape, ty }
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let out = scratch.path().join(format!("biomedgpt-esm-q8-{}.gguf", std::process::id()));
    let meta = vec![("general.architecture".to_string(), MetaValue::String("biomedgpt-encoders".into()))];
    write_gguf(&out, &meta, &specs, |i, buf| {
        let v = src.load_any_shape(&specs[i].name, FloatType::F32).unwrap().try_to_vec::<f32>().unwrap();
        append_as(specs[i].ty, &v, *specs[i].shape.last().unwrap(), buf)
    })
    .unwrap();
    let config = biomedgpt_esm::EsmConfig::from_file(dir(name).join("config.json")).unwrap();
    let ckpt = Checkpoint::open(&out).unwrap();
    let prefix = keys[0].starts_with("esm.");
    let root = ckpt.root();
    let vb = if prefix { root.pp("esm") } else { root };
    let blocks = biomedgpt_esm::Esm::load_with(&config, &vb, FloatType::F32, true, &Device::flex()).unwrap();
    let dense = biomedgpt_esm::Esm::load_with(&config, &vb, FloatType::F32, false, &Device::flex()).unwrap();
    std::fs::remove_file(&out).ok();
    assert!(blocks.layers[0].attention.query.is_quantized() && !dense.layers[0].attention.query.is_quantized());
    let ids = batch_ids(&expected(name));
    let (a, b) = (values(blocks.forward(&ids, false).last_hidden_state), values(dense.forward(&ids, false).last_hidden_state));
    close("q8_0 blocks vs dequantized", &a, &b);
    let (_, reference) = npy(name, "last_hidden_state.npy");
    let worst = a.iter().zip(&reference).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let mean = a.iter().zip(&reference).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    eprintln!("ESM-2 t2_h4 with Q8_0 projections vs transformers' f32: largest difference {worst:.2e}, mean {mean:.2e}");
    assert!(worst < 0.15 && mean < 2e-2, "q8_0 vs transformers' f32: largest difference {worst}, mean {mean}");
}
