//! Reference quantization into GGML block types: the algorithms of llama.cpp's
//! `quantize_row_*_ref` (`ggml-quants.c`, which `llama-quantize` runs when no importance matrix
//! is given), in the same f32 operations and order, so a row quantized here has the bytes
//! `llama-quantize` writes for it (tested against its output in biomedgpt-llama's
//! `tests/gguf_quantize.rs`). llama.cpp compiles these in its base library without FMA contraction, so plain
//! Rust f32 arithmetic (which never contracts) reproduces it.
//!
//! Q8_0 and Q4_0: one f16 scale per 32 values. Q4_K, Q5_K: per 256 values an f16 scale and min,
//! and eight 6-bit sub-scales and sub-mins found by a weighted least-squares search
//! (`make_qkx2_quants`). Q6_K: sixteen 8-bit sub-scales (`make_qx_quants`, RMSE-weighted).

use super::{GgmlType, QK_K};
use half::f16;

/// Types [`quantize`] writes.
pub const QUANTIZABLE: &[GgmlType] = &[GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];

/// Quantizes `src` (whole blocks of `ty`) into `dst` (exactly their bytes). Panics on a type
/// outside [`QUANTIZABLE`] or on sizes that are not whole blocks: callers check first.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    let (len, bytes) = ty.block();
    assert!(src.len() % len == 0 && dst.len() == src.len() / len * bytes, "quantize {ty}: {} values into {} bytes", src.len(), dst.len());
    let block: fn(&[f32], &mut [u8]) = match ty {
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q4K => q4_k,
        GgmlType::Q5K => q5_k,
        GgmlType::Q6K => q6_k,
        other => panic!("quantize: {other} is not a type this build writes"),
    };
    for (x, y) in src.chunks_exact(len).zip(dst.chunks_exact_mut(bytes)) {
        block(x, y);
    }
}

/// [`quantize`] of many rows at once, the rows shared between the pool's threads (each block is
/// quantized independently, so the bytes are the same as one thread's).
pub fn quantize_rows(ty: GgmlType, src: &[f32], row_len: usize, dst: &mut [u8]) {
    use rayon::prelude::*;
    let row_bytes = ty.row_bytes(row_len).expect("rows of whole blocks");
    assert!(row_len > 0 && src.len() % row_len == 0 && dst.len() == src.len() / row_len * row_bytes, "quantize_rows {ty}: sizes");
    // Groups of rows big enough to be worth a task.
    let rows_per_task = (1 << 16) / row_len + 1;
    src.par_chunks(rows_per_task * row_len)
        .zip(dst.par_chunks_mut(rows_per_task * row_bytes))
        .for_each(|(x, y)| quantize(ty, x, y));
}

fn put_f16(dst: &mut [u8], v: f32) {
    dst[..2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

fn f16_round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// llama.cpp's `nearest_int`: round half to even through the 1.5 * 2^23 trick (|v| < 2^22).
#[inline]
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12582912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// The value of largest magnitude (the first of equal ones) and its magnitude, as llama.cpp's
/// `amax`/`max` loops find them.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// The smallest and largest value (the `min`/`max` loops of the Q4_1 and Q5_1 quantizers).
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

fn q8_0(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, d);
    for (q, &v) in y[2..34].iter_mut().zip(x) {
        // C's roundf: half away from zero.
        *q = ((v * id).round() as i8) as u8;
    }
}

fn q4_0(x: &[f32], y: &mut [u8]) {
    let (max, _) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, d);
    for j in 0..16 {
        // (int8_t)(x*id + 8.5f): truncation, then at most 15.
        let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        y[2 + j] = q0 | (q1 << 4);
    }
}

/// Q4_1: 4-bit levels between the block's min and max.
fn q4_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut y[0..2], d);
    put_f16(&mut y[2..4], min);
    for j in 0..16 {
        // MIN(15, (int8_t)(x + 0.5f))
        let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
        y[4 + j] = q0 | (q1 << 4);
    }
}

/// Q5_0 (llama.cpp's fallback for Q4_K rows that are not whole 256-blocks): like Q4_0 with a
/// fifth bit per value.
fn q5_0(x: &[f32], y: &mut [u8]) {
    let (max, _) = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
        let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
        y[6 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
        qh |= (((q0 & 0x10) >> 4) as u32) << j;
        qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// Q5_1 (the fallback for Q5_K): 5-bit levels between the block's min and max.
fn q5_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut y[0..2], d);
    put_f16(&mut y[2..4], min);
    let mut qh = 0u32;
    for j in 0..16 {
        let q0 = ((x[j] - min) * id + 0.5) as u8;
        let q1 = ((x[j + 16] - min) * id + 0.5) as u8;
        y[8 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
        qh |= (((q0 & 0x10) >> 4) as u32) << j;
        qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
    }
    y[4..8].copy_from_slice(&qh.to_le_bytes());
}

/// `make_qkx2_quants`: levels 0..=nmax for `x` with a scale and a (non-positive) min that minimise
/// the weighted squared error, searching `nstep + 1` candidate scales. Returns (scale, -min).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(nmax: i32, x: &[f32], weights: &[f32], levels: &mut [u8], rmin: f32, rdelta: f32, nstep: i32) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                levels[..n].copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The shared part of Q4_K and Q5_K: eight sub-blocks of 32 with 6-bit scales and mins packed in
/// 12 bytes, the f16 super-scales, and each value's level in 0..=nmax.
fn k_scales_and_levels(x: &[f32], nmax: i32, rmin: f32, nstep: i32, d_out: &mut [u8], scales_out: &mut [u8], levels: &mut [u8; QK_K]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(nmax, xs, &weights, &mut levels[32 * j..32 * j + 32], rmin, 0.1, nstep);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    scales_out.iter_mut().for_each(|b| *b = 0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            scales_out[j - 4] |= (ls >> 4) << 6;
            scales_out[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(&mut d_out[0..2], max_scale / 63.0);
    put_f16(&mut d_out[2..4], max_min / 63.0);
    let (d_all, dmin_all) = (f16_round(max_scale / 63.0), f16_round(max_min / 63.0));
    for j in 0..8 {
        let (sc, m) = super::dequant::scale_min_k4(j, scales_out);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for i in 0..32 {
            levels[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

fn q4_k(x: &[f32], y: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (head, rest) = y.split_at_mut(4);
    let (scales, qs) = rest.split_at_mut(12);
    k_scales_and_levels(x, 15, -1.0, 20, head, scales, &mut levels);
    for chunk in 0..4 {
        for l in 0..32 {
            qs[chunk * 32 + l] = levels[chunk * 64 + l] | (levels[chunk * 64 + l + 32] << 4);
        }
    }
}

fn q5_k(x: &[f32], y: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (head, rest) = y.split_at_mut(4);
    let (scales, rest) = rest.split_at_mut(12);
    let (qh, qs) = rest.split_at_mut(32);
    k_scales_and_levels(x, 31, -0.5, 15, head, scales, &mut levels);
    qh.iter_mut().for_each(|b| *b = 0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for chunk in 0..4 {
        for j in 0..32 {
            let mut l1 = levels[chunk * 64 + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = levels[chunk * 64 + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            qs[chunk * 32 + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

const GROUP_MAX_EPS: f32 = 1e-15;

/// `make_qx_quants` with `rmse_type` 1 (weights x^2) and no importance weights: signed levels in
/// -nmax..nmax-1 (stored + nmax) and the scale that minimises the weighted error.
fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = -nmax_f / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        levels[i] = (l + nmax) as i8;
        let (w, lf) = (v * v, l as f32);
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let (w, lf) = (v * v, l as f32);
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                levels[i] = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

fn q6_k(x: &[f32], y: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut levels[16 * ib..16 * ib + 16]);
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y.iter_mut().for_each(|b| *b = 0);
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(&mut y[208..210], 1.0 / iscale);
    let d_all = f16_round(1.0 / iscale);
    for ib in 0..16 {
        y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    for j in 0..16 {
        let d = d_all * (y[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            let l = nearest_int(x[16 * j + i] / d).clamp(-32, 31);
            levels[16 * j + i] = (l + 32) as i8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for half in 0..2 {
        let l0 = half * 128;
        for l in 0..32 {
            let q = |k: usize| levels[l0 + l + k] as u8;
            ql[half * 64 + l] = (q(0) & 0x0f) | ((q(64) & 0x0f) << 4);
            ql[half * 64 + l + 32] = (q(32) & 0x0f) | ((q(96) & 0x0f) << 4);
            qh[half * 32 + l] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;

    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        // A small LCG + Box-Muller: deterministic data without a dependency.
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 + 0.5) / (1u64 << 24) as f32
        };
        (0..n).map(|_| (-2.0 * next().ln()).sqrt() * (std::f32::consts::TAU * next()).cos()).collect()
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!([nearest_int(0.5), nearest_int(1.5), nearest_int(-2.5), nearest_int(2.4), nearest_int(-0.6)], [0, 2, -2, 2, -1]);
    }

    /// Quantize then dequantize stays within the type's step size; more bits, smaller error.
    #[test]
    fn round_trip_error_shrinks_with_bits() {
        let x = gaussian(4 * QK_K, 3);
        let mut errors = Vec::new();
        for &ty in &[GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q5_0, GgmlType::Q5K, GgmlType::Q6K, GgmlType::Q8_0] {
            let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize(ty, &x, &mut q);
            let mut back = vec![0f32; x.len()];
            dequantize(ty, &q, &mut back);
            let rmse = (x.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.len() as f32).sqrt();
            errors.push((ty, rmse));
        }
        let bound = [0.12, 0.11, 0.06, 0.055, 0.03, 0.01];
        for ((ty, e), b) in errors.iter().zip(bound) {
            assert!(*e < b, "{ty}: rmse {e} (bound {b})");
        }
        assert!(errors.windows(2).all(|w| w[1].1 < w[0].1), "{errors:?}");
    }

    #[test]
    fn parallel_rows_are_the_same_bytes() {
        let x = gaussian(37 * QK_K, 5);
        for &ty in QUANTIZABLE {
            let n = ty.row_bytes(x.len()).unwrap();
            let (mut one, mut many) = (vec![0u8; n], vec![0u8; n]);
            quantize(ty, &x, &mut one);
            quantize_rows(ty, &x, QK_K, &mut many);
            assert_eq!(one, many, "{ty}");
        }
    }

    #[test]
    fn zeros_quantize_to_zeros() {
        for &ty in QUANTIZABLE {
            let x = vec![0f32; QK_K];
            let mut q = vec![0xaa; ty.row_bytes(QK_K).unwrap()];
            quantize(ty, &x, &mut q);
            let mut back = vec![1f32; QK_K];
            dequantize(ty, &q, &mut back);
            assert!(back.iter().all(|v| *v == 0.0), "{ty}");
        }
    }
}
