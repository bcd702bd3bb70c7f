//! AVX2 + FMA + F16C dot products of one block-quantized weight row with an f32 vector, the
//! blocks widened to f32 in registers (no row buffer): decoding's inner loop for the most used
//! types. Each returns what the scalar reference (dequantize, then an f32 dot) returns, up to the
//! summation order; tested against it in `quant::matmul`'s tests at every ISA level.

use std::arch::x86_64::*;

use super::f16_at;

/// Horizontal sum of eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The low eight unsigned bytes of `p` as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn u8x8(p: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(p))
}

/// The low and high nibbles of 16 bytes as bytes 0..16: `(lo, hi)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles(bytes: __m128i) -> (__m128i, __m128i) {
    let mask = _mm_set1_epi8(0x0f);
    (_mm_and_si128(bytes, mask), _mm_and_si128(_mm_srli_epi16(bytes, 4), mask))
}

/// The 32 nibbles of a Q4_0/Q4_1 block's 16 bytes in value order, eight per vector's low half:
/// values 0..8, 8..16 (low nibbles), 16..24, 24..32 (high nibbles).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_nibbles(bytes: __m128i) -> [__m128i; 4] {
    let (lo, hi) = nibbles(bytes);
    [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)]
}

/// `Q8_0` row · x.
///
/// # Safety
/// AVX2, FMA and F16C; `row` holds `x.len() / 32` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let blocks = x.len() / 32;
    debug_assert!(row.len() >= blocks * 34);
    let mut acc = _mm256_setzero_ps();
    unsafe {
        for b in 0..blocks {
            let block = &row[b * 34..b * 34 + 34];
            let q = block.as_ptr().add(2);
            let xs = x.as_ptr().add(b * 32);
            let mut s = _mm256_setzero_ps();
            for c in 0..4 {
                let bytes = _mm_loadl_epi64(q.add(8 * c) as *const __m128i);
                let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                s = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs.add(8 * c)), s);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(block)), s, acc);
        }
        hsum(acc)
    }
}

/// `Q4_0` row · x: value = (nibble - 8) d, low nibbles are values 0..16 of a block.
///
/// # Safety
/// As [`dot_q8_0`], blocks of 18 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
    let blocks = x.len() / 32;
    debug_assert!(row.len() >= blocks * 18);
    let eight = _mm256_set1_ps(8.0);
    let mut acc = _mm256_setzero_ps();
    unsafe {
        for b in 0..blocks {
            let block = &row[b * 18..b * 18 + 18];
            let qs = _mm_loadu_si128(block.as_ptr().add(2) as *const __m128i);
            let xs = x.as_ptr().add(b * 32);
            let mut s = _mm256_setzero_ps();
            for (c, part) in block_nibbles(qs).into_iter().enumerate() {
                let w = _mm256_sub_ps(u8x8(part), eight);
                s = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs.add(8 * c)), s);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(block)), s, acc);
        }
        hsum(acc)
    }
}

/// `Q4_1` row · x: value = nibble·d + m, so a block gives d·Σ q x + m·Σ x.
///
/// # Safety
/// As [`dot_q8_0`], blocks of 20 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1(row: &[u8], x: &[f32]) -> f32 {
    let blocks = x.len() / 32;
    debug_assert!(row.len() >= blocks * 20);
    let mut acc = _mm256_setzero_ps();
    unsafe {
        for b in 0..blocks {
            let block = &row[b * 20..b * 20 + 20];
            let qs = _mm_loadu_si128(block.as_ptr().add(4) as *const __m128i);
            let xs = x.as_ptr().add(b * 32);
            let mut s = _mm256_setzero_ps();
            let mut sx = _mm256_setzero_ps();
            for (c, part) in block_nibbles(qs).into_iter().enumerate() {
                let xv = _mm256_loadu_ps(xs.add(8 * c));
                s = _mm256_fmadd_ps(u8x8(part), xv, s);
                sx = _mm256_add_ps(sx, xv);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(block)), s, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(&block[2..])), sx, acc);
        }
        hsum(acc)
    }
}

/// `Q4_K` row · x: per sub-block of 32, d·scale·Σ q x − dmin·min·Σ x.
///
/// # Safety
/// As [`dot_q8_0`], super-blocks of 144 bytes for 256 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k(row: &[u8], x: &[f32]) -> f32 {
    unsafe { dot_k_quant::<false>(row, x) }
}

/// `Q5_K` row · x: as [`dot_q4_k`] with a fifth bit per value from `qh`.
///
/// # Safety
/// As [`dot_q8_0`], super-blocks of 176 bytes for 256 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_k(row: &[u8], x: &[f32]) -> f32 {
    unsafe { dot_k_quant::<true>(row, x) }
}

/// Q4_K, or Q5_K with `FIFTH_BIT` (its `qh` bytes sit between the scales and `qs`).
///
/// # Safety
/// As [`dot_q4_k`] / [`dot_q5_k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_k_quant<const FIFTH_BIT: bool>(row: &[u8], x: &[f32]) -> f32 {
    let size = if FIFTH_BIT { 176 } else { 144 };
    let blocks = x.len() / 256;
    debug_assert!(row.len() >= blocks * size);
    let one = _mm_set1_epi8(1);
    let mut total = 0f32;
    unsafe {
        for b in 0..blocks {
            let block = &row[b * size..b * size + size];
            let (d, dmin) = (f16_at(block), f16_at(&block[2..]));
            let scales = &block[4..16];
            let qh = block.as_ptr().add(16);
            let qs = block.as_ptr().add(if FIFTH_BIT { 48 } else { 16 });
            let xs = x.as_ptr().add(b * 256);
            let mut acc = _mm256_setzero_ps();
            let mut mins = 0f32;
            for chunk in 0..4 {
                let (s1, m1) = super::dequant::scale_min_k4(2 * chunk, scales);
                let (s2, m2) = super::dequant::scale_min_k4(2 * chunk + 1, scales);
                let (shift_lo, shift_hi) = (_mm_cvtsi32_si128(2 * chunk as i32), _mm_cvtsi32_si128(2 * chunk as i32 + 1));
                let mut q_lo = _mm256_setzero_ps();
                let mut q_hi = _mm256_setzero_ps();
                let mut x_lo = _mm256_setzero_ps();
                let mut x_hi = _mm256_setzero_ps();
                for half in 0..2 {
                    let (mut lo, mut hi) = nibbles(_mm_loadu_si128(qs.add(chunk * 32 + half * 16) as *const __m128i));
                    if FIFTH_BIT {
                        let high = _mm_loadu_si128(qh.add(half * 16) as *const __m128i);
                        lo = _mm_or_si128(lo, _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(high, shift_lo), one), 4));
                        hi = _mm_or_si128(hi, _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(high, shift_hi), one), 4));
                    }
                    for part in 0..2 {
                        let at = half * 16 + part * 8;
                        let (l, h) = if part == 0 { (lo, hi) } else { (_mm_srli_si128(lo, 8), _mm_srli_si128(hi, 8)) };
                        let xl = _mm256_loadu_ps(xs.add(chunk * 64 + at));
                        let xh = _mm256_loadu_ps(xs.add(chunk * 64 + 32 + at));
                        q_lo = _mm256_fmadd_ps(u8x8(l), xl, q_lo);
                        q_hi = _mm256_fmadd_ps(u8x8(h), xh, q_hi);
                        x_lo = _mm256_add_ps(x_lo, xl);
                        x_hi = _mm256_add_ps(x_hi, xh);
                    }
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * s1 as f32), q_lo, acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * s2 as f32), q_hi, acc);
                mins += dmin * m1 as f32 * hsum(x_lo) + dmin * m2 as f32 * hsum(x_hi);
            }
            total += hsum(acc) - mins;
        }
    }
    total
}

/// `Q6_K` row · x: value = d·scale·(q − 32), q = 4 low bits from `ql` and 2 high bits from `qh`.
///
/// # Safety
/// As [`dot_q8_0`], super-blocks of 210 bytes for 256 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k(row: &[u8], x: &[f32]) -> f32 {
    let blocks = x.len() / 256;
    debug_assert!(row.len() >= blocks * 210);
    let low4 = _mm_set1_epi8(0x0f);
    let low2 = _mm_set1_epi8(0x03);
    let thirty_two = _mm256_set1_ps(32.0);
    let mut acc = _mm256_setzero_ps();
    unsafe {
        for b in 0..blocks {
            let block = &row[b * 210..b * 210 + 210];
            let d = f16_at(&block[208..]);
            for half in 0..2 {
                let ql = block.as_ptr().add(half * 64);
                let qh = block.as_ptr().add(128 + half * 32);
                let sc = &block[192 + half * 8..192 + half * 8 + 8];
                let xs = x.as_ptr().add(b * 256 + half * 128);
                for l0 in [0usize, 8, 16, 24] {
                    let a = _mm_loadl_epi64(ql.add(l0) as *const __m128i);
                    let c = _mm_loadl_epi64(ql.add(32 + l0) as *const __m128i);
                    let h = _mm_loadl_epi64(qh.add(l0) as *const __m128i);
                    let high = |shift: i32| -> __m128i {
                        let bits = match shift {
                            0 => h,
                            2 => _mm_srli_epi16(h, 2),
                            4 => _mm_srli_epi16(h, 4),
                            _ => _mm_srli_epi16(h, 6),
                        };
                        _mm_slli_epi16(_mm_and_si128(bits, low2), 4)
                    };
                    let q = [
                        _mm_or_si128(_mm_and_si128(a, low4), high(0)),
                        _mm_or_si128(_mm_and_si128(c, low4), high(2)),
                        _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), low4), high(4)),
                        _mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), low4), high(6)),
                    ];
                    let is = l0 / 16;
                    for (k, q) in q.into_iter().enumerate() {
                        let w = _mm256_sub_ps(u8x8(q), thirty_two);
                        let s = _mm256_mul_ps(w, _mm256_loadu_ps(xs.add(32 * k + l0)));
                        let scale = d * (sc[is + 2 * k] as i8) as f32;
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), s, acc);
                    }
                }
            }
        }
        hsum(acc)
    }
}
