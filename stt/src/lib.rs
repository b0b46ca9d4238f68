//! Speech to text for Hark: whisper.cpp (through whisper-rs) on one
//! endpointed utterance or one whole file at a time.
//!
//! Two things matter beyond calling whisper.cpp:
//! - **Speed on short utterances.** Whisper encodes a 30 s window unless told
//!   otherwise; [`audio_ctx_for`] shrinks the encoder's context to the audio
//!   actually given (plus a margin), which is what makes a 3 s utterance
//!   cheap.
//! - **Silence is not speech.** Whisper happily "hears" *Thank you.* in noise.
//!   Segments whose no-speech probability is high, or whose text is only a
//!   non-speech marker, are dropped so callers get no text at all.

use std::path::{Path, PathBuf};

mod worker;
pub use worker::{SttJob, SttPurpose, SttResult, SttWorker, WorkerError};

use hark_config::{
    check_not_empty, check_optional_range, check_range, check_wyoming_uri, doc, unset,
    InvalidValue, KeyDoc, Section, Settings,
};
use serde::{Deserialize, Serialize};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

/// Whisper's input rate; callers must hand 16 kHz mono `f32`.
pub const SAMPLE_RATE: usize = 16_000;

/// One encoder position covers 20 ms of audio (two 10 ms mel frames).
const SAMPLES_PER_AUDIO_CTX: usize = 320;
/// The full 30 s window.
const MAX_AUDIO_CTX: usize = 1500;
/// Extra encoder positions past the end of the audio (0.5 s). Tiny models
/// tend to drop the last word when the context ends right on it; on the
/// LibriVox + JFK set this margin was as accurate as the full window.
const AUDIO_CTX_MARGIN: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum SttError {
    #[error("Whisper model {path} does not exist")]
    ModelMissing { path: PathBuf },
    #[error("Whisper model {path} could not be loaded (truncated or not a whisper.cpp ggml file): {message}")]
    ModelLoad { path: PathBuf, message: String },
    #[error("Whisper failed on {seconds:.2} s of audio: {message}")]
    Inference { seconds: f32, message: String },
    /// A speech-to-text server (`[stt] backend = "wyoming"`) failed.
    #[error("speech-to-text server {uri}: {message}")]
    Remote { uri: String, message: String },
}

/// Anything that turns 16 kHz mono audio into text. The real backend is
/// [`WhisperStt`]; tests may script their own.
pub trait SpeechToText: Send {
    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript, SttError>;

    /// Something the user should hear of about the last call although it
    /// succeeded (a server that failed and was stood in for); asked after
    /// each call.
    fn take_notice(&mut self) -> Option<String> {
        None
    }
}

/// Settings for [`WhisperStt`], and the `[stt]` section of Hark's
/// configuration. The defaults are a conversation's: every beam and every
/// encoder position is reply latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SttConfig {
    /// Who transcribes: Whisper here, or a Wyoming server.
    pub backend: SttBackend,
    /// `backend = "wyoming"`: the server, `tcp://HOST:PORT` or
    /// `unix:///PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `backend = "wyoming"`: when the server fails, transcribe with the
    /// local Whisper model if it is installed.
    pub fallback: bool,
    /// Catalogue name (`tiny.en`, `base`) or path of a whisper.cpp ggml
    /// file; the caller resolves it to the file given to [`WhisperStt::load`].
    pub model: String,
    /// Threads whisper.cpp may use; `None`: all cores, at most 8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Beam width for decoding; 1 is greedy. Beam search costs decoder time
    /// but fixes tiny models' typical slips ("old-sposed" for "ill-disposed").
    pub beam_size: usize,
    /// Spoken language (ISO 639-1) or `auto`; `.en` models ignore it.
    pub language: String,
    /// Segments whose no-speech probability exceeds this are dropped, but
    /// words Whisper is sure of only above 0.8 (see [`is_no_speech`]). f64
    /// so that the default prints as `0.6`.
    pub no_speech_threshold: f64,
    /// While the user talks, transcribe the speech so far each time this
    /// much more is heard (live captions); 0: only whole utterances. Read by
    /// whoever feeds the [`SttWorker`].
    pub partial_every_ms: u32,
    /// Utterance mode: shrink the encoder context to the audio length (see
    /// [`audio_ctx_for`]) and decode one segment. Fast on short utterances;
    /// off, Whisper encodes its full 30 s window and returns timed segments.
    /// Chosen by the command, not the file.
    #[serde(skip)]
    pub shrink_audio_ctx: bool,
}

impl Default for SttConfig {
    /// Conversation: greedy (at width 3 a 2 s question costs about 90 ms
    /// more of 250, and the model answering needs the gist, not a verbatim
    /// record), utterance mode, partial transcripts each second.
    fn default() -> Self {
        Self {
            backend: SttBackend::Local,
            uri: None,
            fallback: true,
            model: "tiny.en".into(),
            threads: None,
            beam_size: 1,
            language: "en".into(),
            no_speech_threshold: 0.6,
            partial_every_ms: 1000,
            shrink_audio_ctx: true,
        }
    }
}

/// Who turns speech into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SttBackend {
    /// Whisper, run here with whisper.cpp.
    #[default]
    Local,
    /// A Wyoming ASR server (wyoming-faster-whisper, Home Assistant's).
    Wyoming,
}

impl SttConfig {
    /// Listening for dictation (`hark listen`): on LibriVox + JFK, width 3
    /// kept the WER at 0.032 with a 3 s utterance in ~350 ms.
    pub fn listening() -> Self {
        Self {
            beam_size: 3,
            ..Self::default()
        }
    }

    /// Whole files (`hark transcribe`): read once, so the best text: the
    /// full window, timed segments, width 5.
    pub fn files() -> Self {
        Self {
            beam_size: 5,
            shrink_audio_ctx: false,
            ..Self::default()
        }
    }

    /// Threads whisper.cpp gets: as configured, else all cores, at most 8.
    pub fn thread_count(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(8)
        })
    }
}

impl Settings for SttConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_wyoming_uri(
            "uri",
            self.uri.as_deref(),
            self.backend == SttBackend::Wyoming,
        )?;
        check_not_empty("model", &self.model)?;
        check_optional_range("threads", self.threads, 1, 64)?;
        // whisper.cpp runs at most 8 decoders (WHISPER_MAX_DECODERS).
        check_range("beam_size", self.beam_size, 1, 8)?;
        let language_ok = self.language == "auto"
            || ((2..=3).contains(&self.language.len())
                && self.language.bytes().all(|b| b.is_ascii_lowercase()));
        if !language_ok {
            return Err(InvalidValue::new(
                "language",
                format!("{:?}", self.language),
                "an ISO 639-1 code such as \"en\", or \"auto\"",
            ));
        }
        check_range("no_speech_threshold", self.no_speech_threshold, 0.0, 1.0)?;
        if self.partial_every_ms != 0 {
            check_range("partial_every_ms", self.partial_every_ms, 300, 10_000).map_err(
                |mut bad| {
                    bad.allowed = format!("0 (off) or {}", bad.allowed);
                    bad
                },
            )?;
        }
        Ok(())
    }
}

impl Section for SttConfig {
    const DOC: &'static str = "Speech to text (Whisper, whisper.cpp).";
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "backend",
            "\"local\" (Whisper on this machine) or \"wyoming\" (a Wyoming speech-to-text \
             server, such as wyoming-faster-whisper on a bigger machine).",
        ),
        unset(
            "uri",
            "wyoming: the server, \"tcp://HOST:PORT\" or \"unix:///PATH\".",
            "\"tcp://127.0.0.1:10300\"",
        ),
        doc(
            "fallback",
            "wyoming: when the server is down or fails, transcribe with the local Whisper \
             model instead (if it is installed).",
        ),
        doc(
            "model",
            "Whisper model: a name from `hark models list` (tiny.en, base) or the path \
             of a whisper.cpp ggml file.",
        ),
        unset(
            "threads",
            "CPU threads for Whisper, 1 to 64. Unset: all cores, at most 8.",
            "2",
        ),
        doc(
            "beam_size",
            "Beam width, 1 (greedy: fastest, least accurate) to 8.",
        ),
        doc(
            "language",
            "Spoken language, an ISO 639-1 code such as \"en\", or \"auto\". English-only \
             models (.en) ignore it.",
        ),
        doc(
            "no_speech_threshold",
            "Whisper segments more likely than this to be non-speech are dropped, \
             unless Whisper is sure of their words (mean token log-probability \
             above -0.5): those only when above 0.8 too. 0.0 to 1.0.",
        ),
        doc(
            "partial_every_ms",
            "While the user is talking, send a PartialTranscript signal each time this \
             much more speech is heard (for live captions); 0 turns them off. Each can \
             delay the final transcript by one short Whisper run. 0, or 300 to 10000.",
        ),
    ];
}

/// A piece of recognised speech, with times relative to the audio given.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Segment {
    pub start_secs: f32,
    pub end_secs: f32,
    pub text: String,
    pub no_speech_prob: f32,
}

/// What Whisper heard; empty when it heard no speech.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    pub segments: Vec<Segment>,
}

impl Transcript {
    /// All segments' text joined with single spaces.
    pub fn text(&self) -> String {
        let parts: Vec<&str> = self.segments.iter().map(|s| s.text.as_str()).collect();
        parts.join(" ")
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Encoder context (in 20 ms positions) for `n_samples` of audio: the audio
/// plus [`AUDIO_CTX_MARGIN`], rounded up to a multiple of 64 so whisper.cpp
/// reuses its compute buffers, capped at the full 30 s window. The margin
/// matters: tiny models cut the last word when the context ends right on it.
pub fn audio_ctx_for(n_samples: usize) -> usize {
    let needed = n_samples.div_ceil(SAMPLES_PER_AUDIO_CTX) + AUDIO_CTX_MARGIN;
    needed.div_ceil(64).saturating_mul(64).min(MAX_AUDIO_CTX)
}

/// Token budget for one utterance of `n_samples`: 6 tokens a second (about
/// twice brisk speech) plus 10 for punctuation and the first word.
pub fn max_tokens_for(n_samples: usize) -> usize {
    n_samples.div_ceil(SAMPLE_RATE).min(30) * 6 + 10
}

/// Removes the loops Whisper falls into on short windows: a run of words
/// repeated back to back is kept once. Phrases of three or more words go at
/// their second occurrence; shorter ones only from the third ("no, no" is
/// speech, "and, and, and" is a loop). Punctuation attached to the words is
/// ignored when comparing and the first occurrence is kept as written.
pub fn collapse_repeats(text: &str) -> String {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    let key = |w: &str| -> String {
        w.chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let mut changed = true;
    while changed {
        changed = false;
        for n in 1..=words.len() / 2 {
            let min_repeats = if n >= 3 { 2 } else { 3 };
            let mut i = 0;
            while i + n * min_repeats <= words.len() {
                let same =
                    |a: usize, b: usize| (0..n).all(|k| key(words[a + k]) == key(words[b + k]));
                let mut repeats = 1;
                while i + n * (repeats + 1) <= words.len() && same(i, i + n * repeats) {
                    repeats += 1;
                }
                if repeats >= min_repeats {
                    words.drain(i + n..i + n * repeats);
                    changed = true;
                }
                i += 1;
            }
        }
    }
    words.join(" ")
}

/// Drops a trailing fragment that restarts the text's own opening, the
/// tail of a loop ("And so my fellow Americans, and so" -> "And so my fellow
/// Americans,"). Unless the text was cut off by the token budget
/// (`truncated`), the fragment must follow a clause break, so that "no means
/// no" stays as it is.
pub fn drop_dangling_restart(text: &str, truncated: bool) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let key = |w: &str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    for tail in (1..=words.len() / 2).rev() {
        let start = words.len() - tail;
        let after_break = words[start - 1].ends_with([',', '.', '!', '?', ';', ':']);
        if (truncated || after_break) && (0..tail).all(|k| key(words[k]) == key(words[start + k])) {
            return words[..start].join(" ");
        }
    }
    text.to_string()
}

/// whisper.cpp behind [`SpeechToText`]. Holds the model and one decoding
/// state, so it is used from one thread at a time.
pub struct WhisperStt {
    // Field order matters: the state borrows the context's model inside C.
    state: whisper_rs::WhisperState,
    _ctx: WhisperContext,
    config: SttConfig,
    model_path: PathBuf,
}

impl WhisperStt {
    /// Loads a whisper.cpp ggml model.
    pub fn load(path: &Path, config: SttConfig) -> Result<Self, SttError> {
        if !path.is_file() {
            return Err(SttError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        route_whisper_logs();
        let load_error = |message: String| SttError::ModelLoad {
            path: path.to_path_buf(),
            message,
        };
        let path_str = path
            .to_str()
            .ok_or_else(|| load_error("path is not valid UTF-8".into()))?;
        let ctx = WhisperContext::new_with_params(path_str, WhisperContextParameters::default())
            .map_err(|e| load_error(e.to_string()))?;
        let state = ctx.create_state().map_err(|e| load_error(e.to_string()))?;
        Ok(Self {
            state,
            _ctx: ctx,
            config,
            model_path: path.to_path_buf(),
        })
    }

    pub fn config(&self) -> &SttConfig {
        &self.config
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }
}

impl SpeechToText for WhisperStt {
    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript, SttError> {
        let seconds = samples.len() as f32 / SAMPLE_RATE as f32;
        if samples.is_empty() {
            return Ok(Transcript::default());
        }
        let strategy = if self.config.beam_size > 1 {
            SamplingStrategy::BeamSearch {
                beam_size: self.config.beam_size as i32,
                patience: -1.0,
            }
        } else {
            SamplingStrategy::Greedy { best_of: 1 }
        };
        let mut params = FullParams::new(strategy);
        params.set_n_threads(self.config.thread_count() as i32);
        params.set_language(Some(&self.config.language));
        params.set_translate(false);
        params.set_no_context(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_no_speech_thold(self.config.no_speech_threshold as f32);
        if self.config.shrink_audio_ctx {
            // Utterance mode. With the window cut to the audio, Whisper no
            // longer sees the padding that tells it where speech ends and can
            // loop ("and so my fellow Americans, and so my fellow ..."). One
            // segment with a token budget bounds the loop (and its CPU);
            // `collapse_repeats` removes what is left of it.
            params.set_audio_ctx(audio_ctx_for(samples.len()) as i32);
            params.set_single_segment(true);
            params.set_max_tokens(max_tokens_for(samples.len()) as i32);
        }
        // Whisper needs at least one second of input; shorter clips are padded
        // with silence rather than rejected.
        let padded;
        let input = if samples.len() < SAMPLE_RATE + SAMPLE_RATE / 10 {
            let mut buf = samples.to_vec();
            buf.resize(SAMPLE_RATE + SAMPLE_RATE / 10, 0.0);
            padded = buf;
            &padded[..]
        } else {
            samples
        };
        self.state
            .full(params, input)
            .map_err(|e| SttError::Inference {
                seconds,
                message: e.to_string(),
            })?;

        let mut segments = Vec::new();
        for segment in self.state.as_iter() {
            let mut text = segment
                .to_str_lossy()
                .map(|t| t.trim().to_string())
                .unwrap_or_default();
            if self.config.shrink_audio_ctx {
                let truncated = segment.n_tokens() as usize >= max_tokens_for(samples.len());
                text = drop_dangling_restart(&collapse_repeats(&text), truncated);
            }
            let no_speech_prob = segment.no_speech_probability();
            let avg_logprob = self.mean_text_logprob(&segment);
            if is_no_speech(no_speech_prob, avg_logprob, self.config.no_speech_threshold)
                || is_non_speech_marker(&text)
            {
                tracing::debug!(%text, no_speech_prob, avg_logprob, "dropping non-speech segment");
                continue;
            }
            tracing::debug!(%text, no_speech_prob, avg_logprob, "segment");
            segments.push(Segment {
                // whisper.cpp timestamps are in centiseconds.
                start_secs: segment.start_timestamp() as f32 / 100.0,
                end_secs: (segment.end_timestamp() as f32 / 100.0).min(seconds),
                text,
                no_speech_prob,
            });
        }
        Ok(Transcript { segments })
    }
}

impl WhisperStt {
    /// The mean log-probability of a segment's text tokens (timestamps and
    /// other special tokens left out): how sure Whisper is of its words.
    fn mean_text_logprob(&self, segment: &whisper_rs::WhisperSegment<'_>) -> f32 {
        let text_end = self._ctx.token_eot();
        let (sum, count) = (0..segment.n_tokens())
            .filter_map(|i| segment.get_token(i))
            .filter(|token| token.token_id() < text_end)
            .map(|token| token.token_probability().max(1e-6).ln())
            .fold((0.0f32, 0usize), |(sum, count), lp| (sum + lp, count + 1));
        if count == 0 {
            f32::NEG_INFINITY
        } else {
            sum / count as f32
        }
    }
}

/// Words Whisper is this sure of (mean token log-probability) are speech
/// unless its no-speech probability is near certain. Measured through the
/// test rig's speaker and microphone: short questions in a clear voice ("What
/// do cows eat?") reach a no-speech probability of 0.46–0.57 with a mean
/// log-probability of -0.0005 to -0.27, and were lost now and then at the
/// old single threshold of 0.6; what Whisper makes of noise ("I'm going to go
/// ahead and") has 0.83–0.95 and -0.66 to -0.99.
const CONFIDENT_LOGPROB: f32 = -0.5;
/// See [`CONFIDENT_LOGPROB`].
const NEAR_CERTAIN_NO_SPEECH: f64 = 0.8;

/// Whether a segment is dropped as non-speech: more likely than `threshold`
/// to be no speech, and either unsure of its words or near certain.
/// (Whisper's own rule, which whisper.cpp applies before this, needs both a
/// no-speech probability above the threshold and a mean log-probability
/// below -1, and keeps what it makes of hiss.)
pub fn is_no_speech(no_speech_prob: f32, mean_logprob: f32, threshold: f64) -> bool {
    let no_speech_prob = f64::from(no_speech_prob);
    no_speech_prob > threshold
        && (mean_logprob < CONFIDENT_LOGPROB
            || no_speech_prob > threshold.max(NEAR_CERTAIN_NO_SPEECH))
}

/// Text Whisper emits for audio without words: empty strings, lone
/// punctuation, and bracketed sound descriptions such as `[BLANK_AUDIO]`,
/// `(music)` or `*cough*`.
pub fn is_non_speech_marker(text: &str) -> bool {
    let t = text.trim();
    if !t.chars().any(char::is_alphanumeric) {
        return true;
    }
    let bracketed = |open: char, close: char| t.starts_with(open) && t.ends_with(close);
    bracketed('[', ']') || bracketed('(', ')') || bracketed('*', '*') || bracketed('♪', '♪')
}

/// whisper.cpp prints its model-loading chatter straight to stderr; send it
/// through `tracing` instead so `hark` output stays clean and logs stay
/// uniform. Idempotent.
fn route_whisper_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(whisper_rs::install_logging_hooks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_ctx_covers_the_audio_with_margin() {
        // 3 s = 150 positions, +25 margin = 175 -> rounded to 192.
        assert_eq!(audio_ctx_for(3 * SAMPLE_RATE), 192);
        assert!(audio_ctx_for(SAMPLE_RATE) >= 50);
        assert_eq!(audio_ctx_for(29 * SAMPLE_RATE), MAX_AUDIO_CTX);
        assert_eq!(audio_ctx_for(60 * SAMPLE_RATE), MAX_AUDIO_CTX);
        for secs in 1..30 {
            let ctx = audio_ctx_for(secs * SAMPLE_RATE);
            assert!(
                ctx == MAX_AUDIO_CTX || ctx.is_multiple_of(64),
                "{secs} s -> {ctx}"
            );
        }
    }

    #[test]
    fn sure_words_survive_a_middling_no_speech_probability() {
        // Measured through the test rig (see CONFIDENT_LOGPROB).
        let speech = [(0.5553, -0.274), (0.5657, -0.0012), (0.65, -0.2)];
        for (no_speech, logprob) in speech {
            assert!(
                !is_no_speech(no_speech, logprob, 0.6),
                "{no_speech} {logprob}"
            );
        }
        let noise = [
            (0.8326, -0.939),
            (0.8933, -0.663),
            (0.9512, -0.2186),
            (0.7, -0.6),
        ];
        for (no_speech, logprob) in noise {
            assert!(
                is_no_speech(no_speech, logprob, 0.6),
                "{no_speech} {logprob}"
            );
        }
        // The threshold still rules: raised, it keeps more; lowered, less.
        assert!(!is_no_speech(0.85, -0.9, 0.9));
        assert!(is_no_speech(0.3, -0.9, 0.2));
        assert!(!is_no_speech(0.3, -0.1, 0.2));
        // No text tokens at all: nothing to be sure of.
        assert!(is_no_speech(0.61, f32::NEG_INFINITY, 0.6));
    }

    #[test]
    fn non_speech_markers_are_recognised() {
        for t in [
            "",
            " . ",
            "[BLANK_AUDIO]",
            "(music)",
            "*cough*",
            "♪ ♪",
            "...",
        ] {
            assert!(is_non_speech_marker(t), "{t:?}");
        }
        for t in ["Front left.", "ask not", "(laughs) ok then"] {
            assert!(!is_non_speech_marker(t), "{t:?}");
        }
    }

    #[test]
    fn missing_model_is_named() {
        let err = WhisperStt::load(
            Path::new("/nonexistent/ggml-tiny.en.bin"),
            SttConfig::default(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("/nonexistent/ggml-tiny.en.bin"),
            "{err}"
        );
    }

    #[test]
    fn loops_are_collapsed_and_speech_is_kept() {
        let c = collapse_repeats;
        assert_eq!(
            c("And so my fellow Americans, and, and, and so my fellow Americans, and, and, and so my fellow Americans,"),
            "And so my fellow Americans,"
        );
        assert_eq!(
            c("Front Center. Front Center. Front Center."),
            "Front Center."
        );
        assert_eq!(c("no, no, I said no"), "no, no, I said no");
        assert_eq!(
            c("ask not what your country can do for you, ask what you can do"),
            "ask not what your country can do for you, ask what you can do"
        );
        let d = drop_dangling_restart;
        assert_eq!(
            d("And so my fellow Americans, and", false),
            "And so my fellow Americans,"
        );
        assert_eq!(
            d("And so my fellow Americans, and so", false),
            "And so my fellow Americans,"
        );
        assert_eq!(d("Turn on the light", false), "Turn on the light");
        assert_eq!(d("no means no", false), "no means no");
        assert_eq!(d("we said we", true), "we said");
    }

    #[test]
    fn transcript_text_joins_segments() {
        let seg = |t: &str| Segment {
            start_secs: 0.0,
            end_secs: 1.0,
            text: t.into(),
            no_speech_prob: 0.0,
        };
        let t = Transcript {
            segments: vec![seg("Hello there."), seg("General Kenobi.")],
        };
        assert_eq!(t.text(), "Hello there. General Kenobi.");
    }
}
