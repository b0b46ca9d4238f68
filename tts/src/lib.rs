//! Piper text-to-speech for Hark (espeak-ng phonemes, ONNX Runtime).
//!
//! A thin runtime for Piper voices: text → espeak-ng IPA phonemes (per
//! clause, punctuation kept) → Piper phoneme ids → VITS model in ONNX
//! Runtime → mono f32 PCM.
//!
//! - [`config`]: the voice's `.onnx.json`.
//! - `espeak` (private): libespeak-ng FFI, serialised by a global mutex
//!   because espeak-ng is not thread-safe; nothing else in the process may
//!   call libespeak-ng.
//! - [`phonemize`] / [`phoneme_ids`]: clause splitting, punctuation, ids.
//! - [`piper`]: ONNX Runtime loading and inference ([`PiperVoice`]).
//!
//! ONNX Runtime is not linked at build time: [`PiperVoice::load`] is given the
//! path of a `libonnxruntime.so` (>= 1.17; Hark pins 1.24.4) and loads it once
//! per process.

pub mod config;
mod espeak;
mod phonemes;
pub mod piper;
mod worker;

use std::path::PathBuf;

pub use config::VoiceConfig;
pub use phonemes::{phoneme_ids, phonemize};
pub use piper::PiperVoice;
pub use worker::{Synthesized, VoiceWorker, WorkerError};

use hark_config::{
    check_not_empty, check_wyoming_uri, doc, unset, InvalidValue, KeyDoc, Section, Settings,
};
use serde::{Deserialize, Serialize};

/// Anything that turns a clause of text into mono audio: Piper here, a
/// remote voice or a test's fake elsewhere. [`VoiceWorker`] runs one on its
/// own thread.
pub trait Voice: Send {
    /// Rate of the audio `synthesize` returns.
    fn sample_rate(&self) -> u32;
    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError>;

    /// Something the user should hear of about the last call although it
    /// succeeded (a server that failed and was stood in for); asked after
    /// each call.
    fn take_notice(&mut self) -> Option<String> {
        None
    }
}

impl Voice for PiperVoice {
    fn sample_rate(&self) -> u32 {
        PiperVoice::sample_rate(self)
    }
    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
        PiperVoice::synthesize(self, text)
    }
}

/// The `[voice]` section of Hark's configuration: which voice speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsConfig {
    /// Who speaks: Piper here, or a Wyoming server.
    pub backend: VoiceBackend,
    /// `backend = "wyoming"`: the server, `tcp://HOST:PORT` or
    /// `unix:///PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `backend = "wyoming"`: when the server fails, speak with the local
    /// Piper voice if it is installed.
    pub fallback: bool,
    /// Catalogue name (`joe-medium`) or path of a Piper `.onnx` voice; the
    /// caller resolves it. With a Wyoming server, the voice asked of it
    /// (a catalogue name or a file is asked for by its Piper name,
    /// `en_US-joe-medium`).
    pub voice: String,
}

/// Who turns text into speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoiceBackend {
    /// A Piper voice, run here on ONNX Runtime.
    #[default]
    Local,
    /// A Wyoming TTS server (wyoming-piper, Home Assistant's).
    Wyoming,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            backend: VoiceBackend::Local,
            uri: None,
            fallback: true,
            voice: "joe-medium".into(),
        }
    }
}

impl Settings for TtsConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_wyoming_uri(
            "uri",
            self.uri.as_deref(),
            self.backend == VoiceBackend::Wyoming,
        )?;
        check_not_empty("voice", &self.voice)
    }
}

impl Section for TtsConfig {
    const DOC: &'static str = "The voice that speaks them (Piper).";
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "backend",
            "\"local\" (Piper on this machine) or \"wyoming\" (a Wyoming text-to-speech \
             server, such as wyoming-piper).",
        ),
        unset(
            "uri",
            "wyoming: the server, \"tcp://HOST:PORT\" or \"unix:///PATH\".",
            "\"tcp://127.0.0.1:10200\"",
        ),
        doc(
            "fallback",
            "wyoming: when the server is down or fails, speak with the local Piper voice \
             instead (if it is installed).",
        ),
        doc(
            "voice",
            "Piper voice: a name from `hark models list` (joe-medium) or the path of a \
             Piper .onnx voice (its .onnx.json next to it). wyoming: the voice asked of \
             the server (joe-medium is asked for as en_US-joe-medium).",
        ),
    ];
}

/// Everything that can go wrong loading a voice or synthesizing.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("Piper voice model not found: {}", path.display())]
    ModelMissing { path: PathBuf },
    #[error(
        "ONNX voice without its .json: {} not found (a Piper voice is <name>.onnx plus <name>.onnx.json)",
        path.display()
    )]
    ConfigMissing { path: PathBuf },
    #[error("invalid Piper voice config {}: {message}", path.display())]
    ConfigInvalid { path: PathBuf, message: String },
    #[error("ONNX Runtime library not found: {}", path.display())]
    OrtLibMissing { path: PathBuf },
    #[error("cannot load ONNX Runtime library {}: {message}", path.display())]
    OrtLibLoad { path: PathBuf, message: String },
    #[error("cannot load Piper voice {} into ONNX Runtime: {message}", path.display())]
    ModelLoad { path: PathBuf, message: String },
    #[error("Piper inference failed: {0}")]
    Inference(String),
    /// A text-to-speech server (`[voice] backend = "wyoming"`) failed.
    #[error("text-to-speech server {uri}: {message}")]
    Remote { uri: String, message: String },
    #[error("espeak-ng initialisation failed (is espeak-ng-data installed?): {0}")]
    EspeakInit(String),
    #[error("espeak-ng voice {voice:?} unavailable: {message}")]
    EspeakVoice { voice: String, message: String },
}
