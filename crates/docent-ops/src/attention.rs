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

/// The attention of a layer. Its first input is Q, K and V as one
/// contiguous `(3, batch, heads, seq, head_dim)` tensor (Q already scaled
/// by `1/√head_dim`), its second the `(batch, seq)` bias added to every
/// score row of an input (0 for tokens, a large negative value for
/// padding). The output is the context, `(batch · seq, heads · head_dim)`.
pub struct Attention {
    pub batch: usize,
    pub heads: usize,
}

thread_local! {
    /// One (input, head) pair's scores, reused between pairs and calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
        let dims = qkv_layout.dims();
        let [3, b, h, seq, head_dim] = *dims else {
            candle_core::bail!(
                "attention: expected (3, batch, heads, seq, head_dim), got {dims:?}"
            );
        };
        if b != batch || h != heads || bias.len() != batch * seq {
            candle_core::bail!(
                "attention: {dims:?} for {batch} inputs of {heads} heads with a bias of {}",
                bias.len()
            );
        }
        let width = heads * head_dim;
        let mut out = vec![0f32; batch * seq * width];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from((batch * seq, width))));
        }
        let part = batch * heads * seq * head_dim;
        let (q, k, v) = (&qkv[..part], &qkv[part..2 * part], &qkv[2 * part..]);
        let dst = kernel::Rows::new(&mut out);
        (0..batch * heads).into_par_iter().for_each(|pair| {
            let (b, h) = (pair / heads, pair % heads);
            let at = pair * seq * head_dim;
            let span = at..at + seq * head_dim;
            SCORES.with_borrow_mut(|scores| {
                scores.resize(seq * seq, 0.0);
                kernel::scores(&q[span.clone()], &k[span.clone()], seq, head_dim, scores);
                let bias = &bias[b * seq..(b + 1) * seq];
                for row in scores.chunks_exact_mut(seq) {
                    for (s, &m) in row.iter_mut().zip(bias) {
                        *s += m;
                    }
                    crate::softmax_in_place(row);
                }
                // Rows b·seq.., columns h·head_dim..: no other pair writes them.
                kernel::context(
                    scores,
                    &v[span],
                    seq,
                    head_dim,
                    &dst,
                    b * seq * width + h * head_dim,
                    width,
                );
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((batch * seq, width))))
    }
}

#[allow(unsafe_code)]
mod kernel {
    use gemm::Parallelism;
    use std::marker::PhantomData;

    /// The output of [`super::Attention`], shared by the threads that each
    /// write their own block of it (rows of one input, columns of one head).
    pub struct Rows<'a> {
        ptr: *mut f32,
        len: usize,
        _out: PhantomData<&'a mut [f32]>,
    }

    // SAFETY: `Rows` is a `&mut [f32]` that `context` writes in disjoint
    // blocks (its callers own distinct (input, head) pairs); f32 is Send.
    unsafe impl Sync for Rows<'_> {}

    impl<'a> Rows<'a> {
        pub fn new(out: &'a mut [f32]) -> Rows<'a> {
            Rows {
                ptr: out.as_mut_ptr(),
                len: out.len(),
                _out: PhantomData,
            }
        }
    }

    /// `scores = q · kᵀ` for one head: `q` and `k` are `seq` rows of
    /// `head_dim`, `scores` is `seq × seq`, row-major.
    pub fn scores(q: &[f32], k: &[f32], seq: usize, head_dim: usize, scores: &mut [f32]) {
        assert!(q.len() == seq * head_dim && k.len() == seq * head_dim);
        assert!(scores.len() == seq * seq);
        let (s, d) = (seq as isize, head_dim as isize);
        // SAFETY: the asserts bound every access: dst (i, j) at i·seq + j
        // < seq²; lhs (i, l) at i·head_dim + l and rhs (l, j) = k[j][l] at
        // j·head_dim + l, both < seq · head_dim. No output is read
        // (read_dst false), and one thread runs the product.
        unsafe {
            gemm::gemm(
                seq,
                seq,
                head_dim,
                scores.as_mut_ptr(),
                1,
                s,
                false,
                q.as_ptr(),
                1,
                d,
                k.as_ptr(),
                d,
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

    /// `out[start + i·stride + j] = Σₗ probs[i][l] · v[l][j]` for `seq`
    /// rows `i` and `head_dim` columns `j`.
    pub fn context(
        probs: &[f32],
        v: &[f32],
        seq: usize,
        head_dim: usize,
        out: &Rows,
        start: usize,
        stride: usize,
    ) {
        assert!(probs.len() == seq * seq && v.len() == seq * head_dim);
        assert!(seq > 0 && head_dim <= stride);
        assert!(start + (seq - 1) * stride + head_dim <= out.len);
        // SAFETY: the asserts bound the block written: row i < seq at
        // start + i · stride, columns < head_dim ≤ stride, the last value
        // within `out`. Callers write disjoint blocks, so no two threads
        // touch the same value; probs (i, l) at i·seq + l and v (l, j) at
        // l·head_dim + j are in bounds.
        unsafe {
            gemm::gemm(
                seq,
                head_dim,
                seq,
                out.ptr.add(start),
                1,
                stride as isize,
                false,
                probs.as_ptr(),
                1,
                seq as isize,
                v.as_ptr(),
                1,
                head_dim as isize,
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
        let bias = Tensor::from_vec(bias, (batch, seq), &dev).unwrap();
        let fused = qkv
            .apply_op2_no_bwd(&bias, &Attention { batch, heads })
            .unwrap();
        let want = reference(&qkv, &bias, batch, heads);
        assert_eq!(fused.dims(), want.dims());
        let diff = (fused - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff < 1e-5,
            "{batch}×{heads}×{seq}×{head_dim}: max diff {diff}"
        );
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
        let op = Attention { batch, heads };
        let a = clean.apply_op2_no_bwd(&bias, &op).unwrap();
        let b = dirty.apply_op2_no_bwd(&bias, &op).unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((3, 2, 2, 4, 8), candle_core::DType::F32, &dev).unwrap();
        let bias = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let err = qkv
            .apply_op2_no_bwd(&bias, &Attention { batch: 2, heads: 2 })
            .unwrap_err();
        assert!(err.to_string().contains("attention"), "{err}");
        let bias = Tensor::zeros((2, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(
            qkv.apply_op2_no_bwd(&bias, &Attention { batch: 2, heads: 4 })
                .is_err()
        );
    }
}
