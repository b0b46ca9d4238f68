//! `hark ask TEXT --local`: the language model's streamed reply, printed as
//! it is written and spoken clause by clause while it is still being
//! written, by the same workers a conversation uses.
//!
//! ```text
//! "hark-llm": LlmWorker ─tokens─▶ feeder: ClauseSplitter ─▶ "hark-tts" ─audio─▶ this thread: speaker/WAV
//!                                      └─▶ stdout
//! ```

use std::io::Write;

use anyhow::{bail, Context};
use clap::Args;
use hark_converse::chunk::ClauseSplitter;
use hark_llm::{ChatMessage, LlmEvent, LlmWorker};

use crate::args::{speech_overrides, LlmArgs, VoiceArgs};
use crate::speak::{play_clauses, LocalVoice, OutputArgs};
use crate::Globals;

#[derive(Args, Debug)]
pub struct AskArgs {
    /// The question or request.
    #[arg(required = true)]
    pub text: Vec<String>,

    /// Load the model and answer in this process instead of asking the
    /// running daemon (implied by --output).
    #[arg(long)]
    pub local: bool,

    #[command(flatten)]
    pub llm: LlmArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub voice: VoiceArgs,
}

pub fn run(args: AskArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = globals.store()?;
    let config = globals.config(&speech_overrides(Some(&args.llm), &args.voice))?;
    let question = crate::non_empty("ask", &args.text)?;
    let model = crate::models::llm(&config.llm, &store)?;
    let LocalVoice {
        worker,
        audio,
        mut output,
    } = LocalVoice::open(&config, &args.output, &store)?;
    let llm = LlmWorker::spawn(model);
    let (events, _cancel) = llm.ask(vec![ChatMessage::user(question)])?;
    let chunking = config.conversation.chunking.clone();
    let fallback = config.conversation.fallback_reply.clone();
    let feeder = std::thread::Builder::new()
        .name("hark-ask-feed".into())
        .spawn(move || -> anyhow::Result<hark_llm::Generation> {
            let mut splitter = ClauseSplitter::new(chunking);
            let mut stdout = std::io::stdout();
            let mut clause_id = 0u64;
            let mut speak = |clause: String| {
                clause_id += 1;
                worker
                    .synthesize_waiting(clause_id, clause)
                    .context("the synthesis thread stopped")
            };
            let mut said = String::new();
            let generation = loop {
                match events.recv() {
                    Ok(LlmEvent::Token(piece)) => {
                        let _ = write!(stdout, "{piece}");
                        let _ = stdout.flush();
                        said.push_str(&piece);
                        for clause in splitter.push(&piece) {
                            speak(clause)?;
                        }
                    }
                    Ok(LlmEvent::Done(generation)) => break generation,
                    Ok(LlmEvent::Error(message)) => bail!("the language model failed: {message}"),
                    Err(_) => bail!("the language model thread stopped"),
                }
            };
            let _ = writeln!(stdout);
            let rest = splitter.finish();
            let nothing_said = rest.is_empty() && said.trim().is_empty();
            for clause in rest {
                speak(clause)?;
            }
            if nothing_said && !fallback.is_empty() {
                tracing::warn!("the language model gave an empty reply; speaking the fallback");
                println!("{fallback}");
                speak(fallback)?;
            }
            worker.finish();
            Ok(generation)
        })
        .context("cannot start the clause feeder")?;

    let played = play_clauses(&audio, &mut output);
    drop(audio); // unblocks the worker if playing failed
    let generation = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the clause feeder panicked"))??;
    played?;
    output.finish()?;
    tracing::info!(
        tokens = generation.tokens,
        first_token_ms = generation.first_token_ms as u64,
        total_ms = generation.total_ms as u64,
        "reply finished"
    );
    Ok(())
}
