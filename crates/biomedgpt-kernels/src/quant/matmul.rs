//! Products with weights kept in their GGML blocks (a GGUF file's bytes, used in place):
//! `y = x W^T + b` for `W` `[out, in]` stored row by row in blocks along `in`.
//!
//! This is the correct, portable version: each thread takes pieces of output rows, dequantizes
//! one weight row at a time into a small f32 buffer (L1-resident) with the scalar reference of
//! [`super::dequantize`], and dots it with every row of `x`. It reads each weight byte once per
//! call, so decoding stays memory-bound on the quantized size; the block-aware SIMD kernels that
//! reach llama.cpp's speed replace the inner loop behind this same entry point.

use std::sync::Arc;

use burn::tensor::{DType, Tensor, TensorData};

use super::{GgmlType, dequantize};
use crate::parallel::{Shared, share_pieces};

/// A weight matrix in a GGML block type: `rows` output features of `cols` inputs each.
#[derive(Clone)]
pub struct QuantMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    data: Arc<dyn AsRef<[u8]> + Send + Sync>,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantMatrix({} [{}, {}])", self.ty, self.rows, self.cols)
    }
}

impl QuantMatrix {
    /// Wraps `data` (the blocks of `rows` rows of `cols` values). Errors name what does not fit.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Result<Self, String> {
        if !ty.is_dequantizable() {
            return Err(format!("{ty} is not a block type this build computes with ({})", GgmlType::DEQUANTIZABLE));
        }
        let row = ty.row_bytes(cols).ok_or_else(|| format!("rows of {cols} values are not whole {ty} blocks"))?;
        let len = (*data).as_ref().len();
        if len != row * rows {
            return Err(format!("{len} bytes for {rows} rows of {cols} {ty} values ({} expected)", row * rows));
        }
        Ok(QuantMatrix { ty, rows, cols, data })
    }

    pub fn bytes(&self) -> &[u8] {
        (*self.data).as_ref()
    }

    fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols).expect("checked in new")
    }

    /// The whole matrix dequantized, `[rows, cols]` f32 (tests and fallbacks).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        dequantize(self.ty, self.bytes(), &mut out);
        out
    }
}

/// From this many rows of `x` on, the product runs as dequantized tiles through the GEMM kernels.
/// Below it every row is computed alone, in the same order whatever the row count: the same
/// limit as the float decoding kernels' ([`crate::matmul::matvec::MAX_ROWS`]), so a batched
/// decoding step of up to that many sequences gives each the numbers it gets alone.
const PROMPT_ROWS: usize = crate::matmul::matvec::MAX_ROWS + 1;

/// Output rows per piece of work: enough to amortise the piece overhead, small enough that two
/// threads share the rows evenly.
const ROWS_PER_PIECE: usize = 16;

/// `x [m, cols] W^T (+ bias) -> [m, rows]`, computed in f32 and returned in `x`'s dtype.
pub fn matmul(x: Tensor<2>, w: &QuantMatrix, bias: Option<Tensor<1>>) -> Tensor<2> {
    let [m, k] = x.dims();
    assert_eq!(k, w.cols, "quantized matmul: x has {k} columns, the weight {}", w.cols);
    let device = x.device();
    let dtype = x.dtype();
    let xs: Vec<f32> = x.cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 data");
    let n = w.rows;
    let bias_values: Option<Vec<f32>> = bias.map(|b| b.cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 data"));
    if m >= PROMPT_ROWS.max(crate::matmul::decode_rows() + 1) {
        // Prompts: tiles of output rows dequantized into cache, multiplied by the f32 gemm
        // kernels (the weights are read once per call; the arithmetic is the GEMM's).
        let row_bytes = w.row_bytes();
        let bytes = w.bytes();
        let y = crate::matmul::gemm::matmul_filled_tiles(&xs, m, k, n, bias_values.as_deref(), |first, tile| {
            let rows = tile.len() / k;
            dequantize(w.ty, &bytes[first * row_bytes..(first + rows) * row_bytes], tile);
        });
        return Tensor::<2>::from_data(TensorData::new(y, [m, n]), (&device, DType::F32)).cast(dtype);
    }
    // yt [n, m]: each piece writes its own output rows.
    let mut yt = vec![0f32; n * m];
    let out = Shared(yt.as_mut_ptr());
    let row_bytes = w.row_bytes();
    let bytes = w.bytes();
    let pieces = n.div_ceil(ROWS_PER_PIECE);
    let threads = rayon::current_num_threads();
    let avx2 = crate::isa::current() >= crate::isa::Isa::Avx2;
    share_pieces(pieces, if m * n * k < 1 << 16 { 1 } else { threads }, |piece, row: &mut Vec<f32>| {
        row.resize(k, 0.0);
        let rows = piece * ROWS_PER_PIECE..((piece + 1) * ROWS_PER_PIECE).min(n);
        // SAFETY: output rows `rows` belong to this piece only; AVX2 is present when `avx2`.
        unsafe {
            if avx2 {
                #[cfg(target_arch = "x86_64")]
                rows_avx2(w.ty, bytes, row_bytes, rows, &xs, m, k, row, out);
                #[cfg(not(target_arch = "x86_64"))]
                rows_of(w.ty, bytes, row_bytes, rows, &xs, m, k, row, out);
            } else {
                rows_of(w.ty, bytes, row_bytes, rows, &xs, m, k, row, out);
            }
        }
    });
    let mut y = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            y[i * n + j] = yt[j * m + i];
        }
    }
    if let Some(b) = bias_values {
        for row in y.chunks_exact_mut(n) {
            row.iter_mut().zip(&b).for_each(|(v, b)| *v += b);
        }
    }
    Tensor::<2>::from_data(TensorData::new(y, [m, n]), (&device, DType::F32)).cast(dtype)
}

/// Output rows `rows` of `yt [n, m]`: each weight row dequantized once, dotted with every row of
/// `xs [m, k]`.
///
/// # Safety
/// `out` points at `yt`, and no other thread writes rows `rows`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn rows_of(ty: GgmlType, bytes: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, xs: &[f32], m: usize, k: usize, row: &mut [f32], out: Shared<f32>) {
    for j in rows {
        dequantize(ty, &bytes[j * row_bytes..(j + 1) * row_bytes], row);
        for i in 0..m {
            let v = dot(&xs[i * k..(i + 1) * k], row);
            unsafe { *out.ptr().add(j * m + i) = v };
        }
    }
}

/// [`rows_of`] compiled for AVX2 + FMA + F16C: the same code (the same order of operations, so
/// the same results), vectorised by the compiler.
///
/// # Safety
/// As [`rows_of`], on a CPU with AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2(ty: GgmlType, bytes: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, xs: &[f32], m: usize, k: usize, row: &mut [f32], out: Shared<f32>) {
    // The types with a fused kernel: blocks widened in registers, no row buffer.
    let fused: Option<unsafe fn(&[u8], &[f32]) -> f32> = match ty {
        GgmlType::Q8_0 => Some(super::x86::dot_q8_0),
        GgmlType::Q4_0 => Some(super::x86::dot_q4_0),
        GgmlType::Q4_1 => Some(super::x86::dot_q4_1),
        GgmlType::Q4K => Some(super::x86::dot_q4_k),
        GgmlType::Q5K => Some(super::x86::dot_q5_k),
        GgmlType::Q6K => Some(super::x86::dot_q6_k),
        _ => None,
    };
    let Some(dot_row) = fused else {
        return unsafe { rows_of(ty, bytes, row_bytes, rows, xs, m, k, row, out) };
    };
    for j in rows {
        let w = &bytes[j * row_bytes..(j + 1) * row_bytes];
        for i in 0..m {
            // SAFETY: AVX2/FMA/F16C present (this function's contract); `w` holds k/block blocks.
            let v = unsafe { dot_row(w, &xs[i * k..(i + 1) * k]) };
            unsafe { *out.ptr().add(j * m + i) = v };
        }
    }
}

/// Rows `ids` of the matrix dequantized (embedding lookups), `[ids.len(), cols]` f32.
pub fn rows(w: &QuantMatrix, ids: &[usize]) -> Vec<f32> {
    let row_bytes = w.row_bytes();
    let mut out = vec![0f32; ids.len() * w.cols];
    for (o, &id) in out.chunks_exact_mut(w.cols).zip(ids) {
        dequantize(w.ty, &w.bytes()[id * row_bytes..(id + 1) * row_bytes], o);
    }
    out
}

/// A dot product with eight partial sums (vectorisable by the compiler).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>();
    sum += acc.iter().sum::<f32>();
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;
    use burn::tensor::Device;

    #[test]
    fn equals_dequantize_then_f32_matmul() {
        for m in [1, 5, 8, 9, 19] {
        let (n, k) = (37, 512);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        for &ty in &[GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            let mut q = vec![0u8; ty.row_bytes(k).unwrap() * n];
            quantize(ty, &w, &mut q);
            let matrix = QuantMatrix::new(ty, n, k, Arc::new(q)).unwrap();
            let dense = matrix.dequantize();
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4).collect();
            let device = Device::flex();
            let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), (&device, DType::F32));
            let bias = Tensor::<1>::from_data(TensorData::new((0..n).map(|j| j as f32).collect::<Vec<_>>(), [n]), (&device, DType::F32));
            let y = matmul(xt, &matrix, Some(bias)).into_data().try_to_vec::<f32>().unwrap();
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|c| x[i * k + c] as f64 * dense[j * k + c] as f64).sum::<f64>() + j as f64;
                    let got = y[i * n + j] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{ty} ({i},{j}): {got} vs {want}");
                }
            }
            assert_eq!(rows(&matrix, &[3])[..], dense[3 * k..4 * k]);
        }
        }
    }

    /// Inside `decode_batch` (a continuous-batching step), up to 64 rows go through the decoding
    /// kernels, each row bit for bit as alone.
    #[test]
    fn batched_decoding_rows_are_computed_as_alone() {
        let (n, k) = (33, 2048);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let device = Device::flex();
        for &ty in &[GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            let mut q = vec![0u8; ty.row_bytes(k).unwrap() * n];
            quantize(ty, &w, &mut q);
            let matrix = QuantMatrix::new(ty, n, k, Arc::new(q)).unwrap();
            let x: Vec<f32> = (0..20 * k).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4).collect();
            let product = |rows: usize, from: usize| {
                let xt = Tensor::<2>::from_data(TensorData::new(x[from * k..(from + rows) * k].to_vec(), [rows, k]), (&device, DType::F32));
                crate::matmul::decode_batch(|| matmul(xt, &matrix, None)).into_data().try_to_vec::<f32>().unwrap()
            };
            let together = product(20, 0);
            for r in 0..20 {
                let alone = product(1, r);
                assert!(together[r * n..(r + 1) * n].iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty}: row {r}");
            }
        }
    }

    #[test]
    fn sizes_are_checked() {
        let e = QuantMatrix::new(GgmlType::Q4K, 2, 100, Arc::new(vec![0u8; 10])).unwrap_err();
        assert!(e.contains("not whole Q4_K blocks"), "{e}");
        let e = QuantMatrix::new(GgmlType::Q8_0, 2, 32, Arc::new(vec![0u8; 10])).unwrap_err();
        assert!(e.contains("68 expected"), "{e}");
    }
}
