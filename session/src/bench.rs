//! The benchmarks' scenarios: `hark bench converse`, a scripted
//! conversation through the real pipeline in real time, measured from the
//! outside, and `hark bench stt`, Whisper's speed and the cost of idle
//! listening ([`stt`]).
//!
//! The user's side is synthesized with the Piper voice and played by a
//! [`ScriptSource`] that watches Hark's output as it is written: a question
//! waits until Hark has finished its previous reply; an interruption starts
//! a set time after Hark's voice started. Because the script knows exactly
//! where each of its utterances begins and ends (the synthesized audio is
//! measured, not guessed) and every output sample is time-stamped on the
//! same timeline, the latencies come from the audio itself:
//!
//! - voice-to-voice: true end of the user's speech → first audible sample of
//!   the reply;
//! - barge-in: true onset of the interrupting speech → Hark silent (the start
//!   of a gap of at least [`SILENT_RUN_MS`]);
//! - stages (from the event log): endpoint (the end of the turn decided),
//!   transcript, first token, first clause synthesized, first audio;
//! - cut-offs: a turn the pipeline ended inside a sentence. Four lines of
//!   the conversation pause in the middle (400 to 900 ms of silence, "I'd
//!   like to know … the capital of Spain"); a turn ended in that pause is
//!   cut off;
//! - the end-of-turn machinery: Smart Turn's inference time per call, and
//!   replies prepared during a pause that had to be dropped because the
//!   user went on (false early replies).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hark_audio::resample::resample_mono;
use hark_audio::{AudioError, Frame, FrameSource, SAMPLE_RATE};
use hark_tts::Voice;
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::events::SessionEvent;
use crate::speaker::OutputTap;
use crate::{
    run_session, BoxError, Input, Models, Output, SessionConfig, SessionError, SessionSetup,
};

pub mod quality;
pub mod soak;
pub mod stt;

/// A sample louder than this is Hark's voice.
const AUDIBLE: f32 = 0.02;
/// Quieter than this is silence.
const SILENT: f32 = 0.002;
/// Hark counts as silenced once its output stays silent this long (longer
/// than any pause inside a reply).
const SILENT_RUN_MS: u64 = 400;
/// How long Hark must have been quiet before the next question is asked.
const QUIET_BEFORE_QUESTION: Duration = Duration::from_millis(1200);
/// A turn ended this long before a line's last word is a cut-off (the VAD
/// places the end of speech a little before the last audible sample).
const CUT_OFF_MARGIN_MS: u64 = 250;
/// A step of the script waits at most this long for its trigger.
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(20);

/// Which scripted conversation to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Script {
    /// 12 open questions, 4 of them interrupting: the model's path.
    #[default]
    Conversation,
    /// 8 requests the skills answer: the intent layer's path.
    Skills,
}

/// How `hark bench converse` runs.
#[derive(Debug, Clone)]
pub struct ConverseOptions {
    pub script: Script,
    /// Keep the scenario's input, Hark's output and the event log here
    /// (else a temporary directory, removed afterwards).
    pub keep: Option<PathBuf>,
    /// How far into Hark's reply each interruption starts, in ms.
    pub interrupt_after_ms: u64,
    /// Only the first this many lines of the script (a quick run).
    pub turns: Option<usize>,
    /// Names for the report.
    pub whisper_model: String,
    pub llm: String,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("cannot use the directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot synthesize the user's side: {0}")]
    UserVoice(String),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("{0}")]
    Invalid(String),
}

/// When a scripted user utterance starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// After Hark has answered the previous turn.
    Question,
    /// While Hark is answering, `interrupt_after_ms` into its voice.
    Interruption,
}

/// One line of a script. A line whose text has " … " in it pauses there
/// for `pause_ms` (see [`Line::speak`]).
struct Say {
    text: &'static str,
    kind: Kind,
    pause_ms: u64,
}

/// Where a paused line's two parts meet.
const PAUSE_MARK: &str = " … ";

const fn ask(text: &'static str) -> Say {
    Say {
        text,
        kind: Kind::Question,
        pause_ms: 0,
    }
}

const fn interrupt(text: &'static str) -> Say {
    Say {
        text,
        kind: Kind::Interruption,
        pause_ms: 0,
    }
}

const fn ask_pausing(text: &'static str, pause_ms: u64) -> Say {
    Say {
        text,
        kind: Kind::Question,
        pause_ms,
    }
}

/// The scenario: 16 turns, 4 of them interrupting a reply in progress and
/// 4 pausing mid-sentence.
const SCRIPT: &[Say] = &[
    ask("What is the capital of France?"),
    ask("Tell me a long story about a brave knight and a dragon."),
    interrupt("Wait, stop. What is two plus two?"),
    ask_pausing("I'd like to know … the capital of Spain.", 700),
    ask("Name three colors of the rainbow."),
    ask("Can you describe the ocean in a few sentences?"),
    interrupt("Hold on, tell me about the moon instead."),
    ask_pausing("Can you tell me … what color the sky is?", 400),
    ask("What do bees make?"),
    ask("Explain how a rainbow forms."),
    interrupt("Sorry, I meant to ask about clouds."),
    ask_pausing("What I want to know is … how far away the moon is.", 900),
    ask("What is the largest planet in our solar system?"),
    ask("Tell me about the history of Rome."),
    interrupt("Stop please, tell me a joke instead."),
    ask_pausing("Tell me … the name of a big river.", 550),
];

/// Requests the skills answer without a model.
const SKILLS_SCRIPT: &[Say] = &[
    ask("What time is it?"),
    ask("Set a timer for five minutes."),
    ask("How much time is left?"),
    ask("What's the date today?"),
    ask("Repeat that."),
    ask("Louder."),
    ask("Quieter."),
    ask("Cancel the timer."),
];

/// The longest script.
pub const MAX_LINES: usize = SCRIPT.len();

/// One scripted utterance at 16 kHz with where its speech really is.
struct Line {
    text: String,
    kind: Kind,
    audio: Vec<f32>,
    /// First and one-past-last sample louder than [`AUDIBLE`].
    speech: (usize, usize),
    /// A mid-sentence pause: its first and one-past-last sample.
    pause: Option<(usize, usize)>,
}

/// First and one-past-last sample louder than [`AUDIBLE`].
fn audible_span(audio: &[f32]) -> (usize, usize) {
    let first = audio.iter().position(|s| s.abs() > AUDIBLE).unwrap_or(0);
    let last = audio
        .iter()
        .rposition(|s| s.abs() > AUDIBLE)
        .map_or(audio.len(), |i| i + 1);
    (first, last)
}

impl Line {
    /// Speaks `say` with `voice`. A paused line is spoken as one sentence
    /// with a comma where the pause goes, so the words before it keep the
    /// rising, unfinished tone of a speaker who will go on (spoken alone
    /// they would end like a sentence); the comma's silence is then made
    /// exactly `pause_ms` long.
    fn speak(say: &Say, voice: &mut dyn Voice) -> Result<Self, BenchError> {
        let mut speak = |text: &str| -> Result<Vec<f32>, BenchError> {
            let pcm = voice
                .synthesize(text)
                .map_err(|e| BenchError::UserVoice(e.to_string()))?;
            Ok(resample_mono(&pcm, voice.sample_rate(), SAMPLE_RATE)?)
        };
        let (audio, pause) = match say.text.split_once(PAUSE_MARK) {
            Some((before, after)) => {
                let spoken = speak(&format!("{before}, {after}"))?;
                let (start, end) = longest_silence(&spoken).ok_or_else(|| {
                    BenchError::UserVoice(format!("no pause heard in {:?}", say.text))
                })?;
                let gap = (say.pause_ms * SAMPLE_RATE as u64 / 1000) as usize;
                let mut audio = spoken[..start].to_vec();
                audio.resize(start + gap, 0.0);
                audio.extend_from_slice(&spoken[end..]);
                (audio, Some((start, start + gap)))
            }
            None => (speak(say.text)?, None),
        };
        Ok(Self {
            text: say.text.to_owned(),
            kind: say.kind,
            speech: audible_span(&audio),
            audio,
            pause,
        })
    }
}

/// The longest run of inaudible samples between the first and the last
/// audible one: a comma's pause, in a short spoken sentence.
fn longest_silence(audio: &[f32]) -> Option<(usize, usize)> {
    let (first, last) = audible_span(audio);
    let mut longest: Option<(usize, usize)> = None;
    let mut run_start = None;
    for (i, s) in audio.iter().enumerate().take(last).skip(first) {
        match (s.abs() > AUDIBLE, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(start)) => {
                if longest.is_none_or(|(a, b)| i - start > b - a) {
                    longest = Some((start, i));
                }
                run_start = None;
            }
            _ => {}
        }
    }
    longest
}

/// Hark's output as the benchmark sees it, written by the speaker thread.
#[derive(Default)]
struct Observed {
    /// Every output sample, in order from the input's zero (unless
    /// `forget_samples`: a soak keeps hours of output in no memory).
    samples: Vec<f32>,
    forget_samples: bool,
    rate: u32,
    /// Last audible sample, in ms.
    last_audible_ms: Option<u64>,
    /// Start of the current stretch of voice (no gap over the quiet limit).
    voice_since_ms: Option<u64>,
}

#[derive(Default)]
struct Watch(Mutex<Observed>);

impl Watch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OutputTap for Watch {
    fn written(&self, position: u64, samples: &[f32], rate: u32) {
        let mut o = self.lock();
        o.rate = rate;
        if !o.forget_samples {
            o.samples.extend_from_slice(samples);
        }
        if let Some(k) = samples.iter().rposition(|s| s.abs() > AUDIBLE) {
            let at_ms = (position + k as u64) * 1000 / rate as u64;
            let first_ms = (position
                + samples.iter().position(|s| s.abs() > AUDIBLE).unwrap_or(k) as u64)
                * 1000
                / rate as u64;
            let gap = o
                .last_audible_ms
                .is_none_or(|last| first_ms.saturating_sub(last) > SILENT_RUN_MS);
            if gap {
                o.voice_since_ms = Some(first_ms);
            }
            o.last_audible_ms = Some(at_ms);
        }
    }
}

/// Plays the script into the pipeline at real-time pace (on `clock`).
struct ScriptSource {
    lines: Vec<Arc<Line>>,
    next_line: usize,
    playing: Option<(Arc<Line>, usize)>,
    watch: Arc<Watch>,
    frame_len: usize,
    clock: Arc<dyn Clock>,
    origin: Option<Instant>,
    /// Play the script again from the top until this many samples have
    /// been played, and end after the line that reaches it (a soak);
    /// `None`: once.
    repeat_until: Option<u64>,
    position: u64,
    /// When the last line finished, in samples.
    last_end: u64,
    /// Where each line started, in samples (shared with the analysis).
    starts: Arc<Mutex<Vec<u64>>>,
    /// Silence after the last line, in samples, before the source ends.
    tail: u64,
    /// How far into Hark's voice an interruption starts.
    interrupt_after_ms: u64,
    ended_at: Option<u64>,
}

impl ScriptSource {
    /// Plays `lines` once, watching Hark through `watch`, recording where
    /// each line starts in `starts`.
    fn new(
        lines: Vec<Arc<Line>>,
        watch: Arc<Watch>,
        frame_len: usize,
        clock: Arc<dyn Clock>,
        starts: Arc<Mutex<Vec<u64>>>,
        interrupt_after_ms: u64,
    ) -> Self {
        Self {
            lines,
            next_line: 0,
            playing: None,
            watch,
            frame_len,
            clock,
            origin: None,
            repeat_until: None,
            position: 0,
            last_end: 0,
            starts,
            tail: SAMPLE_RATE as u64 * 2,
            interrupt_after_ms,
            ended_at: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.position * 1000 / SAMPLE_RATE as u64
    }

    /// Whether the next line may start now.
    fn due(&self, line: &Line) -> bool {
        let now = self.now_ms();
        let since_last_end = now.saturating_sub(self.last_end * 1000 / SAMPLE_RATE as u64);
        if self.last_end == 0 {
            return now >= 1000;
        }
        if since_last_end >= TRIGGER_TIMEOUT.as_millis() as u64 {
            return true;
        }
        let o = self.watch.lock();
        let last_end_ms = self.last_end * 1000 / SAMPLE_RATE as u64;
        let replied = o.last_audible_ms.is_some_and(|t| t > last_end_ms);
        match line.kind {
            Kind::Question => {
                replied
                    && o.last_audible_ms.is_some_and(|t| {
                        now.saturating_sub(t) >= QUIET_BEFORE_QUESTION.as_millis() as u64
                    })
            }
            Kind::Interruption => match (replied, o.voice_since_ms) {
                (true, Some(since)) => now >= since + self.interrupt_after_ms,
                _ => false,
            },
        }
    }
}

impl FrameSource for ScriptSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        let clock = &self.clock;
        let origin = *self.origin.get_or_insert_with(|| clock.now());
        if let Some(end) = self.ended_at {
            if self.position >= end {
                return Ok(None);
            }
        }
        let mut samples = Vec::with_capacity(self.frame_len);
        while samples.len() < self.frame_len {
            if self.playing.is_none() && self.next_line < self.lines.len() {
                let line = self.lines[self.next_line].clone();
                if self.due(&line) {
                    self.starts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(self.position + samples.len() as u64);
                    self.playing = Some((line, 0));
                    self.next_line += 1;
                }
            }
            match &mut self.playing {
                Some((line, at)) => {
                    let take = (self.frame_len - samples.len()).min(line.audio.len() - *at);
                    samples.extend_from_slice(&line.audio[*at..*at + take]);
                    *at += take;
                    if *at == line.audio.len() {
                        self.playing = None;
                        self.last_end = self.position + samples.len() as u64;
                        let enough = self.repeat_until.is_some_and(|u| self.last_end >= u);
                        if enough || self.next_line == self.lines.len() {
                            if self.repeat_until.is_some() && !enough {
                                self.next_line = 0;
                            } else {
                                self.ended_at = Some(self.last_end + self.tail);
                            }
                        }
                    }
                }
                None => samples.resize(self.frame_len, 0.0),
            }
        }
        let frame = Frame {
            start_sample: self.position,
            samples,
        };
        self.position = frame.end_sample();
        let due = origin + Duration::from_secs_f64(self.position as f64 / SAMPLE_RATE as f64);
        self.clock.sleep_until(due);
        Ok(Some(frame))
    }

    fn frame_len(&self) -> usize {
        self.frame_len
    }

    fn describe(&self) -> String {
        "benchmark script".into()
    }

    /// A script, like a file, cannot hear Hark's speaker.
    fn hears_local_playback(&self) -> bool {
        false
    }
}

/// Where the time of one reply went.
#[derive(Serialize, Default, Clone)]
pub struct Stages {
    /// Transcript → first audio playing: the answer's own latency (for a
    /// skill, the intent layer's).
    pub answer_ms: Option<u64>,
    /// True end of speech → the end of the turn decided (the VAD's silence
    /// rule or Smart Turn).
    pub endpoint_ms: Option<u64>,
    /// End decided → transcript (0 when the pause's speculative transcript
    /// was already there).
    pub transcript_ms: Option<u64>,
    /// Transcript → first token (0 when a reply prepared during the pause
    /// already had one).
    pub first_token_ms: Option<u64>,
    /// The first clause's text → its audio synthesized.
    pub first_synthesis_ms: Option<u64>,
    /// First token → first audio playing.
    pub first_audio_ms: Option<u64>,
    /// First clause synthesized → its first sample played.
    pub playback_start_ms: Option<u64>,
}

/// One scripted line and what became of it.
#[derive(Serialize)]
pub struct TurnResult {
    pub index: usize,
    pub kind: Kind,
    pub said: String,
    pub user_onset_ms: u64,
    pub user_end_ms: u64,
    /// Hark was audible when the interruption began.
    pub hark_was_speaking: bool,
    pub heard: Option<String>,
    pub reply: Option<String>,
    pub reply_interrupted: Option<bool>,
    /// The sentence's mid-sentence pause, in ms (0: none).
    pub pause_ms: u64,
    /// The turn was ended inside the sentence (`voice_to_voice_ms` is then
    /// not measured).
    pub cut_off: bool,
    pub voice_to_voice_ms: Option<u64>,
    pub barge_in_ms: Option<u64>,
    pub stages: Stages,
}

/// Percentiles of one measure over the turns.
#[derive(Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub max: Option<u64>,
}

fn summary(mut values: Vec<u64>) -> Summary {
    values.sort_unstable();
    let pick = |q: f64| {
        (!values.is_empty())
            .then(|| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1])
    };
    Summary {
        n: values.len(),
        p50: pick(0.5),
        p95: pick(0.95),
        max: values.last().copied(),
    }
}

/// What `hark bench converse` prints, as JSON.
#[derive(Serialize)]
pub struct Report {
    pub cores: usize,
    pub whisper_model: String,
    pub llm: String,
    pub turns_scripted: usize,
    pub interruptions_scripted: usize,
    pub interruptions_detected: usize,
    pub wall_secs: f64,
    /// `[turn] detector` as configured ("smart" falls back to the silence
    /// rule when the model is missing: then `smart_turn_ms.n` is 0).
    pub detector: String,
    pub voice_to_voice_ms: Summary,
    pub barge_in_ms: Summary,
    /// Of the lines that pause mid-sentence, the share whose turn was ended
    /// in the pause (0 to 1; `null` when the script has none).
    pub cut_off_rate: Option<f64>,
    pub paused_lines: usize,
    /// Turns ended inside the other lines (the VAD misjudging a short gap
    /// between words).
    pub cut_offs_elsewhere: usize,
    /// Replies started during a pause (see `[turn] prepare_replies`).
    pub replies_prepared: usize,
    /// Of those, how many became the reply.
    pub replies_adopted: usize,
    /// Of those, how many were dropped because the user went on.
    pub false_early_replies: usize,
    /// One Smart Turn inference.
    pub smart_turn_ms: Summary,
    pub endpoint_ms: Summary,
    pub transcript_ms: Summary,
    pub first_token_ms: Summary,
    pub first_synthesis_ms: Summary,
    pub first_audio_ms: Summary,
    pub playback_start_ms: Summary,
    /// Transcript → first audio.
    pub answer_ms: Summary,
    pub turns: Vec<TurnResult>,
}

/// What the benchmark counts from the session's events.
#[derive(Default)]
struct Tally {
    /// When the core heard of each end of speech: (speech end, arrival), ms.
    speech_ends: Vec<(u64, u64)>,
    smart_turn_ms: Vec<u64>,
    prepared: usize,
    adopted: usize,
    dropped: usize,
}

/// The scripted conversation: the user's side spoken by `user_voice`, Hark
/// as `config` and `load` make it, talking into a file in real time.
pub fn converse(
    mut config: SessionConfig,
    user_voice: &mut dyn Voice,
    load: impl FnOnce() -> Result<Models, BoxError>,
    options: &ConverseOptions,
    prepare: impl FnOnce(&mut SessionSetup),
) -> Result<Report, BenchError> {
    let dir = match &options.keep {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("hark-bench-converse-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Dir {
        path: dir.clone(),
        source,
    })?;
    let script = match options.script {
        Script::Conversation => SCRIPT,
        Script::Skills => SKILLS_SCRIPT,
    };
    let script_lines = &script[..options.turns.unwrap_or(script.len()).min(script.len())];
    // The script talks and expects to be heard, whatever the daemon's mode.
    config.mode = crate::ListenMode::Always;
    let detector = match config.endpoint.detector {
        hark_endpoint::Detector::Smart => "smart",
        hark_endpoint::Detector::Silence => "silence",
    };

    tracing::info!(lines = script_lines.len(), "synthesizing the user's side");
    let mut lines = Vec::new();
    for say in script_lines {
        lines.push(Arc::new(Line::speak(say, user_voice)?));
    }

    let watch = Arc::new(Watch::default());
    let starts = Arc::new(Mutex::new(Vec::new()));
    let script = ScriptSource::new(
        lines.clone(),
        watch.clone(),
        config.vad.frame_len(),
        Arc::new(SystemClock),
        starts.clone(),
        options.interrupt_after_ms,
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let seen = tally.clone();
    let mut setup = SessionSetup::new(
        config,
        Input::Source(Box::new(script)),
        Output::File {
            path: dir.join("hark.wav"),
            tap: Some(watch.clone()),
        },
    );
    setup
        .subscribers
        .push(Box::new(move |t_ms: u64, event: &SessionEvent| {
            let mut tally = seen.lock().unwrap_or_else(|p| p.into_inner());
            match event {
                SessionEvent::SpeechEnded { at_ms, .. } => tally.speech_ends.push((*at_ms, t_ms)),
                SessionEvent::TurnJudged { inference_ms, .. } => {
                    tally.smart_turn_ms.push(*inference_ms)
                }
                SessionEvent::ReplyPrepared { .. } => tally.prepared += 1,
                SessionEvent::ReplyAdopted { .. } => tally.adopted += 1,
                SessionEvent::ReplyDropped { .. } => tally.dropped += 1,
                _ => {}
            }
        }));
    if options.keep.is_some() {
        setup.subscribers.push(Box::new(crate::EventLog::create(
            &dir.join("events.jsonl"),
        )?));
    }
    prepare(&mut setup);
    tracing::info!("running the conversation in real time");
    let started = Instant::now();
    let outcome = run_session(setup, load)?;
    let wall_secs = started.elapsed().as_secs_f64();

    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let speech_ends = &tally.speech_ends;
    let endpoint_arrival = |speech_end_ms: u64| {
        speech_ends
            .iter()
            .find(|(at, _)| *at == speech_end_ms)
            .map(|(_, t)| *t)
    };
    let starts = starts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let observed = watch.lock();
    let ms_of = |sample: u64| sample * 1000 / SAMPLE_RATE as u64;
    let mut turns = Vec::new();
    for (index, (line, &start)) in lines.iter().zip(&starts).enumerate() {
        let onset = ms_of(start + line.speech.0 as u64);
        let end = ms_of(start + line.speech.1 as u64);
        let next_onset = starts
            .get(index + 1)
            .map(|&s| ms_of(s + lines[index + 1].speech.0 as u64));
        let hark_was_speaking = audible_between(&observed, onset.saturating_sub(150), onset);
        let barge_in_ms = (line.kind == Kind::Interruption && hark_was_speaking)
            .then(|| silent_from(&observed, onset).map(|t| t.saturating_sub(onset)))
            .flatten();
        // Ended inside the sentence: in its pause, or (for any line) well
        // before its last word ended.
        let inside = match line.pause {
            Some((_, resumed)) => ms_of(start + resumed as u64),
            None => end.saturating_sub(CUT_OFF_MARGIN_MS),
        };
        let cut_off = speech_ends
            .iter()
            .any(|&(at, _)| at >= onset && at < inside);
        let voice_to_voice_ms = first_audible_after(&observed, end)
            .filter(|&t| next_onset.is_none_or(|n| t < n))
            .filter(|_| !cut_off)
            .map(|t| t.saturating_sub(end));
        // The reply to this line: the turn whose user speech ended within it.
        let record = outcome.turns.iter().find(|t| {
            t.timings
                .speech_ended_ms
                .is_some_and(|e| e + 200 >= onset && e <= end + 1000)
        });
        let stages = record.map_or_else(Stages::default, |r| {
            let t = &r.timings;
            let vad_end = t.speech_ended_ms.and_then(endpoint_arrival);
            Stages {
                answer_ms: t
                    .transcript_ms
                    .zip(t.first_playback_ms)
                    .map(|(tr, p)| p.saturating_sub(tr)),
                endpoint_ms: vad_end.map(|v| v.saturating_sub(end)),
                transcript_ms: vad_end
                    .zip(t.transcript_ms)
                    .map(|(v, tr)| tr.saturating_sub(v)),
                first_token_ms: t
                    .generation_started_ms
                    .zip(t.first_token_ms)
                    .map(|(g, f)| f.saturating_sub(g)),
                first_synthesis_ms: t
                    .first_clause_ms
                    .zip(t.first_synthesized_ms)
                    .map(|(c, s)| s.saturating_sub(c)),
                first_audio_ms: t
                    .first_token_ms
                    .zip(t.first_playback_ms)
                    .map(|(f, p)| p.saturating_sub(f)),
                playback_start_ms: t
                    .first_synthesized_ms
                    .zip(t.first_playback_ms)
                    .map(|(s, p)| p.saturating_sub(s)),
            }
        });
        turns.push(TurnResult {
            index: index + 1,
            kind: line.kind,
            said: line.text.clone(),
            user_onset_ms: onset,
            user_end_ms: end,
            hark_was_speaking,
            heard: record.map(|r| r.user_text.clone()),
            reply: record.map(|r| r.spoken.clone()),
            reply_interrupted: record.map(|r| r.interrupted),
            pause_ms: line.pause.map_or(0, |(a, b)| ms_of((b - a) as u64)),
            cut_off,
            voice_to_voice_ms,
            barge_in_ms,
            stages,
        });
    }
    drop(observed);

    let collect =
        |f: &dyn Fn(&TurnResult) -> Option<u64>| turns.iter().filter_map(f).collect::<Vec<_>>();
    let paused: Vec<&TurnResult> = turns.iter().filter(|t| t.pause_ms > 0).collect();
    let cut_off_rate = (!paused.is_empty())
        .then(|| paused.iter().filter(|t| t.cut_off).count() as f64 / paused.len() as f64);
    let report = Report {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        whisper_model: options.whisper_model.clone(),
        llm: options.llm.clone(),
        turns_scripted: script_lines.len(),
        interruptions_scripted: script_lines
            .iter()
            .filter(|say| say.kind == Kind::Interruption)
            .count(),
        interruptions_detected: outcome.interruptions,
        wall_secs,
        detector: detector.to_owned(),
        voice_to_voice_ms: summary(collect(&|t| t.voice_to_voice_ms)),
        barge_in_ms: summary(collect(&|t| t.barge_in_ms)),
        cut_off_rate,
        paused_lines: paused.len(),
        cut_offs_elsewhere: turns
            .iter()
            .filter(|t| t.pause_ms == 0 && t.cut_off)
            .count(),
        replies_prepared: tally.prepared,
        replies_adopted: tally.adopted,
        false_early_replies: tally.dropped,
        smart_turn_ms: summary(tally.smart_turn_ms.clone()),
        endpoint_ms: summary(collect(&|t| t.stages.endpoint_ms)),
        transcript_ms: summary(collect(&|t| t.stages.transcript_ms)),
        first_token_ms: summary(collect(&|t| t.stages.first_token_ms)),
        first_synthesis_ms: summary(collect(&|t| t.stages.first_synthesis_ms)),
        first_audio_ms: summary(collect(&|t| t.stages.first_audio_ms)),
        playback_start_ms: summary(collect(&|t| t.stages.playback_start_ms)),
        answer_ms: summary(collect(&|t| t.stages.answer_ms)),
        turns,
    };
    if options.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        write_input(&dir.join("user.wav"), &lines, &starts)?;
        tracing::info!(dir = %dir.display(), "kept the recordings and events");
    }
    Ok(report)
}

fn ms_to_index(o: &Observed, ms: u64) -> usize {
    (ms * o.rate as u64 / 1000) as usize
}

fn audible_between(o: &Observed, from_ms: u64, to_ms: u64) -> bool {
    let (a, b) = (ms_to_index(o, from_ms), ms_to_index(o, to_ms));
    o.samples
        .get(a..b.min(o.samples.len()))
        .is_some_and(|s| s.iter().any(|x| x.abs() > AUDIBLE))
}

fn first_audible_after(o: &Observed, ms: u64) -> Option<u64> {
    let from = ms_to_index(o, ms);
    let k = o
        .samples
        .get(from..)?
        .iter()
        .position(|x| x.abs() > AUDIBLE)?;
    Some(((from + k) as u64) * 1000 / o.rate as u64)
}

/// Start of the first run of at least [`SILENT_RUN_MS`] of silence at or
/// after `ms`.
fn silent_from(o: &Observed, ms: u64) -> Option<u64> {
    let need = ms_to_index(o, SILENT_RUN_MS);
    let mut run_start = None;
    for (i, x) in o.samples.iter().enumerate().skip(ms_to_index(o, ms)) {
        if x.abs() < SILENT {
            let start = *run_start.get_or_insert(i);
            if i + 1 - start >= need {
                return Some(start as u64 * 1000 / o.rate as u64);
            }
        } else {
            run_start = None;
        }
    }
    None
}

/// Writes the user's side as played, for listening to a kept run.
fn write_input(path: &Path, lines: &[Arc<Line>], starts: &[u64]) -> Result<(), AudioError> {
    let end = lines
        .iter()
        .zip(starts)
        .map(|(l, &s)| s as usize + l.audio.len())
        .max()
        .unwrap_or(0);
    let mut all = vec![0.0f32; end];
    for (line, &start) in lines.iter().zip(starts) {
        let start = start as usize;
        all[start..start + line.audio.len()].copy_from_slice(&line.audio);
    }
    let mut sink = hark_audio::wav::WavSink::create(
        path,
        SAMPLE_RATE,
        hark_audio::wav::WavSampleFormat::Int16,
    )?;
    sink.write(&all)?;
    sink.finalize()?;
    Ok(())
}
