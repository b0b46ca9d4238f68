//! The other direction: Hark's voice encoded for an `OpenAudioOutput`
//! stream, in the same formats and framing a stream into Hark uses (raw
//! PCM, or Opus or LC3 packets each preceded by its length as a
//! little-endian u16), so a companion app plays what it would send.

use ::opus::{Application, Bitrate, Channels, Encoder};

use super::framing::length_prefixed;
use super::lc3::Lc3Encoder;
use super::opus::MAX_OPUS_PACKET;
use super::CodecError;
use crate::stream::{PcmEncoding, StreamEncoding, StreamFormat};

/// Opus packets of 20 ms: the usual size for speech, and short enough
/// that a stop is heard at once.
const OPUS_PACKET_MS: u32 = 20;
/// About 24 kbit/s: clear speech in little radio bandwidth.
const OPUS_BITRATE: i32 = 24_000;
/// LC3 at 32 kbit/s whatever the frame length (40 bytes per 10 ms).
const LC3_BYTES_PER_MS: u32 = 4;

/// Mono samples in, a stream's bytes out.
pub trait StreamEncoder: Send {
    /// The rate `encode` takes samples at.
    fn rate(&self) -> u32;
    /// Encodes mono `samples` in [-1, 1], appending the stream's bytes
    /// (whole packets only; a part packet waits for more samples).
    fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>);
}

/// The encoder `format` needs.
pub fn encoder(format: StreamFormat) -> Result<Box<dyn StreamEncoder>, CodecError> {
    Ok(match format.encoding {
        StreamEncoding::Pcm(encoding) => Box::new(PcmEncoder {
            encoding,
            rate: format.rate,
            channels: usize::from(format.channels),
        }),
        StreamEncoding::Opus => {
            let opus_error = |e: ::opus::Error| CodecError::Opus(e.to_string());
            let mut encoder =
                Encoder::new(format.rate, Channels::Mono, Application::Voip).map_err(opus_error)?;
            encoder
                .set_bitrate(Bitrate::Bits(OPUS_BITRATE))
                .map_err(opus_error)?;
            Box::new(Packets {
                rate: format.rate,
                packet_samples: (format.rate * OPUS_PACKET_MS / 1000) as usize,
                pending: Vec::new(),
                packer: Packer::Opus(encoder),
            })
        }
        StreamEncoding::Lc3 { frame_us } => {
            let bytes = (LC3_BYTES_PER_MS * frame_us / 1000) as usize;
            Box::new(Packets {
                rate: format.rate,
                packet_samples: (u64::from(format.rate) * u64::from(frame_us) / 1_000_000) as usize,
                pending: Vec::new(),
                packer: Packer::Lc3(Lc3Encoder::new(format.rate, frame_us, bytes)?),
            })
        }
    })
}

/// Raw interleaved PCM, the mono voice copied to every channel.
struct PcmEncoder {
    encoding: PcmEncoding,
    rate: u32,
    channels: usize,
}

impl StreamEncoder for PcmEncoder {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) {
        for &sample in samples {
            let sample = crate::full_scale(sample);
            for _ in 0..self.channels {
                match self.encoding {
                    PcmEncoding::S16Le => {
                        out.extend_from_slice(&((sample * 32767.0) as i16).to_le_bytes())
                    }
                    PcmEncoding::F32Le => out.extend_from_slice(&sample.to_le_bytes()),
                }
            }
        }
    }
}

enum Packer {
    Opus(Encoder),
    Lc3(Lc3Encoder),
}

/// Whole packets of `packet_samples`, length-prefixed.
struct Packets {
    rate: u32,
    packet_samples: usize,
    pending: Vec<f32>,
    packer: Packer,
}

// SAFETY: the LC3 encoder's context is owned memory used by one thread at
// a time (`&mut self`); libopus's encoder likewise.
unsafe impl Send for Packets {}

impl StreamEncoder for Packets {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(samples);
        let whole = self.pending.len() / self.packet_samples * self.packet_samples;
        if whole == 0 {
            return;
        }
        let packets: Vec<Vec<u8>> = match &mut self.packer {
            Packer::Opus(encoder) => self.pending[..whole]
                .chunks_exact(self.packet_samples)
                // A packet libopus refuses is left out: the receiver
                // conceals a missing packet as any lost on the way.
                .filter_map(|chunk| encoder.encode_vec_float(chunk, MAX_OPUS_PACKET).ok())
                .collect(),
            Packer::Lc3(encoder) => encoder.encode(&self.pending[..whole]),
        };
        out.extend_from_slice(&length_prefixed(packets));
        self.pending.drain(..whole);
    }
}

#[cfg(test)]
mod tests {
    use super::super::decoder;
    use super::*;

    fn tone(rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 300.0 * i as f32 / rate as f32).sin())
            .collect()
    }

    fn energy(samples: &[f32]) -> f32 {
        samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32
    }

    /// Each format's bytes, fed in pieces, decode back by the input side's
    /// decoder to about as long and as loud a sound.
    #[test]
    fn what_is_encoded_decodes_back() {
        for format in [
            "s16le",
            "s16le:48000:2",
            "f32le:22050",
            "opus:16000",
            "opus:48000",
            "lc3:16000:10000",
            "lc3:24000:7500",
        ] {
            let format: StreamFormat = format.parse().unwrap();
            let mut encoder = encoder(format).unwrap();
            let input = tone(encoder.rate(), 1.0);
            let mut bytes = Vec::new();
            for piece in input.chunks(333) {
                encoder.encode(piece, &mut bytes);
            }
            let mut decoder = decoder(format).unwrap();
            let mut decoded = Vec::new();
            decoder.decode(&bytes, &mut decoded);
            let seconds =
                decoded.len() as f32 / decoder.channels() as f32 / decoder.output_rate() as f32;
            assert!((0.9..=1.01).contains(&seconds), "{format}: {seconds} s");
            let ratio = energy(&decoded) / energy(&input);
            assert!(
                (0.5..2.0).contains(&ratio),
                "{format}: energy ratio {ratio}"
            );
            assert_eq!(decoder.losses().concealed, 0, "{format}");
        }
    }
}
