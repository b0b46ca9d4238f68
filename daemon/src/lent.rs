//! Hark's voice lent to other programs: Home Assistant over Wyoming
//! (`wyoming.rs`) and desktop apps over `org.freedesktop.Speech.Provider`
//! (`speech_provider.rs`).
//!
//! The voice is not the conversation's: a Piper voice of its own, loaded
//! at its first request, so another program never queues behind Hark's
//! reply (nor the other way round), and a machine pays nothing for a
//! voice nobody asks for. It serves one request at a time; in the daemon
//! both servers share the one copy. Each server also runs alone (`hark
//! wyoming serve`, `hark speech-provider`) [`until_stopped`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

use hark_models::store::ModelStore;
use hark_tts::{PiperVoice, TtsConfig, VoiceConfig};

/// Runs `work` on the engine in `slot`, loading it first if need be. A
/// panic fails this request and drops the engine, to be loaded afresh.
pub fn with_engine<E, T>(
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

/// The Piper voice `[voice]` names, for other programs.
pub struct LentVoice {
    config: TtsConfig,
    store: ModelStore,
    /// Piper's name for it (`en_US-joe-medium`), the one clients ask for.
    name: String,
    voice: Mutex<Option<PiperVoice>>,
}

impl LentVoice {
    pub fn new(config: &TtsConfig, store: &ModelStore) -> Self {
        Self {
            config: config.clone(),
            store: store.clone(),
            name: crate::models::wyoming_voice_name(&config.voice),
            voice: Mutex::new(None),
        }
    }

    /// Piper's name for the voice: `LANGUAGE_REGION-SPEAKER-QUALITY`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The voice's `.onnx.json` (its rate, its espeak language), read
    /// without loading the model: a list of voices must not wait for one.
    pub fn describe(&self) -> anyhow::Result<VoiceConfig> {
        let onnx = crate::models::piper_file(&self.config, &self.store)?;
        let mut json = onnx.into_os_string();
        json.push(".json");
        Ok(VoiceConfig::from_file(&PathBuf::from(json))?)
    }

    /// `text` spoken `speed` times as fast as the voice's own pace (Piper's
    /// `length_scale` divided by it): mono samples and their rate.
    pub fn synthesize(&self, text: &str, speed: f32) -> Result<(Vec<f32>, u32), String> {
        with_engine(
            &self.voice,
            || crate::models::piper(&self.config, &self.store),
            |voice| {
                let own = voice.config().length_scale;
                if speed != 1.0 {
                    voice.set_length_scale(own / speed);
                }
                let audio = voice.synthesize(text);
                voice.set_length_scale(own);
                let rate = voice.sample_rate();
                audio.map(|audio| (audio, rate)).map_err(|e| e.to_string())
            },
        )
    }
}

/// Waits for SIGTERM or Ctrl-C: how a server lending Hark's engines runs
/// when it runs alone.
pub async fn until_stopped() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
