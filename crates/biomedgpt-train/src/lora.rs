//! LoRA on the LLM's attention projections through Burn's built-in reparameterization: the base
//! weight stays frozen and `val()` yields `base + (alpha / rank) * (a @ b)`, so the model code
//! (which multiplies by `weight.val()`) runs unchanged. Factors are Burn-shaped: `a` `[in, rank]`,
//! `b` `[rank, out]`, i.e. PEFT's `lora_A.weight` and `lora_B.weight` transposed.

use std::collections::HashMap;

use biomedgpt_llama::Llama;
use burn::module::{LoraAdapter, Module, Param, ParamId, Reparameterizer};
use burn::tensor::{Tensor, TensorData};

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

/// Initial factors of one projection: `a` `[in, rank]`, `b` `[rank, out]`, and the parameter
/// ids to give them (a resumed run, whose optimizer state is keyed by them).
pub struct Factors {
    pub a: Tensor<2>,
    pub b: Tensor<2>,
    pub ids: Option<(u64, u64)>,
}

impl Factors {
    pub fn new(a: Tensor<2>, b: Tensor<2>) -> Self {
        Factors { a, b, ids: None }
    }
}

/// Initial factors per module path (`model.layers.0.self_attn.q_proj`), or PEFT's
/// initialization for paths without one.
struct AttachLora<'a> {
    settings: &'a LoraSettings,
    given: HashMap<String, Factors>,
    seed: u64,
}

/// N(0, std) values from a seeded generator, so a run's initial factors depend on its seed only.
fn normal(n: usize, std: f64, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    use rand::Rng;
    (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
        })
        .collect()
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
        let factors = self.given.remove(module).unwrap_or_else(|| {
            // PEFT's default: A random, B = 0, so the adapted model starts equal to the base.
            // (A ~ N(0, 1/rank), as Burn's LoRA; PEFT draws it Kaiming-uniform.)
            use rand::SeedableRng;
            let r = self.settings.rank;
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ fxhash(module));
            let a = Tensor::<2>::from_data(TensorData::new(normal(d_in * r, 1.0 / r as f64, &mut rng), [d_in, r]), &device);
            Factors::new(a.cast(dtype), Tensor::<2>::zeros([r, d_out], (&device, dtype)))
        });
        let param = |t: Tensor<2>, id: Option<u64>| match id {
            Some(id) => Param::initialized(ParamId::from(id), t).set_require_grad(true),
            None => Param::from_tensor(t),
        };
        let adapter = LoraAdapter {
            a: param(factors.a, factors.ids.map(|i| i.0)),
            b: param(factors.b, factors.ids.map(|i| i.1)),
            scale: self.settings.alpha / self.settings.rank as f64,
        };
        (base, Some(adapter))
    }
}

/// A stable 64-bit hash of a path (FNV-1a), to derive per-projection seeds.
fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Attaches LoRA factors to the LLM's target projections and freezes everything else in it.
/// `given` maps module paths to initial factors (a resumed run, a parity test); the others are
/// initialized from `seed`.
pub fn attach(llm: Llama, settings: &LoraSettings, given: HashMap<String, Factors>, seed: u64) -> Llama {
    llm.apply_reparameterization(AttachLora { settings, given, seed })
}

/// Writes the factors in PyTorch's layout (`lora_A.weight` `[rank, in]`, `lora_B.weight`
/// `[out, rank]`, f32), which `biomedgpt.json`'s `"lora"` entry merges at load.
pub fn save(llm: &Llama, path: &std::path::Path) -> std::io::Result<()> {
    use biomedgpt_io::SourceDType;
    use biomedgpt_io::safetensors_writer::{TensorSpec, write_streaming};
    let mut specs = Vec::new();
    let mut data: Vec<Vec<f32>> = Vec::new();
    for (module, adapter) in factors(llm) {
        for (name, t) in [("lora_A", adapter.a.val().transpose()), ("lora_B", adapter.b.val().transpose())] {
            let t = t.cast(burn::tensor::DType::F32);
            specs.push(TensorSpec { name: format!("{module}.{name}.weight"), dtype: SourceDType::F32, shape: t.dims().to_vec() });
            data.push(t.into_data().try_to_vec::<f32>().map_err(|e| std::io::Error::other(format!("{e:?}")))?);
        }
    }
    write_streaming(path, &specs, &[("format", "pt")], |i, buf| {
        buf.extend(data[i].iter().flat_map(|v| v.to_le_bytes()));
        Ok(())
    })
}

/// Reads factors written by [`save`] as Burn-shaped tensors, keyed by module path.
pub fn load(path: &std::path::Path, device: &burn::tensor::Device) -> Result<HashMap<String, Factors>, biomedgpt_io::LoadError> {
    use biomedgpt_io::{Checkpoint, FloatType};
    let ckpt = Checkpoint::open(path)?;
    let mut out = HashMap::new();
    for key in ckpt.keys().map(str::to_string).collect::<Vec<_>>() {
        let Some(module) = key.strip_suffix(".lora_A.weight") else { continue };
        let a = ckpt.load_any_shape(&key, FloatType::F32)?;
        let b = ckpt.load_any_shape(&format!("{module}.lora_B.weight"), FloatType::F32)?;
        let a: Tensor<2> = Tensor::from_data(a, (device, burn::tensor::DType::F32));
        let b: Tensor<2> = Tensor::from_data(b, (device, burn::tensor::DType::F32));
        // Contiguous Burn-shaped copies ([in, r], [r, out]).
        let a = Tensor::from_data(a.transpose().into_data(), (device, burn::tensor::DType::F32));
        let b = Tensor::from_data(b.transpose().into_data(), (device, burn::tensor::DType::F32));
        out.insert(module.to_string(), Factors::new(a, b));
    }
    Ok(out)
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
