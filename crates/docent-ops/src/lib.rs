//! CPU kernels shared by docent's embedder and generator, written so the
//! compiler vectorises them: a polynomial `exp` (libm's scalar `expf` was 13%
//! of bulk embedding and 10% of prompt evaluation), the softmax and SwiGLU
//! built on it, and helpers for candle custom ops over contiguous f32 data.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

/// `e^x` for f32 without libm, so loops over it vectorise: `x = n·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, then `2^n · p(r)` with the degree-6 Taylor
/// polynomial (truncation error below 1.2e-7 relative). Above 88 it gives
/// e^88; below -80 it gives exactly 0, so nothing downstream turns
/// subnormal: a softmax row of e^-87-sized weights made the next matmul
/// twice as slow (x86 handles subnormal operands in microcode).
#[inline]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2^23 rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let tiny = x < -80.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let y = p * f32::from_bits(((n + 127) << 23) as u32);
    if tiny { 0.0 } else { y }
}

/// Runs `apply` over `(input, output)` pieces of whole rows of `row` input
/// values, split across the threads candle uses once there is enough work.
/// Each output row has `out_row` values.
pub fn par_rows_to(
    input: &[f32],
    row: usize,
    out_row: usize,
    apply: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let row = row.max(1);
    let rows = input.len() / row;
    let mut out = vec![0f32; rows * out_row];
    let threads = candle_core::utils::get_num_threads().max(1);
    // At least 16k input values per piece, so small inputs stay on one thread.
    let per_piece = rows.div_ceil(threads).max((16 * 1024 / row).max(1));
    std::thread::scope(|scope| {
        let mut parts = input
            .chunks(per_piece * row)
            .zip(out.chunks_mut((per_piece * out_row).max(1)));
        let first = parts.next();
        for (src, dst) in parts {
            let apply = &apply;
            scope.spawn(move || apply(src, dst));
        }
        if let Some((src, dst)) = first {
            apply(src, dst);
        }
    });
    out
}

/// [`par_rows_to`] for outputs shaped like the input.
pub fn par_rows(input: &[f32], row: usize, apply: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    par_rows_to(input, row, row, apply)
}

/// The f32 values of a contiguous CPU tensor, or an error naming `op`.
pub fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected f32 activations");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor");
    };
    Ok(&data[start..end])
}

fn last_dim(layout: &Layout) -> usize {
    layout.shape().dims().last().copied().unwrap_or(1).max(1)
}

/// Softmax over the last dimension, with the fast `exp`.
pub struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "docent-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, "softmax")?;
        let row = last_dim(layout);
        let out = par_rows(input, row, |src, dst| {
            for (x, y) in src.chunks_exact(row).zip(dst.chunks_exact_mut(row)) {
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = exp(v - max);
                }
                let scale = 1.0 / y.iter().sum::<f32>();
                for o in y.iter_mut() {
                    *o *= scale;
                }
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// SwiGLU on a fused gate|up projection: for input rows `[g₁…gₙ, u₁…uₙ]`,
/// output rows `silu(gᵢ) · uᵢ`, half as wide.
pub struct SwiGlu;

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "docent-swiglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, "swiglu")?;
        let row = last_dim(layout);
        if row % 2 != 0 {
            candle_core::bail!("swiglu: the last dimension ({row}) must be even");
        }
        let half = row / 2;
        let out = par_rows_to(input, row, half, |src, dst| {
            for (x, y) in src.chunks_exact(row).zip(dst.chunks_exact_mut(half)) {
                let (gate, up) = x.split_at(half);
                for ((o, &g), &u) in y.iter_mut().zip(gate).zip(up) {
                    *o = g / (1.0 + exp(-g)) * u;
                }
            }
        });
        let mut dims = layout.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = half;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f32;
        for i in -80_000..=88_000 {
            let x = i as f32 / 1_000.0;
            let exact = x.exp();
            worst = worst.max(((exp(x) - exact) / exact).abs());
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        // Never subnormal: exactly 0 below -80, normal above.
        for x in [-80.5f32, -87.0, -100.0, -1e9, f32::NEG_INFINITY] {
            assert_eq!(exp(x), 0.0, "{x}");
        }
        assert!(exp(-80.0).is_normal());
    }

    #[test]
    fn softmax_op_matches_candle_softmax_with_masked_scores() {
        // Rows of 55 (a batch's sequence length); the last ten are padding,
        // scored -1e9 as the encoder does. 400 rows use both threads.
        let (rows, width) = (400usize, 55usize);
        let data: Vec<f32> = (0..rows * width)
            .map(|i| {
                if i % width >= 45 {
                    -1e9
                } else {
                    (i as f32 * 0.61).sin() * 8.0
                }
            })
            .collect();
        let x = Tensor::from_vec(data, (rows, width), &Device::Cpu).unwrap();
        let ours = x
            .apply_op1_no_bwd(&Softmax)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let reference = candle_nn::ops::softmax_last_dim(&x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (a, b) in ours.iter().zip(&reference) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-6, "{x} vs {y}");
            }
            assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            // Padding weighs exactly 0 (no subnormals).
            assert_eq!(a[50], 0.0);
            assert!(a.iter().all(|w| *w == 0.0 || w.is_normal()));
        }
    }

    #[test]
    fn swiglu_op_matches_silu_times_up() {
        for (rows, half) in [(1usize, 3usize), (300, 96)] {
            let data: Vec<f32> = (0..rows * 2 * half)
                .map(|i| (i as f32 * 0.37).sin() * 9.0)
                .collect();
            let x = Tensor::from_vec(data, (rows, 2 * half), &Device::Cpu).unwrap();
            let ours = x.apply_op1_no_bwd(&SwiGlu).unwrap();
            assert_eq!(ours.dims(), &[rows, half]);
            let reference = (x.narrow(1, 0, half).unwrap().silu().unwrap()
                * x.narrow(1, half, half).unwrap())
            .unwrap();
            let worst = (ours - reference)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(worst < 1e-4, "{rows}x{half}: max error {worst}");
        }
    }
}
