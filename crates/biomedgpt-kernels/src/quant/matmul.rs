//! Products with weights kept in their GGML blocks (a GGUF file's bytes, used in place):
//! `y = x W^T + b` for `W` `[out, in]` stored row by row in blocks along `in`.
//!
//! - Decoding (up to [`crate::matmul::decode_rows`] rows of `x`): every row of `x` is quantized
//!   once to 8 bits and dotted with each weight row in integers ([`super::int8`], the AVX2 kernels
//!   in `x86.rs`), as llama.cpp does. Each result is the scalar reference's, bit for bit, at
//!   every instruction-set level and whatever the number of rows. The k-quants' decoding
//!   arithmetic is the panels' (below), so their larger decoding batches take the panels.
//! - Prompts (more rows): the activations are quantized the same way, and panels of 16 weight
//!   rows interleaved per call run integer products ([`super::panel`], AVX2 and up). Each row's
//!   result is the panels' scalar reference, bit for bit, whatever the rows beside it. At the
//!   scalar level (and for Q8_0 without AVX-512 VNNI) tiles of weight rows are dequantized into
//!   cache and multiplied by the f32 GEMM kernels, with `x` in f32.
//! - Matrices marked [`QuantMatrix::with_f32_activations`] (the encoders') take the tiles for
//!   every row count.
//!
//! Either way each weight byte is read once per call from the memory-mapped file.

use std::sync::Arc;

use burn::tensor::{DType, Tensor, TensorData};

use super::int8::{ActivationBlocks, QuantizedRow, quantize_row};
use super::{GgmlType, dequantize};
use crate::parallel::{Shared, balanced_rows_per_piece, share_pieces};

/// A weight matrix in a GGML block type: `rows` output features of `cols` inputs each.
#[derive(Clone)]
pub struct QuantMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    data: Arc<dyn AsRef<[u8]> + Send + Sync>,
    /// Every product multiplies f32 activations with dequantized tiles, whatever the row count
    /// ([`Self::with_f32_activations`]).
    f32_activations: bool,
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
        Ok(QuantMatrix { ty, rows, cols, data, f32_activations: false })
    }

    /// The same matrix computed on f32 activations (dequantized tiles and the f32 GEMM) for any
    /// number of rows: for encoders, whose parity is to the f32 reference model (ESM-2 with Q8_0
    /// projections); 8-bit activations are the decoders' trade, as in llama.cpp.
    pub fn with_f32_activations(mut self) -> Self {
        self.f32_activations = true;
        self
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

/// From this many rows of `x` on, the product runs on panels (or dequantized tiles).
/// Below it every row is computed alone, in the same order whatever the row count: the same
/// limit as the float decoding kernels' ([`crate::matmul::matvec::MAX_ROWS`]), so a batched
/// decoding step of up to that many sequences gives each the numbers it gets alone.
const PROMPT_ROWS: usize = crate::matmul::matvec::MAX_ROWS + 1;

/// `x [m, cols] W^T (+ bias) -> [m, rows]`, computed in f32 and returned in `x`'s dtype.
pub fn matmul(x: Tensor<2>, w: &QuantMatrix, bias: Option<Tensor<1>>) -> Tensor<2> {
    let [m, k] = x.dims();
    assert_eq!(k, w.cols, "quantized matmul: x has {k} columns, the weight {}", w.cols);
    let device = x.device();
    let dtype = x.dtype();
    // Plain CPU tensors are read in place (f32) or widened with vector instructions; others
    // through Burn's cast.
    let xs: crate::flex::RowsF32 = match crate::flex::rows_f32(&x) {
        Some(rows) => rows,
        None => crate::flex::RowsF32::Widened(x.cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 data")),
    };
    let n = w.rows;
    let bias_values: Option<Vec<f32>> = bias.map(|b| b.cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 data"));
    // Inside `matmul::prompt` every row count takes the prompt kernels' numbers: the panels (or
    // the dequantized tiles), except where the row kernels give the same bits (the k-quants where
    // panels exist) and are faster for a few rows.
    let rows_as_panels = || super::int8::same_on_panels(w.ty) && !w.f32_activations && super::panel::kernel(w.ty).is_some();
    let prompt = m >= PROMPT_ROWS.max(crate::matmul::decode_rows() + 1) || (crate::matmul::in_prompt() && !rows_as_panels());
    // Decoding rows of the k-quants go through panels too from `panel_decoding_rows` on: same
    // arithmetic, same bits (int8.rs), and fewer instructions per row once the panels' filling
    // is shared by enough rows.
    let panel_rows = prompt || (super::int8::same_on_panels(w.ty) && m >= panel_decoding_rows(w.ty));
    let panels = if panel_rows && !w.f32_activations { super::panel::kernel(w.ty) } else { None };
    if let Some(kernel) = panels {
        // Prompts (and large k-quant decoding batches) in integers on interleaved weight rows.
        let y = super::panel::matmul(kernel, w.ty, w.bytes(), n, k, &xs, m);
        return output(y, bias_values.as_deref(), m, n, dtype, &device);
    }
    if prompt || w.f32_activations {
        // Prompts: tiles of output rows dequantized into cache, multiplied by the f32 gemm
        // kernels (the weights are read once per call; the arithmetic is the GEMM's).
        let row_bytes = w.row_bytes();
        let bytes = w.bytes();
        let y = crate::matmul::gemm::matmul_filled_tiles(&xs, m, k, n, bias_values.as_deref(), |first, tile| {
            let rows = tile.len() / k;
            dequantize(w.ty, &bytes[first * row_bytes..(first + rows) * row_bytes], tile);
        });
        return output(y, None, m, n, dtype, &device);
    }
    let y = row_products(w, &xs, m);
    output(y, bias_values.as_deref(), m, n, dtype, &device)
}

/// From how many decoding rows on the k-quants' products take the panels: where the panels'
/// filling, paid once per product, costs less than the row kernels' per-row work. Measured on
/// the 2-core Zen 5 VM with the weights read from memory as in a whole model's step
/// (`decoding_speed`: TinyLlama's 5632 x 2048 in 12 copies used in turn, ms per row, row
/// kernels / panels, 2 runs): Q4_K 0.069-0.074 / 0.084 at 8 rows, 0.071-0.085 / 0.061-0.070
/// at 12; Q5_K 0.072-0.075 / 0.066-0.070 at 12; Q6_K 0.070-0.075 / 0.082-0.087 at 12,
/// 0.069-0.070 / 0.063-0.065 at 16, 0.067-0.070 / 0.050-0.051 at 24. Q2_K and Q3_K have no
/// vector row kernels: panels from one row. (Either path gives the same bits: speed only.)
fn panel_decoding_rows(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4K | GgmlType::Q5K => 12,
        GgmlType::Q6K => 16,
        GgmlType::Q2K | GgmlType::Q3K => 1,
        _ => usize::MAX,
    }
}

/// `x [m, k] W^T` for decoding rows: each row of x quantized once to 8 bits (int8.rs), then
/// the integer row kernels, `[m, n]` f32.
fn row_products(w: &QuantMatrix, xs: &[f32], m: usize) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    let blocks = ActivationBlocks::for_weights(w.ty).expect("QuantMatrix::new admits only types with an integer product");
    let acts: Vec<QuantizedRow> = xs.chunks_exact(k).map(|x| quantize_row(blocks, x)).collect();
    let dot = row_dot(w.ty);
    let mut y = vec![0f32; m * n];
    let out = Shared(y.as_mut_ptr());
    let row_bytes = w.row_bytes();
    let bytes = w.bytes();
    let threads = if m * n * k < 1 << 16 { 1 } else { rayon::current_num_threads() };
    let rows_per_piece = balanced_rows_per_piece(n, row_bytes, threads);
    let pieces = n.div_ceil(rows_per_piece);
    // Tiles of weight rows times groups of activation rows, so that both stay in cache while a
    // tile's products are computed; each tile's outputs gathered [TILE, m] and then stored as
    // runs of TILE columns of `y`.
    const TILE: usize = 16;
    let group = crate::quant::int8::ROW_GROUP;
    share_pieces(pieces, threads, |piece, tile_out: &mut Vec<f32>| {
        let (first, end) = (piece * rows_per_piece, ((piece + 1) * rows_per_piece).min(n));
        tile_out.resize(TILE * m, 0.0);
        for tile in (first..end).step_by(TILE) {
            let rows = (tile + TILE).min(end) - tile;
            for a in (0..m).step_by(group) {
                let xs = &acts[a..(a + group).min(m)];
                for r in 0..rows {
                    let j = tile + r;
                    let row = &bytes[j * row_bytes..(j + 1) * row_bytes];
                    dot.call(w.ty, row, xs, &mut tile_out[r * m + a..r * m + a + xs.len()]);
                }
            }
            for i in 0..m {
                // SAFETY: columns tile..tile + rows of `y` belong to this piece only.
                let y = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(i * n + tile), rows) };
                y.iter_mut().enumerate().for_each(|(r, v)| *v = tile_out[r * m + i]);
            }
        }
    });
    y
}

/// `y [m, n]` (f32) plus `bias` (one value per column) as a tensor of `dtype`: 16-bit types
/// narrowed with vector instructions.
fn output(mut y: Vec<f32>, bias: Option<&[f32]>, m: usize, n: usize, dtype: DType, device: &burn::tensor::Device) -> Tensor<2> {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => crate::flex::to_tensor(y, m, n, dtype, device),
        other => Tensor::<2>::from_data(TensorData::new(y, [m, n]), (device, DType::F32)).cast(other),
    }
}

/// The integer row products for a weight type at the current instruction-set level (private:
/// a `Vector` kernel may only be called on the CPU [`row_dot`] chose it for).
#[derive(Clone, Copy)]
enum RowDot {
    /// The scalar reference ([`super::int8::dot_reference`]).
    Reference,
    /// A vector kernel (one weight row with any number of activation rows, each computed as
    /// alone); calling it needs the level it was chosen for.
    Vector(RowsKernel),
}

/// `out[i] = row · xs[i]`: one weight row's bytes, quantized activation rows.
type RowsKernel = unsafe fn(&[u8], &[QuantizedRow], &mut [f32]);

impl RowDot {
    /// `out[i] = row · xs[i]` (the weight row's bytes, the quantized activations).
    #[inline]
    fn call(self, ty: GgmlType, row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        match self {
            RowDot::Reference => xs.iter().zip(out).for_each(|(x, y)| *y = super::int8::dot_reference(ty, row, x)),
            // SAFETY: `row_dot` chose the kernel for a level this CPU supports.
            RowDot::Vector(f) => unsafe { f(row, xs, out) },
        }
    }
}

/// The kernel [`matmul`] dots `ty`'s rows with at [`crate::isa::current`]'s level.
fn row_dot(ty: GgmlType) -> RowDot {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::isa::{Isa, current};
        let wide = if current() >= Isa::Avx512 && avx512bw() { avx512_rows(ty) } else { None };
        if let Some(kernel) = wide.or_else(|| if current() >= Isa::Avx2 { avx2_rows(ty) } else { None }) {
            return RowDot::Vector(kernel);
        }
    }
    let _ = ty; // only the x86 kernels look at it
    RowDot::Reference
}

/// Whether the CPU has AVX-512BW (next to the AVX-512 level, which asks for AVX-512F only).
#[cfg(target_arch = "x86_64")]
fn avx512bw() -> bool {
    std::arch::is_x86_feature_detected!("avx512bw")
}

/// The AVX-512BW kernel for `ty`'s rows, where there is one (the others take AVX2's).
#[cfg(target_arch = "x86_64")]
fn avx512_rows(ty: GgmlType) -> Option<RowsKernel> {
    use super::x86::avx512;
    // The legacy types' kernels take `vpdpbusd` (AVX-512 VNNI).
    let vnni = super::panel::vnni();
    match ty {
        GgmlType::Q4K => Some(avx512::rows_q4_k),
        GgmlType::Q5K => Some(avx512::rows_q5_k),
        GgmlType::Q6K => Some(avx512::rows_q6_k),
        GgmlType::Q8_0 if vnni => Some(avx512::rows_q8_0),
        GgmlType::Q4_0 if vnni => Some(avx512::rows_q4_0),
        GgmlType::Q4_1 if vnni => Some(avx512::rows_q4_1),
        GgmlType::Q5_0 if vnni => Some(avx512::rows_q5_0),
        GgmlType::Q5_1 if vnni => Some(avx512::rows_q5_1),
        _ => None,
    }
}

/// The AVX2 kernel for `ty`'s rows, where there is one.
#[cfg(target_arch = "x86_64")]
fn avx2_rows(ty: GgmlType) -> Option<RowsKernel> {
    use super::x86;
    match ty {
        GgmlType::Q8_0 => Some(x86::rows_q8_0),
        GgmlType::Q4_0 => Some(x86::rows_q4_0),
        GgmlType::Q4_1 => Some(x86::rows_q4_1),
        GgmlType::Q5_0 => Some(x86::rows_q5_0),
        GgmlType::Q5_1 => Some(x86::rows_q5_1),
        GgmlType::Q4K => Some(x86::rows_q4_k),
        GgmlType::Q5K => Some(x86::rows_q5_k),
        GgmlType::Q6K => Some(x86::rows_q6_k),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;
    use burn::tensor::Device;

    /// Random weight bytes of `ty` with small f16 scales (the types without a quantizer here).
    fn random_blocks(ty: GgmlType, rows: usize, k: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; ty.row_bytes(k).unwrap() * rows];
        let mut s = 7u64;
        for b in bytes.iter_mut() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (s >> 56) as u8;
        }
        let scale_at: &[usize] = match ty {
            GgmlType::Q2K => &[80, 82],
            GgmlType::Q3K => &[108],
            _ => unreachable!(),
        };
        for block in bytes.chunks_exact_mut(ty.block().1) {
            for &at in scale_at {
                block[at..at + 2].copy_from_slice(&half::f16::from_f32(0.003).to_bits().to_le_bytes());
            }
        }
        bytes
    }

    /// Decoding rows (1-8) equal the integer reference bit for bit (the kernels' i32 sums and
    /// scaling are exact copies of it), prompts (9+ rows) the panels' reference where the level
    /// has a panel kernel (for the k-quants, at every row count, the decoding reference too), and
    /// both stay within the activations' 8-bit rounding of the dequantized f32 product; prompts
    /// on dequantized tiles equal that product.
    #[test]
    fn decoding_equals_the_integer_reference_and_prompts_the_dequantized_product() {
        let (n, k) = (37, 2304); // 9 k-quant blocks and 72 legacy ones: partial groups of 8
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let types = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];
        for ty in types {
            let q = if crate::quant::QUANTIZABLE.contains(&ty) {
                let mut q = vec![0u8; ty.row_bytes(k).unwrap() * n];
                quantize(ty, &w, &mut q);
                q
            } else {
                random_blocks(ty, n, k)
            };
            let matrix = QuantMatrix::new(ty, n, k, Arc::new(q)).unwrap();
            let dense = matrix.dequantize();
            let row_bytes = matrix.row_bytes();
            for m in [1, 5, 8, 9, 19] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4 + (i % 7) as f32 * 0.01).collect();
                let device = Device::flex();
                let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), (&device, DType::F32));
                let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
                let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [n]), (&device, DType::F32));
                let y = matmul(xt, &matrix, Some(bt)).into_data().try_to_vec::<f32>().unwrap();
                let blocks = ActivationBlocks::for_weights(ty).unwrap();
                let panel_reference = if crate::quant::panel::sub_len(ty).is_some() { crate::quant::panel::reference_product(ty, matrix.bytes(), n, k, &x, m) } else { Vec::new() };
                for i in 0..m {
                    let xq = quantize_row(blocks, &x[i * k..(i + 1) * k]);
                    for j in 0..n {
                        let got = y[i * n + j];
                        let terms = (0..k).map(|c| x[i * k + c] as f64 * dense[j * k + c] as f64);
                        let want = terms.clone().sum::<f64>() + bias[j] as f64;
                        let scale = terms.map(f64::abs).sum::<f64>();
                        let integers = m <= crate::matmul::matvec::MAX_ROWS || crate::quant::panel::kernel(ty).is_some();
                        if super::super::int8::same_on_panels(ty) && integers {
                            // The k-quants: one arithmetic for decoding rows and prompts (in
                            // integers; the scalar level's prompts take the f32 tiles).
                            let decoding = super::super::int8::dot_reference(ty, &matrix.bytes()[j * row_bytes..(j + 1) * row_bytes], &xq) + bias[j];
                            assert_eq!(got.to_bits(), decoding.to_bits(), "{ty} m {m} ({i},{j}) under {}: {got} vs {decoding}", crate::isa::current());
                        }
                        let panels = m > crate::matmul::matvec::MAX_ROWS && crate::quant::panel::kernel(ty).is_some();
                        if m <= crate::matmul::matvec::MAX_ROWS || panels {
                            let reference = if panels {
                                panel_reference[i * n + j] + bias[j]
                            } else {
                                super::super::int8::dot_reference(ty, &matrix.bytes()[j * row_bytes..(j + 1) * row_bytes], &xq) + bias[j]
                            };
                            assert_eq!(got.to_bits(), reference.to_bits(), "{ty} m {m} ({i},{j}) under {}: {got} vs {reference}", crate::isa::current());
                            // 8-bit activations: each value within half a step of x (0.6 steps
                            // for Q8_0, whose step is rounded to f16), plus f32 scaling.
                            let len = blocks.block_len();
                            let step: f64 = (0..k).map(|c| dense[j * k + c].abs() as f64 * 0.6 * xq.d[c / len].abs() as f64).sum();
                            assert!((got as f64 - want).abs() <= step + 1e-5 * scale, "{ty} ({i},{j}): {got} vs {want} (bound {step})");
                        } else {
                            assert!((got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()), "{ty} m {m} ({i},{j}): {got} vs {want}");
                        }
                    }
                }
            }
            assert_eq!(rows(&matrix, &[3])[..], dense[3 * k..4 * k]);
        }
    }

    /// Every vector kernel this CPU can run equals the scalar reference, whatever level the
    /// process was started with (the dispatched one is also checked above under each level).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_kernels_equal_the_reference_bit_for_bit() {
        if !crate::isa::Isa::Avx2.supported() {
            return;
        }
        let types = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];
        let mut kernels: Vec<(GgmlType, RowsKernel)> = types.iter().map(|&ty| (ty, avx2_rows(ty).expect("an AVX2 kernel"))).collect();
        if avx512bw() {
            kernels.extend(types.iter().filter_map(|&ty| Some((ty, avx512_rows(ty)?))));
        }
        for (ty, kernel) in kernels {
            // 1 to 17 blocks (k-quants) / 8 to 137 (legacy, odd counts too): every tail of a
            // group of 8, of 32 blocks and of a pair.
            for blocks in 1..=17 {
                let k = if ty.block().0 == 32 { (8 * blocks + blocks % 2) * 32 } else { blocks * 256 };
                let w: Vec<f32> = (0..k).map(|i| (((i * 7919 + blocks) % 1013) as f32 / 1013.0 - 0.5) * (1.0 + (i / 256) as f32)).collect();
                let mut q = vec![0u8; ty.row_bytes(k).unwrap()];
                quantize(ty, &w, &mut q);
                // 1 to 2 groups of activation rows and every partial group.
                let xs: Vec<QuantizedRow> = (0..2 * super::super::int8::ROW_GROUP + 1)
                    .map(|seed| {
                        let x: Vec<f32> = (0..k).map(|i| ((i * 31 + seed * 97) % 257) as f32 / 257.0 - 0.5).collect();
                        quantize_row(ActivationBlocks::for_weights(ty).unwrap(), &x)
                    })
                    .collect();
                for rows in 1..=xs.len() {
                    let mut got = vec![0f32; rows];
                    // SAFETY: AVX2, FMA and F16C checked above, AVX-512BW where taken.
                    unsafe { kernel(&q, &xs[..rows], &mut got) };
                    for (i, (got, x)) in got.iter().zip(&xs).enumerate() {
                        let want = super::super::int8::dot_reference(ty, &q, x);
                        assert_eq!(got.to_bits(), want.to_bits(), "{ty}, {blocks} x 256 values, row {i} of {rows}: {got} vs {want}");
                    }
                }
            }
        }
    }

    /// `products(rows, from)`: activation rows `from..from + rows` (of 20) times a `ty` matrix of
    /// `n x k` made from fixed values, inside `within` (`decode_batch` or `prompt`), as f32.
    fn products_within(ty: GgmlType, n: usize, k: usize, within: fn(&dyn Fn() -> Tensor<2>) -> Tensor<2>) -> impl Fn(usize, usize) -> Vec<f32> {
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mut q = vec![0u8; ty.row_bytes(k).unwrap() * n];
        quantize(ty, &w, &mut q);
        let matrix = QuantMatrix::new(ty, n, k, Arc::new(q)).unwrap();
        let x: Vec<f32> = (0..20 * k).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4).collect();
        move |rows, from| {
            let xt = Tensor::<2>::from_data(TensorData::new(x[from * k..(from + rows) * k].to_vec(), [rows, k]), (&Device::flex(), DType::F32));
            within(&|| matmul(xt.clone(), &matrix, None)).into_data().try_to_vec::<f32>().unwrap()
        }
    }

    /// Inside `decode_batch` (a continuous-batching step), up to 64 rows go through the decoding
    /// kernels, each row bit for bit as alone.
    #[test]
    fn batched_decoding_rows_are_computed_as_alone() {
        let n = 33;
        for &ty in &[GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            let product = products_within(ty, n, 2048, |f| crate::matmul::decode_batch(f));
            let together = product(20, 0);
            for r in 0..20 {
                let alone = product(1, r);
                assert!(together[r * n..(r + 1) * n].iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty}: row {r}");
            }
        }
    }

    /// Inside `prompt` (a prompt's chunk), any number of rows goes through the prompt kernels:
    /// rows computed apart, one to eight at a time, equal those rows of a 20-row prompt.
    #[test]
    fn prompt_rows_apart_equal_the_whole_prompt() {
        let n = 33;
        for &ty in &[GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            let product = products_within(ty, n, 512, |f| crate::matmul::prompt(f));
            let whole = product(20, 0);
            for (from, rows) in [(0, 1), (19, 1), (3, 2), (5, 3), (8, 5), (12, 8)] {
                let part = product(rows, from);
                assert!(part.iter().zip(&whole[from * n..]).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty}: {rows} rows from {from}");
            }
        }
    }

    /// A matrix marked for f32 activations (the encoders') multiplies every row count with the
    /// dequantized weights in f32: the f64 product within f32 summation error.
    #[test]
    fn f32_activations_at_every_row_count() {
        let (n, k) = (21, 512);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4K] {
            let mut q = vec![0u8; ty.row_bytes(k).unwrap() * n];
            quantize(ty, &w, &mut q);
            let matrix = QuantMatrix::new(ty, n, k, Arc::new(q)).unwrap().with_f32_activations();
            let dense = matrix.dequantize();
            for m in [1, 3, 19] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4).collect();
                let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), (&Device::flex(), DType::F32));
                let y = matmul(xt, &matrix, None).into_data().try_to_vec::<f32>().unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|c| x[i * k + c] as f64 * dense[j * k + c] as f64).sum();
                        assert!((y[i * n + j] as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()), "{ty} m {m} ({i},{j}): {} vs {want}", y[i * n + j]);
                    }
                }
            }
        }
    }

    /// Decoding speed (`cargo test --release -p biomedgpt-kernels --lib decoding_speed --
    /// --ignored --nocapture`; `SHAPE=32000x2048`, `COPIES=1` for weights that stay in cache):
    /// a TinyLlama feed-forward matrix (5632 x 2048) times 1-64 rows,
    /// milliseconds per row (median of 7) through the row kernels and through panels (the
    /// k-quants' decoding takes the panels from [`panel_decoding_rows`] on).
    #[test]
    #[ignore]
    fn decoding_speed() {
        let shape: Vec<usize> = std::env::var("SHAPE").unwrap_or("5632x2048".into()).split('x').map(|v| v.parse().unwrap()).collect();
        let (n, k) = (shape[0], shape[1]);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        // Several copies of the matrix, used in turn, so that each product reads its weights from
        // memory as a whole model's decoding step does (one copy would stay in the last-level cache).
        let copies: usize = std::env::var("COPIES").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
        let turn = std::cell::Cell::new(0usize);
        let median = |f: &dyn Fn(usize)| {
            let mut times: Vec<f64> = (0..7)
                .map(|_| {
                    let c = turn.get();
                    turn.set((c + 1) % copies);
                    let start = std::time::Instant::now();
                    f(c);
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            times[3]
        };
        for ty in [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q5K, GgmlType::Q4_0, GgmlType::Q8_0] {
            let mut q = vec![0u8; ty.row_bytes(k).unwrap() * n];
            quantize(ty, &w, &mut q);
            let matrices: Vec<QuantMatrix> = (0..copies).map(|_| QuantMatrix::new(ty, n, k, Arc::new(q.clone())).unwrap()).collect();
            for m in [1, 2, 4, 6, 8, 12, 16, 24, 32, 64] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4).collect();
                let rows = median(&|c| {
                    std::hint::black_box(row_products(&matrices[c], &x, m));
                });
                let panels = super::super::panel::kernel(ty).map(|kernel| {
                    median(&|c| {
                        std::hint::black_box(super::super::panel::matmul(kernel, ty, matrices[c].bytes(), n, k, &x, m));
                    })
                });
                let panels = panels.map_or("-".to_string(), |t| format!("{:.4}", t / m as f64));
                println!("{ty} m {m:2}: rows {:.4} panels {panels} ms/row", rows / m as f64);
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

