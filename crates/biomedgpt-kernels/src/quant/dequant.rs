//! Scalar dequantization, one function per block type, in the order of llama.cpp's
//! `dequantize_row_*` (`ggml-quants.c`). Every scale is an f16 widened to f32 and every product is
//! an f32 operation in the order gguf-py's numpy code performs it, so the results are bit-identical
//! to `gguf.quants.dequantize` (checked by `tests/gguf.rs` against its output).

use super::{GgmlType, QK_K, f16_at};

/// Dequantizes whole blocks of `ty` from `src` into `dst` (`dst.len()` values, a multiple of the
/// block length; `src` exactly that many blocks). Panics on other types or sizes: callers check
/// [`GgmlType::is_dequantizable`] and [`GgmlType::row_bytes`] first.
#[inline(always)]
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let (len, bytes) = ty.block();
    assert!(
        dst.len() % len == 0 && src.len() == dst.len() / len * bytes,
        "dequantize {ty}: {} bytes for {} values",
        src.len(),
        dst.len()
    );
    // Each block function is passed as a generic (not a pointer), so it inlines into callers
    // compiled for wider instruction sets.
    #[inline(always)]
    fn each(src: &[u8], dst: &mut [f32], len: usize, bytes: usize, block: impl Fn(&[u8], &mut [f32])) {
        for (b, y) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(len)) {
            block(b, y);
        }
    }
    match ty {
        GgmlType::Q4_0 => each(src, dst, len, bytes, q4_0),
        GgmlType::Q4_1 => each(src, dst, len, bytes, q4_1),
        GgmlType::Q5_0 => each(src, dst, len, bytes, q5_0),
        GgmlType::Q5_1 => each(src, dst, len, bytes, q5_1),
        GgmlType::Q8_0 => each(src, dst, len, bytes, q8_0),
        GgmlType::Q2K => each(src, dst, len, bytes, q2_k),
        GgmlType::Q3K => each(src, dst, len, bytes, q3_k),
        GgmlType::Q4K => each(src, dst, len, bytes, q4_k),
        GgmlType::Q5K => each(src, dst, len, bytes, q5_k),
        GgmlType::Q6K => each(src, dst, len, bytes, q6_k),
        other => panic!("dequantize: {other} is not a supported block type"),
    }
}

/// `block_q4_0`: d (f16), qs[16]; value = (nibble - 8) * d, low nibbles first.
#[inline(always)]
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// `block_q4_1`: d, m (f16), qs[16]; value = nibble * d + m.
#[inline(always)]
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b), f16_at(&b[2..]));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// The fifth bits of a Q5 block's 32 values, bit j for value j.
#[inline(always)]
fn fifth_bits(qh: &[u8]) -> u32 {
    u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]])
}

/// `block_q5_0`: d (f16), qh[4], qs[16]; value = (5-bit q - 16) * d.
#[inline(always)]
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    let qh = fifth_bits(&b[2..6]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((qs[j] & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// `block_q5_1`: d, m (f16), qh[4], qs[16]; value = 5-bit q * d + m.
#[inline(always)]
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b), f16_at(&b[2..]));
    let qh = fifth_bits(&b[4..8]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((qs[j] & 0x0f) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// `block_q8_0`: d (f16), qs[32] (i8); value = q * d.
#[inline(always)]
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    for (v, &q) in y.iter_mut().zip(&b[2..34]) {
        *v = (q as i8) as f32 * d;
    }
}

/// `block_q2_K`: scales[16] (4-bit scale | 4-bit min), qs[64] (2-bit), d, dmin (f16).
/// Sixteen groups of 16 values: value = d * scale * q - dmin * min.
#[inline(always)]
fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, dmin) = (f16_at(&b[80..]), f16_at(&b[82..]));
    let mut out = 0;
    let mut group = 0;
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[group];
                group += 1;
                let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                for l in 0..16 {
                    y[out] = dl * ((q[part * 16 + l] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
    debug_assert_eq!(out, QK_K);
}

/// The sixteen 6-bit scales of a Q3_K block, unpacked from 12 bytes, minus 32.
#[inline(always)]
pub(super) fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for j in 0..16 {
        let low = if j < 8 { packed[j] & 0x0f } else { packed[j - 8] >> 4 };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        s[j] = ((low | (high << 4)) as i32 - 32) as i8;
    }
    s
}

/// `block_q3_K`: hmask[32] (high bits), qs[64] (low 2 bits), scales[12] (6-bit), d (f16).
/// value = d * (scale - 32) * (q - (high bit ? 0 : 4)).
#[inline(always)]
fn q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(&b[108..]);
    let mut out = 0;
    let mut group = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * scales[group] as f32;
                group += 1;
                for l in 0..16 {
                    let i = part * 16 + l;
                    let low = ((q[i] >> shift) & 3) as i32;
                    let high = if hmask[i] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - high) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// Scale and min `j` (0..8) of a Q4_K/Q5_K block: 6-bit values packed in 12 bytes
/// (`get_scale_min_k4`).
#[inline(always)]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `block_q4_K`: d, dmin (f16), scales[12], qs[128]. Eight groups of 32 values:
/// value = d * scale * q - dmin * min.
#[inline(always)]
fn q4_k(b: &[u8], y: &mut [f32]) {
    k_quant::<false>(b, y)
}

/// `block_q5_K`: d, dmin (f16), scales[12], qh[32] (fifth bits), qs[128]; as Q4_K with the
/// fifth bit adding 16.
#[inline(always)]
fn q5_k(b: &[u8], y: &mut [f32]) {
    k_quant::<true>(b, y)
}

/// Q4_K, or Q5_K with `FIFTH_BIT`: the two differ only in the `qh` bytes before `qs`.
#[inline(always)]
fn k_quant<const FIFTH_BIT: bool>(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
    let scales = &b[4..16];
    let (qh, qs) = if FIFTH_BIT { (&b[16..48], &b[48..176]) } else { (&b[16..16], &b[16..144]) };
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let y = &mut y[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            let (h1, h2) = if FIFTH_BIT { (if qh[l] & u1 != 0 { 16 } else { 0 }, if qh[l] & u2 != 0 { 16 } else { 0 }) } else { (0, 0) };
            y[l] = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// `block_q6_K`: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (i8), d (f16).
/// value = d * scale * (q - 32).
#[inline(always)]
fn q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let sc = &b[192..208];
    let d = f16_at(&b[208..]);
    for half in 0..2 {
        let (ql, qh, sc) = (&ql[half * 64..], &qh[half * 32..], &sc[half * 8..]);
        let y = &mut y[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_bits().to_le_bytes()
    }

    #[test]
    fn q8_0_block() {
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16_bytes(0.5));
        for i in 0..32 {
            b[2 + i] = (i as i8 - 16) as u8;
        }
        let mut y = vec![0.0; 32];
        dequantize(GgmlType::Q8_0, &b, &mut y);
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, (i as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn q4_0_nibble_order() {
        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&f16_bytes(2.0));
        b[2] = 0xf1; // value 0: 1 - 8, value 16: 15 - 8
        let mut y = vec![0.0; 32];
        dequantize(GgmlType::Q4_0, &b, &mut y);
        assert_eq!((y[0], y[16], y[1]), (-14.0, 14.0, -16.0));
    }

    #[test]
    fn q3_k_scales_unpack_like_llama_cpp() {
        // llama.cpp's kmask unpacking of the 12 scale bytes, written out as it is in C.
        let packed: Vec<u8> = (0..12).map(|i| (i * 37 + 11) as u8).collect();
        let mut aux = [0u32; 4];
        for i in 0..3 {
            aux[i] = u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().unwrap());
        }
        let (k1, k2) = (0x03030303u32, 0x0f0f0f0fu32);
        let tmp = aux[2];
        aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
        aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
        aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
        aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
        let want: Vec<i8> = aux.iter().flat_map(|a| a.to_le_bytes()).map(|b| (b as i32 - 32) as i8).collect();
        assert_eq!(q3_k_scales(&packed).to_vec(), want);
    }

    #[test]
    #[should_panic(expected = "bytes for")]
    fn wrong_size_is_refused() {
        dequantize(GgmlType::Q4K, &[0; 100], &mut [0.0; 256]);
    }
}
