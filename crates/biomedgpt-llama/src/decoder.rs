//! What generation and scoring need from a causal language model, so that LLaMA and GPT-2
//! decoders share one implementation of greedy, sampling, beam search and log-likelihoods.

use burn::tensor::{DType, Device, Tensor};

use crate::cache::{KvCache, StepMask};
use crate::model::{DecoderInput, Llama};

pub trait CausalLm {
    fn device(&self) -> Device;
    /// The dtype of the weights (and of the hidden states).
    fn dtype(&self) -> DType;
    fn vocab_size(&self) -> usize;
    /// Number of weights (for bandwidth figures).
    fn num_parameters(&self) -> usize;
    /// Longest sequence the model takes (prompt + generated tokens).
    fn max_positions(&self) -> usize;
    /// The config's end-of-sequence ids.
    fn eos_token_ids(&self) -> Vec<u32>;
    fn new_cache(&self, batch: usize) -> KvCache;
    /// Logits `[B, T, vocab]` of new positions, appending them to `cache`; `mask` marks which are
    /// real tokens (false = left padding).
    fn forward(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<3>;
    /// Logits of the last position only, `[B, vocab]`.
    fn forward_last(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<2>;
    /// [`Self::forward_last`] of a prompt (or a chunk of one): its positions through the prompt
    /// kernels whatever their number ([`biomedgpt_kernels::matmul::prompt`]), so that they are
    /// the same numbers however the prompt is cut (a prefix-cache hit prefills only the rest);
    /// the last position's logits as `forward_last` computes them.
    fn prefill_last(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<2>;
}

impl CausalLm for Llama {
    fn device(&self) -> Device {
        Llama::device(self)
    }

    fn dtype(&self) -> DType {
        Llama::dtype(self)
    }

    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn num_parameters(&self) -> usize {
        self.config().num_parameters()
    }

    fn max_positions(&self) -> usize {
        self.config().max_position_embeddings
    }

    fn eos_token_ids(&self) -> Vec<u32> {
        self.config().eos_token_ids()
    }

    fn new_cache(&self, batch: usize) -> KvCache {
        Llama::new_cache(self, batch)
    }

    fn forward(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<3> {
        Llama::forward(self, input, mask, cache)
    }

    fn forward_last(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<2> {
        Llama::forward_last(self, input, mask, cache)
    }

    fn prefill_last(&self, input: DecoderInput, mask: Option<&StepMask>, cache: &mut KvCache) -> Tensor<2> {
        Llama::prefill_last(self, input, mask, cache)
    }
}
