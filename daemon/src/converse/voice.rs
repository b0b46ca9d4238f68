//! "hark-tts" for the conversation: clauses in, audio at the speaker's rate
//! out, one clause at a time, in order. Cancelling bumps an epoch; queued
//! clauses of an older epoch are skipped without being synthesized, so an
//! interruption never waits for speech nobody will hear.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use hark_audio::resample::resample_mono;
use hark_converse::turn::ClauseId;
use hark_tts::PiperVoice;

/// Clauses waiting for synthesis. A reply has a handful; more than this
/// means the voice cannot keep up and the core is told at once.
const CLAUSE_QUEUE: usize = 32;
/// Piper starts each clause with a breath of near-silence; all but this much
/// of it is cut so Hark's first word comes sooner. Pauses between clauses
/// come from the silence Piper puts at their ends, which is kept.
const KEEP_LEADING_SILENCE_MS: u32 = 30;
/// Quieter than this counts as silence (about -50 dBFS).
const SILENCE: f32 = 0.003;

struct Job {
    epoch: u64,
    clause: ClauseId,
    text: String,
}

#[derive(Debug)]
pub struct Synthesized {
    pub clause: ClauseId,
    /// Mono audio at the speaker's rate, or why there is none.
    pub audio: Result<Vec<f32>, String>,
    pub synth_ms: u64,
}

pub struct ClauseVoice {
    jobs: Option<SyncSender<Job>>,
    epoch: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ClauseVoice {
    /// `output_rate`: the speaker's rate; `report` runs on "hark-tts".
    pub fn spawn(
        mut voice: PiperVoice,
        output_rate: u32,
        mut report: impl FnMut(Synthesized) -> bool + Send + 'static,
    ) -> anyhow::Result<Self> {
        let epoch = Arc::new(AtomicU64::new(0));
        let current = epoch.clone();
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(CLAUSE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("hark-tts".into())
            .spawn(move || {
                for job in rx {
                    if job.epoch != current.load(Ordering::Acquire) {
                        continue; // cancelled while queued
                    }
                    let started = Instant::now();
                    let voice_rate = voice.sample_rate();
                    let audio = voice
                        .synthesize(&job.text)
                        .map_err(|e| e.to_string())
                        .and_then(|pcm| {
                            let pcm = trim_leading_silence(&pcm, voice_rate);
                            resample_mono(pcm, voice_rate, output_rate).map_err(|e| e.to_string())
                        });
                    let done = Synthesized {
                        clause: job.clause,
                        audio,
                        synth_ms: started.elapsed().as_millis() as u64,
                    };
                    if !report(done) {
                        break;
                    }
                }
            })
            .context("cannot start the synthesis thread")?;
        Ok(Self {
            jobs: Some(jobs),
            epoch,
            thread: Some(thread),
        })
    }

    /// Queues a clause; fails (without blocking) when the queue is full or
    /// the thread is gone.
    pub fn synthesize(&self, clause: ClauseId, text: String) -> anyhow::Result<()> {
        let job = Job {
            epoch: self.epoch.load(Ordering::Acquire),
            clause,
            text,
        };
        let jobs = self
            .jobs
            .as_ref()
            .context("the synthesis thread is closed")?;
        match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => anyhow::bail!("the synthesis queue is full"),
            Err(TrySendError::Disconnected(_)) => anyhow::bail!("the synthesis thread stopped"),
        }
    }

    /// Drops every clause queued so far (the one being synthesized finishes
    /// and is reported; the core ignores it by id).
    pub fn cancel(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// `pcm` without its leading silence beyond [`KEEP_LEADING_SILENCE_MS`].
fn trim_leading_silence(pcm: &[f32], rate: u32) -> &[f32] {
    let keep = (rate * KEEP_LEADING_SILENCE_MS / 1000) as usize;
    let first_sound = pcm
        .iter()
        .position(|s| s.abs() > SILENCE)
        .unwrap_or(pcm.len());
    &pcm[first_sound.saturating_sub(keep)..]
}

impl Drop for ClauseVoice {
    fn drop(&mut self) {
        self.cancel();
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_silence_is_cut_to_a_short_lead_in() {
        let mut pcm = vec![0.0; 500];
        pcm.extend([0.5, -0.5, 0.0, 0.0]);
        let trimmed = trim_leading_silence(&pcm, 1000);
        assert_eq!(trimmed.len(), 30 + 4, "30 ms at 1 kHz, then the sound");
        assert_eq!(trim_leading_silence(&pcm[..10], 1000).len(), 10.min(30));
        assert_eq!(trim_leading_silence(&[0.9], 1000), &[0.9]);
    }
}
