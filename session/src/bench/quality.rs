//! `hark bench quality`: how well Hark holds a conversation, through a
//! real microphone and speaker that hear each other.
//!
//! Hark runs as the daemon does (the configured microphone and speaker,
//! echo cancellation, Smart Turn), on an audio server where the speaker
//! leaks into the microphone. The user's side is played into the
//! microphone by a [`Mouth`] (the binary's plays into a PulseAudio sink
//! with `pacat`); what Hark does is read from its events. Four phases:
//!
//! 1. *Self-interruption*: questions, each answered in full while the user
//!    stays silent. A reply cut short then was cut by Hark's own voice.
//! 2. *False barge-in*: while Hark speaks (a request for a long reply), backchannels ("mhm", "yeah",
//!    "okay") and noises, one every [`BETWEEN_SOUNDS`]. One that stops Hark
//!    is a false barge-in.
//! 3. *Missed interruptions*: while Hark speaks, a whole sentence. Hark
//!    must stop; how long its voice went on after the barge-in was
//!    confirmed (the `Interrupted` event) is read from `PlaybackStopped`.
//!    A sentence that began as Hark finished on its own is not counted.
//! 4. *Noise*: noises and silence while Hark is idle. Any transcript or
//!    reply is an output that should not have been.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hark_converse::turn::State;
use serde::Serialize;

use super::{summary, BenchError, Summary};
use crate::events::SessionEvent;
use crate::{
    run_session, BoxError, Command, CoreInput, Input, ListenMode, Models, Output, SessionConfig,
    SessionSetup,
};

/// How long after Hark's voice starts a sound is played over it.
const INTO_THE_REPLY: Duration = Duration::from_millis(1000);
/// Between two backchannels or noises over the same reply.
const BETWEEN_SOUNDS: Duration = Duration::from_millis(1500);
/// A sound over Hark that has not stopped it this long after it ended did
/// not barge in.
const BARGE_IN_GRACE: Duration = Duration::from_millis(1500);
/// Hark must have been quiet this long before a question is asked.
const QUIET_BEFORE_QUESTION: Duration = Duration::from_millis(1200);
/// A step waits at most this long for Hark (a reply, its voice).
const PATIENCE: Duration = Duration::from_secs(45);
/// A phase gives up after this many steps that timed out.
const MOST_TIMEOUTS: usize = 5;

/// Plays the user's side into the microphone.
pub trait Mouth: Send {
    /// Plays `audio` (16 kHz mono), returning once it has been heard
    /// (real-time pace).
    fn say(&mut self, audio: &[f32]) -> Result<(), BoxError>;
}

/// One recording of the user's side.
#[derive(Clone)]
pub struct Clip {
    /// Where it comes from, for the report.
    pub name: String,
    /// 16 kHz mono.
    pub audio: Vec<f32>,
}

/// The user's side, by phase. Each list is played round-robin.
pub struct Material {
    /// Questions Hark answers (phase 1).
    pub questions: Vec<Clip>,
    /// Requests for long replies, to talk over (phases 2 and 3).
    pub requests: Vec<Clip>,
    /// Short sounds that must not stop Hark: backchannels and noises.
    pub backchannels: Vec<Clip>,
    /// Whole sentences that must stop Hark.
    pub interruptions: Vec<Clip>,
    /// Noises for the idle phase.
    pub noises: Vec<Clip>,
}

/// How many of each, and how long the noise phase lasts.
#[derive(Debug, Clone)]
pub struct QualityOptions {
    pub questions: usize,
    pub backchannels: usize,
    pub interruptions: usize,
    pub noise_secs: f64,
    /// Write the session's event log here.
    pub events: Option<std::path::PathBuf>,
    /// Threads that spin at full speed from the models' loading to the
    /// end (a CPU hog beside Hark: one per core keeps every core busy).
    pub cpu_hog_threads: usize,
}

impl Default for QualityOptions {
    fn default() -> Self {
        Self {
            questions: 20,
            backchannels: 40,
            interruptions: 50,
            noise_secs: 600.0,
            events: None,
            cpu_hog_threads: 0,
        }
    }
}

/// What `hark bench quality` prints, as JSON.
#[derive(Serialize)]
pub struct QualityReport {
    pub wall_secs: f64,
    /// Phase 1: replies answered with the user silent, and how many of
    /// them Hark's own voice cut short.
    pub replies_unprompted: usize,
    pub self_interruptions: usize,
    /// Phase 2: sounds played over Hark, and the share that stopped it.
    pub backchannels_played: usize,
    pub false_barge_ins: usize,
    pub false_barge_in_rate: f64,
    /// Which sounds stopped Hark.
    pub false_barge_in_sounds: Vec<String>,
    /// Phase 3: sentences played over Hark, and the share it talked
    /// through.
    pub interruptions_played: usize,
    pub missed_interruptions: usize,
    pub missed_interruption_rate: f64,
    /// Which sentences Hark talked through.
    pub missed_interruption_sentences: Vec<String>,
    /// Barge-in confirmed → Hark's voice stopped (`PlaybackStopped`), ms.
    pub silent_after_barge_in_ms: Summary,
    /// Phase 4: seconds of noise and silence, and the transcripts and
    /// replies that came of them.
    pub noise_secs: f64,
    pub noise_outputs: usize,
    pub noise_output_texts: Vec<String>,
    /// Steps that timed out waiting for Hark (a reply that never came).
    pub timeouts: usize,
    pub errors: Vec<String>,
    /// Busy threads that ran beside Hark ([`QualityOptions::cpu_hog_threads`]).
    pub cpu_hog_threads: usize,
    /// Microphone samples lost because Hark fell behind the device
    /// (capture ring overruns), over the whole run.
    pub capture_samples_lost: u64,
}

/// What the events say, as the runner reads it.
#[derive(Default)]
struct Seen {
    speaking: bool,
    /// When Hark last went back to listening, idle (or the session
    /// started); `None` while it hears, thinks or speaks.
    quiet_since: Option<Instant>,
    speaking_since: Option<Instant>,
    turns_finished: usize,
    /// Utterances that had no words (no reply follows them).
    nothing_heard: usize,
    last_turn_interrupted: bool,
    last_turn_finished_at: Option<Instant>,
    interruptions: Vec<Instant>,
    /// `PlaybackStopped` after each `Interrupted` (0 when Hark was
    /// already silent: held since the speech began).
    stopped_after_interruption: Vec<u64>,
    awaiting_stop: Option<Instant>,
    /// Hark's voice is playing: a clause started and has not finished or
    /// been stopped, or a held clause was resumed.
    voice_playing: bool,
    /// A clause was stopped in its middle (held), to resume if the speech
    /// over it is dismissed.
    voice_held: bool,
    /// Words Hark heard (user turns) and replies, in order.
    outputs: Vec<String>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `ready` holds, at most `limit`; whether it did.
    fn wait_for(&self, limit: Duration, ready: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut seen = self.lock();
        while !ready(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            seen = self
                .changed
                .wait_timeout(seen, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    fn event(&self, event: &SessionEvent) {
        let now = Instant::now();
        let mut seen = self.lock();
        match event {
            SessionEvent::State { to, .. } => {
                let speaking = *to == State::Speaking;
                if speaking && !seen.speaking {
                    seen.speaking_since = Some(now);
                }
                seen.quiet_since = matches!(to, State::Listening | State::Idle).then_some(now);
                seen.speaking = speaking;
            }
            SessionEvent::Listening => seen.quiet_since = Some(now),
            SessionEvent::Interrupted { .. } => {
                seen.interruptions.push(now);
                if seen.voice_playing {
                    seen.awaiting_stop = Some(now);
                } else {
                    seen.stopped_after_interruption.push(0);
                }
            }
            SessionEvent::PlaybackStarted { .. } => {
                seen.voice_playing = true;
                seen.voice_held = false;
            }
            SessionEvent::PlaybackFinished { .. } => seen.voice_playing = false,
            SessionEvent::BargeInDismissed { .. } if seen.voice_held => {
                seen.voice_playing = true;
                seen.voice_held = false;
            }
            SessionEvent::PlaybackStopped { flushed } => {
                seen.voice_held = seen.voice_playing && !flushed;
                seen.voice_playing = false;
                if let Some(at) = seen.awaiting_stop.take() {
                    let ms = now.saturating_duration_since(at).as_millis() as u64;
                    seen.stopped_after_interruption.push(ms);
                }
            }
            SessionEvent::UserTurn { text } => seen.outputs.push(format!("heard: {text}")),
            SessionEvent::NothingHeard => seen.nothing_heard += 1,
            SessionEvent::TurnFinished {
                text, interrupted, ..
            } => {
                seen.turns_finished += 1;
                seen.last_turn_interrupted = *interrupted;
                seen.last_turn_finished_at = Some(now);
                seen.outputs.push(format!("replied: {text}"));
            }
            SessionEvent::Error { code, message } => seen.errors.push(format!("{code}: {message}")),
            _ => return,
        }
        drop(seen);
        self.changed.notify_all();
    }
}

/// Runs the four phases with Hark as `config` and `load` make it, on the
/// configured microphone and speaker.
pub fn quality(
    mut config: SessionConfig,
    load: impl FnOnce() -> Result<Models, BoxError>,
    mouth: Box<dyn Mouth>,
    material: Material,
    options: &QualityOptions,
    prepare: impl FnOnce(&mut SessionSetup),
) -> Result<QualityReport, BenchError> {
    for (what, clips) in [
        ("questions", &material.questions),
        ("requests", &material.requests),
        ("backchannels", &material.backchannels),
        ("interruptions", &material.interruptions),
        ("noises", &material.noises),
    ] {
        if clips.is_empty() {
            return Err(BenchError::UserVoice(format!("no recordings of {what}")));
        }
    }
    config.mode = ListenMode::Always;
    let shared = Arc::new(Shared::default());
    let (inbox_tx, inbox_rx) = std::sync::mpsc::sync_channel::<SyncSender<CoreInput>>(1);
    let mut setup = SessionSetup::new(config, Input::Microphone, Output::Speaker);
    let seen = shared.clone();
    setup
        .subscribers
        .push(Box::new(move |_t_ms: u64, event: &SessionEvent| {
            seen.event(event)
        }));
    if let Some(path) = &options.events {
        setup
            .subscribers
            .push(Box::new(crate::EventLog::create(path)?));
    }
    setup.on_ready = Some(Box::new(move |inbox| {
        let _ = inbox_tx.send(inbox);
    }));
    prepare(&mut setup);

    let runner_shared = shared.clone();
    let options = options.clone();
    let runner = std::thread::Builder::new()
        .name("hark-bench-user".into())
        .spawn(move || {
            let Ok(inbox) = inbox_rx.recv() else {
                return None; // the session never started
            };
            let _hog = CpuHog::start(options.cpu_hog_threads);
            let mut run = Runner {
                inbox: inbox.clone(),
                shared: runner_shared,
                mouth,
                material,
                next: [0; 5],
                timeouts: 0,
            };
            let report = run.all(&options);
            let _ = inbox.send(CoreInput::Command(Command::Stop));
            Some(report)
        })
        .map_err(|e| BenchError::UserVoice(format!("cannot start the user's thread: {e}")))?;
    let started = Instant::now();
    let lost_before = hark_audio::device::capture_samples_lost();
    let outcome = run_session(setup, load);
    let report = runner.join().ok().flatten();
    outcome?;
    let mut report = report
        .ok_or_else(|| BenchError::UserVoice("the session ended before the scenario ran".into()))?;
    report.wall_secs = started.elapsed().as_secs_f64();
    report.errors = std::mem::take(&mut shared.lock().errors);
    report.capture_samples_lost = hark_audio::device::capture_samples_lost() - lost_before;
    Ok(report)
}

/// Threads that keep the cores busy until dropped.
struct CpuHog {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    fn start(threads: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .filter_map(|k| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("cpu-hog-{k}"))
                    .spawn(move || {
                        let mut x = k as u64 + 1;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            for _ in 0..100_000 {
                                x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The lists of [`Material`], for [`Runner::clip`].
const QUESTIONS: usize = 0;
const BACKCHANNELS: usize = 1;
const INTERRUPTIONS: usize = 2;
const NOISES: usize = 3;
const REQUESTS: usize = 4;

/// An interruption whose sentence began less than this before Hark
/// finished its reply on its own was not said over Hark.
const OVER_HARK_AT_LEAST: Duration = Duration::from_millis(600);

struct Runner {
    /// The core's inbox, for commands.
    inbox: SyncSender<CoreInput>,
    shared: Arc<Shared>,
    mouth: Box<dyn Mouth>,
    material: Material,
    /// The next clip of each list.
    next: [usize; 5],
    timeouts: usize,
}

impl Runner {
    fn clip(&mut self, list: usize) -> Clip {
        let clips = match list {
            QUESTIONS => &self.material.questions,
            BACKCHANNELS => &self.material.backchannels,
            INTERRUPTIONS => &self.material.interruptions,
            NOISES => &self.material.noises,
            _ => &self.material.requests,
        };
        let clip = clips[self.next[list] % clips.len()].clone();
        self.next[list] += 1;
        clip
    }

    fn say(&mut self, clip: &Clip) {
        if let Err(e) = self.mouth.say(&clip.audio) {
            self.shared
                .lock()
                .errors
                .push(format!("playing {}: {e}", clip.name));
        }
    }

    /// Waits until Hark is listening, with nothing in progress, and has
    /// been for a moment.
    fn wait_quiet(&mut self) {
        let ok = self.shared.wait_for(PATIENCE, |s| {
            s.quiet_since
                .is_some_and(|t| t.elapsed() >= QUIET_BEFORE_QUESTION)
        });
        if !ok {
            self.timeouts += 1;
        }
    }

    /// Asks for a long reply and waits until Hark has been speaking for
    /// [`INTO_THE_REPLY`]; whether it did.
    fn start_a_reply(&mut self) -> bool {
        self.wait_quiet();
        // A small model soon answers everything as it answered last
        // ("The answer is 4."): each request starts afresh, for a reply
        // long enough to talk over.
        let _ = self.inbox.send(CoreInput::Command(Command::ClearHistory));
        let question = self.clip(REQUESTS);
        self.say(&question);
        self.wait_speaking()
    }

    /// Waits until Hark has been speaking for [`INTO_THE_REPLY`].
    fn wait_speaking(&mut self) -> bool {
        let ok = self.shared.wait_for(PATIENCE, |s| {
            s.speaking
                && s.speaking_since
                    .is_some_and(|t| t.elapsed() >= INTO_THE_REPLY)
        });
        if !ok {
            self.timeouts += 1;
        }
        ok
    }

    fn all(&mut self, options: &QualityOptions) -> QualityReport {
        // 1. Replies with the user silent.
        let mut replies_unprompted = 0;
        let mut self_interruptions = 0;
        for _ in 0..options.questions {
            self.wait_quiet();
            let (before, unheard) = {
                let seen = self.shared.lock();
                (seen.turns_finished, seen.nothing_heard)
            };
            let question = self.clip(QUESTIONS);
            self.say(&question);
            if self.shared.wait_for(PATIENCE * 2, |s| {
                (s.turns_finished > before && !s.speaking) || s.nothing_heard > unheard
            }) {
                let seen = self.shared.lock();
                if seen.turns_finished > before {
                    replies_unprompted += 1;
                    if seen.last_turn_interrupted {
                        self_interruptions += 1;
                    }
                }
            } else {
                self.timeouts += 1;
            }
        }

        // 2. Backchannels and noises over Hark.
        let give_up = self.timeouts + MOST_TIMEOUTS;
        let mut played = 0;
        let mut false_barge_ins = Vec::new();
        while played < options.backchannels && self.timeouts < give_up {
            if !self.start_a_reply() {
                continue;
            }
            while played < options.backchannels && self.shared.lock().speaking {
                let interruptions = self.shared.lock().interruptions.len();
                let sound = self.clip(BACKCHANNELS);
                self.say(&sound);
                played += 1;
                let stopped = self
                    .shared
                    .wait_for(BARGE_IN_GRACE, |s| s.interruptions.len() > interruptions);
                if stopped {
                    false_barge_ins.push(sound.name.clone());
                    break;
                }
                std::thread::sleep(BETWEEN_SOUNDS.saturating_sub(BARGE_IN_GRACE));
            }
        }

        // 3. Whole sentences over Hark, each over a reply of its own.
        let mut interruptions_played = 0;
        let mut missed = Vec::new();
        let stops_before = self.shared.lock().stopped_after_interruption.len();
        let give_up = self.timeouts + MOST_TIMEOUTS;
        while interruptions_played < options.interruptions && self.timeouts < give_up {
            if !self.start_a_reply() {
                continue;
            }
            let interruptions = self.shared.lock().interruptions.len();
            let sentence = self.clip(INTERRUPTIONS);
            let onset = Instant::now();
            self.say(&sentence);
            let stopped = self
                .shared
                .wait_for(BARGE_IN_GRACE, |s| s.interruptions.len() > interruptions);
            let seen = self.shared.lock();
            let finished_first = !seen.last_turn_interrupted
                && seen
                    .last_turn_finished_at
                    .is_some_and(|t| t > onset && t < onset + OVER_HARK_AT_LEAST);
            drop(seen);
            if stopped {
                interruptions_played += 1;
            } else if !finished_first {
                interruptions_played += 1;
                missed.push(sentence.name.clone());
            }
        }
        let stops = self.shared.lock().stopped_after_interruption[stops_before..].to_vec();

        // 4. Noise and silence while Hark is idle (once the last sentence
        // has been answered).
        self.wait_quiet();
        std::thread::sleep(QUIET_BEFORE_QUESTION);
        self.wait_quiet();
        let outputs_before = self.shared.lock().outputs.len();
        let noise_started = Instant::now();
        let noise = Duration::from_secs_f64(options.noise_secs);
        while noise_started.elapsed() < noise {
            let sound = self.clip(NOISES);
            self.say(&sound);
            let pause = Duration::from_millis(1500 + 500 * (self.next[NOISES] % 5) as u64);
            std::thread::sleep(pause.min(noise.saturating_sub(noise_started.elapsed())));
        }
        // What the last noise set going.
        std::thread::sleep(Duration::from_secs(3));
        let noise_secs = noise_started.elapsed().as_secs_f64();

        let seen = self.shared.lock();
        let noise_output_texts: Vec<String> = seen.outputs[outputs_before..].to_vec();
        let rate = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        QualityReport {
            wall_secs: 0.0,
            replies_unprompted,
            self_interruptions,
            backchannels_played: played,
            false_barge_ins: false_barge_ins.len(),
            false_barge_in_rate: rate(false_barge_ins.len(), played),
            false_barge_in_sounds: false_barge_ins,
            interruptions_played,
            missed_interruptions: missed.len(),
            missed_interruption_rate: rate(missed.len(), interruptions_played),
            missed_interruption_sentences: missed,
            silent_after_barge_in_ms: summary(stops),
            noise_secs,
            noise_outputs: noise_output_texts.len(),
            noise_output_texts,
            timeouts: self.timeouts,
            errors: Vec::new(),
            cpu_hog_threads: options.cpu_hog_threads,
            capture_samples_lost: 0,
        }
    }
}
