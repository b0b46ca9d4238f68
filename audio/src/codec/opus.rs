//! Opus packets (RFC 6716) through the system libopus, decoded straight to
//! Hark's 16 kHz: an Opus decoder can decode any stream at any of Opus's
//! rates, whatever rate the sender encoded at, so there is nothing left to
//! resample.
//!
//! A missing packet is held back until the next one arrives: if the sender
//! had in-band forward error correction on, that packet carries a coarse
//! copy of the lost one, and libopus rebuilds it from there (without one it
//! falls back to its packet-loss concealment, as for a run of losses).

use ::opus::{Channels, Decoder};

use super::{CodecError, PacketCodec};
use crate::SAMPLE_RATE;

/// Rates an Opus encoder runs at, in Hz.
pub const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

/// The longest Opus frame (RFC 6716, 3.2.1); the stream's packets carry
/// one frame each in practice, and a longer length is garbage.
pub const MAX_OPUS_PACKET: usize = 1275;

/// 120 ms at 16 kHz, the longest an Opus packet lasts.
const MAX_PACKET_SAMPLES: usize = SAMPLE_RATE as usize * 120 / 1000;

/// 20 ms at 16 kHz: how long a missing packet is taken to be until a good
/// one has said how long the sender's packets are.
const USUAL_PACKET_SAMPLES: usize = SAMPLE_RATE as usize / 50;

fn opus_error(e: ::opus::Error) -> CodecError {
    CodecError::Opus(e.to_string())
}

/// A mono Opus decoder at 16 kHz; see the module documentation.
pub struct OpusCodec {
    decoder: Decoder,
    scratch: Vec<f32>,
    /// Samples in the last good packet: how long a missing one lasted.
    last_samples: usize,
    /// A packet is missing just before the next one.
    missing: bool,
}

impl OpusCodec {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            decoder: Decoder::new(SAMPLE_RATE, Channels::Mono).map_err(opus_error)?,
            scratch: vec![0.0; MAX_PACKET_SAMPLES],
            last_samples: USUAL_PACKET_SAMPLES,
            missing: false,
        })
    }

    /// Stands in a packet's duration for a missing one: rebuilt from the
    /// FEC copy in `next` if it has one, else concealed. Exactly
    /// `last_samples` samples, silence if even that fails.
    fn conceal(&mut self, next: Option<&[u8]>, samples: &mut Vec<f32>) {
        let want = self.last_samples;
        let out = &mut self.scratch[..want];
        // An empty packet asks libopus for its packet-loss concealment.
        let got = match next {
            Some(packet) => self.decoder.decode_float(packet, out, true),
            None => self.decoder.decode_float(&[], out, false),
        }
        .unwrap_or(0)
        .min(want);
        samples.extend(out[..got].iter().map(|&s| crate::full_scale(s)));
        samples.extend(std::iter::repeat_n(0.0, want - got));
    }
}

impl PacketCodec for OpusCodec {
    const NAME: &'static str = "Opus";
    const MAX_PACKET: usize = MAX_OPUS_PACKET;

    fn rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn decode(&mut self, packet: &[u8], samples: &mut Vec<f32>) -> Result<(), CodecError> {
        // A packet whose table of contents makes no sense is refused before
        // it can disturb the decoder (or be taken for an FEC copy).
        let valid = ::opus::packet::get_nb_samples(packet, SAMPLE_RATE)
            .map_err(opus_error)
            .and_then(|n| match n {
                1..=MAX_PACKET_SAMPLES => Ok(()),
                n => Err(CodecError::Opus(format!("a packet of {n} samples"))),
            });
        if let Err(why) = valid {
            self.lose(samples);
            return Err(why);
        }
        if std::mem::take(&mut self.missing) {
            self.conceal(Some(packet), samples);
        }
        match self.decoder.decode_float(packet, &mut self.scratch, false) {
            Ok(n) => {
                let n = n.min(MAX_PACKET_SAMPLES);
                samples.extend(self.scratch[..n].iter().map(|&s| crate::full_scale(s)));
                if n > 0 {
                    self.last_samples = n;
                }
                Ok(())
            }
            Err(e) => {
                self.lose(samples);
                Err(opus_error(e))
            }
        }
    }

    fn lose(&mut self, samples: &mut Vec<f32>) {
        // Only the packet just before a good one can have an FEC copy:
        // an earlier one of a run is concealed now.
        if self.missing {
            self.conceal(None, samples);
        }
        self.missing = true;
    }
}

/// Encodes 16 kHz mono `samples` as Opus packets of `packet_ms` (2.5 to 60)
/// at about `bitrate` bit/s, the last one padded with silence; with `fec`,
/// each packet also carries a coarse copy of the one before, for a link
/// that loses about `fec` percent of them. What a companion app sends; for
/// tests and tools.
pub fn encode(
    samples: &[f32],
    packet_ms: f32,
    bitrate: i32,
    fec: Option<i32>,
) -> Result<Vec<Vec<u8>>, CodecError> {
    use ::opus::{Application, Bitrate, Encoder};
    let mut encoder =
        Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip).map_err(opus_error)?;
    encoder
        .set_bitrate(Bitrate::Bits(bitrate))
        .map_err(opus_error)?;
    if let Some(percent) = fec {
        encoder.set_inband_fec(true).map_err(opus_error)?;
        encoder.set_packet_loss_perc(percent).map_err(opus_error)?;
    }
    let frame = (SAMPLE_RATE as f32 * packet_ms / 1000.0) as usize;
    samples
        .chunks(frame.max(1))
        .map(|chunk| {
            let mut padded = chunk.to_vec();
            padded.resize(frame, 0.0);
            encoder
                .encode_vec_float(&padded, MAX_OPUS_PACKET)
                .map_err(opus_error)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::framing::length_prefixed;
    use super::super::{PacketDecoder, StreamDecoder};
    use super::*;

    /// A second of a voice-like tone sweep at 16 kHz.
    fn sweep() -> Vec<f32> {
        (0..16_000)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                0.4 * (2.0 * std::f32::consts::PI * (200.0 + 300.0 * t) * t).sin()
            })
            .collect()
    }

    fn decode_all(bytes: &[u8], chunk: usize) -> (Vec<f32>, u64, u64) {
        let mut decoder = PacketDecoder::new(OpusCodec::new().unwrap());
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            decoder.decode(piece, &mut out);
        }
        (out, decoder.losses().decoded, decoder.losses().concealed)
    }

    /// Correlation of `a` and `b` at the lag (up to 10 ms) that fits best;
    /// the codec delays its output by a few milliseconds.
    fn similarity(a: &[f32], b: &[f32]) -> f32 {
        (0..160)
            .map(|lag| {
                let n = a.len().min(b.len().saturating_sub(lag));
                let (x, y) = (&a[..n], &b[lag..lag + n]);
                let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
                let norm = (x.iter().map(|p| p * p).sum::<f32>()
                    * y.iter().map(|q| q * q).sum::<f32>())
                .sqrt();
                dot / norm.max(1e-9)
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn packets_decode_to_what_was_encoded_however_they_are_split() {
        let audio = sweep();
        let packets = encode(&audio, 20.0, 24_000, None).unwrap();
        assert_eq!(packets.len(), 50);
        let bytes = length_prefixed(&packets);
        for chunk in [1, 2, 3, 61, 4096] {
            let (out, decoded, concealed) = decode_all(&bytes, chunk);
            assert_eq!(out.len(), 16_000, "read size {chunk}");
            assert_eq!((decoded, concealed), (50, 0));
            assert!(similarity(&audio, &out) > 0.9, "read size {chunk}");
        }
    }

    #[test]
    fn lost_empty_absurd_and_garbage_packets_are_concealed_in_time() {
        let audio = sweep();
        let mut packets = encode(&audio, 20.0, 24_000, Some(10)).unwrap();
        packets[10].clear(); // a zero length: missing
        packets[20] = vec![0xff; 3]; // a table of contents that lies
        let mut bytes = Vec::new();
        for (i, packet) in packets.iter().enumerate() {
            if i == 30 {
                // A length no Opus packet has, and its bytes.
                bytes.extend(2000u16.to_le_bytes());
                bytes.extend(vec![0x55; 2000]);
                continue;
            }
            bytes.extend(length_prefixed([packet]));
        }
        let (out, decoded, concealed) = decode_all(&bytes, 7);
        // Every packet's 20 ms is there, rebuilt or concealed.
        assert_eq!(out.len(), 16_000);
        assert_eq!((decoded, concealed), (47, 3));
        assert!(similarity(&audio, &out) > 0.8);
        assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
    }

    #[test]
    fn a_stream_of_garbage_never_fails_and_stays_bounded() {
        let mut seed = 0x9e37_79b9_u32;
        let garbage: Vec<u8> = (0..50_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed >> 7) as u8
            })
            .collect();
        // Lengths small enough to be believed, so the decoder sees it all.
        let packets: Vec<&[u8]> = garbage.chunks(97).collect();
        let (out, decoded, concealed) = decode_all(&length_prefixed(&packets), 1000);
        assert_eq!(decoded + concealed, packets.len() as u64);
        assert!(out.len() <= packets.len() * MAX_PACKET_SAMPLES);
        assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
        let (_, _, concealed) = decode_all(&garbage, 13);
        assert!(concealed > 0);
    }
}
