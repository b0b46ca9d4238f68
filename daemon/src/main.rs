//! `hark`: the command-line entry point. Parses arguments, sets up logging,
//! and hands off to one module per command; errors are printed once, with
//! their context chain, by `main`.

mod ask;
mod bench;
mod client;
mod config;
mod converse;
mod daemon;
mod devices;
mod listen;
mod manpage;
mod model_files;
mod models_cmd;
mod notify;
mod progress;
mod service;
mod speak;
mod stt_setup;
mod transcribe;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Hark: a local voice assistant that listens, understands and answers,
/// entirely on this machine.
///
/// Audio comes from the default microphone (ALSA/PulseAudio/PipeWire through
/// cpal) or from WAV files; speech is found with WebRTC VAD and transcribed
/// with Whisper (whisper.cpp). Models live in the model store
/// ($HARK_MODELS_DIR, else $XDG_DATA_HOME/hark/models, else
/// ~/.local/share/hark/models); install them with `hark models fetch`.
#[derive(Parser, Debug)]
#[command(name = "hark", version, propagate_version = true)]
struct Cli {
    /// Model store directory (overrides HARK_MODELS_DIR and XDG_DATA_HOME).
    #[arg(long, global = true, value_name = "DIR")]
    models_dir: Option<PathBuf>,

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
    /// When the running daemon listens: always, push-to-talk or off.
    Mode {
        #[arg(value_parser = ["always", "push-to-talk", "off"])]
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
    /// Print the running daemon's signals as they happen, one line each.
    Monitor(client::JsonArg),
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(manpage::CompletionsArgs),
    /// Write the man pages into a directory.
    #[command(hide = true)]
    Manpage(manpage::ManpageArgs),
    /// Measure speed and CPU use; prints JSON on stdout.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Which Whisper model to use; shared by every command that transcribes.
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
        Command::Monitor(args) => Some(client::Request::Monitor { json: args.json }),
        Command::Stream(args) => Some(client::Request::Stream(args.clone())),
        _ => None,
    };
    if let Some(request) = client_request {
        return client::run(request);
    }
    match cli.command {
        Command::Config(cmd) => return config::run(cmd),
        Command::Completions(args) => {
            return manpage::run_completions(args, <Cli as clap::CommandFactory>::command())
        }
        Command::Manpage(args) => {
            return manpage::run_manpage(args, <Cli as clap::CommandFactory>::command())
        }
        _ => {}
    }
    let store = match &cli.models_dir {
        Some(dir) => hark_models::store::ModelStore::at(dir),
        None => hark_models::store::ModelStore::from_env()?,
    };
    match cli.command {
        Command::Devices => devices::run(),
        Command::Models(cmd) => models_cmd::run(cmd, &store),
        Command::Transcribe(args) => transcribe::run(args, &store),
        Command::Listen(args) => listen::run(args, &store),
        Command::Say(args) => speak::run_say(args, &store),
        Command::Ask(args) => ask::run(args, &store),
        Command::Converse(args) => converse::run(args, &store),
        Command::Daemon(args) => daemon::run(args, &store),
        Command::Config(_)
        | Command::Completions(_)
        | Command::Manpage(_)
        | Command::Status
        | Command::Interrupt
        | Command::Mute
        | Command::Unmute
        | Command::Ptt(_)
        | Command::Mode { .. }
        | Command::History { .. }
        | Command::Monitor(_)
        | Command::Stream(_) => unreachable!("handled above"),
        Command::Bench(cmd) => bench::run(cmd, &store),
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
