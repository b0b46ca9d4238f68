//! Local streaming language models for Hark (candle, quantized GGUF).
//!
//! [`LanguageModel`] loads a GGUF file (weights, tokenizer and chat template
//! all come from the one file) and streams a reply token by token;
//! [`LlmWorker`] runs one on its own thread behind bounded channels so the
//! conversation core can cancel a reply the moment the user barges in;
//! [`History`] keeps the turns the core feeds back in.

use std::path::PathBuf;

mod history;
mod model;
mod template;
mod tokenizer;
mod utf8;
mod worker;

pub use history::{History, INTERRUPTED_MARKER};
pub use model::{LanguageModel, SUPPORTED_ARCHITECTURES};
pub use template::ChatTemplate;
pub use utf8::Utf8Stream;
pub use worker::{CancelHandle, LlmEvent, LlmWorker, TokenGenerator};

/// Generation settings.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Used when the history passed to `generate` has no system message.
    pub system_prompt: String,
    /// Sampling temperature; 0 means greedy (deterministic) decoding.
    pub temperature: f64,
    /// Upper bound on reply length; spoken replies should be short.
    pub max_tokens: usize,
    /// Prompt plus reply budget; also capped by what the model supports.
    pub context_tokens: usize,
    pub seed: u64,
    /// CPU threads for inference; `None` lets candle pick. candle reads this
    /// once per process, so only the first model loaded can set it.
    pub threads: Option<usize>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            system_prompt: "You are Hark, a helpful voice assistant. Answer briefly, in one to \
                            three short spoken sentences, without lists, markdown or emoji."
                .to_string(),
            temperature: 0.7,
            max_tokens: 120,
            context_tokens: 2048,
            seed: 299_792_458,
            threads: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Outcome of one `generate` call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    /// The reply as streamed (without the end-of-turn token).
    pub text: String,
    /// Generated tokens, excluding the end-of-turn token.
    pub tokens: usize,
    /// Prompt length after trimming the history to fit the context.
    pub prompt_tokens: usize,
    /// True when the callback asked to stop.
    pub cancelled: bool,
    /// From the call to the first sampled token (prompt processing included).
    pub first_token_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("language model file {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read language model file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a GGUF model file (it starts with {magic:02x?}, expected \"GGUF\")", path.display())]
    NotGguf { path: PathBuf, magic: Vec<u8> },
    #[error("GGUF file {} is truncated: {detail}", path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("GGUF file {} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "GGUF file {} has unsupported architecture {architecture:?} (supported: {})",
        path.display(),
        SUPPORTED_ARCHITECTURES.join(", ")
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("cannot build a tokenizer from the metadata of {}: {detail}", path.display())]
    Tokenizer { path: PathBuf, detail: String },
    #[error(
        "the prompt needs {prompt_tokens} tokens, more than the {available} the context leaves"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        available: usize,
    },
    #[error("language model inference failed: {0}")]
    Inference(String),
    #[error("the language model is busy: too many queued requests (cancel old ones first)")]
    WorkerBusy,
    #[error("the language model worker thread has stopped")]
    WorkerGone,
}
