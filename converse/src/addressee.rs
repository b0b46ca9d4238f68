//! Was it meant for Hark? In `mode = "always"` with `[wake] addressee =
//! "likely"`, an utterance without Hark's name is judged from what can be
//! known cheaply, before any model runs on it:
//!
//! 1. it follows a Hark reply (within `follow_up_ms`): for Hark;
//! 2. it is much quieter than the user's recent speech to Hark (a radio
//!    across the room, someone in the next room): not for Hark;
//! 3. the words: a request or a question put to someone who can act on it
//!    ("what time is it", "set a timer", "can you …", "I'd like …", a
//!    short sentence Whisper ends with "?") is for Hark; narration,
//!    statements, sentences too long to be a request, and questions about
//!    third persons ("where did she go") are not.
//!
//! Rules rather than a model: the cues are few and their evidence is
//! plain, the rules run in microseconds on every utterance, they can be
//! read and argued with, and there is no labelled corpus of speech to
//! assistants large enough to train a model that would do better. Their
//! known blind spot is a question or request put to another person in the
//! room ("can you pass the salt?"), which only the name, the follow-up
//! window or loudness can tell apart. Whether more than one voice is
//! talking is not judged: telling voices apart needs a speaker model.

use crate::address::{addressed, words, WakeConfig};

/// What Hark knows about one utterance besides its words.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cues {
    /// The utterance began within the follow-up window after a reply.
    pub follows_reply: bool,
    /// How much quieter (dB) it was than the user's recent speech to
    /// Hark; `None` before Hark has heard the user.
    pub quieter_than_user_db: Option<f32>,
}

/// Speech this much quieter than the user's recent speech to Hark is
/// taken for someone (or something) farther away.
pub const FAR_AWAY_DB: f32 = 12.0;

/// Longer than this (in words) is narration or conversation, not a
/// request: requests to assistants are short.
pub const LONGEST_REQUEST_WORDS: usize = 20;

/// Why the judgement came out as it did (for logs and the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Name,
    FollowsReply,
    FarAway,
    Empty,
    TooLong,
    AboutSomeoneElse,
    Question,
    Request,
    Statement,
}

impl Reason {
    /// Whether this reason makes the utterance Hark's.
    pub fn for_hark(self) -> bool {
        matches!(
            self,
            Reason::Name | Reason::FollowsReply | Reason::Question | Reason::Request
        )
    }
}

/// Words that open a question asked for information.
const QUESTION_WORDS: &[&str] = &[
    "what", "what's", "whats", "when", "when's", "where", "where's", "who", "who's", "whom",
    "whose", "why", "which", "how", "how's",
];

/// Auxiliaries that open a yes/no question when a subject follows.
const AUXILIARIES: &[&str] = &[
    "is", "are", "am", "was", "were", "do", "does", "did", "can", "could", "will", "would",
    "should", "shall", "may", "might", "have", "has", "isn't", "aren't", "don't", "doesn't",
    "won't", "can't",
];

/// Subjects of a question Hark could answer: its listener, the asker, the
/// world ("is it", "is there", "the …"). Not he, she or they: those are
/// people talked about.
const ANSWERABLE_SUBJECTS: &[&str] = &[
    "you", "i", "we", "it", "there", "this", "that", "the", "a", "my", "your", "our", "today",
    "tomorrow",
];

/// People talked about, not to. Not "her", "they", "them" or "their":
/// Whisper writes them for "how", "the", "there" too often.
const THIRD_PERSONS: &[&str] = &[
    "he", "she", "him", "his", "he's", "she's", "he'd", "she'd", "himself", "herself",
];

/// Verbs that open a command to an assistant.
const COMMAND_VERBS: &[&str] = &[
    "tell",
    "set",
    "play",
    "turn",
    "remind",
    "start",
    "stop",
    "give",
    "find",
    "show",
    "call",
    "open",
    "close",
    "read",
    "add",
    "make",
    "put",
    "pause",
    "resume",
    "cancel",
    "explain",
    "define",
    "translate",
    "convert",
    "calculate",
    "spell",
    "say",
    "repeat",
    "help",
    "wake",
    "lower",
    "raise",
    "dim",
    "switch",
    "search",
    "look",
    "check",
    "list",
    "name",
    "describe",
    "summarize",
    "summarise",
    "recommend",
    "suggest",
    "count",
    "skip",
    "mute",
    "unmute",
    "increase",
    "decrease",
    "go",
    "send",
    "text",
    "email",
    "write",
    "note",
    "schedule",
    "book",
    "order",
    "lock",
    "unlock",
    "navigate",
    "compute",
    "multiply",
    "divide",
];

/// Openers of a request made in the first person or politely.
const REQUEST_OPENERS: &[&[&str]] = &[
    &["please"],
    &["i", "want"],
    &["i", "need"],
    &["i'd", "like"],
    &["i", "would", "like"],
    &["i", "wanna"],
    &["let's"],
    &["let", "me", "know"],
    &["remind", "me"],
    &["hey"],
    &["ok"],
    &["okay"],
];

/// Words Whisper puts before a request that say nothing about it.
const FILLERS: &[&str] = &[
    "um", "uh", "so", "and", "or", "oh", "well", "hmm", "er", "ah",
];

/// Whether `text`, with `cues`, was meant for Hark, and why.
pub fn judge(config: &WakeConfig, text: &str, cues: Cues) -> Reason {
    if addressed(config, text).is_some() {
        return Reason::Name;
    }
    if cues.follows_reply {
        return Reason::FollowsReply;
    }
    if cues
        .quieter_than_user_db
        .is_some_and(|quieter| quieter >= FAR_AWAY_DB)
    {
        return Reason::FarAway;
    }
    let all = without_fillers(text);
    if all.is_empty() {
        return Reason::Empty;
    }
    if all.len() > LONGEST_REQUEST_WORDS {
        return Reason::TooLong;
    }
    // People talked about in the opening words: "where did she go",
    // "he was not an ill-disposed young man".
    if all
        .iter()
        .take(4)
        .any(|w| THIRD_PERSONS.contains(&w.as_str()))
    {
        return Reason::AboutSomeoneElse;
    }
    // Any sentence may carry the request: Whisper mishears a first word
    // ("and milk to the shopping list. Add milk to the") or puts what it
    // heard first in a sentence of its own ("a good name for a cat.
    // What's").
    let openings = text
        .split_inclusive(['.', '!', '?'])
        .filter_map(|sentence| opening(&without_fillers(sentence)));
    if let Some(reason) = openings.min_by_key(|r| *r != Reason::Question) {
        return reason;
    }
    // Whisper writes "?" after a rising question however it opens.
    if text.trim_end().ends_with('?') {
        return Reason::Question;
    }
    Reason::Statement
}

/// The words of `text`, lower case, from the first that is not a filler.
fn without_fillers(text: &str) -> Vec<String> {
    let all: Vec<String> = words(text).into_iter().map(|w| w.text).collect();
    let start = all
        .iter()
        .position(|w| !FILLERS.contains(&w.as_str()))
        .unwrap_or(all.len());
    all[start..].to_vec()
}

/// Whether a sentence opens as a question or a request.
fn opening(said: &[String]) -> Option<Reason> {
    let first = said.first()?.as_str();
    let second = said.get(1).map(String::as_str);
    if QUESTION_WORDS.contains(&first)
        || (AUXILIARIES.contains(&first)
            && second.is_some_and(|s| ANSWERABLE_SUBJECTS.contains(&s)))
    {
        return Some(Reason::Question);
    }
    let opens_with = |opener: &[&str]| {
        said.len() >= opener.len() && said.iter().zip(opener).all(|(w, o)| w == o)
    };
    (COMMAND_VERBS.contains(&first)
        || REQUEST_OPENERS.iter().any(|o| opens_with(o))
        || clipped_command_verb(first))
    .then_some(Reason::Request)
}

/// Letters Whisper may drop from the end of a command verb that opens a
/// sentence: the unstressed ending of the first word, said quickly or in
/// an accent, is what it loses most ("Star-to-Timeer from the pasta" for
/// "Start a timer for the pasta", "Low on a temperature" for "Lower the
/// temperature").
const CLIPPED_LETTERS: usize = 2;

/// Words that look like a clipped command verb but open statements far
/// more often ("Not a sound was heard", not "note").
const NOT_CLIPPED: &[&str] = &["not"];

/// Whether `word` is a command verb of four letters or more with its last
/// one or two letters missing ("star", "low", "tel", "remin"); at least
/// three letters must remain.
fn clipped_command_verb(word: &str) -> bool {
    let letters = word.chars().count();
    letters >= 3
        && !NOT_CLIPPED.contains(&word)
        && COMMAND_VERBS.iter().any(|verb| {
            let missing = verb.chars().count().saturating_sub(letters);
            verb.len() >= 4 && (1..=CLIPPED_LETTERS).contains(&missing) && verb.starts_with(word)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold(text: &str) -> Reason {
        judge(&WakeConfig::default(), text, Cues::default())
    }

    #[test]
    fn requests_and_questions_are_for_hark() {
        for (text, reason) in [
            ("What time is it?", Reason::Question),
            ("Um, what's the weather like tomorrow?", Reason::Question),
            ("Is it going to rain today?", Reason::Question),
            ("Can you explain how a rainbow forms?", Reason::Question),
            ("Set a timer for ten minutes.", Reason::Request),
            ("Please turn up the volume.", Reason::Request),
            ("I'd like to hear a story.", Reason::Request),
            (
                "and milk to the shopping list. Add milk to the",
                Reason::Request,
            ),
            ("a good name for a cat. What's", Reason::Question),
            ("Twenty three times seventeen?", Reason::Question),
            // A command verb with its ending lost.
            ("Star-to-Timeer from the pasta.", Reason::Request),
            ("Low on a temperature in the living room.", Reason::Request),
            ("Hark, the herald angels sing.", Reason::Name),
        ] {
            assert_eq!(cold(text), reason, "{text}");
            assert!(reason.for_hark());
        }
    }

    #[test]
    fn narration_statements_and_talk_about_others_are_not() {
        for (text, reason) in [
            ("He was not an ill-disposed young man.", Reason::AboutSomeoneElse),
            ("Where did she put the keys?", Reason::AboutSomeoneElse),
            ("The dishwasher is still running.", Reason::Statement),
            ("Had he married a more amiable woman, he might have been made still more respectable than he was.", Reason::AboutSomeoneElse),
            (
                "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
                Reason::Statement,
            ),
            (
                "What the family had lost in the years of the war was never spoken of again by any of them, not even at Christmas.",
                Reason::TooLong,
            ),
            ("Ten of clubs.", Reason::Statement),
            ("Not a sound was heard in the house.", Reason::Statement),
            ("", Reason::Empty),
        ] {
            assert_eq!(cold(text), reason, "{text}");
            assert!(!reason.for_hark());
        }
    }

    #[test]
    fn a_reply_loudness_and_the_name_outweigh_the_words() {
        let config = WakeConfig::default();
        let after_reply = Cues {
            follows_reply: true,
            ..Cues::default()
        };
        assert_eq!(
            judge(&config, "The one with the red cover.", after_reply),
            Reason::FollowsReply
        );
        let across_the_room = Cues {
            quieter_than_user_db: Some(18.0),
            ..Cues::default()
        };
        assert_eq!(
            judge(&config, "What time is it?", across_the_room),
            Reason::FarAway
        );
        assert_eq!(
            judge(&config, "Hark, what time is it?", across_the_room),
            Reason::Name
        );
        let near = Cues {
            quieter_than_user_db: Some(3.0),
            ..Cues::default()
        };
        assert_eq!(judge(&config, "What time is it?", near), Reason::Question);
    }
}
