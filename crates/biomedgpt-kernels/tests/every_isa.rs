//! Every op's public entry point under every instruction-set level this CPU supports, against
//! an f64 reference, on odd shapes (lengths that are not a multiple of any vector width, 1 and
//! 9 rows, empty inputs).
//!
//! The level is chosen once per process (`BIOMEDGPT_CPU_ISA`), so this test (its own harness)
//! runs itself once per supported level and prints what it covered: `cargo test` then says on
//! every machine which kernel paths it checked and which this CPU cannot run.

use std::process::Command;

use biomedgpt_kernels::activation::{add, gelu, rms_norm, silu_mul};
use biomedgpt_kernels::attention::attention;
use biomedgpt_kernels::isa::{self, Isa};
use biomedgpt_kernels::{apply_rotary, matmul, matmul_many};
use burn::tensor::{DType, Device, Tensor, TensorData};

const CHILD: &str = "BIOMEDGPT_EVERY_ISA_CHILD";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        let checks = run_checks();
        println!("  {}: {checks} checks passed", isa::current());
        return;
    }
    println!("\nrunning the kernels under every level this CPU supports ({})", isa::describe());
    let mut failed = Vec::new();
    for level in isa::supported() {
        let status = Command::new(std::env::current_exe().expect("test binary path"))
            .env(CHILD, "1")
            .env(isa::ENV, level.name())
            .status()
            .expect("run the test binary again");
        if !status.success() {
            failed.push(level.name());
        }
    }
    let missing: Vec<&str> = Isa::ALL.iter().filter(|l| !l.supported()).map(|l| l.name()).collect();
    if !missing.is_empty() {
        println!("  not tested on this CPU (it lacks them): {}", missing.join(", "));
    }
    // A level the CPU lacks is refused, naming the features.
    if let Some(absent) = Isa::ALL.iter().find(|l| !l.supported()) {
        let out = Command::new(std::env::current_exe().unwrap()).env(CHILD, "1").env(isa::ENV, absent.name()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("lacks") {
            failed.push("refusing an unsupported level");
        }
    }
    assert!(failed.is_empty(), "failed under: {failed:?}");
    println!("test result: ok. every level passed\n");
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], dtype: DType) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v, shape), &Device::flex()).cast(dtype)
}

fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

/// Unit roundoff of the dtype: results are rounded to it once.
fn unit(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 2f64.powi(-24),
    }
}

/// `|got - want| <= 2 u |want| + 2 n u_f32 scale`: one rounding of the result to the dtype and
/// f32 accumulation of `n` terms whose absolute sum is `scale` (the standard bound n·u·Σ|terms|).
fn close(what: &str, got: &[f32], want: &[f64], scale: &[f64], n: usize, dtype: DType) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let tol = 2.0 * unit(dtype) * want[i].abs() + 2.0 * (n.max(1) as f64) * 2f64.powi(-24) * scale[i] + 1e-30;
        let err = (got[i] as f64 - want[i]).abs();
        assert!(err <= tol, "{what} under {}: [{i}] {} vs {} (tolerance {tol:e})", isa::current(), got[i], want[i]);
    }
}

fn run_checks() -> usize {
    let mut checks = 0;
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    // Linear layers: PyTorch's [out, in] weights used transposed (the models' layout) and a
    // contiguous [in, out] weight; decoding (<= 8 rows) and prompt (9, 33 rows) sizes.
    for &dtype in &dtypes {
        for &(d_in, d_out) in &[(1, 3), (5, 17), (37, 53), (64, 48), (130, 97)] {
            for &rows in &[0, 1, 2, 7, 9, 33] {
                for transposed in [true, false] {
                    let (x, w, b) = (values(rows * d_in, 1), values(d_in * d_out, 2), values(d_out, 3));
                    let xt = tensor(x, [rows, d_in], dtype);
                    let wt = if transposed { tensor(w, [d_out, d_in], dtype).transpose() } else { tensor(w, [d_in, d_out], dtype) };
                    let bt = tensor(b, [d_out], dtype);
                    let (x, w, b) = (read(xt.clone()), read(wt.clone()), read(bt.clone()));
                    let mut want = vec![0f64; rows * d_out];
                    let mut scale = vec![0f64; rows * d_out];
                    for r in 0..rows {
                        for j in 0..d_out {
                            let terms = (0..d_in).map(|i| x[r * d_in + i] as f64 * w[i * d_out + j] as f64);
                            want[r * d_out + j] = terms.clone().sum::<f64>() + b[j] as f64;
                            scale[r * d_out + j] = terms.map(f64::abs).sum::<f64>() + (b[j] as f64).abs();
                        }
                    }
                    let what = format!("matmul {dtype:?} {rows}x{d_in}x{d_out} transposed {transposed}");
                    // Burn's 16-bit matmul (the fallback for the scalar level and for [in, out]
                    // weights) rounds the product to the dtype before adding the bias: one more
                    // rounding, of a value bounded by the terms' absolute sum.
                    let scale: Vec<f64> = scale.iter().map(|s| s * (1.0 + 2.0 * unit(dtype) / 2f64.powi(-24) / (2.0 * d_in as f64))).collect();
                    let y = matmul(xt.clone(), wt.clone(), Some(bt.clone()));
                    assert_eq!(y.dims(), [rows, d_out], "{what}");
                    close(&what, &read(y), &want, &scale, d_in, dtype);
                    // Several products sharing x give the same as one at a time.
                    let many = matmul_many(xt.clone(), &[(wt.clone(), Some(bt.clone())), (wt.clone(), None)]);
                    assert_eq!(read(many[0].clone()), read(matmul(xt.clone(), wt.clone(), Some(bt))), "{what}: matmul_many");
                    assert_eq!(read(many[1].clone()), read(matmul(xt, wt, None)), "{what}: matmul_many without bias");
                    checks += 2;
                }
            }
        }
    }
    // Element-wise ops and RMSNorm, lengths around the 8 and 16 lanes, and empty.
    for &dtype in &dtypes {
        for &n in &[0usize, 1, 7, 9, 17, 100, 1000] {
            let (a, b) = (values(n, 4), values(n, 5));
            let (at, bt) = (tensor(a.iter().map(|v| v * 6.0).collect(), [1, n], dtype), tensor(b, [1, n], dtype));
            let (a, b) = (read(at.clone()), read(bt.clone()));
            let what = format!("{dtype:?} length {n}");
            let want: Vec<f64> = a.iter().zip(&b).map(|(&a, &b)| a as f64 + b as f64).collect();
            close(&format!("add {what}"), &read(add(at.clone(), bt.clone())), &want, &vec![0.0; n], 1, dtype);
            // silu(a) rounded to the dtype, times b (PyTorch's 16-bit arithmetic): two roundings.
            let want: Vec<f64> = a.iter().zip(&b).map(|(&a, &b)| a as f64 / (1.0 + (-a as f64).exp()) * b as f64).collect();
            let scale: Vec<f64> = want.iter().map(|w| 2.0 * unit(dtype) / 2f64.powi(-24) * w.abs()).collect();
            close(&format!("silu_mul {what}"), &read(silu_mul(at.clone(), bt.clone())), &want, &scale, 1, dtype);
            if dtype == DType::F32 {
                // Exact GELU; the vector erf is within a few f32 ulps (allowance of 16 terms).
                let want: Vec<f64> = a.iter().map(|&x| 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))).collect();
                let scale: Vec<f64> = a.iter().map(|x| x.abs() as f64).collect();
                close(&format!("gelu {what}"), &read(gelu(at.clone())), &want, &scale, 16, dtype);
            }
            if n > 0 {
                let wt = tensor(values(n, 6), [n], dtype);
                let w = read(wt.clone());
                let mean = a.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
                let inv = 1.0 / (mean + 1e-6).sqrt();
                let want: Vec<f64> = a.iter().zip(&w).map(|(&x, &w)| x as f64 * inv * w as f64).collect();
                // Normalized value rounded, then the weight product rounded (as HF's LlamaRMSNorm).
                let scale: Vec<f64> = want.iter().map(|w| (2.0 * unit(dtype) / 2f64.powi(-24) + 4.0) * w.abs()).collect();
                close(&format!("rms_norm {what}"), &read(rms_norm(at, &wt, 1e-6)), &want, &scale, n, dtype);
            }
            checks += 4;
        }
    }
    // Rotary embedding (rotate-half), head sizes 2 and 18 (not multiples of the lanes' halves).
    for &dtype in &dtypes {
        for &(t, d) in &[(1usize, 2usize), (5, 18), (9, 64)] {
            let (h, half) = (3, d / 2);
            let inv: Vec<f32> = (0..half).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / d as f32)).collect();
            let positions: Vec<i64> = (0..t as i64).map(|p| p * 3 + 1).collect();
            let (cos, sin) = biomedgpt_kernels::rotary_tables(&inv, &positions);
            let (cos_t, sin_t) = (tensor(cos, [1, 1, t, d], dtype), tensor(sin, [1, 1, t, d], dtype));
            let (cos, sin) = (read(cos_t.clone()), read(sin_t.clone()));
            // Heads split off a [1, t, h, d] tensor, as the models hold them (a strided view).
            let xt = tensor(values(t * h * d, 7), [1, t, h, d], dtype).swap_dims(1, 2);
            let x = read(xt.clone());
            let mut want = vec![0f64; h * t * d];
            let mut scale = vec![0f64; h * t * d];
            for hi in 0..h {
                for ti in 0..t {
                    let row = &x[(hi * t + ti) * d..][..d];
                    for i in 0..d {
                        let rot = if i < half { -row[i + half] } else { row[i - half] };
                        let (a, b) = (row[i] as f64 * cos[ti * d + i] as f64, rot as f64 * sin[ti * d + i] as f64);
                        want[(hi * t + ti) * d + i] = a + b;
                        scale[(hi * t + ti) * d + i] = (a.abs() + b.abs()) * 3.0 * unit(dtype) / 2f64.powi(-24);
                    }
                }
            }
            close(&format!("rotary {dtype:?} t {t} d {d}"), &read(apply_rotary(xt, &cos_t, &sin_t)), &want, &scale, 2, dtype);
            checks += 1;
        }
    }
    // Attention, with and without a causal bias; prompt-sized and decoding-sized query counts.
    for &(tq, tk, d) in &[(1usize, 1usize, 8usize), (1, 37, 13), (6, 70, 16), (70, 70, 13), (9, 9, 64)] {
        let h = 2;
        let (q, k, v) = (values(h * tq * d, 8), values(h * tk * d, 9), values(h * tk * d, 10));
        let causal: Vec<f32> = (0..tq * tk).map(|i| if i % tk > i / tk + (tk - tq) { f32::NEG_INFINITY } else { 0.0 }).collect();
        for masked in [false, true] {
            let bias = masked.then(|| tensor(causal.clone(), [1, 1, tq, tk], DType::F32));
            let scale = 1.0 / (d as f64).sqrt();
            let out = attention(
                tensor(q.clone(), [1, h, tq, d], DType::F32),
                tensor(k.clone(), [1, h, tk, d], DType::F32),
                tensor(v.clone(), [1, h, tk, d], DType::F32),
                bias,
                scale,
            );
            let mut want = vec![0f64; h * tq * d];
            let mut mag = vec![0f64; h * tq * d];
            for hi in 0..h {
                for i in 0..tq {
                    let scores: Vec<f64> = (0..tk)
                        .map(|j| {
                            let s: f64 = (0..d).map(|c| q[(hi * tq + i) * d + c] as f64 * k[(hi * tk + j) * d + c] as f64).sum();
                            s * scale + if masked { causal[i * tk + j] as f64 } else { 0.0 }
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d {
                        want[(hi * tq + i) * d + c] = (0..tk).map(|j| e[j] / sum * v[(hi * tk + j) * d + c] as f64).sum();
                        mag[(hi * tq + i) * d + c] = (0..tk).map(|j| e[j] / sum * (v[(hi * tk + j) * d + c] as f64).abs()).sum::<f64>() * (d + 8) as f64;
                    }
                }
            }
            close(&format!("attention tq {tq} tk {tk} d {d} masked {masked}"), &read(out), &want, &mag, tk, DType::F32);
            checks += 1;
        }
    }
    // Block-quantized products at decoding sizes (1 and 3 rows): the integer reference's bits
    // (quant::int8), whatever kernel this level dispatches; every type the GGUF reader computes.
    // Prompt sizes: the panels' reference (quant::panel) where the level has a panel kernel.
    for ty in biomedgpt_kernels::quant::QUANTIZABLE.iter().copied() {
        use biomedgpt_kernels::quant::int8::{ActivationBlocks, dot_reference, quantize_row};
        let (n, k) = (19, 2304);
        let mut bytes = vec![0u8; ty.row_bytes(k).unwrap() * n];
        biomedgpt_kernels::quant::quantize(ty, &values(n * k, 11), &mut bytes);
        let matrix = biomedgpt_kernels::quant::QuantMatrix::new(ty, n, k, std::sync::Arc::new(bytes.clone())).unwrap();
        // Prompt rows (11) on panels: the panels' reference bits, at every level with a kernel.
        if biomedgpt_kernels::quant::panel::kernel(ty).is_some() {
            let rows = 11;
            let x = values(rows * k, 13);
            let y = read(biomedgpt_kernels::quant::matmul::matmul(tensor(x.clone(), [rows, k], DType::F32), &matrix, None));
            let want = biomedgpt_kernels::quant::panel::reference_product(ty, &bytes, n, k, &x, rows);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{ty} prompt row {} output {} under {}", i / n, i % n, isa::current());
            }
            checks += 1;
        }
        for rows in [1, 3] {
            let x = values(rows * k, 12);
            let y = read(biomedgpt_kernels::quant::matmul::matmul(tensor(x.clone(), [rows, k], DType::F32), &matrix, None));
            let row_bytes = bytes.len() / n;
            for r in 0..rows {
                let xq = quantize_row(ActivationBlocks::for_weights(ty).unwrap(), &x[r * k..(r + 1) * k]);
                for j in 0..n {
                    let want = dot_reference(ty, &bytes[j * row_bytes..(j + 1) * row_bytes], &xq);
                    assert_eq!(y[r * n + j].to_bits(), want.to_bits(), "{ty} row {r} output {j} under {}", isa::current());
                }
            }
            checks += 1;
        }
    }
    checks
}
