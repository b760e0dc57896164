//! docent's own forward pass for llama-family GGUF models (`llama`, `qwen2`).
//!
//! candle-transformers' quantized models run every product through the
//! quantized kernels and grow their KV cache by concatenation. This one
//! differs in three ways:
//! - **Two weight forms.** Decoding (one row at a time) is memory-bound, so
//!   it reads the quantized weights. Prompt evaluation is compute-bound, so
//!   with `dense_prefill` it multiplies by dense copies of the same weights,
//!   fused (Q|K|V, gate|up): f32, stored transposed for gemm (about 3×
//!   faster than the quantized dot products on a 2-core machine, for
//!   4 bytes per weight), bf16 packed for docent's AVX-512 BF16 kernel
//!   (`docent_ops::bf16`; 2 bytes per weight), or int8 per output column
//!   for docent's int8 kernel (`docent_ops::int8`, activations quantized
//!   per token; 1 byte per weight, 1.6–1.7× bf16's prompt speed on
//!   AVX-512 VNNI).
//! - **A KV cache written in place**, never re-concatenated per token: it
//!   grows in steps as the conversation does ([`Layer::make_room`]), so a
//!   fresh process does not zero room for the whole context (470 MB for
//!   qwen2.5-1.5b at 8,192 positions) before its first prompt.
//! - **Prefix reuse.** The cache remembers which tokens it holds; a prompt
//!   that starts with them (the fixed system prompt and template) only
//!   evaluates the rest.
//!
//! Grouped-query attention multiplies each KV head by its whole group of
//! query heads at once instead of repeating K and V. Decoding (one token)
//! attends with [`docent_ops::DecodeAttention`], split across threads over
//! pieces of the cache; prompt evaluation attends with
//! [`docent_ops::attention::PrefillAttention`], blocks of query rows per
//! head against only the keys they may see.

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor, bail};
use docent_ops::bf16::Bf16Matrix;
use docent_ops::int8::{Int8Matrix, WeightBits};
use docent_ops::q4k::Q4kMatrix;
use docent_ops::q6k::Q6kMatrix;
use docent_ops::q8::Q8Matrix;
use std::io::{Read, Seek};
use std::sync::Arc;

/// Pieces of at least this many tokens use the dense weights (when loaded).
const DENSE_MIN_ROWS: usize = 8;

/// Linear maps sharing one input, as separate quantized matrices and, for
/// prompt evaluation, one fused dense matrix.
struct Projection {
    /// candle's quantized products, unless `decode` replaced them.
    quantized: Vec<QMatMul>,
    /// All parts' rows on docent's AVX-512 kernels, where every part is
    /// `Q8_0`, `Q4_K` or `Q6_K`, the CPU runs the kernels, and dense
    /// weights take the prompts.
    decode: Option<Kernel>,
    dense: Option<Dense>,
    /// Biases of all parts, concatenated (qwen2's Q, K and V have them).
    bias: Option<Tensor>,
}

/// The dense form of a projection's weights for prompt evaluation.
pub(crate) enum Dense {
    /// f32, `[in, Σ out]`, contiguous: gemm streams its rows.
    F32(Tensor),
    /// bf16, packed for docent's AVX-512 BF16 kernel.
    Bf16(Bf16Matrix),
    /// int8 per output column, packed for docent's int8 kernel.
    Int8(Int8Matrix),
}

/// Which dense weights prompt evaluation multiplies by, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefill {
    /// Only the quantized weights (no extra memory).
    Quantized,
    /// f32 copies: 4 bytes per weight.
    F32,
    /// bf16 copies: 2 bytes per weight, on AVX-512 BF16.
    Bf16,
    /// int8 copies: 1 byte per weight, on docent's int8 kernel. 7-bit
    /// weights where the kernel would otherwise quantize activations to
    /// 7 bits (AVX-512 BW and AVX2, [`WeightBits::for_8bit_activations`]).
    Int8(WeightBits),
}

impl Prefill {
    /// `quantized`, `f32`, `bf16`, `int8` or `int8-w7`, for reports and
    /// file names.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Prefill::Quantized => "quantized",
            Prefill::F32 => "f32",
            Prefill::Bf16 => "bf16",
            Prefill::Int8(WeightBits::Eight) => "int8",
            Prefill::Int8(WeightBits::Seven) => "int8-w7",
        }
    }
}

impl Dense {
    /// (Σ out, in).
    pub(crate) fn shape(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Dense::F32(w) => {
                let (input, out) = w.dims2()?;
                (out, input)
            }
            Dense::Bf16(m) => (m.out(), m.input()),
            Dense::Int8(m) => (m.out(), m.input()),
        })
    }

    fn form(&self) -> Prefill {
        match self {
            Dense::F32(_) => Prefill::F32,
            Dense::Bf16(_) => Prefill::Bf16,
            Dense::Int8(m) => Prefill::Int8(m.weight_bits()),
        }
    }
}

/// Dense prompt weights read back from the weights cache, in load order.
/// A matrix whose form or shape does not fit is rebuilt from the quantized
/// weights, and the cache is marked stale so that it is written again.
#[derive(Default)]
pub(crate) struct DenseCache {
    pub(crate) items: std::collections::VecDeque<Dense>,
    pub(crate) stale: bool,
}

/// Decoding matrices read back from the weights cache (mapped), in load
/// order: one entry per projection that decodes on docent's kernels. An
/// entry whose formats or shapes do not fit is read from the GGUF instead,
/// and the cache is marked stale so that it is written again.
#[derive(Default)]
pub(crate) struct DecodeCache {
    pub(crate) items: std::collections::VecDeque<Kernel>,
    pub(crate) stale: bool,
}

impl DecodeCache {
    /// The next entry, if its matrices are `runs` (format, rows, input).
    pub(crate) fn take(&mut self, runs: &[Shape]) -> Option<Kernel> {
        let next = self.items.pop_front();
        let fits = next.as_ref().is_some_and(|k| {
            let leaves = k.leaves();
            leaves.len() == runs.len()
                && leaves.iter().zip(runs).all(|(l, &(f, out, input))| {
                    l.format() == Some(f) && l.out() == out && l.input() == input
                })
        });
        if fits {
            return next;
        }
        // Out of step from here on: read the rest from the GGUF.
        self.items.clear();
        self.stale = true;
        None
    }
}

impl Projection {
    fn load<R: Read + Seek>(
        gguf: &mut Gguf<'_, R>,
        names: &[String],
        with_bias: bool,
        prefill: Prefill,
        cache: &mut DenseCache,
    ) -> Result<Self> {
        let weights: Vec<String> = names.iter().map(|n| format!("{n}.weight")).collect();
        let mut shape = (0, 0);
        for name in &weights {
            let (out, input) = gguf.info(name)?.shape.dims2()?;
            shape = (shape.0 + out, input);
        }
        let cached = if prefill == Prefill::Quantized {
            None
        } else {
            match cache.items.pop_front() {
                Some(d) if d.form() == prefill && d.shape()? == shape => Some(d),
                _ => {
                    cache.stale = true;
                    None
                }
            }
        };
        // Decoding on docent's Q8_0, Q4_K and Q6_K kernels, where dense
        // weights take the prompts. With those from the cache, the quantized
        // bytes go straight from the file into the kernels' layouts.
        let kernel = prefill != Prefill::Quantized && gguf.on_kernels(&weights);
        let (quantized, decode, dense_parts) = if kernel && cached.is_some() {
            (Vec::new(), Some(gguf.kernel(&weights)?), Vec::new())
        } else {
            let quantized = weights
                .iter()
                .map(|name| gguf.tensor(name))
                .collect::<Result<Vec<_>>>()?;
            let mut dense_parts = Vec::new();
            if prefill != Prefill::Quantized && cached.is_none() {
                for weight in &quantized {
                    dense_parts.push(weight.dequantize(&Device::Cpu)?);
                }
            }
            if kernel {
                let decode = match gguf.cached_kernel(&weights)? {
                    Some(k) => k,
                    None => Kernel::from_qtensors(&quantized)?,
                };
                (Vec::new(), Some(decode), dense_parts)
            } else {
                let quantized = quantized
                    .into_iter()
                    .map(QMatMul::from_qtensor)
                    .collect::<Result<Vec<_>>>()?;
                (quantized, None, dense_parts)
            }
        };
        let mut biases = Vec::new();
        for name in names {
            if with_bias {
                biases.push(
                    gguf.tensor(&format!("{name}.bias"))?
                        .dequantize(&Device::Cpu)?,
                );
            }
        }
        let dense = match prefill {
            _ if cached.is_some() => cached,
            Prefill::Quantized => None,
            // [Σ out, in] → [in, Σ out], contiguous: gemm then streams rows.
            Prefill::F32 => Some(Dense::F32(Tensor::cat(&dense_parts, 0)?.t()?.contiguous()?)),
            Prefill::Bf16 => Some(Dense::Bf16(Bf16Matrix::pack(
                &fused(&dense_parts)?,
                shape.0,
                shape.1,
            ))),
            Prefill::Int8(bits) => Some(Dense::Int8(Int8Matrix::pack_with(
                &fused(&dense_parts)?,
                shape.0,
                shape.1,
                bits,
            ))),
        };
        let bias = if with_bias {
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Ok(Projection {
            quantized,
            decode,
            dense,
            bias,
        })
    }

    /// `x`: `[tokens, in]` → `[tokens, Σ out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.dense {
            Some(Dense::F32(w)) if x.dim(0)? >= DENSE_MIN_ROWS => x.matmul(w)?,
            Some(Dense::Bf16(w)) if x.dim(0)? >= DENSE_MIN_ROWS => {
                x.contiguous()?.apply_op1_no_bwd(w)?
            }
            Some(Dense::Int8(w)) if x.dim(0)? >= DENSE_MIN_ROWS => {
                x.contiguous()?.apply_op1_no_bwd(w)?
            }
            _ => match &self.decode {
                Some(m) => m.forward(x)?,
                None if self.quantized.len() == 1 => self.quantized[0].forward(x)?,
                None => {
                    let parts = self
                        .quantized
                        .iter()
                        .map(|q| q.forward(x))
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&parts, 1)?
                }
            },
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// A decoding matrix's or part's (format, rows, input).
type Shape = (GgmlDType, usize, usize);

/// Whether two parts are of one format.
fn same_format(a: &Shape, b: &Shape) -> bool {
    a.0 == b.0
}

/// The matrices that parts `(format, rows, input)` make, one per run of
/// consecutive parts in one format: `(format, Σ rows, input)`. An error
/// for no parts, or parts of different inputs.
fn runs(parts: &[Shape]) -> Result<Vec<Shape>> {
    let Some(&(_, _, input)) = parts.first() else {
        bail!("no matrices to concatenate");
    };
    if parts.iter().any(|p| p.2 != input) {
        bail!("the matrices to concatenate have different inputs");
    }
    Ok(parts
        .chunk_by(same_format)
        .map(|run| (run[0].0, run.iter().map(|p| p.1).sum(), input))
        .collect())
}

/// A matrix on docent's decoding kernels.
pub(crate) enum Kernel {
    Q8(Q8Matrix),
    Q4k(Q4kMatrix),
    Q6k(Q6kMatrix),
    /// Matrices of different formats sharing an input (qwen2.5-1.5b's
    /// `Q4_K` Q and K beside a `Q6_K` V), their outputs side by side.
    Mixed(Vec<Kernel>),
}

impl Kernel {
    /// Whether docent runs `format` on its own kernel on this CPU.
    fn runs(format: GgmlDType) -> bool {
        match format {
            GgmlDType::Q8_0 => docent_ops::q8::available(),
            GgmlDType::Q4K => docent_ops::q4k::available(),
            GgmlDType::Q6K => docent_ops::q6k::available(),
            _ => false,
        }
    }

    /// `out` rows of `input` values of `format`, all zero, for
    /// [`Kernel::read_rows`].
    fn zeroed(format: GgmlDType, out: usize, input: usize) -> Result<Kernel> {
        let e = candle_core::Error::msg;
        Ok(match format {
            GgmlDType::Q8_0 => Kernel::Q8(Q8Matrix::zeroed(out, input).map_err(e)?),
            GgmlDType::Q4K => Kernel::Q4k(Q4kMatrix::zeroed(out, input).map_err(e)?),
            GgmlDType::Q6K => Kernel::Q6k(Q6kMatrix::zeroed(out, input).map_err(e)?),
            other => bail!("docent has no decoding kernel for {other:?}"),
        })
    }

    /// Reads ggml rows `first..first + out` from `reader` into this matrix
    /// (of one format).
    fn read_rows(&mut self, first: usize, out: usize, reader: &mut impl Read) -> Result<()> {
        match self {
            Kernel::Q8(m) => m.read_rows(first, out, reader)?,
            Kernel::Q4k(m) => m.read_rows(first, out, reader)?,
            Kernel::Q6k(m) => m.read_rows(first, out, reader)?,
            Kernel::Mixed(_) => bail!("rows are read into a matrix of one format"),
        }
        Ok(())
    }

    /// The parts' rows as one matrix.
    pub(crate) fn from_qtensors(parts: &[QTensor]) -> Result<Kernel> {
        let shapes = parts
            .iter()
            .map(|p| {
                let (out, input) = p.shape().dims2()?;
                Ok((p.dtype(), out, input))
            })
            .collect::<Result<Vec<_>>>()?;
        Kernel::from_parts(&shapes, |i, matrix, first| {
            matrix.read_rows(first, shapes[i].1, &mut &parts[i].data()?[..])
        })
    }

    /// The rows of `parts` (format, rows, input), one after another: each
    /// run of consecutive parts in one format becomes one matrix, filled
    /// part by part by `fill(part, matrix, its first row)` (read straight
    /// into it: reading each part into memory of its own and then
    /// concatenating wrote every weight twice into fresh memory, which
    /// these virtual machines can hand out slowly), and a
    /// [`Kernel::Mixed`] holds the runs of several formats.
    fn from_parts(
        parts: &[Shape],
        mut fill: impl FnMut(usize, &mut Kernel, usize) -> Result<()>,
    ) -> Result<Kernel> {
        let mut matrices = Vec::new();
        let mut part = 0;
        for (run, (format, out, input)) in parts.chunk_by(same_format).zip(runs(parts)?) {
            let mut matrix = Kernel::zeroed(format, out, input)?;
            let mut first = 0;
            for &(_, rows, _) in run {
                fill(part, &mut matrix, first)?;
                (part, first) = (part + 1, first + rows);
            }
            matrices.push(matrix);
        }
        Ok(Kernel::from_leaves(matrices).expect("runs() refuses no parts"))
    }

    /// The matrices of one format it is made of, in order.
    pub(crate) fn leaves(&self) -> Vec<&Kernel> {
        match self {
            Kernel::Mixed(parts) => parts.iter().flat_map(Kernel::leaves).collect(),
            leaf => vec![leaf],
        }
    }

    /// A leaf's format (`None` for [`Kernel::Mixed`]).
    pub(crate) fn format(&self) -> Option<GgmlDType> {
        match self {
            Kernel::Q8(_) => Some(GgmlDType::Q8_0),
            Kernel::Q4k(_) => Some(GgmlDType::Q4K),
            Kernel::Q6k(_) => Some(GgmlDType::Q6K),
            Kernel::Mixed(_) => None,
        }
    }

    /// A leaf's arrays as bytes, for the weights cache.
    pub(crate) fn stored(&self) -> Vec<&[u8]> {
        match self {
            Kernel::Q8(m) => m.stored().to_vec(),
            Kernel::Q4k(m) => m.stored().to_vec(),
            Kernel::Q6k(m) => m.stored().to_vec(),
            Kernel::Mixed(_) => Vec::new(),
        }
    }

    /// A leaf of `format` over the arrays [`Kernel::stored`] wrote at
    /// `offset` in `bytes`, and where they end.
    pub(crate) fn from_stored(
        format: GgmlDType,
        out: usize,
        input: usize,
        bytes: docent_ops::bf16::SharedBytes,
        offset: usize,
    ) -> Option<(Kernel, usize)> {
        Some(match format {
            GgmlDType::Q8_0 => {
                let (m, end) = Q8Matrix::from_stored(out, input, bytes, offset)?;
                (Kernel::Q8(m), end)
            }
            GgmlDType::Q4K => {
                let (m, end) = Q4kMatrix::from_stored(out, input, bytes, offset)?;
                (Kernel::Q4k(m), end)
            }
            GgmlDType::Q6K => {
                let (m, end) = Q6kMatrix::from_stored(out, input, bytes, offset)?;
                (Kernel::Q6k(m), end)
            }
            _ => return None,
        })
    }

    /// The leaves as one matrix: the leaf itself, or [`Kernel::Mixed`].
    pub(crate) fn from_leaves(mut leaves: Vec<Kernel>) -> Option<Kernel> {
        match leaves.len() {
            0 => None,
            1 => leaves.pop(),
            _ => Some(Kernel::Mixed(leaves)),
        }
    }

    pub(crate) fn input(&self) -> usize {
        match self {
            Kernel::Q8(m) => m.input(),
            Kernel::Q4k(m) => m.input(),
            Kernel::Q6k(m) => m.input(),
            Kernel::Mixed(parts) => parts[0].input(),
        }
    }

    pub(crate) fn out(&self) -> usize {
        match self {
            Kernel::Q8(m) => m.out(),
            Kernel::Q4k(m) => m.out(),
            Kernel::Q6k(m) => m.out(),
            Kernel::Mixed(parts) => parts.iter().map(Kernel::out).sum(),
        }
    }

    /// `rows` rows of `input` values → `rows` rows of `out`.
    pub(crate) fn matvec(&self, x: &[f32], rows: usize) -> Vec<f32> {
        match self {
            Kernel::Q8(m) => m.matvec(x, rows),
            Kernel::Q4k(m) => m.matvec(x, rows),
            Kernel::Q6k(m) => m.matvec(x, rows),
            Kernel::Mixed(parts) => {
                let ys: Vec<(Vec<f32>, usize)> =
                    parts.iter().map(|p| (p.matvec(x, rows), p.out())).collect();
                let mut y = Vec::with_capacity(rows * self.out());
                for r in 0..rows {
                    for (part, out) in &ys {
                        y.extend_from_slice(&part[r * out..(r + 1) * out]);
                    }
                }
                y
            }
        }
    }

    /// `x`: `[rows, in]` → `[rows, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        Tensor::from_vec(self.matvec(&values, rows), (rows, self.out()), &Device::Cpu)
    }
}

/// The output projection: docent's kernel where it runs, else candle's.
enum Output {
    Ours(Kernel),
    Candle(QMatMul),
}

impl Output {
    /// `x`: `[rows, in]` → `[rows, vocabulary]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Output::Ours(m) => m.forward(x),
            Output::Candle(q) => q.forward(x),
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    qkv: Projection,
    out: Projection,
    ffn_norm: Tensor,
    gate_up: Projection,
    down: Projection,
    /// Cached keys and values, `[kv heads, room, head dim]` each; the room
    /// grows with the conversation, up to the context.
    k: Tensor,
    v: Tensor,
}

/// The KV caches grow by at least this many positions at a time.
const KV_STEP: usize = 512;

impl Layer {
    /// Makes room for `total` positions in the key and value caches (at
    /// most `capacity`), keeping the first `kept` cached ones. Each growth
    /// at least doubles the room (and rounds it up to a multiple of
    /// `step`), so a long conversation copies its cache a few times, not at
    /// every prompt.
    fn make_room(&mut self, total: usize, kept: usize, capacity: usize, step: usize) -> Result<()> {
        let (kv_heads, room, head_dim) = self.k.dims3()?;
        if total <= room {
            return Ok(());
        }
        if total > capacity {
            bail!("{total} positions exceed the context of {capacity}");
        }
        let room = (room * 2)
            .max(total.next_multiple_of(step.max(1)))
            .min(capacity);
        let grow = |old: &Tensor| -> Result<Tensor> {
            let new = Tensor::zeros((kv_heads, room, head_dim), DType::F32, &Device::Cpu)?;
            if kept > 0 {
                new.slice_set(&old.narrow(1, 0, kept)?.contiguous()?, 1, 0)?;
            }
            Ok(new)
        };
        self.k = grow(&self.k)?;
        self.v = grow(&self.v)?;
        Ok(())
    }
}

/// Reads named tensors out of a GGUF file.
struct Gguf<'a, R> {
    content: &'a Content,
    reader: &'a mut R,
    decode: &'a mut DecodeCache,
}

impl<R: Read + Seek> Gguf<'_, R> {
    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        self.content.tensor(self.reader, name, &Device::Cpu)
    }

    fn info(&self, name: &str) -> Result<&candle_core::quantized::gguf_file::TensorInfo> {
        match self.content.tensor_infos.get(name) {
            Some(info) => Ok(info),
            None => bail!("the GGUF has no tensor {name}"),
        }
    }

    /// Whether the named matrices all run on docent's decoding kernels:
    /// each is `Q8_0`, `Q4_K` or `Q6_K`, and this CPU has an AVX-512
    /// variant of that kernel (candle's products are the fallback).
    fn on_kernels(&self, names: &[String]) -> bool {
        !names.is_empty()
            && names.iter().all(|n| {
                self.content
                    .tensor_infos
                    .get(n)
                    .is_some_and(|i| Kernel::runs(i.ggml_dtype) && i.shape.rank() == 2)
            })
    }

    /// The named matrices' rows, one after another, on docent's decoding
    /// kernels ([`Kernel::from_parts`]): from the weights cache where it
    /// has them, else read from the GGUF.
    fn kernel(&mut self, names: &[String]) -> Result<Kernel> {
        if let Some(cached) = self.cached_kernel(names)? {
            return Ok(cached);
        }
        let parts = self.parts(names)?;
        let shapes: Vec<_> = parts.iter().map(|&(shape, _)| shape).collect();
        Kernel::from_parts(&shapes, |i, matrix, first| {
            let ((_, rows, _), at) = parts[i];
            self.reader.seek(std::io::SeekFrom::Start(at))?;
            matrix.read_rows(first, rows, self.reader)
        })
    }

    /// The named matrices' (format, rows, input), and where their data
    /// starts in the file.
    fn parts(&self, names: &[String]) -> Result<Vec<(Shape, u64)>> {
        names
            .iter()
            .map(|name| {
                let info = self.info(name)?;
                let (out, input) = info.shape.dims2()?;
                let at = self.content.tensor_data_offset + info.offset;
                Ok(((info.ggml_dtype, out, input), at))
            })
            .collect()
    }

    /// The decoding matrices of `names` from the weights cache, if its
    /// next entry has their formats and shapes.
    fn cached_kernel(&mut self, names: &[String]) -> Result<Option<Kernel>> {
        let shapes: Vec<_> = self.parts(names)?.into_iter().map(|(s, _)| s).collect();
        Ok(self.decode.take(&runs(&shapes)?))
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn u32(&self, key: &str) -> Result<usize> {
        match self.content.metadata.get(key) {
            Some(v) => Ok(v.to_u32()? as usize),
            None => bail!("the GGUF metadata has no {key}"),
        }
    }

    fn f32(&self, key: &str) -> Option<f32> {
        self.content.metadata.get(key).and_then(|v| v.to_f32().ok())
    }
}

/// The token-embedding table in its quantized form: a prompt's rows are
/// dequantized as they are looked up. A dequantized f32 copy of
/// qwen2.5-0.5b's table would be 545 MB of fresh memory, which these
/// virtual machines hand out at about half a second per GiB (and several
/// times slower after a minute of idle), on every load.
enum TokenTable {
    /// Read whole into memory: with tied embeddings on candle's products
    /// it is also the output projection.
    Loaded(Arc<QTensor>),
    /// Left in the model file; a prompt's rows are read from it as they are
    /// looked up (a row is a few KB, in the page cache), so a load writes
    /// none of the table's few hundred MB into fresh memory.
    InFile {
        file: std::fs::File,
        /// Where row 0 starts in the file.
        at: u64,
        format: GgmlDType,
        rows: usize,
        width: usize,
    },
}

impl TokenTable {
    /// The table named `name`, left in `file` (which `content` describes).
    fn in_file(content: &Content, file: std::fs::File, name: &str) -> Result<Self> {
        let Some(info) = content.tensor_infos.get(name) else {
            bail!("the GGUF has no tensor {name}");
        };
        let (rows, width) = info.shape.dims2()?;
        if width % info.ggml_dtype.block_size() != 0 {
            bail!(
                "{name}: rows of {width} are not whole {:?} blocks",
                info.ggml_dtype
            );
        }
        Ok(TokenTable::InFile {
            file,
            at: content.tensor_data_offset + info.offset,
            format: info.ggml_dtype,
            rows,
            width,
        })
    }

    /// The rows of `tokens`, dequantized: `[tokens, width]`.
    fn lookup(&self, tokens: &[u32]) -> Result<Tensor> {
        match self {
            TokenTable::Loaded(table) => {
                let ids = Tensor::new(tokens, &Device::Cpu)?;
                table.embedding(&ids)
            }
            TokenTable::InFile {
                file,
                at,
                format,
                rows,
                width,
            } => {
                use std::os::unix::fs::FileExt;
                let row_bytes = width / format.block_size() * format.type_size();
                let mut raw = vec![0u8; tokens.len() * row_bytes];
                for (&token, dst) in tokens.iter().zip(raw.chunks_exact_mut(row_bytes)) {
                    let token = token as usize;
                    if token >= *rows {
                        bail!("token {token} is outside the table of {rows}");
                    }
                    file.read_exact_at(dst, at + (token * row_bytes) as u64)?;
                }
                let table = candle_core::quantized::ggml_file::qtensor_from_ggml(
                    *format,
                    &raw,
                    vec![tokens.len(), *width],
                    &Device::Cpu,
                )?;
                table.dequantize(&Device::Cpu)
            }
        }
    }
}

pub(crate) struct Transformer {
    embeddings: TokenTable,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Output,
    eps: f32,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// NEOX rotary layout (qwen2) rather than interleaved pairs (llama).
    neox: bool,
    cos: Tensor,
    sin: Tensor,
    capacity: usize,
    /// The KV caches grow by multiples of this many positions ([`KV_STEP`]).
    kv_step: usize,
    /// The tokens whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    /// How a prompt's attention products run: bf16 where its dense
    /// products run in bf16 or int8 and the CPU has AVX-512 BF16.
    attention: docent_ops::attention::Products,
}

impl Transformer {
    /// Loads a `llama` or `qwen2` GGUF with room for `capacity` positions.
    /// `source` is the file `reader` reads (a handle of its own), if it is
    /// one: the token table is then read from it row by row as prompts need
    /// them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        source: Option<std::fs::File>,
        arch: &str,
        capacity: usize,
        prefill: Prefill,
        cache: &mut DenseCache,
        decode: &mut DecodeCache,
    ) -> Result<Self> {
        let neox = match arch {
            "qwen2" => true,
            "llama" => false,
            other => bail!("architecture '{other}' is not supported (llama, qwen2 are)"),
        };
        let mut gguf = Gguf {
            content,
            reader,
            decode,
        };
        if gguf.u32(&format!("{arch}.expert_count")).unwrap_or(0) > 1 {
            bail!("mixture-of-experts models are not supported");
        }
        let heads = gguf.u32(&format!("{arch}.attention.head_count"))?;
        let kv_heads = gguf.u32(&format!("{arch}.attention.head_count_kv"))?;
        let dim = gguf.u32(&format!("{arch}.embedding_length"))?;
        let blocks = gguf.u32(&format!("{arch}.block_count"))?;
        let eps = gguf
            .f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-6);
        let base = gguf
            .f32(&format!("{arch}.rope.freq_base"))
            .unwrap_or(10_000.0);
        if heads == 0 || kv_heads == 0 || dim % heads != 0 || heads % kv_heads != 0 {
            bail!("inconsistent attention shape: {heads} heads, {kv_heads} KV heads, width {dim}");
        }
        let head_dim = dim / heads;
        if let Ok(rope_dim) = gguf.u32(&format!("{arch}.rope.dimension_count"))
            && rope_dim != head_dim
        {
            bail!("partial rotary embeddings ({rope_dim} of {head_dim}) are not supported");
        }
        let (cos, sin) = rotary_tables(head_dim, base, capacity)?;

        let table = "token_embd.weight";
        let separate = gguf.has("output.weight");
        let name = if separate { "output.weight" } else { table };
        let names = [name.to_string()];
        let (embeddings, output) = if prefill != Prefill::Quantized && gguf.on_kernels(&names) {
            (None, Output::Ours(gguf.kernel(&names)?))
        } else if separate {
            let output = QMatMul::from_qtensor(gguf.tensor(name)?)?;
            (None, Output::Candle(output))
        } else {
            // Tied embeddings on candle's products: one table, read once.
            let embeddings = Arc::new(gguf.tensor(table)?);
            let output = QMatMul::from_arc(embeddings.clone())?;
            (Some(TokenTable::Loaded(embeddings)), Output::Candle(output))
        };
        let embeddings = match (embeddings, source) {
            (Some(loaded), _) => loaded,
            (None, Some(file)) => TokenTable::in_file(content, file, table)?,
            (None, None) => TokenTable::Loaded(Arc::new(gguf.tensor(table)?)),
        };
        let norm = gguf
            .tensor("output_norm.weight")?
            .dequantize(&Device::Cpu)?;
        let with_bias = gguf.has("blk.0.attn_q.bias");
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let name = |n: &str| format!("blk.{i}.{n}");
            // No room yet: the caches grow as prompts arrive.
            let kv_shape = (kv_heads, 0, head_dim);
            layers.push(Layer {
                attn_norm: gguf
                    .tensor(&name("attn_norm.weight"))?
                    .dequantize(&Device::Cpu)?,
                qkv: Projection::load(
                    &mut gguf,
                    &[name("attn_q"), name("attn_k"), name("attn_v")],
                    with_bias,
                    prefill,
                    cache,
                )?,
                out: Projection::load(&mut gguf, &[name("attn_output")], false, prefill, cache)?,
                ffn_norm: gguf
                    .tensor(&name("ffn_norm.weight"))?
                    .dequantize(&Device::Cpu)?,
                gate_up: Projection::load(
                    &mut gguf,
                    &[name("ffn_gate"), name("ffn_up")],
                    false,
                    prefill,
                    cache,
                )?,
                down: Projection::load(&mut gguf, &[name("ffn_down")], false, prefill, cache)?,
                k: Tensor::zeros(kv_shape, DType::F32, &Device::Cpu)?,
                v: Tensor::zeros(kv_shape, DType::F32, &Device::Cpu)?,
            });
        }
        if !cache.items.is_empty() {
            cache.stale = true;
        }
        if !gguf.decode.items.is_empty() {
            gguf.decode.stale = true;
        }
        Ok(Transformer {
            embeddings,
            layers,
            norm,
            output,
            eps: eps as f32,
            heads,
            kv_heads,
            head_dim,
            neox,
            cos,
            sin,
            capacity,
            kv_step: KV_STEP,
            cached: Vec::new(),
            attention: docent_ops::attention::Products::for_model(matches!(
                prefill,
                Prefill::Bf16 | Prefill::Int8(_)
            )),
        })
    }

    /// The decoding matrices in the order [`Transformer::load`] takes them
    /// back from a [`DecodeCache`]: the output projection's, then each
    /// layer's.
    pub(crate) fn decode_kernels(&self) -> Vec<&Kernel> {
        let output = match &self.output {
            Output::Ours(k) => Some(k),
            Output::Candle(_) => None,
        };
        output
            .into_iter()
            .chain(
                self.layers
                    .iter()
                    .flat_map(|l| [&l.qkv, &l.out, &l.gate_up, &l.down])
                    .filter_map(|p| p.decode.as_ref()),
            )
            .collect()
    }

    /// The dense prompt weights in the order [`Transformer::load`] takes
    /// them back from a [`DenseCache`].
    pub(crate) fn dense(&self) -> Vec<&Dense> {
        self.layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.out, &l.gate_up, &l.down])
            .filter_map(|p| p.dense.as_ref())
            .collect()
    }

    /// How many leading tokens of `prompt` the cache already holds, keeping
    /// at least the last one to evaluate (its logits start the answer).
    /// Forgets everything after them.
    pub(crate) fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        self.truncate(common);
        common
    }

    /// Keeps only the first `len` cached tokens.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.cached.truncate(len);
    }

    /// Forgets the cache (after an error left it in an unknown state).
    pub(crate) fn reset(&mut self) {
        self.cached.clear();
    }

    /// Evaluates `tokens` after the cached ones; returns the logits that
    /// follow the last of them, `[vocab]`.
    pub(crate) fn forward(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let pos = self.cached.len();
        let n = tokens.len();
        if n == 0 {
            bail!("nothing to evaluate");
        }
        if pos + n > self.capacity {
            bail!("{} tokens exceed the context of {}", pos + n, self.capacity);
        }
        let (heads, kv_heads, hd) = (self.heads, self.kv_heads, self.head_dim);
        let group = heads / kv_heads;
        let total = pos + n;
        let cos = self.cos.narrow(0, pos, n)?;
        let sin = self.sin.narrow(0, pos, n)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let neox = self.neox;
        let mut x = self.embeddings.lookup(tokens)?; // [n, dim]
        for layer in &mut self.layers {
            layer.make_room(total, pos, self.capacity, self.kv_step)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.eps)?;
            let qkv = layer.qkv.forward(&h)?;
            let split = |offset: usize, count: usize| -> Result<Tensor> {
                qkv.narrow(1, offset * hd, count * hd)?
                    .reshape((1, n, count, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let rope = |t: Tensor| -> Result<Tensor> {
                if neox {
                    candle_nn::rotary_emb::rope(&t, &cos, &sin)
                } else {
                    candle_nn::rotary_emb::rope_i(&t, &cos, &sin)
                }
            };
            let q = rope(split(0, heads)?)?;
            let k = rope(split(heads, kv_heads)?)?;
            let v = split(heads + kv_heads, kv_heads)?;
            layer.k.slice_set(&k.squeeze(0)?, 1, pos)?;
            layer.v.slice_set(&v.squeeze(0)?, 1, pos)?;
            // Each KV head serves `group` consecutive query heads.
            let q = (q.reshape((kv_heads, group * n, hd))? * scale)?;
            let attended = if n == 1 {
                // One token: split across threads over the whole cache.
                q.apply_op3_no_bwd(
                    &layer.k,
                    &layer.v,
                    &docent_ops::DecodeAttention {
                        kv_heads,
                        group,
                        head_dim: hd,
                        total,
                    },
                )?
                .reshape((1, heads * hd))?
            } else {
                q.reshape((kv_heads, group, n, hd))?.apply_op3_no_bwd(
                    &layer.k,
                    &layer.v,
                    &docent_ops::attention::PrefillAttention {
                        group,
                        pos,
                        products: self.attention,
                    },
                )?
            };
            x = (x + layer.out.forward(&attended)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.eps)?;
            let gate_up = layer.gate_up.forward(&h)?;
            let mixed = gate_up.apply_op1_no_bwd(&docent_ops::SwiGlu)?;
            x = (x + layer.down.forward(&mixed)?)?;
        }
        self.cached.extend_from_slice(tokens);
        let last = x.narrow(0, n - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.eps)?;
        self.output.forward(&last)?.squeeze(0)
    }
}

/// The parts' rows one after another: the fused [Σ out, in] weight,
/// row-major, as the packed kernels take it.
fn fused(parts: &[Tensor]) -> Result<Vec<f32>> {
    let mut values = Vec::with_capacity(parts.iter().map(Tensor::elem_count).sum());
    for part in parts {
        values.extend(part.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(values)
}

/// Rotary angle tables, `[positions, head_dim / 2]` each.
fn rotary_tables(head_dim: usize, base: f32, positions: usize) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for i in 0..half {
            let freq = 1.0 / base.powf((2 * i) as f32 / head_dim as f32);
            let angle = p as f32 * freq;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (positions, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (positions, half), &Device::Cpu)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_transformers::models::{quantized_llama, quantized_qwen2};

    /// The model's GGUF bytes as docent runs them: slow formats re-quantized
    /// to `Q8_0`, as at load (so docent's `Q8_0` decoding kernel is in play).
    fn open(model: &str) -> Vec<u8> {
        let path = docent_models::testing::require(model).join("model.gguf");
        let mut file = std::fs::File::open(path).unwrap();
        let content = Content::read(&mut file).unwrap();
        let (_, bytes) = crate::gguf::requantize(content, &mut file, &Device::Cpu).unwrap();
        bytes.into_inner()
    }

    fn read(bytes: &[u8]) -> (Content, std::io::Cursor<&[u8]>, String) {
        let mut file = std::io::Cursor::new(bytes);
        let content = Content::read(&mut file).unwrap();
        let arch = content.metadata["general.architecture"]
            .to_string()
            .unwrap()
            .clone();
        (content, file, arch)
    }

    /// Largest difference between two logit vectors, relative to the largest
    /// reference logit, and whether our top token is also a top token of the
    /// reference (its reference logit within that difference of the best:
    /// rounding may only reorder near-ties).
    fn compare(ours: &Tensor, reference: &Tensor) -> (f32, bool) {
        let a: Vec<f32> = ours.to_vec1().unwrap();
        let b: Vec<f32> = reference.to_vec1().unwrap();
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let ours_top = a
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .unwrap()
            .0;
        let best = b.iter().fold(f32::MIN, |m, x| m.max(*x));
        (diff / scale, b[ours_top] >= best - 2.0 * diff)
    }

    /// Our forward pass against candle-transformers' quantized models on the
    /// real weights: the prompt (dense and quantized prompt paths, whole and
    /// in two pieces over the cache) and then two decoded tokens.
    fn matches_reference(model: &str) {
        let bytes = open(model);
        let (content, mut file, arch) = read(&bytes);
        let tokenizer = crate::tokenizer::GgufTokenizer::from_gguf(&content).unwrap();
        // Long enough that decoding attends over two pieces of the cache
        // (docent_ops::DecodeAttention cuts it every 128 positions).
        let text = "The handbook says new employees get twenty vacation days a year, \
                    and five more after three years of service. "
            .repeat(9)
            + "How many days do new employees get?";
        let prompt = tokenizer.encode_plain(&text).unwrap();
        assert!(prompt.len() > 128 && prompt.len() < 500, "{}", prompt.len());
        let next = [prompt[3], prompt[9]];
        let mut reference: Vec<Tensor> = Vec::new();
        {
            let (content, mut file, _) = read(&bytes);
            let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let mut step = |m: &mut dyn FnMut(&Tensor, usize) -> Result<Tensor>| {
                reference.push(m(&input, 0).unwrap().squeeze(0).unwrap());
                for (i, t) in next.iter().enumerate() {
                    let x = Tensor::new(&[*t], &Device::Cpu)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap();
                    reference.push(m(&x, prompt.len() + i).unwrap().squeeze(0).unwrap());
                }
            };
            if arch == "qwen2" {
                let mut m =
                    quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
                        .unwrap();
                step(&mut |x, p| m.forward(x, p));
            } else {
                let mut m =
                    quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
                        .unwrap();
                step(&mut |x, p| m.forward(x, p));
            }
        }
        let mut forms = vec![Prefill::F32, Prefill::Quantized];
        if docent_ops::bf16::available() {
            forms.push(Prefill::Bf16);
        }
        if docent_ops::int8::available() {
            forms.push(Prefill::Int8(WeightBits::Eight));
            forms.push(Prefill::Int8(WeightBits::Seven));
        }
        let mut greedy = Vec::new();
        let mut worst = Vec::new();
        for dense in forms {
            // bf16 rounds every weight and activation of the prompt's
            // products (2⁻⁸ relative), int8 quantizes them (about 1% per
            // product; measured up to 0.08 here with 8-bit weights and
            // activations, 0.14 with 8-bit weights and AVX-512 BW's 7-bit
            // activations, 0.10 with 7-bit weights): their
            // logits may drift further from the quantized reference; the
            // greedy tokens must not.
            let tolerance = match dense {
                Prefill::Bf16 => 0.08,
                Prefill::Int8(_) => 0.16,
                _ => 0.05,
            };
            let mut ours = Transformer::load(
                &content,
                &mut file,
                None,
                &arch,
                512,
                dense,
                &mut DenseCache::default(),
                &mut DecodeCache::default(),
            )
            .unwrap();
            // Small steps, so that the caches grow (and keep what they
            // hold) several times: inside the prompt's second piece and
            // while decoding.
            ours.kv_step = 16;
            // With dense prompt weights, decoding runs on docent's Q8_0
            // kernel wherever the CPU has one.
            let kernel = dense != Prefill::Quantized && docent_ops::q8::available();
            assert_eq!(ours.layers[0].qkv.decode.is_some(), kernel, "{dense:?}");
            assert_eq!(
                matches!(ours.output, Output::Ours(Kernel::Q8(_))),
                kernel,
                "{dense:?}"
            );
            // qwen2.5-0.5b keeps half its down projections in Q4_K and half
            // in Q6_K: with dense prompt weights, those decode on docent's
            // Q4_K and Q6_K kernels.
            if model == "qwen2.5-0.5b-instruct" {
                let count = |format: fn(&Kernel) -> bool| {
                    ours.layers
                        .iter()
                        .filter(|l| l.down.decode.as_ref().is_some_and(format))
                        .count()
                };
                let q4k = count(|k| matches!(k, Kernel::Q4k(_)));
                let q6k = count(|k| matches!(k, Kernel::Q6k(_)));
                let expected = dense != Prefill::Quantized && docent_ops::q4k::available();
                assert_eq!(q4k > 0, expected, "{dense:?}: {q4k} Q4_K projections");
                let expected = dense != Prefill::Quantized && docent_ops::q6k::available();
                assert_eq!(q6k > 0, expected, "{dense:?}: {q6k} Q6_K projections");
            }
            for pieces in [vec![&prompt[..]], vec![&prompt[..15], &prompt[15..]]] {
                ours.reset();
                let mut logits = None;
                for piece in pieces {
                    logits = Some(ours.forward(piece).unwrap());
                }
                let (diff, same_top) = compare(&logits.unwrap(), &reference[0]);
                assert!(
                    same_top && diff < tolerance,
                    "{model} prompt, {dense:?}: {diff}"
                );
                worst.push((dense, diff));
                for (i, t) in next.iter().enumerate() {
                    let (diff, same_top) =
                        compare(&ours.forward(&[*t]).unwrap(), &reference[i + 1]);
                    assert!(
                        same_top && diff < tolerance,
                        "{model} decode {i}, {dense:?}: {diff}"
                    );
                }
            }
            // Prefix reuse keeps the shared tokens and always evaluates the last one.
            assert_eq!(ours.reuse_prefix(&prompt), prompt.len() - 1);
            assert_eq!(ours.reuse_prefix(&[prompt[0], 1]), 1);
            assert_eq!(ours.reuse_prefix(&[9, 9]), 0);
            // Twenty greedy tokens after the prompt.
            ours.reset();
            let mut logits = ours.forward(&prompt).unwrap();
            let mut tokens = Vec::new();
            for _ in 0..20 {
                let v: Vec<f32> = logits.to_vec1().unwrap();
                let top = (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as u32;
                tokens.push(top);
                logits = ours.forward(&[top]).unwrap();
            }
            greedy.push((dense, tokens));
        }
        // The prompt logits' largest distance from the reference per form
        // (`--nocapture` shows them).
        eprintln!(
            "{model}, {}: {worst:?}",
            docent_ops::int8::Variant::detect()
        );
        for (dense, tokens) in &greedy[1..] {
            assert_eq!(
                tokens, &greedy[0].1,
                "{model}: greedy tokens of {dense:?} differ from {:?}",
                greedy[0].0
            );
        }
    }

    /// docent's Q8_0 decoding kernel against candle's quantized matmul and
    /// the exact product on every Q8_0 matrix of the re-quantized model, for
    /// an input with the outliers real hidden states have. Where candle
    /// quantizes the activations per block of 32, as ggml defines `Q8_0`,
    /// the two compute the same integer sums and differ only in the order of
    /// the f32 additions. Where the input is whole 256-value superblocks,
    /// candle takes its repacked path, which quantizes activations per 256
    /// (`Q8_K`): one outlier then coarsens 255 neighbours, and docent's
    /// kernel must be closer to the exact product than candle's.
    fn q8_kernel_matches_candle_on_every_matrix(model: &str) {
        if !docent_ops::q8::available() {
            return;
        }
        let bytes = open(model);
        let (content, mut file, _) = read(&bytes);
        let (mut same, mut closer) = (0, 0);
        for (name, info) in &content.tensor_infos {
            if info.ggml_dtype != GgmlDType::Q8_0 || info.shape.rank() != 2 {
                continue;
            }
            let q = content.tensor(&mut file, name, &Device::Cpu).unwrap();
            let (out, input) = q.shape().dims2().unwrap();
            let dense: Vec<f32> = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let ours = Q8Matrix::from_ggml(&q.data().unwrap(), out, input).unwrap();
            let mut x: Vec<f32> = (0..input)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.5)
                .collect();
            x[input / 3] = 40.0;
            x[input / 2] = -25.0;
            let xt = Tensor::from_vec(x.clone(), (1, input), &Device::Cpu).unwrap();
            let theirs: Vec<f32> = QMatMul::from_qtensor(q)
                .unwrap()
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got = ours.matvec(&x, 1);
            let exact: Vec<f64> = dense
                .chunks_exact(input)
                .map(|row| row.iter().zip(&x).map(|(w, v)| *w as f64 * *v as f64).sum())
                .collect();
            // Relative RMS error against the exact product.
            let error = |y: &[f32]| {
                let e: f64 = y
                    .iter()
                    .zip(&exact)
                    .map(|(a, b)| (*a as f64 - b).powi(2))
                    .sum();
                let n: f64 = exact.iter().map(|b| b * b).sum();
                (e / n).sqrt()
            };
            if input % 256 != 0 {
                let top = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = got
                    .iter()
                    .zip(&theirs)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(diff <= 1e-5 * top, "{model} {name}: {diff} of {top}");
                same += 1;
            } else {
                let (ours, theirs) = (error(&got), error(&theirs));
                assert!(
                    ours < theirs,
                    "{model} {name}: error {ours} against candle's {theirs}"
                );
                closer += 1;
            }
        }
        eprintln!(
            "{model}: {same} Q8_0 matrices as candle computes them, {closer} closer to the exact product"
        );
        assert!(same + closer > 0, "{model} has no Q8_0 matrices");
    }

    #[test]
    fn the_q8_kernel_matches_candle_on_smollm2s_matrices() {
        q8_kernel_matches_candle_on_every_matrix("smollm2-135m-instruct");
    }

    #[test]
    fn smollm2_matches_the_reference_forward_pass() {
        matches_reference("smollm2-135m-instruct");
    }

    #[test]
    fn qwen2_matches_the_reference_forward_pass() {
        matches_reference("qwen2.5-0.5b-instruct");
    }

    /// The token table left in the file gives the rows the loaded table
    /// gives, bit for bit, in any order and with repeats; a token past the
    /// table is an error, not a read of whatever follows it.
    #[test]
    fn the_token_table_read_from_the_file_matches_the_loaded_one() {
        for model in ["smollm2-135m-instruct", "qwen2.5-0.5b-instruct"] {
            let bytes = open(model);
            let (content, mut cursor, _) = read(&bytes);
            let path = std::env::temp_dir().join(format!(
                "docent-token-table-{}-{model}.gguf",
                std::process::id()
            ));
            std::fs::write(&path, &bytes).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let name = "token_embd.weight";
            let in_file = TokenTable::in_file(&content, file, name).unwrap();
            std::fs::remove_file(&path).unwrap();
            let loaded = TokenTable::Loaded(Arc::new(
                content.tensor(&mut cursor, name, &Device::Cpu).unwrap(),
            ));
            let rows = content.tensor_infos[name].shape.dims()[0] as u32;
            let tokens = [rows - 1, 0, 17, 9_000, 17, rows / 2];
            let a: Vec<Vec<f32>> = in_file.lookup(&tokens).unwrap().to_vec2().unwrap();
            let b: Vec<Vec<f32>> = loaded.lookup(&tokens).unwrap().to_vec2().unwrap();
            assert_eq!(a, b, "{model}");
            assert!(a[2].iter().any(|x| *x != 0.0), "{model}: row 17 is zero");
            assert_ne!(a[1], a[2], "{model}");
            let past = in_file.lookup(&[rows]).unwrap_err().to_string();
            assert!(past.contains("outside the table"), "{past}");
        }
    }

    /// Q and K in `Q4_K` beside V in `Q6_K`, as qwen2.5-1.5b's layers have
    /// them: one mixed matrix whose rows are the parts' rows in order.
    #[test]
    fn a_projection_mixing_formats_gives_its_parts_outputs_side_by_side() {
        if !Kernel::runs(GgmlDType::Q4K) || !Kernel::runs(GgmlDType::Q6K) {
            return;
        }
        let input = 512;
        let part = |dtype, out, seed: f64| {
            let w = Tensor::rand(-0.1f32, 0.1 + seed as f32, (out, input), &Device::Cpu).unwrap();
            QTensor::quantize(&w, dtype).unwrap()
        };
        let parts = [
            part(GgmlDType::Q4K, 70, 0.0),
            part(GgmlDType::Q4K, 16, 0.01),
            part(GgmlDType::Q6K, 16, 0.02),
        ];
        let mixed = Kernel::from_qtensors(&parts).unwrap();
        let Kernel::Mixed(runs) = &mixed else {
            panic!("two formats make a mixed matrix");
        };
        assert!(matches!(runs[..], [Kernel::Q4k(_), Kernel::Q6k(_)]));
        assert_eq!((mixed.input(), mixed.out()), (input, 102));
        let x = Tensor::randn(0f32, 1.0, (3, input), &Device::Cpu).unwrap();
        let got: Vec<Vec<f32>> = mixed.forward(&x).unwrap().to_vec2().unwrap();
        let each: Vec<Vec<Vec<f32>>> = parts
            .iter()
            .map(|p| {
                Kernel::from_qtensors(std::slice::from_ref(p))
                    .unwrap()
                    .forward(&x)
                    .unwrap()
                    .to_vec2()
                    .unwrap()
            })
            .collect();
        for (r, row) in got.iter().enumerate() {
            let want: Vec<f32> = each.iter().flat_map(|p| p[r].clone()).collect();
            assert_eq!(row, &want, "row {r}");
        }
        // candle's products agree (their activations are quantized alike).
        let theirs: Vec<Tensor> = parts
            .iter()
            .map(|p| {
                let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                    p.dtype(),
                    &p.data().unwrap(),
                    p.shape().dims().to_vec(),
                    &Device::Cpu,
                );
                QMatMul::from_qtensor(q.unwrap())
                    .unwrap()
                    .forward(&x)
                    .unwrap()
            })
            .collect();
        let theirs: Vec<Vec<f32>> = Tensor::cat(&theirs, 1).unwrap().to_vec2().unwrap();
        for (ours, theirs) in got.iter().flatten().zip(theirs.iter().flatten()) {
            assert!(
                (ours - theirs).abs() <= 1e-5 * (1.0 + theirs.abs()),
                "{ours} against {theirs}"
            );
        }
        assert!(Kernel::from_qtensors(&[]).is_err());
    }

    #[test]
    fn rotary_tables_start_at_angle_zero_and_follow_the_frequencies() {
        let (cos, sin) = rotary_tables(4, 10_000.0, 3).unwrap();
        let (cos, sin): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
            (cos.to_vec2().unwrap(), sin.to_vec2().unwrap());
        assert_eq!(cos[0], vec![1.0, 1.0]);
        assert_eq!(sin[0], vec![0.0, 0.0]);
        // position 2, pair 1: angle 2 / 10000^(2/4) = 0.02
        assert!((sin[2][1] - 0.02f32.sin()).abs() < 1e-6);
        assert!((cos[2][0] - 2f32.cos()).abs() < 1e-6);
    }
}
