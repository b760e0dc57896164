//! A byte-level BPE tokenizer rebuilt from GGUF metadata.
//!
//! candle's own `TokenizerFromGguf` adds a prefix space for pre-tokenizers it
//! does not know (SmolLM2's among them), which shifts every id. This builds the
//! pre-tokenizer the model was trained with, chosen by `tokenizer.ggml.pre`.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// Qwen2's split pattern (from its published tokenizer configuration).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3 style pattern (numbers in groups of up to three).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Why a GGUF's tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata key {0} is missing or has the wrong type")]
    Metadata(String),
    #[error("unsupported tokenizer model '{0}' (only byte-level BPE, 'gpt2', is supported)")]
    UnsupportedModel(String),
    #[error("cannot build the tokenizer: {0}")]
    Build(String),
}

/// The tokenizer of a GGUF model plus the special ids generation needs.
pub struct GgufTokenizer {
    /// Matches special tokens in text (used for the chat template's own markup).
    pub with_specials: Tokenizer,
    /// Treats special-token text as plain text: used for every piece of user or
    /// document content, so a document cannot inject `<|im_end|>`.
    pub plain: Tokenizer,
    pub eos_ids: Vec<u32>,
    pub pre: String,
}

fn get<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, TokenizerError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| TokenizerError::Metadata(key.into()))
}

/// Reads any integer-typed metadata value.
pub(crate) fn as_u32(v: &Value) -> Option<u32> {
    match v {
        Value::U8(x) => Some(u32::from(*x)),
        Value::U16(x) => Some(u32::from(*x)),
        Value::U32(x) => Some(*x),
        Value::I8(x) => u32::try_from(*x).ok(),
        Value::I16(x) => u32::try_from(*x).ok(),
        Value::I32(x) => u32::try_from(*x).ok(),
        Value::U64(x) => u32::try_from(*x).ok(),
        Value::I64(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}

fn strings(ct: &Content, key: &str) -> Result<Vec<String>, TokenizerError> {
    let values = get(ct, key)?
        .to_vec()
        .map_err(|_| TokenizerError::Metadata(key.into()))?;
    values
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|_| TokenizerError::Metadata(key.into()))
        })
        .collect()
}

impl GgufTokenizer {
    pub fn from_gguf(ct: &Content) -> Result<Self, TokenizerError> {
        let model = get(ct, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|_| TokenizerError::Metadata("tokenizer.ggml.model".into()))?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.clone()));
        }
        let pre = ct
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| "gpt2".into());
        let tokens = strings(ct, "tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings(ct, "tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let types: Vec<u32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|_| TokenizerError::Metadata("tokenizer.ggml.token_type".into()))?
                .iter()
                .map(|t| as_u32(t).unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(TokenizerError::Metadata(format!(
                "tokenizer.ggml.token_type ({} types for {} tokens)",
                types.len(),
                tokens.len()
            )));
        }
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            "qwen2" => {
                tokenizer
                    .with_normalizer(Some(NFC))
                    .map_err(|e| TokenizerError::Build(e.to_string()))?;
                Sequence::new(vec![
                    split(QWEN2_PATTERN)?,
                    ByteLevel::new(false, false, false).into(),
                ])
                .into()
            }
            "llama3" | "llama-bpe" | "smaug-bpe" => Sequence::new(vec![
                split(LLAMA3_PATTERN)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            // SmolLM ("smollm") and StarCoder-style vocabularies split digits one by one.
            "smollm" | "starcoder" | "refact" => Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            _ => ByteLevel::new(false, true, true).into(),
        };
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
        let specials: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t, 3 | 4))
            .map(|(i, _)| AddedToken::from(tokens[i].clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(specials)
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let mut eos_ids = Vec::new();
        if let Some(id) = ct
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(as_u32)
        {
            eos_ids.push(id);
        }
        for end in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = tokenizer.token_to_id(end)
                && !eos_ids.contains(&id)
            {
                eos_ids.push(id);
            }
        }
        let mut plain = tokenizer.clone();
        plain.set_encode_special_tokens(true);
        Ok(GgufTokenizer {
            with_specials: tokenizer,
            plain,
            eos_ids,
            pre,
        })
    }

    /// Ids of plain text (special-token text is not interpreted).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.plain
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Build(e.to_string()))
    }

    /// Id of a special token, if the vocabulary has it.
    pub fn special(&self, token: &str) -> Option<u32> {
        self.with_specials.token_to_id(token)
    }
}

fn split(pattern: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    Split::new(
        SplitPattern::Regex(pattern.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(Into::into)
    .map_err(|e| TokenizerError::Build(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// GGUF v3 bytes: the header, these metadata pairs (key, then the value
    /// with its type tag) and no tensors.
    pub(crate) fn gguf(metadata: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            out.extend(string(key));
            out.extend(value);
        }
        out
    }

    fn string(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend(s.as_bytes());
        out
    }

    pub(crate) fn str_value(s: &str) -> Vec<u8> {
        let mut out = 8u32.to_le_bytes().to_vec();
        out.extend(string(s));
        out
    }

    pub(crate) fn u32_value(v: u32) -> Vec<u8> {
        let mut out = 4u32.to_le_bytes().to_vec();
        out.extend(v.to_le_bytes());
        out
    }

    pub(crate) fn strings_value(items: &[&str]) -> Vec<u8> {
        let mut out = 9u32.to_le_bytes().to_vec();
        out.extend(8u32.to_le_bytes());
        out.extend((items.len() as u64).to_le_bytes());
        for item in items {
            out.extend(string(item));
        }
        out
    }

    pub(crate) fn i32s_value(items: &[i32]) -> Vec<u8> {
        let mut out = 9u32.to_le_bytes().to_vec();
        out.extend(5u32.to_le_bytes());
        out.extend((items.len() as u64).to_le_bytes());
        for item in items {
            out.extend(item.to_le_bytes());
        }
        out
    }

    fn tokenizer_of(metadata: &[(&str, Vec<u8>)]) -> Result<GgufTokenizer, TokenizerError> {
        let content = crate::read_gguf_metadata(&mut std::io::Cursor::new(gguf(metadata)))
            .expect("a readable header");
        GgufTokenizer::from_gguf(&content)
    }

    #[test]
    fn a_chatml_vocabulary_is_built_from_metadata() {
        let tokenizer = tokenizer_of(&[
            ("tokenizer.ggml.model", str_value("gpt2")),
            (
                "tokenizer.ggml.tokens",
                strings_value(&["<|im_start|>", "<|im_end|>", "a", "b", "ab"]),
            ),
            ("tokenizer.ggml.merges", strings_value(&["a b"])),
            ("tokenizer.ggml.token_type", i32s_value(&[3, 3, 1, 1, 1])),
        ])
        .unwrap();
        assert_eq!(tokenizer.special("<|im_end|>"), Some(1));
        assert_eq!(tokenizer.eos_ids, vec![1]);
        assert_eq!(tokenizer.encode_plain("ab").unwrap(), vec![4]);
    }

    /// Found by the `gguf_header` fuzz target: a token type list longer
    /// than the vocabulary indexed the tokens past their end (a panic while
    /// loading a model file). It is now refused as inconsistent metadata.
    #[test]
    fn fuzz_gguf_header_more_token_types_than_tokens_index_out_of_bounds() {
        let result = tokenizer_of(&[
            ("tokenizer.ggml.model", str_value("gpt2")),
            ("tokenizer.ggml.tokens", strings_value(&["a"])),
            ("tokenizer.ggml.merges", strings_value(&[])),
            ("tokenizer.ggml.token_type", i32s_value(&[1, 1, 3])),
        ]);
        let Err(TokenizerError::Metadata(message)) = result else {
            panic!("accepted or failed otherwise: {:?}", result.err());
        };
        assert!(message.contains("3 types for 1 tokens"), "{message}");
    }
}
