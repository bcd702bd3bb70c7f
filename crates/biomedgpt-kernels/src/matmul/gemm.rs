//! Prompt-sized products `x [rows, in] · Wᵀ` with weights kept in PyTorch's `[out, in]` layout.
//!
//! Checkpoints in the dtype asked for are used straight from the memory-mapped file, in
//! PyTorch's layout (no copy, no re-layout at load), which is what the decoding kernels of
//! [`super::matvec`] read fastest. For more rows, Burn 0.22's CPU matmul on such a transposed
//! view re-packs its operands with scalar strided copies for every block (a quarter of a
//! TinyLlama prompt's time) and multiplies 16-bit types about a third slower than f32. Here the
//! weight is taken a tile of output rows at a time (16-bit tiles widened to f32 in cache, f32
//! tiles read in place), and the `gemm` crate's f32 kernels, which Burn uses too, run on operands
//! already in the layout they read: `x` and each result tile column-major, the tile's rows as
//! contiguous columns. f32 arithmetic throughout, as torch does on CPU for 16-bit types.

use rayon::prelude::*;

use crate::element::{Element, ElementKind, widen};
use crate::transpose::{transpose_into, transpose_into_uninit};

/// Output rows per tile when each thread widens its own: 48 x 4096 f32 is 768 KiB, within a
/// core's L2 cache here. gemm re-packs `x` for tiles wider than 48 on one thread (16 lanes x 6
/// columns x 8), a copy it does not need here.
const TILE: usize = 48;

/// From this many rows on, one thread's tile would re-read all of `x` from memory for every 48
/// outputs: 16-bit weights are widened in tiles of [`BIG_TILE`] outputs by both threads, and
/// gemm blocks the product itself (measured 1024 x 2560 x 10240: 145 -> 270-290 GFLOP/s).
const BIG_ROWS: usize = 256;
const BIG_TILE: usize = 1024;

/// gemm reads `x` in place only with whole 16-lane columns: rows are padded to a multiple.
const LANES: usize = 16;

/// `y [rows, out] = x [rows, in] · Wᵀ (+ bias)` for `W [out, in]`.
pub fn matmul_tiles<T: Element>(x: &[f32], rows: usize, w: &[T], d_in: usize, d_out: usize, bias: Option<&[f32]>) -> Vec<f32> {
    assert!(w.len() >= d_in * d_out, "weight holds {} values, expected {d_out} x {d_in}", w.len());
    let w = &w[..d_in * d_out];
    with_column_operands(x, rows, d_in, d_out, bias, |xt, padded, yt| {
        if T::KIND == ElementKind::F32 {
            // The weight as it is: gemm blocks and threads the whole product.
            let mut unused = Vec::new();
            let w = T::as_f32_tile(w, &mut unused);
            gemm_columns(xt, padded, d_in, w, yt, gemm::Parallelism::Rayon(0));
        } else if padded >= BIG_ROWS {
            let mut wide = Vec::new();
            for (w, yt) in w.chunks(BIG_TILE * d_in).zip(yt.chunks_mut(BIG_TILE * padded)) {
                wide.resize(w.len(), 0.0);
                wide.par_chunks_mut(1 << 14).zip(w.par_chunks(1 << 14)).for_each(|(dst, src)| widen(src, dst));
                gemm_columns(xt, padded, d_in, &wide, yt, gemm::Parallelism::Rayon(0));
            }
        } else {
            w.par_chunks(TILE * d_in).zip(yt.par_chunks_mut(TILE * padded)).for_each_init(Vec::new, |wide, (w, yt)| {
                let tile = T::as_f32_tile(w, wide);
                gemm_columns(xt, padded, d_in, tile, yt, gemm::Parallelism::None);
            });
        }
    })
}

/// `y [rows, out] = x [rows, in] · Wᵀ (+ bias)` for a weight that `fill(first_row, tile)` writes
/// into f32 a tile of output rows at a time (`tile` holds `TILE x d_in` values, fewer for the
/// last): block-quantized weights are dequantized a tile at a time into cache this way, and the
/// f32 gemm kernels multiply, as for 16-bit weights.
pub fn matmul_filled_tiles(x: &[f32], rows: usize, d_in: usize, d_out: usize, bias: Option<&[f32]>, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    with_column_operands(x, rows, d_in, d_out, bias, |xt, padded, yt| {
        yt.par_chunks_mut(TILE * padded).enumerate().for_each_init(Vec::new, |tile, (t, yt)| {
            let n = yt.len() / padded;
            tile.resize(n * d_in, 0.0);
            fill(t * TILE, tile);
            gemm_columns(xt, padded, d_in, tile, yt, gemm::Parallelism::None);
        });
    })
}

/// The layout both prompt products work in: `x` column-major with its rows padded to whole gemm
/// columns (zeros in the padding), `product(xt, padded, yt)` writing the result column-major
/// (output j's rows at `yt[j * padded..][..rows]`, all of `yt` overwritten), then the result
/// transposed back to `[rows, d_out]` with the bias added.
fn with_column_operands(x: &[f32], rows: usize, d_in: usize, d_out: usize, bias: Option<&[f32]>, product: impl FnOnce(&[f32], usize, &mut [f32])) -> Vec<f32> {
    assert_eq!(x.len(), rows * d_in, "x holds {} values, expected {rows} x {d_in}", x.len());
    let padded = rows.div_ceil(LANES) * LANES;
    with_scratch(padded * d_in.max(d_out), |scratch| {
        let Scratch { xt, yt } = scratch;
        xt.resize(d_in * padded, 0.0);
        transpose_into(x, rows, d_in, d_in, xt, padded);
        if padded > rows {
            xt.chunks_exact_mut(padded).for_each(|column| column[rows..].fill(0.0));
        }
        yt.resize(padded * d_out, 0.0);
        product(xt, padded, yt);
        let mut y = Vec::with_capacity(rows * d_out);
        transpose_into_uninit(yt, d_out, padded, rows, y.spare_capacity_mut(), d_out, bias);
        // SAFETY: the transpose wrote all rows x d_out values.
        unsafe { y.set_len(rows * d_out) };
        y
    })
}

/// Column-major operands, kept between calls: a prompt's products reuse them instead of
/// allocating (and the kernel zeroing) tens of megabytes per matrix.
#[derive(Default)]
struct Scratch {
    xt: Vec<f32>,
    yt: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Buffers above this many values each are not kept (a large batch of long sequences).
const SCRATCH_KEPT: usize = 16 << 20;

/// `f` with this thread's scratch buffers for up to `values` values each, or fresh ones if they
/// are in use (a product started from a rayon task that this thread runs while it waits for its
/// own product) or larger than [`SCRATCH_KEPT`].
fn with_scratch<R>(values: usize, f: impl FnOnce(&mut Scratch) -> R) -> R {
    if values > SCRATCH_KEPT {
        return f(&mut Scratch::default());
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// `yt = xt · tileᵀ` column-major: `xt` holds `[padded, d_in]` column-major, `tile` `n` rows of
/// `W [out, in]` and `yt` `[padded, n]` column-major (`n = tile.len() / d_in`).
fn gemm_columns(xt: &[f32], padded: usize, d_in: usize, tile: &[f32], yt: &mut [f32], threads: gemm::Parallelism) {
    let n = tile.len() / d_in;
    gemm_column_major(padded, n, d_in, yt, xt, padded, tile, d_in, threads);
}

/// `dst = lhs · rhs` in the layout gemm's kernels read without re-packing: `dst [m, n]`
/// column-major (`dst[i + j m]`), `lhs [m, k]` column-major with leading dimension `ld_lhs`
/// (`lhs[i + p ld_lhs]`) and `rhs [k, n]` with contiguous columns (`rhs[p + j ld_rhs]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_column_major(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: &[f32], ld_lhs: usize, rhs: &[f32], ld_rhs: usize, threads: gemm::Parallelism) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n, "gemm destination holds {} values, expected {m} x {n}", dst.len());
    assert!(k == 0 || (ld_lhs >= m && lhs.len() >= (k - 1) * ld_lhs + m), "gemm lhs too small");
    assert!(k == 0 || (ld_rhs >= k && rhs.len() >= (n - 1) * ld_rhs + k), "gemm rhs too small");
    if k == 0 {
        dst[..m * n].fill(0.0);
        return;
    }
    // The inner dimension in pieces of `DEPTH_BLOCK` from 0, each product added to the last:
    // gemm blocks it itself with a depth that depends on `m` and `n` (512 for products of at
    // most 64 x 64, else `k` split evenly: 288 + 288 for 576), and every block boundary is a
    // rounding. In fixed pieces a row of the result is the same number whatever rows are
    // computed beside it, which the server's prefix cache needs (a prompt computed in two
    // chunks equals it computed whole). Within a piece gemm accumulates each result in order.
    for depth in (0..k).step_by(DEPTH_BLOCK) {
        let kb = DEPTH_BLOCK.min(k - depth);
        if m == 1 || n == 1 || kb <= 2 {
            // gemm hands these shapes to other kernels (outer products for depths of 1 or 2,
            // matrix-vector kernels for one row or column), whose sums round otherwise than its
            // blocked kernel's, so that a row would change with the rows beside it (a prompt's
            // first chunk of two positions has two keys). Its blocked kernel's arithmetic here:
            // each result summed in order with fused multiply-adds from zero, then added to the
            // earlier pieces' (`blocked_arithmetic_for_degenerate_shapes` checks they agree).
            for j in 0..n {
                for i in 0..m {
                    let acc = (0..kb).fold(0f32, |acc, p| lhs[i + (depth + p) * ld_lhs].mul_add(rhs[depth + p + j * ld_rhs], acc));
                    let d = &mut dst[i + j * m];
                    *d = if depth > 0 { *d + acc } else { acc };
                }
            }
            continue;
        }
        // SAFETY: every element gemm reads or writes is inside the three slices (asserted above;
        // the piece starts `depth` columns into lhs and `depth` values into each rhs column).
        unsafe {
            gemm::gemm(
                m, n, kb,
                dst.as_mut_ptr(), m as isize, 1, depth > 0,
                lhs.as_ptr().add(depth * ld_lhs), ld_lhs as isize, 1,
                rhs.as_ptr().add(depth), ld_rhs as isize, 1,
                1.0, 1.0, false, false, false,
                threads,
            );
        }
    }
}

/// The depth of one gemm call in [`gemm_column_major`]: gemm's own block for small products,
/// and within every CPU's L1-derived block, so gemm runs each piece as one block.
const DEPTH_BLOCK: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{bf16, f16};

    fn check<T: Element>(convert: fn(f32) -> T) {
        // Sizes around the tile widths, ragged last tiles, rows not a multiple of 16, and enough
        // rows for the big tiles.
        for &(rows, d_in, d_out) in &[(9, 40, 3), (16, 64, 300), (33, 130, TILE * 2 + 17), (BIG_ROWS + 3, 70, BIG_TILE + 5)] {
            let x: Vec<f32> = (0..rows * d_in).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let w: Vec<T> = (0..d_out * d_in).map(|i| convert(((i * 53 % 97) as f32 / 48.0) - 1.0)).collect();
            let bias: Vec<f32> = (0..d_out).map(|j| j as f32 / 7.0).collect();
            let y = matmul_tiles(&x, rows, &w, d_in, d_out, Some(&bias));
            for r in 0..rows {
                for j in 0..d_out {
                    let want: f64 = bias[j] as f64 + (0..d_in).map(|i| x[r * d_in + i] as f64 * w[j * d_in + i].to_f32() as f64).sum::<f64>();
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

    /// The shapes gemm takes to other kernels (one row, one column, depths of 1 or 2 in a piece)
    /// give the numbers its blocked kernel gives those rows and columns inside a larger product.
    #[test]
    fn blocked_arithmetic_for_degenerate_shapes() {
        let (m, n) = (37, 21);
        for k in [1usize, 2, 3, 64, 513, 514, 1026] {
            let lhs: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let rhs: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0).collect();
            // The whole product, then row 5 alone, column 7 alone, and both.
            let mut whole = vec![0f32; m * n];
            gemm_column_major(m, n, k, &mut whole, &lhs, m, &rhs, k, gemm::Parallelism::None);
            let row: Vec<f32> = (0..k).map(|p| lhs[5 + p * m]).collect();
            let col = &rhs[7 * k..8 * k];
            let mut one_row = vec![0f32; n];
            gemm_column_major(1, n, k, &mut one_row, &row, 1, &rhs, k, gemm::Parallelism::None);
            let mut one_col = vec![0f32; m];
            gemm_column_major(m, 1, k, &mut one_col, &lhs, m, col, k, gemm::Parallelism::None);
            let mut one = [0f32];
            gemm_column_major(1, 1, k, &mut one, &row, 1, col, k, gemm::Parallelism::None);
            for j in 0..n {
                assert_eq!(one_row[j].to_bits(), whole[5 + j * m].to_bits(), "k {k}: row 5, column {j}");
            }
            for i in 0..m {
                assert_eq!(one_col[i].to_bits(), whole[i + 7 * m].to_bits(), "k {k}: row {i}, column 7");
            }
            assert_eq!(one[0].to_bits(), whole[5 + 7 * m].to_bits(), "k {k}: row 5, column 7");
        }
    }

    /// Each row of a product is the same number whatever rows are computed beside it (the
    /// prefix cache's premise): depths that are not a multiple of gemm's block (576, 768) once
    /// rounded differently for products of at most 64 rows than for larger ones.
    #[test]
    fn rows_do_not_depend_on_the_rows_beside_them() {
        for &k in &[64usize, 576, 768, 1536] {
            for &n in &[17usize, 48, 200] {
                let big = 160;
                let x: Vec<f32> = (0..big * k).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
                let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0).collect();
                let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                let filled = |x: &[f32], m: usize| matmul_filled_tiles(x, m, k, n, None, |first, tile| tile.copy_from_slice(&w[first * k..][..tile.len()]));
                let full = [matmul_tiles(&x, big, &w, k, n, None), matmul_tiles(&x, big, &w16, k, n, None), filled(&x, big)];
                for &(start, m) in &[(3usize, 1usize), (10, 2), (0, 5), (20, 8), (0, 9), (0, 16), (5, 33), (0, 64), (7, 65), (60, 100)] {
                    let x = &x[start * k..(start + m) * k];
                    let parts = [matmul_tiles(x, m, &w, k, n, None), matmul_tiles(x, m, &w16, k, n, None), filled(x, m)];
                    for (path, (part, full)) in parts.iter().zip(&full).enumerate() {
                        for (i, (a, b)) in part.iter().zip(&full[start * n..]).enumerate() {
                            assert_eq!(a.to_bits(), b.to_bits(), "path {path}, k {k}, n {n}: row {} of {m} from {start}", i / n);
                        }
                    }
                }
            }
        }
    }
}
