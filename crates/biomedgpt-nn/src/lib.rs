//! PyTorch's layers on Burn: `nn.Linear`, `nn.LayerNorm` and `nn.Embedding` built from checkpoint
//! tensors stored with PyTorch's conventions ([`linear`], [`layer_norm`], [`embedding`]), and
//! their forward passes through the CPU kernels' dispatch points ([`apply_linear`],
//! [`apply_linears`]). The models build every layer here; their other ops come straight from
//! `biomedgpt-kernels`.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{DType, Device, Tensor, TensorData};
use biomedgpt_kernels::quant::QuantMatrix;

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

/// A PyTorch `nn.Linear` whose weight may stay in a GGUF block type (`blocks`), read in place from
/// the memory-mapped file. Its fields carry `nn.Linear`'s names, so parameter paths
/// (`...q_proj.weight`) are the same as with Burn's `Linear`. A quantized layer's `weight` is an
/// empty `[0, 0]` placeholder: training and LoRA merging refuse such layers ([`Self::is_quantized`]).
#[derive(Module, Debug)]
pub struct MaybeQuantLinear {
    /// `[in, out]` (Burn's layout, a transposed view of PyTorch's storage), or `[0, 0]`.
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub blocks: Option<QuantMatrix>,
}

impl MaybeQuantLinear {
    pub fn is_quantized(&self) -> bool {
        self.blocks.is_some()
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        match &self.blocks {
            Some(b) => (b.cols, b.rows),
            None => {
                let [i, o] = self.weight.val().dims();
                (i, o)
            }
        }
    }
}

impl MaybeQuantLinear {
    /// Block weights multiplied with f32 activations at any row count
    /// ([`QuantMatrix::with_f32_activations`]).
    pub fn with_f32_activations(mut self) -> Self {
        self.blocks = self.blocks.take().map(QuantMatrix::with_f32_activations);
        self
    }
}

impl From<Linear> for MaybeQuantLinear {
    fn from(l: Linear) -> Self {
        MaybeQuantLinear { weight: l.weight, bias: l.bias, blocks: None }
    }
}

/// [`linear`], or with `keep_blocks` a weight stored in a GGML block type kept in its blocks
/// (anything else loads as [`linear`] does). The bias, if any, is loaded in `ty`.
pub fn maybe_quant_linear(
    vb: &WeightView,
    d_in: usize,
    d_out: usize,
    bias: bool,
    ty: FloatType,
    keep_blocks: bool,
    device: &Device,
) -> Result<MaybeQuantLinear, LoadError> {
    if keep_blocks && let Some(blocks) = vb.load_blocks("weight", &[d_out, d_in])? {
        let bias = if bias { Some(param(vb.load("bias", &[d_out], ty)?, device)) } else { None };
        let empty = Tensor::<2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 0]), (device, DType::F32));
        return Ok(MaybeQuantLinear { weight: Param::from_tensor(empty), bias, blocks: Some(blocks) });
    }
    Ok(linear(vb, d_in, d_out, bias, ty, device)?.into())
}

/// What [`apply_linear`] multiplies by: a dense `[in, out]` weight or a block-quantized matrix.
pub trait Projection {
    fn operands(&self) -> (Operand<'_>, Option<Tensor<1>>);
}

pub enum Operand<'a> {
    Dense(Tensor<2>),
    Blocks(&'a QuantMatrix),
}

impl Projection for Linear {
    fn operands(&self) -> (Operand<'_>, Option<Tensor<1>>) {
        (Operand::Dense(self.weight.val()), self.bias.as_ref().map(|b| b.val()))
    }
}

impl Projection for MaybeQuantLinear {
    fn operands(&self) -> (Operand<'_>, Option<Tensor<1>>) {
        let bias = self.bias.as_ref().map(|b| b.val());
        match &self.blocks {
            Some(b) => (Operand::Blocks(b), bias),
            None => (Operand::Dense(self.weight.val()), bias),
        }
    }
}

/// `Linear::forward` through one 2D matmul: `[..., in]` is flattened to `[rows, in]` first.
/// Burn 0.22's batched path is 12-15x slower on the CPU backend for a transposed weight view
/// (measured: 4096x4096 GEMV 129 ms batched vs 8.9 ms as 2D), so every model calls this.
pub fn apply_linear<const D: usize, L: Projection + ?Sized>(layer: &L, x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let (weight, bias) = layer.operands();
    let y = match weight {
        Operand::Dense(w) => biomedgpt_kernels::matmul(x.reshape([rows, d_in]), w, bias),
        Operand::Blocks(b) => biomedgpt_kernels::quant::matmul::matmul(x.reshape([rows, d_in]), b, bias),
    };
    let d_out = y.dims()[1];
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    y.reshape(out_dims)
}

/// [`apply_linear`] of several layers to the same `x` (q/k/v projections, gate and up): on the
/// CPU's bf16 path one product prepares `x` once for all of them; otherwise one by one.
pub fn apply_linears<const D: usize, L: Projection>(layers: &[&L], x: Tensor<D>) -> Vec<Tensor<D>> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let mut weights: Vec<(Tensor<2>, Option<Tensor<1>>)> = Vec::with_capacity(layers.len());
    for l in layers {
        match l.operands() {
            (Operand::Dense(w), b) => weights.push((w, b)),
            // Quantized layers go one by one (nothing to share between block products yet).
            _ => return layers.iter().map(|l| apply_linear(*l, x.clone())).collect(),
        }
    }
    biomedgpt_kernels::matmul_many(x.reshape([rows, d_in]), &weights)
        .into_iter()
        .map(|y| {
            let mut out_dims = dims;
            out_dims[D - 1] = y.dims()[1];
            y.reshape(out_dims)
        })
        .collect()
}

