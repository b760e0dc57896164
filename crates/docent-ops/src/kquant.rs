//! What decoding's products on ggml's k-quant formats share ([`crate::q4k`]
//! for `Q4_K`, [`crate::q6k`] for `Q6_K`): reading a matrix's super-blocks
//! into the kernel's layout, concatenating matrices, quantizing the
//! activations as ggml's `Q8_K` does, and splitting the outputs across
//! candle's pool. Each format supplies its unpacking of a super-block,
//! where the activations go, and its kernels.
//!
//! **The activations.** Per super-block of 256 values, ggml's
//! `quantize_row_q8_K`: `xq = round(−127 / max · x)` (at most 127), with
//! `max` the value of largest magnitude and its sign, and `dx = 1 / that
//! scale`. A format lays `xq` out in the order its quants come in, and
//! gets the sums of `xq` over the groups its scales cover, in 16 lanes per
//! super-block.

use crate::int8::{Simd, Variant};
use crate::panels::Stored;
use crate::q8::par_outputs;
use rayon::prelude::*;
use std::marker::PhantomData;

/// Weights per super-block.
pub const SUPER: usize = 256;
/// Bytes [`KMatrix::read_ggml`] reads at a time.
const READ_BYTES: usize = 1 << 19;

/// One of ggml's k-quant formats, as docent's kernels run it.
pub trait Format: Send + Sync + 'static {
    /// ggml's name of the format, for errors.
    const NAME: &'static str;
    /// Bytes of one ggml super-block.
    const BLOCK_BYTES: usize;
    /// Bytes of quants per super-block in the kernel's layout.
    const QUANTS: usize;
    /// Scale floats per super-block.
    const D: usize;

    /// Splits one ggml super-block into `QUANTS` bytes of quants, 16
    /// bytes of scales and `D` floats.
    fn unpack(block: &[u8], quants: &mut [u8], scales: &mut [u8], d: &mut [f32]);

    /// Where activation `k` of a super-block goes in the kernel's layout.
    fn slot(k: usize) -> usize;

    /// Which of a super-block's 16 sum lanes activation `k` adds to.
    fn sum_lane(k: usize) -> usize;

    /// `y` for the rows of `w`, `supers` super-blocks each, in portable
    /// code.
    fn portable_rows(a: &Activations, w: &Weights<'_>, supers: usize, y: &mut [f32]);

    /// The same on AVX-512: one row per call of a micro-kernel
    /// ([`simd::rows`]).
    #[cfg(target_arch = "x86_64")]
    const KERNELS: simd::MicroKernels;
}

/// A weight matrix of shape (out, in) in format `F`, for
/// [`KMatrix::matvec`].
pub struct KMatrix<F> {
    out: usize,
    input: usize,
    /// Row `j`'s super-block `s` at `(j · supers + s) · F::QUANTS`.
    quants: Stored<u8>,
    /// At `(j · supers + s) · 16`.
    scales: Stored<u8>,
    /// At `(j · supers + s) · F::D`.
    d: Stored<f32>,
    format: PhantomData<F>,
}

/// Activations quantized per super-block, laid out for a format's kernel.
pub struct Activations {
    /// Per super-block, `xq` at [`Format::slot`].
    pub(crate) q: Vec<i8>,
    /// Per super-block, 16 lanes of sums of `xq` ([`Format::sum_lane`]).
    pub(crate) sums: Vec<i32>,
    /// Per super-block, `dx` (NaN where the input was not finite).
    pub(crate) scales: Vec<f32>,
}

/// Consecutive rows of a [`KMatrix`].
pub struct Weights<'a> {
    pub(crate) quants: &'a [u8],
    pub(crate) scales: &'a [u8],
    pub(crate) d: &'a [f32],
}

impl<F: Format> KMatrix<F> {
    /// Reads ggml data of shape (out, in): rows of super-blocks. Fails if
    /// `input` is not whole super-blocks or `data` is not `out` rows of
    /// them.
    pub fn from_ggml(data: &[u8], out: usize, input: usize) -> Result<Self, String> {
        let row = Self::row_bytes(input)?;
        if data.len() != out * row {
            return Err(format!(
                "{} bytes are not {out} {} rows of {input}",
                data.len(),
                F::NAME
            ));
        }
        Self::read_ggml(&mut &data[..], out, input).map_err(|e| e.to_string())
    }

    /// [`KMatrix::from_ggml`] on `out` rows read from `reader`, a few
    /// hundred kilobytes at a time.
    pub fn read_ggml(
        reader: &mut impl std::io::Read,
        out: usize,
        input: usize,
    ) -> std::io::Result<Self> {
        let mut matrix = Self::zeroed(out, input).map_err(std::io::Error::other)?;
        matrix.read_rows(0, out, reader)?;
        Ok(matrix)
    }

    /// `out` rows of `input` values, all zero, for [`KMatrix::read_rows`]
    /// to fill: several ggml matrices read into one, where
    /// concatenating matrices read apart would copy them all again into
    /// fresh memory.
    pub fn zeroed(out: usize, input: usize) -> Result<Self, String> {
        Self::row_bytes(input)?;
        let supers = input / SUPER;
        Ok(KMatrix {
            out,
            input,
            quants: Stored::Owned(vec![0u8; out * supers * F::QUANTS]),
            scales: Stored::Owned(vec![0u8; out * supers * 16]),
            d: Stored::Owned(vec![0f32; out * supers * F::D]),
            format: PhantomData,
        })
    }

    /// Reads ggml rows `first..first + out` of this matrix from `reader`, a
    /// few hundred kilobytes at a time. An error if the matrix has fewer
    /// than `first + out` rows.
    pub fn read_rows(
        &mut self,
        first: usize,
        out: usize,
        reader: &mut impl std::io::Read,
    ) -> std::io::Result<()> {
        crate::q8::rows_fit(first, out, self.out, F::NAME)?;
        let row = Self::row_bytes(self.input).map_err(std::io::Error::other)?;
        let supers = self.input / SUPER;
        let rows = |per: usize| first * supers * per..(first + out) * supers * per;
        let (Some(quants), Some(scales), Some(d)) = (
            self.quants.owned_mut(),
            self.scales.owned_mut(),
            self.d.owned_mut(),
        ) else {
            return Err(std::io::Error::other("a mapped matrix is read-only"));
        };
        let chunk_rows = (READ_BYTES / row).max(1);
        let mut buffer = vec![0u8; chunk_rows * row];
        for ((q, s), d) in quants[rows(F::QUANTS)]
            .chunks_mut(chunk_rows * supers * F::QUANTS)
            .zip(scales[rows(16)].chunks_mut(chunk_rows * supers * 16))
            .zip(d[rows(F::D)].chunks_mut(chunk_rows * supers * F::D))
        {
            let data = &mut buffer[..q.len() / F::QUANTS * F::BLOCK_BYTES];
            reader.read_exact(data)?;
            q.par_chunks_mut(F::QUANTS)
                .zip(s.par_chunks_mut(16))
                .zip(d.par_chunks_mut(F::D))
                .zip(data.par_chunks(F::BLOCK_BYTES))
                .for_each(|(((q, s), d), block)| F::unpack(block, q, s, d));
        }
        Ok(())
    }

    /// Bytes of one ggml row of `input` values.
    fn row_bytes(input: usize) -> Result<usize, String> {
        if input == 0 || !input.is_multiple_of(SUPER) {
            return Err(format!(
                "rows of {input} are not whole {} super-blocks of {SUPER}",
                F::NAME
            ));
        }
        Ok(input / SUPER * F::BLOCK_BYTES)
    }

    /// The rows of several matrices with the same input, one after another:
    /// the reference the tests hold [`KMatrix::read_rows`] into one matrix to.
    #[cfg(test)]
    pub(crate) fn concat(parts: Vec<Self>) -> Result<Self, String> {
        let input = crate::q8::shared_input(parts.iter().map(|p| p.input))?;
        let mut quants = Vec::with_capacity(parts.iter().map(|p| p.quants.len()).sum());
        let mut scales = Vec::with_capacity(parts.iter().map(|p| p.scales.len()).sum());
        let mut d = Vec::with_capacity(parts.iter().map(|p| p.d.len()).sum());
        let mut out = 0;
        for p in parts {
            out += p.out;
            quants.extend_from_slice(&p.quants);
            scales.extend_from_slice(&p.scales);
            d.extend_from_slice(&p.d);
        }
        Ok(KMatrix {
            out,
            input,
            quants: Stored::Owned(quants),
            scales: Stored::Owned(scales),
            d: Stored::Owned(d),
            format: PhantomData,
        })
    }

    /// The matrix's three arrays (quants, scales, `d`) as bytes, in the
    /// order [`KMatrix::from_stored`] takes them back.
    pub fn stored(&self) -> [&[u8]; 3] {
        [&self.quants, &self.scales, bytemuck::cast_slice(&self.d)]
    }

    /// A matrix of `out` rows of `input` values over `bytes`, whose arrays
    /// [`KMatrix::stored`] wrote one after another from `offset`, each
    /// starting at a multiple of [`crate::STORED_ALIGN`] bytes, and where
    /// its last array ends; `None` if they do not fit there.
    pub fn from_stored(
        out: usize,
        input: usize,
        bytes: crate::bf16::SharedBytes,
        offset: usize,
    ) -> Option<(Self, usize)> {
        Self::row_bytes(input).ok()?;
        let values = out.checked_mul(input / SUPER)?;
        let (quants, at) = crate::stored_at(&bytes, offset, values.checked_mul(F::QUANTS)?)?;
        let (scales, at) = crate::stored_at(&bytes, at, values.checked_mul(16)?)?;
        let (d, end) = crate::stored_at(&bytes, at, values.checked_mul(F::D)?)?;
        Some((
            KMatrix {
                out,
                input,
                quants,
                scales,
                d,
                format: PhantomData,
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
        self.quants.len() + self.scales.len() + 4 * self.d.len()
    }

    /// Quantizes `x` (one row of `input` values) as ggml's
    /// `quantize_row_q8_K` does, into the format's layout.
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
            if !xs.iter().all(|v| v.is_finite()) {
                scales[s] = f32::NAN;
                continue;
            }
            if max == 0.0 {
                continue;
            }
            let inverse = -127.0 / max;
            scales[s] = 1.0 / inverse;
            let (q, sums) = (&mut q[s * SUPER..][..SUPER], &mut sums[s * 16..][..16]);
            for (k, &v) in xs.iter().enumerate() {
                let v = ((inverse * v).round() as i32).min(127);
                q[F::slot(k)] = v as i8;
                sums[F::sum_lane(k)] += v;
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
        let simd = Simd::new(variant);
        let mut y = Vec::with_capacity(rows * self.out);
        for x in x.chunks_exact(self.input) {
            let a = self.quantize(x);
            y.extend(par_outputs(self.out, |first, out| {
                let at = first * supers;
                let n = out.len() * supers;
                let w = Weights {
                    quants: &self.quants[at * F::QUANTS..(at + n) * F::QUANTS],
                    scales: &self.scales[at * 16..(at + n) * 16],
                    d: &self.d[at * F::D..(at + n) * F::D],
                };
                match simd {
                    #[cfg(target_arch = "x86_64")]
                    Some(simd) => simd::rows::<F>(simd, &a, &w, supers, out),
                    // No AVX-512 variant exists off x86-64.
                    _ => F::portable_rows(&a, &w, supers, out),
                }
            }));
        }
        y
    }

    /// [`KMatrix::matvec_with`] on the fastest variant this CPU has.
    pub fn matvec(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matvec_with(Variant::detect(), x, rows)
    }
}

/// What the formats' AVX-512 kernels share: a row's pointers, the loop over
/// rows with its bounds checks, and the unsigned × signed byte products.
#[allow(unsafe_code)]
pub mod simd {
    use super::{Activations, Format, SUPER, Weights};
    use crate::int8::{Simd, Variant};

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// One row of a matrix and the activations, for a micro-kernel: the
    /// row's first super-block's quants, scales and `d`, the end of the
    /// quants (prefetches stop there), and the activations' quants, sums
    /// and scales.
    #[derive(Clone, Copy)]
    pub struct Args {
        pub quants: *const u8,
        pub scales: *const u8,
        pub d: *const f32,
        pub end: *const u8,
        pub q: *const i8,
        pub sums: *const i32,
        pub dx: *const f32,
        pub supers: usize,
    }

    /// A format's micro-kernels: one row's output on VNNI and on BW.
    pub struct MicroKernels {
        pub vnni: unsafe fn(Args) -> f32,
        pub bw: unsafe fn(Args) -> f32,
    }

    /// The rows of `w` (`supers` super-blocks each), one output each, on
    /// `F`'s micro-kernel for `simd`'s variant.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn rows<F: Format>(
        simd: Simd,
        a: &Activations,
        w: &Weights<'_>,
        supers: usize,
        y: &mut [f32],
    ) {
        let n = y.len() * supers;
        assert!(w.quants.len() == n * F::QUANTS && w.scales.len() == n * 16);
        assert!(w.d.len() == n * F::D);
        assert!(a.q.len() == supers * SUPER && a.sums.len() == supers * 16);
        assert!(a.scales.len() == supers);
        let kernel = match simd.variant() {
            Variant::Amx | Variant::Vnni => F::KERNELS.vnni,
            _ => F::KERNELS.bw,
        };
        for (r, y) in y.iter_mut().enumerate() {
            let b = r * supers;
            let args = Args {
                quants: w.quants[b * F::QUANTS..].as_ptr(),
                scales: w.scales[b * 16..].as_ptr(),
                d: w.d[b * F::D..].as_ptr(),
                end: w.quants.as_ptr_range().end,
                q: a.q.as_ptr(),
                sums: a.sums.as_ptr(),
                dx: a.scales.as_ptr(),
                supers,
            };
            // SAFETY: `simd` proves the variant's CPU features, which the
            // micro-kernels of `F::KERNELS` require (VNNI's: F, BW and VNNI;
            // BW's: F and BW). The asserts above bound every read: for row
            // r < y.len() and super-block s < supers, the `F::QUANTS` quant
            // bytes, 16 scale bytes and `F::D` floats at index
            // r · supers + s of `w`, and the 256 bytes, 16 sums and 1 scale
            // at s of `a`. Prefetches past `end` are not issued.
            *y = unsafe { kernel(args) };
        }
    }

    /// `vpdpbusd`: four u8 (`w`) × s8 (64 bytes at `x`) products per lane,
    /// added to `sum`.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(crate) unsafe fn dot_vnni(sum: __m512i, w: __m512i, x: *const i8) -> __m512i {
        // SAFETY: the kernels read 64 bytes inside the activations.
        unsafe { _mm512_dpbusd_epi32(sum, w, _mm512_loadu_si512(x as *const __m512i)) }
    }

    /// The same sums on AVX-512 BW: pairs into i16, pairs of those into
    /// i32. The formats' quants are at most 63, so a pair is at most
    /// 2 · 63 · 128 and cannot saturate.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn dot_bw(sum: __m512i, w: __m512i, x: *const i8) -> __m512i {
        // SAFETY: as for `dot_vnni`.
        unsafe {
            let pairs = _mm512_maddubs_epi16(w, _mm512_loadu_si512(x as *const __m512i));
            _mm512_add_epi32(sum, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
        }
    }
}

/// What the formats' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Random ggml data of shape (out, input), written by candle's own
    /// quantizer from random weights.
    pub fn ggml(dtype: GgmlDType, out: usize, input: usize, seed: u64) -> Vec<u8> {
        let device = Device::Cpu;
        let w = Tensor::rand(-0.1f32, 0.1 + seed as f32 * 1e-3, (out, input), &device).unwrap();
        QTensor::quantize(&w, dtype)
            .unwrap()
            .data()
            .unwrap()
            .to_vec()
    }

    /// candle's product of the ggml data with `x` (`x.len() / input`
    /// rows).
    pub fn candle(dtype: GgmlDType, data: &[u8], out: usize, input: usize, x: &[f32]) -> Vec<f32> {
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
            dtype,
            data,
            vec![out, input],
            &Device::Cpu,
        )
        .unwrap();
        let x = Tensor::from_slice(x, (x.len() / input, input), &Device::Cpu).unwrap();
        QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    /// ggml's `Q8_K` quantization of one super-block in f64 terms: `xq` in
    /// order and `dx`, or `None` for an all-zero block.
    pub fn q8k(xs: &[f32]) -> Option<(Vec<i64>, f64)> {
        let max = xs
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        if max == 0.0 {
            return None;
        }
        let inverse = -127.0 / max;
        let xq = xs
            .iter()
            .map(|&v| ((inverse * v).round() as i64).min(127))
            .collect();
        Some((xq, (1.0 / inverse) as f64))
    }

    pub fn activations(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// Checks `got` against `want` (value, sum of its terms' magnitudes)
    /// within `tolerance` of the magnitudes.
    pub fn close(got: &[f32], want: &[(f64, f64)], tolerance: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (&got, &(want, magnitude))) in got.iter().zip(want).enumerate() {
            assert!(
                (got as f64 - want).abs() <= tolerance * magnitude,
                "{what} value {i}: {got} against {want}"
            );
        }
    }

    /// Every variant's products on ragged shapes against `reference` (the
    /// product as ggml defines it, 1e-6 of the terms' magnitudes) and
    /// candle's (1e-5; it quantizes the activations the same way), and VNNI
    /// and BW against each other. Inputs of 1, 2, 6 (qwen2.5-1.5b's 1536)
    /// and 35 (its 8960) super-blocks; outputs that end inside a task of 64
    /// rows.
    pub fn matches_definition_and_candle<F: Format>(
        dtype: GgmlDType,
        reference: impl Fn(&[u8], usize, usize, &[f32]) -> Vec<(f64, f64)>,
        mut seed: u64,
    ) {
        for (out, supers) in [(1, 1), (67, 2), (130, 6), (5, 35)] {
            let input = supers * SUPER;
            let data = ggml(dtype, out, input, seed % 7);
            let m = KMatrix::<F>::from_ggml(&data, out, input).unwrap();
            let x = activations(2 * input, &mut seed);
            let want: Vec<(f64, f64)> = x
                .chunks(input)
                .flat_map(|x| reference(&data, out, input, x))
                .collect();
            let theirs: Vec<(f64, f64)> = candle(dtype, &data, out, input, &x)
                .iter()
                .zip(&want)
                .map(|(&c, &(_, magnitude))| (c as f64, magnitude))
                .collect();
            let mut results = Vec::new();
            for variant in crate::q8::variants() {
                let y = m.matvec_with(variant, &x, 2);
                let what = format!("{} {variant} {out}×{input}", F::NAME);
                // Only the f32 products and sums of the terms round.
                close(&y, &want, 1e-6, &what);
                close(&y, &theirs, 1e-5, &format!("{what} against candle"));
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

    /// What every format's tests check beyond its products: reading in
    /// pieces, concatenation, zero and non-finite activations, and
    /// malformed data. `reference` is the product as ggml defines it.
    pub fn common<F: Format>(
        dtype: GgmlDType,
        reference: impl Fn(&[u8], usize, usize, &[f32]) -> Vec<(f64, f64)>,
    ) {
        let mut seed = 5u64;
        // More rows than one read holds, and not a whole number of reads.
        let input = 6 * SUPER;
        let row = input / SUPER * F::BLOCK_BYTES;
        let out = READ_BYTES / row * 2 + 37;
        let data = ggml(dtype, out, input, 1);
        let whole = KMatrix::<F>::from_ggml(&data, out, input).unwrap();
        let x = activations(input, &mut seed);
        close(
            &whole.matvec(&x, 1),
            &reference(&data, out, input, &x),
            1e-6,
            F::NAME,
        );
        let short = KMatrix::<F>::read_ggml(&mut &data[..data.len() - 1], out, input);
        assert!(short.is_err(), "a short file is an error");
        // Two parts give the whole's products.
        let parts = vec![
            KMatrix::<F>::from_ggml(&data[..100 * row], 100, input).unwrap(),
            KMatrix::<F>::from_ggml(&data[100 * row..], out - 100, input).unwrap(),
        ];
        let both = KMatrix::concat(parts).unwrap();
        assert_eq!(both.out(), out);
        assert_eq!(both.matvec(&x, 1), whole.matvec(&x, 1));
        assert!(KMatrix::<F>::from_ggml(&data[..row], 1, input - 32).is_err());
        assert!(KMatrix::<F>::from_ggml(&data[..row], 2, input).is_err());
        assert!(KMatrix::<F>::concat(Vec::new()).is_err());
        // The same two parts read into one matrix (the second first, and
        // past the end of a read), as the generator's loader does.
        let mut into = KMatrix::<F>::zeroed(out, input).unwrap();
        into.read_rows(100, out - 100, &mut &data[100 * row..])
            .unwrap();
        assert_ne!(
            into.matvec(&x, 1),
            whole.matvec(&x, 1),
            "rows 0..100 unread"
        );
        into.read_rows(0, 100, &mut &data[..100 * row]).unwrap();
        assert_eq!(into.quants[..], whole.quants[..]);
        assert_eq!(into.scales[..], whole.scales[..]);
        assert_eq!(into.d[..], whole.d[..]);
        assert!(
            into.read_rows(out - 1, 2, &mut &data[..]).is_err(),
            "past the last row"
        );
        assert!(
            into.read_rows(0, 2, &mut &data[..row]).is_err(),
            "a short reader"
        );
        assert!(KMatrix::<F>::zeroed(1, input - 32).is_err());
        // Stored (as a cache file holds it, after 3 bytes of something
        // else) and mapped back: the same products; read-only; a stretch
        // too short is refused.
        let (bytes, short) = crate::stored_file(3, &whole.stored());
        let len = bytes.len();
        let (mut mapped, end) = KMatrix::<F>::from_stored(out, input, bytes, 3).unwrap();
        assert_eq!(end, len);
        assert!(matches!(mapped.quants, Stored::Shared { .. }));
        assert_eq!(mapped.matvec(&x, 1), whole.matvec(&x, 1));
        assert!(
            mapped.read_rows(0, 1, &mut &data[..]).is_err(),
            "mapped is read-only"
        );
        assert!(KMatrix::<F>::from_stored(out, input, short, 3).is_none());
        // Zero activations give zeros; a non-finite one, NaN.
        let small = KMatrix::<F>::from_ggml(&data[..9 * row], 9, input).unwrap();
        for variant in crate::q8::variants() {
            assert!(
                small
                    .matvec_with(variant, &vec![0.0; input], 1)
                    .iter()
                    .all(|&v| v == 0.0),
                "{variant}"
            );
            let mut x = activations(input, &mut seed);
            x[300] = f32::INFINITY;
            assert!(
                small.matvec_with(variant, &x, 1).iter().all(|v| v.is_nan()),
                "{variant}"
            );
        }
    }
}
