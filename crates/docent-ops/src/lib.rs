//! CPU kernels shared by docent's embedder and generator, written so the
//! compiler vectorises them: a polynomial `exp` (libm's scalar `expf` was 13%
//! of bulk embedding and 10% of prompt evaluation), the softmax and SwiGLU
//! built on it, attention for one decoded token over the KV cache, and
//! helpers for candle custom ops over contiguous f32 data that split rows
//! across rayon's pool; and matrix products in bf16 ([`bf16`]) and int8
//! ([`int8`]), and decoding's products on GGUF `Q8_0` ([`q8`]), `Q4_K`
//! ([`q4k`]) and `Q6_K` ([`q6k`]) weights.

pub mod amx;
pub mod attention;
pub mod bf16;
pub mod int8;
mod kquant;
mod panels;
pub use panels::map_file;
pub mod q4k;
pub mod q6k;
pub mod q8;

/// CPU seconds this process and its reaped children (the PDF extraction
/// workers, once ended) have used, user and system, from `/proc/self/stat`
/// (in clock ticks of 1/100 s, Linux's `USER_HZ`), for benchmarks.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name, which may hold spaces, in parentheses: the
    // state is field 3, so utime, stime, cutime, cstime (14–17) are the
    // 12th to 15th fields after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<f64>().ok())
        .sum::<Option<f64>>()?;
    Some(ticks / 100.0)
}

/// The CPU's model name (`/proc/cpuinfo`), to print next to every figure.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The matrix-relevant instruction sets this CPU has, detected at run time.
pub fn cpu_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        for (name, present) in [
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avxvnni", has!("avxvnni")),
            ("avx512f", has!("avx512f")),
            ("avx512bw", has!("avx512bw")),
            ("avx512vnni", has!("avx512vnni")),
            ("avx512bf16", has!("avx512bf16")),
        ] {
            if present {
                found.push(name);
            }
        }
    }
    let amx = amx::support();
    if amx.int8 {
        found.push("amx-int8");
    }
    if amx.bf16 {
        found.push("amx-bf16");
    }
    found
}

/// The kernels this process runs, for benchmark reports: the int8 variant
/// ([`int8::Variant::detect`]), the bf16 kernel (`amx-bf16`, `avx512-bf16`,
/// or none) and the width of the row-wise loops ([`wide`]: `avx512` or
/// `baseline`).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Kernels {
    pub int8: &'static str,
    pub bf16: Option<&'static str>,
    pub rows: &'static str,
}

/// [`Kernels`] on this CPU.
pub fn kernels() -> Kernels {
    Kernels {
        int8: int8::Variant::detect().as_str(),
        bf16: bf16::available().then(|| bf16::Precision::Bf16.kernel()),
        rows: if wide::avx512() { "avx512" } else { "baseline" },
    }
}

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape};
use std::ops::Range;
use std::sync::OnceLock;

/// `e^x` for f32 without libm, so loops over it vectorise: `x = n·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, then `2^n · p(r)` with the degree-6 Taylor
/// polynomial (truncation error below 1.2e-7 relative). Above 88 it gives
/// e^88; below -80 it gives exactly 0, so nothing downstream turns
/// subnormal: a softmax row of e^-87-sized weights made the next matmul
/// twice as slow (x86 handles subnormal operands in microcode).
#[inline(always)]
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

/// Whether the environment variable `name` turns a CPU feature off for
/// docent (`off`, `0` or `false`), to run on one machine what a CPU
/// without it runs.
pub(crate) fn switched_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "false"))
}

/// Builds an output of `rows` rows of `out_row` values, split by rows across
/// rayon's threads once there is enough work (at least `min_rows` rows per
/// piece): `apply(rows, dst)` fills the rows `rows` into `dst`.
///
/// The pieces run on the same threads as gemm's matmuls. Spawning threads per
/// call cost 3% of bulk embedding, and candle's own elementwise pool kept a
/// worker spinning for about half a millisecond after each op, competing
/// with the matmul that followed on these 2 cores (6%).
pub fn par_fill(
    rows: usize,
    out_row: usize,
    min_rows: usize,
    apply: impl Fn(Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let threads = rayon::current_num_threads().max(1);
    let per_piece = rows.div_ceil(threads).max(min_rows.max(1));
    if per_piece >= rows {
        // One piece: handing it to the pool would only add a round trip.
        let mut out = vec![0f32; rows * out_row];
        if !out.is_empty() {
            apply(0..rows, &mut out);
        }
        return out;
    }
    // Each piece is zeroed by the thread that fills it, while it is in
    // cache, rather than the whole output by the calling thread first: that
    // serial `memset` was 10% of the CPU of `docent bench ingest`.
    panels::fill_pieces(rows * out_row, per_piece * out_row, |i, dst| {
        let first = i * per_piece;
        apply(first..first + dst.len() / out_row, dst)
    })
}

/// Rows of `row` values per piece for [`par_fill`]: at least 16k values, so
/// small inputs stay on one thread.
pub fn min_rows(row: usize) -> usize {
    (16 * 1024 / row.max(1)).max(1)
}

/// Runs `apply` over `(input, output)` pieces of whole rows of `row` input
/// values (see [`par_fill`]). Each output row has `out_row` values.
pub fn par_rows_to(
    input: &[f32],
    row: usize,
    out_row: usize,
    apply: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let row = row.max(1);
    par_fill(input.len() / row, out_row, min_rows(row), |rows, dst| {
        apply(&input[rows.start * row..rows.end * row], dst)
    })
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

/// A packed weight's product as a candle op: `x` of shape (…, `input`),
/// contiguous f32, to (…, `out`) through `matmul(x, rows)`.
pub fn weight_op(
    storage: &CpuStorage,
    layout: &Layout,
    op: &str,
    (input, out): (usize, usize),
    matmul: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> Result<(CpuStorage, Shape)> {
    let x = contiguous_f32(storage, layout, op)?;
    let dims = layout.shape().dims();
    if dims.last() != Some(&input) {
        candle_core::bail!("{op}: input {dims:?} does not end in {input}");
    }
    let rows = x.len() / input.max(1);
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("checked above") = out;
    Ok((CpuStorage::F32(matmul(x, rows)), Shape::from(out_dims)))
}

fn last_dim(layout: &Layout) -> usize {
    layout.shape().dims().last().copied().unwrap_or(1).max(1)
}

wide::dispatch! {
    /// Softmax of one row, in place. The maximum and the sum run in eight
    /// lanes: a single running float max or sum is a dependency chain the
    /// compiler may not reorder, so it stays scalar, and with the sum folded
    /// into the `exp` loop the whole loop did (12% of embedding 128-token
    /// chunks).
    pub fn softmax_in_place(y: &mut [f32]) {
        let max = lanes(y, f32::NEG_INFINITY, f32::max);
        for o in y.iter_mut() {
            *o = exp(*o - max);
        }
        let scale = 1.0 / lanes(y, 0.0, |a, b| a + b);
        for o in y.iter_mut() {
            *o *= scale;
        }
    }
}

/// Where a stored matrix's arrays start in a cache file: a multiple of
/// this many bytes from the start of the (page-aligned) mapping.
pub const STORED_ALIGN: usize = 64;

/// Writes a matrix's arrays (`KMatrix::stored`, `Q8Matrix::stored`) as
/// `from_stored` reads them back: each from the next multiple of
/// [`STORED_ALIGN`], zeros between. `at` is the writer's offset from the
/// start of the file, and is advanced.
pub fn write_stored(
    w: &mut impl std::io::Write,
    at: &mut usize,
    arrays: &[&[u8]],
) -> std::io::Result<()> {
    for array in arrays {
        let start = at.next_multiple_of(STORED_ALIGN);
        w.write_all(&[0u8; STORED_ALIGN][..start - *at])?;
        w.write_all(array)?;
        *at = start + array.len();
    }
    Ok(())
}

/// For tests: `arrays` written by [`write_stored`] after `prefix` bytes of
/// something else, as a cache file holds them; the whole file, and the
/// same file one byte short.
#[cfg(test)]
pub(crate) fn stored_file(
    prefix: usize,
    arrays: &[&[u8]],
) -> (panels::SharedBytes, panels::SharedBytes) {
    let mut file = vec![7u8; prefix];
    let mut at = prefix;
    write_stored(&mut file, &mut at, arrays).unwrap();
    assert_eq!(at, file.len());
    let short = file[..file.len() - 1].to_vec();
    (std::sync::Arc::new(file), std::sync::Arc::new(short))
}

/// The `len` values of `T` at the first multiple of [`STORED_ALIGN`] from
/// `offset` in `bytes`, and the offset after them; `None` if they do not
/// fit.
pub(crate) fn stored_at<T: bytemuck::Pod>(
    bytes: &panels::SharedBytes,
    offset: usize,
    len: usize,
) -> Option<(panels::Stored<T>, usize)> {
    let start = offset.checked_next_multiple_of(STORED_ALIGN)?;
    let stored = panels::Stored::shared(bytes.clone(), start, len)?;
    Some((stored, start + len * std::mem::size_of::<T>()))
}

/// erf by Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7 (plus
/// f32 rounding), far inside the 1e-4 the golden vectors allow.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// BERT's GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

wide::dispatch! {
    /// `values[i] = gelu(values[i] + bias[i])`, over the shorter of the two.
    pub fn bias_gelu_in_place(values: &mut [f32], bias: &[f32]) {
        for (o, &b) in values.iter_mut().zip(bias) {
            *o = gelu(*o + b);
        }
    }
}

wide::dispatch! {
    /// `dst = src + bias` (with `gelu`, `gelu(src + bias)`) for the rows of
    /// `src`, each as wide as `bias`.
    pub fn bias_rows(dst: &mut [f32], src: &[f32], bias: &[f32], gelu: bool) {
        let width = bias.len().max(1);
        for (src, dst) in src.chunks_exact(width).zip(dst.chunks_exact_mut(width)) {
            let pairs = dst.iter_mut().zip(src.iter().zip(bias));
            if gelu {
                pairs.for_each(|(o, (&v, &b))| *o = crate::gelu(v + b));
            } else {
                pairs.for_each(|(o, (&v, &b))| *o = v + b);
            }
        }
    }
}

wide::dispatch! {
    /// Layer norm of the rows of `src` into `dst`, each as wide as `weight`
    /// (`γ`; `bias` is `β`), with the arithmetic of candle's
    /// `candle_nn::ops::layer_norm` (one running f32 sum and sum of squares
    /// per row, then `(v − mean) · (var + ε)^−½ · γ + β`), so its floats.
    pub fn layer_norm_rows(dst: &mut [f32], src: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
        let width = weight.len().max(1);
        for (src, dst) in src.chunks_exact(width).zip(dst.chunks_exact_mut(width)) {
            let (mut sum, mut sum2) = (0f32, 0f32);
            for &v in src {
                sum += v;
                sum2 += v * v;
            }
            let mean = sum / width as f32;
            let var = sum2 / width as f32 - mean * mean;
            let inv_std = (var + eps).sqrt().recip();
            for ((o, &v), (&g, &b)) in dst.iter_mut().zip(src).zip(weight.iter().zip(bias)) {
                *o = (v - mean) * inv_std * g + b;
            }
        }
    }
}

/// Row-wise loops built twice: for the build's baseline (x86-64-v3: AVX2,
/// 8 floats a vector) and for AVX-512 F (16), picked at run time. Only the
/// vector width differs; each value gets the same operations in the same
/// order (no loop here folds across the vector), so both give the same
/// floats. On a CPU with AVX-512 the GELU of the up-projection and the
/// attention's softmax were 13% of bulk embedding at the baseline's width.
/// `DOCENT_AVX512=off` keeps the baseline (to run what a CPU without
/// AVX-512 runs).
#[allow(unsafe_code)]
pub mod wide {
    use std::sync::OnceLock;

    /// Whether the AVX-512 builds run: AVX-512 F detected, and not
    /// switched off.
    pub fn avx512() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            let detected = std::arch::is_x86_feature_detected!("avx512f");
            #[cfg(not(target_arch = "x86_64"))]
            let detected = false;
            detected && !crate::switched_off("DOCENT_AVX512")
        })
    }

    /// Whether this thread's calls run their AVX-512 builds: [`avx512`],
    /// except inside [`baseline`] in the crate's tests.
    #[inline(always)]
    pub fn on() -> bool {
        #[cfg(test)]
        if BASELINE.get() {
            return false;
        }
        avx512()
    }

    #[cfg(test)]
    thread_local! {
        /// Set by [`baseline`] for the calls it makes.
        static BASELINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// `f()` with this thread's calls on the baseline builds, to compare
    /// them with the AVX-512 builds (tests only: the hook costs a
    /// thread-local read per call).
    #[cfg(test)]
    pub fn baseline<T>(f: impl FnOnce() -> T) -> T {
        let before = BASELINE.replace(true);
        let out = f();
        BASELINE.set(before);
        out
    }

    /// A function whose body is built twice, at the baseline and with
    /// AVX-512 F, and which runs the AVX-512 build where [`on`] holds.
    macro_rules! dispatch {
        ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
            $(#[$doc])*
            pub fn $name($($arg: $ty),*) {
                #[inline(always)]
                fn body($($arg: $ty),*) $body
                #[cfg(target_arch = "x86_64")]
                if $crate::wide::on() {
                    #[target_feature(enable = "avx512f")]
                    fn wide($($arg: $ty),*) {
                        body($($arg),*)
                    }
                    // SAFETY: the CPU has AVX-512 F (`wide::avx512`
                    // detected it at run time), all that `wide` requires.
                    #[allow(unsafe_code)]
                    unsafe {
                        wide($($arg),*)
                    };
                    return;
                }
                body($($arg),*)
            }
        };
    }
    pub(crate) use dispatch;
}

/// Folds `values` with `f` in eight independent lanes, then folds the lanes.
#[inline(always)]
fn lanes(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    for chunk in chunks {
        for i in 0..8 {
            acc[i] = f(acc[i], chunk[i]);
        }
    }
    acc.into_iter().fold(rest, f)
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
        if !row.is_multiple_of(2) {
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

/// Attention of one new token (decoding) over the first `total` cached
/// positions, split across candle's threads.
///
/// Inputs: the query `[kv_heads · group, head_dim]`, already scaled, where
/// each KV head serves `group` consecutive query heads; and the whole key
/// and value caches, `[kv_heads, capacity, head_dim]` each, contiguous.
/// Output: `[kv_heads · group, head_dim]`.
///
/// A product through gemm ran on one thread (its small-matrix path) while
/// the other spun; at 1,000 cached positions that was a quarter of every
/// decoded token. Here the positions of each KV head are cut into pieces;
/// each piece yields, per query head, its running maximum, the sum of its
/// weights and the weighted sum of its values, and the pieces are merged
/// exactly (the log-sum-exp rescaling of split attention).
pub struct DecodeAttention {
    pub kv_heads: usize,
    pub group: usize,
    pub head_dim: usize,
    pub total: usize,
}

/// Positions per piece of work: a few pieces per thread at 1,000 positions.
const ATTENTION_PIECE: usize = 128;

impl DecodeAttention {
    /// One piece: KV head `h`, positions `range`. Per query head of the
    /// group: `[max, sum of weights, weighted values (head_dim)]`.
    fn piece(&self, q: &[f32], k: &[f32], v: &[f32], h: usize, range: Range<usize>) -> Vec<f32> {
        let (group, hd) = (self.group, self.head_dim);
        let len = range.len();
        let q = &q[h * group * hd..(h + 1) * group * hd];
        let mut scores = vec![0f32; group * len];
        for (i, key) in k[range.start * hd..range.end * hd]
            .chunks_exact(hd)
            .enumerate()
        {
            for (g, query) in q.chunks_exact(hd).enumerate() {
                scores[g * len + i] = dot(query, key);
            }
        }
        let mut out = vec![0f32; group * (hd + 2)];
        for (g, row) in scores.chunks_exact_mut(len).enumerate() {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for w in row.iter_mut() {
                *w = exp(*w - max);
                sum += *w;
            }
            out[g * (hd + 2)] = max;
            out[g * (hd + 2) + 1] = sum;
        }
        for (i, value) in v[range.start * hd..range.end * hd]
            .chunks_exact(hd)
            .enumerate()
        {
            for (g, acc) in out.chunks_exact_mut(hd + 2).enumerate() {
                let w = scores[g * len + i];
                for (a, x) in acc[2..].iter_mut().zip(value) {
                    *a = x.mul_add(w, *a);
                }
            }
        }
        out
    }
}

/// `Σ aᵢ·bᵢ` in eight lanes, so it vectorises (fused multiply-adds on x86-64-v3).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] = x[i].mul_add(y[i], lanes[i]);
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + rest
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "docent-decode-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = contiguous_f32(q, q_layout, "decode attention (query)")?;
        let k = contiguous_f32(k, k_layout, "decode attention (keys)")?;
        let v = contiguous_f32(v, v_layout, "decode attention (values)")?;
        let (kv_heads, group, hd, total) = (self.kv_heads, self.group, self.head_dim, self.total);
        let heads = kv_heads * group;
        let capacity = k.len() / (kv_heads * hd).max(1);
        if q.len() != heads * hd
            || k.len() != kv_heads * capacity * hd
            || v.len() != k.len()
            || total == 0
            || total > capacity
        {
            candle_core::bail!(
                "decode attention: query of {} values, caches of {} and {}, for {heads} heads of {hd} over {total} positions",
                q.len(),
                k.len(),
                v.len()
            );
        }
        let pieces = total.div_ceil(ATTENTION_PIECE);
        let results: Vec<OnceLock<Vec<f32>>> =
            (0..kv_heads * pieces).map(|_| OnceLock::new()).collect();
        candle_core::utils::barrier_pool().execute_chunked(results.len(), |items| {
            for item in items {
                let (h, p) = (item / pieces, item % pieces);
                let start = p * ATTENTION_PIECE;
                let end = (start + ATTENTION_PIECE).min(total);
                let base = h * capacity * hd;
                let cache = base..base + capacity * hd;
                let part = self.piece(q, &k[cache.clone()], &v[cache], h, start..end);
                let _ = results[item].set(part);
            }
        });
        let mut out = vec![0f32; heads * hd];
        for (head, dst) in out.chunks_exact_mut(hd).enumerate() {
            let (h, g) = (head / group, head % group);
            let parts = results[h * pieces..(h + 1) * pieces]
                .iter()
                .map(|r| r.get().map(|p| &p[g * (hd + 2)..(g + 1) * (hd + 2)]))
                .collect::<Option<Vec<_>>>();
            let Some(parts) = parts else {
                candle_core::bail!("decode attention: a piece of work did not run");
            };
            let max = parts.iter().map(|p| p[0]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for p in &parts {
                let scale = exp(p[0] - max);
                sum += p[1] * scale;
                for (o, x) in dst.iter_mut().zip(&p[2..]) {
                    *o = x.mul_add(scale, *o);
                }
            }
            let inv = 1.0 / sum;
            for o in dst.iter_mut() {
                *o *= inv;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((heads, hd))))
    }
}

/// The largest absolute difference between two tensors of one shape, for
/// the ops' tests against candle's reference ops.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of one shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Every row reaches `apply` once, zeroed, in one piece or many (the
    /// pieces split across threads, each zeroed by its own), and the
    /// output holds exactly what `apply` wrote.
    #[test]
    fn par_fill_hands_out_every_row_once_and_zeroed() {
        for (rows, out_row, min_rows) in [
            (0, 5, 1),
            (1, 7, 1),
            (3, 4, 100),
            (1000, 33, 7),
            (4097, 1, 64),
        ] {
            let calls = std::sync::atomic::AtomicUsize::new(0);
            let out = par_fill(rows, out_row, min_rows, |range, dst| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert_eq!(dst.len(), range.len() * out_row);
                assert!(dst.iter().all(|&v| v == 0.0), "a piece was not zeroed");
                for (r, row) in range.zip(dst.chunks_exact_mut(out_row)) {
                    for (c, v) in row.iter_mut().enumerate() {
                        // Accumulates, so a value left from elsewhere shows.
                        *v += (r * out_row + c) as f32;
                    }
                }
            });
            assert_eq!(out.len(), rows * out_row);
            assert!(
                out.iter().enumerate().all(|(i, &v)| v == i as f32),
                "{rows} × {out_row}"
            );
            let threads = rayon::current_num_threads().max(1);
            let expected_pieces = if rows == 0 {
                0
            } else {
                rows.div_ceil(rows.div_ceil(threads).max(min_rows))
            };
            assert_eq!(calls.into_inner(), expected_pieces, "{rows} × {out_row}");
        }
    }

    /// The AVX-512 builds of the row-wise loops give the baseline builds'
    /// floats, to the bit (on a CPU without AVX-512 both runs are the
    /// baseline's).
    #[test]
    fn wide_builds_give_the_baselines_floats() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 24.0
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && !switched_off("DOCENT_AVX512") {
            assert!(
                wide::avx512(),
                "AVX-512 F detected, but the wide builds are off"
            );
        }
        for width in [1usize, 7, 16, 33, 384, 1000] {
            let rows = 3;
            let src: Vec<f32> = (0..rows * width).map(|_| next()).collect();
            let (weight, bias): (Vec<f32>, Vec<f32>) = (0..width).map(|_| (next(), next())).unzip();
            let run = || {
                let mut soft = src.clone();
                for row in soft.chunks_exact_mut(width) {
                    softmax_in_place(row);
                }
                let mut gelu = src.clone();
                bias_gelu_in_place(&mut gelu, &bias);
                let mut rows_out = vec![0f32; src.len()];
                bias_rows(&mut rows_out, &src, &bias, true);
                let mut plain = vec![0f32; src.len()];
                bias_rows(&mut plain, &src, &bias, false);
                let mut norm = vec![0f32; src.len()];
                layer_norm_rows(&mut norm, &src, &weight, &bias, 1e-12);
                [soft, gelu, rows_out, plain, norm].map(|v| bits(&v))
            };
            let (wide, base) = (run(), wide::baseline(run));
            for (what, (w, b)) in [
                "softmax",
                "bias-gelu",
                "bias-rows gelu",
                "bias-rows",
                "layer norm",
            ]
            .iter()
            .zip(wide.iter().zip(&base))
            {
                assert_eq!(w, b, "{what} at width {width}");
            }
            // And they compute what they say.
            let norm = f32::from_bits(base[4][0]);
            assert!(norm.is_finite());
            let g = f32::from_bits(base[1][0]);
            assert_eq!(g.to_bits(), gelu(src[0] + bias[0]).to_bits());
        }
    }

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
    fn softmax_in_place_matches_candle_softmax_with_masked_scores() {
        // Rows of 55 (a batch's sequence length); the last ten are padding,
        // scored -1e9 as the encoder does.
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
        let x = Tensor::from_vec(data.clone(), (rows, width), &Device::Cpu).unwrap();
        let ours: Vec<Vec<f32>> = data
            .chunks_exact(width)
            .map(|row| {
                let mut row = row.to_vec();
                softmax_in_place(&mut row);
                row
            })
            .collect();
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
            let worst = max_abs_diff(&ours, &reference);
            assert!(worst < 1e-4, "{rows}x{half}: max error {worst}");
        }
    }

    #[test]
    fn decode_attention_matches_softmax_of_scores_times_values() {
        // 300 positions: three pieces, the last one short. A head width that
        // is not a multiple of eight exercises the dot product's tail.
        for (kv_heads, group, hd, capacity, total) in [
            (2usize, 3usize, 64usize, 320usize, 300usize),
            (3, 1, 12, 8, 5),
        ] {
            let wave = |n: usize, f: f32| -> Vec<f32> {
                (0..n).map(|i| (i as f32 * f).sin() * 2.0).collect()
            };
            let q = wave(kv_heads * group * hd, 0.13);
            let k = wave(kv_heads * capacity * hd, 0.071);
            let v = wave(kv_heads * capacity * hd, 0.029);
            let op = DecodeAttention {
                kv_heads,
                group,
                head_dim: hd,
                total,
            };
            let tensor = |data: &[f32], shape: (usize, usize, usize)| {
                Tensor::from_vec(data.to_vec(), shape, &Device::Cpu).unwrap()
            };
            let ours: Vec<Vec<f32>> = tensor(&q, (kv_heads, group, hd))
                .apply_op3_no_bwd(
                    &tensor(&k, (kv_heads, capacity, hd)),
                    &tensor(&v, (kv_heads, capacity, hd)),
                    &op,
                )
                .unwrap()
                .to_vec2()
                .unwrap();
            assert_eq!(ours.len(), kv_heads * group);
            for (head, row) in ours.iter().enumerate() {
                let h = head / group;
                let query = &q[head * hd..(head + 1) * hd];
                let key = |t: usize| &k[(h * capacity + t) * hd..(h * capacity + t + 1) * hd];
                let scores: Vec<f64> = (0..total)
                    .map(|t| query.iter().zip(key(t)).map(|(a, b)| (a * b) as f64).sum())
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for (d, got) in row.iter().enumerate() {
                    let want: f64 = (0..total)
                        .map(|t| weights[t] / sum * v[(h * capacity + t) * hd + d] as f64)
                        .sum();
                    assert!(
                        (*got as f64 - want).abs() < 1e-4,
                        "head {head}, {d}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
