//! The "hark-tts" thread: clauses in, audio out, one clause at a time, in
//! order. Cancelling bumps an epoch and empties the queue, so an
//! interruption never waits for speech nobody will hear.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Voice;

/// Clauses waiting for synthesis. A reply has a handful; more than this
/// means the voice cannot keep up and the caller is told at once.
const CLAUSE_QUEUE: usize = 32;
/// Piper starts each clause with a breath of near-silence; all but this much
/// of it is cut so Hark's first word comes sooner. Pauses between clauses
/// come from the silence Piper puts at their ends, which is kept.
const KEEP_LEADING_SILENCE_MS: u32 = 30;
/// Quieter than this counts as silence (about -50 dBFS).
const SILENCE: f32 = 0.003;
/// The longest a clause waits while paused ([`VoiceWorker::set_paused`]):
/// a caller that forgets to resume costs a moment, never the reply.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// A clause's audio, or why there is none.
#[derive(Debug)]
pub struct Synthesized {
    /// The caller's id for the clause, echoed back.
    pub clause: u64,
    /// Mono audio at the voice's rate, leading silence trimmed.
    pub audio: Result<Vec<f32>, String>,
    /// The voice's sample rate.
    pub rate: u32,
    pub synth_ms: u64,
    /// What the voice wants known although the clause was spoken
    /// ([`Voice::take_notice`]).
    pub notice: Option<String>,
}

/// Why a clause was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error("the synthesis queue is full")]
    Full,
    #[error("the synthesis thread has stopped")]
    Stopped,
}

struct Job {
    epoch: u64,
    clause: u64,
    text: String,
}

/// Jobs waiting for the thread. A queue the canceller can empty, rather
/// than a channel, so a flood of cancelled replies (a `Say` every few
/// milliseconds over D-Bus) never fills it.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// A job was queued, or the queue closed.
    ready: Condvar,
    /// A job was taken or dropped: there is room.
    room: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job of the current epoch; `None` once closed and drained.
    fn next(&self, epoch: &AtomicU64) -> Option<Job> {
        let mut state = self.lock();
        loop {
            while let Some(job) = state.jobs.pop_front() {
                self.room.notify_all();
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

/// Handle to "hark-tts". Dropping it cancels what is queued and joins the
/// thread; [`VoiceWorker::finish`] lets the queue play out first.
pub struct VoiceWorker {
    queue: Arc<Queue>,
    epoch: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    rate: u32,
}

impl VoiceWorker {
    /// Starts "hark-tts" with `voice`; `report` runs on it with each
    /// clause's audio, in order, and returning false stops it.
    pub fn spawn(
        mut voice: Box<dyn Voice>,
        mut report: impl FnMut(Synthesized) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let epoch = Arc::new(AtomicU64::new(0));
        let queue = Arc::new(Queue::default());
        let rate = voice.sample_rate();
        let paused = Arc::new(AtomicBool::new(false));
        let (current, jobs, pause) = (epoch.clone(), queue.clone(), paused.clone());
        let thread = std::thread::Builder::new()
            .name("hark-tts".into())
            .spawn(move || {
                while let Some(job) = jobs.next(&current) {
                    let since = Instant::now();
                    let is_current = || job.epoch == current.load(Ordering::Acquire);
                    while pause.load(Ordering::SeqCst)
                        && is_current()
                        && since.elapsed() < LONGEST_PAUSE
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if !is_current() {
                        continue; // cancelled while it waited
                    }
                    let started = Instant::now();
                    let audio = voice
                        .synthesize(&job.text)
                        .map(|pcm| trim_leading_silence(&pcm, rate).to_vec())
                        .map_err(|e| e.to_string());
                    let done = Synthesized {
                        clause: job.clause,
                        audio,
                        rate,
                        synth_ms: started.elapsed().as_millis() as u64,
                        notice: voice.take_notice(),
                    };
                    if !report(done) {
                        break;
                    }
                }
            })?;
        Ok(Self {
            queue,
            epoch,
            paused,
            thread: Some(thread),
            rate,
        })
    }

    /// While paused, no new clause is started (the one being synthesized
    /// finishes; each waits at most [`LONGEST_PAUSE`], and a cancel drops
    /// it): the caller needs the cores for something more urgent, such as
    /// hearing out a user who speaks over Hark.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// The rate of the audio it reports.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Queues a clause without blocking.
    pub fn synthesize(&self, clause: u64, text: String) -> Result<(), WorkerError> {
        self.queue_job(clause, text, false)
    }

    /// Queues a clause, waiting while the queue is full (speaking a long
    /// text from start to end, where nothing may be dropped).
    pub fn synthesize_waiting(&self, clause: u64, text: String) -> Result<(), WorkerError> {
        self.queue_job(clause, text, true)
    }

    fn queue_job(&self, clause: u64, text: String, wait: bool) -> Result<(), WorkerError> {
        let mut state = self.queue.lock();
        loop {
            if state.closed || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(WorkerError::Stopped);
            }
            if state.jobs.len() < CLAUSE_QUEUE {
                break;
            }
            if !wait {
                return Err(WorkerError::Full);
            }
            // Timed, so a thread that dies meanwhile is noticed.
            state = self
                .queue
                .room
                .wait_timeout(state, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
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
    /// and is reported; callers ignore it by id).
    pub fn cancel(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.queue.lock().jobs.clear();
        self.queue.room.notify_all();
    }

    /// Synthesizes what is queued, then stops the thread and waits for it.
    pub fn finish(mut self) {
        self.close();
    }

    fn close(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VoiceWorker {
    fn drop(&mut self) {
        self.cancel();
        self.close();
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::TtsError;

    /// One sample per character after 100 silent ones, at 1 kHz; "slow"
    /// clauses take 100 ms.
    struct Fake;

    impl Voice for Fake {
        fn sample_rate(&self) -> u32 {
            1000
        }
        fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
            if text == "fail" {
                return Err(TtsError::Inference("no".into()));
            }
            if text.starts_with("slow") {
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(std::thread::current().name(), Some("hark-tts"));
            let mut pcm = vec![0.0; 100];
            pcm.extend(text.chars().map(|_| 0.5));
            Ok(pcm)
        }
    }

    fn worker() -> (VoiceWorker, mpsc::Receiver<Synthesized>) {
        let (tx, rx) = mpsc::channel();
        let worker = VoiceWorker::spawn(Box::new(Fake), move |s| tx.send(s).is_ok()).unwrap();
        (worker, rx)
    }

    #[test]
    fn clauses_come_out_in_order_trimmed_and_finish_drains_the_queue() {
        let (worker, rx) = worker();
        assert_eq!(worker.rate(), 1000);
        worker.synthesize(1, "slow one".into()).unwrap();
        worker.synthesize(2, "fail".into()).unwrap();
        worker.synthesize(3, "abc".into()).unwrap();
        worker.finish();
        let got: Vec<Synthesized> = rx.iter().collect();
        assert_eq!(got.iter().map(|s| s.clause).collect::<Vec<_>>(), [1, 2, 3]);
        // 5 ms of the 100 ms lead-in kept, then the sound.
        assert_eq!(
            got[2].audio.as_ref().unwrap().len(),
            KEEP_LEADING_SILENCE_MS as usize + 3
        );
        assert!(got[1].audio.as_ref().unwrap_err().contains("no"));
    }

    #[test]
    fn cancel_drops_what_is_queued() {
        let (worker, rx) = worker();
        worker.synthesize(1, "slow one".into()).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // under way
        worker.synthesize(2, "dropped".into()).unwrap();
        worker.cancel();
        worker.synthesize(3, "kept".into()).unwrap();
        worker.finish();
        let clauses: Vec<u64> = rx.iter().map(|s| s.clause).collect();
        assert_eq!(clauses, [1, 3]);
    }

    #[test]
    fn paused_no_clause_starts_until_resumed_and_a_cancel_drops_the_waiting_one() {
        let (worker, rx) = worker();
        worker.set_paused(true);
        worker.synthesize(1, "waits".into()).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        worker.set_paused(false);
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first.clause, 1);

        worker.set_paused(true);
        worker.synthesize(2, "dropped".into()).unwrap();
        std::thread::sleep(Duration::from_millis(50)); // taken, waiting
        worker.cancel();
        worker.set_paused(false);
        worker.synthesize(3, "kept".into()).unwrap();
        worker.finish();
        let clauses: Vec<u64> = rx.iter().map(|s| s.clause).collect();
        assert_eq!(clauses, [3]);
    }

    #[test]
    fn a_full_queue_and_a_stopped_thread_are_refused() {
        let (tx, rx) = mpsc::channel::<Synthesized>();
        let worker = VoiceWorker::spawn(Box::new(Fake), move |s| tx.send(s).is_ok()).unwrap();
        worker.synthesize(0, "slow".into()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        for k in 1..=CLAUSE_QUEUE as u64 {
            worker.synthesize(k, "slow".into()).unwrap();
        }
        assert_eq!(worker.synthesize(99, "x".into()), Err(WorkerError::Full));
        // Waiting for room gets in as soon as a clause is taken.
        worker.synthesize_waiting(99, "x".into()).unwrap();
        worker.cancel();
        drop(rx); // the next report fails, which stops the thread
        worker.synthesize(100, "x".into()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            worker.synthesize(101, "x".into()),
            Err(WorkerError::Stopped)
        );
    }

    #[test]
    fn leading_silence_is_cut_to_a_short_lead_in() {
        let mut pcm = vec![0.0; 500];
        pcm.extend([0.5, -0.5, 0.0, 0.0]);
        assert_eq!(
            trim_leading_silence(&pcm, 1000).len(),
            KEEP_LEADING_SILENCE_MS as usize + 4
        );
        assert_eq!(trim_leading_silence(&pcm[..3], 1000).len(), 3);
        assert_eq!(trim_leading_silence(&[0.9], 1000), &[0.9]);
    }
}
