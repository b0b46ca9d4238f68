//! Hark's Whisper and voice served over Wyoming, for Home Assistant:
//! `[wyoming] listen` in `hark daemon`, or `hark wyoming serve` alone.
//!
//! The server has engines of its own, loaded at its first request, so a
//! Home Assistant pipeline never waits behind Hark's own conversation
//! (nor the other way round) and a busy machine pays nothing for a server
//! nobody calls. Each engine serves one request at a time. The voice is
//! a [`LentVoice`], in the daemon the same one desktop apps are lent
//! (`speech_provider.rs`).

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Args, Subcommand};
use hark_models::store::ModelStore;
use hark_session::core::{Command, CoreInput};
use hark_session::satellite::{SatelliteEvent, SatellitePipeline};
use hark_stt::{SpeechToText, WhisperStt};
use hark_wyoming::message::{
    encode_s16le, Attribution, AudioFormat, Info, Message, Model, Program, Satellite, VoiceChoice,
};
use hark_wyoming::server::{SatelliteHost, UtteranceListener, WakeService};
use hark_wyoming::{Endpoint, ServerLimits, Services, WyomingServer};

use crate::config::HarkConfig;
use crate::lent::{with_engine, LentVoice};
use crate::Globals;

/// Where `hark wyoming serve` listens unless told: the port Home
/// Assistant's add-ons leave free for a satellite-like service.
pub const DEFAULT_LISTEN: &str = "tcp://127.0.0.1:10700";

#[derive(Subcommand, Debug)]
pub enum WyomingCommand {
    /// Serve Hark's Whisper and voice over Wyoming until interrupted (what
    /// `[wyoming] listen` does inside `hark daemon`), for Home Assistant's
    /// Wyoming integration.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where to listen (default: wyoming.listen, else tcp://127.0.0.1:10700).
    #[arg(long, value_name = "tcp://HOST:PORT|unix:///PATH")]
    pub listen: Option<String>,
}

pub fn run(command: WyomingCommand, globals: &Globals) -> anyhow::Result<()> {
    let WyomingCommand::Serve(args) = command;
    let config = globals.config(&[])?;
    let store = globals.store()?;
    let listen = args
        .listen
        .or_else(|| config.wyoming.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let voice = Arc::new(LentVoice::new(&config.voice, &store));
    let server = start(&listen, &config, &store, voice, None)?;
    eprintln!(
        "hark: serving Wyoming on {} (Ctrl-C stops)",
        server.endpoint()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    runtime.block_on(crate::lent::until_stopped())?;
    tracing::info!("stopping the Wyoming server");
    Ok(())
}

/// The core's inbox, once the models are loaded (the daemon's).
pub type Inbox = tokio::sync::watch::Receiver<Option<SyncSender<CoreInput>>>;

/// The server on `listen` with Hark's engines as `config` names them, and
/// `voice` (which the daemon lends desktop apps too).
pub fn start(
    listen: &str,
    config: &HarkConfig,
    store: &ModelStore,
    voice: Arc<LentVoice>,
    inbox: Option<Inbox>,
) -> anyhow::Result<WyomingServer> {
    let endpoint: Endpoint = listen.parse().context("wyoming.listen")?;
    let mut services = HarkServices::new(config.clone(), store.clone(), voice);
    services.satellite = inbox.map(DaemonSatellite::new);
    let services = Arc::new(services);
    let limits = ServerLimits {
        max_connections: config.wyoming.max_connections,
        ..ServerLimits::default()
    };
    let server = WyomingServer::start(&endpoint, services, limits)
        .with_context(|| format!("cannot serve Wyoming on {listen}"))?;
    tracing::info!(endpoint = %server.endpoint(), "serving Wyoming (speech to text, text to speech)");
    Ok(server)
}

/// Hark's Whisper and Piper voice, loaded at their first request.
struct HarkServices {
    config: HarkConfig,
    store: ModelStore,
    voice_name: String,
    stt: Mutex<Option<WhisperStt>>,
    voice: Arc<LentVoice>,
    satellite: Option<DaemonSatellite>,
}

impl HarkServices {
    fn new(config: HarkConfig, store: ModelStore, voice: Arc<LentVoice>) -> Self {
        Self {
            config,
            store,
            voice_name: voice.name().to_owned(),
            stt: Mutex::new(None),
            voice,
            satellite: None,
        }
    }
}

impl Services for HarkServices {
    fn info(&self) -> Info {
        let hark = Attribution {
            name: "Hark".into(),
            url: String::new(),
        };
        let version = Some(env!("CARGO_PKG_VERSION").to_owned());
        let stt = &self.config.stt;
        let stt_languages = if stt.model.ends_with(".en") {
            vec!["en".to_owned()]
        } else {
            vec![stt.language.clone()]
        };
        // Piper names voices LANGUAGE_REGION-NAME-QUALITY.
        let voice_language = self
            .voice_name
            .split('-')
            .next()
            .unwrap_or("en_US")
            .to_owned();
        Info {
            asr: vec![Program {
                name: "hark-whisper".into(),
                attribution: hark.clone(),
                installed: true,
                description: Some("Whisper (whisper.cpp) in Hark".into()),
                version: version.clone(),
                models: Some(vec![Model {
                    name: stt.model.clone(),
                    attribution: hark.clone(),
                    installed: true,
                    languages: stt_languages,
                    version: version.clone(),
                    ..Model::default()
                }]),
                supports_transcript_streaming: Some(false),
                ..Program::default()
            }],
            tts: vec![Program {
                name: "hark-piper".into(),
                attribution: hark.clone(),
                installed: true,
                description: Some("Piper voices in Hark".into()),
                version: version.clone(),
                voices: Some(vec![Model {
                    name: self.voice_name.clone(),
                    attribution: hark.clone(),
                    installed: true,
                    languages: vec![voice_language],
                    version: version.clone(),
                    ..Model::default()
                }]),
                supports_synthesize_streaming: Some(true),
                ..Program::default()
            }],
            wake: vec![Program {
                name: "hark-name".into(),
                attribution: hark.clone(),
                installed: true,
                description: Some(
                    "Hark's names ([wake] names), heard by Whisper: say the name, then \
                     pause"
                        .into(),
                ),
                version: version.clone(),
                models: Some(vec![Model {
                    name: "hark".into(),
                    attribution: hark.clone(),
                    installed: true,
                    languages: vec!["en".into()],
                    phrase: self.config.wake.names.first().cloned(),
                    version: version.clone(),
                    ..Model::default()
                }]),
                ..Program::default()
            }],
            satellite: self.satellite.as_ref().map(|_| Satellite {
                name: "Hark".into(),
                attribution: Attribution {
                    name: "Hark".into(),
                    url: String::new(),
                },
                installed: true,
                description: Some(
                    "Hark's microphone and speaker, with its echo cancellation, \
                     turn-taking and barge-in"
                        .into(),
                ),
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                has_vad: Some(true),
                active_wake_words: Some(Vec::new()),
                max_active_wake_words: Some(0),
                supports_trigger: Some(false),
                ..Satellite::default()
            }),
            ..Info::default()
        }
    }

    fn transcribe(&self, samples: &[f32], _language: Option<&str>) -> Result<String, String> {
        with_engine(
            &self.stt,
            || crate::models::whisper(&self.config.stt, &self.store),
            |stt| {
                stt.transcribe(samples)
                    .map(|t| t.text())
                    .map_err(|e| e.to_string())
            },
        )
    }

    fn satellite(&self) -> Option<&dyn SatelliteHost> {
        self.satellite.as_ref().map(|s| s as &dyn SatelliteHost)
    }

    fn wake(&self) -> Option<&dyn WakeService> {
        Some(self)
    }

    fn synthesize(
        &self,
        text: &str,
        voice: Option<&VoiceChoice>,
    ) -> Result<(Vec<f32>, u32), String> {
        if let Some(name) = voice.and_then(|v| v.name.as_deref()) {
            if name != self.voice_name {
                return Err(format!(
                    "no voice named {name:?} here; Hark offers {:?}",
                    self.voice_name
                ));
            }
        }
        self.voice.synthesize(text, 1.0)
    }
}

/// Hark as Home Assistant's satellite: the pipeline's events become the
/// core's `Command::Satellite`s; the core's utterances go back as
/// `run-pipeline` and audio (see `hark_session::satellite`).
struct DaemonSatellite {
    inbox: Inbox,
    /// A server runs the satellite now.
    running: Mutex<bool>,
    /// The answer's audio as it arrives.
    answer: Mutex<Option<(AudioFormat, Vec<f32>)>>,
}

impl DaemonSatellite {
    fn new(inbox: Inbox) -> Self {
        Self {
            inbox,
            running: Mutex::new(false),
            answer: Mutex::new(None),
        }
    }

    /// Hands `event` to the core, waiting if its inbox is full (on this
    /// connection's own thread).
    fn post(&self, event: SatelliteEvent) -> Result<(), String> {
        let inbox = self
            .inbox
            .borrow()
            .clone()
            .ok_or("Hark is still loading its models")?;
        inbox
            .send(CoreInput::Command(Command::Satellite(event)))
            .map_err(|_| "Hark's conversation has stopped".to_owned())
    }
}

impl SatelliteHost for DaemonSatellite {
    fn start(&self, to_server: SyncSender<Message>) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if *running {
            return Err("another server already runs Hark as its satellite".into());
        }
        self.post(SatelliteEvent::Attach(Box::new(PipelineOut { to_server })))?;
        *running = true;
        tracing::info!("a Wyoming server runs Hark as its satellite");
        Ok(())
    }

    fn event(&self, message: Message) {
        let event = match message {
            Message::Transcript { text, .. } => SatelliteEvent::Transcript(text),
            Message::Synthesize { text, .. } => SatelliteEvent::Reply(text),
            Message::AudioStart { format, .. } => {
                *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some((format, Vec::new()));
                return;
            }
            Message::AudioChunk { format, audio, .. } => {
                let mut answer = self.answer.lock().unwrap_or_else(|p| p.into_inner());
                let (_, samples) = answer.get_or_insert_with(|| (format, Vec::new()));
                samples.extend(format.decode(&audio));
                return;
            }
            Message::AudioStop { .. } => {
                let answer = self.answer.lock().unwrap_or_else(|p| p.into_inner()).take();
                let Some((format, pcm)) = answer else {
                    return;
                };
                SatelliteEvent::Audio {
                    pcm,
                    rate: format.rate,
                }
            }
            Message::Error { text, .. } => {
                SatelliteEvent::Failed(format!("the pipeline failed: {text}"))
            }
            _ => return,
        };
        if let Err(e) = self.post(event) {
            tracing::warn!("satellite event dropped: {e}");
        }
    }

    fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if *running {
            *running = false;
            let _ = self.post(SatelliteEvent::Detach);
            tracing::info!("the Wyoming server stopped running Hark as its satellite");
        }
    }
}

/// The core's way out to the pipeline: Wyoming events, queued.
struct PipelineOut {
    to_server: SyncSender<Message>,
}

/// Samples per `audio-chunk` sent to the pipeline (256 ms: a 28 s
/// utterance fits the queue).
const SATELLITE_CHUNK: usize = 4096;

impl PipelineOut {
    fn queue(&self, message: Message) {
        if self.to_server.try_send(message).is_err() {
            tracing::warn!("the satellite's server is not reading: an event was dropped");
        }
    }
}

impl SatellitePipeline for PipelineOut {
    fn run(&mut self, audio: &[f32]) {
        let format = AudioFormat::HARK_INPUT;
        self.queue(Message::RunPipeline {
            start_stage: "asr".into(),
            end_stage: "tts".into(),
            restart_on_end: false,
        });
        self.queue(Message::AudioStart {
            format,
            timestamp: Some(0),
        });
        for (i, chunk) in audio.chunks(SATELLITE_CHUNK).enumerate() {
            self.queue(Message::AudioChunk {
                format,
                timestamp: Some((i * SATELLITE_CHUNK / 16) as u64),
                audio: encode_s16le(chunk),
            });
        }
        self.queue(Message::AudioStop {
            timestamp: Some((audio.len() / 16) as u64),
        });
    }

    fn played(&mut self) {
        self.queue(Message::Played);
    }
}

/// Hark's names as a wake word: the stream cut into utterances by the
/// VAD, each short one transcribed by the server's Whisper and read for
/// a name ([`hark_converse::address`]).
impl WakeService for HarkServices {
    fn listener(&self) -> Box<dyn UtteranceListener> {
        let vad = hark_audio::vad::VadConfig::default();
        let segmenter = hark_audio::vad::Segmenter::webrtc(vad.clone())
            .expect("the default VAD settings are valid");
        Box::new(VadListener {
            framer: hark_audio::resample::Framer::new(vad.frame_len()),
            segmenter,
            frames: Vec::new(),
        })
    }

    fn detect(&self, utterance: &[f32], names: &[String]) -> Option<String> {
        // A name is said in well under three seconds; longer speech is
        // not a call, and would cost a long Whisper run.
        if utterance.len() > 3 * 16_000 {
            return None;
        }
        let text = self.transcribe(utterance, None).ok()?;
        hark_converse::address::addressed(&self.config.wake, &text)?;
        tracing::info!(heard = %text, "wake: Hark's name heard");
        Some(names.first().cloned().unwrap_or_else(|| "hark".into()))
    }
}

struct VadListener {
    framer: hark_audio::resample::Framer,
    segmenter: hark_audio::vad::Segmenter<hark_audio::vad::WebRtcClassifier>,
    frames: Vec<hark_audio::Frame>,
}

impl UtteranceListener for VadListener {
    fn push(&mut self, samples: &[f32]) -> Vec<Vec<f32>> {
        self.framer.push(samples, &mut self.frames);
        let mut ended = Vec::new();
        for frame in self.frames.drain(..) {
            if let Ok(events) = self.segmenter.push(&frame) {
                ended.extend(events.into_iter().filter_map(|e| match e {
                    hark_audio::vad::VadEvent::SpeechEnd(u) => Some(u.samples),
                    _ => None,
                }));
            }
        }
        ended
    }
}
