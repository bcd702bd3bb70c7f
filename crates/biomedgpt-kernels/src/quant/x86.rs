//! AVX2 integer dot products of one block-quantized weight row with a quantized activation row
//! ([`super::int8`]): `vpmaddubsw` multiplies unsigned weight values by signed activations into
//! i16 pairs, `vpmaddwd` sums those (times the k-quants' group scales) into i32. The integer sums
//! are exact and the per-block scaling is [`super::int8`]'s, lane for lane, so each kernel returns
//! the scalar reference's bits (tested in `quant::matmul` at every ISA level).
//!
//! Legacy types (blocks of 32) are taken eight blocks at a time: eight vectors of partial sums
//! are reduced to one vector of eight block sums, scaled by eight `d_w · d_x` at once. K-quants
//! (blocks of 256) reduce each block to one integer sum and scale it in scalar code.

use std::arch::x86_64::*;

use super::int8::{QuantizedRow, add_k_block, fold_lanes, k4_scales_mins};

/// Horizontal sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Eight vectors of i32 partial sums -> one vector of their eight totals, in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_sums(v: &[__m256i; 8]) -> __m256i {
    // hadd(a, b) = [a01 a23 b01 b23 | a45 a67 b45 b67]; twice gives four totals per half.
    let ab = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let cd = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(ab, cd), _mm256_permute2x128_si256::<0x31>(ab, cd))
}

/// Σ pairs of `u · s` (u unsigned bytes, s signed bytes) into eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// 16 bytes' nibbles as 32 bytes: low nibbles (values 0..16), then high (16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles_32(q: __m128i) -> __m256i {
    let mask = _mm_set1_epi8(0x0f);
    _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(q), mask), _mm_and_si128(q, mask))
}

/// Bit `j` of the 32-bit word at `p` as 16 in byte `j` (the Q5 types' fifth bits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits_32(p: *const u8) -> __m256i {
    let word = unsafe { (p as *const u32).read_unaligned() } as i32;
    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(word), _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    // Every bit but bit (j % 8) set in byte j: all ones exactly where the bit is set.
    let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// The legacy types: `SIZE`-byte blocks whose f16 `d` (and, with `MIN`, `m`) lead the block;
/// `block` gives a block's eight partial sums of `q_w · q_x` with `q_w` unsigned, `OFFSET` is
/// what the type subtracts from `q_w` (taken off through the activation sums).
///
/// # Safety
/// AVX2, FMA, F16C; `row` holds `x.len` blocks.
#[inline(always)]
unsafe fn legacy_dot<const SIZE: usize, const OFFSET: i32, const MIN: bool>(row: &[u8], x: &QuantizedRow, block: impl Fn(*const u8, *const i8) -> __m256i) -> f32 {
    debug_assert!(row.len() >= x.len * SIZE);
    let (p, xq) = (row.as_ptr(), x.qs.as_ptr());
    let mut g = 0;
    // SAFETY (all reads): blocks g + j < x.len; x's per-block arrays are padded to groups of 8;
    // the caller has AVX2, FMA and F16C.
    unsafe {
        let mut lanes = _mm256_setzero_ps();
        while g < x.len {
            let mut v = [_mm256_setzero_si256(); 8];
            let (mut dw, mut mw) = ([0u16; 8], [0u16; 8]);
            let mut fill = |j: usize| {
                let b = p.add((g + j) * SIZE);
                v[j] = block(b, xq.add((g + j) * 32));
                dw[j] = (b as *const u16).read_unaligned();
                if MIN {
                    mw[j] = (b.add(2) as *const u16).read_unaligned();
                }
            };
            let count = (x.len - g).min(8);
            if count == 8 {
                (0..8).for_each(&mut fill);
            } else {
                (0..count).for_each(&mut fill);
            }
            let mut s = block_sums(&v);
            let sums = _mm256_cvtepi16_epi32(_mm_loadu_si128(x.sums.as_ptr().add(g) as *const __m128i));
            if OFFSET != 0 {
                s = _mm256_sub_epi32(s, _mm256_mullo_epi32(sums, _mm256_set1_epi32(OFFSET)));
            }
            let dx = _mm256_loadu_ps(x.d.as_ptr().add(g));
            let d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(dw.as_ptr() as *const __m128i)), dx);
            lanes = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), lanes);
            if MIN {
                let m = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(mw.as_ptr() as *const __m128i)), dx);
                lanes = _mm256_fmadd_ps(m, _mm256_cvtepi32_ps(sums), lanes);
            }
            g += 8;
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), lanes);
        fold_lanes(out)
    }
}

/// `Q8_0` row · x: signed by signed, through |w| and x with w's sign.
///
/// # Safety
/// AVX2, FMA and F16C; `row` holds `x.len` blocks of 34 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0(row: &[u8], x: &QuantizedRow) -> f32 {
    unsafe {
        legacy_dot::<34, 0, false>(row, x, |b, xq| {
            let w = _mm256_loadu_si256(b.add(2) as *const __m256i);
            let v = _mm256_loadu_si256(xq as *const __m256i);
            dot_u8_i8(_mm256_abs_epi8(w), _mm256_sign_epi8(v, w))
        })
    }
}

/// `Q4_0` row · x: (nibble - 8) · x.
///
/// # Safety
/// As [`dot_q8_0`], blocks of 18 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0(row: &[u8], x: &QuantizedRow) -> f32 {
    unsafe {
        legacy_dot::<18, 8, false>(row, x, |b, xq| {
            dot_u8_i8(nibbles_32(_mm_loadu_si128(b.add(2) as *const __m128i)), _mm256_loadu_si256(xq as *const __m256i))
        })
    }
}

/// `Q4_1` row · x: (nibble · d + m) · x.
///
/// # Safety
/// As [`dot_q8_0`], blocks of 20 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1(row: &[u8], x: &QuantizedRow) -> f32 {
    unsafe {
        legacy_dot::<20, 0, true>(row, x, |b, xq| {
            dot_u8_i8(nibbles_32(_mm_loadu_si128(b.add(4) as *const __m128i)), _mm256_loadu_si256(xq as *const __m256i))
        })
    }
}

/// `Q5_0` row · x: (5-bit q - 16) · x.
///
/// # Safety
/// As [`dot_q8_0`], blocks of 22 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0(row: &[u8], x: &QuantizedRow) -> f32 {
    unsafe {
        legacy_dot::<22, 16, false>(row, x, |b, xq| {
            let q = _mm256_or_si256(nibbles_32(_mm_loadu_si128(b.add(6) as *const __m128i)), fifth_bits_32(b.add(2)));
            dot_u8_i8(q, _mm256_loadu_si256(xq as *const __m256i))
        })
    }
}

/// `Q5_1` row · x: (5-bit q · d + m) · x.
///
/// # Safety
/// As [`dot_q8_0`], blocks of 24 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_1(row: &[u8], x: &QuantizedRow) -> f32 {
    unsafe {
        legacy_dot::<24, 0, true>(row, x, |b, xq| {
            let q = _mm256_or_si256(nibbles_32(_mm_loadu_si128(b.add(8) as *const __m128i)), fifth_bits_32(b.add(4)));
            dot_u8_i8(q, _mm256_loadu_si256(xq as *const __m256i))
        })
    }
}

/// `Q4_K` row · x: per group of 32, scale · Σ q x, and the mins through `bsums`.
///
/// # Safety
/// As [`dot_q8_0`], blocks of 144 bytes for 256 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k(row: &[u8], x: &QuantizedRow) -> f32 {
    unsafe { dot_k4::<false>(row, x) }
}

/// `Q5_K` row · x: as [`dot_q4_k`] with a fifth bit per value from `qh`.
///
/// # Safety
/// As [`dot_q8_0`], blocks of 176 bytes for 256 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_k(row: &[u8], x: &QuantizedRow) -> f32 {
    unsafe { dot_k4::<true>(row, x) }
}

/// Q4_K, or Q5_K with `FIFTH_BIT` (its `qh` bytes sit between the scales and `qs`).
///
/// # Safety
/// As [`dot_q4_k`] / [`dot_q5_k`].
#[inline(always)]
unsafe fn dot_k4<const FIFTH_BIT: bool>(row: &[u8], x: &QuantizedRow) -> f32 {
    let size = if FIFTH_BIT { 176 } else { 144 };
    debug_assert!(row.len() >= x.len * size);
    let mut lanes = [0f32; 8];
    // SAFETY (all reads): block b < x.len; 256 activation values per block; the caller has
    // AVX2, FMA and F16C.
    unsafe {
        let low4 = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        for b in 0..x.len {
            let block = &row[b * size..(b + 1) * size];
            let (d, dmin) = (super::f16_at(block), super::f16_at(&block[2..]));
            let (scales, mins) = k4_scales_mins(&block[4..16]);
            let qs = block.as_ptr().add(if FIFTH_BIT { 48 } else { 16 });
            let mut high = if FIFTH_BIT { _mm256_loadu_si256(block.as_ptr().add(16) as *const __m256i) } else { _mm256_setzero_si256() };
            let xq = x.qs.as_ptr().add(b * 256);
            let mut acc = _mm256_setzero_si256();
            for chunk in 0..4 {
                let q = _mm256_loadu_si256(qs.add(32 * chunk) as *const __m256i);
                let mut lo = _mm256_and_si256(q, low4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4);
                if FIFTH_BIT {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(_mm256_and_si256(high, one)));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(high), one)));
                    high = _mm256_srli_epi16::<2>(high);
                }
                let p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(xq.add(64 * chunk) as *const __m256i));
                let p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(xq.add(64 * chunk + 32) as *const __m256i));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p_lo, _mm256_set1_epi16(scales[2 * chunk] as i16)));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p_hi, _mm256_set1_epi16(scales[2 * chunk + 1] as i16)));
            }
            let bsums = &x.sums[b * 16..(b + 1) * 16];
            let summ: i32 = (0..8).map(|j| mins[j] as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32)).sum();
            add_k_block::<true>(&mut lanes[b % 8], d * x.d[b], hsum_i32(acc), dmin * x.d[b], summ);
        }
    }
    fold_lanes(lanes)
}

/// `Q6_K` row · x: Σ scale · (q - 32) x as Σ scale · q x - 32 Σ scale · bsum (q unsigned, 0..64).
///
/// # Safety
/// As [`dot_q8_0`], blocks of 210 bytes for 256 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k(row: &[u8], x: &QuantizedRow) -> f32 {
    debug_assert!(row.len() >= x.len * 210);
    let low4 = _mm256_set1_epi8(0x0f);
    let low2 = _mm256_set1_epi8(0x03);
    let mut lanes = [0f32; 8];
    // SAFETY (all reads): block b < x.len; 256 activation values and 16 sums per block.
    unsafe {
        for b in 0..x.len {
            let block = row.as_ptr().add(b * 210);
            let sc = block.add(192) as *const i8;
            let xq = x.qs.as_ptr().add(b * 256);
            let mut acc = _mm256_setzero_si256();
            for half in 0..2 {
                let a = _mm256_loadu_si256(block.add(64 * half) as *const __m256i);
                let c = _mm256_loadu_si256(block.add(64 * half + 32) as *const __m256i);
                let h = _mm256_loadu_si256(block.add(128 + 32 * half) as *const __m256i);
                let high = |bits: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(bits, low2));
                let q = [
                    _mm256_or_si256(_mm256_and_si256(a, low4), high(h)),
                    _mm256_or_si256(_mm256_and_si256(c, low4), high(_mm256_srli_epi16::<2>(h))),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(a), low4), high(_mm256_srli_epi16::<4>(h))),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(c), low4), high(_mm256_srli_epi16::<6>(h))),
                ];
                for (k, q) in q.into_iter().enumerate() {
                    // Values 0..16 of the 32 take group scale 8·half + 2k, values 16..32 the next.
                    let g = 8 * half + 2 * k;
                    let scale = _mm256_set_m128i(_mm_set1_epi16(*sc.add(g + 1) as i16), _mm_set1_epi16(*sc.add(g) as i16));
                    let p = _mm256_maddubs_epi16(q, _mm256_loadu_si256(xq.add(128 * half + 32 * k) as *const __m256i));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale));
                }
            }
            let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i));
            let bsums = _mm256_loadu_si256(x.sums.as_ptr().add(b * 16) as *const __m256i);
            let offset = hsum_i32(_mm256_madd_epi16(scales16, bsums));
            let d = super::f16_at(std::slice::from_raw_parts(block.add(208), 2));
            add_k_block::<false>(&mut lanes[b % 8], d * x.d[b], hsum_i32(acc) - 32 * offset, 0.0, 0);
        }
    }
    fold_lanes(lanes)
}
