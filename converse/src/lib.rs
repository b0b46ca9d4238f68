//! Hark's conversation core: the turn-taking state machine and reply chunking.
//!
//! Pure logic: no I/O, no threads, no clocks. The daemon's event loop feeds
//! [`Conversation::handle`] with what happened (VAD edges, transcripts, LLM
//! tokens, synthesis and playback progress), stamped with its own monotonic
//! time, and carries out the [`Action`]s it gets back. That keeps every
//! timing rule (barge-in, latency metrics) testable as a scripted timeline.
//!
//! - [`turn`]: the state machine, barge-in rule and history.
//! - [`chunk`]: cutting streamed reply text into speakable clauses.
//! - [`address`], [`addressee`]: whether speech was meant for Hark.
//! - [`hud`]: pages for a heads-up display, sent as their words are spoken.
//! - [`speakable`]: rewriting what a model writes into what is said
//!   (markdown, lists, URLs, emoji, abbreviations, numbers, units).
//!
//! [`TurnConfig`] is the `[conversation]` section of Hark's configuration.

pub mod address;
pub mod addressee;
pub mod chunk;
pub mod hud;
mod settings;
pub mod speakable;
pub mod turn;

pub use address::{Addressee, WakeConfig};
pub use chunk::{ChunkConfig, ClauseSplitter};
pub use speakable::Speakable;
pub use turn::{
    Action, BargeInRule, ClauseId, Conversation, Dismissal, Event, InterruptCause, Notice, ReplyId,
    Role, State, Turn, TurnConfig, TurnTimings, UtteranceId,
};
