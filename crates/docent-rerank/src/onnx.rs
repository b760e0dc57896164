//! Reads an int8 BERT cross-encoder exported to ONNX and quantized
//! dynamically by ONNX Runtime (`MatMulInteger` with one scale per weight
//! tensor), and writes it as f32 safetensors with the usual BERT names and
//! layout, which docent's own encoder runs.
//!
//! - Embedding tables (`DequantizeLinear`, u8 with a zero point) become
//!   `(q − zero_point) · scale`.
//! - Each `MatMulInteger` weight, stored (in, out) under an anonymous name
//!   (`onnx::MatMul_1662`), is named after the bias its product is added to
//!   (`…query.bias` → `…query.weight`), transposed to (out, in) and
//!   dequantized; its scale is kept beside it as `….weight_scale`, so the
//!   encoder can run the model's own int8 integers.
//! - Biases and layer norms are copied.
//! - The BERT configuration is read off the tensors' shapes and the graph
//!   (the head count from the attention's reshape).
//!
//! ONNX is protobuf; this module reads just the fields it needs with a
//! small wire-format reader (no protobuf dependency).

use docent_core::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The converted weights' file name, in the model's folder.
pub const WEIGHTS: &str = "docent-encoder.safetensors";
/// The BERT configuration of the converted weights, written last: with
/// `docent_source_sha256`, the sha256 of the `model.onnx` it came from.
pub const CONFIG: &str = "docent-encoder.json";

/// One protobuf field: its number and its value.
enum Value<'a> {
    Varint(u64),
    /// A 64-bit value (no field read here has one).
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterates over the fields of one protobuf message.
struct Fields<'a> {
    data: &'a [u8],
}

fn malformed(what: &str) -> Error {
    Error::InvalidInput(format!(
        "model.onnx is not a valid ONNX file ({what}); run `docent models pull` again"
    ))
}

fn varint(data: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = data
            .split_first()
            .ok_or_else(|| malformed("truncated varint"))?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("varint longer than 64 bits"))
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let mut field = || -> Result<(u64, Value<'a>)> {
            let tag = varint(&mut self.data)?;
            let take = |data: &mut &'a [u8], n: usize| -> Result<&'a [u8]> {
                if data.len() < n {
                    return Err(malformed("field runs past its message"));
                }
                let (head, rest) = data.split_at(n);
                *data = rest;
                Ok(head)
            };
            let value = match tag & 7 {
                0 => Value::Varint(varint(&mut self.data)?),
                1 => {
                    take(&mut self.data, 8)?;
                    Value::Fixed64
                }
                2 => {
                    let n = usize::try_from(varint(&mut self.data)?)
                        .map_err(|_| malformed("huge field"))?;
                    Value::Bytes(take(&mut self.data, n)?)
                }
                5 => Value::Fixed32(u32::from_le_bytes(
                    take(&mut self.data, 4)?.try_into().unwrap(),
                )),
                other => return Err(malformed(&format!("wire type {other}"))),
            };
            Ok((tag >> 3, value))
        };
        let item = field();
        if item.is_err() {
            self.data = &[];
        }
        Some(item)
    }
}

fn fields(data: &[u8]) -> Fields<'_> {
    Fields { data }
}

fn string(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a name is not UTF-8"))
}

/// Repeated integers: packed (one length-delimited field) or one per field.
fn push_ints(value: Value<'_>, out: &mut Vec<i64>) -> Result<()> {
    match value {
        Value::Varint(v) => out.push(v as i64),
        Value::Bytes(mut packed) => {
            while !packed.is_empty() {
                out.push(varint(&mut packed)? as i64);
            }
        }
        _ => return Err(malformed("integers of the wrong wire type")),
    }
    Ok(())
}

/// ONNX's element types that this reader understands.
const FLOAT: i64 = 1;
const UINT8: i64 = 2;
const INT8: i64 = 3;
const INT64: i64 = 7;

/// A `TensorProto`: shape, element type and values.
#[derive(Default)]
struct Tensor {
    name: String,
    dims: Vec<usize>,
    kind: i64,
    raw: Vec<u8>,
    floats: Vec<f32>,
    ints: Vec<i64>,
}

impl Tensor {
    fn parse(data: &[u8]) -> Result<Tensor> {
        let mut t = Tensor::default();
        let mut dims = Vec::new();
        for field in fields(data) {
            match field? {
                (1, v) => push_ints(v, &mut dims)?,
                (2, Value::Varint(v)) => t.kind = v as i64,
                (4, Value::Bytes(packed)) => t.floats.extend(
                    packed
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
                ),
                (4, Value::Fixed32(v)) => t.floats.push(f32::from_bits(v)),
                (5 | 7, v) => push_ints(v, &mut t.ints)?,
                (8, Value::Bytes(name)) => t.name = string(name)?,
                (9, Value::Bytes(raw)) => t.raw = raw.to_vec(),
                (14, Value::Varint(1)) => {
                    return Err(Error::InvalidInput(
                        "model.onnx keeps its weights in an external file, which docent cannot read"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        t.dims = dims
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| malformed("negative dimension")))
            .collect::<Result<_>>()?;
        Ok(t)
    }

    fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// The values as f32 (FLOAT only).
    fn f32s(&self) -> Result<Vec<f32>> {
        if self.kind != FLOAT {
            return Err(malformed(&format!("{} is not float", self.name)));
        }
        let values: Vec<f32> = if self.raw.is_empty() {
            self.floats.clone()
        } else {
            self.raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        if values.len() != self.len() {
            return Err(malformed(&format!("{} has the wrong size", self.name)));
        }
        Ok(values)
    }

    /// The values as integers (UINT8, INT8 and INT64).
    fn integers(&self) -> Result<Vec<i64>> {
        let values: Vec<i64> = match (self.kind, self.raw.is_empty()) {
            (UINT8, false) => self.raw.iter().map(|&b| i64::from(b)).collect(),
            (INT8, false) => self.raw.iter().map(|&b| i64::from(b as i8)).collect(),
            (INT64, false) => self
                .raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            (UINT8 | INT8 | INT64, true) => self.ints.clone(),
            _ => {
                return Err(malformed(&format!(
                    "{} is not an integer tensor",
                    self.name
                )));
            }
        };
        if values.len() != self.len() {
            return Err(malformed(&format!("{} has the wrong size", self.name)));
        }
        Ok(values)
    }
}

/// A `NodeProto`: operator, inputs, outputs and (for `Constant`) its value.
struct Node {
    op: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    value: Option<Tensor>,
}

impl Node {
    fn parse(data: &[u8]) -> Result<Node> {
        let mut node = Node {
            op: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            value: None,
        };
        for field in fields(data) {
            match field? {
                (1, Value::Bytes(s)) => node.inputs.push(string(s)?),
                (2, Value::Bytes(s)) => node.outputs.push(string(s)?),
                (4, Value::Bytes(s)) => node.op = string(s)?,
                (5, Value::Bytes(attribute)) => {
                    for field in fields(attribute) {
                        if let (5, Value::Bytes(t)) = field? {
                            node.value = Some(Tensor::parse(t)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(node)
    }
}

/// The graph: nodes in order, and the initializers by name.
struct Graph {
    nodes: Vec<Node>,
    initializers: HashMap<String, Tensor>,
}

impl Graph {
    fn parse(model: &[u8]) -> Result<Graph> {
        let mut graph = None;
        for field in fields(model) {
            if let (7, Value::Bytes(g)) = field? {
                graph = Some(g);
            }
        }
        let graph = graph.ok_or_else(|| malformed("no graph"))?;
        let mut nodes = Vec::new();
        let mut initializers = HashMap::new();
        for field in fields(graph) {
            match field? {
                (1, Value::Bytes(n)) => nodes.push(Node::parse(n)?),
                (5, Value::Bytes(t)) => {
                    let t = Tensor::parse(t)?;
                    initializers.insert(t.name.clone(), t);
                }
                _ => {}
            }
        }
        Ok(Graph {
            nodes,
            initializers,
        })
    }

    fn consumers(&self, tensor: &str) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(move |n| n.inputs.iter().any(|i| i == tensor))
    }

    fn producer(&self, tensor: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.outputs.iter().any(|o| o == tensor))
    }

    fn initializer(&self, name: &str) -> Result<&Tensor> {
        self.initializers
            .get(name)
            .ok_or_else(|| malformed(&format!("no initializer {name}")))
    }

    /// The scalar scale and integer zero point of quantized tensor `base`.
    fn quantization(&self, base: &str) -> Result<(f32, i64)> {
        let scale = self.initializer(&format!("{base}_scale"))?.f32s()?;
        let zero = self
            .initializer(&format!("{base}_zero_point"))?
            .integers()?;
        match (scale.as_slice(), zero.as_slice()) {
            ([scale], [zero]) => Ok((*scale, *zero)),
            _ => Err(Error::InvalidInput(format!(
                "{base} is quantized per channel; docent reads per-tensor int8 models only"
            ))),
        }
    }

    /// The bias added to the product of the `MatMulInteger` that reads
    /// weight `quantized`: the product passes through `Cast` and `Mul`
    /// (the scales) to an `Add` with a `….bias` initializer.
    fn bias_after(&self, quantized: &str) -> Result<String> {
        let mut frontier: Vec<String> = self
            .consumers(quantized)
            .filter(|n| n.op == "MatMulInteger")
            .flat_map(|n| n.outputs.clone())
            .collect();
        for _ in 0..4 {
            let mut next = Vec::new();
            for tensor in &frontier {
                for node in self.consumers(tensor) {
                    if node.op == "Add"
                        && let Some(bias) = node.inputs.iter().find(|i| {
                            i.ends_with(".bias") && self.initializers.contains_key(i.as_str())
                        })
                    {
                        return Ok(bias.clone());
                    }
                    next.extend(node.outputs.iter().cloned());
                }
            }
            frontier = next;
        }
        Err(malformed(&format!(
            "cannot tell which layer weight {quantized} belongs to"
        )))
    }

    /// The attention's head count: the reshape of layer 0's query into
    /// (batch, sequence, heads, head size) takes its shape from a `Concat`
    /// whose third piece is a constant.
    fn heads(&self, hidden: usize) -> Result<usize> {
        let query = "bert.encoder.layer.0.attention.self.query.bias";
        let found = self
            .consumers(query)
            .filter(|n| n.op == "Add")
            .flat_map(|add| self.consumers(&add.outputs[0]))
            .filter(|n| n.op == "Reshape" && n.inputs.len() == 2)
            .filter_map(|reshape| self.producer(&reshape.inputs[1]))
            .filter(|concat| concat.op == "Concat" && concat.inputs.len() == 4)
            .filter_map(|concat| self.producer(&concat.inputs[2]))
            .filter_map(|constant| constant.value.as_ref())
            .filter_map(|t| t.integers().ok())
            .find_map(|v| match v.as_slice() {
                [h] if *h > 0 && hidden.is_multiple_of(*h as usize) => Some(*h as usize),
                _ => None,
            });
        found.ok_or_else(|| malformed("cannot find the attention's head count"))
    }
}

/// What [`convert`] wrote.
pub struct Converted {
    pub weights: PathBuf,
    pub config: PathBuf,
    /// Weight matrices that carry their int8 scale.
    pub quantized: usize,
}

/// The sha256 of a file, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::unavailable(format!("cannot read {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| Error::unavailable(format!("cannot read {}", path.display()), e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Whether `dir` holds weights converted from its current `model.onnx`.
pub fn is_converted(dir: &Path) -> Result<bool> {
    let Ok(text) = std::fs::read_to_string(dir.join(CONFIG)) else {
        return Ok(false);
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(false);
    };
    let source = sha256_file(&dir.join("model.onnx"))?;
    Ok(
        config["docent_source_sha256"].as_str() == Some(source.as_str())
            && dir.join(WEIGHTS).is_file(),
    )
}

/// Converts `dir/model.onnx` into [`WEIGHTS`] and [`CONFIG`] in `dir`
/// (written to temporary names, then renamed, the configuration last).
pub fn convert(dir: &Path) -> Result<Converted> {
    use candle_core::{Device, Tensor as CTensor};
    let source = dir.join("model.onnx");
    let bytes = std::fs::read(&source)
        .map_err(|e| Error::unavailable(format!("cannot read {}", source.display()), e))?;
    let graph = Graph::parse(&bytes)?;
    if !graph.nodes.iter().any(|n| n.op == "Erf") {
        return Err(Error::InvalidInput(
            "model.onnx does not use BERT's exact GELU (no Erf); docent's encoder cannot run it"
                .into(),
        ));
    }
    let candle = |e: candle_core::Error| Error::internal("converting model.onnx", e.to_string());
    let mut tensors: HashMap<String, CTensor> = HashMap::new();
    let mut quantized = 0;
    for (name, t) in &graph.initializers {
        if let Some(base) = name.strip_suffix("_quantized") {
            let (scale, zero) = graph.quantization(base)?;
            let q = t.integers()?;
            let values: Vec<f32> = q.iter().map(|&q| (q - zero) as f32 * scale).collect();
            let is_matmul = graph.consumers(name).any(|n| n.op == "MatMulInteger");
            if !is_matmul {
                // An embedding table, (rows, hidden) as BERT stores it.
                let tensor =
                    CTensor::from_vec(values, t.dims.clone(), &Device::Cpu).map_err(candle)?;
                tensors.insert(base.to_string(), tensor);
                continue;
            }
            if zero != 0 || t.kind != INT8 {
                return Err(Error::InvalidInput(format!(
                    "{name}: docent runs symmetric int8 weights only (zero point {zero})"
                )));
            }
            let [input, out] = t.dims[..] else {
                return Err(malformed(&format!("{name} is not a matrix")));
            };
            let bias = graph.bias_after(name)?;
            let weight = format!("{}.weight", bias.trim_end_matches(".bias"));
            let tensor = CTensor::from_vec(values, (input, out), &Device::Cpu)
                .and_then(|w| w.t()?.contiguous())
                .map_err(candle)?;
            tensors.insert(weight.clone(), tensor);
            let scale = CTensor::from_vec(vec![scale], 1, &Device::Cpu).map_err(candle)?;
            tensors.insert(format!("{weight}_scale"), scale);
            quantized += 1;
        } else if t.kind == FLOAT && (name.ends_with(".weight") || name.ends_with(".bias")) {
            let tensor =
                CTensor::from_vec(t.f32s()?, t.dims.clone(), &Device::Cpu).map_err(candle)?;
            tensors.insert(name.clone(), tensor);
        }
    }
    let dims = |name: &str| -> Result<Vec<usize>> {
        tensors
            .get(name)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| malformed(&format!("no {name}")))
    };
    let words = dims("bert.embeddings.word_embeddings.weight")?;
    let hidden = words[1];
    let layers = (0..)
        .take_while(|i| {
            tensors.contains_key(&format!("bert.encoder.layer.{i}.output.dense.weight"))
        })
        .count();
    if layers == 0 || !tensors.contains_key("classifier.weight") {
        return Err(Error::InvalidInput(
            "model.onnx is not a BERT cross-encoder (no encoder layers or no classifier)".into(),
        ));
    }
    let config = serde_json::json!({
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": words[0],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": graph.heads(hidden)?,
        "intermediate_size": dims("bert.encoder.layer.0.intermediate.dense.bias")?[0],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": dims("bert.embeddings.position_embeddings.weight")?[0],
        "type_vocab_size": dims("bert.embeddings.token_type_embeddings.weight")?[0],
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "num_labels": dims("classifier.weight")?[0],
        "docent_source": "model.onnx",
        "docent_source_sha256": sha256_file(&source)?,
    });
    let weights = dir.join(WEIGHTS);
    let config_path = dir.join(CONFIG);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| Error::unavailable(format!("cannot write {path}"), e)
    };
    // Two processes may convert at once: each writes its own file, and
    // the renames are atomic.
    let partial = dir.join(format!("{WEIGHTS}.{}.partial", std::process::id()));
    candle_core::safetensors::save(&tensors, &partial).map_err(candle)?;
    std::fs::rename(&partial, &weights).map_err(io(&weights))?;
    let partial = dir.join(format!("{CONFIG}.{}.partial", std::process::id()));
    std::fs::write(&partial, serde_json::to_string_pretty(&config).unwrap())
        .map_err(io(&partial))?;
    std::fs::rename(&partial, &config_path).map_err(io(&config_path))?;
    Ok(Converted {
        weights,
        config: config_path,
        quantized,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protobuf field's bytes.
    fn field(number: u64, wire: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |mut v: u64| loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        };
        put(number << 3 | wire);
        if wire == 2 {
            put(payload.len() as u64);
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_tensor_with_packed_and_unpacked_fields_reads_back() {
        let mut t = Vec::new();
        t.extend(field(1, 2, &[2, 3])); // dims packed: 2, 3
        t.extend(field(2, 0, &[1])); // FLOAT
        t.extend(field(8, 2, b"w"));
        let raw: Vec<u8> = (0..6)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect();
        t.extend(field(9, 2, &raw));
        let parsed = Tensor::parse(&t).unwrap();
        assert_eq!(parsed.dims, vec![2, 3]);
        assert_eq!(parsed.name, "w");
        assert_eq!(parsed.f32s().unwrap(), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);

        let mut z = Vec::new();
        z.extend(field(2, 0, &[3])); // INT8, a scalar
        // int32_data −1: a negative int32 is a ten-byte varint.
        z.extend(field(
            5,
            0,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ));
        let parsed = Tensor::parse(&z).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed.integers().unwrap(), vec![-1]);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused_with_a_message() {
        let mut t = field(8, 2, b"name");
        t.truncate(3);
        let err = Tensor::parse(&t).err().unwrap().to_string();
        assert!(err.contains("not a valid ONNX file"), "{err}");
        assert!(Graph::parse(b"\x07\x07\x07").is_err());
        assert!(
            Graph::parse(&field(1, 0, &[1]))
                .err()
                .unwrap()
                .to_string()
                .contains("no graph")
        );
    }
}
