//! Wyoming's framing: one JSON header line, then `data_length` bytes of
//! JSON data, then `payload_length` bytes of payload.
//!
//! ```text
//! {"type":"audio-chunk","version":"1.10.2","data_length":41,"payload_length":3200}\n
//! {"rate":16000,"width":2,"channels":1}<3200 bytes of PCM>
//! ```
//!
//! Older peers put `data` inside the header itself; both are read, and the
//! separate data wins where they overlap (as the Python reader does). The
//! decoder is fed bytes as they arrive, split anywhere; every length is
//! bounded before anything is allocated, so a peer cannot make Hark hold
//! more than [`Limits`] allow. A stream that breaks the framing cannot be
//! resynchronised: the decoder reports the error and stays failed.

use std::io::{Read, Write};

use serde_json::{Map, Value};

use crate::WyomingError;

/// The protocol version Hark writes in its headers (the Python package's
/// version it was checked against).
pub const PROTOCOL_VERSION: &str = "1.10.2";

/// One Wyoming event: its type, its data and its payload (audio for
/// `audio-chunk`, empty for most events).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

impl Event {
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            ..Self::default()
        }
    }

    /// The event on the wire: header line, data, payload.
    pub fn encode(&self) -> Vec<u8> {
        let data = if self.data.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&self.data).expect("a JSON map always serializes")
        };
        let mut header = Map::new();
        header.insert("type".into(), Value::from(self.kind.as_str()));
        header.insert("version".into(), Value::from(PROTOCOL_VERSION));
        if !data.is_empty() {
            header.insert("data_length".into(), Value::from(data.len()));
        }
        if !self.payload.is_empty() {
            header.insert("payload_length".into(), Value::from(self.payload.len()));
        }
        let mut bytes = serde_json::to_vec(&header).expect("a JSON map always serializes");
        bytes.push(b'\n');
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(&self.payload);
        bytes
    }
}

/// The most a peer may make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The header line, newline included.
    pub header_bytes: usize,
    /// The JSON data (a TTS server's `info` lists every voice it has:
    /// hundreds of kilobytes).
    pub data_bytes: usize,
    /// The payload (a second of 48 kHz stereo 32-bit audio is 384 KB).
    pub payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_bytes: 64 * 1024,
            data_bytes: 4 * 1024 * 1024,
            payload_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A header read, its body not yet complete.
#[derive(Debug)]
struct Pending {
    kind: String,
    inline_data: Map<String, Value>,
    data_length: usize,
    payload_length: usize,
}

/// Bytes in, events out, split anywhere.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    buffer: Vec<u8>,
    pending: Option<Pending>,
    failed: bool,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Bytes received, in order.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// True when no partial event is buffered: end of stream here is clean.
    pub fn at_boundary(&self) -> bool {
        self.pending.is_none() && self.buffer.is_empty()
    }

    /// The next complete event, `None` until more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, WyomingError> {
        if self.failed {
            return Err(WyomingError::Protocol(
                "the stream already broke Wyoming's framing".into(),
            ));
        }
        let result = self.decode();
        if result.is_err() {
            self.failed = true;
            self.buffer = Vec::new();
            self.pending = None;
        }
        result
    }

    fn decode(&mut self) -> Result<Option<Event>, WyomingError> {
        if self.pending.is_none() {
            let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') else {
                if self.buffer.len() >= self.limits.header_bytes {
                    return Err(WyomingError::TooLarge {
                        what: "header line",
                        length: self.buffer.len(),
                        limit: self.limits.header_bytes,
                    });
                }
                return Ok(None);
            };
            if newline + 1 > self.limits.header_bytes {
                return Err(WyomingError::TooLarge {
                    what: "header line",
                    length: newline + 1,
                    limit: self.limits.header_bytes,
                });
            }
            let pending = parse_header(&self.buffer[..newline], &self.limits)?;
            self.buffer.drain(..=newline);
            self.pending = Some(pending);
        }
        let pending = self.pending.as_ref().expect("set above");
        let body = pending.data_length + pending.payload_length;
        if self.buffer.len() < body {
            return Ok(None);
        }
        let pending = self.pending.take().expect("set above");
        let mut data = pending.inline_data;
        if pending.data_length > 0 {
            let extra = match serde_json::from_slice(&self.buffer[..pending.data_length]) {
                Ok(Value::Object(map)) => map,
                Ok(other) => {
                    return Err(WyomingError::Protocol(format!(
                        "the data of a '{}' event is {}, not a JSON object",
                        pending.kind,
                        json_kind(&other)
                    )))
                }
                Err(e) => {
                    return Err(WyomingError::Protocol(format!(
                        "the data of a '{}' event is not JSON: {e}",
                        pending.kind
                    )))
                }
            };
            data.extend(extra);
        }
        let payload = self.buffer[pending.data_length..body].to_vec();
        self.buffer.drain(..body);
        Ok(Some(Event {
            kind: pending.kind,
            data,
            payload,
        }))
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_header(line: &[u8], limits: &Limits) -> Result<Pending, WyomingError> {
    let header: Map<String, Value> = match serde_json::from_slice(line) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return Err(WyomingError::Protocol(format!(
                "a header line is {}, not a JSON object",
                json_kind(&other)
            )))
        }
        Err(e) => {
            let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
            return Err(WyomingError::Protocol(format!(
                "a header line is not JSON ({e}): {shown:?}"
            )));
        }
    };
    let kind = match header.get("type") {
        Some(Value::String(kind)) if !kind.is_empty() => kind.clone(),
        _ => {
            return Err(WyomingError::Protocol(
                "a header has no \"type\" string".into(),
            ))
        }
    };
    let length = |key: &'static str, limit: usize| -> Result<usize, WyomingError> {
        match header.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => {
                let n = n.as_u64().ok_or_else(|| {
                    WyomingError::Protocol(format!(
                        "the '{kind}' header's {key} is {n}, not a length"
                    ))
                })?;
                if n > limit as u64 {
                    return Err(WyomingError::TooLarge {
                        what: key,
                        length: usize::try_from(n).unwrap_or(usize::MAX),
                        limit,
                    });
                }
                Ok(n as usize)
            }
            Some(other) => Err(WyomingError::Protocol(format!(
                "the '{kind}' header's {key} is {}, not a length",
                json_kind(other)
            ))),
        }
    };
    let data_length = length("data_length", limits.data_bytes)?;
    let payload_length = length("payload_length", limits.payload_bytes)?;
    let inline_data = match header.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => {
            return Err(WyomingError::Protocol(format!(
                "the '{kind}' header's data is {}, not an object",
                json_kind(other)
            )))
        }
    };
    Ok(Pending {
        kind,
        inline_data,
        data_length,
        payload_length,
    })
}

/// Events read from a byte stream (a socket), blocking.
pub struct EventReader<R> {
    inner: R,
    decoder: Decoder,
    scratch: Box<[u8]>,
}

impl<R: Read> EventReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, Limits::default())
    }

    pub fn with_limits(inner: R, limits: Limits) -> Self {
        Self {
            inner,
            decoder: Decoder::new(limits),
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    /// The next event; `None` when the peer closed the stream between
    /// events. A read timeout on the stream surfaces as `Io` (`WouldBlock`
    /// or `TimedOut`).
    pub fn read_event(&mut self) -> Result<Option<Event>, WyomingError> {
        loop {
            if let Some(event) = self.decoder.next_event()? {
                return Ok(Some(event));
            }
            let n = match self.inner.read(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WyomingError::Io(e)),
            };
            if n == 0 {
                return if self.decoder.at_boundary() {
                    Ok(None)
                } else {
                    Err(WyomingError::Protocol(
                        "the connection closed in the middle of an event".into(),
                    ))
                };
            }
            self.decoder.feed(&self.scratch[..n]);
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes `event` whole (one `write_all`, so events from one writer never
/// interleave on the wire).
pub fn write_event(writer: &mut impl Write, event: &Event) -> Result<(), WyomingError> {
    writer.write_all(&event.encode())?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, data: Value, payload: &[u8]) -> Event {
        Event {
            kind: kind.into(),
            data: data.as_object().cloned().unwrap_or_default(),
            payload: payload.to_vec(),
        }
    }

    fn decode_all(bytes: &[u8], step: usize) -> Result<Vec<Event>, WyomingError> {
        let mut decoder = Decoder::default();
        let mut events = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            decoder.feed(piece);
            while let Some(event) = decoder.next_event()? {
                events.push(event);
            }
        }
        assert!(decoder.at_boundary(), "bytes left over");
        Ok(events)
    }

    #[test]
    fn an_event_round_trips_whole_and_split_at_every_byte() {
        let events = vec![
            event("describe", json!({}), b""),
            event(
                "audio-chunk",
                json!({"rate": 16000, "width": 2, "channels": 1, "timestamp": 0}),
                &[1, 2, 3, 4, 0, 255],
            ),
            event(
                "transcript",
                json!({"text": "ask not … what your country"}),
                b"",
            ),
        ];
        let wire: Vec<u8> = events.iter().flat_map(Event::encode).collect();
        for step in [wire.len(), 1, 2, 7, 64] {
            assert_eq!(decode_all(&wire, step).unwrap(), events, "step {step}");
        }
    }

    #[test]
    fn the_header_says_type_version_and_lengths_only_when_needed() {
        let wire = event("ping", json!({}), b"").encode();
        let line = std::str::from_utf8(&wire).unwrap();
        assert_eq!(
            line,
            format!("{{\"type\":\"ping\",\"version\":\"{PROTOCOL_VERSION}\"}}\n")
        );
        let wire = event("audio-stop", json!({"timestamp": 5}), b"").encode();
        let (header, data) = wire.split_at(wire.iter().position(|&b| b == b'\n').unwrap() + 1);
        let header: Value = serde_json::from_slice(header).unwrap();
        assert_eq!(header["data_length"], json!(data.len()));
        assert!(header.get("payload_length").is_none());
    }

    #[test]
    fn data_inside_the_header_is_read_as_older_peers_send_it() {
        let wire = b"{\"type\":\"transcript\",\"data\":{\"text\":\"old\",\"x\":1},\"data_length\":14}\n{\"text\":\"new\"}";
        let events = decode_all(wire, 3).unwrap();
        assert_eq!(
            events,
            vec![event("transcript", json!({"text": "new", "x": 1}), b"")]
        );
    }

    #[test]
    fn lengths_beyond_the_limits_are_refused_before_anything_is_read() {
        let huge = format!(
            "{{\"type\":\"audio-chunk\",\"payload_length\":{}}}\n",
            u64::MAX
        );
        let err = decode_all(huge.as_bytes(), 1000).unwrap_err();
        assert!(
            matches!(
                err,
                WyomingError::TooLarge {
                    what: "payload_length",
                    ..
                }
            ),
            "{err}"
        );
        let err = decode_all(b"{\"type\":\"info\",\"data_length\":99999999}\n", 1000).unwrap_err();
        assert!(err.to_string().contains("data_length"), "{err}");
        let endless = vec![b'{'; 70 * 1024];
        let err = decode_all(&endless, 4096).unwrap_err();
        assert!(
            matches!(
                err,
                WyomingError::TooLarge {
                    what: "header line",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_an_error_that_names_what_was_wrong_and_stays_one() {
        for (bytes, expect) in [
            (&b"hello\n"[..], "not JSON"),
            (b"[1,2]\n", "an array"),
            (b"{\"version\":\"1\"}\n", "no \"type\""),
            (b"{\"type\":\"x\",\"data_length\":-1}\n", "not a length"),
            (b"{\"type\":\"x\",\"payload_length\":\"3\"}\n", "a string"),
            (
                b"{\"type\":\"x\",\"data_length\":2}\n[]",
                "not a JSON object",
            ),
            (b"{\"type\":\"x\",\"data_length\":2}\n{x", "not JSON"),
            (b"{\"type\":\"x\",\"data\":7}\n", "data is a number"),
        ] {
            let mut decoder = Decoder::default();
            decoder.feed(bytes);
            let err = decoder.next_event().unwrap_err().to_string();
            assert!(err.contains(expect), "{bytes:?}: {err}");
            decoder.feed(&event("ping", json!({}), b"").encode());
            assert!(
                decoder.next_event().is_err(),
                "a broken stream stays broken"
            );
        }
    }

    #[test]
    fn a_reader_tells_a_clean_close_from_a_truncated_event() {
        let whole = event("audio-chunk", json!({"rate": 16000}), &[0; 100]).encode();
        let mut reader = EventReader::new(&whole[..]);
        assert!(reader.read_event().unwrap().is_some());
        assert!(reader.read_event().unwrap().is_none());
        let mut reader = EventReader::new(&whole[..whole.len() - 1]);
        let err = reader.read_event().unwrap_err().to_string();
        assert!(err.contains("middle of an event"), "{err}");
    }
}
