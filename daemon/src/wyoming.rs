//! Hark's Whisper and voice served over Wyoming, for Home Assistant:
//! `[wyoming] listen` in `hark daemon`, or `hark wyoming serve` alone.
//!
//! The server has engines of its own, loaded at its first request, so a
//! Home Assistant pipeline never waits behind Hark's own conversation
//! (nor the other way round) and a busy machine pays nothing for a server
//! nobody calls. Each engine serves one request at a time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Args, Subcommand};
use hark_models::store::ModelStore;
use hark_stt::{SpeechToText, WhisperStt};
use hark_tts::PiperVoice;
use hark_wyoming::message::{Attribution, Info, Model, Program, VoiceChoice};
use hark_wyoming::{Endpoint, ServerLimits, Services, WyomingServer};

use crate::config::HarkConfig;
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
    let server = start(&listen, &config, &store)?;
    eprintln!(
        "hark: serving Wyoming on {} (Ctrl-C stops)",
        server.endpoint()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        anyhow::Ok(())
    })?;
    tracing::info!("stopping the Wyoming server");
    Ok(())
}

/// The server on `listen` with Hark's engines as `config` names them.
pub fn start(
    listen: &str,
    config: &HarkConfig,
    store: &ModelStore,
) -> anyhow::Result<WyomingServer> {
    let endpoint: Endpoint = listen.parse().context("wyoming.listen")?;
    let services = Arc::new(HarkServices::new(config.clone(), store.clone()));
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
    voice: Mutex<Option<PiperVoice>>,
}

impl HarkServices {
    fn new(config: HarkConfig, store: ModelStore) -> Self {
        let voice_name = crate::models::wyoming_voice_name(&config.voice.voice);
        Self {
            config,
            store,
            voice_name,
            stt: Mutex::new(None),
            voice: Mutex::new(None),
        }
    }
}

/// Runs `work` on the engine in `slot`, loading it first if need be. A
/// panic fails this request and drops the engine, to be loaded afresh.
fn with_engine<E, T>(
    slot: &Mutex<Option<E>>,
    load: impl FnOnce() -> anyhow::Result<E>,
    work: impl FnOnce(&mut E) -> Result<T, String>,
) -> Result<T, String> {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(load().map_err(|e| format!("{e:#}"))?);
    }
    let engine = slot.as_mut().expect("loaded above");
    match catch_unwind(AssertUnwindSafe(|| work(engine))) {
        Ok(result) => result,
        Err(_) => {
            *slot = None;
            Err("the engine panicked; it is loaded again for the next request".into())
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
                    attribution: hark,
                    installed: true,
                    languages: vec![voice_language],
                    version,
                    ..Model::default()
                }]),
                supports_synthesize_streaming: Some(true),
                ..Program::default()
            }],
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
        with_engine(
            &self.voice,
            || crate::models::piper(&self.config.voice, &self.store),
            |voice| {
                let rate = voice.sample_rate();
                voice
                    .synthesize(text)
                    .map(|audio| (audio, rate))
                    .map_err(|e| e.to_string())
            },
        )
    }
}
