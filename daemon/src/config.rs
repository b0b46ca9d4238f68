//! The configuration file: `config.toml`, one section per part of Hark.
//!
//! Which file is read (the first that exists wins; there is no merging):
//!
//! 1. the path given on the command line;
//! 2. `$XDG_CONFIG_HOME/hark/config.toml` (default `~/.config/hark/config.toml`);
//! 3. `hark/config.toml` under each of `$XDG_CONFIG_DIRS` (default
//!    `/etc/xdg/hark/config.toml`);
//! 4. none: the built-in defaults ([`HarkConfig::default`]).
//!
//! Every key is optional; a missing key keeps its default. A misspelt key is
//! an error, never silently ignored, and it is reported with its full dotted
//! path and line (`unknown key vad.agressiveness in ~/.config/hark/config.toml
//! line 3`); so is a value of the wrong type or out of range (`vad.frame_ms =
//! 25 is out of range: must be 10, 20 or 30`).
//!
//! [`default_config_text`] renders the defaults as a commented file. Its
//! values are serialised from [`HarkConfig::default`], so they cannot drift
//! from the code; only the comments ([`KEY_DOCS`]) are written by hand, and a
//! test fails when a key has none.
//!
//! Sections that mirror a library's settings (`[vad]`, `[stt]`, `[llm]`)
//! take their defaults from that library and convert back with `to_*`
//! methods; `[conversation]` *is* `hark_converse::turn::TurnConfig`, so a
//! field added there is a config key at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use hark_audio::vad::VadConfig;
use hark_converse::turn::TurnConfig;
use hark_llm::LlmConfig;
use hark_stt::SttConfig;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HarkConfig {
    pub audio: AudioSection,
    pub vad: VadSection,
    pub stt: SttSection,
    pub llm: LlmSection,
    pub voice: VoiceSection,
    /// The turn-taking rules, deserialised straight into the conversation
    /// core's own type (unknown keys inside it are caught by
    /// `serde_ignored`, since it does not deny them itself).
    pub conversation: TurnConfig,
    pub daemon: DaemonSection,
}

/// `[audio]`: which devices, and echo cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioSection {
    /// Capture device name as `hark devices` lists it; `None`: the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_device: Option<String>,
    /// Playback device name; `None`: the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_device: Option<String>,
    /// Remove Hark's own voice from the microphone signal, so it can be
    /// interrupted over loudspeakers.
    pub echo_cancellation: bool,
    /// Longest echo path (speaker → room → microphone) cancelled.
    pub echo_tail_ms: u32,
}

impl Default for AudioSection {
    fn default() -> Self {
        Self {
            input_device: None,
            output_device: None,
            echo_cancellation: true,
            echo_tail_ms: 400,
        }
    }
}

/// `[vad]`: a serde mirror of [`VadConfig`] (which is not serde itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadSection {
    pub aggressiveness: u8,
    pub frame_ms: u32,
    pub pre_roll_ms: u32,
    pub end_silence_ms: u32,
    pub min_speech_ms: u32,
    pub onset_ms: u32,
    pub max_utterance_ms: u32,
}

impl Default for VadSection {
    /// The conversation's endpointing (shorter silence and onset than
    /// `hark listen`), since the daemon converses.
    fn default() -> Self {
        Self::from(VadConfig {
            end_silence_ms: crate::converse::CONVERSE_END_SILENCE_MS,
            onset_ms: crate::converse::CONVERSE_ONSET_MS,
            ..VadConfig::default()
        })
    }
}

// Both conversions destructure exhaustively: a field added to `VadConfig`
// breaks the build here instead of being silently unconfigurable.
impl From<VadConfig> for VadSection {
    fn from(c: VadConfig) -> Self {
        let VadConfig {
            aggressiveness,
            frame_ms,
            pre_roll_ms,
            end_silence_ms,
            min_speech_ms,
            onset_ms,
            max_utterance_ms,
        } = c;
        Self {
            aggressiveness,
            frame_ms,
            pre_roll_ms,
            end_silence_ms,
            min_speech_ms,
            onset_ms,
            max_utterance_ms,
        }
    }
}

impl VadSection {
    pub fn to_vad_config(&self) -> VadConfig {
        let Self {
            aggressiveness,
            frame_ms,
            pre_roll_ms,
            end_silence_ms,
            min_speech_ms,
            onset_ms,
            max_utterance_ms,
        } = self.clone();
        VadConfig {
            aggressiveness,
            frame_ms,
            pre_roll_ms,
            end_silence_ms,
            min_speech_ms,
            onset_ms,
            max_utterance_ms,
        }
    }
}

/// `[stt]`: Whisper, as the daemon uses it (utterance mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SttSection {
    /// Catalogue name (`tiny.en`, `base`) or path to a whisper.cpp ggml file.
    pub model: String,
    /// `None`: all cores, at most 8 (as [`SttConfig::default`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Greedy, not the library's 5: every beam is reply latency.
    pub beam_size: usize,
    pub language: String,
    /// f64 rather than the library's f32 so the default prints as `0.6`.
    pub no_speech_threshold: f64,
    /// Partial transcripts while the user talks, each this much more
    /// speech; 0: none.
    pub partial_every_ms: u32,
}

impl Default for SttSection {
    fn default() -> Self {
        let lib = SttConfig::default();
        Self {
            model: "tiny.en".into(),
            threads: None,
            beam_size: crate::converse::CONVERSE_BEAM_SIZE,
            language: lib.language,
            no_speech_threshold: 0.6,
            partial_every_ms: 1000,
        }
    }
}

impl SttSection {
    /// Settings for utterance mode (`shrink_audio_ctx`), which is what the
    /// daemon runs. The model name is resolved separately (`stt_setup`).
    pub fn to_stt_config(&self) -> SttConfig {
        let lib = SttConfig::default();
        SttConfig {
            threads: self.threads.unwrap_or(lib.threads),
            language: self.language.clone(),
            no_speech_threshold: self.no_speech_threshold as f32,
            shrink_audio_ctx: true,
            beam_size: self.beam_size,
        }
    }
}

/// `[llm]`: the language model and how it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSection {
    /// Catalogue name (`smollm2-135m`) or path to a GGUF file.
    pub model: String,
    pub system_prompt: String,
    pub temperature: f64,
    pub max_tokens: usize,
    pub context_tokens: usize,
    /// `None`: candle picks (all cores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl Default for LlmSection {
    fn default() -> Self {
        let lib = LlmConfig::default();
        Self {
            model: "smollm2-135m".into(),
            system_prompt: lib.system_prompt,
            temperature: lib.temperature,
            max_tokens: lib.max_tokens,
            context_tokens: lib.context_tokens,
            threads: lib.threads,
        }
    }
}

impl LlmSection {
    /// Generation settings; the model name is resolved separately.
    pub fn to_llm_config(&self) -> LlmConfig {
        LlmConfig {
            system_prompt: self.system_prompt.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            context_tokens: self.context_tokens,
            threads: self.threads,
            ..LlmConfig::default()
        }
    }
}

/// `[voice]`: the Piper voice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceSection {
    /// Catalogue name (`joe-medium`) or path to a Piper `.onnx` voice.
    pub voice: String,
}

impl Default for VoiceSection {
    fn default() -> Self {
        Self {
            voice: "joe-medium".into(),
        }
    }
}

/// `[daemon]`: how `hark daemon` starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSection {
    pub mode: Mode,
}

/// When Hark listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Always listening; every utterance is a turn.
    #[default]
    Always,
    /// Listening only while asked to over D-Bus (e.g. from a key binding).
    PushToTalk,
    /// Not listening; `Say` and `Ask` still work.
    Off,
}

/// Where a configuration came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file found; `searched` lists where Hark looked.
    Defaults {
        searched: Vec<PathBuf>,
    },
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Defaults { .. } => f.write_str("built-in defaults"),
        }
    }
}

/// A configuration and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: HarkConfig,
    pub source: ConfigSource,
}

/// Why a configuration could not be loaded. Each message names the file,
/// the dotted key and its line where there is one.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML at all.
    Syntax {
        origin: String,
        line: Option<usize>,
        message: String,
    },
    UnknownKey {
        key: String,
        origin: String,
        line: Option<usize>,
        /// The keys allowed there, when known (`a`, `b`, ...).
        expected: Option<String>,
    },
    /// A value of the wrong type, or an unknown variant.
    BadValue {
        key: Option<String>,
        origin: String,
        line: Option<usize>,
        message: String,
    },
    OutOfRange {
        key: String,
        value: String,
        allowed: String,
        origin: String,
        line: Option<usize>,
    },
}

/// ` in FILE line N`, or ` in FILE` when the line is unknown.
struct Place<'a>(&'a str, Option<usize>);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, " in {}", self.0)?;
        if let Some(line) = self.1 {
            write!(f, " line {line}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Syntax {
                origin,
                line,
                message,
            } => write!(f, "invalid TOML{}: {message}", Place(origin, *line)),
            ConfigError::UnknownKey {
                key,
                origin,
                line,
                expected,
            } => {
                write!(f, "unknown key {key}{}", Place(origin, *line))?;
                if let Some(expected) = expected {
                    write!(f, " (expected one of {expected})")?;
                }
                Ok(())
            }
            ConfigError::BadValue {
                key,
                origin,
                line,
                message,
            } => match key {
                Some(key) => write!(f, "{key}{}: {message}", Place(origin, *line)),
                None => write!(f, "{message}{}", Place(origin, *line)),
            },
            ConfigError::OutOfRange {
                key,
                value,
                allowed,
                origin,
                line,
            } => write!(
                f,
                "{key} = {value} is out of range: must be {allowed}{}",
                Place(origin, *line)
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A value outside what its key allows; [`parse`] adds the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    pub key: String,
    pub value: String,
    pub allowed: String,
}

fn check_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), InvalidValue> {
    if lo <= value && value <= hi {
        Ok(())
    } else {
        Err(InvalidValue {
            key: key.into(),
            value: value.to_string(),
            allowed: format!("between {lo} and {hi}"),
        })
    }
}

fn check_not_empty(key: &str, value: &str) -> Result<(), InvalidValue> {
    if value.trim().is_empty() {
        Err(InvalidValue {
            key: key.into(),
            value: format!("{value:?}"),
            allowed: "a name or a path".into(),
        })
    } else {
        Ok(())
    }
}

impl HarkConfig {
    /// Checks every value the type system cannot; the error names the first
    /// bad key and what it allows.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let audio = &self.audio;
        check_range("audio.echo_tail_ms", audio.echo_tail_ms, 50, 2_000)?;

        self.vad
            .to_vad_config()
            .validate()
            .map_err(|e| InvalidValue {
                key: e.key.into(),
                value: e.got.to_string(),
                allowed: e.allowed,
            })?;

        let stt = &self.stt;
        check_not_empty("stt.model", &stt.model)?;
        if let Some(threads) = stt.threads {
            check_range("stt.threads", threads, 1, 64)?;
        }
        // whisper.cpp runs at most 8 decoders (WHISPER_MAX_DECODERS).
        check_range("stt.beam_size", stt.beam_size, 1, 8)?;
        let language_ok = stt.language == "auto"
            || ((2..=3).contains(&stt.language.len())
                && stt.language.bytes().all(|b| b.is_ascii_lowercase()));
        if !language_ok {
            return Err(InvalidValue {
                key: "stt.language".into(),
                value: format!("{:?}", stt.language),
                allowed: "an ISO 639-1 code such as \"en\", or \"auto\"".into(),
            });
        }
        check_range("stt.no_speech_threshold", stt.no_speech_threshold, 0.0, 1.0)?;
        if stt.partial_every_ms != 0 {
            check_range("stt.partial_every_ms", stt.partial_every_ms, 300, 10_000).map_err(
                |mut bad| {
                    bad.allowed = format!("0 (off) or {}", bad.allowed);
                    bad
                },
            )?;
        }

        let llm = &self.llm;
        check_not_empty("llm.model", &llm.model)?;
        check_range("llm.temperature", llm.temperature, 0.0, 2.0)?;
        check_range("llm.context_tokens", llm.context_tokens, 256, 131_072)?;
        check_range("llm.max_tokens", llm.max_tokens, 1, llm.context_tokens / 2)?;
        if let Some(threads) = llm.threads {
            check_range("llm.threads", threads, 1, 64)?;
        }

        check_not_empty("voice.voice", &self.voice.voice)?;

        let barge_in = &self.conversation.barge_in;
        check_range(
            "conversation.barge_in.commit_speech_ms",
            barge_in.commit_speech_ms,
            0,
            10_000,
        )?;
        check_range(
            "conversation.barge_in.min_speech_ms",
            barge_in.min_speech_ms,
            0,
            barge_in.commit_speech_ms,
        )?;
        check_range(
            "conversation.barge_in.pause_after_ms",
            barge_in.pause_after_ms,
            0,
            barge_in.commit_speech_ms,
        )?;
        check_range("conversation.barge_in.min_words", barge_in.min_words, 1, 20)?;
        check_range(
            "conversation.barge_in.echo_overlap_percent",
            barge_in.echo_overlap_percent,
            0,
            101,
        )?;
        let chunking = &self.conversation.chunking;
        check_range(
            "conversation.chunking.first_min_words",
            chunking.first_min_words,
            1,
            50,
        )?;
        check_range(
            "conversation.chunking.max_chars",
            chunking.max_chars,
            20,
            2_000,
        )?;
        check_range(
            "conversation.chunking.first_max_chars",
            chunking.first_max_chars,
            10,
            chunking.max_chars,
        )?;
        check_range(
            "conversation.chunking.long_clause_chars",
            chunking.long_clause_chars,
            1,
            chunking.max_chars,
        )?;
        Ok(())
    }
}

/// Parses and validates a configuration. `origin` names it in messages
/// (usually the file's path).
pub fn parse(text: &str, origin: &str) -> Result<HarkConfig, ConfigError> {
    let origin = origin.to_owned();
    // The spanned tree maps error positions to dotted keys and keys to lines.
    let tree = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim_end().to_owned(),
        origin: origin.clone(),
    })?;
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim_end().to_owned(),
        origin: origin.clone(),
    })?;

    let mut ignored: Vec<Vec<String>> = Vec::new();
    let result: Result<HarkConfig, toml::de::Error> =
        serde_ignored::deserialize(deserializer, |path| ignored.push(path_segments(&path)));
    let config = match result {
        Ok(config) => config,
        Err(e) => return Err(deserialize_error(text, &tree, &e, origin)),
    };
    if let Some(key) = ignored.into_iter().next() {
        let line = span_of_key(tree.get_ref(), &key).map(|s| line_of(text, s.start));
        return Err(ConfigError::UnknownKey {
            key: key.join("."),
            origin,
            line,
            expected: None,
        });
    }
    config.validate().map_err(|bad| {
        let key: Vec<String> = bad.key.split('.').map(String::from).collect();
        ConfigError::OutOfRange {
            line: span_of_key(tree.get_ref(), &key).map(|s| line_of(text, s.start)),
            key: bad.key,
            value: bad.value,
            allowed: bad.allowed,
            origin,
        }
    })?;
    Ok(config)
}

/// Turns serde's error into one that names the dotted key: toml points at
/// the offending key or value; the tree says which key that is.
fn deserialize_error(
    text: &str,
    tree: &Spanned<DeTable<'_>>,
    e: &toml::de::Error,
    origin: String,
) -> ConfigError {
    let message = e.message().trim_end().to_owned();
    let span = e.span();
    let line = span.as_ref().map(|s| line_of(text, s.start));
    let key = span
        .as_ref()
        .and_then(|s| key_at(tree.get_ref(), s.start))
        .map(|k| k.join("."));
    // serde's wording: "unknown field `x`, expected one of `a`, `b`" (or
    // "expected `a`" / "there are no fields").
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let expected = rest
            .split_once(", expected one of ")
            .or_else(|| rest.split_once(", expected "))
            .map(|(_, list)| list.to_owned());
        let fallback = rest.split(',').next().unwrap_or(rest).trim_matches('`');
        return ConfigError::UnknownKey {
            key: key.unwrap_or_else(|| fallback.to_owned()),
            origin,
            line,
            expected,
        };
    }
    ConfigError::BadValue {
        key,
        origin,
        line,
        message,
    }
}

/// The dotted key whose name or value contains byte `offset`, deepest first.
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    for (key, value) in table {
        let name = key.get_ref().to_string();
        // Tables' own spans need not cover their contents (a `[section]`
        // header is far from its keys), so always look inside.
        if let Some(mut inner) = key_in_value(value, offset) {
            inner.insert(0, name);
            return Some(inner);
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return Some(vec![name]);
        }
    }
    None
}

fn key_in_value(value: &Spanned<DeValue<'_>>, offset: usize) -> Option<Vec<String>> {
    match value.get_ref() {
        DeValue::Table(table) => key_at(table, offset),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            if let Some(mut inner) = key_in_value(item, offset) {
                inner.insert(0, i.to_string());
                Some(inner)
            } else if item.span().contains(&offset) {
                Some(vec![i.to_string()])
            } else {
                None
            }
        }),
        _ => None,
    }
}

/// Where the dotted key is written (its name), if it is in the file.
fn span_of_key(table: &DeTable<'_>, key: &[String]) -> Option<Range<usize>> {
    let (first, rest) = key.split_first()?;
    let (name, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == first)?;
    if rest.is_empty() {
        return Some(name.span());
    }
    let mut value = value;
    let mut rest = rest;
    loop {
        match value.get_ref() {
            DeValue::Table(inner) => return span_of_key(inner, rest),
            DeValue::Array(items) => {
                let (index, tail) = rest.split_first()?;
                value = items.get(index.parse::<usize>().ok()?)?;
                if tail.is_empty() {
                    return Some(value.span());
                }
                rest = tail;
            }
            _ => return None,
        }
    }
}

/// serde_ignored's path as key segments (`Some`/newtype levels dropped).
fn path_segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    let mut segments = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_segments(parent),
    };
    match path {
        Path::Seq { index, .. } => segments.push(index.to_string()),
        Path::Map { key, .. } => segments.push(key.clone()),
        _ => {}
    }
    segments
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads and parses one file.
pub fn load_file(path: &Path) -> Result<HarkConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// The files looked for, in order, when no path is given.
pub fn search_paths() -> Vec<PathBuf> {
    search_paths_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
        std::env::var_os("XDG_CONFIG_DIRS"),
    )
}

/// [`search_paths`] with the environment passed in. Relative XDG paths are
/// ignored, as the base directory specification requires.
pub fn search_paths_from(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
    xdg_config_dirs: Option<std::ffi::OsString>,
) -> Vec<PathBuf> {
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    let mut paths = Vec::new();
    let user = xdg_config_home
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .and_then(absolute)
        .or_else(|| {
            home.filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
                .and_then(absolute)
        });
    if let Some(dir) = user {
        paths.push(dir.join("hark/config.toml"));
    }
    let system = xdg_config_dirs
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/etc/xdg".into());
    for dir in std::env::split_paths(&system) {
        if dir.is_absolute() {
            paths.push(dir.join("hark/config.toml"));
        }
    }
    paths
}

/// Loads the explicit file (which must exist), else the first file of
/// [`search_paths`] that exists, else the defaults.
pub fn load(explicit: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    load_from(explicit, &search_paths())
}

fn load_from(explicit: Option<&Path>, searched: &[PathBuf]) -> Result<LoadedConfig, ConfigError> {
    let path = match explicit {
        Some(path) => Some(path.to_owned()),
        None => searched.iter().find(|p| p.exists()).cloned(),
    };
    match path {
        Some(path) => Ok(LoadedConfig {
            config: load_file(&path)?,
            source: ConfigSource::File(path),
        }),
        None => Ok(LoadedConfig {
            config: HarkConfig::default(),
            source: ConfigSource::Defaults {
                searched: searched.to_vec(),
            },
        }),
    }
}

/// One setting given on the command line (`--set KEY=VALUE`), applied
/// over the configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted key, as in `hark config default` (`conversation.barge_in.min_words`).
    pub key: String,
    pub value: toml::Value,
}

impl Override {
    pub fn new(key: &str, value: impl Into<toml::Value>) -> Self {
        Self {
            key: key.to_owned(),
            value: value.into(),
        }
    }
}

impl std::str::FromStr for Override {
    type Err = String;

    /// `KEY=VALUE`; VALUE is read as TOML (`3`, `true`, `"x"`, `[1, 2]`)
    /// and otherwise taken as a plain string, so `mode=always` works.
    fn from_str(text: &str) -> Result<Self, String> {
        let (key, raw) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|part| part.trim().is_empty()) {
            return Err(format!(
                "{text:?}: the key must be dotted names, such as audio.echo_tail_ms"
            ));
        }
        let raw = raw.trim();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
        Ok(Self::new(key, value))
    }
}

/// Where command-line settings are said to come from in messages.
const COMMAND_LINE: &str = "the command line";

/// `config` with `overrides` applied in order, checked as strictly as a
/// file: an unknown key or a bad value is an error naming the key.
pub fn with_overrides(
    config: HarkConfig,
    overrides: &[Override],
) -> Result<HarkConfig, ConfigError> {
    if overrides.is_empty() {
        return Ok(config);
    }
    let mut table =
        toml::Table::try_from(&config).expect("a configuration serialises to a TOML table");
    for o in overrides {
        let parts: Vec<&str> = o.key.split('.').map(str::trim).collect();
        let (last, sections) = parts.split_last().expect("checked when parsed");
        let mut at = &mut table;
        for (depth, section) in sections.iter().enumerate() {
            at = at
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::UnknownKey {
                    key: o.key.clone(),
                    origin: COMMAND_LINE.into(),
                    line: None,
                    expected: Some(format!(
                        "{} is a value, not a section",
                        parts[..=depth].join(".")
                    )),
                })?;
        }
        at.insert(last.to_string(), o.value.clone());
    }
    let text = toml::to_string(&table).expect("a TOML table serialises");
    parse(&text, COMMAND_LINE).map_err(ConfigError::without_line)
}

impl ConfigError {
    /// Lines of generated text mean nothing to the user.
    fn without_line(mut self) -> Self {
        match &mut self {
            ConfigError::Syntax { line, .. }
            | ConfigError::UnknownKey { line, .. }
            | ConfigError::BadValue { line, .. }
            | ConfigError::OutOfRange { line, .. } => *line = None,
            ConfigError::Read { .. } => {}
        }
        self
    }
}

/// [`load`], then the command line's `overrides` on top.
pub fn load_with(
    explicit: Option<&Path>,
    overrides: &[Override],
) -> Result<LoadedConfig, ConfigError> {
    let loaded = load(explicit)?;
    Ok(LoadedConfig {
        config: with_overrides(loaded.config, overrides)?,
        source: loaded.source,
    })
}

/// `hark config ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum ConfigCommand {
    /// Print the default configuration, every key commented.
    ///
    /// Save it as ~/.config/hark/config.toml and edit what you need; keys
    /// you delete keep their defaults.
    Default,
    /// Check a configuration file: TOML syntax, unknown keys, types and
    /// ranges.
    ///
    /// Without FILE, checks the file Hark would load:
    /// $XDG_CONFIG_HOME/hark/config.toml (~/.config/hark/config.toml), else
    /// hark/config.toml under $XDG_CONFIG_DIRS (/etc/xdg).
    Check {
        /// The file to check.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Default => {
            run_default();
            Ok(())
        }
        ConfigCommand::Check { file } => run_check(file.as_deref()),
    }
}

/// `hark config default`: the commented defaults on stdout.
pub fn run_default() {
    print!("{}", default_config_text());
}

/// `hark config check [FILE]`: loads like the daemon does and says which
/// file was used; an error names the key and line.
pub fn run_check(path: Option<&Path>) -> anyhow::Result<()> {
    let loaded = load(path)?;
    match &loaded.source {
        ConfigSource::File(path) => println!("{}: ok", path.display()),
        ConfigSource::Defaults { searched } => {
            let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
            println!(
                "no config file found (looked for {}); the built-in defaults are in use",
                list.join(", ")
            );
        }
    }
    Ok(())
}

/// The comment above one key of the default file.
struct KeyDoc {
    /// Dotted key, e.g. `vad.frame_ms`.
    key: &'static str,
    doc: &'static str,
    /// For keys unset by default (`Option`s): a value shown commented out.
    example: Option<&'static str>,
}

const fn doc(key: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: None,
    }
}

const fn unset(key: &'static str, doc: &'static str, example: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: Some(example),
    }
}

/// The comment above each section header.
const SECTION_DOCS: &[(&str, &str)] = &[
    ("audio", "Microphone and speaker."),
    (
        "vad",
        "Voice activity detection: where an utterance starts and ends \
         (WebRTC VAD). Durations are in milliseconds, rounded up to whole frames.",
    ),
    ("stt", "Speech to text (Whisper, whisper.cpp)."),
    ("llm", "The language model that writes the answers."),
    ("voice", "The voice that speaks them (Piper)."),
    (
        "conversation",
        "Turn-taking. Speech over Hark pauses it after barge_in.pause_after_ms; \
         speech shorter than barge_in.min_speech_ms is noise and Hark resumes; at \
         barge_in.commit_speech_ms Hark stops for good. Speech that ends in \
         between is transcribed: barge_in.min_words or more words that are not \
         all backchannels interrupt, anything else resumes.",
    ),
    (
        "conversation.barge_in",
        "When speech over Hark interrupts it.",
    ),
    (
        "conversation.chunking",
        "How replies are cut into clauses for speech. Character counts are \
         Unicode characters.",
    ),
    ("daemon", "The background service (hark daemon)."),
];

/// The comment above each key. A test fails when a key of
/// [`HarkConfig::default`] has none, or a comment's key no longer exists.
const KEY_DOCS: &[KeyDoc] = &[
    unset(
        "audio.input_device",
        "Capture device, as `hark devices` lists it. Unset: the system default \
         (PulseAudio/PipeWire's default source).",
        "\"default\"",
    ),
    unset(
        "audio.output_device",
        "Playback device, as `hark devices` lists it. Unset: the system default.",
        "\"default\"",
    ),
    doc(
        "audio.echo_cancellation",
        "Remove Hark's own voice from the microphone, so it does not hear itself \
         and can be interrupted over loudspeakers. true or false.",
    ),
    doc(
        "audio.echo_tail_ms",
        "Longest echo (speaker to room to microphone) removed, in ms; longer costs \
         CPU. 50 to 2000.",
    ),
    doc(
        "vad.aggressiveness",
        "How readily sound counts as speech: 0 (most speech, most false alarms) \
         to 3 (fewest false alarms).",
    ),
    doc("vad.frame_ms", "Classifier frame length: 10, 20 or 30."),
    doc(
        "vad.pre_roll_ms",
        "Audio kept from before the detected start, so the first sound is not \
         lost. 200 to 2000.",
    ),
    doc(
        "vad.end_silence_ms",
        "Silence that ends an utterance. Shorter answers sooner but may cut a \
         pause mid-sentence. 100 to 5000.",
    ),
    doc(
        "vad.min_speech_ms",
        "Utterances with less speech than this are ignored (coughs, clicks). \
         0 to 5000, at most max_utterance_ms.",
    ),
    doc(
        "vad.onset_ms",
        "Speech needed before an utterance starts; filters short noises. \
         10 to 1000.",
    ),
    doc(
        "vad.max_utterance_ms",
        "Longer speech is split (one Whisper window is 30 s). 1000 to 60000.",
    ),
    doc(
        "stt.model",
        "Whisper model: a name from `hark models list` (tiny.en, base) or the path \
         of a whisper.cpp ggml file.",
    ),
    unset(
        "stt.threads",
        "CPU threads for Whisper, 1 to 64. Unset: all cores, at most 8.",
        "2",
    ),
    doc(
        "stt.beam_size",
        "Beam width, 1 (greedy: fastest, least accurate) to 8.",
    ),
    doc(
        "stt.language",
        "Spoken language, an ISO 639-1 code such as \"en\", or \"auto\". English-only \
         models (.en) ignore it.",
    ),
    doc(
        "stt.no_speech_threshold",
        "Whisper segments more likely than this to be non-speech are dropped. \
         0.0 to 1.0.",
    ),
    doc(
        "stt.partial_every_ms",
        "While the user is talking, send a PartialTranscript signal each time this \
         much more speech is heard (for live captions); 0 turns them off. Each can \
         delay the final transcript by one short Whisper run. 0, or 300 to 10000.",
    ),
    doc(
        "llm.model",
        "Language model: a name from `hark models list` (smollm2-135m) or the path \
         of a GGUF file.",
    ),
    doc(
        "llm.system_prompt",
        "Instructions given to the model before the conversation.",
    ),
    doc(
        "llm.temperature",
        "Sampling temperature: 0.0 always picks the likeliest word (repeatable); \
         higher is more varied. 0.0 to 2.0.",
    ),
    doc(
        "llm.max_tokens",
        "Longest reply, in tokens (about 3/4 of a word each). 1 to half of \
         context_tokens.",
    ),
    doc(
        "llm.context_tokens",
        "Prompt plus reply budget, in tokens; older turns are dropped to fit. Also \
         capped by the model. 256 to 131072.",
    ),
    unset(
        "llm.threads",
        "CPU threads for the model, 1 to 64. Unset: all cores.",
        "2",
    ),
    doc(
        "voice.voice",
        "Piper voice: a name from `hark models list` (joe-medium) or the path of a \
         Piper .onnx voice (its .onnx.json next to it).",
    ),
    doc(
        "conversation.fallback_reply",
        "Said when the model writes nothing speakable; \"\" for silence.",
    ),
    doc(
        "conversation.barge_in.enabled",
        "Whether speech over Hark can interrupt it at all. true or false.",
    ),
    doc(
        "conversation.barge_in.pause_after_ms",
        "Speech over Hark this long pauses playback until it is judged; 0 pauses \
         as soon as the VAD confirms speech. 0 to commit_speech_ms.",
    ),
    doc(
        "conversation.barge_in.min_speech_ms",
        "Shorter speech over Hark is noise: not transcribed, and Hark resumes. \
         0 to commit_speech_ms.",
    ),
    doc(
        "conversation.barge_in.commit_speech_ms",
        "Speech over Hark sustained this long interrupts it without waiting for \
         the words. 0 to 10000.",
    ),
    doc(
        "conversation.barge_in.min_words",
        "Shorter speech interrupts only with at least this many words that are \
         not all backchannels. 1 to 20.",
    ),
    doc(
        "conversation.barge_in.echo_overlap_percent",
        "A transcript with at least this percentage of its words taken from \
         Hark's own reply is Hark's echo, not the user. 0 to 100; 101 turns \
         the check off.",
    ),
    doc(
        "conversation.barge_in.backchannels",
        "Words and phrases that acknowledge rather than interrupt (compared \
         ignoring case and punctuation).",
    ),
    doc(
        "conversation.chunking.first_min_words",
        "The first clause may end at a comma, semicolon or colon once it has this \
         many words, so speech starts early. 1 to 50.",
    ),
    doc(
        "conversation.chunking.first_max_chars",
        "With no punctuation in sight the first clause ends at a word boundary \
         before this many characters. 10 to max_chars.",
    ),
    doc(
        "conversation.chunking.long_clause_chars",
        "Later clauses end at a comma, semicolon or colon only past this many \
         characters (short clauses sound choppy). 1 to max_chars.",
    ),
    doc(
        "conversation.chunking.max_chars",
        "With no punctuation in sight later clauses end at a word boundary before \
         this many characters. 20 to 2000.",
    ),
    doc(
        "daemon.mode",
        "When Hark listens: \"always\"; \"push-to-talk\" (only while asked to \
         over D-Bus, e.g. from a key binding); or \"off\" (not listening; say \
         and ask still work).",
    ),
];

const HEADER: &str = "\
# Hark configuration.
#
# Hark reads the first of these that exists (there is no merging):
#   the file given with --config,
#   $XDG_CONFIG_HOME/hark/config.toml (~/.config/hark/config.toml),
#   hark/config.toml under $XDG_CONFIG_DIRS (/etc/xdg/hark/config.toml).
# Every key is optional: a key left out keeps the default shown here.
# Unknown keys are errors. Check a file with `hark config check FILE`;
# print this file with `hark config default`. On the command line,
# `hark daemon --set KEY=VALUE` (e.g. --set conversation.barge_in.min_words=3)
# overrides one key for that run.
";

/// The default configuration as a commented TOML file: every key with its
/// default value (keys unset by default commented out) and what it does.
pub fn default_config_text() -> String {
    let table = toml::Table::try_from(HarkConfig::default())
        .expect("the default configuration serialises to a TOML table");
    let mut out = String::from(HEADER);
    for (name, value) in &table {
        if let toml::Value::Table(section) = value {
            render_section(&mut out, name, section);
        }
    }
    out
}

fn render_section(out: &mut String, path: &str, table: &toml::Table) {
    out.push('\n');
    if let Some((_, text)) = SECTION_DOCS.iter().find(|(p, _)| *p == path) {
        push_comment(out, text, "");
    }
    out.push_str(&format!("[{path}]\n"));
    let prefix = format!("{path}.");
    let documented: Vec<&KeyDoc> = KEY_DOCS
        .iter()
        .filter(|d| {
            d.key
                .strip_prefix(&prefix)
                .is_some_and(|rest| !rest.contains('.'))
        })
        .collect();
    let mut first = true;
    let mut separate = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
    };
    // Keys in the comments' order (which places the unset ones), then any
    // key without a comment (a test fails on those).
    for d in &documented {
        let name = &d.key[prefix.len()..];
        match (table.get(name), d.example) {
            (Some(value), _) if !value.is_table() => {
                separate(out);
                push_comment(out, d.doc, "");
                out.push_str(&format!("{name} = {}\n", render_value(value)));
            }
            (None, Some(example)) => {
                separate(out);
                push_comment(out, d.doc, "");
                out.push_str(&format!("# {name} = {example}\n"));
            }
            _ => {}
        }
    }
    for (name, value) in table {
        let is_documented = documented.iter().any(|d| &d.key[prefix.len()..] == name);
        if !value.is_table() && !is_documented {
            separate(out);
            out.push_str(&format!("{name} = {}\n", render_value(value)));
        }
    }
    for (name, value) in table {
        if let toml::Value::Table(inner) = value {
            render_section(out, &format!("{path}.{name}"), inner);
        }
    }
}

/// A value as TOML; long arrays one element per line.
fn render_value(value: &toml::Value) -> String {
    let inline = value_to_string(value);
    match value {
        toml::Value::Array(items) if inline.len() > 60 => {
            // Several elements per line, lines of at most ~78 columns.
            let mut s = String::from("[\n");
            let mut line = String::new();
            for item in items {
                let item = format!("{},", value_to_string(item));
                if !line.is_empty() && 4 + line.len() + 1 + item.len() > 78 {
                    s.push_str(&format!("    {line}\n"));
                    line.clear();
                }
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(&item);
            }
            if !line.is_empty() {
                s.push_str(&format!("    {line}\n"));
            }
            s.push(']');
            s
        }
        _ => inline,
    }
}

fn value_to_string(value: &toml::Value) -> String {
    value.to_string()
}

/// `text` as `# ` comment lines of at most ~78 columns.
fn push_comment(out: &mut String, text: &str, indent: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + 2 + line.len() + 1 + word.len() > 78 {
            out.push_str(&format!("{indent}# {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{indent}# {line}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../packaging/config.toml.example");

    fn err(text: &str) -> String {
        parse(text, "/path/config.toml").unwrap_err().to_string()
    }

    /// Every leaf key of a table, dotted.
    fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = format!("{prefix}{name}");
            match value {
                toml::Value::Table(inner) => leaf_keys(inner, &format!("{key}."), out),
                _ => out.push(key),
            }
        }
    }

    #[test]
    fn command_line_settings_override_and_are_checked_like_a_file() {
        let set = |items: &[&str]| -> Result<HarkConfig, String> {
            let overrides: Vec<Override> = items.iter().map(|i| i.parse().unwrap()).collect();
            with_overrides(HarkConfig::default(), &overrides).map_err(|e| e.to_string())
        };
        let config = set(&[
            "audio.input_device=glasses mic",
            "conversation.barge_in.min_words = 3",
            "daemon.mode=push-to-talk",
            "audio.echo_cancellation=false",
        ])
        .unwrap();
        assert_eq!(config.audio.input_device.as_deref(), Some("glasses mic"));
        assert_eq!(config.conversation.barge_in.min_words, 3);
        assert_eq!(config.daemon.mode, Mode::PushToTalk);
        assert!(!config.audio.echo_cancellation);
        assert_eq!(set(&[]).unwrap(), HarkConfig::default());

        let unknown = set(&["audio.volume=11"]).unwrap_err();
        assert!(unknown.contains("unknown key audio.volume"), "{unknown}");
        assert!(
            unknown.contains("command line") && !unknown.contains("line 1"),
            "{unknown}"
        );
        let range = set(&["audio.echo_tail_ms=5"]).unwrap_err();
        assert!(range.contains("audio.echo_tail_ms = 5"), "{range}");
        let kind = set(&["daemon.mode=loud"]).unwrap_err();
        assert!(kind.contains("daemon.mode"), "{kind}");
        let nested = set(&["audio.echo_tail_ms.x=1"]).unwrap_err();
        assert!(nested.contains("audio.echo_tail_ms is a value"), "{nested}");
        assert!("audio".parse::<Override>().is_err());
        assert!("audio..x=1".parse::<Override>().is_err());
    }

    #[test]
    fn the_default_text_parses_back_to_the_defaults() {
        let text = default_config_text();
        let parsed = parse(&text, "default").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed, HarkConfig::default());
        // Every key is written out, not merely defaulted.
        let written: toml::Table = toml::from_str(&text).unwrap();
        let defaults = toml::Table::try_from(HarkConfig::default()).unwrap();
        assert_eq!(written, defaults);
    }

    #[test]
    fn every_key_has_a_comment_and_every_comment_a_key() {
        let defaults = toml::Table::try_from(HarkConfig::default()).unwrap();
        let mut keys = Vec::new();
        leaf_keys(&defaults, "", &mut keys);
        for key in &keys {
            assert!(
                KEY_DOCS.iter().any(|d| d.key == key),
                "config key {key} has no comment in KEY_DOCS"
            );
        }
        for d in KEY_DOCS {
            assert!(
                keys.iter().any(|k| k == d.key) || d.example.is_some(),
                "KEY_DOCS documents {}, which is not a config key",
                d.key
            );
            // Keys unset by default must still parse when uncommented.
            if let Some(example) = d.example {
                let (section, name) = d.key.rsplit_once('.').unwrap();
                let text = format!("[{section}]\n{name} = {example}\n");
                parse(&text, "example").unwrap_or_else(|e| panic!("{text}: {e}"));
            }
        }
        let mut sections: Vec<String> = Vec::new();
        fn tables(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (name, value) in t {
                if let toml::Value::Table(inner) = value {
                    let path = format!("{prefix}{name}");
                    tables(inner, &format!("{path}."), out);
                    out.push(path);
                }
            }
        }
        tables(&defaults, "", &mut sections);
        for section in sections {
            assert!(
                SECTION_DOCS.iter().any(|(s, _)| *s == section),
                "section [{section}] has no comment in SECTION_DOCS"
            );
        }
    }

    #[test]
    fn the_default_text_is_commented_toml_of_short_lines() {
        let text = default_config_text();
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(line.len() <= 80, "comment too long: {line}");
            }
        }
        assert!(text.contains("\n[vad]\n"));
        assert!(text.contains("\n[conversation.barge_in]\n"));
        assert!(text.contains("# input_device = \"default\"\n"));
        assert!(text.contains("mode = \"always\"\n"));
        assert!(text.contains("no_speech_threshold = 0.6\n"), "{text}");
    }

    #[test]
    fn the_packaged_example_is_the_default_text() {
        let parsed = parse(EXAMPLE, "packaging/config.toml.example").unwrap();
        assert_eq!(parsed, HarkConfig::default());
        if EXAMPLE != default_config_text() {
            if std::env::var_os("HARK_BLESS").is_some() {
                let path = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../packaging/config.toml.example"
                );
                std::fs::write(path, default_config_text()).unwrap();
            } else {
                panic!(
                    "packaging/config.toml.example differs from default_config_text(); \
                     regenerate it with `hark config default > packaging/config.toml.example` \
                     or rerun this test with HARK_BLESS=1"
                );
            }
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("", "empty").unwrap(), HarkConfig::default());
        assert_eq!(
            parse("# nothing\n[vad]\n", "comments").unwrap(),
            HarkConfig::default()
        );
    }

    #[test]
    fn values_are_read() {
        let text = r#"
[audio]
input_device = "pulse"
echo_cancellation = false

[vad]
aggressiveness = 2
frame_ms = 20

[stt]
model = "base"
threads = 4
language = "de"

[llm]
temperature = 0.0
threads = 1

[voice]
voice = "/voices/x.onnx"

[conversation]
fallback_reply = ""

[conversation.barge_in]
min_speech_ms = 250
backchannels = ["mhm"]

[daemon]
mode = "push-to-talk"
"#;
        let c = parse(text, "t").unwrap();
        assert_eq!(c.audio.input_device.as_deref(), Some("pulse"));
        assert!(!c.audio.echo_cancellation);
        assert_eq!(c.audio.echo_tail_ms, 400);
        assert_eq!(c.vad.to_vad_config().aggressiveness, 2);
        assert_eq!(c.vad.to_vad_config().frame_ms, 20);
        assert_eq!(c.vad.pre_roll_ms, VadConfig::default().pre_roll_ms);
        assert_eq!(c.stt.model, "base");
        let stt = c.stt.to_stt_config();
        assert_eq!(
            (stt.threads, stt.beam_size),
            (4, crate::converse::CONVERSE_BEAM_SIZE)
        );
        assert_eq!(stt.language, "de");
        assert!(stt.shrink_audio_ctx);
        assert!((stt.no_speech_threshold - 0.6).abs() < 1e-6);
        let llm = c.llm.to_llm_config();
        assert_eq!((llm.temperature, llm.threads), (0.0, Some(1)));
        assert_eq!(llm.seed, LlmConfig::default().seed);
        assert_eq!(c.voice.voice, "/voices/x.onnx");
        assert_eq!(c.conversation.fallback_reply, "");
        assert_eq!(c.conversation.barge_in.min_speech_ms, 250);
        assert_eq!(c.conversation.barge_in.backchannels, ["mhm"]);
        assert_eq!(
            c.conversation.barge_in.commit_speech_ms,
            TurnConfig::default().barge_in.commit_speech_ms
        );
        assert_eq!(c.daemon.mode, Mode::PushToTalk);
    }

    #[test]
    fn library_defaults_are_mirrored() {
        let c = HarkConfig::default();
        // The daemon converses: the conversation's endpointing, not
        // dictation's.
        let conversation_vad = VadConfig {
            end_silence_ms: crate::converse::CONVERSE_END_SILENCE_MS,
            onset_ms: crate::converse::CONVERSE_ONSET_MS,
            ..VadConfig::default()
        };
        assert_eq!(c.vad.to_vad_config(), conversation_vad);
        let llm = c.llm.to_llm_config();
        let lib = LlmConfig::default();
        assert_eq!(llm.system_prompt, lib.system_prompt);
        assert_eq!(
            (llm.max_tokens, llm.context_tokens),
            (lib.max_tokens, lib.context_tokens)
        );
        assert_eq!(c.stt.to_stt_config().threads, SttConfig::default().threads);
        assert_eq!(c.conversation, TurnConfig::default());
        c.validate().unwrap();
    }

    #[test]
    fn an_unknown_key_is_named_with_its_section_and_line() {
        let e = err("[vad]\nframe_ms = 20\nagressiveness = 2\n");
        assert!(
            e.starts_with("unknown key vad.agressiveness in /path/config.toml line 3"),
            "{e}"
        );
        assert!(e.contains("aggressiveness"), "suggests the real keys: {e}");
    }

    #[test]
    fn an_unknown_section_is_named() {
        let e = err("[vad]\nframe_ms = 20\n\n[vda]\nframe_ms = 20\n");
        assert!(
            e.starts_with("unknown key vda in /path/config.toml line 4"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_in_dotted_or_inline_form_is_named() {
        let e = err("stt.modle = \"base\"\n");
        assert!(
            e.starts_with("unknown key stt.modle in /path/config.toml line 1"),
            "{e}"
        );
        let e = err("\n\naudio = { echo_tail = 300 }\n");
        assert!(
            e.starts_with("unknown key audio.echo_tail in /path/config.toml line 3"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_inside_the_conversation_core_is_named() {
        // TurnConfig does not deny unknown fields; serde_ignored catches them.
        let e = err("[conversation.barge_in]\nenabled = true\nmin_speach_ms = 200\n");
        assert_eq!(
            e,
            "unknown key conversation.barge_in.min_speach_ms in /path/config.toml line 3"
        );
        let e = err("[conversation]\nfallback = \"\"\n");
        assert_eq!(
            e,
            "unknown key conversation.fallback in /path/config.toml line 2"
        );
    }

    #[test]
    fn out_of_range_values_name_the_key_and_the_range() {
        let e = err("[vad]\naggressiveness = 7\n");
        assert_eq!(
            e,
            "vad.aggressiveness = 7 is out of range: must be between 0 and 3 \
             in /path/config.toml line 2"
        );
        let e = err("[vad]\nframe_ms = 25\n");
        assert!(
            e.starts_with("vad.frame_ms = 25 is out of range: must be 10, 20 or 30"),
            "{e}"
        );
        let e = err("[stt]\nbeam_size = 0\n");
        assert!(
            e.starts_with("stt.beam_size = 0 is out of range: must be between 1 and 8"),
            "{e}"
        );
        let e = err("[llm]\ntemperature = 3.5\n");
        assert!(
            e.starts_with("llm.temperature = 3.5 is out of range: must be between 0 and 2"),
            "{e}"
        );
        let e = err("[audio]\necho_tail_ms = 5\n");
        assert!(
            e.starts_with("audio.echo_tail_ms = 5 is out of range"),
            "{e}"
        );
        let e = err("[stt]\nlanguage = \"English\"\n");
        assert!(
            e.starts_with("stt.language = \"English\" is out of range"),
            "{e}"
        );
        let e = err("[conversation.barge_in]\nmin_speech_ms = 1500\n");
        assert!(
            e.starts_with(
                "conversation.barge_in.min_speech_ms = 1500 is out of range: must be between 0 and 1000"
            ),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_variants_name_the_key_and_line() {
        let e = err("[daemon]\n\nmode = \"sometimes\"\n");
        assert!(
            e.starts_with("daemon.mode in /path/config.toml line 3: unknown variant `sometimes`"),
            "{e}"
        );
        assert!(e.contains("push-to-talk"), "{e}");
        let e = err("[stt]\nbeam_size = \"3\"\n");
        assert!(
            e.starts_with("stt.beam_size in /path/config.toml line 2: invalid type"),
            "{e}"
        );
        let e = err("[vad]\naggressiveness = 700\n");
        assert!(
            e.starts_with("vad.aggressiveness in /path/config.toml line 2"),
            "{e}"
        );
        let e = err("vad = 3\n");
        assert!(e.starts_with("vad in /path/config.toml line 1"), "{e}");
    }

    #[test]
    fn broken_toml_names_the_line() {
        let e = err("[vad]\nframe_ms = \n");
        assert!(
            e.starts_with("invalid TOML in /path/config.toml line 2"),
            "{e}"
        );
    }

    #[test]
    fn search_order_follows_xdg() {
        let paths = search_paths_from(
            Some("/x/conf".into()),
            Some("/home/u".into()),
            Some("/a:relative:/b".into()),
        );
        assert_eq!(
            paths,
            [
                PathBuf::from("/x/conf/hark/config.toml"),
                PathBuf::from("/a/hark/config.toml"),
                PathBuf::from("/b/hark/config.toml"),
            ]
        );
        let paths = search_paths_from(Some("".into()), Some("/home/u".into()), None);
        assert_eq!(
            paths,
            [
                PathBuf::from("/home/u/.config/hark/config.toml"),
                PathBuf::from("/etc/xdg/hark/config.toml"),
            ]
        );
        let paths = search_paths_from(Some("rel".into()), None, None);
        assert_eq!(paths, [PathBuf::from("/etc/xdg/hark/config.toml")]);
    }

    #[test]
    fn loading_takes_the_first_file_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user/hark/config.toml");
        let system = dir.path().join("system/hark/config.toml");
        std::fs::create_dir_all(system.parent().unwrap()).unwrap();
        std::fs::write(&system, "[voice]\nvoice = \"system\"\n").unwrap();
        let searched = [user.clone(), system.clone()];

        let loaded = load_from(None, &searched).unwrap();
        assert_eq!(loaded.source, ConfigSource::File(system.clone()));
        assert_eq!(loaded.config.voice.voice, "system");

        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(&user, "[voice]\nvoice = \"user\"\n").unwrap();
        let loaded = load_from(None, &searched).unwrap();
        assert_eq!(loaded.config.voice.voice, "user");

        let explicit = dir.path().join("explicit.toml");
        std::fs::write(&explicit, "[voice]\nvoice = \"explicit\"\n").unwrap();
        let loaded = load_from(Some(&explicit), &searched).unwrap();
        assert_eq!(loaded.config.voice.voice, "explicit");

        let loaded = load_from(None, &[dir.path().join("none.toml")]).unwrap();
        assert_eq!(loaded.config, HarkConfig::default());
        assert!(matches!(loaded.source, ConfigSource::Defaults { .. }));
        assert_eq!(loaded.source.to_string(), "built-in defaults");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = load_from(Some(&missing), &[]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read config file {}", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn the_error_names_the_file_it_was_loaded_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[vad]\nagressiveness = 2\n").unwrap();
        let e = load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "unknown key vad.agressiveness in {} line 2",
                path.display()
            )),
            "{e}"
        );
        assert!(run_check(Some(&path)).is_err());
        std::fs::write(&path, default_config_text()).unwrap();
        run_check(Some(&path)).unwrap();
    }
}
