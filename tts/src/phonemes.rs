//! Text → Piper phoneme strings → Piper phoneme ids.
//!
//! Piper voices are trained on espeak-ng IPA in which clause punctuation is
//! kept as phonemes (`,` `.` `!` `?` `:` `;`), with a space after the
//! clause-internal ones. `espeak_TextToPhonemes` drops punctuation, so the
//! text is split into clauses here, each clause is phonemized on its own and
//! its punctuation is appended again. This mirrors what piper-phonemize does
//! with the terminator reported by its patched espeak.

use std::collections::HashMap;

use crate::config::{BOS, EOS, PAD};
use crate::{espeak, TtsError};

/// Characters that end a clause when followed by whitespace or end of text.
const CLAUSE_PUNCTUATION: &[char] = &[',', '.', '!', '?', ';', ':'];

/// espeak can tie multi-letter IPA symbols (e.g. "t‍ʃ") with U+200D ZERO
/// WIDTH JOINER (with `espeakPHONEMES_TIE`, and in some builds). Debian's
/// 1.51 does not in plain IPA mode, but Piper's id maps have no entry for it,
/// so it is always removed.
const ZERO_WIDTH_JOINER: char = '\u{200D}';

/// One clause of input text and the punctuation that ended it, if any.
#[derive(Debug, PartialEq)]
struct Clause<'a> {
    text: &'a str,
    punctuation: Option<char>,
}

/// Splits text at clause punctuation that is followed by whitespace or the
/// end of the text, so "3.5", "e.g." mid-word and "www.x.org" stay intact.
/// A run like "?!" or "..." counts as one terminator (its first character).
fn split_clauses(text: &str) -> Vec<Clause<'_>> {
    let mut clauses = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if CLAUSE_PUNCTUATION.contains(&c) {
            let mut j = i;
            while j + 1 < chars.len() && CLAUSE_PUNCTUATION.contains(&chars[j + 1].1) {
                j += 1;
            }
            let at_boundary = j + 1 == chars.len() || chars[j + 1].1.is_whitespace();
            if at_boundary {
                clauses.push(Clause {
                    text: text[start..pos].trim(),
                    punctuation: Some(c),
                });
                start = chars.get(j + 1).map_or(text.len(), |&(p, _)| p);
                i = j + 1;
                continue;
            }
            i = j;
        }
        i += 1;
    }
    if !text[start..].trim().is_empty() {
        clauses.push(Clause {
            text: text[start..].trim(),
            punctuation: None,
        });
    }
    clauses
}

/// Piper normalises phonemes to Unicode NFD. For espeak IPA the only
/// precomposed symbol in Piper's id maps is "ç" (→ "c" + combining cedilla),
/// so that single decomposition is done by hand instead of pulling in a
/// Unicode normalisation crate.
fn decompose(c: char, out: &mut String) {
    match c {
        'ç' => out.push_str("c\u{0327}"),
        _ => out.push(c),
    }
}

/// Normalises raw espeak IPA to what Piper was trained on.
fn clean_ipa(ipa: &str) -> String {
    let mut out = String::with_capacity(ipa.len() + 2);
    for c in ipa.trim().chars().filter(|&c| c != ZERO_WIDTH_JOINER) {
        decompose(c, &mut out);
    }
    out
}

/// Phonemizes `text` with espeak-ng voice `espeak_voice` (e.g. "en-us").
///
/// Returns one IPA string per clause, each ending in its punctuation (and a
/// space after `,` `;` `:` as Piper does), with espeak's U+200D ties removed.
/// Clauses without any phonemes are dropped, so empty or punctuation-only
/// text yields an empty Vec.
pub fn phonemize(text: &str, espeak_voice: &str) -> Result<Vec<String>, TtsError> {
    let mut result = Vec::new();
    for clause in split_clauses(text) {
        if clause.text.trim().is_empty() {
            continue;
        }
        let mut phonemes = clean_ipa(&espeak::text_to_ipa(clause.text, espeak_voice)?);
        if phonemes.is_empty() {
            continue;
        }
        if let Some(p) = clause.punctuation {
            phonemes.push(p);
            if matches!(p, ',' | ';' | ':') {
                phonemes.push(' ');
            }
        }
        result.push(phonemes);
    }
    Ok(result)
}

/// True if a clause string (as returned by [`phonemize`]) ends a sentence.
pub(crate) fn ends_sentence(clause: &str) -> bool {
    clause.ends_with(['.', '!', '?'])
}

/// Maps a phoneme string to Piper model input ids.
///
/// Layout (Piper's convention): BOS `^`, pad `_`, then every phoneme's ids
/// each followed by pad, then EOS `$`. Phonemes are single Unicode scalars;
/// ones missing from `map` are skipped (logged at debug level), as Piper
/// does.
pub fn phoneme_ids(phonemes: &str, map: &HashMap<String, Vec<i64>>) -> Vec<i64> {
    let empty = Vec::new();
    let pad = map.get(PAD).unwrap_or(&empty);
    let mut ids = Vec::with_capacity(2 * phonemes.len() + 3);
    ids.extend_from_slice(map.get(BOS).unwrap_or(&empty));
    ids.extend_from_slice(pad);
    let mut key = String::with_capacity(4);
    for c in phonemes.chars() {
        key.clear();
        key.push(c);
        match map.get(&key) {
            Some(phoneme) => {
                ids.extend_from_slice(phoneme);
                ids.extend_from_slice(pad);
            }
            None => {
                tracing::debug!(phoneme = %c, codepoint = %format!("U+{:04X}", c as u32), "phoneme not in the voice's id map; skipped");
            }
        }
    }
    ids.extend_from_slice(map.get(EOS).unwrap_or(&empty));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(text: &str, punctuation: Option<char>) -> Clause<'_> {
        Clause { text, punctuation }
    }

    #[test]
    fn splits_clauses() {
        assert_eq!(
            split_clauses("Hello, world! How are you?"),
            vec![
                clause("Hello", Some(',')),
                clause("world", Some('!')),
                clause("How are you", Some('?')),
            ]
        );
        assert_eq!(
            split_clauses("It costs 3.5 dollars... ok"),
            vec![
                clause("It costs 3.5 dollars", Some('.')),
                clause("ok", None)
            ]
        );
        assert_eq!(split_clauses(""), vec![]);
        assert_eq!(split_clauses("  \n"), vec![]);
        assert_eq!(
            split_clauses("?! ."),
            vec![clause("", Some('?')), clause("", Some('.'))]
        );
    }

    fn map() -> HashMap<String, Vec<i64>> {
        [("_", 0), ("^", 1), ("$", 2), (" ", 3), ("a", 14), ("b", 15)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), vec![v]))
            .collect()
    }

    #[test]
    fn ids_have_bos_pad_eos() {
        assert_eq!(
            phoneme_ids("ab a", &map()),
            vec![1, 0, 14, 0, 15, 0, 3, 0, 14, 0, 2]
        );
        assert_eq!(phoneme_ids("", &map()), vec![1, 0, 2]);
    }

    #[test]
    fn unknown_phonemes_are_skipped() {
        assert_eq!(
            phoneme_ids("aʒb\u{200D}", &map()),
            vec![1, 0, 14, 0, 15, 0, 2]
        );
    }

    #[test]
    fn multi_id_phonemes() {
        let mut m = map();
        m.insert("c".into(), vec![20, 21]);
        assert_eq!(phoneme_ids("c", &m), vec![1, 0, 20, 21, 0, 2]);
    }

    #[test]
    fn phonemize_hello_world() {
        let clauses = phonemize("Hello, world!", "en-us").unwrap();
        // Debian espeak-ng 1.51 output.
        assert_eq!(clauses, vec!["həlˈoʊ, ".to_string(), "wˈɜːld!".to_string()]);
        let joined = clauses.concat();
        assert!(!joined.contains(ZERO_WIDTH_JOINER));
        assert!(ends_sentence(&clauses[1]));
        assert!(!ends_sentence(&clauses[0]));
    }

    #[test]
    fn clean_ipa_strips_ties_and_decomposes() {
        assert_eq!(clean_ipa(" t\u{200D}ʃˈɜːt\u{200D}ʃ "), "tʃˈɜːtʃ");
        assert_eq!(clean_ipa("ç"), "c\u{0327}");
    }

    #[test]
    fn phonemize_sentences() {
        let clauses = phonemize("Church and judge. Hark: 3.5 dollars; ok?", "en-us").unwrap();
        assert_eq!(clauses.len(), 4, "{clauses:?}");
        assert_eq!(clauses[0], "tʃˈɜːtʃ ænd dʒˈʌdʒ.");
        assert_eq!(clauses[1], "hˈɑːɹk: ");
        assert!(clauses[2].ends_with("; "), "{clauses:?}");
        assert!(clauses[3].ends_with('?'), "{clauses:?}");
        assert!(clauses.iter().all(|c| !c.contains(ZERO_WIDTH_JOINER)));
    }

    #[test]
    fn phonemize_empty_and_punctuation_only() {
        assert!(phonemize("", "en-us").unwrap().is_empty());
        assert!(phonemize("   \n\t", "en-us").unwrap().is_empty());
        assert!(phonemize("... !?", "en-us").unwrap().is_empty());
    }
}
