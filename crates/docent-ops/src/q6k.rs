//! Decoding's matrix–vector products on GGUF `Q6_K` weights, on AVX-512
//! VNNI (`vpdpbusd`) or AVX-512 BW (`vpmaddubsw` + `vpmaddwd`).
//!
//! **Why.** qwen2.5-1.5b-instruct (the default generator) keeps its output
//! projection (191 MB, read once per decoded token) and half of its down
//! and value projections in `Q6_K`. After `Q4_K` moved to docent's kernel
//! ([`crate::q4k`]), candle's `Q6_K` product was a quarter of a decoded
//! token (docs/benchmarks.md, session 25), and a projection mixing the two
//! formats stayed whole on candle's.
//!
//! **The format.** A `Q6_K` super-block holds 256 weights in 210 bytes:
//! 128 bytes `ql` of low 4 bits, 64 bytes `qh` of high 2 bits, sixteen
//! signed 8-bit scales `sc_g` (one per group of 16 weights) and an f16
//! scale `d`; weight `k` of group `g` is `d · sc_g · (q_k − 32)`, with
//! `q_k` in 0..64. In each half of 128 weights (64 bytes of `ql`, 32 of
//! `qh`), byte `l` of `ql` holds weight `l` in its low nibble and `l + 64`
//! in its high one, byte `32 + l` weights `32 + l` and `96 + l`; byte `l`
//! of `qh` holds the high bits of weights `l`, `32 + l`, `64 + l` and
//! `96 + l`, two bits each from the lowest. The activations are quantized
//! as ggml's `Q8_K` ([`crate::kquant`]), in order, with the sum of `xq`
//! over each group of 16 kept. Then
//! `y = Σ dx · d · Σ_g sc_g · (Σ_k q_k · xq_k − 32 · Σ_k xq_k)`, the inner
//! sums exact in i32 (per lane at most 16 · 128 · (63 + 32) · 127 < 2³¹).
//!
//! **The kernel.** A half's 64 bytes of `ql` are one register: its low
//! nibbles are weights 0..64 of the half in order, its high ones 64..128.
//! The 32 bytes of `qh`, broadcast to both 256-bit halves of a register,
//! shifted per half (16-bit lanes: left by 4 and 2 for the low nibbles,
//! right by 0 and 2 for the high ones) and masked to bits 4–5, complete
//! the 6-bit quants. Four `vpdpbusd` (unsigned quants × signed
//! activations) per super-block leave each group's integer sum spread over
//! four lanes; the scales are multiplied in per lane, the offset of 32
//! against the kept sums in one more product, and each super-block ends in
//! one `fma`; the lanes are added once per row.
//!
//! The `unsafe` code is in the `kernel` module, and in `kquant::simd`,
//! whose safe entry point checks every bound and takes the int8 kernel's
//! token (`int8::Simd`), which only a variant this CPU supports yields.

use crate::kquant::{Activations, Format, KMatrix, SUPER, Weights};
use half::f16;

/// Bytes per ggml `Q6_K` super-block.
const BLOCK_BYTES: usize = 210;
/// Bytes of quants per super-block: `ql`, then `qh`.
const QUANTS: usize = 192;
/// How far ahead of its reads the kernel prefetches weights, in bytes.
const PREFETCH: usize = 2048;

/// Whether decoding should run `Q6_K` matrices on this kernel: this CPU
/// runs an AVX-512 variant of it, and `DOCENT_Q6K=off` (to compare with
/// candle's product) is not set.
pub fn available() -> bool {
    crate::q8::available() && !crate::switched_off("DOCENT_Q6K")
}

/// ggml's `Q6_K`: quants as ggml stores them (`ql`, `qh`); scales: the 16
/// signed scales; `d`. The activations' sums: one per group of 16.
pub struct Q6k;

/// A `Q6_K` weight matrix of shape (out, in).
pub type Q6kMatrix = KMatrix<Q6k>;

/// The 6-bit quant of weight `k` (0..256) of a super-block's quants.
fn quant(quants: &[u8], k: usize) -> u8 {
    let (half, at) = (k / 128, k % 128);
    let (which, l) = (at / 32, at % 32);
    let low = quants[half * 64 + (which % 2) * 32 + l];
    let low = if which < 2 { low & 0x0F } else { low >> 4 };
    let high = (quants[128 + half * 32 + l] >> (2 * which)) & 3;
    low | high << 4
}

impl Format for Q6k {
    const NAME: &'static str = "Q6_K";
    const BLOCK_BYTES: usize = BLOCK_BYTES;
    const QUANTS: usize = QUANTS;
    const D: usize = 1;

    fn unpack(block: &[u8], q: &mut [u8], s: &mut [u8], d: &mut [f32]) {
        q.copy_from_slice(&block[..QUANTS]);
        s.copy_from_slice(&block[QUANTS..QUANTS + 16]);
        d[0] = f16::from_le_bytes([block[208], block[209]]).to_f32();
    }

    fn slot(k: usize) -> usize {
        k
    }

    fn sum_lane(k: usize) -> usize {
        k / 16
    }

    /// Group by group.
    fn portable_rows(a: &Activations, w: &Weights<'_>, supers: usize, y: &mut [f32]) {
        for (r, y) in y.iter_mut().enumerate() {
            let mut total = 0f32;
            for s in 0..supers {
                let b = r * supers + s;
                let quants = &w.quants[b * QUANTS..][..QUANTS];
                let mut dot = 0i32;
                for g in 0..16 {
                    let sum: i32 = (g * 16..g * 16 + 16)
                        .map(|k| quant(quants, k) as i32 * a.q[s * SUPER + k] as i32)
                        .sum();
                    let scale = w.scales[b * 16 + g] as i8 as i32;
                    dot += scale * (sum - 32 * a.sums[s * 16 + g]);
                }
                total += dot as f32 * (w.d[b] * a.scales[s]);
            }
            *y = total;
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

    /// [`super::Q6k`]'s micro-kernels.
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
                    let high = _mm512_set1_epi8(0x30);
                    // Per 16-bit lane, low 256 bits then high: `qh`'s bits
                    // for the low nibbles (bits 0–1, 2–3) and the high ones
                    // (4–5, 6–7), moved to bits 4–5.
                    let left = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
                    let right =
                        _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
                    // Lane i of register r covers group 4r + i / 4.
                    let pick = |r: i32| {
                        _mm512_set_epi32(
                            4 * r + 3,
                            4 * r + 3,
                            4 * r + 3,
                            4 * r + 3,
                            4 * r + 2,
                            4 * r + 2,
                            4 * r + 2,
                            4 * r + 2,
                            4 * r + 1,
                            4 * r + 1,
                            4 * r + 1,
                            4 * r + 1,
                            4 * r,
                            4 * r,
                            4 * r,
                            4 * r,
                        )
                    };
                    let picks = [pick(0), pick(1), pick(2), pick(3)];
                    let mut acc = _mm512_setzero_ps();
                    for s in 0..a.supers {
                        let quants = a.quants.add(s * QUANTS);
                        let ahead = quants.wrapping_add(PREFETCH);
                        if ahead < a.end {
                            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64) as *const i8);
                            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128) as *const i8);
                        }
                        let x = a.q.add(s * SUPER);
                        let zero = _mm512_setzero_si512();
                        let mut sums = [zero; 4];
                        for h in 0..2 {
                            let ql = _mm512_loadu_si512(quants.add(64 * h) as *const __m512i);
                            let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                quants.add(128 + 32 * h) as *const __m256i,
                            ));
                            let low = _mm512_or_si512(
                                _mm512_and_si512(ql, nibble),
                                _mm512_and_si512(_mm512_sllv_epi16(qh, left), high),
                            );
                            let top = _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), nibble),
                                _mm512_and_si512(_mm512_srlv_epi16(qh, right), high),
                            );
                            sums[2 * h] = $dot(zero, low, x.add(128 * h));
                            sums[2 * h + 1] = $dot(zero, top, x.add(128 * h + 64));
                        }
                        let scales = _mm512_cvtepi8_epi32(_mm_loadu_si128(
                            a.scales.add(s * 16) as *const __m128i
                        ));
                        // 32 · Σ_g sc_g · Σ xq over the group.
                        let offset = _mm512_slli_epi32::<5>(_mm512_mullo_epi32(
                            scales,
                            _mm512_loadu_si512(a.sums.add(s * 16) as *const __m512i),
                        ));
                        let mut dot = _mm512_sub_epi32(zero, offset);
                        for (sum, pick) in sums.iter().zip(&picks) {
                            let scale = _mm512_permutexvar_epi32(*pick, scales);
                            dot = _mm512_add_epi32(dot, _mm512_mullo_epi32(*sum, scale));
                        }
                        acc = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(dot),
                            _mm512_set1_ps(a.d.add(s).read() * a.dx.add(s).read()),
                            acc,
                        );
                    }
                    _mm512_reduce_add_ps(acc)
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

    /// The product as ggml defines it (`dequantize_row_q6_K`'s weights
    /// against `Q8_K` activations), from the ggml bytes, in f64, with the
    /// sum of its terms' magnitudes.
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
                    let (ql, qh) = (&block[..128], &block[128..192]);
                    let sc = &block[192..208];
                    let d = f16::from_le_bytes([block[208], block[209]]).to_f64();
                    // ggml's loop: two halves of 128, four weights per l.
                    let mut weights = [0f64; SUPER];
                    for half in 0..2 {
                        let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                        let sc = &sc[8 * half..];
                        for l in 0..32 {
                            let is = l / 16;
                            let q1 = ((ql[l] & 0xF) | (qh[l] & 3) << 4) as i64 - 32;
                            let q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) as i64 - 32;
                            let q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) as i64 - 32;
                            let q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) as i64 - 32;
                            let w = &mut weights[128 * half..];
                            w[l] = d * (sc[is] as i8) as f64 * q1 as f64;
                            w[l + 32] = d * (sc[is + 2] as i8) as f64 * q2 as f64;
                            w[l + 64] = d * (sc[is + 4] as i8) as f64 * q3 as f64;
                            w[l + 96] = d * (sc[is + 6] as i8) as f64 * q4 as f64;
                        }
                    }
                    for (w, &xq) in weights.iter().zip(&xq) {
                        let term = dx * w * xq as f64;
                        y += term;
                        magnitude += term.abs();
                    }
                }
                (y, magnitude)
            })
            .collect()
    }

    #[test]
    fn every_variant_matches_ggmls_definition_and_candles_product() {
        matches_definition_and_candle::<Q6k>(GgmlDType::Q6K, reference, 0x243f6a8885a308d3);
    }

    #[test]
    fn extreme_quants_scales_and_activations_do_not_overflow() {
        // Quants of 63 and of 0 (weights 31 and −32), scales of 127 and
        // −128, activations of one sign at full scale: the largest integer
        // sums of either sign.
        let (out, input) = (4, 4 * SUPER);
        let block = |quants: u8, scale: u8| {
            let mut block = [0u8; BLOCK_BYTES];
            block[..192].fill(quants);
            block[192..208].fill(scale);
            block[208..].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
            block
        };
        let data = [
            block(0xFF, 127),
            block(0, 127),
            block(0xFF, 0x80),
            block(0, 0x80),
        ]
        .iter()
        .flat_map(|b| b.repeat(input / SUPER))
        .collect::<Vec<u8>>();
        let m = Q6kMatrix::from_ggml(&data, out, input).unwrap();
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
        common::<Q6k>(GgmlDType::Q6K, reference);
    }
}
