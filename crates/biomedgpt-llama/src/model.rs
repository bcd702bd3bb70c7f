//! The LLaMA decoder, module by module in forward order, with HF parameter names so a
//! checkpoint loads by construction (`model.layers.{i}.self_attn.q_proj.weight`, ...).

use burn::module::{Module, Param};
use burn::nn::Embedding;
use biomedgpt_kernels::activation::{add, rms_norm, silu_mul};
use biomedgpt_kernels::attention::{attention_merged, attention_merged_rows};
use biomedgpt_kernels::{apply_rotary, matmul, rotary_tables};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use biomedgpt_nn::{MaybeQuantLinear, apply_linear, apply_linears, maybe_quant_linear, param};
use biomedgpt_io::{FloatType, LoadError, WeightView};

use crate::cache::{KvCache, LayerCache, StepMask};
use crate::config::LlamaConfig;
use crate::rope;

/// HF's `LlamaRMSNorm`: normalise in f32, cast back, then scale.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl RmsNorm {
    pub fn load(vb: &WeightView, size: usize, eps: f64, ty: FloatType, device: &Device) -> Result<Self, LoadError> {
        Ok(RmsNorm {
            weight: param(vb.load("weight", &[size], ty)?, device),
            eps,
        })
    }

    /// HF semantics: statistics in f32, normalized value rounded to the dtype, times weight.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        rms_norm(x, &self.weight.val(), self.eps)
    }
}

/// How the projections are loaded: in `ty`, or (`keep_blocks`) GGML block types kept in place.
#[derive(Clone, Copy)]
struct Load<'a> {
    ty: FloatType,
    keep_blocks: bool,
    device: &'a Device,
}

impl Load<'_> {
    fn linear(&self, vb: &WeightView, d_in: usize, d_out: usize, bias: bool) -> Result<MaybeQuantLinear, LoadError> {
        maybe_quant_linear(vb, d_in, d_out, bias, self.ty, self.keep_blocks, self.device)
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: MaybeQuantLinear,
    pub up_proj: MaybeQuantLinear,
    pub down_proj: MaybeQuantLinear,
}

impl Mlp {
    fn load(vb: &WeightView, c: &LlamaConfig, load: Load) -> Result<Self, LoadError> {
        let (h, i, b) = (c.hidden_size, c.intermediate_size, c.mlp_bias);
        Ok(Mlp {
            gate_proj: load.linear(&vb.pp("gate_proj"), h, i, b)?,
            up_proj: load.linear(&vb.pp("up_proj"), h, i, b)?,
            down_proj: load.linear(&vb.pp("down_proj"), i, h, b)?,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [gate, up]: [Tensor<3>; 2] = apply_linears(&[&self.gate_proj, &self.up_proj], x).try_into().expect("two products");
        apply_linear(&self.down_proj, silu_mul(gate, up))
    }
}

/// Per-step inputs shared by every layer, built once per step: rotary tables and the additive
/// attention mask.
pub struct StepContext {
    /// `[B, 1, T, head_dim]`, in the model's dtype.
    cos: Tensor<4>,
    sin: Tensor<4>,
    /// `[B, 1, rep * T, S]` additive f32 mask (0 or f32::MIN), already repeated for the query
    /// heads that share a KV head; `None` when nothing is masked.
    mask: Option<Tensor<4>>,
}

/// One layer's keys and values for a step: a batch's shared cache (rows padded to one length),
/// or one cache per row for independent sequences of different lengths.
enum LayerCaches<'a, 'b> {
    Batch(&'a mut Option<LayerCache>),
    PerRow(&'a mut [&'b mut Option<LayerCache>]),
    /// Chunks of several sequences laid end to end in one row of positions: chunk `i` has
    /// `lengths[i]` positions, its own cache and causal mask (`[1, 1, rep * t_i, S_i]`).
    Segments { caches: &'a mut [&'b mut Option<LayerCache>], lengths: &'a [usize], masks: &'a [Option<Tensor<4>>] },
}

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: MaybeQuantLinear,
    pub k_proj: MaybeQuantLinear,
    pub v_proj: MaybeQuantLinear,
    pub o_proj: MaybeQuantLinear,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    num_kv_heads: usize,
    #[module(skip)]
    head_dim: usize,
}

impl Attention {
    fn load(vb: &WeightView, c: &LlamaConfig, load: Load) -> Result<Self, LoadError> {
        let (h, hd, b) = (c.hidden_size, c.head_dim(), c.qkv_bias());
        let (nh, nkv) = (c.num_attention_heads, c.num_kv_heads());
        Ok(Attention {
            q_proj: load.linear(&vb.pp("q_proj"), h, nh * hd, b)?,
            k_proj: load.linear(&vb.pp("k_proj"), h, nkv * hd, b)?,
            v_proj: load.linear(&vb.pp("v_proj"), h, nkv * hd, b)?,
            o_proj: load.linear(&vb.pp("o_proj"), nh * hd, h, c.o_bias())?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        })
    }

    fn forward(&self, x: Tensor<3>, ctx: &StepContext, cache: LayerCaches) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let [q, k, v]: [Tensor<3>; 3] = apply_linears(&[&self.q_proj, &self.k_proj, &self.v_proj], x).try_into().expect("three products");
        let (q, k, v) = (heads(q, nh), heads(k, nkv), heads(v, nkv));

        let q = apply_rotary(q, &ctx.cos, &ctx.sin);
        let k = apply_rotary(k, &ctx.cos, &ctx.sin);

        // Grouped-query attention without copying K/V: fold the query heads that share a KV head
        // into the row dimension, [B, nkv, rep*T, hd] x [B, nkv, hd, S].
        let rep = nh / nkv;
        let scale = (hd as f64).powf(-0.5);
        // softmax(q k^T / sqrt(hd) + mask) v, with the causal/padding mask as an additive bias,
        // in f32 (k and v widened from the cache's dtype per head), rounded once to the model's
        // dtype and written as [B, T, nh * hd].
        let out = match cache {
            LayerCaches::Batch(cache) => {
                let (k, v) = LayerCache::append(cache, k, v);
                attention_merged(q.reshape([b, nkv, rep * t, hd]), k, v, ctx.mask.clone(), scale, rep)
            }
            // Independent sequences: each row attends to its own cache (no mask: one new
            // position sees every cached one), exactly as it would alone.
            LayerCaches::PerRow(caches) => {
                let rows = caches
                    .iter_mut()
                    .enumerate()
                    .map(|(r, cache)| {
                        let (k, v) = LayerCache::append(cache, k.clone().narrow(0, r, 1), v.clone().narrow(0, r, 1));
                        (q.clone().narrow(0, r, 1).reshape([1, nkv, rep * t, hd]), k, v)
                    })
                    .collect::<Vec<_>>();
                Tensor::cat(attention_merged_rows(rows, scale, rep), 0)
            }
            // Several sequences' chunks: each attends to its own cache, as it would alone.
            LayerCaches::Segments { caches, lengths, masks } => {
                let mut start = 0;
                let mut outs = Vec::with_capacity(lengths.len());
                for ((cache, &len), mask) in caches.iter_mut().zip(lengths).zip(masks) {
                    let (k, v) = LayerCache::append(cache, k.clone().narrow(2, start, len), v.clone().narrow(2, start, len));
                    let q = q.clone().narrow(2, start, len).reshape([1, nkv, rep * len, hd]);
                    outs.push(attention_merged(q, k, v, mask.clone(), scale, rep));
                    start += len;
                }
                Tensor::cat(outs, 1)
            }
        };
        apply_linear(&self.o_proj, out)
    }
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn load(vb: &WeightView, c: &LlamaConfig, load: Load) -> Result<Self, LoadError> {
        let (ty, device) = (load.ty, load.device);
        Ok(DecoderLayer {
            self_attn: Attention::load(&vb.pp("self_attn"), c, load)?,
            mlp: Mlp::load(&vb.pp("mlp"), c, load)?,
            input_layernorm: RmsNorm::load(&vb.pp("input_layernorm"), c.hidden_size, c.rms_norm_eps, ty, device)?,
            post_attention_layernorm: RmsNorm::load(
                &vb.pp("post_attention_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
                ty,
                device,
            )?,
        })
    }

    fn forward(&self, x: Tensor<3>, ctx: &StepContext, cache: LayerCaches) -> Tensor<3> {
        let h = add(x.clone(), self.self_attn.forward(self.input_layernorm.forward(x), ctx, cache));
        add(h.clone(), self.mlp.forward(self.post_attention_layernorm.forward(h)))
    }
}

/// `LlamaModel`: embeddings, decoder layers, final norm.
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// With `embed_blocks`, an empty `[0, hidden]` placeholder.
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// The token embeddings kept in their GGML blocks (GGUF, `keep_blocks`): rows dequantized per
    /// lookup, as llama.cpp's `get_rows` does, and the tied head's product run on the blocks.
    #[module(skip)]
    pub embed_blocks: Option<biomedgpt_kernels::quant::QuantMatrix>,
}

/// `LlamaForCausalLM`. `lm_head` is `None` when the config ties it to the embeddings.
#[derive(Module, Debug)]
pub struct Llama {
    pub model: LlamaModel,
    pub lm_head: Option<MaybeQuantLinear>,
    #[module(skip)]
    inv_freq: Vec<f32>,
    #[module(skip)]
    config: LlamaConfig,
}

/// What the decoder reads at one step: token ids or ready-made input embeddings.
pub enum DecoderInput {
    /// `[B, T]`
    Ids(Tensor<2, Int>),
    /// `[B, T, hidden]` (the multimodal model splices molecule/protein features here)
    Embeds(Tensor<3>),
}

impl Llama {
    /// Loads from an HF checkpoint view rooted at the model's prefix (`""`, or `llm.` in the
    /// fused BioMedGPT checkpoint). Non-parameter keys (`rotary_emb.inv_freq`) are never read.
    pub fn load(config: &LlamaConfig, vb: &WeightView, ty: FloatType, device: &Device) -> Result<Self, LoadError> {
        Self::load_with(config, vb, ty, false, device)
    }

    /// [`Self::load`], with `keep_blocks`: projections stored in a GGML block type (GGUF) stay in
    /// their blocks, memory-mapped, and run quantized products, the token embeddings too (rows
    /// dequantized per lookup); norms are read in `ty`.
    pub fn load_with(config: &LlamaConfig, vb: &WeightView, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Self, LoadError> {
        let c = config;
        let load = Load { ty, keep_blocks, device };
        let m = vb.pp("model");
        let embed_view = m.pp("embed_tokens");
        let embed_shape = [c.vocab_size, c.hidden_size];
        let embed_blocks = if keep_blocks { embed_view.load_blocks("weight", &embed_shape)? } else { None };
        let embed = match &embed_blocks {
            Some(_) => TensorData::new(Vec::<f32>::new(), [0, c.hidden_size]).convert_dtype(ty.dtype()),
            None => embed_view.load("weight", &embed_shape, ty)?,
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| DecoderLayer::load(&m.pp("layers").pp(i), c, load))
            .collect::<Result<Vec<_>, _>>()?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(load.linear(&vb.pp("lm_head"), c.hidden_size, c.vocab_size, false)?)
        };
        Ok(Llama {
            model: LlamaModel {
                embed_tokens: Embedding {
                    weight: param(embed, device),
                },
                layers,
                norm: RmsNorm::load(&m.pp("norm"), c.hidden_size, c.rms_norm_eps, ty, device)?,
                embed_blocks,
            },
            lm_head,
            inv_freq: rope::inverse_frequencies(
                c.head_dim(),
                c.rope_theta(),
                c.rope_kind().expect("validated when the config was read"),
            ),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.model.norm.weight.val().device()
    }

    pub fn dtype(&self) -> DType {
        self.model.norm.weight.val().dtype()
    }

    /// Token embeddings `[B, T, hidden]` for ids `[B, T]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let Some(blocks) = &self.model.embed_blocks else {
            return self.model.embed_tokens.forward(ids);
        };
        let [b, t] = ids.dims();
        let device = ids.device();
        let rows: Vec<usize> = ids.into_data().convert::<i64>().try_to_vec::<i64>().expect("int ids").into_iter().map(|i| i as usize).collect();
        assert!(rows.iter().all(|&r| r < blocks.rows), "token id past the {} embedding rows", blocks.rows);
        let values = biomedgpt_kernels::quant::matmul::rows(blocks, &rows);
        Tensor::<3>::from_data(TensorData::new(values, [b, t, blocks.cols]), (&device, DType::F32)).cast(self.dtype())
    }

    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.config.num_hidden_layers, batch)
    }

    /// Runs new positions through the decoder, appending to `cache`, and returns the final hidden
    /// states `[B, T, hidden]` (after the last norm). `mask` marks which new positions are real
    /// tokens (false = left padding); `None` means all are.
    pub fn forward_hidden(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<3> {
        let x = match input {
            DecoderInput::Ids(ids) => self.embed(ids),
            DecoderInput::Embeds(e) => e,
        };
        let [b, t, _] = x.dims();
        let device = x.device();
        let plan = cache.plan_step(b, t, mask);
        let (cos, sin) = rotary_tables(&self.inv_freq, &plan.positions);
        let hd = self.config.head_dim();
        let dtype = x.dtype();
        let table = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [b, 1, t, hd]), (&device, DType::F32)).cast(dtype);
        let rep = self.config.num_attention_heads / self.config.num_kv_heads();
        let mask = plan.additive_mask.map(|m| {
            Tensor::<4>::from_data(TensorData::new(m, [b, 1, t, plan.total_len]), (&device, DType::F32)).repeat_dim(2, rep)
        });
        let ctx = StepContext {
            cos: table(cos),
            sin: table(sin),
            mask,
        };
        let mut x = x;
        for (layer, layer_cache) in self.model.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(x, &ctx, LayerCaches::Batch(layer_cache));
        }
        self.model.norm.forward(x)
    }

    /// Prompt chunks of several independent sequences in one pass (continuous batching's
    /// prefill): `inputs[i]` (`[1, t_i]` ids or `[1, t_i, hidden]` embeddings) continues the
    /// sequence whose cache is `caches[i]` (a batch of one without padding). The projections run
    /// on all chunks' rows at once, so the weights are read once for all of them; each chunk's
    /// attention reads only its own cache. Returns each chunk's final hidden states `[1, t_i,
    /// hidden]`.
    ///
    /// On the CPU each chunk's numbers are those of [`Self::prefill`] on it alone, whatever the
    /// chunks' lengths: the prompt kernels compute each row the same whatever rows are beside it
    /// (`tests/prefix_invariance.rs`).
    pub fn prefill_many(&self, inputs: Vec<DecoderInput>, caches: &mut [&mut KvCache]) -> Vec<Tensor<3>> {
        biomedgpt_kernels::matmul::prompt(|| self.prefill_many_rows(inputs, caches))
    }

    fn prefill_many_rows(&self, inputs: Vec<DecoderInput>, caches: &mut [&mut KvCache]) -> Vec<Tensor<3>> {
        assert!(!inputs.is_empty() && inputs.len() == caches.len(), "prefill_many: {} inputs for {} caches", inputs.len(), caches.len());
        let xs: Vec<Tensor<3>> = inputs
            .into_iter()
            .map(|input| match input {
                DecoderInput::Ids(ids) => self.embed(ids),
                DecoderInput::Embeds(e) => e,
            })
            .collect();
        let lengths: Vec<usize> = xs.iter().map(|x| x.dims()[1]).collect();
        assert!(xs.iter().all(|x| x.dims()[0] == 1), "prefill_many takes one sequence per input");
        let x = Tensor::cat(xs, 1);
        let device = x.device();
        let rep = self.config.num_attention_heads / self.config.num_kv_heads();
        let mut positions = Vec::with_capacity(x.dims()[1]);
        let mut masks = Vec::with_capacity(lengths.len());
        for (cache, &t) in caches.iter_mut().zip(&lengths) {
            assert_eq!(cache.batch_size(), 1, "prefill_many takes one cache per sequence");
            let plan = cache.plan_step(1, t, None);
            positions.extend(plan.positions);
            masks.push(plan.additive_mask.map(|m| Tensor::<4>::from_data(TensorData::new(m, [1, 1, t, plan.total_len]), (&device, DType::F32)).repeat_dim(2, rep)));
        }
        let total: usize = lengths.iter().sum();
        let (cos, sin) = rotary_tables(&self.inv_freq, &positions);
        let hd = self.config.head_dim();
        let dtype = x.dtype();
        let table = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, total, hd]), (&device, DType::F32)).cast(dtype);
        let ctx = StepContext { cos: table(cos), sin: table(sin), mask: None };
        let mut x = x;
        for (l, layer) in self.model.layers.iter().enumerate() {
            let mut rows: Vec<&mut Option<LayerCache>> = caches.iter_mut().map(|c| &mut c.layers[l]).collect();
            x = layer.forward(x, &ctx, LayerCaches::Segments { caches: &mut rows, lengths: &lengths, masks: &masks });
        }
        let hidden = self.model.norm.forward(x);
        let mut start = 0;
        lengths
            .iter()
            .map(|&t| {
                let h = hidden.clone().narrow(1, start, t);
                start += t;
                h
            })
            .collect()
    }

    /// Logits `[R, vocab]` of `R` independent last positions (`hidden` `[R, hidden]`), each row
    /// computed as [`Self::forward_last`] computes a single one (the decoding kernels, which take
    /// up to [`biomedgpt_kernels::matmul::DECODE_BATCH_ROWS`] rows row by row).
    pub fn last_logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        let [r, h] = hidden.dims();
        assert!(r <= biomedgpt_kernels::matmul::DECODE_BATCH_ROWS, "last_logits: {r} rows");
        biomedgpt_kernels::matmul::decode_batch(|| self.logits(hidden.reshape([r, 1, h])).reshape([r, self.config.vocab_size]))
    }

    /// One decoding step of independent sequences (continuous batching): `ids[r]` is the next
    /// token of the sequence whose cache is `caches[r]` (each a batch of one, of any length).
    /// The projections run on all rows at once, so the weights are read once per step; each
    /// row's attention reads only its own cache. Returns the logits `[B, vocab]`.
    ///
    /// On the CPU, each row's numbers are those of the same step run alone while `B` is at most
    /// [`biomedgpt_kernels::matmul::DECODE_BATCH_ROWS`]: the projections run through the
    /// decoding kernels ([`biomedgpt_kernels::matmul::decode_batch`]), which compute every row in
    /// the same order whatever the row count; callers that need batch-independent results step
    /// larger batches in groups of that size.
    pub fn decode_step(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Tensor<2> {
        biomedgpt_kernels::matmul::decode_batch(|| self.decode_step_rows(ids, caches))
    }

    fn decode_step_rows(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Tensor<2> {
        let b = ids.len();
        assert!(b > 0 && b == caches.len(), "decode_step: {b} ids for {} caches", caches.len());
        let device = self.device();
        let x = self.embed(crate::generation::ids_tensor(ids, b, &device));
        let mut positions = Vec::with_capacity(b);
        for cache in caches.iter_mut() {
            assert_eq!(cache.batch_size(), 1, "decode_step takes one cache per sequence");
            let plan = cache.plan_step(1, 1, None);
            assert!(plan.additive_mask.is_none(), "decode_step: a sequence's cache holds padding");
            positions.extend(plan.positions);
        }
        let (cos, sin) = rotary_tables(&self.inv_freq, &positions);
        let hd = self.config.head_dim();
        let dtype = x.dtype();
        let table = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [b, 1, 1, hd]), (&device, DType::F32)).cast(dtype);
        let ctx = StepContext { cos: table(cos), sin: table(sin), mask: None };
        let mut x = x;
        for (l, layer) in self.model.layers.iter().enumerate() {
            let mut rows: Vec<&mut Option<LayerCache>> = caches.iter_mut().map(|c| &mut c.layers[l]).collect();
            x = layer.forward(x, &ctx, LayerCaches::PerRow(&mut rows));
        }
        let hidden = self.model.norm.forward(x);
        self.logits(hidden).reshape([b, self.config.vocab_size])
    }

    /// Vocabulary logits `[B, T, vocab]` for hidden states `[B, T, hidden]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => apply_linear(head, hidden),
            None => {
                let [b, t, h] = hidden.dims();
                if let Some(blocks) = &self.model.embed_blocks {
                    return biomedgpt_kernels::quant::matmul::matmul(hidden.reshape([b * t, h]), blocks, None).reshape([b, t, self.config.vocab_size]);
                }
                let w = self.model.embed_tokens.weight.val(); // [vocab, hidden]
                matmul(hidden.reshape([b * t, h]), w.transpose(), None).reshape([b, t, self.config.vocab_size])
            }
        }
    }

    /// [`Self::forward_hidden`] of a prompt's positions (a whole prompt or a chunk of one) through
    /// the prompt kernels whatever their number ([`biomedgpt_kernels::matmul::prompt`]): on the
    /// CPU each position's numbers are then the same however the prompt is cut into chunks, which
    /// is what lets a prefix cache restore a prompt's start and prefill only its rest, down to one
    /// position. (Decoding steps go through [`Self::forward_hidden`]: a few rows of the decoding
    /// kernels.)
    pub fn prefill(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<3> {
        biomedgpt_kernels::matmul::prompt(|| self.forward_hidden(input, mask, cache))
    }

    /// [`Self::prefill`], then the logits of the last position `[B, vocab]`, computed as
    /// [`Self::forward_last`] computes them (the decoding kernels' rows, as [`Self::last_logits`]).
    pub fn prefill_last(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<2> {
        let hidden = self.prefill(input, mask, cache);
        self.last_position_logits(hidden)
    }

    /// Logits `[B, vocab]` of the last position of hidden states `[B, T, hidden]`.
    fn last_position_logits(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, _] = hidden.dims();
        self.logits(hidden.narrow(1, t - 1, 1)).reshape([b, self.config.vocab_size])
    }

    /// Logits of every position: `forward_hidden` then `logits`.
    pub fn forward(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<3> {
        let hidden = self.forward_hidden(input, mask, cache);
        self.logits(hidden)
    }

    /// Logits of the last position only, `[B, vocab]` (what generation needs).
    pub fn forward_last(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<2> {
        let hidden = self.forward_hidden(input, mask, cache);
        self.last_position_logits(hidden)
    }
}
