//! A reply prepared during the user's pause.
//!
//! When the speech pauses, "hark-hear" has Whisper transcribe it on
//! speculation; once that transcript exists (and the user has not gone
//! on), the core starts the model on it and has the voice synthesize the
//! first clause, all under provisional ids the turn machine never sees:
//! nothing plays, nothing is shown, nothing reaches history. If the turn
//! is then judged over with the same words, the turn machine's own
//! `StartGeneration` adopts it: the tokens already written are fed as the
//! reply's, the generation goes on under the reply's id, and the first
//! clause's audio answers the machine's `Synthesize` at once. If the user
//! goes on speaking, the preparation is cancelled and forgotten.

use hark_converse::chunk::ChunkConfig;
use hark_converse::chunk::ClauseSplitter;
use hark_converse::turn::{ClauseId, ReplyId};
use hark_llm::{CancelHandle, ChatMessage, Generation};

/// Provisional reply and clause ids start here, far above any the turn
/// machine hands out.
pub(crate) const PROVISIONAL: u64 = 1 << 62;

/// See the module documentation.
pub(crate) struct Prepared {
    /// The pause it was prepared for: where the speech ended (ms).
    pub speech_end_ms: u64,
    /// Exactly what the model was asked to answer.
    pub messages: Vec<ChatMessage>,
    /// The id the model's events carry.
    pub provisional: ReplyId,
    pub cancel: CancelHandle,
    /// The reply that adopted it, once one has.
    pub adopted: Option<ReplyId>,
    /// Tokens written before adoption.
    pub tokens: Vec<String>,
    /// The generation ended before adoption (`Err`: it failed).
    pub finished: Option<Result<Generation, String>>,
    /// Finds the first clause in the tokens.
    splitter: ClauseSplitter,
    /// The first clause, its provisional id, and its audio once
    /// synthesized.
    pub first_clause: Option<FirstClause>,
}

pub(crate) struct FirstClause {
    pub text: String,
    pub provisional: ClauseId,
    /// Mono audio at the speaker's rate.
    pub audio: Option<Vec<f32>>,
    /// The turn machine's clause it stands for, once asked.
    pub adopted: Option<ClauseId>,
}

impl Prepared {
    pub fn new(
        speech_end_ms: u64,
        messages: Vec<ChatMessage>,
        provisional: ReplyId,
        cancel: CancelHandle,
        chunking: ChunkConfig,
    ) -> Self {
        Self {
            speech_end_ms,
            messages,
            provisional,
            cancel,
            adopted: None,
            tokens: Vec::new(),
            finished: None,
            splitter: ClauseSplitter::new(chunking),
            first_clause: None,
        }
    }

    /// Keeps a token written before adoption; returns the first clause's
    /// text when this token completes it.
    pub fn token(&mut self, text: String) -> Option<String> {
        let clauses = self.splitter.push(&text);
        self.tokens.push(text);
        if self.first_clause.is_some() {
            return None;
        }
        clauses.into_iter().next()
    }

    /// The generation ended before adoption; returns the first clause if
    /// only the end completes it.
    pub fn finish(&mut self, outcome: Result<Generation, String>) -> Option<String> {
        self.finished = Some(outcome);
        if self.first_clause.is_some() {
            return None;
        }
        self.splitter.finish().into_iter().next()
    }

    /// Whether the machine's history asks the same as was prepared.
    pub fn answers(&self, messages: &[ChatMessage]) -> bool {
        let same = |a: &ChatMessage, b: &ChatMessage| {
            a.role == b.role && squash(&a.content) == squash(&b.content)
        };
        self.messages.len() == messages.len()
            && self.messages.iter().zip(messages).all(|(a, b)| same(a, b))
    }
}

/// Text compared word by word, ignoring case and punctuation.
fn squash(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
