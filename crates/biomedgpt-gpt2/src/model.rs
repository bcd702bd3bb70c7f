//! transformers' `GPT2LMHeadModel`: token + learned position embeddings, pre-LayerNorm blocks
//! (fused `c_attn` projection to q, k, v; causal softmax attention; `c_proj`; MLP `c_fc` ->
//! activation -> `c_proj`), final `ln_f`, and the LM head tied to `wte` (or `lm_head.weight`
//! when `tie_word_embeddings` is false).
//!
//! HF stores GPT-2's projections as `Conv1D` with weights `[in, out]`, which is already Burn's
//! `Linear` layout: they are loaded as they are, with no transpose.

use biomedgpt_kernels::matmul;
use biomedgpt_nn::{apply_linear, embedding, layer_norm, param};
use biomedgpt_io::{FloatType, LoadError, WeightView};
use biomedgpt_llama::{CausalLm, DecoderInput, KvCache, LayerCache, StepMask};
use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu};
use biomedgpt_kernels::activation::add;
use biomedgpt_kernels::attention::attention_merged;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::config::Gpt2Config;

/// A `Conv1D` (`weight` `[in, out]`, `bias` `[out]`) as a Burn `Linear`.
fn conv1d(vb: &WeightView, d_in: usize, d_out: usize, ty: FloatType, device: &Device) -> Result<Linear, LoadError> {
    Ok(Linear { weight: param(vb.load("weight", &[d_in, d_out], ty)?, device), bias: Some(param(vb.load("bias", &[d_out], ty)?, device)) })
}

#[derive(Module, Debug)]
pub struct Gpt2Attention {
    /// `c_attn`: n_embd -> 3 x n_embd (q, k, v side by side).
    pub c_attn: Linear,
    pub c_proj: Linear,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    scale: f64,
}

impl Gpt2Attention {
    fn forward(&self, x: Tensor<3>, mask: Option<&Tensor<4>>, cache: &mut Option<LayerCache>) -> Tensor<3> {
        let [b, t, h] = x.dims();
        let (nh, hd) = (self.num_heads, h / self.num_heads);
        let qkv = apply_linear(&self.c_attn, x);
        let heads = |i: usize| qkv.clone().narrow(2, i * h, h).reshape([b, t, nh, hd]).swap_dims(1, 2);
        let (q, k, v) = (heads(0), heads(1), heads(2));
        let (k, v) = LayerCache::append(cache, k, v);
        // In f32 (q widened, k and v per head), rounded once to the model's dtype, [B, T, h].
        let out = attention_merged(q, k, v, mask.cloned(), self.scale, 1);
        apply_linear(&self.c_proj, out)
    }
}

#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    #[module(skip)]
    activation: String,
}

impl Gpt2Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let y = apply_linear(&self.c_fc, x);
        let y = match self.activation.as_str() {
            "gelu" => gelu(y),
            "relu" => relu(y),
            _ => gelu_approximate(y), // gelu_new, gelu_pytorch_tanh
        };
        apply_linear(&self.c_proj, y)
    }
}

#[derive(Module, Debug)]
pub struct Gpt2Block {
    pub ln_1: LayerNorm,
    pub attn: Gpt2Attention,
    pub ln_2: LayerNorm,
    pub mlp: Gpt2Mlp,
}

#[derive(Module, Debug)]
pub struct Gpt2 {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub h: Vec<Gpt2Block>,
    pub ln_f: LayerNorm,
    /// Only when the head is not tied to `wte`: `[n_embd, vocab]`.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    config: Gpt2Config,
}

impl Gpt2 {
    /// Loads from a view with HF names, with or without the `transformer.` prefix (older
    /// checkpoints such as OpenAI's gpt2 lack it). Buffers (`attn.bias`, `attn.masked_bias`) and
    /// a tied `lm_head.weight` are not read.
    pub fn load(config: &Gpt2Config, vb: &WeightView, ty: FloatType, device: &Device) -> Result<Self, LoadError> {
        let c = config;
        let prefixed = vb.checkpoint().info(&vb.key("transformer.wte.weight")).is_some();
        let t = if prefixed { vb.pp("transformer") } else { vb.clone() };
        let (e, eps) = (c.n_embd, c.layer_norm_epsilon);
        let base_scale = if c.scale_attn_weights { (c.head_dim() as f64).powf(-0.5) } else { 1.0 };
        let h = (0..c.n_layer)
            .map(|i| {
                let l = t.pp("h").pp(i);
                let scale = if c.scale_attn_by_inverse_layer_idx { base_scale / (i + 1) as f64 } else { base_scale };
                Ok(Gpt2Block {
                    ln_1: layer_norm(&l.pp("ln_1"), e, eps, ty, device)?,
                    attn: Gpt2Attention {
                        c_attn: conv1d(&l.pp("attn.c_attn"), e, 3 * e, ty, device)?,
                        c_proj: conv1d(&l.pp("attn.c_proj"), e, e, ty, device)?,
                        num_heads: c.n_head,
                        scale,
                    },
                    ln_2: layer_norm(&l.pp("ln_2"), e, eps, ty, device)?,
                    mlp: Gpt2Mlp {
                        c_fc: conv1d(&l.pp("mlp.c_fc"), e, c.inner_size(), ty, device)?,
                        c_proj: conv1d(&l.pp("mlp.c_proj"), c.inner_size(), e, ty, device)?,
                        activation: c.activation_function.clone(),
                    },
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(biomedgpt_nn::linear(&vb.pp("lm_head"), e, c.vocab_size, false, ty, device)?)
        };
        Ok(Gpt2 {
            wte: embedding(&t.pp("wte"), c.vocab_size, e, ty, device)?,
            wpe: embedding(&t.pp("wpe"), c.n_positions, e, ty, device)?,
            h,
            ln_f: layer_norm(&t.pp("ln_f"), e, eps, ty, device)?,
            lm_head,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Final hidden states `[B, T, n_embd]` (after `ln_f`) of new positions, appended to `cache`.
    /// Position ids follow transformers' generation: `cumsum(attention_mask) - 1`, padding at 1.
    pub fn forward_hidden(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<3> {
        let x = match input {
            DecoderInput::Ids(ids) => self.wte.forward(ids),
            DecoderInput::Embeds(e) => e,
        };
        let [b, t, _] = x.dims();
        let device = x.device();
        let plan = cache.plan_step(b, t, mask);
        let positions = Tensor::<2, Int>::from_data(TensorData::new(plan.positions, [b, t]), &device);
        let mut x = x + self.wpe.forward(positions);
        let mask = plan.additive_mask.map(|m| Tensor::<4>::from_data(TensorData::new(m, [b, 1, t, plan.total_len]), (&device, DType::F32)));
        for (block, layer_cache) in self.h.iter().zip(cache.layers_mut().iter_mut()) {
            x = add(x.clone(), block.attn.forward(block.ln_1.forward(x), mask.as_ref(), layer_cache));
            x = add(x.clone(), block.mlp.forward(block.ln_2.forward(x)));
        }
        self.ln_f.forward(x)
    }

    /// Vocabulary logits `[B, T, vocab]` of hidden states.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => apply_linear(head, hidden),
            None => {
                let [b, t, e] = hidden.dims();
                matmul(hidden.reshape([b * t, e]), self.wte.weight.val().transpose(), None).reshape([b, t, self.config.vocab_size])
            }
        }
    }

    /// Logits `[B, vocab]` of the last position of hidden states `[B, T, hidden]`.
    fn last_position_logits(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, _] = hidden.dims();
        self.logits(hidden.narrow(1, t - 1, 1)).reshape([b, self.config.vocab_size])
    }
}

impl CausalLm for Gpt2 {
    fn device(&self) -> Device {
        self.wte.weight.val().device()
    }

    fn dtype(&self) -> DType {
        self.wte.weight.val().dtype()
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn num_parameters(&self) -> usize {
        self.num_params()
    }

    fn max_positions(&self) -> usize {
        self.config.n_positions
    }

    fn eos_token_ids(&self) -> Vec<u32> {
        self.config.eos_token_ids()
    }

    fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.config.n_layer, batch)
    }

    fn forward(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<3> {
        let hidden = self.forward_hidden(input, mask, cache);
        self.logits(hidden)
    }

    fn forward_last(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<2> {
        let hidden = self.forward_hidden(input, mask, cache);
        self.last_position_logits(hidden)
    }

    fn prefill_last(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<2> {
        let hidden = biomedgpt_kernels::matmul::prompt(|| self.forward_hidden(input, mask, cache));
        self.last_position_logits(hidden)
    }
}
