//! `[turn]`: how Hark decides that the user has finished.

use hark_config::{check_range, doc, InvalidValue, KeyDoc, Section, Settings};
use serde::{Deserialize, Serialize};

/// What ends the user's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// Smart Turn judges each pause; a long silence ends the turn anyway.
    #[default]
    Smart,
    /// A fixed silence (`vad.end_silence_ms`) ends it, whatever was said.
    Silence,
}

/// The `[turn]` section of Hark's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    pub detector: Detector,
    /// Silence after speech before Smart Turn is first asked.
    pub first_check_ms: u32,
    /// While it says "not finished", it is asked again this often as the
    /// silence grows; 0: once per pause. Not sooner than a mid-sentence
    /// pause lasts: the model hears more silence as more finished, whatever
    /// the words.
    pub check_every_ms: u32,
    /// Probability from which a turn counts as finished.
    pub threshold: f64,
    /// From this probability (below `threshold`) Smart Turn is unsure...
    pub unsure_from: f64,
    /// ...and, if the words read as a finished sentence of three words or
    /// more, asked again this much later
    /// instead of after `check_every_ms` (once per pause; 0: never).
    pub unsure_recheck_ms: u32,
    /// A silence this long ends the turn whatever Smart Turn says.
    pub max_silence_ms: u32,
    /// At the first check of a pause, a transcript that stops where a
    /// request cannot ([`crate::read_words`]) overrules a "complete".
    pub read_words: bool,
    /// Start answering during the pause, before the turn is judged over.
    pub prepare_replies: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            detector: Detector::Smart,
            first_check_ms: 160,
            check_every_ms: 1000,
            threshold: 0.5,
            unsure_from: 0.1,
            unsure_recheck_ms: 150,
            max_silence_ms: 2000,
            read_words: true,
            prepare_replies: true,
        }
    }
}

impl Settings for EndpointConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_range("first_check_ms", self.first_check_ms, 30, 2000)?;
        if self.check_every_ms != 0 {
            check_range("check_every_ms", self.check_every_ms, 50, 2000)?;
        }
        check_range("threshold", self.threshold, 0.0, 1.0)?;
        check_range("unsure_from", self.unsure_from, 0.0, self.threshold)?;
        if self.unsure_recheck_ms != 0 {
            check_range("unsure_recheck_ms", self.unsure_recheck_ms, 50, 2000)?;
        }
        check_range(
            "max_silence_ms",
            self.max_silence_ms,
            self.first_check_ms.max(300),
            10_000,
        )
    }
}

impl Section for EndpointConfig {
    const DOC: &'static str =
        "When the user has finished. \"smart\": Smart Turn (a small model that \
         hears whether a sentence is complete) is asked at each pause, so a finished \
         question is answered after a short pause and a pause inside a sentence is \
         waited through. \"silence\": a fixed silence, vad.end_silence_ms, ends the \
         turn. Hark uses the silence rule, and says so, when the Smart Turn model is \
         not installed.";
    const KEYS: &'static [KeyDoc] = &[
        doc("detector", "\"smart\" or \"silence\"."),
        doc(
            "first_check_ms",
            "Silence after speech before Smart Turn is first asked, in ms. 30 to 2000.",
        ),
        doc(
            "check_every_ms",
            "While the sentence sounds unfinished, Smart Turn is asked again this often \
             as the silence grows, in ms, 50 to 2000; 0 asks once per pause. Keep it \
             longer than people pause inside a sentence: the model takes a longer \
             silence as a sign of a finished turn whatever the words (\"ask not\" is \
             unfinished after 160 ms of silence, finished after 400).",
        ),
        doc(
            "threshold",
            "How sure Smart Turn must be that the turn is complete. 0.0 to 1.0.",
        ),
        doc(
            "unsure_from",
            "Smart Turn is unsure from this probability up to threshold. 0.0 to \
             threshold.",
        ),
        doc(
            "unsure_recheck_ms",
            "When Smart Turn is unsure at a pause's first check but the words read \
             as a finished sentence of three words or more (read_words), it is asked again this much later rather than after \
             check_every_ms, once per pause, in ms; 50 to 2000, 0: never. (Smart Turn often \
             scores a finished question from a flat or synthetic voice 0.1 to 0.5 after a \
             short silence and above 0.9 after a longer one; a real pause inside a \
             sentence usually scores below 0.1.)",
        ),
        doc(
            "max_silence_ms",
            "A silence this long ends the turn whatever Smart Turn says, in ms. 300 to 10000.",
        ),
        doc(
            "read_words",
            "Also read the words: when Smart Turn first calls a pause the end but the \
             transcript so far stops where a request cannot (\"the\", \"and\", \"tell \
             me\", \"I'd like to know\", a trailing comma), keep listening; Smart Turn's \
             next check or max_silence_ms ends it if nothing follows. true or false.",
        ),
        doc(
            "prepare_replies",
            "Start the model (and the first words of the voice) on what was said as soon \
             as the user pauses, so the answer is ready when the turn is judged over; \
             dropped unheard if the user goes on. Costs CPU on pauses that were not the \
             end. Not with a model that calls tools (an OpenAI-compatible server): a \
             tool's effect could not be taken back. true or false.",
        ),
    ];
}
