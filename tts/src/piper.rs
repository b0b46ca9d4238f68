//! Piper VITS inference through ONNX Runtime (the `ort` crate, loaded at run
//! time from a `libonnxruntime.so` we are given a path to).
//!
//! ONNX Runtime is loaded process-wide exactly once: `ort` keeps the library
//! in a global, so the first successfully loaded path wins for the life of the
//! process. Before handing a path to `ort` it is checked and `dlopen`ed here,
//! because `ort` 2.0.0-rc.12 can hang forever instead of failing when the
//! library is missing or unloadable.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ort::session::Session;
use ort::value::Tensor;

use crate::config::VoiceConfig;
use crate::phonemes::{ends_sentence, phoneme_ids, phonemize};
use crate::{espeak, TtsError};

/// Pause inserted between sentences (each sentence is a separate inference,
/// as in Piper, to bound latency and memory on long replies).
const DEFAULT_SENTENCE_SILENCE_S: f32 = 0.2;

// glibc ≥ 2.34 exports these from libc itself, which std already links.
extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
}
const RTLD_NOW: c_int = 2;

/// `OrtApiBase` from onnxruntime_c_api.h: the only struct layout we rely on.
#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(version: u32) -> *const c_void,
    get_version_string: unsafe extern "C" fn() -> *const c_char,
}

/// Path ONNX Runtime was loaded from, once it has been.
static ORT_LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

fn last_dlerror() -> String {
    // SAFETY: dlerror returns NULL or a thread-local NUL-terminated string.
    let err = unsafe { dlerror() };
    if err.is_null() {
        "unknown dlopen error".into()
    } else {
        unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Checks that `lib` is a loadable ONNX Runtime new enough for `ort`, and
/// returns its version string. Never calls into `ort`.
fn probe_ort_library(lib: &Path) -> Result<String, TtsError> {
    let load_err = |message: String| TtsError::OrtLibLoad {
        path: lib.to_path_buf(),
        message,
    };
    if !lib.is_file() {
        return Err(TtsError::OrtLibMissing {
            path: lib.to_path_buf(),
        });
    }
    let c_path = CString::new(lib.as_os_str().as_bytes())
        .map_err(|_| load_err("path contains a NUL byte".into()))?;
    // SAFETY: plain dlopen of a shared object. The handle is deliberately
    // never closed: `ort` dlopens the same file next, and unloading ONNX
    // Runtime while it is in use would be fatal.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        return Err(load_err(last_dlerror()));
    }
    let symbol = unsafe { dlsym(handle, c"OrtGetApiBase".as_ptr()) };
    if symbol.is_null() {
        return Err(load_err(format!(
            "no OrtGetApiBase symbol, not an ONNX Runtime library ({})",
            last_dlerror()
        )));
    }
    // SAFETY: OrtGetApiBase has this signature in every ONNX Runtime release
    // and returns a pointer to a static struct.
    let version = unsafe {
        let get_base: unsafe extern "C" fn() -> *const OrtApiBase = std::mem::transmute(symbol);
        let base = get_base();
        if base.is_null() {
            return Err(load_err("OrtGetApiBase returned NULL".into()));
        }
        CStr::from_ptr(((*base).get_version_string)())
            .to_string_lossy()
            .into_owned()
    };
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if !version.starts_with("1.") || minor < ort::MINOR_VERSION {
        return Err(load_err(format!(
            "ONNX Runtime {version} is too old; ort needs >= 1.{}",
            ort::MINOR_VERSION
        )));
    }
    Ok(version)
}

/// Loads ONNX Runtime from `lib` into `ort` once per process.
fn ensure_ort(lib: &Path) -> Result<(), TtsError> {
    // Always validate the requested path, even if a runtime is already
    // loaded, so a wrong configuration is reported rather than masked.
    let version = probe_ort_library(lib)?;
    let mut loaded = ORT_LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(previous) = loaded.as_ref() {
        if previous != lib {
            tracing::warn!(
                requested = %lib.display(),
                loaded = %previous.display(),
                "ONNX Runtime is already loaded in this process; keeping the first one"
            );
        }
        return Ok(());
    }
    let builder = ort::init_from(lib).map_err(|e| TtsError::OrtLibLoad {
        path: lib.to_path_buf(),
        message: e.to_string(),
    })?;
    // Returns false if someone else already committed an environment, which
    // is fine: theirs is used.
    let _ = builder.with_name("hark-tts").commit();
    tracing::info!(path = %lib.display(), %version, "loaded ONNX Runtime");
    *loaded = Some(lib.to_path_buf());
    Ok(())
}

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
        ensure_ort(ort_lib)?;

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
