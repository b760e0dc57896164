//! A bf16 matrix product with f32 accumulation for CPUs with AVX-512 BF16
//! (`vdpbf16ps`), which multiplies at twice the fp32 FMA rate.
//!
//! The weights, `W` of shape (out, in) as PyTorch and GGUF store them, are
//! rounded to bf16 once, at load, and packed into panels of [`PANEL`]
//! output columns: for each pair of input positions `(2p, 2p+1)`, the 32
//! columns' two values sit side by side in one 32-bit word, which is what
//! `vdpbf16ps` multiplies with a broadcast pair of activations. The
//! activations are rounded to bf16 per call (round to nearest even) by each
//! thread for its own rows. Sums are f32 throughout, so the only error is
//! the rounding of the two operands (at most 2⁻⁸ relative each).
//!
//! All `unsafe` code of docent lives in this module: the intrinsics and the
//! raw pointers of the micro-kernel. The safe entry points check shapes
//! before calling it, and [`available`] guards the CPU features.

use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Output columns per packed panel: two 16-lane registers.
pub const PANEL: usize = 32;

/// Rows of the activation tile kept in registers: 8 rows × 2 registers = 16
/// accumulators, plus the two weight registers and the broadcast.
const TILE_ROWS: usize = 8;

/// Rows per cache block: a block's bf16 activations (≤ 64 × 1536 × 2 bytes)
/// stay in L2 while every panel passes over them.
const BLOCK_ROWS: usize = 64;

/// Whether this CPU runs the bf16 kernel (AVX-512 F and BF16), detected
/// once at run time. `DOCENT_BF16=off` makes docent ignore BF16 (and so
/// AMX-BF16), to run on one machine what a CPU without it runs (with
/// `DOCENT_INT8_VARIANT` and `DOCENT_AMX=off`, the int8 side).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if crate::switched_off("DOCENT_BF16") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Rounds `x` to bf16, to nearest with ties to even (as `vcvtne2ps2bf16`
/// does), keeping NaN a NaN.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// One or two values as a bf16 pair: the first in the low half, the second
/// (or zero) in the high half, as `vdpbf16ps` multiplies them.
fn pair(two: &[f32]) -> u32 {
    let low = to_bf16(two[0]) as u32;
    let high = two.get(1).map_or(0, |&x| to_bf16(x) as u32);
    low | (high << 16)
}

/// The f32 value of a bf16.
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// A weight matrix of shape (out, in), rounded to bf16 and packed for
/// [`Bf16Matrix::matmul`].
pub struct Bf16Matrix {
    out: usize,
    input: usize,
    /// Pairs of input positions: `input` rounded up to even, halved.
    pairs: usize,
    /// Panel `j`, pair `p`, column `c` at `(j · pairs + p) · PANEL + c`: the
    /// bf16 of input `2p` in the low half, of `2p + 1` in the high half.
    /// Columns past `out` and the odd input's partner are zero.
    packed: Words,
}

pub use crate::panels::SharedBytes;
use crate::panels::Words;

impl Bf16Matrix {
    /// Packs `weight`, row-major (out, in).
    pub fn pack(weight: &[f32], out: usize, input: usize) -> Bf16Matrix {
        assert_eq!(weight.len(), out * input, "weight is not {out} × {input}");
        let pairs = input.div_ceil(2);
        let panels = out.div_ceil(PANEL);
        let mut packed = vec![0u32; panels * pairs * PANEL];
        packed
            .par_chunks_mut(pairs * PANEL)
            .enumerate()
            .for_each(|(j, panel)| {
                for c in 0..PANEL.min(out - j * PANEL) {
                    let row = &weight[(j * PANEL + c) * input..][..input];
                    for (p, two) in row.chunks(2).enumerate() {
                        panel[p * PANEL + c] = pair(two);
                    }
                }
            });
        Bf16Matrix {
            out,
            input,
            pairs,
            packed: Words::Owned(packed),
        }
    }

    /// A matrix packed earlier ([`Bf16Matrix::packed`]), e.g. read back from
    /// a cache file; `None` if `packed` does not have the packed length.
    pub fn from_packed(out: usize, input: usize, packed: Vec<u32>) -> Option<Bf16Matrix> {
        let pairs = input.div_ceil(2);
        (packed.len() == Self::packed_len(out, input)).then_some(Bf16Matrix {
            out,
            input,
            pairs,
            packed: Words::Owned(packed),
        })
    }

    /// Like [`Bf16Matrix::from_packed`], over the packed words stored at
    /// `offset` in `bytes` (a mapped cache file: nothing is copied).
    /// `None` if they do not fit there or are not 4-byte aligned.
    pub fn from_shared(
        out: usize,
        input: usize,
        bytes: SharedBytes,
        offset: usize,
    ) -> Option<Bf16Matrix> {
        Some(Bf16Matrix {
            out,
            input,
            pairs: input.div_ceil(2),
            packed: Words::shared(bytes, offset, Self::packed_len(out, input))?,
        })
    }

    /// Words a packed (out, in) matrix takes.
    pub fn packed_len(out: usize, input: usize) -> usize {
        out.div_ceil(PANEL) * input.div_ceil(2) * PANEL
    }

    /// The packed words, in the layout [`Bf16Matrix::from_packed`] takes.
    pub fn packed(&self) -> &[u32] {
        self.packed.get()
    }

    /// Output size (rows of the packed weight).
    pub fn out(&self) -> usize {
        self.out
    }

    /// Input size (columns of the packed weight).
    pub fn input(&self) -> usize {
        self.input
    }

    /// Bytes held by the packed weights.
    pub fn bytes(&self) -> usize {
        self.packed().len() * 4
    }

    /// `x · Wᵀ` for `x` of `rows` rows of `input` values: `rows × out`
    /// values, row-major, on AMX tiles where [`crate::amx::support`] has
    /// AMX-BF16, else on AVX-512 BF16. Panics if the CPU lacks AVX-512
    /// BF16 (check [`available`] first) or if `x` is not `rows × input`.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matmul_on(crate::amx::support().bf16, x, rows)
    }

    /// [`Bf16Matrix::matmul`] on AMX (`amx`) or on AVX-512 BF16, to
    /// compare them. Panics if the CPU lacks the one asked for.
    pub fn matmul_on(&self, amx: bool, x: &[f32], rows: usize) -> Vec<f32> {
        assert!(available(), "the bf16 kernel needs AVX-512 BF16");
        assert!(
            !amx || crate::amx::support().bf16,
            "this CPU lacks AMX-BF16"
        );
        assert_eq!(
            x.len(),
            rows * self.input,
            "input is not {rows} × {}",
            self.input
        );
        crate::panels::product(
            x,
            crate::panels::Shape {
                rows,
                input: self.input,
                out: self.out,
                panel: PANEL,
                tile_rows: TILE_ROWS,
            },
            |x, rows, panels, dst, stride| self.rows_into(amx, x, rows.len(), panels, dst, stride),
        )
    }

    /// Computes panels `panels` of `rows` rows of `x` into `dst`, whose rows
    /// are `stride` values apart and whose first column is the first
    /// panel's first column. Writes every column of those panels in every
    /// one of the rows.
    fn rows_into(
        &self,
        amx: bool,
        x: &[f32],
        rows: usize,
        panels: std::ops::Range<usize>,
        dst: &mut [MaybeUninit<f32>],
        stride: usize,
    ) {
        if amx {
            return self.rows_into_amx(x, rows, panels, dst, stride);
        }
        let width = (panels.end * PANEL).min(self.out) - panels.start * PANEL;
        assert!(x.len() >= rows * self.input && stride >= width && dst.len() >= rows * stride);
        let mut a = Vec::new();
        round_rows_into(x, rows, self.input, self.input, &mut a);
        let (packed, pairs) = (self.packed(), self.pairs);
        for block in (0..rows).step_by(BLOCK_ROWS) {
            let block = block..block + BLOCK_ROWS.min(rows - block);
            tiles(
                &a,
                pairs,
                block,
                packed,
                panels.clone(),
                self.out,
                dst,
                stride,
            );
        }
    }
}

impl Bf16Matrix {
    /// [`Bf16Matrix::rows_into`] on AMX tiles: the activations rounded
    /// into rows of whole tile steps (16 pairs, zero past the input) and
    /// whole blocks of [`crate::amx::ROWS`] rows (zero rows past the end),
    /// then each block times each panel. Where the input is not a whole
    /// number of steps, the last step's weights are copied, zero-padded, so
    /// no read leaves the panel (a weight past it could be a NaN, and
    /// 0 · NaN is not 0).
    fn rows_into_amx(
        &self,
        x: &[f32],
        rows: usize,
        panels: std::ops::Range<usize>,
        dst: &mut [MaybeUninit<f32>],
        stride: usize,
    ) {
        const BLOCK: usize = crate::amx::ROWS;
        let width = (panels.end * PANEL).min(self.out) - panels.start * PANEL;
        assert!(x.len() >= rows * self.input && stride >= width && dst.len() >= rows * stride);
        let (full, rest) = (self.pairs / 16, self.pairs % 16);
        let a_stride = self.pairs.next_multiple_of(16);
        let padded = rows.next_multiple_of(BLOCK);
        // The buffers of the last call on this thread (see the int8
        // kernel's): every value is written, or zeroed as padding.
        let (mut a, mut acc) = SCRATCH.with(|s| s.take());
        a.resize(padded * a_stride, 0);
        for (src, pairs) in x
            .chunks_exact(self.input)
            .take(rows)
            .zip(a.chunks_exact_mut(a_stride))
        {
            let (row, padding) = pairs.split_at_mut(self.pairs);
            kernel::round_row(src, row);
            padding.fill(0);
        }
        a[rows * a_stride..].fill(0);
        acc.resize(panels.len() * BLOCK * PANEL, 0.0);
        let packed = self.packed();
        let panel = |j: usize| &packed[j * self.pairs * PANEL..][..self.pairs * PANEL];
        let mut tail = vec![0u32; 16 * PANEL];
        for block in (0..rows).step_by(BLOCK) {
            let n = BLOCK.min(rows - block);
            let a = &a[block * a_stride..(block + BLOCK) * a_stride];
            {
                let tiles = crate::amx::Tiles::new().expect("AMX-BF16 has tiles");
                for (j, acc) in panels.clone().zip(acc.chunks_exact_mut(BLOCK * PANEL)) {
                    let panel = panel(j);
                    if rest > 0 {
                        tail[..rest * PANEL].copy_from_slice(&panel[full * 16 * PANEL..]);
                    }
                    let tail = (rest > 0).then_some(&tail[..]);
                    tiles.bf16(a, a_stride, panel, full, tail, n, acc);
                }
            }
            for (j, acc) in panels.clone().zip(acc.chunks_exact(BLOCK * PANEL)) {
                let column = (j - panels.start) * PANEL;
                let columns = PANEL.min(self.out - j * PANEL);
                for (r, sums) in acc.chunks_exact(PANEL).take(n).enumerate() {
                    let row = &mut dst[(block + r) * stride + column..][..columns];
                    for (d, s) in row.iter_mut().zip(sums) {
                        d.write(*s);
                    }
                }
            }
        }
        SCRATCH.with(|s| s.replace((a, acc)));
    }
}

/// Sets `dst` to `len` words whose values the caller then writes, every
/// one: a buffer reused between calls is not cleared first.
fn reuse(dst: &mut Vec<u32>, len: usize) -> &mut [u32] {
    if dst.len() < len {
        dst.resize(len, 0);
    }
    dst.truncate(len);
    dst
}

/// Packs `B = Sᵀ` for [`product_into`], where `S` is `m` rows of `n` values,
/// `stride` apart in `src` (`B[l][j] = S[j][l]`): the layout of
/// [`Bf16Matrix`], panel `q`, pair `p`, column `c` at
/// `(q · pairs + p) · PANEL + c`, zero past `m` and past `n`. For
/// attention's keys, whose rows are the product's columns.
pub fn pack_transposed(src: &[f32], n: usize, m: usize, stride: usize, dst: &mut Vec<u32>) {
    let pairs = n.div_ceil(2);
    assert!(n <= stride && (m == 0 || (m - 1) * stride + n <= src.len()));
    let panels = m.div_ceil(PANEL);
    let dst = reuse(dst, panels * pairs * PANEL);
    if dst.is_empty() {
        return;
    }
    let mut row = vec![0u32; pairs];
    for (q, panel) in dst.chunks_exact_mut(pairs * PANEL).enumerate() {
        for c in 0..PANEL {
            let j = q * PANEL + c;
            if j < m {
                kernel::round_row(&src[j * stride..][..n], &mut row);
            } else {
                row.fill(0);
            }
            for (p, &word) in row.iter().enumerate() {
                panel[p * PANEL + c] = word;
            }
        }
    }
}

/// Packs `B` for [`product_into`] from its `n` rows of `m` values, `stride`
/// apart in `src` (`B[l][j] = src[l · stride + j]`), in the layout of
/// [`pack_transposed`]. For attention's values, whose rows are the sum's
/// index.
pub fn pack_rows(src: &[f32], n: usize, m: usize, stride: usize, dst: &mut Vec<u32>) {
    let pairs = n.div_ceil(2);
    assert!(m <= stride && (n == 0 || (n - 1) * stride + m <= src.len()));
    let dst = reuse(dst, m.div_ceil(PANEL) * pairs * PANEL);
    if dst.is_empty() {
        return;
    }
    for (q, panel) in dst.chunks_exact_mut(pairs * PANEL).enumerate() {
        let (first, columns) = (q * PANEL, PANEL.min(m - q * PANEL));
        for (p, words) in panel.chunks_exact_mut(PANEL).enumerate() {
            let low = &src[2 * p * stride + first..][..columns];
            let high = (2 * p + 1 < n).then(|| &src[(2 * p + 1) * stride + first..][..columns]);
            kernel::interleave(low, high, words);
        }
    }
}

/// Rounds `rows` rows of `cols` values, `stride` apart in `src`, to bf16
/// pairs in `dst` (`cols.div_ceil(2)` words a row; the odd last value's
/// partner zero), for [`product_into`].
pub fn round_rows_into(src: &[f32], rows: usize, cols: usize, stride: usize, dst: &mut Vec<u32>) {
    let pairs = cols.div_ceil(2);
    assert!(rows == 0 || (rows - 1) * stride + cols <= src.len());
    let dst = reuse(dst, rows * pairs);
    for (r, row) in dst.chunks_exact_mut(pairs.max(1)).take(rows).enumerate() {
        kernel::round_row(&src[r * stride..][..cols], &mut row[..pairs]);
    }
}

/// `c = a · B` on AVX-512 BF16: `a` is `rows` rows of `pairs` bf16 pairs
/// ([`round_rows_into`]), `packed` is `B` of `2 · pairs` (or one fewer)
/// rows and `m` columns ([`pack_rows`], [`pack_transposed`]); `c` gets `rows` rows of `m` f32,
/// `c_stride` apart. Sums in f32; the only error is the operands' rounding.
/// On one thread. Panics without AVX-512 BF16 ([`available`]) or if the
/// shapes do not fit.
pub fn product_into(
    a: &[u32],
    rows: usize,
    pairs: usize,
    packed: &[u32],
    m: usize,
    c: &mut [f32],
    c_stride: usize,
) {
    assert!(a.len() >= rows * pairs && packed.len() == m.div_ceil(PANEL) * pairs * PANEL);
    assert!(c_stride >= m && (rows == 0 || c.len() >= (rows - 1) * c_stride + m));
    if rows == 0 || m == 0 {
        return;
    }
    if pairs == 0 {
        for row in c.chunks_mut(c_stride).take(rows) {
            row[..m].fill(0.0);
        }
        return;
    }
    // SAFETY: initialised f32s viewed as possibly uninitialised ones, which
    // the kernel only writes (f32 values); the layouts are the same.
    #[allow(unsafe_code)]
    let c = unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) };
    tiles(
        a,
        pairs,
        0..rows,
        packed,
        0..m.div_ceil(PANEL),
        m,
        c,
        c_stride,
    );
}

/// The rows `rows` of `a` (`pairs` words a row) times the panels `panels`
/// of `packed` (`pairs · PANEL` words each; `out` columns in all), in tiles
/// of [`TILE_ROWS`] rows: into rows of `dst`, `stride` apart, whose first
/// column is the first panel's first column.
#[allow(clippy::too_many_arguments)]
fn tiles(
    a: &[u32],
    pairs: usize,
    rows: std::ops::Range<usize>,
    packed: &[u32],
    panels: std::ops::Range<usize>,
    out: usize,
    dst: &mut [MaybeUninit<f32>],
    stride: usize,
) {
    for j in panels.clone() {
        let panel = &packed[j * pairs * PANEL..][..pairs * PANEL];
        let column = (j - panels.start) * PANEL;
        let columns = PANEL.min(out - j * PANEL);
        let mut r = rows.start;
        while r < rows.end {
            let tile = TILE_ROWS.min(rows.end - r);
            kernel::tile(
                &a[r * pairs..(r + tile) * pairs],
                pairs,
                panel,
                &mut dst[r * stride + column..],
                stride,
                tile,
                columns,
            );
            r += tile;
        }
    }
}

thread_local! {
    /// [`Bf16Matrix::rows_into_amx`]'s rounded activations and sums, kept
    /// for the thread's next call (taken out during a call).
    static SCRATCH: std::cell::Cell<(Vec<u32>, Vec<f32>)> = const {
        std::cell::Cell::new((Vec::new(), Vec::new()))
    };
}

/// As a candle op: `x` of shape (…, in), contiguous f32, to (…, out).
impl candle_core::CustomOp1 for Bf16Matrix {
    fn name(&self) -> &'static str {
        "docent-bf16-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        if !available() {
            candle_core::bail!("bf16 matmul: this CPU lacks AVX-512 BF16; use f32 precision");
        }
        crate::weight_op(
            storage,
            layout,
            "bf16 matmul",
            (self.input, self.out),
            |x, rows| self.matmul(x, rows),
        )
    }
}

/// Matrix precision of docent's encoder and prompt evaluation
/// (`embed.precision`, `generate.prefill_precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 weights and activations (candle's gemm): the reference.
    F32,
    /// bf16 weights and activations with f32 sums, on AVX-512 BF16 (and
    /// on AMX-BF16 tiles where the CPU has them).
    Bf16,
    /// 8-bit weights (per output column) and activations (per row) with
    /// integer sums ([`crate::int8`]), on AMX-INT8, AVX-512 VNNI or BW,
    /// AVX-VNNI or AVX2. About 1% of error per product: embeddings within
    /// cosine 0.993 of f32 with retrieval on the development set
    /// unchanged (docs/benchmarks.md, session 15); prompt evaluation 1.6×
    /// bf16's speed with the reference test's greedy tokens and the
    /// answers' F1 unchanged (session 27).
    Int8,
    /// The fastest precision this CPU has whose measured accuracy holds:
    /// for the encoder and prompt evaluation ([`Precision::resolve`]) int8
    /// on AVX-512 VNNI or AVX-VNNI, bf16 on AVX-512 BF16 without it, int8
    /// on AVX-512 BW or AVX2 without either (7-bit weights and
    /// activations for the encoder, 7-bit weights for prompts), f32
    /// elsewhere; for the
    /// reranker ([`Precision::resolve_cross_encoder`]) int8 on VNNI, bf16
    /// on AVX-512 BF16 without it, else f32.
    #[default]
    Auto,
}

impl Precision {
    /// The precision the embedding encoder and prompt evaluation run:
    /// `Auto` is int8 where VNNI exists (AVX-512 or AVX-VNNI: 8-bit
    /// activations), else bf16 where AVX-512 BF16 exists, else int8 on the
    /// 7-bit kernels of AVX-512 BW or AVX2, else f32. On those kernels the
    /// encoder quantizes weights and activations to 7 bits, which kept
    /// hybrid nDCG@10 within 0.002 of f32 on the development set (R@5 four
    /// questions of 1,721 below; with the reranker f32's figures) and
    /// embedded 1.35× faster than f32, then 1.15× faster again with its
    /// sums added in pairs (docs/benchmarks.md, sessions 22 and 30); prompts
    /// keep 8-bit activations with 7-bit weights, which kept the answers'
    /// EM and F1 at f32's (0.376 and 0.611 against 0.613) with 1.7× its
    /// prompt speed (session 29). Asking for a precision the CPU lacks is
    /// an error that says what to do.
    pub fn resolve(self) -> Result<Precision, String> {
        match self {
            Precision::Auto if !available() && crate::int8::available() => Ok(Precision::Int8),
            _ => self.resolve_cross_encoder(),
        }
    }

    /// The precision a cross-encoder (the reranker) runs: `Auto` is int8
    /// only where VNNI exists, whose 8-bit activations give ONNX Runtime's
    /// integers for a model quantized by it; the 7-bit paths were not
    /// measured on reranking. Else bf16 where AVX-512 BF16 exists, else f32.
    pub fn resolve_cross_encoder(self) -> Result<Precision, String> {
        match self {
            Precision::Auto if crate::int8::Variant::detect().has_vnni() => Ok(Precision::Int8),
            _ => self.resolve_common(),
        }
    }

    /// What both share: `Auto` is bf16 where AVX-512 BF16 exists, else
    /// f32; an explicit precision the CPU lacks is refused.
    fn resolve_common(self) -> Result<Precision, String> {
        match self {
            Precision::Auto if available() => Ok(Precision::Bf16),
            Precision::Auto => Ok(Precision::F32),
            Precision::Bf16 if !available() => Err(
                "bf16 precision needs a CPU with AVX-512 BF16, which this one lacks; set the precision to \"auto\" or \"f32\"".into(),
            ),
            Precision::Int8 if !crate::int8::available() => Err(
                "int8 precision needs a CPU with AVX-512 or AVX2, which this one lacks; set the precision to \"auto\" or \"f32\"".into(),
            ),
            p => Ok(p),
        }
    }

    /// The kernel a resolved precision runs on this CPU: `amx-int8`,
    /// `avx512-vnni`, `avx-vnni`, `avx512-bw`, `avx2` or `portable` for
    /// int8, `amx-bf16` or `avx512-bf16` for bf16, candle's `gemm` for f32 (and for `Auto`,
    /// which callers resolve first).
    pub fn kernel(self) -> &'static str {
        match self {
            Precision::Int8 => crate::int8::Variant::detect().as_str(),
            Precision::Bf16 if crate::amx::support().bf16 => "amx-bf16",
            Precision::Bf16 => "avx512-bf16",
            Precision::F32 | Precision::Auto => "gemm",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
            Precision::Auto => "auto",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[allow(unsafe_code)]
mod kernel {
    use super::{PANEL, TILE_ROWS};
    use std::mem::MaybeUninit;

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// Rounds a row of f32 to bf16 pairs (the last pair's high half zero
    /// when the row is odd).
    pub fn round_row(src: &[f32], dst: &mut [u32]) {
        assert_eq!(dst.len(), src.len().div_ceil(2));
        #[allow(unused_mut)]
        let mut whole = 0;
        #[cfg(target_arch = "x86_64")]
        if super::available() {
            whole = src.len() / 32;
            // SAFETY: the features were detected at run time; `round_32`
            // reads 32 values and writes 16 words at offsets below
            // `whole · 32` and `whole · 16`, inside both slices.
            unsafe {
                for i in 0..whole {
                    round_32(src.as_ptr().add(i * 32), dst.as_mut_ptr().add(i * 16));
                }
            }
        }
        for (p, two) in src[whole * 32..].chunks(2).enumerate() {
            dst[whole * 16 + p] = super::pair(two);
        }
    }

    /// `words[c]` = the bf16 pair (`low[c]`, `high[c]`, or 0 without
    /// `high`) for the columns of `low`; the words past them 0.
    pub fn interleave(low: &[f32], high: Option<&[f32]>, words: &mut [u32]) {
        assert!(words.len() == super::PANEL && low.len() <= words.len());
        assert!(high.is_none_or(|h| h.len() == low.len()));
        #[cfg(target_arch = "x86_64")]
        if low.len() == super::PANEL && super::available() {
            let zeros = [0f32; super::PANEL];
            let high = high.unwrap_or(&zeros);
            // SAFETY: the features were detected at run time; each of the
            // three slices holds PANEL = 32 values.
            unsafe { interleave_32(low.as_ptr(), high.as_ptr(), words.as_mut_ptr()) };
            return;
        }
        for (c, word) in words.iter_mut().enumerate() {
            *word = match (low.get(c), high) {
                (Some(&l), Some(h)) => super::pair(&[l, h[c]]),
                (Some(&l), None) => super::pair(&[l]),
                (None, _) => 0,
            };
        }
    }

    /// [`interleave`] of 32 columns: both rows rounded by one
    /// `vcvtne2ps2bf16` each half, their halves interleaved by `vpermw`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn interleave_32(low: *const f32, high: *const f32, words: *mut u32) {
        // SAFETY: the caller guarantees 32 readable values in `low` and
        // `high` and 32 writable words; the loads and stores are unaligned.
        unsafe {
            // Word c of a half takes bf16 c (low's) and 16 + c (high's).
            let order = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            for half in 0..2 {
                let l = _mm512_loadu_ps(low.add(16 * half));
                let h = _mm512_loadu_ps(high.add(16 * half));
                let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(h, l));
                let words_ = _mm512_permutexvar_epi16(order, both);
                _mm512_storeu_si512(words.add(16 * half) as *mut __m512i, words_);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn round_32(src: *const f32, dst: *mut u32) {
        // SAFETY: the caller guarantees 32 readable values and 16 writable
        // words; the loads and store are unaligned.
        unsafe {
            let low = _mm512_loadu_ps(src);
            let high = _mm512_loadu_ps(src.add(16));
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            _mm512_storeu_si512(dst as *mut __m512i, packed);
        }
    }

    /// `rows` (≤ TILE_ROWS) rows of `a` (pairs, `stride` words apart) times
    /// one packed panel, into the first `columns` (≤ PANEL) values of each
    /// of `rows` rows of `c`, `c_stride` apart.
    pub fn tile(
        a: &[u32],
        stride: usize,
        panel: &[u32],
        c: &mut [MaybeUninit<f32>],
        c_stride: usize,
        rows: usize,
        columns: usize,
    ) {
        let pairs = panel.len() / PANEL;
        assert!((1..=TILE_ROWS).contains(&rows) && (1..=PANEL).contains(&columns));
        assert!(stride >= pairs && a.len() >= (rows - 1) * stride + pairs);
        assert!(c.len() >= (rows - 1) * c_stride + columns);
        assert!(super::available());
        #[cfg(target_arch = "x86_64")]
        {
            let full = if columns == 32 {
                u32::MAX
            } else {
                (1u32 << columns) - 1
            };
            let masks = (full as u16, (full >> 16) as u16);
            let (a, b, c) = (a.as_ptr(), panel.as_ptr(), c.as_mut_ptr() as *mut f32);
            // SAFETY: AVX-512 F and BF16 were checked above; the asserts
            // bound every read of `a` (row r < rows, pair p < pairs) and
            // `panel` (p · 32 + 32 ≤ len), and the masked stores write
            // only columns < `columns` of rows < `rows` of `c`.
            unsafe {
                match rows {
                    12 => tile_rows::<12>(a, stride, b, pairs, c, c_stride, masks),
                    11 => tile_rows::<11>(a, stride, b, pairs, c, c_stride, masks),
                    10 => tile_rows::<10>(a, stride, b, pairs, c, c_stride, masks),
                    9 => tile_rows::<9>(a, stride, b, pairs, c, c_stride, masks),
                    8 => tile_rows::<8>(a, stride, b, pairs, c, c_stride, masks),
                    7 => tile_rows::<7>(a, stride, b, pairs, c, c_stride, masks),
                    6 => tile_rows::<6>(a, stride, b, pairs, c, c_stride, masks),
                    5 => tile_rows::<5>(a, stride, b, pairs, c, c_stride, masks),
                    4 => tile_rows::<4>(a, stride, b, pairs, c, c_stride, masks),
                    3 => tile_rows::<3>(a, stride, b, pairs, c, c_stride, masks),
                    2 => tile_rows::<2>(a, stride, b, pairs, c, c_stride, masks),
                    _ => tile_rows::<1>(a, stride, b, pairs, c, c_stride, masks),
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_rows<const R: usize>(
        a: *const u32,
        stride: usize,
        b: *const u32,
        pairs: usize,
        c: *mut f32,
        c_stride: usize,
        (mask0, mask1): (u16, u16),
    ) {
        // SAFETY: the caller (`tile`) checked the bounds described there.
        unsafe {
            let mut low = [_mm512_setzero_ps(); R];
            let mut high = [_mm512_setzero_ps(); R];
            for p in 0..pairs {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_ps(b.add(p * PANEL) as *const f32));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_ps(b.add(p * PANEL + 16) as *const f32));
                for r in 0..R {
                    let pair = a.add(r * stride + p).read_unaligned() as i32;
                    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    low[r] = _mm512_dpbf16_ps(low[r], a, b0);
                    high[r] = _mm512_dpbf16_ps(high[r], a, b1);
                }
            }
            for r in 0..R {
                _mm512_mask_storeu_ps(c.add(r * c_stride), mask0, low[r]);
                _mm512_mask_storeu_ps(c.add(r * c_stride + 16), mask1, high[r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The product of the bf16-rounded operands in f64, and the sum of the
    /// absolute products (the scale of the f32 accumulation error).
    fn reference(
        x: &[f32],
        w: &[f32],
        rows: usize,
        out: usize,
        input: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        let mut y = vec![0f64; rows * out];
        let mut scale = vec![0f64; rows * out];
        for i in 0..rows {
            for o in 0..out {
                for k in 0..input {
                    let p = r(x[i * input + k]) * r(w[o * input + k]);
                    y[i * out + o] += p;
                    scale[i * out + o] += p.abs();
                }
            }
        }
        (y, scale)
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to even (1).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: even is up.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    /// The kernels this CPU runs: AVX-512 BF16 (`false`), and AMX (`true`)
    /// where it has AMX-BF16.
    fn kernels() -> Vec<bool> {
        let mut kernels = vec![false];
        if crate::amx::support().bf16 {
            kernels.push(true);
        }
        kernels
    }

    fn check(rows: usize, out: usize, input: usize, seed: u64) {
        for amx in kernels() {
            check_on(amx, rows, out, input, seed);
        }
    }

    fn check_on(amx: bool, rows: usize, out: usize, input: usize, seed: u64) {
        let mut seed = seed | 1;
        let x = random(rows * input, &mut seed);
        let w = random(out * input, &mut seed);
        let m = Bf16Matrix::pack(&w, out, input);
        let got = m.matmul_on(amx, &x, rows);
        if amx == crate::amx::support().bf16 {
            assert_eq!(
                got,
                m.matmul(&x, rows),
                "matmul runs the AMX kernel where it can"
            );
        }
        assert_eq!(got.len(), rows * out);
        let (want, scale) = reference(&x, &w, rows, out, input);
        for i in 0..rows * out {
            // f32 sums of `input` products: a few ulps of their magnitude.
            let error = (got[i] as f64 - want[i]).abs();
            assert!(
                error <= 1e-6 * scale[i] + 1e-30,
                "amx {amx}, {rows}×{input}·{input}×{out} at {i}: {} vs {} (scale {})",
                got[i],
                want[i],
                scale[i]
            );
        }
        // And against the unrounded f32 product: each operand is off by at
        // most 2⁻⁸ relative, so a product by at most about 2⁻⁷.
        for r in 0..rows {
            for o in 0..out {
                let exact: f64 = (0..input)
                    .map(|k| x[r * input + k] as f64 * w[o * input + k] as f64)
                    .sum();
                let error = (got[r * out + o] as f64 - exact).abs();
                assert!(
                    error <= scale[r * out + o] / 128.0 + 1e-6,
                    "{error} against {exact}"
                );
            }
        }
    }

    #[test]
    fn ragged_shapes_match_the_rounded_reference() {
        if !available() {
            eprintln!("skipped: this CPU lacks AVX-512 BF16");
            return;
        }
        // Edges: one of everything, odd inputs, tails of tiles and panels,
        // both ways of splitting the work across threads.
        for (i, (rows, out, input)) in [
            (1, 1, 1),
            (1, 33, 3),
            (7, 31, 17),
            (9, 65, 64),
            (8, 32, 2),
            (17, 100, 33),
            (70, 40, 31),
            (130, 97, 129),
            (33, 64, 64),
            (32, 32, 65),
            (200, 40, 384),
            (3, 200, 384),
            (0, 5, 5),
        ]
        .into_iter()
        .enumerate()
        {
            check(rows, out, input, i as u64);
        }
    }

    /// `a · B` through [`round_rows_into`], [`pack_rows`] or
    /// [`pack_transposed`] and [`product_into`], against the rounded
    /// operands' product in f64, with `a` and the matrices strided in
    /// bigger buffers and the buffers reused dirty between calls.
    fn check_small(rows: usize, n: usize, m: usize, seed: u64, words: &mut [Vec<u32>; 2]) {
        let mut seed = seed | 1;
        let (a_stride, b_stride) = (n + 3, m + 5);
        let a = random(rows * a_stride, &mut seed);
        // B as rows (n × m) and the same values as its transpose's rows.
        let b = random(n * b_stride, &mut seed);
        let t_stride = n + 1;
        let mut t = vec![f32::NAN; m * t_stride];
        for l in 0..n {
            for j in 0..m {
                t[j * t_stride + l] = b[l * b_stride + j];
            }
        }
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        for transposed in [false, true] {
            let [rounded, packed] = &mut *words;
            round_rows_into(&a, rows, n, a_stride, rounded);
            if transposed {
                pack_transposed(&t, n, m, t_stride, packed);
            } else {
                pack_rows(&b, n, m, b_stride, packed);
            }
            let c_stride = m + 2;
            let mut c = vec![f32::NAN; rows * c_stride];
            product_into(rounded, rows, n.div_ceil(2), packed, m, &mut c, c_stride);
            for i in 0..rows {
                for j in 0..m {
                    let (mut want, mut scale) = (0f64, 0f64);
                    for l in 0..n {
                        let p = r(a[i * a_stride + l]) * r(b[l * b_stride + j]);
                        want += p;
                        scale += p.abs();
                    }
                    let got = c[i * c_stride + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * scale + 1e-30,
                        "transposed {transposed}, {rows}×{n}·{n}×{m} at ({i}, {j}): {got} vs {want}"
                    );
                }
                // The gaps between the rows are not written.
                assert!(c[i * c_stride + m..][..2].iter().all(|v| v.is_nan()));
            }
        }
    }

    #[test]
    fn attention_products_match_the_rounded_reference() {
        if !available() {
            eprintln!("skipped: this CPU lacks AVX-512 BF16");
            return;
        }
        let mut words = [vec![7u32; 9000], vec![u32::MAX; 9000]];
        // Head sizes 32, 64 and 128 against short and long inputs; odd
        // sums; tails of tiles and panels; one of everything.
        for (i, (rows, n, m)) in [
            (1, 1, 1),
            (50, 32, 50),
            (50, 50, 32),
            (64, 64, 97),
            (33, 128, 31),
            (9, 7, 33),
            (8, 255, 64),
            (3, 2, 65),
            (0, 4, 4),
            (5, 0, 3),
        ]
        .into_iter()
        .enumerate()
        {
            check_small(rows, n, m, i as u64, &mut words);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn any_shape_matches_the_rounded_reference(
            rows in 1usize..150,
            out in 1usize..110,
            input in 1usize..200,
            seed: u64,
        ) {
            if available() {
                check(rows, out, input, seed);
            }
        }
    }
}
