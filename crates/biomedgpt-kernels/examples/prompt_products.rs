//! GFLOP/s of the prompt-sized products (`x [rows, in] · Wᵀ`, `W [out, in]`) on LLaMA-shaped
//! matrices, per weight dtype and kernel: f32 and f16 through `prompt_gemm` (gemm's f32 kernels),
//! bf16 through `prompt_gemm`'s widening path and through the AVX512_BF16 dot-product kernel
//! (`bf16_dot`, where the CPU has it). The measurement behind the README's prefill numbers.
//! `cargo run --release -p biomedgpt-io --example prompt_products [ROWS] [REPEATS]`.
use biomedgpt_kernels::matmul::{bf16_dot::{self, Kernel}, gemm::matmul_tiles};
use half::{bf16, f16};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(128, |a| a.parse().expect("ROWS"));
    let repeats: usize = args.next().map_or(5, |a| a.parse().expect("REPEATS"));
    // TinyLlama's attention and MLP products, LLaMA-7B's MLP up and down.
    let shapes = [(2048, 2048), (2048, 5632), (5632, 2048), (4096, 11008), (11008, 4096)];
    // The first second of work runs slower (thread pool start, clocks): not measured.
    let (x, w) = (vec![0.5f32; rows * 2048], vec![0.25f32; 2048 * 2048]);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 1.0 {
        drop(matmul_tiles(&x, rows, &w, 2048, 2048, None));
    }
    println!("rows {rows}, best of {repeats}; GFLOP/s");
    println!("| in x out | f32 | f16 (widened) | bf16 (widened) | bf16 (dot) | bf16 (AMX) |");
    println!("|---|---|---|---|---|---|");
    for (d_in, d_out) in shapes {
        // bf16-exact inputs, so every kernel multiplies the same numbers.
        let x: Vec<f32> = (0..rows * d_in).map(|i| bf16::from_f32(((i * 37 % 101) as f32 / 50.0) - 1.0).to_f32()).collect();
        let w32: Vec<f32> = (0..d_out * d_in).map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0).collect();
        let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
        let flops = 2.0 * (rows * d_in * d_out) as f64;
        let best = |f: &dyn Fn()| {
            f();
            (0..repeats)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let rate = |secs: f64| format!("{:.0}", flops / secs / 1e9);
        let f32_s = best(&|| drop(matmul_tiles(&x, rows, &w32, d_in, d_out, None)));
        let f16_s = best(&|| drop(matmul_tiles(&x, rows, &w16, d_in, d_out, None)));
        let bf16_s = best(&|| drop(matmul_tiles(&x, rows, &wb, d_in, d_out, None)));
        let dot = if bf16_dot::available() {
            // As the models call it: bf16 rows in, bf16 results out.
            let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            // COLD=1: each call reads another copy of the weights, 1.5 GB in all, so that they
            // come from memory as a model's do (the CPU's last-level cache may hold one shape).
            let copies = if std::env::var("COLD").is_ok_and(|v| v == "1") { (1_500_000_000 / (wb.len() * 2)).max(2) } else { 1 };
            let wbs: Vec<Vec<bf16>> = (0..copies).map(|_| wb.clone()).collect();
            let next = std::cell::Cell::new(0usize);
            let on = |kernel: Kernel| match kernel.applies(d_in, &[bf16_dot::Product { weight: &wb, d_out, bias: None }]) {
                true => rate(best(&|| {
                    let w = &wbs[next.get() % copies];
                    next.set(next.get() + 1);
                    let product = [bf16_dot::Product { weight: w, d_out, bias: None }];
                    drop(bf16_dot::matmul_many_on::<bf16>(kernel, &xb, rows, &product, d_in))
                })),
                false => "n/a".into(),
            };
            [on(Kernel::Dot), on(Kernel::Amx)]
        } else {
            ["n/a".into(), "n/a".into()]
        };
        println!("| {d_in} x {d_out} | {} | {} | {} | {} | {} |", rate(f32_s), rate(f16_s), rate(bf16_s), dot[0], dot[1]);
    }
}
