//! Resolving `--model` to a file and loading Whisper with an error message
//! that tells the user what to do.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hark_models::store::{self, ModelStore};
use hark_stt::{SttConfig, WhisperStt};

use crate::ModelArgs;

/// The file `--model` names: a catalogue entry in the store, or a path.
pub fn resolve_model(name: &str, store: &ModelStore) -> anyhow::Result<PathBuf> {
    let Some(spec) = store::spec_by_name(name) else {
        let path = PathBuf::from(name);
        if !path.is_file() {
            bail!(
                "Whisper model '{}' is neither a catalogue name ({}) nor an existing file",
                name,
                names()
            );
        }
        return Ok(path);
    };
    crate::model_files::installed(store, spec, "Whisper model")
}

fn names() -> String {
    let names: Vec<&str> = store::CATALOGUE.iter().map(|s| s.name).collect();
    names.join(", ")
}

/// Loads Whisper for `args`. `utterance_mode` shrinks the window to each
/// utterance (listening); off, whole files get the full window and timed
/// segments (transcribing).
pub fn load_whisper(
    args: &ModelArgs,
    store: &ModelStore,
    utterance_mode: bool,
) -> anyhow::Result<WhisperStt> {
    let mut config = SttConfig::default();
    if let Some(threads) = args.threads {
        config.threads = threads.max(1);
    }
    config.shrink_audio_ctx = utterance_mode;
    // Listening pays for every beam in reply latency; files are read once
    // and want the best text. On LibriVox + JFK, width 3 kept listening WER at
    // 0.032 with a 3 s utterance in ~350 ms; whole files needed width 5.
    config.beam_size = args
        .beam_size
        .unwrap_or(if utterance_mode { 3 } else { 5 })
        .max(1);
    load_whisper_with(&args.model, config, store)
}

/// Loads the Whisper model `name` names (catalogue name or path) with
/// `config`.
pub fn load_whisper_with(
    name: &str,
    config: SttConfig,
    store: &ModelStore,
) -> anyhow::Result<WhisperStt> {
    let path = resolve_model(name, store)?;
    let started = std::time::Instant::now();
    let stt = WhisperStt::load(&path, config).with_context(|| {
        format!(
            "loading Whisper model {} (run `hark models fetch` to reinstall the defaults)",
            path.display()
        )
    })?;
    tracing::info!(model = %path.display(), ms = started.elapsed().as_millis() as u64, "Whisper model loaded");
    Ok(stt)
}
