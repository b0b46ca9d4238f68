//! The `hark-llm` thread: owns a model and serves one request at a time.
//!
//! Generation is CPU-bound and takes seconds, so it must not run on the
//! conversation core's thread. Both channels are bounded: requests so a
//! misbehaving caller cannot queue unbounded work, events so a slow consumer
//! applies back-pressure instead of buffering a whole reply. Cancellation is a
//! shared flag checked between tokens, so barge-in stops the model within one
//! token's time.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{ChatMessage, Generation, LlmError};

/// Requests waiting behind the running one before `ask` reports busy. A
/// conversation cancels its last request before it makes the next, so
/// what waits is cancelled requests (served at once, at no cost) plus the
/// newest; but a model reading a long prompt cannot stop until it has read
/// it, and replies prepared at each pause of a halting speaker, dropped
/// one after the other, queued up behind it: with room for two, the real
/// turn then found the model "busy" (seen in `hark bench soak`).
const REQUEST_QUEUE: usize = 8;
/// Token events buffered ahead of the consumer.
const EVENT_QUEUE: usize = 64;
/// How long a cancelled request's final event waits for a reader that has
/// stopped draining the channel.
const FINAL_EVENT_GRACE: Duration = Duration::from_secs(1);
/// The longest a reply waits while paused ([`LlmWorker::set_paused`]): a
/// caller that forgets to resume costs a moment, never the reply.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// Anything that can stream a reply: `LanguageModel`, a remote server's
/// client, or a fake in tests. The seam where backends plug in.
pub trait TokenGenerator: Send + 'static {
    /// Streams a reply to `history` through `on_token`, which breaks when
    /// the reply is no longer wanted. A generator that can wait without
    /// producing tokens (a remote server) also watches `cancel`, so a
    /// barge-in stops it at once.
    fn generate(
        &mut self,
        history: &[ChatMessage],
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
        cancel: &CancelHandle,
    ) -> Result<Generation, LlmError>;

    /// Tools the model may call while it answers; returns whether it will.
    /// Generators whose models cannot call tools (the local one) ignore
    /// them.
    fn offer_tools(&mut self, tools: Box<dyn ToolBox>) -> bool {
        let _ = tools;
        false
    }

    /// Reads ahead the prompt of `history` followed by a user turn begun
    /// with `unfinished` (empty: not yet begun), so that the reply to the
    /// finished turn starts sooner, stopping soon after `cancel` is set. A
    /// hint: generators with nothing to read ahead (a remote server) ignore
    /// it, and failures are theirs to log.
    fn warm(&mut self, history: &[ChatMessage], unfinished: &str, cancel: &CancelHandle) {
        let _ = (history, unfinished, cancel);
    }
}

impl<T: TokenGenerator + ?Sized> TokenGenerator for Box<T> {
    fn generate(
        &mut self,
        history: &[ChatMessage],
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
        cancel: &CancelHandle,
    ) -> Result<Generation, LlmError> {
        (**self).generate(history, on_token, cancel)
    }

    fn offer_tools(&mut self, tools: Box<dyn ToolBox>) -> bool {
        (**self).offer_tools(tools)
    }

    fn warm(&mut self, history: &[ChatMessage], unfinished: &str, cancel: &CancelHandle) {
        (**self).warm(history, unfinished, cancel)
    }
}

/// A tool a model may call: its name, what it does, and its parameters as
/// a JSON schema (as OpenAI's `tools` take them).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Runs the tools a model calls, on the generator's thread.
pub trait ToolBox: Send {
    fn specs(&self) -> Vec<ToolSpec>;
    /// Runs `name` with `arguments` (a JSON object, as the model wrote it)
    /// and returns what to tell the model: the result, or an error to
    /// explain. It must not fail or hang: a bad call is an answer too.
    fn call(&mut self, name: &str, arguments: &str) -> String;
}

/// What the worker streams back for one request. `Done` or `Error` always
/// comes last (unless the receiver was dropped).
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    Token(String),
    Done(Generation),
    Error(String),
}

/// Stops a running or queued request before its next token.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

struct Request {
    history: Vec<ChatMessage>,
    events: SyncSender<LlmEvent>,
    cancel: CancelHandle,
}

/// What the thread is asked to do.
enum Job {
    Reply(Request),
    /// [`TokenGenerator::warm`]: done only when nothing waits behind it.
    Warm {
        history: Vec<ChatMessage>,
        unfinished: String,
        cancel: CancelHandle,
    },
}

/// Handle to the `hark-llm` thread; dropping it finishes the current request
/// and joins the thread.
pub struct LlmWorker {
    requests: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    paused: Arc<AtomicBool>,
}

impl LlmWorker {
    /// Moves the model onto a new thread named "hark-llm".
    ///
    /// # Panics
    /// If the OS refuses to create a thread.
    pub fn spawn(mut model: impl TokenGenerator) -> LlmWorker {
        let (tx, rx) = mpsc::sync_channel::<Job>(REQUEST_QUEUE);
        let paused = Arc::new(AtomicBool::new(false));
        let pause = paused.clone();
        let thread = std::thread::Builder::new()
            .name("hark-llm".into())
            .spawn(move || {
                let mut next = None;
                let mut replied = false;
                loop {
                    let waiting = match next.take() {
                        Some(job) => Ok(job),
                        None => rx.try_recv(),
                    };
                    let job = match waiting {
                        Ok(job) => job,
                        Err(TryRecvError::Empty) => {
                            if std::mem::take(&mut replied) {
                                give_back_freed_memory();
                            }
                            match rx.recv() {
                                Ok(job) => job,
                                Err(_) => break,
                            }
                        }
                        Err(TryRecvError::Disconnected) => break,
                    };
                    match job {
                        Job::Reply(req) => {
                            serve(&mut model, req, &pause);
                            replied = true;
                        }
                        // Anything queued behind a warm-up is newer: it goes
                        // first, and the warm-up is dropped unread.
                        Job::Warm {
                            history,
                            unfinished,
                            cancel,
                        } => match rx.try_recv() {
                            Ok(newer) => next = Some(newer),
                            Err(TryRecvError::Empty) if !cancel.is_cancelled() => {
                                model.warm(&history, &unfinished, &cancel)
                            }
                            Err(TryRecvError::Empty) => {}
                            Err(TryRecvError::Disconnected) => break,
                        },
                    }
                }
            })
            .expect("failed to spawn the hark-llm thread");
        LlmWorker {
            requests: Some(tx),
            thread: Some(thread),
            paused,
        }
    }

    /// While paused, a reply being written waits after each token (at most
    /// [`LONGEST_PAUSE`] at a time; a cancel ends the wait): the caller
    /// needs the cores for something more urgent, such as hearing out a
    /// user who speaks over the reply.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Queues a reply to `history`; events arrive on the returned receiver.
    /// Fails with `WorkerBusy` when requests pile up and `WorkerGone` if the
    /// thread has died.
    pub fn ask(
        &self,
        history: Vec<ChatMessage>,
    ) -> Result<(Receiver<LlmEvent>, CancelHandle), LlmError> {
        let (events, rx) = mpsc::sync_channel(EVENT_QUEUE);
        let cancel = CancelHandle::default();
        let req = Request {
            history,
            events,
            cancel: cancel.clone(),
        };
        let requests = self.requests.as_ref().ok_or(LlmError::WorkerGone)?;
        match requests.try_send(Job::Reply(req)) {
            Ok(()) => Ok((rx, cancel)),
            Err(TrySendError::Full(_)) => Err(LlmError::WorkerBusy),
            Err(TrySendError::Disconnected(_)) => Err(LlmError::WorkerGone),
        }
    }

    /// Asks the model to read ahead (see [`TokenGenerator::warm`]) when it
    /// has nothing else to do; a full queue drops the hint. The handle
    /// stops the reading (between chunks) when the cores are needed.
    pub fn warm(&self, history: Vec<ChatMessage>, unfinished: String) -> CancelHandle {
        let cancel = CancelHandle::default();
        if let Some(requests) = &self.requests {
            let _ = requests.try_send(Job::Warm {
                history,
                unfinished,
                cancel: cancel.clone(),
            });
        }
        cancel
    }
}

impl Drop for LlmWorker {
    fn drop(&mut self) {
        // Closing the request channel ends the thread's loop.
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Returns the heap's free pages to the system, once a reply is written
/// and nothing waits. A prompt pass allocates buffers that grow with the
/// prompt (the attention scores of a 1900-token prompt are over 100 MB)
/// and a reply grows its key-value cache a token at a time; glibc keeps
/// the freed space (raising its mmap threshold after each large free), so
/// in `hark bench soak` the resident memory climbed from 0.7 to 1.3 GB over
/// the first two hours of conversation, and stayed there, while the context
/// filled up.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only releases free memory of glibc's own
        // arenas; it takes no pointers and is thread-safe.
        unsafe {
            malloc_trim(0);
        }
    }
}

fn serve(model: &mut impl TokenGenerator, req: Request, paused: &AtomicBool) {
    let Request {
        history,
        events,
        cancel,
    } = req;
    if cancel.is_cancelled() {
        let done = Generation {
            cancelled: true,
            ..Generation::default()
        };
        deliver(&events, &cancel, LlmEvent::Done(done), true);
        return;
    }
    let mut on_token = |piece: &str| {
        if cancel.is_cancelled() {
            return ControlFlow::Break(());
        }
        if !piece.is_empty() && !deliver(&events, &cancel, LlmEvent::Token(piece.into()), false) {
            return ControlFlow::Break(());
        }
        let since = Instant::now();
        while paused.load(Ordering::SeqCst)
            && !cancel.is_cancelled()
            && since.elapsed() < LONGEST_PAUSE
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        ControlFlow::Continue(())
    };
    let last = match model.generate(&history, &mut on_token, &cancel) {
        Ok(mut g) => {
            // A cancel that landed after the last token still counts.
            g.cancelled |= cancel.is_cancelled();
            LlmEvent::Done(g)
        }
        Err(e) => LlmEvent::Error(e.to_string()),
    };
    deliver(&events, &cancel, last, true);
}

/// Sends without blocking forever on a consumer that stopped reading after
/// cancelling. Returns false when the event was dropped.
fn deliver(tx: &SyncSender<LlmEvent>, cancel: &CancelHandle, ev: LlmEvent, last: bool) -> bool {
    let mut ev = ev;
    let mut gave_up_at: Option<Instant> = None;
    loop {
        match tx.try_send(ev) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if cancel.is_cancelled() {
                    if !last {
                        return false;
                    }
                    let since = *gave_up_at.get_or_insert_with(Instant::now);
                    if since.elapsed() > FINAL_EVENT_GRACE {
                        return false;
                    }
                }
                ev = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emits "t0", "t1", ... until told to stop or `limit` is reached.
    struct Fake {
        limit: usize,
    }

    impl TokenGenerator for Fake {
        fn generate(
            &mut self,
            history: &[ChatMessage],
            on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
            _: &CancelHandle,
        ) -> Result<Generation, LlmError> {
            if history.is_empty() {
                return Err(LlmError::Inference("empty history".into()));
            }
            let mut g = Generation::default();
            for i in 0..self.limit {
                let piece = format!("t{i} ");
                g.text.push_str(&piece);
                g.tokens += 1;
                if on_token(&piece).is_break() {
                    g.cancelled = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(g)
        }
    }

    fn done_after_cancel(rx: &Receiver<LlmEvent>) -> Generation {
        rx.iter()
            .find_map(|e| match e {
                LlmEvent::Done(g) => Some(g),
                _ => None,
            })
            .expect("Done after cancel")
    }

    fn ask(w: &LlmWorker) -> (Receiver<LlmEvent>, CancelHandle) {
        w.ask(vec![ChatMessage::user("hi")]).unwrap()
    }

    #[test]
    fn streams_tokens_then_done_on_named_thread() {
        struct Named;
        impl TokenGenerator for Named {
            fn generate(
                &mut self,
                _: &[ChatMessage],
                on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
                _: &CancelHandle,
            ) -> Result<Generation, LlmError> {
                let name = std::thread::current().name().unwrap_or("").to_string();
                let _ = on_token(&name);
                Ok(Generation {
                    text: name,
                    tokens: 1,
                    ..Generation::default()
                })
            }
        }
        let w = LlmWorker::spawn(Named);
        let (rx, _) = ask(&w);
        assert_eq!(rx.recv().unwrap(), LlmEvent::Token("hark-llm".into()));
        match rx.recv().unwrap() {
            LlmEvent::Done(g) => assert!(!g.cancelled && g.tokens == 1),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn cancel_stops_between_tokens_and_worker_serves_next_request() {
        let w = LlmWorker::spawn(Fake { limit: 10_000 });
        let (rx, cancel) = ask(&w);
        for i in 0..3 {
            assert_eq!(rx.recv().unwrap(), LlmEvent::Token(format!("t{i} ")));
        }
        cancel.cancel();
        let done = done_after_cancel(&rx);
        assert!(done.cancelled);
        assert!(done.tokens < 10_000);

        let (rx, _) = w.ask(vec![ChatMessage::user("again")]).unwrap();
        assert_eq!(rx.recv().unwrap(), LlmEvent::Token("t0 ".into()));
    }

    #[test]
    fn a_paused_reply_waits_between_tokens_until_resumed_or_cancelled() {
        let w = LlmWorker::spawn(Fake { limit: 10_000 });
        let (rx, _) = ask(&w);
        assert_eq!(rx.recv().unwrap(), LlmEvent::Token("t0 ".into()));
        w.set_paused(true);
        // What was written before the pause landed comes; then nothing.
        std::thread::sleep(Duration::from_millis(50));
        let _ = rx.try_iter().count();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        w.set_paused(false);
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(LlmEvent::Token(_))
        ));

        // A cancel ends the wait at once.
        drop(rx);
        let (rx, cancel) = ask(&w);
        assert_eq!(rx.recv().unwrap(), LlmEvent::Token("t0 ".into()));
        w.set_paused(true);
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
        let done = done_after_cancel(&rx);
        assert!(done.cancelled);
    }

    #[test]
    fn cancelled_reader_that_stops_reading_does_not_wedge_the_worker() {
        let w = LlmWorker::spawn(Fake { limit: 10_000 });
        let (rx_stuck, cancel) = ask(&w);
        assert!(matches!(rx_stuck.recv().unwrap(), LlmEvent::Token(_)));
        cancel.cancel();
        // rx_stuck is kept but never read again; the next request must run.
        let (rx, _) = ask(&w);
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first, LlmEvent::Token("t0 ".into()));
        drop(rx_stuck);
    }

    #[test]
    fn errors_are_reported_as_events() {
        let w = LlmWorker::spawn(Fake { limit: 3 });
        let (rx, _) = w.ask(Vec::new()).unwrap();
        assert!(matches!(rx.recv().unwrap(), LlmEvent::Error(m) if m.contains("empty history")));
    }

    #[test]
    fn dropped_receiver_stops_generation() {
        let w = LlmWorker::spawn(Fake { limit: 100_000 });
        let (rx, _) = ask(&w);
        drop(rx);
        // If generation kept running, this would take 100 s.
        let (rx, _) = ask(&w);
        let start = Instant::now();
        assert!(matches!(rx.recv().unwrap(), LlmEvent::Token(_)));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn requests_cancelled_behind_a_long_prompt_leave_room_for_the_next() {
        /// Reads its "prompt" until released, deaf to cancels meanwhile.
        struct Prefill(Receiver<()>);
        impl TokenGenerator for Prefill {
            fn generate(
                &mut self,
                _: &[ChatMessage],
                on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
                cancel: &CancelHandle,
            ) -> Result<Generation, LlmError> {
                let _ = self.0.recv();
                if !cancel.is_cancelled() {
                    let _ = on_token("answer");
                }
                Ok(Generation::default())
            }
        }
        let (release, released) = mpsc::channel();
        let w = LlmWorker::spawn(Prefill(released));
        // A halting speaker: a reply prepared at each of six pauses and
        // dropped, then the real one.
        for _ in 0..7 {
            let (_, cancel) = ask(&w);
            cancel.cancel();
        }
        let (rx, _) = ask(&w);
        for _ in 0..8 {
            release.send(()).unwrap();
        }
        assert_eq!(rx.recv().unwrap(), LlmEvent::Token("answer".into()));
    }

    #[test]
    fn a_read_ahead_runs_only_when_nothing_waits_behind_it() {
        /// Holds each reply until released; records what it read ahead.
        struct Gated(Receiver<()>, Arc<std::sync::Mutex<Vec<String>>>);
        impl TokenGenerator for Gated {
            fn generate(
                &mut self,
                _: &[ChatMessage],
                on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
                _: &CancelHandle,
            ) -> Result<Generation, LlmError> {
                let _ = self.0.recv();
                let _ = on_token("answer");
                Ok(Generation::default())
            }
            fn warm(&mut self, _: &[ChatMessage], unfinished: &str, _: &CancelHandle) {
                self.1.lock().unwrap().push(unfinished.to_owned());
            }
        }
        let (release, released) = mpsc::channel();
        let read = Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = LlmWorker::spawn(Gated(released, Arc::clone(&read)));
        let (first, _) = ask(&w);
        w.warm(vec![], "stale".into());
        let (second, _) = ask(&w);
        release.send(()).unwrap();
        release.send(()).unwrap();
        for rx in [first, second] {
            assert!(rx.iter().any(|e| matches!(e, LlmEvent::Done(_))));
        }
        // Cancelled while a reply holds the thread, so never begun.
        let (third, _) = ask(&w);
        w.warm(vec![], "stopped".into()).cancel();
        release.send(()).unwrap();
        assert!(third.iter().any(|e| matches!(e, LlmEvent::Done(_))));
        w.warm(vec![], "idle".into());
        let start = Instant::now();
        while read.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*read.lock().unwrap(), ["idle"]);
    }
}
