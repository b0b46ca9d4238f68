//! What the core asks of the threads around it, as small traits: the real
//! workers (`SttWorker`, `LlmWorker`, `VoiceWorker`, [`Speaker`]) implement
//! them here, and the core's unit tests put recording fakes in their place,
//! so the loop runs with scripted input and no threads at all.

use std::sync::mpsc::SyncSender;

use hark_converse::turn::{ClauseId, ReplyId};
use hark_llm::{CancelHandle, ChatMessage, LlmError, LlmEvent, LlmWorker};
use hark_stt::{SttJob, SttWorker};
use hark_tts::VoiceWorker;

use crate::core::CoreInput;
use crate::speaker::{Speaker, SpeakerCommand};

/// Why a worker did not take a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its queue is full: it is falling behind.
    #[error("{0} is falling behind (its queue is full)")]
    Full(&'static str),
    /// Its thread is gone.
    #[error("{0} has stopped")]
    Stopped(&'static str),
}

/// Speech to text: results come back as [`CoreInput::Transcribed`].
pub trait Transcriber: Send {
    fn submit(&mut self, job: SttJob) -> Result<(), Refused>;
}

/// The language model: a reply's events come back as [`CoreInput::Llm`].
pub trait ReplyWriter: Send {
    fn start(
        &mut self,
        reply: ReplyId,
        history: Vec<ChatMessage>,
    ) -> Result<CancelHandle, LlmError>;

    /// Lets the model read ahead the prompt of `history` followed by a user
    /// turn begun with `unfinished` (empty: not begun), while it is idle;
    /// the handle stops it. `None`: nothing to read ahead.
    fn warm(&mut self, history: Vec<ChatMessage>, unfinished: String) -> Option<CancelHandle> {
        let _ = (history, unfinished);
        None
    }

    /// While paused, the reply being written waits between tokens: the
    /// user speaks over it, and Whisper needs the cores to judge them.
    fn pause(&mut self, paused: bool) {
        let _ = paused;
    }
}

/// The voice: audio comes back as [`CoreInput::Synthesized`], at the
/// speaker's rate.
pub trait ClauseSynthesizer: Send {
    fn synthesize(&mut self, clause: ClauseId, text: String) -> Result<(), Refused>;
    /// Drops every queued clause.
    fn cancel(&mut self);
    /// While paused, no new clause is started (see [`ReplyWriter::pause`]).
    fn pause(&mut self, paused: bool) {
        let _ = paused;
    }
}

/// The speaker: progress comes back as [`CoreInput::Playback`].
pub trait SpeakerControl: Send {
    fn send(&mut self, command: SpeakerCommand);
    /// Its sample rate.
    fn rate(&self) -> u32;
}

/// The parts the core drives; built by the session, owned by the core.
pub struct Workers {
    pub stt: Box<dyn Transcriber>,
    pub llm: Box<dyn ReplyWriter>,
    pub voice: Box<dyn ClauseSynthesizer>,
    pub speaker: Box<dyn SpeakerControl>,
}

impl Transcriber for SttWorker {
    fn submit(&mut self, job: SttJob) -> Result<(), Refused> {
        SttWorker::submit(self, job).map_err(|e| match e {
            hark_stt::WorkerError::Full => Refused::Full("speech to text"),
            hark_stt::WorkerError::Stopped => Refused::Stopped("speech to text"),
        })
    }
}

impl ClauseSynthesizer for VoiceWorker {
    fn synthesize(&mut self, clause: ClauseId, text: String) -> Result<(), Refused> {
        VoiceWorker::synthesize(self, clause, text).map_err(|e| match e {
            hark_tts::WorkerError::Full => Refused::Full("the voice"),
            hark_tts::WorkerError::Stopped => Refused::Stopped("the voice"),
        })
    }
    fn cancel(&mut self) {
        VoiceWorker::cancel(self)
    }
    fn pause(&mut self, paused: bool) {
        self.set_paused(paused)
    }
}

impl SpeakerControl for Speaker {
    fn send(&mut self, command: SpeakerCommand) {
        Speaker::send(self, command)
    }
    fn rate(&self) -> u32 {
        Speaker::rate(self)
    }
}

/// [`LlmWorker`] with each reply's events forwarded into the core's inbox
/// by a short-lived "hark-llm-fwd" thread (the worker streams into a
/// channel of its own, bounded, so a reply never floods the inbox).
pub struct LlmReplies {
    pub worker: LlmWorker,
    pub inbox: SyncSender<CoreInput>,
}

impl ReplyWriter for LlmReplies {
    fn start(
        &mut self,
        reply: ReplyId,
        history: Vec<ChatMessage>,
    ) -> Result<CancelHandle, LlmError> {
        let (events, cancel) = self.worker.ask(history)?;
        let inbox = self.inbox.clone();
        let forwarder = std::thread::Builder::new()
            .name("hark-llm-fwd".into())
            .spawn(move || {
                for event in events {
                    let last = !matches!(event, LlmEvent::Token(_));
                    if inbox.send(CoreInput::Llm { reply, event }).is_err() || last {
                        break;
                    }
                }
            });
        if let Err(e) = forwarder {
            cancel.cancel();
            return Err(LlmError::Inference(format!(
                "cannot start the token forwarder: {e}"
            )));
        }
        Ok(cancel)
    }

    fn warm(&mut self, history: Vec<ChatMessage>, unfinished: String) -> Option<CancelHandle> {
        Some(self.worker.warm(history, unfinished))
    }

    fn pause(&mut self, paused: bool) {
        self.worker.set_paused(paused)
    }
}
