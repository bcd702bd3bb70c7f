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

/// The alphabet of an HF ESM directory: its `vocab.txt`, or ESM-2's when it has none.
pub fn alphabet_of_dir(dir: &Path) -> Result<Alphabet, EsmError> {
    match dir.join("vocab.txt") {
        p if p.is_file() => Alphabet::from_vocab_file(p).map_err(EsmError::Config),
        _ => Ok(Alphabet::esm2()),
    }
}

/// Loads ESM from an HF directory. The alphabet comes from `vocab.txt` when present.
pub fn open_hf_dir(dir: &Path, ty: FloatType, device: &Device) -> Result<(Esm, Alphabet), EsmError> {
    let config = EsmConfig::from_file(dir.join("config.json")).map_err(EsmError::Config)?;
    let alphabet = alphabet_of_dir(dir)?;
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

/// How per-token features become one vector per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Every token, `<cls>` and `<eos>` included: `[L + 2, hidden]`.
    None,
    /// Mean over residues (`<cls>`, `<eos>` and padding excluded).
    Mean,
    /// The `<cls>` token.
    Cls,
}

impl std::str::FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Pool::None),
            "mean" => Ok(Pool::Mean),
            "cls" => Ok(Pool::Cls),
            _ => Err(format!("pool must be none, mean or cls, not `{s}`")),
        }
    }
}

/// Features of one sequence: `[rows, hidden]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub rows: usize,
    pub hidden: usize,
    pub values: Vec<f32>,
}

impl Esm {
    /// Embeds encoded sequences (`<cls> ... <eos>` ids of any lengths) in batches of
    /// `batch_size`, longest first to limit padding, and returns them in input order.
    /// `layer` picks an entry of HF's `hidden_states` (0 = embeddings, N = last_hidden_state).
    pub fn embed(
        &self,
        sequences: &[Vec<u32>],
        batch_size: usize,
        layer: Option<usize>,
        pool: Pool,
        mut progress: impl FnMut(usize),
    ) -> Vec<Features> {
        let h = self.config().hidden_size;
        let pad = self.config().pad_token_id;
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
        let mut out: Vec<Option<Features>> = vec![None; sequences.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let l = chunk.iter().map(|&i| sequences[i].len()).max().unwrap_or(0);
            let batch: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&i| {
                    let mut row = sequences[i].clone();
                    row.resize(l, pad);
                    row
                })
                .collect();
            let result = self.forward(&batch, layer.is_some());
            let states = match layer {
                Some(n) => result.hidden_states[n].clone(),
                None => result.last_hidden_state,
            };
            let values: Vec<f32> = states
                .cast(burn::tensor::DType::F32)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 features");
            for (row, &i) in chunk.iter().enumerate() {
                let len = sequences[i].len();
                let base = row * l * h;
                let token = |p: usize| &values[base + p * h..base + (p + 1) * h];
                let features = match pool {
                    Pool::None => Features { rows: len, hidden: h, values: values[base..base + len * h].to_vec() },
                    Pool::Cls => Features { rows: 1, hidden: h, values: token(0).to_vec() },
                    Pool::Mean => {
                        let mut mean = vec![0f32; h];
                        for p in 1..len - 1 {
                            mean.iter_mut().zip(token(p)).for_each(|(m, v)| *m += v);
                        }
                        let n = (len - 2).max(1) as f32;
                        mean.iter_mut().for_each(|m| *m /= n);
                        Features { rows: 1, hidden: h, values: mean }
                    }
                };
                out[i] = Some(features);
            }
            progress(chunk.len());
        }
        out.into_iter().map(|f| f.expect("every sequence embedded")).collect()
    }
}
