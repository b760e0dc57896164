//! Decoding's matrix–vector products on GGUF `Q8_0` weights, on AVX-512
//! VNNI (`vpdpbusd`) or AVX-512 BW (`vpmaddubsw` + `vpmaddwd`).
//!
//! **The format.** A `Q8_0` row is blocks of 32 weights, each an f16 scale
//! `d` and 32 signed bytes `q`, the weight being `d · q`. The activations
//! are quantized the same way per call, as ggml and candle do: per block of
//! 32, `dx = max|x| / 127` (stored as f16, as theirs is) and
//! `xq = round(x / dx)`. Then `y_j = Σ_b dw_jb · dx_b · Σ_k wq_jbk · xq_bk`,
//! the integer sums exact in i32. candle's AVX2 `vec_dot` computes the same
//! sums block by block, 32 weights per step, with one scale broadcast and
//! one dependent `fma` each: that was 37% of a decoded token.
//!
//! **The layout.** Here a row is cut into groups of 16 blocks (the last
//! group may be shorter), and a group's 512 bytes are rearranged so that
//! lane `i` of a 64-byte register holds four weights of block `i`: chunk
//! `v` (0..8) holds, for each block `i` of the group, its weights
//! `4v..4v+4`. Eight `vpdpbusd` then leave block `i`'s whole integer sum in
//! lane `i`, and one conversion, one multiply by the 16 blocks' combined
//! scales and one add finish 512 weights: the per-block scale work of
//! candle's loop happens once per 16 blocks. The activations are laid out
//! the same way once per call. Four rows share each activation load.
//!
//! **Signs.** `vpdpbusd` multiplies unsigned by signed bytes, so the
//! activations enter as `|xq|` (≤ 127) and each weight takes the sign of its
//! activation (ggml's `sign` trick): the products are unchanged. On the BW
//! variant `vpmaddubsw` adds two such products into an i16: at most
//! 2 · 127 · 128 = 32,512, so it cannot saturate, and both variants give
//! the same integers. A weight of −128 (ggml never writes one) would keep
//! its sign when negated, as it does in ggml's and candle's kernels.
//!
//! The `unsafe` code is in the `kernel` module; its safe entry point checks
//! every bound and takes the int8 kernel's token (`int8::Simd`), which only
//! a variant this CPU supports yields.

use crate::int8::Variant;
use crate::panels::Stored;
use half::f16;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Weights per `Q8_0` block.
pub const BLOCK: usize = 32;
/// Bytes per `Q8_0` block: the f16 scale, then the 32 weights.
const BLOCK_BYTES: usize = 2 + BLOCK;
/// Blocks per group: one per 32-bit lane of a 512-bit register.
const GROUP: usize = 16;
/// Rows per kernel call, sharing the activation loads.
const ROWS: usize = 1;
/// How far ahead of its reads the kernel prefetches weights, in bytes.
const PREFETCH: usize = 4096;
/// Bytes [`Q8Matrix::read_ggml`] reads at a time.
const READ_BYTES: usize = 1 << 19;
/// Output rows per parallel task.
const TASK_ROWS: usize = 64;

/// Whether this CPU runs an AVX-512 variant of the kernel (detected once):
/// without one, [`Q8Matrix`] runs portable code, slower than candle's AVX2
/// `vec_dot`, so decoding should stay on candle's.
pub fn available() -> bool {
    Variant::detect().is_avx512()
}

/// The variants the kernel runs on this CPU, fastest first: the AVX-512
/// ones, then the portable code (the 256-bit int8 variants have no
/// `Q8_0` kernel, and would run the portable code).
pub fn variants() -> Vec<Variant> {
    Variant::all_supported()
        .into_iter()
        .filter(|v| v.is_avx512() || *v == Variant::Portable)
        .collect()
}

/// A `Q8_0` weight matrix of shape (out, in), rearranged for
/// [`Q8Matrix::matvec`].
pub struct Q8Matrix {
    out: usize,
    input: usize,
    /// Row `j` at `j · input`: groups of 16 blocks, each as 8 chunks of
    /// `4 · blocks in the group` bytes (see the module documentation).
    quants: Stored<i8>,
    /// Row `j`'s block scales at `j · blocks`, as f16 bits.
    scales: Stored<u16>,
}

/// Activations quantized and laid out like one weight row.
struct Activations {
    /// `|xq|`, in the weights' layout.
    abs: Vec<u8>,
    /// Per group and chunk, a bit per byte: whether `xq` is negative.
    negative: Vec<u64>,
    /// Per block, the f16-rounded scale `dx`.
    scales: Vec<f32>,
}

/// Where byte `k` (0..32) of block `b` of a row sits in the layout.
#[inline]
fn position(b: usize, k: usize, blocks: usize) -> usize {
    let (g, i) = (b / GROUP, b % GROUP);
    let width = GROUP.min(blocks - g * GROUP);
    g * GROUP * BLOCK + (k / 4) * 4 * width + i * 4 + k % 4
}

impl Q8Matrix {
    /// Rearranges ggml `Q8_0` data (rows of 34-byte blocks) of shape
    /// (out, in). Fails if `input` is not whole blocks or `data` is not
    /// `out` rows of them.
    pub fn from_ggml(data: &[u8], out: usize, input: usize) -> Result<Q8Matrix, String> {
        let row = Self::row_bytes(input)?;
        if data.len() != out * row {
            return Err(format!(
                "{} bytes are not {out} Q8_0 rows of {input}",
                data.len()
            ));
        }
        Self::read_ggml(&mut &data[..], out, input).map_err(|e| e.to_string())
    }

    /// [`Q8Matrix::from_ggml`] on `out` rows read from `reader`, a few
    /// hundred kilobytes at a time: a model's weights go from the file into
    /// their final layout without a second copy in memory.
    pub fn read_ggml(
        reader: &mut impl std::io::Read,
        out: usize,
        input: usize,
    ) -> std::io::Result<Q8Matrix> {
        let mut matrix = Self::zeroed(out, input).map_err(std::io::Error::other)?;
        matrix.read_rows(0, out, reader)?;
        Ok(matrix)
    }

    /// `out` rows of `input` values, all zero, for [`Q8Matrix::read_rows`]
    /// to fill: several ggml matrices read into one, where
    /// concatenating matrices read apart would copy them all again into
    /// fresh memory.
    pub fn zeroed(out: usize, input: usize) -> Result<Q8Matrix, String> {
        Self::row_bytes(input)?;
        Ok(Q8Matrix {
            out,
            input,
            quants: Stored::Owned(vec![0i8; out * input]),
            scales: Stored::Owned(vec![0u16; out * (input / BLOCK)]),
        })
    }

    /// Reads ggml `Q8_0` rows `first..first + out` of this matrix from
    /// `reader`, a few hundred kilobytes at a time. An error if the matrix
    /// has fewer than `first + out` rows.
    pub fn read_rows(
        &mut self,
        first: usize,
        out: usize,
        reader: &mut impl std::io::Read,
    ) -> std::io::Result<()> {
        rows_fit(first, out, self.out, "Q8_0")?;
        let input = self.input;
        let row = Self::row_bytes(input).map_err(std::io::Error::other)?;
        let blocks = input / BLOCK;
        let chunk_rows = (READ_BYTES / row).max(1);
        let mut buffer = vec![0u8; chunk_rows * row];
        let (Some(quants), Some(scales)) = (self.quants.owned_mut(), self.scales.owned_mut())
        else {
            return Err(std::io::Error::other("a mapped matrix is read-only"));
        };
        for (q, s) in quants[first * input..(first + out) * input]
            .chunks_mut(chunk_rows * input)
            .zip(scales[first * blocks..(first + out) * blocks].chunks_mut(chunk_rows * blocks))
        {
            let data = &mut buffer[..q.len() / input * row];
            reader.read_exact(data)?;
            q.par_chunks_mut(input)
                .zip(s.par_chunks_mut(blocks))
                .zip(data.par_chunks(row))
                .for_each(|((q, s), row)| {
                    for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
                        s[b] = u16::from_le_bytes([block[0], block[1]]);
                        for (k, &w) in block[2..].iter().enumerate() {
                            q[position(b, k, blocks)] = w as i8;
                        }
                    }
                });
        }
        Ok(())
    }

    /// Bytes of one ggml `Q8_0` row of `input` values.
    fn row_bytes(input: usize) -> Result<usize, String> {
        if input == 0 || !input.is_multiple_of(BLOCK) {
            return Err(format!(
                "rows of {input} are not whole Q8_0 blocks of {BLOCK}"
            ));
        }
        Ok(input / BLOCK * BLOCK_BYTES)
    }

    /// The rows of several matrices with the same input, one after another:
    /// the reference the tests hold [`Q8Matrix::read_rows`] into one matrix to.
    #[cfg(test)]
    pub(crate) fn concat(parts: Vec<Q8Matrix>) -> Result<Q8Matrix, String> {
        let input = shared_input(parts.iter().map(|p| p.input))?;
        let mut quants = Vec::with_capacity(parts.iter().map(|p| p.quants.len()).sum());
        let mut scales = Vec::with_capacity(parts.iter().map(|p| p.scales.len()).sum());
        let mut out = 0;
        for p in parts {
            out += p.out;
            quants.extend_from_slice(&p.quants);
            scales.extend_from_slice(&p.scales);
        }
        Ok(Q8Matrix {
            out,
            input,
            quants: Stored::Owned(quants),
            scales: Stored::Owned(scales),
        })
    }

    /// The matrix's two arrays (quants, scales) as bytes, in the order
    /// [`Q8Matrix::from_stored`] takes them back.
    pub fn stored(&self) -> [&[u8]; 2] {
        [
            bytemuck::cast_slice(&self.quants),
            bytemuck::cast_slice(&self.scales),
        ]
    }

    /// A matrix of `out` rows of `input` values over `bytes`, whose arrays
    /// [`Q8Matrix::stored`] wrote one after another from `offset`, each
    /// starting at a multiple of [`crate::STORED_ALIGN`] bytes, and where
    /// its last array ends; `None` if they do not fit there.
    pub fn from_stored(
        out: usize,
        input: usize,
        bytes: crate::bf16::SharedBytes,
        offset: usize,
    ) -> Option<(Q8Matrix, usize)> {
        Self::row_bytes(input).ok()?;
        let (quants, at) = crate::stored_at(&bytes, offset, out.checked_mul(input)?)?;
        let (scales, end) = crate::stored_at(&bytes, at, out.checked_mul(input / BLOCK)?)?;
        Some((
            Q8Matrix {
                out,
                input,
                quants,
                scales,
            },
            end,
        ))
    }

    pub fn out(&self) -> usize {
        self.out
    }

    pub fn input(&self) -> usize {
        self.input
    }

    /// Bytes of weights and scales.
    pub fn bytes(&self) -> usize {
        self.quants.len() + 2 * self.scales.len()
    }

    /// Quantizes `x` (one row of `input` values) as ggml's
    /// `quantize_row_q8_0` does, into the weights' layout.
    fn quantize(&self, x: &[f32]) -> Activations {
        let blocks = self.input / BLOCK;
        let mut abs = vec![0u8; self.input];
        let mut negative = vec![0u64; blocks.div_ceil(GROUP) * 8];
        let mut scales = vec![0f32; blocks];
        for (b, xs) in x.chunks_exact(BLOCK).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
            // `max` passes over NaN, as ggml's does; a block with a NaN or
            // an infinity gets a NaN scale, so its outputs say so.
            let finite = xs.iter().all(|v| v.is_finite());
            scales[b] = if finite {
                f16::from_f32(d).to_f32()
            } else {
                f32::NAN
            };
            let (g, i) = (b / GROUP, b % GROUP);
            for (k, &v) in xs.iter().enumerate() {
                // `as i8` saturates, and makes NaN 0.
                let q = (v * inv).round() as i8;
                let at = position(b, k, blocks);
                abs[at] = q.unsigned_abs();
                if q < 0 {
                    negative[g * 8 + k / 4] |= 1 << (i * 4 + k % 4);
                }
            }
        }
        Activations {
            abs,
            negative,
            scales,
        }
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
        let blocks = self.input / BLOCK;
        let simd = kernel::Simd::new(variant);
        let mut y = Vec::with_capacity(rows * self.out);
        for x in x.chunks_exact(self.input) {
            let a = self.quantize(x);
            y.extend(par_outputs(self.out, |first, out| {
                let mut done = 0;
                while done < out.len() {
                    let n = ROWS.min(out.len() - done);
                    let j = first + done;
                    let w = &self.quants[j * self.input..(j + n) * self.input];
                    let s = &self.scales[j * blocks..(j + n) * blocks];
                    let part = &mut out[done..done + n];
                    match simd {
                        Some(simd) => kernel::rows(simd, &a, w, s, blocks, part),
                        None => portable_rows(&a, w, s, blocks, part),
                    }
                    done += n;
                }
            }));
        }
        y
    }

    /// [`Q8Matrix::matvec_with`] on the fastest variant this CPU has.
    pub fn matvec(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matvec_with(Variant::detect(), x, rows)
    }
}

/// The input width of every matrix to concatenate, or why they cannot be.
#[cfg(test)]
pub(crate) fn shared_input(mut inputs: impl Iterator<Item = usize>) -> Result<usize, String> {
    let input = inputs.next().ok_or("no matrices to concatenate")?;
    match inputs.find(|&i| i != input) {
        Some(other) => Err(format!("inputs of {input} and {other} differ")),
        None => Ok(input),
    }
}

/// An error unless rows `first..first + out` are within a `format` matrix
/// of `rows` rows.
pub(crate) fn rows_fit(first: usize, out: usize, rows: usize, format: &str) -> std::io::Result<()> {
    if first.checked_add(out).is_some_and(|end| end <= rows) {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "rows {first}..{} of a {format} matrix of {rows} rows",
        first.saturating_add(out)
    )))
}

/// `out` outputs computed in pieces of [`TASK_ROWS`] by `fill(first
/// output, piece)`, on candle's pool, where the rest of decoding runs: a
/// second pool's idle workers would spin against it on two cores.
pub(crate) fn par_outputs(out: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let tasks = out.div_ceil(TASK_ROWS);
    let results: Vec<OnceLock<Vec<f32>>> = (0..tasks).map(|_| OnceLock::new()).collect();
    candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
        for t in range {
            let first = t * TASK_ROWS;
            let mut piece = vec![0f32; TASK_ROWS.min(out - first)];
            fill(first, &mut piece);
            let _ = results[t].set(piece);
        }
    });
    let mut y = Vec::with_capacity(out);
    for r in &results {
        y.extend_from_slice(r.get().expect("every task ran"));
    }
    y
}

/// The portable form of [`kernel::rows`], block by block.
fn portable_rows(a: &Activations, w: &[i8], s: &[u16], blocks: usize, y: &mut [f32]) {
    let input = blocks * BLOCK;
    for (r, y) in y.iter_mut().enumerate() {
        let w = &w[r * input..][..input];
        let mut total = 0f32;
        for b in 0..blocks {
            let (g, i) = (b / GROUP, b % GROUP);
            let mut sum = 0i32;
            for k in 0..BLOCK {
                let at = position(b, k, blocks);
                let negative = a.negative[g * 8 + k / 4] >> (i * 4 + k % 4) & 1 == 1;
                let wv = if negative {
                    w[at].wrapping_neg()
                } else {
                    w[at]
                };
                sum += a.abs[at] as i32 * wv as i32;
            }
            let scale = f16::from_bits(s[r * blocks + b]).to_f32() * a.scales[b];
            total += sum as f32 * scale;
        }
        *y = total;
    }
}

#[allow(unsafe_code)]
mod kernel {
    use super::{Activations, BLOCK, GROUP, PREFETCH, ROWS, Variant};
    pub(crate) use crate::int8::Simd;

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// `y[r] = Σ_b dw_rb · dx_b · Σ_k w_rbk · xq_bk` for the `y.len()`
    /// (1..=ROWS) rows of `w` (laid out, `blocks · 32` bytes each) with
    /// scales `s` (`blocks` each).
    pub fn rows(simd: Simd, a: &Activations, w: &[i8], s: &[u16], blocks: usize, y: &mut [f32]) {
        let n = y.len();
        let input = blocks * BLOCK;
        assert!((1..=ROWS).contains(&n));
        assert!(w.len() == n * input && s.len() == n * blocks);
        assert!(a.abs.len() == input && a.scales.len() == blocks);
        assert!(a.negative.len() == blocks.div_ceil(GROUP) * 8);
        let _ = simd;
        #[cfg(target_arch = "x86_64")]
        {
            let args = Args {
                abs: a.abs.as_ptr(),
                negative: a.negative.as_ptr(),
                xs: a.scales.as_ptr(),
                w: w.as_ptr(),
                s: s.as_ptr(),
                blocks,
            };
            let mut out = [0f32; ROWS];
            // SAFETY: `simd` proves the variant's CPU features. The asserts
            // above bound every read: rows r < n of `w` and `s`, and for
            // each group g of width t ≤ 16 the bytes g·512 + 4t·v + [0, 4t)
            // (v < 8) of a row, which lie inside its `blocks · 32`, the
            // scales g·16 + [0, t) of a row and of `xs`, and the masks
            // g·8 + v (< 8 · groups). Masked-off lanes are neither read nor
            // faulted on.
            unsafe {
                macro_rules! by_rows {
                    ($kernel:ident) => {
                        match n {
                            4 => $kernel::<4>(args, &mut out),
                            3 => $kernel::<3>(args, &mut out),
                            2 => $kernel::<2>(args, &mut out),
                            _ => $kernel::<1>(args, &mut out),
                        }
                    };
                }
                match simd.variant() {
                    Variant::Amx | Variant::Vnni => by_rows!(vnni),
                    _ => by_rows!(bw),
                }
            }
            y.copy_from_slice(&out[..n]);
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no AVX-512 variant off x86-64")
    }

    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    struct Args {
        abs: *const u8,
        negative: *const u64,
        xs: *const f32,
        w: *const i8,
        s: *const u16,
        blocks: usize,
    }

    /// One micro-kernel per variant: `$dot(sum, x, w)` adds the products of
    /// four unsigned × signed bytes per lane into `sum`.
    macro_rules! micro_kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize>(a: Args, out: &mut [f32; ROWS]) {
                // SAFETY: the caller (`rows`) checked the bounds described
                // there.
                unsafe {
                    let input = a.blocks * BLOCK;
                    let mut acc = [_mm512_setzero_ps(); R];
                    let mut g = 0;
                    while g * GROUP < a.blocks {
                        let t = GROUP.min(a.blocks - g * GROUP);
                        let lanes: u16 = if t == 16 { u16::MAX } else { (1 << t) - 1 };
                        let bytes: u64 = if t == 16 {
                            u64::MAX
                        } else {
                            (1 << (4 * t)) - 1
                        };
                        let base = g * GROUP * BLOCK;
                        // Two chains per row: `vpdpbusd`'s latency would
                        // otherwise bound a row's eight steps.
                        let mut sums = [[_mm512_setzero_si512(); 2]; R];
                        for v in 0..8 {
                            let at = base + v * 4 * t;
                            let x = _mm512_maskz_loadu_epi8(bytes, a.abs.add(at) as *const i8);
                            let negative = a.negative.add(g * 8 + v).read();
                            for (r, sum) in sums.iter_mut().enumerate() {
                                // The rows are contiguous: prefetch the
                                // bytes this thread reads soon.
                                _mm_prefetch::<_MM_HINT_T0>(
                                    a.w.wrapping_add(r * input + at + PREFETCH) as *const i8,
                                );
                                let w = _mm512_maskz_loadu_epi8(bytes, a.w.add(r * input + at));
                                let w =
                                    _mm512_mask_sub_epi8(w, negative, _mm512_setzero_si512(), w);
                                sum[v & 1] = $dot(sum[v & 1], x, w);
                            }
                        }
                        let xs = _mm512_maskz_loadu_ps(lanes, a.xs.add(g * GROUP));
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let half = _mm512_maskz_loadu_epi16(
                                lanes as u32,
                                a.s.add(r * a.blocks + g * GROUP) as *const i16,
                            );
                            let half = _mm512_castsi512_si256(half);
                            let scale = _mm512_mul_ps(_mm512_cvtph_ps(half), xs);
                            let sum = _mm512_add_epi32(sums[r][0], sums[r][1]);
                            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
                        }
                        g += 1;
                    }
                    for (r, acc) in acc.iter().enumerate() {
                        out[r] = _mm512_reduce_add_ps(*acc);
                    }
                }
            }
        };
    }

    /// `vpdpbusd`: four u8 × s8 products per lane, added to `sum`.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn dot_vnni(sum: __m512i, x: __m512i, w: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(sum, x, w)
    }

    /// The same sums on AVX-512 BW: pairs into i16 (no saturation, see the
    /// module documentation), pairs of those into i32.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn dot_bw(sum: __m512i, x: __m512i, w: __m512i) -> __m512i {
        let pairs = _mm512_maddubs_epi16(x, w);
        _mm512_add_epi32(sum, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
    }

    micro_kernel!(vnni, "avx512f,avx512bw,avx512vnni", dot_vnni);
    micro_kernel!(bw, "avx512f,avx512bw", dot_bw);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random `Q8_0` data of shape (out, input), as ggml would write it:
    /// weights in [-127, 127] and positive f16 scales.
    fn ggml(out: usize, input: usize, seed: &mut u64) -> Vec<u8> {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let mut data = Vec::new();
        for _ in 0..out * input / BLOCK {
            let d = f16::from_f32(0.001 + (next() % 1000) as f32 * 1e-5);
            data.extend(d.to_bits().to_le_bytes());
            for _ in 0..BLOCK {
                data.push(((next() % 255) as i32 - 127) as i8 as u8);
            }
        }
        data
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

    /// The product as ggml defines it, computed directly from the ggml
    /// bytes in f64: the activations quantized per block, the integer sums,
    /// the scales. Each value comes with the sum of its terms' magnitudes,
    /// which bounds the rounding of an f32 sum of them.
    fn reference(data: &[u8], out: usize, input: usize, x: &[f32]) -> Vec<(f64, f64)> {
        let blocks = input / BLOCK;
        (0..out)
            .map(|j| {
                let (mut y, mut magnitude) = (0f64, 0f64);
                for b in 0..blocks {
                    let xs = &x[b * BLOCK..][..BLOCK];
                    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let block = &data[(j * blocks + b) * BLOCK_BYTES..][..BLOCK_BYTES];
                    let dw = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
                    let sum: i64 = xs
                        .iter()
                        .zip(&block[2..])
                        .map(|(&v, &w)| (v * inv).round() as i64 * (w as i8) as i64)
                        .sum();
                    let term = dw as f64 * f16::from_f32(d).to_f32() as f64 * sum as f64;
                    y += term;
                    magnitude += term.abs();
                }
                (y, magnitude)
            })
            .collect()
    }

    fn variants() -> Vec<Variant> {
        super::variants()
    }

    #[test]
    fn every_variant_matches_ggmls_definition_on_ragged_shapes() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        // Inputs of 1, 15, 16, 17, 28 (qwen's 896) and 152 (its 4864) blocks;
        // outputs that leave 1..3 rows past the last four and the last task.
        for (out, blocks) in [(1, 1), (5, 15), (67, 16), (130, 17), (7, 28), (3, 152)] {
            let input = blocks * BLOCK;
            let data = ggml(out, input, &mut seed);
            let m = Q8Matrix::from_ggml(&data, out, input).unwrap();
            let x = activations(2 * input, &mut seed);
            let want: Vec<(f64, f64)> = x
                .chunks(input)
                .flat_map(|x| reference(&data, out, input, x))
                .collect();
            let mut results = Vec::new();
            for variant in variants() {
                let y = m.matvec_with(variant, &x, 2);
                for (i, (&got, &(want, magnitude))) in y.iter().zip(&want).enumerate() {
                    // Only the f32 products and sums of the block terms round.
                    assert!(
                        (got as f64 - want).abs() <= 1e-6 * magnitude,
                        "{variant} {out}×{input} value {i}: {got} against {want}"
                    );
                }
                results.push(y);
            }
            // The two AVX-512 variants compute the same integers in the same order.
            if results.len() == 3 {
                assert_eq!(
                    results[0], results[1],
                    "VNNI and BW differ at {out}×{input}"
                );
            }
        }
    }

    #[test]
    fn extreme_activations_and_weights_do_not_overflow() {
        // Every activation at ±127 steps and every weight at ±127: the
        // largest products, of alternating signs, and the BW variant's i16
        // pair sums at their largest (2 · 127 · 127).
        let (out, input) = (4, 64 * BLOCK);
        let mut data = Vec::new();
        for j in 0..out * input / BLOCK {
            data.extend(f16::from_f32(1.0).to_bits().to_le_bytes());
            for k in 0..BLOCK {
                data.push(if (j + k) % 3 == 0 {
                    127u8
                } else {
                    (-127i8) as u8
                });
            }
        }
        let m = Q8Matrix::from_ggml(&data, out, input).unwrap();
        let x: Vec<f32> = (0..input)
            .map(|k| if k % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let want = reference(&data, out, input, &x);
        for variant in variants() {
            let y = m.matvec_with(variant, &x, 1);
            for (&got, &(want, magnitude)) in y.iter().zip(&want) {
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * magnitude,
                    "{variant}: {got} against {want}"
                );
            }
        }
    }

    #[test]
    fn zero_and_non_finite_activations() {
        let mut seed = 7u64;
        let (out, input) = (9, 40 * BLOCK);
        let data = ggml(out, input, &mut seed);
        let m = Q8Matrix::from_ggml(&data, out, input).unwrap();
        for variant in variants() {
            assert!(
                m.matvec_with(variant, &vec![0.0; input], 1)
                    .iter()
                    .all(|&v| v == 0.0)
            );
            let mut x = activations(input, &mut seed);
            x[100] = f32::NAN;
            assert!(
                m.matvec_with(variant, &x, 1).iter().all(|v| v.is_nan()),
                "{variant}"
            );
        }
    }

    #[test]
    fn reading_in_pieces_gives_the_same_matrix() {
        let mut seed = 5u64;
        // More rows than one read holds, and not a whole number of reads.
        let input = 28 * BLOCK;
        let out = READ_BYTES / (28 * BLOCK_BYTES) * 2 + 37;
        let data = ggml(out, input, &mut seed);
        let whole = Q8Matrix::from_ggml(&data, out, input).unwrap();
        let read = Q8Matrix::read_ggml(&mut std::io::Cursor::new(&data), out, input).unwrap();
        assert_eq!(
            (
                whole.quants[..] == read.quants[..],
                whole.scales[..] == read.scales[..]
            ),
            (true, true)
        );
        let x = activations(input, &mut seed);
        let want = reference(&data, out, input, &x);
        for (&got, &(want, magnitude)) in read.matvec(&x, 1).iter().zip(&want) {
            assert!(
                (got as f64 - want).abs() <= 1e-6 * magnitude,
                "{got} against {want}"
            );
        }
        // A short file is an error, not a partial matrix.
        let short = Q8Matrix::read_ggml(&mut &data[..data.len() - 1], out, input);
        assert!(short.is_err());
    }

    #[test]
    fn malformed_data_is_refused() {
        assert!(Q8Matrix::from_ggml(&[0; BLOCK_BYTES], 1, 31).is_err());
        assert!(Q8Matrix::from_ggml(&[0; BLOCK_BYTES], 2, 32).is_err());
        let a = Q8Matrix::from_ggml(&[0; BLOCK_BYTES], 1, 32).unwrap();
        let b = Q8Matrix::from_ggml(&[0; 2 * BLOCK_BYTES], 1, 64).unwrap();
        assert!(Q8Matrix::concat(vec![a, b]).is_err());
        assert!(Q8Matrix::concat(Vec::new()).is_err());
    }

    #[test]
    fn concatenated_rows_give_the_parts_products() {
        let mut seed = 11u64;
        let input = 28 * BLOCK;
        let (d1, d2) = (ggml(6, input, &mut seed), ggml(3, input, &mut seed));
        let x = activations(input, &mut seed);
        let one = Q8Matrix::from_ggml(&d1, 6, input).unwrap().matvec(&x, 1);
        let two = Q8Matrix::from_ggml(&d2, 3, input).unwrap().matvec(&x, 1);
        let both = Q8Matrix::concat(vec![
            Q8Matrix::from_ggml(&d1, 6, input).unwrap(),
            Q8Matrix::from_ggml(&d2, 3, input).unwrap(),
        ])
        .unwrap();
        assert_eq!(both.out(), 9);
        assert_eq!(both.matvec(&x, 1), [one, two].concat());
        // The same parts read into one matrix, the second first, as the
        // generator's loader does.
        let mut into = Q8Matrix::zeroed(9, input).unwrap();
        into.read_rows(6, 3, &mut &d2[..]).unwrap();
        into.read_rows(0, 6, &mut &d1[..]).unwrap();
        assert_eq!(into.quants[..], both.quants[..]);
        assert_eq!(into.scales[..], both.scales[..]);
        assert!(
            into.read_rows(8, 2, &mut &d2[..]).is_err(),
            "past the last row"
        );
        assert!(
            into.read_rows(0, 6, &mut &d1[..d1.len() - 1]).is_err(),
            "a short reader"
        );
        assert!(Q8Matrix::zeroed(1, 31).is_err());
        // Stored (after 5 bytes of something else) and mapped back.
        let (bytes, short) = crate::stored_file(5, &both.stored());
        let len = bytes.len();
        let (mut mapped, end) = Q8Matrix::from_stored(9, input, bytes, 5).unwrap();
        assert_eq!(end, len);
        assert!(matches!(mapped.scales, Stored::Shared { .. }));
        assert_eq!(mapped.matvec(&x, 1), both.matvec(&x, 1));
        assert!(
            mapped.read_rows(0, 6, &mut &d1[..]).is_err(),
            "mapped is read-only"
        );
        assert!(Q8Matrix::from_stored(9, input, short, 5).is_none());
    }
}
