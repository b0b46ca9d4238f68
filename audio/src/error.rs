//! Typed errors for the audio crate. Every variant names the device or file
//! it is about so the binary can print it as is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("no audio {kind} device is available{hint}")]
    NoDevice { kind: &'static str, hint: String },
    #[error("audio {kind} device '{name}' not found (run `hark devices` to list them)")]
    DeviceNotFound { kind: &'static str, name: String },
    #[error("audio device '{name}': {message}")]
    Device { name: String, message: String },
    #[error("cannot open WAV file {path}: {message}")]
    Wav { path: PathBuf, message: String },
    #[error("cannot write WAV file {path}: {message}")]
    WavWrite { path: PathBuf, message: String },
    #[error("WAV file {path} contains no audio samples")]
    EmptyWav { path: PathBuf },
    #[error("resampler: {0}")]
    Resample(String),
    #[error("audio stream format {format:?}: {message}")]
    StreamFormat { format: String, message: String },
    #[error("cannot decode {format}: {source}")]
    Codec {
        format: String,
        source: crate::codec::CodecError,
    },
    #[error("audio source stopped: {0}")]
    Stopped(String),
}
