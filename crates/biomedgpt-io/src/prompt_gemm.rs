//! Prompt-sized products `x [rows, in] · Wᵀ` with weights kept in PyTorch's `[out, in]` layout.
//!
//! Checkpoints in the dtype asked for are used straight from the memory-mapped file, in
//! PyTorch's layout (no copy, no re-layout at load), which is what the decoding kernels of
//! [`crate::matvec`] read fastest. For more rows, Burn 0.22's CPU matmul on such a transposed
//! view re-packs its operands with scalar strided copies for every block (a quarter of a
//! TinyLlama prompt's time) and multiplies 16-bit types about a third slower than f32. Here the
//! weight is taken a tile of output rows at a time (16-bit tiles widened to f32 in cache, f32
//! tiles read in place), and the `gemm` crate's f32 kernels, which Burn uses too, run on operands
//! already in the layout they read: `x` and each result tile column-major, the tile's rows as
//! contiguous columns. f32 arithmetic throughout, as torch does on CPU for 16-bit types.

use burn::tensor::{DType, Tensor, bf16, f16};
use rayon::prelude::*;

use crate::matvec::{Element, WeightLayout, cpu_operands, to_tensor};

/// Output rows per tile: 96 x 4096 f32 is 1.5 MiB, within a core's L2 cache here. gemm re-packs
/// `x` for tiles wider than 96 (16 lanes x 6 columns per kernel call), a copy it does not need.
const TILE: usize = 96;

/// gemm reads `x` in place only with whole 16-lane columns: rows are padded to a multiple.
const LANES: usize = 16;

/// `x [rows, in] · W` for `W` stored as a transposed view of a contiguous `[out, in]` matrix of
/// f32, f16 or bf16 on Burn's CPU backend (plain tensors, one dtype); `None` otherwise. The
/// result has `x`'s dtype.
pub fn try_matmul(x: &Tensor<2>, weight: &Tensor<2>) -> Option<Tensor<2>> {
    let dtype = weight.dtype();
    let [rows, d_in] = x.dims();
    let [w_in, d_out] = weight.dims();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) || x.dtype() != dtype || w_in != d_in || rows == 0 || d_out == 0 {
        return None;
    }
    let (x32, wt, layout, offset) = cpu_operands(x, weight)?;
    if layout != WeightLayout::OutputMajor {
        return None; // Burn's own kernels read a contiguous `[in, out]` matrix as it is.
    }
    let y = match dtype {
        DType::F32 => matmul_tiles(&x32, rows, &wt.storage::<f32>()[offset..], d_in, d_out),
        DType::F16 => matmul_tiles(&x32, rows, &wt.storage::<f16>()[offset..], d_in, d_out),
        _ => matmul_tiles(&x32, rows, &wt.storage::<bf16>()[offset..], d_in, d_out),
    };
    Some(to_tensor(y, rows, d_out, dtype, &x.device()))
}

/// `y [rows, out] = x [rows, in] · Wᵀ` for `W [out, in]`, tiles of output rows in parallel.
pub fn matmul_tiles<T: Element>(x: &[f32], rows: usize, w: &[T], d_in: usize, d_out: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * d_in, "x holds {} values, expected {rows} x {d_in}", x.len());
    assert!(w.len() >= d_in * d_out, "weight holds {} values, expected {d_out} x {d_in}", w.len());
    let padded = rows.div_ceil(LANES) * LANES;
    let xt = transpose(x, rows, d_in, padded);
    let mut y = vec![0f32; rows * d_out];
    let out = SharedOut(y.as_mut_ptr());
    let starts: Vec<usize> = (0..d_out).step_by(TILE).collect();
    starts.into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(wide, yt): &mut (Vec<f32>, Vec<f32>), start| {
            let n = (start + TILE).min(d_out) - start;
            let tile = T::as_f32_tile(&w[start * d_in..(start + n) * d_in], wide);
            yt.resize(padded * n, 0.0);
            // SAFETY: dst is padded x n column-major (strides 1, padded), lhs padded x d_in
            // column-major (1, padded) and rhs the tile as d_in x n (1, d_in): every access is
            // inside the three buffers.
            unsafe {
                gemm::gemm(
                    padded, n, d_in,
                    yt.as_mut_ptr(), padded as isize, 1, false,
                    xt.as_ptr(), padded as isize, 1,
                    tile.as_ptr(), d_in as isize, 1,
                    0.0, 1.0, false, false, false,
                    gemm::Parallelism::None,
                );
            }
            // SAFETY: this tile writes only columns start..start + n of `y` [rows, d_out], and
            // the tiles' column ranges are disjoint.
            unsafe { out.write_columns(yt, padded, rows, d_out, start, n) };
        },
    );
    y
}

/// The output buffer, written by the tiles in disjoint column ranges.
struct SharedOut(*mut f32);

// SAFETY: the tiles write disjoint elements (see `write_columns`).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Writes the first `rows` rows of the column-major tile `yt [padded, n]` to columns
    /// `start..start + n` of `[rows, cols]`.
    ///
    /// # Safety
    /// The buffer holds `rows * cols` values and no other thread writes these columns.
    unsafe fn write_columns(&self, yt: &[f32], padded: usize, rows: usize, cols: usize, start: usize, n: usize) {
        // In square blocks, so that neither side is walked across a whole column.
        const BLOCK: usize = 16;
        for r0 in (0..rows).step_by(BLOCK) {
            for j0 in (0..n).step_by(BLOCK) {
                for r in r0..(r0 + BLOCK).min(rows) {
                    for j in j0..(j0 + BLOCK).min(n) {
                        // SAFETY: r < rows and start + j < cols (caller).
                        unsafe { *self.0.add(r * cols + start + j) = yt[j * padded + r] };
                    }
                }
            }
        }
    }
}

/// `x [rows, cols]` row-major to `[cols, padded]` row-major (zeros after `rows`), in blocks.
fn transpose(x: &[f32], rows: usize, cols: usize, padded: usize) -> Vec<f32> {
    const BLOCK: usize = 32;
    let mut t = vec![0f32; cols * padded];
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(cols) {
                    t[c * padded + r] = x[r * cols + c];
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Element>(convert: fn(f32) -> T) {
        // Sizes around the tile width, with a ragged last tile and rows not a multiple of 16.
        for &(rows, d_in, d_out) in &[(9, 40, 3), (16, 64, 300), (33, 130, TILE * 2 + 17)] {
            let x: Vec<f32> = (0..rows * d_in).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let w: Vec<T> = (0..d_out * d_in).map(|i| convert(((i * 53 % 97) as f32 / 48.0) - 1.0)).collect();
            let y = matmul_tiles(&x, rows, &w, d_in, d_out);
            for r in 0..rows {
                for j in 0..d_out {
                    let want: f64 = (0..d_in).map(|i| x[r * d_in + i] as f64 * w[j * d_in + i].to_f32() as f64).sum();
                    let got = y[r * d_out + j] as f64;
                    assert!((got - want).abs() <= 1e-5 * d_in as f64, "[{r}, {j}] of {rows}x{d_in}x{d_out}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn f32_tiles_equal_the_f64_product() {
        check::<f32>(|v| v);
    }

    #[test]
    fn f16_tiles_equal_the_f64_product() {
        check::<f16>(f16::from_f32);
    }

    #[test]
    fn bf16_tiles_equal_the_f64_product() {
        check::<bf16>(bf16::from_f32);
    }
}
