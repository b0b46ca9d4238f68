//! A client for OpenAI-compatible chat servers: llama.cpp's server,
//! Ollama's `/v1`, vLLM, hosted services. [`OpenAiClient`] is a
//! `hark_llm::TokenGenerator`, so the conversation runs it on the
//! "hark-llm" thread exactly like the local model: `POST
//! {url}/chat/completions` with `"stream": true`, the same history, system
//! prompt, temperature and token limit, the reply streamed back piece by
//! piece.
//!
//! What real servers need and this handles: SSE lines split anywhere
//! ([`sse`]), `: ping` comments, `[DONE]`, `finish_reason`, an error object
//! inside the stream, non-2xx answers with a JSON or text body. A barge-in
//! drops the response at once, which closes the connection, so the server
//! stops generating. Nothing is retried here: a failure ends the reply
//! with an error naming the URL and the cause, and the next turn asks
//! again.
//!
//! The HTTP client is reqwest (rustls with ring, no OpenSSL) on a tokio
//! runtime of the client's own (one "hark-llm-http" thread), driven from
//! the calling thread.

pub mod sse;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hark_llm::{CancelHandle, ChatMessage, Generation, LlmError, Role, TokenGenerator};
use serde_json::{json, Value};

use crate::sse::SseParser;

/// How often a request waiting on the server checks for a cancel.
const CANCEL_POLL: Duration = Duration::from_millis(10);
/// Most of an error body read for the message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// How to reach the server and what to ask it.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API's base, e.g. `http://127.0.0.1:8080/v1`.
    pub url: String,
    /// The model name the server knows.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// Prepended when the history has no system message.
    pub system_prompt: String,
    pub temperature: f64,
    /// 0: nothing is asked and the reply is empty.
    pub max_tokens: usize,
    /// Longest wait for the first piece of a reply, and then between
    /// pieces.
    pub first_token_timeout: Duration,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("cannot start the HTTP runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// See the crate documentation.
pub struct OpenAiClient {
    config: OpenAiConfig,
    endpoint: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl OpenAiClient {
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiError> {
        // reqwest is built without a default crypto provider; ring is it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(config.first_token_timeout)
            .build()
            .map_err(|e| OpenAiError::Client(chain(&e)))?;
        // One worker thread of its own, so the connection's background task
        // runs even between requests: a reply dropped on barge-in closes its
        // socket at once, not at the next request.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hark-llm-http")
            .enable_all()
            .build()?;
        Ok(Self {
            endpoint: format!("{}/chat/completions", config.url.trim_end_matches('/')),
            config,
            http,
            runtime,
        })
    }

    /// Where requests go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn body(&self, history: &[ChatMessage]) -> Value {
        let mut messages = Vec::new();
        if !history.iter().any(|m| m.role == Role::System) {
            messages.push(json!({"role": "system", "content": self.config.system_prompt}));
        }
        for m in history {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": m.content}));
        }
        json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        })
    }

    fn server_error(&self, message: impl Into<String>) -> LlmError {
        LlmError::Server {
            url: self.endpoint.clone(),
            message: message.into(),
        }
    }

    async fn stream(
        &self,
        history: &[ChatMessage],
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
        cancel: &CancelHandle,
    ) -> Result<Generation, LlmError> {
        let started = Instant::now();
        let timeout = self.config.first_token_timeout;
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body(history).to_string());
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let mut generation = Generation::default();
        let mut poll = tokio::time::interval(CANCEL_POLL);
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let sent = request.send();
        tokio::pin!(sent);
        let response = loop {
            tokio::select! {
                result = tokio::time::timeout_at(deadline, &mut sent) => match result {
                    Ok(Ok(response)) => break response,
                    Ok(Err(e)) => return Err(self.server_error(chain(&e))),
                    Err(_) => return Err(self.server_error(format!(
                        "no answer within {} ms", timeout.as_millis()
                    ))),
                },
                _ = poll.tick() => if cancel.is_cancelled() {
                    generation.cancelled = true;
                    return Ok(generation);
                },
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body = read_limited(response, ERROR_BODY_LIMIT, timeout).await;
            return Err(self.server_error(format!("HTTP {status}: {}", error_message(&body))));
        }

        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut last_piece: Option<Instant> = None;
        let mut done = false;
        while !done {
            let wait_until = last_piece.map_or(started, |t| t) + timeout;
            let chunk = tokio::select! {
                chunk = tokio::time::timeout_at(tokio::time::Instant::from_std(wait_until), body.next()) => chunk,
                _ = poll.tick() => {
                    if cancel.is_cancelled() {
                        // Dropping the body closes the connection: the
                        // server stops generating.
                        generation.cancelled = true;
                        break;
                    }
                    continue;
                }
            };
            let events = match chunk {
                Err(_) if last_piece.is_none() => {
                    return Err(self
                        .server_error(format!("no first token within {} ms", timeout.as_millis())))
                }
                Err(_) => {
                    return Err(self
                        .server_error(format!("the reply stalled for {} ms", timeout.as_millis())))
                }
                Ok(None) => {
                    done = true;
                    parser.finish().into_iter().collect()
                }
                Ok(Some(Err(e))) => {
                    return Err(self.server_error(format!("the reply broke off: {}", chain(&e))))
                }
                Ok(Some(Ok(bytes))) => parser.push(&bytes),
            };
            for data in events {
                match self.piece(&data)? {
                    Piece::Done => done = true,
                    Piece::Text(text) => {
                        if text.is_empty() {
                            continue;
                        }
                        let now = Instant::now();
                        if last_piece.is_none() {
                            generation.first_token_ms = ms_since(started, now);
                        }
                        last_piece = Some(now);
                        generation.tokens += 1;
                        generation.text.push_str(&text);
                        if on_token(&text).is_break() {
                            generation.cancelled = true;
                            done = true;
                            break;
                        }
                    }
                    Piece::Finished(reason) => {
                        tracing::debug!(reason, url = %self.endpoint, "the server finished the reply");
                        last_piece.get_or_insert_with(Instant::now);
                    }
                    Piece::Nothing => {}
                }
            }
        }
        generation.total_ms = ms_since(started, Instant::now());
        Ok(generation)
    }

    /// What one event's data says.
    fn piece(&self, data: &str) -> Result<Piece, LlmError> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Piece::Done);
        }
        let value: Value = serde_json::from_str(data).map_err(|e| {
            self.server_error(format!(
                "a reply piece is not JSON ({e}): {}",
                shorten(data)
            ))
        })?;
        if let Some(error) = value.get("error") {
            return Err(self.server_error(format!(
                "the server reported an error: {}",
                error_text(error)
            )));
        }
        let Some(choice) = value["choices"].get(0) else {
            return Ok(Piece::Nothing); // e.g. a usage-only chunk
        };
        if let Some(text) = choice["delta"]["content"].as_str() {
            return Ok(Piece::Text(text.to_owned()));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            return Ok(Piece::Finished(reason.to_owned()));
        }
        Ok(Piece::Nothing)
    }
}

/// What one event of the stream carries.
enum Piece {
    Text(String),
    Finished(String),
    Done,
    Nothing,
}

impl TokenGenerator for OpenAiClient {
    fn generate(
        &mut self,
        history: &[ChatMessage],
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
        cancel: &CancelHandle,
    ) -> Result<Generation, LlmError> {
        if self.config.max_tokens == 0 {
            return Ok(Generation::default());
        }
        let result = self
            .runtime
            .block_on(self.stream(history, on_token, cancel));
        if let Err(e) = &result {
            tracing::warn!("{e}");
        }
        result
    }
}

fn ms_since(start: Instant, now: Instant) -> f64 {
    now.duration_since(start).as_secs_f64() * 1e3
}

/// An error and its causes, as one line ("error sending request for url
/// (…): client error (Connect): tcp connect error: Connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Up to `limit` bytes of a body, given `timeout`.
async fn read_limited(response: reqwest::Response, limit: usize, timeout: Duration) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(Ok(bytes)) = stream.next().await {
            body.extend_from_slice(&bytes);
            if body.len() >= limit {
                body.truncate(limit);
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// The message of an error body: `{"error": {"message": …}}`,
/// `{"error": "…"}`, `{"message": …}`, or the text itself.
fn error_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(value) => match value.get("error") {
            Some(error) => error_text(error),
            None => value["message"]
                .as_str()
                .map_or_else(|| shorten(body), str::to_owned),
        },
        Err(_) if body.trim().is_empty() => "(no body)".into(),
        Err(_) => shorten(body.trim()),
    }
}

fn error_text(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        other => other["message"]
            .as_str()
            .map_or_else(|| shorten(&other.to_string()), str::to_owned),
    }
}

/// At most 300 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests;
