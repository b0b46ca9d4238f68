//! Speaking: text → clauses → Piper (on the "hark-tts" thread) → speaker or
//! WAV file, with each clause synthesized while the previous one plays.
//!
//! ```text
//! clauses ──(bounded)──▶ "hark-tts": PiperVoice::synthesize ──(bounded)──▶ caller: SpeechOutput::play
//! ```

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use anyhow::{bail, Context};
use clap::Args;
use hark_audio::device::DevicePlayer;
use hark_audio::wav::{WavSampleFormat, WavSink};
use hark_converse::chunk::{ChunkConfig, ClauseSplitter};
use hark_models::store::{ModelStore, ONNXRUNTIME, PIPER_JOE_MEDIUM};
use hark_tts::PiperVoice;

/// Clauses waiting for synthesis, and synthesized clauses waiting for the
/// speaker. Two each: enough to keep the speaker busy, little to throw away
/// on an interruption.
const CLAUSE_QUEUE: usize = 2;

/// Where speech goes; shared by `say` and `ask`.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Write speech to this WAV file instead of the speaker.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Playback device name (see `hark devices`); default: the system default.
    #[arg(long, value_name = "NAME", conflicts_with = "output")]
    pub output_device: Option<String>,

    /// Piper voice: a catalogue name (joe-medium) or a path to a .onnx file
    /// with its .onnx.json beside it.
    #[arg(long, default_value = "joe-medium", value_name = "NAME|PATH")]
    pub voice: String,
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
}

/// Loads the Piper voice `--voice` names, on ONNX Runtime from the store.
pub fn load_voice(args: &OutputArgs, store: &ModelStore) -> anyhow::Result<PiperVoice> {
    let onnx = if args.voice == PIPER_JOE_MEDIUM.name {
        crate::model_files::installed(store, &PIPER_JOE_MEDIUM, "Piper voice")?
    } else {
        PathBuf::from(&args.voice)
    };
    let ort_lib = crate::model_files::installed(store, &ONNXRUNTIME, "ONNX Runtime")?;
    let started = std::time::Instant::now();
    // One ONNX thread: Whisper and the language model share the other core.
    let voice = PiperVoice::load(&onnx, &ort_lib, 1)
        .with_context(|| format!("loading Piper voice {}", onnx.display()))?;
    tracing::info!(voice = %onnx.display(), ms = started.elapsed().as_millis() as u64, "voice loaded");
    Ok(voice)
}

/// The speaker or a WAV file.
pub enum SpeechOutput {
    Device(DevicePlayer),
    File(WavSink),
}

impl SpeechOutput {
    pub fn open(args: &OutputArgs, sample_rate: u32) -> anyhow::Result<Self> {
        Ok(match &args.output {
            Some(path) => {
                SpeechOutput::File(WavSink::create(path, sample_rate, WavSampleFormat::Int16)?)
            }
            None => SpeechOutput::Device(DevicePlayer::open(args.output_device.as_deref())?),
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

/// Piper on its own named thread behind bounded channels. Clauses go in
/// through the sender [`Synthesizer::spawn`] returns (move it to whichever
/// thread produces text); audio comes out of [`Synthesizer::recv`] in order.
pub struct Synthesizer {
    audio: Receiver<anyhow::Result<(String, Vec<f32>)>>,
    thread: Option<JoinHandle<()>>,
    pub sample_rate: u32,
}

impl Synthesizer {
    pub fn spawn(mut voice: PiperVoice) -> anyhow::Result<(SyncSender<String>, Self)> {
        let sample_rate = voice.sample_rate();
        let (clauses, clause_rx) = mpsc::sync_channel::<String>(CLAUSE_QUEUE);
        let (audio_tx, audio) = mpsc::sync_channel(CLAUSE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("hark-tts".into())
            .spawn(move || {
                for clause in clause_rx {
                    let result = voice
                        .synthesize(&clause)
                        .with_context(|| format!("synthesizing {clause:?}"))
                        .map(|pcm| (clause, pcm));
                    if audio_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the synthesis thread")?;
        let synth = Self {
            audio,
            thread: Some(thread),
            sample_rate,
        };
        Ok((clauses, synth))
    }

    /// The next synthesized clause, waiting for it; `None` once every
    /// sender is gone and the queue is empty.
    pub fn recv(&self) -> Option<anyhow::Result<(String, Vec<f32>)>> {
        self.audio.recv().ok()
    }
}

impl Drop for Synthesizer {
    fn drop(&mut self) {
        // Unblock a thread waiting to hand over audio, then let it finish
        // (it ends when its clause senders are gone).
        while self.audio.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Plays synthesized clauses as they arrive until the clause senders are
/// gone; `on_clause` sees each clause's text as it starts playing.
pub fn play_clauses(
    synth: &Synthesizer,
    output: &mut SpeechOutput,
    on_clause: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    while let Some(result) = synth.recv() {
        let (clause, pcm) = result?;
        tracing::debug!(%clause, secs = pcm.len() as f32 / synth.sample_rate as f32, "speaking clause");
        on_clause(&clause);
        output.play(&pcm, synth.sample_rate)?;
    }
    Ok(())
}

/// Speaks `text` clause by clause: clause n plays while n+1 is synthesized.
pub fn speak_text(text: &str, voice: PiperVoice, output: &mut SpeechOutput) -> anyhow::Result<()> {
    let clauses = ClauseSplitter::split(ChunkConfig::default(), text);
    let (sender, synth) = Synthesizer::spawn(voice)?;
    let feeder = std::thread::Builder::new()
        .name("hark-say-feed".into())
        .spawn(move || {
            for clause in clauses {
                if sender.send(clause).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the clause feeder")?;
    let played = play_clauses(&synth, output, &mut |_| {});
    let _ = feeder.join();
    played
}

pub fn run_say(args: SayArgs, store: &ModelStore) -> anyhow::Result<()> {
    let text = args.text.join(" ");
    if text.trim().is_empty() {
        bail!("nothing to say: the text is empty");
    }
    let voice = load_voice(&args.output, store)?;
    let mut output = SpeechOutput::open(&args.output, voice.sample_rate())?;
    speak_text(&text, voice, &mut output)?;
    output.finish()?;
    if let Some(path) = &args.output.output {
        eprintln!("hark: wrote {}", Path::new(path).display());
    }
    Ok(())
}
