//! Whisper's text vocabulary, read from a Hugging Face `tokenizer.json`.
//!
//! The tokenizer is GPT-2 style byte-level BPE: every byte is mapped to a
//! printable unicode character and tokens are strings of those characters.
//! whisper.cpp wants the raw bytes back, so the mapping is inverted here.
//!
//! Which tokens go into the ggml file: whisper.cpp reads ids `0..n` from the
//! file and invents names for the special tokens above them. The reference
//! files (and whisper.cpp's own token ids) use the 50,257 entries of the base
//! BPE vocabulary, i.e. everything up to and including id 50256: for English
//! models that last entry is `<|endoftext|>` itself, for multilingual models
//! it is an empty placeholder and `<|endoftext|>` moved up to 50257. Put
//! generally: English models keep `<|endoftext|>`, multilingual ones stop
//! just before it.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::ConvertError;

/// whisper.cpp's test for a multilingual model: `n_vocab >= 51865`.
pub(crate) const MULTILINGUAL_MIN_VOCAB: u64 = 51_865;

const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Deserialize)]
struct TokenizerFile {
    model: BpeModel,
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
}

#[derive(Deserialize)]
struct BpeModel {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    vocab: HashMap<String, u64>,
}

#[derive(Deserialize)]
struct AddedToken {
    id: u64,
    content: String,
}

/// The regular tokens to write, as raw bytes in id order.
#[derive(Debug)]
pub(crate) struct TextVocabulary {
    pub tokens: Vec<Vec<u8>>,
}

impl TextVocabulary {
    /// Bytes the vocabulary section occupies in the ggml file.
    pub(crate) fn encoded_len(&self) -> u64 {
        4 + self
            .tokens
            .iter()
            .map(|token| 4 + token.len() as u64)
            .sum::<u64>()
    }
}

/// Reads `tokenizer.json` and picks the tokens for a model with `n_vocab` logits.
pub(crate) fn read_tokenizer_json(
    path: &Path,
    n_vocab: u64,
) -> Result<TextVocabulary, ConvertError> {
    let text = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConvertError::MissingFile {
                path: path.to_owned(),
            }
        } else {
            ConvertError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let tokenizer: TokenizerFile =
        serde_json::from_slice(&text).map_err(|error| ConvertError::Tokenizer {
            path: path.to_owned(),
            reason: format!("not a tokenizer.json with a BPE model: {error}"),
        })?;
    text_vocabulary(&tokenizer, n_vocab).map_err(|reason| ConvertError::Tokenizer {
        path: path.to_owned(),
        reason,
    })
}

fn text_vocabulary(tokenizer: &TokenizerFile, n_vocab: u64) -> Result<TextVocabulary, String> {
    if let Some(kind) = &tokenizer.model.kind {
        if kind != "BPE" {
            return Err(format!("tokenizer model is {kind}, expected BPE"));
        }
    }
    let end_of_text = tokenizer
        .added_tokens
        .iter()
        .find(|token| token.content == END_OF_TEXT)
        .map(|token| token.id)
        .or_else(|| tokenizer.model.vocab.get(END_OF_TEXT).copied())
        .ok_or_else(|| format!("no {END_OF_TEXT} token"))?;
    let n_text_tokens = text_token_count(end_of_text, n_vocab);
    if n_text_tokens > n_vocab {
        return Err(format!(
            "{END_OF_TEXT} has id {end_of_text}, beyond the model's {n_vocab} tokens"
        ));
    }

    let mut by_id: Vec<Option<&str>> = vec![None; n_text_tokens as usize];
    for (token, &id) in &tokenizer.model.vocab {
        if let Some(slot) = by_id.get_mut(id as usize) {
            if slot.is_some() {
                return Err(format!("token id {id} is used twice"));
            }
            *slot = Some(token);
        }
    }
    let decoder = byte_decoder();
    let tokens = by_id
        .iter()
        .enumerate()
        .map(|(id, token)| {
            let token = token.ok_or_else(|| format!("no token with id {id}"))?;
            token
                .chars()
                .map(|c| decoder.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| format!("token {id} ({token:?}) is not byte-level BPE"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(TextVocabulary { tokens })
}

/// How many leading ids form the text vocabulary (see the module docs).
pub(crate) fn text_token_count(end_of_text_id: u64, n_vocab: u64) -> u64 {
    if n_vocab >= MULTILINGUAL_MIN_VOCAB {
        end_of_text_id
    } else {
        end_of_text_id + 1
    }
}

/// GPT-2's byte ↔ unicode table, inverted: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes are shifted to U+0100 and up, in order.
fn byte_decoder() -> HashMap<char, u8> {
    let stands_for_itself = |byte: u8| matches!(byte, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
    let mut next_shifted = 0x100u32;
    (0..=255u8)
        .map(|byte| {
            let c = if stands_for_itself(byte) {
                char::from(byte)
            } else {
                let c = char::from_u32(next_shifted).expect("U+0100..U+0143 are chars");
                next_shifted += 1;
                c
            };
            (c, byte)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(vocab: &[(&str, u64)], added: &[(&str, u64)]) -> TokenizerFile {
        TokenizerFile {
            model: BpeModel {
                kind: Some("BPE".into()),
                vocab: vocab.iter().map(|&(t, id)| (t.to_owned(), id)).collect(),
            },
            added_tokens: added
                .iter()
                .map(|&(content, id)| AddedToken {
                    id,
                    content: content.to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn byte_table_is_a_bijection_matching_gpt2() {
        let decoder = byte_decoder();
        assert_eq!(decoder.len(), 256);
        assert_eq!(decoder[&'Ġ'], b' ');
        assert_eq!(decoder[&'Ċ'], b'\n');
        assert_eq!(decoder[&'ĉ'], b'\t');
        assert_eq!(decoder[&'Ā'], 0);
        assert_eq!(decoder[&'A'], b'A');
        // The last two shifted characters stand for 0xa0 and 0xad.
        assert_eq!(decoder[&'ł'], 0xa0);
        assert_eq!(decoder[&'Ń'], 0xad);
    }

    #[test]
    fn english_keeps_end_of_text_multilingual_stops_before_it() {
        assert_eq!(text_token_count(50256, 51864), 50257);
        assert_eq!(text_token_count(50257, 51865), 50257);
        assert_eq!(text_token_count(50257, 51866), 50257);
    }

    #[test]
    fn decodes_tokens_in_id_order() {
        let tok = tokenizer(
            &[
                ("ĠHello", 1),
                ("!", 0),
                ("Ċ", 2),
                ("<|endoftext|>", 3),
                ("x", 9),
            ],
            &[("<|endoftext|>", 3), ("<|startoftranscript|>", 4)],
        );
        let vocab = text_vocabulary(&tok, 10).unwrap();
        let expected: Vec<&[u8]> = vec![b"!", b" Hello", b"\n", b"<|endoftext|>"];
        assert_eq!(vocab.tokens, expected);
        assert_eq!(vocab.encoded_len(), 4 + 4 * 4 + 1 + 6 + 1 + 13);
    }

    #[test]
    fn gaps_and_foreign_characters_are_errors() {
        let gap = tokenizer(&[("a", 0), ("<|endoftext|>", 2)], &[]);
        assert!(text_vocabulary(&gap, 10).unwrap_err().contains("id 1"));
        let foreign = tokenizer(&[(" ", 0), ("<|endoftext|>", 1)], &[]);
        assert!(text_vocabulary(&foreign, 10)
            .unwrap_err()
            .contains("byte-level"));
        let no_eot = tokenizer(&[("a", 0)], &[]);
        assert!(text_vocabulary(&no_eot, 10)
            .unwrap_err()
            .contains("endoftext"));
    }
}
