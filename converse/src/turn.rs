//! The turn-taking state machine: who has the floor, what Hark says, and
//! when the user's speech interrupts it.
//!
//! [`Conversation`] is pure: the caller feeds it [`Event`]s stamped with a
//! monotonic time in milliseconds and carries out the [`Action`]s it returns
//! (transcribe, generate, synthesize, play, flush...). It never reads a
//! clock, so the caller sends [`Event::Tick`] every few tens of milliseconds
//! while anything is going on; decisions that depend on how long the user
//! has been speaking are taken at the first event at or past the deadline.
//!
//! ```text
//!                 SpeechStarted                SpeechEnded → Transcribe
//!   Listening ─────────────────► UserSpeaking ─────────────────────────► Thinking
//!     ▲   ▲                          ▲   ▲        SpeechStarted again    │  │
//!     │   │                          │   └───────────────────────────────┘  │
//!     │   └── empty transcript ──────┼──────────────────────────────────────┤
//!     │                              │                 transcript → StartGeneration,
//!     │                              │ barge-in by     a Synthesize per clause;
//!     │                              │ duration        first clause ready → Play
//!     │     last clause played       │                                      ▼
//!     └───────────────────────────── Speaking ◄─────────────────────────────┘
//!                                      │ barge-in by words: new user turn,
//!                                      └──► Thinking (StartGeneration)
//!
//!   Idle: muted and no reply in progress (a reply being spoken finishes).
//! ```
//!
//! # Barge-in
//!
//! Speech that starts while Hark has a reply in progress (Thinking with a
//! generation running, or Speaking) is a *candidate* interruption. Echo of
//! Hark's own voice, coughs and backchannels ("mhm", "yeah") must not stop
//! it, yet a real interruption must silence it within a fraction of a
//! second. Duration is known while the user speaks, words only once the
//! utterance is transcribed, so [`BargeInRule`] combines them in stages
//! (defaults in brackets):
//!
//! 1. At `pause_after_ms` (0: as soon as the VAD confirms speech) Hark
//!    *holds*: it pauses playback ([`Action::PausePlayback`]) and plays no
//!    new clause, so it falls silent at once; generation and synthesis carry
//!    on, nothing is lost yet. Pausing first and deciding later is what makes
//!    a real interruption silence Hark within the VAD's onset time (about
//!    0.1 s) while a cough costs only a short pause.
//! 2. Speech shorter than `min_speech_ms` (300 ms) is noise: never
//!    transcribed, Hark resumes.
//! 3. At `commit_speech_ms` (1000 ms) of sustained speech the interruption is
//!    certain (backchannels are short): Hark stops for good (see below) and
//!    the floor goes to the user (UserSpeaking). Certain only once a partial
//!    transcript of the speech ([`Event::PartialTranscript`]) has a word
//!    that is not a backchannel: a second of hiss or clatter is speech to
//!    the VAD but has no words, and waits for its end to be judged like
//!    any short utterance (or for `commit_without_words_ms`, 3000 ms).
//!    Speech in a pause ([`Event::SpeechPaused`], its end of turn still
//!    undecided) is not sustained: a "mhm" waiting for Smart Turn is judged
//!    by its words.
//! 4. An utterance that ends between the two is transcribed. If its transcript
//!    has at least `min_words` (2) words, is not made only of backchannel
//!    words (or one backchannel phrase such as "i see"), does not trail
//!    off ("and then,": Whisper's reading of a noise), and is not mostly
//!    (`echo_overlap_percent`, 60) words of Hark's own reply (its voice leaking
//!    past echo cancellation), Hark stops for good and the transcript is the
//!    next user turn; otherwise Hark resumes
//!    ([`Action::ResumePlayback`]) as if nothing happened and the utterance
//!    is forgotten (it is not a user turn).
//!
//! Stopping for good means [`Action::FlushPlayback`], [`Action::CancelSynthesis`]
//! and [`Action::CancelGeneration`] (each only when something is there to
//! stop), then [`Notice::Interrupted`]. History gets an assistant turn with
//! only the part that was played: every clause whose playback finished plus
//! the reported fraction of the clause playing, cut back to the last whole
//! word, marked `interrupted`. [`Event::Interrupt`] stops the same way with
//! no rule; [`Event::Say`] and [`Event::Ask`] stop any reply in progress
//! first. With `enabled: false` speech over Hark is ignored altogether.
//!
//! The played fraction is the latest [`Event::PlaybackProgress`]; callers
//! should report it every ~100 ms and once more right after pausing.
//!
//! # Other rules
//!
//! - Outside a reply, every non-empty transcript is (part of) a user turn,
//!   even a lone "yes": it may answer a question Hark asked. Whisper's
//!   bracketed annotations (`[BLANK_AUDIO]`, `(coughs)`) do not count as
//!   words. An empty transcript returns to Listening.
//! - History alternates roles, as chat templates require: a turn with the same
//!   role as the one before is appended to it (e.g. the user speaking again
//!   after an interruption that played nothing).
//! - A generation that ends without a single speakable clause is answered
//!   with [`TurnConfig::fallback_reply`] so the user is never left hanging.
//! - Ids of utterances, replies and clauses count up from 1 and are never
//!   reused, so a late event of a cancelled job (a token, a finished
//!   playback) is recognised and ignored.

use crate::chunk::{ChunkConfig, ClauseSplitter};
use serde::{Deserialize, Serialize};

/// Identifies one user utterance sent for transcription.
pub type UtteranceId = u64;
/// Identifies one reply (one LLM generation, or one `Say`).
pub type ReplyId = u64;
/// Identifies one clause of a reply, for synthesis and playback.
pub type ClauseId = u64;

/// Who has the floor, as the outside world sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Not listening: muted. (A reply in progress still shows as Thinking or
    /// Speaking.)
    Idle,
    Listening,
    UserSpeaking,
    /// Transcribing the user, or generating before the first clause plays.
    Thinking,
    /// At least one clause of the reply has been sent to playback.
    Speaking,
}

/// How the conversation behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TurnConfig {
    pub barge_in: BargeInRule,
    pub chunking: ChunkConfig,
    /// Spoken when a generation produces nothing speakable; empty for silence.
    pub fallback_reply: String,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            barge_in: BargeInRule::default(),
            chunking: ChunkConfig::default(),
            fallback_reply: "Sorry, I have no answer to that.".to_owned(),
        }
    }
}

/// When the user's speech over Hark interrupts it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BargeInRule {
    pub enabled: bool,
    /// Speech over Hark this long pauses playback until it is judged.
    pub pause_after_ms: u64,
    /// Shorter speech is noise and is not even transcribed.
    pub min_speech_ms: u64,
    /// Speech sustained this long interrupts without waiting for its end,
    /// once a partial transcript of it has a word that is not a backchannel.
    pub commit_speech_ms: u64,
    /// Sustained speech with no such word yet (a long noise the VAD takes
    /// for speech, or partial transcripts switched off) interrupts at this
    /// length instead; at most `commit_speech_ms` means words are not needed.
    pub commit_without_words_ms: u64,
    /// A transcript with fewer words does not interrupt.
    pub min_words: usize,
    /// Words (or whole phrases) that acknowledge rather than interrupt;
    /// compared case-insensitively without punctuation.
    pub backchannels: Vec<String>,
    /// A transcript with at least this percentage of its words taken from
    /// Hark's own reply is Hark's echo, not the user; above 100 the check is
    /// off.
    pub echo_overlap_percent: u32,
}

impl Default for BargeInRule {
    fn default() -> Self {
        let backchannels = [
            "mhm",
            "mm",
            "mmm",
            "hmm",
            "mm-hmm",
            "uh-huh",
            "uh",
            "huh",
            "um",
            "ok",
            "okay",
            "yeah",
            "yes",
            "yep",
            "yup",
            "right",
            "sure",
            "alright",
            "all right",
            "i see",
            "got it",
        ];
        Self {
            enabled: true,
            pause_after_ms: 0,
            min_speech_ms: 300,
            commit_speech_ms: 1000,
            commit_without_words_ms: 3000,
            min_words: 2,
            backchannels: backchannels.map(String::from).to_vec(),
            echo_overlap_percent: 60,
        }
    }
}

impl BargeInRule {
    /// Whether a partial transcript of speech over Hark holds a word that
    /// is not a backchannel: what sustained speech needs to interrupt
    /// before `commit_without_words_ms`.
    pub fn partial_has_words(&self, partial: &str) -> bool {
        words(partial).iter().any(|w| !self.is_backchannel(w))
    }

    /// Whether `phrase` (lowercase words joined by spaces) is one of the
    /// backchannels.
    fn is_backchannel(&self, phrase: &str) -> bool {
        self.backchannels
            .iter()
            .any(|b| words(b).join(" ") == phrase)
    }

    /// Whether the transcript of an utterance spoken over Hark's `reply`
    /// (and at least `min_speech_ms` long) interrupts it.
    pub fn judge(&self, transcript: &str, reply: &str) -> Result<(), Dismissal> {
        if !self.transcript_interrupts(transcript) {
            return Err(Dismissal::NotAnInterruption {
                transcript: transcript.to_owned(),
            });
        }
        if self.is_echo(transcript, reply) {
            return Err(Dismissal::Echo {
                transcript: transcript.to_owned(),
            });
        }
        Ok(())
    }

    /// Whether the transcript is mostly words of Hark's own reply: what the
    /// microphone picked up from the speaker when echo cancellation missed.
    ///
    /// At least `echo_overlap_percent` of all its words, and at least half
    /// of those that carry meaning: any reply is full of "the", "on" and
    /// "about", and a garbled "Hold on, tell me about the moon instead"
    /// ("the Anjo instead. The An") was taken for the echo of a story on
    /// those alone (seen in `hark bench quality`), while a garbled echo
    /// ("the sky is blew") keeps some of the reply's own words.
    pub fn is_echo(&self, transcript: &str, reply: &str) -> bool {
        let said = words(transcript);
        if said.is_empty() || self.echo_overlap_percent > 100 {
            return false;
        }
        let reply: std::collections::HashSet<String> = words(reply).into_iter().collect();
        let shared = |words: &[&String]| words.iter().filter(|w| reply.contains(**w)).count();
        let all: Vec<&String> = said.iter().collect();
        let meaningful: Vec<&String> = said
            .iter()
            .filter(|w| !FUNCTION_WORDS.contains(&w.as_str()))
            .collect();
        shared(&all) * 100 >= self.echo_overlap_percent as usize * all.len()
            && shared(&meaningful) * 2 >= meaningful.len()
    }

    /// The words rule alone: enough words, not only backchannels, and not
    /// a few words trailing off (a comma, a colon, an ellipsis or a dash
    /// at the end): that is how Whisper writes what it makes of a short
    /// noise or a backchannel over Hark ("and then,", "the term,", "and
    /// they can..."), and a real interruption that stops there goes on, as
    /// sustained speech, or as the next utterance. Longer speech that
    /// trails off ("but that people asked to...") was said to Hark.
    pub fn transcript_interrupts(&self, transcript: &str) -> bool {
        let said = words(transcript);
        let few_trailing_off = said.len() <= TRAILING_OFF_MOST_WORDS && trails_off(transcript);
        if said.len() < self.min_words || few_trailing_off {
            return false;
        }
        let all_backchannel = said.iter().all(|w| self.is_backchannel(w));
        !all_backchannel && !self.is_backchannel(&said.join(" "))
    }
}

/// Something that happened, stamped with the time passed to
/// [`Conversation::handle`]. For the VAD events that time is when the speech
/// started or ended (sample-accurate), which may be a little earlier than
/// the previous event's time; nothing assumes strict order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Time passed; send regularly so duration rules fire on time.
    Tick,
    SpeechStarted,
    /// The speech in progress fell silent; the utterance may still go on
    /// (the end of the turn is not decided yet).
    SpeechPaused,
    /// The speech in progress went on after [`Event::SpeechPaused`].
    SpeechResumed,
    /// The speech ended and its audio is the utterance the caller holds.
    SpeechEnded,
    /// What Whisper made of the speech in progress so far: over a reply,
    /// whether sustained speech has words (barge-in stage 3).
    PartialTranscript {
        text: String,
    },
    /// The VAD dropped the speech as too short; no utterance follows.
    SpeechDiscarded,
    /// The final transcript of an utterance named by [`Action::Transcribe`].
    Transcript {
        utterance: UtteranceId,
        text: String,
    },
    /// Streamed text of the generation started by [`Action::StartGeneration`].
    ReplyToken {
        reply: ReplyId,
        text: String,
    },
    /// The generation ended (normally or with an error: either way no more
    /// tokens come).
    ReplyFinished {
        reply: ReplyId,
    },
    ClauseSynthesized {
        clause: ClauseId,
    },
    /// The clause cannot be spoken; it is skipped and left out of history.
    SynthesisFailed {
        clause: ClauseId,
    },
    PlaybackStarted {
        clause: ClauseId,
    },
    /// How much of the clause's audio has been heard, 0.0 to 1.0.
    PlaybackProgress {
        clause: ClauseId,
        played_fraction: f32,
    },
    PlaybackFinished {
        clause: ClauseId,
    },
    /// Speak this text as Hark, without the LLM.
    Say {
        text: String,
    },
    /// Answer this text as if the user had said it.
    Ask {
        text: String,
    },
    /// Stop talking now, whatever the barge-in rule says.
    Interrupt,
    /// The reply to the user's last turn is not wanted, and neither is the
    /// turn ("never mind"): nothing is said and history forgets both.
    Withdraw {
        reply: ReplyId,
    },
    /// While muted, VAD events are ignored.
    SetMuted(bool),
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Transcribe the utterance that just ended; answer with
    /// [`Event::Transcript`] carrying this id.
    Transcribe {
        utterance: UtteranceId,
    },
    /// Generate a reply to `history` (whose last turn is the user's); stream
    /// it back as [`Event::ReplyToken`]s and one [`Event::ReplyFinished`].
    StartGeneration {
        reply: ReplyId,
        history: Vec<Turn>,
    },
    CancelGeneration {
        reply: ReplyId,
    },
    /// Synthesize a clause; report [`Event::ClauseSynthesized`] (or
    /// [`Event::SynthesisFailed`]). Clauses may be synthesized while earlier
    /// ones play.
    Synthesize {
        clause: ClauseId,
        text: String,
    },
    /// Drop every synthesis requested so far.
    CancelSynthesis,
    /// Queue a synthesized clause after those already queued; clauses are
    /// always queued in order.
    Play {
        clause: ClauseId,
    },
    /// Fall silent but keep the queue and the position in it.
    PausePlayback,
    /// Continue where [`Action::PausePlayback`] stopped.
    ResumePlayback,
    /// Stop and drop everything queued (this also ends a pause).
    FlushPlayback,
    /// Tell the outside world (event log, D-Bus, benchmarks).
    Emit(Notice),
}

/// Things worth reporting that need no action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Notice {
    StateChanged {
        from: State,
        to: State,
    },
    /// The user's words were accepted as a turn and will be answered.
    UserTurn {
        text: String,
    },
    /// The user's utterance turned out to contain no words.
    NothingHeard,
    /// A clause of the reply, as it will be spoken.
    ReplyClause {
        clause: ClauseId,
        text: String,
    },
    /// The generation produced nothing speakable; the fallback is spoken.
    FallbackReply,
    /// Speech over Hark lasted `pause_after_ms`: Hark paused to listen.
    BargeInSuspected,
    /// Speech over Hark did not interrupt it.
    BargeInDismissed {
        reason: Dismissal,
    },
    /// Hark stopped talking; `spoken_part` is what the user heard.
    Interrupted {
        spoken_part: String,
        cause: InterruptCause,
    },
    /// A reply ended, completely played or interrupted. `text` is what was
    /// spoken (and recorded in history).
    TurnFinished {
        reply: ReplyId,
        text: String,
        interrupted: bool,
        timings: TurnTimings,
    },
}

/// Why speech over Hark did not interrupt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dismissal {
    /// Shorter than `min_speech_ms`: a cough, a click, a fragment of echo.
    TooShort { speech_ms: u64 },
    /// Too few words, or only backchannels.
    NotAnInterruption { transcript: String },
    /// Mostly Hark's own words: its voice, heard back from the speaker.
    Echo { transcript: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterruptCause {
    /// Speech over Hark lasted `commit_speech_ms`.
    SustainedSpeech,
    /// The transcript of speech over Hark passed the words rule.
    Words,
    /// [`Event::Interrupt`], or a `Say`/`Ask` replacing the reply.
    Command,
}

/// When each stage of a reply happened, in the caller's milliseconds, for
/// latency metrics. `None`: the stage did not happen (e.g. no speech for a
/// `Say`, no playback for a reply interrupted early).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnTimings {
    /// The end of the user's last utterance of the turn.
    pub speech_ended_ms: Option<u64>,
    /// The transcript that completed the user's turn.
    pub transcript_ms: Option<u64>,
    pub generation_started_ms: Option<u64>,
    pub first_token_ms: Option<u64>,
    pub first_clause_ms: Option<u64>,
    pub first_synthesized_ms: Option<u64>,
    pub first_playback_ms: Option<u64>,
    pub finished_ms: u64,
}

impl TurnTimings {
    /// From the end of the user's speech to the start of Hark's voice.
    pub fn voice_to_voice_ms(&self) -> Option<u64> {
        Some(
            self.first_playback_ms?
                .saturating_sub(self.speech_ended_ms?),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    User,
    Assistant,
    /// A tool the model called while answering, and what it returned.
    Tool,
}

/// One entry of the conversation history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    /// When the turn entered history.
    pub at_ms: u64,
    /// An assistant turn cut short: `text` is only what the user heard.
    pub interrupted: bool,
}

/// The conversation core; see the module docs.
#[derive(Debug)]
pub struct Conversation {
    config: TurnConfig,
    muted: bool,
    state: State,
    history: Vec<Turn>,
    user: UserSide,
    reply: Option<Reply>,
    /// The latest time seen; VAD times may lag behind it.
    now_ms: u64,
    next_utterance: UtteranceId,
    next_reply: ReplyId,
    next_clause: ClauseId,
}

/// What the user is saying that has not been settled yet.
#[derive(Debug, Default)]
struct UserSide {
    /// When the speech in progress started.
    speech_since: Option<u64>,
    /// The speech in progress is in a pause: it is not sustained.
    paused: bool,
    /// A partial transcript of the speech in progress has a word that is
    /// not a backchannel.
    has_words: bool,
    /// Finished utterances, in order, waiting for or holding transcripts.
    /// While a reply is in progress these are barge-in candidates waiting to
    /// be judged; otherwise they are parts of the next user turn.
    utterances: Vec<Heard>,
    last_speech_end_ms: Option<u64>,
    last_transcript_ms: Option<u64>,
}

#[derive(Debug)]
struct Heard {
    id: UtteranceId,
    transcript: Option<String>,
}

#[derive(Debug)]
struct Reply {
    id: ReplyId,
    generating: bool,
    /// How to take the user's turn that asked for it back out of history
    /// ([`Event::Withdraw`]): the history's length before it, and the text
    /// length of the turn it was joined to, if any.
    asked_by: Option<(usize, Option<usize>)>,
    splitter: ClauseSplitter,
    clauses: Vec<Clause>,
    /// Barge-in candidate pending: play nothing new.
    held: bool,
    /// A PausePlayback was sent and needs a ResumePlayback.
    paused: bool,
    timings: TurnTimings,
}

#[derive(Debug)]
struct Clause {
    id: ClauseId,
    text: String,
    synthesized: bool,
    failed: bool,
    play_sent: bool,
    played_fraction: f32,
    finished: bool,
}

impl Conversation {
    pub fn new(config: TurnConfig) -> Self {
        Self {
            config,
            muted: false,
            state: State::Listening,
            history: Vec::new(),
            user: UserSide::default(),
            reply: None,
            now_ms: 0,
            next_utterance: 1,
            next_reply: 1,
            next_clause: 1,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn history(&self) -> &[Turn] {
        &self.history
    }

    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    /// New rules from now on (a reloaded configuration); a reply in progress
    /// keeps the clauses it already has.
    pub fn set_config(&mut self, config: TurnConfig) {
        self.config = config;
    }

    /// Records that the model called a tool while writing the reply in
    /// progress (`text`: the call and its result), before the reply itself.
    pub fn note_tool_use(&mut self, text: String) {
        self.history.push(Turn {
            role: Role::Tool,
            text,
            at_ms: self.now_ms,
            interrupted: false,
        });
    }

    /// Forgets every finished turn. A reply in progress goes on, and is
    /// recorded when it ends.
    pub fn clear_history(&mut self) {
        self.history.clear();
    }

    /// Whether the user is speaking over a reply in progress that the
    /// barge-in rule may stop: what [`Event::PartialTranscript`] is for.
    pub fn speech_over_reply(&self) -> bool {
        self.config.barge_in.enabled && self.user.speech_since.is_some() && self.reply.is_some()
    }

    /// Whether the reply in progress is held: speech over it waits to be
    /// judged, and Hark plays nothing meanwhile.
    pub fn reply_held(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| r.held)
    }

    /// Whether VAD events are being ignored ([`Event::SetMuted`]).
    pub fn is_muted(&self) -> bool {
        self.muted
    }

    /// Feeds one event that happened at `at_ms`; returns what to do.
    pub fn handle(&mut self, at_ms: u64, event: Event) -> Vec<Action> {
        self.now_ms = self.now_ms.max(at_ms);
        let mut out = Vec::new();
        self.apply(at_ms, event, &mut out);
        // Each step below looks at the whole situation rather than at the
        // event, so the outcome never depends on which event got us here.
        self.commit_sustained_barge_in(&mut out);
        self.update_hold(&mut out);
        self.advance_reply(&mut out);
        self.answer_user_when_done(&mut out);
        self.update_state(&mut out);
        out
    }

    fn apply(&mut self, at_ms: u64, event: Event, out: &mut Vec<Action>) {
        let rule = &self.config.barge_in;
        match event {
            Event::Tick => {}
            Event::SpeechStarted => {
                if !self.muted {
                    if self.user.speech_since.is_none() {
                        self.user.speech_since = Some(at_ms);
                        self.user.has_words = false;
                    }
                    self.user.paused = false;
                }
            }
            Event::PartialTranscript { text } => {
                if self.user.speech_since.is_some() && rule.partial_has_words(&text) {
                    self.user.has_words = true;
                }
            }
            Event::SpeechPaused => self.user.paused = self.user.speech_since.is_some(),
            Event::SpeechResumed => self.user.paused = false,
            Event::SpeechEnded => {
                self.user.paused = false;
                let Some(start) = self.user.speech_since.take() else {
                    return;
                };
                let speech_ms = at_ms.saturating_sub(start);
                if self.reply.is_some() {
                    if !rule.enabled {
                        return;
                    }
                    if speech_ms < rule.min_speech_ms {
                        let reason = Dismissal::TooShort { speech_ms };
                        out.push(Action::Emit(Notice::BargeInDismissed { reason }));
                        return;
                    }
                }
                let id = self.next_utterance;
                self.next_utterance += 1;
                self.user.utterances.push(Heard {
                    id,
                    transcript: None,
                });
                self.user.last_speech_end_ms = Some(at_ms);
                out.push(Action::Transcribe { utterance: id });
            }
            Event::SpeechDiscarded => {
                self.user.paused = false;
                let Some(start) = self.user.speech_since.take() else {
                    return;
                };
                if self.reply.is_some() && rule.enabled {
                    let speech_ms = at_ms.saturating_sub(start);
                    let reason = Dismissal::TooShort { speech_ms };
                    out.push(Action::Emit(Notice::BargeInDismissed { reason }));
                }
            }
            Event::Transcript { utterance, text } => {
                let utterances = &mut self.user.utterances;
                let Some(pos) = utterances
                    .iter()
                    .position(|h| h.id == utterance && h.transcript.is_none())
                else {
                    tracing::debug!(utterance, "ignoring a transcript nobody waits for");
                    return;
                };
                let text = clean_transcript(&text);
                if let Some(reply) = &self.reply {
                    if let Err(reason) = rule.judge(&text, &reply.all_text()) {
                        utterances.remove(pos);
                        out.push(Action::Emit(Notice::BargeInDismissed { reason }));
                        return;
                    }
                }
                utterances[pos].transcript = Some(text);
                self.user.last_transcript_ms = Some(at_ms);
                if self.reply.is_some() {
                    self.stop_reply(InterruptCause::Words, out);
                }
            }
            Event::ReplyToken { reply, text } => {
                let clause_ids = &mut self.next_clause;
                if let Some(r) = self
                    .reply
                    .as_mut()
                    .filter(|r| r.id == reply && r.generating)
                {
                    r.timings.first_token_ms.get_or_insert(at_ms);
                    for clause in r.splitter.push(&text) {
                        r.add_clause(clause, at_ms, clause_ids, out);
                    }
                }
            }
            Event::ReplyFinished { reply } => {
                let clause_ids = &mut self.next_clause;
                if let Some(r) = self
                    .reply
                    .as_mut()
                    .filter(|r| r.id == reply && r.generating)
                {
                    r.generating = false;
                    for rest in r.splitter.finish() {
                        r.add_clause(rest, at_ms, clause_ids, out);
                    }
                    if r.clauses.is_empty() && !self.config.fallback_reply.is_empty() {
                        out.push(Action::Emit(Notice::FallbackReply));
                        let fallback = ClauseSplitter::split(
                            self.config.chunking.clone(),
                            &self.config.fallback_reply,
                        );
                        for clause in fallback {
                            r.add_clause(clause, at_ms, clause_ids, out);
                        }
                    }
                }
            }
            Event::ClauseSynthesized { clause } => {
                if let Some((r, c)) = self.clause_mut(clause) {
                    c.synthesized = !c.failed;
                    r.first_synthesized_ms.get_or_insert(at_ms);
                }
            }
            Event::SynthesisFailed { clause } => {
                if let Some((_, c)) = self.clause_mut(clause) {
                    c.failed = !c.synthesized;
                }
            }
            Event::PlaybackStarted { clause } => {
                if let Some((r, _)) = self.clause_mut(clause) {
                    r.first_playback_ms.get_or_insert(at_ms);
                }
            }
            Event::PlaybackProgress {
                clause,
                played_fraction,
            } => {
                if let Some((_, c)) = self.clause_mut(clause) {
                    let fraction = if played_fraction.is_nan() {
                        0.0
                    } else {
                        played_fraction.clamp(0.0, 1.0)
                    };
                    c.played_fraction = c.played_fraction.max(fraction);
                }
            }
            Event::PlaybackFinished { clause } => {
                if let Some((_, c)) = self.clause_mut(clause) {
                    c.finished = c.play_sent;
                    c.played_fraction = 1.0;
                }
            }
            Event::Say { text } => {
                let clauses = ClauseSplitter::split(self.config.chunking.clone(), &text);
                if clauses.is_empty() {
                    return;
                }
                self.take_over_floor(out);
                let mut reply = self.new_reply(false);
                for clause in clauses {
                    reply.add_clause(clause, at_ms, &mut self.next_clause, out);
                }
                self.reply = Some(reply);
            }
            Event::Ask { text } => {
                let text = clean_transcript(&text);
                if text.is_empty() {
                    return;
                }
                self.take_over_floor(out);
                self.accept_user_turn(text, out);
            }
            Event::Interrupt => {
                if self.reply.is_some() {
                    self.stop_reply(InterruptCause::Command, out);
                }
            }
            Event::Withdraw { reply } => {
                if self.reply.as_ref().is_some_and(|r| r.id == reply) {
                    self.withdraw_reply(out);
                }
            }
            Event::SetMuted(muted) => {
                self.muted = muted;
                if muted {
                    // Whatever the user was in the middle of saying is dropped;
                    // late transcripts are then ignored by id.
                    self.user = UserSide::default();
                }
            }
        }
    }

    /// Barge-in stage 3: speech over Hark lasted long enough to be sure,
    /// and has words (or has lasted much longer). Not while it is in a
    /// pause: a "mhm" whose end of turn is still being decided has not
    /// been sustained; its words decide when it ends.
    fn commit_sustained_barge_in(&mut self, out: &mut Vec<Action>) {
        let rule = &self.config.barge_in;
        if let (Some(since), Some(_), false) =
            (self.user.speech_since, &self.reply, self.user.paused)
        {
            let needed = if self.user.has_words {
                rule.commit_speech_ms
            } else {
                rule.commit_speech_ms.max(rule.commit_without_words_ms)
            };
            if rule.enabled && self.now_ms.saturating_sub(since) >= needed {
                self.stop_reply(InterruptCause::SustainedSpeech, out);
            }
        }
    }

    /// Barge-in stage 2: pause while a candidate interruption is pending,
    /// resume once it is dismissed.
    fn update_hold(&mut self, out: &mut Vec<Action>) {
        let rule = &self.config.barge_in;
        let speech_long_enough = self
            .user
            .speech_since
            .is_some_and(|since| self.now_ms.saturating_sub(since) >= rule.pause_after_ms);
        let pending = speech_long_enough || !self.user.utterances.is_empty();
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        let hold = rule.enabled && pending;
        if hold && !reply.held {
            reply.held = true;
            out.push(Action::Emit(Notice::BargeInSuspected));
            if reply.is_playing() {
                reply.paused = true;
                out.push(Action::PausePlayback);
            }
        } else if !hold && reply.held {
            reply.held = false;
            if reply.paused {
                reply.paused = false;
                out.push(Action::ResumePlayback);
            }
        }
    }

    /// Queues every clause that can play next, and closes the reply once it
    /// has all been played.
    fn advance_reply(&mut self, out: &mut Vec<Action>) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        if !reply.held {
            for clause in reply.clauses.iter_mut() {
                if clause.failed || clause.play_sent {
                    continue;
                }
                if !clause.synthesized {
                    break; // playback order is clause order
                }
                clause.play_sent = true;
                out.push(Action::Play { clause: clause.id });
            }
        }
        let complete = !reply.generating && reply.clauses.iter().all(|c| c.finished || c.failed);
        if complete {
            let reply = self.reply.take().expect("checked above");
            self.close_reply(reply, false, out);
        }
    }

    /// Starts a generation once the user has finished speaking and every
    /// utterance of the turn is transcribed.
    fn answer_user_when_done(&mut self, out: &mut Vec<Action>) {
        let user = &self.user;
        let waiting =
            user.speech_since.is_some() || user.utterances.iter().any(|h| h.transcript.is_none());
        if self.reply.is_some() || waiting || user.utterances.is_empty() {
            return;
        }
        let parts: Vec<String> = self
            .user
            .utterances
            .drain(..)
            .filter_map(|h| h.transcript)
            .filter(|t| !t.is_empty())
            .collect();
        if parts.is_empty() {
            out.push(Action::Emit(Notice::NothingHeard));
            return;
        }
        self.accept_user_turn(parts.join(" "), out);
    }

    fn update_state(&mut self, out: &mut Vec<Action>) {
        let state = match &self.reply {
            Some(reply) if reply.clauses.iter().any(|c| c.play_sent) => State::Speaking,
            Some(_) => State::Thinking,
            None if self.user.speech_since.is_some() => State::UserSpeaking,
            None if !self.user.utterances.is_empty() => State::Thinking,
            None if self.muted => State::Idle,
            None => State::Listening,
        };
        if state != self.state {
            out.push(Action::Emit(Notice::StateChanged {
                from: self.state,
                to: state,
            }));
            tracing::debug!(from = ?self.state, to = ?state, "conversation state");
            self.state = state;
        }
    }

    /// Records the user's turn and asks the LLM to answer it.
    fn accept_user_turn(&mut self, text: String, out: &mut Vec<Action>) {
        out.push(Action::Emit(Notice::UserTurn { text: text.clone() }));
        let before = (
            self.history.len(),
            self.history
                .last()
                .filter(|t| t.role == Role::User)
                .map(|t| t.text.len()),
        );
        self.record(Role::User, text, false);
        let mut reply = self.new_reply(true);
        reply.asked_by = Some(before);
        reply.timings.speech_ended_ms = self.user.last_speech_end_ms.take();
        reply.timings.transcript_ms = self.user.last_transcript_ms.take();
        reply.timings.generation_started_ms = Some(self.now_ms);
        out.push(Action::StartGeneration {
            reply: reply.id,
            history: self.history.clone(),
        });
        self.reply = Some(reply);
    }

    /// A command takes the floor: any reply stops and whatever the user had
    /// not finished saying is dropped.
    fn take_over_floor(&mut self, out: &mut Vec<Action>) {
        if self.reply.is_some() {
            self.stop_reply(InterruptCause::Command, out);
        }
        self.user.utterances.clear();
        self.user.last_speech_end_ms = None;
        self.user.last_transcript_ms = None;
    }

    /// Stops the reply in progress for good, keeping only what was heard.
    fn stop_reply(&mut self, cause: InterruptCause, out: &mut Vec<Action>) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        reply.silence(out);
        out.push(Action::Emit(Notice::Interrupted {
            spoken_part: reply.spoken_text(),
            cause,
        }));
        self.close_reply(reply, true, out);
    }

    /// Drops the reply unsaid and takes the user's turn that asked for it
    /// back out of history.
    fn withdraw_reply(&mut self, out: &mut Vec<Action>) {
        let Some(mut reply) = self.reply.take() else {
            return;
        };
        reply.silence(out);
        match reply.asked_by {
            Some((len, Some(joined_at))) if self.history.len() == len => {
                if let Some(last) = self.history.last_mut() {
                    last.text.truncate(joined_at);
                }
            }
            Some((len, _)) => self.history.truncate(len),
            None => {}
        }
        reply.timings.finished_ms = self.now_ms;
        out.push(Action::Emit(Notice::TurnFinished {
            reply: reply.id,
            text: String::new(),
            interrupted: false,
            timings: reply.timings,
        }));
    }

    fn close_reply(&mut self, mut reply: Reply, interrupted: bool, out: &mut Vec<Action>) {
        let text = reply.spoken_text();
        if !text.is_empty() {
            self.record(Role::Assistant, text.clone(), interrupted);
        }
        reply.timings.finished_ms = self.now_ms;
        out.push(Action::Emit(Notice::TurnFinished {
            reply: reply.id,
            text,
            interrupted,
            timings: reply.timings,
        }));
    }

    fn record(&mut self, role: Role, text: String, interrupted: bool) {
        match self.history.last_mut() {
            Some(last) if last.role == role => {
                last.text.push(' ');
                last.text.push_str(&text);
                last.interrupted |= interrupted;
            }
            _ => self.history.push(Turn {
                role,
                text,
                at_ms: self.now_ms,
                interrupted,
            }),
        }
    }

    fn new_reply(&mut self, generating: bool) -> Reply {
        let id = self.next_reply;
        self.next_reply += 1;
        Reply {
            id,
            generating,
            asked_by: None,
            splitter: ClauseSplitter::new(self.config.chunking.clone()),
            clauses: Vec::new(),
            held: false,
            paused: false,
            timings: TurnTimings::default(),
        }
    }

    /// The current reply's timings and one of its clauses; `None` for a
    /// clause of a reply that is gone.
    fn clause_mut(&mut self, id: ClauseId) -> Option<(&mut TurnTimings, &mut Clause)> {
        let reply = self.reply.as_mut()?;
        let clause = reply.clauses.iter_mut().find(|c| c.id == id)?;
        Some((&mut reply.timings, clause))
    }
}

impl Reply {
    fn add_clause(
        &mut self,
        text: String,
        at_ms: u64,
        next_id: &mut ClauseId,
        out: &mut Vec<Action>,
    ) {
        let id = *next_id;
        *next_id += 1;
        self.timings.first_clause_ms.get_or_insert(at_ms);
        out.push(Action::Emit(Notice::ReplyClause {
            clause: id,
            text: text.clone(),
        }));
        out.push(Action::Synthesize {
            clause: id,
            text: text.clone(),
        });
        self.clauses.push(Clause {
            id,
            text,
            synthesized: false,
            failed: false,
            play_sent: false,
            played_fraction: 0.0,
            finished: false,
        });
    }

    /// Every clause of the reply so far, heard or not.
    /// Stops everything the reply still has going: playback, synthesis,
    /// generation.
    fn silence(&self, out: &mut Vec<Action>) {
        if self.clauses.iter().any(|c| c.play_sent && !c.finished) {
            out.push(Action::FlushPlayback);
        }
        if self.clauses.iter().any(|c| !c.synthesized && !c.failed) {
            out.push(Action::CancelSynthesis);
        }
        if self.generating {
            out.push(Action::CancelGeneration { reply: self.id });
        }
    }

    fn all_text(&self) -> String {
        let clauses: Vec<&str> = self.clauses.iter().map(|c| c.text.as_str()).collect();
        clauses.join(" ")
    }

    fn is_playing(&self) -> bool {
        self.clauses.iter().any(|c| c.play_sent && !c.finished)
    }

    /// What the user has heard: every finished clause, then the heard part
    /// of the clause playing. Clauses play in order, so nothing after the
    /// first unfinished clause has been heard.
    fn spoken_text(&self) -> String {
        let mut heard = Vec::new();
        for clause in self.clauses.iter().filter(|c| !c.failed) {
            if clause.finished {
                heard.push(clause.text.as_str());
                continue;
            }
            if clause.play_sent {
                heard.push(heard_prefix(&clause.text, clause.played_fraction));
            }
            break;
        }
        heard.retain(|part| !part.is_empty());
        heard.join(" ")
    }
}

/// The words of `text` heard when `fraction` of its audio has played,
/// estimating by characters and keeping only whole words.
fn heard_prefix(text: &str, fraction: f32) -> &str {
    let chars = text.chars().count();
    let heard_chars = (chars as f32 * fraction).floor() as usize;
    let Some((cut, next)) = text.char_indices().nth(heard_chars) else {
        return text;
    };
    let head = if next.is_whitespace() {
        &text[..cut]
    } else {
        text[..cut]
            .rsplit_once(char::is_whitespace)
            .map_or("", |(head, _)| head)
    };
    head.trim_end()
}

/// A transcript without Whisper's annotations (`[BLANK_AUDIO]`, `(coughs)`)
/// and with single spaces.
fn clean_transcript(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => kept.push(c),
            _ => {}
        }
    }
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Transcripts of speech over Hark this short that trail off do not
/// interrupt ([`BargeInRule::transcript_interrupts`]).
const TRAILING_OFF_MOST_WORDS: usize = 3;

/// Whether `text` ends where a sentence cannot (see
/// [`BargeInRule::transcript_interrupts`]).
fn trails_off(text: &str) -> bool {
    text.trim_end().ends_with([',', ';', ':', '…', '-', '—']) || text.trim_end().ends_with("..")
}

/// Words too common to tell Hark's echo from the user ([`BargeInRule::is_echo`]).
const FUNCTION_WORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "but", "by", "do", "for", "from", "he",
    "i", "in", "is", "it", "it's", "its", "me", "my", "no", "not", "of", "on", "or", "she", "so",
    "that", "the", "they", "this", "to", "was", "we", "were", "what", "with", "you",
];

/// Lowercase words without surrounding punctuation ("Uh-huh." → "uh-huh").
fn words(text: &str) -> Vec<String> {
    clean_transcript(text)
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
