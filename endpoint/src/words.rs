//! What the words say about the end of a turn.
//!
//! Smart Turn hears prosody, and a pause after "I'd like to know" can sound
//! final, above all in a synthetic or flat voice. The transcript of the
//! speech so far is there before the turn is ended (Hark transcribes every
//! pause on speculation), and some endings cannot close an English request:
//! a word that needs something after it ("the", "of", "and", "is") or a
//! phrase that announces what comes next ("tell me", "I'd like to know").
//! Such a turn is unfinished whatever the voice sounded like.
//!
//! The rule only ever makes Hark wait: a finished question that happens to
//! end this way is answered when Smart Turn is asked again, later in the
//! silence (see `[turn] check_every_ms`), or at `max_silence_ms`.

/// Words that cannot end a request: articles, possessives, most
/// prepositions, conjunctions, hesitations.
/// (Words a question may end on, "Where are you from?", "What is it
/// about?", "Do you know where it is?", are left out.)
const DANGLING_WORDS: &[&str] = &[
    "a", "an", "the", "my", "your", "our", "their", "of", "to", "for", "with", "into", "by", "and",
    "or", "but", "because", "if", "than", "whether", "although", "um", "uh", "er", "erm",
];

/// Endings that announce what comes next: the words after them are the
/// question.
const ANNOUNCING_ENDINGS: &[&[&str]] = &[
    &["tell", "me"],
    &["tell", "us"],
    &["like", "to", "know"],
    &["want", "to", "know"],
    &["wanted", "to", "know"],
    &["need", "to", "know"],
    &["wondering"],
    &["wonder"],
    &["know", "is"],
    &["question", "is"],
    &["remind", "me"],
    &["show", "me"],
];

/// The fewest words that can vouch for a finished request on their own.
/// One or two words before a pause are as often the start of a sentence
/// ("Ask not …", "So …") or Whisper's guess at a fragment ("s dot") as a
/// whole request ("Stop.", "Thank you.").
const FEWEST_VOUCHING_WORDS: usize = 3;

/// What the words before a pause say about the end of the turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// They stop where a request cannot ([`sounds_unfinished`]).
    Unfinished,
    /// They could end a request but are too few to vouch for it.
    Fragment,
    /// A sentence that could end here.
    Finished,
}

/// Reads `transcript` (Whisper's text of the speech so far).
pub fn read(transcript: &str) -> Reading {
    if sounds_unfinished(transcript) {
        Reading::Unfinished
    } else if transcript.split_whitespace().count() < FEWEST_VOUCHING_WORDS {
        Reading::Fragment
    } else {
        Reading::Finished
    }
}

/// Whether `transcript` (Whisper's text of the speech so far) stops where
/// a sentence cannot: on a dangling word, an announcing phrase, or a comma,
/// dash or ellipsis.
pub fn sounds_unfinished(transcript: &str) -> bool {
    let text = transcript.trim();
    if text.ends_with(',')
        || text.ends_with("...")
        || text.ends_with('…')
        || text.ends_with('-')
        || text.ends_with('—')
    {
        return true;
    }
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let Some(last) = words.last() else {
        return false;
    };
    let ends_with = |ending: &[&str]| {
        words.len() >= ending.len()
            && words[words.len() - ending.len()..]
                .iter()
                .zip(ending)
                .all(|(word, end)| word == end)
    };
    DANGLING_WORDS.contains(&last.as_str()) || ANNOUNCING_ENDINGS.iter().any(|e| ends_with(e))
}

#[cfg(test)]
mod tests {
    use super::{read, sounds_unfinished, Reading};

    #[test]
    fn requests_cut_at_a_pause_read_unfinished() {
        for text in [
            "I'd like to know.",
            "Can you tell me?",
            "What I want to know is",
            "Tell me.",
            "What is the",
            "Play something by",
            "Turn on the lights and",
            "So,",
            "Um...",
            "I was wondering",
        ] {
            assert!(sounds_unfinished(text), "{text:?} should read unfinished");
        }
    }

    #[test]
    fn finished_requests_read_finished() {
        for text in [
            "What is the capital of Spain?",
            "Tell me a joke.",
            "I don't know.",
            "What do bees make?",
            "Stop.",
            "Where are you from?",
            "Do you know where the station is?",
            "Turn it on.",
            "I think so.",
            "Can you explain?",
            "Explain how a rainbow forms.",
            "What time is it?",
            "",
            "   ",
        ] {
            assert!(!sounds_unfinished(text), "{text:?} should read finished");
        }
    }

    #[test]
    fn one_or_two_finished_words_are_a_fragment() {
        assert_eq!(read("s dot"), Reading::Fragment);
        assert_eq!(read("Stop."), Reading::Fragment);
        assert_eq!(read("Tell me"), Reading::Unfinished);
        assert_eq!(read(""), Reading::Fragment);
        assert_eq!(read("What do bees make?"), Reading::Finished);
    }
}
