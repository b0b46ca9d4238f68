//! Loading models: every command that needs Whisper, the language model or
//! the voice gets it here, from a configuration section and the model
//! store, with an error that tells the user what to do.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hark_llm::{LanguageModel, LlmConfig};
use hark_models::store::{
    self, ModelSpec, ModelStore, ONNXRUNTIME, PIPER_JOE_MEDIUM, SMOLLM2_135M,
};
use hark_session::Models;
use hark_stt::{SttConfig, WhisperStt};
use hark_tts::{PiperVoice, TtsConfig};

use crate::config::HarkConfig;

/// The store's file for `spec`, checked to exist and to have the right size
/// (free, and it catches the usual damage, an interrupted copy, before a
/// loader reads garbage; the full hash is `hark models list`'s job). `what`
/// names the kind of model in messages ("Whisper model", "Piper voice").
pub fn installed(store: &ModelStore, spec: &ModelSpec, what: &str) -> anyhow::Result<PathBuf> {
    let path = store.path_of(spec);
    let Ok(meta) = std::fs::metadata(&path) else {
        let extra = if spec.default {
            String::new()
        } else {
            format!(" {}", spec.name)
        };
        bail!(
            "{what} {} is not installed (expected {}); run `hark models fetch`{extra}",
            spec.name,
            path.display()
        );
    };
    if meta.len() != spec.size {
        bail!(
            "{what} file {} is corrupt: {} bytes, expected {}; run `hark models fetch` to reinstall it",
            path.display(),
            meta.len(),
            spec.size
        );
    }
    Ok(path)
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

/// The language model as `config` says: a catalogue name or a GGUF path.
pub fn llm(config: &LlmConfig, store: &ModelStore) -> anyhow::Result<LanguageModel> {
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

/// The Piper voice as `config` says, on ONNX Runtime from the store.
pub fn voice(config: &TtsConfig, store: &ModelStore) -> anyhow::Result<PiperVoice> {
    let onnx = if config.voice == PIPER_JOE_MEDIUM.name {
        installed(store, &PIPER_JOE_MEDIUM, "Piper voice")?
    } else {
        PathBuf::from(&config.voice)
    };
    let ort_lib = installed(store, &ONNXRUNTIME, "ONNX Runtime")?;
    let started = std::time::Instant::now();
    // One ONNX thread: Whisper and the language model share the other core.
    let voice = PiperVoice::load(&onnx, &ort_lib, 1)
        .with_context(|| format!("loading Piper voice {}", onnx.display()))?;
    tracing::info!(voice = %onnx.display(), ms = started.elapsed().as_millis() as u64, "voice loaded");
    Ok(voice)
}

/// Everything a conversation session runs.
pub fn session(config: &HarkConfig, store: &ModelStore) -> anyhow::Result<Models> {
    Ok(Models {
        stt: Box::new(whisper(&config.stt, store)?),
        llm: Box::new(llm(&config.llm, store)?),
        voice: Box::new(voice(&config.voice, store)?),
    })
}
