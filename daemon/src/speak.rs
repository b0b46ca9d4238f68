//! Speaking in this process (`hark say --local` or `--output`): text →
//! clauses → the voice worker ("hark-tts") → speaker or WAV file, each
//! clause synthesized while the previous one plays. `hark ask` uses the
//! same path after the language model.
//!
//! ```text
//! feeder thread: clauses ──▶ "hark-tts": VoiceWorker ──(bounded)──▶ this thread: SpeechOutput::play
//! ```

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};

use anyhow::Context;
use clap::Args;
use hark_audio::device::DevicePlayer;
use hark_audio::wav::{WavSampleFormat, WavSink};
use hark_converse::chunk::ClauseSplitter;
use hark_models::store::ModelStore;
use hark_tts::{Synthesized, VoiceWorker};

use crate::args::{speech_overrides, VoiceArgs};
use crate::config::HarkConfig;
use crate::Globals;

/// Synthesized clauses waiting for the speaker: enough to keep it busy,
/// little to throw away.
const AUDIO_QUEUE: usize = 2;

/// Where speech goes; shared by `say` and `ask`.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Write speech to this WAV file instead of the speaker.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Playback device name (see `hark devices`; audio.output_device).
    #[arg(long, value_name = "NAME", conflicts_with = "output")]
    pub output_device: Option<String>,
}

#[derive(Args, Debug)]
pub struct SayArgs {
    /// What to say.
    #[arg(required = true)]
    pub text: Vec<String>,

    /// Speak from this process instead of asking the running daemon
    /// (implied by --output).
    #[arg(long)]
    pub local: bool,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub voice: VoiceArgs,
}

/// The speaker or a WAV file.
pub enum SpeechOutput {
    Device(DevicePlayer),
    File(WavSink),
}

impl SpeechOutput {
    /// The file `args` names, else its device, else the configured one.
    pub fn open(
        args: &OutputArgs,
        configured_device: Option<&str>,
        sample_rate: u32,
    ) -> anyhow::Result<Self> {
        Ok(match &args.output {
            Some(path) => {
                SpeechOutput::File(WavSink::create(path, sample_rate, WavSampleFormat::Int16)?)
            }
            None => SpeechOutput::Device(DevicePlayer::open(
                args.output_device.as_deref().or(configured_device),
            )?),
        })
    }

    pub fn play(&mut self, samples: &[f32], sample_rate: u32) -> anyhow::Result<()> {
        match self {
            SpeechOutput::Device(player) => {
                player.play(samples, sample_rate)?;
            }
            SpeechOutput::File(sink) => sink.write(samples)?,
        }
        Ok(())
    }

    /// Waits until everything queued has been heard (device) or written.
    pub fn finish(self) -> anyhow::Result<()> {
        match self {
            SpeechOutput::Device(player) => player.drain()?,
            SpeechOutput::File(sink) => sink.finalize()?,
        }
        Ok(())
    }
}

/// The configured voice on its worker, and where its speech goes.
pub struct LocalVoice {
    pub worker: VoiceWorker,
    /// The worker's audio, in order; ends once the worker is finished.
    pub audio: Receiver<Synthesized>,
    pub output: SpeechOutput,
}

impl LocalVoice {
    pub fn open(
        config: &HarkConfig,
        output: &OutputArgs,
        store: &ModelStore,
    ) -> anyhow::Result<Self> {
        let voice = crate::models::voice(&config.voice, store)?;
        let output = SpeechOutput::open(
            output,
            config.audio.output_device.as_deref(),
            voice.sample_rate(),
        )?;
        let (audio_tx, audio) = mpsc::sync_channel(AUDIO_QUEUE);
        let worker = VoiceWorker::spawn(voice, move |s| audio_tx.send(s).is_ok())
            .context("cannot start the synthesis thread")?;
        Ok(Self {
            worker,
            audio,
            output,
        })
    }
}

/// Plays synthesized clauses as they arrive, until the worker is finished.
pub fn play_clauses(
    audio: &Receiver<Synthesized>,
    output: &mut SpeechOutput,
) -> anyhow::Result<()> {
    for clause in audio {
        let pcm = clause
            .audio
            .map_err(|e| anyhow::anyhow!("synthesizing clause {}: {e}", clause.clause))?;
        tracing::debug!(
            clause = clause.clause,
            secs = pcm.len() as f32 / clause.rate as f32,
            "speaking clause"
        );
        output.play(&pcm, clause.rate)?;
    }
    Ok(())
}

pub fn run_say(args: SayArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = globals.store()?;
    let config = globals.config(&speech_overrides(None, &args.voice))?;
    let text = crate::non_empty("say", &args.text)?;
    let LocalVoice {
        worker,
        audio,
        mut output,
    } = LocalVoice::open(&config, &args.output, &store)?;
    let clauses = ClauseSplitter::split(config.conversation.chunking.clone(), &text);
    let feeder = std::thread::Builder::new()
        .name("hark-say-feed".into())
        .spawn(move || {
            for (id, clause) in clauses.into_iter().enumerate() {
                if worker.synthesize_waiting(id as u64, clause).is_err() {
                    break;
                }
            }
            worker.finish();
        })
        .context("cannot start the clause feeder")?;
    let played = play_clauses(&audio, &mut output);
    drop(audio); // unblocks the worker if playing failed
    let _ = feeder.join();
    played?;
    output.finish()?;
    if let Some(path) = &args.output.output {
        eprintln!("hark: wrote {}", path.display());
    }
    Ok(())
}
