//! Chat templates, rendered to token ids piece by piece so that message
//! content is always tokenized as plain text.

use crate::tokenizer::{GgufTokenizer, TokenizerError};
use docent_core::{ChatMessage, Role};

/// The chat markup a model family was trained with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (Qwen2, SmolLM2).
    ChatMl,
}

impl ChatTemplate {
    /// Picks the template from the GGUF's `tokenizer.chat_template` and vocabulary.
    pub fn detect(template_text: Option<&str>, tokenizer: &GgufTokenizer) -> Option<Self> {
        let chatml_vocab = tokenizer.special("<|im_start|>").is_some()
            && tokenizer.special("<|im_end|>").is_some();
        match template_text {
            Some(t) if t.contains("<|im_start|>") && chatml_vocab => Some(ChatTemplate::ChatMl),
            None if chatml_vocab => Some(ChatTemplate::ChatMl),
            _ => None,
        }
    }

    /// Token ids of the conversation followed by the opening of the assistant turn.
    pub fn render(
        &self,
        tokenizer: &GgufTokenizer,
        messages: &[ChatMessage],
    ) -> Result<Vec<u32>, TokenizerError> {
        match self {
            ChatTemplate::ChatMl => {
                let start = tokenizer
                    .special("<|im_start|>")
                    .ok_or_else(|| TokenizerError::Metadata("<|im_start|>".into()))?;
                let end = tokenizer
                    .special("<|im_end|>")
                    .ok_or_else(|| TokenizerError::Metadata("<|im_end|>".into()))?;
                let mut ids = Vec::new();
                for message in messages {
                    ids.push(start);
                    ids.extend(tokenizer.encode_plain(&format!(
                        "{}\n{}",
                        role_name(message.role),
                        message.content
                    ))?);
                    ids.push(end);
                    ids.extend(tokenizer.encode_plain("\n")?);
                }
                ids.push(start);
                ids.extend(tokenizer.encode_plain("assistant\n")?);
                Ok(ids)
            }
        }
    }
}

/// The role's name in chat markup and in OpenAI's API.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}
