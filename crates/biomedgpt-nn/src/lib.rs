//! PyTorch's layers on Burn: `nn.Linear`, `nn.LayerNorm` and `nn.Embedding` built from checkpoint
//! tensors stored with PyTorch's conventions ([`linear`], [`layer_norm`], [`embedding`]), and
//! their forward passes through the CPU kernels' dispatch points ([`apply_linear`],
//! [`apply_linears`]). The models build every layer here; their other ops come straight from
//! `biomedgpt-kernels`.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};

use biomedgpt_io::{FloatType, LoadError, WeightView};

/// A parameter from checkpoint data, keeping the data's dtype.
pub fn param<const D: usize>(data: TensorData, device: &Device) -> Param<Tensor<D>> {
    let dtype = data.dtype();
    Param::from_tensor(Tensor::from_data(data, (device, dtype)))
}

/// A PyTorch `nn.Linear` (`weight` [out, in], optional `bias` [out]). Burn multiplies by
/// `[in, out]`: we hand it a transposed view of PyTorch's storage, with no copy (a checkpoint in
/// the dtype asked for stays memory-mapped). On the CPU backend the kernels' [`biomedgpt_kernels::matmul`] reads that
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
    let y = biomedgpt_kernels::matmul(x.reshape([rows, d_in]), weight, bias);
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
    biomedgpt_kernels::matmul_many(x.reshape([rows, d_in]), &weights)
        .into_iter()
        .map(|y| {
            let mut out_dims = dims;
            out_dims[D - 1] = y.dims()[1];
            y.reshape(out_dims)
        })
        .collect()
}

