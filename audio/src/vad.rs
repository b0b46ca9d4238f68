//! Voice activity detection and utterance segmentation.
//!
//! A [`Segmenter`] turns a stream of fixed-length 16 kHz [`Frame`]s into
//! [`VadEvent`]s: "speech started" as soon as an onset is confirmed (so a
//! later barge-in feature can react quickly), then either a finished
//! [`Utterance`] with its audio, or a note that the burst was too short to be
//! worth transcribing.
//!
//! # Algorithm
//!
//! A per-frame classifier ([`SpeechClassifier`], normally WebRTC's GMM VAD
//! via [`WebRtcClassifier`]) says speech / not speech for every frame. Its
//! raw decisions flicker, so the segmenter adds hysteresis on both edges:
//!
//! * **Onset.** While idle, the last `ceil(onset_ms / frame_ms)` decisions
//!   are kept in a sliding window. An onset is confirmed once the window holds
//!   enough speech frames: all of them for windows shorter than 8 frames, and
//!   one miss allowed per full 8 frames beyond that (so 10 ms frames tolerate the odd
//!   dropped decision inside a real syllable). The speech start is then the
//!   first sample of the first speech frame in the window, not the frame that
//!   confirmed it, so the confirmation delay costs latency, never audio.
//! * **End.** While in speech, `ceil(end_silence_ms / frame_ms)` consecutive
//!   non-speech frames end the utterance; any speech frame restarts that
//!   count. The speech end is the last sample of the last speech frame before
//!   that silence.
//! * **Too short.** If the speech part (start to end, pauses included) is
//!   shorter than `min_speech_ms`, the consumer gets
//!   [`VadEvent::SpeechDiscarded`] instead of an utterance, so every
//!   [`VadEvent::SpeechStart`] is answered by exactly one of
//!   `SpeechEnd`/`SpeechDiscarded`.
//! * **Too long.** Once the speech part would exceed `max_utterance_ms`, the
//!   utterance is force-ended at its last speech frame
//!   ([`Utterance::forced_end`]) and a new one starts at the very next speech
//!   frame without onset confirmation (we are mid-speech) and without
//!   pre-roll that would repeat audio the previous utterance already carried.
//!   A continuation is never discarded as too short: it is the tail of real
//!   speech. This also bounds the damage of loud stationary noise (fans),
//!   which WebRTC's VAD happily calls speech for as long as it lasts.
//!
//! Timestamps are decided at frame granularity but are exact sample indexes
//! (from [`Frame::start_sample`]), so they line up with the audio.
//!
//! # Audio kept
//!
//! The classifier reliably misses the first 100–200 ms of many utterances
//! (unvoiced onsets like /s/, /f/, /h/ and plosive bursts carry little of
//! the low-frequency energy it keys on), so each utterance starts
//! `pre_roll_ms` before the detected speech start, clamped at the oldest
//! audio available (sample 0 at stream start) and at the end of the previous
//! emitted utterance so no audio is transcribed twice. It ends up to
//! [`TRAIL_PAD_MS`] after the speech end (taken from the trailing silence) so
//! the recogniser hears the decay of the last word.
//!
//! Memory is bounded: recent audio lives in a fixed-capacity history ring of
//! `pre_roll_ms` plus the onset window, and an open utterance can hold at
//! most `pre_roll_ms + max_utterance_ms + end_silence_ms` of audio.
//!
//! # Defaults, and why
//!
//! Measured against libfvad (the C code under `webrtc-vad`) at 16 kHz:
//!
//! * `aggressiveness = 3` ("very aggressive"): the costly failure for an
//!   assistant is a false positive, which wastes a Whisper run and invites
//!   hallucinated text ("Thank you."). The misses mode 3 adds are soft onsets
//!   (recovered by pre-roll) and short dips inside speech (bridged by the end
//!   hysteresis).
//! * `frame_ms = 30`: WebRTC's steadiest decisions and the fewest calls; 30 ms
//!   granularity is far finer than any pause we care about.
//! * `pre_roll_ms = 300`: covers the 100–200 ms of missed onset with margin.
//! * `onset_ms = 150` for dictation: WebRTC smears a 5 ms click into 3–4
//!   speech frames (90–120 ms) and flags the first ~100 ms of any non-silent
//!   stream while it initialises; 150 ms rejects both, yet is shorter than a
//!   syllable. A conversation takes 90 ms: an interruption silences Hark
//!   only once its onset is confirmed, and the barge-in rule, not the VAD,
//!   decides whether a click was the user.
//! * `end_silence_ms = 300` in a conversation ([`VadConfig::default`]):
//!   every millisecond of it is reply latency, and a pause mid-sentence that
//!   splits a turn is joined back when the user goes on before Hark answers.
//!   Dictation ([`VadConfig::dictation`]) waits 600 ms, longer than most
//!   pauses inside a sentence (commas, breaths, hesitations, typically under
//!   500 ms), so a sentence stays one utterance. WebRTC also holds "speech"
//!   for ~60–90 ms after voicing stops, which adds to both.
//! * `min_speech_ms = 250`: shorter than the briefest one-word command
//!   ("yes", "stop", "no" ≈ 250–400 ms in isolation), longer than clicks,
//!   knocks and the startup artefact.
//! * `max_utterance_ms = 28_000`: with pre-roll and trailing pad an utterance
//!   is at most 28.5 s, inside one 30 s Whisper window.
//!
//! # Threads
//!
//! [`WebRtcClassifier`] is `Send` (but not `Sync`): the libfvad state it owns
//! is plain heap memory with no thread affinity. A [`Segmenter`] is as
//! `Send` as its classifier.

use std::collections::VecDeque;
use std::fmt;

use hark_config::{doc, InvalidValue, KeyDoc, Section, Settings};
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, SAMPLE_RATE};

/// Audio kept after the speech end so the recogniser hears the last word
/// decay; taken from the trailing silence, so it never exceeds
/// `end_silence_ms`.
pub const TRAIL_PAD_MS: u32 = 200;

/// Samples per millisecond at [`SAMPLE_RATE`].
const SAMPLES_PER_MS: u64 = SAMPLE_RATE as u64 / 1000;

fn ms_to_samples(ms: u32) -> u64 {
    u64::from(ms) * SAMPLES_PER_MS
}

fn samples_to_secs(samples: u64) -> f64 {
    samples as f64 / f64::from(SAMPLE_RATE)
}

/// Failure while segmenting.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("invalid VAD setting: {0}")]
    Config(#[from] InvalidValue),
    #[error(
        "VAD frame at sample {start_sample} has {got} samples; vad.frame_ms = {frame_ms} needs exactly {expected}"
    )]
    FrameLength {
        start_sample: u64,
        got: usize,
        expected: usize,
        frame_ms: u32,
    },
    #[error("VAD classifier: {0}")]
    Classifier(String),
}

/// Tuning for [`Segmenter`], and the `[vad]` section of Hark's
/// configuration. Durations are in milliseconds and are rounded up to whole
/// frames. See the module docs for why each default was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadConfig {
    /// WebRTC VAD mode, 0 (least aggressive, most speech) ..= 3 (most
    /// aggressive, fewest false positives).
    pub aggressiveness: u8,
    /// Classifier frame length: 10, 20 or 30 (WebRTC supports nothing else).
    pub frame_ms: u32,
    /// Audio kept before the detected speech start.
    pub pre_roll_ms: u32,
    /// Non-speech needed to end an utterance.
    pub end_silence_ms: u32,
    /// Speech shorter than this is reported as discarded, not as an utterance.
    pub min_speech_ms: u32,
    /// (Mostly) speech needed to confirm an onset; filters clicks.
    pub onset_ms: u32,
    /// Longest speech part of one utterance before it is force-split.
    pub max_utterance_ms: u32,
}

/// The conversation's endpointing, which is what Hark mostly does.
impl Default for VadConfig {
    fn default() -> Self {
        Self {
            end_silence_ms: 300,
            onset_ms: 90,
            ..Self::dictation()
        }
    }
}

impl VadConfig {
    /// Endpointing for dictation (`hark listen`): a longer silence ends an
    /// utterance and a longer onset starts one, since nobody waits for a
    /// reply.
    pub fn dictation() -> Self {
        Self {
            aggressiveness: 3,
            frame_ms: 30,
            pre_roll_ms: 300,
            end_silence_ms: 600,
            min_speech_ms: 250,
            onset_ms: 150,
            max_utterance_ms: 28_000,
        }
    }

    /// Samples per frame (160, 320 or 480).
    pub fn frame_len(&self) -> usize {
        ms_to_samples(self.frame_ms) as usize
    }

    fn frames_for(&self, ms: u32) -> usize {
        ms.div_ceil(self.frame_ms) as usize
    }
}

impl Settings for VadConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        use hark_config::check_range;
        check_range("aggressiveness", self.aggressiveness, 0, 3)?;
        if ![10, 20, 30].contains(&self.frame_ms) {
            return Err(InvalidValue::new("frame_ms", self.frame_ms, "10, 20 or 30"));
        }
        // Below 200 ms the pre-roll no longer covers the onsets WebRTC
        // misses; the upper bounds keep buffers small and catch unit mix-ups
        // (seconds typed as milliseconds or the reverse).
        check_range("pre_roll_ms", self.pre_roll_ms, 200, 2_000)?;
        check_range("end_silence_ms", self.end_silence_ms, 100, 5_000)?;
        check_range("onset_ms", self.onset_ms, 10, 1_000)?;
        check_range("max_utterance_ms", self.max_utterance_ms, 1_000, 60_000)?;
        check_range(
            "min_speech_ms",
            self.min_speech_ms,
            0,
            self.max_utterance_ms.min(5_000),
        )
    }
}

impl Section for VadConfig {
    const DOC: &'static str = "Voice activity detection: where an utterance starts and ends \
         (WebRTC VAD). Durations are in milliseconds, rounded up to whole frames.";
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "aggressiveness",
            "How readily sound counts as speech: 0 (most speech, most false alarms) \
             to 3 (fewest false alarms).",
        ),
        doc("frame_ms", "Classifier frame length: 10, 20 or 30."),
        doc(
            "pre_roll_ms",
            "Audio kept from before the detected start, so the first sound is not \
             lost. 200 to 2000.",
        ),
        doc(
            "end_silence_ms",
            "Silence that ends an utterance. Shorter answers sooner but may cut a \
             pause mid-sentence. 100 to 5000.",
        ),
        doc(
            "min_speech_ms",
            "Utterances with less speech than this are ignored (coughs, clicks). \
             0 to 5000, at most max_utterance_ms.",
        ),
        doc(
            "onset_ms",
            "Speech needed before an utterance starts; filters short noises. \
             10 to 1000.",
        ),
        doc(
            "max_utterance_ms",
            "Longer speech is split (one Whisper window is 30 s). 1000 to 60000.",
        ),
    ];
}

/// Per-frame speech / non-speech decision on 16 kHz mono `i16` audio.
pub trait SpeechClassifier {
    /// `frame` is one whole frame (`VadConfig::frame_len` samples).
    fn is_speech(&mut self, frame: &[i16]) -> Result<bool, VadError>;
}

impl<C: SpeechClassifier + ?Sized> SpeechClassifier for Box<C> {
    fn is_speech(&mut self, frame: &[i16]) -> Result<bool, VadError> {
        (**self).is_speech(frame)
    }
}

/// WebRTC's GMM voice activity detector (libfvad via `webrtc-vad`) at
/// 16 kHz. Accepts 160, 320 or 480-sample frames (10, 20, 30 ms).
pub struct WebRtcClassifier {
    vad: webrtc_vad::Vad,
    aggressiveness: u8,
}

// SAFETY: `webrtc_vad::Vad` is `!Send` only because it holds a raw pointer
// to its libfvad instance. That instance is heap memory owned exclusively by
// this value (freed in `Vad`'s `Drop`), holds no thread-local or global
// state, and is only touched through `&mut self`, so moving it to another
// thread is sound. It is deliberately not `Sync`.
unsafe impl Send for WebRtcClassifier {}

impl WebRtcClassifier {
    /// `aggressiveness` 0..=3 maps to libfvad's quality, low-bitrate,
    /// aggressive and very-aggressive modes.
    pub fn new(aggressiveness: u8) -> Result<Self, InvalidValue> {
        use webrtc_vad::VadMode;
        let mode = match aggressiveness {
            0 => VadMode::Quality,
            1 => VadMode::LowBitrate,
            2 => VadMode::Aggressive,
            3 => VadMode::VeryAggressive,
            got => return Err(InvalidValue::new("aggressiveness", got, "between 0 and 3")),
        };
        let vad = webrtc_vad::Vad::new_with_rate_and_mode(webrtc_vad::SampleRate::Rate16kHz, mode);
        Ok(Self {
            vad,
            aggressiveness,
        })
    }

    pub fn from_config(config: &VadConfig) -> Result<Self, InvalidValue> {
        Self::new(config.aggressiveness)
    }

    pub fn aggressiveness(&self) -> u8 {
        self.aggressiveness
    }
}

impl fmt::Debug for WebRtcClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRtcClassifier")
            .field("aggressiveness", &self.aggressiveness)
            .finish_non_exhaustive()
    }
}

impl SpeechClassifier for WebRtcClassifier {
    fn is_speech(&mut self, frame: &[i16]) -> Result<bool, VadError> {
        // `webrtc-vad` indexes `frame[0]` before checking the length, so an
        // empty slice would panic instead of erroring.
        if !matches!(frame.len(), 160 | 320 | 480) {
            return Err(VadError::Classifier(format!(
                "webrtc-vad needs 160, 320 or 480 samples at 16 kHz (got {})",
                frame.len()
            )));
        }
        self.vad.is_voice_segment(frame).map_err(|()| {
            VadError::Classifier(format!(
                "webrtc-vad rejected a {}-sample frame",
                frame.len()
            ))
        })
    }
}

/// What the segmenter reports.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// An onset was confirmed; speech started at this sample.
    SpeechStart { at_sample: u64 },
    /// The speech that started at `SpeechStart` ended and is long enough.
    SpeechEnd(Utterance),
    /// The speech that started at `at_sample` (same value as its
    /// `SpeechStart`) ended shorter than `min_speech_ms`; no audio follows.
    SpeechDiscarded { at_sample: u64 },
}

/// One segmented utterance and its audio.
#[derive(Clone, PartialEq)]
pub struct Utterance {
    /// First sample of the first speech frame.
    pub speech_start_sample: u64,
    /// One past the last sample of the last speech frame.
    pub speech_end_sample: u64,
    /// Index of `samples[0]`: the speech start minus the pre-roll, clamped
    /// at the oldest audio available and at the previous utterance's end.
    pub audio_start_sample: u64,
    /// 16 kHz mono audio from `audio_start_sample` to `speech_end_sample`
    /// plus up to [`TRAIL_PAD_MS`] of the silence that followed.
    pub samples: Vec<f32>,
    /// True when `max_utterance_ms` cut this utterance while speech went on;
    /// the next utterance continues it seamlessly.
    pub forced_end: bool,
}

impl Utterance {
    /// Length of the speech part in seconds.
    pub fn duration_secs(&self) -> f64 {
        samples_to_secs(self.speech_end_sample - self.speech_start_sample)
    }

    /// Speech start, in seconds since the source started.
    pub fn start_secs(&self) -> f64 {
        samples_to_secs(self.speech_start_sample)
    }

    /// Speech end, in seconds since the source started.
    pub fn end_secs(&self) -> f64 {
        samples_to_secs(self.speech_end_sample)
    }

    /// One past the index of the last sample in `samples`.
    pub fn audio_end_sample(&self) -> u64 {
        self.audio_start_sample + self.samples.len() as u64
    }
}

// Hand-written so logs show the shape, not half a million samples.
impl fmt::Debug for Utterance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Utterance")
            .field("speech_start_sample", &self.speech_start_sample)
            .field("speech_end_sample", &self.speech_end_sample)
            .field("audio_start_sample", &self.audio_start_sample)
            .field("samples", &format_args!("[{} samples]", self.samples.len()))
            .field("forced_end", &self.forced_end)
            .finish()
    }
}

/// The most recent audio, in a ring of fixed capacity.
struct History {
    samples: VecDeque<f32>,
    capacity: usize,
    /// Index one past `samples.back()`.
    end: u64,
}

impl History {
    fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity,
            end: 0,
        }
    }

    fn start(&self) -> u64 {
        self.end - self.samples.len() as u64
    }

    fn push(&mut self, frame: &Frame) {
        if self.samples.is_empty() {
            self.end = frame.start_sample;
        }
        let overflow = (self.samples.len() + frame.samples.len()).saturating_sub(self.capacity);
        self.samples.drain(..overflow.min(self.samples.len()));
        let keep_from = frame.samples.len().saturating_sub(self.capacity);
        self.samples.extend(&frame.samples[keep_from..]);
        self.end = frame.end_sample();
    }

    /// Audio from `from` (clamped to what is held) to the newest sample.
    fn copy_from(&self, from: u64) -> (u64, Vec<f32>) {
        let from = from.clamp(self.start(), self.end);
        let skip = (from - self.start()) as usize;
        (from, self.samples.range(skip..).copied().collect())
    }

    fn clear(&mut self) {
        self.samples.clear();
    }
}

/// An utterance in progress.
struct Open {
    speech_start: u64,
    audio_start: u64,
    /// One past the last sample of the latest speech frame.
    last_speech_end: u64,
    silent_frames: usize,
    /// Audio from `audio_start` to the newest frame's end.
    audio: Vec<f32>,
    /// Started by a forced split: exempt from `min_speech_ms`.
    continuation: bool,
}

enum State {
    /// Waiting for an onset: `(frame start, is speech)` of the latest frames.
    Idle {
        window: VecDeque<(u64, bool)>,
    },
    Speech(Open),
}

/// Splits a frame stream into utterances. See the module docs.
pub struct Segmenter<C: SpeechClassifier> {
    config: VadConfig,
    classifier: C,
    frame_len: usize,
    onset_frames: usize,
    onset_needed: usize,
    end_frames: usize,
    pre_roll: u64,
    trail_pad: u64,
    min_speech: u64,
    max_speech: u64,
    history: History,
    state: State,
    /// Where the next frame must start; a jump means the source lost or
    /// repeated audio.
    expected_start: Option<u64>,
    /// End of the last emitted utterance's audio: a later pre-roll never
    /// reaches back past it, so no audio is transcribed twice.
    emitted_until: u64,
    /// Reused `i16` conversion buffer.
    pcm: Vec<i16>,
}

impl Segmenter<WebRtcClassifier> {
    /// A segmenter using WebRTC's VAD at `config.aggressiveness`.
    pub fn webrtc(config: VadConfig) -> Result<Self, InvalidValue> {
        let classifier = WebRtcClassifier::from_config(&config)?;
        Self::new(config, classifier)
    }
}

impl<C: SpeechClassifier> Segmenter<C> {
    /// Validates `config` and sets up an idle segmenter.
    pub fn new(config: VadConfig, classifier: C) -> Result<Self, InvalidValue> {
        config.validate().map_err(|e| e.within("vad"))?;
        let frame_len = config.frame_len();
        let onset_frames = config.frames_for(config.onset_ms);
        let pre_roll = ms_to_samples(config.pre_roll_ms);
        // The speech start can be a whole onset window before the frame that
        // confirms it, and the pre-roll reaches back from there.
        let history_len = pre_roll as usize + onset_frames * frame_len;
        Ok(Self {
            frame_len,
            onset_frames,
            onset_needed: onset_frames - onset_frames / 8,
            end_frames: config.frames_for(config.end_silence_ms),
            pre_roll,
            trail_pad: ms_to_samples(TRAIL_PAD_MS),
            min_speech: ms_to_samples(config.min_speech_ms),
            max_speech: ms_to_samples(config.max_utterance_ms),
            history: History::new(history_len),
            state: State::Idle {
                window: VecDeque::with_capacity(onset_frames),
            },
            expected_start: None,
            emitted_until: 0,
            pcm: Vec::with_capacity(frame_len),
            config,
            classifier,
        })
    }

    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// Samples every pushed frame must have.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// The open utterance's audio so far, pre-roll included (for a partial
    /// transcript while the user is still talking); `None` outside speech.
    pub fn speech_so_far(&self) -> Option<&[f32]> {
        match &self.state {
            State::Speech(open) => Some(&open.audio),
            State::Idle { .. } => None,
        }
    }

    /// In an utterance whose latest frames are not speech: where its speech
    /// last ended and how many samples of non-speech have followed. The
    /// utterance ends here if the silence reaches `end_silence_ms`.
    pub fn pausing(&self) -> Option<(u64, u64)> {
        match &self.state {
            State::Speech(open) if open.silent_frames > 0 => {
                let held_end = open.audio_start + open.audio.len() as u64;
                Some((open.last_speech_end, held_end - open.last_speech_end))
            }
            _ => None,
        }
    }

    /// True between a `SpeechStart` and its `SpeechEnd`/`SpeechDiscarded`.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech(_))
    }

    /// Feeds one frame of exactly `frame_len()` samples. Usually returns no
    /// event, sometimes one, and two when a forced split ends one utterance
    /// and starts the next, or when a gap in sample positions closes the
    /// open utterance before this frame starts a new one.
    pub fn push(&mut self, frame: &Frame) -> Result<Vec<VadEvent>, VadError> {
        if frame.samples.len() != self.frame_len {
            return Err(VadError::FrameLength {
                start_sample: frame.start_sample,
                got: frame.samples.len(),
                expected: self.frame_len,
                frame_ms: self.config.frame_ms,
            });
        }
        let mut events = Vec::new();
        if let Some(expected) = self.expected_start {
            if frame.start_sample != expected {
                // Stitching audio across a gap would make the utterance's
                // samples disagree with its timestamps; treat it as a new
                // stream instead.
                tracing::warn!(
                    expected,
                    got = frame.start_sample,
                    "VAD: frame positions jumped; closing any open utterance"
                );
                events.extend(self.finish());
            }
        }

        self.pcm.clear();
        // `as` saturates out-of-range values and maps NaN to 0; the clamp
        // keeps +/-1.0 symmetric.
        self.pcm.extend(
            frame
                .samples
                .iter()
                .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16),
        );
        let speech = self.classifier.is_speech(&self.pcm)?;
        self.history.push(frame);
        self.expected_start = Some(frame.end_sample());

        let frame_end = frame.end_sample();
        match &mut self.state {
            State::Idle { window } => {
                if window.len() == self.onset_frames {
                    window.pop_front();
                }
                window.push_back((frame.start_sample, speech));
                let voiced = window.iter().filter(|(_, s)| *s).count();
                // Confirmation can only happen on a speech frame, so the
                // onset's newest frame is speech and `open` may say so.
                if speech && voiced >= self.onset_needed {
                    let speech_start = window
                        .iter()
                        .find(|(_, s)| *s)
                        .map_or(frame.start_sample, |(start, _)| *start);
                    events.push(self.open(speech_start, frame_end, false));
                }
            }
            State::Speech(open) if speech && frame_end - open.speech_start > self.max_speech => {
                tracing::debug!(
                    max_utterance_ms = self.config.max_utterance_ms,
                    "VAD: utterance too long, splitting"
                );
                events.extend(self.close(true));
                events.push(self.open(frame.start_sample, frame_end, true));
            }
            State::Speech(open) => {
                open.audio.extend_from_slice(&frame.samples);
                if speech {
                    open.last_speech_end = frame_end;
                    open.silent_frames = 0;
                } else {
                    open.silent_frames += 1;
                    if open.silent_frames >= self.end_frames {
                        events.extend(self.close(false));
                    }
                }
            }
        }
        Ok(events)
    }

    /// End of stream: closes an open utterance (`SpeechEnd` if long enough,
    /// else `SpeechDiscarded`) and resets, so the segmenter can take a new
    /// stream. An unconfirmed onset is dropped silently.
    pub fn finish(&mut self) -> Option<VadEvent> {
        let event = if self.in_speech() {
            self.close(false)
        } else {
            None
        };
        self.history.clear();
        self.state = State::Idle {
            window: VecDeque::with_capacity(self.onset_frames),
        };
        self.expected_start = None;
        self.emitted_until = 0;
        event
    }

    /// Ends the open utterance now, as if its silence had lasted long
    /// enough (a semantic end-of-turn detector decided it is over); the
    /// stream goes on. `None` when no utterance is open.
    pub fn end_now(&mut self) -> Option<VadEvent> {
        if self.in_speech() {
            self.close(false)
        } else {
            None
        }
    }

    /// Enters speech at `speech_start`; the newest pushed frame ends at
    /// `frame_end` and is a speech frame.
    fn open(&mut self, speech_start: u64, frame_end: u64, continuation: bool) -> VadEvent {
        let from = speech_start
            .saturating_sub(self.pre_roll)
            .max(self.emitted_until);
        let (audio_start, audio) = self.history.copy_from(from);
        tracing::debug!(speech_start, audio_start, continuation, "VAD: speech start");
        self.state = State::Speech(Open {
            speech_start,
            audio_start,
            last_speech_end: frame_end,
            silent_frames: 0,
            audio,
            continuation,
        });
        VadEvent::SpeechStart {
            at_sample: speech_start,
        }
    }

    /// Leaves speech, returning its closing event (always `Some` when called
    /// in speech).
    fn close(&mut self, forced: bool) -> Option<VadEvent> {
        let idle = State::Idle {
            window: VecDeque::with_capacity(self.onset_frames),
        };
        let State::Speech(mut open) = std::mem::replace(&mut self.state, idle) else {
            return None;
        };
        let speech_len = open.last_speech_end - open.speech_start;
        if speech_len < self.min_speech && !open.continuation {
            tracing::debug!(
                at_sample = open.speech_start,
                speech_ms = speech_len / SAMPLES_PER_MS,
                "VAD: speech too short, discarded"
            );
            return Some(VadEvent::SpeechDiscarded {
                at_sample: open.speech_start,
            });
        }
        let held_end = open.audio_start + open.audio.len() as u64;
        let audio_end = (open.last_speech_end + self.trail_pad).min(held_end);
        open.audio.truncate((audio_end - open.audio_start) as usize);
        self.emitted_until = audio_end;
        let utterance = Utterance {
            speech_start_sample: open.speech_start,
            speech_end_sample: open.last_speech_end,
            audio_start_sample: open.audio_start,
            samples: open.audio,
            forced_end: forced,
        };
        tracing::debug!(?utterance, "VAD: speech end");
        Some(VadEvent::SpeechEnd(utterance))
    }
}

impl<C: SpeechClassifier + fmt::Debug> fmt::Debug for Segmenter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segmenter")
            .field("config", &self.config)
            .field("classifier", &self.classifier)
            .field("in_speech", &self.in_speech())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 480; // 30 ms, the default

    /// Plays back a fixed list of decisions, then says "silence" forever;
    /// records what it was given.
    struct ScriptedClassifier {
        script: Vec<bool>,
        pos: usize,
        seen: Vec<Vec<i16>>,
    }

    impl ScriptedClassifier {
        fn new(script: Vec<bool>) -> Self {
            Self {
                script,
                pos: 0,
                seen: Vec::new(),
            }
        }
    }

    impl SpeechClassifier for ScriptedClassifier {
        fn is_speech(&mut self, frame: &[i16]) -> Result<bool, VadError> {
            self.seen.push(frame.to_vec());
            let decision = self.script.get(self.pos).copied().unwrap_or(false);
            self.pos += 1;
            Ok(decision)
        }
    }

    /// Runs of (is_speech, frames) flattened into per-frame decisions.
    fn script(runs: &[(bool, usize)]) -> Vec<bool> {
        runs.iter()
            .flat_map(|&(speech, n)| std::iter::repeat_n(speech, n))
            .collect()
    }

    const S: bool = true;
    const N: bool = false;

    /// A signal whose value identifies its sample index, so tests can check
    /// an utterance carries exactly the audio its timestamps claim.
    fn marker(i: u64) -> f32 {
        (i % 10_007) as f32 / 20_014.0
    }

    fn frame_at(start: u64, len: usize) -> Frame {
        Frame {
            start_sample: start,
            samples: (start..start + len as u64).map(marker).collect(),
        }
    }

    /// Pushes one frame per decision; returns `(frame index, event)` pairs
    /// and what `finish` said.
    fn run_config(
        config: VadConfig,
        runs: &[(bool, usize)],
    ) -> (Vec<(usize, VadEvent)>, Option<VadEvent>) {
        let decisions = script(runs);
        let n = decisions.len();
        let frame_len = config.frame_len();
        let mut seg = Segmenter::new(config, ScriptedClassifier::new(decisions)).unwrap();
        let mut events = Vec::new();
        for i in 0..n {
            let frame = frame_at((i * frame_len) as u64, frame_len);
            for e in seg.push(&frame).unwrap() {
                events.push((i, e));
            }
        }
        (events, seg.finish())
    }

    fn run(runs: &[(bool, usize)]) -> (Vec<(usize, VadEvent)>, Option<VadEvent>) {
        run_config(VadConfig::dictation(), runs)
    }

    fn utterance(event: &VadEvent) -> &Utterance {
        match event {
            VadEvent::SpeechEnd(u) => u,
            other => panic!("expected SpeechEnd, got {other:?}"),
        }
    }

    fn assert_audio_matches(u: &Utterance) {
        for (k, &s) in u.samples.iter().enumerate() {
            assert_eq!(s, marker(u.audio_start_sample + k as u64), "sample {k}");
        }
    }

    #[test]
    fn vad_single_utterance_exact_samples() {
        let (events, fin) = run(&[(N, 20), (S, 30), (N, 25)]);
        assert_eq!(events.len(), 2, "{events:?}");
        // Onset confirmed on the 5th speech frame (150 ms), stamped at the 1st.
        assert_eq!(
            events[0],
            (
                24,
                VadEvent::SpeechStart {
                    at_sample: 20 * FRAME
                }
            )
        );
        // Ended after 20 silent frames (600 ms).
        assert_eq!(events[1].0, 50 + 20 - 1);
        let u = utterance(&events[1].1);
        assert_eq!(u.speech_start_sample, 20 * FRAME);
        assert_eq!(u.speech_end_sample, 50 * FRAME);
        assert_eq!(u.audio_start_sample, 20 * FRAME - 4_800);
        assert_eq!(u.audio_end_sample(), 50 * FRAME + 3_200);
        assert!(!u.forced_end);
        assert_audio_matches(u);
        assert!((u.start_secs() - 0.6).abs() < 1e-9);
        assert!((u.end_secs() - 1.5).abs() < 1e-9);
        assert!((u.duration_secs() - 0.9).abs() < 1e-9);
        assert_eq!(fin, None);
    }

    #[test]
    fn vad_pre_roll_clamped_at_stream_start() {
        let (events, _) = run(&[(N, 3), (S, 20), (N, 25)]);
        let u = utterance(&events[1].1);
        assert_eq!(u.speech_start_sample, 3 * FRAME);
        assert_eq!(u.audio_start_sample, 0);
        assert_audio_matches(u);

        // A source that does not start at 0 clamps at its first sample.
        let offset = 1_000_000;
        let mut seg = Segmenter::new(
            VadConfig::dictation(),
            ScriptedClassifier::new(script(&[(N, 2), (S, 20), (N, 25)])),
        )
        .unwrap();
        let mut ends = Vec::new();
        for i in 0..47 {
            for e in seg.push(&frame_at(offset + i * FRAME, 480)).unwrap() {
                if let VadEvent::SpeechEnd(u) = e {
                    ends.push(u);
                }
            }
        }
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].speech_start_sample, offset + 2 * FRAME);
        assert_eq!(ends[0].audio_start_sample, offset);
        assert_audio_matches(&ends[0]);
    }

    #[test]
    fn vad_click_shorter_than_onset_ignored() {
        let (events, fin) = run(&[(N, 20), (S, 4), (N, 30)]);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(fin, None);
        // Two clicks with a gap do not add up to an onset either.
        let (events, fin) = run(&[(N, 20), (S, 4), (N, 1), (S, 4), (N, 30)]);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(fin, None);
        // An unconfirmed onset at end of stream is dropped silently.
        let (events, fin) = run(&[(N, 20), (S, 4)]);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(fin, None);
    }

    #[test]
    fn vad_burst_shorter_than_min_speech_discarded() {
        // 8 frames = 240 ms < 250 ms.
        let (events, fin) = run(&[(N, 20), (S, 8), (N, 30)]);
        let at_sample = 20 * FRAME;
        assert_eq!(
            events,
            vec![
                (24, VadEvent::SpeechStart { at_sample }),
                (47, VadEvent::SpeechDiscarded { at_sample }),
            ]
        );
        assert_eq!(fin, None);
        // 9 frames = 270 ms is kept.
        let (events, _) = run(&[(N, 20), (S, 9), (N, 30)]);
        assert_eq!(events.len(), 2);
        assert_eq!(utterance(&events[1].1).duration_secs(), 0.27);
    }

    #[test]
    fn vad_pause_shorter_than_end_silence_merges() {
        let (events, _) = run(&[(N, 20), (S, 15), (N, 19), (S, 15), (N, 25)]);
        assert_eq!(events.len(), 2, "{events:?}");
        let u = utterance(&events[1].1);
        assert_eq!(u.speech_start_sample, 20 * FRAME);
        assert_eq!(u.speech_end_sample, 69 * FRAME);
        assert_audio_matches(u);
    }

    #[test]
    fn vad_pause_of_end_silence_splits() {
        let (events, _) = run(&[(N, 20), (S, 15), (N, 20), (S, 15), (N, 25)]);
        let ends: Vec<_> = events
            .iter()
            .filter(|(_, e)| matches!(e, VadEvent::SpeechEnd(_)))
            .map(|(_, e)| utterance(e))
            .collect();
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(ends[0].speech_start_sample, 20 * FRAME);
        assert_eq!(ends[0].speech_end_sample, 35 * FRAME);
        assert_eq!(ends[1].speech_start_sample, 55 * FRAME);
        assert_eq!(ends[1].speech_end_sample, 70 * FRAME);
        assert_eq!(ends[1].audio_start_sample, 55 * FRAME - 4_800);
        for u in ends {
            assert_audio_matches(u);
        }
    }

    #[test]
    fn vad_pre_roll_never_repeats_previous_utterance() {
        let config = VadConfig {
            pre_roll_ms: 1_000,
            ..VadConfig::dictation()
        };
        let (events, _) = run_config(config, &[(N, 40), (S, 15), (N, 20), (S, 15), (N, 25)]);
        let first = utterance(&events[1].1);
        let second = utterance(&events[3].1);
        assert_eq!(first.audio_start_sample, 40 * FRAME - 16_000);
        assert_eq!(second.audio_start_sample, first.audio_end_sample());
        assert_audio_matches(second);
    }

    #[test]
    fn vad_max_utterance_force_splits() {
        let config = VadConfig {
            max_utterance_ms: 3_000, // 100 frames
            ..VadConfig::dictation()
        };
        let (events, fin) = run_config(config, &[(N, 10), (S, 250), (N, 25)]);
        assert_eq!(fin, None);
        let kinds: Vec<_> = events
            .iter()
            .map(|(i, e)| match e {
                VadEvent::SpeechStart { at_sample } => (*i, "start", *at_sample),
                VadEvent::SpeechEnd(u) => (*i, "end", u.speech_end_sample),
                VadEvent::SpeechDiscarded { at_sample } => (*i, "discarded", *at_sample),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (14, "start", 10 * FRAME),
                (110, "end", 110 * FRAME),
                (110, "start", 110 * FRAME),
                (210, "end", 210 * FRAME),
                (210, "start", 210 * FRAME),
                (279, "end", 260 * FRAME),
            ]
        );
        let parts: Vec<_> = events
            .iter()
            .filter_map(|(_, e)| match e {
                VadEvent::SpeechEnd(u) => Some(u),
                _ => None,
            })
            .collect();
        assert!(parts[0].forced_end && parts[1].forced_end && !parts[2].forced_end);
        assert_eq!(parts[0].duration_secs(), 3.0);
        // The pieces tile the audio: no gap, no repeat.
        assert_eq!(parts[1].audio_start_sample, parts[0].audio_end_sample());
        assert_eq!(parts[2].audio_start_sample, parts[1].audio_end_sample());
        for u in parts {
            assert_audio_matches(u);
        }
    }

    #[test]
    fn vad_forced_continuation_is_never_discarded() {
        let config = VadConfig {
            max_utterance_ms: 3_000,
            ..VadConfig::dictation()
        };
        // The continuation holds a single 30 ms speech frame.
        let (events, _) = run_config(config, &[(N, 10), (S, 101), (N, 25)]);
        assert_eq!(events.len(), 4, "{events:?}");
        let tail = utterance(&events[3].1);
        assert_eq!(tail.speech_start_sample, 110 * FRAME);
        assert_eq!(tail.speech_end_sample, 111 * FRAME);
    }

    #[test]
    fn vad_finish_closes_open_utterance() {
        let (events, fin) = run(&[(N, 20), (S, 30)]);
        assert_eq!(events.len(), 1);
        let u = utterance(fin.as_ref().unwrap()).clone();
        assert_eq!(u.speech_start_sample, 20 * FRAME);
        assert_eq!(u.speech_end_sample, 50 * FRAME);
        assert_eq!(u.audio_end_sample(), 50 * FRAME);
        assert_audio_matches(&u);

        // Trailing silence shorter than the pad is all kept.
        let (_, fin) = run(&[(N, 20), (S, 30), (N, 5)]);
        let u = utterance(fin.as_ref().unwrap());
        assert_eq!(u.audio_end_sample(), 55 * FRAME);

        // Too short: answered with SpeechDiscarded, so SpeechStart is paired.
        let (_, fin) = run(&[(N, 20), (S, 6)]);
        assert_eq!(
            fin,
            Some(VadEvent::SpeechDiscarded {
                at_sample: 20 * FRAME
            })
        );
    }

    #[test]
    fn a_pause_in_speech_is_reported_until_speech_resumes_or_ends() {
        let decisions = script(&[(N, 10), (S, 30), (N, 3), (S, 10), (N, 30)]);
        let mut seg =
            Segmenter::new(VadConfig::dictation(), ScriptedClassifier::new(decisions)).unwrap();
        let mut pauses = Vec::new();
        for i in 0..83 {
            seg.push(&frame_at(i * FRAME, FRAME as usize)).unwrap();
            pauses.push(seg.pausing());
        }
        assert_eq!(pauses[39], None, "still talking");
        assert_eq!(pauses[40], Some((40 * FRAME, FRAME)));
        assert_eq!(pauses[42], Some((40 * FRAME, 3 * FRAME)));
        assert_eq!(pauses[43], None, "speech resumed");
        assert_eq!(pauses[53], Some((53 * FRAME, FRAME)));
        assert_eq!(pauses[82], None, "the utterance ended");
    }

    #[test]
    fn vad_finish_resets_for_a_new_stream() {
        let decisions = script(&[(S, 30), (N, 20), (S, 30), (N, 20)]);
        let mut seg =
            Segmenter::new(VadConfig::dictation(), ScriptedClassifier::new(decisions)).unwrap();
        for stream in 0..2 {
            let mut ends = 0;
            for i in 0..50 {
                for e in seg.push(&frame_at(i * FRAME, 480)).unwrap() {
                    if let VadEvent::SpeechEnd(u) = e {
                        assert_eq!(u.speech_start_sample, 0, "stream {stream}");
                        assert_eq!(u.audio_start_sample, 0, "stream {stream}");
                        ends += 1;
                    }
                }
            }
            assert_eq!(ends, 1, "stream {stream}");
            assert_eq!(seg.finish(), None);
        }
    }

    #[test]
    fn vad_position_jump_closes_open_utterance() {
        let decisions = script(&[(N, 20), (S, 30), (S, 30), (N, 30)]);
        let mut seg =
            Segmenter::new(VadConfig::dictation(), ScriptedClassifier::new(decisions)).unwrap();
        let mut events = Vec::new();
        for i in 0..50 {
            events.extend(seg.push(&frame_at(i * FRAME, 480)).unwrap());
        }
        assert!(seg.in_speech());
        // 10 s of audio went missing.
        let resume = 50 * FRAME + 160_000;
        let first = seg.push(&frame_at(resume, 480)).unwrap();
        let u = utterance(&first[0]);
        assert_eq!(u.speech_end_sample, 50 * FRAME);
        assert_audio_matches(u);
        assert!(!seg.in_speech());
        for i in 1..60 {
            events.extend(seg.push(&frame_at(resume + i * FRAME, 480)).unwrap());
        }
        let u = utterance(events.last().unwrap());
        assert_eq!(u.speech_start_sample, resume);
        assert_eq!(u.audio_start_sample, resume);
        assert_audio_matches(u);
    }

    #[test]
    fn vad_onset_tolerates_one_miss_with_short_frames() {
        let config = VadConfig {
            frame_ms: 10, // onset window 15 frames, 14 needed
            ..VadConfig::dictation()
        };
        let (events, _) = run_config(config.clone(), &[(N, 50), (S, 7), (N, 1), (S, 7), (N, 100)]);
        assert_eq!(
            events[0],
            (
                64,
                VadEvent::SpeechStart {
                    at_sample: 50 * 160
                }
            )
        );
        let (events, _) = run_config(config, &[(N, 50), (S, 7), (N, 2), (S, 6), (N, 100)]);
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn vad_classifier_gets_clamped_i16() {
        let mut seg =
            Segmenter::new(VadConfig::dictation(), ScriptedClassifier::new(vec![])).unwrap();
        let mut samples = vec![0.0f32; 480];
        samples[..6].copy_from_slice(&[2.0, -2.0, f32::NAN, 0.5, -1.0, 1.0]);
        seg.push(&Frame {
            start_sample: 0,
            samples,
        })
        .unwrap();
        assert_eq!(
            &seg.classifier.seen[0][..7],
            &[32767, -32767, 0, 16384, -32767, 32767, 0]
        );
    }

    #[test]
    fn vad_wrong_frame_length_is_an_error() {
        let mut seg =
            Segmenter::new(VadConfig::dictation(), ScriptedClassifier::new(vec![])).unwrap();
        let err = seg.push(&frame_at(0, 320)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VAD frame at sample 0 has 320 samples; vad.frame_ms = 30 needs exactly 480"
        );
    }

    #[test]
    fn vad_config_validation_names_the_key() {
        assert_eq!(VadConfig::dictation().validate(), Ok(()));
        assert_eq!(VadConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut VadConfig)| {
            let mut c = VadConfig::dictation();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(|c| c.frame_ms = 25),
            "frame_ms = 25 is out of range: must be 10, 20 or 30"
        );
        assert_eq!(
            bad(|c| c.aggressiveness = 4),
            "aggressiveness = 4 is out of range: must be between 0 and 3"
        );
        assert_eq!(
            bad(|c| c.pre_roll_ms = 100),
            "pre_roll_ms = 100 is out of range: must be between 200 and 2000"
        );
        assert_eq!(
            bad(|c| c.end_silence_ms = 50),
            "end_silence_ms = 50 is out of range: must be between 100 and 5000"
        );
        assert_eq!(
            bad(|c| c.onset_ms = 0),
            "onset_ms = 0 is out of range: must be between 10 and 1000"
        );
        assert_eq!(
            bad(|c| c.max_utterance_ms = 120_000),
            "max_utterance_ms = 120000 is out of range: must be between 1000 and 60000"
        );
        assert_eq!(
            bad(|c| {
                c.max_utterance_ms = 2_000;
                c.min_speech_ms = 3_000;
            }),
            "min_speech_ms = 3000 is out of range: must be between 0 and 2000"
        );
        // The segmenter names the section too.
        let err = Segmenter::new(
            VadConfig {
                frame_ms: 25,
                ..VadConfig::dictation()
            },
            ScriptedClassifier::new(vec![]),
        )
        .err()
        .unwrap();
        assert_eq!(err.key, "vad.frame_ms");
        assert_eq!(WebRtcClassifier::new(9).unwrap_err().key, "aggressiveness");
    }

    // ---- the real WebRTC classifier on synthetic and recorded audio ----

    /// Deterministic white noise in [-1, 1).
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        }
    }

    /// A crude voiced sound: a 150 Hz harmonic buzz (1/h spectrum, like a
    /// glottal source) amplitude-modulated at a syllable rate of 4 Hz.
    fn buzz(i: u64) -> f32 {
        let t = i as f32 / SAMPLE_RATE as f32;
        let tau = std::f32::consts::TAU;
        let voiced: f32 = (1..20)
            .map(|h| (tau * 150.0 * h as f32 * t).sin() / h as f32)
            .sum();
        let envelope = 0.6 + 0.4 * (tau * 4.0 * t).sin();
        0.2 * voiced * envelope
    }

    fn segment_webrtc(config: VadConfig, audio: &[f32]) -> Vec<VadEvent> {
        let frame_len = config.frame_len();
        let mut seg = Segmenter::webrtc(config).unwrap();
        let mut events = Vec::new();
        for (i, chunk) in audio.chunks(frame_len).enumerate() {
            let mut samples = chunk.to_vec();
            samples.resize(frame_len, 0.0);
            let frame = Frame {
                start_sample: (i * frame_len) as u64,
                samples,
            };
            events.extend(seg.push(&frame).unwrap());
        }
        events.extend(seg.finish());
        events
    }

    fn ends(events: &[VadEvent]) -> Vec<&Utterance> {
        events
            .iter()
            .filter_map(|e| match e {
                VadEvent::SpeechEnd(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn vad_webrtc_digital_silence_is_quiet() {
        for aggressiveness in 0..=3 {
            let config = VadConfig {
                aggressiveness,
                ..VadConfig::dictation()
            };
            let events = segment_webrtc(config, &vec![0.0; 10 * 16_000]);
            assert!(events.is_empty(), "mode {aggressiveness}: {events:?}");
        }
    }

    #[test]
    fn vad_webrtc_finds_a_voiced_buzz() {
        // Buzz from 1.0 s to 2.5 s, over silence or a faint noise floor; the
        // noise floor also exercises WebRTC's ~100 ms start-up false alarm.
        let (start, end) = (16_000u64, 40_000u64);
        for floor in [0.0f32, 0.002] {
            for aggressiveness in 0..=3 {
                let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
                let audio: Vec<f32> = (0..4 * 16_000u64)
                    .map(|i| {
                        let voice = if (start..end).contains(&i) {
                            buzz(i)
                        } else {
                            0.0
                        };
                        voice + floor * noise.next()
                    })
                    .collect();
                let config = VadConfig {
                    aggressiveness,
                    ..VadConfig::dictation()
                };
                let events = segment_webrtc(config, &audio);
                let found = ends(&events);
                let what = format!("floor {floor}, mode {aggressiveness}: {events:?}");
                assert_eq!(events.len(), 2, "{what}");
                let u = found[0];
                assert!(u.speech_start_sample.abs_diff(start) <= 1_600, "{what}");
                println!("{what}");
                // libfvad holds "speech" for a few frames after voicing stops
                // (longer in modes 0-1), and the frame holding the true end
                // counts as speech: ~110 ms late in modes 2-3, ~170 ms in 0-1.
                let end_slack = if aggressiveness >= 2 { 1_920 } else { 2_880 };
                assert!(u.speech_end_sample >= end, "{what}");
                assert!(u.speech_end_sample - end <= end_slack, "{what}");
                assert_eq!(
                    u.audio_start_sample,
                    start - 4_800 - (start % 480),
                    "{what}"
                );
            }
        }
    }

    #[test]
    fn vad_webrtc_ignores_clicks() {
        // 5 ms noise bursts once a second over a faint noise floor: WebRTC
        // flags each as 90-120 ms of speech, which the onset must reject.
        let mut noise = Noise(42);
        let audio: Vec<f32> = (0..6 * 16_000u64)
            .map(|i| {
                let n = noise.next();
                if i % 16_000 >= 8_000 && i % 16_000 < 8_080 {
                    0.8 * n
                } else {
                    0.002 * n
                }
            })
            .collect();
        let events = segment_webrtc(VadConfig::dictation(), &audio);
        assert!(events.is_empty(), "{events:?}");
    }

    /// Real read speech from the Debian pocketsphinx test data (16 kHz mono
    /// LibriVox clips, 3-7 s). Skipped when the package is not installed.
    #[test]
    fn vad_webrtc_on_librivox_speech() {
        let dir = std::path::Path::new("/usr/share/pocketsphinx/test/data/librivox");
        let mut clips: Vec<_> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wav"))
                .collect(),
            Err(_) => Vec::new(),
        };
        if clips.is_empty() {
            println!("skipping: no LibriVox clips under {}", dir.display());
            return;
        }
        clips.sort();
        for clip in clips {
            let mut reader = hound::WavReader::open(&clip).unwrap();
            let spec = reader.spec();
            assert_eq!((spec.sample_rate, spec.channels), (16_000, 1), "{clip:?}");
            let audio: Vec<f32> = reader
                .samples::<i16>()
                .map(|s| f32::from(s.unwrap()) / 32_768.0)
                .collect();

            // Reference span: first to last 30 ms frame within 35 dB of the
            // loudest one.
            let rms: Vec<f32> = audio
                .chunks(480)
                .map(|c| (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt())
                .collect();
            let loudest = rms.iter().copied().fold(0.0, f32::max);
            let active: Vec<usize> = (0..rms.len())
                .filter(|&i| rms[i] > loudest * 10f32.powf(-35.0 / 20.0))
                .collect();
            let ref_start = *active.first().unwrap() as u64 * 480;
            let ref_end = (*active.last().unwrap() as u64 + 1) * 480;

            let events = segment_webrtc(VadConfig::dictation(), &audio);
            let found = ends(&events);
            let covered: u64 = found
                .iter()
                .map(|u| {
                    let lo = u.audio_start_sample.max(ref_start);
                    let hi = u.audio_end_sample().min(ref_end);
                    hi.saturating_sub(lo)
                })
                .sum();
            let coverage = covered as f64 / (ref_end - ref_start) as f64;
            println!(
                "{}: reference {:.2}-{:.2} s, utterances {:?}, coverage {:.0}%",
                clip.file_name().unwrap().to_string_lossy(),
                ref_start as f64 / 16_000.0,
                ref_end as f64 / 16_000.0,
                found
                    .iter()
                    .map(|u| format!("{:.2}-{:.2}", u.start_secs(), u.end_secs()))
                    .collect::<Vec<_>>(),
                coverage * 100.0
            );
            assert!(!found.is_empty(), "{clip:?}: no utterance");
            assert!(coverage >= 0.9, "{clip:?}: coverage {coverage:.2}");
        }
    }
}
