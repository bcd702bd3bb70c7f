//! ESM-2 protein language model in Burn, equal to transformers' `EsmModel`, for BioMedGPT's
//! protein path and for extracting protein embeddings.
//!
//! Loads HF directories (config.json, vocab.txt, safetensors or .bin; keys with or without the
//! `esm.` prefix of `EsmForMaskedLM`), a view with any prefix (`prot_structure_encoder.` in the
//! fused BioMedGPT checkpoint), and fair-esm checkpoints (`esm2_t33_650M_UR50D.pt`).

pub mod alphabet;
pub mod config;
pub mod fasta;
pub mod model;

pub use alphabet::{Alphabet, Encoded, SequenceError};
pub use config::EsmConfig;
pub use fasta::{FastaRecord, parse as parse_fasta};
pub use model::{Esm, EsmOutput};

use std::path::Path;
use std::sync::Arc;

use biomedgpt_io::{Checkpoint, FloatType, LoadError};
use burn::tensor::Device;

#[derive(Debug, thiserror::Error)]
pub enum EsmError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Weights(#[from] LoadError),
}

/// HF `EsmModel` names -> fair-esm ESM-2 names, applied in order (longer patterns first).
const FAIR_ESM_NAMES: &[(&str, &str)] = &[
    ("embeddings.word_embeddings.", "embed_tokens."),
    ("encoder.emb_layer_norm_after.", "emb_layer_norm_after."),
    ("encoder.layer.", "layers."),
    ("attention.self.query.", "self_attn.q_proj."),
    ("attention.self.key.", "self_attn.k_proj."),
    ("attention.self.value.", "self_attn.v_proj."),
    ("attention.output.dense.", "self_attn.out_proj."),
    ("attention.LayerNorm.", "self_attn_layer_norm."),
    ("intermediate.dense.", "fc1."),
    ("output.dense.", "fc2."),
    ("LayerNorm.", "final_layer_norm."),
];

fn to_fair_esm_name(hf_key: &str) -> String {
    let mut key = hf_key.to_string();
    for (hf, fair) in FAIR_ESM_NAMES {
        key = key.replace(hf, fair);
    }
    key
}

/// Loads ESM from an HF directory. The alphabet comes from `vocab.txt` when present.
pub fn open_hf_dir(dir: &Path, ty: FloatType, device: &Device) -> Result<(Esm, Alphabet), EsmError> {
    let config = EsmConfig::from_file(dir.join("config.json")).map_err(EsmError::Config)?;
    let alphabet = match dir.join("vocab.txt") {
        p if p.is_file() => Alphabet::from_vocab_file(p).map_err(EsmError::Config)?,
        _ => Alphabet::esm2(),
    };
    let ckpt = Checkpoint::open(dir)?;
    let prefix = if ckpt.info("esm.embeddings.word_embeddings.weight").is_some() { "esm." } else { "" };
    let root = ckpt.root();
    let vb = if prefix.is_empty() { root } else { root.pp("esm") };
    Ok((Esm::load(&config, &vb, ty, device)?, alphabet))
}

/// Loads a fair-esm checkpoint (`{"model": {"encoder.sentence_encoder.layers.0...": ...}}`).
/// Its size is read from the tensors; `config` overrides it (needed for non-standard sizes).
pub fn open_fair_esm(path: &Path, config: Option<EsmConfig>, ty: FloatType, device: &Device) -> Result<Esm, EsmError> {
    let ckpt = Checkpoint::open(path)?;
    let prefix = ["model.encoder.sentence_encoder.", "model.encoder.", "model.", ""]
        .into_iter()
        .find(|p| ckpt.info(&format!("{p}embed_tokens.weight")).is_some())
        .ok_or_else(|| {
            EsmError::Config(format!("{}: no `embed_tokens.weight`: not a fair-esm ESM checkpoint", path.display()))
        })?;
    let config = match config {
        Some(c) => c,
        None => {
            let shape = ckpt.info(&format!("{prefix}embed_tokens.weight")).unwrap().shape;
            let layers = (0..)
                .take_while(|i| ckpt.info(&format!("{prefix}layers.{i}.fc1.weight")).is_some())
                .count();
            EsmConfig::esm2_preset(layers, shape[1]).ok_or_else(|| {
                EsmError::Config(format!(
                    "{}: {layers} layers of width {} is not a published ESM-2 size; pass its HF config.json",
                    path.display(),
                    shape[1]
                ))
            })?
        }
    };
    let prefix = prefix.to_string();
    let vb = ckpt
        .root()
        .with_rename(Arc::new(move |key: &str| format!("{prefix}{}", to_fair_esm_name(key))));
    Ok(Esm::load(&config, &vb, ty, device)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fair_esm_names() {
        let cases = [
            ("encoder.layer.3.attention.self.query.weight", "layers.3.self_attn.q_proj.weight"),
            ("encoder.layer.3.attention.output.dense.bias", "layers.3.self_attn.out_proj.bias"),
            ("encoder.layer.3.attention.LayerNorm.weight", "layers.3.self_attn_layer_norm.weight"),
            ("encoder.layer.3.output.dense.weight", "layers.3.fc2.weight"),
            ("encoder.layer.3.LayerNorm.bias", "layers.3.final_layer_norm.bias"),
            ("encoder.emb_layer_norm_after.weight", "emb_layer_norm_after.weight"),
            ("embeddings.word_embeddings.weight", "embed_tokens.weight"),
        ];
        for (hf, fair) in cases {
            assert_eq!(super::to_fair_esm_name(hf), fair);
        }
    }
}
