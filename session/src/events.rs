//! One stream of what a session does, and its subscribers.
//!
//! The core reports everything as a [`SessionEvent`] stamped with its time
//! on the input timeline; whoever cares subscribes: the JSON-lines event
//! log ([`EventLog`], `--events FILE`), `hark converse` printing the turns,
//! the daemon's D-Bus signals and systemd status line, the benchmark's
//! stage timings. The core itself neither prints nor writes files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use hark_converse::turn::{Dismissal, Role, State, Turn, TurnTimings};
use serde::Serialize;

use crate::core::ListenMode;
use crate::SessionError;

/// What happened, in the order it happened. Serialised (snake_case, the
/// variant's name under `"event"`) it is one line of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SessionEvent {
    /// The core loop started.
    Listening,
    /// The input has no more audio (end of file).
    InputEnded,
    /// Something failed; `code` says which part (`audio-input`,
    /// `audio-output`, `llm`, `voice`, `speech-to-text`;
    /// the daemon adds `models` for a damaged model file found by `Reload`).
    Error {
        code: &'static str,
        message: String,
    },
    /// The VAD heard speech begin. `muted`: while not listening (the
    /// daemon shows only speech it listens to).
    SpeechStarted {
        at_ms: u64,
        #[serde(skip)]
        muted: bool,
    },
    SpeechEnded {
        start_ms: u64,
        at_ms: u64,
    },
    /// Speech too short to count.
    SpeechDiscarded {
        at_ms: u64,
    },
    /// The ears switched to another input; `problem`: why the microphone
    /// is not in use.
    InputChanged {
        input: String,
        problem: Option<String>,
    },
    /// The speaker came or went; `output` is `none` without one, and
    /// `problem` says why.
    OutputChanged {
        output: String,
        problem: Option<String>,
    },
    SpeculativeTranscript {
        speech_end_ms: u64,
        text: String,
        transcribe_ms: u64,
    },
    /// What the user has said so far. `current`: the user is still the one
    /// speaking (a stale one is logged, not shown).
    PartialTranscript {
        text: String,
        transcribe_ms: u64,
        #[serde(skip)]
        current: bool,
    },
    Transcript {
        utterance: u64,
        text: String,
        transcribe_ms: u64,
        speculative: bool,
    },
    Token {
        reply: u64,
        text: String,
    },
    GenerationFinished {
        reply: u64,
        tokens: usize,
        cancelled: bool,
        first_token_ms: f64,
        total_ms: f64,
    },
    Synthesized {
        clause: u64,
        synth_ms: u64,
        audio_ms: u64,
    },
    PlaybackStarted {
        clause: u64,
    },
    PlaybackFinished {
        clause: u64,
    },
    /// Audible output stopped for a pause or a flush.
    PlaybackStopped {
        flushed: bool,
    },
    /// A command from outside (D-Bus), as received.
    Command {
        command: String,
    },
    State {
        #[serde(serialize_with = "state_name_ser")]
        from: State,
        #[serde(serialize_with = "state_name_ser")]
        to: State,
    },
    /// The user's words, accepted as a turn.
    UserTurn {
        text: String,
    },
    /// The user's utterance had no words.
    NothingHeard,
    /// Hark heard its name (`how`: "name"), in `mode = "name"`.
    WakeDetected {
        how: String,
    },
    /// Speech without Hark's name, outside the follow-up window, in
    /// `mode = "name"`: not answered.
    NotAddressed {
        text: String,
    },
    /// A clause of the reply, as it will be spoken.
    Clause {
        clause: u64,
        text: String,
    },
    /// The model gave nothing speakable; the fallback is spoken.
    FallbackReply,
    BargeInSuspected,
    BargeInDismissed {
        reason: Dismissal,
    },
    /// Hark was talked over; `spoken_part` is what the user heard.
    Interrupted {
        spoken_part: String,
        cause: String,
    },
    /// A reply ended; `text` is what was spoken. `endpoint_ms`: from the
    /// end of the user's speech to the decision that the turn was over.
    TurnFinished {
        reply: u64,
        endpoint_ms: Option<u64>,
        /// The user's words it answered (empty for `Say`).
        user_text: String,
        text: String,
        interrupted: bool,
        timings: TurnTimings,
        voice_to_voice_ms: Option<u64>,
    },
    Muted {
        muted: bool,
    },
    Mode {
        #[serde(serialize_with = "mode_name_ser")]
        mode: ListenMode,
    },
    /// A skill answered the user's words instead of the model; `answer`:
    /// what it says (`None`: nothing, the request is forgotten).
    Skill {
        transcript: String,
        answer: Option<String>,
    },
    /// The user spoke again after a pause.
    SpeechResumed {
        at_ms: u64,
    },
    /// Smart Turn judged a pause; `complete`: it ended the turn.
    /// `unfinished_words`: whether the pause's transcript stopped where a
    /// request cannot, when it was read (`[turn] read_words`); `true` kept
    /// the turn open against a "complete".
    TurnJudged {
        speech_end_ms: u64,
        probability: f32,
        inference_ms: u64,
        complete: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        unfinished_words: Option<bool>,
    },
    /// A reply is being prepared for the pause after `speech_end_ms`
    /// (nothing plays until the turn is judged over).
    ReplyPrepared {
        speech_end_ms: u64,
        text: String,
    },
    /// The prepared reply became `reply`'s, with `tokens` already written.
    ReplyAdopted {
        reply: u64,
        tokens: usize,
        first_clause_ready: bool,
    },
    /// The prepared reply was not wanted (the user went on): forgotten.
    ReplyDropped {
        speech_end_ms: u64,
        tokens: usize,
    },
    /// The model called a tool while answering.
    ToolCall {
        name: String,
        arguments: String,
        result: String,
    },
    /// The timers running now (after any change).
    Timers {
        timers: Vec<hark_skills::Timer>,
    },
    /// A timer went off.
    TimerFired {
        id: String,
        label: String,
    },
    /// The history when the session ended.
    History {
        turns: Vec<HistoryTurn>,
    },
}

/// A history turn as the log writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryTurn {
    pub role: &'static str,
    pub text: String,
    pub at_ms: u64,
    pub interrupted: bool,
}

impl From<&Turn> for HistoryTurn {
    fn from(turn: &Turn) -> Self {
        Self {
            role: role_name(turn.role),
            text: turn.text.clone(),
            at_ms: turn.at_ms,
            interrupted: turn.interrupted,
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

/// The name the event log and D-Bus use for a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn state_name_ser<S: serde::Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state_name(*state))
}

fn mode_name_ser<S: serde::Serializer>(mode: &ListenMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode.name())
}

/// Sees every event, on the core's thread: keep it quick (hand slow work
/// to another thread).
pub trait Subscriber: Send {
    /// `t_ms`: when, on the input timeline.
    fn event(&mut self, t_ms: u64, event: &SessionEvent);
    /// The session is over: write out anything buffered.
    fn finish(&mut self) {}
}

impl<F: FnMut(u64, &SessionEvent) + Send> Subscriber for F {
    fn event(&mut self, t_ms: u64, event: &SessionEvent) {
        self(t_ms, event)
    }
}

/// `--events FILE`: one JSON object per line, `{"t_ms": …, "event": "…",
/// …}`, with `t_ms` on the input timeline (ms since the first input frame).
pub struct EventLog {
    out: BufWriter<File>,
    failed: bool,
}

impl EventLog {
    pub fn create(path: &Path) -> Result<Self, SessionError> {
        // What was said is private: readable by its owner only.
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| SessionError::EventLog {
                path: path.to_owned(),
                source,
            })?;
        // A file that was there keeps its mode through `open`.
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
        Ok(Self {
            out: BufWriter::new(file),
            failed: false,
        })
    }
}

/// `{"t_ms": t_ms, "event": name, ...fields}` as one line of JSON.
pub fn event_line(t_ms: u64, event: &SessionEvent) -> String {
    // An internally tagged enum always serialises as an object that starts
    // with its tag, so the time goes in front of it.
    let json = serde_json::to_string(event).expect("events serialise");
    format!("{{\"t_ms\":{t_ms},{}", &json[1..])
}

impl Subscriber for EventLog {
    fn event(&mut self, t_ms: u64, event: &SessionEvent) {
        if self.failed {
            return;
        }
        let line = event_line(t_ms, event);
        // Flushed per line: a reader (a test, `tail -f`) sees it at once.
        let written = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        if let Err(e) = written {
            tracing::error!("cannot write the event log: {e}; further events are lost");
            self.failed = true;
        }
    }

    fn finish(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_log_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(EventLog::create(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn events_serialise_as_log_lines() {
        let line = event_line(
            12,
            &SessionEvent::State {
                from: State::Listening,
                to: State::UserSpeaking,
            },
        );
        assert_eq!(
            line,
            r#"{"t_ms":12,"event":"state","from":"listening","to":"user-speaking"}"#
        );
        let line = event_line(
            5,
            &SessionEvent::SpeechStarted {
                at_ms: 3,
                muted: true,
            },
        );
        assert_eq!(line, r#"{"t_ms":5,"event":"speech_started","at_ms":3}"#);
        assert_eq!(
            event_line(0, &SessionEvent::Listening),
            r#"{"t_ms":0,"event":"listening"}"#
        );
        let line = event_line(
            1,
            &SessionEvent::Mode {
                mode: ListenMode::PushToTalk,
            },
        );
        assert_eq!(line, r#"{"t_ms":1,"event":"mode","mode":"push-to-talk"}"#);
    }

    #[test]
    fn the_log_writes_a_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = EventLog::create(&path).unwrap();
        log.event(1, &SessionEvent::Listening);
        log.event(
            2,
            &SessionEvent::UserTurn {
                text: "hello".into(),
            },
        );
        log.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"t_ms\":1,\"event\":\"listening\"}\n{\"t_ms\":2,\"event\":\"user_turn\",\"text\":\"hello\"}\n"
        );
        let e = EventLog::create(&dir.path().join("no/such/dir/x"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no/such/dir/x"), "{e}");
    }
}
