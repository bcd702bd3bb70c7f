//! Activations and normalization with vector kernels on the CPU backend.
//!
//! Burn 0.22's CPU `gelu` evaluates libm's scalar `erff` per element, 7% of ESM-2's time at
//! 1024 residues. Here plain f32 tensors on that backend get a vector erf (AVX-512 or AVX2; the
//! rational approximation Eigen and XLA use for f32, within a few f32 ulps). LLaMA's `silu(gate) * up`
//! and RMSNorm are one pass each instead of Burn's four to nine element-wise passes (each
//! allocating), with the roundings of the model dtype where PyTorch rounds. Anything else
//! (autodiff, other backends, other dtypes) goes to Burn's ops.

use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, Tensor, TensorData, bf16, f16};
use rayon::prelude::*;

use crate::element::{Float, widen};
use crate::flex::contiguous_flex;

/// `x · Φ(x) = 0.5 x (1 + erf(x / √2))` (PyTorch's `gelu`, not the tanh approximation).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(target_arch = "x86_64")]
    {
        if x.dtype() == DType::F32 && crate::isa::current() >= crate::isa::Isa::Avx2 {
            if let Ok(t) = x.clone().try_into_primitive::<Flex>() {
                drop(x); // so that the storage is ours alone and updated in place
                return Tensor::from_primitive::<Flex>(gelu_flex(t));
            }
        }
    }
    burn::tensor::activation::gelu(x)
}

#[cfg(target_arch = "x86_64")]
fn gelu_flex(t: FlexTensor) -> FlexTensor {
    // In place when the storage is exactly this tensor's and no one else's.
    let whole = t.is_contiguous() && t.storage::<f32>().len() == t.layout().shape().num_elements();
    let mut t = if whole && t.is_unique() { t } else { t.to_contiguous() };
    let avx512 = crate::isa::current() >= crate::isa::Isa::Avx512;
    t.storage_mut::<f32>().par_chunks_mut(1 << 14).for_each(|chunk| {
        // SAFETY: AVX-512F, or AVX2 and FMA (the caller checked the avx2 level).
        unsafe {
            if avx512 { x86::gelu_in_place(chunk) } else { x86::gelu_in_place_avx2(chunk) }
        }
    });
    t
}

/// `silu(gate) * up` (HF LLaMA's MLP): in f32, with the silu rounded to the tensors' dtype
/// before the product as PyTorch does for 16-bit types.
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    match pairwise::<SiluMul, D>(&gate, &up) {
        Some(out) => out,
        None => burn::tensor::activation::silu(gate) * up,
    }
}

/// `a + b` for tensors of one shape and dtype (a residual connection), computed in f32 and
/// rounded once to the dtype, as PyTorch adds 16-bit tensors. One parallel vector pass on the
/// CPU backend (for a 128 x 2048 bf16 prompt Burn's add measured 143 us, this one 92 us);
/// anything else goes to Burn's add.
pub fn add<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    match pairwise::<Add, D>(&a, &b) {
        Some(out) => out,
        None => a + b,
    }
}

/// An element-wise kernel of two same-shape tensors, one pass at a time: both operands' pass
/// widened to f32 (`a`, `b`), the result written into `out` in the tensors' type.
trait PairwiseOp {
    fn pass<T: Float>(a: &mut [f32], b: &[f32], out: &mut [T], scratch: &mut Vec<T>);
}

struct SiluMul;

impl PairwiseOp for SiluMul {
    fn pass<T: Float>(gate: &mut [f32], up: &[f32], out: &mut [T], scratch: &mut Vec<T>) {
        silu_in_place(gate);
        T::round_mul_narrow(gate, up, out, scratch);
    }
}

struct Add;

impl PairwiseOp for Add {
    fn pass<T: Float>(a: &mut [f32], b: &[f32], out: &mut [T], _: &mut Vec<T>) {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        T::narrow(a, out);
    }
}

/// `Op` on plain f32/f16/bf16 tensors of one shape and dtype on Burn's CPU backend, `None`
/// for anything else (the caller falls back to Burn's ops).
fn pairwise<Op: PairwiseOp, const D: usize>(a: &Tensor<D>, b: &Tensor<D>) -> Option<Tensor<D>> {
    let dtype = a.dtype();
    if dtype != b.dtype() || a.dims() != b.dims() {
        return None;
    }
    let (x, y) = (plain(a)?, plain(b)?);
    let dims = a.dims();
    let data = match dtype {
        DType::F32 => TensorData::new(pairwise_slices::<Op, f32>(x.as_slice().unwrap(), y.as_slice().unwrap()), dims),
        DType::F16 => TensorData::new(pairwise_slices::<Op, f16>(x.as_slice().unwrap(), y.as_slice().unwrap()), dims),
        DType::BF16 => TensorData::new(pairwise_slices::<Op, bf16>(x.as_slice().unwrap(), y.as_slice().unwrap()), dims),
        _ => unreachable!("plain() takes float dtypes only"),
    };
    Some(Tensor::from_data(data, (&a.device(), dtype)))
}

fn pairwise_slices<Op: PairwiseOp, T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; a.len()];
    let chunk = |(a32, b32, scratch): &mut (Vec<f32>, Vec<f32>, Vec<T>), (out, (a, b)): (&mut [T], (&[T], &[T]))| {
        for (out, (a, b)) in out.chunks_mut(PASS).zip(a.chunks(PASS).zip(b.chunks(PASS))) {
            a32.resize(out.len(), 0.0);
            b32.resize(out.len(), 0.0);
            widen(a, a32);
            widen(b, b32);
            Op::pass(a32, b32, out, scratch);
        }
    };
    if a.len() <= CHUNK {
        // A decoding step's few rows: waking a pool thread would cost more than the work.
        chunk(&mut Default::default(), (&mut out, (a, b)));
    } else {
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each_init(Default::default, chunk);
    }
    out
}

/// HF `LlamaRMSNorm`: `weight * (x · rsqrt(mean(x²) + eps))`, the statistics in f32 and the
/// normalized value rounded to the dtype before the product.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f64) -> Tensor<D> {
    let dtype = x.dtype();
    let size = x.dims()[D - 1];
    if dtype == weight.dtype() && weight.dims() == [size] && size > 0 {
        if let (Some(xt), Some(wt)) = (plain(&x), plain(weight)) {
            let dims = x.dims();
            let device = x.device();
            let eps = eps as f32;
            let data = match dtype {
                DType::F32 => TensorData::new(rms_norm_rows::<f32>(xt.as_slice().unwrap(), wt.as_slice().unwrap(), eps), dims),
                DType::F16 => TensorData::new(rms_norm_rows::<f16>(xt.as_slice().unwrap(), wt.as_slice().unwrap(), eps), dims),
                DType::BF16 => TensorData::new(rms_norm_rows::<bf16>(xt.as_slice().unwrap(), wt.as_slice().unwrap(), eps), dims),
                _ => unreachable!("plain() takes float dtypes only"),
            };
            return Tensor::from_data(data, (&device, dtype));
        }
    }
    let x32 = x.cast(DType::F32);
    let variance = x32.clone().square().mean_dim(D - 1);
    let normed = x32 * variance.add_scalar(eps).sqrt().recip();
    normed.cast(dtype) * weight.clone().unsqueeze()
}

/// A plain f32/f16/bf16 tensor on Burn's CPU backend, contiguous.
fn plain<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return None;
    }
    contiguous_flex(t)
}

/// Elements per task of the element-wise kernels.
const CHUNK: usize = 1 << 13;

/// Elements per pass of the element-wise kernels inside a task: their f32 buffers stay in L1.
const PASS: usize = 1 << 10;

fn rms_norm_rows<T: Float>(x: &[T], weight: &[T], eps: f32) -> Vec<T> {
    let size = weight.len();
    let mut w32 = vec![0f32; size];
    widen(weight, &mut w32);
    let mut out = vec![T::ZERO; x.len()];
    let rows = |(row32, scratch): &mut (Vec<f32>, Vec<T>), (out, x): (&mut [T], &[T])| {
        row32.resize(size, 0.0);
        for (out, x) in out.chunks_exact_mut(size).zip(x.chunks_exact(size)) {
            widen(x, row32);
            let inv = 1.0 / (mean_of_squares(row32) + eps).sqrt();
            scale_in_place(row32, inv);
            T::round(row32, scratch);
            mul_in_place(row32, &w32);
            T::narrow(row32, out);
        }
    };
    let task = (CHUNK / size).max(1) * size;
    if x.len() <= task {
        rows(&mut Default::default(), (&mut out, x));
    } else {
        out.par_chunks_mut(task).zip(x.par_chunks(task)).for_each_init(Default::default, rows);
    }
    out
}

/// `Σ v² / n`, compiled for the widest vector unit the CPU has (the lanes and the order of the
/// sums are the same at every width, so the result is too).
fn mean_of_squares(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::isa::{Isa, current};
        // SAFETY (both): the CPU supports the level (checked).
        if current() >= Isa::Avx512 {
            return unsafe { x86::sum_of_squares_avx512(values) } / values.len() as f32;
        }
        if current() >= Isa::Avx2 {
            return unsafe { x86::sum_of_squares_avx2(values) } / values.len() as f32;
        }
    }
    sum_of_squares(values) / values.len() as f32
}

/// `v *= s` and `v *= w` element-wise; plain loops that vectorize at SSE2 width here and at the
/// caller's width when inlined into a wider function.
fn scale_in_place(values: &mut [f32], s: f32) {
    values.iter_mut().for_each(|v| *v *= s);
}

fn mul_in_place(values: &mut [f32], w: &[f32]) {
    values.iter_mut().zip(w).for_each(|(v, w)| *v *= w);
}

/// `Σ v²` in 16 f32 lanes (as PyTorch's vectorized reduction does), not one dependent chain of
/// scalar additions: that chain (4 cycles per element) was all of RMSNorm's time.
#[inline(always)]
fn sum_of_squares(values: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        for (acc, v) in lanes.iter_mut().zip(chunk) {
            *acc += v * v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `x = x · sigmoid(x) = x / (1 + e^-x)`.
fn silu_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::isa::current() >= crate::isa::Isa::Avx512 {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { x86::silu_in_place(values) };
        }
        if crate::isa::current() >= crate::isa::Isa::Avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { x86::silu_in_place_avx2(values) };
        }
    }
    values.iter_mut().for_each(|x| *x /= 1.0 + (-*x).exp());
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::math::x86::{erf, erf8, exp8, exp16, map8_in_place};
    use std::arch::x86_64::*;

    /// [`super::sum_of_squares`] compiled for AVX-512 and for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX-512F (AVX2).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum_of_squares_avx512(values: &[f32]) -> f32 {
        super::sum_of_squares(values)
    }

    /// See [`sum_of_squares_avx512`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum_of_squares_avx2(values: &[f32]) -> f32 {
        super::sum_of_squares(values)
    }

    /// [`gelu_in_place`] over 8 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_in_place_avx2(values: &mut [f32]) {
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let rsqrt2 = _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2);
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { map8_in_place(values, |x| _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, erf8(_mm256_mul_ps(x, rsqrt2))))) }
    }

    /// [`silu_in_place`] over 8 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_in_place_avx2(values: &mut [f32]) {
        let one = _mm256_set1_ps(1.0);
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { map8_in_place(values, |x| _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))))) }
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_in_place(values: &mut [f32]) {
        let n = values.len();
        let p = values.as_mut_ptr();
        let half = _mm512_set1_ps(0.5);
        let one = _mm512_set1_ps(1.0);
        let rsqrt2 = _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2);
        for i in (0..n).step_by(16) {
            let m: __mmask16 = if n - i >= 16 { 0xffff } else { ((1u32 << (n - i)) - 1) as u16 };
            // SAFETY: masked to the lanes below `n`.
            unsafe {
                let x = _mm512_maskz_loadu_ps(m, p.add(i));
                let y = _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, erf(_mm512_mul_ps(x, rsqrt2))));
                _mm512_mask_storeu_ps(p.add(i), m, y);
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_in_place(values: &mut [f32]) {
        let n = values.len();
        let p = values.as_mut_ptr();
        let one = _mm512_set1_ps(1.0);
        for i in (0..n).step_by(16) {
            let m: __mmask16 = if n - i >= 16 { 0xffff } else { ((1u32 << (n - i)) - 1) as u16 };
            // SAFETY: masked to the lanes below `n`.
            unsafe {
                let x = _mm512_maskz_loadu_ps(m, p.add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
                _mm512_mask_storeu_ps(p.add(i), m, _mm512_div_ps(x, _mm512_add_ps(one, e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn gelu_equals_the_f64_definition() {
        let xs: Vec<f32> = (0..20001).map(|i| (i as f32 - 10000.0) / 1000.0).collect(); // -10..10
        let t = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &Device::flex());
        let ys: Vec<f32> = gelu(t).into_data().try_to_vec().unwrap();
        for (x, y) in xs.iter().zip(&ys) {
            let x = *x as f64;
            let want = 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            // A few f32 ulps of x: the size of the rounding of 1 + erf.
            assert!((*y as f64 - want).abs() <= 2e-7 * x.abs().max(1e-3), "gelu({x}) = {y}, expected {want}");
        }
    }

    /// PyTorch's semantics in f64 with the dtype's roundings: `round(round(silu(g)) * u)` and
    /// `round(round(x * rsqrt(mean(x²) + eps)) * w)`.
    #[test]
    fn silu_mul_and_rms_norm_equal_pytorch_semantics_in_every_dtype() {
        let (rows, size) = (5, 1003);
        let g: Vec<f32> = (0..rows * size).map(|i| ((i * 7919 % 2003) as f32 / 150.0) - 6.0).collect();
        let u: Vec<f32> = (0..rows * size).map(|i| ((i * 104729 % 1999) as f32 / 1000.0) - 1.0).collect();
        let w: Vec<f32> = (0..size).map(|i| ((i * 31 % 97) as f32 / 50.0) - 1.0).collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let round = |v: f64| -> f64 {
                match dtype {
                    DType::F16 => f16::from_f64(v).to_f64(),
                    DType::BF16 => bf16::from_f64(v).to_f64(),
                    _ => v as f32 as f64,
                }
            };
            // Inputs representable in the dtype, so that both sides start from the same values.
            let g: Vec<f32> = g.iter().map(|&v| round(v as f64) as f32).collect();
            let u: Vec<f32> = u.iter().map(|&v| round(v as f64) as f32).collect();
            let w: Vec<f32> = w.iter().map(|&v| round(v as f64) as f32).collect();
            // One unit in the last place of the dtype: the f32 exp/sum may flip a rounding.
            let ulp = match dtype { DType::F32 => 2e-6, DType::F16 => 1e-3, _ => 8e-3 };
            let t = |v: &Vec<f32>, dims: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v.clone(), dims), &Device::flex()).cast(dtype);
            let (gt, ut) = (t(&g, [rows, size]), t(&u, [rows, size]));
            let ours: Vec<f32> = silu_mul(gt.clone(), ut).cast(DType::F32).into_data().try_to_vec().unwrap();
            for (i, a) in ours.iter().enumerate() {
                let x = g[i] as f64;
                let want = round(round(x / (1.0 + (-x).exp())) * u[i] as f64);
                assert!((*a as f64 - want).abs() <= ulp * want.abs().max(1e-2), "{dtype:?} silu_mul [{i}] {a} vs {want}");
            }
            let wt = Tensor::<1>::from_data(TensorData::new(w.clone(), [size]), &Device::flex()).cast(dtype);
            let ours: Vec<f32> = rms_norm(gt, &wt, 1e-6).cast(DType::F32).into_data().try_to_vec().unwrap();
            for (r, row) in g.chunks(size).enumerate() {
                let inv = 1.0 / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / size as f64 + 1e-6).sqrt();
                for (i, &x) in row.iter().enumerate() {
                    let want = round(round(x as f64 * inv) * w[i] as f64);
                    let a = ours[r * size + i] as f64;
                    assert!((a - want).abs() <= ulp * want.abs().max(1e-2), "{dtype:?} rms_norm [{r}, {i}] {a} vs {want}");
                }
            }
        }
    }

    /// PyTorch's 16-bit add: the f32 sum rounded once; f32 exact. Small (one thread) and
    /// large (parallel) tensors, a length that is not a multiple of the passes.
    #[test]
    fn add_equals_the_rounded_f32_sum_in_every_dtype() {
        for n in [37, 3 * CHUNK + 5] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 / 150.0) - 6.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 104729 % 1999) as f32 / 1000.0) - 1.0).collect();
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let t = |v: &Vec<f32>| Tensor::<2>::from_data(TensorData::new(v.clone(), [1, n]), &Device::flex()).cast(dtype);
                let (at, bt) = (t(&a), t(&b));
                let exact = |x: Tensor<2>| -> Vec<f32> { x.cast(DType::F32).into_data().try_to_vec().unwrap() };
                let (a16, b16) = (exact(at.clone()), exact(bt.clone()));
                let ours = exact(add(at, bt));
                for i in 0..n {
                    let sum = a16[i] + b16[i]; // exact in f32 for 16-bit inputs of these sizes
                    let want = match dtype {
                        DType::F16 => f16::from_f32(sum).to_f32(),
                        DType::BF16 => bf16::from_f32(sum).to_f32(),
                        _ => sum,
                    };
                    assert_eq!(ours[i], want, "{dtype:?} [{i}]");
                }
            }
        }
    }

    /// Each vector width this CPU has (whatever `BIOMEDGPT_CPU_ISA` says) against the f64
    /// definitions, on a length with a tail shorter than either width.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn gelu_and_silu_at_every_width_equal_the_f64_definitions() {
        use crate::isa::Isa;
        let xs: Vec<f32> = (0..20003).map(|i| (i as f32 - 10000.0) / 1000.0).collect();
        type InPlace = unsafe fn(&mut [f32]);
        let mut paths: Vec<(&str, InPlace, InPlace)> = Vec::new();
        if Isa::Avx512.supported() {
            paths.push(("avx512", x86::gelu_in_place, x86::silu_in_place));
        }
        if Isa::Avx2.supported() {
            paths.push(("avx2", x86::gelu_in_place_avx2, x86::silu_in_place_avx2));
        }
        for (name, gelu, silu) in paths {
            let (mut g, mut s) = (xs.clone(), xs.clone());
            // SAFETY: only the levels this CPU supports.
            unsafe { gelu(&mut g) };
            unsafe { silu(&mut s) };
            for (i, &x) in xs.iter().enumerate() {
                let x64 = x as f64;
                let want = 0.5 * x64 * (1.0 + libm::erf(x64 / std::f64::consts::SQRT_2));
                assert!((g[i] as f64 - want).abs() <= 2e-7 * x64.abs().max(1e-3), "{name} gelu({x}) = {}, expected {want}", g[i]);
                let want = x64 / (1.0 + (-x64).exp());
                assert!((s[i] as f64 - want).abs() <= 4e-7 * want.abs().max(1e-3), "{name} silu({x}) = {}, expected {want}", s[i]);
            }
        }
    }

    #[test]
    fn gelu_of_a_strided_view_equals_burn() {
        let xs: Vec<f32> = (0..60).map(|i| (i as f32 - 30.0) / 7.0).collect();
        let t = Tensor::<2>::from_data(TensorData::new(xs, [6, 10]), &Device::flex()).transpose();
        let ours: Vec<f32> = gelu(t.clone()).into_data().try_to_vec().unwrap();
        let burn: Vec<f32> = burn::tensor::activation::gelu(t).into_data().try_to_vec().unwrap();
        for (a, b) in ours.iter().zip(&burn) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }
}
