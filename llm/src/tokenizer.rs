//! Tokenizer rebuilt from GGUF metadata.
//!
//! Quantized GGUF files usually ship without a `tokenizer.json`, but they carry
//! the full vocabulary in their metadata. Encoding goes through the
//! `tokenizers` crate (BPE for "gpt2"-style vocabularies, Unigram over the
//! SentencePiece scores for "llama"-style ones); decoding is done here, one
//! token at a time, to raw bytes, so the streaming UTF-8 decoder can join
//! multi-byte characters that the model splits across tokens.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::BPE;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::{AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

/// GGUF `token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

/// Pre-tokenizer split patterns as published with the original tokenizers.
/// `tokenizer.ggml.pre` names which one the model was trained with; a
/// mismatch only makes tokenization slightly less faithful, not wrong.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the per-token byte strings needed for streaming decode.
pub(crate) struct GgufTokenizer {
    inner: tokenizers::Tokenizer,
    /// Raw bytes each token id stands for; empty for control tokens, which
    /// must never reach the speaker.
    token_bytes: Vec<Vec<u8>>,
    ids: HashMap<String, u32>,
    pub(crate) eos_id: Option<u32>,
}

impl GgufTokenizer {
    /// Builds the tokenizer; errors are plain strings that the caller wraps
    /// with the file name.
    pub(crate) fn from_gguf(ct: &Content) -> Result<Self, String> {
        let md = &ct.metadata;
        let model = md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or("missing tokenizer.ggml.model")?;
        let tokens: Vec<String> = string_array(md.get("tokenizer.ggml.tokens"))
            .ok_or("missing or malformed tokenizer.ggml.tokens")?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let get_id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        let eos_id = get_id("tokenizer.ggml.eos_token_id");
        let unk_id = get_id("tokenizer.ggml.unknown_token_id");
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();

        let (mut inner, token_bytes) = match model.as_str() {
            "gpt2" => {
                let merges = string_array(md.get("tokenizer.ggml.merges"))
                    .ok_or("missing or malformed tokenizer.ggml.merges")?;
                build_byte_level(&tokens, &merges, &pre)?
            }
            "llama" => {
                let scores: Vec<f64> = match md.get("tokenizer.ggml.scores") {
                    Some(v) => v
                        .to_vec()
                        .map_err(|e| e.to_string())?
                        .iter()
                        .map(|s| s.to_f32().unwrap_or(0.0) as f64)
                        .collect(),
                    None => return Err("missing tokenizer.ggml.scores".into()),
                };
                let add_space_prefix = md
                    .get("tokenizer.ggml.add_space_prefix")
                    .and_then(|v| v.to_bool().ok())
                    .unwrap_or(true);
                build_sentencepiece(&tokens, &scores, &types, unk_id, add_space_prefix)?
            }
            other => return Err(format!("unsupported tokenizer model {other:?}")),
        };

        // Control and user-defined tokens (<|im_start|>, <end_of_turn>, ...)
        // must come out of the encoder as single ids, never as BPE pieces.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        inner
            .add_special_tokens(specials)
            .map_err(|e| e.to_string())?;

        let token_bytes = token_bytes
            .into_iter()
            .zip(&types)
            .map(|(b, &t)| {
                if t == TOKEN_TYPE_CONTROL {
                    Vec::new()
                } else {
                    b
                }
            })
            .collect();
        let ids = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        Ok(Self {
            inner,
            token_bytes,
            ids,
            eos_id,
        })
    }

    /// Encodes text; special-token strings in it map to their single ids.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    /// The id of a token by its exact vocabulary string.
    pub(crate) fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Raw bytes of one token (may be an incomplete UTF-8 sequence).
    pub(crate) fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn string_array(v: Option<&Value>) -> Option<Vec<String>> {
    v?.to_vec()
        .ok()?
        .iter()
        .map(|s| s.to_string().ok().cloned())
        .collect()
}

/// GPT-2's reversible byte <-> printable-char table: printable Latin-1 bytes
/// map to themselves, the rest to U+0100.. in byte order.
fn byte_level_chars() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are valid chars");
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

type Built = (tokenizers::Tokenizer, Vec<Vec<u8>>);

fn build_byte_level(tokens: &[String], merges: &[String], pre: &str) -> Result<Built, String> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| {
            let (a, b) = m.split_once(' ')?;
            Some((a.to_string(), b.to_string()))
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("building BPE: {e}"))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);

    let split = |pattern: &str| -> Result<PreTokenizerWrapper, String> {
        Ok(PreTokenizerWrapper::Split(
            Split::new(
                tokenizers::pre_tokenizers::split::SplitPattern::Regex(pattern.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| e.to_string())?,
        ))
    };
    let byte_level =
        |use_regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, use_regex));
    let pre_tokenizer = match pre {
        // SmolLM splits every digit on its own before the GPT-2 regex.
        "smollm" => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(true),
        ])),
        "llama3" | "llama-bpe" | "smaug-bpe" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![
                split(LLAMA3_SPLIT)?,
                byte_level(false),
            ]))
        }
        "qwen2" | "deepseek-r1-qwen" => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            split(QWEN2_SPLIT)?,
            byte_level(false),
        ])),
        _ => byte_level(true),
    };
    tk.with_pre_tokenizer(Some(pre_tokenizer));

    let table = byte_level_chars();
    let token_bytes = tokens
        .iter()
        .map(|t| {
            // Added tokens that are not byte-level encoded pass through as-is.
            t.chars()
                .map(|c| table.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_else(|| t.as_bytes().to_vec())
        })
        .collect();
    Ok((tk, token_bytes))
}

fn build_sentencepiece(
    tokens: &[String],
    scores: &[f64],
    types: &[i32],
    unk_id: Option<u32>,
    add_space_prefix: bool,
) -> Result<Built, String> {
    let vocab: Vec<(String, f64)> = tokens.iter().cloned().zip(scores.iter().copied()).collect();
    let has_byte_tokens = types.contains(&TOKEN_TYPE_BYTE);
    let unigram = Unigram::from(vocab, unk_id.map(|u| u as usize), has_byte_tokens)
        .map_err(|e| format!("building SentencePiece vocabulary: {e}"))?;
    let mut tk = tokenizers::Tokenizer::new(unigram);
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new("▁".into())));
    }
    normalizers.push(NormalizerWrapper::Replace(
        Replace::new(" ", "▁").map_err(|e| e.to_string())?,
    ));
    tk.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(
        normalizers,
    ))))
    .map_err(|e| e.to_string())?;

    let token_bytes = tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| match sentencepiece_byte(t) {
            Some(b) if ty == TOKEN_TYPE_BYTE => vec![b],
            _ => t.replace('▁', " ").into_bytes(),
        })
        .collect();
    Ok((tk, token_bytes))
}

/// Parses SentencePiece byte-fallback tokens of the form `<0xAB>`.
fn sentencepiece_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_a_bijection() {
        let t = byte_level_chars();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
    }

    #[test]
    fn parses_sentencepiece_byte_tokens() {
        assert_eq!(sentencepiece_byte("<0x0A>"), Some(b'\n'));
        assert_eq!(sentencepiece_byte("<0xE2>"), Some(0xE2));
        assert_eq!(sentencepiece_byte("hello"), None);
    }
}
