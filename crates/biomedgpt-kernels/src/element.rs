//! What the kernels read: element types (f32, f16, bf16), their conversions to and from f32,
//! and how a weight matrix lies in memory.

use burn::tensor::{bf16, f16};
use half::slice::HalfFloatSliceExt;

use crate::isa::{self, Isa};

/// How the weight `[in, out]` is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// Row-major `[in, out]`: row `i` holds input `i`'s contribution to every output.
    InputMajor,
    /// Row-major `[out, in]` (PyTorch's Linear): output `j` is a dot product with row `j`.
    OutputMajor,
}

impl WeightLayout {
    /// Rows of `x` one kernel call takes (the accumulators that fit in vector registers).
    pub fn max_block_rows(self) -> usize {
        match self {
            WeightLayout::OutputMajor => 8,
            WeightLayout::InputMajor => 4,
        }
    }
}

/// The two 16-bit float types, through `half`'s vectorized slice conversions.
pub(crate) trait HalfFloat: Copy {
    const ZERO: Self;
    fn narrow_into(src: &[f32], dst: &mut [Self]);
}

impl HalfFloat for f16 {
    const ZERO: Self = f16::ZERO;
    fn narrow_into(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src)
    }
}

impl HalfFloat for bf16 {
    const ZERO: Self = bf16::ZERO;
    fn narrow_into(src: &[f32], dst: &mut [Self]) {
        // SAFETY: the same memory viewed as possibly uninitialized; only bf16 values are written.
        narrow_bf16(src, None, unsafe { &mut *(dst as *mut [bf16] as *mut [std::mem::MaybeUninit<bf16>]) })
    }
}

/// f32 bits to bf16 bits, rounded to nearest even, NaN kept quiet: `half::bf16::from_f32` (and
/// torch's rounding) as branch-free integer operations, which the compiler vectorizes (`half`'s
/// slice conversion for bf16 is a scalar loop with branches).
#[inline(always)]
pub(crate) fn round_to_bf16(bits: u32) -> u16 {
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { (bits >> 16) | 0x40 } else { rounded }) as u16
}

/// `dst = src (+ bias)` rounded to bf16, with the widest vector instructions the CPU has.
pub(crate) fn narrow_bf16(src: &[f32], bias: Option<&[f32]>, dst: &mut [std::mem::MaybeUninit<bf16>]) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa::current() >= Isa::Avx512 {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { x86::narrow_bf16_avx512(src, bias, dst) };
        }
    }
    narrow_bf16_loop(src, bias, dst)
}

#[inline(always)]
fn narrow_bf16_loop(src: &[f32], bias: Option<&[f32]>, dst: &mut [std::mem::MaybeUninit<bf16>]) {
    assert!(dst.len() == src.len() && bias.is_none_or(|b| b.len() == src.len()));
    let round = |v: f32| bf16::from_bits(round_to_bf16(v.to_bits()));
    match bias {
        Some(b) => dst.iter_mut().zip(src).zip(b).for_each(|((d, s), b)| _ = d.write(round(s + b))),
        None => dst.iter_mut().zip(src).for_each(|(d, s)| _ = d.write(round(*s))),
    }
}

/// Weight element types the kernels read.
pub trait Element: Copy + Send + Sync + 'static {
    const KIND: ElementKind;
    fn to_f32(self) -> f32;

    /// `src` as f32 values: the slice itself for f32, otherwise widened into `buf`.
    fn as_f32_tile<'a>(src: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32] {
        buf.resize(src.len(), 0.0);
        widen(src, buf);
        buf
    }
}

/// `dst = src` as f32, with the widest vector instructions the CPU has.
pub fn widen<T: Element>(src: &[T], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa::current() >= Isa::Avx512 {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { x86::widen_avx512(src, dst) };
        }
        if isa::current() >= Isa::Avx2 {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
            return unsafe { x86::widen_avx2(src, dst) };
        }
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementKind {
    F32,
    F16,
    BF16,
}

impl Element for f32 {
    const KIND: ElementKind = ElementKind::F32;
    fn to_f32(self) -> f32 {
        self
    }

    fn as_f32_tile<'a>(src: &'a [Self], _: &'a mut Vec<f32>) -> &'a [f32] {
        src
    }
}

impl Element for f16 {
    const KIND: ElementKind = ElementKind::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Element for bf16 {
    const KIND: ElementKind = ElementKind::BF16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// f32 values rounded to a 16-bit type (vectorized by `half`).
pub(crate) fn narrow<T: HalfFloat>(y: &[f32]) -> Vec<T> {
    let mut out = vec![T::ZERO; y.len()];
    T::narrow_into(y, &mut out);
    out
}

pub(crate) fn widened<T: Element>(x: &[T]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    widen(x, &mut out);
    out
}

/// Element types of the fused kernels: f32 values and rounding back.
pub(crate) trait Float: Element + burn::tensor::Element {
    const ZERO: Self;

    /// `dst = src` in this type (rounded to nearest even).
    fn narrow(src: &[f32], dst: &mut [Self]);

    /// One value in this type (rounded to nearest even), inlined into vector loops.
    fn from_f32_one(v: f32) -> Self;

    /// One value rounded to this type and back.
    #[inline(always)]
    fn round_one(v: f32) -> f32 {
        Self::from_f32_one(v).to_f32()
    }

    /// `values` rounded to this type and back (nothing for f32).
    fn round(values: &mut [f32], scratch: &mut Vec<Self>) {
        if Self::KIND != ElementKind::F32 {
            scratch.resize(values.len(), Self::ZERO);
            Self::narrow(values, scratch);
            widen(scratch, values);
        }
    }

    /// `out = round(round(a) · b)` in this type (PyTorch's `silu(gate) * up` in 16 bits: each
    /// op's result rounded). One pass in 16-lane groups (vector code for f32 and bf16, whose
    /// rounding is integer arithmetic); f16 overrides it with `half`'s F16C slice conversions.
    fn round_mul_narrow(a: &mut [f32], b: &[f32], out: &mut [Self], _scratch: &mut Vec<Self>) {
        #[cfg(target_arch = "x86_64")]
        {
            if isa::current() >= Isa::Avx512 {
                // SAFETY: the CPU supports AVX-512F (checked above).
                return unsafe { x86::round_mul_narrow_avx512(a, b, out) };
            }
        }
        round_mul_narrow_lanes(a, b, out)
    }
}

#[inline(always)]
fn round_mul_narrow_lanes<T: Float>(a: &[f32], b: &[f32], out: &mut [T]) {
    assert!(a.len() == out.len() && b.len() == out.len());
    const LANES: usize = 16;
    let mut groups = out.chunks_exact_mut(LANES);
    let (mut a_groups, mut b_groups) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for ((o, a), b) in (&mut groups).zip(&mut a_groups).zip(&mut b_groups) {
        let (o, a, b): (&mut [T; LANES], &[f32; LANES], &[f32; LANES]) = (o.try_into().unwrap(), a.try_into().unwrap(), b.try_into().unwrap());
        for k in 0..LANES {
            o[k] = T::from_f32_one(T::round_one(a[k]) * b[k]);
        }
    }
    let tail = groups.into_remainder().iter_mut().zip(a_groups.remainder()).zip(b_groups.remainder());
    for ((o, a), b) in tail {
        *o = T::from_f32_one(T::round_one(*a) * b);
    }
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    fn narrow(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn from_f32_one(v: f32) -> Self {
        v
    }
}

impl Float for f16 {
    const ZERO: Self = f16::ZERO;
    fn narrow(src: &[f32], dst: &mut [Self]) {
        <f16 as HalfFloat>::narrow_into(src, dst)
    }
    fn round_mul_narrow(a: &mut [f32], b: &[f32], out: &mut [Self], scratch: &mut Vec<Self>) {
        // `f16::from_f32` one value at a time checks for F16C at each call; the slice
        // conversions are vector code.
        Self::round(a, scratch);
        a.iter_mut().zip(b).for_each(|(a, b)| *a *= b);
        Self::narrow(a, out);
    }
    #[inline(always)]
    fn from_f32_one(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Float for bf16 {
    const ZERO: Self = bf16::ZERO;
    fn narrow(src: &[f32], dst: &mut [Self]) {
        <bf16 as HalfFloat>::narrow_into(src, dst)
    }
    #[inline(always)]
    fn from_f32_one(v: f32) -> Self {
        bf16::from_bits(round_to_bf16(v.to_bits()))
    }
    #[inline(always)]
    fn round_one(v: f32) -> f32 {
        f32::from_bits((round_to_bf16(v.to_bits()) as u32) << 16)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! Conversions with AVX-512 (16 lanes) and AVX2 + F16C (8 lanes); the 16/8-lane loads are
    //! shared with the matrix-vector kernels.

    use super::{Element, ElementKind};
    use std::arch::x86_64::*;

    /// [`super::narrow_bf16`], compiled for AVX-512 (16 lanes).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn narrow_bf16_avx512(src: &[f32], bias: Option<&[f32]>, dst: &mut [std::mem::MaybeUninit<half::bf16>]) {
        super::narrow_bf16_loop(src, bias, dst)
    }

    /// `dst = src` widened to f32, 16 (8) lanes at a time.
    ///
    /// # Safety
    /// The CPU must support the target features.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn widen_avx512<T: Element>(src: &[T], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        let body = src.len() / 16 * 16;
        for i in (0..body).step_by(16) {
            // SAFETY: i + 16 <= len for both slices.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(i), load16(src.as_ptr().add(i))) };
        }
        for i in body..src.len() {
            dst[i] = src[i].to_f32();
        }
    }

    /// See [`widen_avx512`].
    ///
    /// # Safety
    /// The CPU must support the target features.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn widen_avx2<T: Element>(src: &[T], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        let body = src.len() / 8 * 8;
        for i in (0..body).step_by(8) {
            // SAFETY: i + 8 <= len for both slices.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(i), load8(src.as_ptr().add(i))) };
        }
        for i in body..src.len() {
            dst[i] = src[i].to_f32();
        }
    }

    /// 16 weights widened to f32.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn load16<T: Element>(p: *const T) -> __m512 {
        // SAFETY: the caller passes a pointer to 16 (8) readable elements.
        unsafe {
        match T::KIND {
            ElementKind::F32 => _mm512_loadu_ps(p as *const f32),
            ElementKind::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
            ElementKind::BF16 => {
                let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
            }
        }
        }
    }

    /// 8 weights widened to f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn load8<T: Element>(p: *const T) -> __m256 {
        // SAFETY: the caller passes a pointer to 16 (8) readable elements.
        unsafe {
        match T::KIND {
            ElementKind::F32 => _mm256_loadu_ps(p as *const f32),
            ElementKind::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
            ElementKind::BF16 => {
                let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
            }
        }
        }
    }

    /// [`super::round_mul_narrow_lanes`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn round_mul_narrow_avx512<T: super::Float>(a: &[f32], b: &[f32], out: &mut [T]) {
        super::round_mul_narrow_lanes(a, b, out)
    }
}
