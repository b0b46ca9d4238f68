//! Hark's conversation runtime, as a library: everything between the
//! devices (or files) and the engines, wired around one event loop.
//!
//! - [`session`]: [`run_session`], the one place a session is built, from a
//!   [`SessionSetup`] (configuration, input, output, subscribers,
//!   heartbeat) and a loader for the [`Models`].
//! - [`core`]: the event loop that owns the conversation state; D-Bus and
//!   everything else only send it [`Command`]s.
//! - [`events`]: the one stream of [`SessionEvent`]s the core reports, and
//!   [`EventLog`], its JSON-lines subscriber.
//! - [`hearing`] ("hark-hear": echo cancellation, echo gate, VAD),
//!   [`input`] (the daemon's switchable ears), [`speaker`]
//!   ("hark-speaker"), [`workers`] (the seams the core drives).
//! - [`listen`]: the dictation pipeline behind `hark listen`.
//! - [`bench`]: the scripted benchmark scenarios.
//!
//! It knows nothing of the command line, D-Bus or the model store: callers
//! hand in models, subscribers and a clock.

pub mod bench;
mod chime;
pub mod clock;
pub mod core;
pub mod events;
pub mod guard;
pub mod hearing;
pub mod input;
pub mod listen;
pub mod output;
mod prepared;
pub mod satellite;
pub mod session;
mod settings;
pub mod speaker;
pub mod tools;
pub mod workers;

use std::path::PathBuf;

pub use crate::core::{
    Command, CoreInput, Heartbeat, HistoryEntry, ListenMode, Reply, SessionOutcome, StopRules,
    TurnRecord,
};
pub use crate::events::{EventLog, SessionEvent, Subscriber};
pub use crate::session::{run_session, Input, Models, Output, SessionConfig, SessionSetup};
pub use crate::settings::AudioConfig;
pub use crate::tools::ToolConfig;

/// An error from code the caller supplied (a model loader).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a session could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Audio(#[from] hark_audio::AudioError),
    #[error("cannot set up echo cancellation: {0}")]
    Echo(#[from] hark_aec::AecError),
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("cannot create the event log {}: {source}", path.display())]
    EventLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load the models")]
    Models(#[source] BoxError),
    /// The input failed for good (a fixed input; the daemon's ears retry).
    #[error("{0}")]
    Input(String),
    #[error("playback failed: {0}")]
    Playback(String),
}
