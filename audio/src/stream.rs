//! Audio arriving live through a byte stream (a socket another program
//! writes into, such as a phone or smart-glasses companion relaying its
//! microphone), as a [`FrameSource`]: raw PCM, or Opus or LC3 packets
//! (decoded by [`crate::codec`]).
//!
//! The stream is treated as a live microphone: frames are handed out no
//! faster than real time (a writer that sends a whole recording at once is
//! held back by the socket's buffer), and when the writer goes quiet the
//! gap is heard as silence, so speech still ends and the timeline keeps up
//! with the wall clock. The reader must have a read timeout; a timeout is
//! how a gap is noticed. A bad packet never ends the stream: it is
//! concealed, and logged once.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::codec::lc3::{LC3_FRAME_US, LC3_RATES};
use crate::codec::opus::OPUS_RATES;
use crate::codec::{self, StreamDecoder};
use crate::resample::{Framer, Resampler};
use crate::{AudioError, Frame, FrameSource, SAMPLE_RATE};

/// How raw PCM samples are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmEncoding {
    /// Signed 16-bit little-endian.
    S16Le,
    /// 32-bit float little-endian, in [-1, 1].
    F32Le,
}

impl PcmEncoding {
    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            PcmEncoding::S16Le => 2,
            PcmEncoding::F32Le => 4,
        }
    }
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEncoding {
    /// Raw interleaved samples.
    Pcm(PcmEncoding),
    /// Mono Opus packets, each preceded by its length (u16 LE).
    Opus,
    /// Mono LC3 frames of `frame_us` each, each preceded by its length
    /// (u16 LE), as in the payload of liblc3's `.lc3` files.
    Lc3 { frame_us: u32 },
}

impl StreamEncoding {
    fn name(self) -> &'static str {
        match self {
            StreamEncoding::Pcm(PcmEncoding::S16Le) => "s16le",
            StreamEncoding::Pcm(PcmEncoding::F32Le) => "f32le",
            StreamEncoding::Opus => "opus",
            StreamEncoding::Lc3 { .. } => "lc3",
        }
    }
}

/// Encoding, rate and channel count of a stream. Written
/// `ENCODING[:RATE[:CHANNELS]]` for raw PCM: `s16le` is 16 kHz mono,
/// `s16le:48000:2` is 48 kHz stereo (interleaved, downmixed and resampled
/// on arrival); `opus[:RATE]` for Opus (mono; the rate the sender encodes
/// at, 8000, 12000, 16000, 24000 or 48000); `lc3[:RATE[:FRAME_US]]` for
/// LC3 (mono; 8000, 16000, 24000, 32000 or 48000 Hz, 7500 or 10000 µs
/// frames). The rate is 16000 and LC3's frames 10000 µs when left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFormat {
    pub encoding: StreamEncoding,
    pub rate: u32,
    pub channels: u16,
}

/// Rates a raw PCM stream may have, in Hz.
pub const PCM_RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;
/// Channel counts a raw PCM stream may have.
pub const PCM_CHANNELS: std::ops::RangeInclusive<u16> = 1..=8;

impl StreamFormat {
    /// 16 kHz mono signed 16-bit: Hark's own rate, nothing to convert.
    pub const S16LE_16K_MONO: StreamFormat = StreamFormat {
        encoding: StreamEncoding::Pcm(PcmEncoding::S16Le),
        rate: SAMPLE_RATE,
        channels: 1,
    };
}

impl fmt::Display for StreamFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.encoding.name();
        match self.encoding {
            StreamEncoding::Pcm(_) => write!(f, "{name}:{}:{}", self.rate, self.channels),
            StreamEncoding::Opus => write!(f, "{name}:{}", self.rate),
            StreamEncoding::Lc3 { frame_us } => write!(f, "{name}:{}:{frame_us}", self.rate),
        }
    }
}

impl FromStr for StreamFormat {
    type Err = AudioError;

    fn from_str(text: &str) -> Result<Self, AudioError> {
        let bad = |why: String| AudioError::StreamFormat {
            format: text.to_owned(),
            message: why,
        };
        let mut parts = text.trim().split(':');
        let encoding = parts.next().unwrap_or("").to_ascii_lowercase();
        let (rate, third) = (parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(bad(
                "expected ENCODING[:RATE[:CHANNELS]], opus[:RATE] or lc3[:RATE[:FRAME_US]]".into(),
            ));
        }
        let pcm = |encoding| -> Result<StreamFormat, String> {
            Ok(StreamFormat {
                encoding: StreamEncoding::Pcm(encoding),
                rate: number_in(rate, SAMPLE_RATE, PCM_RATES, "rate (Hz)")?,
                channels: number_in(third, 1, PCM_CHANNELS, "channel count")?,
            })
        };
        let format = match encoding.as_str() {
            "s16le" => pcm(PcmEncoding::S16Le),
            "f32le" => pcm(PcmEncoding::F32Le),
            "opus" => one_of(rate, SAMPLE_RATE, &OPUS_RATES, "Opus rate (Hz)").and_then(|rate| {
                // A channel count is accepted only as the one Opus stream
                // Hark takes: mono.
                number_in(third, 1, 1..=1, "Opus channel count (mono only)")?;
                Ok(StreamFormat {
                    encoding: StreamEncoding::Opus,
                    rate,
                    channels: 1,
                })
            }),
            "lc3" => one_of(rate, SAMPLE_RATE, &LC3_RATES, "LC3 rate (Hz)").and_then(|rate| {
                Ok(StreamFormat {
                    encoding: StreamEncoding::Lc3 {
                        frame_us: one_of(third, 10_000, &LC3_FRAME_US, "LC3 frame duration (µs)")?,
                    },
                    rate,
                    channels: 1,
                })
            }),
            other => Err(format!(
                "unknown encoding {other:?}; use s16le, f32le, opus or lc3"
            )),
        };
        format.map_err(bad)
    }
}

/// `text` as a number in `range`, or `default` when absent.
fn number_in<T>(
    text: Option<&str>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            format!(
                "{what} {text:?} must be a whole number from {} to {}",
                range.start(),
                range.end()
            )
        })
}

/// `text` as one of `allowed`, or `default` when absent.
fn one_of(text: Option<&str>, default: u32, allowed: &[u32], what: &str) -> Result<u32, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<u32>()
        .ok()
        .filter(|n| allowed.contains(n))
        .ok_or_else(|| {
            let allowed: Vec<String> = allowed.iter().map(u32::to_string).collect();
            format!("{what} {text:?} must be one of {}", allowed.join(", "))
        })
}

/// Encodes samples in [-1, 1] as s16le bytes, what a stream of the
/// default format carries.
pub fn to_s16le(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect()
}

/// How long the writer may fall behind the wall clock before the missing
/// audio is taken as silence: room for network jitter without inventing
/// gaps in a stream that is merely bursty.
const GAP_GRACE: Duration = Duration::from_millis(300);

/// Bytes read per call.
const READ_BYTES: usize = 8192;

/// A live stream as 16 kHz mono frames; see the module documentation.
pub struct StreamSource<R> {
    reader: R,
    format: StreamFormat,
    label: String,
    decoder: Box<dyn StreamDecoder>,
    resampler: Resampler,
    framer: Framer,
    /// Wall time of sample 0, set on the first `next_frame`.
    origin: Option<Instant>,
    bytes: Vec<u8>,
    decoded: Vec<f32>,
    resampled: Vec<f32>,
    ready: std::collections::VecDeque<Frame>,
    ended: bool,
    /// The first concealed packet has been logged (the rest are counted).
    told_of_losses: bool,
    /// Silent frames inserted for gaps, in total.
    gap_frames: u64,
}

impl<R: Read + Send> StreamSource<R> {
    /// `label` names the stream in logs ("companion app :1.42").
    pub fn new(
        reader: R,
        format: StreamFormat,
        frame_len: usize,
        label: impl Into<String>,
    ) -> Result<Self, AudioError> {
        let decoder = codec::decoder(format).map_err(|source| AudioError::Codec {
            format: format.to_string(),
            source,
        })?;
        Ok(Self {
            reader,
            format,
            label: label.into(),
            resampler: Resampler::new(decoder.output_rate(), decoder.channels())?,
            decoder,
            framer: Framer::new(frame_len),
            origin: None,
            bytes: vec![0; READ_BYTES],
            decoded: Vec::new(),
            resampled: Vec::new(),
            ready: std::collections::VecDeque::new(),
            ended: false,
            told_of_losses: false,
            gap_frames: 0,
        })
    }

    /// Silent frames that stood in for audio that did not arrive in time.
    pub fn gap_frames(&self) -> u64 {
        self.gap_frames
    }

    /// Packets decoded and concealed so far.
    pub fn losses(&self) -> &codec::Losses {
        self.decoder.losses()
    }

    fn due(&self, frame_end: u64) -> Instant {
        self.origin.expect("set by next_frame")
            + Duration::from_secs_f64(frame_end as f64 / SAMPLE_RATE as f64)
    }

    /// Reads once (a timeout reads nothing).
    fn read_some(&mut self) -> Result<(), AudioError> {
        let n = match self.reader.read(&mut self.bytes) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(AudioError::Stopped(format!("{}: {e}", self.label))),
        };
        self.resampled.clear();
        if n == 0 {
            // The writer closed its end; a trailing partial sample or
            // packet is lost.
            self.ended = true;
            let losses = self.decoder.losses();
            if losses.concealed > 0 {
                tracing::info!(
                    stream = %self.label,
                    "stream closed; {} of {} packets were concealed",
                    losses.concealed,
                    losses.concealed + losses.decoded
                );
            }
            self.resampler.flush(&mut self.resampled)?;
            let mut frames = Vec::new();
            self.framer.push(&self.resampled, &mut frames);
            self.ready.extend(frames);
            self.ready.extend(self.framer.flush());
            return Ok(());
        }
        self.decoded.clear();
        self.decoder.decode(&self.bytes[..n], &mut self.decoded);
        if !self.told_of_losses {
            if let Some(why) = &self.decoder.losses().first {
                // Once per stream: a lossy link would fill the log.
                tracing::warn!(
                    stream = %self.label,
                    "concealing a bad packet ({why}); the stream goes on, \
                     and further bad packets are only counted"
                );
                self.told_of_losses = true;
            }
        }
        self.resampler.process(&self.decoded, &mut self.resampled)?;
        let mut frames = Vec::new();
        self.framer.push(&self.resampled, &mut frames);
        self.ready.extend(frames);
        Ok(())
    }

    /// Stands in a silent frame for audio that is late beyond the grace.
    fn gap_frame(&mut self) -> Option<Frame> {
        let len = self.framer.frame_len();
        let next_end = self.framer.next_start_sample() + len as u64;
        if Instant::now() < self.due(next_end) + GAP_GRACE {
            return None;
        }
        // Whatever was held back mid-frame is older than the gap: keep it
        // at its place on the timeline, padded out.
        let frame = self.framer.flush().unwrap_or_else(|| {
            let mut frames = Vec::new();
            self.framer.push(&vec![0.0; len], &mut frames);
            frames.pop().expect("one whole frame")
        });
        self.gap_frames += 1;
        Some(frame)
    }
}

impl<R: Read + Send> FrameSource for StreamSource<R> {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        self.origin.get_or_insert_with(Instant::now);
        loop {
            if let Some(frame) = self.ready.pop_front() {
                // Never ahead of the wall clock: a live microphone cannot
                // deliver the future.
                let due = self.due(frame.end_sample());
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            // Already too late: catch up with silence before waiting on the
            // writer again, so a long quiet spell does not leave the
            // timeline behind the wall clock.
            if let Some(frame) = self.gap_frame() {
                return Ok(Some(frame));
            }
            self.read_some()?;
        }
    }

    fn frame_len(&self) -> usize {
        self.framer.frame_len()
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.label, self.format)
    }

    fn hears_local_playback(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn formats_parse_with_defaults_and_name_what_is_wrong() {
        let parse = |text: &str| text.parse::<StreamFormat>().unwrap();
        assert_eq!(parse("s16le"), StreamFormat::S16LE_16K_MONO);
        assert_eq!(
            parse("F32LE:48000:2"),
            StreamFormat {
                encoding: StreamEncoding::Pcm(PcmEncoding::F32Le),
                rate: 48_000,
                channels: 2
            }
        );
        let opus = |rate| StreamFormat {
            encoding: StreamEncoding::Opus,
            rate,
            channels: 1,
        };
        assert_eq!(parse("opus"), opus(16_000));
        assert_eq!(parse("opus:48000"), opus(48_000));
        assert_eq!(parse("Opus:12000:1"), opus(12_000));
        let lc3 = |rate, frame_us| StreamFormat {
            encoding: StreamEncoding::Lc3 { frame_us },
            rate,
            channels: 1,
        };
        assert_eq!(parse("lc3"), lc3(16_000, 10_000));
        assert_eq!(parse("lc3:48000:7500"), lc3(48_000, 7_500));
        assert_eq!(parse("lc3:24000"), lc3(24_000, 10_000));
        // What is shown as the input device, and parses back the same.
        for text in ["s16le:44100:2", "opus:24000", "lc3:32000:7500"] {
            assert_eq!(parse(text).to_string(), text);
        }
        for (bad, needle) in [
            ("mp3", "unknown encoding"),
            ("s16le:0", "rate"),
            ("s16le:fast", "rate"),
            ("s16le:16000:0", "channel count"),
            ("s16le:16000:1:x", "ENCODING[:RATE[:CHANNELS]]"),
            ("opus:44100", "one of 8000, 12000, 16000, 24000, 48000"),
            ("opus:16000:2", "mono only"),
            ("lc3:44100", "LC3 rate"),
            ("lc3:16000:5000", "one of 7500, 10000"),
            ("lc3:16000:10000:1", "lc3[:RATE[:FRAME_US]]"),
        ] {
            let message = bad.parse::<StreamFormat>().unwrap_err().to_string();
            assert!(message.contains(needle), "{bad}: {message}");
            assert!(message.contains(bad), "{bad}: {message}");
        }
    }

    fn s16(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// Hands out its bytes a few at a time, splitting samples across reads.
    struct Dribble(Cursor<Vec<u8>>);

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn a_stream_becomes_frames_in_order_until_it_closes() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 30) as i16).collect();
        let reader = Dribble(Cursor::new(s16(&samples)));
        let mut source =
            StreamSource::new(reader, StreamFormat::S16LE_16K_MONO, 160, "test").unwrap();
        let mut got = Vec::new();
        let mut starts = Vec::new();
        while let Some(frame) = source.next_frame().unwrap() {
            starts.push(frame.start_sample);
            got.extend(frame.samples);
        }
        assert_eq!(starts, (0..7).map(|k| k * 160).collect::<Vec<u64>>());
        assert_eq!(got.len(), 7 * 160, "the last frame is zero-padded");
        for (i, &s) in samples.iter().enumerate() {
            assert_eq!(got[i], s as f32 / 32768.0, "sample {i}");
        }
        assert!(got[1000..].iter().all(|&x| x == 0.0));
        assert_eq!(source.gap_frames(), 0);
    }

    /// Times out on every read after its bytes run out, like a socket
    /// whose writer has gone quiet.
    struct Quiet(Cursor<Vec<u8>>);

    impl Read for Quiet {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(buf)? {
                0 => {
                    std::thread::sleep(Duration::from_millis(20));
                    Err(ErrorKind::TimedOut.into())
                }
                n => Ok(n),
            }
        }
    }

    #[test]
    fn a_quiet_writer_is_heard_as_silence_in_real_time() {
        let reader = Quiet(Cursor::new(s16(&[1000; 480])));
        let mut source =
            StreamSource::new(reader, StreamFormat::S16LE_16K_MONO, 320, "test").unwrap();
        let started = Instant::now();
        let first = source.next_frame().unwrap().unwrap();
        assert!(first.samples.iter().all(|&x| x > 0.0));
        let second = source.next_frame().unwrap().unwrap();
        assert_eq!(second.start_sample, 320);
        assert!(second.samples[..160].iter().all(|&x| x > 0.0));
        assert!(second.samples[160..].iter().all(|&x| x == 0.0));
        let third = source.next_frame().unwrap().unwrap();
        assert_eq!(third.start_sample, 640);
        assert!(third.samples.iter().all(|&x| x == 0.0));
        assert_eq!(source.gap_frames(), 2);
        // 60 ms of audio plus the grace: silence is not invented early.
        assert!(started.elapsed() >= GAP_GRACE);
    }

    /// Nothing to read, ever; each read waits out a long timeout.
    struct Silent;

    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(100));
            Err(ErrorKind::WouldBlock.into())
        }
    }

    #[test]
    fn a_long_quiet_spell_keeps_up_with_the_wall_clock() {
        let mut source =
            StreamSource::new(Silent, StreamFormat::S16LE_16K_MONO, 160, "test").unwrap();
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < Duration::from_millis(800) {
            last = source.next_frame().unwrap();
        }
        // 10 ms frames, yet reads that block for 100 ms: the timeline is
        // still within the grace (plus one read) of the wall clock.
        let heard_ms = last.unwrap().end_sample() / 16;
        let behind = started.elapsed().as_millis() as u64 - heard_ms;
        assert!(
            behind <= (GAP_GRACE.as_millis() + 150) as u64,
            "{behind} ms behind"
        );
    }

    #[test]
    fn stereo_48k_is_downmixed_and_resampled() {
        let format: StreamFormat = "f32le:48000:2".parse().unwrap();
        let bytes: Vec<u8> = (0..48_000 / 10)
            .flat_map(|_| [0.5f32, 0.5f32])
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut source = StreamSource::new(Cursor::new(bytes), format, 160, "test").unwrap();
        let mut total = 0;
        while let Some(frame) = source.next_frame().unwrap() {
            total += frame.samples.len();
        }
        assert_eq!(total, 1600, "100 ms at 16 kHz");
    }

    /// A recording-like signal: a tone at 16 kHz.
    fn tone(seconds: f32) -> Vec<f32> {
        (0..(16_000.0 * seconds) as usize)
            .map(|i| 0.4 * (2.0 * std::f32::consts::PI * 300.0 * i as f32 / 16_000.0).sin())
            .collect()
    }

    fn all_frames<R: Read + Send>(mut source: StreamSource<R>) -> (Vec<Frame>, codec::Losses) {
        let mut frames = Vec::new();
        while let Some(frame) = source.next_frame().unwrap() {
            frames.push(frame);
        }
        (frames, source.losses().clone())
    }

    #[test]
    fn opus_and_lc3_streams_become_frames_and_bad_packets_do_not_end_them() {
        use crate::codec::framing::length_prefixed;
        let audio = tone(0.5);
        let opus_packets = codec::opus::encode(&audio, 20.0, 24_000, None).unwrap();
        let lc3_frames = codec::lc3::Lc3Encoder::new(16_000, 10_000, 40)
            .unwrap()
            .encode(&audio);
        for (format, mut packets) in [
            ("opus:16000", opus_packets),
            ("lc3:16000:10000", lc3_frames),
        ] {
            let count = packets.len();
            packets[3] = vec![0xde, 0xad, 0xbe, 0xef];
            let mut bytes = length_prefixed(&packets);
            // A length that is absurd for both, then a stream cut mid-packet.
            bytes.extend(60_000u16.to_le_bytes());
            bytes.extend(vec![0x42; 60_000]);
            bytes.extend(length_prefixed([&packets[5]]));
            bytes.truncate(bytes.len() - 1);
            let source = StreamSource::new(
                Dribble(Cursor::new(bytes)),
                format.parse().unwrap(),
                160,
                "t",
            )
            .unwrap();
            let (frames, losses) = all_frames(source);
            assert_eq!(
                losses.decoded + losses.concealed,
                count as u64 + 1,
                "{format}"
            );
            assert!(losses.concealed >= 2, "{format}: {losses:?}");
            let samples: usize = frames.iter().map(|f| f.samples.len()).sum();
            // Every packet's duration is there, the absurd one's included
            // (Opus holds a missing packet back for the next one, which never
            // comes here).
            assert!(
                (8_000..=8_000 + 160).contains(&samples),
                "{format}: {samples} samples"
            );
            let loud = frames
                .iter()
                .filter(|f| f.samples.iter().any(|s| s.abs() > 0.1));
            assert!(loud.count() > 40, "{format}: the tone is heard");
        }
    }
}
