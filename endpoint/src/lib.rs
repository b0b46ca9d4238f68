//! Has the user finished? Hark's semantic end of turn.
//!
//! A silence of 300 ms says only that the user stopped; "I'd like to know
//! … the capital of France" pauses for longer than that in the middle.
//! Pipecat's Smart Turn v3 (a small Whisper-encoder classifier, BSD-2)
//! hears from the last 8 s of speech whether the turn is complete, so Hark
//! can answer a finished question after a short pause and wait through a
//! pause inside a sentence.
//!
//! - [`features`]: the Whisper-style log-mel input, in Rust.
//! - [`SmartTurn`]: the model on ONNX Runtime (`hark-onnx`), behind the
//!   [`TurnDetector`] seam (tests use fakes).
//! - [`read_words`]: the words' side: a transcript that stops on
//!   "the" or "tell me" is unfinished however final the pause sounded; one
//!   or two words are a fragment that vouches for nothing.
//! - [`EndpointConfig`]: the `[turn]` section: which detector, and when to
//!   ask it.

pub mod features;
mod settings;
pub mod wake;
mod words;

use std::path::{Path, PathBuf};
use std::time::Instant;

use hark_onnx::ort::session::Session;
use hark_onnx::ort::value::Tensor;

pub use settings::{Detector, EndpointConfig};
pub use wake::{OpenWakeWord, WakeWordDetector, WakeWordFiles};
pub use words::{read as read_words, sounds_unfinished, Reading};

use features::{last_window, LogMel, N_FRAMES, N_MELS};

/// Anything that judges whether speech so far is a finished turn.
pub trait TurnDetector: Send {
    /// The probability (0 to 1) that `speech` (16 kHz mono, the turn so
    /// far, most recent last) is a complete turn.
    fn complete(&mut self, speech: &[f32]) -> Result<f32, EndpointError>;
}

/// Why Smart Turn could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("Smart Turn model not found: {}", path.display())]
    ModelMissing { path: PathBuf },
    #[error(transparent)]
    Runtime(#[from] hark_onnx::OnnxError),
    #[error("cannot load the Smart Turn model {}: {message}", path.display())]
    ModelLoad { path: PathBuf, message: String },
    #[error("Smart Turn inference failed: {0}")]
    Inference(String),
}

/// Smart Turn v3 on ONNX Runtime.
pub struct SmartTurn {
    session: Session,
    features: LogMel,
    input: String,
}

impl SmartTurn {
    /// Loads `model` on the ONNX Runtime at `ort_lib`, with one thread
    /// (Whisper and the language model have the rest).
    pub fn load(model: &Path, ort_lib: &Path) -> Result<Self, EndpointError> {
        if !model.is_file() {
            return Err(EndpointError::ModelMissing {
                path: model.to_owned(),
            });
        }
        hark_onnx::ensure_runtime(ort_lib)?;
        let load_err = |e: &dyn std::fmt::Display| EndpointError::ModelLoad {
            path: model.to_owned(),
            message: e.to_string(),
        };
        let started = Instant::now();
        let session = hark_onnx::single_thread_session(model).map_err(|e| load_err(&e))?;
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_owned())
            .unwrap_or_default();
        if input != "input_features" || session.outputs().is_empty() {
            return Err(EndpointError::ModelLoad {
                path: model.to_owned(),
                message: format!(
                    "not a Smart Turn model: inputs {:?}, {} outputs",
                    session
                        .inputs()
                        .iter()
                        .map(|i| i.name())
                        .collect::<Vec<_>>(),
                    session.outputs().len()
                ),
            });
        }
        tracing::info!(model = %model.display(), ms = started.elapsed().as_millis() as u64, "Smart Turn loaded");
        Ok(Self {
            session,
            features: LogMel::new(),
            input,
        })
    }
}

impl TurnDetector for SmartTurn {
    fn complete(&mut self, speech: &[f32]) -> Result<f32, EndpointError> {
        let infer_err = |e: hark_onnx::ort::Error| EndpointError::Inference(e.to_string());
        let features = self.features.compute(&last_window(speech));
        let tensor =
            Tensor::from_array(([1usize, N_MELS, N_FRAMES], features)).map_err(infer_err)?;
        let outputs = self
            .session
            .run(vec![(
                self.input.as_str(),
                hark_onnx::ort::session::SessionInputValue::from(tensor),
            )])
            .map_err(infer_err)?;
        let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(infer_err)?;
        let probability = data
            .first()
            .copied()
            .ok_or_else(|| EndpointError::Inference("the model returned nothing".into()))?;
        if !probability.is_finite() {
            return Err(EndpointError::Inference(format!(
                "the model returned {probability}"
            )));
        }
        Ok(probability.clamp(0.0, 1.0))
    }
}
