//! Matrix-vector products for decoding on the CPU backend.
//!
//! Generating one token multiplies a handful of rows (one per sequence or beam) by every weight
//! matrix: the time is reading the weights from memory. Burn 0.22's CPU backend reaches about a
//! third of this machine's read bandwidth on these shapes; the kernels here stream each weight
//! once with AVX-512 (or AVX2 + F16C) loads, widening f16/bf16 to f32 in registers and
//! accumulating in f32, the way torch and llama.cpp do on CPU.
//!
//! [`try_matmul`] takes this path only for plain (non-autodiff) tensors on Burn's CPU backend,
//! with at most [`MAX_ROWS`] rows, one dtype for both operands and a weight laid out as a
//! contiguous `[in, out]` matrix or a transposed view of a contiguous `[out, in]` one (PyTorch's
//! `nn.Linear` storage); anything else returns `None` and the caller uses Burn's matmul.


use rayon::prelude::*;
use std::ops::Range;

use crate::element::{Element, WeightLayout};
use crate::isa::{self, Isa};
use crate::parallel::{Shared, rows_per_piece, share_pieces};

/// Above this many rows, Burn's matrix-matrix kernels are the better choice.
pub const MAX_ROWS: usize = 8;

/// `y [rows, out] = x [rows, in] · W`, with `W` stored as `layout` says, f32 accumulation,
/// split over the rayon thread pool: output-major weights in pieces of output rows the threads
/// take in turn ([`share_pieces`]), input-major ones in one contiguous range of input rows per
/// thread, whose partial sums are then added.
pub fn matvec<T: Element>(x: &[f32], rows: usize, w: &[T], layout: WeightLayout, d_in: usize, d_out: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * d_in, "x holds {} values, expected {rows} x {d_in}", x.len());
    assert!(w.len() >= d_in * d_out, "weight holds {} values, expected {d_in} x {d_out}", w.len());
    let split = match layout {
        WeightLayout::OutputMajor => d_out,
        WeightLayout::InputMajor => d_in,
    };
    // Below ~256 KiB of weights per part, waking another thread costs more than it saves.
    let min_part = ((256 << 10) / (std::mem::size_of::<T>() * (d_in * d_out / split).max(1))).max(16);
    let parts = rayon::current_num_threads().clamp(1, split.div_ceil(min_part).max(1));
    if layout == WeightLayout::OutputMajor {
        return matvec_pieces(x, rows, w, d_in, d_out, parts);
    }
    let part = split.div_ceil(parts).next_multiple_of(16);
    let mut partials = (0..split)
        .step_by(part)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            let mut y = vec![0f32; rows * d_out];
            rows_through_blocks(x, rows, w, layout, d_in, d_out, start..(start + part).min(split), 0..d_out, &mut y);
            y
        })
        .collect::<Vec<_>>()
        .into_iter();
    let mut y = partials.next().expect("at least one part");
    for partial in partials {
        y.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
    }
    y
}

/// [`matvec`] for PyTorch's `[out, in]` layout on up to `threads` threads: the outputs in pieces
/// of about 512 KiB of weights that the threads take in turn (see [`share_pieces`]). Each output
/// is summed by one kernel call in the same order however the outputs are split.
fn matvec_pieces<T: Element>(x: &[f32], rows: usize, w: &[T], d_in: usize, d_out: usize, threads: usize) -> Vec<f32> {
    let piece = rows_per_piece(std::mem::size_of::<T>() * d_in);
    let starts: Vec<usize> = (0..d_out).step_by(piece).collect();
    let mut y = vec![0f32; rows * d_out];
    let out = Shared(y.as_mut_ptr());
    share_pieces(starts.len(), threads, |i, part: &mut Vec<f32>| {
        let cols = starts[i]..(starts[i] + piece).min(d_out);
        let width = cols.len();
        part.clear();
        part.resize(rows * width, 0.0);
        rows_through_blocks(x, rows, w, WeightLayout::OutputMajor, d_in, d_out, 0..d_in, cols.clone(), part);
        for r in 0..rows {
            // SAFETY: row r's columns `cols` of y: inside it (rows x d_out) and written by this
            // piece only (the pieces are disjoint, each taken once).
            let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(r * d_out + cols.start), width) };
            dst.copy_from_slice(&part[r * width..(r + 1) * width]);
        }
    });
    y
}

/// `y [rows, cols.len()] += x [rows, d_in] · W` over the inputs `ins` on the calling thread, `W`
/// stored as `layout` says, in groups of the rows the kernels hold in registers.
#[allow(clippy::too_many_arguments)]
fn rows_through_blocks<T: Element>(x: &[f32], rows: usize, w: &[T], layout: WeightLayout, d_in: usize, d_out: usize, ins: Range<usize>, cols: Range<usize>, y: &mut [f32]) {
    let (group_max, width) = (layout.max_block_rows(), cols.len());
    for first in (0..rows).step_by(group_max) {
        let group = (rows - first).min(group_max);
        let xs = &x[first * d_in..(first + group) * d_in];
        block(xs, group, w, layout, d_in, d_out, ins.clone(), cols.clone(), &mut y[first * width..(first + group) * width]);
    }
}

/// `y [rows, d_out] += x [rows, d_in] · W` on the calling thread, `W` stored as `layout` says
/// (attention's few decoding queries against one head's cached keys or values).
pub(crate) fn matvec_here<T: Element>(x: &[f32], rows: usize, w: &[T], layout: WeightLayout, d_in: usize, d_out: usize, y: &mut [f32]) {
    assert!(x.len() == rows * d_in && y.len() == rows * d_out && w.len() >= d_in * d_out);
    rows_through_blocks(x, rows, w, layout, d_in, d_out, 0..d_in, 0..d_out, y);
}

/// For up to [`WeightLayout::max_block_rows`] rows of `x`: the outputs `cols` of the products
/// over the inputs `ins`, added to `y [rows, cols.len()]`.
#[allow(clippy::too_many_arguments)]
fn block<T: Element>(x: &[f32], rows: usize, w: &[T], layout: WeightLayout, d_in: usize, d_out: usize, ins: Range<usize>, cols: Range<usize>, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa::current() >= Isa::Avx512 {
            // SAFETY: the CPU supports AVX-512F (checked above); bounds are checked inside.
            unsafe { x86::block_avx512(x, rows, w, layout, d_in, d_out, ins, cols, y) };
            return;
        }
        if isa::current() >= Isa::Avx2 {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
            unsafe { x86::block_avx2(x, rows, w, layout, d_in, d_out, ins, cols, y) };
            return;
        }
    }
    block_scalar(x, rows, w, layout, d_in, d_out, ins, cols, y)
}

/// [`block`] without vector instructions (CPUs without AVX2; tests).
#[allow(clippy::too_many_arguments)]
pub fn block_scalar<T: Element>(x: &[f32], rows: usize, w: &[T], layout: WeightLayout, d_in: usize, d_out: usize, ins: Range<usize>, cols: Range<usize>, y: &mut [f32]) {
    let width = cols.len();
    for r in 0..rows {
        for (c, j) in cols.clone().enumerate() {
            let mut acc = 0f32;
            for i in ins.clone() {
                let wv = match layout {
                    WeightLayout::InputMajor => w[i * d_out + j],
                    WeightLayout::OutputMajor => w[j * d_in + i],
                };
                acc += x[r * d_in + i] * wv.to_f32();
            }
            y[r * width + c] += acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The same two loops twice: 16-lane AVX-512 and 8-lane AVX2 (+F16C for f16).

    use super::{Element, WeightLayout};
    use crate::element::x86::{load8, load16};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// How far ahead in each weight row the output-major kernels prefetch.
    const PREFETCH_BYTES: usize = 1024;

    /// Inputs per pass of the output-major kernels (a multiple of both vector widths).
    const PASS_INPUTS: usize = 1024;

    /// Up to this many bytes of the rows' inputs, the output-major kernels read whole weight rows
    /// in turn (the inputs stay in L1 across outputs).
    const X_IN_L1_BYTES: usize = 32 << 10;

    /// Up to this many bytes per weight row, one decoding row's product reads one weight row at a
    /// time (a single stream, as llama.cpp's dot products do).
    const ONE_ROW_BYTES: usize = 4096;

    macro_rules! kernels {
        ($name:ident, $outputs:ident, $feature:literal, $vec:ty, $lanes:literal, $zero:ident, $fma:ident, $set1:ident, $loadu:ident, $storeu:ident, $load_elem:ident, $hsum:ident) => {
            /// [`super::block`] for `rows` rows of `x` (at most 8 output-major, 4 input-major).
            ///
            /// # Safety
            /// The CPU must support the target features.
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name<T: Element>(x: &[f32], rows: usize, w: &[T], layout: WeightLayout, d_in: usize, d_out: usize, ins: Range<usize>, cols: Range<usize>, y: &mut [f32]) {
                assert!(rows >= 1 && rows <= layout.max_block_rows() && x.len() >= rows * d_in && y.len() >= rows * cols.len());
                assert!(cols.end <= d_out && ins.end <= d_in && w.len() >= d_in * d_out);
                let width = cols.len();
                // SAFETY: every pointer below stays inside `x`, `w` and `y` (asserted sizes).
                unsafe { match layout {
                    // y[r][j] = sum_i x[r][i] * w[j][i]: each weight row read once for all rows.
                    WeightLayout::OutputMajor => {
                        assert!(ins == (0..d_in), "output-major blocks cover every input");
                        match rows {
                            // One weight row at a time when a row is at most a page (TinyLlama's
                            // 2048 f16 inputs: ~12% faster from memory than 8 rows side by side);
                            // longer rows take 8 at a time (LLaMA-7B's 4096 and 11008 inputs: one
                            // row at a time is up to 2x slower there). Same sums either way.
                            1 if std::mem::size_of::<T>() * d_in <= ONE_ROW_BYTES => $outputs::<T, 1, 1>(x, w, d_in, cols, y, width),
                            1 => $outputs::<T, 1, 8>(x, w, d_in, cols, y, width),
                            2 => $outputs::<T, 2, 4>(x, w, d_in, cols, y, width),
                            3 => $outputs::<T, 3, 4>(x, w, d_in, cols, y, width),
                            4 => $outputs::<T, 4, 4>(x, w, d_in, cols, y, width),
                            5 => $outputs::<T, 5, 4>(x, w, d_in, cols, y, width),
                            6 => $outputs::<T, 6, 4>(x, w, d_in, cols, y, width),
                            7 => $outputs::<T, 7, 3>(x, w, d_in, cols, y, width),
                            _ => $outputs::<T, 8, 2>(x, w, d_in, cols, y, width),
                        }
                    }
                    // y[r][cols] += x[r][i] * w[i][cols], four weight rows per pass over y.
                    WeightLayout::InputMajor => {
                        let body = width / $lanes * $lanes;
                        let mut i = ins.start;
                        while i < ins.end {
                            let ins = (ins.end - i).min(4);
                            let mut xb = [[$zero(); 4]; 4];
                            for r in 0..rows {
                                for q in 0..ins {
                                    xb[r][q] = $set1(x[r * d_in + i + q]);
                                }
                            }
                            let mut c = 0;
                            while c < body {
                                let mut wv = [$zero(); 4];
                                for q in 0..ins {
                                    wv[q] = $load_elem(w.as_ptr().add((i + q) * d_out + cols.start + c));
                                }
                                for r in 0..rows {
                                    let out = y.as_mut_ptr().add(r * width + c);
                                    let mut acc = $loadu(out);
                                    for q in 0..ins {
                                        acc = $fma(wv[q], xb[r][q], acc);
                                    }
                                    $storeu(out, acc);
                                }
                                c += $lanes;
                            }
                            for c in body..width {
                                for r in 0..rows {
                                    let mut sum = y[r * width + c];
                                    for q in 0..ins {
                                        sum += x[r * d_in + i + q] * w[(i + q) * d_out + cols.start + c].to_f32();
                                    }
                                    y[r * width + c] = sum;
                                }
                            }
                            i += ins;
                        }
                    }
                } }
            }

            /// Output-major `y [R, cols] += x [R, in] · w[cols]ᵀ`, `O` weight rows at a time with
            /// `R x O` accumulators held in registers (const sizes, so the loops unroll).
            #[target_feature(enable = $feature)]
            unsafe fn $outputs<T: Element, const R: usize, const O: usize>(x: &[f32], w: &[T], d_in: usize, cols: Range<usize>, y: &mut [f32], stride: usize) {
                let body = d_in / $lanes * $lanes;
                // Whole groups of O outputs here; the rest one at a time at the end.
                let grouped_end = cols.start + cols.len() / O * O;
                // Inputs per pass: up to 8 rows' slice of x stays in L1 (32 KiB) while every
                // output of `cols` is visited. The same for every row count, so that each output
                // is summed in the same order (one partial sum per pass, added in order) however
                // many rows are computed together: a batched decoding step gives each sequence
                // the numbers it gets alone.
                let chunk = PASS_INPUTS.min(body.max($lanes));
                let passes = body.div_ceil(chunk).max(1);
                let groups = (grouped_end - cols.start) / O;
                // Which loop is outside only changes the order the weights are read in, not any
                // output's sum: when the rows' inputs fit in L1 anyway, whole weight rows in turn
                // (one sequential stream per row); otherwise pass by pass over every output.
                let rows_outer = R * d_in * std::mem::size_of::<f32>() <= X_IN_L1_BYTES;
                let (outer, inner) = if rows_outer { (groups, passes) } else { (passes, groups) };
                for a in 0..outer {
                    for b in 0..inner {
                        let (g, p) = if rows_outer { (a, b) } else { (b, a) };
                        let (j, first) = (cols.start + g * O, p * chunk);
                        let last = (first + chunk).min(body);
                        let with_tail = last == body;
                        let mut acc = [[$zero(); O]; R];
                        let mut i = first;
                        while i < last {
                            // SAFETY: i + lanes <= d_in, r < R rows, j + o < d_out (asserted by the caller).
                            unsafe {
                                let mut xv = [$zero(); R];
                                for r in 0..R {
                                    xv[r] = $loadu(x.as_ptr().add(r * d_in + i));
                                }
                                for o in 0..O {
                                    let at = w.as_ptr().add((j + o) * d_in + i);
                                    // Ahead of the hardware prefetcher, which restarts at every
                                    // 4 KiB page (prefetches never fault, so past the end is fine).
                                    _mm_prefetch::<_MM_HINT_T0>((at as *const i8).wrapping_add(PREFETCH_BYTES));
                                    let wv = $load_elem(at);
                                    for r in 0..R {
                                        acc[r][o] = $fma(wv, xv[r], acc[r][o]);
                                    }
                                }
                            }
                            i += $lanes;
                        }
                        for o in 0..O {
                            let row = &w[(j + o) * d_in..(j + o + 1) * d_in];
                            for r in 0..R {
                                let mut sum = $hsum(acc[r][o]);
                                if with_tail {
                                    for i in body..d_in {
                                        sum += x[r * d_in + i] * row[i].to_f32();
                                    }
                                }
                                y[r * stride + (j - cols.start) + o] += sum;
                            }
                        }
                    }
                }
                if grouped_end < cols.end {
                    // SAFETY: the same bounds as ours, over the last outputs.
                    unsafe { $outputs::<T, R, 1>(x, w, d_in, grouped_end..cols.end, &mut y[grouped_end - cols.start..], stride) };
                }
            }
        };
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn hsum16(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum8(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        let one = _mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair));
        _mm_cvtss_f32(one)
    }

    kernels!(block_avx512, outputs_avx512, "avx512f", __m512, 16, _mm512_setzero_ps, _mm512_fmadd_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, load16, hsum16);
    kernels!(block_avx2, outputs_avx2, "avx2,fma,f16c", __m256, 8, _mm256_setzero_ps, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, load8, hsum8);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::{bf16, f16};

    /// Deterministic values in [-1, 1) (also the block-product tests').
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// f64 reference of x · W for either layout.
    fn reference(x: &[f32], rows: usize, w: &[f32], layout: WeightLayout, d_in: usize, d_out: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * d_out];
        for r in 0..rows {
            for j in 0..d_out {
                let mut acc = 0f64;
                for i in 0..d_in {
                    let wv = match layout {
                        WeightLayout::InputMajor => w[i * d_out + j],
                        WeightLayout::OutputMajor => w[j * d_in + i],
                    };
                    acc += x[r * d_in + i] as f64 * wv as f64;
                }
                y[r * d_out + j] = acc as f32;
            }
        }
        y
    }

    type Kernel<T> = fn(&[f32], usize, &[T], WeightLayout, usize, usize, Range<usize>, Range<usize>, &mut [f32]);

    fn kernels<T: Element>() -> Vec<(&'static str, Kernel<T>)> {
        let mut all: Vec<(&'static str, Kernel<T>)> = vec![("scalar", block_scalar::<T>)];
        #[cfg(target_arch = "x86_64")]
        {
            if isa::current() >= Isa::Avx2 {
                // SAFETY: the CPU has the kernel's features (checked).
                all.push(("avx2", |x, r, w, l, i, o, ins, cols, y| unsafe { x86::block_avx2(x, r, w, l, i, o, ins, cols, y) }));
            }
            if isa::current() >= Isa::Avx512 {
                // SAFETY: as above.
                all.push(("avx512", |x, r, w, l, i, o, ins, cols, y| unsafe { x86::block_avx512(x, r, w, l, i, o, ins, cols, y) }));
            }
        }
        all
    }

    fn check<T: Element>(convert: fn(f32) -> T) {
        // Sizes with and without vector tails, 1 to MAX_ROWS rows; the last two large enough
        // for the threads to share (f32 128 x 3000: three pieces, the last one short).
        for &(d_in, d_out) in &[(64, 48), (37, 53), (5, 3), (1, 17), (256, 1000), (128, 3000)] {
            for rows in 1..=MAX_ROWS {
                for layout in [WeightLayout::InputMajor, WeightLayout::OutputMajor] {
                    let x = values(rows * d_in, 1);
                    let w: Vec<T> = values(d_in * d_out, 2).into_iter().map(convert).collect();
                    let w32: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
                    let want = reference(&x, rows, &w32, layout, d_in, d_out);
                    let got = matvec(&x, rows, &w, layout, d_in, d_out);
                    // f32 accumulation of d_in products of magnitude < 1, in another order.
                    let tol = 1e-6 * d_in as f32;
                    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() <= tol, "{:?} {layout:?} {rows}x{d_in}x{d_out} [{k}]: {a} vs {b}", T::KIND);
                    }
                    // Every kernel this CPU can run, on the whole matrix in one block.
                    for (name, kernel) in kernels::<T>() {
                        let mut y = vec![0f32; rows * d_out];
                        let group_max = layout.max_block_rows();
                        for first in (0..rows).step_by(group_max) {
                            let group = (rows - first).min(group_max);
                            let xs = &x[first * d_in..(first + group) * d_in];
                            kernel(xs, group, &w, layout, d_in, d_out, 0..d_in, 0..d_out, &mut y[first * d_out..(first + group) * d_out]);
                        }
                        for (a, b) in y.iter().zip(&want) {
                            assert!((a - b).abs() <= tol, "{name} {:?} {layout:?} {rows}x{d_in}x{d_out}: {a} vs {b}", T::KIND);
                        }
                    }
                }
            }
        }
    }

    /// Each row of a product of many rows is bit for bit the product of that row alone, with
    /// inputs longer than one pass of the kernels (a continuous-batching step then gives each
    /// sequence the numbers it gets alone), on every kernel this CPU runs.
    fn rows_are_computed_as_alone<T: Element>(convert: fn(f32) -> T) {
        for &(d_in, d_out) in &[(2048, 40), (3000, 17), (5003, 9), (64, 48)] {
            let w: Vec<T> = values(d_in * d_out, 3).into_iter().map(convert).collect();
            let x = values(20 * d_in, 4);
            let alone: Vec<Vec<f32>> = (0..20).map(|r| matvec(&x[r * d_in..(r + 1) * d_in], 1, &w, WeightLayout::OutputMajor, d_in, d_out)).collect();
            for rows in [2, 3, 5, 8, 13, 20] {
                let together = matvec(&x[..rows * d_in], rows, &w, WeightLayout::OutputMajor, d_in, d_out);
                for r in 0..rows {
                    let same = together[r * d_out..(r + 1) * d_out].iter().zip(&alone[r]).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{:?} {d_in}x{d_out}: row {r} of {rows} differs from the row alone", T::KIND);
                }
            }
        }
    }

    #[test]
    fn rows_of_a_batch_are_computed_as_alone() {
        rows_are_computed_as_alone::<f32>(|v| v);
        rows_are_computed_as_alone::<f16>(f16::from_f32);
        rows_are_computed_as_alone::<bf16>(bf16::from_f32);
    }

    #[test]
    fn f32_weights_match_the_f64_reference() {
        check::<f32>(|v| v);
    }

    #[test]
    fn f16_weights_match_the_f64_reference() {
        check::<f16>(f16::from_f32);
    }

    #[test]
    fn bf16_weights_match_the_f64_reference() {
        check::<bf16>(bf16::from_f32);
    }

    /// Decoding speed of the f16 products with weights read from memory, as in a whole model's
    /// step (`cargo test --release -p biomedgpt-kernels --lib f16_decoding_speed -- --ignored
    /// --nocapture`; `SHAPE=NxK`, `COPIES=1` for weights that stay in cache), next to a plain
    /// read of the same bytes on the same threads (`bench bandwidth`'s kind of number), the two
    /// alternating so that this VM's drift falls on both.
    #[test]
    #[ignore]
    fn f16_decoding_speed() {
        let shape: Vec<usize> = std::env::var("SHAPE").unwrap_or("5632x2048".into()).split('x').map(|v| v.parse().unwrap()).collect();
        let (n, k) = (shape[0], shape[1]);
        let copies: usize = std::env::var("COPIES").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
        let w: Vec<f16> = values(n * k, 5).into_iter().map(f16::from_f32).collect();
        let matrices: Vec<Vec<f16>> = (0..copies).map(|_| w.clone()).collect();
        let plain: Vec<Vec<u64>> = (0..copies).map(|c| vec![c as u64; n * k / 4]).collect();
        let bytes = (n * k * 2) as f64;
        let sum = |words: &[u64]| {
            let mut acc = [0u64; 8];
            for c in words.chunks_exact(8) {
                for l in 0..8 {
                    acc[l] = acc[l].wrapping_add(c[l]);
                }
            }
            acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
        };
        let gbs = |t: &mut Vec<f64>| {
            t.sort_by(f64::total_cmp);
            format!("{:.1} GB/s (quartiles {:.1}-{:.1})", bytes / t[t.len() / 2] / 1e9, bytes / t[t.len() * 3 / 4] / 1e9, bytes / t[t.len() / 4] / 1e9)
        };
        for m in [1, 2, 4, 8] {
            let x = values(m * k, 6);
            let (mut product, mut read) = (Vec::new(), Vec::new());
            for t in 0..copies * 10 {
                let start = std::time::Instant::now();
                if (t / copies).is_multiple_of(2) {
                    std::hint::black_box(matvec(&x, m, &matrices[t % copies], WeightLayout::OutputMajor, k, n));
                    product.push(start.elapsed().as_secs_f64());
                } else {
                    let halves = plain[t % copies].split_at(n * k / 8);
                    std::hint::black_box(rayon::join(|| sum(halves.0), || sum(halves.1)));
                    read.push(start.elapsed().as_secs_f64());
                }
            }
            println!("f16 {n}x{k}, {m} rows: product {}, plain read {}", gbs(&mut product), gbs(&mut read));
        }
    }
}
