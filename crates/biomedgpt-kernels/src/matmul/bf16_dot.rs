//! bf16 products with the AVX-512 BF16 dot-product instruction (`VDPBF16PS`): prompt-sized
//! ([`matmul`], [`matmul_many`] for several weights sharing an input) and decoding-sized
//! ([`matvec`]).
//!
//! CPUs with AVX512_BF16 (AMD Zen 4/5, Intel Cooper Lake and Sapphire Rapids) multiply pairs of
//! bf16 values and add both products to an f32 lane in one instruction: twice the f32 FMA rate,
//! and what torch (through oneDNN) runs for a bf16 `nn.Linear`. Products of two bf16 values are
//! exact in f32 and the sums are f32, so the result differs from widening to f32 first only in
//! the order of the additions (and in flushing subnormal inputs to zero).
//!
//! Prompts: the 32 lanes of a pair of vectors hold 32 rows of `x` (packed once per product, a
//! pair of consecutive inputs per 32-bit lane), and each weight element pair is broadcast to all
//! lanes. A register tile is 32 rows of `x` by [`NR`] outputs; the inputs are taken in blocks of
//! [`K_BLOCK`] so that a block of the packed `x` stays in L2 while the threads stream the weight.
//! Each tile's weight rows are copied, one block at a time, from PyTorch's `[out, in]` layout
//! into a small buffer where the lines the tile reads together are adjacent (read in place, rows
//! 2048 inputs apart fall in one L1 cache set and evict one another), and the next tile's rows
//! are prefetched while the current one computes. Each task of the parallel pass owns a range of
//! outputs and writes them, rounded, into the result rows: no serial pass over `x` or the result.
//! Decoding streams each weight row once for all rows of `x`, 32 inputs per instruction.
//!
//! Measured on a 2-core Zen 4 (peak 448 GFLOP/s for both cores at the clock they hold under this
//! load), 128 rows, `examples/prompt_products.rs`: 400-425 GFLOP/s on LLaMA's shapes; torch's
//! bf16 `F.linear` (oneDNN) 366-381 on the same shapes and moment.

use aligned_vec::{AVec, ConstAlign};
use half::bf16;
use rayon::prelude::*;

use crate::parallel::Shared;

/// A buffer starting on a cache line: AMX tile loads of rows that straddle two lines run 6 times
/// slower (measured on a Xeon with AMX: 16.5 against 2.7 ns per 1 KiB tile from L1).
pub(crate) type Lines<T> = AVec<T, ConstAlign<64>>;

use std::mem::MaybeUninit;

/// Rows of `x` per register tile: two vectors of 16 f32 lanes.
const MR: usize = 32;
/// Weight rows (outputs) per register tile: `2 x NR` accumulators plus two `x` vectors and one
/// broadcast fit the 32 vector registers.
const NR: usize = 12;
/// Inputs per block: a block of packed `x` (rows x K_BLOCK x 2 bytes, 512 KiB for a 128-token
/// prompt) stays in L2 across every weight tile, and each weight row's block is one 4 KiB page
/// of the memory-mapped file: with 1024, every page was visited twice per product, and
/// LLaMA-2-7B bf16 prompts measured 35.4 against 38.4 tok/s (medians of 8 interleaved pairs on a
/// busy Zen 5 VM, before the weight tiles were packed; TinyLlama and the products alone unchanged).
const K_BLOCK: usize = 2048;

/// Whether the kernels use these instructions ([`crate::isa`]: `avx512bf16` or above).
pub fn available() -> bool {
    crate::isa::current() >= crate::isa::Isa::Avx512Bf16
}

/// `y [rows, d_out] = x [rows, d_in] · Wᵀ (+ bias)` in f32 for `W [d_out, d_in]` in bf16 and
/// `x` holding bf16 values (widened to f32: the low 16 bits of each are zero, so taking the high
/// half is exact). `None` where the kernel does not apply: no AVX512_BF16, or an odd `d_in`
/// (inputs are read in pairs straight from the weight rows).
pub fn matmul(x: &[f32], rows: usize, w: &[bf16], d_in: usize, d_out: usize, bias: Option<&[f32]>) -> Option<Vec<f32>> {
    let x: Vec<bf16> = x.iter().map(|v| bf16::from_bits((v.to_bits() >> 16) as u16)).collect();
    let mut ys = matmul_many::<f32>(&x, rows, &[Product { weight: w, d_out, bias }], d_in)?;
    ys.pop()
}

/// One of several products of the same input: the weight `[d_out, d_in]` and its bias.
#[derive(Clone, Copy)]
pub struct Product<'a> {
    pub weight: &'a [bf16],
    pub d_out: usize,
    pub bias: Option<&'a [f32]>,
}

/// The element type of a product's result: f32 as summed, or bf16 rounded to nearest even (what
/// torch's bf16 `nn.Linear` returns). Results are written by the threads that compute them, so
/// no pass over the whole result runs on one thread.
pub trait Output: Copy + Send + Sync + 'static {
    /// `dst[j] = src[j] (+ bias[j])`, in this type.
    fn store(src: &[f32], bias: Option<&[f32]>, dst: &mut [MaybeUninit<Self>]);

    /// A task's sums (column-major `[outputs, padded]`, 64-byte aligned) plus bias, written
    /// transposed into `rows` rows of `stride` values from `dst` in one pass, where this type
    /// has such a kernel for these sizes; `false` leaves it to the caller.
    ///
    /// # Safety
    /// `dst + r * stride .. + outputs` must be writable for every `r < rows`.
    unsafe fn store_sums(_sums: &[f32], _padded: usize, _outputs: usize, _rows: usize, _bias: Option<&[f32]>, _dst: *mut MaybeUninit<Self>, _stride: usize) -> bool {
        false
    }
}

impl Output for f32 {
    fn store(src: &[f32], bias: Option<&[f32]>, dst: &mut [MaybeUninit<f32>]) {
        match bias {
            Some(b) => dst.iter_mut().zip(src).zip(b).for_each(|((d, s), b)| _ = d.write(s + b)),
            None => dst.iter_mut().zip(src).for_each(|(d, s)| _ = d.write(*s)),
        }
    }
}

impl Output for bf16 {
    fn store(src: &[f32], bias: Option<&[f32]>, dst: &mut [MaybeUninit<bf16>]) {
        crate::element::narrow_bf16(src, bias, dst)
    }

    unsafe fn store_sums(sums: &[f32], padded: usize, outputs: usize, rows: usize, bias: Option<&[f32]>, dst: *mut MaybeUninit<Self>, stride: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        if outputs.is_multiple_of(16) && padded.is_multiple_of(16) && crate::isa::current() >= crate::isa::Isa::Avx512 {
            // SAFETY: AVX-512F checked; the caller vouches for `dst`.
            unsafe { x86::store_sums_bf16(sums, padded, outputs, rows, bias, dst, stride) };
            return true;
        }
        false
    }
}

/// Several products of the same `x [rows, d_in]` (bf16): a layer's q/k/v projections, an MLP's
/// gate and up, or just one. `x` is packed once and every weight's outputs are split into tasks
/// of one parallel pass, each task computing a range of outputs and writing them (bias added,
/// in the type `T`) straight into the rows of its result, so that small products (GQA's k and v)
/// cost no pass of their own. `None` where the kernel does not apply (see [`matmul`]).
pub fn matmul_many<T: Output>(x: &[bf16], rows: usize, products: &[Product], d_in: usize) -> Option<Vec<Vec<T>>> {
    matmul_many_on::<T>(Kernel::best(d_in, products), x, rows, products, d_in)
}

/// The instructions a prompt product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX512_BF16's `VDPBF16PS` (AMD Zen 4/5, Intel Cooper Lake and later).
    Dot,
    /// AMX tiles (Intel Sapphire Rapids and later): see `amx.rs`. Whole tiles only: inputs a
    /// multiple of 32, outputs of 16.
    Amx,
}

impl Kernel {
    /// AMX where the CPU has it and the shapes fit, else the dot-product kernel.
    pub fn best(d_in: usize, products: &[Product]) -> Kernel {
        if Kernel::Amx.applies(d_in, products) { Kernel::Amx } else { Kernel::Dot }
    }

    /// Whether this kernel runs here for these shapes.
    pub fn applies(self, d_in: usize, products: &[Product]) -> bool {
        available()
            && match self {
                Kernel::Dot => d_in.is_multiple_of(2),
                Kernel::Amx => super::amx::available() && super::amx::fits(d_in, products.iter().map(|p| p.d_out)),
            }
    }
}

/// [`matmul_many`] on the given kernel (for tests and measurements); `None` where it does not
/// apply.
pub fn matmul_many_on<T: Output>(kernel: Kernel, x: &[bf16], rows: usize, products: &[Product], d_in: usize) -> Option<Vec<Vec<T>>> {
    if !kernel.applies(d_in, products) || rows == 0 || products.iter().any(|p| p.d_out == 0) {
        return None;
    }
    #[cfg(not(target_arch = "x86_64"))]
    return None;
    #[cfg(target_arch = "x86_64")]
    Some(products_of(kernel, x, rows, products, d_in))
}

/// Outputs per task: 8 register tiles, so that a task's partial sums (`[96, rows]` f32, 48 KiB
/// for a 128-token prompt) stay in L2 across the input blocks.
const TASK_OUTPUTS: usize = 8 * NR;

/// Per-thread buffers of the prompt products, kept between calls.
struct Scratch {
    /// A task's partial sums, column-major `[outputs, padded]`.
    sums: Lines<f32>,
    /// One register tile's weight rows for one input block, packed (see `x86::pack_weights`).
    weights: Vec<u32>,
    /// The task's results row-major `[rows, outputs]`, before bias and rounding.
    rows: Vec<MaybeUninit<f32>>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch {
        sums: Lines::new(64),
        weights: Vec::new(),
        rows: Vec::new(),
    });
}

#[cfg(target_arch = "x86_64")]
fn products_of<T: Output>(kernel: Kernel, x: &[bf16], rows: usize, products: &[Product], d_in: usize) -> Vec<Vec<T>> {
    assert_eq!(x.len(), rows * d_in, "x holds {} values, expected {rows} x {d_in}", x.len());
    for p in products {
        assert!(p.weight.len() >= d_in * p.d_out, "weight holds {} values, expected {} x {d_in}", p.weight.len(), p.d_out);
        assert!(p.bias.is_none_or(|b| b.len() == p.d_out), "one bias value per output");
    }
    let padded = rows.div_ceil(MR) * MR;
    let xp = pack_rows(x, rows, d_in, padded);
    let mut ys: Vec<Vec<T>> = products.iter().map(|p| Vec::with_capacity(rows * p.d_out)).collect();
    let outs: Vec<Shared<MaybeUninit<T>>> = ys.iter_mut().map(|y| Shared(y.spare_capacity_mut().as_mut_ptr())).collect();
    let tasks: Vec<(usize, usize)> = products
        .iter()
        .enumerate()
        .flat_map(|(k, p)| (0..p.d_out).step_by(TASK_OUTPUTS).map(move |n0| (k, n0)))
        .collect();
    tasks.into_par_iter().for_each(|(k, n0)| {
        let p = &products[k];
        let outputs = (p.d_out - n0).min(TASK_OUTPUTS);
        let out = outs[k];
        SCRATCH.with_borrow_mut(|s| {
            s.sums.resize(outputs * padded, 0.0);
            s.rows.resize(rows * outputs, MaybeUninit::uninit());
            let w = &p.weight[n0 * d_in..(n0 + outputs) * d_in];
            match kernel {
                Kernel::Dot => {
                    s.weights.resize(NR * K_BLOCK / 2, 0);
                    // SAFETY: the CPU has AVX-512F and AVX512_BF16 (checked by `available`); `w`
                    // holds the task's `outputs` weight rows (asserted above), `sums` their
                    // padded rows.
                    unsafe { x86::outputs(&xp, padded, w, d_in, outputs, &mut s.sums, &mut s.weights) }
                }
                // SAFETY: AMX is available and the shapes fit (`Kernel::applies`): d_in a
                // multiple of 32, every d_out and so every task's outputs (TASK_OUTPUTS is too)
                // of 16, `padded` of MR = 32; `xp` and `sums` are `Lines`.
                Kernel::Amx => unsafe { super::amx::outputs(&xp, padded, w, d_in, outputs, &mut s.sums, K_BLOCK) },
            }
            let bias = p.bias.map(|b| &b[n0..n0 + outputs]);
            // SAFETY: row r < rows of result k holds d_out values from out.0 + r * d_out;
            // this task writes outputs n0..n0 + outputs of each (tasks cover disjoint ranges).
            if unsafe { T::store_sums(&s.sums, padded, outputs, rows, bias, out.0.add(n0), p.d_out) } {
                return;
            }
            crate::transpose::block(&s.sums, outputs, padded, rows, &mut s.rows, outputs);
            for r in 0..rows {
                // SAFETY: the transpose wrote rows x outputs values.
                let src = unsafe { &*(&s.rows[r * outputs..(r + 1) * outputs] as *const [MaybeUninit<f32>] as *const [f32]) };
                // SAFETY: row r's outputs n0..n0 + outputs of result k: inside its capacity
                // (rows x d_out) and written by this task only (tasks cover disjoint ranges).
                let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(r * p.d_out + n0), outputs) };
                T::store(src, bias, dst);
            }
        });
    });
    for (y, p) in ys.iter_mut().zip(products) {
        // SAFETY: the tasks wrote every output of every row.
        unsafe { y.set_len(rows * p.d_out) };
    }
    ys
}

/// Decoding-sized `y [rows, d_out] = x [rows, d_in] · Wᵀ` (rows <= [`MATVEC_ROWS`]) in f32 for
/// `W [d_out, d_in]` in bf16 and `x` holding bf16 values, as [`matmul`]: see [`matvec_many`].
/// `None` without AVX512_BF16 or for more rows.
pub fn matvec(x: &[f32], rows: usize, w: &[bf16], d_in: usize, d_out: usize) -> Option<Vec<f32>> {
    // Exact: the values are bf16 (see `matmul`).
    let x: Vec<bf16> = x.iter().map(|v| bf16::from_bits((v.to_bits() >> 16) as u16)).collect();
    matvec_many::<f32>(&x, rows, &[Product { weight: w, d_out, bias: None }], d_in).map(|mut ys| ys.remove(0))
}

/// Several decoding-sized products of the same `x [rows, d_in]` (rows <= [`MATVEC_ROWS`], bf16):
/// each weight row is read once for all rows, 32 inputs per instruction. The outputs of all the
/// products, end to end, are split over the threads in one parallel pass (a layer's q/k/v or
/// gate and up: one pass instead of three or two, so that fewer passes wait on their slowest
/// thread), each thread writing its outputs (bias added, in the type `T`) into the results.
/// Every output is summed by one thread in the same order however the outputs are split.
/// `None` without AVX512_BF16 or for more rows.
pub fn matvec_many<T: Output>(x: &[bf16], rows: usize, products: &[Product], d_in: usize) -> Option<Vec<Vec<T>>> {
    if !available() || rows == 0 || rows > MATVEC_ROWS || d_in == 0 || products.iter().any(|p| p.d_out == 0) {
        return None;
    }
    assert_eq!(x.len(), rows * d_in, "x holds {} values, expected {rows} x {d_in}", x.len());
    for p in products {
        assert!(p.weight.len() >= d_in * p.d_out, "weight holds {} values, expected {} x {d_in}", p.weight.len(), p.d_out);
        assert!(p.bias.is_none_or(|b| b.len() == p.d_out), "one bias value per output");
    }
    #[cfg(not(target_arch = "x86_64"))]
    return None;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: bf16 and u16 have the same size and alignment.
        let xb: &[u16] = unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u16, x.len()) };
        // Every product's outputs in pieces of about 512 KiB of weights, all the products' pieces
        // shared by the threads in one pass (`matvec::share_pieces`).
        let piece = ((512 << 10) / (2 * d_in)).next_multiple_of(16).max(16);
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        for (k, p) in products.iter().enumerate() {
            pieces.extend((0..p.d_out).step_by(piece).map(|start| (k, start, (p.d_out - start).min(piece))));
        }
        let mut ys: Vec<Vec<T>> = products.iter().map(|p| Vec::with_capacity(rows * p.d_out)).collect();
        let outs: Vec<Shared<MaybeUninit<T>>> = ys.iter_mut().map(|y| Shared(y.spare_capacity_mut().as_mut_ptr())).collect();
        crate::parallel::share_pieces(pieces.len(), rayon::current_num_threads(), |i, y: &mut Vec<f32>| {
            let (k, start, width) = pieces[i];
            let p = &products[k];
            y.clear();
            y.resize(rows * width, 0.0);
            let w = &p.weight[start * d_in..(start + width) * d_in];
            // SAFETY: the CPU has AVX-512F/BW and AVX512_BF16 (checked by `available`); `xb`
            // holds rows x d_in values, `w` width rows of d_in, `y` rows x width.
            unsafe { x86::matvec(xb, rows, w, d_in, width, y) };
            let bias = p.bias.map(|b| &b[start..start + width]);
            for r in 0..rows {
                // SAFETY: row r's outputs start..start + width of result k: inside its capacity
                // (rows x d_out) and written by this piece only (pieces cover disjoint ranges,
                // each taken once).
                let dst = unsafe { std::slice::from_raw_parts_mut(outs[k].ptr().add(r * p.d_out + start), width) };
                T::store(&y[r * width..(r + 1) * width], bias, dst);
            }
        });
        for (y, p) in ys.iter_mut().zip(products) {
            // SAFETY: the pieces wrote every output of every row.
            unsafe { y.set_len(rows * p.d_out) };
        }
        Some(ys)
    }
}

/// The most rows [`matvec`] takes (the decoding kernels' limit, [`super::matvec::MAX_ROWS`]).
pub const MATVEC_ROWS: usize = 8;

/// `x [rows, d_in]` as `[padded / MR][d_in / 2][MR]` 32-bit lanes, each the bf16 pair
/// `(x[r][2p], x[r][2p + 1])` (low half first, as the instruction pairs them, and as they lie in
/// memory); zero rows pad to `padded`. One 32-bit transpose per panel of `MR` rows.
fn pack_rows(x: &[bf16], rows: usize, d_in: usize, padded: usize) -> Lines<u32> {
    let pairs = d_in / 2;
    // The rows as 32-bit pairs (in place when x is 4-byte aligned, as allocations are).
    // SAFETY: any two bf16 values make a valid u32.
    let (head, aligned, _) = unsafe { x.align_to::<u32>() };
    let copied: Vec<u32>;
    let x32 = if head.is_empty() {
        &aligned[..rows * pairs]
    } else {
        copied = x.chunks_exact(2).map(|p| p[0].to_bits() as u32 | (p[1].to_bits() as u32) << 16).collect();
        &copied[..]
    };
    let mut xp: Lines<u32> = Lines::with_capacity(64, padded * pairs);
    // SAFETY: the capacity holds padded x pairs values; MaybeUninit<u32> has u32's layout.
    let spare = unsafe { std::slice::from_raw_parts_mut(xp.as_mut_ptr() as *mut MaybeUninit<u32>, padded * pairs) };
    spare.par_chunks_mut(pairs * MR).enumerate().for_each(|(panel, xp)| {
        let r0 = panel * MR;
        let height = (rows - r0).min(MR);
        crate::transpose::block_u32(&x32[r0 * pairs..], height, pairs, pairs, xp, MR);
        if height < MR {
            xp.chunks_exact_mut(MR).for_each(|lanes| lanes[height..].fill(MaybeUninit::new(0)));
        }
    });
    // SAFETY: every panel wrote all of its pairs x MR lanes.
    unsafe { xp.set_len(padded * pairs) };
    xp
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{K_BLOCK, MR, NR};
    use half::bf16;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// [`super::Output::store_sums`] for bf16: 16 outputs by 16 rows at a time, transposed in
    /// registers (unpack and lane shuffles), the bias added and rounded to bf16 as
    /// `round_to_bf16` does (nearest even, NaN kept quiet), 16 values stored per row.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `outputs` and `padded` multiples of 16, `rows <= padded`,
    /// `sums` holding `outputs * padded` values, `dst` as the trait says.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn store_sums_bf16(sums: &[f32], padded: usize, outputs: usize, rows: usize, bias: Option<&[f32]>, dst: *mut MaybeUninit<bf16>, stride: usize) {
        assert!(sums.len() >= outputs * padded && rows <= padded && bias.is_none_or(|b| b.len() >= outputs));
        for j0 in (0..outputs).step_by(16) {
            // SAFETY (loads): outputs j0..j0 + 16 and rows r0..r0 + 16 <= padded are inside sums.
            let bias_v = bias.map_or(_mm512_setzero_ps(), |b| unsafe { _mm512_loadu_ps(b.as_ptr().add(j0)) });
            for r0 in (0..rows).step_by(16) {
                let mut v: [__m512; 16] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(sums.as_ptr().add((j0 + i) * padded + r0)) });
                transpose16(&mut v);
                // v[m] now holds row r0 + m's 16 outputs (see `transpose16`).
                for (m, &row) in v.iter().enumerate().take((rows - r0).min(16)) {
                    let narrow = round_bf16(_mm512_add_ps(row, bias_v));
                    // SAFETY: row r0 + m < rows, outputs j0..j0 + 16 of it (the caller's dst).
                    unsafe { _mm256_storeu_si256(dst.add((r0 + m) * stride + j0) as *mut __m256i, narrow) };
                }
            }
        }
    }

    /// Rows `v[i]` (16 lanes each) to columns: afterwards `v[c]` lane `i` is what `v[i]` lane
    /// `c` was. Unpacks within 128-bit lanes, then two rounds of lane shuffles.
    #[target_feature(enable = "avx512f")]
    fn transpose16(v: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        // u[4g + m]: lane L holds column 4L + m of rows 4g..4g + 4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let pd = |x: __m512| _mm512_castps_pd(x);
            u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[4 * g]), pd(t[4 * g + 2])));
            u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[4 * g]), pd(t[4 * g + 2])));
            u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[4 * g + 1]), pd(t[4 * g + 3])));
            u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[4 * g + 1]), pd(t[4 * g + 3])));
        }
        for m in 0..4 {
            let (a, b) = (u[m], u[4 + m]);
            let (c, d) = (u[8 + m], u[12 + m]);
            let (even_ab, odd_ab) = (_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xdd>(a, b));
            let (even_cd, odd_cd) = (_mm512_shuffle_f32x4::<0x88>(c, d), _mm512_shuffle_f32x4::<0xdd>(c, d));
            v[m] = _mm512_shuffle_f32x4::<0x88>(even_ab, even_cd);
            v[8 + m] = _mm512_shuffle_f32x4::<0xdd>(even_ab, even_cd);
            v[4 + m] = _mm512_shuffle_f32x4::<0x88>(odd_ab, odd_cd);
            v[12 + m] = _mm512_shuffle_f32x4::<0xdd>(odd_ab, odd_cd);
        }
    }

    /// 16 f32 to bf16 bits, `matvec::round_to_bf16` lane-wise.
    #[target_feature(enable = "avx512f")]
    fn round_bf16(x: __m512) -> __m256i {
        let bits = _mm512_castps_si512(x);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)));
        let nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff)), _mm512_set1_epi32(0x7f80_0000));
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
        _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet))
    }

    /// `sums [outputs, padded]` (column-major result) for the weight rows `w [outputs, d_in]`
    /// and the packed rows `xp` (see `pack_rows`), every input block in turn. `packed` holds
    /// one register tile's weights for one block (`NR x K_BLOCK / 2` pairs).
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn outputs(xp: &[u32], padded: usize, w: &[bf16], d_in: usize, outputs: usize, sums: &mut [f32], packed: &mut [u32]) {
        let pairs = d_in / 2;
        assert!(xp.len() >= padded * pairs && w.len() >= outputs * d_in && sums.len() >= outputs * padded);
        assert!(packed.len() >= NR * K_BLOCK / 2);
        // The register tiles in order, input block by input block.
        let tiles: Vec<(usize, usize)> =
            (0..pairs).step_by(K_BLOCK / 2).flat_map(|p0| (0..outputs).step_by(NR).map(move |n0| (p0, n0))).collect();
        let panels = padded / MR;
        for (t, &(p0, n0)) in tiles.iter().enumerate() {
            let p1 = (p0 + K_BLOCK / 2).min(pairs);
            let width = (outputs - n0).min(NR);
            pack_weights(&w[n0 * d_in..(n0 + width) * d_in], width, d_in, p0..p1, packed);
            // The next tile's weights are fetched while this one computes, a share per panel:
            // packing reads them from cache instead of waiting on memory row by row.
            let next = tiles.get(t + 1).map(|&(p0, n0)| {
                let per_row = ((p0 + K_BLOCK / 2).min(pairs) - p0).div_ceil(GROUP);
                let rows = (outputs - n0).min(NR);
                Ahead { base: w.as_ptr().wrapping_add(n0 * d_in + 2 * p0) as *const u8, stride: d_in * 2, per_row, from: 0, to: rows * per_row }
            });
            for (m, m0) in (0..padded).step_by(MR).enumerate() {
                let panel = &xp[m0 * pairs..(m0 + MR) * pairs];
                let out = &mut sums[n0 * padded + m0..];
                // Panel m's share of the next tile's lines.
                let ahead = next.map_or(Ahead::NONE, |a| Ahead { from: a.to * m / panels, to: a.to * (m + 1) / panels, ..a });
                // SAFETY: as for this function; the tile's slices are in bounds (above).
                unsafe {
                    match width {
                        12 => tile::<12>(panel, packed, p0..p1, out, padded, ahead),
                        11 => tile::<11>(panel, packed, p0..p1, out, padded, ahead),
                        10 => tile::<10>(panel, packed, p0..p1, out, padded, ahead),
                        9 => tile::<9>(panel, packed, p0..p1, out, padded, ahead),
                        8 => tile::<8>(panel, packed, p0..p1, out, padded, ahead),
                        7 => tile::<7>(panel, packed, p0..p1, out, padded, ahead),
                        6 => tile::<6>(panel, packed, p0..p1, out, padded, ahead),
                        5 => tile::<5>(panel, packed, p0..p1, out, padded, ahead),
                        4 => tile::<4>(panel, packed, p0..p1, out, padded, ahead),
                        3 => tile::<3>(panel, packed, p0..p1, out, padded, ahead),
                        2 => tile::<2>(panel, packed, p0..p1, out, padded, ahead),
                        _ => tile::<1>(panel, packed, p0..p1, out, padded, ahead),
                    }
                }
            }
        }
    }

    /// Cache lines of weight rows to prefetch: lines `from..to` of the rows at `base`, `stride`
    /// bytes apart, `per_row` 64-byte lines each.
    #[derive(Clone, Copy)]
    struct Ahead {
        base: *const u8,
        stride: usize,
        per_row: usize,
        from: usize,
        to: usize,
    }

    impl Ahead {
        const NONE: Ahead = Ahead { base: std::ptr::null(), stride: 0, per_row: 1, from: 0, to: 0 };

        /// Line `i` into the cache (a hint: never faults, whatever the address).
        #[inline(always)]
        fn fetch(&self, i: usize) {
            let at = self.base.wrapping_add(i / self.per_row * self.stride + i % self.per_row * 64);
            // SAFETY: prefetching is a hint that touches no architectural state.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at as *const i8) };
        }
    }

    /// Input pairs per group of the packed weights: one 64-byte line of a weight row.
    const GROUP: usize = 16;

    /// The pairs `pairs` of the `width` weight rows `w` into `packed`, as `[group][row][16]`:
    /// the lines a register tile reads together become adjacent. Read in place, rows `d_in`
    /// apart evict one another from L1: with `d_in` a multiple of 2048 every row's line maps
    /// to the same cache set, more lines than the set holds (measured on Zen 4, 128 rows:
    /// 2048 x 5632 at 275 GFLOP/s against 359 for 2080 x 5632).
    #[target_feature(enable = "avx512f")]
    fn pack_weights(w: &[bf16], width: usize, d_in: usize, pairs: std::ops::Range<usize>, packed: &mut [u32]) {
        let n = pairs.len();
        assert!(w.len() >= width * d_in && packed.len() >= width * n.div_ceil(GROUP) * GROUP);
        let src = w.as_ptr() as *const u8;
        let dst = packed.as_mut_ptr() as *mut u8;
        let (full, tail) = (n / GROUP, n % GROUP);
        for j in 0..width {
            // SAFETY: pairs p0 + g * GROUP .. + GROUP (or + tail) of row j are inside `w`
            // (pairs.end <= d_in / 2), and group g's slot of row j inside `packed` (asserted
            // above); unaligned accesses, as checkpoint data need not be 4-byte aligned.
            unsafe {
                let row = src.add((j * d_in + 2 * pairs.start) * 2);
                for g in 0..full {
                    let line = _mm512_loadu_si512(row.add(g * GROUP * 4) as *const _);
                    _mm512_storeu_si512(dst.add((g * width + j) * GROUP * 4) as *mut _, line);
                }
                if tail > 0 {
                    std::ptr::copy_nonoverlapping(row.add(full * GROUP * 4), dst.add((full * width + j) * GROUP * 4), tail * 4);
                }
            }
        }
    }

    /// One register tile: 32 rows x `N` outputs over the input pairs `pairs`, added to the
    /// result (set on the first block). `panel` is the tile's packed rows `[d_in / 2][MR]`,
    /// `packed` its `N` weight rows for these pairs (see `pack_weights`), `out[j * padded..][..MR]`
    /// output `j`'s rows.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const N: usize>(panel: &[u32], packed: &[u32], pairs: std::ops::Range<usize>, out: &mut [f32], padded: usize, ahead: Ahead) {
        let n = pairs.len();
        // Prefetches spread evenly over the groups of pairs.
        let groups = n.div_ceil(GROUP);
        let per_group = (ahead.to - ahead.from).div_ceil(groups);
        let mut line = ahead.from;
        debug_assert!(N <= NR && packed.len() >= N * n.div_ceil(GROUP) * GROUP && panel.len() >= pairs.end * MR);
        debug_assert!(out.len() >= (N - 1) * padded + MR);
        let mut acc = [[_mm512_setzero_ps(); 2]; N];
        // SAFETY: packed pair (g, j, q) is at (g * N + j) * GROUP + q < packed.len() and lane
        // (p, l) inside `panel` (asserted above); the result columns are inside `out`.
        unsafe {
            for g in 0..groups {
                for _ in 0..per_group {
                    if line < ahead.to {
                        ahead.fetch(line);
                        line += 1;
                    }
                }
                let group = packed.as_ptr().add(g * N * GROUP);
                let xp = panel.as_ptr().add((pairs.start + g * GROUP) * MR);
                for q in 0..(n - g * GROUP).min(GROUP) {
                    let lo: __m512bh = std::mem::transmute(_mm512_loadu_si512(xp.add(q * MR) as *const _));
                    let hi: __m512bh = std::mem::transmute(_mm512_loadu_si512(xp.add(q * MR + 16) as *const _));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(*group.add(j * GROUP + q) as i32));
                        acc[0] = _mm512_dpbf16_ps(acc[0], lo, b);
                        acc[1] = _mm512_dpbf16_ps(acc[1], hi, b);
                    }
                }
            }
            let first = pairs.start == 0;
            for (j, acc) in acc.iter().enumerate() {
                let dst = out.as_mut_ptr().add(j * padded);
                for (h, &v) in acc.iter().enumerate() {
                    let at = dst.add(16 * h);
                    let v = if first { v } else { _mm512_add_ps(_mm512_loadu_ps(at), v) };
                    _mm512_storeu_ps(at, v);
                }
            }
        }
    }

    /// See [`super::matvec`]: `y [rows, width] = xb [rows, d_in] · w [width, d_in]ᵀ`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX-512BW and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn matvec(xb: &[u16], rows: usize, w: &[bf16], d_in: usize, width: usize, y: &mut [f32]) {
        assert!(xb.len() >= rows * d_in && w.len() >= width * d_in && y.len() >= rows * width);
        // Accumulators: rows x outputs-per-pass <= 24 of the 32 vector registers. One row: 4
        // weight rows per pass, no software prefetch (measured on Zen 5 over 850 MB of 7B-shaped
        // matrices, `examples/matvec_variants.rs`: 48-50 GB/s, against 45-48 with 8 rows and a
        // 1 KiB prefetch; a plain 2-thread sum read 54-62).
        // SAFETY: as for this function.
        unsafe {
            match rows {
                1 => rows_pass::<1, 4>(xb, w, d_in, width, y),
                2 => rows_pass::<2, 6>(xb, w, d_in, width, y),
                3 => rows_pass::<3, 6>(xb, w, d_in, width, y),
                4 => rows_pass::<4, 4>(xb, w, d_in, width, y),
                5 | 6 => rows_pass_n::<6, 3>(xb, rows, w, d_in, width, y),
                _ => rows_pass_n::<8, 2>(xb, rows, w, d_in, width, y),
            }
        }
    }

    /// `rows <= R` through the `R`-row kernel: missing rows read row 0 again and are dropped.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn rows_pass_n<const R: usize, const O: usize>(xb: &[u16], rows: usize, w: &[bf16], d_in: usize, width: usize, y: &mut [f32]) {
        if rows == R {
            // SAFETY: as for `matvec`.
            return unsafe { rows_pass::<R, O>(xb, w, d_in, width, y) };
        }
        let mut x = xb[..rows * d_in].to_vec();
        x.resize(R * d_in, 0);
        let mut full = vec![0f32; R * width];
        // SAFETY: `x` holds R rows now, `full` R x width outputs.
        unsafe { rows_pass::<R, O>(&x, w, d_in, width, &mut full) };
        y[..rows * width].copy_from_slice(&full[..rows * width]);
    }

    /// 32 bf16 values at `p`, or the `mask`ed first ones.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    unsafe fn load32(p: *const u16, masked: bool, mask: __mmask32) -> __m512bh {
        // SAFETY: the callers pass 32 readable values, or as many as the mask selects.
        unsafe {
            let v = if masked { _mm512_maskz_loadu_epi16(mask, p as *const i16) } else { _mm512_loadu_si512(p as *const _) };
            std::mem::transmute(v)
        }
    }

    /// `R` rows, `O` weight rows per pass, each weight row streamed once, the next pass's rows
    /// prefetched into L2 alongside (the hardware prefetchers alone left the pass waiting on
    /// memory at every new group of rows: LLaMA-2-7B decode 1.94-1.96 -> 2.04-2.07 tok/s,
    /// TinyLlama bf16 11.57 -> 12.93, interleaved runs; the same into L1, or two passes
    /// ahead, measured no better).
    #[allow(clippy::needless_range_loop)] // const-size register arrays, indexed to unroll
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn rows_pass<const R: usize, const O: usize>(xb: &[u16], w: &[bf16], d_in: usize, width: usize, y: &mut [f32]) {
        let body = d_in / 32 * 32;
        let tail = d_in - body;
        let tail_mask: __mmask32 = if tail == 0 { 0 } else { (1u32 << tail) - 1 };
        let x = xb.as_ptr();
        let wp = w.as_ptr() as *const u16;
        let mut j = 0;
        while j < width {
            let outputs = (width - j).min(O);
            let mut acc = [[_mm512_setzero_ps(); O]; R];
            // SAFETY: inputs i..i + 32 (masked past d_in) of rows r < R and weight rows
            // j + o < width; an output past `width` in the last pass re-reads row j.
            unsafe {
                let mut i = 0;
                while i < d_in {
                    let masked = i == body;
                    let mut xv: [__m512bh; R] = [std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()); R];
                    for (r, xv) in xv.iter_mut().enumerate() {
                        *xv = load32(x.add(r * d_in + i), masked, tail_mask);
                    }
                    // The next pass's weight rows, the same line of each, into L2: twice the
                    // streams in flight, and each pass starts on rows already fetched.
                    if j + 2 * O <= width {
                        for o in 0..O {
                            _mm_prefetch::<_MM_HINT_T1>(wp.add((j + O + o) * d_in + i) as *const i8);
                        }
                    }
                    for o in 0..O {
                        let row = wp.add((j + if o < outputs { o } else { 0 }) * d_in + i);
                        let wv = load32(row, masked, tail_mask);
                        for r in 0..R {
                            acc[r][o] = _mm512_dpbf16_ps(acc[r][o], xv[r], wv);
                        }
                    }
                    i += if masked { tail } else { 32 };
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (o, &v) in acc.iter().enumerate().take(outputs) {
                    y[r * width + j + o] = _mm512_reduce_add_ps(v);
                }
            }
            j += O;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16_value(i: usize) -> f32 {
        bf16::from_f32(((i * 37 % 101) as f32 / 50.0) - 1.0).to_f32()
    }

    /// Weights `[d_out, d_in]` of several products, each with different values.
    fn weights(d_outs: &[usize], d_in: usize) -> Vec<Vec<bf16>> {
        d_outs
            .iter()
            .enumerate()
            .map(|(k, &d_out)| (0..d_out * d_in).map(|i| bf16::from_f32((((i + 7 * k) * 53 % 97) as f32 / 48.0) - 1.0)).collect())
            .collect()
    }

    /// The products of `weights`, product `biased` with `bias`.
    fn products<'a>(weights: &'a [Vec<bf16>], d_in: usize, biased: usize, bias: &'a [f32]) -> Vec<Product<'a>> {
        weights
            .iter()
            .enumerate()
            .map(|(k, w)| Product { weight: w, d_out: w.len() / d_in, bias: (k == biased).then_some(bias) })
            .collect()
    }

    #[test]
    fn equals_the_f64_product() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        // Rows around the 32-row tiles, outputs around the 12-wide tiles, inputs over several
        // blocks with a ragged last one.
        for &(rows, d_in, d_out) in &[(1, 2, 1), (9, 40, 13), (33, 130, 25), (64, 2 * K_BLOCK + 6, 37)] {
            let x: Vec<f32> = (0..rows * d_in).map(bf16_value).collect();
            let w: Vec<bf16> = (0..d_out * d_in).map(|i| bf16::from_f32(((i * 53 % 97) as f32 / 48.0) - 1.0)).collect();
            let bias: Vec<f32> = (0..d_out).map(|j| j as f32 / 7.0).collect();
            let y = matmul(&x, rows, &w, d_in, d_out, Some(&bias)).expect("kernel applies");
            for r in 0..rows {
                for j in 0..d_out {
                    let want: f64 = bias[j] as f64 + (0..d_in).map(|i| x[r * d_in + i] as f64 * w[j * d_in + i].to_f64()).sum::<f64>();
                    let got = y[r * d_out + j] as f64;
                    // Exact products, f32 sums of d_in terms of magnitude <= 1.
                    assert!((got - want).abs() <= 1e-6 * d_in as f64, "[{r}, {j}] of {rows}x{d_in}x{d_out}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn products_sharing_an_input_equal_one_at_a_time() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        // q/k/v-like: a wide product, two narrow ones (GQA's k and v), one with a bias.
        let (rows, d_in) = (45, 96);
        let x: Vec<f32> = (0..rows * d_in).map(bf16_value).collect();
        let weights = weights(&[96, 13, 13], d_in);
        let bias: Vec<f32> = (0..13).map(|j| j as f32 / 3.0).collect();
        let products = products(&weights, d_in, 2, &bias);
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        // (One kernel on both sides: the wide product alone would go to AMX where it exists.)
        for kernel in [Kernel::Dot, Kernel::Amx] {
            let Some(together) = matmul_many_on::<f32>(kernel, &xb, rows, &products, d_in) else { continue };
            for (p, y) in products.iter().zip(&together) {
                let alone = matmul_many_on::<f32>(kernel, &xb, rows, std::slice::from_ref(p), d_in).expect("kernel applies");
                assert_eq!(y, &alone[0], "{kernel:?}: product with {} outputs", p.d_out);
            }
        }
    }

    #[test]
    fn bf16_results_are_the_f32_results_rounded() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        // x in memory that is not 4-byte aligned too (packed from a copy), with a bias.
        let (rows, d_in, d_out) = (37, 70, 29);
        let x: Vec<bf16> = (0..rows * d_in + 1).map(|i| bf16::from_f32(bf16_value(i))).collect();
        let w: Vec<bf16> = (0..d_out * d_in).map(|i| bf16::from_f32(((i * 53 % 97) as f32 / 48.0) - 1.0)).collect();
        let bias: Vec<f32> = (0..d_out).map(|j| j as f32 / 7.0).collect();
        for x in [&x[..rows * d_in], &x[1..]] {
            let product = [Product { weight: &w, d_out, bias: Some(&bias) }];
            let y32 = matmul_many::<f32>(x, rows, &product, d_in).expect("kernel applies").pop().unwrap();
            let y16 = matmul_many::<bf16>(x, rows, &product, d_in).expect("kernel applies").pop().unwrap();
            let want: Vec<bf16> = y32.iter().map(|&v| bf16::from_f32(v)).collect();
            assert_eq!(y16, want);
            let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            assert_eq!(y32, matmul(&x32, rows, &w, d_in, d_out, Some(&bias)).unwrap(), "f32 input API");
        }
    }

    #[test]
    fn rounding_equals_half() {
        // Ties both ways, carries into the exponent, infinities, NaNs (quiet and signalling),
        // subnormals, and a sweep of other patterns.
        let special = [0x3f80_8000u32, 0x3f81_8000, 0x3f80_8001, 0x7f7f_ffff, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0x7f80_0001, 0xffa0_0000, 0x0000_8000, 0x0001_8000, 0x8000_0000];
        let sweep = (0..1u64 << 32).step_by(65_521).map(|b| b as u32);
        for bits in special.into_iter().chain(sweep) {
            assert_eq!(crate::element::round_to_bf16(bits), bf16::from_f32(f32::from_bits(bits)).to_bits(), "{bits:#x}");
        }
    }

    #[test]
    fn matvec_equals_the_f64_product() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        // Every row count, inputs below, at and past one vector of 32 with ragged tails,
        // outputs not a multiple of the passes' widths.
        for rows in 1..=MATVEC_ROWS {
            for &(d_in, d_out) in &[(7, 3), (32, 9), (75, 13), (300, 41)] {
                let x: Vec<f32> = (0..rows * d_in).map(bf16_value).collect();
                let w: Vec<bf16> = (0..d_out * d_in).map(|i| bf16::from_f32(((i * 53 % 97) as f32 / 48.0) - 1.0)).collect();
                let y = matvec(&x, rows, &w, d_in, d_out).expect("kernel applies");
                for r in 0..rows {
                    for j in 0..d_out {
                        let want: f64 = (0..d_in).map(|i| x[r * d_in + i] as f64 * w[j * d_in + i].to_f64()).sum();
                        let got = y[r * d_out + j] as f64;
                        assert!((got - want).abs() <= 1e-6 * d_in as f64, "[{r}, {j}] of {rows}x{d_in}x{d_out}: {got} vs {want}");
                    }
                }
            }
        }
        assert!(matvec(&[0.0; 9 * 4], 9, &[bf16::ZERO; 4], 4, 1).is_none(), "more rows than the kernel takes");
    }

    #[test]
    fn amx_equals_the_f64_product() {
        let fits = [Product { weight: &[], d_out: 16, bias: None }];
        if !Kernel::Amx.applies(32, &fits) {
            eprintln!("skipped: this CPU (or kernel) offers no AMX");
            return;
        }
        // Rows around the 32-row panels; outputs of one and of several pairs of 16-output tiles,
        // over a task's 96 and with an odd tile at the end; inputs over several blocks with a
        // short last one; q/k/v-like products sharing the input, one with a bias.
        for &(rows, d_in, d_outs) in &[(9, 32, &[16][..]), (33, 96, &[48, 16, 16]), (70, 2 * K_BLOCK + 96, &[112, 32])] {
            let x: Vec<bf16> = (0..rows * d_in).map(|i| bf16::from_f32(bf16_value(i))).collect();
            let weights = weights(d_outs, d_in);
            let bias: Vec<f32> = (0..d_outs[0]).map(|j| j as f32 / 7.0).collect();
            let products = products(&weights, d_in, 0, &bias);
            assert_eq!(Kernel::best(d_in, &products), Kernel::Amx);
            let ys = matmul_many_on::<f32>(Kernel::Amx, &x, rows, &products, d_in).expect("kernel applies");
            for (p, y) in products.iter().zip(&ys) {
                for r in 0..rows {
                    for j in 0..p.d_out {
                        let b = p.bias.map_or(0.0, |b| b[j] as f64);
                        let want: f64 = b + (0..d_in).map(|i| x[r * d_in + i].to_f64() * p.weight[j * d_in + i].to_f64()).sum::<f64>();
                        let got = y[r * p.d_out + j] as f64;
                        assert!((got - want).abs() <= 1e-6 * d_in as f64, "[{r}, {j}] of {rows}x{d_in}x{}: {got} vs {want}", p.d_out);
                    }
                }
            }
            // bf16 results (written transposed in registers) are the f32 ones rounded, bias
            // included, NaN and infinity kept.
            let rounded = matmul_many_on::<bf16>(Kernel::Amx, &x, rows, &products, d_in).expect("kernel applies");
            for (y, y16) in ys.iter().zip(&rounded) {
                assert_eq!(y16, &y.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(), "{rows}x{d_in}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if crate::isa::Isa::Avx512.supported() {
            // The transposing store alone, on special values: 32 outputs, 20 of 32 padded rows.
            let (outputs, padded, rows) = (32, 32, 20);
            let specials = [f32::NAN, f32::INFINITY, -0.0, 1.0 + f32::EPSILON, 3.4e38, -1e-40];
            let sums: Vec<f32> = (0..outputs * padded).map(|i| if i % 37 == 5 { specials[i % 6] } else { bf16_value(i * 13) * 1.001 }).collect();
            let bias: Vec<f32> = (0..outputs).map(|j| j as f32 / 3.0).collect();
            let mut dst = vec![MaybeUninit::new(bf16::ZERO); rows * 40];
            // SAFETY: AVX-512F checked; rows of 40 hold outputs 0..32 of each of the 20 rows.
            unsafe { x86::store_sums_bf16(&sums, padded, outputs, rows, Some(&bias), dst.as_mut_ptr(), 40) };
            for r in 0..rows {
                for j in 0..outputs {
                    // SAFETY: initialized above.
                    let got = unsafe { dst[r * 40 + j].assume_init() };
                    let want = bf16::from_f32(sums[j * padded + r] + bias[j]);
                    assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "[{r}, {j}]: {got} vs {want}");
                }
            }
        }
        // Shapes that are not whole tiles go to the dot-product kernel.
        assert_eq!(Kernel::best(40, &fits), Kernel::Dot);
        assert_eq!(Kernel::best(32, &[Product { weight: &[], d_out: 24, bias: None }]), Kernel::Dot);
    }

    #[test]
    fn matvec_many_equals_one_at_a_time() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        // Wide enough that the outputs come in several pieces (32 outputs at d_in 8192: a
        // product in two, short pieces at the ends of products); a bias on one of them.
        let d_in = 8192;
        for rows in [1, 3] {
            let x: Vec<bf16> = (0..rows * d_in).map(|i| bf16::from_f32(bf16_value(i))).collect();
            let weights = weights(&[40, 8, 24], d_in);
            let bias: Vec<f32> = (0..8).map(|j| j as f32 / 3.0).collect();
            let products = products(&weights, d_in, 1, &bias);
            let together = matvec_many::<f32>(&x, rows, &products, d_in).expect("kernel applies");
            let rounded = matvec_many::<bf16>(&x, rows, &products, d_in).expect("kernel applies");
            let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            for ((p, y), y16) in products.iter().zip(&together).zip(&rounded) {
                let mut alone = matvec(&x32, rows, p.weight, d_in, p.d_out).expect("kernel applies");
                if let Some(b) = p.bias {
                    alone.chunks_exact_mut(p.d_out).for_each(|row| row.iter_mut().zip(b).for_each(|(y, b)| *y += b));
                }
                assert_eq!(y, &alone, "rows {rows}, product with {} outputs", p.d_out);
                assert_eq!(y16, &y.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn odd_inputs_are_left_to_the_caller() {
        assert!(matmul(&[0.0; 3], 1, &[bf16::ZERO; 3], 3, 1, None).is_none());
    }
}
