//! `hark ask TEXT`: the language model's streamed reply, printed as it is
//! written and spoken clause by clause while it is still being written.
//!
//! ```text
//! "hark-llm": generate ─tokens─▶ ClauseSplitter ─clauses (bounded)─▶ "hark-tts" ─audio─▶ caller: speaker/WAV
//!                    └─▶ stdout
//! ```

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hark_converse::chunk::{ChunkConfig, ClauseSplitter};
use hark_llm::{ChatMessage, LanguageModel, LlmConfig};
use hark_models::store::{ModelStore, SMOLLM2_135M};

use crate::speak::{load_voice, play_clauses, OutputArgs, SpeechOutput, Synthesizer};

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
}

/// Language model options shared by the commands that generate replies.
#[derive(Args, Debug, Clone)]
pub struct LlmArgs {
    /// Language model: a catalogue name (smollm2-135m) or a path to a GGUF
    /// file (llama, qwen2, qwen3 or gemma3 architecture).
    #[arg(long, default_value = "smollm2-135m", value_name = "NAME|PATH")]
    pub llm: String,

    /// Sampling temperature (0 = always the most likely token).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,

    /// Longest reply, in tokens (0: the model says nothing and Hark speaks
    /// its fallback reply, which is how the empty-reply path is tested).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,

    /// System prompt (the assistant's persona).
    #[arg(long, value_name = "TEXT")]
    pub system_prompt: Option<String>,
}

impl LlmArgs {
    pub fn load(&self, store: &ModelStore) -> anyhow::Result<LanguageModel> {
        let mut config = LlmConfig::default();
        if let Some(t) = self.temperature {
            config.temperature = t.max(0.0);
        }
        if let Some(n) = self.max_tokens {
            config.max_tokens = n;
        }
        if let Some(p) = &self.system_prompt {
            config.system_prompt = p.clone();
        }
        load_llm(&self.llm, config, store)
    }
}

/// Loads the language model `name` names: a catalogue name or a GGUF path.
pub fn load_llm(
    name: &str,
    config: LlmConfig,
    store: &ModelStore,
) -> anyhow::Result<LanguageModel> {
    let path = if name == SMOLLM2_135M.name {
        crate::model_files::installed(store, &SMOLLM2_135M, "language model")?
    } else {
        PathBuf::from(name)
    };
    let started = std::time::Instant::now();
    let model = LanguageModel::load(&path, config)
        .with_context(|| format!("loading language model {}", path.display()))?;
    tracing::info!(
        model = %path.display(),
        architecture = model.architecture(),
        ms = started.elapsed().as_millis() as u64,
        "language model loaded"
    );
    Ok(model)
}

pub fn run(args: AskArgs, store: &ModelStore) -> anyhow::Result<()> {
    let question = args.text.join(" ");
    if question.trim().is_empty() {
        bail!("nothing to ask: the text is empty");
    }
    let mut model = args.llm.load(store)?;
    let voice = load_voice(&args.output, store)?;
    let mut output = SpeechOutput::open(&args.output, voice.sample_rate())?;
    let (clauses, synth) = Synthesizer::spawn(voice)?;

    let history = vec![ChatMessage::user(question)];
    let generator = std::thread::Builder::new()
        .name("hark-llm".into())
        .spawn(move || -> anyhow::Result<hark_llm::Generation> {
            let mut splitter = ClauseSplitter::new(ChunkConfig::default());
            let mut stdout = std::io::stdout();
            let mut send_failed = false;
            let generation = model.generate(&history, &mut |piece| {
                let _ = write!(stdout, "{piece}");
                let _ = stdout.flush();
                for clause in splitter.push(piece) {
                    if clauses.send(clause).is_err() {
                        send_failed = true;
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })?;
            let _ = writeln!(stdout);
            if send_failed {
                bail!("the synthesis thread stopped");
            }
            let rest = splitter.finish().filter(|c| !c.trim().is_empty());
            if let Some(clause) = rest {
                let _ = clauses.send(clause);
            } else if generation.text.trim().is_empty() {
                tracing::warn!("the language model gave an empty reply; speaking the fallback");
                // The conversation's fallback, so both paths say the same.
                let fallback = hark_converse::turn::TurnConfig::default().fallback_reply;
                println!("{fallback}");
                let _ = clauses.send(fallback);
            }
            Ok(generation)
        })
        .context("cannot start the language model thread")?;

    let played = play_clauses(&synth, &mut output, &mut |clause| {
        tracing::debug!(%clause, "clause playing");
    });
    let generation = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the language model thread panicked"))??;
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
