//! Loading models: every command that needs Whisper, the language model or
//! the voice gets it here, from a configuration section and the model
//! store, with an error that tells the user what to do.

use std::path::PathBuf;

use anyhow::{bail, Context};
use std::time::Duration;

use hark_endpoint::{Detector, EndpointConfig, SmartTurn, TurnDetector};
use hark_llm::{LanguageModel, LlmBackend, LlmConfig, TokenGenerator};
use hark_models::store::{
    self, ModelSpec, ModelStore, Verification, ONNXRUNTIME, PIPER_JOE_MEDIUM, SMART_TURN,
    SMOLLM2_135M,
};
use hark_openai::{OpenAiClient, OpenAiConfig};
use hark_session::Models;
use hark_stt::{SpeechToText, SttBackend, SttConfig, WhisperStt};
use hark_tts::{PiperVoice, TtsConfig, Voice, VoiceBackend};
use hark_wyoming::{Deadlines, Endpoint, SttWithFallback, VoiceWithFallback, WyomingStt};

use crate::config::HarkConfig;

/// What is wrong with the store's copy of `spec`, checked in full: size,
/// then sha256 (about a gigabyte a second here), companions included.
/// `None`: sound. A loader must never read a damaged file: whisper.cpp
/// aborts the process on some bit flips.
fn damage(store: &ModelStore, spec: &ModelSpec) -> anyhow::Result<Option<Verification>> {
    Ok(match store.verify(spec)? {
        Verification::Verified => None,
        damaged => Some(damaged),
    })
}

/// How a damaged file is described.
fn describe(damage: Verification) -> String {
    match damage {
        Verification::Verified => "is sound".into(),
        Verification::Missing => "is missing (or a file that comes with it)".into(),
        Verification::WrongSize { actual, expected } => {
            format!("is corrupt ({actual} bytes, expected {expected})")
        }
        Verification::WrongHash => "is corrupt (its sha256 does not match)".into(),
    }
}

/// The store's file for `spec`, checked to be there and sound. `what`
/// names the kind of model in messages ("Whisper model", "Piper voice").
pub fn installed(store: &ModelStore, spec: &ModelSpec, what: &str) -> anyhow::Result<PathBuf> {
    let path = store.path_of(spec);
    match damage(store, spec)? {
        None => Ok(path),
        Some(Verification::Missing) if !path.exists() => {
            let extra = if spec.default {
                String::new()
            } else {
                format!(" {}", spec.name)
            };
            bail!(
                "{what} {} is not installed (expected {}); run `hark models fetch`{extra}",
                spec.name,
                path.display()
            )
        }
        Some(damaged) => bail!(
            "{what} file {} {}; run `hark models fetch` to reinstall it",
            path.display(),
            describe(damaged)
        ),
    }
}

/// The file a Whisper model name names: a catalogue entry in the store, or
/// a path.
pub fn whisper_file(name: &str, store: &ModelStore) -> anyhow::Result<PathBuf> {
    let Some(spec) = store::spec_by_name(name) else {
        let path = PathBuf::from(name);
        if !path.is_file() {
            let names: Vec<&str> = store::CATALOGUE.iter().map(|s| s.name).collect();
            bail!(
                "Whisper model '{name}' is neither a catalogue name ({}) nor an existing file",
                names.join(", ")
            );
        }
        return Ok(path);
    };
    installed(store, spec, "Whisper model")
}

/// Whisper as `config` says.
pub fn whisper(config: &SttConfig, store: &ModelStore) -> anyhow::Result<WhisperStt> {
    let path = whisper_file(&config.model, store)?;
    let started = std::time::Instant::now();
    let stt = WhisperStt::load(&path, config.clone()).with_context(|| {
        format!(
            "loading Whisper model {} (run `hark models fetch` to reinstall the defaults)",
            path.display()
        )
    })?;
    tracing::info!(model = %path.display(), ms = started.elapsed().as_millis() as u64, "Whisper model loaded");
    Ok(stt)
}

/// Ears as `config` says: Whisper here, or a Wyoming server with Whisper
/// standing by (`stt.fallback`, when the model is installed).
pub fn speech_to_text(
    config: &SttConfig,
    store: &ModelStore,
) -> anyhow::Result<Box<dyn SpeechToText>> {
    if config.backend == SttBackend::Local {
        return Ok(Box::new(whisper(config, store)?));
    }
    let endpoint = wyoming_endpoint("stt.uri", config.uri.as_deref())?;
    let language = (config.language != "auto").then(|| config.language.clone());
    let remote = WyomingStt::new(endpoint.clone(), None, language, Deadlines::default());
    match remote.check() {
        Ok(info) => {
            let names: Vec<&str> = info.asr.iter().map(|p| p.name.as_str()).collect();
            tracing::info!(server = %endpoint, programs = ?names, "speech-to-text server");
        }
        Err(e) => tracing::warn!("{e}; each utterance will try it again"),
    }
    let local = if config.fallback {
        match whisper_file(&config.model, store) {
            Ok(_) => {
                let (config, store) = (config.clone(), store.clone());
                let load: hark_wyoming::fallback::Loader<dyn SpeechToText> = Box::new(move || {
                    whisper(&config, &store)
                        .map(|w| Box::new(w) as Box<dyn SpeechToText>)
                        .map_err(|e| format!("{e:#}"))
                });
                Some(load)
            }
            Err(e) => {
                tracing::info!("no local stand-in for the speech-to-text server: {e:#}");
                None
            }
        }
    } else {
        None
    };
    Ok(Box::new(SttWithFallback::new(remote, local)))
}

/// The server a `uri` key names, or an error naming the key.
fn wyoming_endpoint(key: &str, uri: Option<&str>) -> anyhow::Result<Endpoint> {
    let uri = uri.with_context(|| format!("{key} must be set when the backend is \"wyoming\""))?;
    uri.parse()
        .with_context(|| format!("{key} in the configuration"))
}

/// The language model as `config` says: a local GGUF (catalogue name or
/// path) or a client of an OpenAI-compatible server.
pub fn llm(config: &LlmConfig, store: &ModelStore) -> anyhow::Result<Box<dyn TokenGenerator>> {
    Ok(match config.backend {
        LlmBackend::Local => Box::new(local_llm(config, store)?),
        LlmBackend::OpenAi => Box::new(remote_llm(config)?),
    })
}

/// A client of the server `config.url` names, with its key.
fn remote_llm(config: &LlmConfig) -> anyhow::Result<OpenAiClient> {
    let url = config
        .url
        .clone()
        .context("llm.url must be set when llm.backend = \"openai\"")?;
    let client = OpenAiClient::new(OpenAiConfig {
        url,
        model: config.model.clone(),
        api_key: api_key(config)?.map(hark_openai::ApiKey::new),
        system_prompt: config.system_prompt.clone(),
        temperature: config.temperature,
        max_tokens: config.max_tokens,
        first_token_timeout: Duration::from_millis(config.first_token_timeout_ms),
    })?;
    tracing::info!(endpoint = client.endpoint(), model = %config.model, "language model server");
    if in_sandbox_without_network() {
        tracing::warn!(
            "llm.backend is \"openai\" but Hark runs in its systemd unit without network \
             access, so {} is unreachable; install the network drop-in \
             (/usr/share/hark/systemd/network.conf, see `man hark` or systemd/README.md)",
            client.endpoint()
        );
    }
    Ok(client)
}

/// Started by systemd (`INVOCATION_ID`) in a network namespace of its own
/// (only `lo`): the unit's `PrivateNetwork=yes`, where no server outside
/// is reachable, not even one on this machine's loopback.
fn in_sandbox_without_network() -> bool {
    if std::env::var_os("INVOCATION_ID").is_none() {
        return false;
    }
    let Ok(dev) = std::fs::read_to_string("/proc/net/dev") else {
        return false;
    };
    // Two header lines, then one line per interface: "  lo: 123 …".
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .all(|name| name.trim() == "lo")
}

/// The API key from `llm.api_key_env` or `llm.api_key_file`, if either is
/// set. A key file anyone but its owner can read is refused.
fn api_key(config: &LlmConfig) -> anyhow::Result<Option<String>> {
    if let Some(name) = &config.api_key_env {
        let key = std::env::var(name).with_context(|| {
            format!("llm.api_key_env names the environment variable {name}, which is not set")
        })?;
        return Ok(Some(key.trim().to_owned()));
    }
    let Some(path) = &config.api_key_file else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read the API key file {} (llm.api_key_file)",
            path.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "refusing the API key file {}: its mode is {mode:04o}, so others can read it; \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let key = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API key file {}", path.display()))?;
    let key = key.trim();
    if key.is_empty() {
        bail!("the API key file {} is empty", path.display());
    }
    Ok(Some(key.to_owned()))
}

/// The local GGUF model `config.model` names: a catalogue name or a path.
fn local_llm(config: &LlmConfig, store: &ModelStore) -> anyhow::Result<LanguageModel> {
    let path = if config.model == SMOLLM2_135M.name {
        installed(store, &SMOLLM2_135M, "language model")?
    } else {
        PathBuf::from(&config.model)
    };
    let started = std::time::Instant::now();
    let model = LanguageModel::load(&path, config.clone())
        .with_context(|| format!("loading language model {}", path.display()))?;
    tracing::info!(
        model = %path.display(),
        architecture = model.architecture(),
        ms = started.elapsed().as_millis() as u64,
        "language model loaded"
    );
    Ok(model)
}

/// The voice as `config` says: Piper here, or a Wyoming server with Piper
/// standing by (`voice.fallback`, when the voice is installed).
pub fn voice(config: &TtsConfig, store: &ModelStore) -> anyhow::Result<Box<dyn Voice>> {
    if config.backend == VoiceBackend::Local {
        return Ok(Box::new(piper(config, store)?));
    }
    let endpoint = wyoming_endpoint("voice.uri", config.uri.as_deref())?;
    let local = if config.fallback && piper_file(config, store).is_ok() {
        let (config, store) = (config.clone(), store.clone());
        let load: hark_wyoming::fallback::Loader<dyn Voice> = Box::new(move || {
            piper(&config, &store)
                .map(|v| Box::new(v) as Box<dyn Voice>)
                .map_err(|e| format!("{e:#}"))
        });
        Some(load)
    } else {
        None
    };
    let voice = VoiceWithFallback::connect(
        endpoint.clone(),
        Some(wyoming_voice_name(&config.voice)),
        Deadlines::default(),
        local,
    );
    tracing::info!(server = %endpoint, rate = voice.sample_rate(), "text-to-speech server");
    Ok(Box::new(voice))
}

/// The name a Wyoming server knows a voice by: Piper's file name without
/// `.onnx` (`joe-medium` in the catalogue is `en_US-joe-medium`).
pub(crate) fn wyoming_voice_name(voice: &str) -> String {
    let file = if voice == PIPER_JOE_MEDIUM.name {
        PIPER_JOE_MEDIUM.file_name
    } else {
        voice
    };
    let name = std::path::Path::new(file)
        .file_name()
        .map_or(file.into(), |n| n.to_string_lossy().into_owned());
    name.strip_suffix(".onnx")
        .map(str::to_owned)
        .unwrap_or(name)
}

/// The Piper voice file `config` names, checked.
pub fn piper_file(config: &TtsConfig, store: &ModelStore) -> anyhow::Result<PathBuf> {
    if config.voice == PIPER_JOE_MEDIUM.name {
        installed(store, &PIPER_JOE_MEDIUM, "Piper voice")
    } else {
        Ok(PathBuf::from(&config.voice))
    }
}

/// The Piper voice as `config` says, on ONNX Runtime from the store.
pub fn piper(config: &TtsConfig, store: &ModelStore) -> anyhow::Result<PiperVoice> {
    let onnx = piper_file(config, store)?;
    let ort_lib = installed(store, &ONNXRUNTIME, "ONNX Runtime")?;
    let started = std::time::Instant::now();
    // One ONNX thread: Whisper and the language model share the other core.
    let voice = PiperVoice::load(&onnx, &ort_lib, 1)
        .with_context(|| format!("loading Piper voice {}", onnx.display()))?;
    tracing::info!(voice = %onnx.display(), ms = started.elapsed().as_millis() as u64, "voice loaded");
    Ok(voice)
}

/// The acoustic wake word `[wake] wake_word` names, when its model is
/// installed; in `mode = "wake"` its absence is an error that says how to
/// fetch it (the daemon then hears nothing until it is there).
pub fn wake_word(
    config: &HarkConfig,
    store: &ModelStore,
) -> Option<Box<dyn hark_endpoint::WakeWordDetector>> {
    let wake = &config.wake;
    let wanted = config.daemon.mode == hark_session::ListenMode::Wake;
    let Some(spec) = store::wake_word_spec(&wake.wake_word) else {
        if wanted {
            tracing::error!(
                "[wake] wake_word = {:?} is not a wake word Hark can fetch (hey_jarvis, alexa, hey_mycroft)",
                wake.wake_word
            );
        }
        return None;
    };
    let loaded = (|| -> anyhow::Result<hark_endpoint::OpenWakeWord> {
        let keyword = installed(store, spec, "wake word model")?;
        let companion = |name: &str| store.root().join(name);
        let files = hark_endpoint::WakeWordFiles {
            melspectrogram: companion("melspectrogram.onnx"),
            embedding: companion("embedding_model.onnx"),
            keyword,
        };
        let ort_lib = installed(store, &ONNXRUNTIME, "ONNX Runtime")?;
        Ok(hark_endpoint::OpenWakeWord::load(
            &wake.wake_phrase(),
            &files,
            &ort_lib,
            wake.threshold as f32,
        )?)
    })();
    match loaded {
        Ok(detector) => {
            tracing::info!(wake_word = %wake.wake_word, "wake word model loaded");
            Some(Box::new(detector))
        }
        Err(e) if wanted => {
            tracing::error!(
                "{e:#}; in wake mode Hark answers only after a reply until it is installed"
            );
            None
        }
        Err(_) => None,
    }
}

/// Smart Turn from the store, its hash checked (8 MB: a few ms), when
/// `[turn]` asks for it. A model that is missing, corrupt or fails to load
/// is not fatal: Hark says why and ends turns on silence instead.
pub fn turn_detector(config: &EndpointConfig, store: &ModelStore) -> Option<Box<dyn TurnDetector>> {
    if config.detector != Detector::Smart {
        return None;
    }
    match smart_turn(store) {
        Ok(model) => Some(Box::new(model)),
        Err(e) => {
            tracing::warn!(
                "{e:#}; ending turns on a fixed silence instead (vad.end_silence_ms), \
                 as with [turn] detector = \"silence\""
            );
            None
        }
    }
}

fn smart_turn(store: &ModelStore) -> anyhow::Result<SmartTurn> {
    let path = store.path_of(&SMART_TURN);
    if let Some(damaged) = damage(store, &SMART_TURN)? {
        let problem = match damaged {
            Verification::Missing => "is not installed".into(),
            damaged => describe(damaged),
        };
        bail!(
            "the Smart Turn model {} {problem} (run `hark models fetch` to install it)",
            path.display()
        );
    }
    let ort_lib = installed(store, &ONNXRUNTIME, "ONNX Runtime")?;
    Ok(SmartTurn::load(&path, &ort_lib)?)
}

/// What is wrong with the model files `config` names, checked in full
/// (size and sha256 for the catalogue's, existence for a user's own
/// files): one message per damaged or missing file, naming it. `Reload`
/// asks, so the user hears of a broken file while the models loaded at
/// start still serve, not at the next start.
pub fn problems(config: &HarkConfig, store: &ModelStore) -> Vec<String> {
    let mut needed: Vec<(&str, Result<&'static ModelSpec, PathBuf>)> = Vec::new();
    let by_name = |name: &str| store::spec_by_name(name).ok_or_else(|| PathBuf::from(name));
    if config.stt.backend == SttBackend::Local {
        needed.push(("Whisper model", by_name(&config.stt.model)));
    }
    if config.llm.backend == LlmBackend::Local {
        needed.push(("language model", by_name(&config.llm.model)));
    }
    if config.voice.backend == VoiceBackend::Local {
        needed.push(("Piper voice", by_name(&config.voice.voice)));
    }
    if config.voice.backend == VoiceBackend::Local || config.turn.detector == Detector::Smart {
        needed.push(("ONNX Runtime", Ok(&ONNXRUNTIME)));
    }
    if config.turn.detector == Detector::Smart {
        needed.push(("Smart Turn model", Ok(&SMART_TURN)));
    }
    let advice = "the models loaded at start keep serving; run `hark models fetch` to reinstall it";
    needed
        .into_iter()
        .filter_map(|(what, model)| match model {
            Ok(spec) => {
                let problem = match damage(store, spec) {
                    Ok(None) => return None,
                    Ok(Some(damaged)) => describe(damaged),
                    Err(e) => format!("cannot be read: {e:#}"),
                };
                let path = store.path_of(spec);
                Some(format!(
                    "{what} file {} {problem}; {advice}",
                    path.display()
                ))
            }
            Err(path) if path.is_file() => None,
            Err(path) => Some(format!(
                "{what} file {} is missing; the models loaded at start keep serving",
                path.display()
            )),
        })
        .collect()
}

/// Everything a conversation session runs.
pub fn session(config: &HarkConfig, store: &ModelStore) -> anyhow::Result<Models> {
    Ok(Models {
        stt: speech_to_text(&config.stt, store)?,
        llm: llm(&config.llm, store)?,
        voice: voice(&config.voice, store)?,
        turn: turn_detector(&config.turn, store),
        wake: wake_word(config, store),
    })
}
