//! Prompt-sized products with 16-bit weights kept in PyTorch's `[out, in]` layout.
//!
//! f16/bf16 checkpoints are used straight from the memory-mapped file, in PyTorch's layout
//! (no copy, no re-layout at load), which is what the decoding kernels of [`crate::matvec`]
//! read fastest. Burn 0.22's CPU matmul multiplies by such a transposed 16-bit view at about
//! two thirds of its speed on a contiguous `[in, out]` matrix, so for more than a few rows the
//! weight is widened to f32 a tile of output rows at a time (the tile stays in cache) and
//! multiplied with the `gemm` crate's f32 kernels, which Burn uses too: f32 arithmetic, as torch
//! does on CPU for these types.

use burn::tensor::{DType, Tensor, bf16, f16};
use rayon::prelude::*;

use crate::matvec::{HalfFloat, WeightLayout, cpu_operands, join_column_blocks, to_tensor};

/// Output rows widened per tile: 128 x 4096 f32 is 2 MiB, within a core's L2 cache here.
const TILE: usize = 128;

/// `x [rows, in] · W` for a 16-bit `W` stored as a transposed view of `[out, in]` on Burn's CPU
/// backend (plain tensors, one dtype); `None` otherwise. The result has `x`'s dtype.
pub fn try_matmul(x: &Tensor<2>, weight: &Tensor<2>) -> Option<Tensor<2>> {
    let dtype = weight.dtype();
    let [rows, d_in] = x.dims();
    let [w_in, d_out] = weight.dims();
    if !matches!(dtype, DType::F16 | DType::BF16) || x.dtype() != dtype || w_in != d_in || rows == 0 || d_out == 0 {
        return None;
    }
    let (x32, wt, layout, offset) = cpu_operands(x, weight)?;
    if layout != WeightLayout::OutputMajor {
        return None; // Burn's own kernels are fast on `[in, out]`.
    }
    let y = match dtype {
        DType::F16 => matmul_tiles(&x32, rows, &wt.storage::<f16>()[offset..], d_in, d_out),
        _ => matmul_tiles(&x32, rows, &wt.storage::<bf16>()[offset..], d_in, d_out),
    };
    Some(to_tensor(y, rows, d_out, dtype, &x.device()))
}

/// `y [rows, out] = x [rows, in] · Wᵀ` for `W [out, in]`, tiles of output rows in parallel.
pub fn matmul_tiles<T: HalfFloat + Sync>(x: &[f32], rows: usize, w: &[T], d_in: usize, d_out: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * d_in, "x holds {} values, expected {rows} x {d_in}", x.len());
    assert!(w.len() >= d_in * d_out, "weight holds {} values, expected {d_out} x {d_in}", w.len());
    let tiles: Vec<(usize, Vec<f32>)> = (0..d_out)
        .step_by(TILE)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map_init(Vec::new, |wide: &mut Vec<f32>, start| {
            let n = (start + TILE).min(d_out) - start;
            wide.resize(n * d_in, 0.0);
            T::widen_into(&w[start * d_in..(start + n) * d_in], wide);
            let mut y = vec![0f32; rows * n];
            // SAFETY: dst is rows x n (strides n, 1), lhs rows x d_in (d_in, 1) and rhs the
            // transposed tile d_in x n (1, d_in): every access is inside the three buffers.
            unsafe {
                gemm::gemm(
                    rows, n, d_in,
                    y.as_mut_ptr(), 1, n as isize, false,
                    x.as_ptr(), 1, d_in as isize,
                    wide.as_ptr(), d_in as isize, 1,
                    0.0, 1.0, false, false, false,
                    gemm::Parallelism::None,
                );
            }
            (start, y)
        })
        .collect();
    join_column_blocks(tiles, rows, d_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_equal_the_f64_product() {
        // Sizes around the tile width, with a ragged last tile.
        for &(rows, d_in, d_out) in &[(9, 40, 3), (16, 64, 300), (33, 130, TILE * 2 + 17)] {
            let x: Vec<f32> = (0..rows * d_in).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let w: Vec<f16> = (0..d_out * d_in).map(|i| f16::from_f32(((i * 53 % 97) as f32 / 48.0) - 1.0)).collect();
            let y = matmul_tiles(&x, rows, &w, d_in, d_out);
            for r in 0..rows {
                for j in 0..d_out {
                    let want: f64 = (0..d_in).map(|i| x[r * d_in + i] as f64 * w[j * d_in + i].to_f64()).sum();
                    let got = y[r * d_out + j] as f64;
                    assert!((got - want).abs() <= 1e-5 * d_in as f64, "[{r}, {j}] of {rows}x{d_in}x{d_out}: {got} vs {want}");
                }
            }
        }
    }
}

