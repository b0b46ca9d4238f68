//! `hark converse`: a conversation in the foreground, on the configured
//! devices or against WAV files in real time, printing each turn.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hark_session::{run_session, EventLog, Input, Output, SessionEvent, SessionSetup, StopRules};

use crate::args::SessionArgs;
use crate::Globals;

#[derive(Args, Debug)]
pub struct ConverseArgs {
    /// Take the user's side from this WAV file, paced in real time, instead
    /// of the microphone.
    #[arg(long, short, value_name = "FILE", conflicts_with = "input_device")]
    pub input: Option<PathBuf>,

    /// Write Hark's voice to this WAV file, on the input's timeline,
    /// instead of the speaker.
    #[arg(long, short, value_name = "FILE", conflicts_with = "output_device")]
    pub output: Option<PathBuf>,

    /// Write every event (speech, transcripts, tokens, clauses, playback,
    /// interruptions) to this file, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Stop after this many replies.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<usize>,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    #[command(flatten)]
    pub session: SessionArgs,
}

/// Prints "you: …" and "hark: …" as the turns happen.
fn print_turns(_: u64, event: &SessionEvent) {
    match event {
        SessionEvent::UserTurn { text } => println!("you:  {text}"),
        SessionEvent::TurnFinished {
            text, interrupted, ..
        } => {
            let mark = if *interrupted { " [interrupted]" } else { "" };
            println!("hark: {text}{mark}");
        }
        _ => {}
    }
}

pub fn run(args: ConverseArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = globals.store()?;
    let config = globals.config(&args.session.overrides())?;
    let input = match args.input {
        Some(path) => Input::File(path),
        None => Input::Microphone,
    };
    let output = match args.output {
        Some(path) => Output::File { path, tap: None },
        None => Output::Speaker,
    };
    // Here Hark always listens (there is nobody to press push-to-talk),
    // answering everything, or only what is said to it by name or after
    // its wake word.
    let mut session = config.session();
    if !matches!(
        session.mode,
        hark_session::ListenMode::Name | hark_session::ListenMode::Wake
    ) {
        session.mode = hark_session::ListenMode::Always;
    }
    let mut setup = SessionSetup::new(session, input, output);
    setup.rules = StopRules {
        max_turns: args.max_turns,
        duration: args.duration.map(Duration::from_secs_f64),
    };
    // Timers set here live as long as this conversation.
    setup.skills = Some(config.skills(None));
    setup.tools = config.tools.clone();
    setup.subscribers.push(Box::new(print_turns));
    if let Some(path) = &args.events {
        setup.subscribers.push(Box::new(EventLog::create(path)?));
    }
    let outcome = run_session(setup, || Ok(crate::models::session(&config, &store)?))?;
    tracing::info!(
        turns = outcome.turns.len(),
        interruptions = outcome.interruptions,
        "conversation ended"
    );
    Ok(())
}
