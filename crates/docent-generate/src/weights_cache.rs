//! The weights cache: what loading a GGUF computes, kept on disk beside the
//! model so that the next process reads it instead of computing it again.
//!
//! Three things are cached, each in its own file:
//! - the model re-quantized to Q8_0 (`requantized-q8_0.gguf`), when it has
//!   formats without a fast CPU kernel: converting Qwen2.5-0.5B's Q5_0
//!   tensors took about 5 of the 9 seconds a fresh `docent ask` spent
//!   loading;
//! - the dense prompt weights (`prefill-int8.bin`, `prefill-int8-w7.bin`
//!   for 7-bit weights, `prefill-bf16.bin` or `prefill-f32.bin`),
//!   dequantized, fused and packed (int8: quantized per output column),
//!   about 2.5 seconds more (int8 on the 1.5B model: about 8);
//! - the decoding weights in the layout of docent's kernels (`decode.bin`:
//!   `Q8_0`, `Q4_K`, `Q6_K`), about 1 GB for the 1.5B model. Unpacked from
//!   the GGUF at every load they were written to fresh memory, which after
//!   a minute or two of idle these virtual machines back slowly: more than
//!   half of a 15-second load.
//!
//! The folder is `<model dir>/.docent-cache/<sha256 of the model>/v1/`, so a
//! changed model file never meets the old cache, and a change of layout
//! bumps `v1`. Files are written to a temporary name and renamed, so a
//! crash leaves no half-written cache; a file that does not fit (wrong
//! length, shape or form) is ignored and written again. A cache that cannot
//! be written (a read-only models directory) is only a warning.
//!
//! The bf16 and int8 prompt weights and the decoding weights are mapped, not
//! read: they stay in the page cache, cost no fresh memory (on these
//! virtual machines first-touching fresh memory was two thirds of a load's
//! time) and are shared by every process that loads the model. The price is
//! disk: the decoding file is about as large as the model.

use crate::transformer::{DecodeCache, Dense, DenseCache, Kernel, Prefill};
use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use docent_ops::bf16::{Bf16Matrix, PANEL, SharedBytes};
use docent_ops::int8::{Int8Matrix, WeightBits};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Bumped whenever a cached file's layout changes.
const LAYOUT: &str = "v1";
const MAGIC: &[u8; 8] = b"DOCENTDW";
const VERSION: u32 = 1;
const DECODE_MAGIC: &[u8; 8] = b"DOCENTDK";
const DECODE_VERSION: u32 = 1;

pub(crate) struct WeightsCache {
    dir: PathBuf,
}

impl WeightsCache {
    /// The cache of the model file `path`. Its sha256 comes from the marker
    /// `docent models pull` leaves beside a verified file
    /// (`.<file>.verified`: hash and size), or is computed once and kept in
    /// `.<file>.sha256` with the size and modification time it belongs to.
    pub(crate) fn for_model(path: &Path) -> io::Result<WeightsCache> {
        let sha = model_sha256(path)?;
        let parent = path.parent().unwrap_or(Path::new("."));
        Ok(WeightsCache {
            dir: parent.join(".docent-cache").join(sha).join(LAYOUT),
        })
    }

    pub(crate) fn requantized_path(&self) -> PathBuf {
        self.dir.join("requantized-q8_0.gguf")
    }

    fn dense_path(&self, prefill: Prefill) -> PathBuf {
        self.dir.join(format!("prefill-{}.bin", prefill.name()))
    }

    /// The cached re-quantized model, if there is a whole one: its
    /// directory and an open file positioned anywhere (reads seek).
    pub(crate) fn open_requantized(&self) -> Option<(Content, File)> {
        let path = self.requantized_path();
        let mut file = File::open(&path).ok()?;
        let len = file.metadata().ok()?.len();
        let content = crate::gguf::read_gguf_metadata(&mut file).ok()?;
        // Every tensor must lie inside the file.
        let whole = content.tensor_infos.values().all(|t| {
            let bytes = t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size();
            content.tensor_data_offset + t.offset + bytes as u64 <= len
        });
        whole.then_some((content, file))
    }

    /// Writes `bytes` as the cached re-quantized model.
    pub(crate) fn write_requantized(&self, bytes: &[u8]) -> io::Result<()> {
        write_atomically(&self.requantized_path(), |w| w.write_all(bytes))
    }

    fn decode_path(&self) -> PathBuf {
        self.dir.join("decode.bin")
    }

    /// The cached decoding matrices, mapped, in load order; empty and stale
    /// when there are none or they do not read back whole.
    pub(crate) fn read_decode(&self) -> DecodeCache {
        let (items, stale) = read_or_stale(&self.decode_path(), read_decode_file);
        DecodeCache { items, stale }
    }

    /// Writes the decoding matrices (each a projection's, of one or more
    /// formats). The header lists every matrix's format and shape; then
    /// each matrix's arrays follow, each from a multiple of
    /// [`docent_ops::STORED_ALIGN`] bytes.
    pub(crate) fn write_decode(&self, kernels: &[&Kernel]) -> io::Result<()> {
        let leaves: Vec<Vec<&Kernel>> = kernels.iter().map(|k| k.leaves()).collect();
        write_atomically(&self.decode_path(), |w| {
            let mut at = 0usize;
            let mut put = |w: &mut BufWriter<File>, bytes: &[u8]| -> io::Result<()> {
                at += bytes.len();
                w.write_all(bytes)
            };
            put(w, DECODE_MAGIC)?;
            put(w, &DECODE_VERSION.to_le_bytes())?;
            put(w, &(leaves.len() as u32).to_le_bytes())?;
            for entry in &leaves {
                put(w, &(entry.len() as u32).to_le_bytes())?;
                for leaf in entry {
                    let code = leaf
                        .format()
                        .and_then(format_code)
                        .ok_or_else(|| invalid("a decoding matrix of no stored format"))?;
                    put(w, &code.to_le_bytes())?;
                    put(w, &(leaf.out() as u64).to_le_bytes())?;
                    put(w, &(leaf.input() as u64).to_le_bytes())?;
                }
            }
            for leaf in leaves.iter().flatten() {
                docent_ops::write_stored(w, &mut at, &leaf.stored())?;
            }
            Ok(())
        })
    }

    /// The cached dense prompt weights of form `prefill`, in load order;
    /// empty and stale when there are none or they do not read back whole.
    pub(crate) fn read_dense(&self, prefill: Prefill) -> DenseCache {
        let (items, stale) = read_or_stale(&self.dense_path(prefill), |path| {
            read_dense_file(path, prefill)
        });
        DenseCache { items, stale }
    }

    /// Writes the dense prompt weights of form `prefill`.
    /// The header lists every matrix's shape first; then the bodies follow,
    /// one matrix at a time (never a second copy of all the weights).
    pub(crate) fn write_dense(&self, prefill: Prefill, dense: &[&Dense]) -> io::Result<()> {
        write_atomically(&self.dense_path(prefill), |w| {
            w.write_all(MAGIC)?;
            for v in [
                VERSION,
                form_code(prefill),
                PANEL as u32,
                dense.len() as u32,
            ] {
                w.write_all(&v.to_le_bytes())?;
            }
            for d in dense {
                let (out, input) = d.shape().map_err(io::Error::other)?;
                let words = match d {
                    Dense::Bf16(m) => m.packed().len(),
                    Dense::F32(_) => out * input,
                    Dense::Int8(_) => Int8Matrix::stored_len(out, input),
                };
                for v in [out as u64, input as u64, words as u64] {
                    w.write_all(&v.to_le_bytes())?;
                }
            }
            for d in dense {
                match d {
                    Dense::Bf16(m) => w.write_all(bytemuck::cast_slice(m.packed()))?,
                    Dense::Int8(m) => {
                        for piece in m.stored() {
                            w.write_all(piece)?;
                        }
                    }
                    Dense::F32(t) => {
                        let values = t
                            .flatten_all()
                            .and_then(|t| t.to_vec1::<f32>())
                            .map_err(io::Error::other)?;
                        w.write_all(bytemuck::cast_slice(&values))?
                    }
                }
            }
            Ok(())
        })
    }
}

/// The form a dense-weights file holds, as its header records it.
fn form_code(prefill: Prefill) -> u32 {
    match prefill {
        Prefill::Bf16 => 2,
        Prefill::Int8(WeightBits::Eight) => 3,
        Prefill::Int8(WeightBits::Seven) => 4,
        _ => 1,
    }
}

/// A cache file's header, read from the front.
struct Header<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Header<'a> {
    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let piece = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| invalid("the file ends inside its header"))?;
        self.at += n;
        Ok(piece)
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn read_dense_file(path: &Path, prefill: Prefill) -> io::Result<Vec<Dense>> {
    let bytes: SharedBytes = docent_ops::map_file(&File::open(path)?)?;
    let mut header = Header {
        bytes: &bytes,
        at: 0,
    };
    let magic = header.take(8)?.to_vec();
    let mut u32s = [0u32; 4];
    for v in &mut u32s {
        *v = header.u32()?;
    }
    let [version, form, panel, count] = u32s;
    if magic != MAGIC || version != VERSION || form != form_code(prefill) || panel as usize != PANEL
    {
        return Err(invalid("not a dense-weights file of this layout"));
    }
    let mut shapes = Vec::new();
    let mut total = 8 + 16 + 24 * count as u64;
    for _ in 0..count {
        let mut v = [0u64; 3];
        for x in &mut v {
            *x = header.u64()?;
        }
        total = total.saturating_add(v[2].saturating_mul(4));
        shapes.push(v);
    }
    if total != bytes.len() as u64 {
        return Err(invalid(format!(
            "{} bytes where the header says {total}",
            bytes.len()
        )));
    }
    let mut items = Vec::with_capacity(shapes.len());
    let mut offset = header.at;
    for [out, input, words] in shapes {
        let (out, input, words) = (out as usize, input as usize, words as usize);
        items.push(match prefill {
            // Mapped, not copied: the packed words stay in the page cache,
            // shared with every process that loads the model.
            Prefill::Bf16 => {
                if words != Bf16Matrix::packed_len(out, input) {
                    return Err(invalid("a packed matrix of the wrong length"));
                }
                Dense::Bf16(
                    Bf16Matrix::from_shared(out, input, bytes.clone(), offset)
                        .ok_or_else(|| invalid("a packed matrix out of place"))?,
                )
            }
            Prefill::Int8(bits) => {
                if words != Int8Matrix::stored_len(out, input) {
                    return Err(invalid("an int8 matrix of the wrong length"));
                }
                Dense::Int8(
                    Int8Matrix::from_stored(out, input, bits, bytes.clone(), offset)
                        .ok_or_else(|| invalid("an int8 matrix out of place"))?,
                )
            }
            _ => {
                if words != out * input {
                    return Err(invalid("an f32 matrix of the wrong length"));
                }
                // Written in native order by `write_dense`, like the bf16
                // words; the mapping is page-aligned and offsets are
                // multiples of 4.
                let values: Vec<f32> = bytemuck::try_cast_slice(&bytes[offset..offset + words * 4])
                    .map_err(|_| invalid("an f32 matrix out of place"))?
                    .to_vec();
                Dense::F32(
                    Tensor::from_vec(values, (input, out), &Device::Cpu)
                        .map_err(io::Error::other)?,
                )
            }
        });
        offset += words * 4;
    }
    Ok(items)
}

/// What `read` reads from the cache file `path`, and whether it must be
/// written again: nothing and stale when the file is missing, or (with a
/// warning) when it does not read back whole.
fn read_or_stale<T>(
    path: &Path,
    read: impl FnOnce(&Path) -> io::Result<Vec<T>>,
) -> (std::collections::VecDeque<T>, bool) {
    match read(path) {
        Ok(items) => (items.into(), false),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("ignoring the weights cache {}: {e}", path.display());
            }
            (Default::default(), true)
        }
    }
}

/// The decoding matrices' formats as the decode file records them.
const FORMAT_CODES: [(GgmlDType, u32); 3] = [
    (GgmlDType::Q8_0, 1),
    (GgmlDType::Q4K, 2),
    (GgmlDType::Q6K, 3),
];

fn format_code(format: GgmlDType) -> Option<u32> {
    FORMAT_CODES.iter().find(|c| c.0 == format).map(|c| c.1)
}

fn read_decode_file(path: &Path) -> io::Result<Vec<Kernel>> {
    let bytes: SharedBytes = docent_ops::map_file(&File::open(path)?)?;
    let mut header = Header {
        bytes: &bytes,
        at: 0,
    };
    if header.take(8)? != DECODE_MAGIC || header.u32()? != DECODE_VERSION {
        return Err(invalid("not a decoding-weights file of this layout"));
    }
    let entries = header.u32()?;
    let mut shapes = Vec::new();
    for _ in 0..entries {
        let leaves = header.u32()?;
        let mut entry = Vec::new();
        for _ in 0..leaves {
            let code = header.u32()?;
            let Some(&(format, _)) = FORMAT_CODES.iter().find(|c| c.1 == code) else {
                return Err(invalid(format!("unknown matrix format {code}")));
            };
            let out = usize::try_from(header.u64()?).map_err(io::Error::other)?;
            let input = usize::try_from(header.u64()?).map_err(io::Error::other)?;
            entry.push((format, out, input));
        }
        shapes.push(entry);
    }
    let mut offset = header.at;
    let mut kernels = Vec::with_capacity(shapes.len());
    for entry in shapes {
        let mut leaves = Vec::with_capacity(entry.len());
        for (format, out, input) in entry {
            // Mapped, not copied: the weights stay in the page cache.
            let (leaf, end) = Kernel::from_stored(format, out, input, bytes.clone(), offset)
                .ok_or_else(|| invalid("a decoding matrix out of place"))?;
            leaves.push(leaf);
            offset = end;
        }
        kernels.push(Kernel::from_leaves(leaves).ok_or_else(|| invalid("an empty entry"))?);
    }
    if offset != bytes.len() {
        return Err(invalid(format!(
            "{} bytes where the matrices end at {offset}",
            bytes.len()
        )));
    }
    Ok(kernels)
}

/// Writes `path` through a temporary file in the same folder, renamed into
/// place once complete.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // Unique per process and call: two loads of one model may race to
    // write the same cache, and the last rename wins with a whole file.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("cache"),
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The model file's sha256, from `docent models pull`'s marker or our own.
fn model_sha256(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let parent = path.parent().unwrap_or(Path::new("."));
    if let Ok(marker) = fs::read_to_string(parent.join(format!(".{name}.verified")))
        && let Some((sha, size)) = marker.trim().split_once(' ')
        && size.parse::<u64>().ok() == Some(meta.len())
        && sha.len() == 64
        && sha.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok(sha.to_ascii_lowercase());
    }
    let stamp = format!(
        "{} {}",
        meta.len(),
        meta.modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let ours = parent.join(format!(".{name}.sha256"));
    if let Ok(recorded) = fs::read_to_string(&ours)
        && let Some((sha, rest)) = recorded.trim().split_once(' ')
        && rest == stamp
        && sha.len() == 64
    {
        return Ok(sha.to_string());
    }
    let mut hasher = Sha256::new();
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let sha = hex::encode(hasher.finalize());
    // Only a speed-up for the next load: a folder we cannot write is fine.
    let _ = fs::write(&ours, format!("{sha} {stamp}\n"));
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder `name` holding a "model" file of `content`, and its
    /// cache.
    fn scratch(name: &str, content: &[u8]) -> (PathBuf, WeightsCache) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let model = dir.join("model.gguf");
        fs::write(&model, content).unwrap();
        let cache = WeightsCache::for_model(&model).unwrap();
        (dir, cache)
    }

    #[test]
    fn decoding_weights_map_back_as_written_and_damage_is_refused() {
        use candle_core::quantized::QTensor;
        let (dir, cache) = scratch("docent-wcache-dec", b"another model");
        let q = |format, out: usize, input: usize| {
            let t = Tensor::randn(0f32, 1.0, (out, input), &Device::Cpu).unwrap();
            QTensor::quantize(&t, format).unwrap()
        };
        // A projection of two formats (Q|K in Q4_K, V in Q6_K, as in
        // qwen2.5-1.5b) and one in Q8_0.
        let mixed = Kernel::from_qtensors(&[
            q(GgmlDType::Q4K, 8, 512),
            q(GgmlDType::Q4K, 4, 512),
            q(GgmlDType::Q6K, 8, 512),
        ])
        .unwrap();
        let q8 = Kernel::from_qtensors(&[q(GgmlDType::Q8_0, 5, 96)]).unwrap();
        assert_eq!(mixed.leaves().len(), 2);
        cache.write_decode(&[&mixed, &q8]).unwrap();
        let runs = |k: &Kernel| -> Vec<(GgmlDType, usize, usize)> {
            k.leaves()
                .iter()
                .map(|l| (l.format().unwrap(), l.out(), l.input()))
                .collect()
        };
        let mut back = cache.read_decode();
        assert!(!back.stale && back.items.len() == 2);
        let x: Vec<f32> = (0..2 * 512).map(|i| (i as f32 * 0.37).sin()).collect();
        let got = back.take(&runs(&mixed)).expect("the mixed projection");
        assert_eq!(got.matvec(&x, 2), mixed.matvec(&x, 2));
        let got = back.take(&runs(&q8)).expect("the Q8_0 projection");
        assert_eq!(got.matvec(&x[..96], 1), q8.matvec(&x[..96], 1));
        assert!(!back.stale);
        // Nothing left: the next take is out of step, and marks it stale.
        assert!(back.take(&runs(&q8)).is_none() && back.stale);
        // An entry of other shapes is not taken, and ends the cache's use.
        let mut back = cache.read_decode();
        assert!(back.take(&runs(&q8)).is_none());
        assert!(back.stale && back.items.is_empty());

        // A truncated or lengthened file is refused, not half-read.
        let path = cache.decode_path();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let back = cache.read_decode();
        assert!(back.stale && back.items.is_empty());
        fs::write(&path, [&bytes[..], &[0u8; 64]].concat()).unwrap();
        assert!(cache.read_decode().stale);
        // So is another file's layout.
        fs::write(&path, [&b"DOCENTDW"[..], &bytes[8..]].concat()).unwrap();
        assert!(cache.read_decode().stale);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn dense_weights_read_back_as_written_and_damage_is_refused() {
        let (dir, cache) = scratch("docent-wcache", b"not really a model");
        let model = dir.join("model.gguf");
        // The key is the file's sha256 (computed, then recorded).
        let sha = hex::encode(Sha256::digest(b"not really a model"));
        assert!(cache.dir.starts_with(dir.join(".docent-cache").join(&sha)));
        assert_eq!(WeightsCache::for_model(&model).unwrap().dir, cache.dir);

        let values: Vec<f32> = (0..6 * 5).map(|i| i as f32 * 0.25 - 3.0).collect();
        let f32_dense = Dense::F32(Tensor::from_vec(values.clone(), (5, 6), &Device::Cpu).unwrap());
        cache.write_dense(Prefill::F32, &[&f32_dense]).unwrap();
        let back = cache.read_dense(Prefill::F32);
        assert!(!back.stale);
        let Some(Dense::F32(t)) = back.items.front() else {
            panic!("no f32 matrix")
        };
        assert_eq!(t.dims2().unwrap(), (5, 6));
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), values);
        // Another form finds nothing.
        assert!(cache.read_dense(Prefill::Bf16).stale);

        // A truncated file is refused, not half-read.
        let path = cache.dense_path(Prefill::F32);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let back = cache.read_dense(Prefill::F32);
        assert!(back.stale && back.items.is_empty());

        if docent_ops::bf16::available() {
            let m = Bf16Matrix::pack(&values, 6, 5);
            let packed = m.packed().to_vec();
            cache
                .write_dense(Prefill::Bf16, &[&Dense::Bf16(m)])
                .unwrap();
            let back = cache.read_dense(Prefill::Bf16);
            let Some(Dense::Bf16(m)) = back.items.front() else {
                panic!("no bf16 matrix")
            };
            assert_eq!((m.out(), m.input(), m.packed()), (6, 5, &packed[..]));
        }

        // int8, with 8-bit and 7-bit weights: two matrices, so that the
        // second starts after the first's scales and sums; both give the
        // products they were written with, and keep their weights' bits.
        for bits in [WeightBits::Eight, WeightBits::Seven] {
            let form = Prefill::Int8(bits);
            let ms = [
                Int8Matrix::pack_with(&values, 6, 5, bits),
                Int8Matrix::pack_with(&values, 3, 10, bits),
            ];
            let x: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin()).collect();
            let expected: Vec<Vec<f32>> = ms
                .iter()
                .map(|m| m.matmul(&x[..2 * m.input()], 2))
                .collect();
            let [a, b] = ms;
            let written = [Dense::Int8(a), Dense::Int8(b)];
            cache
                .write_dense(form, &written.iter().collect::<Vec<_>>())
                .unwrap();
            let back = cache.read_dense(form);
            assert!(!back.stale && back.items.len() == 2);
            for (d, expected) in back.items.iter().zip(&expected) {
                let Dense::Int8(m) = d else {
                    panic!("no int8 matrix")
                };
                assert_eq!(m.weight_bits(), bits);
                assert_eq!(&m.matmul(&x[..2 * m.input()], 2), expected);
            }
        }
        // Each form has its own file, and a file holding the other form
        // is refused.
        let (eight, seven) = (
            cache.dense_path(Prefill::Int8(WeightBits::Eight)),
            cache.dense_path(Prefill::Int8(WeightBits::Seven)),
        );
        assert_ne!(eight, seven);
        fs::copy(&eight, &seven).unwrap();
        assert!(cache.read_dense(Prefill::Int8(WeightBits::Seven)).stale);
        let bytes = fs::read(&eight).unwrap();
        fs::write(&eight, &bytes[..bytes.len() - 4]).unwrap();
        assert!(cache.read_dense(Prefill::Int8(WeightBits::Eight)).stale);

        // A changed model is another cache.
        fs::write(&model, b"another model, same folder").unwrap();
        assert_ne!(WeightsCache::for_model(&model).unwrap().dir, cache.dir);
        fs::remove_dir_all(&dir).unwrap();
    }
}
