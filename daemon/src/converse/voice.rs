//! "hark-tts" for the conversation: clauses in, audio at the speaker's rate
//! out, one clause at a time, in order. Cancelling bumps an epoch and empties
//! the queue, so an interruption never waits for speech nobody will hear.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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

/// Jobs waiting for the thread. A queue the canceller can empty, rather
/// than a channel, so a flood of cancelled replies (a `Say` every few
/// milliseconds over D-Bus) never fills it.
#[derive(Default)]
struct Queue {
    jobs: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job to synthesize; `None` once closed.
    fn next(&self, epoch: &AtomicU64) -> Option<Job> {
        let mut state = self.lock();
        loop {
            while let Some(job) = state.jobs.pop_front() {
                if job.epoch == epoch.load(Ordering::Acquire) {
                    return Some(job);
                }
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[derive(Debug)]
pub struct Synthesized {
    pub clause: ClauseId,
    /// Mono audio at the speaker's rate, or why there is none.
    pub audio: Result<Vec<f32>, String>,
    pub synth_ms: u64,
}

pub struct ClauseVoice {
    queue: Arc<Queue>,
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
        let queue = Arc::new(Queue::default());
        let (current, jobs) = (epoch.clone(), queue.clone());
        let thread = std::thread::Builder::new()
            .name("hark-tts".into())
            .spawn(move || {
                while let Some(job) = jobs.next(&current) {
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
            queue,
            epoch,
            thread: Some(thread),
        })
    }

    /// Queues a clause; fails (without blocking) when the queue is full or
    /// the thread is gone.
    pub fn synthesize(&self, clause: ClauseId, text: String) -> anyhow::Result<()> {
        let mut state = self.queue.lock();
        if state.closed || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            anyhow::bail!("the synthesis thread stopped");
        }
        if state.jobs.len() >= CLAUSE_QUEUE {
            anyhow::bail!("the synthesis queue is full");
        }
        state.jobs.push_back(Job {
            epoch: self.epoch.load(Ordering::Acquire),
            clause,
            text,
        });
        self.queue.ready.notify_one();
        Ok(())
    }

    /// Drops every clause queued so far (the one being synthesized finishes
    /// and is reported; the core ignores it by id).
    pub fn cancel(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.queue.lock().jobs.clear();
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
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
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
