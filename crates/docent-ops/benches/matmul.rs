//! f32 (candle's gemm) against the bf16 and int8 kernels on the encoder's
//! and the generator's shapes: `cargo bench -p docent-ops --bench matmul`.
//! Runs each kernel in turn on every repetition (`REPS`, default 15) and
//! prints medians in GFLOP/s, and the int8 error relative to f32
//! (‖y_int8 − y_f32‖ / ‖y_f32‖ over the whole output). The `w7a7` columns
//! are 7-bit weights with 7-bit activations, the encoder's form on the
//! AVX-512 BW and AVX2 kernels (which then add pairs in i16).

use candle_core::{Device, Tensor};
use docent_ops::bf16::{self, Bf16Matrix};
use docent_ops::int8::{Int8Matrix, Variant, WeightBits};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn relative_error(y: &[f32], reference: &[f32]) -> f64 {
    let (mut e, mut n) = (0f64, 0f64);
    for (a, b) in y.iter().zip(reference) {
        e += (*a as f64 - *b as f64).powi(2);
        n += (*b as f64).powi(2);
    }
    (e / n).sqrt()
}

fn main() -> candle_core::Result<()> {
    let int8: Vec<Variant> = Variant::all_supported();
    // The bf16 kernels: AVX-512 BF16, and AMX-BF16 where the CPU has it.
    let bf16s: Vec<bool> = if bf16::available() {
        std::iter::once(false)
            .chain(docent_ops::amx::support().bf16.then_some(true))
            .collect()
    } else {
        Vec::new()
    };
    println!(
        "CPU: {} ({}) · {} threads · bf16 kernel: {} · int8 variants: {}",
        docent_ops::cpu_name(),
        docent_ops::cpu_features().join(", "),
        rayon::current_num_threads(),
        bf16::available(),
        int8.iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    print!("{:>6} {:>6} {:>6} {:>8}", "rows", "in", "out", "f32");
    for &amx in &bf16s {
        print!(" {:>9}", if amx { "bf16 amx" } else { "bf16" });
    }
    for v in &int8 {
        print!(
            " {:>12}",
            format!("int8 {}", v.as_str().trim_start_matches("avx512-"))
        );
    }
    for v in &int8 {
        print!(
            " {:>12}",
            format!("w7a7 {}", v.as_str().trim_start_matches("avx512-"))
        );
    }
    for v in &int8 {
        print!(
            " {:>10}",
            format!("err {}", v.as_str().trim_start_matches("avx512-"))
        );
    }
    print!(" {:>10}", "err w7a7");
    println!("   (GFLOP/s, medians of {reps})");
    for &(rows, input, out) in &[
        (12, 384, 1152),
        (2752, 384, 384),
        (2752, 384, 1536),
        (2752, 1536, 384),
        (512, 896, 896),
        (512, 896, 4864),
        (512, 4864, 896),
    ] {
        let x = Tensor::randn(0f32, 1.0, (rows, input), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.05, (out, input), &Device::Cpu)?;
        let wt = w.t()?.contiguous()?;
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let bf = bf16::available().then(|| Bf16Matrix::pack(&wv, out, input));
        let q = Int8Matrix::pack(&wv, out, input);
        // The encoder's form on the AVX-512 BW and AVX2 kernels.
        let q7 = Int8Matrix::pack_with(&wv, out, input, WeightBits::Seven).with_7bit_activations();
        let flops = 2.0 * (rows * input * out) as f64;
        let gflops = |t: Instant| flops / t.elapsed().as_secs_f64() / 1e9;
        let reference = x.matmul(&wt)?.flatten_all()?.to_vec1::<f32>()?;
        let errors: Vec<f64> = int8
            .iter()
            .map(|&v| relative_error(&q.matmul_with(v, &xs, rows, |_, _, _| {}), &reference))
            .collect();
        let mut f = Vec::new();
        let mut b = vec![Vec::new(); bf16s.len()];
        let mut i8s = vec![Vec::new(); int8.len()];
        let mut i7s = vec![Vec::new(); int8.len()];
        for _ in 0..reps {
            let t = Instant::now();
            std::hint::black_box(x.matmul(&wt)?);
            f.push(gflops(t));
            if let Some(bf) = &bf {
                for (&amx, times) in bf16s.iter().zip(&mut b) {
                    let t = Instant::now();
                    std::hint::black_box(bf.matmul_on(amx, &xs, rows));
                    times.push(gflops(t));
                }
            }
            for (&v, times) in int8.iter().zip(&mut i8s) {
                let t = Instant::now();
                std::hint::black_box(q.matmul_with(v, &xs, rows, |_, _, _| {}));
                times.push(gflops(t));
            }
            for (&v, times) in int8.iter().zip(&mut i7s) {
                let t = Instant::now();
                std::hint::black_box(q7.matmul_with(v, &xs, rows, |_, _, _| {}));
                times.push(gflops(t));
            }
        }
        print!("{rows:>6} {input:>6} {out:>6} {:>8.1}", median(f));
        for times in b {
            print!(" {:>9.1}", median(times));
        }
        for times in i8s {
            print!(" {:>12.1}", median(times));
        }
        for times in i7s {
            print!(" {:>12.1}", median(times));
        }
        for e in errors {
            print!(" {e:>10.2e}");
        }
        // Every variant computes the same integers for the same form.
        let y7 = q7.matmul_with(Variant::Portable, &xs, rows, |_, _, _| {});
        print!(" {:>10.2e}", relative_error(&y7, &reference));
        println!();
    }
    Ok(())
}
