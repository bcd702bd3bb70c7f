//! Scaled dot-product attention, `softmax(q kᵀ · scale + bias) v`, for every model here.
//!
//! On Burn's CPU backend with plain f32 tensors the scores of a block of queries are computed
//! with the `gemm` crate on operands already in the layout its kernels read (no re-packing), the
//! softmax with AVX-512 (exp by a degree-7 polynomial, below f32 rounding), and the values with
//! gemm again; the softmax's division is applied to the Dv outputs of a query rather than to its
//! Tk probabilities (as flash attention does: one pass over the scores fewer). Threads go over
//! heads and query blocks. Burn 0.22's CPU attention runs the softmax in scalar code with libm's
//! `expf`, a fifth of ESM-2's time at 1024 residues. Anything else (autodiff, other backends and
//! dtypes, shapes the kernel does not take) goes to Burn's `attention`, with the same semantics:
//! a query whose keys are all masked (`-inf` bias) attends to nothing and gets zeros.

use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, TensorData, bf16, f16};
use rayon::prelude::*;

use crate::element::{Element, Float, WeightLayout};
use crate::flex::contiguous_flex;
use crate::matmul::gemm::gemm_column_major;
use crate::matmul::matvec::{MAX_ROWS, matvec_here};
use crate::parallel::Shared;

/// Queries per task: a 64 x 1024 block of scores is 256 KiB, in a core's L2 cache.
const QUERY_BLOCK: usize = 64;

/// `softmax(q kᵀ · scale + bias) v` for `q [B, H, Tq, D]`, `k [B, H, Tk, D]`, `v [B, H, Tk, Dv]`
/// and an additive `bias` broadcast from `[B or 1, H or 1, Tq or 1, Tk]`, in `q`'s dtype. `k`
/// and `v` may be in another float dtype (a 16-bit KV cache with an f32 query): the CPU kernel
/// widens them a head at a time instead of casting the whole cache at every decoding step.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f64) -> Tensor<4> {
    if q.dtype() == DType::F32
        && let Some(out) = try_cpu(&q, &k, &v, bias.as_ref(), scale, Merge::None)
    {
        return Tensor::from_data(out, &q.device());
    }
    burn_fallback(q, k, v, bias, scale)
}

/// Attention with the heads merged back into the tokens' rows, in `q`'s dtype (f32, f16 or
/// bf16; the scores and sums in f32, one rounding at the end, as [`attention`] then a cast):
/// `q [B, Hkv, rep·T, D]` holds the `rep` query heads that share each KV head folded into its
/// rows (GQA; `rep` = 1 for plain multi-head attention), `k [B, Hkv, Tk, D]`, `v [B, Hkv, Tk,
/// Dv]`, and the result is `[B, T, Hkv·rep·Dv]`, the output projection's input. On the CPU
/// kernel that saves the cast and the transposing copy of separate ops.
pub fn attention_merged(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f64, rep: usize) -> Tensor<3> {
    let [b, hkv, rows, _] = q.dims();
    let dv = v.dims()[3];
    assert!(rep > 0 && rows % rep == 0, "{rows} query rows per KV head do not fold {rep} heads");
    let (t, dtype) = (rows / rep, q.dtype());
    if let Some(out) = try_cpu(&q, &k, &v, bias.as_ref(), scale, Merge::Tokens { rep }) {
        return Tensor::from_data(out, (&q.device(), dtype));
    }
    burn_fallback(q.cast(DType::F32), k, v, bias, scale)
        .cast(dtype)
        .reshape([b, hkv * rep, t, dv])
        .swap_dims(1, 2)
        .reshape([b, t, hkv * rep * dv])
}

/// Independent attentions, one per sequence of a decoding batch (each sequence's new queries
/// against its own cache, no bias), each computed exactly as [`attention_merged`] computes it
/// alone. On the CPU they run side by side on the decoding threads, one sequence per piece of
/// work: one at a time, each call was too short for rayon's sleeping workers to join, and a
/// batch of 64 spent a tenth of its step in attention on one thread.
pub fn attention_merged_rows(items: Vec<(Tensor<4>, Tensor<4>, Tensor<4>)>, scale: f64, rep: usize) -> Vec<Tensor<3>> {
    // Burn's CPU backend (only asked, not copied: a narrowed query is not contiguous).
    let cpu = items.first().is_some_and(|(q, _, _)| q.clone().try_into_primitive::<burn::backend::flex::Flex>().is_ok());
    if items.len() < 2 || !cpu {
        return items.into_iter().map(|(q, k, v)| attention_merged(q, k, v, None, scale, rep)).collect();
    }
    let results: Vec<std::sync::Mutex<Option<Tensor<3>>>> = items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    crate::parallel::share_pieces(items.len(), rayon::current_num_threads(), |i, _: &mut ()| {
        let (q, k, v) = items[i].clone();
        // Each sequence's heads on this thread: the threads are busy with the other sequences.
        let out = crate::parallel::on_this_thread(|| attention_merged(q, k, v, None, scale, rep));
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
    });
    results.into_iter().map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every sequence computed")).collect()
}

fn burn_fallback(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f64) -> Tensor<4> {
    let (k, v) = (k.cast(q.dtype()), v.cast(q.dtype()));
    let options = AttentionModuleOptions {
        scale: Some(scale),
        ..Default::default()
    };
    burn_attention(q, k, v, None, bias, options)
}

/// Where the kernel writes a head's output rows.
#[derive(Clone, Copy)]
enum Merge {
    /// `[B, H, Tq, Dv]`, as the heads come.
    None,
    /// `[B, Tq / rep, H·rep, Dv]`: see [`attention_merged`].
    Tokens { rep: usize },
}

/// The output as `TensorData` in `q`'s dtype (`Merge::None` keeps f32 only), or `None` for
/// anything the kernel does not take.
fn try_cpu(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: Option<&Tensor<4>>, scale: f64, merge: Merge) -> Option<TensorData> {
    let [b, h, tq, d] = q.dims();
    let [kb, kh, tk, kd] = k.dims();
    let [vb, vh, vt, dv] = v.dims();
    let kv_dtype = k.dtype();
    let float = |t: DType| matches!(t, DType::F32 | DType::F16 | DType::BF16);
    if (kb, kh, kd, vb, vh, vt) != (b, h, d, b, h, tk) || !float(q.dtype()) || v.dtype() != kv_dtype || !float(kv_dtype) {
        return None;
    }
    if b * h * tq * tk * d * dv == 0 {
        return None;
    }
    let bias = match bias {
        Some(bias) => {
            let [bb, bh, bq, bk] = bias.dims();
            let fits = |n: usize, full: usize| n == 1 || n == full;
            if bias.dtype() != DType::F32 || !fits(bb, b) || !fits(bh, h) || !fits(bq, tq) || bk != tk {
                return None;
            }
            Some((contiguous_flex(bias)?, [bb, bh, bq]))
        }
        None => None,
    };
    let q = contiguous_flex(q)?;
    let (k, v) = (HeadsView::new(k)?, HeadsView::new(v)?);
    let bias = bias.as_ref().map(|(t, dims)| (t.as_slice::<f32>().expect("contiguous f32"), *dims));
    let s = Shape { b, h, tq, tk, d, dv };
    let scale = scale as f32;
    let dims: Vec<usize> = match merge {
        Merge::None => vec![b, h, tq, dv],
        Merge::Tokens { rep } => vec![b, tq / rep, h * rep * dv],
    };
    /// Dispatches over the three dtypes of `k`/`v`.
    macro_rules! with_kv {
        ($q:expr, $out:ty) => {
            match kv_dtype {
                DType::F32 => attend::<_, _, $out>($q, k.heads::<f32>(), v.heads::<f32>(), bias, scale, s, merge),
                DType::F16 => attend::<_, _, $out>($q, k.heads::<f16>(), v.heads::<f16>(), bias, scale, s, merge),
                _ => attend::<_, _, $out>($q, k.heads::<bf16>(), v.heads::<bf16>(), bias, scale, s, merge),
            }
        };
    }
    Some(match q.dtype() {
        DType::F32 => TensorData::new(with_kv!(q.as_slice::<f32>()?, f32), dims),
        DType::F16 => TensorData::new(with_kv!(q.as_slice::<f16>()?, f16), dims),
        _ => TensorData::new(with_kv!(q.as_slice::<bf16>()?, bf16), dims),
    })
}

/// A `[B, H, S, D]` tensor whose heads each lie contiguous (`[S, D]` row-major) somewhere in
/// its storage: a contiguous tensor, or a view of the filled part of a KV cache's buffers
/// (`LayerCache`), read in place. Anything else is copied contiguous first.
struct HeadsView {
    tensor: burn::backend::flex::FlexTensor,
    layout: Heads,
}

/// Where head `(b, h)` starts in the storage.
#[derive(Clone, Copy)]
struct Heads {
    start: usize,
    batch_stride: usize,
    head_stride: usize,
}

impl Heads {
    fn at(self, b: usize, h: usize) -> usize {
        self.start + b * self.batch_stride + h * self.head_stride
    }
}

impl HeadsView {
    fn new(t: &Tensor<4>) -> Option<HeadsView> {
        let [_, h, s, d] = t.dims();
        let tensor: burn::backend::flex::FlexTensor = t.clone().try_into_primitive::<burn::backend::flex::Flex>().ok()?;
        let strides = tensor.layout().strides();
        let rows_contiguous = strides[3] == 1 && (s == 1 || strides[2] == d as isize);
        if rows_contiguous && strides[0] >= 0 && strides[1] >= 0 {
            let layout = Heads {
                start: tensor.layout().start_offset(),
                batch_stride: strides[0] as usize,
                head_stride: strides[1] as usize,
            };
            return Some(HeadsView { tensor, layout });
        }
        let tensor = tensor.to_contiguous();
        let layout = Heads {
            start: tensor.layout().start_offset(),
            batch_stride: h * s * d,
            head_stride: s * d,
        };
        Some(HeadsView { tensor, layout })
    }

    /// The whole storage and where the heads are in it.
    fn heads<T: burn::tensor::Element + bytemuck::Pod>(&self) -> (&[T], Heads) {
        (self.tensor.storage::<T>(), self.layout)
    }
}

#[derive(Clone, Copy)]
struct Shape {
    b: usize,
    h: usize,
    tq: usize,
    tk: usize,
    d: usize,
    dv: usize,
}

/// The bias rows of broadcast dims `[bb, bh, bq]` (each 1 or full), `tk` values per row.
type Bias<'a> = Option<(&'a [f32], [usize; 3])>;

/// Below this many scores and cached values, the heads run on the calling thread.
const PARALLEL_WORK: usize = 1 << 16;

/// Whether a bias value masks its key outright (`exp` of it is 0 whatever the score): the
/// values our masks and HF's use.
fn masks(bias: f32) -> bool {
    bias == f32::MIN || bias == f32::NEG_INFINITY
}

/// Keys a block of queries has to look at: past the last key that some query's bias leaves
/// unmasked, every key is masked for every query of the block (a causal prompt's later keys
/// for its earlier queries), and its `exp` would be 0. All keys where a query has every key
/// masked (its softmax is then uniform or zero, which the full row decides). Pass the rows
/// last first: a causal block's last query needs the most keys, and each earlier row then only
/// checks the keys past those, in one vectorized pass.
fn keys_needed<'a>(bias_rows: impl Iterator<Item = Option<&'a [f32]>>, tk: usize) -> usize {
    let mut needed = 0;
    for row in bias_rows {
        let Some(row) = row else { return tk };
        if row[needed..].iter().fold(false, |any, &x| any | !masks(x)) {
            needed = row.iter().rposition(|&x| !masks(x)).expect("an unmasked key") + 1;
        } else if !row[..needed].iter().any(|&x| !masks(x)) {
            return tk; // every key of this query masked
        }
        if needed == tk {
            break;
        }
    }
    needed
}

/// The output in `O` with the heads laid out as `merge` says; threads over heads and blocks of
/// [`QUERY_BLOCK`] queries.
fn attend<Q: Element, T: Element, O: Float>(q: &[Q], (k, k_heads): (&[T], Heads), (v, v_heads): (&[T], Heads), bias: Bias, scale: f32, s: Shape, merge: Merge) -> Vec<O> {
    let Shape { b, h, tq, tk, d, dv } = s;
    let mut out: Vec<O> = Vec::with_capacity(b * h * tq * dv);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr());
    // Where output row `row` of head `head` goes.
    let dst_row = move |head: usize, row: usize| -> usize {
        match merge {
            Merge::None => head * tq + row,
            Merge::Tokens { rep } => {
                let (bi, hi, t) = (head / h, head % h, tq / rep);
                (bi * t + row % t) * h * rep + hi * rep + row / t
            }
        }
    };
    let parallel = b * h * tk * (tq + d + dv) >= PARALLEL_WORK && !crate::parallel::on_one_thread();
    // A prompt's few queries (a chunk after a prefix-cache hit) take the prompt path too, so that
    // they equal those queries computed among the whole prompt's (read here: the heads may run on
    // other threads).
    let few = tq <= MAX_ROWS && !crate::matmul::in_prompt();
    let one_head = |head: usize| {
        let (bi, hi) = (head / h, head % h);
        let q = &q[head * tq * d..(head + 1) * tq * d];
        let bias_row = |row: usize| {
            bias.map(|(values, [bb, bh, bq])| {
                let at = ((if bb == 1 { 0 } else { bi }) * bh + if bh == 1 { 0 } else { hi }) * bq + if bq == 1 { 0 } else { row };
                &values[at * tk..(at + 1) * tk]
            })
        };
        // The output row `row` (f32, softmax's division still to apply) written where it goes.
        let emit = |row: usize, values: &mut [f32], inv_sum: f32| {
            values.iter_mut().for_each(|x| *x *= inv_sum);
            // SAFETY: output row `dst_row(head, row)` is inside the capacity (b·h·tq rows of dv)
            // and written by this task only: the map is one-to-one.
            let dst = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(dst_row(head, row) * dv), dv) };
            // SAFETY: only O values are written into the uninitialized row.
            O::narrow(values, unsafe { &mut *(dst as *mut [std::mem::MaybeUninit<O>] as *mut [O]) });
        };
        if few {
            // Decoding (a few queries): scores and outputs as matrix-vector products that read
            // the cached keys and values in their dtype, widened in registers, instead of a
            // widened copy, a transpose and gemm's set-up per head and step.
            let k = &k[k_heads.at(bi, hi)..][..tk * d];
            let v = &v[v_heads.at(bi, hi)..][..tk * dv];
            let mut q_wide = Vec::new();
            let q = Q::as_f32_tile(q, &mut q_wide);
            let mut scores = vec![0f32; tq * tk];
            matvec_here(q, tq, k, WeightLayout::OutputMajor, d, tk, &mut scores);
            let inv_sums: Vec<f32> = scores.chunks_exact_mut(tk).enumerate().map(|(r, row)| exp_row(row, scale, bias_row(r))).collect();
            let mut rows_out = vec![0f32; tq * dv];
            matvec_here(&scores, tq, v, WeightLayout::InputMajor, tk, dv, &mut rows_out);
            for (r, (row, inv)) in rows_out.chunks_exact_mut(dv).zip(inv_sums).enumerate() {
                emit(r, row, inv);
            }
            return;
        }
        let (mut k_wide, mut v_wide) = (Vec::new(), Vec::new());
        let k = T::as_f32_tile(&k[k_heads.at(bi, hi)..][..tk * d], &mut k_wide);
        let v = T::as_f32_tile(&v[v_heads.at(bi, hi)..][..tk * dv], &mut v_wide);
        // kᵀ [D, Tk]: the scores' left operand column-major, read in place by gemm.
        let mut kt = Vec::with_capacity(tk * d);
        crate::transpose::block(k, tk, d, d, kt.spare_capacity_mut(), tk);
        // SAFETY: the transpose wrote all tk x d values.
        unsafe { kt.set_len(tk * d) };
        let query_block = |(scores, q_wide, block_out): &mut (Vec<f32>, Vec<f32>, Vec<f32>), block: usize| {
            let q0 = block * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(tq - q0);
            let q = Q::as_f32_tile(&q[q0 * d..(q0 + rows) * d], q_wide);
            // A one-query block (the last, when heads are merged) is computed as two copies of
            // it: each row's numbers must not depend on where a chunk of the prompt ends (the
            // server's prefix cache computes a prompt's rest apart from its start), and
            // `gemm_column_major` gives a single column those numbers only on its scalar path;
            // two columns keep it on gemm's blocked kernel.
            let mut two = Vec::new();
            let (q, cols) = if rows == 1 {
                two.extend_from_slice(q);
                two.extend_from_slice(q);
                (&two[..], 2)
            } else {
                (q, rows)
            };
            let keys = keys_needed((q0..q0 + rows).rev().map(bias_row), tk);
            scores.resize(cols * keys, 0.0);
            block_out.resize(cols * dv, 0.0);
            // scoresᵀ [keys, cols] column-major (= scores [cols, keys] row-major) = k · qᵀ,
            // with kᵀ as the column-major left operand and this block of q's rows as
            // contiguous columns.
            gemm_column_major(keys, cols, d, scores, &kt, tk, q, d, gemm::Parallelism::None);
            let mut inv_sums = [0f32; QUERY_BLOCK];
            for (r, row) in scores.chunks_exact_mut(keys).enumerate() {
                inv_sums[r] = exp_row(row, scale, bias_row(q0 + r.min(rows - 1)).map(|b| &b[..keys]));
            }
            // outᵀ [Dv, cols] column-major (= out [cols, Dv] row-major) = vᵀ · pᵀ: v row-major is
            // vᵀ column-major, and the probabilities' rows are contiguous columns.
            gemm_column_major(dv, cols, keys, block_out, v, dv, scores, keys, gemm::Parallelism::None);
            block_out.truncate(rows * dv);
            // The softmax's division, on Dv outputs per query instead of Tk probabilities.
            for (r, (row, inv)) in block_out.chunks_exact_mut(dv).zip(inv_sums).enumerate() {
                emit(q0 + r, row, inv);
            }
        };
        let blocks = tq.div_ceil(QUERY_BLOCK);
        if parallel {
            (0..blocks).into_par_iter().for_each_init(Default::default, query_block);
        } else {
            let mut buffers = Default::default();
            (0..blocks).for_each(|block| query_block(&mut buffers, block));
        }
    };
    if parallel {
        (0..b * h).into_par_iter().for_each(one_head);
    } else {
        (0..b * h).for_each(one_head);
    }
    // SAFETY: the tasks wrote every row of every head.
    unsafe { out.set_len(b * h * tq * dv) };
    out
}

/// `row = exp(row · scale + bias - max)` in place, returning `1 / sum(row)`: the softmax
/// without its division, which the caller applies to the (much shorter) output rows. A row
/// whose scores are all `-inf` becomes zeros and returns 0.
fn exp_row(row: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::isa::current() >= crate::isa::Isa::Avx512 {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { x86::exp_row(row, scale, bias) };
        }
        if crate::isa::current() >= crate::isa::Isa::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { x86::exp_row_avx2(row, scale, bias) };
        }
    }
    exp_row_scalar(row, scale, bias)
}

/// The reference for the vector versions, and the path on CPUs without AVX2.
pub fn exp_row_scalar(row: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32 {
    for (i, s) in row.iter_mut().enumerate() {
        *s = *s * scale + bias.map_or(0.0, |b| b[i]);
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return 0.0;
    }
    let mut sum = 0.0;
    for s in row.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    1.0 / sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::math::x86::{exp8, exp16, max8, sum8};
    use std::arch::x86_64::*;

    /// [`exp_row`] over 8 lanes; the tail (under 8 scores) in a padded copy whose extra lanes
    /// are `-inf` (no effect on the max, `exp` 0 in the sum).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_row_avx2(row: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32 {
        let n = row.len();
        assert!(bias.is_none_or(|b| b.len() == n));
        let whole = n / 8 * 8;
        let mut tail = [f32::NEG_INFINITY; 8];
        for i in whole..n {
            tail[i - whole] = row[i] * scale + bias.map_or(0.0, |b| b[i]);
        }
        let tail_v = unsafe { _mm256_loadu_ps(tail.as_ptr()) };
        let p = row.as_mut_ptr();
        let rewrite = scale != 1.0 || bias.is_some();
        let scale_v = _mm256_set1_ps(scale);
        let mut max_v = tail_v;
        // SAFETY (all blocks): every access is below `whole` <= `n`.
        for i in (0..whole).step_by(8) {
            let mut s = unsafe { _mm256_loadu_ps(p.add(i)) };
            if rewrite {
                s = _mm256_mul_ps(s, scale_v);
                if let Some(b) = bias {
                    s = unsafe { _mm256_add_ps(s, _mm256_loadu_ps(b.as_ptr().add(i))) };
                }
                unsafe { _mm256_storeu_ps(p.add(i), s) };
            }
            max_v = _mm256_max_ps(max_v, s);
        }
        let max = max8(max_v);
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            return 0.0;
        }
        let max_v = _mm256_set1_ps(max);
        // Score i goes into lane i % 8 in order, the tail last: a longer row whose extra scores
        // are masked (a causal block's later keys) then sums to the same number.
        let mut sum_v = _mm256_setzero_ps();
        for i in (0..whole).step_by(8) {
            let e = exp8(_mm256_sub_ps(unsafe { _mm256_loadu_ps(p.add(i)) }, max_v));
            unsafe { _mm256_storeu_ps(p.add(i), e) };
            sum_v = _mm256_add_ps(sum_v, e);
        }
        let tail_e = exp8(_mm256_sub_ps(tail_v, max_v));
        sum_v = _mm256_add_ps(sum_v, tail_e);
        unsafe { _mm256_storeu_ps(tail.as_mut_ptr(), tail_e) };
        row[whole..].copy_from_slice(&tail[..n - whole]);
        1.0 / sum8(sum_v)
    }

    /// See [`super::exp_row`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_row(row: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32 {
        let n = row.len();
        assert!(bias.is_none_or(|b| b.len() == n));
        let p = row.as_mut_ptr();
        let lanes = |i: usize| -> __mmask16 { if n - i >= 16 { 0xffff } else { (1u32 << (n - i)) as u16 - 1 } };
        // Unscaled, unbiased scores (ESM scales q beforehand) need no rewriting pass.
        let rewrite = scale != 1.0 || bias.is_some();
        let scale_v = _mm512_set1_ps(scale);
        let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut max_v = neg_inf;
        // SAFETY (all blocks): every access is masked to the lanes below `n`.
        for i in (0..n).step_by(16) {
            let m = lanes(i);
            let mut s = unsafe { _mm512_maskz_loadu_ps(m, p.add(i)) };
            if rewrite {
                s = _mm512_mul_ps(s, scale_v);
                if let Some(b) = bias {
                    s = unsafe { _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, b.as_ptr().add(i))) };
                }
                unsafe { _mm512_mask_storeu_ps(p.add(i), m, s) };
            }
            max_v = _mm512_mask_max_ps(max_v, m, max_v, s);
        }
        let max = _mm512_reduce_max_ps(max_v);
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            return 0.0;
        }
        let max_v = _mm512_set1_ps(max);
        let mut sum_v = _mm512_setzero_ps();
        for i in (0..n).step_by(16) {
            let m = lanes(i);
            let e = exp16(_mm512_sub_ps(unsafe { _mm512_maskz_loadu_ps(m, p.add(i)) }, max_v));
            unsafe { _mm512_mask_storeu_ps(p.add(i), m, e) };
            sum_v = _mm512_mask_add_ps(sum_v, m, sum_v, e);
        }
        1.0 / _mm512_reduce_add_ps(sum_v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0) - 1.0).collect()
    }

    fn tensor(v: Vec<f32>, dims: [usize; 4]) -> Tensor<4> {
        Tensor::from_data(TensorData::new(v, dims), &Device::flex())
    }

    /// The CPU kernel in the heads' layout, f32.
    fn kernel(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: Option<&Tensor<4>>, scale: f64) -> Option<Tensor<4>> {
        Some(Tensor::from_data(try_cpu(q, k, v, bias, scale, Merge::None)?, &Device::flex()))
    }

    /// A causal mask `[1, 1, t, t]` with HF's value for masked keys.
    fn causal(t: usize) -> Tensor<4> {
        let m: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::MIN } else { 0.0 }).collect();
        tensor(m, [1, 1, t, t])
    }

    /// A causal prompt of two query blocks and a tail (the later keys skipped for the first
    /// block) equals Burn's attention, which looks at every key.
    #[test]
    fn causal_prompts_equal_burn_attention() {
        let (b, h, t, d) = (1, 2, 2 * QUERY_BLOCK + 6, 8);
        let q = tensor(values(b * h * t * d, 1), [b, h, t, d]);
        let k = tensor(values(b * h * t * d, 2), [b, h, t, d]);
        let v = tensor(values(b * h * t * d, 3), [b, h, t, d]);
        let ours: Vec<f32> = kernel(&q, &k, &v, Some(&causal(t)), 0.35).unwrap().into_data().try_to_vec().unwrap();
        let options = AttentionModuleOptions { scale: Some(0.35), ..Default::default() };
        let theirs: Vec<f32> = burn_attention(q, k, v, None, Some(causal(t)), options).into_data().try_to_vec().unwrap();
        for (i, (a, t)) in ours.iter().zip(&theirs).enumerate() {
            assert!((a - t).abs() <= 1e-6 + 1e-5 * t.abs(), "[{i}] ours {a}, Burn {t}");
        }
        let rows = |bias: &[f32], n: usize| keys_needed(bias.chunks(n).map(Some), n);
        let m: Vec<f32> = causal(t).into_data().try_to_vec().unwrap();
        assert_eq!(rows(&m[..QUERY_BLOCK * t], t), QUERY_BLOCK, "the first block needs its own keys only");
        let mut one_masked_row = m[..QUERY_BLOCK * t].to_vec();
        one_masked_row[t..2 * t].fill(f32::NEG_INFINITY);
        assert_eq!(rows(&one_masked_row, t), t, "a query with every key masked keeps them all");
    }

    /// Keys and values viewed out of longer buffers (a KV cache's filled positions) are read
    /// in place and give what their contiguous copies give.
    #[test]
    fn cache_views_equal_contiguous_keys_and_values() {
        let (b, h, tq, tk, cap, d) = (2, 3, 4, 7, 12, 8);
        let q = tensor(values(b * h * tq * d, 1), [b, h, tq, d]);
        let buffer = |seed| tensor(values(b * h * cap * d, seed), [b, h, cap, d]).cast(DType::BF16);
        let (k, v) = (buffer(2).narrow(2, 0, tk), buffer(3).narrow(2, 0, tk));
        assert!(matches!(HeadsView::new(&k).unwrap().layout, Heads { head_stride, .. } if head_stride == cap * d), "read in place");
        let ours: Vec<f32> = kernel(&q, &k, &v, None, 0.3).unwrap().into_data().try_to_vec().unwrap();
        let (kc, vc) = (tensor(k.clone().cast(DType::F32).into_data().try_to_vec().unwrap(), [b, h, tk, d]), tensor(v.clone().cast(DType::F32).into_data().try_to_vec().unwrap(), [b, h, tk, d]));
        let want: Vec<f32> = kernel(&q, &kc.cast(DType::BF16), &vc.cast(DType::BF16), None, 0.3).unwrap().into_data().try_to_vec().unwrap();
        assert_eq!(ours, want);
    }

    /// The merged layout in f32, bf16 and f16 equals `attention`, cast, with the heads moved
    /// into the tokens' rows, for plain heads and for GQA's folded ones.
    #[test]
    fn merged_heads_equal_attention_then_transpose() {
        let (b, hkv, t, tk, d) = (2, 2, 9, 9, 8);
        for rep in [1, 3] {
            let q = tensor(values(b * hkv * rep * t * d, 1), [b, hkv, rep * t, d]);
            let k = tensor(values(b * hkv * tk * d, 2), [b, hkv, tk, d]);
            let v = tensor(values(b * hkv * tk * d, 3), [b, hkv, tk, d]);
            let mask = causal(t).repeat_dim(2, rep);
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let (q, k, v) = (q.clone().cast(dtype), k.clone().cast(dtype), v.clone().cast(dtype));
                let ours = attention_merged(q.clone(), k.clone(), v.clone(), Some(mask.clone()), 0.4, rep);
                assert_eq!((ours.dims(), ours.dtype()), ([b, t, hkv * rep * d], dtype));
                let want = attention(q.cast(DType::F32), k, v, Some(mask.clone()), 0.4)
                    .cast(dtype)
                    .reshape([b, hkv * rep, t, d])
                    .swap_dims(1, 2)
                    .reshape([b, t, hkv * rep * d]);
                let bits = |x: Tensor<3>| -> Vec<f32> { x.cast(DType::F32).into_data().try_to_vec().unwrap() };
                assert_eq!(bits(ours), bits(want), "rep {rep}, {dtype:?}");
            }
        }
    }

    /// Against Burn's attention (the fallback), with every broadcast of the bias, masked keys,
    /// fully masked queries and sizes that are not multiples of the blocks.
    #[test]
    fn equals_burn_attention() {
        // Prompt-sized (blocks of queries through gemm) and decoding-sized (matrix-vector).
        for tq in [70, 6] {
            equals_burn_attention_with(tq);
        }
    }

    fn equals_burn_attention_with(tq: usize) {
        let (b, h, tk, d, dv) = (2, 3, 37, 8, 5);
        let q = tensor(values(b * h * tq * d, 1), [b, h, tq, d]);
        let k = tensor(values(b * h * tk * d, 2), [b, h, tk, d]);
        let v = tensor(values(b * h * tk * dv, 3), [b, h, tk, dv]);
        for bias_dims in [None, Some([1, 1, 1, tk]), Some([b, 1, tq, tk]), Some([b, h, tq, tk]), Some([1, h, 1, tk])] {
            let bias = bias_dims.map(|dims: [usize; 4]| {
                let n: usize = dims.iter().product();
                let mut vals = values(n, 4);
                for (i, x) in vals.iter_mut().enumerate() {
                    if i % 7 == 3 || (dims[2] == tq && (i / tk) % tq == 5) {
                        *x = f32::NEG_INFINITY; // masked keys; query 5 fully masked
                    }
                }
                tensor(vals, dims)
            });
            let ours = kernel(&q, &k, &v, bias.as_ref(), 0.35).expect("the kernel takes these operands");
            let options = AttentionModuleOptions { scale: Some(0.35), ..Default::default() };
            let theirs = burn_attention(q.clone(), k.clone(), v.clone(), None, bias, options);
            let (ours, theirs): (Vec<f32>, Vec<f32>) = (ours.into_data().try_to_vec().unwrap(), theirs.into_data().try_to_vec().unwrap());
            for (i, (a, t)) in ours.iter().zip(&theirs).enumerate() {
                assert!((a - t).abs() <= 1e-6 + 1e-5 * t.abs(), "bias {bias_dims:?}: [{i}] ours {a}, Burn {t}");
            }
        }
    }

    #[test]
    fn half_precision_keys_and_values_equal_their_f32_cast() {
        let (b, h, tq, tk, d) = (1, 4, 3, 50, 8);
        let q = tensor(values(b * h * tq * d, 1), [b, h, tq, d]);
        let k = tensor(values(b * h * tk * d, 2), [b, h, tk, d]);
        let v = tensor(values(b * h * tk * d, 3), [b, h, tk, d]);
        for dtype in [DType::F16, DType::BF16] {
            let (k16, v16) = (k.clone().cast(dtype), v.clone().cast(dtype));
            let ours: Vec<f32> = kernel(&q, &k16, &v16, None, 0.3).expect("16-bit K/V taken").into_data().try_to_vec().unwrap();
            let want: Vec<f32> = kernel(&q, &k16.cast(DType::F32), &v16.cast(DType::F32), None, 0.3).unwrap().into_data().try_to_vec().unwrap();
            assert_eq!(ours, want, "{dtype:?}");
            // And the fallback casts to the query's dtype too.
            let options = AttentionModuleOptions { scale: Some(0.3), ..Default::default() };
            let burn: Vec<f32> = burn_attention(q.clone(), k.clone().cast(dtype).cast(DType::F32), v.clone().cast(dtype).cast(DType::F32), None, None, options).into_data().try_to_vec().unwrap();
            for (a, t) in ours.iter().zip(&burn) {
                assert!((a - t).abs() <= 1e-5, "{dtype:?}: {a} vs {t}");
            }
        }
    }

    /// Every vector width this CPU has (AVX-512 and AVX2 here, whatever `BIOMEDGPT_CPU_ISA`
    /// says) against the scalar reference.
    #[test]
    fn vector_exp_row_equals_the_scalar_one() {
        type ExpRow = fn(&mut [f32], f32, Option<&[f32]>) -> f32;
        let mut paths: Vec<(&str, ExpRow)> = vec![("dispatched", exp_row)];
        #[cfg(target_arch = "x86_64")]
        {
            use crate::isa::Isa;
            // SAFETY (both): called only where the CPU supports the level.
            if Isa::Avx512.supported() {
                paths.push(("avx512", |r, s, b| unsafe { x86::exp_row(r, s, b) }));
            }
            if Isa::Avx2.supported() {
                paths.push(("avx2", |r, s, b| unsafe { x86::exp_row_avx2(r, s, b) }));
            }
        }
        for (name, path) in paths {
            for n in [1, 7, 8, 9, 15, 16, 17, 100] {
                let bias: Vec<f32> = values(n, 5).iter().enumerate().map(|(i, &x)| if i % 5 == 1 { f32::NEG_INFINITY } else { x }).collect();
                for (scale, bias) in [(0.7, Some(bias.as_slice())), (1.0, None), (0.5, None)] {
                    let mut a = values(n, 6);
                    let mut b = a.clone();
                    let inv_a = path(&mut a, scale, bias);
                    let inv_b = exp_row_scalar(&mut b, scale, bias);
                    assert!((inv_a - inv_b).abs() <= 1e-6 * inv_b, "{name} n {n}: 1/sum {inv_a} vs {inv_b}");
                    for (x, y) in a.iter().zip(&b) {
                        assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-30) + 1e-9, "{name} n {n}: {x} vs {y}");
                    }
                }
            }
            for n in [5, 20] {
                let mut masked = vec![f32::NEG_INFINITY; n];
                assert_eq!(path(&mut masked, 1.0, None), 0.0, "{name}");
                assert!(masked.iter().all(|&x| x == 0.0), "{name}");
            }
        }
    }

    /// A query's output is the same number whatever queries are computed with it: a causal
    /// prompt's later rows computed apart (as after a prefix-cache hit) equal those rows of the
    /// whole prompt, including a rest that leaves a one-query block (65 = 64 + 1 rows) and rests
    /// of one to eight queries (inside `prompt`).
    #[test]
    fn later_queries_computed_apart_equal_the_whole_prompt() {
        let (h, t, d) = (2, 700, 64);
        let q = values(h * t * d, 1);
        let k = tensor(values(h * t * d, 2), [1, h, t, d]);
        let v = tensor(values(h * t * d, 3), [1, h, t, d]);
        let run = |from: usize| -> Vec<f32> {
            let rows = t - from;
            let mask: Vec<f32> = (0..rows * t).map(|i| if i % t > from + i / t { f32::MIN } else { 0.0 }).collect();
            let qs: Vec<f32> = (0..h).flat_map(|hh| q[(hh * t + from) * d..(hh + 1) * t * d].to_vec()).collect();
            let out = try_cpu(&tensor(qs, [1, h, rows, d]), &k, &v, Some(&tensor(mask, [1, 1, rows, t])), 0.125, Merge::None).unwrap();
            out.try_to_vec().unwrap()
        };
        let full = run(0);
        // Rests of 8 queries or fewer: inside `prompt` (a prompt's chunk), as the server runs them.
        for from in [9usize, 17, 18, 33, 635, 692, 695, 698, 699] {
            let part = if t - from <= MAX_ROWS { crate::matmul::prompt(|| run(from)) } else { run(from) };
            let rows = t - from;
            for hh in 0..h {
                for r in 0..rows {
                    for c in 0..d {
                        let (a, b) = (part[(hh * rows + r) * d + c], full[(hh * t + r + from) * d + c]);
                        assert_eq!(a.to_bits(), b.to_bits(), "from {from}: head {hh}, query {}, value {c}", r + from);
                    }
                }
            }
        }
    }

    /// A prompt's first positions prefilled alone (a first chunk: only their own keys) equal those
    /// rows of the whole prompt, for chunks of 1 to 70 positions (inside `prompt`).
    #[test]
    fn a_first_chunk_equals_the_whole_prompt() {
        let (h, t, d) = (2, 150, 64);
        let (q, k, v) = (values(h * t * d, 1), values(h * t * d, 2), values(h * t * d, 3));
        let run = |len: usize| -> Vec<f32> {
            let part = |x: &[f32]| -> Vec<f32> { (0..h).flat_map(|hh| x[hh * t * d..(hh * t + len) * d].to_vec()).collect() };
            let mask: Vec<f32> = (0..len * len).map(|i| if i % len > i / len { f32::MIN } else { 0.0 }).collect();
            let (q, k, v) = (tensor(part(&q), [1, h, len, d]), tensor(part(&k), [1, h, len, d]), tensor(part(&v), [1, h, len, d]));
            let out = crate::matmul::prompt(|| try_cpu(&q, &k, &v, Some(&tensor(mask, [1, 1, len, len])), 0.125, Merge::None).unwrap());
            out.try_to_vec().unwrap()
        };
        let full = run(t);
        for len in [1usize, 2, 3, 5, 8, 9, 16, 17, 64, 65, 70] {
            let part = run(len);
            for hh in 0..h {
                for r in 0..len {
                    for c in 0..d {
                        let (a, b) = (part[(hh * len + r) * d + c], full[(hh * t + r) * d + c]);
                        assert_eq!(a.to_bits(), b.to_bits(), "first {len}: head {hh}, query {r}, value {c}");
                    }
                }
            }
        }
    }
}

