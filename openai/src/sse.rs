//! Server-sent events as chat servers send them: `data:` lines that may be
//! split across reads (and across UTF-8 sequences), comment lines starting
//! with `:` (llama.cpp sends `: ping` while it thinks), CRLF or LF line
//! ends, multi-line data joined with `\n`, and a blank line ending each
//! event.

/// Turns bytes, as they arrive, into the data of complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// Data lines of the event not yet ended.
    data: Vec<String>,
}

/// Longest line kept before it is cut off: a server that never ends a
/// line must not grow memory without bound.
const MAX_LINE: usize = 1 << 20;

impl SseParser {
    /// Feeds `bytes`; returns the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_ended(&line, &mut events);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        events
    }

    /// The stream ended: an event left without its blank line still counts.
    pub fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.line);
        let mut events = Vec::new();
        if !line.is_empty() {
            self.line_ended(&line, &mut events);
        }
        self.line_ended(b"", &mut events);
        events.pop()
    }

    fn line_ended(&mut self, line: &[u8], events: &mut Vec<String>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(self.data.join("\n"));
                self.data.clear();
            }
            return;
        }
        if line.starts_with(b":") {
            return; // a comment: a keep-alive
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        if field == "data" {
            self.data.push(value.to_owned());
        }
        // `event:`, `id:`, `retry:` carry nothing a chat stream needs.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b": ping\r\n\r\ndata: {\"a\": \"h\xc3\xa9\"}\r\n\r\ndata: one\ndata: two\n\nevent: x\ndata: [DONE]\n\n";
        let whole = SseParser::default().push(stream);
        assert_eq!(whole, ["{\"a\": \"h\u{e9}\"}", "one\ntwo", "[DONE]"]);
        for cut in 1..stream.len() {
            let mut parser = SseParser::default();
            let mut got = parser.push(&stream[..cut]);
            got.extend(parser.push(&stream[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn an_unterminated_last_event_is_kept_and_comments_are_not_events() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": ping\n\n: keep-alive\n\n").is_empty());
        assert!(parser.push(b"data: last").is_empty());
        assert_eq!(parser.finish().as_deref(), Some("last"));
        assert_eq!(SseParser::default().finish(), None);
    }

    #[test]
    fn an_endless_line_is_bounded() {
        let mut parser = SseParser::default();
        parser.push(b"data: ");
        for _ in 0..3 {
            parser.push(&vec![b'x'; MAX_LINE]);
        }
        let got = parser.push(b"\n\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].len() <= MAX_LINE);
    }
}
