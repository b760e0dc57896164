//! f32 (candle's gemm) against the bf16 kernel on the encoder's and the
//! generator's shapes: `cargo bench -p docent-ops --bench matmul`.
//! Alternates the two on each repetition and prints medians in GFLOP/s.

use candle_core::{Device, Tensor};
use docent_ops::bf16::{self, Bf16Matrix};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    println!(
        "CPU: {} · {} threads · bf16 kernel: {}",
        docent_ops::cpu_name(),
        rayon::current_num_threads(),
        bf16::available()
    );
    if !bf16::available() {
        println!("this CPU lacks AVX-512 BF16: nothing to compare");
        return Ok(());
    }
    let reps = 15;
    println!(
        "{:>6} {:>6} {:>6} {:>10} {:>10} {:>7}",
        "rows", "in", "out", "f32 GF/s", "bf16 GF/s", "ratio"
    );
    for &(rows, input, out) in &[
        (12, 384, 1152),
        (12, 384, 1536),
        (1376, 384, 1152),
        (1376, 384, 384),
        (1376, 384, 1536),
        (1376, 1536, 384),
        (512, 896, 1152),
        (512, 896, 9728),
        (512, 4864, 896),
    ] {
        let x = Tensor::randn(0f32, 1.0, (rows, input), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.05, (out, input), &Device::Cpu)?;
        let wt = w.t()?.contiguous()?;
        let packed = Bf16Matrix::pack(&w.flatten_all()?.to_vec1::<f32>()?, out, input);
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let flops = 2.0 * (rows * input * out) as f64;
        let (mut f, mut b) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            let y = x.matmul(&wt)?;
            std::hint::black_box(&y);
            f.push(flops / t.elapsed().as_secs_f64() / 1e9);
            let t = Instant::now();
            let y = packed.matmul(&xs, rows);
            std::hint::black_box(&y);
            b.push(flops / t.elapsed().as_secs_f64() / 1e9);
        }
        let (f, b) = (median(f), median(b));
        println!(
            "{rows:>6} {input:>6} {out:>6} {f:>10.1} {b:>10.1} {:>6.2}×",
            b / f
        );
    }
    Ok(())
}
