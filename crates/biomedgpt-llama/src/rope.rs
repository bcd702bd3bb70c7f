//! Rotary position embeddings in HF's rotate-half layout, with the inverse frequencies of the
//! default, linear and llama3 rules computed in f32 exactly as transformers does.

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

/// cos and sin tables for the given positions, each `[positions.len(), head_dim]` row-major,
/// with the two halves repeated (`cat(freqs, freqs)`) as HF does.
pub fn cos_sin(inv_freq: &[f32], positions: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * half * 2);
    let mut sin = Vec::with_capacity(positions.len() * half * 2);
    for &p in positions {
        let row: Vec<f32> = inv_freq.iter().map(|&f| p as f32 * f).collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|x| x.cos()));
            sin.extend(row.iter().map(|x| x.sin()));
        }
    }
    (cos, sin)
}
