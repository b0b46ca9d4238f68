//! The conversation core's event loop: the one owner of conversation state.
//!
//! Every other thread (ears, Whisper, the language model, the voice, the
//! speaker, D-Bus) only sends [`CoreInput`]s into one bounded channel. The
//! loop stamps each with the input timeline's time, feeds it to the pure
//! [`Conversation`] state machine and carries out the actions it returns by
//! sending work to the [`Workers`]. A tick every 20 ms lets the state
//! machine's duration rules (barge-in) fire on time.
//!
//! The core does no I/O of its own: what it does is reported as
//! [`SessionEvent`]s to its subscribers, the clock is injected
//! ([`Timeline`]), and the watchdog is a [`Heartbeat`] the caller hands in.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hark_converse::addressee::{Cues, Reason};
use hark_converse::turn::{
    Action, ClauseId, Conversation, Event, Notice, ReplyId, Role, State, Turn, TurnTimings,
    UtteranceId,
};
use hark_converse::{Addressee, WakeConfig};
use hark_llm::{CancelHandle, ChatMessage, LlmEvent, INTERRUPTED_MARKER};
use hark_skills::{Skills, SkillsConfig, Timer};
use hark_stt::{SttJob, SttPurpose, SttResult};
use hark_tts::Synthesized;
use serde::{Deserialize, Serialize};

use crate::clock::Timeline;
use crate::events::{HistoryTurn, SessionEvent, Subscriber};
use crate::hearing::{HearingEvent, PauseWords};
use crate::input::{ExternalInput, InputSwitch};
use crate::output::{ExternalOutput, OutputSwitch};
use crate::prepared::{FirstClause, Prepared, PROVISIONAL};
use crate::satellite::{Satellite, SatelliteEvent};
use crate::speaker::{PlaybackReport, SpeakerCommand};
use crate::workers::{Refused, Workers};
use crate::SessionError;

/// How often the state machine is told that time passed.
const TICK: Duration = Duration::from_millis(20);
/// After the input ends and Hark has finished talking, how long to keep
/// listening for stragglers before closing.
const LINGER_MS: u64 = 800;
/// Longest wait for a reply to finish after the input has ended.
const LAST_REPLY_LIMIT_MS: u64 = 90_000;
/// Spoken when Whisper failed on what the user said (rather than heard
/// nothing), so a failure is never silence.
const UNHEARD_REPLY: &str = "Sorry, I could not make out what you said.";

/// Everything that can happen to the core.
#[derive(Debug)]
pub enum CoreInput {
    Hearing(HearingEvent),
    Transcribed(SttResult),
    Llm {
        reply: ReplyId,
        event: LlmEvent,
    },
    /// A clause's audio, at the speaker's rate.
    Synthesized(Synthesized),
    Playback(PlaybackReport),
    Command(Command),
    /// The model called a tool while answering, and this came of it.
    ToolUsed {
        name: String,
        arguments: String,
        result: String,
    },
}

/// Where a command's answer goes: called once, on the core's thread.
pub struct Reply<T>(Box<dyn FnOnce(T) + Send>);

impl<T> Reply<T> {
    pub fn new(answer: impl FnOnce(T) + Send + 'static) -> Self {
        Self(Box::new(answer))
    }

    pub fn send(self, value: T) {
        (self.0)(value)
    }
}

impl<T> std::fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reply")
    }
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
    /// A reloaded configuration: new turn-taking rules, names, and (when
    /// the file's changed) listening mode.
    Reconfigure {
        turn: hark_converse::turn::TurnConfig,
        mode: Option<ListenMode>,
        wake: WakeConfig,
    },
    /// Listen to this stream instead of the microphone until it closes;
    /// `reply` gets why not, if another stream is already in.
    OpenInput {
        input: ExternalInput,
        reply: Reply<Result<(), String>>,
    },
    /// Speak into this stream instead of the speaker until it closes;
    /// `reply` gets why not, if another stream already takes the voice.
    OpenOutput {
        output: ExternalOutput,
        reply: Reply<Result<(), String>>,
    },
    /// A timer of `seconds` called `label`; `reply` gets it, or why not.
    SetTimer {
        seconds: u64,
        label: String,
        reply: Reply<Result<Timer, String>>,
    },
    CancelTimer {
        id: String,
        reply: Reply<Result<(), String>>,
    },
    /// The model calls skill tool `name` (time, timers); `reply` gets what
    /// to tell it.
    SkillTool {
        name: String,
        arguments: serde_json::Value,
        reply: Reply<String>,
    },
    /// Home Assistant runs Hark as its Wyoming satellite, answers through
    /// it, or stops (see `satellite`).
    Satellite(SatelliteEvent),
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

/// When Hark listens; `[daemon] mode` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenMode {
    /// Always listening; every utterance is a turn.
    #[default]
    Always,
    /// Listening only while asked to over D-Bus (e.g. from a key binding).
    PushToTalk,
    /// Not listening; `Say` and `Ask` still work.
    Off,
    /// Listening, but answering only what begins with Hark's name (`[wake]
    /// names`), or what follows a reply within `[wake] follow_up_ms`.
    Name,
    /// Listening for the acoustic wake word (`[wake] wake_word`): only the
    /// speech around it, or following a reply, is transcribed at all.
    Wake,
}

impl ListenMode {
    pub const NAMES: [&'static str; 5] = ["always", "push-to-talk", "off", "name", "wake"];

    pub fn name(self) -> &'static str {
        match self {
            ListenMode::Always => "always",
            ListenMode::PushToTalk => "push-to-talk",
            ListenMode::Off => "off",
            ListenMode::Name => "name",
            ListenMode::Wake => "wake",
        }
    }
}

impl FromStr for ListenMode {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "always" => Ok(ListenMode::Always),
            "push-to-talk" => Ok(ListenMode::PushToTalk),
            "off" => Ok(ListenMode::Off),
            "name" => Ok(ListenMode::Name),
            "wake" => Ok(ListenMode::Wake),
            _ => Err(format!(
                "unknown mode {name:?}; use always, push-to-talk, off, name or wake"
            )),
        }
    }
}

/// How long before the wake word model is sure the phrase may have begun
/// (openWakeWord reads 1.28 s; a phrase is rarely longer).
const WAKE_LEAD_MS: u64 = 2_500;

/// A transcription started when the user's speech paused.
#[derive(Debug)]
struct Speculation {
    speech_end_ms: u64,
    /// Its transcript and how long Whisper took, once done.
    text: Option<(String, u64)>,
    /// The utterance that ended at the pause and waits for the transcript.
    waiting: Option<UtteranceId>,
}

/// The utterance the VAD just closed, until the state machine asks for its
/// transcript.
#[derive(Debug)]
struct EndedUtterance {
    audio: Vec<f32>,
    /// Where its speech ended (ms), to match a speculation.
    speech_end_ms: u64,
}

/// A finished reply, for the caller's summary and benchmarks.
#[derive(Debug, Clone, PartialEq)]
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

/// Proof of life, called from the core's loop at most every `every`, so a
/// wedged core stops calling it (the daemon pings systemd's watchdog).
pub struct Heartbeat {
    pub every: Duration,
    pub beat: Box<dyn FnMut() + Send>,
}

/// Whether the loop goes on after an input.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

pub struct Core {
    conversation: Conversation,
    inputs: Receiver<CoreInput>,
    workers: Workers,
    timeline: Timeline,
    subscribers: Vec<Box<dyn Subscriber>>,
    heartbeat: Option<(Heartbeat, Instant)>,
    /// The running generation, so a cancel reaches it.
    generation: Option<(ReplyId, CancelHandle)>,
    ended_utterance: Option<EndedUtterance>,
    /// The latest speculative transcription (see `SpeechPausing`).
    speculation: Option<Speculation>,
    /// Synthesized clauses waiting for their turn to play.
    synthesized: HashMap<ClauseId, Vec<f32>>,
    /// Events the core owes the state machine (answers it can give itself).
    owed: VecDeque<Event>,
    last_user_text: String,
    outcome: SessionOutcome,
    /// `Ask` commands waiting for the reply they started.
    pending_asks: Vec<(ReplyId, Reply<String>)>,
    /// An `Ask` just handed to the state machine, until its reply id is
    /// known (the `StartGeneration` it causes).
    asking: Option<Reply<String>>,
    mode: ListenMode,
    user_muted: bool,
    push_to_talk_held: bool,
    /// Where `OpenInput` streams go; `None` where the input is fixed.
    input_switch: Option<Arc<InputSwitch>>,
    /// Where `OpenOutput` streams go; `None` where the output is a file.
    output_switch: Option<Arc<OutputSwitch>>,
    /// A partial transcription is queued or running, of the speech that
    /// started at this time.
    partial_in_flight: Option<u64>,
    /// A speculative transcription is queued or running.
    speculation_in_flight: bool,
    /// The model and the voice are paused: the reply is held while speech
    /// over it is judged, and Whisper gets the cores (on two, the three
    /// engines together made a transcript over Hark take seconds, and a
    /// real interruption was judged too late).
    engines_paused: bool,
    /// Set by `Stop` or a stop rule: end once Hark is quiet.
    stopping: bool,
    /// When the input ended, and since when Hark has been quiet after it.
    input_ended_ms: Option<u64>,
    quiet_since_ms: Option<u64>,
    /// Answers what needs no model; owns the timers and the output gain.
    skills: Skills,
    /// The latest final transcript, which may be only part of the turn.
    last_transcript: String,
    /// A reply prepared during the user's pause (see `prepared`).
    prepared: Option<Prepared>,
    /// The model reading ahead the next prompt; stopped when Whisper needs
    /// the cores for a pause or an end of speech.
    reading_ahead: Option<CancelHandle>,
    /// Where speech last began or resumed after a pause (ms): a transcript
    /// of the speech before it is no longer worth answering.
    speech_resumed_ms: Option<u64>,
    /// Prepare replies during pauses at all (`[turn] prepare_replies`).
    prepare_replies: bool,
    /// Where the pauses' transcripts are read for the turn judge (with
    /// Smart Turn).
    pause_words: Option<Arc<PauseWords>>,
    over_reply: Option<Arc<std::sync::atomic::AtomicBool>>,
    next_provisional: u64,
    /// The latest end of speech and when the core heard of it (ms): the
    /// endpoint decision's time for the turn it ends.
    last_endpoint: Option<(u64, u64)>,
    /// Home Assistant's pipeline, while it runs Hark as its satellite.
    satellite: Option<Satellite>,
    /// Hark's names and the follow-up window (`mode = "name"`).
    wake: WakeConfig,
    /// Speech that starts before this needs no name (ms on the timeline).
    follow_up_until_ms: Option<u64>,
    /// How loud the latest utterance was (dBFS), and the user's speech
    /// to Hark lately (a running mean), for `[wake] addressee = "likely"`.
    heard_level_dbfs: Option<f32>,
    user_level_dbfs: Option<f32>,
    /// Where the latest speech began.
    speech_started_ms: u64,
    /// `mode = "wake"`: speech that begins in this span (ms) is around the
    /// latest wake word, and is transcribed.
    wake_window: Option<(u64, u64)>,
    /// Shared with the ears: whether to run the wake word model.
    wake_listening: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Core {
    pub fn new(
        conversation: Conversation,
        inputs: Receiver<CoreInput>,
        workers: Workers,
        timeline: Timeline,
    ) -> Self {
        Self {
            conversation,
            inputs,
            workers,
            timeline,
            subscribers: Vec::new(),
            heartbeat: None,
            generation: None,
            ended_utterance: None,
            speculation: None,
            synthesized: HashMap::new(),
            owed: VecDeque::new(),
            last_user_text: String::new(),
            outcome: SessionOutcome::default(),
            pending_asks: Vec::new(),
            asking: None,
            mode: ListenMode::Always,
            user_muted: false,
            push_to_talk_held: false,
            input_switch: None,
            output_switch: None,
            partial_in_flight: None,
            speculation_in_flight: false,
            engines_paused: false,
            stopping: false,
            input_ended_ms: None,
            quiet_since_ms: None,
            skills: Skills::new(
                SkillsConfig {
                    enabled: false,
                    ..SkillsConfig::default()
                },
                None,
            )
            .0,
            last_transcript: String::new(),
            prepared: None,
            speech_resumed_ms: None,
            reading_ahead: None,
            prepare_replies: true,
            pause_words: None,
            over_reply: None,
            next_provisional: PROVISIONAL,
            last_endpoint: None,
            satellite: None,
            wake: WakeConfig::default(),
            follow_up_until_ms: None,
            heard_level_dbfs: None,
            user_level_dbfs: None,
            speech_started_ms: 0,
            wake_window: None,
            wake_listening: None,
        }
    }

    /// Hark's names and follow-up window for `mode = "name"` (before `run`).
    pub fn set_wake(&mut self, wake: WakeConfig) {
        self.wake = wake;
    }

    /// What of `text` is for Hark. In `name` mode the words after its
    /// name, or all of it within the follow-up window, or nothing; in
    /// `wake` mode (where only speech around the wake word was transcribed)
    /// what follows the wake phrase if Whisper wrote it; else all of it.
    /// Speech over Hark is judged as barge-in, not here.
    fn for_hark(&self, text: &str) -> Option<String> {
        if self.mode == ListenMode::Wake && self.conversation.state() != State::Speaking {
            // Only what was around the wake word was transcribed; the phrase
            // itself, if Whisper wrote it, is not for the model.
            let phrase = WakeConfig {
                names: vec![self.wake.wake_phrase()],
                ..self.wake.clone()
            };
            return Some(
                hark_converse::address::after_name(&phrase, text)
                    .unwrap_or_else(|| text.to_owned()),
            );
        }
        let following_up = self
            .follow_up_until_ms
            .is_some_and(|until| self.speech_started_ms <= until);
        if self.conversation.state() == State::Speaking {
            return Some(text.to_owned());
        }
        if self.mode == ListenMode::Always && self.wake.addressee == Addressee::Likely {
            let cues = Cues {
                follows_reply: following_up,
                quieter_than_user_db: self
                    .user_level_dbfs
                    .zip(self.heard_level_dbfs)
                    .map(|(user, heard)| user - heard),
            };
            let reason = hark_converse::addressee::judge(&self.wake, text, cues);
            tracing::debug!(?reason, text, "meant for Hark?");
            return match reason {
                Reason::Name => hark_converse::address::addressed(&self.wake, text),
                _ => reason.for_hark().then(|| text.to_owned()),
            };
        }
        if self.mode != ListenMode::Name {
            return Some(text.to_owned());
        }
        if let Some(said) = hark_converse::address::addressed(&self.wake, text) {
            return Some(said);
        }
        following_up.then(|| text.to_owned())
    }

    /// Remembers how loud the user speaks to Hark (what was just judged
    /// to be for it), so speech much quieter can be told apart.
    fn heard_the_user(&mut self) {
        const WEIGHT_OF_NEWEST: f32 = 0.3;
        if let Some(heard) = self.heard_level_dbfs {
            self.user_level_dbfs = Some(match self.user_level_dbfs {
                Some(mean) => mean + WEIGHT_OF_NEWEST * (heard - mean),
                None => heard,
            });
        }
    }

    /// Whether speech that began at the latest onset may be transcribed:
    /// always, except in wake mode away from a wake word and a reply.
    fn awake(&self) -> bool {
        let at = self.speech_started_ms;
        self.mode != ListenMode::Wake
            || self
                .wake_window
                .is_some_and(|(from, until)| (from..=until).contains(&at))
            || self.follow_up_until_ms.is_some_and(|until| at <= until)
    }

    /// Whether replies are prepared during pauses (before `run`).
    pub fn set_prepare_replies(&mut self, on: bool) {
        self.prepare_replies = on;
    }

    /// Tells the turn judge what each pause's transcript says (before `run`).
    pub fn set_pause_words(&mut self, words: Arc<PauseWords>) {
        self.pause_words = Some(words);
    }

    /// Tells the turn judge, through `flag`, when Hark speaks (see
    /// [`crate::hearing::Endpointing::over_reply`]).
    pub fn set_over_reply(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        self.over_reply = Some(flag);
    }

    /// Raised while the mode is `wake`, so the ears run the wake word model
    /// only then (before `run`).
    pub fn set_wake_listening(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        flag.store(
            self.mode == ListenMode::Wake,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.wake_listening = Some(flag);
    }

    fn provisional_id(&mut self) -> u64 {
        self.next_provisional += 1;
        self.next_provisional
    }

    /// Tells the turn judge how the words before the pause after
    /// `speech_end_ms` read (no words: a fragment).
    fn read_pause_words(&self, speech_end_ms: u64, text: &str) {
        if let Some(words) = &self.pause_words {
            words.heard(speech_end_ms, hark_endpoint::read_words(text));
        }
    }

    /// Lets the model read ahead what the next reply's prompt begins with:
    /// the conversation so far and `heard_so_far`, the user's words until
    /// now (a partial transcript; empty between turns), so that the reply
    /// prepared at the pause reads only the last words before it answers.
    fn read_ahead(&mut self, heard_so_far: &str) {
        let history = self.conversation.history();
        // In a pause, Whisper is (or soon will be) transcribing it.
        let paused = self.speculation.as_ref().is_some_and(|s| {
            self.speech_resumed_ms
                .is_none_or(|resumed| resumed < s.speech_end_ms)
        });
        if paused || history.last().is_some_and(|t| t.role == Role::User) {
            return;
        }
        let words = if heard_so_far.is_empty() {
            String::new()
        } else {
            match self.for_hark(heard_so_far) {
                Some(words) => words.trim().to_owned(),
                None => return,
            }
        };
        let messages = chat_messages(history);
        self.stop_reading_ahead();
        self.reading_ahead = self.workers.llm.warm(messages, words);
    }

    /// Two inference engines on two cores each slow the other down several
    /// times over: Whisper's transcript of a pause goes first.
    fn stop_reading_ahead(&mut self) {
        if let Some(reading) = self.reading_ahead.take() {
            reading.cancel();
        }
    }

    /// Starts the model on a speculative transcript while the user pauses.
    fn prepare(&mut self, now: u64, speech_end_ms: u64, text: &str) {
        let Some(text) = self.for_hark(text) else {
            return;
        };
        let text = text.trim();
        let unanswered = self
            .conversation
            .history()
            .last()
            .is_some_and(|t| t.role == Role::User);
        // Its Whisper run may end after the user went on: too late.
        let went_on = self.speech_resumed_ms.is_some_and(|at| at > speech_end_ms);
        if !self.prepare_replies
            || text.is_empty()
            || went_on
            || unanswered
            || self.conversation.state() != State::UserSpeaking
            || (self.skills.enabled() && hark_skills::understand(text).is_some())
        {
            return;
        }
        self.drop_prepared(now);
        let mut messages = chat_messages(self.conversation.history());
        messages.push(ChatMessage::user(text.to_owned()));
        let provisional = self.provisional_id();
        match self.workers.llm.start(provisional, messages.clone()) {
            Ok(cancel) => {
                self.emit(
                    now,
                    SessionEvent::ReplyPrepared {
                        speech_end_ms,
                        text: text.to_owned(),
                    },
                );
                self.prepared = Some(Prepared::new(
                    speech_end_ms,
                    messages,
                    provisional,
                    cancel,
                    self.conversation.config().chunking.clone(),
                ));
            }
            Err(e) => tracing::debug!("no reply prepared: {e}"),
        }
    }

    /// Forgets a prepared reply nobody adopted: its generation and its
    /// first clause's synthesis stop, and it leaves no trace but an event.
    fn drop_prepared(&mut self, now: u64) {
        let Some(prepared) = self.prepared.take_if(|p| p.adopted.is_none()) else {
            return;
        };
        prepared.cancel.cancel();
        if prepared
            .first_clause
            .as_ref()
            .is_some_and(|c| c.audio.is_none())
        {
            // No reply is in progress while one is prepared: this only
            // drops the provisional clause.
            self.workers.voice.cancel();
        }
        self.emit(
            now,
            SessionEvent::ReplyDropped {
                speech_end_ms: prepared.speech_end_ms,
                tokens: prepared.tokens.len(),
            },
        );
    }

    /// The turn machine starts `reply` on `messages`: the prepared reply
    /// becomes it if it answers the same; otherwise it is dropped.
    fn adopt_prepared(&mut self, now: u64, reply: ReplyId, messages: &[ChatMessage]) -> bool {
        if !self
            .prepared
            .as_ref()
            .is_some_and(|p| p.adopted.is_none() && p.answers(messages))
        {
            self.drop_prepared(now);
            return false;
        }
        let prepared = self.prepared.as_mut().expect("checked above");
        prepared.adopted = Some(reply);
        self.generation = Some((reply, prepared.cancel.clone()));
        let tokens = std::mem::take(&mut prepared.tokens);
        let finished = prepared.finished.take();
        self.emit(
            now,
            SessionEvent::ReplyAdopted {
                reply,
                tokens: tokens.len(),
                first_clause_ready: self
                    .prepared
                    .as_ref()
                    .and_then(|p| p.first_clause.as_ref())
                    .is_some_and(|c| c.audio.is_some()),
            },
        );
        // Its tokens so far are the reply's now: logged as any reply's are
        // (a short reply may have been written whole before adoption).
        for text in tokens {
            self.emit(
                now,
                SessionEvent::Token {
                    reply,
                    text: text.clone(),
                },
            );
            self.owed.push_back(Event::ReplyToken { reply, text });
        }
        match finished {
            Some(Ok(generation)) => {
                self.emit(
                    now,
                    SessionEvent::GenerationFinished {
                        reply,
                        tokens: generation.tokens,
                        cancelled: generation.cancelled,
                        first_token_ms: generation.first_token_ms,
                        total_ms: generation.total_ms,
                    },
                );
                self.generation = None;
                self.owed.push_back(Event::ReplyFinished { reply });
            }
            Some(Err(message)) => {
                self.error(now, "llm", format!("generation failed: {message}"));
                self.generation = None;
                self.owed.push_back(Event::ReplyFinished { reply });
            }
            None => {}
        }
        true
    }

    /// An event of the prepared generation; `Some` gives it back with the
    /// adopted reply's id, for the usual handling.
    fn prepared_llm(&mut self, reply: ReplyId, event: LlmEvent) -> Option<(ReplyId, LlmEvent)> {
        let prepared = self.prepared.as_mut().filter(|p| p.provisional == reply)?;
        if let Some(adopted) = prepared.adopted {
            return Some((adopted, event));
        }
        let first = match event {
            LlmEvent::Token(text) => prepared.token(text),
            LlmEvent::Done(generation) => prepared.finish(Ok(generation)),
            LlmEvent::Error(message) => prepared.finish(Err(message)),
        };
        if let Some(text) = first {
            let provisional = self.provisional_id();
            if let Some(prepared) = self.prepared.as_mut() {
                prepared.first_clause = Some(FirstClause {
                    text: text.clone(),
                    provisional,
                    audio: None,
                    adopted: None,
                });
            }
            if let Err(e) = self.workers.voice.synthesize(provisional, text) {
                tracing::debug!("cannot prepare the first clause: {e}");
            }
        }
        None
    }

    /// Audio for a provisional clause; `Some` gives it back as the machine's
    /// clause it stands for, for the usual handling.
    fn prepared_audio(&mut self, synthesized: Synthesized) -> Option<Synthesized> {
        if synthesized.clause < PROVISIONAL {
            return Some(synthesized);
        }
        let first = self
            .prepared
            .as_mut()
            .and_then(|p| p.first_clause.as_mut())
            .filter(|c| c.provisional == synthesized.clause)?;
        match first.adopted {
            Some(clause) => Some(Synthesized {
                clause,
                ..synthesized
            }),
            None => {
                first.audio = synthesized.audio.ok();
                None
            }
        }
    }

    /// The machine asks to synthesize a clause the prepared reply already
    /// has (or is making); true when it is taken care of.
    fn prepared_clause(&mut self, now: u64, clause: ClauseId, text: &str) -> bool {
        let Some(first) = self
            .prepared
            .as_mut()
            .filter(|p| p.adopted.is_some())
            .and_then(|p| p.first_clause.as_mut())
            .filter(|c| c.adopted.is_none() && c.text == text)
        else {
            return false;
        };
        first.adopted = Some(clause);
        if let Some(pcm) = first.audio.take() {
            let rate = self.workers.speaker.rate();
            self.owed_audio(now, clause, pcm, rate);
        }
        true
    }

    /// Answers with `skills` before the model, and fires their timers
    /// (before `run`).
    pub fn set_skills(&mut self, skills: Skills) {
        let gain = skills.output_gain();
        if (gain - 1.0).abs() > 1e-3 {
            self.workers.speaker.send(SpeakerCommand::SetGain(gain));
        }
        self.skills = skills;
        self.publish_timers(self.timeline.now_ms());
    }

    fn publish_timers(&mut self, now: u64) {
        let timers = self.skills.timers().to_vec();
        self.emit(now, SessionEvent::Timers { timers });
    }

    /// Timers that are due go off: a chime, then their label, even while
    /// Hark is muted or talking.
    fn fire_timers(&mut self, now: u64) {
        let due = self.skills.due(self.timeline.unix_ms());
        if due.is_empty() {
            return;
        }
        for timer in &due {
            tracing::info!(id = %timer.id, label = %timer.label, "timer fired");
            self.emit(
                now,
                SessionEvent::TimerFired {
                    id: timer.id.clone(),
                    label: timer.label.clone(),
                },
            );
        }
        let text: Vec<String> = due.iter().map(hark_skills::timer_done).collect();
        // The Say flushes whatever was playing; the chime then plays before
        // the words, which come once synthesized.
        self.feed(
            now,
            Event::Say {
                text: text.join(" "),
            },
        );
        let chime = crate::chime::chime(self.workers.speaker.rate());
        self.workers.speaker.send(SpeakerCommand::Chime(chime));
        self.publish_timers(now);
    }

    /// Answers the user's last turn with a skill instead of the model, if
    /// one claims it.
    fn answer_with_skill(&mut self, now: u64, reply: ReplyId, history: &[Turn]) -> bool {
        let Some(asked) = history.last().filter(|t| t.role == Role::User) else {
            return false;
        };
        let last_reply = history
            .iter()
            .rev()
            .find(|t| t.role == Role::Assistant)
            .map(|t| t.text.as_str());
        let unix_now = self.timeline.unix_ms();
        // A "stop" said over a reply that had not been heard yet joins the
        // question it cut off; it still means stop.
        let latest = std::mem::take(&mut self.last_transcript);
        let answered = self
            .skills
            .answer(&asked.text, unix_now, last_reply)
            .map(|a| (asked.text.clone(), a))
            .or_else(|| {
                (latest != asked.text && hark_skills::is_stop(&latest))
                    .then(|| self.skills.answer(&latest, unix_now, last_reply))
                    .flatten()
                    .map(|a| (latest, a))
            });
        let Some((transcript, answer)) = answered else {
            return false;
        };
        self.emit(
            now,
            SessionEvent::Skill {
                transcript,
                answer: answer.say.clone(),
            },
        );
        if let Some(gain) = answer.gain {
            self.workers.speaker.send(SpeakerCommand::SetGain(gain));
        }
        if answer.timers_changed {
            self.publish_timers(now);
        }
        match answer.say {
            Some(text) => {
                self.owed.push_back(Event::ReplyToken { reply, text });
                self.owed.push_back(Event::ReplyFinished { reply });
            }
            None => self.owed.push_back(Event::Withdraw { reply }),
        }
        true
    }

    /// Adds a subscriber to the event stream (before `run`).
    pub fn subscribe(&mut self, subscriber: Box<dyn Subscriber>) {
        self.subscribers.push(subscriber);
    }

    /// Calls `heartbeat` from the loop (before `run`).
    pub fn set_heartbeat(&mut self, heartbeat: Heartbeat) {
        let now = self.timeline.now();
        self.heartbeat = Some((heartbeat, now));
    }

    /// Lets `OpenInput` commands reach the ears (before `run`).
    pub fn set_input_switch(&mut self, switch: Arc<InputSwitch>) {
        self.input_switch = Some(switch);
    }

    /// Where `OpenOutput` streams are left for the speaker (before `run`).
    pub fn set_output_switch(&mut self, switch: Arc<OutputSwitch>) {
        self.output_switch = Some(switch);
    }

    /// Starts in `mode` (before `run`).
    pub fn set_mode(&mut self, mode: ListenMode) {
        self.mode = mode;
        self.apply_mute(0);
    }

    fn emit(&mut self, t_ms: u64, event: SessionEvent) {
        for subscriber in &mut self.subscribers {
            subscriber.event(t_ms, &event);
        }
    }

    /// Muted by the user, by `off`, or by push-to-talk not held.
    fn effective_mute(&self) -> bool {
        self.user_muted
            || match self.mode {
                ListenMode::Always | ListenMode::Name | ListenMode::Wake => false,
                ListenMode::Off => true,
                ListenMode::PushToTalk => !self.push_to_talk_held,
            }
    }

    /// Runs until the input ends and Hark has finished talking, a stop rule
    /// fires, or a [`Command::Stop`] arrives and Hark is quiet.
    pub fn run(mut self, rules: StopRules) -> Result<SessionOutcome, SessionError> {
        let now = self.timeline.now_ms();
        self.emit(now, SessionEvent::Listening);
        let result = loop {
            let input = match self.inputs.recv_timeout(TICK) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            };
            match self.step(input, &rules) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Some((_, cancel)) = self.generation.take() {
            cancel.cancel();
        }
        let now = self.timeline.now_ms();
        self.outcome.history = self.conversation.history().to_vec();
        let turns = self.outcome.history.iter().map(HistoryTurn::from).collect();
        self.emit(now, SessionEvent::History { turns });
        for subscriber in &mut self.subscribers {
            subscriber.finish();
        }
        result.map(|()| self.outcome)
    }

    /// Handles one input (`None`: a tick), then checks whether to stop.
    fn step(&mut self, input: Option<CoreInput>, rules: &StopRules) -> Result<Flow, SessionError> {
        self.beat();
        let now = self.timeline.now_ms();
        match input {
            None => self.feed(now, Event::Tick),
            Some(CoreInput::Hearing(HearingEvent::Ended)) => {
                self.emit(now, SessionEvent::InputEnded);
                self.input_ended_ms.get_or_insert(now);
            }
            Some(CoreInput::Hearing(HearingEvent::Failed(message))) => {
                self.error(now, "audio-input", message.clone());
                return Err(SessionError::Input(message));
            }
            Some(CoreInput::Playback(PlaybackReport::Failed(message))) => {
                self.error(now, "audio-output", message.clone());
                return Err(SessionError::Playback(message));
            }
            Some(CoreInput::Command(Command::Stop)) => {
                self.emit(
                    now,
                    SessionEvent::Command {
                        command: "Stop".into(),
                    },
                );
                self.stopping = true;
            }
            Some(input) => self.accept(now, input),
        }
        self.fire_timers(now);

        let turns_done = rules
            .max_turns
            .is_some_and(|n| self.outcome.turns.len() >= n);
        let time_up = rules.duration.is_some_and(|d| now >= d.as_millis() as u64);
        self.stopping |= turns_done || time_up;
        let idle = matches!(self.conversation.state(), State::Listening | State::Idle);
        if self.stopping && idle {
            return Ok(Flow::Stop);
        }
        if let Some(ended) = self.input_ended_ms {
            self.quiet_since_ms = if idle {
                self.quiet_since_ms.or(Some(now))
            } else {
                None
            };
            if self.quiet_since_ms.is_some_and(|q| now >= q + LINGER_MS) {
                return Ok(Flow::Stop);
            }
            if now >= ended + LAST_REPLY_LIMIT_MS {
                tracing::warn!("the input ended long ago and the reply has not finished; stopping");
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    fn beat(&mut self) {
        let now = self.timeline.now();
        if let Some((heartbeat, last)) = &mut self.heartbeat {
            if now.saturating_duration_since(*last) >= heartbeat.every {
                *last = now;
                (heartbeat.beat)();
            }
        }
    }

    fn error(&mut self, now: u64, code: &'static str, message: String) {
        self.emit(now, SessionEvent::Error { code, message });
    }

    /// Sends the speech so far to Whisper for a partial transcript, unless
    /// one is already on its way (so a final transcript never waits behind
    /// more than one) or nobody is being listened to.
    fn transcribe_partial(&mut self, audio: Vec<f32>) {
        // Over a reply, only to tell a sustained interruption from a long
        // noise (the barge-in rule's stage 3).
        let wanted = self.conversation.state() == State::UserSpeaking
            || self.conversation.speech_over_reply();
        if !self.awake() || self.partial_in_flight.is_some() || !wanted || self.satellite.is_some()
        {
            return;
        }
        let job = SttJob {
            utterance: 0,
            audio,
            purpose: SttPurpose::Partial,
        };
        // A full queue only costs this partial.
        if self.workers.stt.submit(job).is_ok() {
            self.partial_in_flight = Some(self.speech_started_ms);
        }
    }

    /// Transcribes the speech so far on speculation that the pause at
    /// `speech_end_ms` ends the turn; replaces any older speculation.
    fn speculate(&mut self, speech_end_ms: u64, audio: Vec<f32>) {
        // An ended utterance still waits for the last speculation's text:
        // keep it (this pause's turn, when it ends, is transcribed anew).
        let owed = self
            .speculation
            .as_ref()
            .is_some_and(|s| s.waiting.is_some());
        // One at a time: while Whisper still has an earlier pause, this one
        // waits for its end's transcript. (Each pause of a long narration
        // queued a job; when Whisper fell behind, as on a loaded machine or
        // in `hark bench soak` at 8x, they filled its queue and the
        // utterance that ended next was dropped.)
        if owed
            || self.speculation_in_flight
            || self.conversation.state() != State::UserSpeaking
            || self.satellite.is_some()
            || !self.awake()
        {
            return;
        }
        self.heard_level_dbfs = hark_audio::speech_level_dbfs(&audio);
        let job = SttJob {
            utterance: 0,
            audio,
            purpose: SttPurpose::Speculative { speech_end_ms },
        };
        self.stop_reading_ahead();
        if self.workers.stt.submit(job).is_ok() {
            self.speculation_in_flight = true;
            self.speculation = Some(Speculation {
                speech_end_ms,
                text: None,
                waiting: None,
            });
        }
    }

    /// Reports a transcript; returns the event that hands it to the state
    /// machine.
    fn transcript(
        &mut self,
        now: u64,
        utterance: UtteranceId,
        text: String,
        transcribe_ms: u64,
        speculative: bool,
    ) -> Event {
        self.emit(
            now,
            SessionEvent::Transcript {
                utterance,
                text: text.clone(),
                transcribe_ms,
                speculative,
            },
        );
        let text = match self.for_hark(&text) {
            Some(said) if said != text || self.mode != ListenMode::Name => {
                if said != text && self.mode == ListenMode::Name {
                    self.emit(now, SessionEvent::WakeDetected { how: "name".into() });
                    // Only the name: the next words need none.
                    if said.trim().is_empty() {
                        self.follow_up_until_ms =
                            Some(self.timeline.now_ms() + self.wake.follow_up_ms);
                    }
                }
                said
            }
            Some(followed_up) => followed_up,
            None => {
                self.emit(now, SessionEvent::NotAddressed { text });
                String::new()
            }
        };
        if !text.trim().is_empty() && self.conversation.state() != State::Speaking {
            self.heard_the_user();
        }
        // "Stop" said over Hark stops it however short it is; the words
        // then reach the skills, which forget them.
        self.last_transcript = text.clone();
        let replying = matches!(self.conversation.state(), State::Speaking | State::Thinking);
        if replying && self.skills.enabled() && hark_skills::is_stop(&text) {
            self.owed.push_back(Event::Interrupt);
        }
        Event::Transcript { utterance, text }
    }

    /// Reports an input and turns it into state machine events.
    fn accept(&mut self, now: u64, mut input: CoreInput) {
        // A backend stood in for (a Wyoming server that failed, the local
        // model answering instead): the job stands, the user hears why.
        let notice = match &mut input {
            CoreInput::Transcribed(result) => result.notice.take().map(|n| ("speech-to-text", n)),
            CoreInput::Synthesized(s) => s.notice.take().map(|n| ("voice", n)),
            _ => None,
        };
        if let Some((code, message)) = notice {
            self.error(now, code, message);
        }
        match input {
            CoreInput::Hearing(event) => self.hearing(now, event),
            CoreInput::Transcribed(result) => self.transcribed(now, result),
            CoreInput::Llm { reply, event } if reply >= PROVISIONAL => {
                if let Some((reply, event)) = self.prepared_llm(reply, event) {
                    self.accept(now, CoreInput::Llm { reply, event });
                }
            }
            CoreInput::Synthesized(s) if s.clause >= PROVISIONAL => {
                if let Some(s) = self.prepared_audio(s) {
                    self.accept(now, CoreInput::Synthesized(s));
                }
            }
            CoreInput::Llm { reply, event } => match event {
                LlmEvent::Token(text) => {
                    self.emit(
                        now,
                        SessionEvent::Token {
                            reply,
                            text: text.clone(),
                        },
                    );
                    self.feed(now, Event::ReplyToken { reply, text });
                }
                LlmEvent::Done(g) => {
                    self.emit(
                        now,
                        SessionEvent::GenerationFinished {
                            reply,
                            tokens: g.tokens,
                            cancelled: g.cancelled,
                            first_token_ms: g.first_token_ms,
                            total_ms: g.total_ms,
                        },
                    );
                    self.finish_generation(now, reply);
                }
                LlmEvent::Error(message) => {
                    tracing::error!(reply, "generation failed: {message}");
                    self.error(now, "llm", format!("generation failed: {message}"));
                    self.finish_generation(now, reply);
                }
            },
            CoreInput::Synthesized(s) => match s.audio {
                Ok(pcm) => {
                    let audio_ms = pcm.len() as u64 * 1000 / u64::from(s.rate.max(1));
                    self.emit(
                        now,
                        SessionEvent::Synthesized {
                            clause: s.clause,
                            synth_ms: s.synth_ms,
                            audio_ms,
                        },
                    );
                    self.synthesized.insert(s.clause, pcm);
                    self.feed(now, Event::ClauseSynthesized { clause: s.clause });
                }
                Err(message) => {
                    tracing::error!(clause = s.clause, "synthesis failed: {message}");
                    self.error(now, "voice", format!("synthesis failed: {message}"));
                    self.feed(now, Event::SynthesisFailed { clause: s.clause });
                }
            },
            CoreInput::Playback(report) => match report {
                PlaybackReport::Started { clause } => {
                    self.emit(now, SessionEvent::PlaybackStarted { clause });
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
                    self.emit(now, SessionEvent::PlaybackFinished { clause });
                    self.feed(now, Event::PlaybackFinished { clause });
                }
                PlaybackReport::Silenced { flushed } => {
                    self.emit(now, SessionEvent::PlaybackStopped { flushed });
                }
                PlaybackReport::OutputChanged { output, problem } => {
                    self.emit(
                        now,
                        SessionEvent::OutputChanged {
                            output,
                            problem: problem.clone(),
                        },
                    );
                    if let Some(message) = problem {
                        self.error(now, "audio-output", message);
                    }
                }
                PlaybackReport::Failed(_) => unreachable!("handled by the loop"),
            },
            CoreInput::Command(command) => self.command(now, command),
            CoreInput::ToolUsed {
                name,
                arguments,
                result,
            } => {
                self.conversation
                    .note_tool_use(format!("{name}({arguments}) → {result}"));
                self.emit(
                    now,
                    SessionEvent::ToolCall {
                        name,
                        arguments,
                        result,
                    },
                );
            }
        }
    }

    fn hearing(&mut self, now: u64, event: HearingEvent) {
        match event {
            HearingEvent::WakeWord { at_ms, score } => {
                if self.mode == ListenMode::Wake && !self.conversation.is_muted() {
                    tracing::info!(at_ms, score, "wake word heard");
                    // The phrase began up to WAKE_LEAD_MS before the model
                    // was sure; the request may follow in the same breath
                    // or after a pause.
                    // Said within an utterance already under way (the VAD
                    // may have joined it to speech before it), that
                    // utterance counts too.
                    let mut from = at_ms.saturating_sub(WAKE_LEAD_MS);
                    if self.conversation.state() == State::UserSpeaking {
                        from = from.min(self.speech_started_ms);
                    }
                    self.wake_window = Some((from, at_ms + self.wake.follow_up_ms));
                    self.emit(
                        now,
                        SessionEvent::WakeDetected {
                            how: "wake-word".into(),
                        },
                    );
                }
            }
            HearingEvent::SpeechStarted { at_ms } => {
                self.speech_started_ms = at_ms;
                self.speech_resumed_ms = Some(at_ms);
                let muted = self.conversation.is_muted();
                self.emit(now, SessionEvent::SpeechStarted { at_ms, muted });
                self.feed(at_ms, Event::SpeechStarted);
            }
            HearingEvent::SpeechEnded {
                start_ms,
                at_ms,
                audio,
            } => {
                self.emit(now, SessionEvent::SpeechEnded { start_ms, at_ms });
                self.last_endpoint = Some((at_ms, now));
                if self
                    .prepared
                    .as_ref()
                    .is_some_and(|p| p.speech_end_ms != at_ms)
                {
                    // The user went on after the pause it was made for.
                    self.drop_prepared(now);
                }
                self.ended_utterance = Some(EndedUtterance {
                    audio,
                    speech_end_ms: at_ms,
                });
                self.feed(at_ms, Event::SpeechEnded);
                // Not asked to transcribe it (speech over Hark too short).
                self.ended_utterance = None;
            }
            HearingEvent::SpeechDiscarded { at_ms } => {
                self.emit(now, SessionEvent::SpeechDiscarded { at_ms });
                self.feed(at_ms, Event::SpeechDiscarded);
            }
            HearingEvent::InputChanged(change) => {
                self.emit(
                    now,
                    SessionEvent::InputChanged {
                        input: change.name,
                        problem: change.problem.clone(),
                    },
                );
                if let Some(message) = change.problem {
                    self.error(now, "audio-input", message);
                }
            }
            HearingEvent::SpeechSoFar { audio } => self.transcribe_partial(audio),
            HearingEvent::SpeechResumed { at_ms } => {
                self.emit(now, SessionEvent::SpeechResumed { at_ms });
                self.speech_resumed_ms = Some(at_ms);
                self.feed(at_ms, Event::SpeechResumed);
                self.drop_prepared(now);
            }
            HearingEvent::TurnJudged {
                speech_end_ms,
                probability,
                inference_ms,
                complete,
                unfinished_words,
            } => self.emit(
                now,
                SessionEvent::TurnJudged {
                    speech_end_ms,
                    probability,
                    inference_ms,
                    complete,
                    unfinished_words,
                },
            ),
            HearingEvent::SpeechPausing {
                speech_end_ms,
                audio,
            } => {
                self.feed(speech_end_ms, Event::SpeechPaused);
                self.speculate(speech_end_ms, audio);
            }
            HearingEvent::Ended | HearingEvent::Failed(_) => unreachable!("handled by the loop"),
        }
    }

    fn transcribed(&mut self, now: u64, result: SttResult) {
        if let Some(message) = &result.error {
            self.error(now, "speech-to-text", message.clone());
        }
        match result.purpose {
            SttPurpose::Speculative { speech_end_ms } => {
                self.speculation_in_flight = false;
                let SttResult {
                    text,
                    transcribe_ms,
                    error,
                    ..
                } = result;
                self.emit(
                    now,
                    SessionEvent::SpeculativeTranscript {
                        speech_end_ms,
                        text: text.clone(),
                        transcribe_ms,
                    },
                );
                match self.speculation.as_mut() {
                    Some(s) if s.speech_end_ms == speech_end_ms => match s.waiting.take() {
                        Some(utterance) => {
                            self.speculation = None;
                            let failed = error.is_some();
                            self.final_transcript(
                                now,
                                utterance,
                                text,
                                transcribe_ms,
                                true,
                                failed,
                            );
                        }
                        // Failed while the pause goes on: forget it, so the
                        // utterance gets a Whisper run of its own when it ends.
                        None if error.is_some() => {
                            self.speculation = None;
                            self.read_pause_words(speech_end_ms, "");
                        }
                        None => {
                            s.text = Some((text.clone(), transcribe_ms));
                            self.read_pause_words(speech_end_ms, &text);
                            // The pause goes on: start answering it.
                            self.prepare(now, speech_end_ms, &text);
                        }
                    },
                    _ => {} // the user went on talking: wasted, as expected
                }
            }
            SttPurpose::Partial => {
                let speech = self.partial_in_flight.take();
                // Stale once the user has finished: the final one follows.
                let current =
                    !result.text.is_empty() && self.conversation.state() == State::UserSpeaking;
                if current {
                    self.read_ahead(&result.text);
                }
                if speech == Some(self.speech_started_ms) && self.conversation.speech_over_reply() {
                    let text = result.text.clone();
                    self.feed(now, Event::PartialTranscript { text });
                }
                self.emit(
                    now,
                    SessionEvent::PartialTranscript {
                        text: result.text,
                        transcribe_ms: result.transcribe_ms,
                        current,
                    },
                );
            }
            SttPurpose::Final => self.final_transcript(
                now,
                result.utterance,
                result.text,
                result.transcribe_ms,
                false,
                result.error.is_some(),
            ),
        }
    }

    /// Hands an ended utterance's transcript to the state machine. When
    /// Whisper failed on it, the user said something and is owed an
    /// answer: an apology rather than silence.
    fn final_transcript(
        &mut self,
        now: u64,
        utterance: UtteranceId,
        text: String,
        transcribe_ms: u64,
        speculative: bool,
        failed: bool,
    ) {
        let event = self.transcript(now, utterance, text, transcribe_ms, speculative);
        self.feed(now, event);
        if failed {
            self.feed(
                now,
                Event::Say {
                    text: UNHEARD_REPLY.into(),
                },
            );
        }
    }

    fn command(&mut self, now: u64, command: Command) {
        self.emit(
            now,
            SessionEvent::Command {
                command: format!("{command:?}"),
            },
        );
        match command {
            Command::Say(text) => self.feed(now, Event::Say { text }),
            Command::Ask { text, reply } => {
                self.asking = reply;
                self.feed(now, Event::Ask { text });
                // Nothing to answer (an empty question): say so at once.
                if let Some(reply) = self.asking.take() {
                    reply.send(String::new());
                }
            }
            Command::Interrupt => self.feed(now, Event::Interrupt),
            Command::Satellite(event) => self.satellite_event(now, event),
            Command::SetMuted(muted) => {
                self.user_muted = muted;
                self.emit(now, SessionEvent::Muted { muted });
                self.apply_mute(now);
            }
            Command::SetMode(mode) => self.change_mode(now, mode, true),
            Command::Listen(held) => {
                self.push_to_talk_held = held;
                self.apply_mute(now);
            }
            Command::ClearHistory => self.conversation.clear_history(),
            Command::Reconfigure { turn, mode, wake } => {
                self.conversation.set_config(turn);
                self.wake = wake;
                if let Some(mode) = mode {
                    self.change_mode(now, mode, false);
                }
            }
            Command::GetHistory(reply) => {
                let unix_now = self.timeline.unix_ms();
                let entries = self
                    .conversation
                    .history()
                    .iter()
                    .map(|turn| HistoryEntry {
                        turn: turn.clone(),
                        unix_ms: unix_now.saturating_sub(now.saturating_sub(turn.at_ms)),
                    })
                    .collect();
                reply.send(entries);
            }
            Command::OpenInput { input, reply } => {
                let attached = match &self.input_switch {
                    Some(switch) => switch.attach(input),
                    None => Err("this session listens to a fixed input".into()),
                };
                reply.send(attached);
            }
            Command::OpenOutput { output, reply } => {
                let attached = match &self.output_switch {
                    Some(switch) => switch.attach(output),
                    None => Err("this session speaks into a file".into()),
                };
                reply.send(attached);
            }
            Command::SetTimer {
                seconds,
                label,
                reply,
            } => {
                let unix_now = self.timeline.unix_ms();
                let set = self.skills.set_timer(seconds as f64, &label, unix_now);
                if set.is_ok() {
                    self.publish_timers(now);
                }
                reply.send(set);
            }
            Command::CancelTimer { id, reply } => {
                let cancelled = self.skills.cancel_timer(&id).map(|_| ());
                if cancelled.is_ok() {
                    self.publish_timers(now);
                }
                reply.send(cancelled);
            }
            Command::SkillTool {
                name,
                arguments,
                reply,
            } => {
                let unix_now = self.timeline.unix_ms();
                let answer = self.skills.call_tool(&name, &arguments, unix_now);
                if answer.as_ref().is_some_and(|a| a.timers_changed) {
                    self.publish_timers(now);
                }
                reply.send(answer.map_or_else(
                    || format!("error: there is no tool called {name:?}"),
                    |a| a.result,
                ));
            }
            Command::Stop => unreachable!("handled by the loop"),
        }
    }

    /// `always_report`: report the mode even when it did not change (the
    /// caller asked for it explicitly).
    fn change_mode(&mut self, now: u64, mode: ListenMode, always_report: bool) {
        if mode == self.mode && !always_report {
            return;
        }
        self.mode = mode;
        if let Some(flag) = &self.wake_listening {
            flag.store(
                mode == ListenMode::Wake,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.emit(now, SessionEvent::Mode { mode });
        self.apply_mute(now);
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
        let held = self.conversation.reply_held();
        if held != self.engines_paused {
            self.engines_paused = held;
            self.workers.llm.pause(held);
            self.workers.voice.pause(held);
        }
    }

    fn act(&mut self, now: u64, action: Action) {
        match action {
            Action::Transcribe { utterance } => self.transcribe(now, utterance),
            Action::StartGeneration { reply, history } => {
                if let Some((_, cancel)) = self.generation.take() {
                    cancel.cancel();
                }
                if let Some(asker) = self.asking.take() {
                    self.pending_asks.push((reply, asker));
                }
                if self.satellite_answers(reply) {
                    return;
                }
                if !self.answer_with_skill(now, reply, &history) {
                    self.start_generation(now, reply, history);
                }
            }
            Action::CancelGeneration { reply } => {
                if let Some((running, cancel)) = &self.generation {
                    if *running == reply {
                        cancel.cancel();
                    }
                }
            }
            Action::Synthesize { clause, text } => {
                if self.prepared_clause(now, clause, &text)
                    || self.satellite_clause(now, clause, &text)
                {
                    return;
                }
                if let Err(e) = self.workers.voice.synthesize(clause, text) {
                    tracing::error!(clause, "cannot synthesize: {e}");
                    self.error(now, "voice", format!("cannot synthesize: {e}"));
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

    /// The state machine wants the transcript of the utterance just ended:
    /// the speculation's, if the speech did not go on after that pause,
    /// else a fresh Whisper run.
    fn transcribe(&mut self, now: u64, utterance: UtteranceId) {
        let Some(ended) = self.ended_utterance.take() else {
            tracing::error!(utterance, "no audio for the utterance to transcribe");
            self.owe_empty_transcript(utterance);
            return;
        };
        // In wake mode, speech away from the wake word costs no Whisper run.
        if !self.awake() && self.conversation.state() != State::Speaking {
            self.emit(
                now,
                SessionEvent::NotAddressed {
                    text: String::new(),
                },
            );
            self.owe_empty_transcript(utterance);
            return;
        }
        self.heard_level_dbfs = hark_audio::speech_level_dbfs(&ended.audio);
        // Speech over Hark is judged here (a "mhm" must not start a
        // pipeline); a turn of the user's goes to the satellite's.
        if self.conversation.state() != State::Speaking {
            if let Some(satellite) = &mut self.satellite {
                satellite.pipeline.run(&ended.audio);
                satellite.awaiting_transcript = Some(utterance);
                return;
            }
        }
        if let Some(s) = self
            .speculation
            .as_mut()
            .filter(|s| s.speech_end_ms == ended.speech_end_ms)
        {
            match s.text.take() {
                Some((text, transcribe_ms)) => {
                    self.speculation = None;
                    // Owed, not fed: this runs inside the state machine's
                    // own action loop.
                    let event = self.transcript(now, utterance, text, transcribe_ms, true);
                    self.owed.push_back(event);
                }
                None => s.waiting = Some(utterance),
            }
            return;
        }
        // Another utterance may still wait for its speculative text.
        self.speculation.take_if(|s| s.waiting.is_none());
        let job = SttJob {
            utterance,
            audio: ended.audio,
            purpose: SttPurpose::Final,
        };
        self.stop_reading_ahead();
        if let Err(e) = self.workers.stt.submit(job) {
            match e {
                Refused::Full(_) => {
                    tracing::warn!(
                        utterance,
                        "Whisper is falling behind; dropping an utterance"
                    )
                }
                Refused::Stopped(_) => tracing::error!("the speech-to-text thread has stopped"),
            }
            self.error(now, "speech-to-text", e.to_string());
            self.owe_empty_transcript(utterance);
        }
    }

    /// What Home Assistant's pipeline sent, while Hark is its satellite.
    fn satellite_event(&mut self, now: u64, event: SatelliteEvent) {
        if let SatelliteEvent::Attach(pipeline) = event {
            tracing::info!("Home Assistant runs Hark as its satellite: it hears and answers");
            self.satellite = Some(Satellite::new(pipeline));
            return;
        }
        let Some(satellite) = &mut self.satellite else {
            tracing::debug!(?event, "not a satellite now; ignored");
            return;
        };
        match event {
            SatelliteEvent::Attach(_) => unreachable!("handled above"),
            SatelliteEvent::Detach => {
                tracing::info!("Home Assistant stopped running Hark as its satellite");
                let mut satellite = self.satellite.take().expect("checked above");
                for event in satellite.abandon() {
                    self.feed(now, event);
                }
            }
            SatelliteEvent::Transcript(text) => {
                let Some(utterance) = satellite.awaiting_transcript.take() else {
                    return;
                };
                satellite.answers_next = !text.trim().is_empty();
                self.final_transcript(now, utterance, text, 0, false, false);
            }
            SatelliteEvent::Reply(text) => match satellite.reply {
                Some(reply) if satellite.early_text.is_none() => {
                    satellite.expect(&self.conversation.config().chunking, &text);
                    satellite.early_text = Some(String::new());
                    self.feed(now, Event::ReplyToken { reply, text });
                    self.feed(now, Event::ReplyFinished { reply });
                }
                _ => satellite.early_text = Some(text),
            },
            SatelliteEvent::Audio { pcm, rate } => {
                let speaker_rate = self.workers.speaker.rate();
                let audio = if rate == speaker_rate {
                    pcm
                } else {
                    match hark_audio::resample::resample_mono(&pcm, rate, speaker_rate) {
                        Ok(audio) => audio,
                        Err(e) => {
                            self.error(
                                now,
                                "satellite",
                                format!("cannot resample the answer: {e}"),
                            );
                            return;
                        }
                    }
                };
                let satellite = self.satellite.as_mut().expect("checked above");
                for (clause, pcm) in satellite.audio_arrived(audio) {
                    self.accept(
                        now,
                        CoreInput::Synthesized(Synthesized {
                            clause,
                            audio: Ok(pcm),
                            rate: speaker_rate,
                            synth_ms: 0,
                            notice: None,
                        }),
                    );
                }
            }
            SatelliteEvent::Failed(message) => {
                let owed = satellite.abandon();
                self.error(now, "satellite", message);
                for event in owed {
                    self.feed(now, event);
                }
            }
        }
    }

    /// The turn machine started `reply`: Home Assistant answers it when it
    /// answers the satellite's transcript.
    fn satellite_answers(&mut self, reply: ReplyId) -> bool {
        let Some(satellite) = self.satellite.as_mut().filter(|s| s.answers_next) else {
            return false;
        };
        satellite.answers_next = false;
        satellite.reply = Some(reply);
        if let Some(text) = satellite.early_text.take() {
            satellite.expect(&self.conversation.config().chunking, &text);
            satellite.early_text = Some(String::new());
            self.owed.push_back(Event::ReplyToken { reply, text });
            self.owed.push_back(Event::ReplyFinished { reply });
        }
        true
    }

    /// A clause of Home Assistant's answer: its share of the answer's
    /// audio, now or when it comes.
    fn satellite_clause(&mut self, now: u64, clause: ClauseId, text: &str) -> bool {
        let Some(satellite) = self.satellite.as_mut().filter(|s| s.reply.is_some()) else {
            return false;
        };
        match satellite.claim(clause, text) {
            None => false,
            Some(None) => true,
            Some(Some(pcm)) => {
                let rate = self.workers.speaker.rate();
                self.owed_audio(now, clause, pcm, rate);
                true
            }
        }
    }

    /// Audio for `clause` already at hand (a prepared reply's first clause,
    /// Home Assistant's answer), delivered as the voice's would be.
    fn owed_audio(&mut self, now: u64, clause: ClauseId, pcm: Vec<f32>, rate: u32) {
        let audio_ms = pcm.len() as u64 * 1000 / u64::from(rate.max(1));
        self.emit(
            now,
            SessionEvent::Synthesized {
                clause,
                synth_ms: 0,
                audio_ms,
            },
        );
        self.synthesized.insert(clause, pcm);
        self.owed.push_back(Event::ClauseSynthesized { clause });
    }

    fn owe_empty_transcript(&mut self, utterance: u64) {
        self.owed.push_back(Event::Transcript {
            utterance,
            text: String::new(),
        });
    }

    fn start_generation(&mut self, now: u64, reply: ReplyId, history: Vec<Turn>) {
        let messages = chat_messages(&history);
        if self.adopt_prepared(now, reply, &messages) {
            return;
        }
        match self.workers.llm.start(reply, messages) {
            Ok(cancel) => self.generation = Some((reply, cancel)),
            Err(e) => {
                tracing::error!(reply, "cannot start a generation: {e}");
                self.error(now, "llm", format!("cannot start a generation: {e}"));
                self.owed.push_back(Event::ReplyFinished { reply });
            }
        }
    }

    /// Reports a notice and keeps the outcome.
    fn notice(&mut self, now: u64, notice: Notice) {
        match notice {
            Notice::StateChanged { from, to } => {
                if let Some(flag) = &self.over_reply {
                    flag.store(to == State::Speaking, std::sync::atomic::Ordering::Relaxed);
                }
                self.emit(now, SessionEvent::State { from, to })
            }
            Notice::UserTurn { text } => {
                self.last_user_text = text.clone();
                self.emit(now, SessionEvent::UserTurn { text });
            }
            Notice::NothingHeard => self.emit(now, SessionEvent::NothingHeard),
            Notice::ReplyClause { clause, text } => {
                self.emit(now, SessionEvent::Clause { clause, text })
            }
            Notice::FallbackReply => {
                tracing::warn!("the language model gave nothing speakable; speaking the fallback");
                self.emit(now, SessionEvent::FallbackReply);
            }
            Notice::BargeInSuspected => self.emit(now, SessionEvent::BargeInSuspected),
            Notice::BargeInDismissed { reason } => {
                self.emit(now, SessionEvent::BargeInDismissed { reason })
            }
            Notice::Interrupted { spoken_part, cause } => {
                tracing::info!(?cause, spoken = %spoken_part, "interrupted");
                self.outcome.interruptions += 1;
                self.emit(
                    now,
                    SessionEvent::Interrupted {
                        spoken_part,
                        cause: format!("{cause:?}"),
                    },
                );
            }
            Notice::TurnFinished {
                reply,
                text,
                interrupted,
                timings,
            } => {
                let record = TurnRecord {
                    user_text: std::mem::take(&mut self.last_user_text),
                    spoken: text.clone(),
                    interrupted,
                    timings: timings.clone(),
                };
                // Reported before the asker hears back, so what it reads
                // next (LastTurnLatencyMs) is already up to date.
                let endpoint_ms = self
                    .last_endpoint
                    .filter(|(at, _)| Some(*at) == timings.speech_ended_ms)
                    .map(|(at, heard)| heard.saturating_sub(at));
                if self
                    .prepared
                    .as_ref()
                    .is_some_and(|p| p.adopted == Some(reply))
                {
                    self.prepared = None;
                }
                self.emit(
                    now,
                    SessionEvent::TurnFinished {
                        reply,
                        endpoint_ms,
                        user_text: record.user_text.clone(),
                        text: text.clone(),
                        interrupted,
                        voice_to_voice_ms: timings.voice_to_voice_ms(),
                        timings,
                    },
                );
                self.outcome.turns.push(record);
                self.follow_up_until_ms = Some(now + self.wake.follow_up_ms);
                // An interrupted reply ends with the user talking: their
                // partial transcripts read ahead instead.
                if !interrupted {
                    self.read_ahead("");
                }
                if let Some(satellite) = self.satellite.as_mut().filter(|s| s.reply == Some(reply))
                {
                    satellite.pipeline.played();
                    satellite.reset_reply();
                }
                if let Some(at) = self.pending_asks.iter().position(|(r, _)| *r == reply) {
                    let (_, asker) = self.pending_asks.swap_remove(at);
                    asker.send(text);
                }
            }
        }
    }
}

/// History as the model reads it. Tool calls are in history for people;
/// the model has its own record of them within a reply.
fn chat_messages(history: &[Turn]) -> Vec<ChatMessage> {
    history
        .iter()
        .filter(|turn| turn.role != Role::Tool)
        .map(|turn| match turn.role {
            Role::User | Role::Tool => ChatMessage::user(turn.text.clone()),
            Role::Assistant if turn.interrupted => {
                ChatMessage::assistant(format!("{}{INTERRUPTED_MARKER}", turn.text))
            }
            Role::Assistant => ChatMessage::assistant(turn.text.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests;
