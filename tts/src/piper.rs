//! Piper VITS inference through ONNX Runtime (the `ort` crate, loaded at run
//! time from a `libonnxruntime.so` we are given a path to).
//!
//! ONNX Runtime is loaded once per process by `hark_onnx::ensure_runtime`,
//! which checks the library first (ort hangs on one it cannot load).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::Session;
use ort::value::Tensor;

use crate::config::VoiceConfig;
use crate::phonemes::{ends_sentence, phoneme_ids, phonemize};
use crate::{espeak, TtsError};

/// Pause inserted between sentences (each sentence is a separate inference,
/// as in Piper, to bound latency and memory on long replies).
const DEFAULT_SENTENCE_SILENCE_S: f32 = 0.2;

/// A loaded Piper voice, ready to synthesize.
///
/// Synthesis takes `&mut self` (ONNX Runtime sessions run one request at a
/// time here); phonemization goes through espeak-ng's global lock.
pub struct PiperVoice {
    config: VoiceConfig,
    session: Session,
    /// Multi-speaker models take a speaker id; we always use speaker 0.
    has_sid: bool,
    sentence_silence_s: f32,
}

impl std::fmt::Debug for PiperVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperVoice")
            .field("sample_rate", &self.config.sample_rate)
            .field("espeak_voice", &self.config.espeak_voice)
            .field("has_sid", &self.has_sid)
            .finish_non_exhaustive()
    }
}

/// `<voice>.onnx` → `<voice>.onnx.json`, Piper's naming convention.
pub(crate) fn config_path(onnx: &Path) -> PathBuf {
    let mut s = onnx.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

impl PiperVoice {
    /// Loads a Piper voice. `onnx` is the voice model; its config is
    /// `<onnx>.json` next to it; `ort_lib` is the libonnxruntime.so to load;
    /// `threads` is ONNX Runtime's intra-op thread count (0 is treated as 1).
    ///
    /// Cheap checks run first (files, config, espeak voice) so that a
    /// misconfiguration is reported before the model is read.
    pub fn load(onnx: &Path, ort_lib: &Path, threads: usize) -> Result<Self, TtsError> {
        let started = Instant::now();
        if !onnx.is_file() {
            return Err(TtsError::ModelMissing {
                path: onnx.to_path_buf(),
            });
        }
        let config = VoiceConfig::from_file(&config_path(onnx))?;
        espeak::check_voice(&config.espeak_voice)?;
        hark_onnx::ensure_runtime(ort_lib).map_err(|e| match e {
            hark_onnx::OnnxError::Missing { path } => TtsError::OrtLibMissing { path },
            hark_onnx::OnnxError::Load { path, message } => TtsError::OrtLibLoad { path, message },
        })?;

        let model_err = |message: String| TtsError::ModelLoad {
            path: onnx.to_path_buf(),
            message,
        };
        let threads = threads.max(1);
        let session = Session::builder()
            .map_err(|e| model_err(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| model_err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| model_err(e.to_string()))?
            // Spinning worker threads would steal CPU from Whisper and the
            // LLM on a small machine between utterances.
            .with_intra_op_spinning(false)
            .map_err(|e| model_err(e.to_string()))?
            .commit_from_file(onnx)
            .map_err(|e| model_err(e.to_string()))?;

        let input_names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input", "input_lengths", "scales"] {
            if !input_names.contains(&required) {
                return Err(model_err(format!(
                    "not a Piper model: no {required:?} input (inputs: {input_names:?})"
                )));
            }
        }
        if session.outputs().is_empty() {
            return Err(model_err("model has no outputs".into()));
        }
        let has_sid = input_names.contains(&"sid");
        tracing::info!(
            model = %onnx.display(),
            sample_rate = config.sample_rate,
            threads,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded Piper voice"
        );
        Ok(Self {
            config,
            session,
            has_sid,
            sentence_silence_s: DEFAULT_SENTENCE_SILENCE_S,
        })
    }

    /// Output sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// The parsed `.onnx.json`.
    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// Silence inserted between sentences, in seconds (default 0.2).
    pub fn set_sentence_silence(&mut self, seconds: f32) {
        self.sentence_silence_s = seconds.max(0.0);
    }

    /// Sets Piper's `length_scale` (phoneme durations: 2.0 speaks half as
    /// fast); the voice's own value is `config().length_scale` until then.
    /// Kept between 0.1 and 10.
    pub fn set_length_scale(&mut self, scale: f32) {
        if scale.is_finite() {
            self.config.length_scale = scale.clamp(0.1, 10.0);
        }
    }

    /// Synthesizes `text` to mono f32 samples in [-1, 1] at
    /// [`sample_rate`](Self::sample_rate). Text without any phonemes
    /// (empty, whitespace, punctuation only) gives an empty Vec.
    pub fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
        let clauses = phonemize(text, &self.config.espeak_voice)?;
        let mut sentences: Vec<String> = Vec::new();
        let mut current = String::new();
        for clause in clauses {
            current.push_str(&clause);
            if ends_sentence(&clause) {
                sentences.push(std::mem::take(&mut current));
            }
        }
        if !current.trim().is_empty() {
            sentences.push(current);
        }

        let silence = (self.sentence_silence_s * self.config.sample_rate as f32) as usize;
        let mut audio = Vec::new();
        for (i, sentence) in sentences.iter().enumerate() {
            let ids = phoneme_ids(sentence.trim_end(), &self.config.phoneme_id_map);
            // BOS + pad + EOS alone is 3 ids; nothing to say.
            if ids.len() <= 3 {
                continue;
            }
            if i > 0 && !audio.is_empty() {
                audio.resize(audio.len() + silence, 0.0);
            }
            tracing::debug!(phonemes = %sentence, ids = ids.len(), "synthesizing sentence");
            let samples = self.infer(ids)?;
            audio.extend(samples);
        }
        Ok(audio)
    }

    /// One forward pass for one sentence's ids.
    fn infer(&mut self, ids: Vec<i64>) -> Result<Vec<f32>, TtsError> {
        let infer_err = |e: ort::Error| TtsError::Inference(e.to_string());
        let n = ids.len();
        let mut inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> = vec![
            (
                "input",
                Tensor::from_array(([1usize, n], ids))
                    .map_err(infer_err)?
                    .into(),
            ),
            (
                "input_lengths",
                Tensor::from_array(([1usize], vec![n as i64]))
                    .map_err(infer_err)?
                    .into(),
            ),
            (
                "scales",
                Tensor::from_array((
                    [3usize],
                    vec![
                        self.config.noise_scale,
                        self.config.length_scale,
                        self.config.noise_w,
                    ],
                ))
                .map_err(infer_err)?
                .into(),
            ),
        ];
        if self.has_sid {
            inputs.push((
                "sid",
                Tensor::from_array(([1usize], vec![0i64]))
                    .map_err(infer_err)?
                    .into(),
            ));
        }
        let outputs = self.session.run(inputs).map_err(infer_err)?;
        let (_shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(infer_err)?;
        let mut non_finite = 0usize;
        let samples = data
            .iter()
            .map(|&s| {
                if s.is_finite() {
                    s.clamp(-1.0, 1.0)
                } else {
                    non_finite += 1;
                    0.0
                }
            })
            .collect();
        if non_finite > 0 {
            tracing::warn!(non_finite, "Piper output had non-finite samples; zeroed");
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    const CONFIG: &str = r#"{
        "audio": {"sample_rate": 22050},
        "espeak": {"voice": "en-us"},
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2]}
    }"#;

    /// Runs `f` on a thread and fails the test if it has not returned in
    /// time: a broken ONNX Runtime path must never hang voice loading.
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("PiperVoice::load hung instead of returning an error")
    }

    /// A directory with a fake model and a valid config next to it.
    fn fake_voice() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("voice.onnx");
        std::fs::write(&onnx, b"not really onnx").unwrap();
        std::fs::write(config_path(&onnx), CONFIG).unwrap();
        (dir, onnx)
    }

    #[test]
    fn voice_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<PiperVoice>();
    }

    #[test]
    fn missing_model_is_named() {
        let err = PiperVoice::load(
            Path::new("/nonexistent/en_US-x.onnx"),
            Path::new("/nonexistent/libonnxruntime.so"),
            1,
        )
        .unwrap_err();
        assert!(matches!(err, TtsError::ModelMissing { .. }));
        assert!(
            err.to_string().contains("/nonexistent/en_US-x.onnx"),
            "{err}"
        );
    }

    #[test]
    fn missing_json_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("voice.onnx");
        std::fs::write(&onnx, b"x").unwrap();
        let err = PiperVoice::load(&onnx, Path::new("/nonexistent/lib.so"), 1).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TtsError::ConfigMissing { .. }));
        assert!(msg.contains("ONNX voice without its .json"), "{msg}");
        assert!(msg.contains("voice.onnx.json"), "{msg}");
    }

    #[test]
    fn missing_ort_library_fails_fast() {
        let (_dir, onnx) = fake_voice();
        let lib = PathBuf::from("/nonexistent/libonnxruntime.so.1.24.4");
        let err = within(20, move || PiperVoice::load(&onnx, &lib, 1).unwrap_err());
        assert!(matches!(err, TtsError::OrtLibMissing { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("/nonexistent/libonnxruntime.so.1.24.4"),
            "{err}"
        );
    }

    #[test]
    fn unloadable_ort_library_reports_dlerror() {
        let (dir, onnx) = fake_voice();
        let lib = dir.path().join("libonnxruntime.so.1.24.4");
        std::fs::write(&lib, b"this is not an ELF file").unwrap();
        let lib2 = lib.clone();
        let err = within(20, move || PiperVoice::load(&onnx, &lib2, 1).unwrap_err());
        let msg = err.to_string();
        assert!(matches!(err, TtsError::OrtLibLoad { .. }), "{msg}");
        assert!(msg.contains(&lib.display().to_string()), "{msg}");
        // dlerror's text, e.g. "invalid ELF header" / "file too short".
        assert!(msg.contains("ELF") || msg.contains("too short"), "{msg}");
    }

    #[test]
    fn non_ort_library_is_rejected() {
        // A real shared object without OrtGetApiBase.
        let (_dir, onnx) = fake_voice();
        let libc = [
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/usr/lib/x86_64-linux-gnu/libm.so.6",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
        let Some(libm) = libc else { return };
        let err = within(20, move || PiperVoice::load(&onnx, &libm, 1).unwrap_err());
        assert!(err.to_string().contains("OrtGetApiBase"), "{err}");
    }
}
