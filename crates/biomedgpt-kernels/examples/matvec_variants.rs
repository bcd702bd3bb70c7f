//! GB/s of matrix-vector kernel variants for one sequence (the decoding case) on the rayon pool,
//! over LLaMA-7B-shaped f16 matrices (4 copies, 850 MB: beyond the caches), next to the library's
//! kernels (f16 widened in registers; the same bytes read as bf16 by the AVX512_BF16 dot-product
//! kernel): f16 one row at a time with 4 accumulators (prefetch 0, 1 or 4 KiB ahead) and 4, 8 or
//! 16 interleaved rows per pass; bf16 dot products with 1, 2, 4 or 8 rows per pass and several
//! prefetch distances. The measurement behind the README's statement that decoding runs at the
//! memory ceiling. `cargo run --release -p biomedgpt-io --example matvec_variants [REPEATS]`
//! (x86-64 with AVX-512; the bf16 variants need AVX512_BF16).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // const-size register arrays, indexed to unroll
mod bench {
    use biomedgpt_kernels::element::WeightLayout;
    use biomedgpt_kernels::matmul::matvec::matvec;
    use half::f16;
    use rayon::prelude::*;
    use std::arch::x86_64::*;
    use std::time::Instant;

    #[target_feature(enable = "avx512f")]
    unsafe fn rows_seq<const PF: usize, const ACC: usize>(
        x: &[f32],
        w: &[f16],
        d_in: usize,
        rows: std::ops::Range<usize>,
        y: &mut [f32],
    ) {
        unsafe {
            for (k, j) in rows.enumerate() {
                let row = w.as_ptr().add(j * d_in);
                let mut acc = [_mm512_setzero_ps(); ACC];
                let mut i = 0;
                while i < d_in {
                    if PF > 0 {
                        _mm_prefetch::<_MM_HINT_T0>((row.add(i) as *const i8).wrapping_add(PF));
                        _mm_prefetch::<_MM_HINT_T0>(
                            (row.add(i) as *const i8).wrapping_add(PF + 64),
                        );
                    }
                    for a in 0..ACC {
                        let wv = _mm512_cvtph_ps(_mm256_loadu_si256(
                            row.add(i + 16 * a) as *const __m256i
                        ));
                        acc[a] = _mm512_fmadd_ps(
                            wv,
                            _mm512_loadu_ps(x.as_ptr().add(i + 16 * a)),
                            acc[a],
                        );
                    }
                    i += 16 * ACC;
                }
                let mut s = acc[0];
                for a in 1..ACC {
                    s = _mm512_add_ps(s, acc[a]);
                }
                y[k] = _mm512_reduce_add_ps(s);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn rows_interleaved<const O: usize, const PF: usize, const PFLINE: bool>(
        x: &[f32],
        w: &[f16],
        d_in: usize,
        rows: std::ops::Range<usize>,
        y: &mut [f32],
    ) {
        unsafe {
            let mut j = rows.start;
            let mut k = 0;
            while j < rows.end {
                let mut acc = [_mm512_setzero_ps(); O];
                let mut i = 0;
                while i < d_in {
                    let xv = _mm512_loadu_ps(x.as_ptr().add(i));
                    for o in 0..O {
                        let at = w.as_ptr().add((j + o) * d_in + i);
                        if PF > 0 && (!PFLINE || i % 32 == 0) {
                            _mm_prefetch::<_MM_HINT_T0>((at as *const i8).wrapping_add(PF));
                        }
                        acc[o] = _mm512_fmadd_ps(
                            _mm512_cvtph_ps(_mm256_loadu_si256(at as *const __m256i)),
                            xv,
                            acc[o],
                        );
                    }
                    i += 16;
                }
                for o in 0..O {
                    y[k + o] = _mm512_reduce_add_ps(acc[o]);
                }
                j += O;
                k += O;
            }
        }
    }

    /// bf16 dot-product variants: `O` weight rows per pass, `ACC` accumulators per row, each row
    /// prefetched `PF` bytes ahead (0: none). `w`'s bytes are read as bf16, `x` rounded down to it.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn bf16_rows<const O: usize, const ACC: usize, const PF: usize>(
        x: &[f32],
        w: &[f16],
        d_in: usize,
        rows: std::ops::Range<usize>,
        y: &mut [f32],
    ) {
        let xb: Vec<u16> = x.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        let step = 32 * ACC;
        assert!(d_in % step == 0 && rows.len() % O == 0);
        unsafe {
            let mut j = rows.start;
            while j < rows.end {
                let mut acc = [[_mm512_setzero_ps(); ACC]; O];
                let mut i = 0;
                while i < d_in {
                    for o in 0..O {
                        let row = w.as_ptr().add((j + o) * d_in + i) as *const u16;
                        if PF > 0 {
                            for line in 0..(2 * step) / 64 {
                                _mm_prefetch::<_MM_HINT_T0>((row as *const i8).wrapping_add(PF + 64 * line));
                            }
                        }
                        for a in 0..ACC {
                            let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(xb.as_ptr().add(i + 32 * a) as *const _));
                            let wv: __m512bh = std::mem::transmute(_mm512_loadu_si512(row.add(32 * a) as *const _));
                            acc[o][a] = _mm512_dpbf16_ps(acc[o][a], xv, wv);
                        }
                    }
                    i += step;
                }
                for o in 0..O {
                    let mut sum = acc[o][0];
                    for a in 1..ACC {
                        sum = _mm512_add_ps(sum, acc[o][a]);
                    }
                    y[j - rows.start + o] = _mm512_reduce_add_ps(sum);
                }
                j += O;
            }
        }
    }

    type Kernel = unsafe fn(&[f32], &[f16], usize, std::ops::Range<usize>, &mut [f32]);

    fn run(
        kernel: Kernel,
        x: &[f32],
        w: &[f16],
        d_in: usize,
        d_out: usize,
        parts: usize,
    ) -> Vec<f32> {
        let part = d_out.div_ceil(parts).next_multiple_of(16);
        let ys: Vec<Vec<f32>> = (0..d_out)
            .step_by(part)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|s| {
                let e = (s + part).min(d_out);
                let mut y = vec![0f32; e - s];
                unsafe { kernel(x, w, d_in, s..e, &mut y) };
                y
            })
            .collect();
        ys.concat()
    }

    pub fn main() {
        if !biomedgpt_kernels::Isa::Avx512.supported() {
            eprintln!("needs AVX-512");
            return;
        }
        let shapes = [(4096usize, 11008usize), (11008, 4096), (4096, 4096)];
        let mats: Vec<(usize, usize, Vec<f16>)> = shapes
            .iter()
            .map(|&(d_in, d_out)| {
                (
                    d_in,
                    d_out,
                    (0..d_in * d_out)
                        .map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 1000.0 - 0.5))
                        .collect(),
                )
            })
            .collect();
        let total_bytes: usize = mats.iter().map(|m| m.2.len() * 2).sum();
        // Enough copies that one pass over all exceeds the L2/L3 caches many times.
        let copies = 4;
        // HUGE=1: the copies on transparent huge pages (2 MiB; PyTorch's CPU allocator asks for
        // them on large buffers), to measure what TLB misses cost the kernels.
        let huge = std::env::var("HUGE").is_ok_and(|v| v == "1");
        let copy = |src: &[f16]| -> Vec<f16> {
            let mut v = Vec::with_capacity(src.len());
            if huge {
                let start = (v.as_ptr() as usize).next_multiple_of(2 << 20);
                let end = (v.as_ptr() as usize + src.len() * 2) & !((2 << 20) - 1);
                if end > start {
                    // SAFETY: advice only, on the untouched, 2 MiB-aligned interior of our allocation.
                    unsafe {
                        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE)
                    };
                }
            }
            v.extend_from_slice(src);
            v
        };
        let sets: Vec<Vec<(usize, usize, Vec<f16>)>> = (0..copies)
            .map(|_| mats.iter().map(|(i, o, w)| (*i, *o, copy(w))).collect())
            .collect();
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        println!(
            "huge pages asked: {huge}; {}",
            rollup
                .lines()
                .find(|l| l.starts_with("AnonHugePages"))
                .unwrap_or("AnonHugePages: ?")
        );
        let xs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|&(d_in, _)| (0..d_in).map(|i| (i % 13) as f32 / 13.0).collect())
            .collect();
        let variants: Vec<(&str, Option<Kernel>)> = vec![
            ("library matvec", None),
            // The same bytes read as bf16 by the dot-product kernel (AVX512_BF16 CPUs only).
            ("library bf16 dot", None),
            ("bf16 o1 acc4 pf1024", Some(bf16_rows::<1, 4, 1024> as Kernel)),
            ("bf16 o1 acc4 pf4096", Some(bf16_rows::<1, 4, 4096> as Kernel)),
            ("bf16 o2 acc2 pf2048", Some(bf16_rows::<2, 2, 2048> as Kernel)),
            ("bf16 o4 acc1 pf0", Some(bf16_rows::<4, 1, 0> as Kernel)),
            ("bf16 o4 acc1 pf1024", Some(bf16_rows::<4, 1, 1024> as Kernel)),
            ("bf16 o4 acc1 pf4096", Some(bf16_rows::<4, 1, 4096> as Kernel)),
            ("bf16 o8 acc1 pf2048", Some(bf16_rows::<8, 1, 2048> as Kernel)),
            ("bf16 o8 acc1 pf4096", Some(bf16_rows::<8, 1, 4096> as Kernel)),
            ("seq acc4 pf0", Some(rows_seq::<0, 4> as Kernel)),
            ("seq acc4 pf1024", Some(rows_seq::<1024, 4> as Kernel)),
            ("seq acc4 pf4096", Some(rows_seq::<4096, 4> as Kernel)),
            (
                "int8 pf1024 every",
                Some(rows_interleaved::<8, 1024, false> as Kernel),
            ),
            (
                "int8 pf1024 line",
                Some(rows_interleaved::<8, 1024, true> as Kernel),
            ),
            ("int8 pf0", Some(rows_interleaved::<8, 0, true> as Kernel)),
            (
                "int16 pf1024 line",
                Some(rows_interleaved::<16, 1024, true> as Kernel),
            ),
            (
                "int4 pf1024 line",
                Some(rows_interleaved::<4, 1024, true> as Kernel),
            ),
        ];
        let reps = std::env::args()
            .nth(1)
            .map(|s| s.parse().unwrap())
            .unwrap_or(3);
        let mut best = vec![0f64; variants.len()];
        for _ in 0..reps {
            for (v, (name, kernel)) in variants.iter().enumerate() {
                if name.contains("bf16") && !biomedgpt_kernels::matmul::bf16_dot::available() {
                    continue;
                }
                let t = Instant::now();
                let mut check = 0f32;
                for set in &sets {
                    for ((d_in, d_out, w), x) in set.iter().zip(&xs) {
                        let y = match kernel {
                            None if name.contains("bf16") => {
                                // SAFETY: f16 and bf16 are both 16-bit plain values.
                                let w: &[half::bf16] = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const half::bf16, w.len()) };
                                match biomedgpt_kernels::matmul::bf16_dot::matvec(x, 1, w, *d_in, *d_out) {
                                    Some(y) => y,
                                    None => continue,
                                }
                            }
                            None => matvec(x, 1, w, WeightLayout::OutputMajor, *d_in, *d_out),
                            Some(k) => run(*k, x, w, *d_in, *d_out, rayon::current_num_threads()),
                        };
                        check += y[0] + y[y.len() - 1];
                    }
                }
                let gbs = (total_bytes * copies) as f64 / t.elapsed().as_secs_f64() / 1e9;
                best[v] = best[v].max(gbs);
                println!("{name:22} {gbs:6.1} GB/s  (check {check:.3})");
            }
        }
        println!("--- best");
        for (v, (name, _)) in variants.iter().enumerate() {
            println!("{name:22} {:6.1} GB/s", best[v]);
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    bench::main();
}
