//! Vector math shared by the kernels: `e^x` and `erf` over 16 f32 lanes (AVX-512) and over 8
//! (AVX2 + FMA), used by the softmax of [`crate::attention`] and by GELU and SiLU in
//! [`crate::activation`]. Both widths evaluate the same polynomials with the same operations in
//! the same order, so a lane's result does not depend on the instruction set. The scalar paths
//! of those ops use `f32::exp` and libm's `erff`.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// erf's numerator (in x²) and denominator coefficients, highest degree first.
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5,
        -7.349_906_3e-4, -2.954_600_1e-3, -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329_2e-3, -1.426_474e-2];

    /// `e^x` lane-wise: `2^n · e^r` with `n = round(x / ln 2)`, `r = x - n ln 2` (two-part ln 2)
    /// and `e^r` by its Taylor series to degree 7 (|r| <= ln2/2: truncation 5e-9, below f32
    /// rounding). Inputs below -87 give 0 (`-inf` included) rather than a subnormal result
    /// (under 1.2e-38): Intel cores take a microcode assist of about a hundred cycles for each
    /// subnormal they produce or read, and every masked score of a causal prompt lands there.
    /// Inputs above 88.7 are clamped.
    #[target_feature(enable = "avx512f")]
    pub fn exp16(x: __m512) -> __m512 {
        let normal = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-87.0));
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.7));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        const C: [f32; 8] = [1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];
        let mut p = _mm512_set1_ps(C[7]);
        for &c in C[..7].iter().rev() {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_maskz_scalef_ps(normal, p, n)
    }

    /// erf lane-wise: `x P(x²) / Q(x²)` on [-4, 4] (±1 to f32 precision outside), with the
    /// coefficients of Eigen's `generic_fast_erf_float`.
    #[target_feature(enable = "avx512f")]
    pub fn erf(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
        let x2 = _mm512_mul_ps(x, x);
        let mut p = _mm512_set1_ps(ALPHA[0]);
        for &a in &ALPHA[1..] {
            p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(a));
        }
        let p = _mm512_mul_ps(x, p);
        let mut q = _mm512_set1_ps(BETA[0]);
        for &b in &BETA[1..] {
            q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(b));
        }
        _mm512_div_ps(p, q)
    }

    /// [`exp16`] over 8 lanes. AVX2 has no `scalef`: `2^n` is built from exponent bits, in two
    /// factors `2^(n/2)·2^(n - n/2)` so that `n` = 128 (inputs near 88.7) and -126 stay in range;
    /// both are exact scalings, so the result is `exp16`'s.
    #[target_feature(enable = "avx2,fma")]
    pub fn exp8(x: __m256) -> __m256 {
        let normal = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-87.0));
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.7));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        const C: [f32; 8] = [1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];
        let mut p = _mm256_set1_ps(C[7]);
        for &c in C[..7].iter().rev() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let n = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32::<1>(n);
        let n2 = _mm256_sub_epi32(n, n1);
        let bias = _mm256_set1_epi32(127);
        let pow1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(p, pow1), pow2), normal)
    }

    /// [`erf`] over 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    pub fn erf8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.0)), _mm256_set1_ps(4.0));
        let x2 = _mm256_mul_ps(x, x);
        let mut p = _mm256_set1_ps(ALPHA[0]);
        for &a in &ALPHA[1..] {
            p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(a));
        }
        let p = _mm256_mul_ps(x, p);
        let mut q = _mm256_set1_ps(BETA[0]);
        for &b in &BETA[1..] {
            q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(b));
        }
        _mm256_div_ps(p, q)
    }

    /// Applies an 8-lane function to a slice in place; the tail goes through a padded copy.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn map8_in_place(values: &mut [f32], f: impl Fn(__m256) -> __m256) {
        let mut chunks = values.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: 8 values in the chunk.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), f(_mm256_loadu_ps(chunk.as_ptr()))) };
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut lanes = [0f32; 8];
            lanes[..tail.len()].copy_from_slice(tail);
            // SAFETY: an 8-value array.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), f(_mm256_loadu_ps(lanes.as_ptr()))) };
            tail.copy_from_slice(&lanes[..tail.len()]);
        }
    }

    /// Horizontal sum and max of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub fn sum8(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    #[target_feature(enable = "avx2")]
    pub fn max8(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "x86_64")]
    use super::x86;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// `f` (exp or erf) on 16 inputs at every vector width this CPU has: AVX-512, then AVX2.
    #[cfg(target_arch = "x86_64")]
    fn at_every_width(xs: [f32; 16], erf: bool) -> Vec<[f32; 16]> {
        let mut out = Vec::new();
        if crate::isa::Isa::Avx512.supported() {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F checked above; 16-lane arrays.
            unsafe {
                let x = _mm512_loadu_ps(xs.as_ptr());
                _mm512_storeu_ps(got.as_mut_ptr(), if erf { x86::erf(x) } else { x86::exp16(x) });
            }
            out.push(got);
        }
        if crate::isa::Isa::Avx2.supported() {
            let mut got = [0f32; 16];
            for half in 0..2 {
                // SAFETY: AVX2 and FMA checked above; 8 lanes of 16-lane arrays.
                unsafe {
                    let x = _mm256_loadu_ps(xs.as_ptr().add(8 * half));
                    _mm256_storeu_ps(got.as_mut_ptr().add(8 * half), if erf { x86::erf8(x) } else { x86::exp8(x) });
                }
            }
            out.push(got);
        }
        out
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn exp_matches_std_to_two_ulp_at_every_width() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.7 {
            let xs: [f32; 16] = std::array::from_fn(|i| (x + i as f32 * 0.0013).min(88.7));
            let widths = at_every_width(xs, false);
            for got in &widths {
                for (g, x) in got.iter().zip(xs) {
                    let want = (x as f64).exp();
                    worst = worst.max(((*g as f64 - want).abs() / want) as f32);
                }
            }
            // The same operations in the same order at both widths: identical lanes.
            assert!(widths.windows(2).all(|w| w[0] == w[1]), "exp differs between widths near {x}");
            x += 0.0173;
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        for got in at_every_width([f32::NEG_INFINITY; 16], false) {
            assert!(got.iter().all(|&g| g == 0.0), "exp(-inf) = {got:?}");
        }
        // No subnormal results (each would cost Intel cores a microcode assist): zero below
        // -87, normal from there up.
        let mut x = -120.0f32;
        while x < -80.0 {
            let xs: [f32; 16] = std::array::from_fn(|i| x + i as f32 * 0.0007);
            for got in at_every_width(xs, false) {
                for (g, x) in got.iter().zip(xs) {
                    assert!(*g == 0.0 || g.is_normal(), "exp({x}) = {g:e} is subnormal");
                    assert_eq!(*g == 0.0, x < -87.0, "exp({x}) = {g:e}");
                }
            }
            x += 0.0113;
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn erf_matches_libm_at_every_width() {
        let mut x = -6.0f32;
        while x < 6.0 {
            let xs: [f32; 16] = std::array::from_fn(|i| x + i as f32 * 0.00071);
            let widths = at_every_width(xs, true);
            for got in &widths {
                for (g, x) in got.iter().zip(xs) {
                    let want = libm::erf(x as f64);
                    assert!((*g as f64 - want).abs() <= 4e-7, "erf({x}) = {g}, expected {want}");
                }
            }
            assert!(widths.windows(2).all(|w| w[0] == w[1]), "erf differs between widths near {x}");
            x += 0.0123;
        }
    }
}
