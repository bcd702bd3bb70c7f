//! Inverse frequencies of LLaMA's rotary embeddings (default, linear and llama3 rules), computed
//! in f32 exactly as transformers does. Tables and the rotation are `biomedgpt_kernels::rotary`'.

use crate::config::RopeKind;

/// `1 / base^(2i/d)` in f32, then the scaling rule.
pub fn inverse_frequencies(head_dim: usize, base: f64, kind: RopeKind) -> Vec<f32> {
    let base = base as f32;
    let d = head_dim as f32;
    let inv: Vec<f32> = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d)).collect();
    match kind {
        RopeKind::Default => inv,
        RopeKind::Linear { factor } => inv.into_iter().map(|f| f / factor as f32).collect(),
        RopeKind::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let (factor, low, high) = (factor as f32, low_freq_factor as f32, high_freq_factor as f32);
            let old = original_max_position_embeddings as f32;
            let low_freq_wavelen = old / low;
            let high_freq_wavelen = old / high;
            inv.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
                    let is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
                    if is_medium {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect()
        }
    }
}
