//! Local streaming language models for Hark (candle, quantized GGUF).
//!
//! [`LanguageModel`] loads a GGUF file (weights, tokenizer and chat template
//! all come from the one file) and streams a reply token by token;
//! [`LlmWorker`] runs one on its own thread behind bounded channels so the
//! conversation core can cancel a reply the moment the user barges in;
//! [`History`] keeps the turns the core feeds back in.

use std::path::PathBuf;

use hark_config::{
    check_not_empty, check_optional_range, check_range, doc, unset, InvalidValue, KeyDoc, Section,
    Settings,
};
use serde::{Deserialize, Serialize};

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
pub use worker::{CancelHandle, LlmEvent, LlmWorker, TokenGenerator, ToolBox, ToolSpec};

/// Generation settings, and the `[llm]` section of Hark's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Which brain: this process's candle model, or a server.
    pub backend: LlmBackend,
    /// Local: a catalogue name (`smollm2-135m`) or path of a GGUF file,
    /// which the caller resolves to the file given to
    /// [`LanguageModel::load`]. OpenAI: the model name the server knows.
    pub model: String,
    /// OpenAI: the API's base, e.g. `http://127.0.0.1:8080/v1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// OpenAI: the environment variable holding the API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// OpenAI: a file holding the API key (readable by its owner only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// OpenAI: how long to wait for the first token (and, after it, for
    /// each next piece) before giving up on the reply.
    pub first_token_timeout_ms: u64,
    /// Used when the history passed to `generate` has no system message.
    pub system_prompt: String,
    /// Sampling temperature; 0 means greedy (deterministic) decoding.
    pub temperature: f64,
    /// Upper bound on reply length; spoken replies should be short.
    pub max_tokens: usize,
    /// Prompt plus reply budget; also capped by what the model supports.
    pub context_tokens: usize,
    /// Sampling seed (not a setting: replies vary with temperature anyway).
    #[serde(skip)]
    pub seed: u64,
    /// CPU threads for inference; `None` lets candle pick. candle reads this
    /// once per process, so only the first model loaded can set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            backend: LlmBackend::Local,
            model: "smollm2-135m".into(),
            url: None,
            api_key_env: None,
            api_key_file: None,
            first_token_timeout_ms: 10_000,
            // Measured on twenty everyday questions with the default 135M
            // model (scripts/everyday-questions): 9 sensible answers with
            // 0.7 and the old three-sentence prompt, 13 with these.
            system_prompt: "You are Hark, a voice assistant. Answer in one short, plain \
                            sentence. Be factual, and say so if you do not know."
                .to_string(),
            temperature: 0.2,
            max_tokens: 120,
            context_tokens: 2048,
            seed: 299_792_458,
            threads: None,
        }
    }
}

/// Where replies come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackend {
    /// A GGUF model run here with candle.
    #[default]
    Local,
    /// Any OpenAI-compatible chat completions server (llama.cpp, Ollama,
    /// vLLM, hosted services).
    OpenAi,
}

impl Settings for LlmConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_not_empty("model", &self.model)?;
        if self.backend == LlmBackend::OpenAi {
            let url = self.url.as_deref().unwrap_or("");
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(InvalidValue::new(
                    "url",
                    format!("{url:?}"),
                    "an http:// or https:// URL (the API's base, such as \"http://127.0.0.1:8080/v1\") \
                     when backend = \"openai\"",
                ));
            }
        }
        if self.api_key_env.is_some() && self.api_key_file.is_some() {
            return Err(InvalidValue::new(
                "api_key_file",
                "set",
                "unset when api_key_env is set (one source for the key)",
            ));
        }
        check_range(
            "first_token_timeout_ms",
            self.first_token_timeout_ms,
            100,
            600_000,
        )?;
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("context_tokens", self.context_tokens, 256, 131_072)?;
        check_range("max_tokens", self.max_tokens, 0, self.context_tokens / 2)?;
        check_optional_range("threads", self.threads, 1, 64)
    }
}

impl Section for LlmConfig {
    const DOC: &'static str = "The language model that writes the answers.";
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "backend",
            "Where answers come from: \"local\" (a GGUF model run by Hark) or \"openai\" \
             (any OpenAI-compatible server: llama.cpp, Ollama, vLLM, hosted services).",
        ),
        doc(
            "model",
            "local: a name from `hark models list` (smollm2-135m) or the path of a GGUF \
             file. openai: the model name the server serves.",
        ),
        unset(
            "url",
            "openai: the API's base URL; Hark posts to URL/chat/completions.",
            "\"http://127.0.0.1:8080/v1\"",
        ),
        unset(
            "api_key_env",
            "openai: the environment variable that holds the API key, if the server \
             needs one.",
            "\"OPENAI_API_KEY\"",
        ),
        unset(
            "api_key_file",
            "openai: or a file that holds it (refused unless only its owner can read it).",
            "\"/home/me/.config/hark/api-key\"",
        ),
        doc(
            "first_token_timeout_ms",
            "openai: how long to wait for the first word of a reply (and then for each \
             next one) before Hark gives up, says so and speaks its fallback. 100 to \
             600000.",
        ),
        doc(
            "system_prompt",
            "Instructions given to the model before the conversation.",
        ),
        doc(
            "temperature",
            "Sampling temperature: 0.0 always picks the likeliest word (repeatable); \
             higher is more varied. 0.0 to 2.0.",
        ),
        doc(
            "max_tokens",
            "Longest reply, in tokens (about 3/4 of a word each); 0 lets the model say \
             nothing, so Hark speaks conversation.fallback_reply. 0 to half of \
             context_tokens.",
        ),
        doc(
            "context_tokens",
            "Prompt plus reply budget, in tokens; older turns are dropped to fit. Also \
             capped by the model. 256 to 131072.",
        ),
        unset(
            "threads",
            "CPU threads for the model, 1 to 64. Unset: all cores.",
            "2",
        ),
    ];
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
    /// Of those, how many a cached state already held (not run again).
    pub reused_tokens: usize,
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
    /// A remote server failed: `url` is the one Hark asked.
    #[error("{url}: {message}")]
    Server { url: String, message: String },
    #[error("the language model is busy: too many queued requests (cancel old ones first)")]
    WorkerBusy,
    #[error("the language model worker thread has stopped")]
    WorkerGone,
}
