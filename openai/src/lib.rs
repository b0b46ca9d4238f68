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
use hark_llm::{CancelHandle, ChatMessage, Generation, LlmError, Role, TokenGenerator, ToolBox};
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
    pub api_key: Option<ApiKey>,
    /// Prepended when the history has no system message.
    pub system_prompt: String,
    pub temperature: f64,
    /// 0: nothing is asked and the reply is empty.
    pub max_tokens: usize,
    /// Longest wait for the first piece of a reply, and then between
    /// pieces.
    pub first_token_timeout: Duration,
}

/// A secret sent to the server and shown nowhere else: `Debug` hides it,
/// and a server's error message that quotes it (hosted services do, in
/// part) has it cut out before it reaches a log or an `Error` signal.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// `text` with the key, and any 8 characters of it in a row, replaced.
    fn redact(&self, text: String) -> String {
        let key = self.0.as_str();
        if key.len() < 8 || !key.is_ascii() {
            return if key.is_empty() {
                text
            } else {
                text.replace(key, "[API key]")
            };
        }
        let mut text = text.replace(key, "[API key]");
        // Services print a prefix and a suffix ("sk-abc***xyz"): any run of
        // 8 characters of the key goes.
        for start in 0..=key.len() - 8 {
            let part = &key[start..start + 8];
            if text.contains(part) {
                text = text.replace(part, "[API key]");
            }
        }
        text
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(hidden)")
    }
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
    /// Tools offered to the model, if any.
    tools: Option<Box<dyn ToolBox>>,
    /// The server refused the `tools` field once: never sent again.
    tools_refused: bool,
}

/// Rounds of tool calls in one reply before the model must answer.
const MAX_TOOL_ROUNDS: usize = 4;

/// What one request gave besides the text it streamed.
#[derive(Debug, Default)]
struct Round {
    /// Tool calls the model made, assembled from their deltas.
    calls: Vec<ToolCall>,
    cancelled: bool,
}

/// One tool call as its deltas build it up.
#[derive(Debug, Default, Clone)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
    /// Why the call cannot be run (a malformed delta).
    malformed: Option<String>,
}

/// Why a request failed.
enum Failure {
    Llm(LlmError),
    /// A 4xx answer to a request that offered tools: this server (or
    /// model) does not take them.
    ToolsRefused(String),
}

impl From<LlmError> for Failure {
    fn from(e: LlmError) -> Self {
        Failure::Llm(e)
    }
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
            tools: None,
            tools_refused: false,
        })
    }

    /// Where requests go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The conversation as the API takes it.
    fn messages(&self, history: &[ChatMessage]) -> Vec<Value> {
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
        messages
    }

    fn offers_tools(&self) -> bool {
        self.tools.is_some() && !self.tools_refused
    }

    fn body(&self, messages: &[Value]) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        });
        if let (true, Some(tools)) = (self.offers_tools(), &self.tools) {
            let specs: Vec<Value> = tools
                .specs()
                .into_iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters,
                    }})
                })
                .collect();
            if !specs.is_empty() {
                body["tools"] = Value::Array(specs);
            }
        }
        body
    }

    fn server_error(&self, message: impl Into<String>) -> LlmError {
        let message = message.into();
        LlmError::Server {
            url: self.endpoint.clone(),
            message: match &self.config.api_key {
                Some(key) => key.redact(message),
                None => message,
            },
        }
    }

    /// One request: streams its text through `on_token` (stamping the
    /// first piece in `generation`) and collects its tool calls.
    async fn round(
        &self,
        messages: &[Value],
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
        cancel: &CancelHandle,
        generation: &mut Generation,
        started: Instant,
    ) -> Result<Round, Failure> {
        let asked = Instant::now();
        let timeout = self.config.first_token_timeout;
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body(messages).to_string());
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(&key.0);
        }
        let mut round = Round::default();
        let mut poll = tokio::time::interval(CANCEL_POLL);
        let deadline = tokio::time::Instant::from_std(asked + timeout);
        let sent = request.send();
        tokio::pin!(sent);
        let response = loop {
            tokio::select! {
                result = tokio::time::timeout_at(deadline, &mut sent) => match result {
                    Ok(Ok(response)) => break response,
                    Ok(Err(e)) => return Err(self.server_error(chain(&e)).into()),
                    Err(_) => return Err(self.server_error(format!(
                        "no answer within {} ms", timeout.as_millis()
                    )).into()),
                },
                _ = poll.tick() => if cancel.is_cancelled() {
                    round.cancelled = true;
                    return Ok(round);
                },
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body = read_limited(response, ERROR_BODY_LIMIT, timeout).await;
            let message = format!("HTTP {status}: {}", error_message(&body));
            if status.is_client_error()
                && self.offers_tools()
                && body.to_lowercase().contains("tool")
            {
                return Err(Failure::ToolsRefused(message));
            }
            return Err(self.server_error(message).into());
        }

        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut last_piece: Option<Instant> = None;
        let mut done = false;
        while !done {
            let wait_until = last_piece.unwrap_or(asked) + timeout;
            let chunk = tokio::select! {
                chunk = tokio::time::timeout_at(tokio::time::Instant::from_std(wait_until), body.next()) => chunk,
                _ = poll.tick() => {
                    if cancel.is_cancelled() {
                        // Dropping the body closes the connection: the
                        // server stops generating.
                        round.cancelled = true;
                        break;
                    }
                    continue;
                }
            };
            let events = match chunk {
                Err(_) if last_piece.is_none() => {
                    return Err(self
                        .server_error(format!("no first token within {} ms", timeout.as_millis()))
                        .into())
                }
                Err(_) => {
                    return Err(self
                        .server_error(format!("the reply stalled for {} ms", timeout.as_millis()))
                        .into())
                }
                Ok(None) => {
                    done = true;
                    parser.finish().into_iter().collect()
                }
                Ok(Some(Err(e))) => {
                    return Err(self
                        .server_error(format!("the reply broke off: {}", chain(&e)))
                        .into())
                }
                Ok(Some(Ok(bytes))) => parser.push(&bytes),
            };
            for data in events {
                let piece = self.piece(&data)?;
                if !matches!(piece, Piece::Nothing) {
                    last_piece = Some(Instant::now());
                }
                match piece {
                    Piece::Done => done = true,
                    Piece::Text(text) => {
                        if text.is_empty() {
                            continue;
                        }
                        if generation.tokens == 0 {
                            generation.first_token_ms = ms_since(started, Instant::now());
                        }
                        generation.tokens += 1;
                        generation.text.push_str(&text);
                        if on_token(&text).is_break() {
                            round.cancelled = true;
                            done = true;
                            break;
                        }
                    }
                    Piece::Calls(deltas) => {
                        for delta in deltas {
                            assemble(&mut round.calls, delta);
                        }
                    }
                    Piece::Finished(reason) => {
                        tracing::debug!(reason, url = %self.endpoint, "the server finished the reply");
                    }
                    Piece::Nothing => {}
                }
            }
        }
        Ok(round)
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
        let delta = &choice["delta"];
        if let Some(calls) = delta.get("tool_calls").filter(|c| !c.is_null()) {
            let deltas = match calls.as_array() {
                Some(calls) => calls.iter().map(CallDelta::from_json).collect(),
                None => vec![CallDelta::malformed("tool_calls is not a list")],
            };
            return Ok(Piece::Calls(deltas));
        }
        if let Some(text) = delta["content"].as_str() {
            return Ok(Piece::Text(text.to_owned()));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            return Ok(Piece::Finished(reason.to_owned()));
        }
        Ok(Piece::Nothing)
    }

    /// Runs the calls of a round and adds them and their results to the
    /// conversation, as the API wants them for the next request.
    fn run_calls(&mut self, calls: Vec<ToolCall>, messages: &mut Vec<Value>) {
        let Some(tools) = self.tools.as_mut() else {
            return;
        };
        let described: Vec<Value> = calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": described}));
        for call in calls {
            let result = match &call.malformed {
                Some(why) => format!("error: the call was malformed ({why})"),
                None if call.name.is_empty() => "error: the call names no tool".to_owned(),
                None => match serde_json::from_str::<Value>(if call.arguments.trim().is_empty() {
                    "{}"
                } else {
                    &call.arguments
                }) {
                    Ok(Value::Object(_)) => tools.call(&call.name, &call.arguments),
                    Ok(_) | Err(_) => format!(
                        "error: the arguments are not a JSON object: {}",
                        shorten(&call.arguments)
                    ),
                },
            };
            tracing::info!(tool = %call.name, arguments = %call.arguments, result = %shorten(&result), "tool called");
            messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": result}));
        }
    }
}

/// One piece of a `tool_calls` delta.
#[derive(Debug)]
struct CallDelta {
    index: usize,
    id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
    malformed: Option<String>,
}

impl CallDelta {
    /// A delta that continues no call: a call of its own, never run.
    fn malformed(why: &str) -> Self {
        Self {
            index: usize::MAX,
            id: None,
            name: None,
            arguments: None,
            malformed: Some(why.to_owned()),
        }
    }

    fn from_json(value: &Value) -> Self {
        let Some(index) = value["index"].as_u64().filter(|&i| i < 16) else {
            return Self::malformed("a tool call without a valid index");
        };
        let index = index as usize;
        let function = &value["function"];
        if !function.is_object() && !function.is_null() {
            return Self {
                index,
                ..Self::malformed("its function is not an object")
            };
        }
        Self {
            index,
            id: value["id"].as_str().map(str::to_owned),
            name: function["name"].as_str().map(str::to_owned),
            arguments: function["arguments"].as_str().map(str::to_owned),
            malformed: None,
        }
    }
}

/// Adds a delta to the call it continues.
fn assemble(calls: &mut Vec<ToolCall>, mut delta: CallDelta) {
    if delta.index == usize::MAX {
        delta.index = calls.len();
    }
    if calls.len() <= delta.index {
        calls.resize(delta.index + 1, ToolCall::default());
    }
    let call = &mut calls[delta.index];
    if let Some(id) = delta.id {
        call.id = id;
    }
    if let Some(name) = delta.name {
        call.name.push_str(&name);
    }
    if let Some(arguments) = delta.arguments {
        call.arguments.push_str(&arguments);
    }
    if delta.malformed.is_some() {
        call.malformed = delta.malformed;
    }
    if call.id.is_empty() {
        call.id = format!("call_{}", delta.index);
    }
}

/// What one event of the stream carries.
enum Piece {
    Text(String),
    Calls(Vec<CallDelta>),
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
        let started = Instant::now();
        let mut generation = Generation::default();
        let mut messages = self.messages(history);
        let mut rounds = 0;
        let result = loop {
            let runtime = &self.runtime;
            let this = &*self;
            let round =
                runtime.block_on(this.round(&messages, on_token, cancel, &mut generation, started));
            let round = match round {
                Ok(round) => round,
                Err(Failure::ToolsRefused(why)) => {
                    tracing::warn!(
                        "{}: refused the tools ({why}); asking without them",
                        self.endpoint
                    );
                    self.tools_refused = true;
                    continue;
                }
                Err(Failure::Llm(e)) => break Err(e),
            };
            generation.cancelled |= round.cancelled;
            if round.cancelled || round.calls.is_empty() {
                break Ok(());
            }
            rounds += 1;
            self.run_calls(round.calls, &mut messages);
            if cancel.is_cancelled() {
                generation.cancelled = true;
                break Ok(());
            }
            if rounds >= MAX_TOOL_ROUNDS {
                // Enough tools: the next request offers none, so it answers.
                self.tools_refused = true;
                let answer = self.runtime.block_on(self.round(
                    &messages,
                    on_token,
                    cancel,
                    &mut generation,
                    started,
                ));
                self.tools_refused = false;
                match answer {
                    Ok(round) => generation.cancelled |= round.cancelled,
                    Err(Failure::Llm(e)) => break Err(e),
                    Err(Failure::ToolsRefused(why)) => break Err(self.server_error(why)),
                }
                break Ok(());
            }
        };
        generation.total_ms = ms_since(started, Instant::now());
        if let Err(e) = &result {
            tracing::warn!("{e}");
        }
        result.map(|()| generation)
    }

    fn offer_tools(&mut self, tools: Box<dyn ToolBox>) -> bool {
        self.tools = Some(tools);
        true
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
