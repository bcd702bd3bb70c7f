//! Rotary position embedding in one pass on the CPU backend (f32, f16, bf16).
//!
//! Burn's ops take five passes over the heads (two narrows, a negation, a concatenation, two
//! products and a sum, each allocating; in 16-bit types each also converting). Here each
//! `[head_dim]` row is read once from the (usually strided: heads split off with a dimension
//! swap) input and written contiguous, which is also the layout attention reads. Same arithmetic
//! as PyTorch: `x·cos + rotate_half(x)·sin`, each product and the sum computed in f32 (no fused
//! multiply-add) and rounded to the tensors' dtype, as PyTorch's CPU kernels do for 16-bit types.

use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, Tensor, TensorData, bf16, f16};
use rayon::prelude::*;

use crate::element::{Float, widen};
use crate::flex::contiguous_flex;

/// `x [B, H, T, D]` (any strides with a contiguous last dim) with `cos`/`sin` `[B or 1, 1, T, D]`
/// of `x`'s dtype (f32, f16 or bf16), plain tensors on Burn's CPU backend; `None` otherwise.
pub fn try_cpu(x: &Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<Tensor<4>> {
    let [b, h, t, d] = x.dims();
    let [cb, ch, ct, cd] = cos.dims();
    let dtype = x.dtype();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) || cos.dtype() != dtype || sin.dtype() != dtype {
        return None;
    }
    if (ch, ct, cd) != (1, t, d) || !(cb == 1 || cb == b) || sin.dims() != cos.dims() || d % 2 != 0 || b * h * t * d == 0 {
        return None;
    }
    let xf: FlexTensor = x.clone().try_into_primitive::<Flex>().ok()?;
    let layout = xf.layout();
    let strides = layout.strides();
    if strides[3] != 1 || strides.iter().any(|&s| s < 0) {
        return None;
    }
    let view = View {
        dims: [b, h, t, d],
        strides: [strides[0] as usize, strides[1] as usize, strides[2] as usize],
        start: layout.start_offset(),
        table_batch: cb,
    };
    let (cos_f, sin_f) = (contiguous_flex(cos)?, contiguous_flex(sin)?);
    let data = match dtype {
        DType::F32 => TensorData::new(rotate(xf.storage::<f32>(), &view, cos_f.as_slice()?, sin_f.as_slice()?)?, [b, h, t, d]),
        DType::F16 => TensorData::new(rotate(xf.storage::<f16>(), &view, cos_f.as_slice()?, sin_f.as_slice()?)?, [b, h, t, d]),
        _ => TensorData::new(rotate(xf.storage::<bf16>(), &view, cos_f.as_slice()?, sin_f.as_slice()?)?, [b, h, t, d]),
    };
    Some(Tensor::from_data(data, (&x.device(), dtype)))
}

/// Where the rows of a strided `[B, H, T, D]` input are.
struct View {
    dims: [usize; 4],
    /// Strides of B, H, T (D's is 1).
    strides: [usize; 3],
    start: usize,
    /// 1 (tables shared by the batch) or B.
    table_batch: usize,
}

/// The rotated rows, contiguous; `None` if a row would lie outside `storage`.
fn rotate<T: Float>(storage: &[T], v: &View, cos: &[T], sin: &[T]) -> Option<Vec<T>> {
    let [b, h, t, d] = v.dims;
    let [s0, s1, s2] = v.strides;
    // The last element any row reads must be inside the storage.
    if v.start + (b - 1) * s0 + (h - 1) * s1 + (t - 1) * s2 + d > storage.len() {
        return None;
    }
    let (mut cos32, mut sin32) = (vec![0f32; cos.len()], vec![0f32; sin.len()]);
    widen(cos, &mut cos32);
    widen(sin, &mut sin32);
    let mut out = vec![T::ZERO; b * h * t * d];
    let rows_per_task = (TASK / d).max(1);
    #[cfg(target_arch = "x86_64")]
    let (avx512, avx2) = (crate::isa::current() >= crate::isa::Isa::Avx512, crate::isa::current() >= crate::isa::Isa::Avx2);
    let task = |(task, out): (usize, &mut [T])| {
        for (j, out) in out.chunks_exact_mut(d).enumerate() {
            let i = task * rows_per_task + j;
            let (bi, hi, ti) = (i / (h * t), (i / t) % h, i % t);
            let x = &storage[v.start + bi * s0 + hi * s1 + ti * s2..][..d];
            let at = ((if v.table_batch == 1 { 0 } else { bi }) * t + ti) * d;
            let (cos, sin) = (&cos32[at..at + d], &sin32[at..at + d]);
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                // SAFETY: the CPU supports AVX-512F (checked above).
                unsafe { rotate_row_avx512(x, cos, sin, out) };
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
                unsafe { rotate_row_avx2(x, cos, sin, out) };
                continue;
            }
            rotate_row(x, cos, sin, out);
        }
    };
    if b * h * t * d > TASK {
        out.par_chunks_mut(rows_per_task * d).enumerate().for_each(task);
    } else {
        out.chunks_mut(rows_per_task * d).enumerate().for_each(task);
    }
    Some(out)
}

/// Elements per task (and below which one thread does all).
const TASK: usize = 1 << 13;

/// [`rotate_row`] compiled for AVX-512 (the loop vectorizes, 16 lanes).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rotate_row_avx512<T: Float>(x: &[T], cos: &[f32], sin: &[f32], out: &mut [T]) {
    rotate_row(x, cos, sin, out)
}

/// [`rotate_row`] compiled for AVX2 (8 lanes; F16C converts 16-bit values).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rotate_row_avx2<T: Float>(x: &[T], cos: &[f32], sin: &[f32], out: &mut [T]) {
    rotate_row(x, cos, sin, out)
}

/// One row: `out = x·cos + rotate_half(x)·sin`, each product and the sum rounded to `T`.
/// Whole groups of [`LANES`] go through fixed-size arrays, which the compiler turns into vector
/// code (a plain loop over a runtime-length half stayed scalar for 16-bit types: 10x slower).
#[inline(always)]
fn rotate_row<T: Float>(x: &[T], cos: &[f32], sin: &[f32], out: &mut [T]) {
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (c1, c2) = cos.split_at(half);
    let (s1, s2) = sin.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    let whole = half / LANES * LANES;
    for k in (0..whole).step_by(LANES) {
        let group = k..k + LANES;
        rotate_lanes::<T, LANES>(
            [x1[group.clone()].try_into().unwrap(), x2[group.clone()].try_into().unwrap()],
            [c1[group.clone()].try_into().unwrap(), c2[group.clone()].try_into().unwrap()],
            [s1[group.clone()].try_into().unwrap(), s2[group.clone()].try_into().unwrap()],
            (&mut o1[group.clone()]).try_into().unwrap(),
            (&mut o2[group]).try_into().unwrap(),
        );
    }
    for k in whole..half {
        rotate_lanes::<T, 1>(
            [(&x1[k..=k]).try_into().unwrap(), (&x2[k..=k]).try_into().unwrap()],
            [(&c1[k..=k]).try_into().unwrap(), (&c2[k..=k]).try_into().unwrap()],
            [(&s1[k..=k]).try_into().unwrap(), (&s2[k..=k]).try_into().unwrap()],
            (&mut o1[k..=k]).try_into().unwrap(),
            (&mut o2[k..=k]).try_into().unwrap(),
        );
    }
}

/// f32 lanes of an AVX-512 register.
const LANES: usize = 16;

/// `L` positions of both halves: `[x1, x2]`, the cos and sin of each half, the two outputs.
#[inline(always)]
fn rotate_lanes<T: Float, const L: usize>(x: [&[T; L]; 2], cos: [&[f32; L]; 2], sin: [&[f32; L]; 2], o1: &mut [T; L], o2: &mut [T; L]) {
    for k in 0..L {
        let (a, b) = (x[0][k].to_f32(), x[1][k].to_f32());
        o1[k] = T::from_f32_one(T::round_one(a * cos[0][k]) + T::round_one(-b * sin[0][k]));
        o2[k] = T::from_f32_one(T::round_one(b * cos[1][k]) + T::round_one(a * sin[1][k]));
    }
}

/// Rotary position embedding in HF's rotate-half layout: `x * cos + rotate_half(x) * sin`, with
/// `cos`/`sin` `[.., positions, head_dim]` broadcast over `x` `[batch, heads, positions, head_dim]`.
pub fn apply_rotary(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    if let Some(out) = try_cpu(&x, cos, sin) {
        return out;
    }
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// cos and sin tables for `positions`, each `[positions.len(), 2 * inv_freq.len()]` row-major,
/// with the halves repeated (`cat(freqs, freqs)`) as HF does, computed in f32 like torch.
pub fn rotary_tables(inv_freq: &[f32], positions: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * half * 2);
    let mut sin = Vec::with_capacity(positions.len() * half * 2);
    for &p in positions {
        let row: Vec<f32> = inv_freq.iter().map(|&f| p as f32 * f).collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|x| x.cos()));
            sin.extend(row.iter().map(|x| x.sin()));
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// Ours against Burn's ops in `dtype` (each op computed in f32 and rounded to the dtype, as
    /// PyTorch's CPU kernels do): bit-identical, on a strided view, for a table shared by the
    /// batch and one per batch row (left-padded prompts).
    fn check(dtype: DType) {
        // A small head and LLaMA's 128 (whole vectors of 16 in each half).
        for (b, t, h, d) in [(2, 5, 3, 8), (2, 7, 2, 128)] {
            check_shape(dtype, b, t, h, d);
        }
    }

    fn check_shape(dtype: DType, b: usize, t: usize, h: usize, d: usize) {
        let values: Vec<f32> = (0..b * t * h * d).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [b, t, h, d]), &Device::flex()).cast(dtype).swap_dims(1, 2);
        for table_batch in [1, b] {
            let table = |phase: f32| {
                let v: Vec<f32> = (0..table_batch * t * d).map(|i| (i as f32 * 0.37 + phase).cos()).collect();
                Tensor::<4>::from_data(TensorData::new(v, [table_batch, 1, t, d]), &Device::flex()).cast(dtype)
            };
            let (cos, sin) = (table(0.0), table(1.3));
            let ours = try_cpu(&x, &cos, &sin).expect("the kernel takes these");
            assert_eq!(ours.dtype(), dtype);
            let half = d / 2;
            let x1 = x.clone().narrow(3, 0, half);
            let x2 = x.clone().narrow(3, half, half);
            let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
            let burn = x.clone() * cos + rotated * sin;
            let bits = |t: Tensor<4>| -> Vec<f32> { t.cast(DType::F32).into_data().try_to_vec().unwrap() };
            assert_eq!(bits(ours), bits(burn), "{dtype:?}, head_dim {d}, tables for {table_batch} batch rows");
        }
    }

    #[test]
    fn equals_burn_ops_in_f32() {
        check(DType::F32);
    }

    #[test]
    fn equals_burn_ops_in_f16() {
        check(DType::F16);
    }

    #[test]
    fn equals_burn_ops_in_bf16() {
        check(DType::BF16);
    }
}
