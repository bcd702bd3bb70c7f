//! Products with a weight matrix, `x [rows, in] · W [in, out] (+ bias)`: the one dispatch point
//! for every linear layer of every model ([`matmul`], [`matmul_many`]).
//!
//! - [`matvec`]: decoding, at most [`matvec::MAX_ROWS`] rows, f32/f16/bf16 weights widened in
//!   registers (AVX-512 or AVX2 + F16C).
//! - [`gemm`]: prompts, weights in PyTorch's `[out, in]` layout taken a tile at a time, the `gemm`
//!   crate's f32 kernels.
//! - [`bf16_dot`]: bf16 prompts and decoding on AVX512_BF16, and through [`amx`] on AMX tiles.
//!
//! Each `try_*` takes plain tensors on Burn's CPU backend and returns `None` where it does not
//! apply; [`matmul`] then falls back to Burn's matmul (autodiff, GPU backends, other layouts).

pub(crate) mod amx;
pub mod bf16_dot;
pub mod gemm;
pub mod matvec;

use burn::tensor::{DType, Tensor, TensorData, bf16, f16};
use std::cell::Cell;

use crate::element::WeightLayout;
use crate::flex::{bias_f32, contiguous_flex, cpu_operands, to_tensor, weight_operand};
use crate::isa::Isa;

/// Most rows of a batched decoding step (one token of each of that many sequences).
pub const DECODE_BATCH_ROWS: usize = 64;

/// The fewest rows a product (and attention, in queries) takes through the prompt kernels
/// outside [`decode_batch`] and [`prompt`]; fewer go through the decoding kernels, whose sums
/// round differently. The prompt kernels compute each row the same whatever rows are computed
/// beside it (fixed-depth gemm pieces, one-query attention blocks doubled, exact integer panels):
/// inside [`prompt`] they take every row count, which is what prefix caching relies on.
pub const PROMPT_ROWS: usize = if matvec::MAX_ROWS > bf16_dot::MATVEC_ROWS { matvec::MAX_ROWS + 1 } else { bf16_dot::MATVEC_ROWS + 1 };

thread_local! {
    static DECODE_BATCH: Cell<bool> = const { Cell::new(false) };
    static PROMPT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the products and attentions called on this thread taking the prompt kernels
/// for any number of rows: the rows are positions of a prompt, whose numbers must not depend on
/// how the prompt was cut into chunks (a prefix-cache hit leaves a rest of a few positions, or
/// one, to prefill; without the cache the same positions are rows of the whole prompt).
pub fn prompt<R>(f: impl FnOnce() -> R) -> R {
    crate::parallel::with_flag(&PROMPT, f)
}

/// Whether this thread is inside [`prompt`].
pub fn in_prompt() -> bool {
    PROMPT.with(Cell::get)
}

/// Runs `f` with the decoding kernels taking up to [`DECODE_BATCH_ROWS`] rows (8 otherwise):
/// the rows of a continuous-batching step are single tokens of independent sequences, not a
/// prompt, so they go through the decoding kernels in groups of 8 over each piece of the weights
/// (read from memory once, the other groups from cache) rather than through the prompt kernels.
/// Each row is then computed exactly as it is alone. Applies to products called on this thread.
pub fn decode_batch<R>(f: impl FnOnce() -> R) -> R {
    crate::parallel::with_flag(&DECODE_BATCH, f)
}

/// The most rows the decoding kernels take in a product called now: [`matvec::MAX_ROWS`],
/// [`DECODE_BATCH_ROWS`] inside [`decode_batch`], none inside [`prompt`].
pub fn decode_rows() -> usize {
    if in_prompt() {
        0
    } else if DECODE_BATCH.with(Cell::get) {
        DECODE_BATCH_ROWS
    } else {
        matvec::MAX_ROWS
    }
}

/// `x [rows, in] · weight [in, out] (+ bias [out])`: the decoding kernels for a few rows, the
/// prompt kernels for more rows with weights in PyTorch's layout, Burn's matmul otherwise. The
/// CPU kernels add the bias before the result is rounded to the dtype (as PyTorch's addmm).
pub fn matmul(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    if let Some(y) = try_decode(&x, &weight, bias.as_ref()) {
        return y;
    }
    if let Some(y) = try_prompt(&x, &weight, bias.as_ref()) {
        return y;
    }
    let y = x.matmul(weight);
    match bias {
        Some(bias) => y + bias.unsqueeze::<2>(),
        None => y,
    }
}

/// [`matmul`] of several `(weight, bias)` pairs with the same `x` (q/k/v projections, gate and
/// up): on the CPU's bf16 path one product prepares `x` once for all of them; otherwise one by one.
pub fn matmul_many(x: Tensor<2>, weights: &[(Tensor<2>, Option<Tensor<1>>)]) -> Vec<Tensor<2>> {
    match try_bf16_many(&x, weights) {
        Some(ys) => ys,
        None => weights.iter().map(|(w, b)| matmul(x.clone(), w.clone(), b.clone())).collect(),
    }
}

/// `x [rows, in] · W [in, out] (+ bias [out])` for 2D tensors on Burn's CPU backend, or `None`
/// where this path does not apply (see [`matvec`]'s docs). The result has `x`'s dtype and
/// device; the bias is added in f32 before the one rounding to that dtype, as PyTorch's addmm.
pub fn try_decode(x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    let [rows, d_in] = x.dims();
    let [w_in, d_out] = weight.dims();
    if rows == 0 || rows > decode_rows() || w_in != d_in || x.dtype() != weight.dtype() || crate::isa::current() < Isa::Avx2 {
        return None;
    }
    // bf16 in PyTorch's layout on a CPU with AVX512_BF16: the dot-product kernel, which takes
    // x's bf16 values as they are and rounds its results itself (as the prompt path does).
    if x.dtype() == DType::BF16
        && let Some(mut ys) = try_bf16_many(x, &[(weight.clone(), bias.cloned())])
    {
        return ys.pop();
    }
    let bias = bias_f32(bias, d_out, x.dtype())?;
    let (x32, wt, layout, offset) = cpu_operands(x, weight)?;
    let dtype = x.dtype();
    let mut y = match dtype {
        DType::F32 => matvec::matvec(&x32, rows, &wt.storage::<f32>()[offset..], layout, d_in, d_out),
        DType::F16 => matvec::matvec(&x32, rows, &wt.storage::<f16>()[offset..], layout, d_in, d_out),
        // Where the dot-product kernel does not apply (see above).
        DType::BF16 => matvec::matvec(&x32, rows, &wt.storage::<bf16>()[offset..], layout, d_in, d_out),
        _ => return None,
    };
    if let Some(bias) = bias {
        for row in y.chunks_exact_mut(d_out) {
            row.iter_mut().zip(&bias).for_each(|(y, b)| *y += b);
        }
    }
    Some(to_tensor(y, rows, d_out, dtype, &x.device()))
}

/// `x [rows, in] · W` for `W` stored as a transposed view of a contiguous `[out, in]` matrix of
/// f32, f16 or bf16 on Burn's CPU backend (plain tensors, one dtype); `None` otherwise. The
/// result has `x`'s dtype.
pub fn try_prompt(x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    let dtype = weight.dtype();
    let [rows, d_in] = x.dims();
    let [w_in, d_out] = weight.dims();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) || x.dtype() != dtype || w_in != d_in || rows == 0 || d_out == 0 {
        return None;
    }
    if dtype == DType::BF16
        && let Some(mut ys) = try_bf16_many(x, &[(weight.clone(), bias.cloned())])
    {
        return ys.pop();
    }
    let bias = bias_f32(bias, d_out, dtype)?;
    let (x32, wt, layout, offset) = cpu_operands(x, weight)?;
    if layout != WeightLayout::OutputMajor {
        return None; // Burn's own kernels read a contiguous `[in, out]` matrix as it is.
    }
    let bias = bias.as_deref();
    let y = match dtype {
        DType::F32 => gemm::matmul_tiles(&x32, rows, &wt.storage::<f32>()[offset..], d_in, d_out, bias),
        DType::F16 => gemm::matmul_tiles(&x32, rows, &wt.storage::<f16>()[offset..], d_in, d_out, bias),
        // Where the dot-product kernel does not apply (see above).
        _ => gemm::matmul_tiles(&x32, rows, &wt.storage::<bf16>()[offset..], d_in, d_out, bias),
    };
    Some(to_tensor(y, rows, d_out, dtype, &x.device()))
}

/// [`try_prompt`] / [`try_decode`] for several `(weight, bias)` pairs applied to the same `x`, in one pass over
/// the threads with `x` prepared once: bf16 weights in PyTorch's layout on a CPU with
/// AVX512_BF16, through the prompt kernels or, for a few rows, the decoding kernels
/// (`bf16_dot::matvec_many`); `None` otherwise (the caller multiplies them one by one).
pub fn try_bf16_many(x: &Tensor<2>, weights: &[(Tensor<2>, Option<Tensor<1>>)]) -> Option<Vec<Tensor<2>>> {
    let [rows, d_in] = x.dims();
    if x.dtype() != DType::BF16 || !bf16_dot::available() {
        return None;
    }
    let mut operands = Vec::with_capacity(weights.len());
    for (weight, bias) in weights {
        let [w_in, d_out] = weight.dims();
        if weight.dtype() != DType::BF16 || w_in != d_in {
            return None;
        }
        let bias = bias_f32(bias.as_ref(), d_out, DType::BF16)?;
        let (wt, layout, offset) = weight_operand(weight)?;
        if layout != WeightLayout::OutputMajor {
            return None;
        }
        operands.push((wt, offset, d_out, bias));
    }
    let xt = contiguous_flex(x)?;
    let xs = xt.as_slice::<bf16>()?;
    let products: Vec<bf16_dot::Product> = operands
        .iter()
        .map(|(wt, offset, d_out, bias)| bf16_dot::Product {
            weight: &wt.storage::<bf16>()[*offset..],
            d_out: *d_out,
            bias: bias.as_deref(),
        })
        .collect();
    // Results rounded to bf16 by the threads that compute them.
    let ys = if rows <= bf16_dot::MATVEC_ROWS && !in_prompt() {
        bf16_dot::matvec_many::<bf16>(xs, rows, &products, d_in)?
    } else {
        bf16_dot::matmul_many::<bf16>(xs, rows, &products, d_in)?
    };
    let device = x.device();
    Some(
        ys.into_iter()
            .zip(&operands)
            .map(|(y, (_, _, d_out, _))| Tensor::from_data(TensorData::new(y, [rows, *d_out]), (&device, DType::BF16)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside `prompt`, a few rows of f32, f16 or bf16 weights go through the prompt kernels:
    /// one to eight rows computed apart equal those rows of a 20-row product.
    #[test]
    fn prompt_rows_apart_equal_the_whole_prompt() {
        use burn::tensor::{Device, TensorData};
        let device = Device::flex();
        let (k, n) = (320, 72);
        let xv: Vec<f32> = (0..20 * k).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let wv: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0).collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            // PyTorch's [out, in] storage, used transposed, as the models hold them.
            let w = Tensor::<2>::from_data(TensorData::new(wv.clone(), [n, k]), &device).cast(dtype).transpose();
            let product = |rows: usize, from: usize| -> Vec<f32> {
                let x = Tensor::<2>::from_data(TensorData::new(xv[from * k..(from + rows) * k].to_vec(), [rows, k]), &device).cast(dtype);
                prompt(|| matmul(x, w.clone(), None)).cast(DType::F32).into_data().try_to_vec().unwrap()
            };
            let whole = product(20, 0);
            for (from, rows) in [(0, 1), (19, 1), (3, 2), (5, 3), (8, 5), (12, 8)] {
                let part = product(rows, from);
                assert!(part.iter().zip(&whole[from * n..]).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?}: {rows} rows from {from}");
            }
        }
    }

    /// Tensor level: the shared-input products equal the products one at a time, for a prompt
    /// and for a decoding step's few rows, and the path declines f32.
    #[test]
    fn shared_input_products_equal_separate_ones() {
        use burn::tensor::{Device, TensorData};
        let device = Device::flex();
        let tensor = |n: usize, m: usize, seed: usize| {
            let v: Vec<f32> = (0..n * m).map(|i| (((i + seed) * 37 % 101) as f32 / 50.0) - 1.0).collect();
            Tensor::<2>::from_data(TensorData::new(v, [n, m]), &device).cast(DType::BF16)
        };
        let x = tensor(20, 64, 0);
        // PyTorch's [out, in] storage, used transposed, as the models hold them.
        let weights: Vec<(Tensor<2>, Option<Tensor<1>>)> =
            vec![(tensor(64, 64, 1).transpose(), None), (tensor(8, 64, 2).transpose(), Some(tensor(1, 8, 3).reshape([8])))];
        if bf16_dot::available() {
            let together = try_bf16_many(&x, &weights).expect("bf16 path applies");
            for ((w, b), y) in weights.iter().zip(together) {
                let alone = try_prompt(&x, w, b.as_ref()).expect("prompt path applies");
                let values = |t: Tensor<2>| -> Vec<f32> { t.cast(DType::F32).into_data().try_to_vec().unwrap() };
                assert_eq!(values(y), values(alone));
            }
        }
        assert!(try_bf16_many(&x.clone().cast(DType::F32), &weights).is_none(), "f32 input");
        // A decoding step's few rows: the decoding kernels, equal to their one-at-a-time path.
        if bf16_dot::available() {
            let x = x.narrow(0, 0, 2);
            let together = try_bf16_many(&x, &weights).expect("bf16 decoding path applies");
            for ((w, b), y) in weights.iter().zip(together) {
                let alone = try_decode(&x, w, b.as_ref()).expect("decoding path applies");
                let values = |t: Tensor<2>| -> Vec<f32> { t.cast(DType::F32).into_data().try_to_vec().unwrap() };
                assert_eq!(values(y), values(alone));
            }
        }
    }
}
