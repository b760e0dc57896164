//! An int8 matrix product with exact i32 sums: AMX-INT8 tiles (`tdpbusd`)
//! where the CPU has them (Intel Xeon since Sapphire Rapids), AVX-512 VNNI
//! (`vpdpbusd`, u8 × s8 → s32) where it has that, AVX-VNNI (the same
//! instruction on 256-bit registers, Intel client cores since Alder Lake),
//! AVX-512 BW (`vpmaddubsw` then `vpmaddwd`) where there is no VNNI, AVX2
//! (the same on 256-bit registers) where there is no AVX-512, and portable
//! integer code elsewhere.
//!
//! **Weights**, `W` of shape (out, in) as PyTorch and GGUF store them, are
//! quantized once, at load, symmetrically per output column:
//! `sw_j = max_k |W_jk| / 127` and `wq_jk = round(W_jk / sw_j)` in
//! [-127, 127] ([`WeightBits::Eight`]), or to [-63, 63] with
//! `sw_j = max_k |W_jk| / 63` ([`WeightBits::Seven`]). They are packed into panels of [`PANEL`] output columns:
//! for each group of four input positions `4g..4g+4`, a column's four
//! values sit in one 32-bit word, which is what `vpdpbusd` multiplies with
//! a broadcast group of four activations. The input is padded to a
//! multiple of four with zero weights. Each column keeps its scale and the
//! sum of its quantized weights.
//!
//! **Activations** are quantized per call, per row, asymmetrically with an
//! integer zero point (as ONNX and PyTorch do): the row's range `[lo, hi]`,
//! widened to include 0, is cut into `L` steps of `s = (hi − lo) / L`, the
//! zero point is `z = round(−lo / s)`, and `xq = round(x / s) + z` in
//! `[0, L]`, so `x ≈ s · (xq − z)` and 0 is exact. `L` is 255 (8 bits) for
//! VNNI (and AMX, AVX-VNNI) and the portable code, and **127 (7 bits) for
//! the AVX-512 BW and AVX2 variants with 8-bit weights**: `vpmaddubsw` adds
//! two u8 × s8 products into an i16 with saturation, and 2 · 127 · 127 =
//! 32,258 fits where 2 · 255 · 127 = 64,770 would not. With 7-bit weights
//! 2 · 255 · 63 = 32,130 fits too, so those variants keep 8-bit
//! activations and coarser weights instead ([`WeightBits`]). With 7-bit
//! weights *and* 7-bit activations ([`Int8Matrix::with_7bit_activations`])
//! two groups' i16 pairs add up to at most 4 · 127 · 63 = 32,004, and
//! those kernels widen them to i32 once per eight inputs instead of per
//! four.
//!
//! **Output**: with `acc = Σ_k xq_k · wq_jk` (exact in i32),
//! `y_rj = (f32(acc − z_r · Σ_k wq_jk) · sw_j) · s_r`. The sums cannot
//! overflow: `|xq − z| ≤ 255` and `|wq| ≤ 127`, so every partial sum is
//! within 255 · 127 · in = 32,385 · in, below 2³¹ for in ≤ [`MAX_INPUT`]
//! (65,536). All the variants compute the same integers and the same
//! three f32 roundings, so for the same activation bits they agree to the
//! bit. Against the product of the dequantized operands the only error is
//! those roundings (under 2⁻²² relative); against the f32 product, the
//! quantization: at most `s/2 · Σ|w| + sw/2 · Σ|x|` per output (half a step
//! on each operand).
//!
//! A row or column with a NaN or an infinity gives NaN outputs; a row too
//! small to quantize (a range below about 1e-36) counts as zeros.
//!
//! **AMX** multiplies a tile of 16 rows × 64 activation bytes by a tile of
//! 16 groups × 16 columns of weight words, the panel layout above read
//! with a stride of one group: the packed weights serve both kernels. Its
//! activation rows are padded with zeros to whole tiles (64 bytes, 32
//! rows), so its last tile of weights may read past a panel into the next
//! (or into [`AMX_SLACK`] zero words at the end), where every product is 0.
//!
//! The `unsafe` code is in the `kernel` module: the intrinsics and the raw
//! pointers of the micro-kernels and of the activation quantization. Its
//! safe entry points check shapes, and take a token that only
//! [`Variant::supported`] hands out as proof of the CPU features.

use crate::panels::{SharedBytes, Words};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Output columns per packed panel: two 16-lane registers.
pub const PANEL: usize = 32;

/// Rows of the activation tile kept in registers: 12 rows × 2 registers =
/// 24 accumulators, plus the two weight registers, the broadcast and (BW)
/// the ones and a temporary: 29 of the 32 (BW's pairs kernel, with two
/// groups' weights and broadcasts, all 32). Measured on one core of the AMD
/// EPYC (noisy: another job ran), 512 × 896 → 896: 12 rows gave 163–174
/// GMAC/s against 135–152 for 8 (VNNI), and 91–94 against 72–86 (BW).
const TILE_ROWS: usize = 12;

/// Rows of the activation tile of the 256-bit variants, which have 16
/// registers: at most 3 rows × 4 registers = 12 accumulators, and the
/// three broadcast rows. AVX-VNNI uses 3; AVX2, whose `vpmaddubsw` and
/// `vpmaddwd` need a temporary and the ones too, 2. Measured on the Xeon
/// with AMX (`cargo bench -p docent-ops --bench matmul`, 9 repetitions,
/// the seven shapes): AVX-VNNI 490–625 GFLOP/s with 3 rows, 470–527 with
/// 2, 260–360 with 4; AVX2 290–336 with 2, 260–298 with 3, 230–258 with 4.
const YMM_ROWS: usize = 3;

/// Rows per tile of the AVX2 variant (see [`YMM_ROWS`]).
const AVX2_ROWS: usize = 2;

/// Rows per cache block, a multiple of [`TILE_ROWS`]: a block's quantized
/// activations (≤ 72 × 4864 bytes) stay in L2 while every panel passes
/// over them.
const BLOCK_ROWS: usize = 72;

/// Rows of one AMX product: two 16-row tiles of activations.
const AMX_ROWS: usize = crate::amx::ROWS;

/// Input bytes of one AMX tile row (16 groups of four).
const AMX_DEPTH: usize = crate::amx::DEPTH_BYTES;

/// Words read past the end of the last panel by the AMX kernel, whose last
/// tile of weights may reach up to 15 groups beyond a panel (they meet
/// activations that are zero there): the packed weights end with this many
/// zero words.
const AMX_SLACK: usize = 15 * PANEL;

/// The largest input size: the i32 sums stay below 32,385 · 65,536 < 2³¹.
pub const MAX_INPUT: usize = 65_536;

/// Which code computes the integer sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// AMX-INT8 tiles (`tdpbusd`, a 16 × 64 by 64 × 16 byte product per
    /// instruction) for the sums, AVX-512 VNNI for the rest: 8-bit
    /// activations and the same integers, so the same outputs, as
    /// [`Variant::Vnni`]. Needs the kernel's permission to use the tile
    /// registers, which [`Variant::supported`] asks for once.
    Amx,
    /// AVX-512 VNNI: `vpdpbusd`, 8-bit activations.
    Vnni,
    /// AVX-512 BW without VNNI: `vpmaddubsw` + `vpmaddwd` + `vpaddd`,
    /// 7-bit activations (see the module documentation).
    Avx512Bw,
    /// AVX-VNNI without AVX-512 (Intel client cores since Alder Lake):
    /// `vpdpbusd` on 256-bit registers, 8-bit activations, the same
    /// integers as [`Variant::Vnni`].
    AvxVnni,
    /// AVX2 alone (x86-64-v3, docent's baseline): `vpmaddubsw` +
    /// `vpmaddwd` + `vpaddd` on 256-bit registers, 7-bit activations as
    /// [`Variant::Avx512Bw`].
    Avx2,
    /// Plain Rust (vectorised by the compiler for the build's target),
    /// 8-bit activations: the same results as [`Variant::Vnni`], slower.
    Portable,
}

impl Variant {
    /// The fastest variant this CPU runs, detected once. The environment
    /// variable `DOCENT_INT8_VARIANT` (`amx-int8`, `avx512-vnni`,
    /// `avx512-bw`, `avx-vnni`, `avx2` or `portable`) picks a slower one
    /// instead, to measure on one machine what a CPU without AMX, VNNI or
    /// AVX-512 runs; a variant this CPU lacks is ignored.
    pub fn detect() -> Variant {
        static DETECTED: OnceLock<Variant> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let asked = std::env::var("DOCENT_INT8_VARIANT").ok();
            let all = Variant::all_supported();
            all.iter()
                .find(|v| asked.as_deref() == Some(v.as_str()))
                .or(all.first())
                .copied()
                .unwrap_or(Variant::Portable)
        })
    }

    /// Every variant this CPU runs, fastest first (the portable one last).
    pub fn all_supported() -> Vec<Variant> {
        [
            Variant::Amx,
            Variant::Vnni,
            // AVX-VNNI before AVX-512 BW: faster on the one CPU that has
            // both (the Xeon with AMX: 490–645 against 394–447 GFLOP/s in
            // `cargo bench -p docent-ops --bench matmul`), and 8-bit.
            Variant::AvxVnni,
            Variant::Avx512Bw,
            Variant::Avx2,
            Variant::Portable,
        ]
        .into_iter()
        .filter(|v| v.supported())
        .collect()
    }

    /// Whether this CPU has the instructions of the variant.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Variant::Amx => Variant::Vnni.supported() && crate::amx::support().int8,
                // Every CPU with VNNI has BW; requiring it lets the Q8_0
                // kernel's VNNI variant use BW's byte operations too.
                Variant::Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                Variant::Avx512Bw => has!("avx512f") && has!("avx512bw"),
                Variant::AvxVnni => has!("avx2") && has!("avxvnni"),
                Variant::Avx2 => has!("avx2"),
                Variant::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Variant::Portable
        }
    }

    /// Steps of the activation quantization: 255, or 127 where
    /// `vpmaddubsw` would saturate on 8-bit activations.
    pub fn levels(self) -> u8 {
        match self {
            Variant::Avx512Bw | Variant::Avx2 => 127,
            Variant::Amx | Variant::Vnni | Variant::AvxVnni | Variant::Portable => 255,
        }
    }

    /// Whether the variant has VNNI's instructions (and 8-bit
    /// activations): VNNI itself, AMX, which needs it, and AVX-VNNI.
    pub fn has_vnni(self) -> bool {
        matches!(self, Variant::Amx | Variant::Vnni | Variant::AvxVnni)
    }

    /// Whether the variant runs on AVX-512 registers (and so has a
    /// [`Simd`] token, which the `Q8_0` decoding kernel needs too).
    pub fn is_avx512(self) -> bool {
        matches!(self, Variant::Amx | Variant::Vnni | Variant::Avx512Bw)
    }

    /// Output rows per tile, the granularity of a thread's share.
    fn tile_rows(self) -> usize {
        match self {
            Variant::Amx => AMX_ROWS,
            Variant::AvxVnni => YMM_ROWS,
            Variant::Avx2 => AVX2_ROWS,
            _ => TILE_ROWS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Amx => "amx-int8",
            Variant::Vnni => "avx512-vnni",
            Variant::Avx512Bw => "avx512-bw",
            Variant::AvxVnni => "avx-vnni",
            Variant::Avx2 => "avx2",
            Variant::Portable => "portable",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether this CPU runs a SIMD int8 kernel (AVX-512 or AVX2), detected
/// once at run time. Without one, [`Int8Matrix`] still works, on portable
/// code.
pub fn available() -> bool {
    Variant::detect() != Variant::Portable
}

/// The smallest and largest value of `x` and 0, and whether all of `x` is
/// finite, in sixteen lanes so the loop vectorises.
fn range(x: &[f32]) -> (f32, f32, bool) {
    let (mut lo, mut hi, mut bad) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    // Plain comparisons (`vminps`, `vmaxps`): how they treat NaN does not
    // matter, `bad` catches it.
    let step = |i: usize, v: f32, lo: &mut [f32; 16], hi: &mut [f32; 16], bad: &mut [f32; 16]| {
        lo[i] = if v < lo[i] { v } else { lo[i] };
        hi[i] = if v > hi[i] { v } else { hi[i] };
        // 0 for finite values, NaN for NaN and infinities.
        bad[i] += v * 0.0;
    };
    for chunk in chunks {
        for (i, &v) in chunk.iter().enumerate() {
            step(i, v, &mut lo, &mut hi, &mut bad);
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        step(i, v, &mut lo, &mut hi, &mut bad);
    }
    let lo = lo.into_iter().fold(0f32, f32::min);
    let hi = hi.into_iter().fold(0f32, f32::max);
    (lo, hi, bad.into_iter().sum::<f32>() == 0.0)
}

/// [`range`], on AVX-512 when `simd` is given (the same result).
fn range_on(simd: Option<kernel::Simd>, x: &[f32]) -> (f32, f32, bool) {
    match simd {
        Some(simd) => kernel::range(simd, x),
        None => range(x),
    }
}

/// Quantizes one row of activations to `levels` steps with a zero point
/// (see the module documentation): writes `q` (`x` followed by zeros up to
/// `q.len()`) and returns the step `s` and the zero point `z`, so that
/// `x ≈ s · (q − z)`. A non-finite row gets a NaN step. With `simd`, the
/// loops run on AVX-512, with the same results. With `fixed`, the range
/// (and finiteness) is that of a larger tensor the row belongs to
/// ([`Activations::PerTensor`]) instead of the row's own.
fn quantize_row(
    x: &[f32],
    levels: u8,
    q: &mut [u8],
    simd: Option<kernel::Simd>,
    fixed: Option<(f32, f32, bool)>,
) -> (f32, i32) {
    let (head, tail) = q.split_at_mut(x.len());
    tail.fill(0);
    let (lo, hi, finite) = fixed.unwrap_or_else(|| range_on(simd, x));
    let span = hi - lo;
    let top = levels as f32;
    let inv = top / span;
    if !finite || !span.is_finite() {
        head.fill(0);
        return (f32::NAN, 0);
    }
    if !inv.is_finite() {
        // All zeros, or so close to zero that the step would be subnormal.
        head.fill(0);
        return (0.0, 0);
    }
    let zero = (-lo * inv).round_ties_even().clamp(0.0, top);
    if let Some(simd) = simd {
        kernel::quantize(simd, x, inv, zero, top, head);
    } else {
        // Adding 2²³ to a value in [0, 256) rounds it to an integer (to
        // nearest, ties to even, as `vcvtps2dq`) in the low mantissa bits,
        // where a bit cast reads it: this vectorises, `as u8` did not.
        const ROUND: f32 = 8_388_608.0;
        for (q, &v) in head.iter_mut().zip(x) {
            *q = ((v * inv + zero).clamp(0.0, top) + ROUND).to_bits() as u8;
        }
    }
    (span / top, zero as i32)
}

/// Quantized activations: rows of `stride` bytes, with each row's zero
/// point and step.
struct Rows<'a> {
    q: &'a [u8],
    stride: usize,
    zero: &'a [i32],
    scale: &'a [f32],
}

/// One packed panel: `groups · PANEL` words, and the [`PANEL`] columns'
/// sums of quantized weights and scales.
struct Panel<'a> {
    words: &'a [u32],
    sums: &'a [i32],
    scales: &'a [f32],
    /// Whether two groups' `vpmaddubsw` pairs may be added in i16 before
    /// widening: weights within ±63 and activations within 127, so four
    /// products reach at most 4 · 127 · 63 = 32,004.
    pairs: bool,
}

/// The output value of one sum: `(f32(acc − z · sum) · sw) · s`, in the
/// order the AVX-512 kernels compute it.
#[inline]
fn output(acc: i32, zero: i32, sum: i32, wscale: f32, scale: f32) -> f32 {
    (acc.wrapping_sub(zero.wrapping_mul(sum)) as f32 * wscale) * scale
}

/// The portable micro-kernel, with [`kernel::tile`]'s contract.
#[allow(clippy::too_many_arguments)]
fn portable_tile(
    a: &Rows,
    p: &Panel,
    c: &mut [MaybeUninit<f32>],
    c_stride: usize,
    rows: usize,
    columns: usize,
    finish: impl FnMut(usize, &mut [f32]),
) {
    let mut acc = [[0i32; PANEL]; TILE_ROWS];
    for (g, words) in p.words.chunks_exact(PANEL).enumerate() {
        // The four signed bytes of each word, sign-extended.
        let mut b = [[0i32; PANEL]; 4];
        for (col, &w) in words.iter().enumerate() {
            let w = w as i32;
            b[0][col] = (w << 24) >> 24;
            b[1][col] = (w << 16) >> 24;
            b[2][col] = (w << 8) >> 24;
            b[3][col] = w >> 24;
        }
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let x = &a.q[r * a.stride + 4 * g..][..4];
            let x = [x[0] as i32, x[1] as i32, x[2] as i32, x[3] as i32];
            for col in 0..PANEL {
                acc[col] +=
                    x[0] * b[0][col] + x[1] * b[1][col] + x[2] * b[2][col] + x[3] * b[3][col];
            }
        }
    }
    store_array(&acc[..rows], a, p, c, c_stride, columns, finish);
}

/// The outputs of the sums `acc` (one row of [`PANEL`] per activation row
/// of `a`) with the panel `p`, through [`output`]: the first `columns`
/// values of each row, then `finish(r, values)`, into rows of `c`,
/// `c_stride` apart. The portable kernel ends here.
fn store_array(
    acc: &[[i32; PANEL]],
    a: &Rows,
    p: &Panel,
    c: &mut [MaybeUninit<f32>],
    c_stride: usize,
    columns: usize,
    mut finish: impl FnMut(usize, &mut [f32]),
) {
    for (r, acc) in acc.iter().enumerate() {
        let mut y = [0f32; PANEL];
        for col in 0..columns {
            y[col] = output(acc[col], a.zero[r], p.sums[col], p.scales[col], a.scale[r]);
        }
        finish(r, &mut y[..columns]);
        for (d, v) in c[r * c_stride..][..columns].iter_mut().zip(&y) {
            d.write(*v);
        }
    }
}

/// A weight matrix of shape (out, in), quantized to int8 per output column
/// and packed for [`Int8Matrix::matmul`].
pub struct Int8Matrix {
    out: usize,
    input: usize,
    /// Groups of four input positions: `input` rounded up to a multiple of
    /// four, divided by four.
    groups: usize,
    /// Panel `j`, group `g`, column `c` at `(j · groups + g) · PANEL + c`:
    /// the int8 weights of inputs `4g..4g+4`, the first in the low byte.
    /// Columns past `out` and inputs past `input` are zero, and so are the
    /// [`AMX_SLACK`] words at the end. Owned, or mapped from a cache file.
    packed: Words,
    /// Per column (padded to whole panels with 0): the scale `sw`.
    scales: Vec<f32>,
    /// Per column (padded with 0): the sum of the quantized weights.
    sums: Vec<i32>,
    /// How activations are quantized.
    activations: Activations,
    /// How finely the weights are quantized.
    bits: WeightBits,
    /// Activations in 127 steps on every variant
    /// ([`Int8Matrix::with_7bit_activations`]).
    narrow: bool,
}

/// How finely a matrix's weights are quantized, which decides how finely
/// the AVX-512 BW and AVX2 variants quantize its activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightBits {
    /// Integers in [-127, 127]; activations in the variant's steps
    /// ([`Variant::levels`]: 255, or 127 on AVX-512 BW and AVX2).
    #[default]
    Eight,
    /// Integers in [-63, 63]; activations in 255 steps on every variant
    /// (2 · 255 · 63 = 32,130 fits `vpmaddubsw`'s i16). For inputs with
    /// outlier channels, as a language model's hidden states have, a
    /// coarser weight step costs less than a coarser activation step.
    Seven,
}

impl WeightBits {
    /// The largest quantized weight.
    fn max(self) -> f32 {
        match self {
            WeightBits::Eight => 127.0,
            WeightBits::Seven => 63.0,
        }
    }

    /// Steps of the activation quantization on `variant`.
    pub fn activation_levels(self, variant: Variant) -> u8 {
        match self {
            WeightBits::Eight => variant.levels(),
            WeightBits::Seven => 255,
        }
    }

    /// The weights that keep activations at 8 bits on `variant`: 8-bit
    /// where it has VNNI (or is the portable code), 7-bit on AVX-512 BW
    /// and AVX2.
    pub fn for_8bit_activations(variant: Variant) -> WeightBits {
        if variant.levels() == 255 {
            WeightBits::Eight
        } else {
            WeightBits::Seven
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WeightBits::Eight => "8-bit weights",
            WeightBits::Seven => "7-bit weights",
        }
    }
}

/// How a product quantizes its activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activations {
    /// Each row on its own range: the most accurate.
    #[default]
    PerRow,
    /// Every row of one call on the range of the whole input, as ONNX's
    /// `DynamicQuantizeLinear` does. Models quantized dynamically by ONNX
    /// Runtime were calibrated this way, and computing them this way gives
    /// ONNX Runtime's integers exactly.
    PerTensor,
}

impl Int8Matrix {
    /// Quantizes and packs `weight`, row-major (out, in). Panics if the
    /// input is empty or longer than [`MAX_INPUT`].
    pub fn pack(weight: &[f32], out: usize, input: usize) -> Int8Matrix {
        Self::pack_with(weight, out, input, WeightBits::Eight)
    }

    /// [`Int8Matrix::pack`] with weights in `bits`' range.
    pub fn pack_with(weight: &[f32], out: usize, input: usize, bits: WeightBits) -> Int8Matrix {
        Self::pack_columns(weight, out, input, None, bits)
    }

    /// Packs a weight that was quantized elsewhere, as `W_jk = sw_j · q_jk`
    /// with integers `q_jk` in [-127, 127]: `weight` holds those products
    /// (an int8 ONNX model's weights dequantized, say) and `scales` the
    /// `sw_j`, one per output column. The integers are recovered exactly
    /// (`round(W_jk / sw_j)`), so the product uses the model's own int8
    /// weights. Panics on shapes as [`Int8Matrix::pack`] does, or if
    /// `scales` does not hold `out` values.
    pub fn pack_quantized(weight: &[f32], out: usize, input: usize, scales: &[f32]) -> Int8Matrix {
        assert_eq!(
            scales.len(),
            out,
            "{} scales for {out} columns",
            scales.len()
        );
        Self::pack_columns(weight, out, input, Some(scales), WeightBits::Eight)
    }

    /// Uses `activations` from now on (per row unless set).
    pub fn with_activations(mut self, activations: Activations) -> Int8Matrix {
        self.activations = activations;
        self
    }

    /// How this matrix quantizes its activations.
    pub fn activations(&self) -> Activations {
        self.activations
    }

    /// Quantizes the activations to 127 steps on every variant from now
    /// on. With [`WeightBits::Seven`] this lets the AVX-512 BW and AVX2
    /// kernels add two groups' `vpmaddubsw` pairs in i16 before widening
    /// them (four products reach at most 4 · 127 · 63 = 32,004), one
    /// `vpmaddwd` and one `vpaddd` per eight inputs instead of per four:
    /// 1.2× the BW kernel's speed, for coarser activations.
    pub fn with_7bit_activations(mut self) -> Int8Matrix {
        self.narrow = true;
        self
    }

    /// Steps of this matrix's activation quantization on `variant`.
    pub fn activation_levels(&self, variant: Variant) -> u8 {
        if self.narrow {
            127
        } else {
            self.bits.activation_levels(variant)
        }
    }

    /// How finely this matrix's weights are quantized.
    pub fn weight_bits(&self) -> WeightBits {
        self.bits
    }

    fn pack_columns(
        weight: &[f32],
        out: usize,
        input: usize,
        given: Option<&[f32]>,
        bits: WeightBits,
    ) -> Int8Matrix {
        let top = bits.max();
        assert_eq!(weight.len(), out * input, "weight is not {out} × {input}");
        assert!(
            (1..=MAX_INPUT).contains(&input),
            "int8 matmul inputs have 1 to {MAX_INPUT} values, not {input}"
        );
        let groups = input.div_ceil(4);
        let panels = out.div_ceil(PANEL);
        let mut packed = vec![0u32; Self::packed_len(out, input)];
        let mut scales = vec![0f32; panels * PANEL];
        let mut sums = vec![0i32; panels * PANEL];
        packed
            .par_chunks_mut(groups * PANEL)
            .zip(scales.par_chunks_mut(PANEL))
            .zip(sums.par_chunks_mut(PANEL))
            .enumerate()
            .for_each(|(j, ((panel, scales), sums))| {
                for c in 0..PANEL.min(out - j * PANEL) {
                    let row = &weight[(j * PANEL + c) * input..][..input];
                    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = if !row.iter().all(|v| v.is_finite()) {
                        f32::NAN
                    } else if let Some(given) = given {
                        given[j * PANEL + c]
                    } else {
                        max / top
                    };
                    scales[c] = scale;
                    if scale.is_nan() || scale == 0.0 {
                        // Zero weights, or NaN outputs through the scale.
                        continue;
                    }
                    let mut sum = 0;
                    for (g, four) in row.chunks(4).enumerate() {
                        let mut bytes = [0u8; 4];
                        for (b, &w) in bytes.iter_mut().zip(four) {
                            let q = (w / scale).round().clamp(-top, top) as i8;
                            sum += q as i32;
                            *b = q as u8;
                        }
                        panel[g * PANEL + c] = u32::from_le_bytes(bytes);
                    }
                    sums[c] = sum;
                }
            });
        Int8Matrix {
            out,
            input,
            groups,
            packed: Words::Owned(packed),
            scales,
            sums,
            activations: Activations::PerRow,
            bits,
            narrow: false,
        }
    }

    /// Words the packed weights of an (out, in) matrix take: whole panels
    /// of four inputs per word, and the [`AMX_SLACK`] after them.
    fn packed_len(out: usize, input: usize) -> usize {
        out.div_ceil(PANEL) * PANEL * input.div_ceil(4) + AMX_SLACK
    }

    /// Words an (out, in) matrix takes in [`Int8Matrix::stored`]'s form:
    /// the packed weights, then a scale and a sum per padded column.
    pub fn stored_len(out: usize, input: usize) -> usize {
        Self::packed_len(out, input) + 2 * out.div_ceil(PANEL) * PANEL
    }

    /// The matrix as bytes to store (a cache file), in three pieces
    /// written one after another: the packed weights, the columns' scales
    /// and their sums, native byte order. [`Int8Matrix::from_stored`]
    /// reads them back. Neither the activation mode nor the weights' bits
    /// are stored: the reader says which bits it wrote.
    pub fn stored(&self) -> [&[u8]; 3] {
        [
            bytemuck::cast_slice(self.packed.get()),
            bytemuck::cast_slice(&self.scales),
            bytemuck::cast_slice(&self.sums),
        ]
    }

    /// The (out, in) matrix with weights of `bits` that
    /// [`Int8Matrix::stored`] wrote at `offset` in `bytes` (a mapped cache
    /// file: the packed weights stay there, only the scales and sums are
    /// copied), with per-row activations. `None` if the shape is out of
    /// range or the pieces do not fit there or are not 4-byte aligned.
    pub fn from_stored(
        out: usize,
        input: usize,
        bits: WeightBits,
        bytes: SharedBytes,
        offset: usize,
    ) -> Option<Int8Matrix> {
        if out == 0 || !(1..=MAX_INPUT).contains(&input) {
            return None;
        }
        let columns = out.div_ceil(PANEL) * PANEL;
        let words = Self::packed_len(out, input);
        let tail = offset.checked_add(words.checked_mul(4)?)?;
        let scales: &[f32] =
            bytemuck::try_cast_slice(bytes.get(tail..tail.checked_add(columns * 4)?)?).ok()?;
        let sums: &[i32] = bytemuck::try_cast_slice(
            bytes.get(tail + columns * 4..tail.checked_add(columns * 8)?)?,
        )
        .ok()?;
        let (scales, sums) = (scales.to_vec(), sums.to_vec());
        Some(Int8Matrix {
            out,
            input,
            groups: input.div_ceil(4),
            packed: Words::shared(bytes, offset, words)?,
            scales,
            sums,
            activations: Activations::PerRow,
            bits,
            narrow: false,
        })
    }

    /// Output size (rows of the packed weight).
    pub fn out(&self) -> usize {
        self.out
    }

    /// Input size (columns of the packed weight).
    pub fn input(&self) -> usize {
        self.input
    }

    /// Bytes held by the packed weights, their scales and their sums.
    pub fn bytes(&self) -> usize {
        (self.packed.get().len() + self.scales.len() + self.sums.len()) * 4
    }

    /// The scale of each output column's weights (`max |W_j| / 127`, or
    /// `/ 63` with [`WeightBits::Seven`], or
    /// as given to [`Int8Matrix::pack_quantized`]).
    pub fn scales(&self) -> &[f32] {
        &self.scales[..self.out]
    }

    /// `x · Wᵀ` for `x` of `rows` rows of `input` values: `rows × out`
    /// values, row-major, on the fastest [`Variant`] this CPU has. Panics
    /// if `x` is not `rows × input`.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.product(Variant::detect(), x, rows, &|_, _, _| {})
    }

    /// [`Int8Matrix::matmul`], then `finish(row, column, values)` on each
    /// piece of an output row while it is in cache: `values` are that
    /// row's outputs at columns `column..column + values.len()` (at most
    /// [`PANEL`] of them, starting on a multiple of it). Every output value
    /// passes through `finish` exactly once before this returns; the calls
    /// run on rayon's threads, in no particular order. For a bias and an
    /// activation function, say.
    pub fn matmul_then(
        &self,
        x: &[f32],
        rows: usize,
        finish: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Vec<f32> {
        self.product(Variant::detect(), x, rows, &finish)
    }

    /// [`Int8Matrix::matmul_then`] on a chosen variant (to compare them).
    /// Panics if this CPU lacks it ([`Variant::supported`]).
    pub fn matmul_with(
        &self,
        variant: Variant,
        x: &[f32],
        rows: usize,
        finish: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Vec<f32> {
        self.product(variant, x, rows, &finish)
    }

    fn product(
        &self,
        variant: Variant,
        x: &[f32],
        rows: usize,
        finish: &(impl Fn(usize, usize, &mut [f32]) + Sync),
    ) -> Vec<f32> {
        self.product_levels(variant, self.activation_levels(variant), x, rows, finish)
    }

    /// The product with activations quantized to `levels` steps (which the
    /// tests vary independently of the variant).
    fn product_levels(
        &self,
        variant: Variant,
        levels: u8,
        x: &[f32],
        rows: usize,
        finish: &(impl Fn(usize, usize, &mut [f32]) + Sync),
    ) -> Vec<f32> {
        assert_eq!(
            x.len(),
            rows * self.input,
            "input is not {rows} × {}",
            self.input
        );
        assert!(variant.supported(), "this CPU lacks the {variant} variant");
        let kernel = kernel::Kernel::new(variant);
        let simd = kernel.simd();
        let fixed = match self.activations {
            Activations::PerRow => None,
            Activations::PerTensor => Some(range_on(simd, x)),
        };
        let job = Job {
            kernel,
            simd,
            levels,
            fixed,
            finish,
        };
        crate::panels::product(
            x,
            crate::panels::Shape {
                rows,
                input: self.input,
                out: self.out,
                panel: PANEL,
                tile_rows: variant.tile_rows(),
            },
            |x, rows, panels, dst, stride| self.rows_into(&job, x, rows, panels, dst, stride),
        )
    }

    /// Computes panels `panels` of the rows `rows` (whose activations are
    /// `x`) into `dst`, whose rows are `stride` values apart and whose
    /// first column is the first panel's first column. Writes every column
    /// of those panels in every one of the rows, each after `finish`.
    fn rows_into<F: Fn(usize, usize, &mut [f32]) + Sync>(
        &self,
        job: &Job<F>,
        x: &[f32],
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        dst: &mut [MaybeUninit<f32>],
        stride: usize,
    ) {
        if let Some(simd) = job.simd.filter(|s| s.variant() == Variant::Amx) {
            return self.rows_into_amx(job, simd, x, rows, panels, dst, stride);
        }
        let (first_row, rows) = (rows.start, rows.len());
        let width = (panels.end * PANEL).min(self.out) - panels.start * PANEL;
        assert!(x.len() >= rows * self.input && stride >= width && dst.len() >= rows * stride);
        let variant_rows = job.kernel.variant().tile_rows();
        let row_bytes = self.groups * 4;
        // The last call's buffer on this thread (a zeroed one per call was
        // 2% of bulk embedding): `quantize_rows` writes every byte of it.
        let (mut q, acc) = SCRATCH.with(|s| s.take());
        q.resize(rows * row_bytes, 0);
        let (zero, scale) =
            self.quantize_rows(job, &x[..rows * self.input], (&mut q, row_bytes), rows);
        let packed = self.packed.get();
        // Whether the BW and AVX2 kernels may add pairs in i16 (see
        // [`Int8Matrix::with_7bit_activations`]).
        let pairs = self.bits == WeightBits::Seven && job.levels <= 127;
        for block in (0..rows).step_by(BLOCK_ROWS) {
            let block_rows = BLOCK_ROWS.min(rows - block);
            for j in panels.clone() {
                let panel = Panel {
                    words: &packed[j * self.groups * PANEL..][..self.groups * PANEL],
                    sums: &self.sums[j * PANEL..][..PANEL],
                    scales: &self.scales[j * PANEL..][..PANEL],
                    pairs,
                };
                let column = (j - panels.start) * PANEL;
                let columns = PANEL.min(self.out - j * PANEL);
                let mut r = block;
                while r < block + block_rows {
                    let tile = variant_rows.min(block + block_rows - r);
                    let a = Rows {
                        q: &q[r * row_bytes..(r + tile) * row_bytes],
                        stride: row_bytes,
                        zero: &zero[r..r + tile],
                        scale: &scale[r..r + tile],
                    };
                    let c = &mut dst[r * stride + column..];
                    let finish = |i: usize, values: &mut [f32]| {
                        (job.finish)(first_row + r + i, j * PANEL, values)
                    };
                    match job.kernel {
                        kernel::Kernel::Portable => {
                            portable_tile(&a, &panel, c, stride, tile, columns, finish)
                        }
                        k => kernel::tile(k, &a, &panel, c, stride, tile, columns, finish),
                    }
                    r += tile;
                }
            }
        }
        SCRATCH.with(|s| s.replace((q, acc)));
    }

    /// Quantizes the rows of `x` into rows of `row_bytes` bytes of `q`
    /// (zero past the input), and returns each row's zero point and step,
    /// for `rows` rows (0 and 0 past those of `x`, whose rows of `q` are
    /// left as they are).
    fn quantize_rows<F>(
        &self,
        job: &Job<F>,
        x: &[f32],
        (q, row_bytes): (&mut [u8], usize),
        rows: usize,
    ) -> (Vec<i32>, Vec<f32>) {
        let mut zero = vec![0i32; rows];
        let mut scale = vec![0f32; rows];
        for (((src, q), z), s) in x
            .chunks_exact(self.input)
            .zip(q.chunks_exact_mut(row_bytes))
            .zip(&mut zero)
            .zip(&mut scale)
        {
            (*s, *z) = quantize_row(src, job.levels, q, job.simd, job.fixed);
        }
        (zero, scale)
    }

    /// [`Int8Matrix::rows_into`] on AMX tiles: the activations quantized
    /// into rows of whole tile depths (zero past the input) and whole
    /// [`AMX_ROWS`] (zero rows past the end), then each block of rows times
    /// each panel.
    #[allow(clippy::too_many_arguments)]
    fn rows_into_amx<F: Fn(usize, usize, &mut [f32]) + Sync>(
        &self,
        job: &Job<F>,
        simd: kernel::Simd,
        x: &[f32],
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        dst: &mut [MaybeUninit<f32>],
        stride: usize,
    ) {
        let (first_row, rows) = (rows.start, rows.len());
        let width = (panels.end * PANEL).min(self.out) - panels.start * PANEL;
        assert!(x.len() >= rows * self.input && stride >= width && dst.len() >= rows * stride);
        let depths = self.groups.div_ceil(AMX_DEPTH / 4);
        let row_bytes = depths * AMX_DEPTH;
        let padded = rows.next_multiple_of(AMX_ROWS);
        // The buffers of the last call on this thread, so that no call
        // zeroes or faults in fresh memory (zeroing and page faults were a
        // fifth of bulk embedding with fresh buffers). Real rows are
        // written whole by `quantize_row`; the padding rows are zeroed.
        let (mut q, mut acc) = SCRATCH.with(|s| s.take());
        q.resize(padded * row_bytes, 0);
        q[rows * row_bytes..].fill(0);
        acc.resize(panels.len() * AMX_ROWS * PANEL, 0);
        let (zero, scale) =
            self.quantize_rows(job, &x[..rows * self.input], (&mut q, row_bytes), padded);
        let packed = self.packed.get();
        // Per block of rows: the sums of every panel, on the tiles, and then
        // (with the tiles released, so that `finish` runs no code of ours
        // while they are configured) the outputs.
        for block in (0..rows).step_by(AMX_ROWS) {
            let n = AMX_ROWS.min(rows - block);
            let a = Rows {
                q: &q[block * row_bytes..(block + AMX_ROWS) * row_bytes],
                stride: row_bytes,
                zero: &zero[block..block + AMX_ROWS],
                scale: &scale[block..block + AMX_ROWS],
            };
            let panel = |j: usize| {
                // The panel and what follows it: the kernel's last tile of
                // weights reads up to `AMX_SLACK` words past the panel.
                let start = j * self.groups * PANEL;
                Panel {
                    words: &packed[start..start + depths * (AMX_DEPTH / 4) * PANEL],
                    sums: &self.sums[j * PANEL..][..PANEL],
                    scales: &self.scales[j * PANEL..][..PANEL],
                    pairs: false,
                }
            };
            {
                let tiles = crate::amx::Tiles::new().expect("the AMX variant has tiles");
                for (j, acc) in panels.clone().zip(acc.chunks_exact_mut(AMX_ROWS * PANEL)) {
                    tiles.int8(a.q, a.stride, panel(j).words, depths, n, acc);
                }
            }
            for (j, acc) in panels.clone().zip(acc.chunks_exact(AMX_ROWS * PANEL)) {
                let column = (j - panels.start) * PANEL;
                let columns = PANEL.min(self.out - j * PANEL);
                let c = &mut dst[block * stride + column..];
                let finish = |i: usize, values: &mut [f32]| {
                    (job.finish)(first_row + block + i, j * PANEL, values)
                };
                kernel::store_sums(simd, acc, &a, &panel(j), c, stride, n, columns, finish);
            }
        }
        SCRATCH.with(|s| s.replace((q, acc)));
    }
}

thread_local! {
    /// [`Int8Matrix::rows_into`]'s quantized activations (and, on AMX,
    /// sums), kept for the thread's next call (taken out during a call,
    /// so a nested call starts empty).
    static SCRATCH: std::cell::Cell<(Vec<u8>, Vec<i32>)> = const {
        std::cell::Cell::new((Vec::new(), Vec::new()))
    };
}

/// What one product call runs: the kernel, its AVX-512 token for the
/// activation quantization (`None`: the portable loops, which the
/// x86-64-v3 build vectorises with AVX2), the activation steps, the range
/// for per-tensor activations and the finishing closure.
struct Job<'a, F> {
    kernel: kernel::Kernel,
    simd: Option<kernel::Simd>,
    levels: u8,
    /// The whole input's range, for [`Activations::PerTensor`].
    fixed: Option<(f32, f32, bool)>,
    finish: &'a F,
}

/// As a candle op: `x` of shape (…, in), contiguous f32, to (…, out).
impl candle_core::CustomOp1 for Int8Matrix {
    fn name(&self) -> &'static str {
        "docent-int8-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        crate::weight_op(
            storage,
            layout,
            "int8 matmul",
            (self.input, self.out),
            |x, rows| self.matmul(x, rows),
        )
    }
}

/// The proof of an AVX-512 variant's CPU features, shared with the
/// decoding kernels ([`crate::q8`], [`crate::q4k`], [`crate::q6k`]).
pub(crate) use kernel::Simd;

#[allow(unsafe_code)]
mod kernel {
    use super::{AMX_ROWS, PANEL, Panel, Rows, TILE_ROWS, Variant, YMM_ROWS};
    use std::mem::MaybeUninit;

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// An AVX-512 variant this CPU runs: made only by [`Simd::new`], which
    /// checks the features, so holding one proves them (AVX-512 F and BW,
    /// and VNNI for that variant).
    #[derive(Clone, Copy, Debug)]
    pub struct Simd(Variant);

    impl Simd {
        /// `None` for variants without AVX-512 and for variants this CPU
        /// lacks.
        pub fn new(variant: Variant) -> Option<Simd> {
            (variant.is_avx512() && variant.supported()).then_some(Simd(variant))
        }

        /// The variant whose features this token proves.
        pub fn variant(self) -> Variant {
            self.0
        }
    }

    /// A 256-bit variant this CPU runs: made only by [`Kernel::new`],
    /// which checks the features, so holding one proves them (AVX2, and
    /// AVX-VNNI for that variant).
    #[derive(Clone, Copy, Debug)]
    pub struct Ymm(Variant);

    /// The code that computes a product's sums: an AVX-512 or a 256-bit
    /// variant with the proof of its features, or the portable code.
    #[derive(Clone, Copy, Debug)]
    pub enum Kernel {
        Avx512(Simd),
        Ymm(Ymm),
        Portable,
    }

    impl Kernel {
        /// The kernel of `variant`: the portable code for the portable
        /// variant and for variants this CPU lacks.
        pub fn new(variant: Variant) -> Kernel {
            match Simd::new(variant) {
                Some(simd) => Kernel::Avx512(simd),
                None if matches!(variant, Variant::AvxVnni | Variant::Avx2)
                    && variant.supported() =>
                {
                    Kernel::Ymm(Ymm(variant))
                }
                None => Kernel::Portable,
            }
        }

        /// The AVX-512 token, which the activation quantization also uses.
        pub fn simd(self) -> Option<Simd> {
            match self {
                Kernel::Avx512(simd) => Some(simd),
                _ => None,
            }
        }

        pub fn variant(self) -> Variant {
            match self {
                Kernel::Avx512(Simd(v)) | Kernel::Ymm(Ymm(v)) => v,
                Kernel::Portable => Variant::Portable,
            }
        }
    }

    /// [`super::range`] on AVX-512: the same minimum, maximum and
    /// finiteness (min and max do not depend on the order).
    pub fn range(simd: Simd, x: &[f32]) -> (f32, f32, bool) {
        let _ = simd;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd` proves AVX-512 F; `range_16` reads `x.len()`
        // values from `x` (the tail through a masked load).
        unsafe {
            range_16(x.as_ptr(), x.len())
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no AVX-512 variant off x86-64")
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn range_16(x: *const f32, n: usize) -> (f32, f32, bool) {
        // SAFETY: the caller guarantees `n` readable values; masked-off
        // lanes of the tail load are neither read nor faulted on.
        unsafe {
            let zero = _mm512_setzero_ps();
            let (mut lo, mut hi, mut bad) = (zero, zero, zero);
            let mut i = 0;
            while i < n {
                let mask = if n - i >= 16 {
                    u16::MAX
                } else {
                    (1u16 << (n - i)) - 1
                };
                // Masked-off lanes are 0, which the range includes anyway.
                let v = _mm512_maskz_loadu_ps(mask, x.add(i));
                lo = _mm512_min_ps(lo, v);
                hi = _mm512_max_ps(hi, v);
                // 0 for finite values, NaN for NaN and infinities.
                bad = _mm512_add_ps(bad, _mm512_mul_ps(v, zero));
                i += 16;
            }
            (
                _mm512_reduce_min_ps(lo),
                _mm512_reduce_max_ps(hi),
                _mm512_reduce_add_ps(bad) == 0.0,
            )
        }
    }

    /// The quantizing loop of [`super::quantize_row`] on AVX-512, with the
    /// same operations: `v · inv`, `+ zero`, clamp to `[0, top]`, round to
    /// nearest even.
    pub fn quantize(simd: Simd, x: &[f32], inv: f32, zero: f32, top: f32, q: &mut [u8]) {
        let _ = simd;
        assert_eq!(x.len(), q.len());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd` proves AVX-512 F; `quantize_16` reads and writes
        // `x.len()` values, the lengths just checked.
        unsafe {
            quantize_16(x.as_ptr(), x.len(), inv, zero, top, q.as_mut_ptr())
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no AVX-512 variant off x86-64")
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn quantize_16(x: *const f32, n: usize, inv: f32, zero: f32, top: f32, q: *mut u8) {
        // SAFETY: the caller guarantees `n` readable values and `n`
        // writable bytes; masked-off lanes are neither read nor written.
        unsafe {
            let (inv, zero, top) = (
                _mm512_set1_ps(inv),
                _mm512_set1_ps(zero),
                _mm512_set1_ps(top),
            );
            let mut i = 0;
            while i < n {
                let mask = if n - i >= 16 {
                    u16::MAX
                } else {
                    (1u16 << (n - i)) - 1
                };
                let v = _mm512_maskz_loadu_ps(mask, x.add(i));
                let t = _mm512_add_ps(_mm512_mul_ps(v, inv), zero);
                let t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), top);
                let t = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    t,
                );
                _mm512_mask_cvtepi32_storeu_epi8(q.add(i) as *mut i8, mask, t);
                i += 16;
            }
        }
    }

    /// The bounds the micro-kernels rely on, for `rows` (≤ `max_rows`)
    /// rows of `a` times the panel `p` into `columns` (≤ PANEL) values of
    /// rows of `c`, `c_stride` apart: whole groups of weights, sums and
    /// scales for a panel, activation rows of every group, a zero point
    /// and step per row, and room in `c`. Returns the groups.
    fn check_tile(
        a: &Rows,
        p: &Panel,
        c: &[MaybeUninit<f32>],
        c_stride: usize,
        rows: usize,
        max_rows: usize,
        columns: usize,
    ) -> usize {
        let groups = p.words.len() / PANEL;
        assert!(p.words.len() == groups * PANEL && p.sums.len() >= PANEL);
        assert!(p.scales.len() >= PANEL);
        assert!((1..=max_rows).contains(&rows) && (1..=PANEL).contains(&columns));
        assert!(a.stride >= groups * 4 && a.q.len() >= (rows - 1) * a.stride + groups * 4);
        assert!(a.zero.len() >= rows && a.scale.len() >= rows);
        assert!(c_stride >= columns && c.len() >= (rows - 1) * c_stride + columns);
        groups
    }

    /// Registers per panel row.
    #[cfg(target_arch = "x86_64")]
    const V: usize = PANEL / 16;

    /// `rows` (≤ TILE_ROWS, or YMM_ROWS) rows of quantized activations
    /// times one packed panel on `kernel` (an AVX-512 or a 256-bit
    /// variant), into the first `columns` (≤ PANEL) values of each of
    /// `rows` rows of `c`, `c_stride` apart; then `finish(r, values)` on
    /// each row's values, in place. Every kernel computes the outputs with
    /// the operations of [`super::output`], as the portable code does.
    #[allow(clippy::too_many_arguments)]
    pub fn tile(
        kernel: Kernel,
        a: &Rows,
        p: &Panel,
        c: &mut [MaybeUninit<f32>],
        c_stride: usize,
        rows: usize,
        columns: usize,
        finish: impl FnMut(usize, &mut [f32]),
    ) {
        // The rows the micro-kernels hold in registers.
        let most = match kernel {
            Kernel::Ymm(_) => YMM_ROWS,
            _ => TILE_ROWS,
        };
        let groups = check_tile(a, p, c, c_stride, rows, most, columns);
        let simd = match kernel {
            Kernel::Avx512(simd) => simd,
            Kernel::Ymm(ymm) => {
                return tile_ymm(ymm, a, p, c, c_stride, rows, columns, groups, finish);
            }
            Kernel::Portable => unreachable!("the portable code has its own tile"),
        };
        #[cfg(target_arch = "x86_64")]
        {
            let out = Out::new(a, p, c, c_stride, columns);
            let (q, stride, b) = (a.q.as_ptr(), a.stride, p.words.as_ptr());
            macro_rules! by_rows {
                ($kernel:ident) => {
                    match rows {
                        12 => $kernel::<12>(q, stride, b, groups, out),
                        11 => $kernel::<11>(q, stride, b, groups, out),
                        10 => $kernel::<10>(q, stride, b, groups, out),
                        9 => $kernel::<9>(q, stride, b, groups, out),
                        8 => $kernel::<8>(q, stride, b, groups, out),
                        7 => $kernel::<7>(q, stride, b, groups, out),
                        6 => $kernel::<6>(q, stride, b, groups, out),
                        5 => $kernel::<5>(q, stride, b, groups, out),
                        4 => $kernel::<4>(q, stride, b, groups, out),
                        3 => $kernel::<3>(q, stride, b, groups, out),
                        2 => $kernel::<2>(q, stride, b, groups, out),
                        _ => $kernel::<1>(q, stride, b, groups, out),
                    }
                };
            }
            // SAFETY: `simd` proves the variant's CPU features; the asserts
            // bound every read of `q` (row r < rows, byte 4g + 3 <
            // groups · 4 ≤ stride), of the panel (g · 32 + 32 ≤ len), of the
            // sums and scales (< PANEL) and of the rows' zero points and
            // steps (< rows); the masked stores write only columns <
            // `columns` of rows < `rows` of `c` (masked-off lanes are
            // neither written nor faulted on).
            unsafe {
                match simd.0 {
                    Variant::Amx | Variant::Vnni => by_rows!(vnni),
                    _ if p.pairs => by_rows!(bw_pairs),
                    _ => by_rows!(bw),
                }
            }
        }
        finish_rows(c, c_stride, rows, columns, finish);
    }

    /// [`tile`] on a 256-bit variant, after its bounds checks.
    #[allow(clippy::too_many_arguments)]
    fn tile_ymm(
        ymm: Ymm,
        a: &Rows,
        p: &Panel,
        c: &mut [MaybeUninit<f32>],
        c_stride: usize,
        rows: usize,
        columns: usize,
        groups: usize,
        finish: impl FnMut(usize, &mut [f32]),
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let out = Out::new(a, p, c, c_stride, columns);
            let (q, stride, b) = (a.q.as_ptr(), a.stride, p.words.as_ptr());
            macro_rules! by_rows {
                ($kernel:ident) => {
                    match rows {
                        3 => $kernel::<3>(q, stride, b, groups, out),
                        2 => $kernel::<2>(q, stride, b, groups, out),
                        _ => $kernel::<1>(q, stride, b, groups, out),
                    }
                };
            }
            // SAFETY: `ymm` proves the variant's CPU features; the asserts
            // bound every read of `q` (row r < rows, byte 4g + 3 <
            // groups · 4 ≤ stride) and of the panel (g · 32 + 32 ≤ len),
            // and `ymm_store!` writes only columns < `columns` of rows <
            // `rows` of `c`.
            unsafe {
                match ymm.0 {
                    Variant::AvxVnni => by_rows!(avx_vnni),
                    _ if p.pairs => by_rows!(avx2_pairs),
                    _ => by_rows!(avx2),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (ymm, a, p, groups);
            unreachable!("256-bit kernels exist only on x86-64");
        }
        finish_rows(c, c_stride, rows, columns, finish);
    }

    /// Registers of eight i32 lanes per panel row.
    #[cfg(target_arch = "x86_64")]
    const Y: usize = PANEL / 8;

    /// Adds group `$g`'s products into the accumulators `$acc` of every
    /// row on 256-bit registers: per register of eight columns,
    /// `$step(sum, x, w)` adds the products of a row's broadcast
    /// activations `x` and the weights `w` to that row's `sum`.
    #[cfg(target_arch = "x86_64")]
    macro_rules! ymm_group {
        ($a:ident, $stride:ident, $b:ident, $g:expr, $acc:ident, |$sum:ident, $x:ident, $w:ident| $step:expr) => {
            let mut xs = [_mm256_setzero_si256(); R];
            for (r, x) in xs.iter_mut().enumerate() {
                let four = ($a.add(r * $stride + 4 * $g) as *const i32).read_unaligned();
                *x = _mm256_set1_epi32(four);
            }
            for v in 0..Y {
                let $w = _mm256_loadu_si256($b.add($g * PANEL + 8 * v) as *const __m256i);
                for (acc, $x) in $acc.iter_mut().zip(&xs) {
                    let $sum = acc[v];
                    acc[v] = $step;
                }
            }
        };
    }

    /// Stores the sums `$acc` (eight columns a register, `R` rows) as
    /// `(f32(acc − z · sum) · sw) · s`, the operations of
    /// [`super::output`], into the first `columns` values of the rows of
    /// `$o`'s output. The 256-bit [`store!`]: in registers, where these
    /// kernels once left their sums in an array for a scalar loop (18% of
    /// embedding on AVX2).
    #[cfg(target_arch = "x86_64")]
    macro_rules! ymm_store {
        ($o:ident, $acc:ident) => {
            for v in 0..Y {
                let left = $o.columns as i32 - 8 * v as i32;
                if left <= 0 {
                    break;
                }
                let sums = _mm256_loadu_si256($o.sums.add(8 * v) as *const __m256i);
                let wscales = _mm256_loadu_ps($o.wscales.add(8 * v));
                for (r, acc) in $acc.iter().enumerate() {
                    let zero = _mm256_set1_epi32($o.zero.add(r).read());
                    let d = _mm256_sub_epi32(acc[v], _mm256_mullo_epi32(zero, sums));
                    let y = _mm256_mul_ps(_mm256_cvtepi32_ps(d), wscales);
                    let y = _mm256_mul_ps(y, _mm256_set1_ps($o.scale.add(r).read()));
                    let at = $o.c.add(r * $o.c_stride + 8 * v);
                    if left >= 8 {
                        _mm256_storeu_ps(at, y);
                    } else {
                        // Not `vmaskmovps`: its stores are microcoded on
                        // AMD CPUs; with them this AVX2 path embedded at
                        // 0.95× the scalar loop it replaces (EPYC).
                        let mut part = [0f32; 8];
                        _mm256_storeu_ps(part.as_mut_ptr(), y);
                        std::ptr::copy_nonoverlapping(part.as_ptr(), at, left as usize);
                    }
                }
            }
        };
    }

    /// A 256-bit micro-kernel: [`ymm_group!`] with `$step` on every group,
    /// then the sums of the first `R` rows into `out`.
    #[cfg(target_arch = "x86_64")]
    macro_rules! ymm_kernel {
        ($(#[$doc:meta])* $name:ident, $features:literal, |$sum:ident, $x:ident, $w:ident| $step:expr) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize>(
                a: *const u8,
                stride: usize,
                b: *const u32,
                groups: usize,
                o: Out,
            ) {
                // SAFETY: the caller (`tile_ymm`) checked the bounds
                // described there.
                unsafe {
                    let mut acc = [[_mm256_setzero_si256(); Y]; R];
                    for g in 0..groups {
                        ymm_group!(a, stride, b, g, acc, |$sum, $x, $w| $step);
                    }
                    ymm_store!(o, acc);
                }
            }
        };
    }

    #[cfg(target_arch = "x86_64")]
    ymm_kernel!(
        /// AVX-VNNI: one `vpdpbusd` (256-bit, VEX) per row and register.
        avx_vnni,
        "avx2,avxvnni",
        |sum, x, w| _mm256_dpbusd_avx_epi32(sum, *x, w)
    );

    /// `sum` plus the products of `x` and `w` on AVX2: `vpmaddubsw` (pairs
    /// of u8 × s8 into i16; no saturation with 7-bit activations),
    /// `vpmaddwd` by ones (pairs of i16 into i32), `vpaddd`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn avx2_step(sum: __m256i, x: __m256i, w: __m256i) -> __m256i {
        _mm256_add_epi32(
            sum,
            _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1)),
        )
    }

    #[cfg(target_arch = "x86_64")]
    ymm_kernel!(
        /// AVX2: [`avx2_step`] per row and register.
        avx2,
        "avx2",
        |sum, x, w| avx2_step(sum, *x, w)
    );

    /// `finish(r, values)` on the first `columns` values of each of `rows`
    /// rows of `c`, which a kernel has just stored.
    fn finish_rows(
        c: &mut [MaybeUninit<f32>],
        c_stride: usize,
        rows: usize,
        columns: usize,
        mut finish: impl FnMut(usize, &mut [f32]),
    ) {
        for r in 0..rows {
            let values = &mut c[r * c_stride..][..columns];
            // SAFETY: the callers' kernels stored every one of these values
            // (the first `columns` of row r), so they are initialised, and
            // `MaybeUninit<f32>` has the layout of `f32`.
            let values = unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) };
            finish(r, values);
        }
    }

    /// The outputs of the AMX sums `acc` (row-major, [`PANEL`] columns) of
    /// `rows` rows of `a` and the panel `p`, as [`tile`] stores its
    /// registers' sums: into the first `columns` values of each of `rows`
    /// rows of `c`, `c_stride` apart, each row then through `finish`.
    #[allow(clippy::too_many_arguments)]
    pub fn store_sums(
        simd: Simd,
        acc: &[i32],
        a: &Rows,
        p: &Panel,
        c: &mut [MaybeUninit<f32>],
        c_stride: usize,
        rows: usize,
        columns: usize,
        finish: impl FnMut(usize, &mut [f32]),
    ) {
        let _ = simd;
        assert!(acc.len() >= rows * PANEL && p.sums.len() >= PANEL && p.scales.len() >= PANEL);
        assert!((1..=AMX_ROWS).contains(&rows) && (1..=PANEL).contains(&columns));
        assert!(a.zero.len() >= rows && a.scale.len() >= rows);
        assert!(c_stride >= columns && c.len() >= (rows - 1) * c_stride + columns);
        #[cfg(target_arch = "x86_64")]
        {
            let out = Out::new(a, p, c, c_stride, columns);
            // SAFETY: `simd` proves AVX-512 F; the asserts bound the reads
            // of `acc` (rows · PANEL), of the sums and scales (< PANEL), of
            // the rows' zero points and steps (< rows), and the masked
            // stores write only columns < `columns` of rows < `rows` of `c`.
            unsafe { store_memory(acc.as_ptr(), rows, out) }
        }
        finish_rows(c, c_stride, rows, columns, finish);
    }

    /// Where and how a tile's sums become outputs.
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    struct Out {
        zero: *const i32,
        scale: *const f32,
        sums: *const i32,
        wscales: *const f32,
        c: *mut f32,
        c_stride: usize,
        columns: usize,
        masks: [u16; V],
    }

    #[cfg(target_arch = "x86_64")]
    impl Out {
        /// The outputs of the rows `a` and the panel `p` into the first
        /// `columns` (≤ PANEL) values of rows of `c`, `c_stride` apart.
        fn new(
            a: &Rows,
            p: &Panel,
            c: &mut [MaybeUninit<f32>],
            c_stride: usize,
            columns: usize,
        ) -> Out {
            let full = if columns == 32 {
                u32::MAX
            } else {
                (1u32 << columns) - 1
            };
            Out {
                zero: a.zero.as_ptr(),
                scale: a.scale.as_ptr(),
                sums: p.sums.as_ptr(),
                wscales: p.scales.as_ptr(),
                c: c.as_mut_ptr() as *mut f32,
                c_stride,
                columns,
                masks: [full as u16, (full >> 16) as u16],
            }
        }
    }

    /// Stores the sums `$acc` (the register of row `$r`, half `$v`) as
    /// `(f32(acc − z · sum) · sw) · s`, the operations of
    /// [`super::output`]. A macro, so the accumulators stay in registers.
    #[cfg(target_arch = "x86_64")]
    macro_rules! store {
        ($o:ident, $rows:expr, |$r:ident, $v:ident| $acc:expr) => {
            for $v in 0..V {
                let sums = _mm512_loadu_si512($o.sums.add(16 * $v) as *const __m512i);
                let wscales = _mm512_loadu_ps($o.wscales.add(16 * $v));
                for $r in 0..$rows {
                    let zero = _mm512_set1_epi32($o.zero.add($r).read());
                    let d = _mm512_sub_epi32($acc, _mm512_mullo_epi32(zero, sums));
                    let y = _mm512_mul_ps(_mm512_cvtepi32_ps(d), wscales);
                    let y = _mm512_mul_ps(y, _mm512_set1_ps($o.scale.add($r).read()));
                    _mm512_mask_storeu_ps($o.c.add($r * $o.c_stride + 16 * $v), $o.masks[$v], y);
                }
            }
        };
    }

    /// [`store!`] on sums read from memory, `PANEL` per row.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_memory(acc: *const i32, rows: usize, o: Out) {
        // SAFETY: the caller (`store_sums`) checked the bounds.
        unsafe {
            store!(o, rows, |r, v| _mm512_loadu_si512(
                acc.add(r * PANEL + 16 * v) as *const __m512i
            ));
        }
    }

    /// The VNNI micro-kernel: per group of four inputs, one `vpdpbusd` per
    /// row and register.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn vnni<const R: usize>(
        a: *const u8,
        stride: usize,
        b: *const u32,
        groups: usize,
        o: Out,
    ) {
        // SAFETY: the caller (`tile`) checked the bounds described there.
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); V]; R];
            for g in 0..groups {
                let mut w = [_mm512_setzero_si512(); V];
                for (v, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(b.add(g * PANEL + 16 * v) as *const __m512i);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let four = (a.add(r * stride + 4 * g) as *const i32).read_unaligned();
                    let x = _mm512_set1_epi32(four);
                    for v in 0..V {
                        acc[v] = _mm512_dpbusd_epi32(acc[v], x, w[v]);
                    }
                }
            }
            store!(o, R, |r, v| acc[r][v]);
        }
    }

    /// Adds group `$g`'s products into the accumulators `$acc` of every
    /// row, on AVX-512 BW: `vpmaddubsw`, `vpmaddwd` by `$ones`, `vpaddd`.
    /// A macro, so the accumulators stay in registers.
    #[cfg(target_arch = "x86_64")]
    macro_rules! bw_group {
        ($a:ident, $stride:ident, $b:ident, $g:expr, $acc:ident, $ones:ident) => {
            let mut w = [_mm512_setzero_si512(); V];
            for (v, w) in w.iter_mut().enumerate() {
                *w = _mm512_loadu_si512($b.add($g * PANEL + 16 * v) as *const __m512i);
            }
            for (r, acc) in $acc.iter_mut().enumerate() {
                let four = ($a.add(r * $stride + 4 * $g) as *const i32).read_unaligned();
                let x = _mm512_set1_epi32(four);
                for v in 0..V {
                    let pairs = _mm512_maddubs_epi16(x, w[v]);
                    acc[v] = _mm512_add_epi32(acc[v], _mm512_madd_epi16(pairs, $ones));
                }
            }
        };
    }

    /// The AVX-512 BW micro-kernel: `vpmaddubsw` (pairs of u8 × s8 into
    /// i16; no saturation with 7-bit activations), `vpmaddwd` by ones
    /// (pairs of i16 into i32), `vpaddd`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bw<const R: usize>(
        a: *const u8,
        stride: usize,
        b: *const u32,
        groups: usize,
        o: Out,
    ) {
        // SAFETY: the caller (`tile`) checked the bounds described there.
        unsafe {
            let ones = _mm512_set1_epi16(1);
            let mut acc = [[_mm512_setzero_si512(); V]; R];
            for g in 0..groups {
                bw_group!(a, stride, b, g, acc, ones);
            }
            store!(o, R, |r, v| acc[r][v]);
        }
    }

    /// The AVX-512 BW micro-kernel for weights within ±63 and activations
    /// within 127: per two groups, two `vpmaddubsw` added in i16 (at most
    /// 4 · 127 · 63 = 32,004), one `vpmaddwd` by ones and one `vpaddd`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bw_pairs<const R: usize>(
        a: *const u8,
        stride: usize,
        b: *const u32,
        groups: usize,
        o: Out,
    ) {
        // SAFETY: the caller (`tile`) checked the bounds described there;
        // the pair's second group g + 1 < groups.
        unsafe {
            let ones = _mm512_set1_epi16(1);
            let mut acc = [[_mm512_setzero_si512(); V]; R];
            let mut g = 0;
            while g + 1 < groups {
                let mut w = [[_mm512_setzero_si512(); V]; 2];
                for (h, w) in w.iter_mut().enumerate() {
                    for (v, w) in w.iter_mut().enumerate() {
                        *w = _mm512_loadu_si512(b.add((g + h) * PANEL + 16 * v) as *const __m512i);
                    }
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let row = a.add(r * stride + 4 * g) as *const i32;
                    let x0 = _mm512_set1_epi32(row.read_unaligned());
                    let x1 = _mm512_set1_epi32(row.add(1).read_unaligned());
                    for v in 0..V {
                        let pairs = _mm512_add_epi16(
                            _mm512_maddubs_epi16(x0, w[0][v]),
                            _mm512_maddubs_epi16(x1, w[1][v]),
                        );
                        acc[v] = _mm512_add_epi32(acc[v], _mm512_madd_epi16(pairs, ones));
                    }
                }
                g += 2;
            }
            if g < groups {
                bw_group!(a, stride, b, g, acc, ones);
            }
            store!(o, R, |r, v| acc[r][v]);
        }
    }

    /// AVX2 for weights within ±63 and activations within 127, as
    /// [`bw_pairs`]: two `vpmaddubsw` added in i16 per two groups.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2_pairs<const R: usize>(
        a: *const u8,
        stride: usize,
        b: *const u32,
        groups: usize,
        o: Out,
    ) {
        // SAFETY: the caller (`tile_ymm`) checked the bounds described
        // there; the pair's second group g + 1 < groups.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_si256(); Y]; R];
            let mut g = 0;
            while g + 1 < groups {
                let mut x = [[_mm256_setzero_si256(); 2]; R];
                for (r, x) in x.iter_mut().enumerate() {
                    let row = a.add(r * stride + 4 * g) as *const i32;
                    x[0] = _mm256_set1_epi32(row.read_unaligned());
                    x[1] = _mm256_set1_epi32(row.add(1).read_unaligned());
                }
                for v in 0..Y {
                    let w0 = _mm256_loadu_si256(b.add(g * PANEL + 8 * v) as *const __m256i);
                    let w1 = _mm256_loadu_si256(b.add((g + 1) * PANEL + 8 * v) as *const __m256i);
                    for (acc, x) in acc.iter_mut().zip(&x) {
                        let pairs = _mm256_add_epi16(
                            _mm256_maddubs_epi16(x[0], w0),
                            _mm256_maddubs_epi16(x[1], w1),
                        );
                        acc[v] = _mm256_add_epi32(acc[v], _mm256_madd_epi16(pairs, ones));
                    }
                }
                g += 2;
            }
            if g < groups {
                ymm_group!(a, stride, b, g, acc, |sum, x, w| avx2_step(sum, *x, w));
            }
            ymm_store!(o, acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn random(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The variants this CPU runs, the portable one included.
    fn variants() -> Vec<Variant> {
        Variant::all_supported()
    }

    /// The quantized weight `wq_jk`, read back from the panels.
    fn weight(m: &Int8Matrix, j: usize, k: usize) -> i8 {
        let word = m.packed.get()[((j / PANEL) * m.groups + k / 4) * PANEL + j % PANEL];
        word.to_le_bytes()[k % 4] as i8
    }

    /// The activations as the kernel sees them, `x̂ = s · (q − z)`: per
    /// value `q − z`, and per row the step `s`.
    fn quantized(x: &[f32], rows: usize, input: usize, levels: u8) -> (Vec<i32>, Vec<f64>) {
        let mut values = Vec::with_capacity(rows * input);
        let mut steps = Vec::with_capacity(rows);
        let mut q = vec![0u8; input.div_ceil(4) * 4];
        for row in x.chunks_exact(input) {
            let (s, z) = quantize_row(row, levels, &mut q, None, None);
            values.extend(q[..input].iter().map(|&q| q as i32 - z));
            steps.push(s as f64);
        }
        (values, steps)
    }

    /// The forms of weights and activations: 8-bit weights, 7-bit weights
    /// with 8-bit activations, and 7-bit weights with 7-bit activations
    /// (which the BW and AVX2 kernels sum in pairs).
    const FORMS: [(WeightBits, bool); 3] = [
        (WeightBits::Eight, false),
        (WeightBits::Seven, false),
        (WeightBits::Seven, true),
    ];

    fn packed(
        w: &[f32],
        out: usize,
        input: usize,
        (bits, narrow): (WeightBits, bool),
    ) -> Int8Matrix {
        let m = Int8Matrix::pack_with(w, out, input, bits);
        if narrow { m.with_7bit_activations() } else { m }
    }

    fn check(
        variant: Variant,
        form: (WeightBits, bool),
        rows: usize,
        out: usize,
        input: usize,
        seed: u64,
    ) {
        let mut seed = seed | 1;
        let x = random(rows * input, &mut seed);
        let w = random(out * input, &mut seed);
        let m = packed(&w, out, input, form);
        let got = m.matmul_with(variant, &x, rows, |_, _, _| {});
        assert_eq!(got.len(), rows * out);
        let levels = m.activation_levels(variant);
        let (xq, steps) = quantized(&x, rows, input, levels);
        let shape = format!(
            "{variant}, {}, {levels} activation steps: {rows}×{input}·{input}×{out}",
            form.0.as_str()
        );
        for r in 0..rows {
            for j in 0..out {
                let (s, sw) = (steps[r], m.scales[j] as f64);
                let (mut dot, mut exact, mut sum_w, mut sum_x) = (0i64, 0f64, 0f64, 0f64);
                for k in 0..input {
                    let (xv, wv) = (x[r * input + k] as f64, w[j * input + k] as f64);
                    dot += xq[r * input + k] as i64 * weight(&m, j, k) as i64;
                    exact += xv * wv;
                    sum_w += wv.abs();
                    sum_x += xv.abs();
                }
                let want = s * sw * dot as f64;
                let y = got[r * out + j] as f64;
                // Exact integer sums, then three f32 roundings.
                assert!(
                    (y - want).abs() <= 1e-6 * want.abs() + 1e-30,
                    "{shape} at ({r}, {j}): {y} vs {want} (dequantized operands)"
                );
                // Half a step on each operand: |x − x̂| ≤ s/2, |w − ŵ| ≤ sw/2,
                // and |x̂| ≤ |x| + s/2; a little slack for the f32 steps.
                let bound = s / 2.0 * sum_w + sw / 2.0 * (sum_x + input as f64 * s / 2.0);
                assert!(
                    (y - exact).abs() <= bound * 1.0001 + 1e-6 * (sum_x * sum_w).sqrt(),
                    "{shape} at ({r}, {j}): {y} vs {exact}, bound {bound}"
                );
            }
        }
        // Every variant computes the same integers and roundings as the
        // portable code with the same activation steps.
        let portable = m.product_levels(Variant::Portable, levels, &x, rows, &|_, _, _| {});
        assert!(
            got.iter()
                .zip(&portable)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{shape}: differs from the portable code"
        );
    }

    #[test]
    fn packing_a_quantized_weight_keeps_its_integers_and_scales() {
        let (out, input) = (45, 19);
        let mut seed = 11;
        let q: Vec<i32> = random(out * input, &mut seed)
            .iter()
            .map(|v| (v * 127.0).round() as i32)
            .collect();
        let scales: Vec<f32> = (0..out).map(|j| 0.001 + j as f32 * 3.7e-4).collect();
        let values: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * scales[i / input])
            .collect();
        let m = Int8Matrix::pack_quantized(&values, out, input, &scales);
        assert_eq!(m.scales(), &scales[..]);
        for j in 0..out {
            for k in 0..input {
                assert_eq!(weight(&m, j, k) as i32, q[j * input + k], "({j}, {k})");
            }
        }
        // Packing the same values on their own would pick other scales.
        assert_ne!(Int8Matrix::pack(&values, out, input).scales(), &scales[..]);
    }

    /// ONNX's `DynamicQuantizeLinear` then `MatMulInteger`, in f64: the
    /// whole input on one range `[min(0, lo), max(0, hi)]` of 255 steps.
    fn onnx_dynamic(x: &[f32], rows: usize, m: &Int8Matrix) -> Vec<f64> {
        let lo = x.iter().fold(0f32, |a, &v| a.min(v));
        let hi = x.iter().fold(0f32, |a, &v| a.max(v));
        let scale = (hi - lo) / 255.0;
        let zero = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32;
        let xq: Vec<i32> = x
            .iter()
            .map(|&v| ((v / scale).round_ties_even() as i32 + zero).clamp(0, 255))
            .collect();
        let input = m.input();
        let mut y = vec![0f64; rows * m.out()];
        for r in 0..rows {
            for j in 0..m.out() {
                let acc: i64 = (0..input)
                    .map(|k| (xq[r * input + k] - zero) as i64 * weight(m, j, k) as i64)
                    .sum();
                y[r * m.out() + j] = acc as f64 * scale as f64 * m.scales()[j] as f64;
            }
        }
        y
    }

    #[test]
    fn per_tensor_activations_give_onnx_runtimes_integers() {
        let (rows, out, input) = (7, 40, 53);
        let mut seed = 5;
        let w = random(out * input, &mut seed);
        let mut x = random(rows * input, &mut seed);
        // Rows of very different ranges, so per row and per tensor differ.
        for v in &mut x[..input] {
            *v *= 40.0;
        }
        let m = Int8Matrix::pack(&w, out, input).with_activations(Activations::PerTensor);
        assert_eq!(m.activations(), Activations::PerTensor);
        let expected = onnx_dynamic(&x, rows, &m);
        let magnitude = expected.iter().fold(0f64, |a, v| a.max(v.abs()));
        for variant in variants().into_iter().filter(|v| v.levels() == 255) {
            let got = m.matmul_with(variant, &x, rows, |_, _, _| {});
            for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                // Only f32 roundings differ (and, rarely, a value on a
                // rounding tie): far below one activation step.
                assert!(
                    (g as f64 - e).abs() <= 1e-5 * magnitude,
                    "{variant} at {i}: {g} against {e}"
                );
            }
        }
        let per_row = Int8Matrix::pack(&w, out, input).matmul(&x, rows);
        let per_tensor = m.matmul(&x, rows);
        let moved = per_row
            .iter()
            .zip(&per_tensor)
            .skip(out)
            .filter(|(a, b)| (*a - *b).abs() > 1e-3 * magnitude as f32)
            .count();
        assert!(
            moved > 0,
            "the small rows are quantized on the large row's range"
        );
    }

    #[test]
    fn quantized_rows_are_within_half_a_step() {
        let mut seed = 3;
        for (n, levels, offset) in [
            (1, 255, 0.0),
            (37, 255, 0.0),
            (300, 127, 0.0),
            (64, 255, 0.7),
        ] {
            let x: Vec<f32> = random(n, &mut seed).iter().map(|v| v + offset).collect();
            let mut q = vec![9u8; n.div_ceil(4) * 4 + 4];
            let (s, z) = quantize_row(&x, levels, &mut q, None, None);
            assert!(s > 0.0 && (0..=levels as i32).contains(&z));
            assert!(q[n..].iter().all(|&b| b == 0), "padding is zero");
            assert!(q[..n].iter().all(|&b| b <= levels));
            for (&v, &q) in x.iter().zip(&q) {
                let back = s * (q as i32 - z) as f32;
                assert!(
                    (v - back).abs() <= s * 0.5001,
                    "{v} → {q} → {back} (step {s})"
                );
            }
            // The range covers the row and 0; 0 is exact.
            let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(s <= 2.0 * max / levels as f32 * 1.0001);
            assert_eq!(s * (z - z) as f32, 0.0);
        }
        // Non-negative rows use every step for [0, max].
        let (s, z) = quantize_row(&[0.0, 1.0, 0.5], 255, &mut [0; 4], None, None);
        assert_eq!((s, z), (1.0 / 255.0, 0));
        // All zeros; too small to quantize; not finite.
        assert_eq!(
            quantize_row(&[0.0; 5], 255, &mut [7; 8], None, None),
            (0.0, 0)
        );
        assert_eq!(
            quantize_row(&[1e-40, -1e-40], 255, &mut [7; 4], None, None).0,
            0.0
        );
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(
                quantize_row(&[1.0, bad, 2.0], 255, &mut [0; 4], None, None)
                    .0
                    .is_nan()
            );
        }
        assert!(
            quantize_row(&[f32::MAX, -f32::MAX], 255, &mut [0; 4], None, None)
                .0
                .is_nan()
        );
    }

    #[test]
    fn avx512_quantization_matches_the_portable_loops() {
        let Some(simd) = kernel::Simd::new(Variant::Avx512Bw) else {
            eprintln!("skipped: this CPU lacks AVX-512 BW");
            return;
        };
        let mut seed = 7;
        for n in (1..70).chain([383, 384, 4864]) {
            for (levels, offset, scale) in [(255, 0.0, 1.0), (127, 0.3, 5.0), (255, -2.0, 1e-3)] {
                let mut x: Vec<f32> = random(n, &mut seed)
                    .iter()
                    .map(|v| (v + offset) * scale)
                    .collect();
                if n > 3 {
                    x[2] = -0.0;
                }
                let mut a = vec![1u8; n + 3];
                let mut b = vec![2u8; n + 3];
                let plain = quantize_row(&x, levels, &mut a, None, None);
                let fast = quantize_row(&x, levels, &mut b, Some(simd), None);
                assert_eq!(plain, fast, "{n} values");
                assert_eq!(a, b, "{n} values");
            }
        }
        // Halves of a step (range [0, 1], 255 steps), where the rounding
        // to even decides.
        let x: Vec<f32> = [1.0, 0.0]
            .into_iter()
            .chain((0..40).map(|k| (k as f32 + 0.5) / 255.0))
            .collect();
        let (mut a, mut b) = (vec![0u8; 42], vec![0u8; 42]);
        assert_eq!(
            quantize_row(&x, 255, &mut a, None, None),
            quantize_row(&x, 255, &mut b, Some(simd), None)
        );
        assert_eq!(a, b);
        for bad in [f32::NAN, f32::INFINITY] {
            let x = [1.0, 2.0, bad];
            assert!(
                quantize_row(&x, 255, &mut [0; 3], Some(simd), None)
                    .0
                    .is_nan()
            );
        }
    }

    #[test]
    fn packed_weights_are_within_half_a_step() {
        let mut seed = 5;
        let (out, input) = (37, 13);
        let w = random(out * input, &mut seed);
        for (bits, top) in [(WeightBits::Eight, 127i8), (WeightBits::Seven, 63)] {
            let m = Int8Matrix::pack_with(&w, out, input, bits);
            assert_eq!(m.weight_bits(), bits);
            assert_eq!(m.scales().len(), out);
            assert_eq!(m.bytes(), (2 * 4 * PANEL + AMX_SLACK + 2 * PANEL * 2) * 4);
            let mut extremes = 0;
            for j in 0..out {
                let row = &w[j * input..(j + 1) * input];
                let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert_eq!(m.scales[j], max / top as f32);
                let mut sum = 0;
                for (k, &v) in row.iter().enumerate() {
                    let q = weight(&m, j, k);
                    sum += q as i32;
                    assert!((-top..=top).contains(&q));
                    extremes += usize::from(q.abs() == top);
                    assert!((v - m.scales[j] * q as f32).abs() <= m.scales[j] * 0.5001);
                }
                assert_eq!(m.sums[j], sum);
                // The padding of the input (13 → 16) is zero.
                for k in input..16 {
                    assert_eq!(weight(&m, j, k), 0);
                }
            }
            // Each column's largest weight takes the top of the range.
            assert!(extremes >= out, "{bits:?}: {extremes}");
            // Columns past `out` are zero.
            assert!((out..2 * PANEL).all(|j| m.scales[j] == 0.0 && m.sums[j] == 0));
        }
    }

    /// A stored matrix reads back as the same product, its packed weights
    /// in place (on every variant, AMX's slack included), and a stretch
    /// that is short, misplaced or of another shape is refused.
    #[test]
    fn a_stored_matrix_reads_back_as_the_same_product() {
        let mut seed = 11;
        for (i, (out, input)) in [(1, 1), (33, 7), (70, 129), (32, 1000)]
            .into_iter()
            .enumerate()
        {
            let bits = [WeightBits::Eight, WeightBits::Seven][i % 2];
            let m = Int8Matrix::pack_with(&random(out * input, &mut seed), out, input, bits);
            // Four bytes ahead so that the matrix starts at a nonzero offset.
            let mut bytes = vec![0u8; 4];
            for piece in m.stored() {
                bytes.extend_from_slice(piece);
            }
            assert_eq!(bytes.len(), 4 + 4 * Int8Matrix::stored_len(out, input));
            let shared: SharedBytes = std::sync::Arc::new(bytes.clone());
            let back = Int8Matrix::from_stored(out, input, bits, shared.clone(), 4).unwrap();
            assert!(matches!(back.packed, Words::Shared { .. }));
            assert_eq!(back.weight_bits(), bits);
            let x = random(5 * input, &mut seed);
            for variant in variants() {
                assert_eq!(
                    m.matmul_with(variant, &x, 5, |_, _, _| {}),
                    back.matmul_with(variant, &x, 5, |_, _, _| {}),
                    "{out} × {input}, {variant}"
                );
            }
            let stored = |out, input, bytes: &SharedBytes, offset| {
                Int8Matrix::from_stored(out, input, bits, bytes.clone(), offset)
            };
            assert!(stored(out, input, &shared, 8).is_none());
            assert!(stored(out, input, &shared, 2).is_none());
            assert!(stored(out + PANEL, input, &shared, 4).is_none());
            assert!(stored(out, 0, &shared, 4).is_none());
            let short: SharedBytes = std::sync::Arc::new(bytes[..bytes.len() - 4].to_vec());
            assert!(stored(out, input, &short, 4).is_none());
        }
    }

    #[test]
    fn edge_shapes_match_the_references_on_every_variant() {
        // Edges: one of everything, inputs not a multiple of four, tails of
        // tiles and panels, both ways of splitting the work across threads.
        for variant in variants() {
            for (i, (rows, out, input)) in [
                (1, 1, 1),
                (1, 33, 3),
                (7, 31, 17),
                (9, 65, 64),
                (8, 32, 2),
                (17, 100, 33),
                (70, 40, 31),
                (130, 97, 129),
                (33, 64, 65),
                (200, 40, 1000),
                (3, 200, 384),
                (2, 3, 1537),
                (0, 5, 5),
            ]
            .into_iter()
            .enumerate()
            {
                for form in FORMS {
                    check(variant, form, rows, out, input, i as u64);
                }
            }
        }
    }

    #[test]
    fn the_largest_input_does_not_overflow() {
        // Every product at its largest magnitude, 255 · 127, MAX_INPUT
        // times: the sums reach 32,385 · 65,536 ≈ 0.99 · 2³¹. With 7-bit
        // weights every pair of products `vpmaddubsw` adds is at its
        // largest, 2 · 255 · 63 (the activations all quantize to 255 or 0),
        // on every variant; with 7-bit activations too, every sum of two
        // pairs the BW and AVX2 kernels add in i16 is, 4 · 127 · 63.
        let input = MAX_INPUT;
        let w = vec![1f32; 2 * input];
        for form in FORMS {
            let m = packed(&w, 2, input, form);
            for variant in variants() {
                for sign in [1f32, -1.0] {
                    let x = vec![sign; input];
                    let y = m.matmul_with(variant, &x, 1, |_, _, _| {});
                    let want = sign * input as f32;
                    assert!(
                        (y[0] - want).abs() <= 1e-6 * input as f32,
                        "{variant}, {form:?}: {y:?}"
                    );
                    assert_eq!(y[0], y[1]);
                }
            }
        }
    }

    #[test]
    fn zero_and_non_finite_rows_and_columns() {
        let (out, input) = (3, 6);
        let mut w = vec![0.5f32; out * input];
        w[2 * input + 1] = f32::NAN;
        w[input..2 * input].fill(0.0);
        let m = Int8Matrix::pack(&w, out, input);
        let mut x = vec![1f32; 3 * input];
        x[..input].fill(0.0);
        x[2 * input + 4] = f32::INFINITY;
        for variant in variants() {
            let y = m.matmul_with(variant, &x, 3, |_, _, _| {});
            // A zero row gives zeros, except through the NaN column.
            assert_eq!(&y[..2], &[0.0, 0.0], "{variant}");
            // A finite row: 6 · 0.5 (give or take the f32 roundings of
            // the scales), a zero column, a NaN column.
            assert!((y[3] - 3.0).abs() < 1e-6 && y[4] == 0.0, "{variant}: {y:?}");
            assert!(y[2].is_nan() && y[5].is_nan());
            // A row with an infinity: all NaN.
            assert!(y[6..].iter().all(|v| v.is_nan()), "{variant}: {y:?}");
        }
    }

    #[test]
    fn finish_sees_every_value_once_in_place() {
        // Many rows (split by rows) and few rows with many panels (split
        // by panels).
        for (rows, out, input) in [(200, 70, 20), (3, 300, 40), (1, 5, 3)] {
            let mut seed = 11;
            let x = random(rows * input, &mut seed);
            let w = random(out * input, &mut seed);
            let bias = random(out, &mut seed);
            let m = Int8Matrix::pack(&w, out, input);
            for variant in variants() {
                let seen: Vec<AtomicU32> = (0..rows * out).map(|_| AtomicU32::new(0)).collect();
                let y = m.matmul_with(variant, &x, rows, |row, column, values| {
                    assert!(column.is_multiple_of(PANEL) && values.len() <= PANEL);
                    for (i, v) in values.iter_mut().enumerate() {
                        seen[row * out + column + i].fetch_add(1, Ordering::Relaxed);
                        *v = (*v + bias[column + i]).max(0.0);
                    }
                });
                assert!(seen.iter().all(|n| n.load(Ordering::Relaxed) == 1));
                let plain = m.matmul_with(variant, &x, rows, |_, _, _| {});
                for (i, (a, b)) in y.iter().zip(&plain).enumerate() {
                    assert_eq!(*a, (b + bias[i % out]).max(0.0), "{variant} at {i}");
                }
            }
        }
    }

    #[test]
    fn matmul_runs_the_detected_variant_and_as_a_candle_op() {
        use candle_core::{Device, Tensor};
        let (rows, out, input) = (5, 40, 24);
        let mut seed = 17;
        let x = random(rows * input, &mut seed);
        let w = random(out * input, &mut seed);
        let m = Int8Matrix::pack(&w, out, input);
        let y = m.matmul(&x, rows);
        assert_eq!(y, m.matmul_with(Variant::detect(), &x, rows, |_, _, _| {}));
        assert_eq!(available(), Variant::detect() != Variant::Portable);
        let t = Tensor::from_vec(x, (1, rows, input), &Device::Cpu).unwrap();
        let via_op = t.apply_op1_no_bwd(&m).unwrap();
        assert_eq!(via_op.dims(), &[1, rows, out]);
        assert_eq!(via_op.flatten_all().unwrap().to_vec1::<f32>().unwrap(), y);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn any_shape_matches_the_references(
            rows in 1usize..40,
            out in 1usize..100,
            input in 1usize..300,
            seed: u64,
        ) {
            for variant in variants() {
                for form in FORMS {
                    check(variant, form, rows, out, input, seed);
                }
            }
        }
    }
}
