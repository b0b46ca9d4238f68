//! GGUF loading and the token-by-token generation loop.
//!
//! # Reusing the KV cache
//!
//! The prompt pass is most of the time to first token (about 0.7 s for a
//! 60-token prompt on two cores), and most of each prompt was already
//! processed: the system prompt every time, and last turn's prompt and reply
//! when the conversation simply goes on. candle's caches can only grow, not
//! be cut back, but a model state is cheap to clone (weights are shared
//! `Arc`s; the cache is a pair of tensors per layer). So the model keeps
//! [`PrefixState`]s, clones whose caches hold exactly known tokens: the
//! system prompt (computed at load), the last prompt, wherever the last
//! generation ended, and the state the last prompt resumed from: the
//! conversation before its newest message, which is what lets a reply
//! prepared during a pause and dropped (the user went on: the same
//! conversation, a longer newest message) cost the next one only that
//! message. One more is read ahead of the user's finished turn
//! ([`LanguageModel::warm`]): when a reply ends, the conversation up to the
//! next user message's first word; while the user talks, their words so far
//! but the last two (a partial transcript's last words may still change).
//! Then a reply prepared at the pause reads only the last few words before
//! its first token.
//! A prompt that starts with one of them resumes from the longest; anything
//! else (trimmed history, a rewritten interrupted reply) falls back to a full
//! pass. Token ids are compared, not text, so a reuse is always exact.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use candle_transformers::models::{
    quantized_gemma3, quantized_llama, quantized_qwen2, quantized_qwen3,
};

use crate::template::ChatTemplate;
use crate::tokenizer::GgufTokenizer;
use crate::utf8::Utf8Stream;
use crate::{ChatMessage, Generation, LlmConfig, LlmError, Role};

/// `general.architecture` values this crate can run.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3"];

/// Small models loop easily; a mild penalty over the recent reply keeps them
/// from repeating a phrase until `max_tokens`.
const REPEAT_PENALTY: f32 = 1.1;
const REPEAT_LAST_N: usize = 64;
/// Nucleus sampling cut-off when the temperature is above zero.
const TOP_P: f64 = 0.9;
/// Tokens at the end of a partial transcript that the finished one may
/// still change (Whisper rewrites the last word or two as more speech
/// arrives), so reading ahead stops short of them.
const UNSETTLED_TOKENS: usize = 2;
/// Tokens read ahead per forward pass: small enough that a cancel takes
/// effect within ~30 ms, large enough to keep most of a batch's speed.
const READ_AHEAD_CHUNK: usize = 4;

enum Weights {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
}

impl Weights {
    fn forward(&mut self, input: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Self::Llama(m) => m.forward(input, pos),
            Self::Qwen2(m) => m.forward(input, pos),
            Self::Qwen3(m) => m.forward(input, pos),
            Self::Gemma3(m) => m.forward(input, pos),
        }
    }

    /// Frees the previous reply's KV cache. llama, qwen2 and gemma3 also reset
    /// on their own at position 0, but qwen3 appends unconditionally.
    /// A copy sharing the weights and holding the same KV cache; `None`
    /// where candle's model type cannot be cloned (qwen2).
    fn snapshot(&self) -> Option<Self> {
        match self {
            Self::Llama(m) => Some(Self::Llama(m.clone())),
            Self::Qwen2(_) => None,
            Self::Qwen3(m) => Some(Self::Qwen3(m.clone())),
            Self::Gemma3(m) => Some(Self::Gemma3(m.clone())),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Llama(m) => m.clear_kv_cache(),
            Self::Qwen2(m) => m.clear_kv_cache(),
            Self::Qwen3(m) => m.clear_kv_cache(),
            Self::Gemma3(_) => {}
        }
    }
}

/// A model state whose KV cache holds exactly `tokens`.
struct PrefixState {
    tokens: Vec<u32>,
    weights: Weights,
}

/// Loaded weights, tokenizer and chat template.
pub struct LanguageModel {
    weights: Weights,
    /// The system prompt's state (fixed), the last prompt's (a reply that
    /// was interrupted is rewritten in history, so only its prompt is still
    /// a prefix), and where the last generation ended.
    system_state: Option<PrefixState>,
    /// The state the last prompt resumed from.
    resumed_state: Option<PrefixState>,
    prompt_state: Option<PrefixState>,
    last_state: Option<PrefixState>,
    /// The prompt read ahead of the user's finished turn ([`Self::warm`]).
    warm_state: Option<PrefixState>,
    tokenizer: GgufTokenizer,
    template: ChatTemplate,
    architecture: String,
    stop_ids: Vec<u32>,
    /// `config.context_tokens` capped by what the model's RoPE tables allow.
    context_tokens: usize,
    config: LlmConfig,
    device: Device,
    calls: u64,
}

impl LanguageModel {
    /// Loads a GGUF model; every error names the file.
    pub fn load(path: &Path, config: LlmConfig) -> Result<Self, LlmError> {
        let started = Instant::now();
        let io_err = |source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LlmError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        let file_len = file.metadata().map_err(io_err)?.len();

        // Check the magic first so a wrong file gets a plain answer instead of
        // whatever the GGUF parser trips over.
        let mut magic = Vec::with_capacity(4);
        (&mut file)
            .take(4)
            .read_to_end(&mut magic)
            .map_err(io_err)?;
        if magic != b"GGUF" {
            return Err(LlmError::NotGguf {
                path: path.to_path_buf(),
                magic,
            });
        }

        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let content = Content::read(&mut reader).map_err(|e| {
            let detail = format!("unreadable header: {}", brief(&e));
            // The parser reports running off the end in a few wordings.
            let eof = ["fill whole buffer", "remaining"];
            if eof.iter().any(|m| detail.contains(m)) {
                LlmError::Truncated {
                    path: path.to_path_buf(),
                    detail,
                }
            } else {
                LlmError::Corrupt {
                    path: path.to_path_buf(),
                    detail,
                }
            }
        })?;
        check_tensor_data(path, &content, file_len)?;

        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| LlmError::Corrupt {
                path: path.to_path_buf(),
                detail: "no general.architecture in metadata".into(),
            })?;
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(LlmError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                architecture,
            });
        }

        let tokenizer =
            GgufTokenizer::from_gguf(&content).map_err(|detail| LlmError::Tokenizer {
                path: path.to_path_buf(),
                detail,
            })?;
        let jinja = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok());
        let template = ChatTemplate::detect(jinja.map(String::as_str));
        let mut stop_ids: Vec<u32> = template
            .end_of_turn_tokens()
            .iter()
            .filter_map(|t| tokenizer.token_id(t))
            .chain(tokenizer.eos_id)
            .collect();
        stop_ids.sort_unstable();
        stop_ids.dedup();
        if stop_ids.is_empty() {
            return Err(LlmError::Tokenizer {
                path: path.to_path_buf(),
                detail: "no end-of-sequence or end-of-turn token in the vocabulary".into(),
            });
        }

        let context_length = content
            .metadata
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.to_u32().ok())
            .map(|n| n as usize);
        let model_limit = match architecture.as_str() {
            // candle's quantized llama sizes its RoPE table at a fixed length.
            "llama" => context_length
                .unwrap_or(quantized_llama::MAX_SEQ_LEN)
                .min(quantized_llama::MAX_SEQ_LEN),
            "gemma3" => context_length
                .unwrap_or(quantized_gemma3::MAX_SEQ_LEN)
                .min(quantized_gemma3::MAX_SEQ_LEN),
            _ => context_length.unwrap_or(config.context_tokens),
        };
        let context_tokens = config.context_tokens.min(model_limit);

        if let Some(n) = config.threads {
            // candle sizes its thread pool from this variable on first use;
            // an explicit environment setting wins.
            if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
                std::env::set_var("CANDLE_NUM_THREADS", n.max(1).to_string());
            }
        }

        let device = Device::Cpu;
        let corrupt = |e: candle_core::Error| LlmError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("loading weights: {}", brief(&e)),
        };
        let (content, mut reader) = requantize_slow_types(content, reader).map_err(corrupt)?;
        let weights = match architecture.as_str() {
            "llama" => Weights::Llama(
                quantized_llama::ModelWeights::from_gguf(content, &mut reader, &device)
                    .map_err(corrupt)?,
            ),
            "qwen2" => Weights::Qwen2(
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, &device)
                    .map_err(corrupt)?,
            ),
            "qwen3" => Weights::Qwen3(
                quantized_qwen3::ModelWeights::from_gguf(content, &mut reader, &device)
                    .map_err(corrupt)?,
            ),
            "gemma3" => {
                tracing::warn!(
                    "candle's gemma3 precomputes RoPE tables for {} positions in every layer \
                     regardless of the context size; expect several GB of extra memory",
                    quantized_gemma3::MAX_SEQ_LEN
                );
                Weights::Gemma3(
                    quantized_gemma3::ModelWeights::from_gguf(content, &mut reader, &device)
                        .map_err(corrupt)?,
                )
            }
            _ => unreachable!("architecture checked against SUPPORTED_ARCHITECTURES"),
        };

        tracing::info!(
            path = %path.display(),
            architecture = %architecture,
            ?template,
            context_tokens,
            load_ms = started.elapsed().as_millis() as u64,
            "language model loaded"
        );
        let mut model = Self {
            weights,
            system_state: None,
            resumed_state: None,
            prompt_state: None,
            last_state: None,
            warm_state: None,
            tokenizer,
            template,
            architecture,
            stop_ids,
            context_tokens,
            config,
            device,
            calls: 0,
        };
        model.precompute_system_prompt();
        Ok(model)
    }

    /// Runs the tokens every conversation starts with (template header and
    /// system prompt) once, so no turn pays for them again. The shared part
    /// is found by rendering two different one-question conversations.
    fn precompute_system_prompt(&mut self) {
        let started = Instant::now();
        let render = |question: &str| {
            let messages = [
                ChatMessage::system(self.config.system_prompt.clone()),
                ChatMessage::user(question),
            ];
            self.tokenizer.encode(&self.template.render(&messages))
        };
        let (Ok(a), Ok(b)) = (render("a"), render("b")) else {
            return;
        };
        let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        if shared == 0 {
            return;
        }
        let tokens = a[..shared].to_vec();
        self.weights.reset();
        let ran = Tensor::new(tokens.as_slice(), &self.device)
            .and_then(|t| t.unsqueeze(0))
            .and_then(|input| self.weights.forward(&input, 0));
        match ran.map(|_| self.weights.snapshot()) {
            Ok(Some(weights)) => {
                tracing::debug!(
                    tokens = tokens.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "system prompt precomputed"
                );
                self.system_state = Some(PrefixState { tokens, weights });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot precompute the system prompt: {}", brief(&e)),
        }
    }

    /// Every state a prompt may resume from.
    fn prefix_states(&self) -> impl Iterator<Item = &PrefixState> {
        [
            self.warm_state.as_ref(),
            self.last_state.as_ref(),
            self.prompt_state.as_ref(),
            self.resumed_state.as_ref(),
            self.system_state.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// Puts the model in the state with the longest cached prefix of
    /// `prompt` (leaving at least one token to run); returns its length.
    fn resume_from_longest_prefix(&mut self, prompt: &[u32]) -> usize {
        let best = self
            .prefix_states()
            .filter(|s| s.tokens.len() < prompt.len() && prompt.starts_with(&s.tokens))
            .max_by_key(|s| s.tokens.len());
        let resumed = best.and_then(|s| {
            Some(PrefixState {
                tokens: s.tokens.clone(),
                weights: s.weights.snapshot()?,
            })
        });
        match resumed.and_then(|s| Some((s.weights.snapshot()?, s))) {
            Some((weights, state)) => {
                self.weights = weights;
                let len = state.tokens.len();
                self.resumed_state = Some(state);
                len
            }
            None => {
                self.weights.reset();
                0
            }
        }
    }

    /// Reads ahead the prompt of `history` followed by a user turn that
    /// has begun with `unfinished` (Whisper's transcript so far; empty: the
    /// turn has not begun), as far as it is unlikely to change: up to the
    /// user's words, and all but their last [`UNSETTLED_TOKENS`]. A later
    /// [`Self::generate`] whose prompt begins the same way resumes there,
    /// so the first token of a reply costs only the words that came after.
    /// Returns how many tokens were read (0: nothing new to read).
    /// It reads [`READ_AHEAD_CHUNK`] tokens at a time and stops between
    /// them once `cancel` is set (Whisper needs the cores), keeping what
    /// it has read.
    pub fn warm(
        &mut self,
        history: &[ChatMessage],
        unfinished: &str,
        cancel: &crate::CancelHandle,
    ) -> Result<usize, LlmError> {
        let started = Instant::now();
        let prompt_with = |user: &str| {
            let mut messages = history.to_vec();
            messages.push(ChatMessage::user(user));
            self.prompt_tokens(&messages)
        };
        // Where the user's words begin: the two prompts part there.
        let unfinished = unfinished.trim();
        let begun = prompt_with(if unfinished.is_empty() {
            "a"
        } else {
            unfinished
        })?;
        let not_begun = prompt_with("")?;
        let shared = begun
            .iter()
            .zip(&not_begun)
            .take_while(|(a, b)| a == b)
            .count();
        let settled_words = if unfinished.is_empty() {
            0
        } else {
            begun
                .len()
                .saturating_sub(not_begun.len())
                .saturating_sub(UNSETTLED_TOKENS)
        };
        let target = &begun[..(shared + settled_words).min(begun.len())];
        let known = self.prefix_states().any(|s| s.tokens == target);
        if target.is_empty() || known {
            return Ok(0);
        }
        let infer = |e: candle_core::Error| LlmError::Inference(brief(&e));
        let reused = self.resume_from_longest_prefix(target);
        let mut read_to = reused;
        for chunk in target[reused..].chunks(READ_AHEAD_CHUNK) {
            if cancel.is_cancelled() {
                break;
            }
            let input = Tensor::new(chunk, &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(infer)?;
            self.weights.forward(&input, read_to).map_err(infer)?;
            read_to += chunk.len();
            self.warm_state = self.weights.snapshot().map(|weights| PrefixState {
                tokens: target[..read_to].to_vec(),
                weights,
            });
        }
        let read = read_to - reused;
        tracing::debug!(
            read,
            reused_tokens = reused,
            stopped = cancel.is_cancelled(),
            ms = ms(started),
            "prompt read ahead"
        );
        Ok(read)
    }

    /// The GGUF `general.architecture` of the loaded model.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    pub fn chat_template(&self) -> ChatTemplate {
        self.template
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Context size actually used (the configured one capped by the model).
    pub fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    /// Formats the history, trims the oldest turns to fit the context and
    /// streams the reply. `on_token` is called once per generated token (the
    /// piece may be empty while a multi-byte character is incomplete);
    /// returning `Break` stops generation before the next token.
    pub fn generate(
        &mut self,
        history: &[ChatMessage],
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        let started = Instant::now();
        let prompt = self.prompt_tokens(history)?;
        let prompt_tokens = prompt.len();
        let max_new = self
            .config
            .max_tokens
            .min(self.context_tokens.saturating_sub(prompt_tokens));

        let temperature = (self.config.temperature > 0.0).then_some(self.config.temperature);
        let mut sampler = LogitsProcessor::new(
            self.config.seed.wrapping_add(self.calls),
            temperature,
            temperature.map(|_| TOP_P),
        );
        self.calls += 1;

        let infer = |e: candle_core::Error| LlmError::Inference(brief(&e));
        // Whatever happens below, the cache no longer matches `last_state`'s
        // tokens until it is recorded again.
        let mut fed = prompt.clone();
        let reused = self.resume_from_longest_prefix(&prompt);
        self.last_state = None;
        self.prompt_state = None;
        let input = Tensor::new(&prompt[reused..], &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(infer)?;
        let mut logits = self.weights.forward(&input, reused).map_err(infer)?;
        self.prompt_state = self.weights.snapshot().map(|weights| PrefixState {
            tokens: prompt.clone(),
            weights,
        });

        let mut result = Generation {
            prompt_tokens,
            reused_tokens: reused,
            ..Generation::default()
        };
        let mut generated: Vec<u32> = Vec::new();
        let mut utf8 = Utf8Stream::new();
        while generated.len() < max_new {
            let mut l = logits.squeeze(0).map_err(infer)?;
            if !generated.is_empty() {
                let recent = &generated[generated.len().saturating_sub(REPEAT_LAST_N)..];
                l = candle_transformers::utils::apply_repeat_penalty(&l, REPEAT_PENALTY, recent)
                    .map_err(infer)?;
            }
            let next = sampler.sample(&l).map_err(infer)?;
            if generated.is_empty() {
                result.first_token_ms = ms(started);
            }
            if self.stop_ids.contains(&next) {
                break;
            }
            generated.push(next);
            let piece = utf8.push(self.tokenizer.token_bytes(next));
            result.text.push_str(&piece);
            if on_token(&piece).is_break() {
                result.cancelled = true;
                break;
            }
            if generated.len() >= max_new {
                break;
            }
            let input = Tensor::new(&[next], &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(infer)?;
            logits = self
                .weights
                .forward(&input, prompt_tokens + generated.len() - 1)
                .map_err(infer)?;
            fed.push(next);
        }
        self.last_state = self.weights.snapshot().map(|weights| PrefixState {
            tokens: fed,
            weights,
        });
        let rest = utf8.finish();
        if !rest.is_empty() && !result.cancelled {
            result.text.push_str(&rest);
            let _ = on_token(&rest);
        }
        result.tokens = generated.len();
        result.total_ms = ms(started);
        tracing::debug!(
            tokens = result.tokens,
            prompt_tokens,
            reused_tokens = reused,
            first_token_ms = result.first_token_ms,
            total_ms = result.total_ms,
            cancelled = result.cancelled,
            "generation finished"
        );
        Ok(result)
    }

    /// Tokenizes the conversation, dropping the oldest turns (never the system
    /// prompt, never the newest message) until prompt + reply budget fit.
    fn prompt_tokens(&self, history: &[ChatMessage]) -> Result<Vec<u32>, LlmError> {
        let available = self
            .context_tokens
            .saturating_sub(self.config.max_tokens.min(self.context_tokens / 2));
        fit_to_context(history, &self.config.system_prompt, available, |messages| {
            let text = self.template.render(messages);
            self.tokenizer
                .encode(&text)
                .map_err(|e| LlmError::Inference(format!("tokenizing the prompt: {e}")))
        })
    }

    /// Number of tokens `text` encodes to (for callers budgeting history).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text).map(|v| v.len()).unwrap_or(0)
    }
}

/// Encodes the conversation, dropping the oldest turns (never the system
/// prompt, never the newest message) until it fits `available` tokens. The
/// history's own system message wins over the configured default. A newest
/// message too long on its own keeps only its last words: someone who read
/// aloud for minutes without Hark getting a word in made one user turn of
/// thousands of tokens (seen in `hark bench soak`), and what they said last
/// is what they want answered.
fn fit_to_context(
    history: &[ChatMessage],
    default_system: &str,
    available: usize,
    encode: impl Fn(&[ChatMessage]) -> Result<Vec<u32>, LlmError>,
) -> Result<Vec<u32>, LlmError> {
    let system = history
        .iter()
        .find(|m| m.role == Role::System)
        .cloned()
        .unwrap_or_else(|| ChatMessage::system(default_system));
    let turns: Vec<&ChatMessage> = history.iter().filter(|m| m.role != Role::System).collect();
    let mut first = 0;
    loop {
        // A reply without its question confuses small models.
        while first + 1 < turns.len() && turns[first].role == Role::Assistant {
            first += 1;
        }
        let mut messages = Vec::with_capacity(turns.len() - first + 1);
        if !system.content.is_empty() {
            messages.push(system.clone());
        }
        messages.extend(turns[first..].iter().map(|m| (*m).clone()));
        let ids = encode(&messages)?;
        if ids.len() <= available {
            return Ok(ids);
        }
        if first + 1 >= turns.len() {
            return fit_newest_message(messages, ids.len(), available, &encode);
        }
        first += 1;
    }
}

/// [`fit_to_context`] once only the system prompt and the newest message
/// are left, `needed` tokens for `available`: drops the message's first
/// words until it fits, or fails if even the system prompt is too long.
fn fit_newest_message(
    mut messages: Vec<ChatMessage>,
    mut needed: usize,
    available: usize,
    encode: &impl Fn(&[ChatMessage]) -> Result<Vec<u32>, LlmError>,
) -> Result<Vec<u32>, LlmError> {
    let too_long = |needed| LlmError::PromptTooLong {
        prompt_tokens: needed,
        available,
    };
    let Some(newest) = messages.last().cloned() else {
        return Err(too_long(needed));
    };
    let words: Vec<&str> = newest.content.split_whitespace().collect();
    let mut keep = words.len();
    while keep > 0 {
        // Tokens per word vary: aim a little under the proportional share,
        // and shrink by a tenth at least each round.
        let share = keep * available / needed.max(1);
        keep = share
            .saturating_sub(keep / 20)
            .min(keep - keep.div_ceil(10));
        if keep == 0 {
            break;
        }
        let last = messages.len() - 1;
        messages[last].content = words[words.len() - keep..].join(" ");
        let ids = encode(&messages)?;
        if ids.len() <= available {
            tracing::warn!(
                words = words.len(),
                kept = keep,
                "the newest message is longer than the model's context: only its last words are read"
            );
            return Ok(ids);
        }
        needed = ids.len();
    }
    Err(too_long(needed))
}

/// Quant types whose CPU dot product candle 0.11 implements only in scalar
/// code: a Q4_1 model runs ~10x slower than the same model in Q8_0.
const SLOW_TYPES: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// Either the original reader or an in-memory GGUF where every tensor of a
/// slow type was re-quantized to Q8_0 (which has AVX2 and NEON kernels).
enum ModelReader {
    File(BufReader<File>),
    Memory(Cursor<Vec<u8>>),
}

impl Read for ModelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::File(r) => r.read(buf),
            Self::Memory(r) => r.read(buf),
        }
    }
}

impl Seek for ModelReader {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            Self::File(r) => r.seek(pos),
            Self::Memory(r) => r.seek(pos),
        }
    }
}

/// Q8_0 is finer than any 4/5-bit format, so the conversion is close to
/// lossless; it costs ~45% more memory than Q4_1 and a moment at load. The
/// model constructors only accept a GGUF reader, hence the round trip through
/// an in-memory file.
fn requantize_slow_types(
    content: Content,
    mut reader: BufReader<File>,
) -> candle_core::Result<(Content, ModelReader)> {
    let convertible = |info: &gguf_file::TensorInfo| {
        SLOW_TYPES.contains(&info.ggml_dtype)
            && info.shape.dims().last().is_some_and(|d| d % 32 == 0)
    };
    if !content.tensor_infos.values().any(convertible) {
        return Ok((content, ModelReader::File(reader)));
    }
    let started = Instant::now();
    let cpu = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|n| content.tensor_infos[*n].offset);
    let mut tensors: Vec<(&str, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let qt = content.tensor(&mut reader, name, &cpu)?;
        let qt = if convertible(&content.tensor_infos[name]) {
            QTensor::quantize(&qt.dequantize(&cpu)?, GgmlDType::Q8_0)?
        } else {
            qt
        };
        tensors.push((name.as_str(), qt));
    }
    // The writer uses its own 32-byte alignment; a stale alignment key would
    // make the reader look for tensor data in the wrong place.
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut buf = Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &metadata, &refs)?;
    drop(refs);
    drop(tensors);
    buf.set_position(0);
    let converted = Content::read(&mut buf)?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "re-quantized Q4_1/Q5_0/Q5_1 tensors to Q8_0 for SIMD kernels"
    );
    Ok((converted, ModelReader::Memory(buf)))
}

/// candle appends a captured backtrace to its errors when RUST_BACKTRACE is
/// set; that belongs in a debugger, not in a message shown to the user.
fn brief(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => brief(inner),
        e => e.to_string(),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Verifies every tensor's bytes lie inside the file, so a partial download
/// is reported as such rather than as an obscure read error mid-load.
fn check_tensor_data(path: &Path, content: &Content, file_len: u64) -> Result<(), LlmError> {
    let mut needed = content.tensor_data_offset;
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count();
        let block = info.ggml_dtype.block_size();
        if elems % block != 0 {
            return Err(LlmError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("tensor {name} has {elems} elements, not a multiple of {block}"),
            });
        }
        let size = (elems / block * info.ggml_dtype.type_size()) as u64;
        needed = needed.max(content.tensor_data_offset + info.offset + size);
    }
    if needed > file_len {
        return Err(LlmError::Truncated {
            path: PathBuf::from(path),
            detail: format!("tensor data needs {needed} bytes but the file has {file_len}"),
        });
    }
    Ok(())
}

/// Lets the worker drive a real model (it stops between tokens, where
/// `on_token` breaks once cancelled).
impl crate::worker::TokenGenerator for LanguageModel {
    fn generate(
        &mut self,
        history: &[ChatMessage],
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
        _: &crate::CancelHandle,
    ) -> Result<Generation, LlmError> {
        LanguageModel::generate(self, history, on_token)
    }

    fn warm(&mut self, history: &[ChatMessage], unfinished: &str, cancel: &crate::CancelHandle) {
        if let Err(e) = LanguageModel::warm(self, history, unfinished, cancel) {
            tracing::debug!("cannot read the prompt ahead: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One "token" per word, message ids = index of the message, so the test
    /// can see which messages survived.
    fn encode(messages: &[ChatMessage]) -> Result<Vec<u32>, LlmError> {
        Ok(messages
            .iter()
            .flat_map(|m| {
                let tag = m.content.chars().next().unwrap() as u32;
                m.content.split_whitespace().map(move |_| tag)
            })
            .collect())
    }

    fn survivors(ids: &[u32]) -> String {
        let mut s: Vec<char> = ids.iter().map(|&c| char::from_u32(c).unwrap()).collect();
        s.dedup();
        s.into_iter().collect()
    }

    fn history() -> Vec<ChatMessage> {
        vec![
            ChatMessage::user("a1 a2 a3"),
            ChatMessage::assistant("b1 b2 b3"),
            ChatMessage::user("c1 c2 c3"),
            ChatMessage::assistant("d1 d2 d3"),
            ChatMessage::user("e1 e2 e3"),
        ]
    }

    #[test]
    fn everything_fits() {
        let ids = fit_to_context(&history(), "S sys", 100, encode).unwrap();
        assert_eq!(survivors(&ids), "Sabcde");
    }

    #[test]
    fn trims_oldest_turns_but_keeps_system_prompt() {
        // System (2) + c,d,e (9) = 11; adding a,b would need 17.
        let ids = fit_to_context(&history(), "S sys", 12, encode).unwrap();
        assert_eq!(survivors(&ids), "Scde");
        // Never starts on an assistant turn: with room for 8 it keeps only e.
        let ids = fit_to_context(&history(), "S sys", 8, encode).unwrap();
        assert_eq!(survivors(&ids), "Se");
    }

    #[test]
    fn history_system_message_overrides_default() {
        let mut h = history();
        h.insert(0, ChatMessage::system("X custom"));
        let ids = fit_to_context(&h, "S sys", 100, encode).unwrap();
        assert_eq!(survivors(&ids), "Xabcde");
    }

    #[test]
    fn newest_message_alone_too_long_keeps_its_last_words() {
        let words = |m: &ChatMessage| m.content.split_whitespace().count();
        let count = |messages: &[ChatMessage]| -> Result<Vec<u32>, LlmError> {
            Ok(vec![0; messages.iter().map(words).sum::<usize>() + 3])
        };
        let long: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
        let history = vec![
            ChatMessage::user("an old question"),
            ChatMessage::assistant("an old answer"),
            ChatMessage::user(long.join(" ")),
        ];
        let ids = fit_to_context(&history, "be brief", 1928, count).unwrap();
        assert!(ids.len() <= 1928 && ids.len() > 1500, "{}", ids.len());
        // The words kept are the last ones, in order.
        let kept = std::cell::RefCell::new(String::new());
        fit_to_context(&history, "be brief", 1928, |m: &[ChatMessage]| {
            *kept.borrow_mut() = m.last().unwrap().content.clone();
            count(m)
        })
        .unwrap();
        assert!(kept.borrow().ends_with("w2998 w2999"));
        assert!(!kept.borrow().contains("w0 "));
    }

    #[test]
    fn a_system_prompt_alone_too_long_is_an_error() {
        let err = fit_to_context(&history(), "S sys", 1, encode).unwrap_err();
        assert!(matches!(err, LlmError::PromptTooLong { available: 1, .. }));
    }
}
