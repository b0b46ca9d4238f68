//! `hark listen`: the dictation pipeline (`hark_session::listen`) on a
//! microphone or a WAV file, one line per utterance on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use hark_audio::vad::VadConfig;
use hark_audio::FrameSource;
use hark_models::store::ModelStore;
use hark_session::listen::{run_pipeline, ListenEvent};
use hark_stt::SttConfig;

use crate::args::VadArgs;
use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Read this WAV file instead of a microphone (any rate, channels, 16/24/32-bit).
    #[arg(long, short, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// With --input: deliver the file at real-time pace, as a microphone would.
    #[arg(long, requires = "input")]
    pub realtime: bool,

    /// Capture device name (see `hark devices`); default: the system default.
    #[arg(long, short, value_name = "NAME", conflicts_with = "input")]
    pub device: Option<String>,

    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Stop after this many utterances.
    #[arg(long, value_name = "N")]
    pub max_utterances: Option<usize>,

    /// Stop after this many seconds of audio.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Encode Whisper's full 30 s window for every utterance (slower; by
    /// default the window is shrunk to the utterance).
    #[arg(long)]
    pub full_window: bool,

    #[command(flatten)]
    pub vad: VadArgs,

    #[command(flatten)]
    pub model: ModelArgs,
}

/// Opens what `--input`/`--device` name, framed for the VAD.
fn open_source(args: &ListenArgs, frame_len: usize) -> anyhow::Result<Box<dyn FrameSource>> {
    use hark_audio::wav::{Pacing, WavSource};
    Ok(match &args.input {
        Some(path) => {
            let pacing = if args.realtime {
                Pacing::Realtime
            } else {
                Pacing::AsFastAsPossible
            };
            Box::new(WavSource::open(path, frame_len, pacing)?)
        }
        None => Box::new(hark_audio::device::DeviceSource::open(
            args.device.as_deref(),
            frame_len,
        )?),
    })
}

pub fn run(args: ListenArgs, store: &ModelStore) -> anyhow::Result<()> {
    let vad = args.vad.apply(VadConfig::dictation())?;
    // The source first: a missing microphone or a bad file is reported
    // before the model load (the device queues 2 s of frames meanwhile).
    let source = open_source(&args, vad.frame_len())?;
    let mut stt_config = args.model.stt(SttConfig::listening());
    stt_config.shrink_audio_ctx = !args.full_window;
    let stt = crate::models::whisper(&stt_config, store)?;
    tracing::info!(source = %source.describe(), "listening");

    let stop = Arc::new(AtomicBool::new(false));
    let json = args.json;
    let max_utterances = args.max_utterances;
    let stop_after = stop.clone();
    let mut printed = 0usize;
    let on_event = Box::new(move |event: ListenEvent| {
        let mut out = std::io::stdout().lock();
        if json {
            let _ = writeln!(out, "{}", serde_json::to_string(&event).unwrap_or_default());
        } else if let ListenEvent::Utterance {
            start_secs,
            end_secs,
            text,
            ..
        } = &event
        {
            let _ = writeln!(out, "[{start_secs:8.2} - {end_secs:8.2}] {text}");
        }
        let _ = out.flush();
        if matches!(event, ListenEvent::Utterance { .. }) {
            printed += 1;
            if max_utterances.is_some_and(|m| printed >= m) {
                stop_after.store(true, Ordering::Relaxed);
            }
        }
    });
    let stats = run_pipeline(source, vad, Box::new(stt), on_event, stop, args.duration)?;
    tracing::info!(
        audio_secs = stats.audio_secs,
        utterances = stats.utterances,
        "done listening"
    );
    Ok(())
}
