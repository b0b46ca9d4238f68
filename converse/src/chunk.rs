//! Cutting a streamed reply into clauses that a TTS can speak one by one.
//!
//! Speech can start as soon as the first clause is complete, so the first
//! clause is cut early and later ones are cut at natural breaks:
//!
//! ```text
//!  tokens ─► clean (drop * # ` and emoji, fold whitespace) ─► buffer
//!                                                               │
//!     ┌─────────────────────────────────────────────────────────┘
//!     ▼  first clause                      later clauses
//!   . ! ? … or a line break          . ! ? … or a line break
//!   , ; : once it has ≥ 3 words       , ; : once it is > 80 chars
//!   a word boundary at ~32 chars     a word boundary at ~200 chars
//! ```
//!
//! A punctuation mark only ends a clause once the character after it (past
//! closing quotes and brackets) is known to be whitespace, so "3.5" and
//! "1,000" are never split even when the tokens arrive as "3." and "5".
//! A full stop after an abbreviation ("Dr.", "e.g.", "U.S.", an initial such
//! as "J.") does not end a sentence. A piece with no letters ("1." of a
//! numbered list) is never cut off on its own.

use serde::{Deserialize, Serialize};

use crate::speakable::Speakable;

/// Where the splitter may cut. Character counts are Unicode scalar values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkConfig {
    /// The first clause may end at a comma, semicolon or colon once it has
    /// at least this many words.
    pub first_min_words: usize,
    /// With no punctuation in sight, the first clause ends at the last word
    /// boundary before this many characters.
    pub first_max_chars: usize,
    /// Later clauses end at a comma, semicolon or colon only once they are
    /// longer than this (short clauses sound choppy).
    pub long_clause_chars: usize,
    /// With no punctuation in sight, later clauses end at the last word
    /// boundary before this many characters (bounds TTS latency). The second
    /// clause, synthesized while the first plays, is bounded at four times
    /// `first_max_chars`; later ones at this.
    pub max_chars: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            first_min_words: 3,
            // Three or four words: about 100 ms of tokens and of synthesis
            // before Hark's voice starts; the next, longer clause is
            // synthesized while these words play.
            first_max_chars: 20,
            long_clause_chars: 80,
            max_chars: 200,
        }
    }
}

/// Accumulates streamed text and hands out complete clauses.
#[derive(Debug, Clone)]
pub struct ClauseSplitter {
    config: ChunkConfig,
    /// Turns what the model writes into what is said, before cutting.
    speakable: Speakable,
    /// Cleaned text not yet handed out; never starts with whitespace and
    /// never holds two whitespace characters in a row.
    pending: String,
    clauses_cut: usize,
}

impl ClauseSplitter {
    pub fn new(config: ChunkConfig) -> Self {
        Self {
            config,
            speakable: Speakable::new(),
            pending: String::new(),
            clauses_cut: 0,
        }
    }

    /// Splits a whole text at once: every clause [`push`](Self::push) and
    /// [`finish`](Self::finish) would produce.
    pub fn split(config: ChunkConfig, text: &str) -> Vec<String> {
        let mut splitter = Self::new(config);
        let mut clauses = splitter.push(text);
        clauses.extend(splitter.finish());
        clauses
    }

    /// Clauses complete in `pending`.
    fn cut(&mut self) -> Vec<String> {
        let mut clauses = Vec::new();
        while let Some(end) = self.find_cut() {
            let rest = self.pending.split_off(end);
            let clause = std::mem::replace(&mut self.pending, rest.trim_start().to_owned());
            clauses.push(tidy(&clause));
            self.clauses_cut += 1;
        }
        clauses
    }

    /// Adds streamed text; returns the clauses it completed, in order.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        let spoken = self.speakable.push(text);
        for c in spoken.chars() {
            self.append(c);
        }
        self.cut()
    }

    /// Ends the stream: returns the clauses left (those with anything to
    /// say) and resets the splitter for the next reply.
    pub fn finish(&mut self) -> Vec<String> {
        let spoken = self.speakable.finish();
        for c in spoken.chars() {
            self.append(c);
        }
        let mut clauses = self.cut();
        let rest = tidy(&std::mem::take(&mut self.pending));
        self.clauses_cut = 0;
        if rest.chars().any(char::is_alphanumeric) {
            clauses.push(rest);
        }
        clauses.retain(|c| c.chars().any(char::is_alphanumeric));
        clauses
    }

    fn append(&mut self, c: char) {
        if !c.is_whitespace() {
            // No space before punctuation ("news !" from a dropped emoji).
            if matches!(c, ',' | '.' | '!' | '?' | ';' | ':') && self.pending.ends_with(' ') {
                self.pending.pop();
            }
            self.pending.push(c);
            return;
        }
        // Line breaks end clauses (list items, paragraphs); keep them, but
        // fold every other run of whitespace into one space.
        let c = if c == '\n' { '\n' } else { ' ' };
        match self.pending.chars().last() {
            None => {}
            Some(last) if last.is_whitespace() && c == '\n' => {
                self.pending.pop();
                self.pending.push('\n');
            }
            Some(last) if last.is_whitespace() => {}
            Some(_) => self.pending.push(c),
        }
    }

    /// Byte index where the first complete clause in `pending` ends.
    fn find_cut(&self) -> Option<usize> {
        let text = &self.pending;
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let first = self.clauses_cut == 0;

        for (k, &(i, c)) in chars.iter().enumerate() {
            if c == '\n' {
                if has_letter(&text[..i]) {
                    return Some(i);
                }
                continue;
            }
            let sentence_end = matches!(c, '.' | '!' | '?' | '…');
            let pause = matches!(c, ',' | ';' | ':');
            if !sentence_end && !pause {
                continue;
            }
            let mut j = k + 1;
            while j < chars.len() && is_closer(chars[j].1) {
                j += 1;
            }
            let Some(&(end, next)) = chars.get(j) else {
                // Undecided until the next character arrives ("3." → "3.5").
                return None;
            };
            if !next.is_whitespace() || !has_letter(&text[..end]) {
                continue;
            }
            if sentence_end {
                if c == '.' && is_abbreviation(word_before(&text[..i])) {
                    continue;
                }
                return Some(end);
            }
            let long_enough = if first {
                text[..i].split_whitespace().count() >= self.config.first_min_words
            } else {
                false
            };
            if long_enough || text[..i].chars().count() > self.config.long_clause_chars {
                return Some(end);
            }
        }

        // The voice starts on a few words, then gets ahead: the second
        // clause is synthesized while the first plays.
        let cap = match self.clauses_cut {
            0 => self.config.first_max_chars,
            1 => (self.config.first_max_chars * 4)
                .clamp(self.config.first_max_chars, self.config.max_chars),
            _ => self.config.max_chars,
        };
        if chars.len() <= cap {
            return None;
        }
        // Cut at the last whitespace within the cap: the word before it is
        // complete, whereas the buffer's end may be mid-word.
        chars[..=cap]
            .iter()
            .rev()
            .find(|&&(i, c)| c.is_whitespace() && has_letter(&text[..i]))
            .map(|&(i, _)| i)
    }
}

/// Words whose full stop does not end a sentence (lowercase, no final dot).
/// Dotted initialisms ("e.g", "U.S") and single capitals are recognised
/// separately.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "approx", "cf", "fig", "dept",
    "est",
];

fn is_abbreviation(word: &str) -> bool {
    if ABBREVIATIONS.contains(&word.to_lowercase().as_str()) {
        return true;
    }
    let mut letters = word.chars();
    if let (Some(only), None) = (letters.next(), letters.next()) {
        return only.is_uppercase();
    }
    word.contains('.')
        && word.split('.').all(|part| {
            let mut cs = part.chars();
            matches!((cs.next(), cs.next()), (Some(c), None) if c.is_alphabetic())
        })
}

/// The word directly before byte `end` of a clause, without opening quotes
/// or brackets.
fn word_before(text: &str) -> &str {
    let word = text.rsplit(char::is_whitespace).next().unwrap_or("");
    word.trim_start_matches(['(', '[', '"', '\'', '“', '‘', '«'])
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '”' | '’' | '»' | '.' | '!' | '?' | '…'
    )
}

fn has_letter(text: &str) -> bool {
    text.chars().any(char::is_alphabetic)
}

/// Trims a clause and drops a leading list bullet, which a TTS would read
/// out or stumble over.
fn tidy(clause: &str) -> String {
    clause
        .trim()
        .trim_start_matches(['-', '•', '–', '—'])
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        ClauseSplitter::split(ChunkConfig::default(), text)
    }

    /// Feeds `text` one character at a time, as the worst possible tokeniser.
    fn split_streamed_with(config: ChunkConfig, text: &str) -> Vec<String> {
        let mut splitter = ClauseSplitter::new(config);
        let mut clauses = Vec::new();
        for c in text.chars() {
            clauses.extend(splitter.push(&c.to_string()));
        }
        clauses.extend(splitter.finish());
        clauses
    }

    #[test]
    fn cuts_at_sentence_ends() {
        assert_eq!(
            split("It is noon. Shall I set a timer? Done!"),
            ["It is noon.", "Shall I set a timer?", "Done!"]
        );
    }

    #[test]
    fn first_clause_cuts_early_at_a_comma_only_with_enough_words() {
        assert_eq!(
            split("Well, the capital of France, as you know, is Paris."),
            ["Well, the capital of France,", "as you know, is Paris."]
        );
    }

    #[test]
    fn later_clauses_cut_at_commas_only_when_long() {
        let long = "The second sentence goes on for quite a while about many different and \
                    unrelated things, and then it finally ends.";
        let clauses = split(&format!("First one. {long}"));
        assert_eq!(
            clauses,
            [
                "First one.",
                "The second sentence goes on for quite a while about many different and unrelated things,",
                "and then it finally ends."
            ]
        );
        assert_eq!(
            split("First one. Then, briefly, this."),
            ["First one.", "Then, briefly, this."]
        );
    }

    #[test]
    fn never_cuts_inside_numbers() {
        assert_eq!(
            split("It costs 3.5 euros, or 1,000 cents. Yes."),
            ["It costs 3 point 5 euros,", "or 1000 cents.", "Yes."]
        );
        // The decimal point arrives at the end of a token.
        let mut splitter = ClauseSplitter::new(ChunkConfig {
            first_max_chars: 40,
            ..ChunkConfig::default()
        });
        assert!(splitter.push("Pi is about 3.").is_empty());
        assert!(splitter.push("14 really").is_empty());
        assert_eq!(splitter.finish(), ["Pi is about 3 point 14 really"]);
    }

    #[test]
    fn never_cuts_after_abbreviations() {
        assert_eq!(
            split("Ask Dr. Smith about fruit, e.g. apples. Then J. R. R. Tolkien in the U.S. now."),
            [
                "Ask Doctor Smith about fruit,",
                "for example apples.",
                "Then J. R. R. Tolkien in the U.S. now."
            ]
        );
    }

    #[test]
    fn keeps_closing_quotes_and_stacked_marks_with_the_sentence() {
        assert_eq!(
            split("He said \"stop.\" Really?! Wait... what."),
            ["He said \"stop.\"", "Really?!", "Wait...", "what."]
        );
    }

    #[test]
    fn streaming_character_by_character_gives_the_same_clauses() {
        let text = "Sure, here is the plan: first, we buy 2.5 kg of flour, e.g. from Dr. Oetker. \
                    Then we bake it, which takes a long time, roughly forty minutes at two hundred \
                    degrees, and finally we eat it!\n- Enjoy it";
        let expected = [
            "Sure, here is the plan:",
            "first, we buy 2 point 5 kg of flour, for example from Doctor Oetker.",
            "Then we bake it, which takes a long time, roughly forty minutes at two hundred degrees,",
            "and finally we eat it!",
            "Enjoy it.",
        ];
        // A first clause long enough to reach the colon, which a whole text
        // shows at once and a stream only later.
        let config = ChunkConfig {
            first_max_chars: 24,
            ..ChunkConfig::default()
        };
        assert_eq!(ClauseSplitter::split(config.clone(), text), expected);
        assert_eq!(split_streamed_with(config, text), expected);
    }

    #[test]
    fn strips_markdown_and_emoji() {
        assert_eq!(
            split("## Result\n**Great** news 🎉👍🏽! Use `ls` ☀️ now."),
            ["Result.", "Great news!", "Use ls now."]
        );
    }

    #[test]
    fn lists_are_read_as_a_sentence_and_their_markers_dropped() {
        assert_eq!(
            split("You need:\n- eggs\n- milk\n1. Mix them.\n2. Bake"),
            ["You need:", "eggs, milk, Mix them.", "Bake."]
        );
    }

    #[test]
    fn first_clause_without_punctuation_is_cut_at_a_word_boundary() {
        let text =
            "so this reply simply never uses any punctuation at all and keeps going on and on";
        let clauses = split(text);
        assert!(clauses[0].chars().count() <= 20, "{clauses:?}");
        assert!(text.starts_with(&clauses[0]));
        assert!(
            text[clauses[0].len()..].starts_with(' '),
            "cut mid-word: {clauses:?}"
        );
        assert_eq!(clauses.join(" "), text);
    }

    #[test]
    fn clauses_without_punctuation_grow_from_a_short_first_one() {
        let text = "so this reply simply never uses any punctuation at all and keeps going on \
                    and on for a long while until the listener has heard quite enough of it \
                    and then some more words that nobody asked for while the kettle slowly \
                    boils in the kitchen next door";
        let lengths: Vec<usize> = split(text).iter().map(|c| c.chars().count()).collect();
        assert!(lengths[0] <= 20, "{lengths:?}");
        assert!(lengths[1] <= 80 && lengths[1] > 20, "{lengths:?}");
        assert!(lengths[2] > 80, "{lengths:?}");
    }

    #[test]
    fn finish_returns_the_remainder_or_nothing() {
        let mut splitter = ClauseSplitter::new(ChunkConfig::default());
        assert_eq!(splitter.push("Hello there. And th"), ["Hello there."]);
        assert_eq!(splitter.finish(), ["And th"]);
        assert!(splitter.finish().is_empty());
        assert!(splitter.push("  ** ... ").is_empty());
        assert!(splitter.finish().is_empty());
        // finish() resets: the next reply's first clause is cut early again.
        assert_eq!(splitter.push("One two three, four"), ["One two three,"]);
    }

    #[test]
    fn whitespace_is_folded() {
        assert_eq!(split("  Lots   of \t space.  "), ["Lots of space."]);
    }
}
