//! LoRA on the LLM's attention projections through Burn's built-in reparameterization: the base
//! weight stays frozen and `val()` yields `base + (alpha / rank) * (a @ b)`, so the model code
//! (which multiplies by `weight.val()`) runs unchanged. Factors are Burn-shaped: `a` `[in, rank]`,
//! `b` `[rank, out]`, i.e. PEFT's `lora_A.weight` and `lora_B.weight` transposed.

use std::collections::HashMap;

use biomedgpt_llama::Llama;
use burn::module::{LoraAdapter, Module, Param, Reparameterizer};
use burn::tensor::{Distribution, Tensor};

/// LoRA settings with PEFT's names.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    /// Projection names inside `self_attn` (PEFT's `target_modules`), e.g. q_proj, k_proj, v_proj, o_proj.
    pub targets: Vec<String>,
}

impl LoraSettings {
    fn targets_path(&self, path: &str) -> bool {
        let Some(rest) = path.strip_suffix(".weight") else { return false };
        self.targets.iter().any(|t| rest.ends_with(&format!("self_attn.{t}")))
    }
}

/// Initial factors per module path (`model.layers.0.self_attn.q_proj`), or PEFT's
/// initialization (A ~ N(0, 1/rank) here, B = 0) for paths without one.
struct AttachLora<'a> {
    settings: &'a LoraSettings,
    given: HashMap<String, (Tensor<2>, Tensor<2>)>,
}

impl Reparameterizer for AttachLora<'_> {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        let base = param.set_require_grad(false);
        if D != 2 || !self.settings.targets_path(path) {
            return (base, None);
        }
        let value = base.val();
        let dims = value.dims();
        let (d_in, d_out, device, dtype) = (dims[0], dims[1], value.device(), value.dtype());
        let module = path.trim_end_matches(".weight");
        let (a, b) = self.given.remove(module).unwrap_or_else(|| {
            let r = self.settings.rank;
            (
                Tensor::<2>::random([d_in, r], Distribution::Normal(0.0, 1.0 / r as f64), &device).cast(dtype),
                Tensor::<2>::zeros([r, d_out], (&device, dtype)),
            )
        });
        let adapter = LoraAdapter {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scale: self.settings.alpha / self.settings.rank as f64,
        };
        (base, Some(adapter))
    }
}

/// Attaches LoRA factors to the LLM's target projections and freezes everything else in it.
/// `given` maps module paths to initial `(a, b)` (a resumed run, a parity test).
pub fn attach(llm: Llama, settings: &LoraSettings, given: HashMap<String, (Tensor<2>, Tensor<2>)>) -> Llama {
    llm.apply_reparameterization(AttachLora { settings, given })
}

/// The LoRA factors of every adapted projection, by module path.
pub fn factors(llm: &Llama) -> Vec<(String, &LoraAdapter)> {
    let mut out = Vec::new();
    for (i, layer) in llm.model.layers.iter().enumerate() {
        let attn = &layer.self_attn;
        for (name, proj) in [("q_proj", &attn.q_proj), ("k_proj", &attn.k_proj), ("v_proj", &attn.v_proj), ("o_proj", &attn.o_proj)] {
            if let Some(adapter) = proj.weight.reparameterization::<LoraAdapter>() {
                out.push((format!("model.layers.{i}.self_attn.{name}"), adapter));
            }
        }
    }
    out
}
