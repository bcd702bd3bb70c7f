//! Activations with vector kernels on the CPU backend.
//!
//! Burn 0.22's CPU `gelu` evaluates libm's scalar `erff` per element, 7% of ESM-2's time at
//! 1024 residues. Here plain f32 tensors on that backend get an AVX-512 erf (the rational
//! approximation Eigen and XLA use for f32, within a few f32 ulps); anything else goes to Burn.

use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

/// `x · Φ(x) = 0.5 x (1 + erf(x / √2))` (PyTorch's `gelu`, not the tanh approximation).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(target_arch = "x86_64")]
    {
        if x.dtype() == DType::F32 && is_x86_feature_detected!("avx512f") {
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
    t.storage_mut::<f32>().par_chunks_mut(1 << 14).for_each(|chunk| {
        // SAFETY: AVX-512F was checked by the caller.
        unsafe { x86::gelu_in_place(chunk) }
    });
    t
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

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
