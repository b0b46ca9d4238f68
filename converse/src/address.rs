//! Was it said to Hark? In `mode = "name"` an utterance is for Hark when
//! it begins with (or, configured, contains) one of its names, as Whisper
//! writes them: a short name comes back in many spellings, so each word
//! of a name also matches the spellings tiny.en was heard to use for it.
//!
//! [`HEARD_AS`] is measured, not guessed: "Hark, what time is it?", "Hey
//! Hark, tell me a joke.", "Hark what is the weather like" and "Hey Hark
//! what is two plus two" said by six espeak-ng voices (en-us, en-gb,
//! en-gb-x-rp, en-scottish, en-us+f3, en-us+m7) and Piper's joe, through
//! Whisper tiny.en: "Hark" came back as hark (13 of 28), heart (5), hart
//! (2), hard (2), a name fused with the next word ("Heartwatt"), "a-hark",
//! or dropped (2, unrecoverable); "hey" as hey, a, stay. Said alone
//! before a pause ("Hark, … what is"), Piper's "Hark" came back as "Arc.".

use hark_config::{check_range, doc, InvalidValue, KeyDoc, Section, Settings};
use serde::{Deserialize, Serialize};

/// The `[wake]` section: when Hark is spoken to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WakeConfig {
    /// What Hark answers to in `mode = "name"`.
    pub names: Vec<String>,
    /// A name anywhere in the utterance counts, not only at its start.
    pub anywhere: bool,
    /// After each reply, this long to speak again without the name.
    pub follow_up_ms: u64,
    /// `mode = "wake"`: the openWakeWord model (`hark models fetch
    /// wake-hey-jarvis` installs "hey_jarvis").
    pub wake_word: String,
    /// `mode = "wake"`: the model's score that counts as hearing it.
    pub threshold: f64,
    /// `mode = "always"`: answer everything (`any`) or only what was
    /// likely meant for Hark (`likely`, see [`crate::addressee`]).
    pub addressee: Addressee,
}

/// Which speech Hark answers in `mode = "always"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressee {
    /// Everything it hears (the default).
    #[default]
    Any,
    /// What it judges was meant for it.
    Likely,
}

impl WakeConfig {
    /// What the wake word model listens for, in words ("hey jarvis").
    pub fn wake_phrase(&self) -> String {
        self.wake_word.replace(['_', '-'], " ")
    }
}

impl Default for WakeConfig {
    fn default() -> Self {
        Self {
            names: vec!["Hark".into(), "hey Hark".into()],
            anywhere: false,
            follow_up_ms: 8000,
            wake_word: "hey_jarvis".into(),
            threshold: 0.5,
            addressee: Addressee::Any,
        }
    }
}

impl Settings for WakeConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        if self.names.iter().all(|n| words(n).is_empty()) {
            return Err(InvalidValue::new(
                "names",
                format!("{:?}", self.names),
                "at least one name with a letter in it",
            ));
        }
        check_range("follow_up_ms", self.follow_up_ms, 0, 600_000)?;
        check_range("threshold", self.threshold, 0.01, 0.99)?;
        if self.wake_word.is_empty()
            || !self
                .wake_word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(InvalidValue::new(
                "wake_word",
                format!("{:?}", self.wake_word),
                "an openWakeWord model name such as \"hey_jarvis\"",
            ));
        }
        Ok(())
    }
}

impl Section for WakeConfig {
    const DOC: &'static str = "When Hark is spoken to (daemon.mode = \"name\" or \"wake\").";
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "names",
            "What Hark answers to: an utterance that begins with one of these is for \
             Hark, and the name is taken off before the words are answered. Whisper's \
             usual misspellings of \"Hark\" (heart, hart, …) count too.",
        ),
        doc(
            "anywhere",
            "A name anywhere in the utterance counts, not only at its start. true or false.",
        ),
        doc(
            "wake_word",
            "mode = \"wake\": the openWakeWord model listened for (hey_jarvis, alexa, \
             hey_mycroft). Its models are licensed CC BY-NC-SA 4.0 (non-commercial): \
             `hark models fetch wake-hey-jarvis` shows the licence and installs them.",
        ),
        doc(
            "threshold",
            "mode = \"wake\": the wake word model's score (0.01 to 0.99) that counts \
             as hearing it; lower hears it more readily, and more falsely.",
        ),
        doc(
            "addressee",
            "mode = \"always\": \"any\" answers everything heard; \"likely\" only \
             what was likely meant for Hark: its name, what follows a reply, and \
             questions and requests, but not narration, statements, talk about \
             others, or speech much quieter than the user's.",
        ),
        doc(
            "follow_up_ms",
            "After each reply, this long (ms) to go on talking without the name. \
             0 to 600000.",
        ),
    ];
}

/// Spellings Whisper tiny.en was heard to write for each word of the
/// default names (see the module's note).
pub const HEARD_AS: &[(&str, &[&str])] = &[
    (
        "hark",
        &[
            "hark", "harc", "harke", "hawk", "heart", "hart", "hard", "arc", "ark",
        ],
    ),
    (
        "hey",
        &["hey", "hi", "hay", "a", "ah", "oh", "okay", "ok", "stay"],
    ),
    // The default wake word's (openWakeWord's "hey jarvis").
    ("jarvis", &["jarvis", "jervis", "javis", "jarvas", "travis"]),
];

/// A word and where it is in the text (byte range).
pub(crate) struct Word {
    pub(crate) text: String,
    end: usize,
}

/// The words of `text`, lower case, split at anything but letters,
/// digits and apostrophes.
pub(crate) fn words(text: &str) -> Vec<Word> {
    let mut found = Vec::new();
    let mut current = String::new();
    for (at, c) in text.char_indices() {
        if c.is_alphanumeric() || c == '\'' {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            found.push(Word {
                text: std::mem::take(&mut current),
                end: at,
            });
        }
    }
    if !current.is_empty() {
        found.push(Word {
            text: current,
            end: text.len(),
        });
    }
    found
}

/// Whether `heard` may be Whisper's spelling of the name word `word`
/// (both lower case). A name fused with the word after it ("heartwatt"
/// for "Hark, what") counts.
fn sounds_like(word: &str, heard: &str) -> bool {
    let spellings = HEARD_AS
        .iter()
        .find(|(w, _)| *w == word)
        .map_or(&[][..], |(_, s)| *s);
    heard == word
        || spellings.contains(&heard)
        || (word.len() >= 4
            && spellings
                .iter()
                .chain(std::iter::once(&word))
                .any(|s| s.len() >= 4 && heard.len() >= s.len() + 3 && heard.starts_with(s)))
}

/// What was said to Hark in `text`: the words after its name, or `None`
/// when no name of `config`'s is there.
pub fn addressed(config: &WakeConfig, text: &str) -> Option<String> {
    let (before, rest) = split_at_name(config, text, config.anywhere)?;
    Some(
        [before, rest]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The words after the first of `config`'s names anywhere in `text` (a
/// wake phrase ends what went before it); `None` when none is there.
pub fn after_name(config: &WakeConfig, text: &str) -> Option<String> {
    split_at_name(config, text, true).map(|(_, rest)| rest.to_owned())
}

/// Words Whisper writes for a breath or a hesitation before a name.
const ONSET_WORDS: &[&str] = &["a", "uh", "um", "oh", "ah", "er", "hmm"];

/// `text` before and after the first name found (at its start only, after
/// any [`ONSET_WORDS`], unless `anywhere`), trimmed of the punctuation
/// around the name.
fn split_at_name<'t>(
    config: &WakeConfig,
    text: &'t str,
    anywhere: bool,
) -> Option<(&'t str, &'t str)> {
    let heard = words(text);
    let mut names: Vec<Vec<String>> = config
        .names
        .iter()
        .map(|n| words(n).into_iter().map(|w| w.text).collect::<Vec<_>>())
        .filter(|n| !n.is_empty())
        .collect();
    // "hey hark" before "hark", so "hey" is not left in the words.
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    // Said first, the name may still follow what Whisper writes for a
    // breath or a hesitation ("A computer, what time is it?").
    let onset = heard
        .iter()
        .take_while(|w| ONSET_WORDS.contains(&w.text.as_str()))
        .count();
    let starts = if anywhere { heard.len() } else { onset + 1 };
    for start in 0..starts.min(heard.len()) {
        for name in &names {
            let Some(slice) = heard.get(start..start + name.len()) else {
                continue;
            };
            if name.iter().zip(slice).all(|(w, h)| sounds_like(w, &h.text)) {
                let end = slice.last().expect("a name has a word").end;
                let rest = text[end..].trim_start_matches(|c: char| {
                    c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | '-')
                });
                let before = if start == 0 || !anywhere {
                    ""
                } else {
                    text[..heard_start(text, &heard, start)].trim_end()
                };
                return Some((before, rest));
            }
        }
    }
    None
}

/// Where word `index` of `heard` begins in `text`.
fn heard_start(text: &str, heard: &[Word], index: usize) -> usize {
    let previous_end = if index == 0 { 0 } else { heard[index - 1].end };
    text[previous_end..]
        .char_indices()
        .find(|(_, c)| c.is_alphanumeric() || *c == '\'')
        .map_or(text.len(), |(at, _)| previous_end + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_as_whisper_writes_it_is_taken_off_what_is_answered() {
        let config = WakeConfig::default();
        for (heard, said) in [
            ("Hark, what time is it?", "what time is it?"),
            ("Hey Hark, tell me a joke.", "tell me a joke."),
            ("Hey, Hark, tell me I'll joke.", "tell me I'll joke."),
            (
                "Heart What is the weather like?",
                "What is the weather like?",
            ),
            ("Hey Hart, tell me a joke.", "tell me a joke."),
            ("Hard, what time is it?", "what time is it?"),
            ("A-hark what is 2 plus 2?", "what is 2 plus 2?"),
            ("Hey Heartwatt is 2 plus 2!", "is 2 plus 2!"),
            ("Hark.", ""),
            ("Arc.", ""),
            ("Um, Hark, what time is it?", "what time is it?"),
        ] {
            assert_eq!(addressed(&config, heard).as_deref(), Some(said), "{heard}");
        }
        let computer = WakeConfig {
            names: vec!["Computer".into()],
            ..WakeConfig::default()
        };
        assert_eq!(
            addressed(&computer, "A computer, what time is it?").as_deref(),
            Some("what time is it?")
        );
    }

    #[test]
    fn speech_without_the_name_is_not_for_hark() {
        let config = WakeConfig::default();
        for heard in [
            "What time is it?",
            "The heart is a muscle.",
            "I told him, hark, the herald angels sing.",
            "Hardly anyone came.",
            "",
        ] {
            assert_eq!(addressed(&config, heard), None, "{heard}");
        }
        let anywhere = WakeConfig {
            anywhere: true,
            ..WakeConfig::default()
        };
        assert_eq!(
            addressed(&anywhere, "What time is it, Hark?").as_deref(),
            Some("What time is it,")
        );
    }

    #[test]
    fn what_follows_a_wake_phrase_is_what_was_asked() {
        let phrase = WakeConfig {
            names: vec!["hey jarvis".into()],
            ..WakeConfig::default()
        };
        assert_eq!(
            after_name(&phrase, "she walked on. Hey Jarvis, what time is it?").as_deref(),
            Some("what time is it?")
        );
        assert_eq!(after_name(&phrase, "Hey Jervis.").as_deref(), Some(""));
        assert_eq!(after_name(&phrase, "What time is it?"), None);
    }

    #[test]
    fn other_names_are_matched_as_written() {
        let config = WakeConfig {
            names: vec!["Computer".into()],
            ..WakeConfig::default()
        };
        assert_eq!(
            addressed(&config, "Computer, lights on").as_deref(),
            Some("lights on")
        );
        assert_eq!(addressed(&config, "Hark, lights on"), None);
        assert!(WakeConfig {
            names: vec![" ".into()],
            ..config
        }
        .validate()
        .is_err());
    }
}
