//! Home Assistant's Wyoming protocol for Hark.
//!
//! - [`codec`]: the framing (header line, JSON data, payload), decoded from
//!   bytes split anywhere, every length bounded.
//! - [`message`]: the events Hark uses, typed.
//! - [`client`]: Wyoming servers as Hark's ears and voice:
//!   [`WyomingStt`] is a `hark_stt::SpeechToText`, [`WyomingVoice`] a
//!   `hark_tts::Voice`, so the session runs them on "hark-stt" and
//!   "hark-tts" exactly like Whisper and Piper.
//! - [`server`]: Hark as a Wyoming server, its Whisper and its voice
//!   offered to Home Assistant.
//! - [`fallback`]: the same with the local model standing by for a server
//!   that fails.

pub mod client;
pub mod codec;
pub mod fallback;
pub mod message;
pub mod server;
pub mod settings;
#[cfg(test)]
mod testing;

pub use client::{Deadlines, Endpoint, WyomingStt, WyomingVoice};
pub use codec::{Decoder, Event, EventReader, Limits};
pub use fallback::{SttWithFallback, VoiceWithFallback};
pub use message::{AudioFormat, Info, Message};
pub use server::{ServerLimits, Services, WyomingServer};
pub use settings::WyomingConfig;

/// What went wrong talking Wyoming.
#[derive(Debug, thiserror::Error)]
pub enum WyomingError {
    /// The peer broke the protocol; the message says how.
    #[error("Wyoming protocol error: {0}")]
    Protocol(String),
    #[error("Wyoming {what} of {length} bytes is over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        length: usize,
        limit: usize,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A `uri` Hark cannot use.
    #[error("invalid Wyoming URI {uri:?}: {reason} (expected tcp://HOST:PORT or unix:///PATH)")]
    Uri { uri: String, reason: &'static str },
}
