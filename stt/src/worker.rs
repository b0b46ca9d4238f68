//! The "hark-stt" thread: one [`SpeechToText`] serving transcription jobs
//! in order behind a bounded queue, so Whisper never runs on a thread that
//! must keep time (the ears, the conversation core).
//!
//! Jobs carry their purpose: a final transcript the caller is waiting for,
//! a partial one for live captions, or a speculative one for speech that
//! only paused. A partial with other work queued behind it is stale (the
//! speech it shows has moved on) and running it would delay the transcript
//! a reply waits for, so it is skipped and reported empty.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::SpeechToText;

/// A transcription job.
#[derive(Debug)]
pub struct SttJob {
    /// The caller's name for the audio (an utterance id), echoed back.
    pub utterance: u64,
    /// 16 kHz mono.
    pub audio: Vec<f32>,
    pub purpose: SttPurpose,
}

/// Why a transcript is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SttPurpose {
    /// An ended utterance's.
    Final,
    /// Speech still in progress: the text is shown, not answered.
    Partial,
    /// Speech that paused at `speech_end_ms`: final if it stays ended.
    Speculative { speech_end_ms: u64 },
}

/// What a job gave.
#[derive(Debug, Clone, PartialEq)]
pub struct SttResult {
    pub utterance: u64,
    pub purpose: SttPurpose,
    /// Empty when nothing was heard, the job was skipped, or the backend
    /// failed (`error` says why).
    pub text: String,
    /// Why there is no text, when the backend failed.
    pub error: Option<String>,
    /// What the backend wants known although the job succeeded
    /// ([`SpeechToText::take_notice`]).
    pub notice: Option<String>,
    pub transcribe_ms: u64,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error("the speech-to-text queue is full (Whisper is falling behind)")]
    Full,
    #[error("the speech-to-text thread has stopped")]
    Stopped,
}

/// Handle to "hark-stt"; dropping it lets queued jobs finish, then joins
/// the thread.
pub struct SttWorker {
    jobs: Option<SyncSender<SttJob>>,
    thread: Option<JoinHandle<()>>,
}

impl SttWorker {
    /// Starts "hark-stt" with room for `queue` waiting jobs; `report` runs
    /// on it with each result, in order, and returning false stops it.
    pub fn spawn(
        mut stt: Box<dyn SpeechToText>,
        queue: usize,
        mut report: impl FnMut(SttResult) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, rx): (SyncSender<SttJob>, Receiver<SttJob>) = mpsc::sync_channel(queue);
        let thread = std::thread::Builder::new()
            .name("hark-stt".into())
            .spawn(move || {
                let mut queued = VecDeque::new();
                while let Some(job) = queued.pop_front().or_else(|| rx.recv().ok()) {
                    queued.extend(rx.try_iter());
                    let stale = job.purpose == SttPurpose::Partial && !queued.is_empty();
                    let result = if stale {
                        SttResult {
                            utterance: job.utterance,
                            purpose: job.purpose,
                            text: String::new(),
                            error: None,
                            notice: None,
                            transcribe_ms: 0,
                        }
                    } else {
                        run(stt.as_mut(), job)
                    };
                    if !report(result) {
                        break;
                    }
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues a job without blocking.
    pub fn submit(&self, job: SttJob) -> Result<(), WorkerError> {
        let jobs = self.jobs.as_ref().ok_or(WorkerError::Stopped)?;
        jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => WorkerError::Full,
            TrySendError::Disconnected(_) => WorkerError::Stopped,
        })
    }

    /// Queues a job, waiting while the queue is full (a dictation pipeline,
    /// which would rather slow down than drop speech).
    pub fn submit_waiting(&self, job: SttJob) -> Result<(), WorkerError> {
        let jobs = self.jobs.as_ref().ok_or(WorkerError::Stopped)?;
        jobs.send(job).map_err(|_| WorkerError::Stopped)
    }
}

fn run(stt: &mut dyn SpeechToText, job: SttJob) -> SttResult {
    let started = Instant::now();
    let (text, error) = match stt.transcribe(&job.audio) {
        Ok(t) => (t.text(), None),
        Err(e) => {
            tracing::error!(utterance = job.utterance, "transcription failed: {e}");
            (String::new(), Some(e.to_string()))
        }
    };
    SttResult {
        utterance: job.utterance,
        purpose: job.purpose,
        text,
        error,
        notice: stt.take_notice(),
        transcribe_ms: started.elapsed().as_millis() as u64,
    }
}

impl Drop for SttWorker {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::{Segment, SttError, Transcript};

    /// Says how many samples it got, slowly, and fails on empty audio.
    struct Counting {
        delay: Duration,
    }

    impl SpeechToText for Counting {
        fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript, SttError> {
            std::thread::sleep(self.delay);
            if samples.is_empty() {
                return Err(SttError::Inference {
                    seconds: 0.0,
                    message: "no audio".into(),
                });
            }
            Ok(Transcript {
                segments: vec![Segment {
                    start_secs: 0.0,
                    end_secs: 0.0,
                    text: format!(
                        "{} samples on {}",
                        samples.len(),
                        std::thread::current().name().unwrap_or("?")
                    ),
                    no_speech_prob: 0.0,
                }],
            })
        }
    }

    fn job(utterance: u64, samples: usize, purpose: SttPurpose) -> SttJob {
        SttJob {
            utterance,
            audio: vec![0.0; samples],
            purpose,
        }
    }

    fn worker(delay_ms: u64, queue: usize) -> (SttWorker, Arc<Mutex<Vec<SttResult>>>) {
        let results = Arc::new(Mutex::new(Vec::new()));
        let sink = results.clone();
        let worker = SttWorker::spawn(
            Box::new(Counting {
                delay: Duration::from_millis(delay_ms),
            }),
            queue,
            move |r| {
                sink.lock().unwrap().push(r);
                true
            },
        )
        .unwrap();
        (worker, results)
    }

    #[test]
    fn jobs_are_transcribed_in_order_on_the_named_thread() {
        let (worker, results) = worker(0, 4);
        worker
            .submit_waiting(job(1, 10, SttPurpose::Final))
            .unwrap();
        worker
            .submit_waiting(job(2, 20, SttPurpose::Speculative { speech_end_ms: 5 }))
            .unwrap();
        worker.submit_waiting(job(3, 0, SttPurpose::Final)).unwrap();
        drop(worker); // queued jobs finish first
        let results = results.lock().unwrap();
        let texts: Vec<&str> = results.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            ["10 samples on hark-stt", "20 samples on hark-stt", ""]
        );
        assert_eq!(
            results[1].purpose,
            SttPurpose::Speculative { speech_end_ms: 5 }
        );
        assert!(results[2].error.as_deref().unwrap().contains("no audio"));
    }

    #[test]
    fn a_partial_with_work_behind_it_is_skipped() {
        let (worker, results) = worker(50, 4);
        worker.submit(job(1, 10, SttPurpose::Final)).unwrap(); // busy with this
        std::thread::sleep(Duration::from_millis(10));
        worker.submit(job(0, 10, SttPurpose::Partial)).unwrap();
        worker.submit(job(2, 30, SttPurpose::Final)).unwrap();
        drop(worker);
        let results = results.lock().unwrap();
        let got: Vec<(u64, &str)> = results
            .iter()
            .map(|r| (r.utterance, r.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "10 samples on hark-stt"),
                (0, ""),
                (2, "30 samples on hark-stt")
            ]
        );
        assert_eq!(results[1].transcribe_ms, 0);
    }

    #[test]
    fn a_full_queue_refuses_without_blocking() {
        let (worker, _) = worker(200, 1);
        worker.submit(job(1, 1, SttPurpose::Final)).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // taken, running
        worker.submit(job(2, 1, SttPurpose::Final)).unwrap(); // waits
        let started = Instant::now();
        assert_eq!(
            worker.submit(job(3, 1, SttPurpose::Final)),
            Err(WorkerError::Full)
        );
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
