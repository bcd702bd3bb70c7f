//! Rotary position embedding in one pass on the CPU backend (f32).
//!
//! Burn's ops take five passes over the heads (two narrows, a negation, a concatenation, two
//! products and a sum, each allocating). Here each `[head_dim]` row is read once from the
//! (usually strided: heads split off with a dimension swap) input and written contiguous, which
//! is also the layout attention reads. Same arithmetic as PyTorch: `x·cos + rotate_half(x)·sin`,
//! each product and the sum rounded in f32 (no fused multiply-add).

use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::matvec::contiguous_flex;

/// `x [B, H, T, D]` (any strides with a contiguous last dim) with `cos`/`sin` `[B or 1, 1, T, D]`,
/// f32 plain tensors on Burn's CPU backend; `None` otherwise.
pub fn try_cpu(x: &Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<Tensor<4>> {
    let [b, h, t, d] = x.dims();
    let [cb, ch, ct, cd] = cos.dims();
    if [x.dtype(), cos.dtype(), sin.dtype()] != [DType::F32; 3] || (ch, ct, cd) != (1, t, d) || !(cb == 1 || cb == b) || sin.dims() != cos.dims() || d % 2 != 0 || b * h * t * d == 0 {
        return None;
    }
    let xf: FlexTensor = x.clone().try_into_primitive::<Flex>().ok()?;
    let layout = xf.layout();
    let strides = layout.strides();
    if strides[3] != 1 || strides.iter().any(|&s| s < 0) {
        return None;
    }
    let (s0, s1, s2) = (strides[0] as usize, strides[1] as usize, strides[2] as usize);
    let start = layout.start_offset();
    let storage: &[f32] = xf.storage();
    let (cos_f, sin_f) = (contiguous_flex(cos)?, contiguous_flex(sin)?);
    let (cos_v, sin_v) = (cos_f.as_slice::<f32>()?, sin_f.as_slice::<f32>()?);
    // The last element any row reads must be inside the storage.
    let last = start + (b - 1) * s0 + (h - 1) * s1 + (t - 1) * s2 + d;
    if last > storage.len() {
        return None;
    }
    let half = d / 2;
    let mut out = vec![0f32; b * h * t * d];
    let rows = |(i, out): (usize, &mut [f32])| {
        let (bi, hi, ti) = (i / (h * t), (i / t) % h, i % t);
        let x = &storage[start + bi * s0 + hi * s1 + ti * s2..][..d];
        let at = ((if cb == 1 { 0 } else { bi }) * t + ti) * d;
        let (c, s) = (&cos_v[at..at + d], &sin_v[at..at + d]);
        for k in 0..half {
            out[k] = x[k] * c[k] + (-x[k + half]) * s[k];
            out[k + half] = x[k + half] * c[k + half] + x[k] * s[k + half];
        }
    };
    if b * h * t * d >= 1 << 15 {
        out.par_chunks_mut(d).enumerate().for_each(rows);
    } else {
        out.chunks_mut(d).enumerate().for_each(rows);
    }
    Some(Tensor::from_data(TensorData::new(out, [b, h, t, d]), &x.device()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn equals_burn_ops_on_a_strided_view() {
        let (b, t, h, d) = (2, 5, 3, 8);
        let values: Vec<f32> = (0..b * t * h * d).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [b, t, h, d]), &Device::flex()).swap_dims(1, 2);
        let table = |phase: f32| {
            let v: Vec<f32> = (0..t * d).map(|i| (i as f32 * 0.37 + phase).cos()).collect();
            Tensor::<4>::from_data(TensorData::new(v, [1, 1, t, d]), &Device::flex())
        };
        let (cos, sin) = (table(0.0), table(1.3));
        let ours: Vec<f32> = try_cpu(&x, &cos, &sin).expect("the kernel takes these").into_data().try_to_vec().unwrap();
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let burn: Vec<f32> = (x * cos + rotated * sin).into_data().try_to_vec().unwrap();
        assert_eq!(ours, burn);
    }
}
