//! The attention ops with f32 products (gemm) against bf16 products
//! (`vdpbf16ps`), on the encoder's and the generator's shapes:
//! `cargo bench -p docent-ops --bench attention`. Runs both in turn on
//! every repetition (`REPS`, default 15) and prints the median time of
//! each, their ratio, and the largest difference between their outputs.

use candle_core::{Device, Tensor};
use docent_ops::attention::{Attention, PrefillAttention, Products};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `run` for each of `products` in turn, `reps` times; the median
/// milliseconds of each and the largest difference between the outputs.
fn compare(
    reps: usize,
    products: &[Products],
    run: impl Fn(Products) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Vec<f64>, f32)> {
    let mut times = vec![Vec::new(); products.len()];
    let mut outputs = Vec::new();
    for rep in 0..=reps {
        for (i, &p) in products.iter().enumerate() {
            let t = Instant::now();
            let y = run(p)?;
            // The first repetition warms up (buffers, pages).
            if rep > 0 {
                times[i].push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                outputs.push(y.flatten_all()?.to_vec1::<f32>()?);
            }
        }
    }
    let diff = match outputs.as_slice() {
        [a, b] => a
            .iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max),
        _ => 0.0,
    };
    Ok((times.into_iter().map(median).collect(), diff))
}

fn main() -> candle_core::Result<()> {
    let products: Vec<Products> = if docent_ops::bf16::available() {
        vec![Products::F32, Products::Bf16]
    } else {
        vec![Products::F32]
    };
    println!(
        "CPU: {} ({}) · {} threads · bf16 products: {}",
        docent_ops::cpu_name(),
        docent_ops::cpu_features().join(", "),
        rayon::current_num_threads(),
        docent_ops::bf16::available(),
    );
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    let dev = Device::Cpu;
    println!(
        "{:<44} {:>10} {:>10} {:>7} {:>9}",
        "shape", "f32 ms", "bf16 ms", "ratio", "max diff"
    );
    let report = |shape: String, (times, diff): (Vec<f64>, f32)| match times.as_slice() {
        [f, b] => println!(
            "{shape:<44} {f:>10.2} {b:>10.2} {:>6.2}x {diff:>9.4}",
            f / b
        ),
        [f] => println!("{shape:<44} {f:>10.2} {:>10} {:>7} {:>9}", "-", "-", "-"),
        _ => unreachable!(),
    };
    // MiniLM: 12 heads of 32; a batch of 32 inputs, short and long.
    for (batch, seq) in [(32, 48), (32, 128), (32, 256)] {
        let (heads, head_dim) = (12, 32);
        let width = heads * head_dim;
        // Q scaled by 1/√head_dim, as the encoder folds it in.
        let scale: Vec<f32> = (0..3 * width)
            .map(|c| {
                if c < width {
                    1.0 / (head_dim as f32).sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let scale = Tensor::from_vec(scale, (1, 3 * width), &dev)?;
        let qkv =
            Tensor::randn(0f32, 1.0, (batch * seq, 3 * width), &dev)?.broadcast_mul(&scale)?;
        let bias = Tensor::zeros((batch, seq), candle_core::DType::F32, &dev)?;
        let timed = compare(reps, &products, |products| {
            qkv.apply_op2_no_bwd(
                &bias,
                &Attention {
                    batch,
                    heads,
                    products,
                },
            )
        })?;
        report(format!("encoder {batch} × {seq} tokens, 12 × 32"), timed);
    }
    // A 1,000-token prompt: qwen2.5-0.5b (14 heads of 64, 2 KV heads) and
    // 1.5b (12 heads of 128, 2 KV heads), in pieces of 512 as prefill runs.
    for (name, group, head_dim) in [("qwen2.5-0.5b", 7, 64), ("qwen2.5-1.5b", 6, 128)] {
        let (kv_heads, n, block) = (2, 1000, 512);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let q = (Tensor::randn(0f32, 1.0, (kv_heads, group, n, head_dim), &dev)? * scale)?;
        let k = Tensor::randn(0f32, 1.0, (kv_heads, n, head_dim), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (kv_heads, n, head_dim), &dev)?;
        let timed = compare(reps, &products, |products| {
            let mut parts = Vec::new();
            for pos in (0..n).step_by(block) {
                let rows = block.min(n - pos);
                let q = q.narrow(2, pos, rows)?.contiguous()?;
                parts.push(q.apply_op3_no_bwd(
                    &k,
                    &v,
                    &PrefillAttention {
                        group,
                        pos,
                        products,
                    },
                )?);
            }
            Tensor::cat(&parts, 0)
        })?;
        report(format!("prompt {name}, {n} tokens"), timed);
    }
    Ok(())
}
