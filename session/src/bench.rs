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
//! - stages (from the event log): endpoint (VAD noticed the end), transcript,
//!   first token, first audio.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hark_audio::resample::resample_mono;
use hark_audio::{AudioError, Frame, FrameSource, SAMPLE_RATE};
use hark_tts::Voice;
use serde::Serialize;

use crate::events::SessionEvent;
use crate::speaker::OutputTap;
use crate::{
    run_session, BoxError, Input, Models, Output, SessionConfig, SessionError, SessionSetup,
};

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

/// The scenario: 12 turns, 4 of them interrupting a reply in progress.
const SCRIPT: &[(&str, Kind)] = &[
    ("What is the capital of France?", Kind::Question),
    (
        "Tell me a long story about a brave knight and a dragon.",
        Kind::Question,
    ),
    ("Wait, stop. What is two plus two?", Kind::Interruption),
    ("Name three colors of the rainbow.", Kind::Question),
    (
        "Can you describe the ocean in a few sentences?",
        Kind::Question,
    ),
    (
        "Hold on, tell me about the moon instead.",
        Kind::Interruption,
    ),
    ("What do bees make?", Kind::Question),
    ("Explain how a rainbow forms.", Kind::Question),
    ("Sorry, I meant to ask about clouds.", Kind::Interruption),
    (
        "What is the largest planet in our solar system?",
        Kind::Question,
    ),
    ("Tell me about the history of Rome.", Kind::Question),
    ("Stop please, tell me a joke instead.", Kind::Interruption),
];

/// Requests the skills answer without a model.
const SKILLS_SCRIPT: &[(&str, Kind)] = &[
    ("What time is it?", Kind::Question),
    ("Set a timer for five minutes.", Kind::Question),
    ("How much time is left?", Kind::Question),
    ("What's the date today?", Kind::Question),
    ("Repeat that.", Kind::Question),
    ("Louder.", Kind::Question),
    ("Quieter.", Kind::Question),
    ("Cancel the timer.", Kind::Question),
];

/// One scripted utterance at 16 kHz with where its speech really is.
struct Line {
    text: &'static str,
    kind: Kind,
    audio: Vec<f32>,
    /// First and one-past-last sample louder than [`AUDIBLE`].
    speech: (usize, usize),
}

/// Hark's output as the benchmark sees it, written by the speaker thread.
#[derive(Default)]
struct Observed {
    /// Every output sample, in order from the input's zero.
    samples: Vec<f32>,
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
        o.samples.extend_from_slice(samples);
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

/// Plays the script into the pipeline at real-time pace.
struct ScriptSource {
    lines: Vec<Arc<Line>>,
    next_line: usize,
    playing: Option<(Arc<Line>, usize)>,
    watch: Arc<Watch>,
    frame_len: usize,
    origin: Option<Instant>,
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
    fn now_ms(&self) -> u64 {
        self.position * 1000 / SAMPLE_RATE as u64
    }

    /// Whether the next line may start now.
    fn due(&self, line: &Line) -> bool {
        let now = self.now_ms();
        let since_last_end = now.saturating_sub(self.last_end * 1000 / SAMPLE_RATE as u64);
        if self.next_line == 0 {
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
        let origin = *self.origin.get_or_insert_with(Instant::now);
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
                        if self.next_line == self.lines.len() {
                            self.ended_at = Some(self.last_end + self.tail);
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
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
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
    /// True end of speech → the VAD reports the end.
    pub endpoint_ms: Option<u64>,
    /// VAD end → transcript.
    pub transcript_ms: Option<u64>,
    /// Transcript → first token.
    pub first_token_ms: Option<u64>,
    /// First token → first audio playing.
    pub first_audio_ms: Option<u64>,
}

/// One scripted line and what became of it.
#[derive(Serialize)]
pub struct TurnResult {
    pub index: usize,
    pub kind: Kind,
    pub said: &'static str,
    pub user_onset_ms: u64,
    pub user_end_ms: u64,
    /// Hark was audible when the interruption began.
    pub hark_was_speaking: bool,
    pub heard: Option<String>,
    pub reply: Option<String>,
    pub reply_interrupted: Option<bool>,
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
    pub voice_to_voice_ms: Summary,
    pub barge_in_ms: Summary,
    pub endpoint_ms: Summary,
    pub transcript_ms: Summary,
    pub first_token_ms: Summary,
    pub first_audio_ms: Summary,
    /// Transcript → first audio.
    pub answer_ms: Summary,
    pub turns: Vec<TurnResult>,
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

    tracing::info!(lines = script_lines.len(), "synthesizing the user's side");
    let mut lines = Vec::new();
    for &(text, kind) in script_lines {
        let pcm = user_voice
            .synthesize(text)
            .map_err(|e| BenchError::UserVoice(e.to_string()))?;
        let audio = resample_mono(&pcm, user_voice.sample_rate(), SAMPLE_RATE)?;
        let first = audio.iter().position(|s| s.abs() > AUDIBLE).unwrap_or(0);
        let last = audio
            .iter()
            .rposition(|s| s.abs() > AUDIBLE)
            .map_or(audio.len(), |i| i + 1);
        lines.push(Arc::new(Line {
            text,
            kind,
            audio,
            speech: (first, last),
        }));
    }

    let watch = Arc::new(Watch::default());
    let starts = Arc::new(Mutex::new(Vec::new()));
    let script = ScriptSource {
        lines: lines.clone(),
        next_line: 0,
        playing: None,
        watch: watch.clone(),
        frame_len: config.vad.frame_len(),
        origin: None,
        position: 0,
        last_end: 0,
        starts: starts.clone(),
        tail: SAMPLE_RATE as u64 * 2,
        interrupt_after_ms: options.interrupt_after_ms,
        ended_at: None,
    };
    // When the core heard of each speech end: (speech end, arrival), ms.
    let speech_ends = Arc::new(Mutex::new(Vec::new()));
    let seen = speech_ends.clone();
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
            if let SessionEvent::SpeechEnded { at_ms, .. } = event {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((*at_ms, t_ms));
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

    let speech_ends = speech_ends
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
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
        let voice_to_voice_ms = first_audible_after(&observed, end)
            .filter(|&t| next_onset.is_none_or(|n| t < n))
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
                first_audio_ms: t
                    .first_token_ms
                    .zip(t.first_playback_ms)
                    .map(|(f, p)| p.saturating_sub(f)),
            }
        });
        turns.push(TurnResult {
            index: index + 1,
            kind: line.kind,
            said: line.text,
            user_onset_ms: onset,
            user_end_ms: end,
            hark_was_speaking,
            heard: record.map(|r| r.user_text.clone()),
            reply: record.map(|r| r.spoken.clone()),
            reply_interrupted: record.map(|r| r.interrupted),
            voice_to_voice_ms,
            barge_in_ms,
            stages,
        });
    }
    drop(observed);

    let collect =
        |f: &dyn Fn(&TurnResult) -> Option<u64>| turns.iter().filter_map(f).collect::<Vec<_>>();
    let report = Report {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        whisper_model: options.whisper_model.clone(),
        llm: options.llm.clone(),
        turns_scripted: script_lines.len(),
        interruptions_scripted: script_lines
            .iter()
            .filter(|(_, k)| *k == Kind::Interruption)
            .count(),
        interruptions_detected: outcome.interruptions,
        wall_secs,
        voice_to_voice_ms: summary(collect(&|t| t.voice_to_voice_ms)),
        barge_in_ms: summary(collect(&|t| t.barge_in_ms)),
        endpoint_ms: summary(collect(&|t| t.stages.endpoint_ms)),
        transcript_ms: summary(collect(&|t| t.stages.transcript_ms)),
        first_token_ms: summary(collect(&|t| t.stages.first_token_ms)),
        first_audio_ms: summary(collect(&|t| t.stages.first_audio_ms)),
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
