//! Decoders for what an `OpenAudioInput` stream carries: raw PCM, or Opus
//! or LC3 packets each preceded by its length ([`framing`]).
//!
//! All of them are a [`StreamDecoder`]: bytes in, split anywhere, samples
//! out at the decoder's rate and channel count, so
//! [`StreamSource`](crate::stream::StreamSource) resamples, frames and
//! paces every format the same way. A stream's bytes never make a decoder
//! fail: a packet that is empty, longer than the codec allows, or refused
//! by the codec is concealed (the codec's packet-loss concealment, or
//! Opus's forward error correction from the next packet) and counted in
//! [`Losses`], because a companion app on a radio link loses packets as a
//! matter of course and the conversation must go on through it.

pub mod encode;
pub mod framing;
pub mod lc3;
pub mod opus;

use crate::stream::{PcmEncoding, StreamEncoding, StreamFormat};
use framing::{LengthPrefixed, Piece};

/// Why a codec could not be set up, or why a packet was concealed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    #[error("Opus: {0}")]
    Opus(String),
    #[error("LC3 cannot be set up for {rate} Hz and {frame_us} µs frames")]
    Lc3Setup { rate: u32, frame_us: u32 },
    #[error("LC3 refused a frame of {len} bytes")]
    Lc3Refused { len: usize },
    #[error("LC3 found a frame of {len} bytes corrupt")]
    Lc3Corrupt { len: usize },
    #[error("an empty packet")]
    Empty,
    #[error("a packet of {len} bytes, longer than any {codec} packet ({max})")]
    TooLong {
        codec: &'static str,
        len: usize,
        max: usize,
    },
}

/// Bytes of a stream in, samples out; see the module documentation.
pub trait StreamDecoder: Send {
    /// Decodes the next `bytes` of the stream (cut anywhere; an incomplete
    /// sample or packet waits for the rest), appending interleaved samples
    /// in [-1, 1] to `samples`.
    fn decode(&mut self, bytes: &[u8], samples: &mut Vec<f32>);

    /// Rate of the decoded samples, in Hz.
    fn output_rate(&self) -> u32;

    /// Channels of the decoded samples.
    fn channels(&self) -> u16;

    /// The packets concealed so far.
    fn losses(&self) -> &Losses;
}

/// The decoder `format` needs.
pub fn decoder(format: StreamFormat) -> Result<Box<dyn StreamDecoder>, CodecError> {
    Ok(match format.encoding {
        StreamEncoding::Pcm(encoding) => {
            Box::new(PcmDecoder::new(encoding, format.rate, format.channels))
        }
        StreamEncoding::Opus => Box::new(PacketDecoder::new(opus::OpusCodec::new()?)),
        StreamEncoding::Lc3 { frame_us } => Box::new(PacketDecoder::new(lc3::Lc3Codec::new(
            format.rate,
            frame_us,
        )?)),
    })
}

/// Packets decoded and concealed, and why the first concealed one was.
#[derive(Debug, Default, Clone)]
pub struct Losses {
    pub decoded: u64,
    pub concealed: u64,
    pub first: Option<CodecError>,
}

impl Losses {
    fn conceal(&mut self, why: CodecError) {
        self.concealed += 1;
        self.first.get_or_insert(why);
    }
}

/// Raw interleaved PCM.
#[derive(Debug)]
pub struct PcmDecoder {
    encoding: PcmEncoding,
    rate: u32,
    channels: u16,
    /// Bytes of a sample frame cut by the end of a read.
    partial: Vec<u8>,
    losses: Losses,
}

impl PcmDecoder {
    pub fn new(encoding: PcmEncoding, rate: u32, channels: u16) -> Self {
        Self {
            encoding,
            rate,
            channels,
            partial: Vec::new(),
            losses: Losses::default(),
        }
    }

    fn frame_bytes(&self) -> usize {
        self.encoding.bytes() * usize::from(self.channels)
    }

    fn convert(&self, bytes: &[u8], samples: &mut Vec<f32>) {
        match self.encoding {
            PcmEncoding::S16Le => samples.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
            ),
            PcmEncoding::F32Le => samples.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| crate::full_scale(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            ),
        }
    }
}

impl StreamDecoder for PcmDecoder {
    fn decode(&mut self, mut bytes: &[u8], samples: &mut Vec<f32>) {
        let frame_bytes = self.frame_bytes();
        if !self.partial.is_empty() {
            let take = (frame_bytes - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < frame_bytes {
                return;
            }
            let whole = std::mem::take(&mut self.partial);
            self.convert(&whole, samples);
        }
        let whole = bytes.len() - bytes.len() % frame_bytes;
        self.convert(&bytes[..whole], samples);
        self.partial.extend_from_slice(&bytes[whole..]);
    }

    fn output_rate(&self) -> u32 {
        self.rate
    }

    fn channels(&self) -> u16 {
        self.channels
    }

    fn losses(&self) -> &Losses {
        &self.losses
    }
}

/// One codec's packets, mono.
pub trait PacketCodec: Send {
    /// Named in [`CodecError::TooLong`].
    const NAME: &'static str;
    /// The longest packet the codec makes; a longer length is garbage.
    const MAX_PACKET: usize;

    /// Rate of the decoded samples, in Hz.
    fn rate(&self) -> u32;

    /// Decodes one packet, appending its samples. On an error the packet
    /// has been concealed as [`lose`](Self::lose) would.
    fn decode(&mut self, packet: &[u8], samples: &mut Vec<f32>) -> Result<(), CodecError>;

    /// A packet is missing here: conceal it, appending now, or, when the
    /// next packet may carry it again (Opus's in-band FEC), once that
    /// packet arrives.
    fn lose(&mut self, samples: &mut Vec<f32>);
}

/// Length-prefixed packets of one codec.
pub struct PacketDecoder<C> {
    codec: C,
    framing: LengthPrefixed,
    losses: Losses,
}

impl<C: PacketCodec> PacketDecoder<C> {
    pub fn new(codec: C) -> Self {
        Self {
            codec,
            framing: LengthPrefixed::new(C::MAX_PACKET),
            losses: Losses::default(),
        }
    }
}

impl<C: PacketCodec> StreamDecoder for PacketDecoder<C> {
    fn decode(&mut self, bytes: &[u8], samples: &mut Vec<f32>) {
        let Self {
            codec,
            framing,
            losses,
        } = self;
        framing.push(bytes, |piece| match piece {
            Piece::Packet(packet) => match codec.decode(packet, samples) {
                Ok(()) => losses.decoded += 1,
                Err(why) => losses.conceal(why),
            },
            Piece::Empty => {
                codec.lose(samples);
                losses.conceal(CodecError::Empty);
            }
            Piece::TooLong(len) => {
                codec.lose(samples);
                losses.conceal(CodecError::TooLong {
                    codec: C::NAME,
                    len,
                    max: C::MAX_PACKET,
                });
            }
        });
    }

    fn output_rate(&self) -> u32 {
        self.codec.rate()
    }

    fn channels(&self) -> u16 {
        1
    }

    fn losses(&self) -> &Losses {
        &self.losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_samples_cut_between_reads_are_joined() {
        let samples: Vec<i16> = (0..100).map(|i| i * 300 - 15_000).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        for cut in 0..=bytes.len() {
            let mut decoder = PcmDecoder::new(PcmEncoding::S16Le, 16_000, 2);
            let mut got = Vec::new();
            decoder.decode(&bytes[..cut], &mut got);
            decoder.decode(&bytes[cut..], &mut got);
            let expected: Vec<f32> = samples.iter().map(|&s| s as f32 / 32768.0).collect();
            assert_eq!(got, expected, "cut at {cut}");
        }
        let mut decoder = PcmDecoder::new(PcmEncoding::F32Le, 16_000, 1);
        let mut got = Vec::new();
        for byte in [f32::NAN, 2.0, -0.5].iter().flat_map(|s| s.to_le_bytes()) {
            decoder.decode(&[byte], &mut got);
        }
        assert_eq!(got, vec![0.0, 1.0, -0.5]);
    }
}
