//! The configuration file, assembled: one section per part of Hark, each
//! owned by the crate that uses it (`[vad]` is `hark_audio::vad::VadConfig`,
//! `[stt]` `hark_stt::SttConfig`, `[llm]` `hark_llm::LlmConfig`, `[voice]`
//! `hark_tts::TtsConfig`, `[audio]` `hark_session::AudioConfig`,
//! `[conversation]` `hark_converse::TurnConfig`, `[turn]`
//! `hark_endpoint::EndpointConfig`, `[skills]`
//! `hark_skills::SkillsConfig`); only `[daemon]` and `[desktop]`
//! (`crate::desktop::DesktopConfig`) are the binary's. `hark_config` does
//! the reading, the line-numbered errors, the overrides and the commented
//! default file.
//!
//! Which file is read (the first that exists wins; there is no merging):
//!
//! 1. the path given with `--config` (or `$HARK_CONFIG`);
//! 2. `$XDG_CONFIG_HOME/hark/config.toml` (default `~/.config/hark/config.toml`);
//! 3. `hark/config.toml` under each of `$XDG_CONFIG_DIRS` (default
//!    `/etc/xdg/hark/config.toml`);
//! 4. none: the built-in defaults.
//!
//! Then `--set KEY=VALUE` settings apply in order, then the command's own
//! flags (`--llm`, `--end-silence-ms`, …), each checked as strictly as the
//! file.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use hark_audio::vad::VadConfig;
use hark_config::{
    doc, ConfigError, ConfigSource, Docs, InvalidValue, KeyDoc, Loaded, Override, Section, Settings,
};
use hark_converse::hud::HudConfig;
use hark_converse::turn::TurnConfig;
use hark_converse::WakeConfig;
use hark_endpoint::EndpointConfig;
use hark_llm::LlmConfig;
use hark_session::{AudioConfig, ListenMode, SessionConfig, ToolConfig};
use hark_skills::SkillsConfig;
use hark_stt::SttConfig;
use hark_tts::TtsConfig;
use hark_wyoming::WyomingConfig;
use serde::{Deserialize, Serialize};

use crate::desktop::DesktopConfig;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HarkConfig {
    pub audio: AudioConfig,
    pub vad: VadConfig,
    pub stt: SttConfig,
    pub llm: LlmConfig,
    pub voice: TtsConfig,
    /// The turn-taking rules (unknown keys inside it are caught by
    /// `serde_ignored`, since it does not deny them itself).
    pub conversation: TurnConfig,
    /// When the user has finished (`[turn]`).
    pub turn: EndpointConfig,
    pub skills: SkillsConfig,
    pub daemon: DaemonConfig,
    /// When Hark is spoken to (`[wake]`).
    pub wake: WakeConfig,
    /// Hark as a Wyoming server (`[wyoming]`).
    pub wyoming: WyomingConfig,
    /// Notifications and the speech provider (`[desktop]`).
    pub desktop: DesktopConfig,
    /// The heads-up display's size (`[hud]`).
    pub hud: HudConfig,
    /// Commands a model may call (`[[tools]]`); none by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolConfig>,
}

/// `[daemon]`: how `hark daemon` starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    pub mode: ListenMode,
}

impl Settings for DaemonConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        Ok(())
    }
}

impl Section for DaemonConfig {
    const DOC: &'static str = "The background service (hark daemon).";
    const KEYS: &'static [KeyDoc] = &[doc(
        "mode",
        "When Hark listens: \"always\"; \"name\" (always, but it answers only \
         what begins with its name, [wake] names, or follows a reply within \
         [wake] follow_up_ms); \"wake\" (only what follows the acoustic wake word, \
         [wake] wake_word, whose model `hark models fetch wake-hey-jarvis` installs); \
         \"push-to-talk\" (only while asked to over D-Bus, \
         e.g. from a key binding); or \"off\" (not listening; say and ask still \
         work).",
    )];
}

impl Settings for HarkConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        let within = |name: &'static str| move |e: InvalidValue| e.within(name);
        self.audio.validate().map_err(within("audio"))?;
        self.vad.validate().map_err(within("vad"))?;
        self.stt.validate().map_err(within("stt"))?;
        self.llm.validate().map_err(within("llm"))?;
        self.voice.validate().map_err(within("voice"))?;
        self.conversation
            .validate()
            .map_err(within("conversation"))?;
        self.turn.validate().map_err(within("turn"))?;
        self.skills.validate().map_err(within("skills"))?;
        for (n, tool) in self.tools.iter().enumerate() {
            tool.validate()
                .map_err(|e| e.within(&format!("tools.{n}")))?;
            if self.tools[..n].iter().any(|t| t.name == tool.name) {
                return Err(InvalidValue::new(
                    &format!("tools.{n}.name"),
                    format!("{:?}", tool.name),
                    "a name no other tool has",
                ));
            }
        }
        self.daemon.validate().map_err(within("daemon"))?;
        self.wake.validate().map_err(within("wake"))?;
        self.wyoming.validate().map_err(within("wyoming"))?;
        self.desktop.validate().map_err(within("desktop"))?;
        self.hud.validate().map_err(within("hud"))
    }
}

impl HarkConfig {
    /// The skills as configured, their state (timers, volume) in `file`
    /// (`None`: in memory, for this run only).
    pub fn skills(&self, file: Option<PathBuf>) -> hark_skills::Skills {
        let (skills, problem) = hark_skills::Skills::new(self.skills.clone(), file);
        if let Some(problem) = problem {
            tracing::warn!("{problem}");
        }
        skills
    }

    /// What a conversation session takes from the file.
    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            audio: self.audio.clone(),
            vad: self.vad.clone(),
            turn: self.conversation.clone(),
            partial_every_ms: self.stt.partial_every_ms,
            mode: self.daemon.mode,
            endpoint: self.turn.clone(),
            wake: self.wake.clone(),
        }
    }

    /// The models the daemon names on D-Bus (`Models`).
    pub fn model_names(&self) -> Vec<String> {
        vec![
            format!("stt:{}", self.stt.model),
            format!("llm:{}", self.llm.model),
            format!("voice:{}", self.voice.voice),
        ]
    }
}

/// Every section's comments, in file order.
fn docs() -> Docs {
    Docs::new()
        .section::<AudioConfig>("audio")
        .section::<VadConfig>("vad")
        .section::<SttConfig>("stt")
        .section::<LlmConfig>("llm")
        .section::<TtsConfig>("voice")
        .section::<TurnConfig>("conversation")
        .section::<EndpointConfig>("turn")
        .section::<SkillsConfig>("skills")
        .section::<DaemonConfig>("daemon")
        .section::<WakeConfig>("wake")
        .section::<WyomingConfig>("wyoming")
        .section::<DesktopConfig>("desktop")
        .section::<HudConfig>("hud")
}

const HEADER: &str = r#"# Hark configuration.
#
# Hark reads the first of these that exists (there is no merging):
#   the file given with --config (or $HARK_CONFIG),
#   $XDG_CONFIG_HOME/hark/config.toml (~/.config/hark/config.toml),
#   hark/config.toml under $XDG_CONFIG_DIRS (/etc/xdg/hark/config.toml).
# Every key is optional: a key left out keeps the default shown here.
# Unknown keys are errors. Check a file with `hark config check FILE`;
# print this file with `hark config default`. `hark daemon`, `converse`,
# `bench` and `ask`/`say --local` all read it; on their command line,
# `--set KEY=VALUE` (e.g. --set conversation.barge_in.min_words=3)
# overrides one key for that run, and their own flags override both.
#
# Tools: with llm.backend = "openai" and a model that calls tools, Hark
# offers its skills (time, timers) and any command you add, run without a
# shell, `{name}` replaced by that argument, its output the result:
#
#   [[tools]]
#   name = "weather"
#   description = "Today's weather forecast for a city."
#   command = ["/usr/local/bin/weather", "--city", "{city}"]
#   timeout_ms = 5000
#   [tools.parameters]
#   type = "object"
#   required = ["city"]
#   [tools.parameters.properties.city]
#   type = "string"
"#;

/// The default configuration as a commented TOML file.
pub fn default_config_text() -> String {
    hark_config::render(&HarkConfig::default(), HEADER, &docs())
}

/// Where the daemon keeps what outlives it (timers, volume):
/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
/// `$XDG_STATE_HOME/hark`, else `~/.local/state/hark`.
pub fn state_file() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let dir = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| absolute(std::env::split_paths(&v).next()?.into_os_string()))
        .or_else(|| {
            std::env::var_os("XDG_STATE_HOME")
                .and_then(absolute)
                .map(|d| d.join("hark"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local/state/hark"))
        })?;
    Some(dir.join("state.json"))
}

/// The files looked for when no `--config` is given.
pub fn search_paths() -> Vec<PathBuf> {
    hark_config::search_paths("hark/config.toml")
}

/// Loads the explicit file or the first one found, then applies
/// `overrides` (the `--set`s, then the command's flags) in order.
pub fn load(
    explicit: Option<&Path>,
    overrides: &[Override],
) -> Result<Loaded<HarkConfig>, ConfigError> {
    let loaded = hark_config::load::<HarkConfig>(explicit, &search_paths())?;
    Ok(Loaded {
        config: hark_config::with_overrides(loaded.config, overrides)?,
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
    /// Without FILE, checks the file Hark would load: --config or
    /// $HARK_CONFIG, else $XDG_CONFIG_HOME/hark/config.toml
    /// (~/.config/hark/config.toml), else hark/config.toml under
    /// $XDG_CONFIG_DIRS (/etc/xdg).
    Check {
        /// The file to check.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

/// `hark config default|check`; `global` is `--config`.
pub fn run(cmd: ConfigCommand, global: Option<&Path>) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Default => {
            print!("{}", default_config_text());
            Ok(())
        }
        ConfigCommand::Check { file } => run_check(file.as_deref().or(global)),
    }
}

/// `hark config check [FILE]`: loads like the daemon does and says which
/// file was used; an error names the key and line.
pub fn run_check(path: Option<&Path>) -> anyhow::Result<()> {
    let loaded = load(path, &[])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use hark_config::{parse, with_overrides};

    const EXAMPLE: &str = include_str!("../../packaging/config.toml.example");

    fn err(text: &str) -> String {
        parse::<HarkConfig>(text, "/path/config.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_default_text_parses_back_to_the_defaults_and_documents_every_key() {
        let text = default_config_text();
        let parsed: HarkConfig = parse(&text, "default").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed, HarkConfig::default());
        // Every key is written out, not merely defaulted.
        let written: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            written,
            toml::Table::try_from(HarkConfig::default()).unwrap()
        );
        assert_eq!(
            hark_config::undocumented(&HarkConfig::default(), &docs()),
            Vec::<String>::new()
        );
        assert!(text.contains("\n[vad]\n"));
        assert!(text.contains("\n[conversation.barge_in]\n"));
        assert!(text.contains("# input_device = \"default\"\n"));
        assert!(text.contains("mode = \"always\"\n"));
        assert!(text.contains("no_speech_threshold = 0.6\n"), "{text}");
        for line in text.lines().filter(|l| l.starts_with('#')) {
            assert!(line.len() <= 80, "comment too long: {line}");
        }
    }

    #[test]
    fn keys_unset_by_default_parse_when_uncommented() {
        for (section, key, example) in [
            ("audio", "input_device", "\"default\""),
            ("audio", "output_device", "\"default\""),
            ("stt", "threads", "2"),
            ("llm", "threads", "2"),
        ] {
            let text = format!("[{section}]\n{key} = {example}\n");
            parse::<HarkConfig>(&text, "example").unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                default_config_text().contains(&format!("# {key} = {example}\n")),
                "{section}.{key}"
            );
        }
    }

    #[test]
    fn the_packaged_example_is_the_default_text() {
        let parsed: HarkConfig = parse(EXAMPLE, "packaging/config.toml.example").unwrap();
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
    fn every_section_is_read_into_its_crates_type() {
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
        let c: HarkConfig = parse(text, "t").unwrap();
        assert_eq!(c.audio.input_device.as_deref(), Some("pulse"));
        assert!(!c.audio.echo_cancellation);
        assert_eq!(c.audio.echo_tail_ms, 400);
        assert_eq!((c.vad.aggressiveness, c.vad.frame_ms), (2, 20));
        assert_eq!(c.vad.end_silence_ms, VadConfig::default().end_silence_ms);
        assert_eq!(c.stt.model, "base");
        assert_eq!((c.stt.threads, c.stt.beam_size), (Some(4), 1));
        assert_eq!(c.stt.language, "de");
        assert!(
            c.stt.shrink_audio_ctx,
            "the daemon runs Whisper in utterance mode"
        );
        assert_eq!((c.llm.temperature, c.llm.threads), (0.0, Some(1)));
        assert_eq!(c.llm.seed, LlmConfig::default().seed);
        assert_eq!(c.voice.voice, "/voices/x.onnx");
        assert_eq!(c.conversation.fallback_reply, "");
        assert_eq!(c.conversation.barge_in.min_speech_ms, 250);
        assert_eq!(c.conversation.barge_in.backchannels, ["mhm"]);
        assert_eq!(c.daemon.mode, ListenMode::PushToTalk);
        let session = c.session();
        assert_eq!(session.mode, ListenMode::PushToTalk);
        assert_eq!(session.partial_every_ms, 1000);
        assert_eq!(session.vad, c.vad);
    }

    #[test]
    fn the_defaults_are_a_conversations() {
        let c = HarkConfig::default();
        c.validate().unwrap();
        assert_eq!((c.vad.end_silence_ms, c.vad.onset_ms), (300, 90));
        assert_eq!(c.stt.beam_size, 1);
        assert_eq!(c.conversation, TurnConfig::default());
    }

    #[test]
    fn errors_name_the_section_key_and_line() {
        let e = err("[vad]\nframe_ms = 20\nagressiveness = 2\n");
        assert!(
            e.starts_with("unknown key vad.agressiveness in /path/config.toml line 3"),
            "{e}"
        );
        assert!(e.contains("aggressiveness"), "suggests the real keys: {e}");
        let e = err("[conversation.barge_in]\nenabled = true\nmin_speach_ms = 200\n");
        assert_eq!(
            e,
            "unknown key conversation.barge_in.min_speach_ms in /path/config.toml line 3"
        );
        for (text, start) in [
            (
                "[vad]\naggressiveness = 7\n",
                "vad.aggressiveness = 7 is out of range: must be between 0 and 3 in /path/config.toml line 2",
            ),
            ("[vad]\nframe_ms = 25\n", "vad.frame_ms = 25 is out of range: must be 10, 20 or 30"),
            ("[stt]\nbeam_size = 0\n", "stt.beam_size = 0 is out of range: must be between 1 and 8"),
            ("[llm]\ntemperature = 3.5\n", "llm.temperature = 3.5 is out of range: must be between 0 and 2"),
            ("[audio]\necho_tail_ms = 5\n", "audio.echo_tail_ms = 5 is out of range"),
            ("[stt]\nlanguage = \"English\"\n", "stt.language = \"English\" is out of range"),
            (
                "[conversation.barge_in]\nmin_speech_ms = 1500\n",
                "conversation.barge_in.min_speech_ms = 1500 is out of range: must be between 0 and 1000",
            ),
            ("[voice]\nvoice = \" \"\n", "voice.voice = \" \" is out of range"),
            ("[daemon]\n\nmode = \"sometimes\"\n", "daemon.mode in /path/config.toml line 3: unknown variant `sometimes`"),
            ("[stt]\nbeam_size = \"3\"\n", "stt.beam_size in /path/config.toml line 2: invalid type"),
        ] {
            let e = err(text);
            assert!(e.starts_with(start), "{text:?}: {e}");
        }
    }

    #[test]
    fn command_line_settings_reach_every_section() {
        let overrides: Vec<Override> = [
            "audio.input_device=glasses mic",
            "conversation.barge_in.min_words = 3",
            "daemon.mode=push-to-talk",
            "stt.partial_every_ms=0",
            "llm.max_tokens=0",
        ]
        .iter()
        .map(|i| i.parse().unwrap())
        .collect();
        let c = with_overrides(HarkConfig::default(), &overrides).unwrap();
        assert_eq!(c.audio.input_device.as_deref(), Some("glasses mic"));
        assert_eq!(c.conversation.barge_in.min_words, 3);
        assert_eq!(c.daemon.mode, ListenMode::PushToTalk);
        assert_eq!(c.session().partial_every_ms, 0);
        assert_eq!(c.llm.max_tokens, 0);
    }

    #[test]
    fn the_tools_example_in_the_header_parses_and_bad_tools_are_named() {
        let example: String = HEADER
            .lines()
            .skip_while(|l| !l.contains("[[tools]]"))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim()))
            .collect();
        let c: HarkConfig = parse(&example, "header").unwrap_or_else(|e| panic!("{e}\n{example}"));
        assert_eq!(c.tools.len(), 1);
        assert_eq!(c.tools[0].name, "weather");
        assert_eq!(
            c.tools[0].parameters["properties"]["city"]["type"],
            "string"
        );
        let e = err("[[tools]]\nname = \"x\"\ndescription = \"d\"\ncommand = []\n");
        assert!(e.starts_with("tools.0.command = [] is out of range"), "{e}");
        let e =
            err("[[tools]]\nname = \"x\"\ndescription = \"d\"\ncommand = [\"a\"]\nshell = true\n");
        assert!(
            e.starts_with("unknown key tools.0.shell in /path/config.toml line 5"),
            "{e}"
        );
        let twice = "[[tools]]\nname = \"x\"\ndescription = \"d\"\ncommand = [\"a\"]\n".repeat(2);
        assert!(
            err(&twice).starts_with("tools.1.name = \"x\" is out of range"),
            "{}",
            err(&twice)
        );
    }

    #[test]
    fn check_names_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[vad]\nagressiveness = 2\n").unwrap();
        let e = run_check(Some(&path)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "unknown key vad.agressiveness in {} line 2",
                path.display()
            )),
            "{e}"
        );
        std::fs::write(&path, default_config_text()).unwrap();
        run_check(Some(&path)).unwrap();
    }
}
