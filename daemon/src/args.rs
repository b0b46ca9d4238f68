//! Command-line flags that set configuration keys. Each group turns what
//! was given into `--set`-style overrides applied after the file and the
//! `--set`s, so a flag is checked exactly as the key in a file would be,
//! and a flag not given leaves the file's value alone (none has a default
//! of its own: the defaults live in the sections).

use clap::Args;
use hark_config::Override;

/// Collects `(key, value)` pairs for the flags that were given.
#[derive(Default)]
struct Overrides(Vec<Override>);

impl Overrides {
    fn set(&mut self, key: &str, value: Option<impl Into<toml::Value>>) -> &mut Self {
        if let Some(value) = value {
            self.0.push(Override::new(key, value));
        }
        self
    }

    fn flag(&mut self, key: &str, given: bool, value: bool) -> &mut Self {
        self.set(key, given.then_some(value))
    }
}

fn int(v: impl Into<i64>) -> toml::Value {
    toml::Value::Integer(v.into())
}

fn count(v: usize) -> toml::Value {
    toml::Value::Integer(v as i64)
}

/// `[audio]`: devices and echo cancellation.
#[derive(Args, Debug, Clone, Default)]
pub struct AudioArgs {
    /// Microphone to listen on, as `hark devices` lists it (audio.input_device).
    #[arg(long, short = 'd', visible_alias = "device", value_name = "NAME")]
    pub input_device: Option<String>,

    /// Speaker to talk on (audio.output_device).
    #[arg(long, value_name = "NAME")]
    pub output_device: Option<String>,

    /// Do not cancel the speaker's echo in the microphone signal, for a
    /// headset (audio.echo_cancellation = false). Barge-in then relies on
    /// the VAD alone.
    #[arg(long)]
    pub no_echo_cancellation: bool,

    /// Longest echo path to cancel, in ms (audio.echo_tail_ms).
    #[arg(long, value_name = "MS")]
    pub echo_tail_ms: Option<u32>,
}

impl AudioArgs {
    fn overrides(&self, out: &mut Overrides) {
        out.set("audio.input_device", self.input_device.clone())
            .set("audio.output_device", self.output_device.clone())
            .flag("audio.echo_cancellation", self.no_echo_cancellation, false)
            .set("audio.echo_tail_ms", self.echo_tail_ms.map(int));
    }
}

/// `[vad]`: endpointing.
#[derive(Args, Debug, Clone, Default)]
pub struct VadArgs {
    /// WebRTC VAD aggressiveness, 0 (keeps most audio) to 3 (keeps least).
    #[arg(long, value_name = "0-3")]
    pub vad_aggressiveness: Option<u8>,
    /// VAD frame length in ms: 10, 20 or 30.
    #[arg(long, value_name = "MS")]
    pub vad_frame_ms: Option<u32>,
    /// Audio kept before the detected onset, in ms (at least 200).
    #[arg(long, value_name = "MS")]
    pub pre_roll_ms: Option<u32>,
    /// Silence that ends an utterance, in ms.
    #[arg(long, value_name = "MS")]
    pub end_silence_ms: Option<u32>,
    /// Utterances with less speech than this are ignored, in ms.
    #[arg(long, value_name = "MS")]
    pub min_speech_ms: Option<u32>,
}

impl VadArgs {
    fn overrides(&self, out: &mut Overrides) {
        out.set("vad.aggressiveness", self.vad_aggressiveness.map(int))
            .set("vad.frame_ms", self.vad_frame_ms.map(int))
            .set("vad.pre_roll_ms", self.pre_roll_ms.map(int))
            .set("vad.end_silence_ms", self.end_silence_ms.map(int))
            .set("vad.min_speech_ms", self.min_speech_ms.map(int));
    }

    /// `base` with these flags applied, checked like the `[vad]` section.
    pub fn apply(
        &self,
        base: hark_audio::vad::VadConfig,
    ) -> anyhow::Result<hark_audio::vad::VadConfig> {
        let mut out = Overrides::default();
        self.overrides(&mut out);
        let within_section: Vec<Override> = out
            .0
            .into_iter()
            .map(|o| Override::new(o.key.trim_start_matches("vad."), o.value))
            .collect();
        Ok(hark_config::with_overrides(base, &within_section)?)
    }
}

/// Which Whisper, and how wide its beam.
#[derive(Args, Debug, Clone, Default)]
pub struct WhisperArgs {
    /// Whisper model: a catalogue name (tiny.en, base) or a path to a
    /// whisper.cpp ggml file (stt.model).
    #[arg(long, short = 'm', value_name = "NAME|PATH")]
    pub model: Option<String>,

    /// Threads for Whisper (stt.threads; default: all cores, at most 8).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Whisper beam width, 1 = greedy, fastest (stt.beam_size).
    #[arg(long, value_name = "N")]
    pub beam_size: Option<usize>,
}

impl WhisperArgs {
    fn overrides(&self, out: &mut Overrides) {
        out.set("stt.model", self.model.clone())
            .set("stt.threads", self.threads.map(count))
            .set("stt.beam_size", self.beam_size.map(count));
    }

    /// As configuration overrides.
    pub fn to_overrides(&self) -> Vec<Override> {
        let mut out = Overrides::default();
        self.overrides(&mut out);
        out.0
    }
}

/// `[stt]`: Whisper in a conversation.
#[derive(Args, Debug, Clone, Default)]
pub struct SttArgs {
    #[command(flatten)]
    pub whisper: WhisperArgs,

    /// While the user talks, transcribe the speech so far each this many
    /// ms of speech; 0: never (stt.partial_every_ms).
    #[arg(long, value_name = "MS")]
    pub partial_every_ms: Option<u32>,
}

impl SttArgs {
    fn overrides(&self, out: &mut Overrides) {
        self.whisper.overrides(out);
        out.set("stt.partial_every_ms", self.partial_every_ms.map(int));
    }
}

/// `[llm]`: the language model.
#[derive(Args, Debug, Clone, Default)]
pub struct LlmArgs {
    /// Language model: a catalogue name (smollm2-135m) or a path to a GGUF
    /// file, llama, qwen2, qwen3 or gemma3 architecture (llm.model).
    #[arg(long, value_name = "NAME|PATH")]
    pub llm: Option<String>,

    /// Sampling temperature, 0 = always the most likely token
    /// (llm.temperature).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,

    /// Longest reply, in tokens; 0: the model says nothing and Hark speaks
    /// its fallback reply (llm.max_tokens).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,

    /// System prompt, the assistant's persona (llm.system_prompt).
    #[arg(long, value_name = "TEXT")]
    pub system_prompt: Option<String>,
}

impl LlmArgs {
    fn overrides(&self, out: &mut Overrides) {
        out.set("llm.model", self.llm.clone())
            .set("llm.temperature", self.temperature)
            .set("llm.max_tokens", self.max_tokens.map(count))
            .set("llm.system_prompt", self.system_prompt.clone());
    }
}

/// `[voice]`: the Piper voice.
#[derive(Args, Debug, Clone, Default)]
pub struct VoiceArgs {
    /// Piper voice: a catalogue name (joe-medium) or a path to a .onnx file
    /// with its .onnx.json beside it (voice.voice).
    #[arg(long, value_name = "NAME|PATH")]
    pub voice: Option<String>,
}

impl VoiceArgs {
    fn overrides(&self, out: &mut Overrides) {
        out.set("voice.voice", self.voice.clone());
    }
}

/// Everything a conversation session reads from the configuration, as
/// flags; shared by `hark converse`, `hark bench converse` and
/// `hark daemon`.
#[derive(Args, Debug, Clone, Default)]
pub struct SessionArgs {
    #[command(flatten)]
    pub audio: AudioArgs,

    /// Never let speech interrupt Hark; it still hears what is said after
    /// (conversation.barge_in.enabled = false).
    #[arg(long)]
    pub no_barge_in: bool,

    #[command(flatten)]
    pub vad: VadArgs,

    #[command(flatten)]
    pub stt: SttArgs,

    #[command(flatten)]
    pub llm: LlmArgs,

    #[command(flatten)]
    pub voice: VoiceArgs,
}

impl SessionArgs {
    pub fn overrides(&self) -> Vec<Override> {
        let mut out = Overrides::default();
        self.audio.overrides(&mut out);
        out.flag("conversation.barge_in.enabled", self.no_barge_in, false);
        self.vad.overrides(&mut out);
        self.stt.overrides(&mut out);
        self.llm.overrides(&mut out);
        self.voice.overrides(&mut out);
        out.0
    }
}

/// What `ask` and `say` read from the configuration: the model (ask only)
/// and the voice.
pub fn speech_overrides(llm: Option<&LlmArgs>, voice: &VoiceArgs) -> Vec<Override> {
    let mut out = Overrides::default();
    if let Some(llm) = llm {
        llm.overrides(&mut out);
    }
    voice.overrides(&mut out);
    out.0
}

/// `--mode` as an override of `daemon.mode`.
pub fn mode_override(mode: Option<&str>) -> Vec<Override> {
    let mut out = Overrides::default();
    out.set("daemon.mode", mode.map(str::to_owned));
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HarkConfig;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        session: SessionArgs,
    }

    fn config(args: &[&str]) -> Result<HarkConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("hark").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        hark_config::with_overrides(HarkConfig::default(), &cli.session.overrides())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_set_their_keys_and_absent_flags_keep_the_file() {
        let c = config(&[
            "--input-device",
            "mic",
            "--no-echo-cancellation",
            "--echo-tail-ms",
            "300",
            "--no-barge-in",
            "--end-silence-ms",
            "500",
            "-m",
            "base",
            "--beam-size",
            "3",
            "--llm",
            "/m.gguf",
            "--max-tokens",
            "0",
            "--temperature",
            "0",
            "--voice",
            "v",
        ])
        .unwrap();
        assert_eq!(c.audio.input_device.as_deref(), Some("mic"));
        assert!(!c.audio.echo_cancellation);
        assert_eq!(c.audio.echo_tail_ms, 300);
        assert!(!c.conversation.barge_in.enabled);
        assert_eq!(c.vad.end_silence_ms, 500);
        assert_eq!((c.stt.model.as_str(), c.stt.beam_size), ("base", 3));
        assert_eq!(c.llm.model, "/m.gguf");
        assert_eq!((c.llm.max_tokens, c.llm.temperature), (0, 0.0));
        assert_eq!(c.voice.voice, "v");
        assert_eq!(config(&[]).unwrap(), HarkConfig::default());
        assert_eq!(
            config(&["--device", "x"])
                .unwrap()
                .audio
                .input_device
                .as_deref(),
            Some("x")
        );
    }

    #[test]
    fn a_bad_flag_value_is_refused_like_a_bad_key() {
        let e = config(&["--vad-frame-ms", "25"]).unwrap_err();
        assert!(e.starts_with("vad.frame_ms = 25 is out of range"), "{e}");
        assert!(e.contains("command line"), "{e}");
        let e = config(&["--beam-size", "9"]).unwrap_err();
        assert!(e.starts_with("stt.beam_size = 9"), "{e}");
        let vad = VadArgs {
            end_silence_ms: Some(50),
            ..VadArgs::default()
        };
        let e = vad
            .apply(hark_audio::vad::VadConfig::dictation())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("end_silence_ms = 50 is out of range"), "{e}");
    }
}
