//! Vector math shared by the kernels: `e^x` and `erf` over 16 f32 lanes (AVX-512), used by the
//! softmax of [`crate::attention`] and by GELU and SiLU in [`crate::activation`]. The scalar
//! paths of those ops use `f32::exp` and Burn's libm `erff`.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

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
        const ALPHA: [f32; 7] = [
            -2.726_142_3e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5,
            -7.349_906_3e-4, -2.954_600_1e-3, -1.609_603_3e-2,
        ];
        const BETA: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329_2e-3, -1.426_474e-2];
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
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "x86_64")]
    use super::x86;

    #[test]
    fn exp_matches_std_to_two_ulp() {
        #[cfg(target_arch = "x86_64")]
        if crate::isa::Isa::Avx512.supported() {
            use std::arch::x86_64::*;
            let mut worst = 0f32;
            let mut x = -87.0f32;
            while x < 88.0 {
                let xs: [f32; 16] = std::array::from_fn(|i| x + i as f32 * 0.0013);
                let mut got = [0f32; 16];
                // SAFETY: AVX-512F checked above; 16-lane arrays.
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), x86::exp16(_mm512_loadu_ps(xs.as_ptr()))) };
                for (g, x) in got.iter().zip(xs) {
                    let want = (x as f64).exp();
                    worst = worst.max(((*g as f64 - want).abs() / want) as f32);
                }
                x += 0.0173;
            }
            assert!(worst < 2.5e-7, "relative error {worst}");
            let mut got = [0f32; 16];
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), x86::exp16(_mm512_set1_ps(f32::NEG_INFINITY))) };
            assert!(got.iter().all(|&g| g == 0.0), "exp(-inf) = {got:?}");
            // No subnormal results (each would cost Intel cores a microcode assist): zero below
            // -87, normal from there up.
            let mut x = -120.0f32;
            while x < -80.0 {
                let xs: [f32; 16] = std::array::from_fn(|i| x + i as f32 * 0.0007);
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), x86::exp16(_mm512_loadu_ps(xs.as_ptr()))) };
                for (g, x) in got.iter().zip(xs) {
                    assert!(*g == 0.0 || g.is_normal(), "exp({x}) = {g:e} is subnormal");
                    assert_eq!(*g == 0.0, x < -87.0, "exp({x}) = {g:e}");
                }
                x += 0.0113;
            }
        }
    }
}
