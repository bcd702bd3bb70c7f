//! bf16 prompt products on Intel's AMX tiles (Sapphire Rapids and later): `TDPBF16PS` multiplies
//! a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 sums, 16 times the work of one
//! AVX-512 `VDPBF16PS`. torch runs its bf16 `nn.Linear` there through oneDNN where the CPU has
//! it (measured on a 2-core Xeon with AMX: 1.3-1.8 TFLOP/s for 128-row LLaMA products, against
//! 200-210 for our AVX512_BF16 kernel), so a CPU with AMX needs this path to keep up.
//!
//! The product is computed transposed, `sums [outputs, rows] = W · xᵀ`, so that the weight rows
//! (PyTorch's `[out, in]` layout) are the `A` tiles as they lie in memory, 16 outputs by 32
//! inputs, and `x` packed in pairs (`bf16_dot`'s `[panel][pair][32 rows]`, the "VNNI" layout the
//! instruction wants for `B`) gives the `B` tiles, 16 input pairs by 16 rows. The sums come out
//! in `bf16_dot`'s column-major task layout. The eight tile registers hold a 2 x 2 block of sums
//! (32 outputs by 32 rows), two weight tiles and two `x` tiles.
//!
//! There are no stable Rust intrinsics for AMX yet (rust-lang/rust#126622): the instructions are
//! written as inline assembly, and the feature is detected with CPUID. Linux hands a process the
//! tile registers only after it asks (`arch_prctl(ARCH_REQ_XCOMP_PERM)`): [`crate::isa`] asks once.

/// Inputs per tile step (one `A` row: 32 bf16, 64 bytes).
const K_STEP: usize = 32;
/// Outputs (rows of `A`) and rows of `x` (columns of `B`) per tile.
const TILE: usize = 16;

/// Whether the kernels use AMX ([`crate::isa`]: this CPU has it and no lower level is forced).
pub(crate) fn available() -> bool {
    crate::isa::current() >= crate::isa::Isa::Amx
}

/// Whether the AMX kernel takes a product of `d_in` inputs and these outputs: whole tiles only
/// (every LLaMA shape); the AVX512_BF16 kernel takes the others.
pub(crate) fn fits(d_in: usize, d_outs: impl IntoIterator<Item = usize>) -> bool {
    d_in.is_multiple_of(K_STEP) && d_outs.into_iter().all(|d| d.is_multiple_of(TILE))
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::outputs;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{K_STEP, TILE};
    use half::bf16;
    use std::arch::asm;

    /// Rows of the packed `x` per panel (`bf16_dot`'s `MR`).
    const PANEL: usize = 32;

    /// The weight lines of the next group (rows `rows`, `lines_per_row` lines of 32 inputs from
    /// `at`), prefetched into L2 `per_step` at a time, row by row.
    struct Prefetch {
        at: *const bf16,
        d_in: usize,
        rows: usize,
        lines_per_row: usize,
        per_step: usize,
        row: usize,
        line: usize,
    }

    impl Prefetch {
        #[inline(always)]
        fn step(&mut self) {
            for _ in 0..self.per_step {
                if self.row == self.rows {
                    return;
                }
                // SAFETY: a prefetch never faults (and the address is inside the weights).
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                        self.at.wrapping_add(self.row * self.d_in + self.line * K_STEP) as *const i8,
                    )
                };
                self.line += 1;
                if self.line == self.lines_per_row {
                    (self.row, self.line) = (self.row + 1, 0);
                }
            }
        }
    }

    /// The tile configuration (`LDTILECFG`'s 64-byte operand, palette 1): all eight tiles 16
    /// rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// The tile registers configured for this thread; released when dropped, so that the
    /// thread's saved state stays small between products.
    struct Tiles;

    impl Tiles {
        fn configure() -> Tiles {
            // SAFETY: `available` checked the CPU and was granted the tile data; the operand is
            // a valid palette-1 configuration.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
            Tiles
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: as for `configure`.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// `sums [outputs, padded]` (column-major, as `bf16_dot`'s tasks keep them) for the weight
    /// rows `w [outputs, d_in]` and the packed rows `xp` (`[padded / 32][d_in / 2][32]` pairs),
    /// the inputs in blocks of `k_block`, 32 outputs (16 for an odd last tile) at a time.
    ///
    /// The weight tiles are loaded straight from the (memory-mapped) checkpoint: a tile load
    /// fetches its 16 rows' lines at once, and the 32 rows of a step (128 KiB for a block of
    /// 2048 inputs) stay in L2 for the other panels of `x`. Measured on a 2-core Xeon with AMX, 128
    /// rows: 1215-1611 GFLOP/s on LLaMA's shapes (torch's bf16 `F.linear` 1309-1827), the same
    /// with weight rows misaligned by 32 bytes, as checkpoint tensors are; copying each step's
    /// weights into aligned tiles first (with or without prefetching) measured 650-1400 and
    /// slowed TinyLlama prompts by 20%. A model's weights come from memory, not from the cache
    /// as in a benchmark that repeats one product: while a group of 32 outputs runs over its
    /// panels, the next group's weight rows are prefetched into L2, a few lines per tile step
    /// (`examples/prompt_products.rs` with `COLD=1`, weights rotating over 1.5 GB of copies:
    /// 1082-1417 GFLOP/s before, 1200-1350 after; TinyLlama's prompt products in the model 227
    /// -> 199 ms). `x` and the sums must start on cache lines: tile rows
    /// that straddle two lines load 6 times slower from L1 (16.5 against 2.7 ns per 1 KiB tile).
    ///
    /// # Safety
    /// [`super::available`] must have returned true; `d_in` must be a multiple of 32, `outputs`
    /// of 16 and `padded` of 32.
    pub(crate) unsafe fn outputs(xp: &[u32], padded: usize, w: &[bf16], d_in: usize, outputs: usize, sums: &mut [f32], k_block: usize) {
        let pairs = d_in / 2;
        assert!(d_in.is_multiple_of(K_STEP) && outputs.is_multiple_of(TILE) && padded.is_multiple_of(PANEL));
        assert!(xp.len() >= padded * pairs && w.len() >= outputs * d_in && sums.len() >= outputs * padded);
        assert!([xp.as_ptr() as usize, sums.as_ptr() as usize].iter().all(|p| p % 64 == 0), "x and the sums start on cache lines");
        let _tiles = Tiles::configure();
        let w_stride = d_in * 2;
        let c_stride = padded * 4;
        // The groups of (input block, 32 outputs) in the order they run: while one runs, the
        // next one's weight rows are prefetched into L2, spread over its tile steps.
        let groups: Vec<(usize, usize)> = (0..d_in)
            .step_by(k_block)
            .flat_map(|k0| (0..outputs).step_by(2 * TILE).map(move |j0| (k0, j0)))
            .collect();
        for (g, &(k0, j0)) in groups.iter().enumerate() {
            let k1 = (k0 + k_block).min(d_in);
            let two = outputs - j0 >= 2 * TILE;
            let mut prefetch = groups.get(g + 1).map(|&(nk0, nj0)| {
                let rows = (outputs - nj0).min(2 * TILE);
                let lines_per_row = ((nk0 + k_block).min(d_in) - nk0) / K_STEP;
                let steps = padded / PANEL * (k1 - k0) / K_STEP;
                Prefetch {
                    at: w[nj0 * d_in + nk0..].as_ptr(),
                    d_in,
                    rows,
                    lines_per_row,
                    per_step: (rows * lines_per_row).div_ceil(steps),
                    row: 0,
                    line: 0,
                }
            });
            for r0 in (0..padded).step_by(PANEL) {
                let c = sums[j0 * padded + r0..].as_mut_ptr();
                let panel = xp[r0 * pairs..].as_ptr();
                // SAFETY: the sums of outputs j0..j0 + 32 (16 when not `two`), rows
                // r0..r0 + 32, are inside `sums`; the weight tiles are rows j0.. of `w`,
                // inputs k..k + 32 < d_in; the x tiles pairs k/2..k/2 + 16 of the panel.
                unsafe {
                    if k0 == 0 {
                        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                    } else {
                        asm!(
                            "tileloadd tmm0, [{c} + {s}*1]",
                            "tileloadd tmm1, [{c1} + {s}*1]",
                            c = in(reg) c, c1 = in(reg) c.add(TILE), s = in(reg) c_stride,
                            options(nostack, readonly),
                        );
                        if two {
                            asm!(
                                "tileloadd tmm2, [{c2} + {s}*1]",
                                "tileloadd tmm3, [{c3} + {s}*1]",
                                c2 = in(reg) c.add(TILE * padded), c3 = in(reg) c.add(TILE * padded + TILE), s = in(reg) c_stride,
                                options(nostack, readonly),
                            );
                        }
                    }
                    for k in (k0..k1).step_by(K_STEP) {
                        if let Some(p) = prefetch.as_mut() {
                            p.step();
                        }
                        let a = w.as_ptr().add(j0 * d_in + k);
                        let b = panel.add(k / 2 * PANEL);
                        // The first weight tile against both x tiles; the second weight tile
                        // (outputs j0 + 16..) against the same x tiles, which stay loaded.
                        asm!(
                            "tileloadd tmm4, [{a} + {sa}*1]",
                            "tileloadd tmm6, [{b} + {sb}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tileloadd tmm7, [{b1} + {sb}*1]",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            a = in(reg) a, sa = in(reg) w_stride,
                            b = in(reg) b, b1 = in(reg) b.add(TILE), sb = in(reg) PANEL * 4,
                            options(nostack, readonly),
                        );
                        if two {
                            asm!(
                                "tileloadd tmm5, [{a1} + {sa}*1]",
                                "tdpbf16ps tmm2, tmm5, tmm6",
                                "tdpbf16ps tmm3, tmm5, tmm7",
                                a1 = in(reg) a.add(TILE * d_in), sa = in(reg) w_stride,
                                options(nostack, readonly),
                            );
                        }
                    }
                    asm!(
                        "tilestored [{c} + {s}*1], tmm0",
                        "tilestored [{c1} + {s}*1], tmm1",
                        c = in(reg) c, c1 = in(reg) c.add(TILE), s = in(reg) c_stride,
                        options(nostack),
                    );
                    if two {
                        asm!(
                            "tilestored [{c2} + {s}*1], tmm2",
                            "tilestored [{c3} + {s}*1], tmm3",
                            c2 = in(reg) c.add(TILE * padded), c3 = in(reg) c.add(TILE * padded + TILE), s = in(reg) c_stride,
                            options(nostack),
                        );
                    }
                }
            }
        }
    }
}
