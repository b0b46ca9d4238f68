//! Raw PCM arriving live through a byte stream (a socket another program
//! writes into, such as a phone or smart-glasses companion relaying its
//! microphone), as a [`FrameSource`].
//!
//! The stream is treated as a live microphone: frames are handed out no
//! faster than real time (a writer that sends a whole recording at once is
//! held back by the socket's buffer), and when the writer goes quiet the
//! gap is heard as silence, so speech still ends and the timeline keeps up
//! with the wall clock. The reader must have a read timeout; a timeout is
//! how a gap is noticed.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::resample::{Framer, Resampler};
use crate::{AudioError, Frame, FrameSource, SAMPLE_RATE};

/// How samples are encoded in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmEncoding {
    /// Signed 16-bit little-endian.
    S16Le,
    /// 32-bit float little-endian, in [-1, 1].
    F32Le,
}

impl PcmEncoding {
    fn bytes(self) -> usize {
        match self {
            PcmEncoding::S16Le => 2,
            PcmEncoding::F32Le => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PcmEncoding::S16Le => "s16le",
            PcmEncoding::F32Le => "f32le",
        }
    }
}

/// Encoding, rate and channel count of a raw PCM stream, written
/// `ENCODING[:RATE[:CHANNELS]]`: `s16le` is 16 kHz mono, `s16le:48000:2`
/// is 48 kHz stereo (interleaved, downmixed and resampled on arrival).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmFormat {
    pub encoding: PcmEncoding,
    pub rate: u32,
    pub channels: u16,
}

/// Rates a stream may have, in Hz.
pub const PCM_RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;
/// Channel counts a stream may have.
pub const PCM_CHANNELS: std::ops::RangeInclusive<u16> = 1..=8;

impl PcmFormat {
    /// 16 kHz mono signed 16-bit: Hark's own rate, nothing to convert.
    pub const S16LE_16K_MONO: PcmFormat = PcmFormat {
        encoding: PcmEncoding::S16Le,
        rate: SAMPLE_RATE,
        channels: 1,
    };

    /// Bytes per interleaved sample frame.
    pub fn frame_bytes(&self) -> usize {
        self.encoding.bytes() * self.channels as usize
    }
}

impl fmt::Display for PcmFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.encoding.name(),
            self.rate,
            self.channels
        )
    }
}

impl FromStr for PcmFormat {
    type Err = AudioError;

    fn from_str(text: &str) -> Result<Self, AudioError> {
        let bad = |why: String| AudioError::PcmFormat {
            format: text.to_owned(),
            message: why,
        };
        let mut parts = text.trim().split(':');
        let encoding = match parts.next().unwrap_or("").to_ascii_lowercase().as_str() {
            "s16le" => PcmEncoding::S16Le,
            "f32le" => PcmEncoding::F32Le,
            other => {
                return Err(bad(format!(
                    "unknown encoding {other:?}; use s16le or f32le"
                )))
            }
        };
        let rate = number_in(parts.next(), SAMPLE_RATE, PCM_RATES, "rate (Hz)").map_err(bad)?;
        let channels = number_in(parts.next(), 1, PCM_CHANNELS, "channel count").map_err(bad)?;
        if parts.next().is_some() {
            return Err(bad("expected ENCODING[:RATE[:CHANNELS]]".into()));
        }
        Ok(PcmFormat {
            encoding,
            rate,
            channels,
        })
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

/// A live PCM stream as 16 kHz mono frames; see the module documentation.
pub struct PcmStreamSource<R> {
    reader: R,
    format: PcmFormat,
    label: String,
    resampler: Resampler,
    framer: Framer,
    /// Wall time of sample 0, set on the first `next_frame`.
    origin: Option<Instant>,
    bytes: Vec<u8>,
    /// Bytes of an incomplete sample frame, kept for the next read.
    partial: usize,
    decoded: Vec<f32>,
    resampled: Vec<f32>,
    ready: std::collections::VecDeque<Frame>,
    ended: bool,
    /// Silent frames inserted for gaps, in total.
    gap_frames: u64,
}

impl<R: Read + Send> PcmStreamSource<R> {
    /// `label` names the stream in logs ("companion app :1.42").
    pub fn new(
        reader: R,
        format: PcmFormat,
        frame_len: usize,
        label: impl Into<String>,
    ) -> Result<Self, AudioError> {
        Ok(Self {
            reader,
            format,
            label: label.into(),
            resampler: Resampler::new(format.rate, format.channels)?,
            framer: Framer::new(frame_len),
            origin: None,
            bytes: vec![0; READ_BYTES],
            partial: 0,
            decoded: Vec::new(),
            resampled: Vec::new(),
            ready: std::collections::VecDeque::new(),
            ended: false,
            gap_frames: 0,
        })
    }

    /// Silent frames that stood in for audio that did not arrive in time.
    pub fn gap_frames(&self) -> u64 {
        self.gap_frames
    }

    fn due(&self, frame_end: u64) -> Instant {
        self.origin.expect("set by next_frame")
            + Duration::from_secs_f64(frame_end as f64 / SAMPLE_RATE as f64)
    }

    /// Reads once (a timeout reads nothing).
    fn read_some(&mut self) -> Result<(), AudioError> {
        let n = match self.reader.read(&mut self.bytes[self.partial..]) {
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
            // The writer closed its end; a trailing partial sample is lost.
            self.ended = true;
            self.resampler.flush(&mut self.resampled)?;
            let mut frames = Vec::new();
            self.framer.push(&self.resampled, &mut frames);
            self.ready.extend(frames);
            self.ready.extend(self.framer.flush());
            return Ok(());
        }
        let available = self.partial + n;
        let frame_bytes = self.format.frame_bytes();
        let whole = available - available % frame_bytes;
        self.decoded.clear();
        match self.format.encoding {
            PcmEncoding::S16Le => self.decoded.extend(
                self.bytes[..whole]
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
            ),
            PcmEncoding::F32Le => self.decoded.extend(
                self.bytes[..whole]
                    .chunks_exact(4)
                    .map(|b| crate::full_scale(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            ),
        }
        self.bytes.copy_within(whole..available, 0);
        self.partial = available - whole;
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

impl<R: Read + Send> FrameSource for PcmStreamSource<R> {
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
        assert_eq!(
            "s16le".parse::<PcmFormat>().unwrap(),
            PcmFormat::S16LE_16K_MONO
        );
        assert_eq!(
            "F32LE:48000:2".parse::<PcmFormat>().unwrap(),
            PcmFormat {
                encoding: PcmEncoding::F32Le,
                rate: 48_000,
                channels: 2
            }
        );
        for (bad, needle) in [
            ("mp3", "unknown encoding"),
            ("s16le:0", "rate"),
            ("s16le:fast", "rate"),
            ("s16le:16000:0", "channel count"),
            ("s16le:16000:1:x", "ENCODING[:RATE[:CHANNELS]]"),
        ] {
            let message = bad.parse::<PcmFormat>().unwrap_err().to_string();
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
            PcmStreamSource::new(reader, PcmFormat::S16LE_16K_MONO, 160, "test").unwrap();
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
            PcmStreamSource::new(reader, PcmFormat::S16LE_16K_MONO, 320, "test").unwrap();
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
            PcmStreamSource::new(Silent, PcmFormat::S16LE_16K_MONO, 160, "test").unwrap();
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
        let format: PcmFormat = "f32le:48000:2".parse().unwrap();
        let bytes: Vec<u8> = (0..48_000 / 10)
            .flat_map(|_| [0.5f32, 0.5f32])
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut source = PcmStreamSource::new(Cursor::new(bytes), format, 160, "test").unwrap();
        let mut total = 0;
        while let Some(frame) = source.next_frame().unwrap() {
            total += frame.samples.len();
        }
        assert_eq!(total, 1600, "100 ms at 16 kHz");
    }
}
