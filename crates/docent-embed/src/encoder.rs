//! A BERT encoder laid out for CPU inference.
//!
//! candle-transformers' `BertModel` multiplies by `weight.t()`, a transposed
//! view. For the short inputs of search queries (ten-odd rows) gemm then
//! reads the weights column by column, and a 10-token query took about 34 ms
//! on one core. Here every projection is stored transposed once, at load,
//! so each matmul reads its weights row-major (4× faster for small inputs,
//! the same for large ones); Q, K and V are one fused projection with the
//! attention scale folded into Q; and GELU uses a fast erf (error below
//! 5e-7) instead of libm's, which took a fifth of bulk embedding time.
//! GELU and the attention softmax share a polynomial `exp` that the compiler
//! vectorises; libm's scalar `expf` was 13% of bulk embedding time.

use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

/// `x · W + b`, with `W` kept in both layouts: (in, out) for inputs of many
/// rows, (out, in) for inputs of a few, which are computed as `(W' · xᵀ)ᵀ` so
/// gemm's 64-row kernel tiles the 384 or 1536 outputs instead of a 10-row
/// query padded to 64.
struct Dense {
    weight: Tensor,
    weight_t: Tensor,
    bias: Tensor,
}

/// Inputs with fewer rows than this take the transposed product.
const FEW_ROWS: usize = 48;

impl Dense {
    fn load(vb: VarBuilder, input: usize, output: usize) -> Result<Self> {
        let weight_t = vb.get((output, input), "weight")?;
        let bias = vb.get(output, "bias")?;
        Ok(Dense {
            weight: weight_t.t()?.contiguous()?,
            weight_t,
            bias,
        })
    }

    /// Q, K and V side by side, with `scale` applied to Q.
    fn fused_qkv(vb: VarBuilder, hidden: usize, scale: f64) -> Result<Self> {
        let part = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = vb.pp(name);
            Ok((vb.get((hidden, hidden), "weight")?, vb.get(hidden, "bias")?))
        };
        let (qw, qb) = part("query")?;
        let (kw, kb) = part("key")?;
        let (vw, vb_) = part("value")?;
        let weight_t = Tensor::cat(&[(qw * scale)?, kw, vw], 0)?;
        let bias = Tensor::cat(&[(qb * scale)?, kb, vb_], 0)?;
        Ok(Dense {
            weight: weight_t.t()?.contiguous()?,
            weight_t,
            bias,
        })
    }

    /// `x` is (rows, in).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dim(0)? < FEW_ROWS {
            self.weight_t
                .matmul(&x.t()?)?
                .t()?
                .broadcast_add(&self.bias)
        } else {
            x.matmul(&self.weight)?.broadcast_add(&self.bias)
        }
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    up: Dense,
    down: Dense,
    output_norm: LayerNorm,
}

/// The encoder: embeddings, then transformer layers; returns the last hidden
/// state as (batch × sequence, hidden).
pub struct Encoder {
    words: Tensor,
    positions: Tensor,
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
}

impl Encoder {
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        if config.hidden_act != HiddenAct::Gelu {
            candle_core::bail!(
                "unsupported activation {:?}: docent's encoder implements BERT's exact GELU",
                config.hidden_act
            );
        }
        // Some checkpoints prefix every name with `bert.`.
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let inner = config.intermediate_size;
        let eps = config.layer_norm_eps;
        let emb = vb.pp("embeddings");
        let words = emb.get((config.vocab_size, hidden), "word_embeddings.weight")?;
        let positions = emb.get(
            (config.max_position_embeddings, hidden),
            "position_embeddings.weight",
        )?;
        // docent embeds single segments: token type 0 everywhere.
        let token_type = emb
            .get(
                (config.type_vocab_size, hidden),
                "token_type_embeddings.weight",
            )?
            .get(0)?;
        let embedding_norm = candle_nn::layer_norm(hidden, eps, emb.pp("LayerNorm"))?;
        let scale = 1.0 / ((hidden / heads) as f64).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layer.{i}"));
                let attention = vb.pp("attention");
                Ok(Layer {
                    qkv: Dense::fused_qkv(attention.pp("self"), hidden, scale)?,
                    attention_out: Dense::load(attention.pp("output.dense"), hidden, hidden)?,
                    attention_norm: candle_nn::layer_norm(
                        hidden,
                        eps,
                        attention.pp("output.LayerNorm"),
                    )?,
                    up: Dense::load(vb.pp("intermediate.dense"), hidden, inner)?,
                    down: Dense::load(vb.pp("output.dense"), inner, hidden)?,
                    output_norm: candle_nn::layer_norm(hidden, eps, vb.pp("output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            words,
            positions,
            token_type,
            embedding_norm,
            layers,
            heads,
            hidden,
        })
    }

    /// `ids` and `mask` are (batch, sequence); `mask` is 1 for tokens and 0
    /// for padding, and `padded` says whether it holds any 0. Returns
    /// (batch × sequence, hidden).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, padded: bool) -> Result<Tensor> {
        let (n, s) = ids.dims2()?;
        let (h, heads) = (self.hidden, self.heads);
        let head_dim = h / heads;
        let x = self
            .words
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((n, s, h))?
            .broadcast_add(&self.positions.narrow(0, 0, s)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.embedding_norm.forward(&x)?.reshape((n * s, h))?;
        // Padding gets a large negative score before the softmax; a batch
        // without padding needs no mask at all.
        let bias = if padded {
            let keep = mask.to_dtype(DType::F32)?.reshape((n, 1, 1, s))?;
            Some(((keep - 1.0)? * 1e9)?)
        } else {
            None
        };
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((n, s, 3, heads, head_dim))?
                .permute((2, 0, 3, 1, 4))?;
            let q = qkv.get(0)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(bias) = &bias {
                scores = scores.broadcast_add(bias)?;
            }
            let probs = scores.apply_op1_no_bwd(&docent_ops::Softmax)?;
            let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((n * s, h))?;
            let attended = (layer.attention_out.forward(&context)? + &x)?;
            let attended = layer.attention_norm.forward(&attended)?;
            let inner = layer.up.forward(&attended)?.apply_op1_no_bwd(&Gelu)?;
            let out = (layer.down.forward(&inner)? + &attended)?;
            x = layer.output_norm.forward(&out)?;
        }
        Ok(x)
    }
}

/// BERT's GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
struct Gelu;

/// erf by Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7 (plus
/// f32 rounding), far inside the 1e-4 the golden vectors allow.
#[inline]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * docent_ops::exp(-a * a);
    y.copysign(x)
}

#[inline]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "docent-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = docent_ops::contiguous_f32(storage, layout, "gelu")?;
        let out = docent_ops::par_rows(input, 1, |src, dst| {
            for (o, &i) in dst.iter_mut().zip(src) {
                *o = gelu(i);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Mean of `hidden` (batch × sequence, hidden) over each row's unmasked
/// tokens, L2-normalised.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (n, s) = mask.dims2()?;
    let h = hidden.dim(D::Minus1)?;
    let hidden = hidden.reshape((n, s, h))?;
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?;
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
    mean.broadcast_div(&norms)?.to_vec2::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast erf against libm's over the range GELU sees.
    #[test]
    fn fast_erf_matches_libm() {
        let mut worst = 0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 / 8_000.0;
            let exact = candle_core::cpu::erf::erf_f64(x as f64) as f32;
            worst = worst.max((erf(x) - exact).abs());
        }
        assert!(worst < 5e-7, "max error {worst}");
    }

    #[test]
    fn gelu_op_matches_candle_gelu_erf_on_any_length() {
        for len in [1usize, 7, 40_000] {
            let data: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
            let x = Tensor::from_vec(data, len, &candle_core::Device::Cpu).unwrap();
            let ours = x.apply_op1_no_bwd(&Gelu).unwrap().to_vec1::<f32>().unwrap();
            let reference = x.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
            let worst = ours
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-6, "length {len}: max error {worst}");
        }
    }
}
