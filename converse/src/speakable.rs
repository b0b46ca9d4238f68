//! Text fit to be spoken: whatever a model writes, what reaches the voice
//! (and the `ReplyChunk` signal, and the history) is what a person would
//! say aloud.
//!
//! - Markdown: emphasis and inline code marks dropped, headings spoken as a
//!   sentence of their own, code fences (and everything inside) left out,
//!   links read as their text, bullet and numbered lists read as one
//!   sentence ("red, green, blue.").
//! - URLs read as their host ("example.com"), emoji and pictographs
//!   removed.
//! - What Piper (through espeak-ng) says wrong, rewritten: abbreviations
//!   ("e.g." → "for example", "Dr." → "Doctor"), decimals ("3.5" → "3
//!   point 5"), clock times ("10:30" → "10 30"), thousands separators,
//!   units and symbols ("°C" → "degrees Celsius", "km/h", "%", "&", "$5").
//!
//! It streams: text goes in as the model writes it and comes out a word at
//! a time (a word is complete once whitespace follows it), so it delays
//! speech by one word at most.

/// Rewrites streamed text; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Speakable {
    /// The word being written (no whitespace yet after it).
    word: String,
    /// Nothing but whitespace since the last line break (or the start).
    at_line_start: bool,
    /// Inside a ``` code fence.
    in_fence: bool,
    /// The rest of this line says nothing (a fence's language tag).
    skip_line: bool,
    /// This line is a heading.
    heading: bool,
    /// This line has produced words.
    line_has_words: bool,
    list: List,
    /// The last character written (for choosing separators and spaces).
    last: Option<char>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum List {
    #[default]
    None,
    /// On a list item's line.
    InItem,
    /// A list item ended; its separator waits for what comes next.
    AfterItem,
}

/// Abbreviations the voice reads wrong, and what to say instead.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("e.g.", "for example"),
    ("i.e.", "that is"),
    ("etc.", "et cetera"),
    ("vs.", "versus"),
    ("approx.", "approximately"),
    ("Dr.", "Doctor"),
    ("Mr.", "Mister"),
    ("Mrs.", "Missus"),
    ("Ms.", "Miz"),
    ("Prof.", "Professor"),
    ("St.", "Saint"),
    ("Jr.", "Junior"),
    ("Sr.", "Senior"),
    ("a.m.", "A M"),
    ("p.m.", "P M"),
];

/// Units and symbols written after a number (or alone), and their words.
const UNITS: &[(&str, &str)] = &[
    ("°C", " degrees Celsius"),
    ("°F", " degrees Fahrenheit"),
    ("°", " degrees"),
    ("km/h", " kilometers per hour"),
    ("m/s", " meters per second"),
    ("mph", " miles per hour"),
    ("%", " percent"),
];

/// Currency signs written before a number.
const CURRENCIES: &[(char, &str)] = &[('$', "dollars"), ('€', "euros"), ('£', "pounds")];

impl Speakable {
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            ..Self::default()
        }
    }

    /// Takes more text; returns what can be said of it now.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            if c.is_whitespace() {
                let spoke = self.end_word(&mut out);
                if c == '\n' {
                    self.end_line(&mut out);
                } else if spoke {
                    // At once, not with the next word: a clause can be cut
                    // as soon as the space after its last word is seen.
                    out.push(' ');
                    self.last = Some(' ');
                }
            } else {
                self.word.push(c);
            }
        }
        out
    }

    /// The text has ended: returns the rest, and resets for the next.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.end_word(&mut out);
        if matches!(self.list, List::InItem | List::AfterItem) && self.last.is_some() {
            self.separator(&mut out, '.');
        }
        *self = Self::new();
        out
    }

    /// Rewrites a whole text at once.
    pub fn rewrite(text: &str) -> String {
        let mut s = Self::new();
        let mut out = s.push(text);
        out.push_str(&s.finish());
        out.trim_end().to_owned()
    }

    /// Appends a word, with a space before it where one is missing
    /// (punctuation that stands alone joins the word before it).
    fn write(&mut self, out: &mut String, text: &str) {
        let joins = text.starts_with(['.', ',', '!', '?', ';', ':']);
        if !joins && self.last.is_some_and(|c| !c.is_whitespace()) {
            out.push(' ');
        }
        out.push_str(text);
        self.last = text.chars().last();
    }

    /// Ends the sentence or list item with `mark` (',' or '.') unless it
    /// already ends with punctuation.
    fn separator(&mut self, out: &mut String, mark: char) {
        if !matches!(
            self.last,
            Some('.' | '!' | '?' | ',' | ';' | ':' | '\n') | None
        ) {
            out.push(mark);
            self.last = Some(mark);
        }
    }

    /// Ends the word being written; whether it said anything.
    fn end_word(&mut self, out: &mut String) -> bool {
        if self.word.is_empty() {
            return false;
        }
        let word = std::mem::take(&mut self.word);
        if word.starts_with("```") || word.starts_with("~~~") {
            self.in_fence = !self.in_fence;
            self.skip_line = true;
            return false;
        }
        if self.in_fence || self.skip_line {
            return false;
        }
        if self.at_line_start {
            self.at_line_start = false;
            if (1..=6).contains(&word.len()) && word.chars().all(|c| c == '#') {
                self.heading = true;
                return false;
            }
            if is_list_marker(&word) {
                if self.list == List::AfterItem {
                    self.separator(out, ',');
                }
                self.list = List::InItem;
                return false;
            }
            if self.list == List::AfterItem {
                // The list is over: it was one sentence.
                self.separator(out, '.');
                self.list = List::None;
            }
        }
        let spoken = say_word(&word);
        if spoken.is_empty() {
            return false;
        }
        self.line_has_words = true;
        self.write(out, &spoken);
        true
    }

    fn end_line(&mut self, out: &mut String) {
        let had_words = std::mem::take(&mut self.line_has_words);
        self.at_line_start = true;
        if std::mem::take(&mut self.skip_line) || self.in_fence {
            return;
        }
        if self.list == List::InItem {
            if had_words {
                self.list = List::AfterItem;
            }
            return;
        }
        if std::mem::take(&mut self.heading) {
            if had_words {
                self.separator(out, '.');
            }
            return;
        }
        if had_words {
            out.push('\n');
            self.last = Some('\n');
        }
    }
}

/// `-`, `*`, `+`, `•` or `1.` / `1)` at the start of a line.
fn is_list_marker(word: &str) -> bool {
    if matches!(word, "-" | "*" | "+" | "•" | "–") {
        return true;
    }
    let digits = word.trim_end_matches(['.', ')']);
    digits.len() < word.len()
        && word.len() - digits.len() == 1
        && !digits.is_empty()
        && digits.len() <= 3
        && digits.chars().all(|c| c.is_ascii_digit())
}

/// One word as it should be spoken (possibly several words, or nothing).
fn say_word(word: &str) -> String {
    // Links: `[text](url)` reads as its text.
    let word = match word.find("](") {
        Some(at) => {
            let close = word[at..].find(')').map_or(word.len(), |k| at + k + 1);
            format!("{}{}", &word[..at], &word[close..])
        }
        None => word.to_owned(),
    };
    if let Some(host) = url_host(&word) {
        return host;
    }
    // Markdown marks and pictographs say nothing.
    let mut word: String = word
        .chars()
        .filter(|&c| !matches!(c, '*' | '`' | '[' | ']' | '#') && !is_emoji(c))
        .collect();
    let trimmed = word.trim_matches(['_', '~']);
    if trimmed.len() != word.len() {
        word = trimmed.to_owned();
    }
    if word.is_empty() {
        return word;
    }
    if word == "&" {
        return "and".into();
    }
    // Punctuation that trails the word comes back after the rewrite.
    let core_len = word
        .trim_end_matches([',', ';', ':', '!', '?', ')', '"', '\''])
        .len();
    let (core, tail) = word.split_at(core_len);
    for (abbreviation, spoken) in ABBREVIATIONS {
        if core == *abbreviation || core.eq_ignore_ascii_case(abbreviation) && core.len() > 3 {
            return format!("{spoken}{tail}");
        }
    }
    format!("{}{tail}", say_number_and_units(core))
}

/// Decimals, clock times, thousands separators, currency and units.
fn say_number_and_units(core: &str) -> String {
    let mut text = core.to_owned();
    // A sentence's full stop is not part of the number.
    let stop = if text.ends_with('.') && text.len() > 1 {
        text.pop();
        "."
    } else {
        ""
    };
    let mut prefix_currency = None;
    if let Some(first) = text.chars().next() {
        if let Some((_, name)) = CURRENCIES.iter().find(|(sign, _)| *sign == first) {
            if text[first.len_utf8()..].starts_with(|c: char| c.is_ascii_digit()) {
                prefix_currency = Some(*name);
                text = text[first.len_utf8()..].to_owned();
            }
        }
    }
    let mut unit = "";
    for (symbol, spoken) in UNITS {
        if let Some(number) = text.strip_suffix(symbol) {
            if number.is_empty() || number.ends_with(|c: char| c.is_ascii_digit()) {
                unit = spoken;
                text = number.to_owned();
                break;
            }
        }
    }
    let mut spoken = say_digits(&text);
    if let Some(currency) = prefix_currency {
        spoken = format!("{spoken} {currency}");
    }
    format!("{}{}{stop}", spoken, unit).trim_start().to_owned()
}

/// "3.5" → "3 point 5", "10:30" → "10 30", "1,000" → "1000".
fn say_digits(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let digit = |k: usize| chars.get(k).is_some_and(|c| c.is_ascii_digit());
    let mut out = String::new();
    for (k, &c) in chars.iter().enumerate() {
        let between_digits = k > 0 && digit(k - 1) && digit(k + 1);
        match c {
            '.' if between_digits => out.push_str(" point "),
            ':' if between_digits => out.push(' '),
            ',' if between_digits
                && chars[k + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count()
                    == 3 => {}
            _ => out.push(c),
        }
    }
    out
}

/// The host a URL word names ("https://www.example.com/a?b" →
/// "example.com"), keeping punctuation after it.
fn url_host(word: &str) -> Option<String> {
    let start = word.find("://").map(|k| k + 3).or_else(|| {
        let bare = word.trim_start_matches(['(', '"', '\'']);
        bare.starts_with("www.").then(|| word.len() - bare.len())
    })?;
    let rest = &word[start..];
    let end = rest
        .find(['/', '?', '#', ')', '"', '\''])
        .unwrap_or(rest.len());
    let host = rest[..end].trim_start_matches("www.");
    let host = host
        .split(':')
        .next()
        .unwrap_or(host)
        .trim_end_matches(['.', ',']);
    if host.is_empty() {
        return Some(String::new());
    }
    let tail: String = word
        .chars()
        .rev()
        .take_while(|c| matches!(c, '.' | ',' | ';' | '!' | '?'))
        .collect();
    Some(format!("{host}{tail}"))
}

pub(crate) fn is_emoji(c: char) -> bool {
    matches!(
        c as u32,
        0x1F000..=0x1FAFF // pictographs, emoticons, flags, symbols
            | 0x2190..=0x21FF // arrows
            | 0x2600..=0x27BF // miscellaneous symbols and dingbats
            | 0x2B00..=0x2BFF // stars, arrows and other symbols
            | 0xFE00..=0xFE0F // variation selectors
            | 0x200D // zero-width joiner of emoji sequences
            | 0x20E3 // combining keycap
            | 0xE0000..=0xE007F // tag sequences
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text fed one character at a time, the worst tokeniser there is.
    fn streamed(text: &str) -> String {
        let mut s = Speakable::new();
        let mut out = String::new();
        for c in text.chars() {
            out.push_str(&s.push(&c.to_string()));
        }
        out.push_str(&s.finish());
        out.trim_end().to_owned()
    }

    #[test]
    fn what_the_model_writes_becomes_what_a_person_would_say() {
        let cases = [
            (
                "**Paris** is the *capital* of `France`.",
                "Paris is the capital of France.",
            ),
            (
                "## Colors\nThe rainbow has seven.",
                "Colors. The rainbow has seven.",
            ),
            (
                "Three colors:\n- red\n- green\n- blue\nThat is all.",
                "Three colors:\nred, green, blue. That is all.",
            ),
            ("1. Red\n2. Green\n3. Blue", "Red, Green, Blue."),
            ("1) One.\n2) Two.\n", "One. Two."),
            (
                "Run this:\n```bash\nrm -rf /\n```\nDone.",
                "Run this:\nDone.",
            ),
            (
                "See [the docs](https://docs.example.com/x) now.",
                "See the docs now.",
            ),
            (
                "Visit https://www.example.com/page?x=1.",
                "Visit example.com.",
            ),
            ("Great job! 🎉👍", "Great job!"),
            (
                "Cats, e.g. lions, etc.",
                "Cats, for example lions, et cetera",
            ),
            ("Dr. Smith met Mr. Jones.", "Doctor Smith met Mister Jones."),
            ("Python 3.5 came out.", "Python 3 point 5 came out."),
            ("Meet me at 10:30.", "Meet me at 10 30."),
            (
                "It is 25°C and 77°F.",
                "It is 25 degrees Celsius and 77 degrees Fahrenheit.",
            ),
            ("Drive at 50 km/h.", "Drive at 50 kilometers per hour."),
            (
                "About 1,000 people, 40% of them.",
                "About 1000 people, 40 percent of them.",
            ),
            ("It costs $5 & up.", "It costs 5 dollars and up."),
            ("Paris → London", "Paris London"),
            ("snake_case stays", "snake_case stays"),
            ("_emphasis_ and __strong__", "emphasis and strong"),
        ];
        for (written, spoken) in cases {
            assert_eq!(Speakable::rewrite(written), spoken, "{written:?}");
            assert_eq!(streamed(written), spoken, "{written:?} streamed");
        }
    }

    #[test]
    fn a_word_comes_out_once_whitespace_follows_it() {
        let mut s = Speakable::new();
        assert_eq!(s.push("Hello"), "");
        assert_eq!(s.push(" wor"), "Hello ");
        assert_eq!(s.push("ld"), "");
        assert_eq!(s.finish(), "world");
        // finish resets for the next reply.
        assert_eq!(s.push("- a\n"), "a");
        assert_eq!(s.finish(), ".");
    }

    #[test]
    fn numbers_that_are_not_decimals_are_left_alone() {
        assert_eq!(Speakable::rewrite("It was 2024."), "It was 2024.");
        assert_eq!(Speakable::rewrite("12,34 and 1,5000"), "12,34 and 1,5000");
        assert_eq!(Speakable::rewrite("No. 5"), "No. 5");
    }
}
