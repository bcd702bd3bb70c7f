//! transformers' `EsmModel` (ESM-2): word embeddings with token-dropout rescaling, pre-LayerNorm
//! blocks with rotary self-attention (query scaled by head_dim^-0.5 before rotary), erf GELU,
//! final `emb_layer_norm_after`. Parameter names follow HF (`encoder.layer.{i}.attention.self.query`).

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use biomedgpt_kernels::activation::{add, gelu};
use biomedgpt_kernels::attention::attention_merged;
use biomedgpt_kernels::{apply_rotary, rotary_tables};
use biomedgpt_nn::{MaybeQuantLinear, apply_linear, embedding, layer_norm, maybe_quant_linear};
use biomedgpt_io::{FloatType, LoadError, WeightView};

use crate::config::EsmConfig;

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: MaybeQuantLinear,
    pub key: MaybeQuantLinear,
    pub value: MaybeQuantLinear,
    #[module(skip)]
    num_heads: usize,
}

#[derive(Module, Debug)]
pub struct EsmLayer {
    /// `attention.LayerNorm` (applied before attention).
    pub attention_layer_norm: LayerNorm,
    pub attention: SelfAttention,
    /// `attention.output.dense`
    pub attention_output: MaybeQuantLinear,
    /// `LayerNorm` (applied before the feed-forward block).
    pub layer_norm: LayerNorm,
    /// `intermediate.dense`
    pub intermediate: MaybeQuantLinear,
    /// `output.dense`
    pub output: MaybeQuantLinear,
}

#[derive(Module, Debug)]
pub struct Esm {
    pub word_embeddings: Embedding,
    /// `embeddings.layer_norm`, only in configs with `emb_layer_norm_before` (not ESM-2).
    pub emb_layer_norm_before: Option<LayerNorm>,
    pub layers: Vec<EsmLayer>,
    pub emb_layer_norm_after: LayerNorm,
    #[module(skip)]
    config: EsmConfig,
}

/// Outputs of one forward pass.
pub struct EsmOutput {
    /// `[B, L, hidden]`, after `emb_layer_norm_after`.
    pub last_hidden_state: Tensor<3>,
    /// HF's `hidden_states` when asked for (`num_hidden_layers + 1` tensors): the embeddings,
    /// the outputs of layers 1..N-1, and `last_hidden_state` (layer N after
    /// `emb_layer_norm_after`, which is also fair-esm's `repr_layers=[N]`).
    pub hidden_states: Vec<Tensor<3>>,
}

impl SelfAttention {
    fn forward(&self, x: Tensor<3>, cos: &Tensor<4>, sin: &Tensor<4>, mask: &Option<Tensor<4>>) -> Tensor<3> {
        let [b, l, h] = x.dims();
        let nh = self.num_heads;
        let hd = h / nh;
        let heads = |y: Tensor<3>| y.reshape([b, l, nh, hd]).swap_dims(1, 2);
        let dtype = x.dtype();
        // ESM scales the query before rotary (unlike BERT, which scales the scores).
        let q = heads(apply_linear(&self.query, x.clone())).mul_scalar((hd as f64).powf(-0.5)).cast(DType::F32);
        let k = heads(apply_linear(&self.key, x.clone())).cast(DType::F32);
        let v = heads(apply_linear(&self.value, x)).cast(DType::F32);
        let q = apply_rotary(q, cos, sin);
        let k = apply_rotary(k, cos, sin);
        // The query is already scaled, so attention runs with scale 1 and the padding mask as an
        // additive bias broadcast over heads and queries.
        attention_merged(q, k, v, mask.clone(), 1.0, 1).cast(dtype)
    }
}

impl EsmLayer {
    fn forward(&self, x: Tensor<3>, cos: &Tensor<4>, sin: &Tensor<4>, mask: &Option<Tensor<4>>) -> Tensor<3> {
        let attn = self.attention.forward(self.attention_layer_norm.forward(x.clone()), cos, sin, mask);
        let x = add(apply_linear(&self.attention_output, attn), x);
        let ff = gelu(apply_linear(&self.intermediate, self.layer_norm.forward(x.clone())));
        add(apply_linear(&self.output, ff), x)
    }
}

/// The HF `EsmModel` name of a parameter from its module path here (`layers.3.attention.query.weight`
/// -> `encoder.layer.3.attention.self.query.weight`): the inverse of [`Esm::load`]'s names, for
/// saving trained weights.
pub fn hf_name(path: &str) -> String {
    let norm = |rest: &str| rest.replace("gamma", "weight").replace("beta", "bias");
    if let Some(rest) = path.strip_prefix("word_embeddings.") {
        return format!("embeddings.word_embeddings.{rest}");
    }
    if let Some(rest) = path.strip_prefix("emb_layer_norm_before.") {
        return format!("embeddings.layer_norm.{}", norm(rest));
    }
    if let Some(rest) = path.strip_prefix("emb_layer_norm_after.") {
        return format!("encoder.emb_layer_norm_after.{}", norm(rest));
    }
    let Some(rest) = path.strip_prefix("layers.") else { return path.to_string() };
    let (n, rest) = rest.split_once('.').unwrap_or((rest, ""));
    const LAYER_NAMES: [(&str, &str); 6] = [
        ("attention_layer_norm.", "attention.LayerNorm."),
        ("attention.", "attention.self."),
        ("attention_output.", "attention.output.dense."),
        ("layer_norm.", "LayerNorm."),
        ("intermediate.", "intermediate.dense."),
        ("output.", "output.dense."),
    ];
    for (ours, theirs) in LAYER_NAMES {
        if let Some(tail) = rest.strip_prefix(ours) {
            return format!("encoder.layer.{n}.{theirs}{}", norm(tail));
        }
    }
    path.to_string()
}

impl Esm {
    /// Loads from a view with HF `EsmModel` names (`embeddings.word_embeddings.weight`, ...).
    pub fn load(config: &EsmConfig, vb: &WeightView, ty: FloatType, device: &Device) -> Result<Self, LoadError> {
        Self::load_with(config, vb, ty, false, device)
    }

    /// [`Self::load`]; with `keep_blocks`, projections stored in a GGML block type (an
    /// `encoders.gguf` written by `convert --esm-dtype q8_0`) stay in their blocks.
    pub fn load_with(config: &EsmConfig, vb: &WeightView, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Self, LoadError> {
        let c = config;
        // Block projections keep f32 activations: an encoder's parity is to the f32 model (8-bit
        // activations are the decoders' trade).
        let linear = |vb: &WeightView, d_in, d_out, bias, ty, device| maybe_quant_linear(vb, d_in, d_out, bias, ty, keep_blocks, device).map(MaybeQuantLinear::with_f32_activations);
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|n| {
                let l = vb.pp("encoder.layer").pp(n);
                let a = l.pp("attention");
                Ok(EsmLayer {
                    attention_layer_norm: layer_norm(&a.pp("LayerNorm"), h, eps, ty, device)?,
                    attention: SelfAttention {
                        query: linear(&a.pp("self.query"), h, h, true, ty, device)?,
                        key: linear(&a.pp("self.key"), h, h, true, ty, device)?,
                        value: linear(&a.pp("self.value"), h, h, true, ty, device)?,
                        num_heads: c.num_attention_heads,
                    },
                    attention_output: linear(&a.pp("output.dense"), h, h, true, ty, device)?,
                    layer_norm: layer_norm(&l.pp("LayerNorm"), h, eps, ty, device)?,
                    intermediate: linear(&l.pp("intermediate.dense"), h, i, true, ty, device)?,
                    output: linear(&l.pp("output.dense"), i, h, true, ty, device)?,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        Ok(Esm {
            word_embeddings: embedding(&emb.pp("word_embeddings"), c.vocab_size, h, ty, device)?,
            emb_layer_norm_before: match c.emb_layer_norm_before {
                Some(true) => Some(layer_norm(&emb.pp("layer_norm"), h, eps, ty, device)?),
                _ => None,
            },
            layers,
            emb_layer_norm_after: layer_norm(&vb.pp("encoder.emb_layer_norm_after"), h, eps, ty, device)?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &EsmConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.word_embeddings.weight.val().device()
    }

    /// Runs a right-padded batch: `ids[b]` are token ids (`<cls> ... <eos>`), all rows padded with
    /// `<pad>` to one length. Padding is derived from the ids, as HF's tokenizer mask would be.
    pub fn forward(&self, ids: &[Vec<u32>], output_hidden_states: bool) -> EsmOutput {
        let c = &self.config;
        let b = ids.len();
        let l = ids[0].len();
        assert!(ids.iter().all(|r| r.len() == l), "rows must be padded to one length");
        let device = self.device();
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, l]), &device);
        let mut x = self.word_embeddings.forward(input);
        let dtype = x.dtype();

        // Token dropout at inference: zero <mask> rows, then rescale by
        // (1 - 0.15 * 0.8) / (1 - observed mask ratio), the ratio over real (unpadded) tokens.
        let valid: Vec<Vec<bool>> = ids.iter().map(|r| r.iter().map(|&t| t != c.pad_token_id).collect()).collect();
        let mut row_scale = vec![0f32; b * l];
        for (row, tokens) in ids.iter().enumerate() {
            let real = valid[row].iter().filter(|&&v| v).count().max(1) as f32;
            let masked = tokens.iter().filter(|&&t| t == c.mask_token_id).count() as f32;
            let scale = if c.token_dropout { (1.0 - 0.15 * 0.8) / (1.0 - masked / real) } else { 1.0 };
            for (i, &t) in tokens.iter().enumerate() {
                let keep = valid[row][i] && !(c.token_dropout && t == c.mask_token_id);
                row_scale[row * l + i] = if keep { scale } else { 0.0 };
            }
        }
        let scale = Tensor::<3>::from_data(TensorData::new(row_scale, [b, l, 1]), (&device, DType::F32));
        x = (x.cast(DType::F32) * scale).cast(dtype);
        if let Some(norm) = &self.emb_layer_norm_before {
            x = norm.forward(x);
        }

        let hd = c.head_dim();
        let inv_freq: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / (c.rope_theta as f32).powf((2 * i) as f32 / hd as f32))
            .collect();
        let positions: Vec<i64> = (0..l as i64).collect();
        let (cos, sin) = rotary_tables(&inv_freq, &positions);
        let table = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, l, hd]), (&device, DType::F32));
        let (cos, sin) = (table(cos), table(sin));
        let mask = valid.iter().any(|r| r.iter().any(|v| !v)).then(|| {
            let m: Vec<f32> = valid.iter().flatten().map(|&v| if v { 0.0 } else { f32::MIN }).collect();
            Tensor::<4>::from_data(TensorData::new(m, [b, 1, 1, l]), (&device, DType::F32))
        });

        let mut hidden_states = Vec::new();
        for layer in &self.layers {
            if output_hidden_states {
                hidden_states.push(x.clone());
            }
            x = layer.forward(x, &cos, &sin, &mask);
        }
        let last_hidden_state = self.emb_layer_norm_after.forward(x);
        if output_hidden_states {
            hidden_states.push(last_hidden_state.clone());
        }
        EsmOutput {
            last_hidden_state,
            hidden_states,
        }
    }
}
