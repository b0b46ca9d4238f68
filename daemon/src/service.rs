//! The D-Bus face of `hark daemon`: `dev.hark.Hark1` at `/dev/hark/Hark` on
//! the session bus, name `dev.hark.Hark`.
//!
//! Methods only check their arguments and forward a [`Command`] to the
//! conversation core's inbox; answers come back through one-shot channels.
//! Properties mirror what the core last reported, and signals are the
//! core's [`SessionEvent`]s (those [`is_published`] picks), emitted by one
//! task in the order the core produced them. Nothing here owns
//! conversation state.

use hark_converse::hud::{HudConfig, HudFeed, HudPage};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::object_server::SignalEmitter;

use hark_converse::turn::State;
use hark_session::events::{role_name, state_name};
use hark_session::input::ExternalInput;
use hark_session::output::ExternalOutput;
use hark_session::{Command, CoreInput, ListenMode, Reply, SessionEvent};

use crate::daemon::Reload;

pub const BUS_NAME: &str = "dev.hark.Hark";
pub const OBJECT_PATH: &str = "/dev/hark/Hark";
pub const INTERFACE: &str = "dev.hark.Hark1";

/// Longest text `Say` and `Ask` accept, in bytes.
const MAX_TEXT: usize = 4096;

/// How long a call made while the models load waits for them. D-Bus
/// activation starts Hark on its first call, which must not fail for
/// being early; a load this slow has gone wrong.
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// The core's inbox, `None` until its models are loaded.
pub type Inbox = tokio::sync::watch::Receiver<Option<SyncSender<CoreInput>>>;

/// Errors sent back to D-Bus callers, named `dev.hark.Hark1.Error.*`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "dev.hark.Hark1.Error")]
pub enum HarkError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// An argument is empty, too long or not one of the allowed values.
    InvalidArgument(String),
    /// The core's queue is full; try again.
    Busy(String),
    /// Models are still loading, or the conversation has stopped.
    NotReady(String),
    /// The configuration file has an error (`Reload`).
    Config(String),
    /// The caller runs as another user.
    AccessDenied(String),
}

/// What the properties show: the core's last word on each.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// `None` while the models load (`State` reads `loading`).
    pub state: Option<State>,
    pub mode: ListenMode,
    pub muted: bool,
    pub input_device: String,
    pub output_device: String,
    pub models: Vec<String>,
    /// End of the user's turn (speech, or an `Ask`) to Hark's voice, last
    /// answered turn; 0 until there is one.
    pub last_turn_latency_ms: u64,
    pub timers: Vec<hark_skills::Timer>,
}

/// The object served at [`OBJECT_PATH`].
pub struct HarkService {
    /// Set once the core runs.
    inbox: Inbox,
    mirror: Arc<Mutex<Mirror>>,
    /// Where the configuration came from, for `Reload`.
    reload: Reload,
    /// [`READY_WAIT`], shorter in tests.
    ready_wait: Duration,
    auth: Authorizer,
    /// Push-to-talk as last asked for over D-Bus (`ToggleListening` flips
    /// it): only these methods move the core's own flag, so the two agree.
    push_to_talk: std::sync::atomic::AtomicBool,
}

/// Who may call the daemon's objects: only its own user.
pub struct Authorizer {
    /// The uid whose assistant this is (the daemon's own).
    owner_uid: Option<u32>,
    /// Callers already asked about: unique name → whether it is the owner.
    callers: Mutex<std::collections::HashMap<String, bool>>,
}

/// Callers remembered before the list starts again (unique names are never
/// reused, so it would only grow).
const MAX_CALLERS: usize = 1024;

impl HarkService {
    pub fn new(inbox: Inbox, mirror: Arc<Mutex<Mirror>>, reload: Reload) -> Self {
        Self {
            inbox,
            mirror,
            reload,
            ready_wait: READY_WAIT,
            auth: Authorizer::new(),
            push_to_talk: Default::default(),
        }
    }

    /// Forwards `command` to the core, waiting (at most [`READY_WAIT`])
    /// for it to finish loading.
    async fn send(&self, command: Command) -> Result<(), HarkError> {
        let mut inbox = self.inbox.clone();
        let inbox =
            match tokio::time::timeout(self.ready_wait, inbox.wait_for(Option::is_some)).await {
                Ok(Ok(inbox)) => inbox.clone().expect("waited until it was set"),
                Ok(Err(_)) => {
                    return Err(HarkError::NotReady(
                        "the conversation stopped before its models were loaded".into(),
                    ))
                }
                Err(_) => {
                    return Err(HarkError::NotReady(format!(
                        "Hark is still loading its models after {} s (see its log)",
                        self.ready_wait.as_secs()
                    )))
                }
            };
        match inbox.try_send(CoreInput::Command(command)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(HarkError::Busy(
                "Hark's command queue is full; try again".into(),
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err(HarkError::NotReady("the conversation has stopped".into()))
            }
        }
    }

    async fn authorize(
        &self,
        header: &zbus::message::Header<'_>,
        connection: &zbus::Connection,
    ) -> Result<(), HarkError> {
        self.auth.check(header, connection).await
    }

    /// Push-to-talk pressed (`held`) or released, remembered once the
    /// core has it.
    async fn push_to_talk(&self, held: bool) -> Result<(), HarkError> {
        self.send(Command::Listen(held)).await?;
        self.push_to_talk
            .store(held, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// `OpenAudioInput` (`hark_reads`) or `OpenAudioOutput`: checks
    /// `format`, makes a one-way socket pair, hands Hark's end to the core
    /// in the command `attach` makes of it (with the caller's name and a
    /// reply), and returns the caller's end once the core has taken it.
    async fn open_stream(
        &self,
        method: &str,
        header: &zbus::message::Header<'_>,
        format: &str,
        hark_reads: bool,
        attach: impl FnOnce(
            std::os::unix::net::UnixStream,
            hark_audio::stream::StreamFormat,
            String,
            Reply<Result<(), String>>,
        ) -> Command,
    ) -> Result<zbus::OwnedFd, HarkError> {
        let parsed: hark_audio::stream::StreamFormat = format
            .parse()
            .map_err(|e| invalid(format!("{method}: {e}")))?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| HarkError::NotReady(format!("{method}: cannot make a socket: {e}")))?;
        let (ours_closed, theirs_closed) = if hark_reads {
            (std::net::Shutdown::Write, std::net::Shutdown::Read)
        } else {
            (std::net::Shutdown::Read, std::net::Shutdown::Write)
        };
        let _ = ours.shutdown(ours_closed);
        let _ = theirs.shutdown(theirs_closed);
        let caller = header
            .sender()
            .map_or_else(|| "an unknown caller".to_owned(), |s| s.to_string());
        let (reply, answer) = answer();
        self.send(attach(ours, parsed, caller.clone(), reply))
            .await?;
        answer
            .await
            .map_err(|_| HarkError::NotReady("the conversation has stopped".into()))?
            .map_err(HarkError::Busy)?;
        tracing::info!(%caller, format = %parsed, "{method}: stream opened");
        Ok(std::os::fd::OwnedFd::from(theirs).into())
    }

    fn mirror(&self) -> Mirror {
        self.mirror
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Authorizer {
    pub fn new() -> Self {
        Self {
            owner_uid: std::fs::metadata("/proc/self")
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m)),
            callers: Mutex::default(),
        }
    }

    /// Refuses a caller of another uid: the session bus admits only its
    /// user, but a bus shared between users must not let one drive, or
    /// read the history of, another's assistant.
    pub async fn check(
        &self,
        header: &zbus::message::Header<'_>,
        connection: &zbus::Connection,
    ) -> Result<(), HarkError> {
        // No sender: a direct connection, not a bus.
        let (Some(sender), Some(owner)) = (header.sender(), self.owner_uid) else {
            return Ok(());
        };
        let known = self
            .callers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sender.as_str())
            .copied();
        let allowed = match known {
            Some(allowed) => allowed,
            None => {
                let bus = zbus::fdo::DBusProxy::new(connection).await?;
                let uid = bus
                    .get_connection_unix_user(sender.clone().into())
                    .await
                    .map_err(zbus::Error::from)?;
                let allowed = uid == owner;
                if !allowed {
                    tracing::warn!(%sender, uid, "refused a D-Bus caller of another user");
                }
                let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
                if callers.len() >= MAX_CALLERS {
                    callers.clear();
                }
                callers.insert(sender.to_string(), allowed);
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(HarkError::AccessDenied(format!(
                "Hark serves uid {owner} only"
            )))
        }
    }
}

/// Takes `name` on the bus; false if someone has it (never queued, so a
/// second daemon fails at once).
pub async fn own_name(connection: &zbus::Connection, name: &str) -> anyhow::Result<bool> {
    use anyhow::Context;
    let reply = connection
        .request_name_with_flags(name, zbus::fdo::RequestNameFlags::DO_NOT_QUEUE)
        .await
        .with_context(|| format!("cannot request the name {name}"))?;
    Ok(reply == zbus::fdo::RequestNameReply::PrimaryOwner)
}

/// Longest refusal sent back, in bytes: a message that quotes a huge
/// argument is cut, so a caller never gets its megabyte back.
const MAX_REFUSAL: usize = 300;

/// `Error.InvalidArgument` with `message`, cut to [`MAX_REFUSAL`].
fn invalid(mut message: String) -> HarkError {
    if message.len() > MAX_REFUSAL {
        let mut end = MAX_REFUSAL;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    HarkError::InvalidArgument(message)
}

fn checked_text(what: &str, text: String) -> Result<String, HarkError> {
    if text.trim().is_empty() {
        return Err(HarkError::InvalidArgument(format!(
            "{what}: the text is empty"
        )));
    }
    if text.len() > MAX_TEXT {
        return Err(HarkError::InvalidArgument(format!(
            "{what}: the text is {} bytes; at most {MAX_TEXT} are accepted",
            text.len()
        )));
    }
    Ok(text)
}

/// A one-shot answer from the core, awaited here.
fn answer<T: Send + 'static>() -> (Reply<T>, tokio::sync::oneshot::Receiver<T>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (
        Reply::new(move |value| {
            let _ = tx.send(value);
        }),
        rx,
    )
}

#[zbus::interface(name = "dev.hark.Hark1")]
impl HarkService {
    /// Speaks `text` (replacing any reply in progress).
    async fn say(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        text: String,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        let text = checked_text("Say", text)?;
        self.send(Command::Say(text)).await
    }

    /// Answers `text` as if the user had said it, speaks the answer and
    /// returns what was spoken (only the heard part if interrupted).
    async fn ask(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        text: String,
    ) -> Result<String, HarkError> {
        self.authorize(&header, connection).await?;
        let text = checked_text("Ask", text)?;
        let (reply, answer) = answer();
        self.send(Command::Ask {
            text,
            reply: Some(reply),
        })
        .await?;
        answer
            .await
            .map_err(|_| HarkError::NotReady("the conversation stopped before answering".into()))
    }

    /// Stops talking now.
    async fn interrupt(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        self.send(Command::Interrupt).await
    }

    /// Push-to-talk pressed: listen (in `push-to-talk` mode).
    async fn start_listening(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        self.push_to_talk(true).await
    }

    /// Push-to-talk released.
    async fn stop_listening(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        self.push_to_talk(false).await
    }

    /// Push-to-talk as one key: pressed once to listen, again to stop (for
    /// a desktop shortcut, which sees no key release). Returns whether
    /// Hark now listens.
    async fn toggle_listening(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<bool, HarkError> {
        self.authorize(&header, connection).await?;
        let held = !self.push_to_talk.load(std::sync::atomic::Ordering::SeqCst);
        self.push_to_talk(held).await?;
        Ok(held)
    }

    async fn set_muted(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        muted: bool,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        self.send(Command::SetMuted(muted)).await
    }

    /// `always`, `name` (only what is said to Hark by name), `wake` (only
    /// what follows the wake word, `[wake] wake_word`), `push-to-talk` or
    /// `off`.
    async fn set_mode(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        mode: String,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        let parsed: ListenMode = mode.parse().map_err(|e| invalid(format!("SetMode: {e}")))?;
        self.send(Command::SetMode(parsed)).await
    }

    async fn clear_history(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        self.send(Command::ClearHistory).await
    }

    /// (role, text, Unix time in ms) per turn, oldest first; an interrupted
    /// reply holds only what was spoken.
    async fn get_history(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<(String, String, u64)>, HarkError> {
        self.authorize(&header, connection).await?;
        let (reply, answer) = answer();
        self.send(Command::GetHistory(reply)).await?;
        let turns = answer
            .await
            .map_err(|_| HarkError::NotReady("the conversation has stopped".into()))?;
        Ok(turns
            .into_iter()
            .map(|t| (role_name(t.turn.role).to_owned(), t.turn.text, t.unix_ms))
            .collect())
    }

    /// Returns a socket to write audio into: Hark listens to it instead of
    /// its microphone until it is closed. `format` is raw PCM as
    /// `ENCODING[:RATE[:CHANNELS]]`: `s16le` (16 kHz mono), or for example
    /// `s16le:48000:2` or `f32le:44100`; or mono Opus packets as
    /// `opus:RATE` (8000, 12000, 16000, 24000 or 48000), or mono LC3
    /// frames as `lc3:RATE:FRAME_US` (8000, 16000, 24000, 32000 or 48000;
    /// 7500 or 10000), each packet preceded by its length as a
    /// little-endian u16, as in the payload of a `.lc3` file. Write in real
    /// time; a pause is heard as silence. A packet lost on the way (sent
    /// as a zero length), too long or refused by the codec is concealed,
    /// never the end of the stream. One stream at a time.
    async fn open_audio_input(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        format: String,
    ) -> Result<zbus::OwnedFd, HarkError> {
        self.authorize(&header, connection).await?;
        // Hark only reads, the caller only writes.
        self.open_stream(
            "OpenAudioInput",
            &header,
            &format,
            true,
            |stream, format, caller, reply| Command::OpenInput {
                input: ExternalInput {
                    stream,
                    format,
                    label: format!("stream from {caller}"),
                },
                reply,
            },
        )
        .await
    }

    /// Returns a socket to read Hark's voice from: while it is open the
    /// voice goes there instead of the speaker (which plays nothing), in
    /// real time, silence included, so a companion app can play it on
    /// smart glasses. `format` is as for `OpenAudioInput`: raw PCM
    /// (`s16le`, `s16le:48000:2`, `f32le:22050`, …), or mono Opus
    /// (`opus:RATE`, 20 ms packets) or LC3 (`lc3:RATE:FRAME_US`) packets,
    /// each preceded by its length as a little-endian u16. When Hark stops
    /// talking at once (barge-in, `Interrupt`) the stream falls silent and
    /// `PlaybackStopped(true)` is sent: drop what is buffered. Closing the
    /// socket, or not reading it for 2 s, gives the voice back to the
    /// speaker. One stream at a time.
    async fn open_audio_output(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        format: String,
    ) -> Result<zbus::OwnedFd, HarkError> {
        self.authorize(&header, connection).await?;
        // Hark only writes, the caller only reads.
        self.open_stream(
            "OpenAudioOutput",
            &header,
            &format,
            false,
            |stream, format, caller, reply| Command::OpenOutput {
                output: ExternalOutput {
                    stream,
                    label: format!("stream to {caller} ({format})"),
                    format,
                },
                reply,
            },
        )
        .await
    }

    /// Sets a timer of `seconds` that says `label` when it goes off (and
    /// sends `TimerFired`); returns its id. It survives a restart.
    async fn set_timer(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        seconds: u64,
        label: String,
    ) -> Result<String, HarkError> {
        self.authorize(&header, connection).await?;
        if label.len() > 200 {
            return Err(HarkError::InvalidArgument(format!(
                "SetTimer: the label is {} bytes; at most 200 are accepted",
                label.len()
            )));
        }
        let (reply, answer) = answer();
        self.send(Command::SetTimer {
            seconds,
            label,
            reply,
        })
        .await?;
        let timer = answer
            .await
            .map_err(|_| HarkError::NotReady("the conversation has stopped".into()))?
            .map_err(|why| invalid(format!("SetTimer: {why}")))?;
        Ok(timer.id)
    }

    /// Cancels the timer `id` (as `SetTimer` or `Timers` give it).
    async fn cancel_timer(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        id: String,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        let (reply, answer) = answer();
        self.send(Command::CancelTimer { id, reply }).await?;
        answer
            .await
            .map_err(|_| HarkError::NotReady("the conversation has stopped".into()))?
            .map_err(|why| invalid(format!("CancelTimer: {why}")))
    }

    /// Re-reads the configuration: the turn-taking rules, Hark's names and
    /// the listening mode change at once (the mode only if the file's
    /// changed: one chosen with `SetMode` stays otherwise); devices and
    /// models only at the next start. The
    /// model files the configuration names are checked now: a damaged or
    /// missing one is named in an `Error` signal (code `models`), and the
    /// models loaded at start keep serving.
    async fn reload(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), HarkError> {
        self.authorize(&header, connection).await?;
        let loaded =
            crate::config::load(self.reload.config_file.as_deref(), &self.reload.overrides)
                .map_err(|e| HarkError::Config(e.to_string()))?;
        tracing::info!(config = %loaded.source, "configuration reloaded");
        // Hashing a few hundred MB takes a moment: off the bus's thread.
        let (config, store) = (loaded.config.clone(), self.reload.store.clone());
        let problems =
            tokio::task::spawn_blocking(move || crate::models::problems(&config, &store))
                .await
                .unwrap_or_default();
        for problem in &problems {
            tracing::error!("{problem}");
            Self::error(&emitter, "models", problem).await?;
        }
        let file_mode = loaded.config.daemon.mode;
        let changed = {
            let mut last = self
                .reload
                .file_mode
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *last, file_mode) != file_mode
        };
        self.send(Command::Reconfigure {
            turn: loaded.config.conversation,
            mode: changed.then_some(file_mode),
            wake: loaded.config.wake,
        })
        .await
    }

    /// `loading` until the models are ready, then the turn state
    /// (`listening`, `idle`, `thinking`, `speaking`, …).
    #[zbus(property)]
    async fn state(&self) -> String {
        self.mirror().state.map_or("loading", state_name).to_owned()
    }

    #[zbus(property)]
    async fn mode(&self) -> String {
        self.mirror().mode.name().to_owned()
    }

    #[zbus(property)]
    async fn muted(&self) -> bool {
        self.mirror().muted
    }

    #[zbus(property)]
    async fn input_device(&self) -> String {
        self.mirror().input_device
    }

    #[zbus(property)]
    async fn output_device(&self) -> String {
        self.mirror().output_device
    }

    #[zbus(property)]
    async fn models(&self) -> Vec<String> {
        self.mirror().models
    }

    #[zbus(property)]
    async fn last_turn_latency_ms(&self) -> u64 {
        self.mirror().last_turn_latency_ms
    }

    /// (id, label, when it goes off in ms since the Unix epoch) per
    /// running timer, soonest first.
    #[zbus(property)]
    async fn timers(&self) -> Vec<(String, String, u64)> {
        self.mirror()
            .timers
            .into_iter()
            .map(|t| (t.id, t.label, t.due_unix_ms))
            .collect()
    }

    // Named apart from the `State` property's own change notifier.
    #[zbus(signal, name = "StateChanged")]
    async fn state_changed_signal(emitter: &SignalEmitter<'_>, state: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn speech_started(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    /// What the user has said so far, while still talking (each
    /// `stt.partial_every_ms` of speech); the `FinalTranscript` follows.
    #[zbus(signal)]
    async fn partial_transcript(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn final_transcript(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;

    /// Text of the reply as it will be spoken, clause by clause.
    #[zbus(signal)]
    async fn reply_chunk(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn interrupted(emitter: &SignalEmitter<'_>, spoken_part: &str) -> zbus::Result<()>;

    /// Hark's voice stopped at once: `flushed` when what was queued is
    /// dropped (barge-in, `Interrupt`), else paused (it may resume). A
    /// companion playing an `OpenAudioOutput` stream drops its buffer.
    #[zbus(signal)]
    async fn playback_stopped(emitter: &SignalEmitter<'_>, flushed: bool) -> zbus::Result<()>;

    /// A reply ended. Latencies in ms, -1 where a stage did not happen:
    /// end of speech → Hark's voice, end of speech → transcript, transcript
    /// → first token, first token → first audio; then end of speech → the
    /// decision that the turn was over (`endpoint_ms`), and the first
    /// clause's text → its audio (`first_synthesis_ms`).
    #[allow(clippy::too_many_arguments)]
    #[zbus(signal)]
    async fn turn_finished(
        emitter: &SignalEmitter<'_>,
        text: &str,
        interrupted: bool,
        voice_to_voice_ms: i64,
        transcript_ms: i64,
        first_token_ms: i64,
        first_audio_ms: i64,
        endpoint_ms: i64,
        first_synthesis_ms: i64,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn error(emitter: &SignalEmitter<'_>, code: &str, message: &str) -> zbus::Result<()>;

    /// A timer went off; `label` is what it was for (empty if unnamed).
    #[zbus(signal)]
    async fn timer_fired(emitter: &SignalEmitter<'_>, label: &str) -> zbus::Result<()>;

    /// Hark heard itself spoken to (mode `name`): `how` is "name" (a
    /// heads-up display shows that Hark is listening).
    #[zbus(signal)]
    async fn wake_detected(emitter: &SignalEmitter<'_>, how: &str) -> zbus::Result<()>;

    /// A page for a heads-up display of `[hud] columns` × `lines`: the
    /// user's words when accepted as a turn, then the reply's pages, each
    /// sent as its first word is about to be spoken (a page the model
    /// wrote on after it was shown comes again with the same number;
    /// `pages` is the count known then). When Hark is talked over, the
    /// page being spoken comes again cut where Hark stopped.
    #[zbus(signal)]
    async fn hud_page(
        emitter: &SignalEmitter<'_>,
        text: &str,
        page: u32,
        pages: u32,
    ) -> zbus::Result<()>;
}

fn latency(from: Option<u64>, to: Option<u64>) -> i64 {
    match (from, to) {
        (Some(a), Some(b)) => b.saturating_sub(a) as i64,
        _ => -1,
    }
}

/// Whether the D-Bus face shows `event` (as a signal or a property).
pub fn is_published(event: &SessionEvent) -> bool {
    use SessionEvent as E;
    match event {
        E::State { .. }
        | E::UserTurn { .. }
        | E::Clause { .. }
        | E::Interrupted { .. }
        | E::TurnFinished { .. }
        | E::Muted { .. }
        | E::Mode { .. }
        | E::InputChanged { .. }
        | E::OutputChanged { .. }
        | E::Timers { .. }
        | E::TimerFired { .. }
        | E::WakeDetected { .. }
        | E::Error { .. } => true,
        // The heads-up display's pages follow the voice.
        E::Synthesized { .. } | E::PlaybackStarted { .. } | E::PlaybackStopped { .. } => true,
        E::SpeechStarted { muted, .. } => !muted,
        E::PartialTranscript { current, .. } => *current,
        _ => false,
    }
}

/// Emits the core's events as signals (and property changes), in order,
/// until the core is gone.
pub async fn pump_signals(
    connection: zbus::Connection,
    mirror: Arc<Mutex<Mirror>>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<SessionEvent>,
    hud: HudConfig,
) {
    let iface = match connection
        .object_server()
        .interface::<_, HarkService>(OBJECT_PATH)
        .await
    {
        Ok(iface) => iface,
        Err(e) => {
            tracing::error!("D-Bus object missing, no signals will be sent: {e}");
            return;
        }
    };
    let mut hud = HudFeed::new(hud);
    // Bumped when the pages already scheduled are no longer true (the
    // user spoke, Hark was talked over).
    let hud_epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
    while let Some(event) = events.recv().await {
        let emitter = iface.signal_emitter();
        // The display's pages follow the signal they illustrate.
        let for_hud = event.clone();
        let service = iface.get().await;
        let update = |f: &dyn Fn(&mut Mirror)| {
            f(&mut mirror.lock().unwrap_or_else(|p| p.into_inner()));
        };
        let sent = match event {
            SessionEvent::State { to, .. } => {
                update(&|m| m.state = Some(to));
                let _ = service.state_changed(emitter).await;
                HarkService::state_changed_signal(emitter, state_name(to)).await
            }
            SessionEvent::SpeechStarted { .. } => HarkService::speech_started(emitter).await,
            SessionEvent::PartialTranscript { text, .. } => {
                HarkService::partial_transcript(emitter, &text).await
            }
            SessionEvent::UserTurn { text } => HarkService::final_transcript(emitter, &text).await,
            SessionEvent::Clause { text, .. } => HarkService::reply_chunk(emitter, &text).await,
            SessionEvent::Interrupted { spoken_part, .. } => {
                HarkService::interrupted(emitter, &spoken_part).await
            }
            SessionEvent::TurnFinished {
                text,
                interrupted,
                timings,
                endpoint_ms,
                ..
            } => {
                // From the end of the user's speech, or for `Ask` from the
                // question, to Hark's voice.
                let latency_ms = timings.voice_to_voice_ms().or_else(|| {
                    Some(
                        timings
                            .first_playback_ms?
                            .saturating_sub(timings.generation_started_ms?),
                    )
                });
                if let Some(ms) = latency_ms {
                    update(&|m| m.last_turn_latency_ms = ms);
                    let _ = service.last_turn_latency_ms_changed(emitter).await;
                }
                HarkService::turn_finished(
                    emitter,
                    &text,
                    interrupted,
                    latency(timings.speech_ended_ms, timings.first_playback_ms),
                    latency(timings.speech_ended_ms, timings.transcript_ms),
                    latency(timings.generation_started_ms, timings.first_token_ms),
                    latency(timings.first_token_ms, timings.first_playback_ms),
                    endpoint_ms.map_or(-1, |ms| ms as i64),
                    latency(timings.first_clause_ms, timings.first_synthesized_ms),
                )
                .await
            }
            SessionEvent::Muted { muted } => {
                update(&|m| m.muted = muted);
                service.muted_changed(emitter).await
            }
            SessionEvent::Mode { mode } => {
                update(&|m| m.mode = mode);
                service.mode_changed(emitter).await
            }
            SessionEvent::InputChanged { input, .. } => {
                update(&|m| m.input_device = input.clone());
                service.input_device_changed(emitter).await
            }
            SessionEvent::OutputChanged { output, .. } => {
                update(&|m| m.output_device = output.clone());
                service.output_device_changed(emitter).await
            }
            SessionEvent::Error { code, message } => {
                HarkService::error(emitter, code, &message).await
            }
            SessionEvent::Timers { timers } => {
                update(&|m| m.timers = timers.clone());
                service.timers_changed(emitter).await
            }
            SessionEvent::TimerFired { label, .. } => {
                HarkService::timer_fired(emitter, &label).await
            }
            SessionEvent::WakeDetected { how } => HarkService::wake_detected(emitter, &how).await,
            SessionEvent::PlaybackStopped { flushed } => {
                HarkService::playback_stopped(emitter, flushed).await
            }
            _ => Ok(()),
        };
        if let Err(e) = sent {
            tracing::warn!("cannot emit a D-Bus signal: {e}");
        }
        drop(service);
        feed_hud(&mut hud, &hud_epoch, emitter, &for_hud).await;
    }
}

/// Shows `event` on the heads-up display: pages now, or spawned to wait
/// until their first word is spoken.
async fn feed_hud(
    hud: &mut HudFeed,
    epoch: &Arc<std::sync::atomic::AtomicU64>,
    emitter: &SignalEmitter<'static>,
    event: &SessionEvent,
) {
    use std::sync::atomic::Ordering;
    let now: Vec<HudPage> = match event {
        SessionEvent::UserTurn { text } => {
            epoch.fetch_add(1, Ordering::Relaxed);
            hud.user_turn(text)
        }
        SessionEvent::Clause { clause, text } => {
            hud.clause(*clause, text);
            Vec::new()
        }
        SessionEvent::Synthesized {
            clause, audio_ms, ..
        } => {
            hud.synthesized(*clause, *audio_ms);
            Vec::new()
        }
        SessionEvent::PlaybackStarted { clause } => {
            let mut now = Vec::new();
            for (delay_ms, page) in hud.playback_started(*clause) {
                if delay_ms == 0 {
                    now.push(page);
                    continue;
                }
                let (emitter, epoch) = (emitter.clone(), epoch.clone());
                let scheduled = epoch.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                    if epoch.load(Ordering::Relaxed) == scheduled {
                        let _ = HarkService::hud_page(&emitter, &page.text, page.page, page.pages)
                            .await;
                    }
                });
            }
            now
        }
        SessionEvent::Interrupted { spoken_part, .. } => {
            epoch.fetch_add(1, Ordering::Relaxed);
            hud.interrupted(spoken_part).into_iter().collect()
        }
        SessionEvent::TurnFinished { .. } => {
            hud.new_reply();
            Vec::new()
        }
        _ => Vec::new(),
    };
    for page in now {
        if let Err(e) = HarkService::hud_page(emitter, &page.text, page.page, page.pages).await {
            tracing::warn!("cannot emit a D-Bus signal: {e}");
        }
    }
}

/// Tells property watchers that `State` has left `loading`.
pub async fn announce_ready(connection: &zbus::Connection) {
    let Ok(iface) = connection
        .object_server()
        .interface::<_, HarkService>(OBJECT_PATH)
        .await
    else {
        return;
    };
    let emitter = iface.signal_emitter();
    let state = HarkService::state(&*iface.get().await).await;
    let _ = iface.get().await.state_changed(emitter).await;
    let _ = HarkService::state_changed_signal(emitter, &state).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(inbox: Inbox, ready_wait: Duration) -> HarkService {
        let mirror = Mirror {
            state: None,
            mode: ListenMode::Always,
            muted: false,
            input_device: "default".into(),
            output_device: "default".into(),
            models: Vec::new(),
            last_turn_latency_ms: 0,
            timers: Vec::new(),
        };
        let reload = Reload {
            config_file: None,
            overrides: Vec::new(),
            store: hark_models::store::ModelStore::at("/nonexistent"),
            file_mode: Default::default(),
        };
        let mut service = HarkService::new(inbox, Arc::new(Mutex::new(mirror)), reload);
        service.ready_wait = ready_wait;
        service
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_call_made_while_loading_is_delivered_once_the_core_is_ready() {
        let (ready, inbox) = tokio::sync::watch::channel(None);
        let service = service(inbox, Duration::from_secs(10));
        let (core_tx, core_rx) = std::sync::mpsc::sync_channel(4);
        block_on(async {
            let loading = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ready.send_replace(Some(core_tx));
            });
            assert_eq!(service.state().await, "loading");
            service.send(Command::Interrupt).await.unwrap();
            loading.await.unwrap();
        });
        assert!(matches!(
            core_rx.try_recv(),
            Ok(CoreInput::Command(Command::Interrupt))
        ));
    }

    #[test]
    fn a_load_that_never_ends_gives_a_clear_not_ready_error() {
        let (_ready, inbox) = tokio::sync::watch::channel(None);
        let service = service(inbox, Duration::from_millis(30));
        let err = block_on(service.send(Command::Interrupt)).unwrap_err();
        match err {
            HarkError::NotReady(why) => assert!(why.contains("still loading"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_core_that_dies_while_loading_fails_the_waiting_call_at_once() {
        let (ready, inbox) = tokio::sync::watch::channel(None);
        let service = service(inbox, Duration::from_secs(60));
        drop(ready);
        let started = std::time::Instant::now();
        let err = block_on(service.send(Command::Interrupt)).unwrap_err();
        assert!(matches!(err, HarkError::NotReady(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_refusal_quoting_a_huge_argument_is_cut() {
        let HarkError::InvalidArgument(message) = invalid(format!("SetMode: {}", "é".repeat(1000)))
        else {
            unreachable!()
        };
        assert!(
            message.len() <= MAX_REFUSAL + '…'.len_utf8(),
            "{}",
            message.len()
        );
        assert!(message.starts_with("SetMode: éé") && message.ends_with('…'));
        let HarkError::InvalidArgument(short) = invalid("SetMode: no".into()) else {
            unreachable!()
        };
        assert_eq!(short, "SetMode: no");
    }
}
