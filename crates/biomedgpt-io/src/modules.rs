//! Builds Burn's standard modules from checkpoint tensors stored with PyTorch's conventions.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};

use crate::{FloatType, LoadError, WeightView};

/// A parameter from checkpoint data, keeping the data's dtype.
pub fn param<const D: usize>(data: TensorData, device: &Device) -> Param<Tensor<D>> {
    let dtype = data.dtype();
    Param::from_tensor(Tensor::from_data(data, (device, dtype)))
}

/// A PyTorch `nn.Linear` (`weight` [out, in], optional `bias` [out]). Burn multiplies by
/// `[in, out]`: we hand it a transposed view of PyTorch's storage, with no copy (a checkpoint in
/// the dtype asked for stays memory-mapped). On the CPU backend [`matmul_weight`] reads that
/// layout with its own kernels for 16-bit types and for decoding.
pub fn linear(vb: &WeightView, d_in: usize, d_out: usize, bias: bool, ty: FloatType, device: &Device) -> Result<Linear, LoadError> {
    let weight = vb.load("weight", &[d_out, d_in], ty)?;
    let weight: Tensor<2> = Tensor::from_data(weight, (device, ty.dtype())).transpose();
    let bias = if bias {
        Some(param(vb.load("bias", &[d_out], ty)?, device))
    } else {
        None
    };
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias,
    })
}

/// A PyTorch `nn.LayerNorm` (`weight`, `bias`).
pub fn layer_norm(vb: &WeightView, size: usize, eps: f64, ty: FloatType, device: &Device) -> Result<LayerNorm, LoadError> {
    let mut norm = LayerNormConfig::new(size).with_epsilon(eps).init(device);
    norm.gamma = param(vb.load("weight", &[size], ty)?, device);
    norm.beta = Some(param(vb.load("bias", &[size], ty)?, device));
    Ok(norm)
}

/// A PyTorch `nn.Embedding` (`weight` [n, d]).
pub fn embedding(vb: &WeightView, n: usize, d: usize, ty: FloatType, device: &Device) -> Result<Embedding, LoadError> {
    Ok(Embedding {
        weight: param(vb.load("weight", &[n, d], ty)?, device),
    })
}

/// `Linear::forward` through one 2D matmul: `[..., in]` is flattened to `[rows, in]` first.
/// Burn 0.22's batched path is 12-15x slower on the CPU backend for a transposed weight view
/// (measured: 4096x4096 GEMV 129 ms batched vs 8.9 ms as 2D), so every model calls this.
pub fn apply_linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let weight = layer.weight.val();
    let d_out = weight.dims()[1];
    let bias = layer.bias.as_ref().map(|b| b.val());
    let y = matmul_weight_bias(x.reshape([rows, d_in]), weight, bias);
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    y.reshape(out_dims)
}

/// [`apply_linear`] of several layers to the same `x` (q/k/v projections, gate and up): on the
/// CPU's bf16 path one product prepares `x` once for all of them; otherwise one by one.
pub fn apply_linears<const D: usize>(layers: &[&Linear], x: Tensor<D>) -> Vec<Tensor<D>> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let weights: Vec<(Tensor<2>, Option<Tensor<1>>)> = layers.iter().map(|l| (l.weight.val(), l.bias.as_ref().map(|b| b.val()))).collect();
    match crate::prompt_gemm::try_matmul_many(&x.clone().reshape([rows, d_in]), &weights) {
        Some(ys) => ys
            .into_iter()
            .map(|y| {
                let mut out_dims = dims;
                out_dims[D - 1] = y.dims()[1];
                y.reshape(out_dims)
            })
            .collect(),
        None => layers.iter().map(|l| apply_linear(l, x.clone())).collect(),
    }
}

/// `x [rows, in] · weight [in, out]`. On Burn's CPU backend: the decoding kernels of
/// [`crate::matvec`] for a few rows, [`crate::prompt_gemm`] for more rows with weights in
/// PyTorch's layout; Burn's matmul otherwise.
pub fn matmul_weight(x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    matmul_weight_bias(x, weight, None)
}

/// [`matmul_weight`] plus a bias `[out]`, added by the CPU kernels before the result is rounded
/// to the dtype (as PyTorch's addmm), or by Burn's broadcast add.
pub fn matmul_weight_bias(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    if let Some(y) = crate::matvec::try_matmul(&x, &weight, bias.as_ref()) {
        return y;
    }
    if let Some(y) = crate::prompt_gemm::try_matmul(&x, &weight, bias.as_ref()) {
        return y;
    }
    let y = x.matmul(weight);
    match bias {
        Some(bias) => y + bias.unsqueeze::<2>(),
        None => y,
    }
}

/// Rotary position embedding in HF's rotate-half layout: `x * cos + rotate_half(x) * sin`, with
/// `cos`/`sin` `[.., positions, head_dim]` broadcast over `x` `[batch, heads, positions, head_dim]`.
pub fn apply_rotary(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    if let Some(out) = crate::rotary::try_cpu(&x, cos, sin) {
        return out;
    }
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// cos and sin tables for `positions`, each `[positions.len(), 2 * inv_freq.len()]` row-major,
/// with the halves repeated (`cat(freqs, freqs)`) as HF does, computed in f32 like torch.
pub fn rotary_tables(inv_freq: &[f32], positions: &[i64]) -> (Vec<f32>, Vec<f32>) {
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
