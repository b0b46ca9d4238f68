//! WAV files as a [`FrameSource`] (so everything downstream can be tested
//! and benchmarked without a sound card) and as a sink for recordings.
//!
//! Any rate and channel count is accepted; integer PCM of 8/16/24/32 bits and
//! 32-bit float are decoded (that is what hound reads). Audio is downmixed,
//! resampled to 16 kHz and framed exactly like device audio, so a file and a
//! microphone are indistinguishable to the pipeline — including, with
//! [`Pacing::Realtime`], their timing.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::resample::{Framer, Resampler};
use crate::{AudioError, Frame, FrameSource, SAMPLE_RATE};

/// How fast a [`WavSource`] hands out frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// As a live microphone would: each frame becomes available when the
    /// wall clock, measured from the first `next_frame` call, reaches the
    /// frame's end. Deadlines come from that one origin, so sleeping late
    /// once does not push every later frame back.
    Realtime,
    /// Frames as fast as they can be decoded (tests, batch transcription).
    AsFastAsPossible,
}

/// Decoded audio is read from disk in blocks of this many milliseconds.
const READ_BLOCK_MS: usize = 20;

/// Reads a WAV file block by block as interleaved `f32` in [-1, 1].
struct WavDecoder {
    path: PathBuf,
    reader: hound::WavReader<BufReader<File>>,
    spec: hound::WavSpec,
    samples_read: u64,
    /// Set once the data ran out early, so the reader is not asked again.
    truncated: bool,
}

impl WavDecoder {
    fn open(path: &Path) -> Result<Self, AudioError> {
        let reader = hound::WavReader::open(path).map_err(|e| AudioError::Wav {
            path: path.to_path_buf(),
            message: describe_hound_error(&e),
        })?;
        let spec = reader.spec();
        let bad_header = |message: String| AudioError::Wav {
            path: path.to_path_buf(),
            message,
        };
        if spec.channels == 0 {
            return Err(bad_header("header declares zero channels".into()));
        }
        if spec.sample_rate == 0 {
            return Err(bad_header("header declares a sample rate of 0 Hz".into()));
        }
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 8 | 16 | 24 | 32) | (hound::SampleFormat::Float, 32) => {}
            (format, bits) => {
                return Err(bad_header(format!(
                    "unsupported sample format: {bits}-bit {} (supported: 8/16/24/32-bit \
                     integer PCM, 32-bit float)",
                    if format == hound::SampleFormat::Int {
                        "integer"
                    } else {
                        "float"
                    }
                )))
            }
        }
        if reader.duration() == 0 {
            return Err(AudioError::EmptyWav {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            spec,
            samples_read: 0,
            truncated: false,
        })
    }

    /// Appends up to `max_samples` interleaved samples to `out`; returns how
    /// many, 0 at the end of the data.
    fn read_block(&mut self, max_samples: usize, out: &mut Vec<f32>) -> Result<usize, AudioError> {
        if self.truncated {
            return Ok(0);
        }
        let before = out.len();
        let result = match self.spec.sample_format {
            hound::SampleFormat::Float => self
                .reader
                .samples::<f32>()
                .take(max_samples)
                .try_for_each(|s| s.map(|s| out.push(crate::full_scale(s)))),
            hound::SampleFormat::Int => {
                // Full scale of a signed `bits`-bit integer maps to 1.0.
                let scale = 1.0 / (1u64 << (self.spec.bits_per_sample - 1)) as f32;
                self.reader
                    .samples::<i32>()
                    .take(max_samples)
                    .try_for_each(|s| s.map(|s| out.push(s as f32 * scale)))
            }
        };
        let read = out.len() - before;
        self.samples_read += read as u64;
        match result {
            Ok(()) => Ok(read),
            // Recorders that were killed mid-write leave a header promising
            // more data than the file holds; what is there is still good.
            Err(hound::Error::IoError(e)) if is_end_of_data(&e) => {
                tracing::warn!(
                    path = %self.path.display(),
                    samples = self.samples_read,
                    "WAV file is shorter than its header says; using the samples present"
                );
                self.truncated = true;
                // Drop a partial interleaved frame so channels stay aligned.
                let channels = self.spec.channels as u64;
                let ragged = (self.samples_read % channels) as usize;
                out.truncate(out.len() - ragged.min(read));
                self.samples_read -= ragged as u64;
                Ok(read - ragged.min(read))
            }
            Err(e) => Err(AudioError::Wav {
                path: self.path.clone(),
                message: format!(
                    "read failed after {} samples: {}",
                    self.samples_read,
                    describe_hound_error(&e)
                ),
            }),
        }
    }

    fn block_len(&self) -> usize {
        (self.spec.sample_rate as usize * READ_BLOCK_MS / 1000).max(1) * self.spec.channels as usize
    }
}

/// Whether a read error just means the data stopped early. Hound reports a
/// short read as a plain `Other` error with this message, std as
/// `UnexpectedEof`.
fn is_end_of_data(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::UnexpectedEof
        || (error.kind() == std::io::ErrorKind::Other
            && error.to_string() == "Failed to read enough bytes.")
}

fn describe_hound_error(error: &hound::Error) -> String {
    match error {
        hound::Error::FormatError(reason) => format!("not a valid WAV file ({reason})"),
        hound::Error::Unsupported => "unsupported WAV encoding (supported: 8/16/24/32-bit \
                                      integer PCM, 32-bit float)"
            .into(),
        other => other.to_string(),
    }
}

/// A WAV file delivered as 16 kHz mono frames.
pub struct WavSource {
    decoder: WavDecoder,
    resampler: Resampler,
    framer: Framer,
    pacing: Pacing,
    /// Set on the first `next_frame`: the wall-clock time of sample 0.
    origin: Option<Instant>,
    ready: VecDeque<Frame>,
    input_done: bool,
    decoded: Vec<f32>,
    resampled: Vec<f32>,
    framed: Vec<Frame>,
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("path", &self.decoder.path)
            .field("file_sample_rate", &self.decoder.spec.sample_rate)
            .field("file_channels", &self.decoder.spec.channels)
            .field("frame_len", &self.framer.frame_len())
            .field("pacing", &self.pacing)
            .finish_non_exhaustive()
    }
}

impl WavSource {
    /// Opens `path` for framing into `frame_len`-sample frames.
    ///
    /// # Panics
    /// If `frame_len` is zero.
    pub fn open(
        path: impl AsRef<Path>,
        frame_len: usize,
        pacing: Pacing,
    ) -> Result<Self, AudioError> {
        let decoder = WavDecoder::open(path.as_ref())?;
        let resampler = Resampler::new(decoder.spec.sample_rate, decoder.spec.channels)?;
        Ok(Self {
            decoder,
            resampler,
            framer: Framer::new(frame_len),
            pacing,
            origin: None,
            ready: VecDeque::new(),
            input_done: false,
            decoded: Vec::new(),
            resampled: Vec::new(),
            framed: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.decoder.path
    }

    /// Rate of the file itself (frames are always at [`SAMPLE_RATE`]).
    pub fn file_sample_rate(&self) -> u32 {
        self.decoder.spec.sample_rate
    }

    pub fn file_channels(&self) -> u16 {
        self.decoder.spec.channels
    }

    /// Length of the audio according to the header.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(
            self.decoder.reader.duration() as f64 / self.decoder.spec.sample_rate as f64,
        )
    }

    /// Decodes the next block into `ready`, or finishes the stream.
    fn refill(&mut self) -> Result<(), AudioError> {
        self.decoded.clear();
        self.resampled.clear();
        let block = self.decoder.block_len();
        let read = self.decoder.read_block(block, &mut self.decoded)?;
        if read == 0 {
            self.resampler.flush(&mut self.resampled)?;
            self.framer.push(&self.resampled, &mut self.framed);
            self.framed.extend(self.framer.flush());
            self.input_done = true;
        } else {
            self.resampler.process(&self.decoded, &mut self.resampled)?;
            self.framer.push(&self.resampled, &mut self.framed);
        }
        self.ready.extend(self.framed.drain(..));
        Ok(())
    }

    fn wait_until_captured(&mut self, frame: &Frame) {
        if self.pacing != Pacing::Realtime {
            return;
        }
        let origin = *self.origin.get_or_insert_with(Instant::now);
        let due = origin + Duration::from_secs_f64(frame.end_sample() as f64 / SAMPLE_RATE as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

impl FrameSource for WavSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        if self.pacing == Pacing::Realtime && self.origin.is_none() {
            self.origin = Some(Instant::now());
        }
        loop {
            if let Some(frame) = self.ready.pop_front() {
                self.wait_until_captured(&frame);
                return Ok(Some(frame));
            }
            if self.input_done {
                return Ok(None);
            }
            self.refill()?;
        }
    }

    fn frame_len(&self) -> usize {
        self.framer.frame_len()
    }

    fn describe(&self) -> String {
        format!("file {}", self.decoder.path.display())
    }

    /// A recording cannot hear Hark's speaker.
    fn hears_local_playback(&self) -> bool {
        false
    }
}

/// Reads a whole WAV file as 16 kHz mono, aligned in time with the file and
/// `ceil(frames * 16000 / rate)` samples long.
pub fn read_wav_16k_mono(path: impl AsRef<Path>) -> Result<Vec<f32>, AudioError> {
    let mut decoder = WavDecoder::open(path.as_ref())?;
    let spec = decoder.spec;
    let mut resampler = Resampler::new(spec.sample_rate, spec.channels)?;
    // The header's length, but never more than the file's bytes can hold:
    // a corrupt header must not reserve gigabytes.
    let file_frames = std::fs::metadata(path.as_ref()).map_or(0, |m| m.len())
        / (spec.channels as u64 * (spec.bits_per_sample as u64).div_ceil(8)).max(1);
    let frames = (decoder.reader.duration() as u64).min(file_frames);
    let expected = frames * SAMPLE_RATE as u64 / spec.sample_rate as u64;
    let mut out = Vec::with_capacity(expected as usize + 1);
    let mut decoded = Vec::new();
    let block = decoder.block_len() * 50;
    loop {
        decoded.clear();
        if decoder.read_block(block, &mut decoded)? == 0 {
            break;
        }
        resampler.process(&decoded, &mut out)?;
    }
    resampler.flush(&mut out)?;
    Ok(out)
}

/// Sample encoding of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavSampleFormat {
    /// 16-bit integer PCM: what every tool plays; clips outside [-1, 1].
    Int16,
    /// 32-bit float: lossless for pipeline samples.
    Float32,
}

/// Writes mono `f32` samples to a WAV file at any rate.
pub struct WavSink {
    path: PathBuf,
    format: WavSampleFormat,
    writer: hound::WavWriter<BufWriter<File>>,
}

impl WavSink {
    pub fn create(
        path: impl AsRef<Path>,
        sample_rate: u32,
        format: WavSampleFormat,
    ) -> Result<Self, AudioError> {
        let path = path.as_ref().to_path_buf();
        let (bits_per_sample, sample_format) = match format {
            WavSampleFormat::Int16 => (16, hound::SampleFormat::Int),
            WavSampleFormat::Float32 => (32, hound::SampleFormat::Float),
        };
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate,
            bits_per_sample,
            sample_format,
        };
        let writer = hound::WavWriter::create(&path, spec).map_err(|e| AudioError::WavWrite {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path,
            format,
            writer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        let result = match self.format {
            WavSampleFormat::Float32 => samples
                .iter()
                .try_for_each(|&s| self.writer.write_sample(s)),
            WavSampleFormat::Int16 => samples.iter().try_for_each(|&s| {
                let quantized = (s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16;
                self.writer.write_sample(quantized)
            }),
        };
        result.map_err(|e| AudioError::WavWrite {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Samples written so far.
    pub fn len(&self) -> u32 {
        self.writer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the final header lengths. Dropping the sink does this too, but
    /// silently ignores errors; call this to find out about a full disk.
    pub fn finalize(self) -> Result<(), AudioError> {
        let path = self.path;
        self.writer.finalize().map_err(|e| AudioError::WavWrite {
            path,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resample::tests::sine;

    fn write_int(path: &Path, rate: u32, channels: u16, bits: u16, interleaved: &[f32]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        let full_scale = ((1i64 << (bits - 1)) - 1) as f32;
        for &s in interleaved {
            writer
                .write_sample((s * full_scale).round() as i32)
                .unwrap();
        }
        writer.finalize().unwrap();
    }

    fn write_float(path: &Path, rate: u32, channels: u16, interleaved: &[f32]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for &s in interleaved {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
    }

    fn collect(source: &mut impl FrameSource) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = source.next_frame().unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn peak(samples: &[f32]) -> f32 {
        samples.iter().fold(0.0, |m, s| m.max(s.abs()))
    }

    #[test]
    fn every_supported_encoding_decodes_to_16k_frames() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, u32, u16, Option<u16>)> = vec![
            ("i8.wav", 16_000, 1, Some(8)),
            ("i16.wav", 16_000, 1, Some(16)),
            ("i24.wav", 48_000, 1, Some(24)),
            ("i32.wav", 22_050, 1, Some(32)),
            ("f32.wav", 8_000, 1, None),
            ("stereo.wav", 44_100, 2, Some(16)),
        ];
        for (name, rate, channels, bits) in cases {
            let path = dir.path().join(name);
            let audio = sine(440.0, rate, 0.5, 0.5, channels);
            match bits {
                Some(bits) => write_int(&path, rate, channels, bits, &audio),
                None => write_float(&path, rate, channels, &audio),
            }
            let mut source = WavSource::open(&path, 320, Pacing::AsFastAsPossible).unwrap();
            assert_eq!(source.file_sample_rate(), rate);
            assert_eq!(source.frame_len(), 320);
            assert!(source.describe().contains(name));
            let frames = collect(&mut source);
            // 0.5 s at 16 kHz is exactly 25 frames of 320.
            assert_eq!(frames.len(), 25, "{name}");
            for (i, frame) in frames.iter().enumerate() {
                assert_eq!(frame.start_sample, i as u64 * 320, "{name}");
                assert_eq!(frame.samples.len(), 320, "{name}");
            }
            let joined: Vec<f32> = frames.iter().flat_map(|f| f.samples.clone()).collect();
            let level = peak(&joined[800..7200]);
            let tolerance = if bits == Some(8) { 0.03 } else { 0.01 };
            assert!((level - 0.5).abs() < tolerance, "{name}: peak {level}");
            assert!(
                source.next_frame().unwrap().is_none(),
                "{name}: stays ended"
            );
        }
    }

    #[test]
    fn a_float_file_of_nan_and_huge_values_reads_as_clipped_finite_audio() {
        // Found by the fuzz tests: the resampler's FFT panicked on these.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wild.wav");
        let wild: Vec<f32> = [f32::NAN, f32::INFINITY, 3.0e38, -7.0, 0.25]
            .iter()
            .copied()
            .cycle()
            .take(44_100 / 10)
            .collect();
        write_float(&path, 44_100, 1, &wild);
        let samples = read_wav_16k_mono(&path).unwrap();
        assert_eq!(samples.len(), 1600);
        assert!(samples.iter().all(|s| s.is_finite() && s.abs() <= 1.5));
    }

    #[test]
    fn partial_last_frame_is_zero_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.wav");
        // 1000 samples = 6 full frames of 160 + 40.
        write_float(&path, 16_000, 1, &vec![0.25; 1000]);
        let frames = collect(&mut WavSource::open(&path, 160, Pacing::AsFastAsPossible).unwrap());
        assert_eq!(frames.len(), 7);
        let last = &frames[6];
        assert_eq!(last.start_sample, 960);
        assert!(last.samples[..40].iter().all(|&s| s == 0.25));
        assert!(last.samples[40..].iter().all(|&s| s == 0.0));
    }

    #[test]
    fn whole_file_reader_matches_length_and_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo44k.wav");
        write_int(&path, 44_100, 2, 16, &sine(440.0, 44_100, 1.0, 0.5, 2));
        let samples = read_wav_16k_mono(&path).unwrap();
        assert_eq!(samples.len(), 16_000);
        assert!((peak(&samples[1600..14_400]) - 0.5).abs() < 0.01);
    }

    #[test]
    fn realtime_pacing_follows_the_wall_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("half_second.wav");
        write_int(&path, 16_000, 1, 16, &sine(440.0, 16_000, 0.5, 0.5, 1));
        let mut source = WavSource::open(&path, 320, Pacing::Realtime).unwrap();
        let started = Instant::now();
        let first = source.next_frame().unwrap().unwrap();
        // A 20 ms frame is not available before it has been "captured".
        assert!(started.elapsed() >= Duration::from_millis(18));
        assert_eq!(first.start_sample, 0);
        let rest = collect(&mut source);
        let elapsed = started.elapsed();
        assert_eq!(rest.len(), 24);
        assert!(elapsed >= Duration::from_millis(450), "took {elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    }

    #[test]
    fn text_file_is_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "this is not audio, just some text\n").unwrap();
        let error = WavSource::open(&path, 320, Pacing::AsFastAsPossible).unwrap_err();
        assert!(matches!(error, AudioError::Wav { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("not a valid WAV"), "{message}");
        assert!(read_wav_16k_mono(&path).is_err());
    }

    #[test]
    fn empty_wav_is_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.wav");
        write_int(&path, 16_000, 1, 16, &[]);
        let error = WavSource::open(&path, 320, Pacing::AsFastAsPossible).unwrap_err();
        assert!(matches!(error, AudioError::EmptyWav { .. }), "{error:?}");
        assert!(error.to_string().contains(&path.display().to_string()));
        assert!(matches!(
            read_wav_16k_mono(&path),
            Err(AudioError::EmptyWav { .. })
        ));
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere.wav");
        let error = WavSource::open(&path, 320, Pacing::AsFastAsPossible).unwrap_err();
        assert!(matches!(error, AudioError::Wav { .. }), "{error:?}");
        assert!(error.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn truncated_file_yields_the_samples_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.wav");
        write_int(&path, 16_000, 1, 16, &vec![0.5; 16_000]);
        // Chop the file mid-data (and mid-sample) without fixing the header.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 8001]).unwrap();
        let samples = read_wav_16k_mono(&path).unwrap();
        assert_eq!(samples.len(), 16_000 - 4001);
    }

    #[test]
    fn sink_round_trips_through_the_source() {
        let dir = tempfile::tempdir().unwrap();
        for format in [WavSampleFormat::Int16, WavSampleFormat::Float32] {
            let path = dir.path().join(format!("{format:?}.wav"));
            let audio = sine(440.0, 16_000, 0.25, 0.5, 1);
            let mut sink = WavSink::create(&path, 16_000, format).unwrap();
            sink.write(&audio[..1000]).unwrap();
            sink.write(&audio[1000..]).unwrap();
            assert_eq!(sink.len() as usize, audio.len());
            sink.finalize().unwrap();
            let back = read_wav_16k_mono(&path).unwrap();
            assert_eq!(back.len(), audio.len());
            let worst = audio
                .iter()
                .zip(&back)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst < 1e-3, "{format:?}: error {worst}");
        }
    }

    #[test]
    fn sink_clips_int16_and_writes_any_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loud.wav");
        let mut sink = WavSink::create(&path, 48_000, WavSampleFormat::Int16).unwrap();
        sink.write(&[2.0, -2.0, 0.0]).unwrap();
        sink.finalize().unwrap();
        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().sample_rate, 48_000);
        let raw: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(raw, [i16::MAX, -i16::MAX, 0]);
    }

    #[test]
    fn sink_in_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/out.wav");
        let error = WavSink::create(&path, 16_000, WavSampleFormat::Int16)
            .err()
            .unwrap();
        assert!(matches!(error, AudioError::WavWrite { .. }), "{error:?}");
        assert!(error.to_string().contains(&path.display().to_string()));
    }
}
