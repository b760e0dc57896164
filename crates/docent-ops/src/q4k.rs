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
//! The `unsafe` code is in the `kernel` module; its safe entry point checks
//! every bound and takes the int8 kernel's token (`int8::Simd`), which only
//! a variant this CPU supports yields.

use crate::int8::Variant;
use crate::q8::par_outputs;
use half::f16;
use rayon::prelude::*;

/// Weights per super-block.
pub const SUPER: usize = 256;
/// Bytes per ggml `Q4_K` super-block.
const BLOCK_BYTES: usize = 144;
/// Bytes of quants per super-block.
const QUANTS: usize = SUPER / 2;
/// Bytes [`Q4kMatrix::read_ggml`] reads at a time.
const READ_BYTES: usize = 1 << 19;
/// How far ahead of its reads the kernel prefetches weights, in bytes.
const PREFETCH: usize = 2048;

/// Whether decoding should run `Q4_K` matrices on this kernel: this CPU
/// runs an AVX-512 variant of it, and `DOCENT_Q4K=off` (to compare with
/// candle's repacked product) is not set.
pub fn available() -> bool {
    crate::q8::available() && !crate::switched_off("DOCENT_Q4K")
}

/// A `Q4_K` weight matrix of shape (out, in), for [`Q4kMatrix::matvec`].
pub struct Q4kMatrix {
    out: usize,
    input: usize,
    /// Row `j`'s super-block `s` at `(j · supers + s) · 128`: the quants
    /// as ggml stores them.
    quants: Vec<u8>,
    /// At `(j · supers + s) · 16`: the eight scales, then the eight minima.
    scales: Vec<u8>,
    /// At `(j · supers + s) · 2`: `d` and `dmin`.
    d: Vec<f32>,
}

/// Activations quantized per super-block, laid out for the kernel.
struct Activations {
    /// Per super-block, sub-blocks 0, 2, 1, 3, 4, 6, 5, 7 of `xq`.
    q: Vec<i8>,
    /// Per super-block, 16 lanes: zeros, then each sub-block's `Σ xq` (the
    /// lanes the minima occupy in the unpacked scales).
    sums: Vec<i32>,
    /// Per super-block, `dx` (NaN where the input was not finite).
    scales: Vec<f32>,
}

/// Where sub-block `j` of a super-block sits in [`Activations::q`], in
/// units of 32.
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

impl Q4kMatrix {
    /// Reads ggml `Q4_K` data (rows of 144-byte super-blocks) of shape
    /// (out, in). Fails if `input` is not whole super-blocks or `data` is
    /// not `out` rows of them.
    pub fn from_ggml(data: &[u8], out: usize, input: usize) -> Result<Q4kMatrix, String> {
        let row = Self::row_bytes(input)?;
        if data.len() != out * row {
            return Err(format!(
                "{} bytes are not {out} Q4_K rows of {input}",
                data.len()
            ));
        }
        Self::read_ggml(&mut &data[..], out, input).map_err(|e| e.to_string())
    }

    /// [`Q4kMatrix::from_ggml`] on `out` rows read from `reader`, a few
    /// hundred kilobytes at a time.
    pub fn read_ggml(
        reader: &mut impl std::io::Read,
        out: usize,
        input: usize,
    ) -> std::io::Result<Q4kMatrix> {
        let row = Self::row_bytes(input).map_err(std::io::Error::other)?;
        let supers = input / SUPER;
        let mut quants = vec![0u8; out * supers * QUANTS];
        let mut scales = vec![0u8; out * supers * 16];
        let mut d = vec![0f32; out * supers * 2];
        let chunk_rows = (READ_BYTES / row).max(1);
        let mut buffer = vec![0u8; chunk_rows * row];
        for ((q, s), d) in quants
            .chunks_mut(chunk_rows * supers * QUANTS)
            .zip(scales.chunks_mut(chunk_rows * supers * 16))
            .zip(d.chunks_mut(chunk_rows * supers * 2))
        {
            let data = &mut buffer[..q.len() / QUANTS * BLOCK_BYTES];
            reader.read_exact(data)?;
            q.par_chunks_mut(QUANTS)
                .zip(s.par_chunks_mut(16))
                .zip(d.par_chunks_mut(2))
                .zip(data.par_chunks(BLOCK_BYTES))
                .for_each(|(((q, s), d), block)| {
                    d[0] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                    d[1] = f16::from_le_bytes([block[2], block[3]]).to_f32();
                    for j in 0..8 {
                        (s[j], s[8 + j]) = scale_min(j, &block[4..16]);
                    }
                    q.copy_from_slice(&block[16..]);
                });
        }
        Ok(Q4kMatrix {
            out,
            input,
            quants,
            scales,
            d,
        })
    }

    /// Bytes of one ggml `Q4_K` row of `input` values.
    fn row_bytes(input: usize) -> Result<usize, String> {
        if input == 0 || !input.is_multiple_of(SUPER) {
            return Err(format!(
                "rows of {input} are not whole Q4_K super-blocks of {SUPER}"
            ));
        }
        Ok(input / SUPER * BLOCK_BYTES)
    }

    /// The rows of several matrices with the same input, one after another.
    pub fn concat(parts: Vec<Q4kMatrix>) -> Result<Q4kMatrix, String> {
        let input = crate::q8::shared_input(parts.iter().map(|p| p.input))?;
        let mut all = Q4kMatrix {
            out: 0,
            input,
            quants: Vec::with_capacity(parts.iter().map(|p| p.quants.len()).sum()),
            scales: Vec::with_capacity(parts.iter().map(|p| p.scales.len()).sum()),
            d: Vec::with_capacity(parts.iter().map(|p| p.d.len()).sum()),
        };
        for p in parts {
            all.out += p.out;
            all.quants.extend_from_slice(&p.quants);
            all.scales.extend_from_slice(&p.scales);
            all.d.extend_from_slice(&p.d);
        }
        Ok(all)
    }

    pub fn out(&self) -> usize {
        self.out
    }

    pub fn input(&self) -> usize {
        self.input
    }

    /// Bytes of weights and scales.
    pub fn bytes(&self) -> usize {
        self.quants.len() + self.scales.len() + 4 * self.d.len()
    }

    /// Quantizes `x` (one row of `input` values) as ggml's
    /// `quantize_row_q8_K` does, into the kernel's layout.
    fn quantize(&self, x: &[f32]) -> Activations {
        let supers = self.input / SUPER;
        let mut q = vec![0i8; self.input];
        let mut sums = vec![0i32; supers * 16];
        let mut scales = vec![0f32; supers];
        for (s, xs) in x.chunks_exact(SUPER).enumerate() {
            // The value of largest magnitude, with its sign.
            let max = xs
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let finite = xs.iter().all(|v| v.is_finite());
            if !finite {
                scales[s] = f32::NAN;
                continue;
            }
            if max == 0.0 {
                continue;
            }
            let inverse = -127.0 / max;
            scales[s] = 1.0 / inverse;
            for (j, sub) in xs.chunks_exact(32).enumerate() {
                let at = s * SUPER + SLOT[j] * 32;
                let mut sum = 0i32;
                for (k, &v) in sub.iter().enumerate() {
                    let v = ((inverse * v).round() as i32).min(127);
                    q[at + k] = v as i8;
                    sum += v;
                }
                sums[s * 16 + 8 + j] = sum;
            }
        }
        Activations { q, sums, scales }
    }

    /// `y = W · x` for each of `rows` rows of `x` (row-major, `input`
    /// values each): `rows × out` values. Runs on `variant`; panics if this
    /// CPU lacks it.
    pub fn matvec_with(&self, variant: Variant, x: &[f32], rows: usize) -> Vec<f32> {
        assert!(variant.supported(), "this CPU does not run {variant}");
        assert_eq!(
            x.len(),
            rows * self.input,
            "x is not {rows} rows of {}",
            self.input
        );
        let supers = self.input / SUPER;
        let simd = kernel::Simd::new(variant);
        let mut y = Vec::with_capacity(rows * self.out);
        for x in x.chunks_exact(self.input) {
            let a = self.quantize(x);
            y.extend(par_outputs(self.out, |first, out| {
                let at = first * supers;
                let n = out.len() * supers;
                let w = Weights {
                    quants: &self.quants[at * QUANTS..(at + n) * QUANTS],
                    scales: &self.scales[at * 16..(at + n) * 16],
                    d: &self.d[at * 2..(at + n) * 2],
                };
                match simd {
                    Some(simd) => kernel::rows(simd, &a, &w, supers, out),
                    None => portable_rows(&a, &w, supers, out),
                }
            }));
        }
        y
    }

    /// [`Q4kMatrix::matvec_with`] on the fastest variant this CPU has.
    pub fn matvec(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matvec_with(Variant::detect(), x, rows)
    }
}

/// Consecutive rows of a [`Q4kMatrix`].
struct Weights<'a> {
    quants: &'a [u8],
    scales: &'a [u8],
    d: &'a [f32],
}

/// The portable form of [`kernel::rows`], sub-block by sub-block.
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

#[allow(unsafe_code)]
mod kernel {
    use super::{Activations, PREFETCH, QUANTS, SUPER, Variant, Weights};
    pub(crate) use crate::int8::Simd;

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// [`super::portable_rows`] on AVX-512: the rows of `w` (`supers`
    /// super-blocks each), one output each.
    pub fn rows(simd: Simd, a: &Activations, w: &Weights<'_>, supers: usize, y: &mut [f32]) {
        let n = y.len() * supers;
        assert!(w.quants.len() == n * QUANTS && w.scales.len() == n * 16 && w.d.len() == n * 2);
        assert!(a.q.len() == supers * SUPER && a.sums.len() == supers * 16);
        assert!(a.scales.len() == supers);
        let _ = simd;
        #[cfg(target_arch = "x86_64")]
        {
            for (r, y) in y.iter_mut().enumerate() {
                let b = r * supers;
                let args = Args {
                    quants: w.quants[b * QUANTS..].as_ptr(),
                    scales: w.scales[b * 16..].as_ptr(),
                    d: w.d[b * 2..].as_ptr(),
                    end: w.quants.as_ptr_range().end,
                    q: a.q.as_ptr(),
                    sums: a.sums.as_ptr(),
                    dx: a.scales.as_ptr(),
                    supers,
                };
                // SAFETY: `simd` proves the variant's CPU features. The
                // asserts above bound every read: for row r < y.len() and
                // super-block s < supers, the 128 quant bytes, 16 scale
                // bytes and 2 floats at index r · supers + s of `w`, and
                // the 256 bytes, 16 sums and 1 scale at s of `a`.
                // Prefetches past `end` are not issued.
                *y = unsafe {
                    match simd.variant() {
                        Variant::Amx | Variant::Vnni => vnni(args),
                        _ => bw(args),
                    }
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no AVX-512 variant off x86-64")
    }

    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    struct Args {
        quants: *const u8,
        scales: *const u8,
        d: *const f32,
        end: *const u8,
        q: *const i8,
        sums: *const i32,
        dx: *const f32,
        supers: usize,
    }

    /// One micro-kernel per variant: `$dot(sum, w, x)` adds the products of
    /// four unsigned × signed bytes per lane into `sum`.
    macro_rules! micro_kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = $features)]
            unsafe fn $name(a: Args) -> f32 {
                // SAFETY: the caller (`rows`) checked the bounds described
                // there.
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

    /// `vpdpbusd`: four u8 (`w`) × s8 (64 bytes at `x`) products per lane,
    /// added to `sum`.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dot_vnni(sum: __m512i, w: __m512i, x: *const i8) -> __m512i {
        // SAFETY: the kernel reads 64 bytes inside the activations.
        unsafe { _mm512_dpbusd_epi32(sum, w, _mm512_loadu_si512(x as *const __m512i)) }
    }

    /// The same sums on AVX-512 BW: pairs into i16 (at most
    /// 2 · 15 · 127, no saturation), pairs of those into i32.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn dot_bw(sum: __m512i, w: __m512i, x: *const i8) -> __m512i {
        // SAFETY: as for `dot_vnni`.
        unsafe {
            let pairs = _mm512_maddubs_epi16(w, _mm512_loadu_si512(x as *const __m512i));
            _mm512_add_epi32(sum, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
        }
    }

    micro_kernel!(vnni, "avx512f,avx512bw,avx512vnni", dot_vnni);
    micro_kernel!(bw, "avx512f,avx512bw", dot_bw);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Random `Q4_K` data of shape (out, input), written by candle's own
    /// quantizer from random weights.
    fn ggml(out: usize, input: usize, seed: u64) -> Vec<u8> {
        let device = Device::Cpu;
        let w = Tensor::rand(-0.1f32, 0.1 + seed as f32 * 1e-3, (out, input), &device).unwrap();
        QTensor::quantize(&w, GgmlDType::Q4K)
            .unwrap()
            .data()
            .unwrap()
            .to_vec()
    }

    /// The product as ggml defines it, from the ggml bytes, in f64 (see
    /// the module documentation), with the sum of its terms' magnitudes.
    fn reference(data: &[u8], out: usize, input: usize, x: &[f32]) -> Vec<(f64, f64)> {
        let supers = input / SUPER;
        (0..out)
            .map(|r| {
                let (mut y, mut magnitude) = (0f64, 0f64);
                for s in 0..supers {
                    let xs = &x[s * SUPER..][..SUPER];
                    let max = xs
                        .iter()
                        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    if max == 0.0 {
                        continue;
                    }
                    let inverse = -127.0 / max;
                    let xq: Vec<i64> = xs
                        .iter()
                        .map(|&v| ((inverse * v).round() as i64).min(127))
                        .collect();
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
                        let dx = (1.0 / inverse) as f64;
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

    fn activations(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn every_variant_matches_ggmls_definition_and_candles_product() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        // Inputs of 1, 2, 6 (qwen2.5-1.5b's 1536) and 35 (its 8960)
        // super-blocks; outputs that end inside a task of 64 rows.
        for (out, supers) in [(1, 1), (67, 2), (130, 6), (5, 35)] {
            let input = supers * SUPER;
            let data = ggml(out, input, seed % 7);
            let m = Q4kMatrix::from_ggml(&data, out, input).unwrap();
            let x = activations(2 * input, &mut seed);
            let want: Vec<(f64, f64)> = x
                .chunks(input)
                .flat_map(|x| reference(&data, out, input, x))
                .collect();
            let candle = {
                let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                    GgmlDType::Q4K,
                    &data,
                    vec![out, input],
                    &Device::Cpu,
                )
                .unwrap();
                let x = Tensor::from_slice(&x, (2, input), &Device::Cpu).unwrap();
                QMatMul::from_qtensor(q)
                    .unwrap()
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            let mut results = Vec::new();
            for variant in crate::q8::variants() {
                let y = m.matvec_with(variant, &x, 2);
                for (i, (&got, &(want, magnitude))) in y.iter().zip(&want).enumerate() {
                    // Only the f32 products and sums of the terms round.
                    assert!(
                        (got as f64 - want).abs() <= 1e-6 * magnitude,
                        "{variant} {out}×{input} value {i}: {got} against {want}"
                    );
                    // candle quantizes the activations the same way.
                    let theirs = candle[i] as f64;
                    assert!(
                        (got as f64 - theirs).abs() <= 1e-5 * magnitude,
                        "{variant} {out}×{input} value {i}: {got} against candle's {theirs}"
                    );
                }
                results.push(y);
            }
            if results.len() == 3 {
                assert_eq!(
                    results[0], results[1],
                    "VNNI and BW differ at {out}×{input}"
                );
            }
        }
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
                for (&got, &(want, magnitude)) in m.matvec_with(variant, &x, 1).iter().zip(&want) {
                    assert!(
                        (got as f64 - want).abs() <= 1e-6 * magnitude,
                        "{variant}: {got} against {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_and_non_finite_activations() {
        let mut seed = 7u64;
        let (out, input) = (9, 6 * SUPER);
        let data = ggml(out, input, 3);
        let m = Q4kMatrix::from_ggml(&data, out, input).unwrap();
        for variant in crate::q8::variants() {
            assert!(
                m.matvec_with(variant, &vec![0.0; input], 1)
                    .iter()
                    .all(|&v| v == 0.0)
            );
            let mut x = activations(input, &mut seed);
            x[300] = f32::INFINITY;
            assert!(
                m.matvec_with(variant, &x, 1).iter().all(|v| v.is_nan()),
                "{variant}"
            );
        }
    }

    #[test]
    fn reading_in_pieces_concatenating_and_malformed_data() {
        let mut seed = 5u64;
        // More rows than one read holds, and not a whole number of reads.
        let input = 6 * SUPER;
        let out = READ_BYTES / (6 * BLOCK_BYTES) * 2 + 37;
        let data = ggml(out, input, 1);
        let whole = Q4kMatrix::from_ggml(&data, out, input).unwrap();
        let x = activations(input, &mut seed);
        let want = reference(&data, out, input, &x);
        for (&got, &(want, magnitude)) in whole.matvec(&x, 1).iter().zip(&want) {
            assert!((got as f64 - want).abs() <= 1e-6 * magnitude);
        }
        let short = Q4kMatrix::read_ggml(&mut &data[..data.len() - 1], out, input);
        assert!(short.is_err(), "a short file is an error");
        // Two parts give the whole's products.
        let row = input / SUPER * BLOCK_BYTES;
        let parts = vec![
            Q4kMatrix::from_ggml(&data[..100 * row], 100, input).unwrap(),
            Q4kMatrix::from_ggml(&data[100 * row..], out - 100, input).unwrap(),
        ];
        let both = Q4kMatrix::concat(parts).unwrap();
        assert_eq!(both.out(), out);
        assert_eq!(both.matvec(&x, 1), whole.matvec(&x, 1));
        assert!(Q4kMatrix::from_ggml(&data[..row], 1, input - 32).is_err());
        assert!(Q4kMatrix::from_ggml(&data[..row], 2, input).is_err());
        assert!(Q4kMatrix::concat(Vec::new()).is_err());
    }
}
