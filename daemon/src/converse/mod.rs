//! `hark converse`: the whole loop, microphone to speaker.
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
//! The core loop (this thread) owns the [`Conversation`] state machine and
//! is the only place decisions are made; every other thread does one job
//! and reports back through the core's inbox.

pub mod bench;
pub mod core;
pub mod events;
pub mod hearing;
pub mod input;
pub mod speaker;
pub mod voice;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hark_audio::vad::VadConfig;
use hark_audio::wav::{Pacing, WavSampleFormat, WavSink, WavSource};
use hark_audio::FrameSource;
use hark_converse::turn::{Conversation, TurnConfig};
use hark_llm::{LanguageModel, LlmWorker};
use hark_models::store::ModelStore;
use hark_stt::WhisperStt;
use hark_tts::PiperVoice;

use self::core::{Core, CoreInput, SessionOutcome, StopRules, Workers};
use self::events::EventLog;
use self::hearing::{EchoCancellation, HearingEvent};
use self::speaker::{ClockedFileSink, DeviceSink, EchoReference, OutputTap, Speaker, SpeakerSink};
use self::voice::ClauseVoice;
use crate::ask::LlmArgs;
use crate::listen::VadArgs;
use crate::speak::{load_voice, OutputArgs};
use crate::ModelArgs;

/// The core's inbox. Generous: producers block when it is full, and the
/// core drains it in microseconds per input.
const INBOX: usize = 1024;
/// Utterances waiting for Whisper.
const STT_QUEUE: usize = 4;

/// Silence that ends the user's turn in a conversation: shorter than for
/// dictation (`hark listen`), because every millisecond of it is reply
/// latency. A pause mid-sentence that splits a turn is joined back when the
/// user goes on before Hark answers.
pub const CONVERSE_END_SILENCE_MS: u32 = 300;
/// Speech needed to confirm an onset: short, because an interruption
/// silences Hark only once it is confirmed.
pub const CONVERSE_ONSET_MS: u32 = 90;
/// Echo path the canceller covers by default: device buffers both ways plus
/// a room.
pub const DEFAULT_ECHO_TAIL_MS: u32 = 400;

#[derive(Args, Debug)]
pub struct ConverseArgs {
    /// Take the user's side from this WAV file, paced in real time, instead
    /// of the microphone.
    #[arg(long, short, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Capture device name (see `hark devices`); default: the system default.
    #[arg(long, short, value_name = "NAME", conflicts_with = "input")]
    pub device: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Write every event (speech, transcripts, tokens, clauses, playback,
    /// interruptions) to this file, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Stop after this many replies.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<usize>,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Do not cancel the speaker's echo in the microphone signal (for a
    /// headset). Barge-in then relies on the VAD alone.
    #[arg(long)]
    pub no_echo_cancellation: bool,

    /// Longest echo path to cancel, in ms.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_ECHO_TAIL_MS)]
    pub echo_tail_ms: u32,

    /// Never let speech interrupt Hark (it still hears what is said after).
    #[arg(long)]
    pub no_barge_in: bool,

    #[command(flatten)]
    pub llm: LlmArgs,

    #[command(flatten)]
    pub vad: VadArgs,

    #[command(flatten)]
    pub model: ModelArgs,
}

/// Where the user's voice comes from.
pub enum Input {
    /// A WAV file delivered at real-time pace.
    File(PathBuf),
    Device(Option<String>),
    /// Any other source (benchmark scripts); it must pace itself.
    Source(Box<dyn FrameSource>),
    /// The daemon's: a microphone (`None`: the default), replaced by any
    /// stream attached to `switch`; a missing microphone is retried rather
    /// than fatal.
    Switched {
        microphone: Option<String>,
        switch: Arc<input::InputSwitch>,
    },
}

/// Where Hark's voice goes.
pub enum Output {
    /// A WAV file on the input's timeline; `tap` sees every sample written.
    File {
        path: PathBuf,
        tap: Option<Arc<dyn OutputTap>>,
    },
    Device(Option<String>),
}

/// Everything a session needs besides the models.
pub struct SessionSetup {
    pub input: Input,
    pub output: Output,
    pub events: Option<PathBuf>,
    pub vad: VadConfig,
    pub turn: TurnConfig,
    /// Echo canceller tail in ms; `None` turns it off.
    pub echo_tail_ms: Option<u32>,
    /// While the user talks, a partial transcript each time this much more
    /// speech is heard; `None`: only final transcripts.
    pub partial_every_ms: Option<u32>,
    pub rules: StopRules,
    /// Print each turn ("you: …", "hark: …") on stdout.
    pub print_turns: bool,
    /// When Hark listens, at the start.
    pub mode: core::ListenMode,
    /// Sees everything the core publishes (the D-Bus service).
    pub publish: Option<core::Publisher>,
    /// Called once everything runs (models loaded, audio open) with the
    /// core's inbox, for commands from outside.
    pub on_ready: Option<Box<dyn FnOnce(SyncSender<CoreInput>) + Send>>,
}

pub struct Models {
    pub whisper: WhisperStt,
    pub llm: LanguageModel,
    pub voice: PiperVoice,
}

/// The VAD settings a conversation uses unless flags say otherwise.
pub fn converse_vad(args: &VadArgs) -> anyhow::Result<VadConfig> {
    let mut vad = args.config()?;
    if args.end_silence_ms.is_none() {
        vad.end_silence_ms = CONVERSE_END_SILENCE_MS;
    }
    vad.onset_ms = CONVERSE_ONSET_MS;
    vad.validate().context("invalid VAD option")?;
    Ok(vad)
}

pub fn run(args: ConverseArgs, store: &ModelStore) -> anyhow::Result<()> {
    let mut turn = TurnConfig::default();
    turn.barge_in.enabled = !args.no_barge_in;
    let setup = SessionSetup {
        input: match &args.input {
            Some(path) => Input::File(path.clone()),
            None => Input::Device(args.device.clone()),
        },
        output: match &args.output.output {
            Some(path) => Output::File {
                path: path.clone(),
                tap: None,
            },
            None => Output::Device(args.output.output_device.clone()),
        },
        events: args.events.clone(),
        vad: converse_vad(&args.vad)?,
        turn,
        // A file cannot hear the speaker.
        echo_tail_ms: (!args.no_echo_cancellation && args.input.is_none())
            .then_some(args.echo_tail_ms),
        // Nobody watches partials here, and each can delay a reply.
        partial_every_ms: None,
        rules: StopRules {
            max_turns: args.max_turns,
            duration: args.duration.map(Duration::from_secs_f64),
        },
        print_turns: true,
        mode: core::ListenMode::Always,
        publish: None,
        on_ready: None,
    };
    let outcome = run_session(setup, store, |s| load_models(&args, s))?;
    tracing::info!(
        turns = outcome.turns.len(),
        interruptions = outcome.interruptions,
        "conversation ended"
    );
    Ok(())
}

/// Whisper's beam in a conversation unless `--beam-size` says otherwise:
/// greedy. Every beam costs reply latency (about 90 ms of 250 for a 2 s
/// question at width 3), and the model answering needs the gist, not a
/// verbatim record.
pub const CONVERSE_BEAM_SIZE: usize = 1;

/// Loads Whisper, the language model and the voice as the flags say.
pub fn load_models(args: &ConverseArgs, store: &ModelStore) -> anyhow::Result<Models> {
    Ok(Models {
        whisper: load_whisper(&args.model, store)?,
        llm: args.llm.load(store)?,
        voice: load_voice(&args.output, store)?,
    })
}

/// Whisper in utterance mode with the conversation's beam default.
pub fn load_whisper(args: &ModelArgs, store: &ModelStore) -> anyhow::Result<WhisperStt> {
    let mut args = args.clone();
    args.beam_size.get_or_insert(CONVERSE_BEAM_SIZE);
    crate::stt_setup::load_whisper(&args, store, true)
}

/// Opens the devices or files, loads the models (devices first, so a missing
/// microphone is reported before seconds of loading), runs the conversation
/// until it ends, and shuts every thread down.
pub fn run_session(
    setup: SessionSetup,
    store: &ModelStore,
    load: impl FnOnce(&ModelStore) -> anyhow::Result<Models>,
) -> anyhow::Result<SessionOutcome> {
    let frame_len = setup.vad.frame_len();
    let open_mic =
        |name: &Option<String>| hark_audio::device::DeviceSource::open(name.as_deref(), frame_len);
    // A microphone is opened now to report a missing one before seconds of
    // model loading, then closed: the timeline starts at its sample 0, so
    // it must not sit queueing audio meanwhile. It is reopened below.
    let mut switched = None;
    let (source, microphone): (Option<Box<dyn FrameSource>>, _) = match setup.input {
        Input::File(path) => (
            Some(Box::new(WavSource::open(
                path,
                frame_len,
                Pacing::Realtime,
            )?)),
            None,
        ),
        Input::Device(name) => {
            drop(open_mic(&name)?);
            (None, Some(name))
        }
        Input::Source(source) => (Some(source), None),
        Input::Switched { microphone, switch } => {
            switched = Some((microphone, switch));
            (None, None)
        }
    };
    let origin: Arc<OnceLock<std::time::Instant>> = Arc::new(OnceLock::new());
    let device_sink = match &setup.output {
        Output::Device(name) => Some(DeviceSink::open(name.as_deref())?),
        Output::File { .. } => None,
    };
    let log = match &setup.events {
        Some(path) => EventLog::create(path)?,
        None => EventLog::none(),
    };
    let models = load(store)?;
    let sink: Box<dyn SpeakerSink> = match (device_sink, &setup.output) {
        (Some(device), _) => {
            tracing::info!(device = device.name(), "speaking on");
            Box::new(device)
        }
        (None, Output::File { path, tap }) => {
            let rate = models.voice.sample_rate();
            let wav = WavSink::create(path, rate, WavSampleFormat::Int16)?;
            Box::new(ClockedFileSink::new(wav, rate, origin.clone(), tap.clone()))
        }
        (None, Output::Device(_)) => unreachable!("opened above"),
    };

    let (inbox, inputs) = std::sync::mpsc::sync_channel::<CoreInput>(INBOX);
    let post = |inbox: &SyncSender<CoreInput>| {
        let inbox = inbox.clone();
        move |input: CoreInput| inbox.send(input).is_ok()
    };

    let reference = setup
        .echo_tail_ms
        .map(|_| Arc::new(EchoReference::default()));
    let to_core = post(&inbox);
    let speaker = Speaker::spawn(sink, reference.clone(), move |r| {
        to_core(CoreInput::Playback(r));
    })?;
    let to_core = post(&inbox);
    let voice = ClauseVoice::spawn(models.voice, speaker.rate(), move |s| {
        to_core(CoreInput::Synthesized(s))
    })?;
    let to_core = post(&inbox);
    let (stt, stt_thread) = hearing::spawn_stt(Box::new(models.whisper), STT_QUEUE, move |r| {
        to_core(CoreInput::Transcribed(r))
    })?;
    let llm = LlmWorker::spawn(models.llm);
    let echo = match (setup.echo_tail_ms, reference) {
        (Some(tail), Some(reference)) => Some(EchoCancellation::new(reference, tail)?),
        _ => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let source: Box<dyn FrameSource> = match (source, microphone, &switched) {
        (Some(source), _, _) => source,
        (None, Some(name), _) => Box::new(open_mic(&name)?),
        (None, None, Some((microphone, switch))) => {
            let to_core = post(&inbox);
            Box::new(input::SwitchedInput::new(
                microphone.clone(),
                frame_len,
                switch.clone(),
                move |change| {
                    to_core(CoreInput::Hearing(HearingEvent::InputChanged(change)));
                },
            ))
        }
        (None, None, None) => unreachable!("a source, a microphone or a switch"),
    };
    let to_core = post(&inbox);
    let hearing_thread = hearing::spawn_hearing(
        source,
        setup.vad,
        echo,
        setup.partial_every_ms,
        origin.clone(),
        stop.clone(),
        move |e: HearingEvent| to_core(CoreInput::Hearing(e)),
    )?;
    tracing::info!(
        echo_cancellation = setup.echo_tail_ms.is_some(),
        "conversation started: speak to Hark"
    );

    let workers = Workers {
        stt,
        llm,
        voice,
        speaker,
    };
    let conversation = Conversation::new(setup.turn);
    if let Some(on_ready) = setup.on_ready {
        on_ready(inbox.clone());
    }
    let mut core = Core::new(
        conversation,
        inputs,
        inbox,
        workers,
        log,
        origin,
        stop.clone(),
        setup.print_turns,
        setup.publish,
    );
    core.set_mode(setup.mode);
    if let Some((_, switch)) = switched {
        core.set_input_switch(switch);
    }
    let outcome = core.run(setup.rules);
    // The core (and with it every worker handle and the inbox) is gone: the
    // threads see closed channels and end.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = hearing_thread.join();
    let _ = stt_thread.join();
    outcome
}
