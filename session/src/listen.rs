//! The dictation pipeline behind `hark listen`:
//!
//! ```text
//! FrameSource ──frames──▶ VAD segmenter ──(bounded)──▶ "hark-stt" (SttWorker) ──▶ on_event
//!  (device/file)          (the caller's thread)        utterances
//! ```
//!
//! The VAD runs on the thread that calls [`run_pipeline`] (WebRTC's VAD is
//! not `Send`); Whisper runs on the STT worker behind a bounded queue that
//! this pipeline waits on when full: dictation would rather slow down than
//! drop speech. Speech starts are reported as they are heard, utterances as
//! they are transcribed, so a start may come before the previous
//! utterance's text.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use hark_audio::vad::{Segmenter, VadConfig, VadEvent};
use hark_audio::{FrameSource, SAMPLE_RATE};
use hark_stt::{SpeechToText, SttJob, SttPurpose, SttWorker};
use serde::Serialize;

use crate::SessionError;

/// Utterances waiting for Whisper. Small: if Whisper falls this far behind,
/// back-pressure on the VAD thread is the honest signal.
const UTTERANCE_QUEUE: usize = 8;

/// What the pipeline reports.
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

fn secs(sample: u64) -> f64 {
    sample as f64 / SAMPLE_RATE as f64
}

/// Runs source → VAD → Whisper until the source ends, `stop` is set, or
/// `max_audio_secs` of audio has been read.
pub fn run_pipeline(
    mut source: Box<dyn FrameSource>,
    vad: VadConfig,
    stt: Box<dyn SpeechToText>,
    on_event: Box<dyn FnMut(ListenEvent) + Send>,
    stop: Arc<AtomicBool>,
    max_audio_secs: Option<f64>,
) -> Result<ListenStats, SessionError> {
    let on_event = Arc::new(Mutex::new(on_event));
    let report = {
        let on_event = on_event.clone();
        move |event: ListenEvent| (on_event.lock().unwrap_or_else(|p| p.into_inner()))(event)
    };
    // Where each queued utterance's speech lies, by job id.
    let (spans_tx, spans_rx) = mpsc::channel::<(u64, (u64, u64))>();
    let utterances = Arc::new(AtomicUsize::new(0));
    let counted = utterances.clone();
    let mut spans = HashMap::new();
    let to_caller = report.clone();
    let worker = SttWorker::spawn(stt, UTTERANCE_QUEUE, move |result| {
        spans.extend(spans_rx.try_iter());
        let Some((start, end)) = spans.remove(&result.utterance) else {
            return true;
        };
        tracing::debug!(
            start = secs(start),
            end = secs(end),
            transcribe_ms = result.transcribe_ms,
            text = %result.text,
            "utterance transcribed"
        );
        if !result.text.is_empty() {
            counted.fetch_add(1, Ordering::Relaxed);
            to_caller(ListenEvent::Utterance {
                start_secs: secs(start),
                end_secs: secs(end),
                text: result.text,
                transcribe_ms: result.transcribe_ms as f64,
            });
        }
        true
    })
    .map_err(|source| SessionError::Thread {
        name: "hark-stt",
        source,
    })?;

    let mut segmenter = Segmenter::webrtc(vad).map_err(|e| SessionError::Input(e.to_string()))?;
    let mut audio_samples = 0u64;
    let mut next_id = 0u64;
    let limit = max_audio_secs.map(|s| (s * SAMPLE_RATE as f64) as u64);
    let mut handle = |event: VadEvent| -> bool {
        match event {
            VadEvent::SpeechStart { at_sample } => report(ListenEvent::SpeechStarted {
                at_secs: secs(at_sample),
            }),
            VadEvent::SpeechDiscarded { at_sample } => report(ListenEvent::SpeechDiscarded {
                at_secs: secs(at_sample),
            }),
            VadEvent::SpeechEnd(u) => {
                next_id += 1;
                let _ = spans_tx.send((next_id, (u.speech_start_sample, u.speech_end_sample)));
                let job = SttJob {
                    utterance: next_id,
                    audio: u.samples,
                    purpose: SttPurpose::Final,
                };
                return worker.submit_waiting(job).is_ok();
            }
        }
        true
    };
    let read_result: Result<(), SessionError> = (|| {
        while !stop.load(Ordering::Relaxed) {
            let Some(frame) = source.next_frame().map_err(|e| {
                SessionError::Input(format!("reading audio from {}: {e}", source.describe()))
            })?
            else {
                break;
            };
            audio_samples = frame.end_sample();
            for event in segmenter
                .push(&frame)
                .map_err(|e| SessionError::Input(e.to_string()))?
            {
                if !handle(event) {
                    return Ok(());
                }
            }
            if limit.is_some_and(|l| audio_samples >= l) {
                break;
            }
        }
        if let Some(event) = segmenter.finish() {
            handle(event);
        }
        Ok(())
    })();
    drop(worker); // transcribes what is queued, then joins
    read_result?;
    Ok(ListenStats {
        audio_secs: secs(audio_samples),
        utterances: utterances.load(Ordering::Relaxed),
    })
}
