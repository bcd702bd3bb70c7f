//! Prompt products in integers: weight rows interleaved sixteen at a time ("panels"), each
//! activation row quantized once to 8 bits, and one integer dot-product instruction computing
//! four products for each of the sixteen output columns at once.
//!
//! Why panels: a prompt product reads each weight block once for many activation rows, so the
//! per-block work (scales, minimums, the conversion to float) must serve many outputs at once.
//! Dotting a block with several activation rows one weight row at a time paid that work per
//! row and did not beat the f32 GEMM on dequantized tiles (docs/benchmarks.md, 2026-12-07).
//! Interleaved, lane `l` of every vector belongs to weight row `l`: the block's integer sums
//! come out one per lane with no horizontal folding, and the scales and minimums are vectors of
//! sixteen rows, applied with one FMA each (llama.cpp's `CPU_REPACK` layouts do the same for
//! Q4_0/Q4_K with 8 rows). Unlike llama.cpp, the panels are built per product from the mapped
//! file, by the thread that uses them (a few KiB per panel, in cache): a repack at load would
//! be a second copy of the weights, or would take the file's layout away from the decoding
//! kernels.
//!
//! ## The layout
//! Each value becomes an unsigned integer `u`. Legacy types: `w = dsc · u - dmm` over a block of
//! 32 values: Q4_0 `u = q` (`dsc = d`, `dmm = 8d`), Q4_1 (`dmm = -m`), Q5_0, Q5_1, Q8_0 (`u = q +
//! 128`); every `dsc`, `dmm` exact in f32 (an f16 times at most 8 bits). K-quants: `w = d ·
//! scale · (u - c) - dmin · min` over a sub-block of [`sub_len`] values, with integer `scale` and
//! `min`: Q4_K/Q5_K (`c = 0`), Q6_K (`c = 32`), Q3_K (`c = 4`), Q2_K. In a panel, sub-block `g`'s
//! values are `S/4` steps of 64 bytes, four consecutive values of each of the 16 rows
//! ([`Panel`]); then, legacy types, 16 `dsc` and 16 `dmm` per block; k-quants, 16 integer scales
//! per sub-block, 16 pairs of 16-bit minimums per pair of sub-blocks and 16 `d`, 16 `dmin` per
//! block.
//!
//! ## The arithmetic (what every instruction-set level computes, bit for bit)
//! Activations are quantized as the decoding products quantize them ([`super::int8`]: Q8_K
//! blocks of 256 for the k-quants, Q8_0 blocks of 32 for the legacy types).
//!
//! - Legacy types (one sub-block per activation block), for an activation row and a weight
//!   row, over the blocks `b`: `t = fma(Σ u·q_x as f32, dsc, 0); t = fma(-Σ q_x as f32, dmm, t)`,
//!   then `y = fma(t, d_x(b), y)`; where the minimum is a fixed multiple `c` of the scale
//!   (Q4_0, Q5_0, Q8_0) the step is one FMA on an exact integer: `t = fma((Σ u·q_x - c·Σ q_x)
//!   as f32, dsc, 0)`.
//! - K-quants: the decoding arithmetic itself ([`super::int8::k_step`]): per block the exact
//!   integers `S = Σ_g scale_g · (Σ_g u·q_x - c·Σ_g q_x)` (`vpmulld` by each sub-block's integer
//!   scale) and `M = Σ_g min_g · Σ_g q_x` (`vpdpwssd` / `vpmaddwd` on pairs of 16-bit minimums
//!   and sums), then `y = fma(S, d·d_x, y)`, `y = fma(M, -(dmin·d_x), y)`. So a decoding row
//!   gives the same bits on panels as in the row kernels, and a large decoding batch takes the
//!   panels ([`super::matmul`]).
//!
//! The integer sums are exact (whatever instructions form them), so [`reference`] and the
//! vector kernels agree to the bit, and a row's result never depends on the rows computed
//! beside it: prompts split into chunks, or batched with other prompts, give the same numbers
//! (the prefix cache relies on it).
//!
//! Levels: AVX-512 with VNNI (`vpdpbusd`, 16 lanes, four activation rows at a time); AVX2
//! (`vpmaddubsw` into 16-bit sums as long as they cannot overflow, `vpmaddwd` to 32 bits; two
//! halves of 8 lanes, three rows at a time). The scalar level keeps the dequantized tiles and
//! the f32 GEMM (faster there than this reference), and so do Q8_0 weights without VNNI: their
//! values made unsigned (up to 255) would overflow `vpmaddubsw`'s 16-bit pairs.

use super::int8::{ActivationBlocks, quantize_row};
use super::dequant::{q3_k_scales, scale_min_k4};
use super::{GgmlType, f16_at};

/// Weight rows per panel: one 32-bit lane of a 512-bit vector each.
pub const LANES: usize = 16;

/// Values per sub-block (one scale and minimum) of `ty` in a panel; `None` for the types that
/// keep the dequantized tiles.
pub fn sub_len(ty: GgmlType) -> Option<usize> {
    use GgmlType::*;
    match ty {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4K | Q5K => Some(32),
        Q2K | Q3K | Q6K => Some(16),
        _ => None,
    }
}

/// The largest unsigned value `u` of `ty` (how long 16-bit sums may run on AVX2).
fn max_value(ty: GgmlType) -> u32 {
    use GgmlType::*;
    match ty {
        Q2K => 3,
        Q3K => 7,
        Q4_0 | Q4_1 | Q4K => 15,
        Q5_0 | Q5_1 | Q5K => 31,
        Q6K => 63,
        other => unreachable!("{other} has no AVX2 panel kernel"),
    }
}

/// Sixteen weight rows interleaved (see the module doc), reused for a thread's panels.
#[derive(Default)]
pub struct Panel {
    /// The values as `[k / 4][16 rows][4]` bytes: sub-block `g`'s `S/4` steps of 64 bytes
    /// follow each other.
    quants: Vec<u8>,
    /// Legacy types, per sub-block: 16 scales, then 16 minimums.
    scales: Vec<f32>,
    /// K-quants, per sub-block: the 16 rows' integer scales.
    iscales: Vec<i32>,
    /// K-quants with a minimum, per block and pair of sub-blocks: the 16 rows' two integer
    /// minimums as 16-bit halves (`vpdpwssd` / `vpmaddwd` operands).
    imins: Vec<i32>,
    /// K-quants, per block: the 16 rows' `d`, then their `dmin`.
    dblock: Vec<f32>,
    /// The 16 rows' values before interleaving, `[16][k]`.
    rows: Vec<u8>,
}

/// Whether `ty` is a k-quant (blocks of 256 with integer sub-block scales).
fn is_k(ty: GgmlType) -> bool {
    ty.block().0 == super::QK_K
}

/// A k-quant block's `d`, `dmin` (0 without a minimum) and its sub-blocks' integer scales and
/// minimums (as [`super::int8`]'s decoding reads them).
#[inline(always)]
fn k_scales(ty: GgmlType, b: &[u8], sc: &mut [i32; 16], mn: &mut [i32; 16]) -> (f32, f32) {
    use GgmlType::*;
    match ty {
        Q4K | Q5K => {
            let (scales, mins) = super::int8::k4_scales_mins(&b[4..16]);
            for g in 0..8 {
                (sc[g], mn[g]) = (scales[g] as i32, mins[g] as i32);
            }
            (f16_at(b), f16_at(&b[2..]))
        }
        Q6K => {
            for g in 0..16 {
                sc[g] = b[192 + g] as i8 as i32;
            }
            (f16_at(&b[208..]), 0.0)
        }
        Q3K => {
            let scales = q3_k_scales(&b[96..108]);
            for g in 0..16 {
                sc[g] = scales[g] as i32;
            }
            (f16_at(&b[108..]), 0.0)
        }
        Q2K => {
            for g in 0..16 {
                (sc[g], mn[g]) = ((b[g] & 0x0f) as i32, (b[g] >> 4) as i32);
            }
            (f16_at(&b[80..]), f16_at(&b[82..]))
        }
        other => unreachable!("{other} is not a k-quant"),
    }
}

/// Two 16-bit values in one i32 lane, `lo` in the low half.
#[inline(always)]
fn pair_i16(lo: i32, hi: i32) -> i32 {
    ((lo as i16 as u16 as u32) | ((hi as i16 as u16 as u32) << 16)) as i32
}

/// A block's values as unsigned integers (`u`, in value order) and each sub-block's scale and
/// minimum (`w = dsc · u - dmm`, [`scales`]).
#[inline(always)]
fn unpack(ty: GgmlType, b: &[u8], u: &mut [u8], dsc: &mut [f32], dmm: &mut [f32]) {
    use GgmlType::*;
    // Fixed-size views: the loops below then need no bounds checks and vectorize.
    fn arr<const N: usize>(s: &[u8]) -> &[u8; N] {
        s[..N].try_into().expect("block size checked by the caller")
    }
    fn arr_mut<const N: usize>(s: &mut [u8]) -> &mut [u8; N] {
        (&mut s[..N]).try_into().expect("block size checked by the caller")
    }
    match ty {
        Q4_0 | Q4_1 => {
            let (qs, u) = (arr::<16>(&b[if ty == Q4_0 { 2 } else { 4 }..]), arr_mut::<32>(u));
            for j in 0..16 {
                u[j] = qs[j] & 0x0f;
                u[j + 16] = qs[j] >> 4;
            }
        }
        Q5_0 | Q5_1 => {
            let at = if ty == Q5_0 { 2 } else { 4 };
            let qh = u32::from_le_bytes(*arr::<4>(&b[at..]));
            let (qs, u) = (arr::<16>(&b[at + 4..]), arr_mut::<32>(u));
            for j in 0..16 {
                u[j] = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
                u[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            }
        }
        Q8_0 => {
            // Signed values made unsigned: u = q + 128 (the sign bit flipped).
            let (qs, u) = (arr::<32>(&b[2..]), arr_mut::<32>(u));
            for j in 0..32 {
                u[j] = qs[j] ^ 0x80;
            }
        }
        Q4K | Q5K => {
            let u = arr_mut::<256>(u);
            if ty == Q5K {
                let (qh, qs) = (arr::<32>(&b[16..]), arr::<128>(&b[48..]));
                for chunk in 0..4 {
                    let (lo, hi) = (2 * chunk, 2 * chunk + 1);
                    for l in 0..32 {
                        let q = qs[chunk * 32 + l];
                        u[lo * 32 + l] = (q & 0x0f) | (((qh[l] >> lo) & 1) << 4);
                        u[hi * 32 + l] = (q >> 4) | (((qh[l] >> hi) & 1) << 4);
                    }
                }
            } else {
                let qs = arr::<128>(&b[16..]);
                for chunk in 0..4 {
                    for l in 0..32 {
                        let q = qs[chunk * 32 + l];
                        u[chunk * 64 + l] = q & 0x0f;
                        u[chunk * 64 + 32 + l] = q >> 4;
                    }
                }
            }
        }
        Q6K => {
            let (ql, qh) = (arr::<128>(b), arr::<64>(&b[128..]));
            let u = arr_mut::<256>(u);
            for half in 0..2 {
                for l in 0..32 {
                    let (a, c, h) = (ql[half * 64 + l], ql[half * 64 + l + 32], qh[half * 32 + l]);
                    u[half * 128 + l] = (a & 0x0f) | ((h & 3) << 4);
                    u[half * 128 + l + 32] = (c & 0x0f) | (((h >> 2) & 3) << 4);
                    u[half * 128 + l + 64] = (a >> 4) | (((h >> 4) & 3) << 4);
                    u[half * 128 + l + 96] = (c >> 4) | (((h >> 6) & 3) << 4);
                }
            }
        }
        Q3K => {
            let (hmask, qs) = (arr::<32>(b), arr::<64>(&b[32..]));
            let u = arr_mut::<256>(u);
            for half in 0..2 {
                for (n, shift) in [0, 2, 4, 6].into_iter().enumerate() {
                    let m = 1u8 << (half * 4 + n);
                    for i in 0..32 {
                        // value = low with the high bit, low - 4 without: u = value + 4.
                        let low = (qs[half * 32 + i] >> shift) & 3;
                        u[half * 128 + n * 32 + i] = low + if hmask[i] & m != 0 { 4 } else { 0 };
                    }
                }
            }
        }
        Q2K => {
            let qs = arr::<64>(&b[16..]);
            let u = arr_mut::<256>(u);
            for half in 0..2 {
                for (n, shift) in [0, 2, 4, 6].into_iter().enumerate() {
                    for i in 0..32 {
                        u[half * 128 + n * 32 + i] = (qs[half * 32 + i] >> shift) & 3;
                    }
                }
            }
        }
        other => unreachable!("{other} has no panels"),
    }
    // The k-quants' integer scales are filled apart (`Panel::fill_k_scales`): their float
    // scales here would be unused, and cost a panel's filling as much as its values.
    if !is_k(ty) {
        scales(ty, b, dsc, dmm);
    }
}

/// A block's scale and minimum per sub-block (`w = dsc · u - dmm`); where the minimum is a fixed
/// multiple of the scale, `dmm = offset(ty) · dsc`.
#[inline(always)]
fn scales(ty: GgmlType, b: &[u8], dsc: &mut [f32], dmm: &mut [f32]) {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => dsc[0] = f16_at(b),
        Q4_1 | Q5_1 => {
            dsc[0] = f16_at(b);
            dmm[0] = -f16_at(&b[2..]);
        }
        Q4K | Q5K => {
            let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
            for g in 0..8 {
                let (s, m) = scale_min_k4(g, &b[4..16]);
                dsc[g] = d * s as f32;
                dmm[g] = dmin * m as f32;
            }
        }
        Q6K => {
            let d = f16_at(&b[208..]);
            for g in 0..16 {
                dsc[g] = d * (b[192 + g] as i8) as f32;
            }
        }
        Q3K => {
            let (scales, d) = (q3_k_scales(&b[96..108]), f16_at(&b[108..]));
            for g in 0..16 {
                dsc[g] = d * scales[g] as f32;
            }
        }
        Q2K => {
            let (d, dmin) = (f16_at(&b[80..]), f16_at(&b[82..]));
            for g in 0..16 {
                dsc[g] = d * (b[g] & 0x0f) as f32;
                dmm[g] = dmin * (b[g] >> 4) as f32;
            }
        }
        other => unreachable!("{other} has no panels"),
    }
    let c = offset(ty);
    if c != 0 {
        let subs = ty.block().0 / sub_len(ty).expect("a type with panels");
        for g in 0..subs {
            dmm[g] = c as f32 * dsc[g];
        }
    }
}

impl Panel {
    /// Fills the panel with `rows.len()` (at most 16) weight rows of `k` values of `ty`; the
    /// missing rows are zeros (their lanes are computed and not stored).
    pub fn fill(&mut self, ty: GgmlType, k: usize, rows: &[&[u8]]) {
        assert!(rows.len() <= LANES && sub_len(ty).is_some());
        #[cfg(target_arch = "x86_64")]
        if crate::isa::current() >= crate::isa::Isa::Avx2 {
            // SAFETY: the level includes AVX2.
            return unsafe { x86::fill(self, ty, k, rows) };
        }
        self.fill_with(ty, k, rows, |rows, quants, k| {
            for w in 0..k / 4 {
                for r in 0..LANES {
                    quants[w * 64 + r * 4..w * 64 + r * 4 + 4].copy_from_slice(&rows[r * k + w * 4..r * k + w * 4 + 4]);
                }
            }
        });
    }

    /// Unpacks the rows into `self.rows`, the scales into place, then `interleave(rows,
    /// quants, k)` moves each row's groups of four values into their lanes.
    #[inline(always)]
    fn fill_with(&mut self, ty: GgmlType, k: usize, rows: &[&[u8]], interleave: impl Fn(&[u8], &mut [u8], usize)) {
        self.size(ty, k);
        if self.rows.len() != k * LANES || rows.len() < LANES {
            self.rows.clear();
            self.rows.resize(k * LANES, 0);
        }
        // One loop per type, with `unpack`'s match resolved at compile time.
        use GgmlType::*;
        macro_rules! each {
            ($($t:ident),*) => {
                match ty {
                    $($t => self.unpack_rows(k, rows, |b, u, dsc, dmm| unpack($t, b, u, dsc, dmm), sub_len($t).unwrap(), $t.block()),)*
                    other => unreachable!("{other} has no panels"),
                }
            };
        }
        each!(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K);
        if is_k(ty) {
            self.fill_k_scales(ty, rows);
        }
        interleave(&self.rows, &mut self.quants, k);
    }

    /// Sizes the buffers for `k` values of `ty` per row; the scales are zeros.
    #[inline(always)]
    fn size(&mut self, ty: GgmlType, k: usize) {
        let subs = k / sub_len(ty).expect("a type with panels");
        self.quants.resize(k * LANES, 0);
        if is_k(ty) {
            let blocks = k / super::QK_K;
            self.iscales.clear();
            self.iscales.resize(subs * LANES, 0);
            self.imins.clear();
            self.imins.resize(subs / 2 * LANES, 0);
            self.dblock.clear();
            self.dblock.resize(blocks * 2 * LANES, 0.0);
        } else {
            self.scales.clear();
            self.scales.resize(subs * 2 * LANES, 0.0);
        }
    }

    /// A k-quant's block factors, integer scales and minimums of `rows`.
    #[inline(always)]
    fn fill_k_scales(&mut self, ty: GgmlType, rows: &[&[u8]]) {
        #[cfg(target_arch = "x86_64")]
        if crate::isa::current() >= crate::isa::Isa::Avx2 && matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K) {
            // SAFETY: the level includes AVX2 and F16C.
            if unsafe { x86::k_scales_gathered(self, ty, rows) } {
                return;
            }
        }
        let (s, (len, bytes)) = (sub_len(ty).expect("a type with panels"), ty.block());
        let (subs, pairs) = (len / s, len / s / 2);
        let (mut sc, mut mn) = ([0i32; 16], [0i32; 16]);
        for (r, row) in rows.iter().enumerate() {
            for (b, block) in row.chunks_exact(bytes).enumerate() {
                let (d, dmin) = k_scales(ty, block, &mut sc, &mut mn);
                self.dblock[b * 2 * LANES + r] = d;
                self.dblock[b * 2 * LANES + LANES + r] = dmin;
                for g in 0..subs {
                    self.iscales[(b * subs + g) * LANES + r] = sc[g];
                }
                for p in 0..pairs {
                    self.imins[(b * pairs + p) * LANES + r] = pair_i16(mn[2 * p], mn[2 * p + 1]);
                }
            }
        }
    }

    /// Only the scales and minimums of the rows (the values are interleaved by the caller).
    #[inline(always)]
    fn fill_scales(&mut self, ty: GgmlType, rows: &[&[u8]]) {
        use GgmlType::*;
        let (s, (len, bytes)) = (sub_len(ty).expect("a type with panels"), ty.block());
        let per_block = len / s;
        macro_rules! each {
            ($($t:ident),*) => {
                match ty {
                    $($t => {
                        let (mut dsc, mut dmm) = ([0f32; 16], [0f32; 16]);
                        for (r, row) in rows.iter().enumerate() {
                            for (b, block) in row.chunks_exact(bytes).enumerate() {
                                scales($t, block, &mut dsc, &mut dmm);
                                for j in 0..per_block {
                                    let g = b * per_block + j;
                                    self.scales[g * 2 * LANES + r] = dsc[j];
                                    self.scales[g * 2 * LANES + LANES + r] = dmm[j];
                                }
                            }
                        }
                    })*
                    other => unreachable!("{other} has no fused filling"),
                }
            };
        }
        each!(Q4_0, Q8_0);
    }

    #[inline(always)]
    fn unpack_rows(&mut self, k: usize, rows: &[&[u8]], unpack: impl Fn(&[u8], &mut [u8], &mut [f32], &mut [f32]), s: usize, (len, bytes): (usize, usize)) {
        let per_block = len / s;
        let (mut dsc, mut dmm) = ([0f32; 16], [0f32; 16]);
        for (r, row) in rows.iter().enumerate() {
            let values = &mut self.rows[r * k..(r + 1) * k];
            for (b, (block, u)) in row.chunks_exact(bytes).zip(values.chunks_exact_mut(len)).enumerate() {
                unpack(block, u, &mut dsc, &mut dmm);
                if per_block > 1 {
                    continue; // the k-quants' scales: fill_k_scales
                }
                for j in 0..per_block {
                    let g = b * per_block + j;
                    self.scales[g * 2 * LANES + r] = dsc[j];
                    self.scales[g * 2 * LANES + LANES + r] = dmm[j];
                }
            }
        }
    }
}

/// Activation rows quantized for panels of one weight type: the values, each activation
/// block's scale and each sub-block's negated sum.
pub struct Activations {
    pub rows: usize,
    pub k: usize,
    /// Values per activation block (256 or 32) and per sub-block.
    block: usize,
    sub: usize,
    qx: Vec<i8>,
    dx: Vec<f32>,
    neg_sums: Vec<f32>,
    /// For the types whose minimum is a fixed multiple of the scale ([`offset`]): that
    /// multiple, and each sub-block's sum times it (`c · Σ q_x`, exact).
    offset: i32,
    offset_sums: Vec<i32>,
    /// K-quants with a minimum: each pair of sub-blocks' sums as 16-bit halves ([`pair_i16`]).
    has_min: bool,
    pair_sums: Vec<i32>,
}

/// `c` where `ty`'s values are `dsc · (u - c)` (the minimum a fixed multiple of the scale):
/// those sub-blocks take `c · Σ q_x` off their integer sum before the one FMA, instead of a
/// second FMA for the minimum (the FMA units also run `vpdpbusd`). 0 for the types with a
/// minimum of their own (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K).
fn offset(ty: GgmlType) -> i32 {
    use GgmlType::*;
    match ty {
        Q3K => 4,
        Q4_0 => 8,
        Q5_0 => 16,
        Q6K => 32,
        Q8_0 => 128,
        _ => 0,
    }
}

impl Activations {
    /// `x` (`rows` rows of `k`) quantized as the decoding products do for `ty`'s weights, a few
    /// rows per piece of work on the pool's threads.
    pub fn quantize(ty: GgmlType, x: &[f32], k: usize) -> Self {
        use crate::parallel::{Shared, share_pieces};
        let blocks = ActivationBlocks::for_weights(ty).expect("a type with an integer product");
        let (block, sub) = (blocks.block_len(), sub_len(ty).expect("a type with panels"));
        let rows = x.len() / k;
        let (per_row_blocks, per_row_subs) = (k / block, k / sub);
        let c = offset(ty);
        let mut a = Activations {
            rows,
            k,
            block,
            sub,
            qx: vec![0; rows * k],
            dx: vec![0.0; rows * per_row_blocks],
            neg_sums: vec![0.0; rows * per_row_subs],
            offset: c,
            offset_sums: vec![0; rows * per_row_subs],
            has_min: super::int8::has_min(ty),
            pair_sums: vec![0; rows * per_row_subs / 2],
        };
        let (qx, dx, neg, off) = (Shared(a.qx.as_mut_ptr()), Shared(a.dx.as_mut_ptr()), Shared(a.neg_sums.as_mut_ptr()), Shared(a.offset_sums.as_mut_ptr()));
        let pairs = Shared(a.pair_sums.as_mut_ptr());
        const ROWS_PER_PIECE: usize = 4;
        let threads = if rows * k < 1 << 16 { 1 } else { rayon::current_num_threads() };
        share_pieces(rows.div_ceil(ROWS_PER_PIECE), threads, |piece, _: &mut ()| {
            for r in piece * ROWS_PER_PIECE..((piece + 1) * ROWS_PER_PIECE).min(rows) {
                let q = quantize_row(blocks, &x[r * k..(r + 1) * k]);
                // `sums` are per 32 (Q8_0) or per 16 (Q8_K): gathered per sub-block.
                let per = sub / (block / (q.sums.len() / q.len));
                // SAFETY: row `r`'s parts of the three buffers belong to this piece only.
                unsafe {
                    std::ptr::copy_nonoverlapping(q.qs.as_ptr(), qx.ptr().add(r * k), k);
                    std::ptr::copy_nonoverlapping(q.d.as_ptr(), dx.ptr().add(r * per_row_blocks), per_row_blocks);
                    let mut previous = 0;
                    for (g, part) in q.sums.chunks_exact(per).enumerate() {
                        let sum: i32 = part.iter().map(|&s| s as i32).sum();
                        *neg.ptr().add(r * per_row_subs + g) = -(sum as f32);
                        *off.ptr().add(r * per_row_subs + g) = c * sum;
                        if g % 2 == 1 && block != sub {
                            *pairs.ptr().add((r * per_row_subs + g) / 2) = pair_i16(previous, sum);
                        }
                        previous = sum;
                    }
                }
            }
        });
        a
    }

    fn blocks_per_row(&self) -> usize {
        self.k / self.block
    }
}

/// `[rows, 16]` outputs of one panel for activation rows `first..first + out.len()`, the
/// scalar definition of the arithmetic (the vector kernels equal it bit for bit).
pub fn reference(p: &Panel, a: &Activations, first: usize, out: &mut [[f32; LANES]]) {
    let (steps, per_block) = (a.sub / 4, a.block / a.sub);
    let subs = a.k / a.sub;
    for (i, y) in out.iter_mut().enumerate() {
        let row = first + i;
        let qx = &a.qx[row * a.k..(row + 1) * a.k];
        // The exact sum of sub-block `g` of lane `l` (minus `c · Σ q_x` where the type has an offset).
        let sum = |g: usize, l: usize| {
            let quants = &p.quants[g * steps * 64..];
            let mut s = 0i32;
            for step in 0..steps {
                for v in 0..4 {
                    s += quants[step * 64 + l * 4 + v] as i32 * qx[g * a.sub + step * 4 + v] as i32;
                }
            }
            s - if a.offset != 0 { a.offset_sums[row * subs + g] } else { 0 }
        };
        for l in 0..LANES {
            let mut acc = 0f32;
            for b in 0..a.blocks_per_row() {
                let dx = a.dx[row * a.blocks_per_row() + b];
                if per_block == 1 {
                    let (s, scales) = (sum(b, l), &p.scales[b * 2 * LANES..]);
                    let mut t = (s as f32).mul_add(scales[l], 0.0);
                    if a.offset == 0 {
                        t = a.neg_sums[row * subs + b].mul_add(scales[LANES + l], t);
                    }
                    acc = t.mul_add(dx, acc);
                } else {
                    let s: i32 = (0..per_block).map(|j| sum(b * per_block + j, l) * p.iscales[(b * per_block + j) * LANES + l]).sum();
                    let m: i32 = (0..per_block / 2)
                        .map(|q| {
                            let (w, x) = (p.imins[(b * per_block / 2 + q) * LANES + l], a.pair_sums[row * subs / 2 + b * per_block / 2 + q]);
                            (w as i16 as i32) * (x as i16 as i32) + (w >> 16) * (x >> 16)
                        })
                        .sum();
                    let (d, dmin) = (p.dblock[b * 2 * LANES + l], p.dblock[b * 2 * LANES + LANES + l]);
                    acc = super::int8::k_step(s, a.has_min.then_some(m), d, dmin, dx, acc);
                }
            }
            y[l] = acc;
        }
    }
}

/// A panel kernel: outputs of activation rows `first..first + out.len()` (any count; the
/// kernel groups them itself).
pub type Kernel = unsafe fn(&Panel, &Activations, usize, &mut [[f32; LANES]]);

/// The fastest kernel for `ty`'s panels at [`crate::isa::current`]'s level, `None` where the
/// product keeps the dequantized tiles (the scalar level, Q8_0 without VNNI, the types without
/// panels).
pub fn kernel(ty: GgmlType) -> Option<Kernel> {
    sub_len(ty)?;
    #[cfg(target_arch = "x86_64")]
    {
        if crate::isa::current() >= crate::isa::Isa::Avx512 && vnni() {
            return Some(x86::vnni);
        }
        // Q8_0's unsigned values reach 255: `vpmaddubsw` pairs would saturate.
        if crate::isa::current() >= crate::isa::Isa::Avx2 {
            return x86::avx2_kernel(ty);
        }
    }
    None
}

/// Whether the CPU has AVX-512 VNNI (with BW and VL), next to the AVX-512 level.
#[cfg(target_arch = "x86_64")]
pub fn vnni() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512vnni") && has!("avx512bw") && has!("avx512vl")
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use std::arch::x86_64::*;

    use super::{Activations, GgmlType, LANES, Panel};

    /// [`Panel::fill`] compiled for AVX2, interleaving with 8 x 8 transposes of 4-byte groups.
    /// Q4_0 and Q8_0 form each row's 32 values of a group in a register straight from the
    /// block and transpose them from there; the other types are unpacked into a buffer first,
    /// a row at a time. Read from memory (a whole model's weights, as decoding and prompts read
    /// them), the k-quants fill twice as fast that way: the fused filling walks sixteen rows'
    /// blocks side by side, which the hardware prefetchers do not follow (Q4_K panel product
    /// at 16 rows 0.070-0.091 -> 0.050-0.052 ms per row, `decoding_speed`; the legacy types'
    /// fused filling stays faster, 0.063-0.070 against 0.074-0.081 for Q4_0).
    ///
    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fill(p: &mut Panel, ty: GgmlType, k: usize, rows: &[&[u8]]) {
        // SAFETY (the closures): each reads 32 values of group `g` of a row of `k` values.
        match ty {
            GgmlType::Q4_0 => fused(p, ty, k, rows, |row, g| unsafe {
                let q = _mm_loadu_si128(row.add(g * 18 + 2) as *const __m128i);
                let m = _mm_set1_epi8(0x0f);
                _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(q), m), _mm_and_si128(q, m))
            }),
            GgmlType::Q8_0 => fused(p, ty, k, rows, |row, g| unsafe { _mm256_xor_si256(_mm256_loadu_si256(row.add(g * 34 + 2) as *const __m256i), _mm256_set1_epi8(-128)) }),
            _ => p.fill_with(ty, k, rows, |rows, quants, k| {
                if (k / 4) % 16 == 0 && crate::isa::current() >= crate::isa::Isa::Avx512 {
                    // SAFETY: the level includes AVX-512F; the sizes as below.
                    return unsafe { interleave16(rows, quants, k) };
                }
                for half in 0..2 {
                    for w in (0..k / 4).step_by(8) {
                        // SAFETY: rows `half * 8..half * 8 + 8` hold `k` bytes each, `w + 8 <= k / 4`;
                        // `quants` holds `k / 4` x 64 bytes.
                        unsafe {
                            let r: [__m256i; 8] = std::array::from_fn(|i| _mm256_loadu_si256(rows.as_ptr().add((half * 8 + i) * k + w * 4) as *const _));
                            transpose_store(r, quants.as_mut_ptr().add(w * 64 + half * 32));
                        }
                    }
                }
            }),
        }
    }

    /// [`Panel::fill_k_scales`] for Q4_K, Q5_K and Q6_K with the sixteen rows' header words
    /// gathered into vectors (a lane per row, eight at a time), unpacked with the decoding's
    /// word masks and stored as they are: the scalar loop was over half of a panel's filling.
    /// `false` (nothing done) where the rows lie too far apart for 32-bit gather offsets.
    ///
    /// # Safety
    /// AVX2 and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn k_scales_gathered(p: &mut Panel, ty: GgmlType, rows: &[&[u8]]) -> bool {
        let Some(first) = rows.first() else { return true };
        let base = first.as_ptr();
        let Some(offsets) = rows.iter().map(|r| i32::try_from(r.as_ptr() as isize - base as isize).ok()).collect::<Option<Vec<i32>>>() else {
            return false;
        };
        let (len, bytes) = ty.block();
        assert!(rows.iter().all(|r| r.len() == first.len() && r.len() % bytes == 0));
        let blocks = first.len() / bytes;
        let subs = len / super::sub_len(ty).expect("a type with panels");
        assert!(p.iscales.len() >= blocks * subs * LANES && p.imins.len() >= blocks * subs / 2 * LANES && p.dblock.len() >= blocks * 2 * LANES);
        for half in 0..2 {
            // Lanes past the rows read row 0 and are masked to zero.
            let lane = |i: usize| half * 8 + i;
            let offs = _mm256_setr_epi32(
                offsets.get(lane(0)).copied().unwrap_or(0), offsets.get(lane(1)).copied().unwrap_or(0), offsets.get(lane(2)).copied().unwrap_or(0), offsets.get(lane(3)).copied().unwrap_or(0),
                offsets.get(lane(4)).copied().unwrap_or(0), offsets.get(lane(5)).copied().unwrap_or(0), offsets.get(lane(6)).copied().unwrap_or(0), offsets.get(lane(7)).copied().unwrap_or(0),
            );
            let here: [i32; 8] = std::array::from_fn(|i| if lane(i) < rows.len() { -1 } else { 0 });
            // SAFETY: eight i32.
            let mask = unsafe { _mm256_loadu_si256(here.as_ptr() as *const __m256i) };
            for b in 0..blocks {
                // SAFETY: every gather reads 4 bytes inside block `b` of a row (offsets 0..16 of
                // Q4_K/Q5_K's, 192..210 of Q6_K's); the stores are inside the sized buffers.
                unsafe {
                    let block = base.add(b * bytes);
                    let word = |at: usize| _mm256_and_si256(_mm256_i32gather_epi32::<1>(block.add(at) as *const i32, offs), mask);
                    let store_i = |v: &mut Vec<i32>, at: usize, x: __m256i| _mm256_storeu_si256(v.as_mut_ptr().add(at + half * 8) as *mut __m256i, x);
                    let store_f = |v: &mut Vec<f32>, at: usize, x: __m256| _mm256_storeu_ps(v.as_mut_ptr().add(at + half * 8), x);
                    // The low or high f16 of each lane, widened to f32.
                    let halves = |w: __m256i, high: bool| {
                        let v = if high { _mm256_srli_epi32::<16>(w) } else { _mm256_and_si256(w, _mm256_set1_epi32(0xffff)) };
                        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(v, v));
                        _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
                    };
                    let byte = |v: __m256i, j: i32| _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_set1_epi32(8 * j)), _mm256_set1_epi32(0xff));
                    if ty == GgmlType::Q6K {
                        for q in 0..4 {
                            let w = word(192 + 4 * q);
                            for j in 0..4 {
                                // Byte j sign-extended: shifted to the top, then back.
                                let v = _mm256_srai_epi32::<24>(_mm256_sllv_epi32(w, _mm256_set1_epi32(24 - 8 * j as i32)));
                                store_i(&mut p.iscales, (b * 16 + 4 * q + j) * LANES, v);
                            }
                        }
                        // d is bytes 208..210: the high half of the word at 206.
                        store_f(&mut p.dblock, b * 2 * LANES, halves(word(206), true));
                        store_f(&mut p.dblock, b * 2 * LANES + LANES, _mm256_setzero_ps());
                    } else {
                        let factors = word(0);
                        store_f(&mut p.dblock, b * 2 * LANES, halves(factors, false));
                        store_f(&mut p.dblock, b * 2 * LANES + LANES, halves(factors, true));
                        let (u0, u1, u2) = (word(4), word(8), word(12));
                        let (m1, m2, m3) = (_mm256_set1_epi32(0x3f3f3f3f), _mm256_set1_epi32(0x0f0f0f0f), _mm256_set1_epi32(0x03030303));
                        // As `k4_scales_mins`: scales 0-3 and 4-7, minimums 0-3 and 4-7.
                        let scales = [_mm256_and_si256(u0, m1), _mm256_or_si256(_mm256_and_si256(u2, m2), _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(u0), m3)))];
                        let mins = [_mm256_and_si256(u1, m1), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32::<4>(u2), m2), _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(u1), m3)))];
                        for (i, (sc, mn)) in scales.into_iter().zip(mins).enumerate() {
                            for j in 0..4 {
                                store_i(&mut p.iscales, (b * 8 + 4 * i + j as usize) * LANES, byte(sc, j));
                            }
                            for q in 0..2 {
                                let pair = _mm256_or_si256(byte(mn, 2 * q), _mm256_slli_epi32::<16>(byte(mn, 2 * q + 1)));
                                store_i(&mut p.imins, (b * 4 + 2 * i + q as usize) * LANES, pair);
                            }
                        }
                    }
                }
            }
        }
        true
    }

    /// The fused filling: `values(row, g)` gives a row's 32 values of group `g` (unsigned).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn fused(p: &mut Panel, ty: GgmlType, k: usize, rows: &[&[u8]], values: impl Fn(*const u8, usize) -> __m256i) {
        p.size(ty, k);
        p.fill_scales(ty, rows);
        let row_bytes = ty.row_bytes(k).expect("whole blocks");
        for half in 0..2 {
            let here: [Option<*const u8>; 8] = std::array::from_fn(|i| {
                rows.get(half * 8 + i).map(|r| {
                    assert_eq!(r.len(), row_bytes);
                    r.as_ptr()
                })
            });
            for g in 0..k / 32 {
                let r: [__m256i; 8] = std::array::from_fn(|i| match here[i] {
                    Some(row) => values(row, g),
                    None => _mm256_setzero_si256(),
                });
                // SAFETY: words `8g..8g + 8` of `k / 4`, 64 bytes each.
                unsafe { transpose_store(r, p.quants.as_mut_ptr().add(g * 8 * 64 + half * 32)) };
            }
        }
    }

    /// The sixteen unpacked rows (`k` bytes each) interleaved into `quants` with 16 x 16
    /// transposes of 4-byte words in 512-bit registers: 64 shuffles per 1 KiB of panel instead
    /// of the AVX2 halves' 96 (the same bytes).
    ///
    /// # Safety
    /// AVX-512F; `rows` holds 16 x `k` bytes, `quants` `k / 4` x 64, `k / 4` a multiple of 16.
    #[target_feature(enable = "avx512f")]
    unsafe fn interleave16(rows: &[u8], quants: &mut [u8], k: usize) {
        assert!(rows.len() >= 16 * k && quants.len() >= k / 4 * 64 && (k / 4) % 16 == 0);
        for w in (0..k / 4).step_by(16) {
            // SAFETY: 64 bytes of each row from word `w` (w + 16 <= k / 4); 16 x 64 bytes of
            // `quants` from word `w`.
            unsafe {
                let r: [__m512i; 16] = std::array::from_fn(|i| _mm512_loadu_si512(rows.as_ptr().add(i * k + w * 4) as *const _));
                // Per 128-bit lane L: rows 2i, 2i + 1 at words 4L, 4L + 1 (even) or 4L + 2, 4L + 3.
                let t: [__m512i; 16] = std::array::from_fn(|i| if i % 2 == 0 { _mm512_unpacklo_epi32(r[i], r[i + 1]) } else { _mm512_unpackhi_epi32(r[i - 1], r[i]) });
                // u[4g + c], lane L: rows 4g..4g + 4 at word 4L + c.
                let u: [__m512i; 16] = std::array::from_fn(|i| {
                    let (g, c) = (i / 4, i % 4);
                    let (a, b) = (t[4 * g + c / 2], t[4 * g + 2 + c / 2]);
                    if c % 2 == 0 { _mm512_unpacklo_epi64(a, b) } else { _mm512_unpackhi_epi64(a, b) }
                });
                for c in 0..4 {
                    let (low_a, high_a) = (_mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]), _mm512_shuffle_i32x4::<0xEE>(u[c], u[4 + c]));
                    let (low_b, high_b) = (_mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]), _mm512_shuffle_i32x4::<0xEE>(u[8 + c], u[12 + c]));
                    // Word 4L + c of the sixteen rows, L = 0..4.
                    let words = [
                        _mm512_shuffle_i32x4::<0x88>(low_a, low_b),
                        _mm512_shuffle_i32x4::<0xDD>(low_a, low_b),
                        _mm512_shuffle_i32x4::<0x88>(high_a, high_b),
                        _mm512_shuffle_i32x4::<0xDD>(high_a, high_b),
                    ];
                    for (l, v) in words.into_iter().enumerate() {
                        _mm512_storeu_si512(quants.as_mut_ptr().add((w + 4 * l + c) * 64) as *mut _, v);
                    }
                }
            }
        }
    }

    /// Eight rows of eight 4-byte words, stored transposed: word `i` of the eight rows as 32
    /// bytes at `dst + 64 i`.
    ///
    /// # Safety
    /// AVX2; `dst` writable for `7 * 64 + 32` bytes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn transpose_store(r: [__m256i; 8], dst: *mut u8) {
        // The f32 transpose's network moves the 32-bit words as they are.
        let words = crate::transpose::x86::transpose8(r.map(|v| _mm256_castsi256_ps(v)));
        for (i, v) in words.into_iter().enumerate() {
            // SAFETY: the caller's bound.
            unsafe { _mm256_storeu_si256(dst.add(i * 64) as *mut _, _mm256_castps_si256(v)) };
        }
    }

    /// Activation rows `first..first + R` as pointers for a kernel (every bound the kernel
    /// relies on checked here, once): their values, negated and offset sub-block sums and block
    /// scales, and the activation blocks per row.
    struct RowPointers<const R: usize> {
        blocks: usize,
        qx: [*const i8; R],
        neg: [*const f32; R],
        off: [*const i32; R],
        dx: [*const f32; R],
        /// K-quants: the pairs of sub-block sums.
        pairs: [*const i32; R],
    }

    impl<const R: usize> RowPointers<R> {
        #[inline(always)]
        fn new(p: &Panel, a: &Activations, first: usize, outputs: usize) -> Self {
            let (k, blocks, subs) = (a.k, a.blocks_per_row(), a.k / a.sub);
            assert!(outputs == R && (first + R) * k <= a.qx.len() && p.quants.len() >= k * LANES);
            if a.block != a.sub {
                assert!(p.iscales.len() >= subs * LANES && p.imins.len() >= subs / 2 * LANES && p.dblock.len() >= blocks * 2 * LANES);
                assert!(a.pair_sums.len() >= (first + R) * (subs / 2));
            } else {
                assert!(p.scales.len() >= subs * 2 * LANES);
            }
            RowPointers {
                blocks,
                qx: std::array::from_fn(|i| a.qx[(first + i) * k..].as_ptr()),
                neg: std::array::from_fn(|i| a.neg_sums[(first + i) * subs..].as_ptr()),
                off: std::array::from_fn(|i| a.offset_sums[(first + i) * subs..].as_ptr()),
                dx: std::array::from_fn(|i| a.dx[(first + i) * blocks..].as_ptr()),
                pairs: std::array::from_fn(|i| a.pair_sums[((first + i) * (subs / 2)).min(a.pair_sums.len())..].as_ptr()),
            }
        }
    }

    /// Calls `rows::<R, SUB, PER_BLOCK, RUN>(.., half)` for runs of up to `$max` activation rows,
    /// with the sub-block and activation-block lengths as constants (the step loops unroll).
    macro_rules! dispatch {
        ($rows:ident, $max:literal, [$($r:literal),*], $run:tt, $p:ident, $a:ident, $first:ident, $out:ident, $half:expr) => {{
            let mut done = 0;
            while done < $out.len() {
                let n = ($out.len() - done).min($max);
                let o = &mut $out[done..done + n];
                let f = $first + done;
                macro_rules! go {
                    ($sub:literal, $per:literal) => {
                        match n {
                            $($r => $rows::<$r, $sub, $per, $run>($p, $a, f, o, $half),)*
                            _ => unreachable!(),
                        }
                    };
                }
                // SAFETY: the caller's features are the callee's.
                unsafe {
                    match ($a.sub, $a.block / $a.sub) {
                        (32, 8) => go!(32, 8),
                        (16, 16) => go!(16, 16),
                        (32, 1) => go!(32, 1),
                        other => unreachable!("sub-block and block lengths {other:?}"),
                    }
                }
                done += n;
            }
        }};
    }

    /// Sub-block `g`'s exact integer sums `Σ u · q_x` of the sixteen lanes for `R` activation
    /// rows: one `vpdpbusd` per step of four values and row (the legacy and k-quant kernels').
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and VNNI; sub-block `g` inside the panel and every row of `qx`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn vnni_sums<const R: usize, const SUB: usize>(p: &Panel, qx: &[*const i8; R], g: usize) -> [__m512i; R] {
        let mut s = [_mm512_setzero_si512(); R];
        // SAFETY: the caller's bounds.
        unsafe {
            let quants = p.quants.as_ptr().add(g * SUB * LANES);
            for step in 0..SUB / 4 {
                let w = _mm512_loadu_si512(quants.add(step * 64) as *const _);
                for i in 0..R {
                    let x = std::ptr::read_unaligned(qx[i].add(g * SUB + step * 4) as *const i32);
                    s[i] = _mm512_dpbusd_epi32(s[i], w, _mm512_set1_epi32(x));
                }
            }
        }
        s
    }

    /// [`vnni_sums`] with AVX2 for one half of eight lanes: `vpmaddubsw` pairs summed in 16 bits
    /// for `RUN` steps (as many as cannot overflow), then widened by `vpmaddwd`.
    ///
    /// # Safety
    /// AVX2; sub-block `g` inside the panel and every row of `qx`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn avx2_sums<const R: usize, const SUB: usize, const RUN: usize>(p: &Panel, qx: &[*const i8; R], g: usize, half: usize) -> [__m256i; R] {
        let ones = _mm256_set1_epi16(1);
        let mut s = [_mm256_setzero_si256(); R];
        let mut s16 = [_mm256_setzero_si256(); R];
        // SAFETY: the caller's bounds.
        unsafe {
            let quants = p.quants.as_ptr().add(g * SUB * LANES + half * 32);
            for step in 0..SUB / 4 {
                let w = _mm256_loadu_si256(quants.add(step * 64) as *const _);
                for i in 0..R {
                    let x = std::ptr::read_unaligned(qx[i].add(g * SUB + step * 4) as *const i32);
                    s16[i] = _mm256_add_epi16(s16[i], _mm256_maddubs_epi16(w, _mm256_set1_epi32(x)));
                }
                if (step + 1) % RUN == 0 || step + 1 == SUB / 4 {
                    for i in 0..R {
                        s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(s16[i], ones));
                        s16[i] = _mm256_setzero_si256();
                    }
                }
            }
        }
        s
    }

    /// AVX-512 VNNI: eight activation rows at a time (eight independent `vpdpbusd` chains, the
    /// instruction's latency times its throughput), one per row and step of four values.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn vnni(p: &Panel, a: &Activations, first: usize, out: &mut [[f32; LANES]]) {
        dispatch!(vnni_rows, 8, [1, 2, 3, 4, 5, 6, 7, 8], 0, p, a, first, out, 0)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn vnni_rows<const R: usize, const SUB: usize, const PER_BLOCK: usize, const UNUSED: usize>(p: &Panel, a: &Activations, first: usize, out: &mut [[f32; LANES]], _half: usize) {
        if PER_BLOCK > 1 {
            // SAFETY: the same features.
            return unsafe { vnni_k_rows::<R, SUB, PER_BLOCK>(p, a, first, out) };
        }
        let RowPointers { blocks, qx, neg, off, dx, .. } = RowPointers::<R>::new(p, a, first, out.len());
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..blocks {
            let mut t = [_mm512_setzero_ps(); R];
            for j in 0..PER_BLOCK {
                let g = b * PER_BLOCK + j;
                // SAFETY (this block): sub-block `g` is inside every row and the panel (the
                // assert above).
                unsafe {
                    let s = vnni_sums::<R, SUB>(p, &qx, g);
                    let sc = p.scales.as_ptr().add(g * 2 * LANES);
                    let (dsc, dmm) = (_mm512_loadu_ps(sc), _mm512_loadu_ps(sc.add(LANES)));
                    if a.offset != 0 {
                        for i in 0..R {
                            let s = _mm512_sub_epi32(s[i], _mm512_set1_epi32(*off[i].add(g)));
                            t[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dsc, t[i]);
                        }
                    } else {
                        for i in 0..R {
                            t[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i]), dsc, t[i]);
                            t[i] = _mm512_fmadd_ps(_mm512_set1_ps(*neg[i].add(g)), dmm, t[i]);
                        }
                    }
                }
            }
            for i in 0..R {
                // SAFETY: block `b` of row `first + i`.
                acc[i] = _mm512_fmadd_ps(t[i], _mm512_set1_ps(unsafe { *dx[i].add(b) }), acc[i]);
            }
        }
        for i in 0..R {
            // SAFETY: 16 floats.
            unsafe { _mm512_storeu_ps(out[i].as_mut_ptr(), acc[i]) };
        }
    }

    /// The k-quants' panels with AVX-512 VNNI: each sub-block's exact sum times its integer scale
    /// (`vpmulld`) into the block's `S`, the minimums through `vpdpwssd` into `M`, then the
    /// decoding step ([`super::super::int8::k_step`]) in sixteen lanes.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn vnni_k_rows<const R: usize, const SUB: usize, const PER_BLOCK: usize>(p: &Panel, a: &Activations, first: usize, out: &mut [[f32; LANES]]) {
        let RowPointers { blocks, qx, off, dx, pairs, .. } = RowPointers::<R>::new(p, a, first, out.len());
        let mut y = [_mm512_setzero_ps(); R];
        for b in 0..blocks {
            let mut sum = [_mm512_setzero_si512(); R];
            // SAFETY (this block): block `b`'s sub-blocks are inside every row and the panel (the
            // asserts in `RowPointers::new`).
            unsafe {
                for j in 0..PER_BLOCK {
                    let g = b * PER_BLOCK + j;
                    let s = vnni_sums::<R, SUB>(p, &qx, g);
                    let scale = _mm512_loadu_si512(p.iscales.as_ptr().add(g * LANES) as *const _);
                    for i in 0..R {
                        let s = if a.offset != 0 { _mm512_sub_epi32(s[i], _mm512_set1_epi32(*off[i].add(g))) } else { s[i] };
                        sum[i] = _mm512_add_epi32(sum[i], _mm512_mullo_epi32(s, scale));
                    }
                }
                let factors = p.dblock.as_ptr().add(b * 2 * LANES);
                let (d, dmin) = (_mm512_loadu_ps(factors), _mm512_loadu_ps(factors.add(LANES)));
                for i in 0..R {
                    let dxv = _mm512_set1_ps(*dx[i].add(b));
                    y[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[i]), _mm512_mul_ps(d, dxv), y[i]);
                    if a.has_min {
                        let mut m = _mm512_setzero_si512();
                        for q in 0..PER_BLOCK / 2 {
                            let mins = _mm512_loadu_si512(p.imins.as_ptr().add((b * PER_BLOCK / 2 + q) * LANES) as *const _);
                            m = _mm512_dpwssd_epi32(m, mins, _mm512_set1_epi32(*pairs[i].add(b * PER_BLOCK / 2 + q)));
                        }
                        y[i] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmin, dxv), y[i]);
                    }
                }
            }
        }
        for i in 0..R {
            // SAFETY: 16 floats.
            unsafe { _mm512_storeu_ps(out[i].as_mut_ptr(), y[i]) };
        }
    }

    /// The AVX2 kernel for `ty`: its 16-bit runs as long as `ty`'s largest value allows
    /// (`2 · 127 · max · RUN <= 32767`); `None` for Q8_0, whose unsigned values (up to 255)
    /// would saturate `vpmaddubsw`'s pairs.
    pub fn avx2_kernel(ty: GgmlType) -> Option<super::Kernel> {
        if ty == GgmlType::Q8_0 {
            return None;
        }
        // A pair of products is at most 2 · max · 127 (|q_x| <= 127).
        Some(match 32767 / (2 * 127 * super::max_value(ty)) {
            43 => avx2::<43>,
            18 => avx2::<18>,
            8 => avx2::<8>,
            4 => avx2::<4>,
            2 => avx2::<2>,
            other => unreachable!("{ty}: no kernel with 16-bit runs of {other}"),
        })
    }

    /// AVX2: the panel in two halves of 8 lanes, three activation rows at a time; `vpmaddubsw`
    /// pairs summed in 16 bits for `RUN` steps (as many as cannot overflow for the type's
    /// largest value), then widened by `vpmaddwd`.
    ///
    /// # Safety
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2<const RUN: usize>(p: &Panel, a: &Activations, first: usize, out: &mut [[f32; LANES]]) {
        for half in 0..2 {
            dispatch!(avx2_rows, 3, [1, 2, 3], RUN, p, a, first, out, half)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn avx2_rows<const R: usize, const SUB: usize, const PER_BLOCK: usize, const RUN: usize>(p: &Panel, a: &Activations, first: usize, out: &mut [[f32; LANES]], half: usize) {
        if PER_BLOCK > 1 {
            // SAFETY: the same features.
            return unsafe { avx2_k_rows::<R, SUB, PER_BLOCK, RUN>(p, a, first, out, half) };
        }
        let RowPointers { blocks, qx, neg, off, dx, .. } = RowPointers::<R>::new(p, a, first, out.len());
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..blocks {
            let mut t = [_mm256_setzero_ps(); R];
            for j in 0..PER_BLOCK {
                let g = b * PER_BLOCK + j;
                // SAFETY (this block): sub-block `g` is inside every row and the panel.
                unsafe {
                    let s = avx2_sums::<R, SUB, RUN>(p, &qx, g, half);
                    let sc = p.scales.as_ptr().add(g * 2 * LANES + half * 8);
                    let (dsc, dmm) = (_mm256_loadu_ps(sc), _mm256_loadu_ps(sc.add(LANES)));
                    if a.offset != 0 {
                        for i in 0..R {
                            let s = _mm256_sub_epi32(s[i], _mm256_set1_epi32(*off[i].add(g)));
                            t[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dsc, t[i]);
                        }
                    } else {
                        for i in 0..R {
                            t[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[i]), dsc, t[i]);
                            t[i] = _mm256_fmadd_ps(_mm256_set1_ps(*neg[i].add(g)), dmm, t[i]);
                        }
                    }
                }
            }
            for i in 0..R {
                // SAFETY: block `b` of row `first + i`.
                acc[i] = _mm256_fmadd_ps(t[i], _mm256_set1_ps(unsafe { *dx[i].add(b) }), acc[i]);
            }
        }
        for i in 0..R {
            // SAFETY: 8 floats at `half * 8` of 16.
            unsafe { _mm256_storeu_ps(out[i].as_mut_ptr().add(half * 8), acc[i]) };
        }
    }

    /// The k-quants' panels with AVX2 (one half of 8 lanes): as [`vnni_k_rows`], with the
    /// sub-block sums from `vpmaddubsw` runs and the minimums through `vpmaddwd`.
    ///
    /// # Safety
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn avx2_k_rows<const R: usize, const SUB: usize, const PER_BLOCK: usize, const RUN: usize>(p: &Panel, a: &Activations, first: usize, out: &mut [[f32; LANES]], half: usize) {
        let RowPointers { blocks, qx, off, dx, pairs, .. } = RowPointers::<R>::new(p, a, first, out.len());
        let mut y = [_mm256_setzero_ps(); R];
        for b in 0..blocks {
            let mut sum = [_mm256_setzero_si256(); R];
            // SAFETY (this block): block `b`'s sub-blocks are inside every row and the panel.
            unsafe {
                for j in 0..PER_BLOCK {
                    let g = b * PER_BLOCK + j;
                    let s = avx2_sums::<R, SUB, RUN>(p, &qx, g, half);
                    let scale = _mm256_loadu_si256(p.iscales.as_ptr().add(g * LANES + half * 8) as *const _);
                    for i in 0..R {
                        let s = if a.offset != 0 { _mm256_sub_epi32(s[i], _mm256_set1_epi32(*off[i].add(g))) } else { s[i] };
                        sum[i] = _mm256_add_epi32(sum[i], _mm256_mullo_epi32(s, scale));
                    }
                }
                let factors = p.dblock.as_ptr().add(b * 2 * LANES + half * 8);
                let (d, dmin) = (_mm256_loadu_ps(factors), _mm256_loadu_ps(factors.add(LANES)));
                for i in 0..R {
                    let dxv = _mm256_set1_ps(*dx[i].add(b));
                    y[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[i]), _mm256_mul_ps(d, dxv), y[i]);
                    if a.has_min {
                        let mut m = _mm256_setzero_si256();
                        for q in 0..PER_BLOCK / 2 {
                            let mins = _mm256_loadu_si256(p.imins.as_ptr().add((b * PER_BLOCK / 2 + q) * LANES + half * 8) as *const _);
                            m = _mm256_add_epi32(m, _mm256_madd_epi16(mins, _mm256_set1_epi32(*pairs[i].add(b * PER_BLOCK / 2 + q))));
                        }
                        y[i] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(dmin, dxv), y[i]);
                    }
                }
            }
        }
        for i in 0..R {
            // SAFETY: 8 floats at `half * 8` of 16.
            unsafe { _mm256_storeu_ps(out[i].as_mut_ptr().add(half * 8), y[i]) };
        }
    }
}

/// `x [m, k] W^T -> [m, n]` (row-major) with `w`'s rows as panels, on up to all the pool's
/// threads: a piece is a panel, filled and used by one thread.
pub fn matmul(kernel: Kernel, ty: GgmlType, bytes: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    use crate::parallel::{Shared, share_pieces};
    let acts = Activations::quantize(ty, x, k);
    let row_bytes = ty.row_bytes(k).expect("whole blocks");
    let mut y = vec![0f32; m * n];
    let out = Shared(y.as_mut_ptr());
    let panels = n.div_ceil(LANES);
    // A piece is a run of panels, each filled and used by one thread in turn, so that a thread's
    // weights are one sequential stream the hardware prefetchers follow. (An explicit prefetch of
    // the next panel's bytes while the current one was filled and used cost 6-10% at 16 rows:
    // Q4_K 0.0492 -> 0.0462, Q6_K 0.0610 -> 0.0547 ms per row, medians of 4 alternating runs of
    // `decoding_speed` on the Zen 5 VM, 2026-12-08.)
    let per_piece = PANELS_PER_PIECE.min(panels.div_ceil(rayon::current_num_threads().max(1))).max(1);
    share_pieces(panels.div_ceil(per_piece), rayon::current_num_threads(), |piece, state: &mut (Panel, Vec<[f32; LANES]>)| {
        let (panel, buf) = state;
        let (from, to) = (piece * per_piece, ((piece + 1) * per_piece).min(panels));
        for p in from..to {
            let first = p * LANES;
            let count = (n - first).min(LANES);
            let rows: [&[u8]; LANES] = std::array::from_fn(|r| {
                let j = first + r.min(count - 1);
                &bytes[j * row_bytes..(j + 1) * row_bytes]
            });
            panel.fill(ty, k, &rows[..count]);
            // Activation rows in runs that keep a run's values in the first-level cache.
            const RUN: usize = 48;
            buf.resize(RUN.min(m), [0.0; LANES]);
            let mut i = 0;
            while i < m {
                let rows_here = (m - i).min(RUN);
                // SAFETY: `kernel` was chosen for this CPU's level by `kernel()`.
                unsafe { kernel(panel, &acts, i, &mut buf[..rows_here]) };
                for (r, v) in buf[..rows_here].iter().enumerate() {
                    // SAFETY: output columns `first..first + count` belong to this piece only.
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out.ptr().add((i + r) * n + first), count) };
                }
                i += rows_here;
            }
        }
    });
    y
}

/// Panels per piece of work in [`matmul`] (fewer where the product has fewer per thread).
const PANELS_PER_PIECE: usize = 8;

/// [`matmul`] with [`reference`]: what every panel kernel computes (tests).
pub fn reference_product(ty: GgmlType, bytes: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    matmul(reference, ty, bytes, n, k, x, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize};

    fn weights(ty: GgmlType, n: usize, k: usize, seed: usize) -> Vec<u8> {
        let w: Vec<f32> = (0..n * k).map(|i| (((i * 7919 + seed * 31) % 1013) as f32 / 1013.0 - 0.45) * (1.0 + (i % 3) as f32)).collect();
        let mut q = vec![0u8; ty.row_bytes(k).unwrap() * n];
        if crate::quant::QUANTIZABLE.contains(&ty) {
            quantize(ty, &w, &mut q);
        } else {
            // Random bytes with small f16 scales (no quantizer here for Q2_K/Q3_K).
            let mut s = seed as u64 + 1;
            for b in q.iter_mut() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *b = (s >> 56) as u8;
            }
            let at: &[usize] = if ty == GgmlType::Q2K { &[80, 82] } else { &[108] };
            for block in q.chunks_exact_mut(ty.block().1) {
                for &a in at {
                    block[a..a + 2].copy_from_slice(&half::f16::from_f32(0.003).to_bits().to_le_bytes());
                }
            }
        }
        q
    }

    const TYPES: [GgmlType; 10] = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];

    /// A panel's values and scales give back the dequantized weights exactly.
    #[test]
    fn panels_hold_the_dequantized_values() {
        let (n, k) = (21, 512);
        for ty in TYPES {
            let q = weights(ty, n, k, 1);
            let row_bytes = ty.row_bytes(k).unwrap();
            let mut dense = vec![0f32; n * k];
            dequantize(ty, &q, &mut dense);
            let s = sub_len(ty).unwrap();
            let mut p = Panel::default();
            let rows: Vec<&[u8]> = (16..n).map(|j| &q[j * row_bytes..(j + 1) * row_bytes]).collect();
            p.fill(ty, k, &rows);
            for (r, j) in (16..n).enumerate() {
                for c in 0..k {
                    let g = c / s;
                    let u = p.quants[g * s / 4 * 64 + (c % s) / 4 * 64 + r * 4 + c % 4] as f32;
                    let w = if is_k(ty) {
                        let b = c / 256;
                        let (d, dmin) = (p.dblock[b * 32 + r] as f64, p.dblock[b * 32 + 16 + r] as f64);
                        let pair = p.imins[g / 2 * 16 + r];
                        let min = if g % 2 == 0 { pair as i16 as i32 } else { pair >> 16 };
                        d * p.iscales[g * 16 + r] as f64 * (u as f64 - offset(ty) as f64) - dmin * min as f64
                    } else {
                        let (dsc, dmm) = (p.scales[g * 32 + r], p.scales[g * 32 + 16 + r]);
                        dsc as f64 * u as f64 - dmm as f64
                    };
                    assert!((w - dense[j * k + c] as f64).abs() <= 1e-6 * (1.0 + w.abs()), "{ty} row {j} value {c}: {w} vs {}", dense[j * k + c]);
                }
            }
            // The missing rows are zeros.
            let scale_zero = if is_k(ty) { p.iscales[16 - 1] == 0 && p.dblock[16 - 1] == 0.0 } else { p.scales[16 - 1] == 0.0 };
            assert!(scale_zero && p.quants[60..64].iter().all(|&v| v == 0));
        }
    }

    /// Every kernel this CPU runs equals the reference bit for bit, for 1-11 rows (every
    /// grouping's tail), and the reference is the f32 product within the activations' rounding.
    #[test]
    fn kernels_equal_the_reference() {
        let k = 768; // 3 k-quant blocks, 24 legacy ones
        let n = 16;
        for ty in TYPES {
            let q = weights(ty, n, k, 2);
            let row_bytes = ty.row_bytes(k).unwrap();
            let mut dense = vec![0f32; n * k];
            dequantize(ty, &q, &mut dense);
            let mut p = Panel::default();
            let rows: Vec<&[u8]> = (0..n).map(|j| &q[j * row_bytes..(j + 1) * row_bytes]).collect();
            p.fill(ty, k, &rows);
            let m = 11;
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 257) as f32 / 257.0 - 0.5 + (i % 5) as f32 * 0.03).collect();
            let a = Activations::quantize(ty, &x, k);
            let mut want = vec![[0f32; LANES]; m];
            reference(&p, &a, 0, &mut want);
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k).map(|c| x[i * k + c] as f64 * dense[j * k + c] as f64).sum();
                    let mag: f64 = (0..k).map(|c| (x[i * k + c] as f64 * dense[j * k + c] as f64).abs()).sum();
                    // 8-bit activations: about half a step of 1/127 of the block's largest value.
                    assert!((want[i][j] as f64 - exact).abs() <= 0.01 * mag + 1e-4, "{ty} ({i},{j}): {} vs {exact}", want[i][j]);
                }
            }
            #[cfg(target_arch = "x86_64")]
            {
                let mut kernels: Vec<(&str, Kernel)> = Vec::new();
                if let Some(k2) = x86::avx2_kernel(ty).filter(|_| crate::isa::Isa::Avx2.supported()) {
                    kernels.push(("avx2", k2));
                }
                if crate::isa::Isa::Avx512.supported() && vnni() {
                    kernels.push(("vnni", x86::vnni));
                }
                for (name, kernel) in kernels {
                    for rows in 1..=m {
                        for first in [0, m - rows] {
                            let mut got = vec![[0f32; LANES]; rows];
                            // SAFETY: the level was checked above.
                            unsafe { kernel(&p, &a, first, &mut got) };
                            for i in 0..rows {
                                for j in 0..n {
                                    assert_eq!(got[i][j].to_bits(), want[first + i][j].to_bits(), "{ty} {name} rows {rows} from {first}: ({i},{j})");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
