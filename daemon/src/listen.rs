//! `hark listen` and the listening pipeline behind it:
//!
//! ```text
//! FrameSource ──frames──▶ VAD segmenter ──(bounded)──▶ "hark-stt" thread ──▶ on_event
//!  (device/file)          (this thread)     utterances   (Whisper)
//! ```
//!
//! The VAD runs on the thread that calls [`run_pipeline`] (WebRTC's VAD is
//! not `Send`); Whisper runs on its own named thread behind a bounded channel
//! so a slow transcription never stalls frame intake for longer than the
//! channel's slack. The STT thread is the only caller of `on_event`, so
//! events arrive in order.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use hark_audio::vad::{Segmenter, VadConfig, VadEvent};
use hark_audio::{FrameSource, SAMPLE_RATE};
use hark_models::store::ModelStore;
use hark_stt::SpeechToText;
use serde::Serialize;

use crate::ModelArgs;

/// Utterances waiting for Whisper. Small: if Whisper falls this far behind,
/// back-pressure on the VAD thread is the honest signal.
const UTTERANCE_QUEUE: usize = 8;

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

/// VAD tuning shared by every command that endpoints speech.
#[derive(Args, Debug, Clone)]
pub struct VadArgs {
    /// WebRTC VAD aggressiveness, 0 (keeps most audio) to 3 (keeps least).
    #[arg(long, value_name = "0-3")]
    pub vad_aggressiveness: Option<u8>,
    /// VAD frame length in ms: 10, 20 or 30.
    #[arg(long, value_name = "MS")]
    pub vad_frame_ms: Option<u32>,
    /// Audio kept before the detected onset, in ms (at least 200).
    #[arg(long, value_name = "MS")]
    pub pre_roll_ms: Option<u32>,
    /// Silence that ends an utterance, in ms.
    #[arg(long, value_name = "MS")]
    pub end_silence_ms: Option<u32>,
    /// Utterances with less speech than this are ignored, in ms.
    #[arg(long, value_name = "MS")]
    pub min_speech_ms: Option<u32>,
}

impl VadArgs {
    pub fn config(&self) -> anyhow::Result<VadConfig> {
        let mut c = VadConfig::default();
        if let Some(v) = self.vad_aggressiveness {
            c.aggressiveness = v;
        }
        if let Some(v) = self.vad_frame_ms {
            c.frame_ms = v;
        }
        if let Some(v) = self.pre_roll_ms {
            c.pre_roll_ms = v;
        }
        if let Some(v) = self.end_silence_ms {
            c.end_silence_ms = v;
        }
        if let Some(v) = self.min_speech_ms {
            c.min_speech_ms = v;
        }
        c.validate().context("invalid VAD option")?;
        Ok(c)
    }
}

/// What the pipeline reports, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ListenEvent {
    SpeechStarted {
        at_secs: f64,
    },
    /// Speech that ended up too short to count.
    SpeechDiscarded {
        at_secs: f64,
    },
    Utterance {
        start_secs: f64,
        end_secs: f64,
        text: String,
        /// Wall time Whisper took.
        transcribe_ms: f64,
    },
}

/// Totals at the end of a run.
#[derive(Debug, Default, Clone)]
pub struct ListenStats {
    pub audio_secs: f64,
    pub utterances: usize,
}

enum SttJob {
    Started(u64),
    Discarded(u64),
    Utterance(hark_audio::vad::Utterance),
}

fn secs(sample: u64) -> f64 {
    sample as f64 / SAMPLE_RATE as f64
}

/// Runs source → VAD → Whisper until the source ends, `stop` is set, or
/// `max_audio_secs` of audio has been read. `on_event` runs on the STT thread.
pub fn run_pipeline(
    mut source: Box<dyn FrameSource>,
    vad: VadConfig,
    stt: Box<dyn SpeechToText>,
    mut on_event: Box<dyn FnMut(ListenEvent) + Send>,
    stop: Arc<AtomicBool>,
    max_audio_secs: Option<f64>,
) -> anyhow::Result<ListenStats> {
    let (jobs, job_rx) = mpsc::sync_channel::<SttJob>(UTTERANCE_QUEUE);
    let stt_thread = std::thread::Builder::new()
        .name("hark-stt".into())
        .spawn(move || -> anyhow::Result<usize> {
            let mut stt = stt;
            let mut utterances = 0;
            for job in job_rx {
                match job {
                    SttJob::Started(at) => {
                        on_event(ListenEvent::SpeechStarted { at_secs: secs(at) })
                    }
                    SttJob::Discarded(at) => {
                        on_event(ListenEvent::SpeechDiscarded { at_secs: secs(at) })
                    }
                    SttJob::Utterance(u) => {
                        let started = Instant::now();
                        let transcript = stt.transcribe(&u.samples)?;
                        let transcribe_ms = started.elapsed().as_secs_f64() * 1e3;
                        let text = transcript.text();
                        tracing::debug!(
                            start = secs(u.speech_start_sample),
                            end = secs(u.speech_end_sample),
                            transcribe_ms,
                            %text,
                            "utterance transcribed"
                        );
                        if text.is_empty() {
                            continue;
                        }
                        utterances += 1;
                        on_event(ListenEvent::Utterance {
                            start_secs: secs(u.speech_start_sample),
                            end_secs: secs(u.speech_end_sample),
                            text,
                            transcribe_ms,
                        });
                    }
                }
            }
            Ok(utterances)
        })
        .context("cannot start the speech-to-text thread")?;

    let mut segmenter = Segmenter::webrtc(vad)?;
    let mut audio_samples = 0u64;
    let limit = max_audio_secs.map(|s| (s * SAMPLE_RATE as f64) as u64);
    let send = |job: SttJob| -> bool { jobs.send(job).is_ok() };
    let read_result: anyhow::Result<()> = (|| {
        while !stop.load(Ordering::Relaxed) {
            let Some(frame) = source
                .next_frame()
                .with_context(|| format!("reading audio from {}", source.describe()))?
            else {
                break;
            };
            audio_samples = frame.end_sample();
            for event in segmenter.push(&frame)? {
                if !send(to_job(event)) {
                    return Ok(());
                }
            }
            if limit.is_some_and(|l| audio_samples >= l) {
                break;
            }
        }
        if let Some(event) = segmenter.finish() {
            send(to_job(event));
        }
        Ok(())
    })();
    drop(jobs);
    let utterances = stt_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the speech-to-text thread panicked"))??;
    read_result?;
    Ok(ListenStats {
        audio_secs: secs(audio_samples),
        utterances,
    })
}

fn to_job(event: VadEvent) -> SttJob {
    match event {
        VadEvent::SpeechStart { at_sample } => SttJob::Started(at_sample),
        VadEvent::SpeechDiscarded { at_sample } => SttJob::Discarded(at_sample),
        VadEvent::SpeechEnd(u) => SttJob::Utterance(u),
    }
}

/// Opens what `--input`/`--device` name, framed for the VAD.
pub fn open_source(args: &ListenArgs, frame_len: usize) -> anyhow::Result<Box<dyn FrameSource>> {
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
    let vad = args.vad.config()?;
    let frame_len = (SAMPLE_RATE * vad.frame_ms / 1000) as usize;
    // The source first: a missing microphone or a bad file is reported
    // before the model load (the device queues 2 s of frames meanwhile).
    let source = open_source(&args, frame_len)?;
    let stt = crate::stt_setup::load_whisper(&args.model, store, !args.full_window)?;
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
