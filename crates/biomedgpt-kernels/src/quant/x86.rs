//! AVX2 integer dot products of one block-quantized weight row with a quantized activation row
//! ([`super::int8`]): `vpmaddubsw` multiplies unsigned weight values by signed activations into
//! i16 pairs, `vpmaddwd` sums those (times the k-quants' group scales) into eight i32 lanes of
//! four neighbouring values each: [`super::int8`]'s lanes, exactly. Each block's lanes are scaled
//! into eight f32 accumulators with one FMA, the minimum terms into four more, and both are
//! folded as the reference folds them, so each kernel returns the scalar reference's bits (tested
//! in `quant::matmul` at every ISA level). Signed weights (Q8_0, Q4_0, Q5_0) go through |w| and
//! `sign(x, w)`, as llama.cpp does; Q6_K's offset of 32 through `vpmaddubsw(32, x)`.

use std::arch::x86_64::*;

use super::int8::{QuantizedRow, fold4, fold8, k4_scales_mins, k_step};

/// An f16 (its bits) widened to f32, exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_to_f32(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The little-endian f16 at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    f16_to_f32(unsafe { (p as *const u16).read_unaligned() })
}

/// Σ pairs of `u · s` (u unsigned bytes, s signed bytes) into eight i32 lanes of four bytes.
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

/// The accumulators folded as [`super::int8::dot_reference`] folds them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn finish(acc: __m256, macc: __m128) -> f32 {
    let (mut a, mut m) = ([0f32; 8], [0f32; 4]);
    // SAFETY: 8- and 4-lane arrays.
    unsafe {
        _mm256_storeu_ps(a.as_mut_ptr(), acc);
        _mm_storeu_ps(m.as_mut_ptr(), macc);
    }
    fold8(a) + fold4(m)
}

/// Runs `$kernel::<..., R>(args.., rows, out)` over `$xs` in groups of up to 4 rows (AVX2:
/// a block's unpacked values and four rows' accumulators fill its 16 registers) or 8 (AVX-512,
/// 32 registers).
macro_rules! grouped {
    (4; $xs:expr, $out:expr, $kernel:ident::<$($param:literal),*>($($arg:expr),*)) => {
        grouped!(@groups 4; $xs, $out, n, group, o, match n {
            1 => $kernel::<$($param,)* 1>($($arg,)* group, o),
            2 => $kernel::<$($param,)* 2>($($arg,)* group, o),
            3 => $kernel::<$($param,)* 3>($($arg,)* group, o),
            _ => $kernel::<$($param,)* 4>($($arg,)* group, o),
        })
    };
    (8; $xs:expr, $out:expr, $kernel:ident::<$($param:literal),*>($($arg:expr),*)) => {
        grouped!(@groups 8; $xs, $out, n, group, o, match n {
            1 => $kernel::<$($param,)* 1>($($arg,)* group, o),
            2 => $kernel::<$($param,)* 2>($($arg,)* group, o),
            3 => $kernel::<$($param,)* 3>($($arg,)* group, o),
            4 => $kernel::<$($param,)* 4>($($arg,)* group, o),
            5 => $kernel::<$($param,)* 5>($($arg,)* group, o),
            6 => $kernel::<$($param,)* 6>($($arg,)* group, o),
            7 => $kernel::<$($param,)* 7>($($arg,)* group, o),
            _ => $kernel::<$($param,)* 8>($($arg,)* group, o),
        })
    };
    (@groups $size:literal; $xs:expr, $out:expr, $n:ident, $group:ident, $o:ident, $call:expr) => {{
        let (xs, out): (&[QuantizedRow], &mut [f32]) = ($xs, $out);
        assert_eq!(xs.len(), out.len(), "one output per activation row");
        let mut i = 0;
        while i < xs.len() {
            let $n = (xs.len() - i).min($size);
            let ($group, $o) = (&xs[i..i + $n], &mut out[i..i + $n]);
            $call;
            i += $n;
        }
    }};
}

/// Every row of a group: `R` rows of the same length, for the `R` outputs.
#[inline(always)]
fn check_group<const R: usize>(row: &[u8], block_bytes: usize, xs: &[QuantizedRow], out: &[f32]) -> usize {
    assert!(xs.len() == R && out.len() == R, "a group of {R} rows");
    let len = xs[0].len;
    assert!(xs.iter().all(|x| x.len == len), "activation rows of one length");
    assert!(row.len() >= len * block_bytes, "a weight row of {len} blocks");
    len
}

/// How far ahead of the block being computed the weight bytes are prefetched. A decoding
/// product streams its weights from memory once; on the 2-core Zen 5 VM the hardware
/// prefetchers alone left Q8_0 decoding at 27 tok/s and Q4_0 at 41 (TinyLlama), 34-39 and
/// 47-51 with the bytes 4 KiB ahead requested (1, 2 and 8 KiB measured too: 2-4 KiB best).
const PREFETCH: usize = 4096;

/// Requests the cache lines `PREFETCH` bytes past `p` that a run of `bytes` bytes from `p` will
/// reach then (a hint: addresses past the mapping are not touched).
#[inline(always)]
fn prefetch_ahead(p: *const u8, bytes: usize) {
    for line in 0..bytes.div_ceil(64) {
        // SAFETY: a prefetch reads nothing and cannot fault; SSE is in every x86-64 CPU.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH + 64 * line) as *const i8) };
    }
}

/// Blocks per batch of the legacy kernels' scale products ([`legacy_scales`]).
const CHUNK: usize = 32;

/// The scale products of blocks `first..first + count` (at most [`CHUNK`]) of a legacy-type row
/// at `p`: `d[r][j] = d_w · d_x` for each activation row `r`, and (with `MIN`) the blocks' `m`
/// in `m`; entries past `count` hold products of zeros. Shared by the AVX2 and AVX-512 kernels,
/// whose bits rest on it: widening each block's f16 on its own made the compiler insert it into
/// the accumulator's register (`vpinsrw`), a false dependency that serialized the blocks (Q4_0
/// decoded at a third of llama.cpp's speed), so they are widened 8 per instruction here.
///
/// # Safety
/// AVX2 and F16C; blocks `first..first + count` of `SIZE` bytes at `p`, and as many scales in
/// every row of `xs`.
#[inline(always)]
unsafe fn legacy_scales<const SIZE: usize, const MIN: bool, const R: usize>(
    p: *const u8,
    xs: &[QuantizedRow],
    first: usize,
    count: usize,
    d: &mut [[f32; CHUNK + 2]; R],
    m: &mut [f32; CHUNK],
) {
    // SAFETY: the reads the caller vouches for; the arrays hold CHUNK (+ 2) values.
    unsafe {
        let (mut dw, mut mw) = ([0u16; CHUNK], [0u16; CHUNK]);
        for j in 0..count {
            let w = p.add((first + j) * SIZE);
            dw[j] = (w as *const u16).read_unaligned();
            if MIN {
                mw[j] = (w.add(2) as *const u16).read_unaligned();
            }
        }
        let mut dx = [[0f32; CHUNK]; R];
        for r in 0..R {
            dx[r][..count].copy_from_slice(&xs[r].d[first..first + count]);
        }
        for e in (0..CHUNK).step_by(8) {
            let wide = |h: &[u16; CHUNK]| _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().add(e) as *const __m128i));
            let dwe = wide(&dw);
            for r in 0..R {
                _mm256_storeu_ps(d[r].as_mut_ptr().add(e), _mm256_mul_ps(dwe, _mm256_loadu_ps(dx[r].as_ptr().add(e))));
            }
            if MIN {
                _mm256_storeu_ps(m.as_mut_ptr().add(e), wide(&mw));
            }
        }
    }
}

/// The legacy types: `SIZE`-byte blocks whose f16 `d` (and, with `MIN`, `m`) lead the block;
/// `weights` gives a block's 32 values as bytes: signed (`SIGNED`: dotted as `|w| · sign(x, w)`)
/// or unsigned.
///
/// Even and odd blocks accumulate apart (as [`super::int8::dot_reference`] does): one chain
/// of FMAs bounded a row at one block per FMA latency.
///
/// The blocks' scale products are computed first, [`CHUNK`] blocks at a time
/// ([`legacy_scales`]), into a buffer the main loop broadcasts from.
///
/// # Safety
/// AVX2, FMA, F16C.
#[inline(always)]
unsafe fn legacy_dot<const SIZE: usize, const MIN: bool, const SIGNED: bool, const R: usize>(
    row: &[u8],
    weights: impl Fn(*const u8) -> __m256i,
    xs: &[QuantizedRow],
    out: &mut [f32],
) {
    let len = check_group::<R>(row, SIZE, xs, out);
    let p = row.as_ptr();
    let xq: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
    // SAFETY (all reads): blocks b < len; the caller has AVX2, FMA and F16C.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut macc = [[0f32; 4]; R];
        let (mut d, mut m) = ([[0f32; CHUNK + 2]; R], [0f32; CHUNK]);
        for first in (0..len).step_by(CHUNK) {
            let count = (len - first).min(CHUNK);
            legacy_scales::<SIZE, MIN, R>(p, xs, first, count, &mut d, &mut m);
            // `first` is even: block parity is `j`'s.
            for pair in (0..count).step_by(2) {
                for parity in 0..2 {
                    let j = pair + parity;
                    if j == count {
                        break;
                    }
                    let b = first + j;
                    prefetch_ahead(p.add(b * SIZE), SIZE);
                    let w = weights(p.add(b * SIZE));
                    let u = if SIGNED { _mm256_abs_epi8(w) } else { w };
                    for r in 0..R {
                        let x = _mm256_loadu_si256(xq[r].add(b * 32) as *const __m256i);
                        let lanes = dot_u8_i8(u, if SIGNED { _mm256_sign_epi8(x, w) } else { x });
                        acc[r][parity] = _mm256_fmadd_ps(_mm256_broadcast_ss(&d[r][j]), _mm256_cvtepi32_ps(lanes), acc[r][parity]);
                        if MIN {
                            macc[r][b % 4] = m[j].mul_add(*xs[r].s.get_unchecked(b), macc[r][b % 4]);
                        }
                    }
                }
            }
        }
        for r in 0..R {
            out[r] = finish(_mm256_add_ps(acc[r][0], acc[r][1]), _mm_loadu_ps(macc[r].as_ptr()));
        }
    }
}

/// `Q8_0` rows · x: 34-byte blocks.
///
/// # Safety
/// AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q8_0(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    let weights = |b: *const u8| unsafe { _mm256_loadu_si256(b.add(2) as *const __m256i) };
    unsafe { grouped!(4; xs, out, legacy_dot::<34, false, true>(row, weights)) }
}

/// `Q4_0` rows · x: (nibble - 8) · x, 18-byte blocks.
///
/// # Safety
/// As [`rows_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q4_0(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    let weights = |b: *const u8| unsafe { _mm256_sub_epi8(nibbles_32(_mm_loadu_si128(b.add(2) as *const __m128i)), _mm256_set1_epi8(8)) };
    unsafe { grouped!(4; xs, out, legacy_dot::<18, false, true>(row, weights)) }
}

/// `Q4_1` rows · x: (nibble · d + m) · x, 20-byte blocks.
///
/// # Safety
/// As [`rows_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q4_1(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    let weights = |b: *const u8| unsafe { nibbles_32(_mm_loadu_si128(b.add(4) as *const __m128i)) };
    unsafe { grouped!(4; xs, out, legacy_dot::<20, true, false>(row, weights)) }
}

/// `Q5_0` rows · x: (5-bit q - 16) · x, 22-byte blocks.
///
/// # Safety
/// As [`rows_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q5_0(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    let weights = |b: *const u8| unsafe {
        let q = _mm256_or_si256(nibbles_32(_mm_loadu_si128(b.add(6) as *const __m128i)), fifth_bits_32(b.add(2)));
        _mm256_sub_epi8(q, _mm256_set1_epi8(16))
    };
    unsafe { grouped!(4; xs, out, legacy_dot::<22, false, true>(row, weights)) }
}

/// `Q5_1` rows · x: (5-bit q · d + m) · x, 24-byte blocks.
///
/// # Safety
/// As [`rows_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q5_1(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    let weights = |b: *const u8| unsafe { _mm256_or_si256(nibbles_32(_mm_loadu_si128(b.add(8) as *const __m128i)), fifth_bits_32(b.add(4))) };
    unsafe { grouped!(4; xs, out, legacy_dot::<24, true, false>(row, weights)) }
}

/// `Q4_K` rows · x: per group of 32, scale · Σ q x, and the mins through `bsums`; 144-byte
/// blocks of 256 values.
///
/// # Safety
/// As [`rows_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q4_k(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    unsafe { grouped!(4; xs, out, dot_k4::<false>(row)) }
}

/// `Q5_K` rows · x: as [`rows_q4_k`] with a fifth bit per value from `qh`; 176-byte blocks.
///
/// # Safety
/// As [`rows_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q5_k(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    unsafe { grouped!(4; xs, out, dot_k4::<true>(row)) }
}

/// A shuffle that broadcasts i16 element `i` (of each 128-bit half) to the whole half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn broadcast_i16(i: usize) -> __m256i {
    _mm256_set1_epi16((((2 * i + 1) << 8) | 2 * i) as i16)
}

/// A Q4_K/Q5_K block's `d`, `dmin`, and its eight scales and eight minimums as i16 lanes.
///
/// # Safety
/// AVX2 and F16C; 16 bytes at `block`.
#[inline(always)]
unsafe fn k4_block_header(block: *const u8) -> (f32, f32, __m128i, __m128i) {
    // SAFETY: the caller's.
    unsafe {
        let (scales, mins) = k4_scales_mins(std::slice::from_raw_parts(block.add(4), 12));
        let wide = |v: [u8; 8]| _mm_cvtepu8_epi16(_mm_loadl_epi64(v.as_ptr() as *const __m128i));
        (f16_at(block), f16_at(block.add(2)), wide(scales), wide(mins))
    }
}

/// The sum of four i32 lanes (exact: the order of integer additions does not matter).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32x4(v: __m128i) -> i32 {
    let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
    _mm_cvtsi128_si32(_mm_add_epi32(v, _mm_shuffle_epi32::<0b10_11_00_01>(v)))
}

/// The sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32x8(v: __m256i) -> i32 {
    hsum_i32x4(_mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)))
}

/// One activation row's step after a Q4_K/Q5_K block (`sumi`: lanes of `scale · Σ q x`;
/// `header`: the block's `d`, `dmin` and minimums), the same at every level: the block's exact
/// `S` and `M` (the minimums through `bsums`) into [`k_step`].
///
/// # Safety
/// AVX2, FMA and F16C; block `b` of `x`.
#[inline(always)]
unsafe fn k4_row_step(sumi: __m256i, header: (f32, f32, __m128i), x: &QuantizedRow, b: usize, y: &mut f32) {
    let (dw, dminw, mins) = header;
    // SAFETY: the caller's.
    unsafe {
        let dx = *x.d.get_unchecked(b);
        // The bsums of each group of 32 (pairs of 16) times its minimum.
        let bsums = _mm256_loadu_si256(x.sums.as_ptr().add(b * 16) as *const __m256i);
        let groups = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256::<1>(bsums));
        let m = hsum_i32x4(_mm_madd_epi16(mins, groups));
        *y = k_step(hsum_i32x8(sumi), Some(m), dw, dminw, dx, *y);
    }
}

/// Lane `r` (for `r < R`, zero above): the sum of `v[r]`'s eight lanes. Several rows'
/// block totals formed side by side, in 9 instructions for 8 rows instead of a horizontal
/// sum each (integer sums: exact whatever the order).
#[inline(always)]
unsafe fn totals<const R: usize>(v: &[__m256i; R]) -> __m256i {
    // SAFETY: the callers have AVX2.
    unsafe {
        let at = |r: usize| if r < R { v[r] } else { _mm256_setzero_si256() };
        // [v0 01, v0 23, v1 01, v1 23 | v0 45, v0 67, v1 45, v1 67], ...
        let pairs = [_mm256_hadd_epi32(at(0), at(1)), _mm256_hadd_epi32(at(2), at(3)), _mm256_hadd_epi32(at(4), at(5)), _mm256_hadd_epi32(at(6), at(7))];
        // [v0 0..3, v1 0..3, v2 0..3, v3 0..3 | v0 4..7, v1 4..7, v2 4..7, v3 4..7], rows 4-7
        let (low, high) = (_mm256_hadd_epi32(pairs[0], pairs[1]), _mm256_hadd_epi32(pairs[2], pairs[3]));
        _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(low, high), _mm256_permute2x128_si256::<0x31>(low, high))
    }
}

/// [`k_step`] for `R` rows at once, row `r` in lane `r`: the same operations per lane (so
/// the same bits as the scalar step), one instruction each for all rows.
#[inline(always)]
unsafe fn k_steps<const R: usize>(s: __m256i, m: Option<__m256i>, d: f32, dmin: f32, xs: &[QuantizedRow], b: usize, y: __m256) -> __m256 {
    // SAFETY: block `b` of every row (the callers'); AVX2 and FMA.
    unsafe {
        let dx: [f32; 8] = std::array::from_fn(|r| if r < R { *xs[r].d.get_unchecked(b) } else { 0.0 });
        let dx = _mm256_loadu_ps(dx.as_ptr());
        let y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(_mm256_set1_ps(d), dx), y);
        match m {
            // fma(m, -(dmin dx), y): the negation is exact, so -(m (dmin dx)) + y is the same.
            Some(m) => _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(_mm256_set1_ps(dmin), dx), y),
            None => y,
        }
    }
}

/// The block's `M` of `R` rows side by side ([`totals`]): each row's bsums (groups of 16)
/// times the block's minimums (`mins`, eight i16), each repeated for its two groups.
#[inline(always)]
unsafe fn k4_min_totals<const R: usize>(mins: __m128i, xs: &[QuantizedRow], b: usize) -> __m256i {
    // SAFETY: block `b`'s 16 sums of every row (the callers'); AVX2.
    unsafe {
        let mins_twice = _mm256_set_m128i(_mm_unpackhi_epi16(mins, mins), _mm_unpacklo_epi16(mins, mins));
        let m: [__m256i; R] = std::array::from_fn(|r| _mm256_madd_epi16(_mm256_loadu_si256(xs[r].sums.as_ptr().add(b * 16) as *const __m256i), mins_twice));
        totals(&m)
    }
}

/// The rows' results, lanes `0..R` of `y`.
#[inline(always)]
unsafe fn store_rows<const R: usize>(y: __m256, out: &mut [f32]) {
    let mut all = [0f32; 8];
    // SAFETY: 8 floats; AVX.
    unsafe { _mm256_storeu_ps(all.as_mut_ptr(), y) };
    out[..R].copy_from_slice(&all[..R]);
}

/// Q4_K, or Q5_K with `FIFTH_BIT` (its `qh` bytes sit between the scales and `qs`), for `R` rows.
///
/// # Safety
/// As [`rows_q4_k`] / [`rows_q5_k`].
#[inline(always)]
unsafe fn dot_k4<const FIFTH_BIT: bool, const R: usize>(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    let size = if FIFTH_BIT { 176 } else { 144 };
    let len = check_group::<R>(row, size, xs, out);
    let xq: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
    // SAFETY (all reads): block b < len: `size` bytes, 256 activation values and 16 sums;
    // the caller has AVX2, FMA and F16C.
    unsafe {
        let low4 = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        let mut y = [0f32; R];
        let mut ys = _mm256_setzero_ps();
        for b in 0..len {
            let block = row.as_ptr().add(b * size);
            prefetch_ahead(block, size);
            let (dw, dminw, scales, mins) = k4_block_header(block);
            let scales = _mm256_broadcastsi128_si256(scales);
            let qs = block.add(if FIFTH_BIT { 48 } else { 16 });
            let mut high = if FIFTH_BIT { _mm256_loadu_si256(block.add(16) as *const __m256i) } else { _mm256_setzero_si256() };
            let mut sumi = [_mm256_setzero_si256(); R];
            for chunk in 0..4 {
                let q = _mm256_loadu_si256(qs.add(32 * chunk) as *const __m256i);
                let mut lo = _mm256_and_si256(q, low4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4);
                if FIFTH_BIT {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(_mm256_and_si256(high, one)));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(high), one)));
                    high = _mm256_srli_epi16::<2>(high);
                }
                let (scale_lo, scale_hi) = (_mm256_shuffle_epi8(scales, broadcast_i16(2 * chunk)), _mm256_shuffle_epi8(scales, broadcast_i16(2 * chunk + 1)));
                for r in 0..R {
                    let x = xq[r].add(b * 256 + 64 * chunk);
                    let p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(x as *const __m256i));
                    let p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(x.add(32) as *const __m256i));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(_mm256_madd_epi16(p_lo, scale_lo), _mm256_madd_epi16(p_hi, scale_hi)));
                }
            }
            if R == 1 {
                k4_row_step(sumi[0], (dw, dminw, mins), &xs[0], b, &mut y[0]);
            } else {
                // Several rows: their steps side by side (as the AVX-512 kernel's).
                ys = k_steps::<R>(totals(&sumi), Some(k4_min_totals::<R>(mins, xs, b)), dw, dminw, xs, b, ys);
            }
        }
        if R == 1 {
            out.copy_from_slice(&y);
        } else {
            store_rows::<R>(ys, out);
        }
    }
}

/// `Q6_K` rows · x: Σ scale · (q - 32) x, with q unsigned (0..64) and the 32 taken off as
/// `32 · x` pairs before the scales; 210-byte blocks of 256 values.
///
/// # Safety
/// As [`rows_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_q6_k(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    unsafe { grouped!(4; xs, out, dot_q6_k::<>(row)) }
}

/// Q6_K for `R` rows.
///
/// # Safety
/// As [`rows_q6_k`].
#[inline(always)]
unsafe fn dot_q6_k<const R: usize>(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
    let len = check_group::<R>(row, 210, xs, out);
    let xq: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
    // SAFETY (all reads): block b < len: 210 bytes and 256 activation values; the caller has
    // AVX2, FMA and F16C.
    unsafe {
        let low4 = _mm256_set1_epi8(0x0f);
        let low2 = _mm256_set1_epi8(0x03);
        let thirty_two = _mm256_set1_epi8(32);
        let mut y = [0f32; R];
        let mut ys = _mm256_setzero_ps();
        for b in 0..len {
            let block = row.as_ptr().add(b * 210);
            prefetch_ahead(block, 210);
            let sc = block.add(192) as *const i8;
            let mut sumi = [_mm256_setzero_si256(); R];
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
                    for r in 0..R {
                        let xv = _mm256_loadu_si256(xq[r].add(b * 256 + 128 * half + 32 * k) as *const __m256i);
                        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, xv), _mm256_maddubs_epi16(thirty_two, xv));
                        sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, scale));
                    }
                }
            }
            let dw = f16_at(block.add(208));
            if R == 1 {
                y[0] = k_step(hsum_i32x8(sumi[0]), None, dw, 0.0, *xs[0].d.get_unchecked(b), y[0]);
            } else {
                ys = k_steps::<R>(totals(&sumi), None, dw, 0.0, xs, b, ys);
            }
        }
        if R == 1 {
            out.copy_from_slice(&y);
        } else {
            store_rows::<R>(ys, out);
        }
    }
}

/// AVX-512BW versions of the k-quant kernels: the same integer lanes from half as many
/// instructions, then the AVX2 kernels' float steps. Each 512-bit product pairs two of the
/// AVX2 kernel's 256-bit products (lanes 0-7 and 8-15) whose activations lie side by side, and
/// the two halves are added before the float step: integer sums are exact, so every lane holds
/// the AVX2 kernel's value and the result its bits.
pub mod avx512 {
    use std::arch::x86_64::*;

    use super::{CHUNK, QuantizedRow, check_group, f16_at, finish, hsum_i32x8, k_steps, k4_block_header, k4_min_totals, k4_row_step, k_step, legacy_scales, prefetch_ahead, store_rows, totals};

    /// The two 256-bit halves of `v` added (lane i + lane i + 8).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    fn fold_halves(v: __m512i) -> __m256i {
        _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
    }

    /// i16 lanes of the lower 256 bits set to `lo`, of the upper to `hi`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    fn halves_i16(lo: i16, hi: i16) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_set1_epi16(lo)), _mm256_set1_epi16(hi))
    }

    /// i16 lanes of each 128-bit quarter `q` set to `first + q`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    fn quarters_i16(first: i16) -> __m512i {
        let lo = _mm256_set_m128i(_mm_set1_epi16(first + 1), _mm_set1_epi16(first));
        let hi = _mm256_set_m128i(_mm_set1_epi16(first + 3), _mm_set1_epi16(first + 2));
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    /// `Q4_K` rows · x, as [`super::rows_q4_k`] (same bits).
    ///
    /// # Safety
    /// AVX-512F and BW, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub unsafe fn rows_q4_k(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        unsafe { grouped!(8; xs, out, dot_k4::<false>(row)) }
    }

    /// `Q5_K` rows · x, as [`super::rows_q5_k`] (same bits).
    ///
    /// # Safety
    /// As [`rows_q4_k`].
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub unsafe fn rows_q5_k(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        unsafe { grouped!(8; xs, out, dot_k4::<true>(row)) }
    }

    /// Q4_K, or Q5_K with `FIFTH_BIT`, for `R` rows: per 32 bytes of `qs`, one register holds
    /// the low nibbles (with the activations of group 2c) and the high ones (group 2c + 1), as
    /// the AVX2 kernel's two; Q5_K's fifth bits are bits 2c and 2c + 1 of `qh`'s bytes.
    ///
    /// # Safety
    /// As [`rows_q4_k`].
    #[inline(always)]
    unsafe fn dot_k4<const FIFTH_BIT: bool, const R: usize>(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        let size = if FIFTH_BIT { 176 } else { 144 };
        let len = check_group::<R>(row, size, xs, out);
        let xq: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
        // SAFETY (all reads): block b < len: `size` bytes, 256 activation values and 16 sums;
        // the caller has the features.
        unsafe {
            let low4 = _mm512_set1_epi8(0x0f);
            let one = _mm512_set1_epi8(1);
            let shifts = halves_i16(0, 4);
            let scale_index: [__m512i; 4] = std::array::from_fn(|c| halves_i16(2 * c as i16, 2 * c as i16 + 1));
            let mut y = [0f32; R];
            let mut ys = _mm256_setzero_ps();
            for b in 0..len {
                let block = row.as_ptr().add(b * size);
                prefetch_ahead(block, size);
                let (dw, dminw, scales, mins) = k4_block_header(block);
                let scales = _mm512_castsi128_si512(scales);
                let qs = block.add(if FIFTH_BIT { 48 } else { 16 });
                let high = if FIFTH_BIT { _mm512_broadcast_i64x4(_mm256_loadu_si256(block.add(16) as *const __m256i)) } else { _mm512_setzero_si512() };
                let mut sumi = [_mm512_setzero_si512(); R];
                for chunk in 0..4 {
                    let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(qs.add(32 * chunk) as *const __m256i));
                    let mut w = _mm512_and_si512(_mm512_srlv_epi16(q, shifts), low4);
                    if FIFTH_BIT {
                        let bits = _mm512_and_si512(_mm512_srlv_epi16(high, halves_i16(2 * chunk as i16, 2 * chunk as i16 + 1)), one);
                        w = _mm512_or_si512(w, _mm512_slli_epi16::<4>(bits));
                    }
                    let scale = _mm512_permutexvar_epi16(scale_index[chunk], scales);
                    for r in 0..R {
                        let x = _mm512_loadu_si512(xq[r].add(b * 256 + 64 * chunk) as *const __m512i);
                        sumi[r] = _mm512_add_epi32(sumi[r], _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), scale));
                    }
                }
                if R == 1 {
                    k4_row_step(fold_halves(sumi[0]), (dw, dminw, mins), &xs[0], b, &mut y[0]);
                } else {
                    // Several rows: their steps side by side.
                    let s: [__m256i; R] = std::array::from_fn(|r| fold_halves(sumi[r]));
                    ys = k_steps::<R>(totals(&s), Some(k4_min_totals::<R>(mins, xs, b)), dw, dminw, xs, b, ys);
                }
            }
            if R == 1 {
                out.copy_from_slice(&y);
            } else {
                store_rows::<R>(ys, out);
            }
        }
    }

    /// `Q6_K` rows · x, as [`super::rows_q6_k`] (same bits).
    ///
    /// # Safety
    /// As [`rows_q4_k`].
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub unsafe fn rows_q6_k(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        unsafe { grouped!(8; xs, out, dot_q6_k::<>(row)) }
    }

    /// Q6_K for `R` rows: per half block, one register holds the AVX2 kernel's values 0 and 1
    /// (low nibbles of `ql`'s two 32-byte runs, high bits 0-1 and 2-3 of `qh`), another 2 and 3.
    ///
    /// # Safety
    /// As [`rows_q4_k`].
    #[inline(always)]
    unsafe fn dot_q6_k<const R: usize>(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        let len = check_group::<R>(row, 210, xs, out);
        let xq: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
        // SAFETY (all reads): block b < len: 210 bytes and 256 activation values; the caller
        // has the features.
        unsafe {
            let low4 = _mm512_set1_epi8(0x0f);
            let low2 = _mm512_set1_epi8(0x03);
            let thirty_two = _mm512_set1_epi8(32);
            let (shifts_01, shifts_23) = (halves_i16(0, 2), halves_i16(4, 6));
            let scale_index: [__m512i; 4] = std::array::from_fn(|i| quarters_i16(4 * i as i16));
            let mut y = [0f32; R];
            let mut ys = _mm256_setzero_ps();
            for b in 0..len {
                let block = row.as_ptr().add(b * 210);
                prefetch_ahead(block, 210);
                let scales = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(block.add(192) as *const __m128i)));
                let mut sumi = [_mm512_setzero_si512(); R];
                for half in 0..2 {
                    let ac = _mm512_loadu_si512(block.add(64 * half) as *const __m512i);
                    let h = _mm512_broadcast_i64x4(_mm256_loadu_si256(block.add(128 + 32 * half) as *const __m256i));
                    let high = |shifts: __m512i| _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srlv_epi16(h, shifts), low2));
                    let q = [
                        _mm512_or_si512(_mm512_and_si512(ac, low4), high(shifts_01)),
                        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ac), low4), high(shifts_23)),
                    ];
                    for (k, q) in q.into_iter().enumerate() {
                        let scale = _mm512_permutexvar_epi16(scale_index[2 * half + k], scales);
                        for r in 0..R {
                            let xv = _mm512_loadu_si512(xq[r].add(b * 256 + 128 * half + 64 * k) as *const __m512i);
                            let p = _mm512_sub_epi16(_mm512_maddubs_epi16(q, xv), _mm512_maddubs_epi16(thirty_two, xv));
                            sumi[r] = _mm512_add_epi32(sumi[r], _mm512_madd_epi16(p, scale));
                        }
                    }
                }
                let dw = f16_at(block.add(208));
                if R == 1 {
                    y[0] = k_step(hsum_i32x8(fold_halves(sumi[0])), None, dw, 0.0, *xs[0].d.get_unchecked(b), y[0]);
                } else {
                    let s: [__m256i; R] = std::array::from_fn(|r| fold_halves(sumi[r]));
                    ys = k_steps::<R>(totals(&s), None, dw, 0.0, xs, b, ys);
                }
            }
            if R == 1 {
                out.copy_from_slice(&y);
            } else {
                store_rows::<R>(ys, out);
            }
        }
    }

    /// Two blocks' 16 bytes of nibbles as their 2 x 32 values, each block's as
    /// [`super::nibbles_32`] gives them (low nibbles, then high).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn nibble_pair(a: *const u8, b: *const u8) -> __m512i {
        // SAFETY: 16 bytes at each pointer (the caller's).
        let both = unsafe { _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(_mm_loadu_si128(a as *const __m128i)), _mm_loadu_si128(b as *const __m128i)) };
        let twice = _mm512_permutexvar_epi64(_mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0), _mm512_castsi256_si512(both));
        let four = 0x0004_0004_0004_0004;
        let shifts = _mm512_set_epi64(four, four, 0, 0, four, four, 0, 0);
        _mm512_and_si512(_mm512_srlv_epi16(twice, shifts), _mm512_set1_epi8(0x0f))
    }

    /// 16 in each byte whose bit is set in two blocks' 32-bit `qh` (the Q5 types' fifth bits).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn fifth_bit_pair(a: *const u8, b: *const u8) -> __m512i {
        // SAFETY: 4 bytes at each pointer (the caller's).
        let (a, b) = unsafe { ((a as *const u32).read_unaligned() as u64, (b as *const u32).read_unaligned() as u64) };
        _mm512_maskz_mov_epi8(a | b << 32, _mm512_set1_epi8(16))
    }

    /// The legacy types on AVX-512 VNNI: two blocks per register, the even block's eight lanes
    /// in lanes 0-7 and the odd block's in 8-15 (the AVX2 kernel's two accumulators), each lane
    /// `Σ (u - OFFSET) · x` over four values with `vpdpbusd` (`u` the weights made unsigned:
    /// the same exact integers as the AVX2 kernel's `|w| · sign(x, w)`); a row's last block, if
    /// odd, on the lower lanes alone. `weights` gives the `u` of blocks (`b`, `b + 1`).
    ///
    /// # Safety
    /// AVX-512F, BW and VNNI, AVX2, FMA and F16C.
    #[inline(always)]
    unsafe fn legacy_dot<const SIZE: usize, const MIN: bool, const OFFSET: i32, const R: usize>(
        row: &[u8],
        weights: impl Fn(*const u8, *const u8) -> __m512i,
        xs: &[QuantizedRow],
        out: &mut [f32],
    ) {
        let len = check_group::<R>(row, SIZE, xs, out);
        let p = row.as_ptr();
        let xq: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
        // SAFETY (all reads): blocks b < len (a pair's second block only where b + 1 < len);
        // the caller has the features.
        unsafe {
            let offset = _mm512_set1_epi8(OFFSET as u8 as i8);
            let zero = _mm512_setzero_si512();
            let pair_index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            let mut acc = [_mm512_setzero_ps(); R];
            let mut macc = [[0f32; 4]; R];
            // The scale products as the AVX2 kernel's (the 2 spare entries are read only into
            // masked lanes).
            let (mut d, mut m) = ([[0f32; CHUNK + 2]; R], [0f32; CHUNK]);
            for first in (0..len).step_by(CHUNK) {
                let count = (len - first).min(CHUNK);
                legacy_scales::<SIZE, MIN, R>(p, xs, first, count, &mut d, &mut m);
                // `first` is even: pairs start on even blocks.
                for j in (0..count).step_by(2) {
                    let b = first + j;
                    let two = j + 1 < count;
                    let w = p.add(b * SIZE);
                    prefetch_ahead(w, 2 * SIZE);
                    let u = weights(w, if two { w.add(SIZE) } else { w });
                    for r in 0..R {
                        let xp = xq[r].add(b * 32);
                        let x = if two { _mm512_loadu_si512(xp as *const __m512i) } else { _mm512_zextsi256_si512(_mm256_loadu_si256(xp as *const __m256i)) };
                        let mut lanes = _mm512_dpbusd_epi32(zero, u, x);
                        if OFFSET != 0 {
                            lanes = _mm512_sub_epi32(lanes, _mm512_dpbusd_epi32(zero, offset, x));
                        }
                        let pair_d = _mm_castpd_ps(_mm_load_sd(d[r].as_ptr().add(j) as *const f64));
                        let dv = _mm512_permutexvar_ps(pair_index, _mm512_castps128_ps512(pair_d));
                        acc[r] = _mm512_mask3_fmadd_ps(dv, _mm512_cvtepi32_ps(lanes), acc[r], if two { 0xffff } else { 0x00ff });
                        if MIN {
                            macc[r][b % 4] = m[j].mul_add(*xs[r].s.get_unchecked(b), macc[r][b % 4]);
                            if two {
                                macc[r][(b + 1) % 4] = m[j + 1].mul_add(*xs[r].s.get_unchecked(b + 1), macc[r][(b + 1) % 4]);
                            }
                        }
                    }
                }
            }
            for r in 0..R {
                let odd = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[r])));
                out[r] = finish(_mm256_add_ps(_mm512_castps512_ps256(acc[r]), odd), _mm_loadu_ps(macc[r].as_ptr()));
            }
        }
    }

    /// `Q8_0` rows · x, as [`super::rows_q8_0`] (same bits): `u = w + 128`.
    ///
    /// # Safety
    /// AVX-512F, BW and VNNI, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn rows_q8_0(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        let weights = |a: *const u8, b: *const u8| unsafe {
            let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_loadu_si256(a.add(2) as *const __m256i)), _mm256_loadu_si256(b.add(2) as *const __m256i));
            _mm512_xor_si512(both, _mm512_set1_epi8(-128))
        };
        unsafe { grouped!(8; xs, out, legacy_dot::<34, false, 128>(row, weights)) }
    }

    /// `Q4_0` rows · x, as [`super::rows_q4_0`] (same bits).
    ///
    /// # Safety
    /// As [`rows_q8_0`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn rows_q4_0(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        let weights = |a: *const u8, b: *const u8| unsafe { nibble_pair(a.add(2), b.add(2)) };
        unsafe { grouped!(8; xs, out, legacy_dot::<18, false, 8>(row, weights)) }
    }

    /// `Q4_1` rows · x, as [`super::rows_q4_1`] (same bits).
    ///
    /// # Safety
    /// As [`rows_q8_0`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn rows_q4_1(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        let weights = |a: *const u8, b: *const u8| unsafe { nibble_pair(a.add(4), b.add(4)) };
        unsafe { grouped!(8; xs, out, legacy_dot::<20, true, 0>(row, weights)) }
    }

    /// `Q5_0` rows · x, as [`super::rows_q5_0`] (same bits).
    ///
    /// # Safety
    /// As [`rows_q8_0`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn rows_q5_0(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        let weights = |a: *const u8, b: *const u8| unsafe { _mm512_or_si512(nibble_pair(a.add(6), b.add(6)), fifth_bit_pair(a.add(2), b.add(2))) };
        unsafe { grouped!(8; xs, out, legacy_dot::<22, false, 16>(row, weights)) }
    }

    /// `Q5_1` rows · x, as [`super::rows_q5_1`] (same bits).
    ///
    /// # Safety
    /// As [`rows_q8_0`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn rows_q5_1(row: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
        let weights = |a: *const u8, b: *const u8| unsafe { _mm512_or_si512(nibble_pair(a.add(8), b.add(8)), fifth_bit_pair(a.add(4), b.add(4))) };
        unsafe { grouped!(8; xs, out, legacy_dot::<24, true, 0>(row, weights)) }
    }
}
