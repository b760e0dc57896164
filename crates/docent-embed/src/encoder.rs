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
//! Each bias is added by the op that consumes the product (GELU, the
//! residual before each layer norm; Q|K|V's in a pass of its own, after
//! which the attention reads each head's columns in place), and the padding
//! mask by the softmax: one pass each instead of candle's elementwise ops, which run
//! on candle's own pool and left its worker spinning against the next
//! matmul (together 14% of bulk embedding). On int8 weights the bias, GELU
//! and residual are applied by the product itself, to each piece of its
//! output while in cache ([`Int8Then`], [`Int8Residual`]).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use docent_ops::attention::Products;
use docent_ops::bf16::{Bf16Matrix, Precision, SharedBytes};
use docent_ops::int8::{Activations, Int8Matrix, WeightBits};

/// `x · W + b`. In f32, `W` is kept in both layouts: (in, out) for inputs
/// of many rows, (out, in) for inputs of a few, which are computed as
/// `(W' · xᵀ)ᵀ` so gemm's 64-row kernel tiles the 384 or 1536 outputs
/// instead of a 10-row query padded to 64. In bf16 it is packed once for
/// [`docent_ops::bf16::Bf16Matrix`] (in int8, for [`Int8Matrix`]), which
/// handles both cases itself.
struct Dense {
    weight: Weight,
    bias: Tensor,
}

enum Weight {
    F32 { weight: Tensor, weight_t: Tensor },
    Bf16(Bf16Matrix),
    Int8(Int8Matrix),
}

/// Whether the encoder's int8 products run on 7-bit weights and 7-bit
/// activations on this CPU: on the AVX-512 BW and AVX2 kernels (no VNNI),
/// whose `vpmaddubsw` sums then add in pairs before widening
/// ([`Int8Matrix::with_7bit_activations`]), 1.15× the embedding speed of
/// 8-bit weights with 7-bit activations (docs/benchmarks.md, session 30).
/// Elsewhere weights and activations have 8 bits.
pub fn int8_is_7bit() -> bool {
    docent_ops::int8::Variant::detect().levels() == 127
}

/// An encoder weight in int8, in the form [`int8_is_7bit`] says.
fn pack_int8(values: &[f32], out: usize, input: usize) -> Int8Matrix {
    if int8_is_7bit() {
        Int8Matrix::pack_with(values, out, input, WeightBits::Seven).with_7bit_activations()
    } else {
        Int8Matrix::pack(values, out, input)
    }
}

/// Inputs with fewer rows than this take the transposed product.
const FEW_ROWS: usize = 48;

impl Dense {
    fn load(vb: VarBuilder, input: usize, output: usize, precision: Precision) -> Result<Self> {
        let weight_t = vb.get((output, input), "weight")?;
        let bias = vb.get(output, "bias")?;
        let scales = quantized_scale(&vb)?.map(|scale| vec![scale; output]);
        Self::new(weight_t, bias, precision, scales)
    }

    /// From the weight as stored, (out, in). `scales` (one per output) mark
    /// a weight that was quantized to int8 already ([`quantized_scale`]): in
    /// int8 it keeps those integers and quantizes its activations per
    /// tensor, as the model was quantized.
    fn new(
        weight_t: Tensor,
        bias: Tensor,
        precision: Precision,
        scales: Option<Vec<f32>>,
    ) -> Result<Self> {
        let weight = match precision {
            Precision::Bf16 | Precision::Int8 => {
                let (out, input) = weight_t.dims2()?;
                let values = weight_t.flatten_all()?.to_vec1::<f32>()?;
                match (precision, scales) {
                    (Precision::Int8, Some(scales)) => Weight::Int8(
                        Int8Matrix::pack_quantized(&values, out, input, &scales)
                            .with_activations(Activations::PerTensor),
                    ),
                    (Precision::Int8, None) => Weight::Int8(pack_int8(&values, out, input)),
                    _ => Weight::Bf16(Bf16Matrix::pack(&values, out, input)),
                }
            }
            _ => Weight::F32 {
                weight: weight_t.t()?.contiguous()?,
                weight_t,
            },
        };
        Ok(Dense { weight, bias })
    }

    /// Q, K and V side by side, with `scale` applied to Q.
    fn fused_qkv(vb: VarBuilder, hidden: usize, scale: f64, precision: Precision) -> Result<Self> {
        let part = |name: &str| -> Result<(Tensor, Tensor, Option<f32>)> {
            let vb = vb.pp(name);
            Ok((
                vb.get((hidden, hidden), "weight")?,
                vb.get(hidden, "bias")?,
                quantized_scale(&vb)?,
            ))
        };
        let (qw, qb, qs) = part("query")?;
        let (kw, kb, ks) = part("key")?;
        let (vw, vb_, vs) = part("value")?;
        let weight_t = Tensor::cat(&[(qw * scale)?, kw, vw], 0)?;
        let bias = Tensor::cat(&[(qb * scale)?, kb, vb_], 0)?;
        let scales = match (qs, ks, vs) {
            (Some(q), Some(k), Some(v)) => Some(
                [q * scale as f32, k, v]
                    .iter()
                    .flat_map(|&s| std::iter::repeat_n(s, hidden))
                    .collect(),
            ),
            _ => None,
        };
        Self::new(weight_t, bias, precision, scales)
    }

    /// `x · W` without the bias, (rows, out), contiguous; the bias is added
    /// by the op that consumes it, in the same pass.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            Weight::Bf16(packed) => x.contiguous()?.apply_op1_no_bwd(packed),
            Weight::Int8(packed) => x.contiguous()?.apply_op1_no_bwd(packed),
            Weight::F32 { weight_t, .. } if x.dim(0)? < FEW_ROWS => {
                weight_t.matmul(&x.t()?)?.t()?.contiguous()
            }
            Weight::F32 { weight, .. } => x.matmul(weight),
        }
    }
}

/// BERT's layer norm, with candle's arithmetic (per row, one running f32
/// sum and sum of squares, then `(v − mean) · (var + ε)^−½ · γ + β`, so the
/// same floats to the bit) in pieces of rows on the pool's threads
/// ([`docent_ops::par_rows`]). candle's op gave rayon one row per task,
/// after zeroing the whole output on the calling thread: 5% of bulk
/// embedding on the 7-bit kernel.
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Norm> {
        let loaded = candle_nn::layer_norm(size, eps, vb)?;
        let Some(bias) = loaded.bias() else {
            candle_core::bail!("a layer norm without a bias");
        };
        Ok(Norm {
            weight: loaded.weight().clone(),
            bias: bias.clone(),
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?
            .apply_op3_no_bwd(&self.weight, &self.bias, self)
    }
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "docent-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, weight, width) =
            rows_and_bias((x, x_layout), (weight, weight_layout), "layer-norm")?;
        let bias = docent_ops::contiguous_f32(bias, bias_layout, "layer-norm")?;
        if bias.len() != width {
            candle_core::bail!("layer-norm: rows of {width} with a bias of {}", bias.len());
        }
        let eps = self.eps;
        let out = docent_ops::par_rows(x, width, |src, dst| {
            docent_ops::layer_norm_rows(dst, src, weight, bias, eps)
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// What follows a product, applied with its bias by
/// [`Dense::product_then`].
enum Then<'a> {
    /// `act(x · W + b)`.
    Bias(Act),
    /// `x · W + b + residual`, the residual shaped like the output.
    Residual(&'a Tensor),
}

impl Dense {
    /// The product, its bias and what follows it. On int8 weights the
    /// bias and the rest are applied by the product itself, to each piece
    /// of output while it is in cache ([`Int8Matrix::matmul_then`]);
    /// otherwise by a second pass over the output ([`BiasAct`],
    /// [`BiasResidual`]). Both compute the same floats in the same order.
    fn product_then(&self, x: &Tensor, then: Then) -> Result<Tensor> {
        match (&self.weight, then) {
            (Weight::Int8(packed), Then::Bias(act)) => x
                .contiguous()?
                .apply_op2_no_bwd(&self.bias, &Int8Then(packed, act)),
            (Weight::Int8(packed), Then::Residual(residual)) => {
                x.contiguous()?
                    .apply_op3_no_bwd(&self.bias, residual, &Int8Residual(packed))
            }
            (_, Then::Bias(act)) => self.product(x)?.apply_op2_no_bwd(&self.bias, &BiasAct(act)),
            (_, Then::Residual(residual)) => {
                self.product(x)?
                    .apply_op3_no_bwd(&self.bias, residual, &BiasResidual)
            }
        }
    }
}

/// The per-tensor int8 scale stored beside a weight that was quantized
/// already (`weight_scale`, as docent writes an int8 ONNX model's weights:
/// `docent_rerank::onnx`), if any.
fn quantized_scale(vb: &VarBuilder) -> Result<Option<f32>> {
    if !vb.contains_tensor("weight_scale") {
        return Ok(None);
    }
    let scale = vb.get(1, "weight_scale")?.to_vec1::<f32>()?[0];
    Ok(Some(scale))
}

/// A sequence classifier's head on the `[CLS]` state: BERT's pooler
/// (dense, tanh), then a linear layer to the labels' logits.
struct Head {
    pooler: Dense,
    classifier: Dense,
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    up: Dense,
    down: Dense,
    output_norm: Norm,
}

/// The word-embedding table: loaded, or left in the mapped weights file.
enum WordTable {
    Loaded(Tensor),
    /// `rows × width` little-endian f32 at `offset` in `bytes`.
    Mapped {
        bytes: SharedBytes,
        offset: usize,
        rows: usize,
        width: usize,
    },
}

impl WordTable {
    /// The f32 table of `config`'s shape in the safetensors file `bytes`
    /// (`embeddings.word_embeddings.weight`, or under `bert.`), if there is
    /// one.
    fn mapped(bytes: &SharedBytes, config: &Config) -> Option<WordTable> {
        // The file: the header's length (8 bytes), the header, the data.
        let (header, metadata) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
        let name = "embeddings.word_embeddings.weight";
        let info = metadata
            .info(name)
            .or_else(|| metadata.info(&format!("bert.{name}")))?;
        let (rows, width) = (config.vocab_size, config.hidden_size);
        if info.dtype != safetensors::Dtype::F32 || info.shape != [rows, width] {
            return None;
        }
        let offset = 8 + header + info.data_offsets.0;
        bytes.get(offset..offset + rows * width * 4)?;
        Some(WordTable::Mapped {
            bytes: bytes.clone(),
            offset,
            rows,
            width,
        })
    }

    /// The rows of `ids` (one dimension): `[ids, width]`.
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            WordTable::Loaded(table) => table.index_select(ids, 0),
            WordTable::Mapped {
                bytes,
                offset,
                rows,
                width,
            } => {
                let ids = ids.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                let mut values = Vec::with_capacity(ids.len() * width);
                for &id in &ids {
                    let id = id as usize;
                    if id >= *rows {
                        candle_core::bail!("token {id} is outside the vocabulary of {rows}");
                    }
                    let at = offset + id * width * 4;
                    values.extend(
                        bytes[at..at + width * 4]
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                }
                Tensor::from_vec(values, (ids.len(), *width), &candle_core::Device::Cpu)
            }
        }
    }
}

/// The encoder: embeddings, then transformer layers; returns the last hidden
/// state as (batch × sequence, hidden).
pub struct Encoder {
    words: WordTable,
    positions: Tensor,
    /// The token type embeddings, (types, hidden).
    token_types: Tensor,
    /// Type 0's row, which single segments add everywhere.
    token_type: Tensor,
    head: Option<Head>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
}

impl Encoder {
    /// Loads the weights for `precision` (already resolved: f32, bf16 or int8).
    pub fn load(vb: VarBuilder, config: &Config, precision: Precision) -> Result<Self> {
        Self::load_with(vb, config, precision, None)
    }

    /// Loads the weights from the safetensors file `bytes` (mapped): as
    /// [`Encoder::load`], but the word-embedding table stays in `bytes`,
    /// its rows read as tokens are looked up (a 30,522-word table is 47 MB
    /// of fresh memory otherwise, at every load).
    pub fn load_mapped(bytes: SharedBytes, config: &Config, precision: Precision) -> Result<Self> {
        let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, &candle_core::Device::Cpu)?;
        Self::load_with(vb, config, precision, Some(&bytes))
    }

    fn load_with(
        vb: VarBuilder,
        config: &Config,
        precision: Precision,
        mapped: Option<&SharedBytes>,
    ) -> Result<Self> {
        if config.hidden_act != HiddenAct::Gelu {
            candle_core::bail!(
                "unsupported activation {:?}: docent's encoder implements BERT's exact GELU",
                config.hidden_act
            );
        }
        // Some checkpoints prefix every name with `bert.`.
        let root = vb.clone();
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
        let words = match mapped.and_then(|bytes| WordTable::mapped(bytes, config)) {
            Some(table) => table,
            None => {
                WordTable::Loaded(emb.get((config.vocab_size, hidden), "word_embeddings.weight")?)
            }
        };
        let positions = emb.get(
            (config.max_position_embeddings, hidden),
            "position_embeddings.weight",
        )?;
        let token_types = emb.get(
            (config.type_vocab_size, hidden),
            "token_type_embeddings.weight",
        )?;
        let token_type = token_types.get(0)?;
        let embedding_norm = Norm::load(hidden, eps, emb.pp("LayerNorm"))?;
        let scale = 1.0 / ((hidden / heads) as f64).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layer.{i}"));
                let attention = vb.pp("attention");
                Ok(Layer {
                    qkv: Dense::fused_qkv(attention.pp("self"), hidden, scale, precision)?,
                    attention_out: Dense::load(
                        attention.pp("output.dense"),
                        hidden,
                        hidden,
                        precision,
                    )?,
                    attention_norm: Norm::load(hidden, eps, attention.pp("output.LayerNorm"))?,
                    up: Dense::load(vb.pp("intermediate.dense"), hidden, inner, precision)?,
                    down: Dense::load(vb.pp("output.dense"), inner, hidden, precision)?,
                    output_norm: Norm::load(hidden, eps, vb.pp("output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // A sequence classifier (a cross-encoder) has a pooler and labels.
        let head = if root.contains_tensor("classifier.weight") {
            let labels = root.pp("classifier").get_unchecked("weight")?.dim(0)?;
            Some(Head {
                pooler: Dense::load(vb.pp("pooler.dense"), hidden, hidden, precision)?,
                classifier: Dense::load(root.pp("classifier"), hidden, labels, precision)?,
            })
        } else {
            None
        };
        Ok(Encoder {
            words,
            positions,
            token_types,
            token_type,
            head,
            embedding_norm,
            layers,
            heads,
            hidden,
        })
    }

    /// `ids` and `mask` are (batch, sequence); `mask` is 1 for tokens and 0
    /// for padding. Returns (batch × sequence, hidden).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_typed(ids, None, mask)
    }

    /// [`Encoder::forward`] with each token's segment (`types`, like `ids`;
    /// `None`: all 0).
    pub fn forward_typed(
        &self,
        ids: &Tensor,
        types: Option<&Tensor>,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let (n, s) = ids.dims2()?;
        let (h, heads) = (self.hidden, self.heads);
        let x = self
            .words
            .lookup(&ids.flatten_all()?)?
            .reshape((n, s, h))?
            .broadcast_add(&self.positions.narrow(0, 0, s)?)?;
        let x = match types {
            Some(types) => {
                (x + self
                    .token_types
                    .index_select(&types.flatten_all()?, 0)?
                    .reshape((n, s, h))?)?
            }
            None => x.broadcast_add(&self.token_type)?,
        };
        let mut x = self.embedding_norm.forward(&x)?.reshape((n * s, h))?;
        // Padding gets a large negative score before the softmax, tokens 0.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?;
        let attention = docent_ops::attention::Attention {
            batch: n,
            heads,
            // f32: bf16 products, which make prompts' attention 1.4–1.6×
            // faster, gained nothing on the encoder's heads of 32 (0.89–
            // 0.97× at 48 tokens, 1.04× at 256: rounding and packing each
            // head cost what the products save; `cargo bench -p docent-ops
            // --bench attention`).
            products: Products::F32,
        };
        for layer in &self.layers {
            // (n · s, 3 · h): each token's Q, K and V, read in place by
            // the attention.
            let qkv = layer.qkv.product_then(&x, Then::Bias(Act::Identity))?;
            let context = qkv.apply_op2_no_bwd(&bias, &attention)?;
            let attended = layer
                .attention_out
                .product_then(&context, Then::Residual(&x))?;
            let attended = layer.attention_norm.forward(&attended)?;
            let inner = layer.up.product_then(&attended, Then::Bias(Act::Gelu))?;
            let out = layer.down.product_then(&inner, Then::Residual(&attended))?;
            x = layer.output_norm.forward(&out)?;
        }
        Ok(x)
    }
}

impl Encoder {
    /// Whether the weights include a sequence classifier's head.
    pub fn classifies(&self) -> bool {
        self.head.is_some()
    }

    /// A sequence classifier's logits, (batch, labels): the encoder, then
    /// the pooler on each sequence's first (`[CLS]`) state and the
    /// classifier. Fails if the weights have no such head.
    pub fn classify(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let Some(head) = &self.head else {
            candle_core::bail!("these weights have no classifier (pooler and classifier)")
        };
        let (n, s) = ids.dims2()?;
        let states = self.forward_typed(ids, Some(types), mask)?;
        let first: Vec<u32> = (0..n).map(|i| (i * s) as u32).collect();
        let first = Tensor::from_vec(first, n, states.device())?;
        let cls = states.index_select(&first, 0)?;
        let pooled = head
            .pooler
            .product(&cls)?
            .broadcast_add(&head.pooler.bias)?
            .tanh()?;
        head.classifier
            .product(&pooled)?
            .broadcast_add(&head.classifier.bias)
    }
}

/// The rows of a contiguous `(rows, width)` f32 tensor and a `width` bias.
fn rows_and_bias<'a>(
    x: (&'a CpuStorage, &Layout),
    bias: (&'a CpuStorage, &Layout),
    op: &str,
) -> Result<(&'a [f32], &'a [f32], usize)> {
    let x_data = docent_ops::contiguous_f32(x.0, x.1, op)?;
    let b = docent_ops::contiguous_f32(bias.0, bias.1, op)?;
    let width = x.1.dims().last().copied().unwrap_or(0);
    if width == 0 || b.len() != width {
        candle_core::bail!("{op}: rows of {width} values with a bias of {}", b.len());
    }
    Ok((x_data, b, width))
}

/// What follows a bias: nothing, or GELU.
#[derive(Clone, Copy)]
enum Act {
    Identity,
    Gelu,
}

/// `act(x + bias)`, one pass over a product: the Q|K|V projection's, the
/// up-projection's (GELU).
struct BiasAct(Act);

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "docent-bias-act"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, bias, width) = rows_and_bias((x, x_layout), (bias, bias_layout), "bias-act")?;
        let out = docent_ops::par_rows(x, width, |src, dst| {
            docent_ops::bias_rows(dst, src, bias, matches!(self.0, Act::Gelu))
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// `x + bias + residual`, one pass before a layer norm.
struct BiasResidual;

impl CustomOp3 for BiasResidual {
    fn name(&self) -> &'static str {
        "docent-bias-residual"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, bias, width) = rows_and_bias((x, x_layout), (bias, bias_layout), "bias-residual")?;
        let residual = docent_ops::contiguous_f32(residual, residual_layout, "bias-residual")?;
        if residual.len() != x.len() {
            candle_core::bail!(
                "bias-residual: {} values with a residual of {}",
                x.len(),
                residual.len()
            );
        }
        let rows = x.len() / width;
        let out = docent_ops::par_fill(rows, width, docent_ops::min_rows(width), |rows, dst| {
            let span = rows.start * width..rows.end * width;
            for ((dst, src), res) in dst
                .chunks_exact_mut(width)
                .zip(x[span.clone()].chunks_exact(width))
                .zip(residual[span].chunks_exact(width))
            {
                for (((o, &v), &b), &r) in dst.iter_mut().zip(src).zip(bias).zip(res) {
                    *o = v + b + r;
                }
            }
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// An int8 product followed, in the product's own pass, by its bias and
/// [`Act`] (a [`CustomOp2`] of the input and the bias): [`BiasAct`]'s
/// arithmetic on each piece of output while it is in cache, instead of a
/// pass over the whole output, which had left cache by then (that pass and
/// its zeroing were a fifth of bulk embedding on the 7-bit kernel).
struct Int8Then<'a>(&'a Int8Matrix, Act);

/// [`Int8Then`] with a residual instead of an activation (a [`CustomOp3`]
/// of the input, the bias and the residual): [`BiasResidual`]'s arithmetic.
struct Int8Residual<'a>(&'a Int8Matrix);

/// A bias as wide as `matrix`'s output, or an error naming `op`.
fn int8_bias<'a>(
    matrix: &Int8Matrix,
    bias: (&'a CpuStorage, &Layout),
    op: &str,
) -> Result<&'a [f32]> {
    let b = docent_ops::contiguous_f32(bias.0, bias.1, op)?;
    if b.len() != matrix.out() {
        candle_core::bail!("{op}: a bias of {} for {} outputs", b.len(), matrix.out());
    }
    Ok(b)
}

impl CustomOp2 for Int8Then<'_> {
    fn name(&self) -> &'static str {
        "docent-int8-bias-act"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (matrix, op) = (self.0, "int8 bias-act");
        let bias = int8_bias(matrix, (bias, bias_layout), op)?;
        let shape = (matrix.input(), matrix.out());
        docent_ops::weight_op(x, x_layout, op, shape, |x, rows| {
            matrix.matmul_then(x, rows, |_, column, values| {
                let bias = &bias[column..];
                match self.1 {
                    Act::Identity => values.iter_mut().zip(bias).for_each(|(o, &b)| *o += b),
                    Act::Gelu => docent_ops::bias_gelu_in_place(values, bias),
                }
            })
        })
    }
}

impl CustomOp3 for Int8Residual<'_> {
    fn name(&self) -> &'static str {
        "docent-int8-bias-residual"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (matrix, op) = (self.0, "int8 bias-residual");
        let bias = int8_bias(matrix, (bias, bias_layout), op)?;
        let residual = docent_ops::contiguous_f32(residual, residual_layout, op)?;
        let (input, width) = (matrix.input(), matrix.out());
        let rows = x_layout.shape().elem_count() / input.max(1);
        if residual.len() != rows * width {
            candle_core::bail!(
                "{op}: {rows} rows of {width} outputs with a residual of {}",
                residual.len()
            );
        }
        docent_ops::weight_op(x, x_layout, op, (input, width), |x, rows| {
            matrix.matmul_then(x, rows, |row, column, values| {
                let at = row * width + column;
                let res = &residual[at..at + values.len()];
                for ((o, &b), &r) in values.iter_mut().zip(&bias[column..]).zip(res) {
                    *o = *o + b + r;
                }
            })
        })
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

    /// The word table left in the mapped weights file gives the loaded
    /// table's rows bit for bit, in any order and with repeats; an id past
    /// the vocabulary is an error, not a read of the next tensor.
    #[test]
    fn the_mapped_word_table_matches_the_loaded_one() {
        let dir = docent_models::testing::require("all-MiniLM-L6-v2");
        let config = crate::read_config(&dir.join("config.json")).unwrap();
        let file = std::fs::File::open(dir.join("model.safetensors")).unwrap();
        let bytes = docent_ops::map_file(&file).unwrap();
        let mapped =
            WordTable::mapped(&bytes, &config).expect("an f32 table of the config's shape");
        let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        let name = "embeddings.word_embeddings.weight";
        let vb = if vb.contains_tensor(name) {
            vb
        } else {
            vb.pp("bert")
        };
        let loaded = WordTable::Loaded(
            vb.get((config.vocab_size, config.hidden_size), name)
                .unwrap(),
        );
        let last = config.vocab_size as u32 - 1;
        let ids = Tensor::new(
            &[101u32, 2023, 0, last, 2023, 7592, 102],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let a: Vec<Vec<f32>> = mapped.lookup(&ids).unwrap().to_vec2().unwrap();
        let b: Vec<Vec<f32>> = loaded.lookup(&ids).unwrap().to_vec2().unwrap();
        assert_eq!(a, b);
        assert!(a[1].iter().any(|x| *x != 0.0));
        assert_ne!(a[1], a[5]);
        let past = Tensor::new(&[last + 1], &candle_core::Device::Cpu).unwrap();
        let error = mapped.lookup(&past).unwrap_err().to_string();
        assert!(error.contains("outside the vocabulary"), "{error}");
    }

    /// The fast erf against libm's over the range GELU sees.
    #[test]
    fn fast_erf_matches_libm() {
        let mut worst = 0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 / 8_000.0;
            let exact = candle_core::cpu::erf::erf_f64(x as f64) as f32;
            worst = worst.max((docent_ops::erf(x) - exact).abs());
        }
        assert!(worst < 5e-7, "max error {worst}");
    }

    /// On int8 weights the product applies its bias, GELU and residual
    /// itself; the floats are those of the product followed by the
    /// separate ops, to the bit, on both threads and on a few rows.
    #[test]
    fn int8_products_apply_bias_gelu_and_residual_as_the_separate_ops() {
        let device = &candle_core::Device::Cpu;
        let wave = |n: usize, f: f32, a: f32| -> Vec<f32> {
            (0..n).map(|i| (i as f32 * f).sin() * a).collect()
        };
        for (rows, input, out) in [(1usize, 24usize, 40usize), (7, 64, 96), (300, 96, 200)] {
            let weight =
                Tensor::from_vec(wave(out * input, 0.61, 0.2), (out, input), device).unwrap();
            let bias = Tensor::from_vec(wave(out, 1.7, 1.5), out, device).unwrap();
            let dense = Dense::new(weight, bias, Precision::Int8, None).unwrap();
            assert!(matches!(dense.weight, Weight::Int8(_)));
            let x = Tensor::from_vec(wave(rows * input, 0.37, 3.0), (rows, input), device).unwrap();
            let residual =
                Tensor::from_vec(wave(rows * out, 0.23, 2.0), (rows, out), device).unwrap();
            let product = dense.product(&x).unwrap();
            let cases = [
                (
                    dense.product_then(&x, Then::Bias(Act::Gelu)).unwrap(),
                    product
                        .apply_op2_no_bwd(&dense.bias, &BiasAct(Act::Gelu))
                        .unwrap(),
                ),
                (
                    dense.product_then(&x, Then::Bias(Act::Identity)).unwrap(),
                    product
                        .apply_op2_no_bwd(&dense.bias, &BiasAct(Act::Identity))
                        .unwrap(),
                ),
                (
                    dense.product_then(&x, Then::Residual(&residual)).unwrap(),
                    product
                        .apply_op3_no_bwd(&dense.bias, &residual, &BiasResidual)
                        .unwrap(),
                ),
            ];
            for (fused, separate) in cases {
                assert_eq!(fused.dims(), &[rows, out]);
                let (fused, separate): (Vec<f32>, Vec<f32>) = (
                    fused.flatten_all().unwrap().to_vec1().unwrap(),
                    separate.flatten_all().unwrap().to_vec1().unwrap(),
                );
                assert!(separate.iter().any(|&v| v != 0.0));
                let differ = fused
                    .iter()
                    .zip(&separate)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(differ, 0, "{rows} × {input} → {out}");
            }
            // A residual of the wrong shape is an error, not a panic.
            let short = Tensor::zeros((rows, out - 1), DType::F32, device).unwrap();
            assert!(dense.product_then(&x, Then::Residual(&short)).is_err());
        }
    }

    /// docent's layer norm gives candle's floats, to the bit.
    #[test]
    fn layer_norm_matches_candles_to_the_bit() {
        let device = &candle_core::Device::Cpu;
        for (rows, width) in [(1usize, 384usize), (5, 7), (400, 384)] {
            let wave = |n: usize, f: f32, a: f32, c: f32| -> Vec<f32> {
                (0..n).map(|i| (i as f32 * f).sin() * a + c).collect()
            };
            let x = Tensor::from_vec(wave(rows * width, 0.37, 3.0, 0.5), (rows, width), device)
                .unwrap();
            let weight = Tensor::from_vec(wave(width, 1.1, 0.3, 1.0), width, device).unwrap();
            let bias = Tensor::from_vec(wave(width, 0.7, 0.2, 0.0), width, device).unwrap();
            let ours = Norm {
                weight: weight.clone(),
                bias: bias.clone(),
                eps: 1e-12,
            }
            .forward(&x)
            .unwrap();
            let theirs = candle_nn::ops::layer_norm(&x, &weight, &bias, 1e-12).unwrap();
            let (ours, theirs): (Vec<f32>, Vec<f32>) = (
                ours.flatten_all().unwrap().to_vec1().unwrap(),
                theirs.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(ours.len(), rows * width);
            let differ = ours
                .iter()
                .zip(&theirs)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differ, 0, "{rows} × {width}");
        }
    }

    #[test]
    fn bias_gelu_op_matches_candle_gelu_erf_of_the_sum() {
        // One row, a short odd row, and enough rows to use both threads.
        for (rows, width) in [(1usize, 7usize), (3, 5), (400, 96)] {
            let wave = |n: usize, f: f32| -> Vec<f32> {
                (0..n).map(|i| (i as f32 * f).sin() * 6.0).collect()
            };
            let device = &candle_core::Device::Cpu;
            let x = Tensor::from_vec(wave(rows * width, 0.37), (rows, width), device).unwrap();
            let bias = Tensor::from_vec(wave(width, 1.3), width, device).unwrap();
            let ours = x.apply_op2_no_bwd(&bias, &BiasAct(Act::Gelu)).unwrap();
            let reference = x.broadcast_add(&bias).unwrap().gelu_erf().unwrap();
            let (ours, reference): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
                (ours.to_vec2().unwrap(), reference.to_vec2().unwrap());
            for (a, b) in ours.iter().flatten().zip(reference.iter().flatten()) {
                assert!((a - b).abs() < 1e-5, "{rows}x{width}: {a} vs {b}");
            }
        }
    }
}
