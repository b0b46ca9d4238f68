//! The core loop on scripted timelines: fake workers record what the core
//! asks of them, the test answers as the real ones would, at times it
//! chooses on a manual clock. No threads, no devices, no models.

use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hark_converse::turn::{Conversation, TurnConfig};
use hark_llm::{CancelHandle, ChatMessage, Generation, LlmError, LlmEvent};
use hark_stt::{SttJob, SttPurpose, SttResult};
use hark_tts::Synthesized;

use super::*;
use crate::clock::{ManualClock, Timeline};
use crate::events::SessionEvent;
use crate::hearing::HearingEvent;
use crate::input::InputChange;
use crate::speaker::{PlaybackReport, SpeakerCommand};
use crate::workers::{
    ClauseSynthesizer, Refused, ReplyWriter, SpeakerControl, Transcriber, Workers,
};

/// What the core asked of a worker.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Transcribe {
        utterance: u64,
        purpose: SttPurpose,
    },
    Generate {
        reply: u64,
        history: Vec<ChatMessage>,
    },
    Synthesize {
        clause: u64,
        text: String,
    },
    CancelSynthesis,
    Play {
        clause: u64,
        samples: usize,
    },
    Pause,
    Resume,
    Flush,
    Chime,
    Gain(f32),
}

type Calls = Arc<Mutex<Vec<Call>>>;

struct FakeStt(Calls);
impl Transcriber for FakeStt {
    fn submit(&mut self, job: SttJob) -> Result<(), Refused> {
        self.0.lock().unwrap().push(Call::Transcribe {
            utterance: job.utterance,
            purpose: job.purpose,
        });
        Ok(())
    }
}

/// What the model was asked to read ahead, and the handle that stops it.
type ReadAhead = (Vec<ChatMessage>, String, CancelHandle);

/// Each engine's pauses and resumes, in order ("llm", true)...
type Pauses = Arc<Mutex<Vec<(&'static str, bool)>>>;

struct FakeLlm(
    Calls,
    Arc<Mutex<Vec<CancelHandle>>>,
    Arc<Mutex<Vec<ReadAhead>>>,
    Pauses,
);
impl ReplyWriter for FakeLlm {
    fn start(&mut self, reply: u64, history: Vec<ChatMessage>) -> Result<CancelHandle, LlmError> {
        self.0
            .lock()
            .unwrap()
            .push(Call::Generate { reply, history });
        let cancel = CancelHandle::default();
        self.1.lock().unwrap().push(cancel.clone());
        Ok(cancel)
    }

    fn warm(&mut self, history: Vec<ChatMessage>, unfinished: String) -> Option<CancelHandle> {
        let cancel = CancelHandle::default();
        self.2
            .lock()
            .unwrap()
            .push((history, unfinished, cancel.clone()));
        Some(cancel)
    }

    fn pause(&mut self, paused: bool) {
        self.3.lock().unwrap().push(("llm", paused));
    }
}

struct FakeVoice(Calls, Pauses);
impl ClauseSynthesizer for FakeVoice {
    fn synthesize(&mut self, clause: u64, text: String) -> Result<(), Refused> {
        self.0
            .lock()
            .unwrap()
            .push(Call::Synthesize { clause, text });
        Ok(())
    }
    fn cancel(&mut self) {
        self.0.lock().unwrap().push(Call::CancelSynthesis);
    }
    fn pause(&mut self, paused: bool) {
        self.1.lock().unwrap().push(("voice", paused));
    }
}

struct FakeSpeaker(Calls);
impl SpeakerControl for FakeSpeaker {
    fn send(&mut self, command: SpeakerCommand) {
        let call = match command {
            SpeakerCommand::Play { clause, pcm } => Call::Play {
                clause,
                samples: pcm.len(),
            },
            SpeakerCommand::Pause => Call::Pause,
            SpeakerCommand::Resume => Call::Resume,
            SpeakerCommand::Flush => Call::Flush,
            SpeakerCommand::Chime(_) => Call::Chime,
            SpeakerCommand::SetGain(gain) => Call::Gain(gain),
        };
        self.0.lock().unwrap().push(call);
    }
    fn rate(&self) -> u32 {
        16_000
    }
}

/// A core on a manual clock, its fakes and everything it reported.
struct Rig {
    core: Core,
    clock: Arc<ManualClock>,
    calls: Calls,
    cancels: Arc<Mutex<Vec<CancelHandle>>>,
    read_aheads: Arc<Mutex<Vec<ReadAhead>>>,
    pauses: Pauses,
    events: Arc<Mutex<Vec<(u64, SessionEvent)>>>,
    rules: StopRules,
}

impl Rig {
    fn new() -> Self {
        Self::with(TurnConfig::default())
    }

    fn with(turn: TurnConfig) -> Self {
        let calls: Calls = Arc::default();
        let cancels = Arc::default();
        let read_aheads = Arc::default();
        let pauses: Pauses = Arc::default();
        let workers = Workers {
            stt: Box::new(FakeStt(calls.clone())),
            llm: Box::new(FakeLlm(
                calls.clone(),
                Arc::clone(&cancels),
                Arc::clone(&read_aheads),
                pauses.clone(),
            )),
            voice: Box::new(FakeVoice(calls.clone(), pauses.clone())),
            speaker: Box::new(FakeSpeaker(calls.clone())),
        };
        let base = Instant::now();
        let clock = Arc::new(ManualClock::new(base));
        let origin = Arc::new(OnceLock::new());
        origin.set(base).unwrap();
        let (_inbox, inputs) = sync_channel(1);
        let mut core = Core::new(
            Conversation::new(turn),
            inputs,
            workers,
            Timeline::new(clock.clone(), origin),
        );
        let events: Arc<Mutex<Vec<(u64, SessionEvent)>>> = Arc::default();
        let seen = events.clone();
        core.subscribe(Box::new(move |t: u64, e: &SessionEvent| {
            seen.lock().unwrap().push((t, e.clone()))
        }));
        Self {
            core,
            clock,
            calls,
            cancels,
            read_aheads,
            pauses,
            events,
            rules: StopRules::default(),
        }
    }

    /// Delivers `input` at `ms` on the timeline (`None`: a tick).
    fn at(&mut self, ms: u64, input: Option<CoreInput>) -> Flow {
        self.clock.set_ms(ms);
        self.core
            .step(input, &self.rules)
            .expect("the core goes on")
    }

    fn hear(&mut self, ms: u64, event: HearingEvent) {
        self.at(ms, Some(CoreInput::Hearing(event)));
    }

    /// Ticks every 20 ms up to `ms`.
    fn tick_until(&mut self, ms: u64) {
        let mut t = self.clock.elapsed_ms();
        while t < ms {
            t = (t + 20).min(ms);
            self.at(t, None);
        }
    }

    /// The user speaks from `from` to `to` (ms); the VAD reports the end
    /// 300 ms later. Returns the utterance the core asked Whisper for.
    fn user_speaks(&mut self, from: u64, to: u64) -> Option<u64> {
        self.user_speaks_at(from, to, 0.0)
    }

    /// Speech whose samples all have `amplitude` (a level for the judge
    /// of `[wake] addressee`).
    fn user_speaks_at(&mut self, from: u64, to: u64, amplitude: f32) -> Option<u64> {
        self.hear(from, HearingEvent::SpeechStarted { at_ms: from });
        self.tick_until(to + 300);
        self.hear(
            to + 300,
            HearingEvent::SpeechEnded {
                start_ms: from,
                at_ms: to,
                audio: vec![amplitude; ((to - from) * 16) as usize],
            },
        );
        self.take_calls().into_iter().find_map(|c| match c {
            Call::Transcribe {
                utterance,
                purpose: SttPurpose::Final,
            } => Some(utterance),
            _ => None,
        })
    }

    fn transcribed(&mut self, ms: u64, utterance: u64, text: &str) {
        self.at(
            ms,
            Some(CoreInput::Transcribed(SttResult {
                utterance,
                purpose: SttPurpose::Final,
                text: text.into(),
                error: None,
                notice: None,
                transcribe_ms: 100,
            })),
        );
    }

    /// The model writes `tokens` at `ms` and finishes.
    fn reply(&mut self, ms: u64, reply: u64, tokens: &[&str]) {
        self.tokens(ms, reply, tokens);
        self.at(
            ms,
            Some(CoreInput::Llm {
                reply,
                event: LlmEvent::Done(Generation::default()),
            }),
        );
    }

    /// The model writes `tokens` at `ms` and goes on writing.
    fn tokens(&mut self, ms: u64, reply: u64, tokens: &[&str]) {
        for token in tokens {
            self.at(
                ms,
                Some(CoreInput::Llm {
                    reply,
                    event: LlmEvent::Token((*token).into()),
                }),
            );
        }
    }

    /// Synthesizes every clause asked for so far as `secs` of audio each.
    fn synthesize_all(&mut self, ms: u64, secs: f32) -> Vec<(u64, String)> {
        let clauses: Vec<(u64, String)> = self
            .take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Synthesize { clause, text } => Some((clause, text)),
                _ => None,
            })
            .collect();
        for (clause, _) in &clauses {
            self.at(
                ms,
                Some(CoreInput::Synthesized(Synthesized {
                    clause: *clause,
                    audio: Ok(vec![0.1; (secs * 16_000.0) as usize]),
                    rate: 16_000,
                    synth_ms: 50,
                    notice: None,
                })),
            );
        }
        clauses
    }

    fn playback(&mut self, ms: u64, report: PlaybackReport) {
        self.at(ms, Some(CoreInput::Playback(report)));
    }

    /// The speaker plays `clause` from `ms` for `len_ms`.
    fn play_through(&mut self, ms: u64, clause: u64, len_ms: u64) {
        self.playback(ms, PlaybackReport::Started { clause });
        self.playback(ms + len_ms, PlaybackReport::Finished { clause });
    }

    fn command(&mut self, ms: u64, command: Command) {
        self.at(ms, Some(CoreInput::Command(command)));
    }

    /// The utterance the core last asked Whisper for, among the calls
    /// taken.
    fn transcription_asked(&self) -> Option<u64> {
        self.take_calls().into_iter().find_map(|c| match c {
            Call::Transcribe { utterance, .. } => Some(utterance),
            _ => None,
        })
    }

    fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn events(&self) -> Vec<SessionEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn finished_turns(&self) -> Vec<(String, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::TurnFinished {
                    text, interrupted, ..
                } => Some((text, interrupted)),
                _ => None,
            })
            .collect()
    }

    fn history(&self) -> Vec<(Role, String, bool)> {
        self.core
            .conversation
            .history()
            .iter()
            .map(|t| (t.role, t.text.clone(), t.interrupted))
            .collect()
    }

    /// The user asks `question` (speech 1.0–2.0 s after `t0`) and the model
    /// starts answering: returns the reply id.
    fn question(&mut self, t0: u64, question: &str) -> u64 {
        let utterance = self
            .user_speaks(t0 + 1000, t0 + 2000)
            .expect("the utterance is transcribed");
        self.transcribed(t0 + 2400, utterance, question);
        match self.take_calls().as_slice() {
            [Call::Generate { reply, history }] => {
                assert_eq!(history.last(), Some(&ChatMessage::user(question)));
                *reply
            }
            other => panic!("expected one generation, got {other:?}"),
        }
    }
}

const ANSWER: [&str; 4] = [
    "The capital of France is Paris,",
    " a city on the river Seine.",
    " It is known for the Eiffel Tower",
    " and for its museums.",
];

#[test]
fn a_full_turn_from_speech_to_the_last_clause_heard() {
    let mut rig = Rig::new();
    let reply = rig.question(0, "What is the capital of France?");
    rig.reply(2700, reply, &ANSWER);
    let clauses = rig.synthesize_all(2800, 1.0);
    assert!(clauses.len() >= 2, "{clauses:?}");
    let spoken: String = clauses
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(spoken, ANSWER.concat().trim());
    // Every clause is queued on the speaker in order, at its length.
    let plays: Vec<Call> = rig.take_calls();
    let expected: Vec<Call> = clauses
        .iter()
        .map(|(clause, _)| Call::Play {
            clause: *clause,
            samples: 16_000,
        })
        .collect();
    assert_eq!(plays, expected);

    for (k, (clause, _)) in clauses.iter().enumerate() {
        rig.play_through(2900 + 1000 * k as u64, *clause, 1000);
    }
    assert_eq!(
        rig.finished_turns(),
        [(ANSWER.concat().trim().to_owned(), false)]
    );
    assert_eq!(
        rig.history(),
        [
            (Role::User, "What is the capital of France?".into(), false),
            (Role::Assistant, ANSWER.concat().trim().to_owned(), false),
        ]
    );
    let events = rig.events();
    let timings = events
        .iter()
        .find_map(|e| match e {
            SessionEvent::TurnFinished {
                timings,
                voice_to_voice_ms,
                user_text,
                ..
            } => Some((timings.clone(), *voice_to_voice_ms, user_text.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(timings.0.speech_ended_ms, Some(2000));
    assert_eq!(timings.1, Some(900), "end of speech 2.0 s, voice at 2.9 s");
    assert_eq!(timings.2, "What is the capital of France?");
    // The states a client sees, in order.
    let states: Vec<&'static str> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::State { to, .. } => Some(crate::events::state_name(*to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        ["user-speaking", "thinking", "speaking", "listening"]
    );
    assert!(events.contains(&SessionEvent::UserTurn {
        text: "What is the capital of France?".into()
    }));
}

#[test]
fn a_barge_in_stops_hark_and_history_keeps_only_what_was_heard() {
    let mut rig = Rig::new();
    let reply = rig.question(0, "What is the capital of France?");
    // The model is still writing when the user cuts in.
    rig.tokens(2700, reply, &ANSWER[..3]);
    let clauses = rig.synthesize_all(2800, 2.0);
    rig.take_calls();
    let (first, first_text) = clauses[0].clone();
    rig.playback(2900, PlaybackReport::Started { clause: first });
    rig.playback(
        3900,
        PlaybackReport::Progress {
            clause: first,
            played_fraction: 0.5,
        },
    );
    // The user talks over Hark: it pauses at once, and so do the model
    // and the voice, leaving the cores to Whisper...
    rig.hear(3950, HearingEvent::SpeechStarted { at_ms: 3900 });
    assert_eq!(rig.take_calls(), [Call::Pause]);
    assert_eq!(
        *rig.pauses.lock().unwrap(),
        [("llm", true), ("voice", true)]
    );
    // Whisper is asked what the speech so far says, and finds words...
    rig.hear(
        4700,
        HearingEvent::SpeechSoFar {
            audio: vec![0.0; 16_000],
        },
    );
    assert_eq!(
        rig.take_calls(),
        [Call::Transcribe {
            utterance: 0,
            purpose: SttPurpose::Partial
        }]
    );
    partial_transcribed(&mut rig, 4800, "Wait, that is");
    // ...so Hark stops for good once the speech has lasted commit_speech_ms.
    rig.tick_until(5000);
    let calls = rig.take_calls();
    assert_eq!(calls, [Call::Flush]);
    // (Nothing is left to pause: the engines are free again.)
    assert_eq!(
        rig.pauses.lock().unwrap()[2..],
        [("llm", false), ("voice", false)]
    );
    assert!(
        rig.cancels.lock().unwrap()[0].is_cancelled(),
        "the generation is cancelled"
    );
    let spoken_part = rig
        .events()
        .into_iter()
        .find_map(|e| match e {
            SessionEvent::Interrupted { spoken_part, .. } => Some(spoken_part),
            _ => None,
        })
        .expect("interrupted");
    assert!(!spoken_part.is_empty());
    assert!(
        first_text.starts_with(&spoken_part),
        "{spoken_part:?} of {first_text:?}"
    );
    assert!(spoken_part.len() < first_text.len());
    // The user finishes; their words are the next turn, answered with a
    // history that holds only the heard part of the reply, marked.
    rig.tick_until(5600);
    rig.hear(
        5900,
        HearingEvent::SpeechEnded {
            start_ms: 3900,
            at_ms: 5600,
            audio: vec![0.0; 16_000],
        },
    );
    let utterance = rig
        .transcription_asked()
        .expect("the interruption is transcribed");
    rig.transcribed(6000, utterance, "Wait, what about Germany?");
    let history = match rig.take_calls().as_slice() {
        [Call::Generate { history, .. }] => history.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        history[1],
        ChatMessage::assistant(format!("{spoken_part}{}", hark_llm::INTERRUPTED_MARKER))
    );
    assert_eq!(rig.history()[1], (Role::Assistant, spoken_part, true));
    assert_eq!(rig.core.outcome.interruptions, 1);
}

#[test]
fn a_false_barge_in_resumes_playback() {
    let mut rig = Rig::new();
    let reply = rig.question(0, "Tell me about Paris.");
    rig.reply(2700, reply, &ANSWER);
    let clauses = rig.synthesize_all(2800, 1.0);
    rig.take_calls();
    let (first, _) = clauses[0];
    rig.playback(2900, PlaybackReport::Started { clause: first });
    // A cough: 150 ms of "speech" over Hark.
    rig.hear(3300, HearingEvent::SpeechStarted { at_ms: 3300 });
    rig.tick_until(3450);
    rig.hear(
        3750,
        HearingEvent::SpeechEnded {
            start_ms: 3300,
            at_ms: 3450,
            audio: vec![0.0; 2400],
        },
    );
    let calls = rig.take_calls();
    assert_eq!(calls.first(), Some(&Call::Pause), "{calls:?}");
    assert!(calls.contains(&Call::Resume), "{calls:?}");
    assert!(!calls.contains(&Call::Flush), "{calls:?}");
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Transcribe { .. })),
        "too short to transcribe: {calls:?}"
    );
    // The model and the voice waited while it was judged, and go on.
    assert_eq!(
        *rig.pauses.lock().unwrap(),
        [
            ("llm", true),
            ("voice", true),
            ("llm", false),
            ("voice", false)
        ]
    );
    assert!(rig.events().iter().any(|e| matches!(
        e,
        SessionEvent::BargeInDismissed {
            reason: hark_converse::turn::Dismissal::TooShort { .. }
        }
    )));
    let mut t = 3800;
    for (clause, _) in &clauses {
        if *clause != first {
            rig.playback(t, PlaybackReport::Started { clause: *clause });
        }
        t += 1000;
        rig.playback(t, PlaybackReport::Finished { clause: *clause });
    }
    assert_eq!(
        rig.finished_turns(),
        [(ANSWER.concat().trim().to_owned(), false)]
    );
    assert_eq!(rig.core.outcome.interruptions, 0);
}

#[test]
fn modes_decide_whether_speech_is_heard() {
    let mut rig = Rig::new();
    rig.command(10, Command::SetMode(ListenMode::PushToTalk));
    let events = rig.events();
    assert!(events.contains(&SessionEvent::Mode {
        mode: ListenMode::PushToTalk
    }));
    assert!(events.contains(&SessionEvent::State {
        from: State::Listening,
        to: State::Idle
    }));
    // Not held: speech is reported as muted and never transcribed.
    assert_eq!(rig.user_speaks(1000, 2000), None);
    assert!(rig.events().contains(&SessionEvent::SpeechStarted {
        at_ms: 1000,
        muted: true
    }));
    // Held: heard.
    rig.command(3000, Command::Listen(true));
    assert!(rig.user_speaks(4000, 5000).is_some());
    rig.command(6000, Command::Listen(false));
    assert_eq!(rig.user_speaks(7000, 8000), None);
    // Back to always; a mute on top silences it until unmuted.
    rig.command(9000, Command::SetMode(ListenMode::Always));
    rig.command(9010, Command::SetMuted(true));
    assert_eq!(rig.user_speaks(10_000, 11_000), None);
    rig.command(12_000, Command::SetMuted(false));
    assert!(rig.user_speaks(13_000, 14_000).is_some());
    assert!(rig.events().contains(&SessionEvent::Muted { muted: true }));
    // A reload that keeps the mode does not report it again.
    let modes = |rig: &Rig| {
        rig.events()
            .iter()
            .filter(|e| matches!(e, SessionEvent::Mode { .. }))
            .count()
    };
    let before = modes(&rig);
    rig.command(
        15_000,
        Command::Reconfigure {
            turn: TurnConfig::default(),
            mode: Some(ListenMode::Always),
            wake: Default::default(),
        },
    );
    assert_eq!(modes(&rig), before);
}

#[test]
fn a_missing_speaker_is_reported_and_the_conversation_goes_on() {
    let mut rig = Rig::new();
    let why = "no speaker (default): connection refused; replies go out as text only";
    rig.playback(
        100,
        PlaybackReport::OutputChanged {
            output: "none".into(),
            problem: Some(why.into()),
        },
    );
    let events = rig.events();
    assert!(events.contains(&SessionEvent::OutputChanged {
        output: "none".into(),
        problem: Some(why.into())
    }));
    assert!(events.contains(&SessionEvent::Error {
        code: "audio-output",
        message: why.into()
    }));
    let reply = rig.question(1000, "Are you there?");
    assert!(reply > 0);
    // And when it comes back, only the change is news.
    let errors = |rig: &Rig| {
        rig.events()
            .iter()
            .filter(|e| matches!(e, SessionEvent::Error { .. }))
            .count()
    };
    let before = errors(&rig);
    rig.playback(
        9000,
        PlaybackReport::OutputChanged {
            output: "default".into(),
            problem: None,
        },
    );
    assert_eq!(errors(&rig), before);
}

#[test]
fn a_lost_microphone_is_reported_and_the_conversation_goes_on() {
    let mut rig = Rig::new();
    rig.hear(
        100,
        HearingEvent::InputChanged(InputChange {
            name: "none".into(),
            problem: Some("audio capture device 'usb' not found".into()),
        }),
    );
    let events = rig.events();
    assert!(events.contains(&SessionEvent::InputChanged {
        input: "none".into(),
        problem: Some("audio capture device 'usb' not found".into())
    }));
    assert!(events.contains(&SessionEvent::Error {
        code: "audio-input",
        message: "audio capture device 'usb' not found".into()
    }));
    // It still answers.
    let reply = rig.question(1000, "Are you there?");
    assert!(reply > 0);
}

#[test]
fn a_failed_speaker_or_input_ends_the_session_naming_it() {
    let mut rig = Rig::new();
    rig.clock.set_ms(100);
    let err = rig
        .core
        .step(
            Some(CoreInput::Playback(PlaybackReport::Failed(
                "audio device 'default': stream closed".into(),
            ))),
            &StopRules::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "playback failed: audio device 'default': stream closed"
    );
    assert!(rig.events().contains(&SessionEvent::Error {
        code: "audio-output",
        message: "audio device 'default': stream closed".into()
    }));
    let err = rig
        .core
        .step(
            Some(CoreInput::Hearing(HearingEvent::Failed(
                "reading audio: gone".into(),
            ))),
            &StopRules::default(),
        )
        .unwrap_err();
    assert!(matches!(err, SessionError::Input(m) if m == "reading audio: gone"));
}

#[test]
fn failing_workers_cost_one_turn_and_say_why() {
    let mut rig = Rig::new();
    let reply = rig.question(0, "Hello?");
    rig.at(
        2600,
        Some(CoreInput::Llm {
            reply,
            event: LlmEvent::Error("the model crashed".into()),
        }),
    );
    let events = rig.events();
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::Error { code: "llm", message } if message.contains("the model crashed")
    )));
    // Nothing speakable: the fallback reply is spoken instead.
    assert!(events.contains(&SessionEvent::FallbackReply));
    let clauses = rig.synthesize_all(2700, 0.5);
    let spoken: Vec<&str> = clauses.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(spoken.join(" "), TurnConfig::default().fallback_reply);
    for (k, (clause, _)) in clauses.iter().enumerate() {
        rig.play_through(2800 + 500 * k as u64, *clause, 500);
    }
    assert_eq!(rig.finished_turns().len(), 1);
    // A voice failure skips the clause and says so.
    let reply = rig.question(10_000, "Again?");
    rig.reply(12_600, reply, &["Yes, I am here."]);
    let clause = match rig.take_calls().as_slice() {
        [.., Call::Synthesize { clause, .. }] => *clause,
        other => panic!("{other:?}"),
    };
    rig.at(
        12_700,
        Some(CoreInput::Synthesized(Synthesized {
            clause,
            audio: Err("Piper inference failed".into()),
            rate: 16_000,
            synth_ms: 5,
            notice: None,
        })),
    );
    assert!(rig.events().iter().any(|e| matches!(
        e,
        SessionEvent::Error { code: "voice", message } if message.contains("Piper inference failed")
    )));
    // Whisper failing on what the user said: an apology, not silence.
    let utterance = rig
        .user_speaks(20_000, 21_500)
        .expect("a transcription asked for");
    rig.at(
        22_000,
        Some(CoreInput::Transcribed(SttResult {
            utterance,
            purpose: SttPurpose::Final,
            text: String::new(),
            error: Some("the stt engine panicked".into()),
            notice: None,
            transcribe_ms: 5,
        })),
    );
    assert!(rig.events().iter().any(|e| matches!(
        e,
        SessionEvent::Error { code: "speech-to-text", message } if message.contains("panicked")
    )));
    let spoken: Vec<String> = rig
        .synthesize_all(22_100, 0.5)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(spoken.join(" "), UNHEARD_REPLY);
}

#[test]
fn ask_is_answered_with_what_was_spoken_and_stop_waits_for_quiet() {
    let mut rig = Rig::new();
    let answer: Arc<Mutex<Option<String>>> = Arc::default();
    let slot = answer.clone();
    rig.command(
        100,
        Command::Ask {
            text: "What do bees make?".into(),
            reply: Some(Reply::new(move |text| *slot.lock().unwrap() = Some(text))),
        },
    );
    let reply = match rig.take_calls().as_slice() {
        [Call::Generate { reply, .. }] => *reply,
        other => panic!("{other:?}"),
    };
    rig.reply(300, reply, &["Bees make honey."]);
    let clauses = rig.synthesize_all(400, 1.0);
    // Asked to stop mid-reply: the reply finishes first.
    assert_eq!(
        rig.at(450, Some(CoreInput::Command(Command::Stop))),
        Flow::Continue
    );
    rig.playback(
        500,
        PlaybackReport::Started {
            clause: clauses[0].0,
        },
    );
    assert!(answer.lock().unwrap().is_none());
    let flow = rig.at(
        1500,
        Some(CoreInput::Playback(PlaybackReport::Finished {
            clause: clauses[0].0,
        })),
    );
    assert_eq!(answer.lock().unwrap().as_deref(), Some("Bees make honey."));
    assert_eq!(flow, Flow::Stop);
}

#[test]
fn the_input_ending_closes_the_session_after_hark_falls_quiet() {
    let mut rig = Rig::new();
    rig.rules = StopRules {
        max_turns: None,
        duration: None,
    };
    rig.hear(1000, HearingEvent::Ended);
    assert_eq!(rig.at(1500, None), Flow::Continue);
    assert_eq!(rig.at(1700, None), Flow::Continue);
    assert_eq!(rig.at(1900, None), Flow::Stop, "lingered 800 ms");
    assert!(rig.events().contains(&SessionEvent::InputEnded));
}

#[test]
fn the_heartbeat_beats_on_the_clock_while_the_loop_runs() {
    let mut rig = Rig::new();
    let beats = Arc::new(Mutex::new(0));
    let counted = beats.clone();
    rig.core.set_heartbeat(Heartbeat {
        every: Duration::from_millis(1000),
        beat: Box::new(move || *counted.lock().unwrap() += 1),
    });
    rig.tick_until(3500);
    assert_eq!(*beats.lock().unwrap(), 3);
}

#[test]
fn get_history_answers_with_wall_clock_times() {
    let mut rig = Rig::new();
    let reply = rig.question(0, "Hi.");
    rig.reply(2600, reply, &["Hello."]);
    let clauses = rig.synthesize_all(2700, 0.5);
    rig.play_through(2800, clauses[0].0, 500);
    let got: Arc<Mutex<Vec<HistoryEntry>>> = Arc::default();
    let slot = got.clone();
    rig.command(
        5000,
        Command::GetHistory(Reply::new(move |h| *slot.lock().unwrap() = h)),
    );
    let history = got.lock().unwrap().clone();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].turn.text, "Hi.");
    // The manual clock's Unix time is 1 000 000 ms plus the timeline.
    let unix_now = 1_000_000 + 5000;
    assert_eq!(
        history[1].unix_ms,
        unix_now - (5000 - history[1].turn.at_ms)
    );
    rig.command(5100, Command::ClearHistory);
    assert!(rig.history().is_empty());
}

/// A rig whose skills answer first, on a UTC clock.
fn with_skills() -> Rig {
    let mut rig = Rig::new();
    let (mut skills, _) = hark_skills::Skills::new(hark_skills::SkillsConfig::default(), None);
    skills.set_time_zone(jiff::tz::TimeZone::UTC);
    rig.core.set_skills(skills);
    rig
}

/// The user says `text` (speech 1–2 s after `t0`); what the core asked.
fn say_to(rig: &mut Rig, t0: u64, text: &str) -> Vec<Call> {
    let utterance = rig.user_speaks(t0 + 1000, t0 + 2000).unwrap();
    rig.transcribed(t0 + 2400, utterance, text);
    rig.take_calls()
}

#[test]
fn a_skill_answers_without_the_model_and_goes_into_history() {
    let mut rig = with_skills();
    let calls = say_to(&mut rig, 0, "What time is it?");
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Generate { .. })),
        "{calls:?}"
    );
    let spoken: Vec<&str> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Synthesize { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    // The manual clock's Unix time is 1000 s after the epoch plus 2.4 s.
    // Spoken as the voice says it best.
    assert_eq!(spoken, ["It's 12 16 AM."]);
    assert!(rig.events().contains(&SessionEvent::Skill {
        transcript: "What time is it?".into(),
        answer: Some("It's 12:16 AM.".into())
    }));
    let clauses = rig.synthesize_all(2500, 0.5);
    assert!(clauses.is_empty(), "asked for already: {clauses:?}");
    rig.at(
        2500,
        Some(CoreInput::Synthesized(Synthesized {
            clause: 1,
            audio: Ok(vec![0.1; 8000]),
            rate: 16_000,
            synth_ms: 20,
            notice: None,
        })),
    );
    rig.play_through(2600, 1, 500);
    assert_eq!(
        rig.history(),
        [
            (Role::User, "What time is it?".into(), false),
            (Role::Assistant, "It's 12 16 AM.".into(), false)
        ]
    );
    // Anything else goes to the model unchanged.
    let calls = say_to(&mut rig, 10_000, "What is the capital of France?");
    assert!(
        calls.iter().any(|c| matches!(c, Call::Generate { .. })),
        "{calls:?}"
    );
}

#[test]
fn stop_said_over_hark_silences_it_and_is_forgotten() {
    let mut rig = with_skills();
    let reply = rig.question(0, "Tell me about Paris.");
    rig.tokens(2700, reply, &ANSWER[..2]);
    let clauses = rig.synthesize_all(2800, 2.0);
    rig.take_calls();
    rig.playback(
        2900,
        PlaybackReport::Started {
            clause: clauses[0].0,
        },
    );
    // "Stop." is one word, under barge_in.min_words, yet it stops Hark.
    rig.hear(3300, HearingEvent::SpeechStarted { at_ms: 3300 });
    rig.hear(
        3900,
        HearingEvent::SpeechEnded {
            start_ms: 3300,
            at_ms: 3700,
            audio: vec![0.0; 6400],
        },
    );
    let utterance = rig.transcription_asked().unwrap();
    rig.transcribed(4000, utterance, "Stop.");
    let calls = rig.take_calls();
    assert!(calls.contains(&Call::Flush), "{calls:?}");
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Generate { .. })),
        "{calls:?}"
    );
    assert!(rig.events().contains(&SessionEvent::Skill {
        transcript: "Stop.".into(),
        answer: None
    }));
    // Nothing of the reply was heard, and "stop" is forgotten: the
    // question stays, unanswered.
    assert_eq!(
        rig.history(),
        [(Role::User, "Tell me about Paris.".into(), false)]
    );
    assert_eq!(rig.core.conversation.state(), State::Listening);
}

#[test]
fn a_timer_set_over_dbus_goes_off_with_a_chime_even_while_muted() {
    let mut rig = with_skills();
    rig.command(10, Command::SetMuted(true));
    let got: Arc<Mutex<Option<Result<hark_skills::Timer, String>>>> = Arc::default();
    let slot = got.clone();
    rig.command(
        100,
        Command::SetTimer {
            seconds: 5,
            label: "tea".into(),
            reply: Reply::new(move |r| *slot.lock().unwrap() = Some(r)),
        },
    );
    let timer = got.lock().unwrap().take().unwrap().unwrap();
    assert_eq!(timer.label, "tea");
    assert!(rig
        .events()
        .iter()
        .any(|e| matches!(e, SessionEvent::Timers { timers } if timers.len() == 1)));
    rig.take_calls();
    rig.tick_until(5000);
    assert!(!rig
        .events()
        .iter()
        .any(|e| matches!(e, SessionEvent::TimerFired { .. })));
    rig.tick_until(5200);
    assert!(rig.events().contains(&SessionEvent::TimerFired {
        id: timer.id.clone(),
        label: "tea".into()
    }));
    let calls = rig.take_calls();
    assert_eq!(
        calls,
        [
            Call::Synthesize {
                clause: 1,
                text: "Your tea timer is done.".into()
            },
            Call::Chime
        ]
    );
    assert!(rig
        .events()
        .iter()
        .any(|e| matches!(e, SessionEvent::Timers { timers } if timers.is_empty())));
    // Cancelling an unknown timer says why.
    let got: Arc<Mutex<Option<Result<(), String>>>> = Arc::default();
    let slot = got.clone();
    rig.command(
        6000,
        Command::CancelTimer {
            id: timer.id,
            reply: Reply::new(move |r| *slot.lock().unwrap() = Some(r)),
        },
    );
    assert!(got.lock().unwrap().take().unwrap().is_err());
}

#[test]
fn louder_sets_the_speakers_gain() {
    let mut rig = with_skills();
    let calls = say_to(&mut rig, 0, "Louder, please.");
    assert!(
        calls.iter().any(|c| matches!(c, Call::Gain(g) if *g > 1.0)),
        "{calls:?}"
    );
}

/// The user pauses at `speech_end` (ms) after speaking from `from`: the
/// ears ask for a speculative transcript, Whisper answers `text` at `at`.
fn pause_transcribed(rig: &mut Rig, from: u64, speech_end: u64, at: u64, text: &str) {
    rig.hear(from, HearingEvent::SpeechStarted { at_ms: from });
    rig.tick_until(speech_end + 120);
    rig.hear(
        speech_end + 120,
        HearingEvent::SpeechPausing {
            speech_end_ms: speech_end,
            audio: vec![0.0; ((speech_end - from) * 16) as usize],
        },
    );
    assert!(
        rig.take_calls().iter().any(|c| matches!(
            c,
            Call::Transcribe {
                purpose: SttPurpose::Speculative { .. },
                ..
            }
        )),
        "the pause is transcribed on speculation"
    );
    rig.at(
        at,
        Some(CoreInput::Transcribed(SttResult {
            utterance: 0,
            purpose: SttPurpose::Speculative {
                speech_end_ms: speech_end,
            },
            text: text.into(),
            error: None,
            notice: None,
            transcribe_ms: 100,
        })),
    );
}

fn partial_transcribed(rig: &mut Rig, at: u64, text: &str) {
    rig.at(
        at,
        Some(CoreInput::Transcribed(SttResult {
            utterance: 0,
            purpose: SttPurpose::Partial,
            text: text.into(),
            error: None,
            notice: None,
            transcribe_ms: 80,
        })),
    );
}

#[test]
fn the_model_reads_ahead_between_turns_and_while_the_user_talks_but_gives_whisper_the_pause() {
    let mut rig = Rig::new();
    let utterance = rig.user_speaks(1000, 2000).unwrap();
    rig.transcribed(2400, utterance, "Hello there.");
    let reply = match rig.take_calls().as_slice() {
        [Call::Generate { reply, .. }] => *reply,
        other => panic!("expected a generation, got {other:?}"),
    };
    rig.reply(2500, reply, &["Hi."]);
    let clauses = rig.synthesize_all(2600, 0.5);
    rig.take_calls();
    assert!(
        rig.read_aheads.lock().unwrap().is_empty(),
        "not while answering"
    );
    rig.play_through(2700, clauses[0].0, 500);

    // The reply is over: the conversation so far is read ahead.
    let conversation = vec![
        ChatMessage::user("Hello there."),
        ChatMessage::assistant("Hi."),
    ];
    {
        let read = rig.read_aheads.lock().unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!((&read[0].0, read[0].1.as_str()), (&conversation, ""));
    }

    // While the user talks, so are their words so far.
    rig.hear(4000, HearingEvent::SpeechStarted { at_ms: 4000 });
    rig.tick_until(5000);
    partial_transcribed(&mut rig, 5080, "Tell me about the");
    let talking = {
        let read = rig.read_aheads.lock().unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(
            (&read[1].0, read[1].1.as_str()),
            (&conversation, "Tell me about the")
        );
        read[1].2.clone()
    };
    assert!(
        read_ahead_stopped(&rig, 0),
        "a newer read-ahead replaces it"
    );
    assert!(!talking.is_cancelled());

    // A pause: Whisper transcribes it, and the reading stops for it.
    rig.tick_until(5700);
    rig.hear(
        5700,
        HearingEvent::SpeechPausing {
            speech_end_ms: 5580,
            audio: vec![0.0; 1580 * 16],
        },
    );
    assert!(talking.is_cancelled(), "Whisper goes first");
    // A partial that arrives in the pause starts no more reading.
    partial_transcribed(&mut rig, 5750, "Tell me about the history");
    assert_eq!(rig.read_aheads.lock().unwrap().len(), 2);
}

fn read_ahead_stopped(rig: &Rig, index: usize) -> bool {
    rig.read_aheads.lock().unwrap()[index].2.is_cancelled()
}

#[test]
fn a_pause_transcribed_after_the_user_went_on_prepares_nothing() {
    let mut rig = Rig::new();
    rig.hear(1000, HearingEvent::SpeechStarted { at_ms: 1000 });
    rig.tick_until(1920);
    rig.hear(
        1920,
        HearingEvent::SpeechPausing {
            speech_end_ms: 1800,
            audio: vec![0.0; 800 * 16],
        },
    );
    rig.take_calls();
    rig.hear(2000, HearingEvent::SpeechResumed { at_ms: 2000 });
    // Whisper finishes the pause's transcript after the user went on.
    rig.at(
        2050,
        Some(CoreInput::Transcribed(SttResult {
            utterance: 0,
            purpose: SttPurpose::Speculative {
                speech_end_ms: 1800,
            },
            text: "What is the capital of".into(),
            error: None,
            notice: None,
            transcribe_ms: 250,
        })),
    );
    assert!(
        !rig.take_calls()
            .iter()
            .any(|c| matches!(c, Call::Generate { .. })),
        "no reply is prepared for a pause that is over"
    );
}

#[test]
fn a_pause_waits_for_its_end_while_whisper_still_has_the_last_pause() {
    let mut rig = Rig::new();
    let pausing = |end: u64| HearingEvent::SpeechPausing {
        speech_end_ms: end,
        audio: vec![0.0; 16_000],
    };
    let speculations = |rig: &Rig| -> Vec<u64> {
        rig.take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Transcribe {
                    purpose: SttPurpose::Speculative { speech_end_ms },
                    ..
                } => Some(speech_end_ms),
                _ => None,
            })
            .collect()
    };
    rig.hear(1000, HearingEvent::SpeechStarted { at_ms: 1000 });
    rig.hear(1920, pausing(1800));
    assert_eq!(speculations(&rig), [1800]);
    // Whisper is slow: the user goes on and pauses again before it answers.
    rig.hear(2000, HearingEvent::SpeechResumed { at_ms: 2000 });
    rig.hear(2720, pausing(2600));
    assert_eq!(speculations(&rig), [0u64; 0], "one speculation at a time");
    rig.at(
        2800,
        Some(CoreInput::Transcribed(SttResult {
            utterance: 0,
            purpose: SttPurpose::Speculative {
                speech_end_ms: 1800,
            },
            text: "I'd like".into(),
            error: None,
            notice: None,
            transcribe_ms: 900,
        })),
    );
    // Whisper is free again: the next pause is transcribed on speculation.
    rig.hear(2900, HearingEvent::SpeechResumed { at_ms: 2900 });
    rig.hear(3620, pausing(3500));
    assert_eq!(speculations(&rig), [3500]);
}

/// The provisional reply the core started on a pause.
fn prepared_reply(rig: &mut Rig, expected: &str) -> u64 {
    match rig.take_calls().as_slice() {
        [Call::Generate { reply, history }] => {
            assert!(*reply >= PROVISIONAL, "a provisional id: {reply}");
            assert_eq!(history.last(), Some(&ChatMessage::user(expected)));
            *reply
        }
        other => panic!("expected a prepared generation, got {other:?}"),
    }
}

#[test]
fn a_reply_prepared_in_a_pause_the_user_goes_on_from_leaves_no_trace() {
    let mut rig = Rig::new();
    pause_transcribed(&mut rig, 1000, 1800, 1950, "I'd like to know.");
    let provisional = prepared_reply(&mut rig, "I'd like to know.");
    rig.tokens(2000, provisional, &["Sure,", " what would", " you like?"]);
    // The first clause is synthesized ahead, under a provisional id.
    let first = match rig.take_calls().as_slice() {
        [Call::Synthesize { clause, text }] => {
            assert!(*clause >= PROVISIONAL);
            assert!(text.starts_with("Sure,"), "{text}");
            *clause
        }
        other => panic!("expected the first clause synthesized, got {other:?}"),
    };

    // The user goes on: the preparation is cancelled at once.
    rig.hear(2300, HearingEvent::SpeechResumed { at_ms: 2300 });
    assert!(rig.cancels.lock().unwrap()[0].is_cancelled());
    assert_eq!(rig.take_calls(), [Call::CancelSynthesis]);
    // What was in flight arrives late and is thrown away.
    rig.tokens(2350, provisional, &[" Anything"]);
    rig.at(
        2360,
        Some(CoreInput::Synthesized(Synthesized {
            clause: first,
            audio: Ok(vec![0.1; 16_000]),
            rate: 16_000,
            synth_ms: 50,
            notice: None,
        })),
    );
    rig.at(
        2370,
        Some(CoreInput::Llm {
            reply: provisional,
            event: LlmEvent::Done(Generation::default()),
        }),
    );
    assert_eq!(rig.take_calls(), [], "nothing plays, nothing more is asked");

    // The whole sentence is answered as a new reply.
    rig.tick_until(3300);
    rig.hear(
        3300,
        HearingEvent::SpeechEnded {
            start_ms: 1000,
            at_ms: 3000,
            audio: vec![0.0; 2000 * 16],
        },
    );
    let utterance = rig.transcription_asked().expect("transcribed");
    let sentence = "I'd like to know the capital of Spain.";
    rig.transcribed(3450, utterance, sentence);
    let reply = match rig.take_calls().as_slice() {
        [Call::Generate { reply, history }] => {
            assert!(*reply < PROVISIONAL);
            assert_eq!(history, &[ChatMessage::user(sentence)]);
            *reply
        }
        other => panic!("expected one generation, got {other:?}"),
    };
    rig.reply(3600, reply, &["Madrid."]);
    let clauses = rig.synthesize_all(3700, 0.5);
    assert_eq!(
        clauses.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["Madrid."]
    );
    rig.take_calls();
    rig.play_through(3750, clauses[0].0, 500);

    assert_eq!(
        rig.history(),
        [
            (Role::User, sentence.into(), false),
            (Role::Assistant, "Madrid.".into(), false),
        ]
    );
    let events = rig.events();
    let provisional_seen = events.iter().any(|e| match e {
        SessionEvent::Token { reply, .. } | SessionEvent::GenerationFinished { reply, .. } => {
            *reply >= PROVISIONAL
        }
        SessionEvent::Clause { text, .. } => text.starts_with("Sure"),
        SessionEvent::Synthesized { clause, .. } | SessionEvent::PlaybackStarted { clause } => {
            *clause >= PROVISIONAL
        }
        _ => false,
    });
    assert!(!provisional_seen, "{events:#?}");
    assert!(events.contains(&SessionEvent::ReplyDropped {
        speech_end_ms: 1800,
        tokens: 3
    }));
    assert_eq!(rig.finished_turns(), [("Madrid.".to_owned(), false)]);
}

#[test]
fn a_reply_prepared_in_the_pause_that_ends_the_turn_plays_at_once() {
    let mut rig = Rig::new();
    let question = "What is the capital of France?";
    pause_transcribed(&mut rig, 1000, 2000, 2200, question);
    let provisional = prepared_reply(&mut rig, question);
    rig.reply(2300, provisional, &ANSWER);
    let early = rig.synthesize_all(2400, 1.0);
    assert_eq!(
        early.len(),
        1,
        "only the first clause is prepared: {early:?}"
    );
    assert_eq!(rig.take_calls(), [], "nothing plays before the turn ends");

    // The turn ends at that pause: the machine's reply adopts the prepared
    // one, and its first clause plays without waiting for the model.
    rig.hear(
        2450,
        HearingEvent::SpeechEnded {
            start_ms: 1000,
            at_ms: 2000,
            audio: vec![0.0; 1000 * 16],
        },
    );
    let calls = rig.take_calls();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Generate { .. })),
        "no second generation: {calls:?}"
    );
    let first = calls
        .iter()
        .find_map(|c| match c {
            Call::Play {
                clause,
                samples: 16_000,
            } => Some(*clause),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the first clause is queued at once: {calls:?}"));
    // The rest of the reply is synthesized as usual.
    let rest: Vec<(u64, String)> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Synthesize { clause, text } => Some((*clause, text.clone())),
            _ => None,
        })
        .collect();
    assert!(!rest.is_empty(), "{calls:?}");
    for (clause, _) in &rest {
        rig.at(
            2455,
            Some(CoreInput::Synthesized(Synthesized {
                clause: *clause,
                audio: Ok(vec![0.1; 16_000]),
                rate: 16_000,
                synth_ms: 50,
                notice: None,
            })),
        );
    }
    let clauses: Vec<u64> = std::iter::once(first)
        .chain(rest.iter().map(|(c, _)| *c))
        .collect();
    for (k, clause) in clauses.iter().enumerate() {
        rig.play_through(2460 + 1000 * k as u64, *clause, 1000);
    }
    assert_eq!(
        rig.history(),
        [
            (Role::User, question.into(), false),
            (Role::Assistant, ANSWER.concat().trim().to_owned(), false),
        ]
    );
    let events = rig.events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            SessionEvent::ReplyAdopted {
                first_clause_ready: true,
                ..
            }
        )),
        "{events:#?}"
    );
    let logged: String = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Token { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        logged,
        ANSWER.concat(),
        "the adopted reply's tokens are logged"
    );
    let v2v = events.iter().find_map(|e| match e {
        SessionEvent::TurnFinished {
            voice_to_voice_ms, ..
        } => *voice_to_voice_ms,
        _ => None,
    });
    assert_eq!(v2v, Some(460), "speech ended at 2.0 s, voice at 2.46 s");
}

#[test]
fn a_slow_speculative_transcript_still_answers_its_utterance_after_the_user_goes_on() {
    let mut rig = Rig::new();
    // The first sentence pauses and ends before Whisper has its text.
    rig.hear(1000, HearingEvent::SpeechStarted { at_ms: 1000 });
    let pausing = |end: u64| HearingEvent::SpeechPausing {
        speech_end_ms: end,
        audio: vec![0.0; 16_000],
    };
    rig.hear(1660, pausing(1600));
    rig.hear(
        1900,
        HearingEvent::SpeechEnded {
            start_ms: 1000,
            at_ms: 1600,
            audio: vec![0.0; 600 * 16],
        },
    );
    // The user goes on with a second one, which pauses and ends too.
    rig.hear(2000, HearingEvent::SpeechStarted { at_ms: 2000 });
    rig.hear(2860, pausing(2800));
    rig.hear(
        3100,
        HearingEvent::SpeechEnded {
            start_ms: 2000,
            at_ms: 2800,
            audio: vec![0.0; 800 * 16],
        },
    );
    let transcriptions: Vec<SttPurpose> = rig
        .take_calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Transcribe { purpose, .. } => Some(purpose),
            _ => None,
        })
        .collect();
    assert_eq!(
        transcriptions,
        [
            SttPurpose::Speculative {
                speech_end_ms: 1600
            },
            SttPurpose::Final
        ],
        "the first pause's speculation is kept for its utterance"
    );
    // Whisper answers in order: the first utterance's text is not lost.
    rig.at(
        3300,
        Some(CoreInput::Transcribed(SttResult {
            utterance: 0,
            purpose: SttPurpose::Speculative {
                speech_end_ms: 1600,
            },
            text: "I'd like to know.".into(),
            error: None,
            notice: None,
            transcribe_ms: 1500,
        })),
    );
    rig.transcribed(3500, 2, "The capital of Spain.");
    let generated = rig
        .take_calls()
        .into_iter()
        .any(|c| matches!(c, Call::Generate { reply, .. } if reply < PROVISIONAL));
    assert!(generated, "the conversation goes on: {:#?}", rig.events());
}

#[test]
fn a_failed_speculative_transcript_costs_a_whisper_run_or_an_apology_never_the_turn() {
    let failed = |speech_end_ms| {
        CoreInput::Transcribed(SttResult {
            utterance: 0,
            purpose: SttPurpose::Speculative { speech_end_ms },
            text: String::new(),
            error: Some("the stt engine panicked".into()),
            notice: None,
            transcribe_ms: 5,
        })
    };
    let ended = |at_ms| HearingEvent::SpeechEnded {
        start_ms: 1000,
        at_ms,
        audio: vec![0.0; 16_000],
    };
    // The user talks from 1 s and pauses at 2 s.
    let pausing = || {
        let mut rig = Rig::new();
        rig.hear(1000, HearingEvent::SpeechStarted { at_ms: 1000 });
        rig.hear(
            2120,
            HearingEvent::SpeechPausing {
                speech_end_ms: 2000,
                audio: vec![0.0; 16_000],
            },
        );
        rig
    };
    // Failed during the pause: the turn's end asks Whisper again.
    let mut rig = pausing();
    rig.at(2200, Some(failed(2000)));
    rig.take_calls();
    rig.hear(2300, ended(2000));
    let utterance = rig
        .take_calls()
        .into_iter()
        .find_map(|c| match c {
            Call::Transcribe {
                utterance,
                purpose: SttPurpose::Final,
            } => Some(utterance),
            _ => None,
        })
        .expect("a Whisper run of the utterance's own");
    rig.transcribed(2500, utterance, "What is the capital of France?");
    assert!(rig
        .take_calls()
        .iter()
        .any(|c| matches!(c, Call::Generate { .. })));

    // Failed while the ended utterance waited for it: an apology.
    let mut rig = pausing();
    rig.hear(2300, ended(2000));
    rig.at(2400, Some(failed(2000)));
    let spoken: Vec<String> = rig
        .synthesize_all(2500, 0.5)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(spoken.join(" "), UNHEARD_REPLY);
}

/// What the core sent Home Assistant's pipeline.
#[derive(Debug, Clone, PartialEq)]
enum Piped {
    Run(usize),
    Played,
}

struct FakePipeline(Arc<Mutex<Vec<Piped>>>);

impl crate::satellite::SatellitePipeline for FakePipeline {
    fn run(&mut self, audio: &[f32]) {
        self.0.lock().unwrap().push(Piped::Run(audio.len()));
    }
    fn played(&mut self) {
        self.0.lock().unwrap().push(Piped::Played);
    }
}

#[test]
fn as_a_satellite_home_assistant_hears_and_answers_and_hark_plays_and_minds_barge_in() {
    use crate::satellite::SatelliteEvent;
    let mut rig = Rig::new();
    let piped: Arc<Mutex<Vec<Piped>>> = Arc::default();
    rig.command(
        0,
        Command::Satellite(SatelliteEvent::Attach(Box::new(FakePipeline(
            piped.clone(),
        )))),
    );
    // The user's turn goes to the pipeline, not to Whisper or the model.
    assert_eq!(rig.user_speaks(1000, 2000), None, "{:?}", rig.take_calls());
    assert_eq!(*piped.lock().unwrap(), vec![Piped::Run(16_000)]);
    rig.command(
        2400,
        Command::Satellite(SatelliteEvent::Transcript(
            "What is the capital of France?".into(),
        )),
    );
    rig.command(
        2500,
        Command::Satellite(SatelliteEvent::Reply(
            "Paris is the capital of France. It lies on the Seine.".into(),
        )),
    );
    let calls = rig.take_calls();
    assert!(
        !calls.iter().any(|c| matches!(
            c,
            Call::Generate { .. } | Call::Synthesize { .. } | Call::Transcribe { .. }
        )),
        "{calls:?}"
    );
    // Its voice: two seconds at 8 kHz, played at the speaker's 16 kHz.
    rig.command(
        2600,
        Command::Satellite(SatelliteEvent::Audio {
            pcm: vec![0.1; 16_000],
            rate: 8_000,
        }),
    );
    let plays: Vec<(u64, usize)> = rig
        .take_calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Play { clause, samples } => Some((clause, samples)),
            _ => None,
        })
        .collect();
    assert_eq!(plays.len(), 2, "{plays:?}");
    let total: usize = plays.iter().map(|(_, n)| n).sum();
    assert!((31_900..=32_100).contains(&total), "{total}");
    let mut t = 2700;
    for (clause, samples) in plays {
        rig.play_through(t, clause, (samples / 16) as u64);
        t += (samples / 16) as u64;
    }
    assert_eq!(
        rig.finished_turns(),
        vec![(
            "Paris is the capital of France. It lies on the Seine.".into(),
            false
        )]
    );
    assert_eq!(piped.lock().unwrap().last(), Some(&Piped::Played));
    // A "mhm" said over the next answer is judged here, by Whisper: no
    // pipeline runs for it.
    piped.lock().unwrap().clear();
    assert_eq!(rig.user_speaks(6000, 7000), None);
    let said = |text: &str| Command::Satellite(SatelliteEvent::Reply(text.into()));
    rig.command(
        7400,
        Command::Satellite(SatelliteEvent::Transcript("Tell me a story.".into())),
    );
    rig.command(
        7500,
        said("Once upon a time there was a king who loved the sea."),
    );
    rig.command(
        7600,
        Command::Satellite(SatelliteEvent::Audio {
            pcm: vec![0.1; 64_000],
            rate: 16_000,
        }),
    );
    let first = rig
        .take_calls()
        .into_iter()
        .find_map(|c| match c {
            Call::Play { clause, .. } => Some(clause),
            _ => None,
        })
        .unwrap();
    rig.playback(7700, PlaybackReport::Started { clause: first });
    let judged = rig.user_speaks(8000, 8400);
    assert!(judged.is_some(), "speech over Hark goes to Whisper");
    assert_eq!(*piped.lock().unwrap(), vec![Piped::Run(16_000)]);
    // Detached, Hark hears and answers by itself again.
    rig.command(9000, Command::Satellite(SatelliteEvent::Detach));
    rig.take_calls();
    piped.lock().unwrap().clear();
    assert!(rig.user_speaks(12_000, 13_000).is_some());
    assert!(piped.lock().unwrap().is_empty());
}

#[test]
fn in_name_mode_only_what_is_said_to_hark_is_answered_and_a_reply_opens_a_follow_up() {
    let mut rig = Rig::new();
    rig.core.set_mode(ListenMode::Name);
    let generated = |rig: &Rig| -> Vec<(u64, Vec<ChatMessage>)> {
        rig.take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Generate { reply, history } => Some((reply, history)),
                _ => None,
            })
            .collect()
    };
    // Two people talking: not for Hark.
    let utterance = rig.user_speaks(1000, 2000).unwrap();
    rig.transcribed(2400, utterance, "Did you feed the cat?");
    assert!(generated(&rig).is_empty());
    assert!(rig.events().iter().any(
        |e| matches!(e, SessionEvent::NotAddressed { text } if text == "Did you feed the cat?")
    ));
    // Its name, as Whisper writes it: answered without it.
    let utterance = rig.user_speaks(4000, 5000).unwrap();
    rig.transcribed(5400, utterance, "Heart, what is the capital of France?");
    let started = generated(&rig);
    assert_eq!(started.len(), 1, "{started:?}");
    let (reply, history) = &started[0];
    assert_eq!(
        history.last(),
        Some(&ChatMessage::user("what is the capital of France?"))
    );
    assert!(rig
        .events()
        .iter()
        .any(|e| matches!(e, SessionEvent::WakeDetected { how } if how == "name")));
    rig.reply(5600, *reply, &["Paris."]);
    let clauses = rig.synthesize_all(5700, 1.0);
    rig.play_through(5800, clauses[0].0, 1000);
    assert_eq!(rig.finished_turns().len(), 1);
    // Within the follow-up window (8 s after the reply), no name needed…
    let utterance = rig.user_speaks(9000, 10_000).unwrap();
    rig.transcribed(10_400, utterance, "And of Spain?");
    let started = generated(&rig);
    assert_eq!(started.len(), 1, "{started:?}");
    rig.reply(10_600, started[0].0, &["Madrid."]);
    let clauses = rig.synthesize_all(10_700, 1.0);
    rig.play_through(10_800, clauses[0].0, 1000);
    // …after it, the name again.
    let utterance = rig.user_speaks(25_000, 26_000).unwrap();
    rig.transcribed(26_400, utterance, "And of Italy?");
    assert!(generated(&rig).is_empty());
}

/// The reply a generation was started for since the last look, if any.
fn generation_started(rig: &Rig) -> Option<u64> {
    rig.take_calls().into_iter().find_map(|c| match c {
        Call::Generate { reply, .. } => Some(reply),
        _ => None,
    })
}

#[test]
fn with_addressee_likely_narration_chat_and_far_speech_are_left_alone() {
    let mut rig = Rig::new();
    rig.core.set_wake(hark_converse::WakeConfig {
        addressee: hark_converse::Addressee::Likely,
        ..hark_converse::WakeConfig::default()
    });
    let generated = |rig: &Rig| {
        rig.take_calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Generate { .. }))
            .count()
    };
    // Narration from a radio: not for Hark, and said so.
    let utterance = rig.user_speaks_at(1000, 3000, 0.1).unwrap();
    rig.transcribed(3400, utterance, "He was not an ill-disposed young man.");
    assert_eq!(generated(&rig), 0);
    assert!(rig
        .events()
        .iter()
        .any(|e| matches!(e, SessionEvent::NotAddressed { .. })));
    // A question, close to the microphone: answered.
    let utterance = rig.user_speaks_at(5000, 6000, 0.3).unwrap();
    rig.transcribed(6400, utterance, "What is the capital of France?");
    let reply = generation_started(&rig).expect("answered");
    rig.reply(6600, reply, &["Paris."]);
    let clauses = rig.synthesize_all(6700, 1.0);
    rig.play_through(6800, clauses[0].0, 1000);
    // Within the follow-up window a fragment is answered too.
    let utterance = rig.user_speaks_at(9000, 10_000, 0.3).unwrap();
    rig.transcribed(10_400, utterance, "The one with the red cover.");
    let reply = generation_started(&rig).expect("answered");
    rig.reply(10_600, reply, &["A fine choice."]);
    let clauses = rig.synthesize_all(10_700, 1.0);
    rig.play_through(10_800, clauses[0].0, 1000);
    rig.tick_until(30_000);
    rig.take_calls();
    // Later, a question 20 dB quieter than the user's (a television
    // across the room) is left alone; the user's own is answered.
    let utterance = rig.user_speaks_at(40_000, 41_000, 0.03).unwrap();
    rig.transcribed(41_400, utterance, "What is the capital of Spain?");
    assert_eq!(generated(&rig), 0);
    let utterance = rig.user_speaks_at(45_000, 46_000, 0.3).unwrap();
    rig.transcribed(46_400, utterance, "What is the capital of Spain?");
    assert_eq!(generated(&rig), 1);
}

#[test]
fn a_satellite_pipeline_that_fails_or_leaves_costs_that_turn_only() {
    use crate::satellite::SatelliteEvent;
    let mut rig = Rig::new();
    let piped: Arc<Mutex<Vec<Piped>>> = Arc::default();
    let attach = |piped: &Arc<Mutex<Vec<Piped>>>| {
        Command::Satellite(SatelliteEvent::Attach(Box::new(FakePipeline(
            piped.clone(),
        ))))
    };
    rig.command(0, attach(&piped));
    assert_eq!(rig.user_speaks(1000, 2000), None);
    rig.command(
        3000,
        Command::Satellite(SatelliteEvent::Failed(
            "the pipeline failed: no intent".into(),
        )),
    );
    assert!(rig.events().iter().any(|e| matches!(
        e,
        SessionEvent::Error { code: "satellite", message } if message.contains("no intent")
    )));
    assert!(rig.events().contains(&SessionEvent::NothingHeard));
    assert_eq!(rig.core.conversation.state(), State::Listening);
    // Home Assistant leaves while its answer's audio is awaited: the
    // clause fails, the turn ends, and Hark answers by itself next.
    assert_eq!(rig.user_speaks(4000, 5000), None);
    rig.command(
        5400,
        Command::Satellite(SatelliteEvent::Transcript("Tell me a story.".into())),
    );
    rig.command(
        5500,
        Command::Satellite(SatelliteEvent::Reply("Once upon a time.".into())),
    );
    rig.command(6000, Command::Satellite(SatelliteEvent::Detach));
    rig.tick_until(7000);
    assert_eq!(rig.core.conversation.state(), State::Listening);
    rig.take_calls();
    assert!(rig.user_speaks(8000, 9000).is_some(), "Whisper again");
}
