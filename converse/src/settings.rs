//! `[conversation]`: [`TurnConfig`] as a section of Hark's configuration,
//! its range checks and the comment of every key.

use hark_config::{check_range, doc, InvalidValue, KeyDoc, Section, Settings};

use crate::turn::TurnConfig;

impl Settings for TurnConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        let barge_in = &self.barge_in;
        check_range(
            "barge_in.commit_speech_ms",
            barge_in.commit_speech_ms,
            0,
            10_000,
        )?;
        check_range(
            "barge_in.min_speech_ms",
            barge_in.min_speech_ms,
            0,
            barge_in.commit_speech_ms,
        )?;
        check_range(
            "barge_in.pause_after_ms",
            barge_in.pause_after_ms,
            0,
            barge_in.commit_speech_ms,
        )?;
        check_range(
            "barge_in.commit_without_words_ms",
            barge_in.commit_without_words_ms,
            0,
            30_000,
        )?;
        check_range("barge_in.min_words", barge_in.min_words, 1, 20)?;
        check_range(
            "barge_in.echo_overlap_percent",
            barge_in.echo_overlap_percent,
            0,
            101,
        )?;
        let chunking = &self.chunking;
        check_range("chunking.first_min_words", chunking.first_min_words, 1, 50)?;
        check_range("chunking.max_chars", chunking.max_chars, 20, 2_000)?;
        check_range(
            "chunking.first_max_chars",
            chunking.first_max_chars,
            10,
            chunking.max_chars,
        )?;
        check_range(
            "chunking.long_clause_chars",
            chunking.long_clause_chars,
            1,
            chunking.max_chars,
        )
    }
}

impl Section for TurnConfig {
    const DOC: &'static str =
        "Turn-taking. Speech over Hark pauses it after barge_in.pause_after_ms; \
         speech shorter than barge_in.min_speech_ms is noise and Hark resumes; at \
         barge_in.commit_speech_ms (once its words show) Hark stops for good. Speech that ends in \
         between is transcribed: barge_in.min_words or more words that are not \
         all backchannels interrupt, anything else resumes.";
    const TABLES: &'static [(&'static str, &'static str)] = &[
        ("barge_in", "When speech over Hark interrupts it."),
        (
            "chunking",
            "How replies are cut into clauses for speech. Character counts are \
             Unicode characters.",
        ),
    ];
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "fallback_reply",
            "Said when the model writes nothing speakable; \"\" for silence.",
        ),
        doc(
            "barge_in.enabled",
            "Whether speech over Hark can interrupt it at all. true or false.",
        ),
        doc(
            "barge_in.pause_after_ms",
            "Speech over Hark this long pauses playback until it is judged; 0 pauses \
             as soon as the VAD confirms speech. 0 to commit_speech_ms.",
        ),
        doc(
            "barge_in.min_speech_ms",
            "Shorter speech over Hark is noise: not transcribed, and Hark resumes. \
             0 to commit_speech_ms.",
        ),
        doc(
            "barge_in.commit_speech_ms",
            "Speech over Hark sustained this long interrupts it without waiting for \
             its end, once a partial transcript of it has a word that is not a \
             backchannel. 0 to 10000.",
        ),
        doc(
            "barge_in.commit_without_words_ms",
            "Sustained speech over Hark with no such word yet (a long noise, or \
             stt.partial_every_ms = 0) interrupts only at this length; at most \
             commit_speech_ms: words are not needed. 0 to 30000.",
        ),
        doc(
            "barge_in.min_words",
            "Shorter speech interrupts only with at least this many words that are \
             not all backchannels. 1 to 20.",
        ),
        doc(
            "barge_in.echo_overlap_percent",
            "A transcript with at least this percentage of its words taken from \
             Hark's own reply is Hark's echo, not the user. 0 to 100; 101 turns \
             the check off.",
        ),
        doc(
            "barge_in.backchannels",
            "Words and phrases that acknowledge rather than interrupt (compared \
             ignoring case and punctuation).",
        ),
        doc(
            "chunking.first_min_words",
            "The first clause may end at a comma, semicolon or colon once it has this \
             many words, so speech starts early. 1 to 50.",
        ),
        doc(
            "chunking.first_max_chars",
            "With no punctuation in sight the first clause ends at a word boundary \
             before this many characters (a few words, so the voice starts early); \
             the second before four times as many (at most max_chars). 10 to max_chars.",
        ),
        doc(
            "chunking.long_clause_chars",
            "Later clauses end at a comma, semicolon or colon only past this many \
             characters (short clauses sound choppy). 1 to max_chars.",
        ),
        doc(
            "chunking.max_chars",
            "With no punctuation in sight the third and later clauses end at a word \
             boundary before this many characters. 20 to 2000.",
        ),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bounds_follow_each_other() {
        TurnConfig::default().validate().unwrap();
        let mut config = TurnConfig::default();
        config.barge_in.min_speech_ms = 1500;
        let e = config.validate().unwrap_err();
        assert_eq!(e.key, "barge_in.min_speech_ms");
        assert_eq!(e.allowed, "between 0 and 1000");
    }
}
