//! Decoding products in integers, as llama.cpp computes them: the activation row is quantized
//! once per product to 8 bits per value (llama.cpp's `vec_dot_type`: Q8_0 blocks of 32 for the
//! legacy types, Q8_K blocks of 256 with `bsums` for the k-quants), then every weight block is
//! dotted with it in integers and scaled once per block.
//!
//! This module is the definition every instruction-set path computes exactly:
//!
//! - **Activations** ([`quantize_row`]): Q8_0 as llama.cpp's x86 `quantize_row_q8_0` (scale
//!   `max|x| / 127` stored as f16, values `round_ties_even(x · 127 / max|x|)`, and Q8_1's f16
//!   `s = d · Σ q` for the types with a minimum), Q8_K as its `quantize_row_q8_K_ref` (the
//!   signed value of largest magnitude gives `-127 / max`, values rounded half to even, capped
//!   at 127, `bsums` of 16).
//! - **Legacy types** (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; blocks of 32): integer sums, exact, in
//!   eight lanes as the vector units form them: lane `l` of a block holds `Σ q_w · q_x` over
//!   the values `i` with `(i mod 32) / 4 = l` (four neighbouring bytes, what `vpmaddubsw` +
//!   `vpmaddwd` or `vpdpbusd` sum into one i32). Scaling (the only floating point): per block,
//!   `acc[l] = fma(d_w · d_x, lane[l], acc[l])` over eight f32 accumulators, even and odd blocks
//!   in two sets added lane-wise at the end; the minimum terms (Q4_1/Q5_1's `m · s_x`) go into
//!   four more, `macc`, in lane `b mod 4`. The result is `fold8(acc) + fold4(macc)`, summed as
//!   vector registers are ([`fold8`], [`fold4`]).
//! - **K-quants** (Q2_K..Q6_K; blocks of 256): per block, two exact integers, `S = Σ_g scale_g ·
//!   Σ_{i in g} q_w q_x` (signed weight values; Q4_K/Q5_K/Q2_K's unsigned ones) and, for the
//!   types with a minimum, `M = Σ_g min_g · Σ_{i in g} q_x` (through `bsums`); then one float
//!   step, [`k_step`]: `y = fma(S, d_w · d_x, y)`, `y = fma(M, -(dmin · d_x), y)`, block after
//!   block. Integer sums do not depend on the order they are formed in, so the prompt products
//!   ([`super::panel`], sixteen weight rows interleaved) compute exactly this too: a decoding
//!   row's bits are the same whether it goes through the row kernels or through panels, which
//!   lets a large decoding batch take the panels.
//!
//! The vector kernels (`x86.rs`) keep exactly these accumulators and steps, so every
//! instruction-set level gives [`dot_reference`]'s bits, and a row's result does not depend on
//! how many rows are computed beside it (continuous batching).
//!
//! Integer activations differ slightly from the f32 product with the dequantized weights (as
//! llama.cpp's do); `--dtype f32` dequantizes at load and keeps the exact path.

use super::{GgmlType, QK_K, f16_at};

/// How an activation row is quantized for a weight type (llama.cpp's `vec_dot_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationBlocks {
    /// Blocks of 32: f16 scale, 32 i8 (with their sum), for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
    Q8_0,
    /// Blocks of 256: f32 scale, 256 i8, 16 sums of 16, for Q2_K..Q6_K.
    Q8K,
}

impl ActivationBlocks {
    /// The activation blocks `ty`'s weights are dotted with; `None` for types without an integer
    /// product.
    pub fn for_weights(ty: GgmlType) -> Option<Self> {
        use GgmlType::*;
        match ty {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => Some(ActivationBlocks::Q8_0),
            Q2K | Q3K | Q4K | Q5K | Q6K => Some(ActivationBlocks::Q8K),
            _ => None,
        }
    }

    pub fn block_len(self) -> usize {
        match self {
            ActivationBlocks::Q8_0 => 32,
            ActivationBlocks::Q8K => QK_K,
        }
    }
}

/// One activation row in 8-bit blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedRow {
    pub blocks: ActivationBlocks,
    /// Number of blocks.
    pub len: usize,
    /// Each block's scale: `x ≈ d · q`. Q8_0's is the f16-rounded value llama.cpp stores.
    pub d: Vec<f32>,
    /// The quantized values, in [-127, 127].
    pub qs: Vec<i8>,
    /// Sums of the quantized values: one per block of 32 (Q8_0), one per group of 16 (Q8_K's
    /// `bsums`).
    pub sums: Vec<i16>,
    /// Q8_0 only: each block's `d · Σ q` with the unrounded scale, rounded to f16 (llama.cpp's
    /// Q8_1 `s`, what Q4_1/Q5_1 minimums multiply).
    pub s: Vec<f32>,
}

/// Quantizes `x` (a whole number of `blocks`' length) for the integer products. The same
/// operations at every instruction-set level (compiled wider where the CPU allows: rounding
/// half to even is one instruction from SSE4.1 on, a library call below it).
pub fn quantize_row(blocks: ActivationBlocks, x: &[f32]) -> QuantizedRow {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::current() >= crate::isa::Isa::Avx2 {
        /// # Safety
        /// AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn avx2(blocks: ActivationBlocks, x: &[f32]) -> QuantizedRow {
            quantize_row_with(blocks, x)
        }
        // SAFETY: the level includes AVX2, FMA and F16C.
        return unsafe { avx2(blocks, x) };
    }
    quantize_row_with(blocks, x)
}

#[inline(always)]
fn quantize_row_with(blocks: ActivationBlocks, x: &[f32]) -> QuantizedRow {
    let len = blocks.block_len();
    assert!(x.len() % len == 0, "an activation row of {} values is not whole blocks of {len}", x.len());
    let n = x.len() / len;
    let mut row = QuantizedRow {
        blocks,
        len: n,
        d: vec![0.0; n],
        qs: vec![0; x.len()],
        sums: vec![0; match blocks {
            ActivationBlocks::Q8_0 => n,
            ActivationBlocks::Q8K => n * (QK_K / 16),
        }],
        s: vec![0.0; if blocks == ActivationBlocks::Q8_0 { n } else { 0 }],
    };
    for (b, block) in x.chunks_exact(len).enumerate() {
        let qs = &mut row.qs[b * len..(b + 1) * len];
        match blocks {
            ActivationBlocks::Q8_0 => {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                for (q, &v) in qs.iter_mut().zip(block) {
                    *q = (v * id).round_ties_even() as i8;
                }
                row.d[b] = half::f16::from_f32(d).to_f32();
                row.sums[b] = qs.iter().map(|&q| q as i16).sum();
                row.s[b] = half::f16::from_f32(d * row.sums[b] as f32).to_f32();
            }
            ActivationBlocks::Q8K => {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                // The first value of largest magnitude, with its sign (llama.cpp's strict `>`).
                let Some(&max) = block.iter().find(|v| v.abs() == amax).filter(|_| amax != 0.0) else {
                    continue; // d = 0, values 0
                };
                let iscale = -127.0 / max;
                for (q, &v) in qs.iter_mut().zip(block) {
                    *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
                }
                for (s, group) in row.sums[b * 16..(b + 1) * 16].iter_mut().zip(qs.chunks_exact(16)) {
                    *s = group.iter().map(|&q| q as i16).sum();
                }
                row.d[b] = 1.0 / iscale;
            }
        }
    }
    row
}

/// The most activation rows a vector kernel is given per weight row: it unpacks each weight
/// block once per group of rows (4 with AVX2, 8 with AVX-512) and gives each row exactly the
/// operations it takes alone (its own accumulators, in the same order), so a row's bits do not
/// depend on the rows beside it.
pub(crate) const ROW_GROUP: usize = 8;

/// Eight lanes summed as a 256-bit register is: halves, then quarters, then the last pair,
/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
#[inline(always)]
pub(crate) fn fold8(l: [f32; 8]) -> f32 {
    fold4([l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]])
}

/// Four lanes summed as a 128-bit register is: `(l0 + l2) + (l1 + l3)`.
#[inline(always)]
pub(crate) fn fold4(l: [f32; 4]) -> f32 {
    (l[0] + l[2]) + (l[1] + l[3])
}

/// Whether `ty`'s values have a per-block (legacy) or per-group (k-quant) minimum term.
#[inline(always)]
pub(crate) fn has_min(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K)
}

/// The six-bit scales and mins of a Q4_K/Q5_K block, unpacked from its 12 bytes with llama.cpp's
/// word masks (`utmp`): `(scales, mins)` of the eight groups of 32.
#[inline(always)]
pub(crate) fn k4_scales_mins(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    let w = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (u0, u1, u2) = (w(0), w(1), w(2));
    let scales = [u0 & KMASK1, (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4)];
    let mins = [u1 & KMASK1, ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4)];
    let bytes = |pair: [u32; 2]| {
        let (a, b) = (pair[0].to_le_bytes(), pair[1].to_le_bytes());
        [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
    };
    (bytes(scales), bytes(mins))
}

/// A weight block unpacked to integers: values, one scale and one minimum per group of 16
/// (the k-quants' groups of 32 repeat theirs), and the f32 factors.
struct Unpacked<const N: usize> {
    q: [i8; N],
    scales: [i32; 16],
    mins: [i32; 16],
    d: f32,
    /// The k-quants' `dmin`, or the legacy types' `m` (0 where the type has none).
    min: f32,
}

/// Unpacks one block of `ty` (the scalar reference's view of the bytes; the vector kernels read
/// them directly).
fn unpack_legacy(ty: GgmlType, b: &[u8]) -> Unpacked<32> {
    let mut u = Unpacked { q: [0; 32], scales: [1; 16], mins: [0; 16], d: f16_at(b), min: 0.0 };
    let nibbles = |qs: &[u8], q: &mut [i8; 32], offset: i8| {
        for j in 0..16 {
            q[j] = (qs[j] & 0x0f) as i8 - offset;
            q[j + 16] = (qs[j] >> 4) as i8 - offset;
        }
    };
    let fifth = |qh: &[u8], q: &mut [i8; 32]| {
        let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, v) in q.iter_mut().enumerate() {
            *v += (((bits >> j) & 1) << 4) as i8;
        }
    };
    match ty {
        GgmlType::Q8_0 => u.q.iter_mut().zip(&b[2..34]).for_each(|(q, &v)| *q = v as i8),
        GgmlType::Q4_0 => nibbles(&b[2..18], &mut u.q, 8),
        GgmlType::Q4_1 => {
            nibbles(&b[4..20], &mut u.q, 0);
            u.min = f16_at(&b[2..]);
        }
        GgmlType::Q5_0 => {
            nibbles(&b[6..22], &mut u.q, 0);
            fifth(&b[2..6], &mut u.q);
            u.q.iter_mut().for_each(|q| *q -= 16);
        }
        GgmlType::Q5_1 => {
            nibbles(&b[8..24], &mut u.q, 0);
            fifth(&b[4..8], &mut u.q);
            u.min = f16_at(&b[2..]);
        }
        other => unreachable!("{other} is not a legacy block type"),
    }
    u
}

fn unpack_k(ty: GgmlType, b: &[u8]) -> Unpacked<QK_K> {
    let mut u = Unpacked { q: [0; QK_K], scales: [0; 16], mins: [0; 16], d: 0.0, min: 0.0 };
    match ty {
        GgmlType::Q2K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            (u.d, u.min) = (f16_at(&b[80..]), f16_at(&b[82..]));
            for g in 0..16 {
                (u.scales[g], u.mins[g]) = ((scales[g] & 0x0f) as i32, (scales[g] >> 4) as i32);
            }
            // Group g (16 values): half g / 8, shift 2·((g / 2) % 4), bytes 16·(g % 2) of the half.
            for (i, q) in u.q.iter_mut().enumerate() {
                let (g, l) = (i / 16, i % 16);
                let byte = qs[(g / 8) * 32 + (g % 2) * 16 + l];
                *q = ((byte >> (2 * ((g / 2) % 4))) & 3) as i8;
            }
        }
        GgmlType::Q3K => {
            let (hmask, qs) = (&b[0..32], &b[32..96]);
            let scales = super::dequant::q3_k_scales(&b[96..108]);
            u.d = f16_at(&b[108..]);
            for g in 0..16 {
                u.scales[g] = scales[g] as i32;
            }
            for (i, q) in u.q.iter_mut().enumerate() {
                let (g, l) = (i / 16, i % 16);
                let at = (g % 2) * 16 + l;
                let shift = 2 * ((g / 2) % 4);
                let low = ((qs[(g / 8) * 32 + at] >> shift) & 3) as i8;
                let high_bit = hmask[at] >> (g / 2) & 1;
                *q = low - if high_bit != 0 { 0 } else { 4 };
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let fifth_bit = ty == GgmlType::Q5K;
            (u.d, u.min) = (f16_at(b), f16_at(&b[2..]));
            let (scales, mins) = k4_scales_mins(&b[4..16]);
            for g in 0..16 {
                (u.scales[g], u.mins[g]) = (scales[g / 2] as i32, mins[g / 2] as i32);
            }
            let (qh, qs) = if fifth_bit { (&b[16..48], &b[48..176]) } else { (&b[16..16], &b[16..144]) };
            for chunk in 0..4 {
                for l in 0..32 {
                    let byte = qs[chunk * 32 + l];
                    let (mut lo, mut hi) = (byte & 0x0f, byte >> 4);
                    if fifth_bit {
                        lo |= ((qh[l] >> (2 * chunk)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * chunk + 1)) & 1) << 4;
                    }
                    u.q[chunk * 64 + l] = lo as i8;
                    u.q[chunk * 64 + 32 + l] = hi as i8;
                }
            }
        }
        GgmlType::Q6K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            u.d = f16_at(&b[208..]);
            for g in 0..16 {
                u.scales[g] = sc[g] as i8 as i32;
            }
            for half in 0..2 {
                let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
                let q = &mut u.q[half * 128..];
                for l in 0..32 {
                    q[l] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
                    q[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                    q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                    q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                }
            }
        }
        other => unreachable!("{other} is not a k-quant"),
    }
    u
}

/// `row · x` for one weight row of `ty` (the bytes of `x.len` blocks) and a quantized activation
/// row: the scalar reference every vector kernel equals bit for bit.
pub fn dot_reference(ty: GgmlType, row: &[u8], x: &QuantizedRow) -> f32 {
    let (len, bytes) = ty.block();
    assert_eq!(Some(x.blocks), ActivationBlocks::for_weights(ty), "{ty} weights with {:?} activations", x.blocks);
    assert_eq!(row.len(), x.len * bytes, "{ty} row of {} bytes for {} activation blocks", row.len(), x.len);
    // The legacy types' blocks alternate between two accumulators (the FMA chain of one would
    // bound a one-row kernel at one block per FMA latency).
    let mut acc = [[0f32; 8]; 2];
    let mut macc = [0f32; 4];
    let mut y = 0f32;
    for (b, block) in row.chunks_exact(bytes).enumerate() {
        let xq = &x.qs[b * len..(b + 1) * len];
        if len == 32 {
            let mut lanes = [0i32; 8];
            let u = unpack_legacy(ty, block);
            for (i, (&w, &v)) in u.q.iter().zip(xq).enumerate() {
                lanes[i / 4] += w as i32 * v as i32;
            }
            if has_min(ty) {
                macc[b % 4] = u.min.mul_add(x.s[b], macc[b % 4]);
            }
            let d = u.d * x.d[b];
            for (a, &l) in acc[b % 2].iter_mut().zip(&lanes) {
                *a = d.mul_add(l as f32, *a);
            }
        } else {
            let u = unpack_k(ty, block);
            let s: i32 = u.q.iter().zip(xq).enumerate().map(|(i, (&w, &v))| u.scales[i / 16] * (w as i32 * v as i32)).sum();
            let m: i32 = (0..16).map(|g| u.mins[g] * x.sums[b * 16 + g] as i32).sum();
            y = k_step(s, has_min(ty).then_some(m), u.d, u.min, x.d[b], y);
        }
    }
    if len == 32 { fold8(std::array::from_fn(|i| acc[0][i] + acc[1][i])) + fold4(macc) } else { y }
}

/// Whether `ty`'s decoding arithmetic is the panels' too (the k-quants'), so that decoding rows
/// may take either path and get the same bits.
pub fn same_on_panels(ty: GgmlType) -> bool {
    matches!(ActivationBlocks::for_weights(ty), Some(ActivationBlocks::Q8K))
}

/// A k-quant block's float step: `S` (`Σ scale · q_w q_x`) and, for the types with a minimum,
/// `M` (`Σ min · Σ q_x`), both exact, added to `y` with the weight block's `d`, `dmin` and the
/// activation block's `d_x`. Every kernel, row-wise or on panels, takes these operations.
#[inline(always)]
pub(crate) fn k_step(s: i32, m: Option<i32>, d: f32, dmin: f32, dx: f32, y: f32) -> f32 {
    let y = (s as f32).mul_add(d * dx, y);
    match m {
        Some(m) => (m as f32).mul_add(-(dmin * dx), y),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::matvec::tests::values;
    use crate::quant::{dequantize, quantize};


    #[test]
    fn k4_scales_mins_equal_the_byte_unpacking() {
        for seed in 0..50u64 {
            let packed: Vec<u8> = values(12, seed).iter().map(|v| (v.to_bits() >> 7) as u8).collect();
            let (scales, mins) = k4_scales_mins(&packed);
            for j in 0..8 {
                assert_eq!((scales[j], mins[j]), super::super::dequant::scale_min_k4(j, &packed), "seed {seed} j {j}");
            }
        }
    }

    /// Q8_0 activations as llama.cpp's x86 quantizer, Q8_K as its reference: the scale, the
    /// signs, ties to even, zero blocks and the sums.
    #[test]
    fn activation_blocks_follow_llama_cpp() {
        let mut x = values(512, 3);
        x[5] = -2.0; // block 0's largest magnitude, negative
        x[300] = 1.5;
        x[301] = -1.5; // a tie in magnitude: the first one (positive) sets the sign
        let q = quantize_row(ActivationBlocks::Q8K, &x);
        assert_eq!(q.d[0], 1.0 / (-127.0 / -2.0));
        assert_eq!(q.qs[5], -127); // d > 0 when the largest is negative
        assert_eq!((q.qs[300], q.qs[301]), (-127, 127)); // and d < 0 when positive
        assert!(q.d[1] < 0.0);
        for b in 0..2 {
            for g in 0..16 {
                let s: i16 = q.qs[b * 256 + g * 16..][..16].iter().map(|&v| v as i16).sum();
                assert_eq!(q.sums[b * 16 + g], s);
            }
            for i in 0..256 {
                let want = ((-127.0 / if b == 0 { -2.0f32 } else { 1.5 }) * x[b * 256 + i]).round_ties_even();
                assert_eq!(q.qs[b * 256 + i] as f32, want);
            }
        }
        let q = quantize_row(ActivationBlocks::Q8_0, &x[..64]);
        assert_eq!((q.d.len(), q.sums.len()), (2, 2));
        assert_eq!(q.d[0], half::f16::from_f32(2.0 / 127.0).to_f32());
        assert_eq!(q.qs[5], -127);
        // 0.5 · 127/amax lands on a tie: rounded to even.
        let mut ties = vec![0f32; 32];
        ties[0] = 127.0;
        ties[1] = 2.5;
        ties[2] = 3.5;
        ties[3] = -2.5;
        let q = quantize_row(ActivationBlocks::Q8_0, &ties);
        assert_eq!(&q.qs[..4], &[127, 2, 4, -2]);
        assert_eq!(q.sums[0], 131);
        let zero = quantize_row(ActivationBlocks::Q8K, &[0.0; 256]);
        assert!(zero.d[0] == 0.0 && zero.qs.iter().all(|&v| v == 0));
    }

    /// The dispatched quantizer (compiled for the level in use) equals the plain one.
    #[test]
    fn quantizer_is_the_same_at_every_level() {
        let x: Vec<f32> = values(4096, 9).iter().enumerate().map(|(i, v)| v * (1 + i % 13) as f32 * 0.37).collect();
        for blocks in [ActivationBlocks::Q8_0, ActivationBlocks::Q8K] {
            assert_eq!(quantize_row(blocks, &x), quantize_row_with(blocks, &x), "{blocks:?} under {}", crate::isa::current());
        }
    }

    /// The integer product equals the f64 product of the dequantized weights with the
    /// dequantized activations (d·q) up to f32 rounding: every type's unpacking is right.
    #[test]
    fn reference_equals_the_dequantized_product() {
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            let k = 2304; // 9 k-quant blocks, 72 legacy ones: a partial group of 8 either way
            let w = values(k, 1);
            let mut bytes = vec![0u8; ty.row_bytes(k).unwrap()];
            if crate::quant::QUANTIZABLE.contains(&ty) {
                quantize(ty, &w, &mut bytes);
            } else {
                // Types without a quantizer here: random bytes with small f16 scales.
                let mut s = 7u64;
                for b in bytes.iter_mut() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    *b = (s >> 56) as u8;
                }
                let (len, size) = ty.block();
                let scale_at: &[usize] = if ty == GgmlType::Q2K { &[80, 82] } else { &[108] };
                for block in bytes.chunks_exact_mut(size) {
                    for &at in scale_at {
                        block[at..at + 2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
                    }
                }
                assert_eq!(len, QK_K);
            }
            let mut dense = vec![0f32; k];
            dequantize(ty, &bytes, &mut dense);
            let x = values(k, 2);
            let blocks = ActivationBlocks::for_weights(ty).unwrap();
            let q = quantize_row(blocks, &x);
            let len = blocks.block_len();
            let xd: Vec<f64> = (0..k).map(|i| q.d[i / len] as f64 * q.qs[i] as f64).collect();
            let want: f64 = dense.iter().zip(&xd).map(|(&w, &x)| w as f64 * x).sum();
            let scale: f64 = dense.iter().zip(&xd).map(|(&w, &x)| (w as f64 * x).abs()).sum();
            let got = dot_reference(ty, &bytes, &q) as f64;
            // Q4_1/Q5_1's minimums multiply llama.cpp's f16 `s` rather than d·Σq: that difference
            // exactly, per block.
            let min_terms: f64 = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                bytes.chunks_exact(ty.block().1).enumerate().map(|(b, block)| (f16_at(&block[2..]) as f64 * (q.s[b] as f64 - q.d[b] as f64 * q.sums[b] as f64)).abs()).sum()
            } else {
                0.0
            };
            // f32 scale products and k/len fused additions: well inside 1e-5 of the terms' sum.
            assert!((got - want).abs() <= 1e-5 * scale + min_terms, "{ty}: {got} vs {want} (terms {scale})");
            // And close to the f32 activations' product (the quantization error of x).
            let exact: f64 = dense.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
            assert!((got - exact).abs() <= 2e-2 * scale, "{ty}: {got} vs unquantized {exact}");
        }
    }
}
