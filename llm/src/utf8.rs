//! Streaming UTF-8 decoding of token bytes.
//!
//! Byte-level tokenizers routinely split one character (é, emoji, CJK) over
//! two or three tokens. Emitting each token's bytes with a lossy conversion
//! would speak replacement characters, so complete characters are released
//! only once all of their bytes have arrived.

/// Accumulates bytes and hands out the longest complete UTF-8 prefix.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns the text that is now complete (may be empty).
    /// Invalid sequences become U+FFFD rather than stalling the stream.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: the standard library just validated this prefix.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete trailing sequence: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes whatever is left at the end of a generation.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_multibyte_split_across_pushes() {
        let mut s = Utf8Stream::new();
        let euro = "€".as_bytes(); // E2 82 AC
        assert_eq!(s.push(b"5"), "5");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&[euro[2], b'!']), "€!");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn emoji_split_over_two_tokens() {
        let mut s = Utf8Stream::new();
        let e = "a😀b".as_bytes();
        assert_eq!(s.push(&e[..3]), "a");
        assert_eq!(s.push(&e[3..]), "😀b");
    }

    #[test]
    fn invalid_bytes_become_replacement_and_stream_continues() {
        let mut s = Utf8Stream::new();
        assert_eq!(s.push(&[b'x', 0xFF, b'y']), "x\u{FFFD}y");
        assert_eq!(s.push(&[0xC3]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
