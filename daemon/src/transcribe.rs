//! `hark transcribe FILE`: the transcript of a whole WAV file.
//!
//! The file is first run through the VAD: a file with no speech at all gets
//! no text (Whisper would otherwise invent some). Files with speech go to
//! Whisper whole, so it keeps sentence context across pauses.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hark_audio::vad::{Segmenter, VadConfig, VadEvent};
use hark_audio::{Frame, SAMPLE_RATE};
use hark_models::store::ModelStore;
use hark_stt::{SpeechToText, SttConfig, Transcript};
use serde::Serialize;

use crate::args::VadArgs;
use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// WAV file (any rate and channel count; 16/24/32-bit int or float).
    pub file: PathBuf,

    /// Print JSON with segments and their times instead of plain text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub vad: VadArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Transcribe with a Wyoming speech-to-text server (such as
    /// wyoming-faster-whisper) instead of the local Whisper model.
    #[arg(long, value_name = "tcp://HOST:PORT|unix:///PATH")]
    pub wyoming: Option<String>,
}

#[derive(Serialize)]
struct JsonTranscript<'a> {
    file: &'a str,
    duration_secs: f64,
    text: String,
    segments: &'a [hark_stt::Segment],
}

pub fn run(args: TranscribeArgs, store: &ModelStore) -> anyhow::Result<()> {
    let vad = args.vad.apply(VadConfig::dictation())?;
    // Read and check the input before loading the model: a bad file should
    // fail fast and name itself.
    let samples = hark_audio::wav::read_wav_16k_mono(&args.file)?;
    let mut stt: Box<dyn SpeechToText> = match &args.wyoming {
        Some(uri) => {
            let endpoint: hark_wyoming::Endpoint = uri.parse().context("--wyoming")?;
            // A whole file: the server may take a while on a long one.
            let deadlines = hark_wyoming::Deadlines {
                answer: std::time::Duration::from_secs(120),
                ..hark_wyoming::Deadlines::default()
            };
            Box::new(hark_wyoming::WyomingStt::new(
                endpoint, None, // The language the server was started with.
                None, deadlines,
            ))
        }
        None => Box::new(crate::models::whisper(
            &args.model.stt(SttConfig::files()),
            store,
        )?),
    };
    let transcript = transcribe_samples(&samples, vad, stt.as_mut())
        .with_context(|| format!("transcribing {}", args.file.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = JsonTranscript {
            file: &args.file.to_string_lossy(),
            duration_secs: samples.len() as f64 / SAMPLE_RATE as f64,
            text: transcript.text(),
            segments: &transcript.segments,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else if !transcript.is_empty() {
        writeln!(out, "{}", transcript.text())?;
    }
    Ok(())
}

/// Transcribes a whole buffer, or returns an empty transcript when the VAD
/// finds no speech in it.
pub fn transcribe_samples(
    samples: &[f32],
    vad: VadConfig,
    stt: &mut dyn SpeechToText,
) -> anyhow::Result<Transcript> {
    if !contains_speech(samples, vad)? {
        tracing::debug!("no speech found by the VAD; skipping Whisper");
        return Ok(Transcript::default());
    }
    Ok(stt.transcribe(samples)?)
}

/// Whether the VAD finds at least one utterance long enough to count.
pub fn contains_speech(samples: &[f32], vad: VadConfig) -> anyhow::Result<bool> {
    let frame_len = (SAMPLE_RATE * vad.frame_ms / 1000) as usize;
    let mut segmenter = Segmenter::webrtc(vad)?;
    for (i, chunk) in samples.chunks(frame_len).enumerate() {
        let mut frame = Frame {
            start_sample: (i * frame_len) as u64,
            samples: chunk.to_vec(),
        };
        frame.samples.resize(frame_len, 0.0);
        if segmenter
            .push(&frame)?
            .iter()
            .any(|e| matches!(e, VadEvent::SpeechEnd(_)))
        {
            return Ok(true);
        }
    }
    Ok(matches!(segmenter.finish(), Some(VadEvent::SpeechEnd(_))))
}
