//! Decoding's matrix–vector products on GGUF `Q4_K` weights, on AVX-512
//! VNNI (`vpdpbusd`) or AVX-512 BW (`vpmaddubsw` + `vpmaddwd`).
//!
//! **Why.** qwen2.5-1.5b-instruct (the default generator) keeps 626 MB of
//! its layers in `Q4_K`. candle runs them through a repacked form that it
//! builds on first use: the first answer of a process spends about 3.5 s
//! packing 0.8 GB of fresh memory, which then sits beside the file's copy,
//! and decoding ran at 0.65× llama.cpp on an AMD EPYC (docs/benchmarks.md,
//! session 25). This kernel reads the weights in ggml's own layout, which
//! suits 512-bit registers as it is.
//!
//! **The format.** A `Q4_K` super-block holds 256 weights in 144 bytes: an
//! f16 scale `d` and minimum scale `dmin`, twelve bytes packing eight 6-bit
//! scales `sc_j` and minima `m_j` (one per sub-block of 32), and 128 bytes
//! of 4-bit quants `q`; weight `k` of sub-block `j` is
//! `d · sc_j · q_k − dmin · m_j`. Byte `l` of the quants' 32-byte chunk `c`
//! holds weight `l` of sub-block `2c` in its low nibble and of `2c + 1` in
//! its high one. The activations are quantized per super-block as ggml's
//! `Q8_K` does (`xq = round(−127 / max · x)` with `max` the value of
//! largest magnitude, `dx = 1 / that scale`), with each sub-block's sum of
//! `xq` kept. Then
//! `y = Σ dx · (d · Σ_j sc_j · Σ_k q_k · xq_k − dmin · Σ_j m_j · Σ_k xq_k)`,
//! the inner sums exact in i32 (at most 8 · 63 · 32 · 15 · 127 < 2³¹).
//!
//! **The kernel.** The quants' first 64 bytes hold sub-blocks 0 and 2 in
//! their low nibbles and 1 and 3 in their high ones, the last 64 bytes 4
//! and 6, 5 and 7; so the activations are laid out per super-block as
//! sub-blocks 0, 2, 1, 3, 4, 6, 5, 7, and four `vpdpbusd` (unsigned
//! nibbles × signed activations) leave each sub-block's integer sum spread
//! over eight lanes. Their scales are multiplied in per lane, the eight
//! minima against the kept sums in one more product, and each super-block
//! ends in two `fma`s; the lanes are added once per row.
//!
//! The `unsafe` code is in the `kernel` module, and in `kquant::simd`,
//! whose safe entry point checks every bound and takes the int8 kernel's
//! token (`int8::Simd`), which only a variant this CPU supports yields.

use crate::kquant::{Activations, Format, KMatrix, SUPER, Weights};
use half::f16;

/// Bytes per ggml `Q4_K` super-block.
const BLOCK_BYTES: usize = 144;
/// Bytes of quants per super-block.
const QUANTS: usize = SUPER / 2;
/// How far ahead of its reads the kernel prefetches weights, in bytes.
const PREFETCH: usize = 2048;

/// Whether decoding should run `Q4_K` matrices on this kernel: this CPU
/// runs an AVX-512 variant of it, and `DOCENT_Q4K=off` (to compare with
/// candle's repacked product) is not set.
pub fn available() -> bool {
    crate::q8::available() && !crate::switched_off("DOCENT_Q4K")
}

/// ggml's `Q4_K`: quants as ggml stores them; scales: the eight scales,
/// then the eight minima; `d` and `dmin`. The activations' sums: zeros,
/// then each sub-block's `Σ xq` (the lanes the minima occupy).
pub struct Q4k;

/// A `Q4_K` weight matrix of shape (out, in).
pub type Q4kMatrix = KMatrix<Q4k>;

/// Where sub-block `j` of a super-block sits in the activations, in units
/// of 32.
const SLOT: [usize; 8] = [0, 2, 1, 3, 4, 6, 5, 7];

/// ggml's unpacking of the 6-bit scale and minimum of sub-block `j`.
fn scale_min(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

impl Format for Q4k {
    const NAME: &'static str = "Q4_K";
    const BLOCK_BYTES: usize = BLOCK_BYTES;
    const QUANTS: usize = QUANTS;
    const D: usize = 2;

    fn unpack(block: &[u8], q: &mut [u8], s: &mut [u8], d: &mut [f32]) {
        d[0] = f16::from_le_bytes([block[0], block[1]]).to_f32();
        d[1] = f16::from_le_bytes([block[2], block[3]]).to_f32();
        for j in 0..8 {
            (s[j], s[8 + j]) = scale_min(j, &block[4..16]);
        }
        q.copy_from_slice(&block[16..]);
    }

    fn slot(k: usize) -> usize {
        SLOT[k / 32] * 32 + k % 32
    }

    fn sum_lane(k: usize) -> usize {
        8 + k / 32
    }

    /// Sub-block by sub-block.
    fn portable_rows(a: &Activations, w: &Weights<'_>, supers: usize, y: &mut [f32]) {
        for (r, y) in y.iter_mut().enumerate() {
            let mut total = 0f32;
            let mut minima = 0f32;
            for s in 0..supers {
                let b = r * supers + s;
                let quants = &w.quants[b * QUANTS..][..QUANTS];
                let scales = &w.scales[b * 16..][..16];
                let (mut dot, mut min) = (0i32, 0i32);
                for j in 0..8 {
                    let xq = &a.q[s * SUPER + SLOT[j] * 32..][..32];
                    let bytes = &quants[(j / 2) * 32..][..32];
                    let sum: i32 = bytes
                        .iter()
                        .zip(xq)
                        .map(|(&byte, &x)| {
                            let q = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                            q as i32 * x as i32
                        })
                        .sum();
                    dot += scales[j] as i32 * sum;
                    min += scales[8 + j] as i32 * a.sums[s * 16 + 8 + j];
                }
                total += dot as f32 * (w.d[2 * b] * a.scales[s]);
                minima += min as f32 * (w.d[2 * b + 1] * a.scales[s]);
            }
            *y = total - minima;
        }
    }

    #[cfg(target_arch = "x86_64")]
    const KERNELS: crate::kquant::simd::MicroKernels = kernel::KERNELS;
}

#[allow(unsafe_code)]
mod kernel {
    #[cfg(target_arch = "x86_64")]
    use super::{PREFETCH, QUANTS, SUPER};
    #[cfg(target_arch = "x86_64")]
    use crate::kquant::simd::{Args, dot_bw, dot_vnni};

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// [`super::Q4k`]'s micro-kernels.
    #[cfg(target_arch = "x86_64")]
    pub const KERNELS: crate::kquant::simd::MicroKernels =
        crate::kquant::simd::MicroKernels { vnni, bw };

    /// One micro-kernel per variant: `$dot(sum, w, x)` adds the products of
    /// four unsigned × signed bytes per lane into `sum`.
    macro_rules! micro_kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = $features)]
            unsafe fn $name(a: Args) -> f32 {
                // SAFETY: the caller (`kquant::simd::rows`) checked the
                // features and bounds described there.
                unsafe {
                    let nibble = _mm512_set1_epi8(0x0F);
                    // Lanes 0..8 take the scale of the first sub-block in a
                    // register, lanes 8..16 of the second (see the module
                    // documentation).
                    let pick = |a: i32, b: i32| {
                        _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a)
                    };
                    let picks = [pick(0, 2), pick(1, 3), pick(4, 6), pick(5, 7)];
                    let mut acc = _mm512_setzero_ps();
                    let mut minima = _mm512_setzero_ps();
                    for s in 0..a.supers {
                        let quants = a.quants.add(s * QUANTS);
                        let ahead = quants.wrapping_add(PREFETCH);
                        if ahead < a.end {
                            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64) as *const i8);
                        }
                        let w0 = _mm512_loadu_si512(quants as *const __m512i);
                        let w1 = _mm512_loadu_si512(quants.add(64) as *const __m512i);
                        let x = a.q.add(s * SUPER);
                        let zero = _mm512_setzero_si512();
                        let sums = [
                            $dot(zero, _mm512_and_si512(w0, nibble), x),
                            $dot(
                                zero,
                                _mm512_and_si512(_mm512_srli_epi16::<4>(w0), nibble),
                                x.add(64),
                            ),
                            $dot(zero, _mm512_and_si512(w1, nibble), x.add(128)),
                            $dot(
                                zero,
                                _mm512_and_si512(_mm512_srli_epi16::<4>(w1), nibble),
                                x.add(192),
                            ),
                        ];
                        let unpacked = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                            a.scales.add(s * 16) as *const __m128i
                        ));
                        let mut dot = _mm512_setzero_si512();
                        for (sum, pick) in sums.iter().zip(&picks) {
                            let scale = _mm512_permutexvar_epi32(*pick, unpacked);
                            dot = _mm512_add_epi32(dot, _mm512_mullo_epi32(*sum, scale));
                        }
                        let min = _mm512_mullo_epi32(
                            unpacked,
                            _mm512_loadu_si512(a.sums.add(s * 16) as *const __m512i),
                        );
                        let dx = a.dx.add(s).read();
                        let d = a.d.add(2 * s);
                        acc = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(dot),
                            _mm512_set1_ps(d.read() * dx),
                            acc,
                        );
                        minima = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(min),
                            _mm512_set1_ps(d.add(1).read() * dx),
                            minima,
                        );
                    }
                    _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(minima)
                }
            }
        };
    }

    micro_kernel!(vnni, "avx512f,avx512bw,avx512vnni", dot_vnni);
    micro_kernel!(bw, "avx512f,avx512bw", dot_bw);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kquant::testing::{close, common, matches_definition_and_candle, q8k};
    use candle_core::quantized::GgmlDType;

    /// The product as ggml defines it, from the ggml bytes, in f64 (see
    /// the module documentation), with the sum of its terms' magnitudes.
    fn reference(data: &[u8], out: usize, input: usize, x: &[f32]) -> Vec<(f64, f64)> {
        let supers = input / SUPER;
        (0..out)
            .map(|r| {
                let (mut y, mut magnitude) = (0f64, 0f64);
                for s in 0..supers {
                    let Some((xq, dx)) = q8k(&x[s * SUPER..][..SUPER]) else {
                        continue;
                    };
                    let block = &data[(r * supers + s) * BLOCK_BYTES..][..BLOCK_BYTES];
                    let d = f16::from_le_bytes([block[0], block[1]]).to_f64();
                    let dmin = f16::from_le_bytes([block[2], block[3]]).to_f64();
                    for j in 0..8 {
                        let (sc, m) = scale_min(j, &block[4..16]);
                        let (mut dot, mut sum) = (0i64, 0i64);
                        for l in 0..32 {
                            let byte = block[16 + (j / 2) * 32 + l];
                            let q = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                            dot += q as i64 * xq[j * 32 + l];
                            sum += xq[j * 32 + l];
                        }
                        for term in [
                            dx * d * sc as f64 * dot as f64,
                            -dx * dmin * m as f64 * sum as f64,
                        ] {
                            y += term;
                            magnitude += term.abs();
                        }
                    }
                }
                (y, magnitude)
            })
            .collect()
    }

    #[test]
    fn every_variant_matches_ggmls_definition_and_candles_product() {
        matches_definition_and_candle::<Q4k>(GgmlDType::Q4K, reference, 0x9e3779b97f4a7c15);
    }

    #[test]
    fn extreme_quants_and_activations_do_not_overflow() {
        // Every quant 15, every scale and minimum 63, activations of one
        // sign at full scale: the largest integer sums.
        let (out, input) = (3, 4 * SUPER);
        let mut block = [0u8; BLOCK_BYTES];
        block[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        block[2..4].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block[4..16].fill(0xFF);
        block[16..].fill(0xFF);
        let data = block.repeat(out * input / SUPER);
        let m = Q4kMatrix::from_ggml(&data, out, input).unwrap();
        for x in [vec![1.0f32; input], vec![-1.0f32; input]] {
            let want = reference(&data, out, input, &x);
            for variant in crate::q8::variants() {
                close(
                    &m.matvec_with(variant, &x, 1),
                    &want,
                    1e-6,
                    variant.as_str(),
                );
            }
        }
    }

    #[test]
    fn reading_concatenating_zero_and_non_finite_activations_malformed_data() {
        common::<Q4k>(GgmlDType::Q4K, reference);
    }
}
