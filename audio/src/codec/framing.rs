//! The framing of a packet stream: each packet preceded by its length as a
//! little-endian u16, as in the payload of liblc3's `.lc3` files.
//!
//! The bytes arrive split anywhere (a socket read ends where it ends), so
//! the parser is a small state machine that keeps at most one packet. A
//! length is never believed beyond the codec's largest real packet: such a
//! "packet" is reported and its bytes skipped without being stored.

/// What one length prefix announced.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole packet of a plausible length.
    Packet(&'a [u8]),
    /// A zero length: a sender's way of saying a packet is missing.
    Empty,
    /// A length above the limit; its bytes are skipped.
    TooLong(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the length; `low` is its first byte once read.
    Length { low: Option<u8> },
    /// Collecting a packet of `len` bytes into `packet`.
    Body { len: usize },
    /// Discarding what remains of a packet that was too long.
    Skip { left: usize },
}

/// Splits a byte stream into length-prefixed packets; see the module
/// documentation.
#[derive(Debug)]
pub struct LengthPrefixed {
    max_len: usize,
    state: State,
    packet: Vec<u8>,
}

impl LengthPrefixed {
    /// Packets longer than `max_len` bytes are reported as
    /// [`Piece::TooLong`] and skipped.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            state: State::Length { low: None },
            packet: Vec::with_capacity(max_len),
        }
    }

    /// Feeds the next bytes of the stream; `each` is called for every
    /// length prefix completed, in order.
    pub fn push(&mut self, mut bytes: &[u8], mut each: impl FnMut(Piece<'_>)) {
        while let Some(&first) = bytes.first() {
            match self.state {
                State::Length { low: None } => {
                    self.state = State::Length { low: Some(first) };
                    bytes = &bytes[1..];
                }
                State::Length { low: Some(low) } => {
                    bytes = &bytes[1..];
                    let len = usize::from(u16::from_le_bytes([low, first]));
                    self.state = State::Length { low: None };
                    if len == 0 {
                        each(Piece::Empty);
                    } else if len > self.max_len {
                        each(Piece::TooLong(len));
                        self.state = State::Skip { left: len };
                    } else if bytes.len() >= len {
                        // The whole packet is in this read: no copy.
                        each(Piece::Packet(&bytes[..len]));
                        bytes = &bytes[len..];
                    } else {
                        self.packet.clear();
                        self.state = State::Body { len };
                    }
                }
                State::Body { len } => {
                    let take = (len - self.packet.len()).min(bytes.len());
                    self.packet.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.packet.len() == len {
                        self.state = State::Length { low: None };
                        each(Piece::Packet(&self.packet));
                    }
                }
                State::Skip { left } => {
                    let take = left.min(bytes.len());
                    bytes = &bytes[take..];
                    self.state = if take == left {
                        State::Length { low: None }
                    } else {
                        State::Skip { left: left - take }
                    };
                }
            }
        }
    }

    /// Whether the stream so far ended inside a length or a packet.
    pub fn mid_packet(&self) -> bool {
        self.state != State::Length { low: None }
    }
}

/// `packets`, each preceded by its length: what a stream carries. A packet
/// longer than `u16::MAX` cannot be framed and is an error of the caller.
pub fn length_prefixed<P: AsRef<[u8]>>(packets: impl IntoIterator<Item = P>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for packet in packets {
        let packet = packet.as_ref();
        let len = u16::try_from(packet.len()).expect("a packet fits a u16 length");
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(packet);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the parser reports for `bytes` fed in pieces of `sizes`
    /// (cycled), as owned values.
    fn parse(bytes: &[u8], max_len: usize, chunk: usize) -> (Vec<Result<Vec<u8>, usize>>, bool) {
        let mut parser = LengthPrefixed::new(max_len);
        let mut got = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            parser.push(piece, |p| {
                got.push(match p {
                    Piece::Packet(p) => Ok(p.to_vec()),
                    Piece::Empty => Err(0),
                    Piece::TooLong(len) => Err(len),
                })
            });
        }
        (got, parser.mid_packet())
    }

    #[test]
    fn packets_come_out_whole_however_the_bytes_are_split() {
        let packets: Vec<Vec<u8>> =
            vec![vec![1], vec![2; 300], vec![], vec![3, 4, 5], vec![9; 400]];
        let bytes = length_prefixed(&packets);
        let expected: Vec<Result<Vec<u8>, usize>> = packets
            .iter()
            .map(|p| if p.is_empty() { Err(0) } else { Ok(p.clone()) })
            .collect();
        for chunk in 1..=bytes.len() {
            let (got, mid) = parse(&bytes, 400, chunk);
            assert_eq!(got, expected, "read size {chunk}");
            assert!(!mid);
        }
        // And split at every single byte position into two reads.
        for cut in 0..=bytes.len() {
            let mut parser = LengthPrefixed::new(400);
            let mut got = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                parser.push(part, |p| {
                    got.push(match p {
                        Piece::Packet(p) => Ok(p.to_vec()),
                        Piece::Empty => Err(0),
                        Piece::TooLong(len) => Err(len),
                    })
                });
            }
            assert_eq!(got, expected, "cut at {cut}");
        }
    }

    #[test]
    fn an_absurd_length_is_reported_and_its_bytes_skipped_unstored() {
        let mut bytes = 1000u16.to_le_bytes().to_vec();
        bytes.extend(vec![0xAA; 1000]);
        bytes.extend(length_prefixed([[7u8, 7]]));
        for chunk in [1, 3, 64, 5000] {
            let mut parser = LengthPrefixed::new(400);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                parser.push(piece, |p| {
                    got.push(match p {
                        Piece::Packet(p) => Ok(p.to_vec()),
                        Piece::Empty => Err(0),
                        Piece::TooLong(len) => Err(len),
                    })
                });
            }
            assert_eq!(got, vec![Err(1000), Ok(vec![7, 7])], "read size {chunk}");
            assert!(parser.packet.capacity() <= 400, "nothing of it was kept");
        }
        let (got, _) = parse(&0xffffu16.to_le_bytes(), 1275, 1);
        assert_eq!(got, vec![Err(0xffff)]);
    }

    #[test]
    fn a_stream_that_ends_mid_packet_just_ends() {
        let bytes = length_prefixed([vec![1u8; 10], vec![2u8; 10]]);
        for end in 0..bytes.len() {
            let (got, mid) = parse(&bytes[..end], 400, 4);
            let whole = usize::from(end >= 12);
            assert_eq!(got.len(), whole, "{end} bytes");
            assert_eq!(mid, end != 0 && end != 12, "{end} bytes");
        }
    }

    #[test]
    fn garbage_never_yields_more_than_it_holds() {
        let mut seed = 0x1234_5678_u32;
        let garbage: Vec<u8> = (0..20_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let (got, _) = parse(&garbage, 400, 37);
        let packet_bytes: usize = got
            .iter()
            .map(|p| p.as_ref().map_or(0, |p| p.len() + 2))
            .sum();
        assert!(packet_bytes <= garbage.len());
        assert!(got
            .iter()
            .all(|p| p.as_ref().map_or(true, |p| p.len() <= 400)));
    }
}
