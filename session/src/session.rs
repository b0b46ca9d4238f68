//! One session, wired: the whole loop, microphone to speaker.
//!
//! ```text
//!  mic/WAV ─▶ "hark-hear" (AEC ◀─ reference ─┐, VAD) ─┐
//!                                             │        │
//!  "hark-stt" (Whisper) ──────────────────────┼────────┤   CoreInput
//!  "hark-llm" (candle) ─▶ "hark-llm-fwd" ─────┼────────┼──(bounded)──▶ core loop
//!  "hark-tts" (Piper) ────────────────────────┼────────┤                (Conversation)
//!  "hark-speaker" ─▶ speaker/WAV ─────────────┘────────┘                     │
//!        ▲                                                                   │
//!        └──────────── Play / Pause / Resume / Flush, jobs for the workers ◀─┘
//! ```
//!
//! [`run_session`] is the one place a session is built: `hark converse`,
//! `hark bench converse` and `hark daemon` all describe theirs as a
//! [`SessionSetup`] and hand over a loader for the models.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};

use hark_audio::resample::resample_mono;
use hark_audio::vad::VadConfig;
use hark_audio::wav::{Pacing, WavSampleFormat, WavSink, WavSource};
use hark_audio::FrameSource;
use hark_converse::turn::{Conversation, TurnConfig};
use hark_endpoint::{Detector, EndpointConfig, TurnDetector};
use hark_llm::{LlmWorker, TokenGenerator};
use hark_skills::Skills;
use hark_stt::{SpeechToText, SttWorker};
use hark_tts::{Voice, VoiceWorker};

use crate::clock::{Clock, SystemClock, Timeline};
use crate::core::{Core, CoreInput, Heartbeat, ListenMode, SessionOutcome, StopRules};
use crate::events::Subscriber;
use crate::guard::{Faults, Guarded, Stage};
use crate::hearing::{self, EchoCancellation, Endpointing, HearingEvent, PauseWords};
use crate::input::{InputSwitch, SwitchedInput};
use crate::output::ReconnectingSink;
use crate::settings::AudioConfig;
use crate::speaker::{
    ClockedFileSink, EchoReference, OutputTap, PlaybackReport, Speaker, SpeakerSink,
};
use crate::tools::{SessionTools, ToolConfig};
use crate::workers::{LlmReplies, Workers};
use crate::{BoxError, SessionError};

/// The core's inbox. Generous: producers block when it is full, and the
/// core drains it in microseconds per input.
const INBOX: usize = 1024;
/// Utterances waiting for Whisper.
const STT_QUEUE: usize = 4;

/// What the configuration says about a session (its `[audio]`, `[vad]`,
/// `[conversation]` sections, `stt.partial_every_ms` and the mode).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionConfig {
    pub audio: AudioConfig,
    pub vad: VadConfig,
    pub turn: TurnConfig,
    /// While the user talks, a partial transcript each time this much more
    /// speech is heard; 0: only final transcripts.
    pub partial_every_ms: u32,
    /// When Hark listens, at the start.
    pub mode: ListenMode,
    /// What ends the user's turn (`[turn]`).
    pub endpoint: EndpointConfig,
    /// When Hark is spoken to, in `mode = "name"` (`[wake]`).
    pub wake: hark_converse::WakeConfig,
}

/// Where the user's voice comes from.
pub enum Input {
    /// The configured microphone (`audio.input_device`).
    Microphone,
    /// A WAV file delivered at real-time pace.
    File(PathBuf),
    /// Any other source (benchmark scripts); it must pace itself.
    Source(Box<dyn FrameSource>),
    /// The daemon's: the configured microphone, replaced by any stream
    /// attached to `switch`; a missing microphone is retried rather than
    /// fatal.
    Switched(Arc<InputSwitch>),
}

/// Where Hark's voice goes.
pub enum Output {
    /// The configured speaker (`audio.output_device`).
    Speaker,
    /// A WAV file on the input's timeline; `tap` sees every sample written.
    File {
        path: PathBuf,
        tap: Option<Arc<dyn OutputTap>>,
    },
}

/// Everything a session needs besides the models.
pub struct SessionSetup {
    pub config: SessionConfig,
    pub input: Input,
    pub output: Output,
    pub rules: StopRules,
    /// See every event (the event log, printing turns, D-Bus).
    pub subscribers: Vec<Box<dyn Subscriber>>,
    /// Called from the core's loop to show it is alive (the watchdog).
    pub heartbeat: Option<Heartbeat>,
    /// Called once everything runs (models loaded, audio open) with the
    /// core's inbox, for commands from outside.
    pub on_ready: Option<Box<dyn FnOnce(SyncSender<CoreInput>) + Send>>,
    /// The skills that answer before the model (and their timers); `None`:
    /// every turn goes to the model.
    pub skills: Option<Skills>,
    /// Commands the model may call as tools (`[[tools]]`), besides the
    /// skills.
    pub tools: Vec<ToolConfig>,
    /// Calls of the engines that panic on purpose (tests only).
    pub faults: Faults,
    /// The time the session runs on: the machine's, or a faster one
    /// ([`crate::clock::ScaledClock`]) for a soak whose input and output
    /// are paced by it (a benchmark script and a file; not devices).
    pub clock: Arc<dyn Clock>,
}

impl SessionSetup {
    /// A session of `config` from `input` to `output`, with nobody
    /// watching and no stop rule.
    pub fn new(config: SessionConfig, input: Input, output: Output) -> Self {
        Self {
            config,
            input,
            output,
            rules: StopRules::default(),
            subscribers: Vec::new(),
            heartbeat: None,
            on_ready: None,
            skills: None,
            tools: Vec::new(),
            faults: Faults::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The engines a session runs, each behind its seam.
pub struct Models {
    pub stt: Box<dyn SpeechToText>,
    pub llm: Box<dyn TokenGenerator>,
    pub voice: Box<dyn Voice>,
    /// Smart Turn, when `[turn] detector = "smart"` and it loaded; `None`:
    /// the silence rule ends turns.
    pub turn: Option<Box<dyn TurnDetector>>,
    /// The acoustic wake word, when its model is installed (`mode =
    /// "wake"` listens for it).
    pub wake: Option<Box<dyn hark_endpoint::WakeWordDetector>>,
}

fn thread(name: &'static str) -> impl FnOnce(std::io::Error) -> SessionError {
    move |source| SessionError::Thread { name, source }
}

/// Opens the devices or files, loads the models (devices first, so a missing
/// microphone is reported before seconds of loading), runs the conversation
/// until it ends, and shuts every thread down.
pub fn run_session(
    setup: SessionSetup,
    load: impl FnOnce() -> Result<Models, BoxError>,
) -> Result<SessionOutcome, SessionError> {
    let SessionSetup {
        config,
        input,
        output,
        rules,
        subscribers,
        heartbeat,
        on_ready,
        skills,
        tools,
        faults,
        clock,
    } = setup;
    let frame_len = config.vad.frame_len();
    let microphone = config.audio.input_device.clone();
    let open_mic = || hark_audio::device::DeviceSource::open(microphone.as_deref(), frame_len);
    // A microphone is opened now to report a missing one before seconds of
    // model loading, then closed: the timeline starts at its sample 0, so
    // it must not sit queueing audio meanwhile. It is reopened below.
    let mut source: Option<Box<dyn FrameSource>> = None;
    let mut switch = None;
    match input {
        Input::File(path) => {
            source = Some(Box::new(WavSource::open(
                path,
                frame_len,
                Pacing::Realtime,
            )?))
        }
        Input::Microphone => drop(open_mic()?),
        Input::Source(given) => source = Some(given),
        Input::Switched(given) => switch = Some(given),
    }
    // Echo cancellation where the input can hear the speaker at all.
    let echo_tail_ms = (config.audio.echo_cancellation
        && source.as_ref().is_none_or(|s| s.hears_local_playback()))
    .then_some(config.audio.echo_tail_ms);
    // Sample 0 of the input is set by the ears when the first frame comes.
    let timeline = Timeline::new(clock, Arc::new(OnceLock::new()));
    let (inbox, inputs) = std::sync::mpsc::sync_channel::<CoreInput>(INBOX);
    let post = |inbox: &SyncSender<CoreInput>| {
        let inbox = inbox.clone();
        move |input: CoreInput| inbox.send(input).is_ok()
    };
    // A missing speaker is not fatal: the sink keeps time silently and
    // tries again (the core hears of it as it runs).
    // `OpenAudioOutput` streams reach the speaker through this.
    let output_switch = Arc::new(crate::output::OutputSwitch::default());
    let speaker_sink = match &output {
        Output::Speaker => {
            let to_core = post(&inbox);
            Some(
                ReconnectingSink::open(
                    config.audio.output_device.as_deref(),
                    Box::new(move |output, problem| {
                        to_core(CoreInput::Playback(PlaybackReport::OutputChanged {
                            output,
                            problem,
                        }));
                    }),
                )
                .with_switch(output_switch.clone()),
            )
        }
        Output::File { .. } => None,
    };
    let models = load().map_err(SessionError::Models)?;
    if !faults.is_empty() {
        tracing::warn!(
            ?faults,
            "panics will be injected into the engines (HARK_INJECT_PANIC)"
        );
    }
    // The wake word runs on the ears' thread, while the mode is `wake`.
    let wake_listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wake_word = models
        .wake
        .map(|detector| (detector, wake_listening.clone()));
    // A panic in an engine fails its job, never its worker thread.
    let models = Models {
        stt: Box::new(Guarded::new(models.stt, Stage::Stt, &faults)),
        llm: Box::new(Guarded::new(models.llm, Stage::Llm, &faults)),
        voice: Box::new(Guarded::new(models.voice, Stage::Tts, &faults)),
        turn: models.turn,
        wake: None,
    };
    let speaker_sink_lends = speaker_sink.is_some();
    let sink: Box<dyn SpeakerSink> = match (speaker_sink, output) {
        (Some(speaker), _) => Box::new(speaker),
        (None, Output::File { path, tap }) => {
            let rate = models.voice.sample_rate();
            let wav = WavSink::create(path, rate, WavSampleFormat::Int16)?;
            Box::new(ClockedFileSink::new(wav, rate, timeline.clone(), tap))
        }
        (None, Output::Speaker) => unreachable!("opened above"),
    };

    let reference = echo_tail_ms.map(|_| Arc::new(EchoReference::default()));
    let to_core = post(&inbox);
    let speaker = Speaker::spawn(sink, reference.clone(), move |r| {
        to_core(CoreInput::Playback(r));
    })
    .map_err(thread("hark-speaker"))?;
    let to_core = post(&inbox);
    let speaker_rate = speaker.rate();
    // Resampled on "hark-tts", so the core and the speaker never do it.
    let voice = VoiceWorker::spawn(models.voice, move |mut s| {
        s.audio = s
            .audio
            .and_then(|pcm| resample_mono(&pcm, s.rate, speaker_rate).map_err(|e| e.to_string()));
        s.rate = speaker_rate;
        to_core(CoreInput::Synthesized(s))
    })
    .map_err(thread("hark-tts"))?;
    let to_core = post(&inbox);
    let stt = SttWorker::spawn(models.stt, STT_QUEUE, move |r| {
        to_core(CoreInput::Transcribed(r))
    })
    .map_err(thread("hark-stt"))?;
    // Models that can call tools get the skills and the user's commands.
    let mut model = models.llm;
    let skill_tools = skills.as_ref().is_some_and(Skills::enabled);
    let calls_tools = model.offer_tools(Box::new(SessionTools::new(
        inbox.clone(),
        skill_tools,
        tools,
    )));
    let llm = LlmReplies {
        worker: LlmWorker::spawn(model),
        inbox: inbox.clone(),
    };
    let echo = match (echo_tail_ms, reference) {
        (Some(tail), Some(reference)) => Some(EchoCancellation::new(reference, tail)?),
        _ => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let source: Box<dyn FrameSource> = match (source, &switch) {
        (Some(source), _) => source,
        (None, Some(switch)) => {
            let to_core = post(&inbox);
            Box::new(SwitchedInput::new(
                microphone.clone(),
                frame_len,
                switch.clone(),
                move |change| {
                    to_core(CoreInput::Hearing(HearingEvent::InputChanged(change)));
                },
            ))
        }
        (None, None) => Box::new(open_mic()?),
    };
    let to_core = post(&inbox);
    let partial_every_ms = (config.partial_every_ms > 0).then_some(config.partial_every_ms);
    // With Smart Turn, the VAD's own silence rule only ends what the model
    // never calls complete.
    let mut vad = config.vad.clone();
    let pause_words = Arc::new(PauseWords::default());
    let over_reply = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let endpointing = match (config.endpoint.detector, models.turn) {
        (Detector::Smart, Some(detector)) => {
            vad.end_silence_ms = config.endpoint.max_silence_ms;
            Some(Endpointing {
                detector,
                config: config.endpoint.clone(),
                words: pause_words.clone(),
                over_reply: over_reply.clone(),
            })
        }
        _ => None,
    };
    let smart_turn = endpointing.is_some();
    tracing::info!(
        smart_turn,
        end_silence_ms = vad.end_silence_ms,
        "end of turn"
    );
    let hearing_thread = hearing::spawn_hearing(
        source,
        vad,
        echo,
        partial_every_ms,
        endpointing,
        wake_word,
        timeline.clone(),
        stop.clone(),
        move |e: HearingEvent| to_core(CoreInput::Hearing(e)),
    )
    .map_err(thread("hark-hear"))?;
    tracing::info!(
        echo_cancellation = echo_tail_ms.is_some(),
        "conversation started: speak to Hark"
    );

    let workers = Workers {
        stt: Box::new(stt),
        llm: Box::new(llm),
        voice: Box::new(voice),
        speaker: Box::new(speaker),
    };
    if let Some(on_ready) = on_ready {
        on_ready(inbox.clone());
    }
    // The core holds no sender of its own inbox: once every worker is gone
    // the channel closes.
    drop(inbox);
    let mut core = Core::new(Conversation::new(config.turn), inputs, workers, timeline);
    for subscriber in subscribers {
        core.subscribe(subscriber);
    }
    if let Some(heartbeat) = heartbeat {
        core.set_heartbeat(heartbeat);
    }
    core.set_mode(config.mode);
    core.set_wake_listening(wake_listening);
    core.set_wake(config.wake.clone());
    // Not for a model that calls tools: a tool's effect (a timer set, a
    // command run) could not be taken back with a dropped reply.
    core.set_prepare_replies(config.endpoint.prepare_replies && !calls_tools);
    if smart_turn {
        core.set_pause_words(pause_words);
        core.set_over_reply(over_reply);
    }
    if let Some(skills) = skills {
        core.set_skills(skills);
    }
    if let Some(switch) = switch {
        core.set_input_switch(switch);
    }
    if speaker_sink_lends {
        core.set_output_switch(output_switch);
    }
    let outcome = core.run(rules);
    // The core (and with it every worker handle) is gone: the threads see
    // closed channels and end.
    stop.store(true, Ordering::Relaxed);
    let _ = hearing_thread.join();
    outcome
}
