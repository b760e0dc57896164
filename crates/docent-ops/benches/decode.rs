//! Decoding's matrix–vector products: candle's quantized matmul against
//! docent's [`Q8Matrix`] variants on qwen2.5-0.5b's `Q8_0` shapes, and its
//! [`Q4kMatrix`] and [`Q6kMatrix`] variants on qwen2.5-1.5b's `Q4_K` and
//! `Q6_K` shapes:
//! `cargo bench -p docent-ops --bench decode`.
//! Each repetition (`REPS`, default 30) runs every kernel in turn, each
//! after reading 64 MiB of other memory, so that its weights come from DRAM
//! as they do in decoding (a token reads the whole model, about 480 MB for
//! qwen2.5-0.5b); the medians are printed in microseconds and in GB/s of
//! weights read.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use docent_ops::int8::Variant;
use docent_ops::q4k::Q4kMatrix;
use docent_ops::q6k::Q6kMatrix;
use docent_ops::q8::Q8Matrix;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Reads `buffer`, evicting the caches of what was read before.
fn evict(buffer: &[u64]) {
    if std::env::var("HOT").is_ok() {
        return;
    }
    std::hint::black_box(buffer.iter().fold(0u64, |a, &b| a ^ b));
}

/// docent's product on one format: builds the matrix from ggml bytes, then
/// runs `y = W · x` on a variant.
type Ours = Box<dyn Fn(Variant, &[f32]) -> Vec<f32>>;

fn main() -> candle_core::Result<()> {
    let buffer: Vec<u64> = (0..8u64 << 20).collect();
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    // qwen2.5-0.5b: Q|K|V, attention output, gate|up, the output projection.
    compare(
        &buffer,
        reps,
        GgmlDType::Q8_0,
        &[(896, 1152), (896, 896), (896, 9728), (896, 151_936)],
        |data, out, input| {
            let m = Q8Matrix::from_ggml(data, out, input).map_err(candle_core::Error::msg)?;
            Ok(Box::new(move |v, x| m.matvec_with(v, x, 1)))
        },
    )?;
    // qwen2.5-1.5b: Q|K|V, attention output, gate|up, down.
    compare(
        &buffer,
        reps,
        GgmlDType::Q4K,
        &[(1536, 2048), (1536, 1536), (1536, 17_920), (8960, 1536)],
        |data, out, input| {
            let m = Q4kMatrix::from_ggml(data, out, input).map_err(candle_core::Error::msg)?;
            Ok(Box::new(move |v, x| m.matvec_with(v, x, 1)))
        },
    )?;
    // qwen2.5-1.5b: V, down, the output projection.
    compare(
        &buffer,
        reps,
        GgmlDType::Q6K,
        &[(1536, 256), (8960, 1536), (1536, 151_936)],
        |data, out, input| {
            let m = Q6kMatrix::from_ggml(data, out, input).map_err(candle_core::Error::msg)?;
            Ok(Box::new(move |v, x| m.matvec_with(v, x, 1)))
        },
    )
}

/// candle's `QMatMul` (after its first call, which repacks `Q4_K`) against
/// docent's product on each variant, per shape (input, output).
fn compare(
    buffer: &[u64],
    reps: usize,
    dtype: GgmlDType,
    shapes: &[(usize, usize)],
    ours: impl Fn(&[u8], usize, usize) -> candle_core::Result<Ours>,
) -> candle_core::Result<()> {
    let variants: Vec<Variant> = docent_ops::q8::variants();
    println!(
        "CPU: {} · {} threads · {dtype:?} matrix-vector products, medians",
        docent_ops::cpu_name(),
        rayon::current_num_threads(),
    );
    print!("{:>6} {:>7} {:>16}", "in", "out", "candle µs (GB/s)");
    for v in &variants {
        print!(" {:>22}", format!("{} µs (GB/s)", v.as_str()));
    }
    println!(" {:>10}", "max |Δ|/‖y‖∞");
    for &(input, out) in shapes {
        let w = Tensor::randn(0f32, 0.05, (out, input), &Device::Cpu)?;
        let q = QTensor::quantize(&w, dtype)?;
        let bytes = q.storage_size_in_bytes() as f64;
        let ours = ours(&q.data()?, out, input)?;
        let candle = QMatMul::from_qtensor(q)?;
        let x = Tensor::randn(0f32, 1.0, (1, input), &Device::Cpu)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let reference = candle.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        let mut times = vec![Vec::new(); 1 + variants.len()];
        let mut worst = 0f32;
        let top = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        for _ in 0..reps {
            evict(buffer);
            let t = Instant::now();
            std::hint::black_box(candle.forward(&x)?);
            times[0].push(t.elapsed().as_secs_f64());
            for (i, &v) in variants.iter().enumerate() {
                evict(buffer);
                let t = Instant::now();
                let y = std::hint::black_box(ours(v, &xs));
                times[i + 1].push(t.elapsed().as_secs_f64());
                for (a, b) in y.iter().zip(&reference) {
                    worst = worst.max((a - b).abs() / top);
                }
            }
        }
        print!("{input:>6} {out:>7}");
        for t in times {
            let m = median(t);
            print!(
                " {:>22}",
                format!("{:.0} ({:.1})", m * 1e6, bytes / m / 1e9)
            );
        }
        println!(" {worst:>10.2e}");
    }
    Ok(())
}
