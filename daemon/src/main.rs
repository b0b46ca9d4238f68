//! `hark`: the command-line entry point. Parses arguments, sets up logging,
//! and hands off to one module per command; errors are printed once, with
//! their context chain, by `main`.

mod args;
mod ask;
mod bench;
mod bench_addressee;
mod bench_quality;
mod client;
mod config;
mod converse;
mod daemon;
mod desktop;
mod devices;
#[cfg(test)]
mod fuzz;
mod lent;
mod listen;
mod manpage;
mod models;
mod models_cmd;
mod notify;
mod progress;
mod service;
mod speak;
mod speech_provider;
mod transcribe;
mod wyoming;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hark_config::Override;
use hark_models::store::ModelStore;

/// Hark: a local voice assistant that listens, understands and answers,
/// entirely on this machine.
///
/// Audio comes from the default microphone (ALSA/PulseAudio/PipeWire through
/// cpal) or from WAV files; speech is found with WebRTC VAD and transcribed
/// with Whisper (whisper.cpp). Models live in the model store
/// ($HARK_MODELS_DIR, else $XDG_DATA_HOME/hark/models, else
/// ~/.local/share/hark/models); install them with `hark models fetch`.
///
/// `hark daemon`, `converse`, `bench` and `ask`/`say --local` read one
/// configuration file (`hark config default` prints it, commented), then
/// `--set KEY=VALUE`, then their own flags, each overriding the one before.
#[derive(Parser, Debug)]
#[command(name = "hark", version, propagate_version = true)]
struct Cli {
    /// Model store directory (overrides HARK_MODELS_DIR and XDG_DATA_HOME).
    #[arg(long, global = true, value_name = "DIR")]
    models_dir: Option<PathBuf>,

    /// Configuration file (default: $XDG_CONFIG_HOME/hark/config.toml, then
    /// /etc/xdg/hark/config.toml, then built-in defaults).
    #[arg(long, global = true, value_name = "FILE", env = "HARK_CONFIG")]
    config: Option<PathBuf>,

    /// Override a configuration key for this run, e.g.
    /// `--set conversation.barge_in.min_words=3` (repeatable; keys as in
    /// `hark config default`; the value is TOML, or else a plain string).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    settings: Vec<Override>,

    /// More log output on stderr (-v: debug, -vv: trace). HARK_LOG takes a
    /// full tracing filter instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List audio capture and playback devices.
    Devices,
    /// Install, list and convert models.
    #[command(subcommand)]
    Models(models_cmd::ModelsCommand),
    /// Print the transcript of a whole WAV file.
    Transcribe(transcribe::TranscribeArgs),
    /// Listen (microphone or WAV file) and print each utterance as soon as it
    /// has ended, with its start and end time.
    Listen(listen::ListenArgs),
    /// Speak text with the Piper voice (through the running daemon, or
    /// here with --local or --output).
    Say(speak::SayArgs),
    /// Ask the language model; its reply is printed and spoken (through the
    /// running daemon, or here with --local or --output, as it is written).
    Ask(ask::AskArgs),
    /// Show what the running daemon is doing: state, mode, devices, models.
    Status,
    /// Make the running daemon stop talking.
    Interrupt,
    /// Stop the running daemon from listening (it still speaks).
    Mute,
    /// Let the running daemon listen again.
    Unmute,
    /// Push-to-talk for the running daemon (in push-to-talk mode).
    #[command(subcommand)]
    Ptt(client::PushToTalk),
    /// When the running daemon listens: always, name (only what is said to
    /// it by name), wake (only after its wake word), push-to-talk or off.
    Mode {
        #[arg(value_parser = hark_session::ListenMode::NAMES)]
        mode: String,
    },
    /// The running daemon's conversation history.
    History {
        /// One JSON object per turn.
        #[arg(long)]
        json: bool,
        /// Forget the history instead of printing it.
        #[arg(long, conflicts_with = "json")]
        clear: bool,
    },
    /// Print the running daemon's signals as they happen, one line each;
    /// `--hud` draws its heads-up display pages instead.
    Monitor(client::MonitorArgs),
    /// The running daemon's timers; `set` and `cancel` change them.
    Timers {
        #[command(subcommand)]
        action: Option<client::TimersCommand>,
    },
    /// Stream a WAV file or raw PCM from standard input into the running
    /// daemon, which hears it instead of its microphone until it ends.
    Stream(client::StreamArgs),
    /// Talk with Hark: it listens, answers aloud while its reply is still
    /// being written, and stops when you talk over it. With --input and
    /// --output it converses with a WAV file in real time instead.
    Converse(converse::ConverseArgs),
    /// Run Hark in the background: the conversation on the configured
    /// devices, controlled over D-Bus (dev.hark.Hark). Runs in the
    /// foreground and logs to stderr; systemd starts it as a user service.
    Daemon(daemon::DaemonArgs),
    /// Print or check the configuration file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Home Assistant's Wyoming protocol: serve Hark's Whisper and voice.
    #[command(subcommand)]
    Wyoming(wyoming::WyomingCommand),
    /// Lend Hark's voice to desktop apps without the assistant: serve
    /// only the speech provider (org.freedesktop.Speech.Provider, GNOME's
    /// Spiel) as dev.hark.Speech.Provider, until interrupted. `hark
    /// daemon` serves it too.
    SpeechProvider,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(manpage::CompletionsArgs),
    /// Write the man pages into a directory.
    #[command(hide = true)]
    Manpage(manpage::ManpageArgs),
    /// Measure speed and CPU use; prints JSON on stdout.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Which Whisper model `transcribe`, `listen` and `bench stt` use (they
/// do not read the configuration file: dictation is not a conversation).
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Whisper model: a catalogue name (tiny.en, base) or a path to a
    /// whisper.cpp ggml file.
    #[arg(long, short = 'm', default_value = "tiny.en", value_name = "NAME|PATH")]
    pub model: String,

    /// Threads for Whisper (default: all cores, at most 8).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Whisper beam width, 1 = greedy (fastest, least accurate). Default: 3
    /// when listening (latency matters), 5 for whole files.
    #[arg(long, value_name = "N")]
    pub beam_size: Option<usize>,
}

impl ModelArgs {
    /// `base` (files or listening) with these flags on top.
    pub fn stt(&self, base: hark_stt::SttConfig) -> hark_stt::SttConfig {
        hark_stt::SttConfig {
            model: self.model.clone(),
            threads: self.threads.map(|n| n.max(1)).or(base.threads),
            beam_size: self.beam_size.unwrap_or(base.beam_size).max(1),
            ..base
        }
    }
}

/// The global options every command may use.
#[derive(Debug, Clone)]
pub struct Globals {
    pub models_dir: Option<PathBuf>,
    /// `--config` (or `$HARK_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// `--set`s, in order.
    pub settings: Vec<Override>,
}

impl Globals {
    pub fn store(&self) -> anyhow::Result<ModelStore> {
        Ok(match &self.models_dir {
            Some(dir) => ModelStore::at(dir),
            None => ModelStore::from_env()?,
        })
    }

    /// The `--set`s, then a command's `flags`.
    pub fn overrides(&self, flags: &[Override]) -> Vec<Override> {
        self.settings.iter().chain(flags).cloned().collect()
    }

    /// The configuration a command runs with: the file, the `--set`s, then
    /// the command's `flags`.
    pub fn config(&self, flags: &[Override]) -> anyhow::Result<config::HarkConfig> {
        let loaded = config::load(self.config_file.as_deref(), &self.overrides(flags))?;
        tracing::info!(config = %loaded.source, "configuration loaded");
        Ok(loaded.config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hark: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // These need no model store.
    let client_request = match &cli.command {
        Command::Say(args) if !args.local && args.output.output.is_none() => {
            Some(client::Request::Say(non_empty("say", &args.text)?))
        }
        Command::Ask(args) if !args.local && args.output.output.is_none() => {
            Some(client::Request::Ask(non_empty("ask", &args.text)?))
        }
        Command::Status => Some(client::Request::Status),
        Command::Interrupt => Some(client::Request::Interrupt),
        Command::Mute => Some(client::Request::Mute(true)),
        Command::Unmute => Some(client::Request::Mute(false)),
        Command::Ptt(action) => Some(client::Request::PushToTalk(*action)),
        Command::Mode { mode } => Some(client::Request::Mode(mode.clone())),
        Command::History { json, clear } => Some(client::Request::History {
            json: *json,
            clear: *clear,
        }),
        Command::Monitor(args) => Some(client::Request::Monitor {
            json: args.json,
            // The box is the configured display's size.
            hud: match args.hud {
                true => Some(
                    Globals {
                        models_dir: None,
                        config_file: cli.config.clone(),
                        settings: cli.settings.clone(),
                    }
                    .config(&[])?
                    .hud,
                ),
                false => None,
            },
        }),
        Command::Stream(args) => Some(client::Request::Stream(args.clone())),
        Command::Timers { action } => Some(client::Request::Timers(action.clone())),
        _ => None,
    };
    if let Some(request) = client_request {
        return client::run(request);
    }
    let globals = Globals {
        models_dir: cli.models_dir,
        config_file: cli.config,
        settings: cli.settings,
    };
    match cli.command {
        Command::Config(cmd) => config::run(cmd, globals.config_file.as_deref()),
        Command::Completions(args) => {
            manpage::run_completions(args, <Cli as clap::CommandFactory>::command())
        }
        Command::Manpage(args) => {
            manpage::run_manpage(args, <Cli as clap::CommandFactory>::command())
        }
        Command::Devices => devices::run(),
        Command::Models(cmd) => models_cmd::run(cmd, &globals.store()?),
        Command::Transcribe(args) => transcribe::run(args, &globals.store()?),
        Command::Listen(args) => listen::run(args, &globals.store()?),
        Command::Say(args) => speak::run_say(args, &globals),
        Command::Ask(args) => ask::run(args, &globals),
        Command::Converse(args) => converse::run(args, &globals),
        Command::Daemon(args) => daemon::run(args, &globals),
        Command::Bench(cmd) => bench::run(cmd, &globals),
        Command::Wyoming(cmd) => wyoming::run(cmd, &globals),
        Command::SpeechProvider => speech_provider::run(&globals),
        Command::Status
        | Command::Interrupt
        | Command::Mute
        | Command::Unmute
        | Command::Ptt(_)
        | Command::Mode { .. }
        | Command::History { .. }
        | Command::Monitor(_)
        | Command::Timers { .. }
        | Command::Stream(_) => unreachable!("handled above"),
    }
}

/// The words of a `say`/`ask` joined, refused when there are none.
fn non_empty(command: &str, words: &[String]) -> anyhow::Result<String> {
    let text = words.join(" ");
    if text.trim().is_empty() {
        anyhow::bail!("nothing to {command}: the text is empty");
    }
    Ok(text)
}

/// Logs go to stderr in a plain, journald-friendly form (no colours unless a
/// terminal is attached). whisper.cpp's own chatter is routed through
/// tracing and kept at warnings unless asked for.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info,whisper_rs=warn",
        1 => "debug,whisper_rs=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("HARK_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(verbose > 0)
        .without_time()
        .try_init();
}
