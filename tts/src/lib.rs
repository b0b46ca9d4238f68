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

use std::path::PathBuf;

pub use config::VoiceConfig;
pub use phonemes::{phoneme_ids, phonemize};
pub use piper::PiperVoice;

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
    #[error("espeak-ng initialisation failed (is espeak-ng-data installed?): {0}")]
    EspeakInit(String),
    #[error("espeak-ng voice {voice:?} unavailable: {message}")]
    EspeakVoice { voice: String, message: String },
}
