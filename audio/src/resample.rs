//! Getting from whatever a device or file delivers (interleaved, any rate,
//! any channel count) to what the rest of Hark wants: 16 kHz mono `f32` in
//! fixed-length [`Frame`]s.
//!
//! The pipeline is [`Downmixer`] → rubato → [`Framer`], with [`Resampler`]
//! bundling the first two for streams and [`resample_mono`] doing the same for
//! a whole buffer (e.g. a reply to be played at a device's rate).
//!
//! Timing matters more than usual here: VAD and transcript timestamps are
//! sample indices, so output sample `n` must correspond to input time
//! `n / output_rate`. Rubato's filters delay their output by a fixed number of
//! samples; [`Resampler`] trims that delay off the front and, on
//! [`flush`](Resampler::flush), pushes silence through to recover the tail,
//! so the output has exactly `ceil(input_len * out_rate / in_rate)` samples.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Indexing, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use crate::{AudioError, Frame};

/// How much input rubato processes at a time. Each chunk waits until it is
/// complete and the FFT filter adds half a chunk of delay on top, so this sets
/// the streaming latency (~30 ms worst case at 20 ms), while a longer chunk
/// would only buy a slightly sharper anti-aliasing cutoff that speech does not
/// need.
const CHUNK_SECONDS_DIVISOR: usize = 50;

/// Rates with few common factors (44101 Hz, say) force a huge FFT block; past
/// this many seconds of input per block, the async sinc resampler is used
/// instead so latency stays bounded.
const MAX_FFT_BLOCK_SECONDS: f64 = 0.25;

/// Averages interleaved channels into mono. Keeps a partial frame between
/// calls, because a ring may hand over a sample count that is not a multiple
/// of the channel count.
#[derive(Debug, Clone)]
pub struct Downmixer {
    channels: usize,
    partial: Vec<f32>,
}

impl Downmixer {
    /// # Panics
    /// If `channels` is zero.
    pub fn new(channels: u16) -> Self {
        assert!(channels > 0, "cannot downmix zero channels");
        Self {
            channels: channels as usize,
            partial: Vec::with_capacity(channels as usize),
        }
    }

    pub fn channels(&self) -> u16 {
        self.channels as u16
    }

    /// Appends one mono sample per complete interleaved frame to `mono`.
    pub fn downmix_into(&mut self, interleaved: &[f32], mono: &mut Vec<f32>) {
        if self.channels == 1 {
            mono.extend_from_slice(interleaved);
            return;
        }
        let scale = 1.0 / self.channels as f32;
        let mut rest = interleaved;
        if !self.partial.is_empty() {
            let missing = (self.channels - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..missing]);
            rest = &rest[missing..];
            if self.partial.len() < self.channels {
                return;
            }
            mono.push(self.partial.iter().sum::<f32>() * scale);
            self.partial.clear();
        }
        let mut frames = rest.chunks_exact(self.channels);
        mono.extend(
            frames
                .by_ref()
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
        self.partial.extend_from_slice(frames.remainder());
    }

    /// Forgets a dangling partial frame (end of stream: it cannot be completed).
    pub fn reset(&mut self) {
        self.partial.clear();
    }
}

/// Streaming converter from interleaved samples at `input_rate` to mono at
/// `output_rate` (16 kHz unless built with [`Resampler::with_output_rate`]).
///
/// Feed it with [`process`](Self::process) as audio arrives; call
/// [`flush`](Self::flush) once at the end of the stream to get the tail.
pub struct Resampler {
    input_rate: u32,
    output_rate: u32,
    downmixer: Downmixer,
    mono: Vec<f32>,
    /// `None` when the rates match and samples pass straight through.
    engine: Option<Engine>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("input_rate", &self.input_rate)
            .field("output_rate", &self.output_rate)
            .field("channels", &self.downmixer.channels)
            .field("passthrough", &self.engine.is_none())
            .finish()
    }
}

impl Resampler {
    /// Converts `channels`-channel audio at `input_rate` to 16 kHz mono.
    pub fn new(input_rate: u32, channels: u16) -> Result<Self, AudioError> {
        Self::with_output_rate(input_rate, channels, crate::SAMPLE_RATE)
    }

    /// Converts `channels`-channel audio at `input_rate` to mono at
    /// `output_rate`.
    pub fn with_output_rate(
        input_rate: u32,
        channels: u16,
        output_rate: u32,
    ) -> Result<Self, AudioError> {
        if input_rate == 0 || output_rate == 0 {
            return Err(AudioError::Resample(format!(
                "cannot resample from {input_rate} Hz to {output_rate} Hz"
            )));
        }
        if channels == 0 {
            return Err(AudioError::Resample(
                "cannot resample audio with zero channels".into(),
            ));
        }
        let engine = if input_rate == output_rate {
            None
        } else {
            Some(Engine::new(input_rate, output_rate)?)
        };
        Ok(Self {
            input_rate,
            output_rate,
            downmixer: Downmixer::new(channels),
            mono: Vec::new(),
            engine,
        })
    }

    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    pub fn channels(&self) -> u16 {
        self.downmixer.channels()
    }

    /// True when the rates match, so samples are only downmixed.
    pub fn is_passthrough(&self) -> bool {
        self.engine.is_none()
    }

    /// Downmixes and resamples `interleaved`, appending whatever output is
    /// ready to `out`. Some input is held back until a full chunk has
    /// arrived, so output trails input by a few tens of milliseconds.
    pub fn process(&mut self, interleaved: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.mono.clear();
        self.downmixer.downmix_into(interleaved, &mut self.mono);
        match &mut self.engine {
            None => out.extend_from_slice(&self.mono),
            Some(engine) => engine.feed(&self.mono, out)?,
        }
        Ok(())
    }

    /// Ends the stream: emits everything still held back so the total output
    /// length is `ceil(input_len * output_rate / input_rate)`, then resets so
    /// the resampler can start a new, unrelated stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.downmixer.reset();
        match &mut self.engine {
            None => Ok(()),
            Some(engine) => engine.finish(out),
        }
    }
}

/// Rubato plus the bookkeeping that makes its output line up with its input.
struct Engine {
    input_rate: u32,
    output_rate: u32,
    inner: Box<dyn rubato::Resampler<f32>>,
    /// Mono input not yet handed to rubato (less than one chunk).
    pending: Vec<f32>,
    scratch_out: Vec<f32>,
    /// Output samples still to discard: rubato's filter delay.
    delay_left: usize,
    input_total: u64,
    output_total: u64,
}

impl Engine {
    fn new(input_rate: u32, output_rate: u32) -> Result<Self, AudioError> {
        let inner = build_rubato(input_rate, output_rate)?;
        let delay_left = inner.output_delay();
        let scratch_out = vec![0.0; inner.output_frames_max()];
        let pending = Vec::with_capacity(inner.input_frames_max() * 2);
        Ok(Self {
            input_rate,
            output_rate,
            inner,
            pending,
            scratch_out,
            delay_left,
            input_total: 0,
            output_total: 0,
        })
    }

    fn feed(&mut self, mono: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.pending.extend_from_slice(mono);
        self.input_total += mono.len() as u64;
        let mut consumed = 0;
        loop {
            let needed = self.inner.input_frames_next();
            if self.pending.len() - consumed < needed {
                break;
            }
            let chunk = &self.pending[consumed..consumed + needed];
            let (used, produced) = run_chunk(&mut *self.inner, chunk, None, &mut self.scratch_out)?;
            consumed += used;
            self.emit(produced, out, u64::MAX);
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let expected = expected_output_len(self.input_total, self.input_rate, self.output_rate);
        // The held-back partial chunk, padded with silence by rubato.
        if !self.pending.is_empty() {
            let partial = std::mem::take(&mut self.pending);
            let (_, produced) = run_chunk(
                &mut *self.inner,
                &partial,
                Some(partial.len()),
                &mut self.scratch_out,
            )?;
            self.emit(produced, out, expected);
            self.pending = partial;
            self.pending.clear();
        }
        // Then silence, until the filter delay has let the real tail out.
        while self.output_total < expected {
            let (_, produced) = run_chunk(&mut *self.inner, &[], Some(0), &mut self.scratch_out)?;
            if produced == 0 {
                return Err(AudioError::Resample(
                    "resampler produced no output while flushing".into(),
                ));
            }
            self.emit(produced, out, expected);
        }
        self.inner.reset();
        self.delay_left = self.inner.output_delay();
        self.input_total = 0;
        self.output_total = 0;
        Ok(())
    }

    /// Moves `produced` samples from the scratch buffer to `out`, dropping
    /// the filter delay first and never letting the total pass `limit`.
    fn emit(&mut self, produced: usize, out: &mut Vec<f32>, limit: u64) {
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let available = (produced - skip) as u64;
        let take = available.min(limit.saturating_sub(self.output_total)) as usize;
        out.extend_from_slice(&self.scratch_out[skip..skip + take]);
        self.output_total += take as u64;
    }
}

/// Picks rubato's synchronous FFT resampler (fast, high quality, fixed ratio)
/// unless the rate pair makes its block absurdly long.
fn build_rubato(
    input_rate: u32,
    output_rate: u32,
) -> Result<Box<dyn rubato::Resampler<f32>>, AudioError> {
    let (input_rate, output_rate) = (input_rate as usize, output_rate as usize);
    let chunk = (input_rate / CHUNK_SECONDS_DIVISOR).max(1);
    let gcd = greatest_common_divisor(input_rate, output_rate);
    let fft_block_in = chunk.div_ceil(input_rate / gcd) * (input_rate / gcd);
    let construction = |e: rubato::ResamplerConstructionError| {
        AudioError::Resample(format!(
            "cannot build a {input_rate} Hz -> {output_rate} Hz resampler: {e}"
        ))
    };
    if fft_block_in as f64 / input_rate as f64 <= MAX_FFT_BLOCK_SECONDS {
        let fft = Fft::<f32>::new_custom(
            input_rate,
            output_rate,
            chunk,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )
        .map_err(construction)?;
        Ok(Box::new(fft))
    } else {
        let parameters = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
            .oversampling_factor(256)
            .interpolation(SincInterpolationType::Cubic);
        let sinc = Async::<f32>::new_sinc(
            output_rate as f64 / input_rate as f64,
            1.0,
            &parameters,
            chunk,
            1,
            FixedAsync::Input,
        )
        .map_err(construction)?;
        Ok(Box::new(sinc))
    }
}

/// Runs one rubato call on mono `input` (all of it, or the first
/// `partial_len` samples padded with silence); returns (consumed, produced).
fn run_chunk(
    resampler: &mut dyn rubato::Resampler<f32>,
    input: &[f32],
    partial_len: Option<usize>,
    output: &mut [f32],
) -> Result<(usize, usize), AudioError> {
    let adapter_error = |e| AudioError::Resample(format!("buffer layout: {e}"));
    let input_adapter = InterleavedSlice::new(input, 1, input.len()).map_err(adapter_error)?;
    let output_len = output.len();
    let mut output_adapter =
        InterleavedSlice::new_mut(output, 1, output_len).map_err(adapter_error)?;
    let indexing = partial_len.map(|len| Indexing::new().partial_len(len));
    resampler
        .process_into_buffer(&input_adapter, &mut output_adapter, indexing.as_ref())
        .map_err(|e| AudioError::Resample(e.to_string()))
}

fn greatest_common_divisor(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Output samples that cover exactly the input's duration (rounded up).
fn expected_output_len(input_len: u64, input_rate: u32, output_rate: u32) -> u64 {
    (input_len as u128 * output_rate as u128).div_ceil(input_rate as u128) as u64
}

/// Resamples a whole mono buffer, e.g. a synthesized reply to a device's rate.
/// The result lines up in time with the input and has
/// `ceil(len * to_rate / from_rate)` samples; equal rates copy.
pub fn resample_mono(
    samples: &[f32],
    from_rate: u32,
    to_rate: u32,
) -> Result<Vec<f32>, AudioError> {
    let mut resampler = Resampler::with_output_rate(from_rate, 1, to_rate)?;
    let expected = expected_output_len(samples.len() as u64, from_rate.max(1), to_rate);
    let mut out = Vec::with_capacity(expected as usize);
    resampler.process(samples, &mut out)?;
    resampler.flush(&mut out)?;
    Ok(out)
}

/// Cuts a stream of 16 kHz mono samples into fixed-length [`Frame`]s,
/// stamping each with the index of its first sample.
#[derive(Debug, Clone)]
pub struct Framer {
    frame_len: usize,
    pending: Vec<f32>,
    next_start_sample: u64,
}

impl Framer {
    /// # Panics
    /// If `frame_len` is zero.
    pub fn new(frame_len: usize) -> Self {
        assert!(frame_len > 0, "frames must hold at least one sample");
        Self {
            frame_len,
            pending: Vec::with_capacity(frame_len),
            next_start_sample: 0,
        }
    }

    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Samples held back waiting to complete a frame.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// `start_sample` the next frame will carry.
    pub fn next_start_sample(&self) -> u64 {
        self.next_start_sample
    }

    /// Appends every frame `samples` completes to `frames`; the remainder
    /// waits for the next call.
    pub fn push(&mut self, mut samples: &[f32], frames: &mut Vec<Frame>) {
        if !self.pending.is_empty() {
            let missing = (self.frame_len - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..missing]);
            samples = &samples[missing..];
            if self.pending.len() < self.frame_len {
                return;
            }
            let full = std::mem::replace(&mut self.pending, Vec::with_capacity(self.frame_len));
            frames.push(self.stamp(full));
        }
        let mut chunks = samples.chunks_exact(self.frame_len);
        for chunk in chunks.by_ref() {
            let frame = self.stamp(chunk.to_vec());
            frames.push(frame);
        }
        self.pending.extend_from_slice(chunks.remainder());
    }

    /// Ends the stream: the held-back samples, zero-padded to a full frame,
    /// or `None` if nothing was held back.
    pub fn flush(&mut self) -> Option<Frame> {
        if self.pending.is_empty() {
            return None;
        }
        let mut last = std::mem::take(&mut self.pending);
        last.resize(self.frame_len, 0.0);
        Some(self.stamp(last))
    }

    fn stamp(&mut self, samples: Vec<f32>) -> Frame {
        let frame = Frame {
            start_sample: self.next_start_sample,
            samples,
        };
        self.next_start_sample += self.frame_len as u64;
        frame
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::f32::consts::PI;

    /// Interleaved sine, same in every channel.
    pub(crate) fn sine(
        freq: f32,
        rate: u32,
        seconds: f32,
        amplitude: f32,
        channels: u16,
    ) -> Vec<f32> {
        let frames = (rate as f32 * seconds).round() as usize;
        let mut out = Vec::with_capacity(frames * channels as usize);
        for n in 0..frames {
            let value = amplitude * (2.0 * PI * freq * n as f32 / rate as f32).sin();
            out.extend(std::iter::repeat_n(value, channels as usize));
        }
        out
    }

    /// Frequency estimated from upward zero crossings over the steady middle.
    fn dominant_frequency(samples: &[f32], rate: u32) -> f32 {
        let middle = &samples[samples.len() / 10..samples.len() * 9 / 10];
        let crossings: Vec<usize> = middle
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] <= 0.0 && w[1] > 0.0)
            .map(|(i, _)| i)
            .collect();
        let periods = (crossings.len() - 1) as f32;
        let span = (crossings[crossings.len() - 1] - crossings[0]) as f32;
        periods * rate as f32 / span
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
    }

    fn stream_through(resampler: &mut Resampler, input: &[f32], piece: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            resampler.process(chunk, &mut out).unwrap();
        }
        resampler.flush(&mut out).unwrap();
        out
    }

    #[test]
    fn stereo_downmix_averages_channels() {
        let mut downmixer = Downmixer::new(2);
        let mut mono = Vec::new();
        downmixer.downmix_into(&[1.0, 0.0, 0.5, 0.5, -1.0, 1.0], &mut mono);
        assert_eq!(mono, [0.5, 0.5, 0.0]);
    }

    #[test]
    fn downmix_carries_a_split_frame_over() {
        let mut downmixer = Downmixer::new(3);
        let mut mono = Vec::new();
        downmixer.downmix_into(&[0.3, 0.3], &mut mono);
        assert!(mono.is_empty());
        downmixer.downmix_into(&[0.3, 0.6, 0.6, 0.6, 0.9], &mut mono);
        assert_eq!(mono.len(), 2);
        assert!((mono[0] - 0.3).abs() < 1e-6 && (mono[1] - 0.6).abs() < 1e-6);
        downmixer.downmix_into(&[0.9, 0.9], &mut mono);
        assert!((mono[2] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn sine_keeps_frequency_amplitude_and_length() {
        for rate in [44_100u32, 48_000, 8_000, 22_050, 16_000] {
            let input = sine(440.0, rate, 1.0, 0.5, 1);
            let mut resampler = Resampler::new(rate, 1).unwrap();
            let out = stream_through(&mut resampler, &input, 1000);
            let expected_len = (input.len() as u64 * 16_000).div_ceil(rate as u64) as usize;
            assert_eq!(out.len(), expected_len, "length from {rate} Hz");
            let freq = dominant_frequency(&out, 16_000);
            assert!((freq - 440.0).abs() < 1.0, "{rate} Hz: measured {freq} Hz");
            let level = rms(&out[1600..out.len() - 1600]);
            let expected = 0.5 / 2f32.sqrt();
            assert!(
                (level - expected).abs() < 0.01,
                "{rate} Hz: rms {level}, expected {expected}"
            );
        }
    }

    #[test]
    fn stereo_stream_is_downmixed_then_resampled() {
        let input = sine(440.0, 44_100, 0.5, 0.5, 2);
        let mut resampler = Resampler::new(44_100, 2).unwrap();
        let out = stream_through(&mut resampler, &input, 777);
        assert_eq!(out.len(), 8000);
        let freq = dominant_frequency(&out, 16_000);
        assert!((freq - 440.0).abs() < 1.0, "measured {freq} Hz");
    }

    /// Index of the first sample whose magnitude passes half the peak.
    fn onset(samples: &[f32]) -> usize {
        let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        samples.iter().position(|s| s.abs() > peak * 0.5).unwrap()
    }

    #[test]
    fn events_stay_at_their_time() {
        // A click at 0.3 s and a tone burst from 0.6 s must come out at
        // 0.3 s and 0.6 s, whatever the input rate and feed granularity.
        for (rate, piece) in [
            (44_100u32, 441usize),
            (48_000, 4096),
            (8_000, 37),
            (44_101, 1000),
        ] {
            let mut input = vec![0.0f32; rate as usize];
            input[(rate as f32 * 0.3) as usize] = 1.0;
            let burst_start = (rate as f32 * 0.6) as usize;
            for (i, s) in input[burst_start..].iter_mut().enumerate() {
                *s = 0.8 * (2.0 * PI * 1000.0 * i as f32 / rate as f32).sin();
            }
            let mut resampler = Resampler::new(rate, 1).unwrap();
            let out = stream_through(&mut resampler, &input, piece);
            let click = onset(&out[..8000]) as f32 / 16.0;
            let burst = (8000 + onset(&out[8000..])) as f32 / 16.0;
            assert!(
                (click - 300.0).abs() <= 2.0,
                "{rate} Hz: click at {click} ms"
            );
            assert!(
                (burst - 600.0).abs() <= 2.0,
                "{rate} Hz: burst at {burst} ms"
            );
        }
    }

    #[test]
    fn streaming_output_trails_input_by_little() {
        let mut resampler = Resampler::new(48_000, 1).unwrap();
        let mut out = Vec::new();
        let input = sine(300.0, 48_000, 1.0, 0.5, 1);
        for chunk in input.chunks(480) {
            resampler.process(chunk, &mut out).unwrap();
        }
        // Before any flush, at most ~40 ms of the 1 s may still be held back.
        assert!(out.len() >= 16_000 - 640, "only {} samples out", out.len());
    }

    #[test]
    fn resampler_is_reusable_after_flush() {
        let input = sine(440.0, 48_000, 0.25, 0.5, 1);
        let mut resampler = Resampler::new(48_000, 1).unwrap();
        let first = stream_through(&mut resampler, &input, 960);
        let second = stream_through(&mut resampler, &input, 960);
        assert_eq!(first, second);
    }

    #[test]
    fn matching_rate_passes_through() {
        let input = sine(440.0, 16_000, 0.1, 0.5, 1);
        let mut resampler = Resampler::new(16_000, 1).unwrap();
        assert!(resampler.is_passthrough());
        assert_eq!(stream_through(&mut resampler, &input, 100), input);
        assert_eq!(resample_mono(&input, 16_000, 16_000).unwrap(), input);
    }

    #[test]
    fn whole_buffer_resampling_to_device_rates() {
        let input = sine(440.0, 16_000, 0.5, 0.5, 1);
        for rate in [48_000u32, 44_100, 22_050] {
            let out = resample_mono(&input, 16_000, rate).unwrap();
            assert_eq!(out.len(), (8000 * rate as usize).div_ceil(16_000));
            let freq = dominant_frequency(&out, rate);
            assert!((freq - 440.0).abs() < 1.0, "to {rate} Hz: {freq} Hz");
        }
        assert!(resample_mono(&[], 16_000, 48_000).unwrap().is_empty());
        assert!(matches!(
            resample_mono(&input, 0, 48_000),
            Err(AudioError::Resample(_))
        ));
    }

    #[test]
    fn framer_cuts_stamps_and_pads() {
        let mut framer = Framer::new(160);
        let mut frames = Vec::new();
        let input: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        // Uneven pieces, including ones smaller than a frame.
        for piece in [
            input[..50].to_vec(),
            input[50..70].to_vec(),
            input[70..1000].to_vec(),
        ] {
            framer.push(&piece, &mut frames);
        }
        assert_eq!(frames.len(), 6);
        assert_eq!(framer.pending_len(), 40);
        let last = framer.flush().unwrap();
        assert!(framer.flush().is_none());
        frames.push(last);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.samples.len(), 160);
            assert_eq!(frame.start_sample, i as u64 * 160);
        }
        // Every input sample appears once, in order, then only padding.
        let joined: Vec<f32> = frames.iter().flat_map(|f| f.samples.clone()).collect();
        assert_eq!(&joined[..1000], &input[..]);
        assert!(joined[1000..].iter().all(|&s| s == 0.0));
        assert_eq!(joined.len(), 1120);
    }

    #[test]
    fn framer_without_remainder_has_nothing_to_flush() {
        let mut framer = Framer::new(320);
        let mut frames = Vec::new();
        framer.push(&[0.1; 640], &mut frames);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].end_sample(), 640);
        assert!(framer.flush().is_none());
    }
}
