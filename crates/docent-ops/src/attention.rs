//! A BERT layer's attention in one op: for each input and head,
//! `softmax(q·kᵀ + bias)·v`, with the scores of one (input, head) pair in a
//! per-thread buffer of `seq²` values that stays in cache.
//!
//! Done as candle ops, the same arithmetic allocated a tensor of
//! `batch · heads · seq²` scores per layer (100 MB for 32 inputs of 256
//! tokens), zeroed it on one thread, ran each head's small products as a
//! separate multi-threaded gemm call (a barrier per head), and copied the
//! transposed context back into rows on one thread. Here the pairs are
//! shared out among the threads, each pair runs its two products on one
//! thread, and the context is written straight into its rows.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;
use std::cell::RefCell;

/// The attention of a layer. Its first input is the fused Q|K|V
/// projection with its bias, `(batch · seq, 3 · hidden)`, contiguous: a row
/// per token holding Q (already scaled by `1/√head_dim`), K and V, each
/// `heads · head_dim` wide, head by head. Each head reads its columns in
/// place (strided), so no op splits the heads first. Its second input is
/// the `(batch, seq)` bias added to every score row of an input (0 for
/// tokens, a large negative value for padding). The output is the context,
/// `(batch · seq, hidden)`.
pub struct Attention {
    pub batch: usize,
    pub heads: usize,
    pub products: Products,
}

/// How the two products of each head (`q·kᵀ` and the probabilities
/// times `v`) run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Products {
    /// f32 operands and sums, on gemm's kernels.
    #[default]
    F32,
    /// Q, K, V and the probabilities rounded to bf16 (at most 2⁻⁸ relative
    /// each), sums in f32, on AVX-512 BF16 (`vdpbf16ps`, twice the f32
    /// rate, and no packing of gemm's own per call). Only where
    /// [`crate::bf16::available`].
    Bf16,
}

impl Products {
    /// bf16 for a model whose matrix products already run in bf16 or int8
    /// (`reduced`), on a CPU with AVX-512 BF16; else f32. A model asked to
    /// run in f32 keeps f32 attention. The generator's prompts take it; the
    /// encoder keeps f32 (see `docent_embed::encoder`).
    pub fn for_model(reduced: bool) -> Products {
        if reduced && crate::bf16::available() {
            Products::Bf16
        } else {
            Products::F32
        }
    }

    /// An error unless this CPU runs these products.
    fn check(self, op: &str) -> Result<()> {
        if self == Products::Bf16 && !crate::bf16::available() {
            candle_core::bail!("{op}: bf16 products need AVX-512 BF16, which this CPU lacks");
        }
        Ok(())
    }
}

/// One thread's buffers for [`one_head`], reused between heads and calls.
#[derive(Default)]
struct Work {
    /// One head's scores, then probabilities: `rows × keys`.
    scores: Vec<f32>,
    /// bf16 pairs of Q's rows, then of the probabilities' rows.
    rounded: Vec<u32>,
    /// K, then V, packed for the bf16 kernel.
    packed: Vec<u32>,
    /// The bf16 context, before it goes to its block of the output.
    context: Vec<f32>,
}

thread_local! {
    static WORK: RefCell<Work> = RefCell::new(Work::default());
}

/// One head: `softmax(q·kᵀ)·v`, with `mask(i, scores)` applied to row `i`'s
/// scores before its softmax, into the block of `out` at `start` (rows
/// `stride` apart, `v`'s columns wide).
///
/// # Safety
/// As [`kernel::context`]: no other thread may touch that block meanwhile.
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn one_head(
    products: Products,
    q: kernel::Strided,
    k: kernel::Strided,
    v: kernel::Strided,
    mask: impl Fn(usize, &mut [f32]),
    out: &kernel::Rows,
    start: usize,
    stride: usize,
) {
    let (rows, keys, head_dim) = (q.rows(), k.rows(), q.cols());
    WORK.with_borrow_mut(|w| {
        w.scores.resize(rows * keys, 0.0);
        match products {
            Products::F32 => kernel::scores(q, k, &mut w.scores),
            Products::Bf16 => {
                crate::bf16::round_rows_into(q.data(), rows, head_dim, q.stride(), &mut w.rounded);
                crate::bf16::pack_transposed(k.data(), head_dim, keys, k.stride(), &mut w.packed);
                let pairs = head_dim.div_ceil(2);
                crate::bf16::product_into(
                    &w.rounded,
                    rows,
                    pairs,
                    &w.packed,
                    keys,
                    &mut w.scores,
                    keys,
                );
            }
        }
        for (i, row) in w.scores.chunks_exact_mut(keys).enumerate() {
            mask(i, row);
            crate::softmax_in_place(row);
        }
        match products {
            // SAFETY: as the caller promises.
            Products::F32 => unsafe { kernel::context(&w.scores, v, out, start, stride) },
            Products::Bf16 => {
                crate::bf16::round_rows_into(&w.scores, rows, keys, keys, &mut w.rounded);
                crate::bf16::pack_rows(v.data(), keys, head_dim, v.stride(), &mut w.packed);
                w.context.resize(rows * head_dim, 0.0);
                let pairs = keys.div_ceil(2);
                crate::bf16::product_into(
                    &w.rounded,
                    rows,
                    pairs,
                    &w.packed,
                    head_dim,
                    &mut w.context,
                    head_dim,
                );
                // SAFETY: as the caller promises.
                unsafe { kernel::copy(&w.context, head_dim, out, start, stride) }
            }
        }
    });
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "docent-attention"
    }

    fn cpu_fwd(
        &self,
        qkv: &CpuStorage,
        qkv_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = crate::contiguous_f32(qkv, qkv_layout, "attention")?;
        let bias = crate::contiguous_f32(bias, bias_layout, "attention")?;
        let (batch, heads) = (self.batch, self.heads);
        self.products.check("attention")?;
        let dims = qkv_layout.dims();
        let [rows, fused] = *dims else {
            candle_core::bail!("attention: expected (batch · seq, 3 · hidden), got {dims:?}");
        };
        if batch == 0
            || heads == 0
            || !rows.is_multiple_of(batch)
            || !fused.is_multiple_of(3 * heads)
            || bias.len() != rows
        {
            candle_core::bail!(
                "attention: {dims:?} for {batch} inputs of {heads} heads with a bias of {}",
                bias.len()
            );
        }
        let (seq, width) = (rows / batch, fused / 3);
        let head_dim = width / heads;
        // Not zeroed first (a serial pass before the parallel one): the
        // pairs' blocks cover every value.
        let len = batch * seq * width;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if len == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((batch * seq, width))));
        }
        let dst = kernel::Rows::new(&mut out.spare_capacity_mut()[..len]);
        (0..batch * heads).into_par_iter().for_each(|pair| {
            let (b, h) = (pair / heads, pair % heads);
            // Row t of this input's head h: Q at column h·head_dim, K and V
            // one and two widths further.
            let part = |p: usize| {
                let at = b * seq * fused + p * width + h * head_dim;
                kernel::Strided::new(&qkv[at..], seq, head_dim, fused)
            };
            let bias = &bias[b * seq..(b + 1) * seq];
            let mask = |_: usize, row: &mut [f32]| {
                for (s, &m) in row.iter_mut().zip(bias) {
                    *s += m;
                }
            };
            // SAFETY: rows b·seq.., columns h·head_dim..: the block of
            // this pair alone, so no other task writes it.
            #[allow(unsafe_code)]
            unsafe {
                one_head(
                    self.products,
                    part(0),
                    part(1),
                    part(2),
                    mask,
                    &dst,
                    b * seq * width + h * head_dim,
                    width,
                )
            };
        });
        // SAFETY: pair (b, h) wrote rows b·seq..(b + 1)·seq, columns
        // h·head_dim..(h + 1)·head_dim, for every b < batch and h < heads:
        // all `len` values.
        #[allow(unsafe_code)]
        unsafe {
            kernel::written(&mut out, len)
        };
        Ok((CpuStorage::F32(out), Shape::from((batch * seq, width))))
    }
}

/// A decoder's attention over a prompt: query rows `pos..pos + n` against
/// the cached keys and values of every position up to each row's own
/// (the causal mask), for grouped-query heads. Its inputs are Q, scaled by
/// `1/√head_dim`, as `(kv_heads, group, n, head_dim)`, and the key and
/// value caches, `(kv_heads, capacity, head_dim)` each, already holding the
/// `n` new positions. The output is `(n, kv_heads · group · head_dim)`,
/// query head `kv · group + g` in columns of its own.
///
/// The rows go in blocks of [`PREFILL_ROWS`], each against only the keys
/// it may see, so the scores of one (head, block) task stay in cache.
pub struct PrefillAttention {
    pub group: usize,
    /// Positions cached before these rows.
    pub pos: usize,
    pub products: Products,
}

/// Query rows per task of [`PrefillAttention`].
pub const PREFILL_ROWS: usize = 64;

impl candle_core::CustomOp3 for PrefillAttention {
    fn name(&self) -> &'static str {
        "docent-prefill-attention"
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
        let q = crate::contiguous_f32(q, q_layout, "prefill attention")?;
        let k = crate::contiguous_f32(k, k_layout, "prefill attention")?;
        let v = crate::contiguous_f32(v, v_layout, "prefill attention")?;
        let (group, pos) = (self.group, self.pos);
        self.products.check("prefill attention")?;
        let [kv_heads, g, n, head_dim] = *q_layout.dims() else {
            candle_core::bail!("prefill attention: Q is {:?}", q_layout.dims());
        };
        let [kv, capacity, d] = *k_layout.dims() else {
            candle_core::bail!("prefill attention: K is {:?}", k_layout.dims());
        };
        if g != group || kv != kv_heads || d != head_dim || v_layout.dims() != k_layout.dims() {
            candle_core::bail!(
                "prefill attention: Q {:?}, K {:?}, V {:?} for groups of {group}",
                q_layout.dims(),
                k_layout.dims(),
                v_layout.dims()
            );
        }
        if pos + n > capacity {
            candle_core::bail!("prefill attention: {pos} + {n} positions exceed {capacity}");
        }
        let width = kv_heads * group * head_dim;
        // Not zeroed first: the tasks' blocks cover every value.
        let len = n * width;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if len == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((n, width))));
        }
        let blocks = n.div_ceil(PREFILL_ROWS);
        let dst = kernel::Rows::new(&mut out.spare_capacity_mut()[..len]);
        (0..kv_heads * group * blocks)
            .into_par_iter()
            .for_each(|task| {
                let (head, block) = (task / blocks, task % blocks);
                let kv = head / group;
                let first = block * PREFILL_ROWS;
                let rows = PREFILL_ROWS.min(n - first);
                // Row i (of this block) sees keys 0..=pos + first + i.
                let seen = pos + first + rows;
                let q = &q[(head * n + first) * head_dim..][..rows * head_dim];
                let k = &k[kv * capacity * head_dim..][..seen * head_dim];
                let v = &v[kv * capacity * head_dim..][..seen * head_dim];
                let mask = |i: usize, row: &mut [f32]| {
                    let visible = pos + first + i + 1;
                    row[visible..].fill(f32::NEG_INFINITY);
                };
                // SAFETY: rows first.., columns head·head_dim..: the block
                // of this (head, block) task alone.
                #[allow(unsafe_code)]
                unsafe {
                    one_head(
                        self.products,
                        kernel::Strided::new(q, rows, head_dim, head_dim),
                        kernel::Strided::new(k, seen, head_dim, head_dim),
                        kernel::Strided::new(v, seen, head_dim, head_dim),
                        mask,
                        &dst,
                        first * width + head * head_dim,
                        width,
                    )
                };
            });
        // SAFETY: task (head, block) wrote rows of the block (the blocks
        // cover 0..n), columns head·head_dim..(head + 1)·head_dim, for
        // every head < kv_heads · group: all `len` values.
        #[allow(unsafe_code)]
        unsafe {
            kernel::written(&mut out, len)
        };
        Ok((CpuStorage::F32(out), Shape::from((n, width))))
    }
}

#[allow(unsafe_code)]
mod kernel {
    use gemm::Parallelism;
    use std::marker::PhantomData;
    use std::mem::MaybeUninit;

    /// The output of [`super::Attention`], shared by the threads that each
    /// write their own block of it (rows of one input, columns of one head).
    pub struct Rows<'a> {
        ptr: *mut f32,
        len: usize,
        _out: PhantomData<&'a mut [MaybeUninit<f32>]>,
    }

    // SAFETY: `Rows` is a `&mut [MaybeUninit<f32>]` shared by threads that write it only
    // through `context`, whose callers promise disjoint blocks; f32 is Send.
    unsafe impl Sync for Rows<'_> {}

    impl<'a> Rows<'a> {
        /// Values not written yet: [`context`] writes without reading.
        pub fn new(out: &'a mut [MaybeUninit<f32>]) -> Rows<'a> {
            Rows {
                ptr: out.as_mut_ptr().cast::<f32>(),
                len: out.len(),
                _out: PhantomData,
            }
        }
    }

    /// Sets the length of `out` to `len` once its spare capacity was
    /// written through [`Rows`].
    ///
    /// # Safety
    /// The first `len` values of `out`'s spare capacity were written, and
    /// `len` is within its capacity.
    pub unsafe fn written(out: &mut Vec<f32>, len: usize) {
        debug_assert!(len <= out.capacity());
        // SAFETY: as the caller promises.
        unsafe { out.set_len(len) }
    }

    /// `rows` rows of `cols` values, `stride` values apart, in `data`.
    #[derive(Clone, Copy)]
    pub struct Strided<'a> {
        data: &'a [f32],
        rows: usize,
        cols: usize,
        stride: usize,
    }

    impl<'a> Strided<'a> {
        /// Panics unless `data` holds the rows and `cols ≤ stride`.
        pub fn new(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Strided<'a> {
            assert!(cols <= stride, "{cols} columns {stride} apart");
            assert!(
                rows == 0 || (rows - 1) * stride + cols <= data.len(),
                "{rows} rows of {cols}, {stride} apart, in {} values",
                data.len()
            );
            Strided {
                data,
                rows,
                cols,
                stride,
            }
        }
    }

    impl<'a> Strided<'a> {
        pub fn rows(&self) -> usize {
            self.rows
        }

        pub fn cols(&self) -> usize {
            self.cols
        }

        pub fn stride(&self) -> usize {
            self.stride
        }

        /// The values from the first row's first on.
        pub fn data(&self) -> &'a [f32] {
            self.data
        }
    }

    /// Copies the rows of `src` (`cols` values each) into the block of
    /// `out` at `start`, rows `stride` apart.
    ///
    /// # Safety
    /// As [`context`]: no other thread may read or write this block of
    /// `out` meanwhile.
    pub unsafe fn copy(src: &[f32], cols: usize, out: &Rows, start: usize, stride: usize) {
        let rows = src.len() / cols.max(1);
        assert!(cols > 0 && src.len() == rows * cols && cols <= stride);
        assert!(rows == 0 || start + (rows - 1) * stride + cols <= out.len);
        for (i, row) in src.chunks_exact(cols).enumerate() {
            // SAFETY: the asserts bound the block written (row i < rows at
            // start + i · stride, cols ≤ stride values, the last within
            // `out`); the caller guarantees no other thread touches it.
            unsafe {
                std::ptr::copy_nonoverlapping(row.as_ptr(), out.ptr.add(start + i * stride), cols)
            };
        }
    }

    /// `scores = q · kᵀ` for one head: `q` is `rows` rows of `head_dim`,
    /// `k` is `keys` rows of `head_dim`, `scores` is `rows × keys`,
    /// row-major.
    pub fn scores(q: Strided, k: Strided, scores: &mut [f32]) {
        let (rows, keys, head_dim) = (q.rows, k.rows, q.cols);
        assert!(k.cols == head_dim && scores.len() == rows * keys);
        // SAFETY: `Strided::new` and the assert bound every access: dst
        // (i, j) at i·keys + j < rows · keys; lhs (i, l) at i·q.stride + l
        // within q's rows; rhs (l, j) = k[j][l] at j·k.stride + l within
        // k's rows. No output is read (read_dst false), and one thread runs
        // the product.
        unsafe {
            gemm::gemm(
                rows,
                keys,
                head_dim,
                scores.as_mut_ptr(),
                1,
                keys as isize,
                false,
                q.data.as_ptr(),
                1,
                q.stride as isize,
                k.data.as_ptr(),
                k.stride as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    }

    /// `out[start + i·stride + j] = Σₗ probs[i][l] · v[l][j]` for the
    /// `rows` rows `i` of `probs` (`rows × keys`) and the `head_dim`
    /// columns `j` of `v` (`keys` rows of `head_dim`).
    ///
    /// # Safety
    /// No other thread may read or write this block of `out` meanwhile:
    /// callers running at once must pass disjoint blocks.
    pub unsafe fn context(probs: &[f32], v: Strided, out: &Rows, start: usize, stride: usize) {
        let (keys, head_dim) = (v.rows, v.cols);
        let rows = probs.len() / keys.max(1);
        assert!(probs.len() == rows * keys);
        assert!(rows > 0 && keys > 0 && head_dim <= stride);
        assert!(start + (rows - 1) * stride + head_dim <= out.len);
        // SAFETY: the asserts bound the block written: row i < rows at
        // start + i · stride, columns < head_dim ≤ stride, the last value
        // within `out`. The caller guarantees that no other thread touches
        // the block; probs (i, l) at i·keys + l and v (l, j) at
        // l·v.stride + j (within v's rows, by `Strided::new`) are in
        // bounds. The block is written, never read (read_dst false), so it
        // may hold values not yet initialised.
        unsafe {
            gemm::gemm(
                rows,
                head_dim,
                keys,
                out.ptr.add(start),
                1,
                stride as isize,
                false,
                probs.as_ptr(),
                1,
                keys as isize,
                v.data.as_ptr(),
                1,
                v.stride as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Tensor};

    /// Asserts that `got` has `want`'s shape and values within 1e-5.
    fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}");
        let diff = crate::max_abs_diff(got, want);
        assert!(diff < 1e-5, "{what}: max diff {diff}");
    }

    /// The same attention through candle's ops: products, broadcast bias,
    /// softmax, then the context transposed back into rows.
    fn reference(qkv: &Tensor, bias: &Tensor, batch: usize, heads: usize) -> Tensor {
        let (q, k, v) = (
            qkv.get(0).unwrap(),
            qkv.get(1).unwrap(),
            qkv.get(2).unwrap(),
        );
        let seq = q.dim(2).unwrap();
        let scores = q.matmul(&k.t().unwrap()).unwrap();
        let bias = bias.reshape((batch, 1, 1, seq)).unwrap();
        let probs =
            candle_nn::ops::softmax(&scores.broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
        let context = probs.matmul(&v).unwrap();
        let width = context.dim(3).unwrap() * heads;
        context
            .transpose(1, 2)
            .unwrap()
            .reshape((batch * seq, width))
            .unwrap()
    }

    /// `(3, batch, heads, seq, head_dim)` as the op takes it: a row per
    /// token of Q, K and V, head by head.
    fn to_rows(qkv: &Tensor) -> Tensor {
        let (_, batch, heads, seq, head_dim) = qkv.dims5().unwrap();
        qkv.permute((1, 3, 0, 2, 4))
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((batch * seq, 3 * heads * head_dim))
            .unwrap()
    }

    /// Part `p` (Q, K or V) of input `b`'s head `h` of `(3, batch, heads,
    /// seq, head_dim)`, as `seq · head_dim` values.
    fn head_part(qkv: &Tensor, p: usize, b: usize, h: usize) -> Vec<f32> {
        let t = qkv.get(p).unwrap().get(b).unwrap().get(h).unwrap();
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The same arithmetic on each head's Q, K and V copied out
    /// contiguously (the layout the op took before it read them in place).
    fn on_copies(qkv: &Tensor, bias: &[f32], batch: usize, heads: usize) -> Vec<f32> {
        let (_, _, _, seq, head_dim) = qkv.dims5().unwrap();
        let width = heads * head_dim;
        let mut out = vec![f32::NAN; batch * seq * width];
        let mut scores = vec![0f32; seq * seq];
        for b in 0..batch {
            for h in 0..heads {
                let (q, k, v) = (
                    head_part(qkv, 0, b, h),
                    head_part(qkv, 1, b, h),
                    head_part(qkv, 2, b, h),
                );
                fn strided(x: &[f32], cols: usize) -> kernel::Strided<'_> {
                    kernel::Strided::new(x, x.len() / cols, cols, cols)
                }
                kernel::scores(strided(&q, head_dim), strided(&k, head_dim), &mut scores);
                for row in scores.chunks_exact_mut(seq) {
                    for (s, &m) in row.iter_mut().zip(&bias[b * seq..]) {
                        *s += m;
                    }
                    crate::softmax_in_place(row);
                }
                let mut block = vec![0f32; seq * head_dim];
                let rows = kernel::Rows::new(uninit(&mut block));
                // SAFETY: one thread, one block.
                #[allow(unsafe_code)]
                unsafe {
                    kernel::context(&scores, strided(&v, head_dim), &rows, 0, head_dim)
                };
                for (t, row) in block.chunks_exact(head_dim).enumerate() {
                    let at = (b * seq + t) * width + h * head_dim;
                    out[at..at + head_dim].copy_from_slice(row);
                }
            }
        }
        out
    }

    fn uninit(v: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
        // SAFETY: initialised f32s viewed as possibly uninitialised ones;
        // only written through, the layouts are the same.
        #[allow(unsafe_code)]
        unsafe {
            &mut *(v as *mut [f32] as *mut [std::mem::MaybeUninit<f32>])
        }
    }

    fn check(batch: usize, heads: usize, seq: usize, head_dim: usize, padded: &[usize]) {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (3, batch, heads, seq, head_dim), &dev).unwrap();
        // Input b has its last padded[b] positions masked out.
        let mut bias = vec![0f32; batch * seq];
        for (b, &p) in padded.iter().enumerate() {
            for t in seq - p..seq {
                bias[b * seq + t] = -1e9;
            }
        }
        let copies = on_copies(&qkv, &bias, batch, heads);
        let bias = Tensor::from_vec(bias, (batch, seq), &dev).unwrap();
        let fused = to_rows(&qkv)
            .apply_op2_no_bwd(
                &bias,
                &Attention {
                    batch,
                    heads,
                    products: Products::F32,
                },
            )
            .unwrap();
        let want = reference(&qkv, &bias, batch, heads);
        let what = format!("{batch}×{heads}×{seq}×{head_dim}");
        assert_close(&fused, &want, &what);
        // Reading the heads in place gives the floats of reading copies.
        let fused: Vec<f32> = fused.flatten_all().unwrap().to_vec1().unwrap();
        let differ = fused
            .iter()
            .zip(&copies)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{what}");
    }

    #[test]
    fn matches_candles_products_and_softmax() {
        check(1, 1, 1, 1, &[0]);
        check(2, 3, 7, 5, &[0, 3]);
        check(3, 12, 33, 32, &[0, 10, 32]);
        check(4, 2, 128, 64, &[5, 0, 100, 1]);
    }

    #[test]
    fn padded_positions_get_no_weight() {
        // Masked keys with huge values must not move the context.
        let dev = Device::Cpu;
        let (batch, heads, seq, head_dim) = (1, 2, 6, 4);
        let mut values = Tensor::randn(0f32, 1.0, (3, batch, heads, seq, head_dim), &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let clean =
            Tensor::from_vec(values.clone(), (3, batch, heads, seq, head_dim), &dev).unwrap();
        // Position 5 of every head's K and V becomes huge.
        for part in 1..3 {
            for h in 0..heads {
                let at = ((part * batch) * heads + h) * seq * head_dim + 5 * head_dim;
                values[at..at + head_dim].fill(1e4);
            }
        }
        let dirty = Tensor::from_vec(values, (3, batch, heads, seq, head_dim), &dev).unwrap();
        let mut bias = vec![0f32; seq];
        bias[5] = -1e9;
        let bias = Tensor::from_vec(bias, (batch, seq), &dev).unwrap();
        for products in products_here() {
            let op = Attention {
                batch,
                heads,
                products,
            };
            let a = to_rows(&clean).apply_op2_no_bwd(&bias, &op).unwrap();
            let b = to_rows(&dirty).apply_op2_no_bwd(&bias, &op).unwrap();
            assert_eq!(
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{products:?}"
            );
        }
    }

    /// The products this CPU runs.
    fn products_here() -> Vec<Products> {
        let mut all = vec![Products::F32];
        if crate::bf16::available() {
            all.push(Products::Bf16);
        }
        all
    }

    /// bf16 products: against the attention of the bf16-rounded Q, K, V
    /// and probabilities computed in f64 (within the f32 sums' error, and
    /// a probability rounded the other way at a tie), and against the f32
    /// op within what the rounding costs (Q scaled by `1/√head_dim`, as the
    /// models do).
    fn check_bf16(batch: usize, heads: usize, seq: usize, head_dim: usize, padded: &[usize]) {
        let dev = Device::Cpu;
        let q = (Tensor::randn(0f32, 1.0, (1, batch, heads, seq, head_dim), &dev).unwrap()
            / (head_dim as f64).sqrt())
        .unwrap();
        let kv = Tensor::randn(0f32, 1.0, (2, batch, heads, seq, head_dim), &dev).unwrap();
        let qkv = Tensor::cat(&[&q, &kv], 0).unwrap();
        let mut bias = vec![0f32; batch * seq];
        for (b, &p) in padded.iter().enumerate() {
            bias[b * seq + seq - p..(b + 1) * seq].fill(-1e9);
        }
        let rows = to_rows(&qkv);
        let bias_t = Tensor::from_vec(bias.clone(), (batch, seq), &dev).unwrap();
        let run = |products| -> Vec<f32> {
            let op = Attention {
                batch,
                heads,
                products,
            };
            let out = rows.apply_op2_no_bwd(&bias_t, &op).unwrap();
            out.flatten_all().unwrap().to_vec1().unwrap()
        };
        let (low, full) = (run(Products::Bf16), run(Products::F32));
        let r = |v: f32| crate::bf16::from_bf16(crate::bf16::to_bf16(v)) as f64;
        let width = heads * head_dim;
        let mut worst = 0f64;
        for b in 0..batch {
            for h in 0..heads {
                let (q, k, v) = (
                    head_part(&qkv, 0, b, h),
                    head_part(&qkv, 1, b, h),
                    head_part(&qkv, 2, b, h),
                );
                for i in 0..seq {
                    let mut p: Vec<f64> = (0..seq)
                        .map(|j| {
                            let dot: f64 = (0..head_dim)
                                .map(|l| r(q[i * head_dim + l]) * r(k[j * head_dim + l]))
                                .sum();
                            dot + bias[b * seq + j] as f64
                        })
                        .collect();
                    let max = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    p.iter_mut().for_each(|x| *x = (*x - max).exp());
                    let total: f64 = p.iter().sum();
                    // The op's f32 softmax differs from this one in the
                    // last bits (about 1e-6 relative), so a probability
                    // within 1e-5 of a tie between two bf16 values may
                    // round the other way there: such a probability may
                    // add the gap between its two roundings times |v|.
                    let tie = |p: f64| {
                        (r((p * (1.0 + 1e-5)) as f32) - r((p * (1.0 - 1e-5)) as f32)).abs()
                    };
                    for c in 0..head_dim {
                        let (mut want, mut slack) = (0f64, 0f64);
                        for j in 0..seq {
                            let (pj, vj) = (p[j] / total, r(v[j * head_dim + c]));
                            want += r(pj as f32) * vj;
                            slack += tie(pj) * vj.abs();
                        }
                        let at = (b * seq + i) * width + h * head_dim + c;
                        let got = low[at] as f64;
                        assert!(
                            (got - want).abs() <= 2e-3 + slack,
                            "{batch}×{heads}×{seq}×{head_dim} at {at}: {got} vs {want} (ties allow {slack})"
                        );
                        worst = worst.max((got - full[at] as f64).abs());
                    }
                }
            }
        }
        // Measured 0.006–0.012 on these shapes (AMD EPYC).
        // At most 0.012 in three runs of these shapes (AMD EPYC).
        assert!(worst <= 0.03, "bf16 against f32: {worst}");
    }

    #[test]
    fn bf16_products_match_the_rounded_reference() {
        if !crate::bf16::available() {
            let err = Tensor::zeros((4, 24), candle_core::DType::F32, &Device::Cpu)
                .unwrap()
                .apply_op2_no_bwd(
                    &Tensor::zeros((1, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
                    &Attention {
                        batch: 1,
                        heads: 2,
                        products: Products::Bf16,
                    },
                )
                .unwrap_err();
            assert!(err.to_string().contains("AVX-512 BF16"), "{err}");
            eprintln!("skipped the comparison: this CPU lacks AVX-512 BF16");
            return;
        }
        check_bf16(1, 1, 1, 1, &[0]);
        check_bf16(2, 3, 7, 5, &[0, 3]);
        check_bf16(3, 12, 33, 32, &[0, 10, 32]);
        check_bf16(2, 2, 128, 64, &[5, 100]);
        check_bf16(1, 2, 40, 128, &[0]);
    }

    /// A decoder's causal attention through candle's ops, head by head.
    fn causal_reference(q: &Tensor, k: &Tensor, v: &Tensor, pos: usize) -> Tensor {
        let (kv_heads, group, n, head_dim) = q.dims4().unwrap();
        let seen = pos + n;
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..seen).map(move |j| if j <= pos + i { 0.0 } else { f32::NEG_INFINITY })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (n, seen), &Device::Cpu).unwrap();
        let mut heads = Vec::new();
        for kv in 0..kv_heads {
            let keys = k.get(kv).unwrap().narrow(0, 0, seen).unwrap();
            let values = v.get(kv).unwrap().narrow(0, 0, seen).unwrap();
            for g in 0..group {
                let q = q.get(kv).unwrap().get(g).unwrap();
                let scores = q.matmul(&keys.t().unwrap()).unwrap().add(&mask).unwrap();
                let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
                heads.push(probs.matmul(&values).unwrap());
            }
        }
        Tensor::cat(&heads, 1)
            .unwrap()
            .reshape((n, kv_heads * group * head_dim))
            .unwrap()
    }

    #[test]
    fn prefill_matches_causal_attention_per_head() {
        let dev = Device::Cpu;
        // One row; a block and a half after a cached prefix; two blocks exactly.
        for (kv_heads, group, n, head_dim, pos) in [
            (1, 1, 1, 4, 0),
            (2, 3, PREFILL_ROWS + 6, 8, 5),
            (2, 2, 2 * PREFILL_ROWS, 16, 0),
        ] {
            let capacity = pos + n + 3;
            let q = Tensor::randn(0f32, 1.0, (kv_heads, group, n, head_dim), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (kv_heads, capacity, head_dim), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (kv_heads, capacity, head_dim), &dev).unwrap();
            let want = causal_reference(&q, &k, &v, pos);
            let what = format!("{kv_heads}×{group}×{n}×{head_dim}+{pos}");
            let fused = q
                .apply_op3_no_bwd(
                    &k,
                    &v,
                    &PrefillAttention {
                        group,
                        pos,
                        products: Products::F32,
                    },
                )
                .unwrap();
            assert_close(&fused, &want, &what);
            if crate::bf16::available() {
                // Q as the models scale it; bf16 operands as check_bf16
                // measures them.
                let q = (q / (head_dim as f64).sqrt()).unwrap();
                let want = causal_reference(&q, &k, &v, pos);
                let op = PrefillAttention {
                    group,
                    pos,
                    products: Products::Bf16,
                };
                let low = q.apply_op3_no_bwd(&k, &v, &op).unwrap();
                let diff = crate::max_abs_diff(&low, &want);
                assert!(diff <= 0.03, "{what}, bf16: max diff {diff}");
            }
        }
    }

    #[test]
    fn prefill_rejects_more_positions_than_the_cache_holds() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 4, 8), candle_core::DType::F32, &dev).unwrap();
        let kv = Tensor::zeros((1, 6, 8), candle_core::DType::F32, &dev).unwrap();
        let err = q
            .apply_op3_no_bwd(
                &kv,
                &kv,
                &PrefillAttention {
                    group: 2,
                    pos: 3,
                    products: Products::F32,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("exceed"), "{err}");
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let dev = Device::Cpu;
        let zeros = |dims: &[usize]| Tensor::zeros(dims, candle_core::DType::F32, &dev).unwrap();
        // 2 inputs of 4 tokens, 2 heads of 8.
        let (qkv, bias) = (zeros(&[8, 48]), zeros(&[2, 4]));
        let op = |batch, heads| Attention {
            batch,
            heads,
            products: Products::F32,
        };
        assert!(qkv.apply_op2_no_bwd(&bias, &op(2, 2)).is_ok());
        for (qkv, bias, op) in [
            (&qkv, &zeros(&[2, 3]), op(2, 2)),
            (&qkv, &bias, op(2, 5)),
            (&qkv, &bias, op(3, 2)),
            (&qkv, &bias, op(0, 2)),
            (&zeros(&[3, 2, 2, 4, 8]), &bias, op(2, 2)),
        ] {
            let err = qkv.apply_op2_no_bwd(bias, &op).unwrap_err();
            assert!(err.to_string().contains("attention"), "{err}");
        }
    }
}
