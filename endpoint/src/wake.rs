//! A wake word heard acoustically: openWakeWord's models (mel
//! spectrogram → speech embedding → keyword classifier, all ONNX) run on
//! Hark's ONNX Runtime, so Whisper need not run on every utterance.
//!
//! The stream is cut in chunks of 1280 samples (80 ms at 16 kHz), as
//! openWakeWord's own `AudioFeatures` does: each chunk's mel frames are
//! computed with 480 samples of the previous audio for context, the
//! latest 76 mel frames make one 96-value embedding, and the keyword model
//! reads the latest 16 embeddings (1.28 s). Scores over the threshold
//! repeat for several chunks in a row: one detection is reported, then
//! none for [`REFRACTORY_CHUNKS`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use hark_onnx::ort::session::{Session, SessionInputValue};
use hark_onnx::ort::value::Tensor;

use crate::EndpointError;

/// Samples per chunk (80 ms).
pub const CHUNK: usize = 1280;
/// Earlier samples each chunk's mel frames also read.
const MEL_CONTEXT: usize = 480;
const MEL_BINS: usize = 32;
/// Mel frames per embedding.
const EMBEDDING_WINDOW: usize = 76;
const EMBEDDING_SIZE: usize = 96;
/// Embeddings the keyword model reads.
const KEYWORD_WINDOW: usize = 16;
/// Chunks after a detection in which no other is reported (1 s).
pub const REFRACTORY_CHUNKS: usize = 12;
/// Chunks at the start whose scores are not trusted (the buffers still
/// hold their starting values), as openWakeWord does.
const WARM_UP_CHUNKS: usize = 5;

/// Hears a wake word in a stream of 16 kHz mono audio.
pub trait WakeWordDetector: Send {
    /// The phrase it listens for ("hey jarvis").
    fn phrase(&self) -> &str;
    /// More audio; the score of a detection that ends in it, if any.
    fn push(&mut self, samples: &[f32]) -> Result<Option<f32>, EndpointError>;
}

/// The three model files of one wake word.
#[derive(Debug, Clone)]
pub struct WakeWordFiles {
    pub melspectrogram: PathBuf,
    pub embedding: PathBuf,
    pub keyword: PathBuf,
}

/// openWakeWord on ONNX Runtime.
pub struct OpenWakeWord {
    phrase: String,
    threshold: f32,
    mel: Model,
    embedding: Model,
    keyword: Model,
    /// Samples not yet making a whole chunk.
    pending: Vec<f32>,
    /// The last chunk's samples and its context, at int16 scale.
    context: Vec<f32>,
    mel_frames: VecDeque<[f32; MEL_BINS]>,
    embeddings: VecDeque<[f32; EMBEDDING_SIZE]>,
    chunks: usize,
    /// Scores looked at by `push`, and the first one it may report again.
    scored: usize,
    quiet_until: usize,
}

/// One ONNX model and its input's name.
struct Model {
    session: Session,
    input: String,
}

impl Model {
    fn load(path: &Path) -> Result<Self, EndpointError> {
        if !path.is_file() {
            return Err(EndpointError::ModelMissing {
                path: path.to_owned(),
            });
        }
        let load_err = |e: &dyn std::fmt::Display| EndpointError::ModelLoad {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let session = hark_onnx::single_thread_session(path).map_err(|e| load_err(&e))?;
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_owned())
            .ok_or_else(|| load_err(&"the model has no input"))?;
        Ok(Self { session, input })
    }

    /// Runs the model on `data` shaped `shape`; its first output, flat.
    fn run(&mut self, shape: Vec<usize>, data: Vec<f32>) -> Result<Vec<f32>, EndpointError> {
        let err = |e: hark_onnx::ort::Error| EndpointError::Inference(e.to_string());
        let tensor = Tensor::from_array((shape, data)).map_err(err)?;
        let outputs = self
            .session
            .run(vec![(self.input.as_str(), SessionInputValue::from(tensor))])
            .map_err(err)?;
        let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        Ok(data.to_vec())
    }
}

impl OpenWakeWord {
    /// Loads the wake word `phrase` from `files` on the ONNX Runtime at
    /// `ort_lib`; a score of `threshold` or more is a detection.
    pub fn load(
        phrase: &str,
        files: &WakeWordFiles,
        ort_lib: &Path,
        threshold: f32,
    ) -> Result<Self, EndpointError> {
        hark_onnx::ensure_runtime(ort_lib)?;
        let mut this = Self {
            phrase: phrase.to_owned(),
            threshold,
            mel: Model::load(&files.melspectrogram)?,
            embedding: Model::load(&files.embedding)?,
            keyword: Model::load(&files.keyword)?,
            pending: Vec::with_capacity(CHUNK),
            context: Vec::new(),
            mel_frames: std::iter::repeat_n([1.0; MEL_BINS], EMBEDDING_WINDOW).collect(),
            embeddings: VecDeque::new(),
            chunks: 0,
            scored: 0,
            quiet_until: 0,
        };
        this.fill_embeddings()?;
        Ok(this)
    }

    /// The embeddings start as openWakeWord 0.4's do: those of silence
    /// (all alike).
    fn fill_embeddings(&mut self) -> Result<(), EndpointError> {
        // Just enough samples for 76 mel frames (512-sample windows, hop 160).
        let silence = vec![0.0; (EMBEDDING_WINDOW - 1) * 160 + 512];
        let frames = self.mel_of(&silence)?;
        let embedding = self.embed(&frames[frames.len().saturating_sub(EMBEDDING_WINDOW)..])?;
        self.embeddings = std::iter::repeat_n(embedding, KEYWORD_WINDOW).collect();
        Ok(())
    }

    /// Mel frames of `samples` (int16 scale), transformed as openWakeWord
    /// does (x / 10 + 2).
    fn mel_of(&mut self, samples: &[f32]) -> Result<Vec<[f32; MEL_BINS]>, EndpointError> {
        let flat = self.mel.run(vec![1, samples.len()], samples.to_vec())?;
        Ok(flat
            .chunks_exact(MEL_BINS)
            .map(|row| {
                let mut frame = [0.0; MEL_BINS];
                for (out, x) in frame.iter_mut().zip(row) {
                    *out = x / 10.0 + 2.0;
                }
                frame
            })
            .collect())
    }

    fn embed(
        &mut self,
        frames: &[[f32; MEL_BINS]],
    ) -> Result<[f32; EMBEDDING_SIZE], EndpointError> {
        let data: Vec<f32> = frames.iter().flatten().copied().collect();
        let out = self
            .embedding
            .run(vec![1, EMBEDDING_WINDOW, MEL_BINS, 1], data)?;
        let mut embedding = [0.0; EMBEDDING_SIZE];
        if out.len() < EMBEDDING_SIZE {
            return Err(EndpointError::Inference(format!(
                "the embedding model gave {} values, not {EMBEDDING_SIZE}",
                out.len()
            )));
        }
        embedding.copy_from_slice(&out[..EMBEDDING_SIZE]);
        Ok(embedding)
    }

    /// More audio (16 kHz, -1..1): the score of every chunk it completes
    /// (0 for the first chunks, whose buffers still hold their starting
    /// values, as in openWakeWord).
    pub fn scores(&mut self, samples: &[f32]) -> Result<Vec<f32>, EndpointError> {
        let mut scores = Vec::new();
        for &s in samples {
            self.pending.push(s * 32_767.0);
            if self.pending.len() < CHUNK {
                continue;
            }
            let chunk = std::mem::take(&mut self.pending);
            let score = self.chunk(&chunk)?;
            self.pending = chunk;
            self.pending.clear();
            self.chunks += 1;
            scores.push(if self.chunks <= WARM_UP_CHUNKS {
                0.0
            } else {
                score
            });
        }
        Ok(scores)
    }

    /// One chunk of 1280 samples (int16 scale): its score.
    fn chunk(&mut self, chunk: &[f32]) -> Result<f32, EndpointError> {
        self.context.extend_from_slice(chunk);
        let keep = CHUNK + MEL_CONTEXT;
        if self.context.len() > keep {
            self.context.drain(..self.context.len() - keep);
        }
        let input = self.context.clone();
        for frame in self.mel_of(&input)? {
            self.mel_frames.push_back(frame);
        }
        while self.mel_frames.len() > EMBEDDING_WINDOW {
            self.mel_frames.pop_front();
        }
        let window: Vec<[f32; MEL_BINS]> = self.mel_frames.iter().copied().collect();
        let embedding = self.embed(&window)?;
        self.embeddings.push_back(embedding);
        while self.embeddings.len() > KEYWORD_WINDOW {
            self.embeddings.pop_front();
        }
        let features: Vec<f32> = self.embeddings.iter().flatten().copied().collect();
        let out = self
            .keyword
            .run(vec![1, KEYWORD_WINDOW, EMBEDDING_SIZE], features)?;
        Ok(out.first().copied().unwrap_or(0.0))
    }
}

impl WakeWordDetector for OpenWakeWord {
    fn phrase(&self) -> &str {
        &self.phrase
    }

    fn push(&mut self, samples: &[f32]) -> Result<Option<f32>, EndpointError> {
        let mut detected = None;
        for score in self.scores(samples)? {
            self.scored += 1;
            if self.scored < self.quiet_until {
                continue;
            }
            if score >= self.threshold {
                detected = Some(score);
                self.quiet_until = self.scored + REFRACTORY_CHUNKS;
            }
        }
        Ok(detected)
    }
}
