//! The conversation core's event loop: the one owner of conversation state.
//!
//! Every other thread (ears, Whisper, the language model, the voice, the
//! speaker, and later D-Bus) only sends [`CoreInput`]s into one bounded
//! channel. The loop stamps each with the input timeline's time, feeds it to
//! the pure [`Conversation`] state machine and carries out the actions it
//! returns by sending work to those threads. A tick every 20 ms lets the
//! state machine's duration rules (barge-in) fire on time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hark_converse::turn::{
    Action, ClauseId, Conversation, Event, Notice, ReplyId, Role, State, Turn, TurnTimings,
};
use hark_llm::{CancelHandle, ChatMessage, LlmEvent, LlmWorker, INTERRUPTED_MARKER};

use super::events::EventLog;
use super::hearing::{HearingEvent, SttJob, SttPurpose, SttResult};
use super::input::{ExternalInput, InputSwitch};
use super::speaker::{PlaybackReport, Speaker, SpeakerCommand};
use super::voice::{ClauseVoice, Synthesized};

/// How often the state machine is told that time passed.
const TICK: Duration = Duration::from_millis(20);
/// After the input ends and Hark has finished talking, how long to keep
/// listening for stragglers before closing.
const LINGER: Duration = Duration::from_millis(800);
/// Longest wait for a reply to finish after the input has ended.
const LAST_REPLY_LIMIT: Duration = Duration::from_secs(90);

/// Everything that can happen to the core.
#[derive(Debug)]
pub enum CoreInput {
    Hearing(HearingEvent),
    Transcribed(SttResult),
    Llm {
        reply: ReplyId,
        event: LlmEvent,
    },
    Synthesized(Synthesized),
    Playback(PlaybackReport),
    #[allow(dead_code)] // not sent by `hark converse` itself
    Command(Command),
}

/// Requests from outside the audio path (the D-Bus service sends these).
/// Those with a `Reply` answer through it; a dropped reply is fine.
#[derive(Debug)]
pub enum Command {
    Say(String),
    /// Answer `text` as if the user had said it; `reply` gets what Hark
    /// said (only the spoken part if it was interrupted).
    Ask {
        text: String,
        reply: Option<Reply<String>>,
    },
    Interrupt,
    SetMuted(bool),
    SetMode(ListenMode),
    /// Push-to-talk pressed (true) or released.
    Listen(bool),
    ClearHistory,
    GetHistory(Reply<Vec<HistoryEntry>>),
    /// A reloaded configuration: new turn-taking rules and listening mode.
    Reconfigure {
        turn: hark_converse::turn::TurnConfig,
        mode: ListenMode,
    },
    /// Listen to this stream instead of the microphone until it closes;
    /// `reply` gets why not, if another stream is already in.
    OpenInput {
        input: ExternalInput,
        reply: Reply<Result<(), String>>,
    },
    /// Finish the current reply (if any) and stop.
    Stop,
}

/// A history turn with the wall-clock time it was recorded.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub turn: Turn,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// Where a command's answer goes.
pub type Reply<T> = tokio::sync::oneshot::Sender<T>;

/// When Hark listens.
pub use crate::config::Mode as ListenMode;

/// What the core tells the outside world (D-Bus signals and properties).
#[derive(Debug, Clone)]
pub enum Published {
    State(State),
    /// The user started speaking (while Hark listens).
    SpeechStarted,
    /// What the user has said so far, while still talking.
    PartialTranscript(String),
    /// The user's words, accepted as a turn.
    FinalTranscript(String),
    /// A clause of Hark's reply, as it will be spoken.
    ReplyChunk(String),
    /// Hark was talked over; what the user heard of the reply.
    Interrupted(String),
    TurnFinished(TurnRecord),
    Muted(bool),
    Mode(ListenMode),
    /// What the ears listen to now.
    InputDevice(String),
    Error {
        code: &'static str,
        message: String,
    },
}

/// A transcription started when the user's speech paused.
#[derive(Debug)]
struct Speculation {
    speech_end_ms: u64,
    /// Its transcript and how long Whisper took, once done.
    text: Option<(String, u64)>,
    /// The utterance that ended at the pause and waits for the transcript.
    waiting: Option<hark_converse::turn::UtteranceId>,
}

/// Receives every [`Published`] event, on the core's thread: keep it quick.
pub type Publisher = Box<dyn FnMut(Published) + Send>;

/// A finished reply, for the caller's summary and benchmarks.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    pub user_text: String,
    pub spoken: String,
    pub interrupted: bool,
    pub timings: TurnTimings,
}

/// What a session leaves behind.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    pub turns: Vec<TurnRecord>,
    pub history: Vec<Turn>,
    pub interruptions: usize,
}

/// When the loop ends by itself.
#[derive(Debug, Clone, Default)]
pub struct StopRules {
    /// Stop once this many replies have finished.
    pub max_turns: Option<usize>,
    /// Stop after this long on the input timeline.
    pub duration: Option<Duration>,
}

/// The parts the core drives; built by the caller, owned by the core.
pub struct Workers {
    pub stt: SyncSender<SttJob>,
    pub llm: LlmWorker,
    pub voice: ClauseVoice,
    pub speaker: Speaker,
}

pub struct Core {
    conversation: Conversation,
    inputs: Receiver<CoreInput>,
    /// For forwarders started per generation.
    inbox: SyncSender<CoreInput>,
    workers: Workers,
    /// The running generation, so a cancel reaches it.
    generation: Option<(ReplyId, CancelHandle)>,
    /// Audio of the utterance the VAD just closed, until Transcribe asks.
    utterance_audio: Option<Vec<f32>>,
    /// Where the speech of that utterance ended (ms), to match a
    /// speculation.
    utterance_end_ms: Option<u64>,
    /// The latest speculative transcription (see `SpeechPausing`).
    speculation: Option<Speculation>,
    /// Synthesized clauses waiting for their turn to play.
    synthesized: HashMap<ClauseId, Vec<f32>>,
    /// Events the core owes the state machine (answers it can give itself).
    owed: VecDeque<Event>,
    log: EventLog,
    /// Zero of the input timeline; set by the ears on the first frame.
    origin: Arc<OnceLock<Instant>>,
    stop: Arc<AtomicBool>,
    last_user_text: String,
    outcome: SessionOutcome,
    /// Print "you:"/"hark:" lines on stdout (off when stdout carries JSON).
    print_turns: bool,
    publish: Option<Publisher>,
    /// `Ask` commands waiting for the reply they started.
    pending_asks: Vec<(ReplyId, Reply<String>)>,
    /// An `Ask` just handed to the state machine, until its reply id is
    /// known (the `StartGeneration` it causes).
    asking: Option<Reply<String>>,
    mode: ListenMode,
    user_muted: bool,
    push_to_talk_held: bool,
    /// sd_notify watchdog: how often, and when last pinged.
    watchdog: Option<(Duration, Instant)>,
    /// Where `OpenInput` streams go; `None` where the input is fixed.
    input_switch: Option<Arc<InputSwitch>>,
    /// A partial transcription is queued or running.
    partial_in_flight: bool,
}

impl Core {
    pub fn new(
        conversation: Conversation,
        inputs: Receiver<CoreInput>,
        inbox: SyncSender<CoreInput>,
        workers: Workers,
        log: EventLog,
        origin: Arc<OnceLock<Instant>>,
        stop: Arc<AtomicBool>,
        print_turns: bool,
        publish: Option<Publisher>,
    ) -> Self {
        Self {
            conversation,
            inputs,
            inbox,
            workers,
            generation: None,
            utterance_audio: None,
            utterance_end_ms: None,
            speculation: None,
            synthesized: HashMap::new(),
            owed: VecDeque::new(),
            log,
            origin,
            stop,
            last_user_text: String::new(),
            outcome: SessionOutcome::default(),
            print_turns,
            publish,
            pending_asks: Vec::new(),
            asking: None,
            mode: ListenMode::Always,
            user_muted: false,
            push_to_talk_held: false,
            watchdog: crate::notify::watchdog_interval().map(|every| (every, Instant::now())),
            input_switch: None,
            partial_in_flight: false,
        }
    }

    /// Sends the speech so far to Whisper for a partial transcript, unless
    /// one is already on its way (so a final transcript never waits behind
    /// more than one) or nobody is being listened to.
    fn transcribe_partial(&mut self, audio: Vec<f32>) {
        if self.partial_in_flight || self.conversation.state() != State::UserSpeaking {
            return;
        }
        let job = SttJob {
            utterance: 0,
            audio,
            purpose: SttPurpose::Partial,
        };
        // A full queue only costs this partial.
        if self.workers.stt.try_send(job).is_ok() {
            self.partial_in_flight = true;
        }
    }

    fn log_transcript(
        &mut self,
        now: u64,
        utterance: u64,
        text: &str,
        transcribe_ms: u64,
        speculative: bool,
    ) {
        self.log.write(
            now,
            "transcript",
            serde_json::json!({
                "utterance": utterance,
                "text": text,
                "transcribe_ms": transcribe_ms,
                "speculative": speculative,
            }),
        );
    }

    /// Transcribes the speech so far on speculation that the pause at
    /// `speech_end_ms` ends the turn; replaces any older speculation.
    fn speculate(&mut self, speech_end_ms: u64, audio: Vec<f32>) {
        if self.conversation.state() != State::UserSpeaking {
            return;
        }
        let job = SttJob {
            utterance: 0,
            audio,
            purpose: SttPurpose::Speculative { speech_end_ms },
        };
        if self.workers.stt.try_send(job).is_ok() {
            self.speculation = Some(Speculation {
                speech_end_ms,
                text: None,
                waiting: None,
            });
        }
    }

    /// Lets `OpenInput` commands reach the ears (before `run`).
    pub fn set_input_switch(&mut self, switch: Arc<InputSwitch>) {
        self.input_switch = Some(switch);
    }

    /// Starts in `mode` (before `run`).
    pub fn set_mode(&mut self, mode: ListenMode) {
        self.mode = mode;
        self.apply_mute(0);
    }

    fn publish(&mut self, event: Published) {
        if let Some(publish) = self.publish.as_mut() {
            publish(event);
        }
    }

    /// Muted by the user, by `off`, or by push-to-talk not held.
    fn effective_mute(&self) -> bool {
        self.user_muted
            || match self.mode {
                ListenMode::Always => false,
                ListenMode::Off => true,
                ListenMode::PushToTalk => !self.push_to_talk_held,
            }
    }

    fn now_ms(&self) -> u64 {
        self.origin
            .get()
            .map_or(0, |o| o.elapsed().as_millis() as u64)
    }

    /// Runs until the input ends and Hark has finished talking, a stop rule
    /// fires, `stop` is set or a [`Command::Stop`] arrives.
    pub fn run(mut self, rules: StopRules) -> anyhow::Result<SessionOutcome> {
        let mut input_ended_at: Option<Instant> = None;
        let mut quiet_since: Option<Instant> = None;
        let mut stopping = false;
        self.log
            .write(self.now_ms(), "listening", serde_json::json!({}));
        loop {
            let input = match self.inputs.recv_timeout(TICK) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some((every, last)) = &mut self.watchdog {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    let _ = crate::notify::watchdog();
                }
            }
            let now = self.now_ms();
            match input {
                None => self.feed(now, Event::Tick),
                Some(CoreInput::Hearing(HearingEvent::Ended)) => {
                    self.log.write(now, "input_ended", serde_json::json!({}));
                    input_ended_at.get_or_insert_with(Instant::now);
                }
                Some(CoreInput::Hearing(HearingEvent::Failed(message))) => {
                    self.log
                        .write(now, "error", serde_json::json!({ "message": message }));
                    anyhow::bail!("{message}");
                }
                Some(CoreInput::Playback(PlaybackReport::Failed(message))) => {
                    self.log
                        .write(now, "error", serde_json::json!({ "message": message }));
                    anyhow::bail!("playback failed: {message}");
                }
                Some(CoreInput::Command(Command::Stop)) => stopping = true,
                Some(input) => self.accept(now, input),
            }

            let turns_done = rules
                .max_turns
                .is_some_and(|n| self.outcome.turns.len() >= n);
            let time_up = rules.duration.is_some_and(|d| now >= d.as_millis() as u64);
            if self.stop.load(Ordering::Relaxed) || turns_done || time_up {
                stopping = true;
            }
            let idle = matches!(self.conversation.state(), State::Listening | State::Idle);
            if stopping && idle {
                break;
            }
            if let Some(ended) = input_ended_at {
                quiet_since = if idle {
                    quiet_since.or(Some(Instant::now()))
                } else {
                    None
                };
                if quiet_since.is_some_and(|q| q.elapsed() >= LINGER) {
                    break;
                }
                if ended.elapsed() >= LAST_REPLY_LIMIT {
                    tracing::warn!(
                        "the input ended long ago and the reply has not finished; stopping"
                    );
                    break;
                }
            }
        }
        if let Some((_, cancel)) = self.generation.take() {
            cancel.cancel();
        }
        let now = self.now_ms();
        self.outcome.history = self.conversation.history().to_vec();
        self.log.write(
            now,
            "history",
            serde_json::json!({ "turns": history_json(&self.outcome.history) }),
        );
        self.log.flush();
        Ok(self.outcome)
    }

    /// Logs an input and turns it into state machine events.
    fn accept(&mut self, now: u64, input: CoreInput) {
        use serde_json::json;
        match input {
            CoreInput::Hearing(HearingEvent::SpeechStarted { at_ms }) => {
                self.log
                    .write(now, "speech_started", json!({ "at_ms": at_ms }));
                if !self.conversation.is_muted() {
                    self.publish(Published::SpeechStarted);
                }
                self.feed(at_ms, Event::SpeechStarted);
            }
            CoreInput::Hearing(HearingEvent::SpeechEnded {
                start_ms,
                at_ms,
                audio,
            }) => {
                self.log.write(
                    now,
                    "speech_ended",
                    json!({ "start_ms": start_ms, "at_ms": at_ms }),
                );
                self.utterance_audio = Some(audio);
                self.utterance_end_ms = Some(at_ms);
                self.feed(at_ms, Event::SpeechEnded);
                // Not asked to transcribe it (speech over Hark too short).
                self.utterance_audio = None;
            }
            CoreInput::Hearing(HearingEvent::SpeechDiscarded { at_ms }) => {
                self.log
                    .write(now, "speech_discarded", json!({ "at_ms": at_ms }));
                self.feed(at_ms, Event::SpeechDiscarded);
            }
            CoreInput::Hearing(HearingEvent::InputChanged(change)) => {
                self.log.write(
                    now,
                    "input_changed",
                    json!({ "input": change.name, "problem": change.problem }),
                );
                self.publish(Published::InputDevice(change.name));
                if let Some(message) = change.problem {
                    self.publish(Published::Error {
                        code: "audio-input",
                        message,
                    });
                }
            }
            CoreInput::Hearing(HearingEvent::Ended | HearingEvent::Failed(_)) => {
                unreachable!("handled by the loop")
            }
            CoreInput::Hearing(HearingEvent::SpeechSoFar { audio }) => {
                self.transcribe_partial(audio);
            }
            CoreInput::Hearing(HearingEvent::SpeechPausing {
                speech_end_ms,
                audio,
            }) => self.speculate(speech_end_ms, audio),
            CoreInput::Transcribed(SttResult {
                purpose: SttPurpose::Speculative { speech_end_ms },
                text,
                transcribe_ms,
                ..
            }) => {
                self.log.write(
                    now,
                    "speculative_transcript",
                    json!({ "speech_end_ms": speech_end_ms, "text": text, "transcribe_ms": transcribe_ms }),
                );
                match self.speculation.as_mut() {
                    Some(s) if s.speech_end_ms == speech_end_ms => match s.waiting.take() {
                        Some(utterance) => {
                            self.speculation = None;
                            self.log_transcript(now, utterance, &text, transcribe_ms, true);
                            self.feed(now, Event::Transcript { utterance, text });
                        }
                        None => s.text = Some((text, transcribe_ms)),
                    },
                    _ => {} // the user went on talking: wasted, as expected
                }
            }
            CoreInput::Transcribed(r) if r.purpose == SttPurpose::Partial => {
                self.partial_in_flight = false;
                self.log.write(
                    now,
                    "partial_transcript",
                    json!({ "text": r.text, "transcribe_ms": r.transcribe_ms }),
                );
                // Stale once the user has finished: the final one follows.
                if !r.text.is_empty() && self.conversation.state() == State::UserSpeaking {
                    self.publish(Published::PartialTranscript(r.text));
                }
            }
            CoreInput::Transcribed(r) => {
                self.log_transcript(now, r.utterance, &r.text, r.transcribe_ms, false);
                self.feed(
                    now,
                    Event::Transcript {
                        utterance: r.utterance,
                        text: r.text,
                    },
                );
            }
            CoreInput::Llm { reply, event } => match event {
                LlmEvent::Token(text) => {
                    self.log
                        .write(now, "token", json!({ "reply": reply, "text": text }));
                    self.feed(now, Event::ReplyToken { reply, text });
                }
                LlmEvent::Done(g) => {
                    self.log.write(
                        now,
                        "generation_finished",
                        json!({
                            "reply": reply,
                            "tokens": g.tokens,
                            "cancelled": g.cancelled,
                            "first_token_ms": g.first_token_ms,
                            "total_ms": g.total_ms,
                        }),
                    );
                    self.finish_generation(now, reply);
                }
                LlmEvent::Error(message) => {
                    tracing::error!(reply, "generation failed: {message}");
                    self.publish(Published::Error {
                        code: "language-model",
                        message: format!("generation failed: {message}"),
                    });
                    self.log.write(
                        now,
                        "error",
                        json!({ "reply": reply, "message": format!("generation failed: {message}") }),
                    );
                    self.finish_generation(now, reply);
                }
            },
            CoreInput::Synthesized(s) => match s.audio {
                Ok(pcm) => {
                    let secs = pcm.len() as f64 / self.workers.speaker.rate() as f64;
                    self.log.write(
                        now,
                        "synthesized",
                        json!({ "clause": s.clause, "synth_ms": s.synth_ms, "audio_ms": (secs * 1e3) as u64 }),
                    );
                    self.synthesized.insert(s.clause, pcm);
                    self.feed(now, Event::ClauseSynthesized { clause: s.clause });
                }
                Err(message) => {
                    tracing::error!(clause = s.clause, "synthesis failed: {message}");
                    self.publish(Published::Error {
                        code: "voice",
                        message: format!("synthesis failed: {message}"),
                    });
                    self.log.write(
                        now,
                        "error",
                        json!({ "clause": s.clause, "message": format!("synthesis failed: {message}") }),
                    );
                    self.feed(now, Event::SynthesisFailed { clause: s.clause });
                }
            },
            CoreInput::Playback(report) => match report {
                PlaybackReport::Started { clause } => {
                    self.log
                        .write(now, "playback_started", json!({ "clause": clause }));
                    self.feed(now, Event::PlaybackStarted { clause });
                }
                PlaybackReport::Progress {
                    clause,
                    played_fraction,
                } => self.feed(
                    now,
                    Event::PlaybackProgress {
                        clause,
                        played_fraction,
                    },
                ),
                PlaybackReport::Finished { clause } => {
                    self.log
                        .write(now, "playback_finished", json!({ "clause": clause }));
                    self.feed(now, Event::PlaybackFinished { clause });
                }
                PlaybackReport::Silenced { flushed } => {
                    self.log
                        .write(now, "playback_stopped", json!({ "flushed": flushed }));
                }
                PlaybackReport::Failed(_) => unreachable!("handled by the loop"),
            },
            CoreInput::Command(command) => self.command(now, command),
        }
    }

    fn command(&mut self, now: u64, command: Command) {
        use serde_json::json;
        self.log
            .write(now, "command", json!({ "command": format!("{command:?}") }));
        match command {
            Command::Say(text) => self.feed(now, Event::Say { text }),
            Command::Ask { text, reply } => {
                self.asking = reply;
                self.feed(now, Event::Ask { text });
                // Nothing to answer (an empty question): say so at once.
                if let Some(reply) = self.asking.take() {
                    let _ = reply.send(String::new());
                }
            }
            Command::Interrupt => self.feed(now, Event::Interrupt),
            Command::SetMuted(muted) => {
                self.user_muted = muted;
                self.publish(Published::Muted(muted));
                self.apply_mute(now);
            }
            Command::SetMode(mode) => {
                self.mode = mode;
                self.publish(Published::Mode(mode));
                self.apply_mute(now);
            }
            Command::Listen(held) => {
                self.push_to_talk_held = held;
                self.apply_mute(now);
            }
            Command::ClearHistory => self.conversation.clear_history(),
            Command::Reconfigure { turn, mode } => {
                self.conversation.set_config(turn);
                if mode != self.mode {
                    self.mode = mode;
                    self.publish(Published::Mode(mode));
                    self.apply_mute(now);
                }
            }
            Command::GetHistory(reply) => {
                let unix_now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let entries = self
                    .conversation
                    .history()
                    .iter()
                    .map(|turn| HistoryEntry {
                        turn: turn.clone(),
                        unix_ms: unix_now.saturating_sub(now.saturating_sub(turn.at_ms)),
                    })
                    .collect();
                let _ = reply.send(entries);
            }
            Command::OpenInput { input, reply } => {
                let attached = match &self.input_switch {
                    Some(switch) => switch.attach(input),
                    None => Err("this session listens to a fixed input".into()),
                };
                let _ = reply.send(attached);
            }
            Command::Stop => unreachable!("handled by the loop"),
        }
    }

    fn apply_mute(&mut self, now: u64) {
        let muted = self.effective_mute();
        if muted != self.conversation.is_muted() {
            self.feed(now, Event::SetMuted(muted));
        }
    }

    fn finish_generation(&mut self, now: u64, reply: ReplyId) {
        if self.generation.as_ref().is_some_and(|(r, _)| *r == reply) {
            self.generation = None;
        }
        self.feed(now, Event::ReplyFinished { reply });
    }

    /// Feeds one event, then any the core owes itself, carrying out actions.
    fn feed(&mut self, at_ms: u64, event: Event) {
        self.owed.push_back(event);
        while let Some(event) = self.owed.pop_front() {
            for action in self.conversation.handle(at_ms, event) {
                self.act(at_ms, action);
            }
        }
    }

    fn act(&mut self, now: u64, action: Action) {
        match action {
            Action::Transcribe { utterance } => {
                let Some(audio) = self.utterance_audio.take() else {
                    tracing::error!(utterance, "no audio for the utterance to transcribe");
                    self.owe_empty_transcript(utterance);
                    return;
                };
                let end = self.utterance_end_ms.take();
                if let Some(s) = self
                    .speculation
                    .as_mut()
                    .filter(|s| Some(s.speech_end_ms) == end)
                {
                    // The speech did not go on after the pause: the
                    // speculative transcript is this utterance's.
                    match s.text.take() {
                        Some((text, transcribe_ms)) => {
                            self.speculation = None;
                            self.log_transcript(now, utterance, &text, transcribe_ms, true);
                            self.owed.push_back(Event::Transcript { utterance, text });
                        }
                        None => s.waiting = Some(utterance),
                    }
                    return;
                }
                self.speculation = None;
                let job = SttJob {
                    utterance,
                    audio,
                    purpose: SttPurpose::Final,
                };
                match self.workers.stt.try_send(job) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        tracing::warn!(
                            utterance,
                            "Whisper is falling behind; dropping an utterance"
                        );
                        self.owe_empty_transcript(utterance);
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        tracing::error!("the speech-to-text thread has stopped");
                        self.owe_empty_transcript(utterance);
                    }
                }
            }
            Action::StartGeneration { reply, history } => {
                if let Some((_, cancel)) = self.generation.take() {
                    cancel.cancel();
                }
                if let Some(asker) = self.asking.take() {
                    self.pending_asks.push((reply, asker));
                }
                self.start_generation(reply, history);
            }
            Action::CancelGeneration { reply } => {
                if let Some((running, cancel)) = &self.generation {
                    if *running == reply {
                        cancel.cancel();
                    }
                }
            }
            Action::Synthesize { clause, text } => {
                if let Err(e) = self.workers.voice.synthesize(clause, text) {
                    tracing::error!(clause, "cannot synthesize: {e:#}");
                    self.owed.push_back(Event::SynthesisFailed { clause });
                }
            }
            Action::CancelSynthesis => {
                self.workers.voice.cancel();
                self.synthesized.clear();
            }
            Action::Play { clause } => match self.synthesized.remove(&clause) {
                Some(pcm) => self
                    .workers
                    .speaker
                    .send(SpeakerCommand::Play { clause, pcm }),
                None => {
                    tracing::error!(clause, "asked to play a clause that was never synthesized");
                    self.owed.push_back(Event::PlaybackFinished { clause });
                }
            },
            Action::PausePlayback => self.workers.speaker.send(SpeakerCommand::Pause),
            Action::ResumePlayback => self.workers.speaker.send(SpeakerCommand::Resume),
            Action::FlushPlayback => {
                self.workers.speaker.send(SpeakerCommand::Flush);
                self.synthesized.clear();
            }
            Action::Emit(notice) => self.notice(now, notice),
        }
    }

    fn owe_empty_transcript(&mut self, utterance: u64) {
        self.owed.push_back(Event::Transcript {
            utterance,
            text: String::new(),
        });
    }

    fn start_generation(&mut self, reply: ReplyId, history: Vec<Turn>) {
        let messages = history
            .iter()
            .map(|turn| match turn.role {
                Role::User => ChatMessage::user(turn.text.clone()),
                Role::Assistant if turn.interrupted => {
                    ChatMessage::assistant(format!("{}{INTERRUPTED_MARKER}", turn.text))
                }
                Role::Assistant => ChatMessage::assistant(turn.text.clone()),
            })
            .collect();
        let (events, cancel) = match self.workers.llm.ask(messages) {
            Ok(asked) => asked,
            Err(e) => {
                tracing::error!(reply, "cannot start a generation: {e}");
                self.owed.push_back(Event::ReplyFinished { reply });
                return;
            }
        };
        let inbox = self.inbox.clone();
        let forwarder = std::thread::Builder::new()
            .name("hark-llm-fwd".into())
            .spawn(move || {
                for event in events {
                    let last = !matches!(event, LlmEvent::Token(_));
                    if inbox.send(CoreInput::Llm { reply, event }).is_err() || last {
                        break;
                    }
                }
            });
        match forwarder {
            Ok(_) => self.generation = Some((reply, cancel)),
            Err(e) => {
                cancel.cancel();
                tracing::error!("cannot start the token forwarder: {e}");
                self.owed.push_back(Event::ReplyFinished { reply });
            }
        }
    }

    /// Reports a notice: event log, terminal, outcome.
    fn notice(&mut self, now: u64, notice: Notice) {
        use serde_json::json;
        match notice {
            Notice::StateChanged { from, to } => {
                self.log.write(
                    now,
                    "state",
                    json!({ "from": state_name(from), "to": state_name(to) }),
                );
                self.publish(Published::State(to));
            }
            Notice::UserTurn { text } => {
                if self.print_turns {
                    println!("you:  {text}");
                }
                self.log.write(now, "user_turn", json!({ "text": text }));
                self.publish(Published::FinalTranscript(text.clone()));
                self.last_user_text = text;
            }
            Notice::NothingHeard => self.log.write(now, "nothing_heard", json!({})),
            Notice::ReplyClause { clause, text } => {
                self.log
                    .write(now, "clause", json!({ "clause": clause, "text": text }));
                self.publish(Published::ReplyChunk(text));
            }
            Notice::FallbackReply => {
                tracing::warn!("the language model gave nothing speakable; speaking the fallback");
                self.log.write(now, "fallback_reply", json!({}));
            }
            Notice::BargeInSuspected => self.log.write(now, "barge_in_suspected", json!({})),
            Notice::BargeInDismissed { reason } => {
                self.log.write(
                    now,
                    "barge_in_dismissed",
                    serde_json::to_value(&reason).unwrap_or_default(),
                );
            }
            Notice::Interrupted { spoken_part, cause } => {
                tracing::info!(?cause, spoken = %spoken_part, "interrupted");
                self.outcome.interruptions += 1;
                self.log.write(
                    now,
                    "interrupted",
                    json!({ "spoken_part": spoken_part, "cause": format!("{cause:?}") }),
                );
                self.publish(Published::Interrupted(spoken_part));
            }
            Notice::TurnFinished {
                reply,
                text,
                interrupted,
                timings,
            } => {
                if self.print_turns {
                    let mark = if interrupted { " [interrupted]" } else { "" };
                    println!("hark: {text}{mark}");
                }
                self.log.write(
                    now,
                    "turn_finished",
                    json!({
                        "reply": reply,
                        "text": text,
                        "interrupted": interrupted,
                        "timings": timings,
                        "voice_to_voice_ms": timings.voice_to_voice_ms(),
                    }),
                );
                let record = TurnRecord {
                    user_text: std::mem::take(&mut self.last_user_text),
                    spoken: text.clone(),
                    interrupted,
                    timings,
                };
                // Published before the asker hears back, so what it reads
                // next (LastTurnLatencyMs) is already up to date.
                self.publish(Published::TurnFinished(record.clone()));
                self.outcome.turns.push(record);
                if let Some(at) = self.pending_asks.iter().position(|(r, _)| *r == reply) {
                    let (_, asker) = self.pending_asks.swap_remove(at);
                    let _ = asker.send(text);
                }
            }
        }
    }
}

/// The name the event log and D-Bus use for a state.
pub fn state_name(state: State) -> &'static str {
    match state {
        State::Idle => "idle",
        State::Listening => "listening",
        State::UserSpeaking => "user-speaking",
        State::Thinking => "thinking",
        State::Speaking => "speaking",
    }
}

fn history_json(history: &[Turn]) -> serde_json::Value {
    history
        .iter()
        .map(|t| {
            serde_json::json!({
                "role": match t.role { Role::User => "user", Role::Assistant => "assistant" },
                "text": t.text,
                "at_ms": t.at_ms,
                "interrupted": t.interrupted,
            })
        })
        .collect()
}
