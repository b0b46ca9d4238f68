//! Hark as a Wyoming server: its Whisper and its Piper voice offered to
//! Home Assistant (or any Wyoming client), one thread per connection.
//!
//! What a connection may do is bounded: the framing by [`Limits`], the
//! audio of one utterance by [`ServerLimits::max_audio`], the text of one
//! request by [`ServerLimits::max_text_chars`], the number of connections
//! by [`ServerLimits::max_connections`]. A connection that breaks the
//! protocol gets an `error` event and is closed; nothing else is touched.
//! Every read and write has a timeout, so a client that goes quiet or
//! stops reading loses its own connection and stalls nobody: the engines
//! are held only while they run, never while a socket is written.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::Endpoint;
use crate::codec::{write_event, EventReader, Limits};
use crate::message::{encode_s16le, AudioFormat, Info, Message, VoiceChoice};
use crate::WyomingError;

/// What the server offers; the binary implements it with Hark's engines.
pub trait Services: Send + Sync + 'static {
    /// The answer to `describe`.
    fn info(&self) -> Info;
    /// 16 kHz mono audio to text.
    fn transcribe(&self, samples: &[f32], language: Option<&str>) -> Result<String, String>;
    /// Text to mono audio, and its sample rate.
    fn synthesize(
        &self,
        text: &str,
        voice: Option<&VoiceChoice>,
    ) -> Result<(Vec<f32>, u32), String>;
    /// Hark as a satellite, where it can be one (the daemon, with its
    /// microphone and speaker).
    fn satellite(&self) -> Option<&dyn SatelliteHost> {
        None
    }
    /// Wake detection (`detect`, then audio), where it is offered.
    fn wake(&self) -> Option<&dyn WakeService> {
        None
    }
}

/// Hearing a wake word in a stream of audio: a satellite sends `detect`
/// and then its microphone, and is told `detection` when the word is heard.
pub trait WakeService: Send + Sync {
    /// A listener for one stream: it cuts the audio into utterances.
    fn listener(&self) -> Box<dyn UtteranceListener>;
    /// Which of `names` (empty: any of the service's) `utterance` (16 kHz
    /// mono) is, if any.
    fn detect(&self, utterance: &[f32], names: &[String]) -> Option<String>;
}

/// Cuts a stream of 16 kHz mono audio into utterances.
pub trait UtteranceListener: Send {
    /// The utterances that ended within `samples`.
    fn push(&mut self, samples: &[f32]) -> Vec<Vec<f32>>;
}

/// A `detect` being served: the names asked for and the stream's
/// utterances.
struct WakeRun {
    names: Vec<String>,
    listener: Box<dyn UtteranceListener>,
    /// Milliseconds of audio heard since `detect`.
    heard_ms: u64,
    detected: bool,
}

/// Hark's side of being a Wyoming satellite: a server (Home Assistant)
/// sends `run-satellite`, then the pipeline's events; Hark sends
/// `run-pipeline` and the user's audio through `to_server`.
pub trait SatelliteHost: Send + Sync {
    /// The server runs the satellite; what Hark sends it goes through
    /// `to_server` (never blocking: a full queue drops, with a log).
    fn start(&self, to_server: SyncSender<Message>) -> Result<(), String>;
    /// An event of the pipeline's, for the running satellite.
    fn event(&self, message: Message);
    /// The server paused the satellite or went away.
    fn stop(&self);
}

/// Events queued for a satellite's server.
pub const SATELLITE_QUEUE: usize = 512;

/// How much one client may ask of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub framing: Limits,
    pub max_connections: usize,
    /// A connection that sends nothing this long is closed.
    pub idle: Duration,
    /// A client that takes this long to read what Hark writes is dropped.
    pub write: Duration,
    /// The longest utterance transcribed.
    pub max_audio: Duration,
    pub max_text_chars: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            framing: Limits::default(),
            max_connections: 16,
            idle: Duration::from_secs(120),
            write: Duration::from_secs(5),
            max_audio: Duration::from_secs(60),
            max_text_chars: 10_000,
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A connected client of either kind.
enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Client {
    fn prepare(&self, limits: &ServerLimits) -> std::io::Result<Client> {
        Ok(match self {
            Client::Tcp(s) => {
                s.set_read_timeout(Some(limits.idle))?;
                s.set_write_timeout(Some(limits.write))?;
                let _ = s.set_nodelay(true);
                Client::Tcp(s.try_clone()?)
            }
            Client::Unix(s) => {
                s.set_read_timeout(Some(limits.idle))?;
                s.set_write_timeout(Some(limits.write))?;
                Client::Unix(s.try_clone()?)
            }
        })
    }
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Client::Tcp(s) => s.read(buf),
            Client::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Client::Tcp(s) => s.write(buf),
            Client::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Client::Tcp(s) => s.flush(),
            Client::Unix(s) => s.flush(),
        }
    }
}

/// The running server; dropping it stops accepting (connections already
/// open finish on their own).
pub struct WyomingServer {
    endpoint: Endpoint,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WyomingServer {
    /// Listens on `endpoint` (port 0: any free port) and serves on a
    /// "hark-wyoming" thread.
    pub fn start(
        endpoint: &Endpoint,
        services: Arc<dyn Services>,
        limits: ServerLimits,
    ) -> Result<Self, WyomingError> {
        let (listener, endpoint) = match endpoint {
            Endpoint::Tcp { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port))?;
                let port = listener.local_addr()?.port();
                (
                    Listener::Tcp(listener),
                    Endpoint::Tcp {
                        host: host.clone(),
                        port,
                    },
                )
            }
            Endpoint::Unix(path) => {
                // A socket left by a server that died is in the way; a live
                // one answers, and is not taken over.
                if path.exists() && UnixStream::connect(path).is_err() {
                    let _ = std::fs::remove_file(path);
                }
                (
                    Listener::Unix(UnixListener::bind(path)?),
                    Endpoint::Unix(path.clone()),
                )
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hark-wyoming".into())
            .spawn(move || accept_loop(listener, services, limits, stopping))?;
        Ok(Self {
            endpoint,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens (with the port chosen, for port 0).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for WyomingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = match &self.endpoint {
            Endpoint::Tcp { host, port } => {
                let host = if host == "0.0.0.0" || host == "::" {
                    "127.0.0.1"
                } else {
                    host
                };
                TcpStream::connect((host, *port)).map(drop)
            }
            Endpoint::Unix(path) => UnixStream::connect(path).map(drop),
        };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Endpoint::Unix(path) = &self.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn accept_loop(
    listener: Listener,
    services: Arc<dyn Services>,
    limits: ServerLimits,
    stop: Arc<AtomicBool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Client::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Client::Unix(s)),
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut client = match accepted {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!("Wyoming server: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= limits.max_connections {
            if let Ok(mut writer) = client.prepare(&limits) {
                let _ = send_error(&mut writer, "busy", "too many connections; try again later");
            }
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (services, open_now) = (services.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("hark-wyoming-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(&mut client, services.as_ref(), &limits) {
                    tracing::debug!("Wyoming connection closed: {e}");
                }
                open_now.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("Wyoming server: cannot start a connection thread: {e}");
        }
    }
}

fn send(writer: &mut Client, message: &Message) -> Result<(), WyomingError> {
    write_event(writer, &message.to_event())
}

fn send_error(writer: &mut Client, code: &str, text: &str) -> Result<(), WyomingError> {
    send(
        writer,
        &Message::Error {
            text: text.to_owned(),
            code: Some(code.to_owned()),
        },
    )
}

/// An utterance being received.
struct Utterance {
    language: Option<String>,
    format: Option<AudioFormat>,
    /// Mono, at `format.rate`.
    samples: Vec<f32>,
}

/// What a connection asked for that has not finished.
#[derive(Default)]
struct Pending {
    utterance: Option<Utterance>,
    /// Listening for a wake word (`detect`), until the next `transcribe`.
    wake: Option<WakeRun>,
    /// A streamed synthesis (`synthesize-start` … `synthesize-stop`).
    streamed: Option<(Option<VoiceChoice>, String)>,
}

fn serve_connection(
    client: &mut Client,
    services: &dyn Services,
    limits: &ServerLimits,
) -> Result<(), WyomingError> {
    let mut writer = client.prepare(limits)?;
    let reader_side = client.prepare(limits)?;
    let mut reader = EventReader::with_limits(reader_side, limits.framing);
    let mut pending = Pending::default();
    let mut satellite: Option<SatelliteRun> = None;
    let result = loop {
        let event = match reader.read_event() {
            Ok(Some(event)) => event,
            Ok(None) => break Ok(()),
            Err(WyomingError::Io(e)) => break Err(WyomingError::Io(e)),
            Err(e) => {
                let _ = send_error(&mut writer, "protocol", &e.to_string());
                break Err(e);
            }
        };
        let message = match Message::from_event(event) {
            Ok(message) => message,
            Err(e) => {
                let _ = send_error(&mut writer, "bad-event", &e.to_string());
                break Err(e);
            }
        };
        if let Some(run) = &satellite {
            if run.closed.load(Ordering::SeqCst) {
                break Err(WyomingError::Protocol(
                    "the satellite's server stopped reading".into(),
                ));
            }
            match message {
                Message::Describe => run.send(Message::Info(Box::new(services.info()))),
                Message::Ping { text } => run.send(Message::Pong { text }),
                Message::RunSatellite => {}
                Message::PauseSatellite => {
                    satellite = None;
                    if let Some(host) = services.satellite() {
                        host.stop();
                    }
                }
                message => {
                    if let Some(host) = services.satellite() {
                        host.event(message);
                    }
                }
            }
            continue;
        }
        if message == Message::RunSatellite {
            match start_satellite(services, client, limits) {
                Ok(run) => satellite = Some(run),
                Err(e) => {
                    let _ = send_error(&mut writer, "no-satellite", &e);
                }
            }
            continue;
        }
        if let Err(refusal) = answer(message, &mut pending, &mut writer, services, limits)? {
            let _ = send_error(&mut writer, "too-large", &refusal);
            break Err(WyomingError::Protocol(refusal));
        }
    };
    if satellite.is_some() {
        if let Some(host) = services.satellite() {
            host.stop();
        }
    }
    result
}

/// A satellite run on this connection: what Hark sends goes through a
/// queue to a writer thread of its own, so neither the core nor this
/// connection's reader ever waits on the socket.
struct SatelliteRun {
    to_server: SyncSender<Message>,
    /// The writer gave up (the server stopped reading or went away).
    closed: Arc<AtomicBool>,
}

impl SatelliteRun {
    fn send(&self, message: Message) {
        if self.to_server.try_send(message).is_err() {
            tracing::warn!("the satellite's server is not reading; an event was dropped");
        }
    }
}

fn start_satellite(
    services: &dyn Services,
    client: &Client,
    limits: &ServerLimits,
) -> Result<SatelliteRun, String> {
    let host = services
        .satellite()
        .ok_or("Hark is not a satellite here (it is one in `hark daemon` with [wyoming] listen)")?;
    let mut writer = client.prepare(limits).map_err(|e| e.to_string())?;
    let (to_server, queued) = sync_channel::<Message>(SATELLITE_QUEUE);
    let closed = Arc::new(AtomicBool::new(false));
    let closing = closed.clone();
    std::thread::Builder::new()
        .name("hark-wyoming-sat".into())
        .spawn(move || {
            for message in queued {
                if let Err(e) = send(&mut writer, &message) {
                    tracing::warn!("the satellite's server: {e}");
                    closing.store(true, Ordering::SeqCst);
                    break;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    host.start(to_server.clone())?;
    Ok(SatelliteRun { to_server, closed })
}

/// Acts on one message. The outer error is the socket's; the inner one a
/// request over the limits, which ends the connection.
fn answer(
    message: Message,
    pending: &mut Pending,
    writer: &mut Client,
    services: &dyn Services,
    limits: &ServerLimits,
) -> Result<Result<(), String>, WyomingError> {
    match message {
        Message::Describe => send(writer, &Message::Info(Box::new(services.info())))?,
        Message::Ping { text } => send(writer, &Message::Pong { text })?,
        Message::Transcribe { language, .. } => {
            pending.wake = None;
            pending.utterance = Some(Utterance {
                language,
                format: None,
                samples: Vec::new(),
            });
        }
        // A wake stream's start says nothing the chunks do not.
        Message::AudioStart { format, .. } if pending.wake.is_none() => {
            let utterance = pending.utterance.get_or_insert(Utterance {
                language: None,
                format: None,
                samples: Vec::new(),
            });
            utterance.format = Some(format);
            utterance.samples.clear();
        }
        Message::Detect { names } => match services.wake() {
            Some(wake) => {
                pending.utterance = None;
                pending.wake = Some(WakeRun {
                    names: names.unwrap_or_default(),
                    listener: wake.listener(),
                    heard_ms: 0,
                    detected: false,
                });
            }
            None => send_error(writer, "no-wake", "this server offers no wake detection")?,
        },
        Message::AudioChunk { format, audio, .. } if pending.wake.is_some() => {
            let run = pending.wake.as_mut().expect("checked");
            let audio = match resample(&format.decode(&audio), format.rate) {
                Ok(audio) => audio,
                Err(e) => return Ok(Err(e)),
            };
            run.heard_ms += audio.len() as u64 / 16;
            let wake = services.wake().expect("a wake run needs the service");
            for utterance in run.listener.push(&audio) {
                if let Some(name) = wake.detect(&utterance, &run.names) {
                    run.detected = true;
                    send(
                        writer,
                        &Message::Detection {
                            name: Some(name),
                            timestamp: Some(run.heard_ms),
                        },
                    )?;
                }
            }
        }
        Message::AudioStop { .. } if pending.wake.is_some() => {
            if !pending.wake.take().expect("checked").detected {
                send(writer, &Message::NotDetected)?;
            }
        }
        Message::AudioChunk { format, audio, .. } => {
            let utterance = pending.utterance.get_or_insert(Utterance {
                language: None,
                format: None,
                samples: Vec::new(),
            });
            if utterance.format.is_some_and(|f| f.rate != format.rate) {
                return Ok(Err("the audio's rate changed within one utterance".into()));
            }
            utterance.format = Some(format);
            utterance.samples.extend(format.decode(&audio));
            let max = limits.max_audio.as_secs_f64() * format.rate as f64;
            if utterance.samples.len() as f64 > max {
                return Ok(Err(format!(
                    "the utterance is longer than {} s",
                    limits.max_audio.as_secs()
                )));
            }
        }
        Message::AudioStop { .. } => {
            let Some(utterance) = pending.utterance.take() else {
                return Ok(Ok(()));
            };
            let rate = utterance.format.map_or(16_000, |f| f.rate);
            let result = resample(&utterance.samples, rate)
                .and_then(|audio| services.transcribe(&audio, utterance.language.as_deref()));
            match result {
                Ok(text) => send(
                    writer,
                    &Message::Transcript {
                        text,
                        language: utterance.language,
                    },
                )?,
                Err(e) => send_error(writer, "transcription-failed", &e)?,
            }
        }
        Message::Synthesize { text, voice } => {
            // Within a streamed synthesis the whole text comes as chunks;
            // the plain event repeats it for older servers' sake.
            if pending.streamed.is_none() {
                if text.chars().count() > limits.max_text_chars {
                    return Ok(Err(format!(
                        "the text is longer than {} characters",
                        limits.max_text_chars
                    )));
                }
                speak(writer, services, &text, voice.as_ref())?;
            }
        }
        Message::SynthesizeStart { voice } => pending.streamed = Some((voice, String::new())),
        Message::SynthesizeChunk { text } => {
            if let Some((_, so_far)) = &mut pending.streamed {
                so_far.push_str(&text);
                if so_far.chars().count() > limits.max_text_chars {
                    return Ok(Err(format!(
                        "the text is longer than {} characters",
                        limits.max_text_chars
                    )));
                }
            }
        }
        Message::SynthesizeStop => {
            if let Some((voice, text)) = pending.streamed.take() {
                speak(writer, services, &text, voice.as_ref())?;
            }
            send(writer, &Message::SynthesizeStopped)?;
        }
        // Anything else (other services' events, newer events) is not for
        // this server: passed over, as the Python servers do.
        _ => {}
    }
    Ok(Ok(()))
}

fn resample(samples: &[f32], rate: u32) -> Result<Vec<f32>, String> {
    if rate == 16_000 {
        return Ok(samples.to_vec());
    }
    hark_audio::resample::resample_mono(samples, rate, 16_000).map_err(|e| e.to_string())
}

/// Samples per `audio-chunk` Hark sends (as wyoming-piper does).
const SAMPLES_PER_CHUNK: usize = 1024;

fn speak(
    writer: &mut Client,
    services: &dyn Services,
    text: &str,
    voice: Option<&VoiceChoice>,
) -> Result<(), WyomingError> {
    let (audio, rate) = match services.synthesize(text, voice) {
        Ok(spoken) => spoken,
        Err(e) => return send_error(writer, "synthesis-failed", &e),
    };
    let format = AudioFormat {
        rate,
        width: 2,
        channels: 1,
    };
    send(
        writer,
        &Message::AudioStart {
            format,
            timestamp: Some(0),
        },
    )?;
    for (i, chunk) in audio.chunks(SAMPLES_PER_CHUNK).enumerate() {
        send(
            writer,
            &Message::AudioChunk {
                format,
                timestamp: Some((i * SAMPLES_PER_CHUNK) as u64 * 1000 / rate as u64),
                audio: encode_s16le(chunk),
            },
        )?;
    }
    send(
        writer,
        &Message::AudioStop {
            timestamp: Some(audio.len() as u64 * 1000 / rate as u64),
        },
    )
}

#[cfg(test)]
mod tests;
