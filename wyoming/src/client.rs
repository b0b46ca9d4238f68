//! Wyoming servers as Hark's ears and voice.
//!
//! Each utterance and each clause is one connection, as Home Assistant
//! uses these servers: the request, the audio, the answer, closed. A
//! connection costs well under a millisecond on a LAN and leaves nothing
//! to repair when a server restarts between two turns. Every read and
//! write has a deadline, so a server that stops answering fails that one
//! job (with an error naming the server) instead of wedging the worker.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hark_stt::{Segment, SpeechToText, SttError, Transcript};
use hark_tts::{TtsError, Voice};

use crate::codec::{write_event, EventReader};
use crate::message::{encode_s16le, AudioFormat, Info, Message, VoiceChoice};
use crate::WyomingError;

/// Where a Wyoming server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl FromStr for Endpoint {
    type Err = WyomingError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let bad = |reason| WyomingError::Uri {
            uri: uri.to_owned(),
            reason,
        };
        if let Some(path) = uri.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("no socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let Some(rest) = uri.strip_prefix("tcp://") else {
            return Err(bad("unknown scheme"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        Ok(Endpoint::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// A connected socket of either kind.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// How long a client waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// To connect.
    pub connect: Duration,
    /// For the whole answer to one request, and for any single read or
    /// write on the way.
    pub answer: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            answer: Duration::from_secs(10),
        }
    }
}

/// One request's connection.
struct Connection {
    reader: EventReader<Stream>,
    writer: Stream,
    deadline: Instant,
}

impl Connection {
    fn open(endpoint: &Endpoint, deadlines: Deadlines) -> Result<Self, String> {
        let stream = match endpoint {
            Endpoint::Tcp { host, port } => {
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {host}: {e}"))?;
                let mut last = None;
                let mut connected = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, deadlines.connect) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let stream = connected.ok_or_else(|| match last {
                    Some(e) => format!("cannot connect: {e}"),
                    None => format!("{host} resolves to no address"),
                })?;
                // Audio chunks go out as they are written.
                let _ = stream.set_nodelay(true);
                Stream::Tcp(stream)
            }
            Endpoint::Unix(path) => {
                Stream::Unix(UnixStream::connect(path).map_err(|e| format!("cannot connect: {e}"))?)
            }
        };
        stream
            .set_timeouts(deadlines.answer)
            .map_err(|e| format!("cannot set socket timeouts: {e}"))?;
        let writer = stream
            .try_clone()
            .map_err(|e| format!("cannot clone the socket: {e}"))?;
        Ok(Self {
            reader: EventReader::new(stream),
            writer,
            deadline: Instant::now() + deadlines.answer,
        })
    }

    fn send(&mut self, message: &Message) -> Result<(), String> {
        write_event(&mut self.writer, &message.to_event()).map_err(|e| describe_io("sending", e))
    }

    /// The next message; the server's `error` event becomes an error.
    fn receive(&mut self) -> Result<Message, String> {
        if Instant::now() >= self.deadline {
            return Err("no answer in time".into());
        }
        let event = self
            .reader
            .read_event()
            .map_err(|e| describe_io("waiting for the answer", e))?
            .ok_or("the server closed the connection before answering")?;
        match Message::from_event(event).map_err(|e| e.to_string())? {
            Message::Error { text, code } => Err(match code {
                Some(code) => format!("the server answered with an error ({code}): {text}"),
                None => format!("the server answered with an error: {text}"),
            }),
            message => Ok(message),
        }
    }
}

fn describe_io(doing: &str, error: WyomingError) -> String {
    match error {
        WyomingError::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!("no answer in time ({doing})")
        }
        WyomingError::Io(e) => format!("connection lost {doing}: {e}"),
        other => other.to_string(),
    }
}

/// Asks a server what it offers.
pub fn describe(endpoint: &Endpoint, deadlines: Deadlines) -> Result<Info, String> {
    let mut connection = Connection::open(endpoint, deadlines)?;
    connection.send(&Message::Describe)?;
    loop {
        if let Message::Info(info) = connection.receive()? {
            return Ok(*info);
        }
    }
}

/// A Wyoming ASR server as Hark's ears.
pub struct WyomingStt {
    endpoint: Endpoint,
    /// The model asked for (`transcribe`'s `name`); `None`: the server's.
    model: Option<String>,
    language: Option<String>,
    deadlines: Deadlines,
}

/// Bytes of 16-bit mono audio per `audio-chunk`: 100 ms, so a streaming
/// server can start on the first words while the rest is still sent.
const CHUNK_BYTES: usize = 3_200;

impl WyomingStt {
    pub fn new(
        endpoint: Endpoint,
        model: Option<String>,
        language: Option<String>,
        deadlines: Deadlines,
    ) -> Self {
        Self {
            endpoint,
            model,
            language,
            deadlines,
        }
    }

    /// Checks the server is there and offers speech to text.
    pub fn check(&self) -> Result<Info, SttError> {
        let info = describe(&self.endpoint, self.deadlines).map_err(|m| self.error(m))?;
        if info.asr.is_empty() {
            return Err(
                self.error("the server offers no speech to text (its info lists no asr)".into())
            );
        }
        Ok(info)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn error(&self, message: String) -> SttError {
        SttError::Remote {
            uri: self.endpoint.to_string(),
            message,
        }
    }

    fn run(&self, samples: &[f32]) -> Result<String, String> {
        let mut connection = Connection::open(&self.endpoint, self.deadlines)?;
        let format = AudioFormat::HARK_INPUT;
        connection.send(&Message::Transcribe {
            name: self.model.clone(),
            language: self.language.clone(),
        })?;
        connection.send(&Message::AudioStart {
            format,
            timestamp: Some(0),
        })?;
        let pcm = encode_s16le(samples);
        for (i, chunk) in pcm.chunks(CHUNK_BYTES).enumerate() {
            connection.send(&Message::AudioChunk {
                format,
                timestamp: Some((i * CHUNK_BYTES / 32) as u64),
                audio: chunk.to_vec(),
            })?;
        }
        connection.send(&Message::AudioStop {
            timestamp: Some((pcm.len() / 32) as u64),
        })?;
        // A streaming server sends transcript-start, chunks, transcript-stop
        // and then the whole transcript; the whole one is what counts.
        let mut streamed = String::new();
        loop {
            match connection.receive()? {
                Message::Transcript { text, .. } => return Ok(text.trim().to_owned()),
                Message::TranscriptChunk { text } => streamed.push_str(&text),
                Message::TranscriptStop if !streamed.is_empty() => {
                    return Ok(streamed.trim().to_owned())
                }
                _ => {}
            }
        }
    }
}

impl SpeechToText for WyomingStt {
    fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript, SttError> {
        let text = self.run(samples).map_err(|m| self.error(m))?;
        if text.is_empty() {
            return Ok(Transcript::default());
        }
        Ok(Transcript {
            segments: vec![Segment {
                start_secs: 0.0,
                end_secs: samples.len() as f32 / 16_000.0,
                text,
                no_speech_prob: 0.0,
            }],
        })
    }
}

/// A Wyoming TTS server as Hark's voice.
pub struct WyomingVoice {
    endpoint: Endpoint,
    voice: Option<VoiceChoice>,
    deadlines: Deadlines,
    /// The rate the server's voice speaks at, learned when connecting;
    /// audio at another rate is resampled to it.
    rate: u32,
}

impl WyomingVoice {
    /// Checks that the server offers speech (and the voice, when named),
    /// and learns its sample rate from a short phrase.
    pub fn connect(
        endpoint: Endpoint,
        voice: Option<String>,
        deadlines: Deadlines,
    ) -> Result<Self, TtsError> {
        let uri = endpoint.to_string();
        let error = |message| TtsError::Remote {
            uri: uri.clone(),
            message,
        };
        let info = describe(&endpoint, deadlines).map_err(error)?;
        if info.tts.is_empty() {
            return Err(error(
                "the server offers no text to speech (its info lists no tts)".into(),
            ));
        }
        if let Some(name) = &voice {
            let offered: Vec<&str> = info
                .tts
                .iter()
                .flat_map(|p| p.voices.iter().flatten())
                .map(|v| v.name.as_str())
                .collect();
            if !offered.contains(&name.as_str()) {
                tracing::warn!(
                    server = %endpoint,
                    voice = %name,
                    "the text-to-speech server does not list this voice; asking for it anyway"
                );
            }
        }
        let mut this = Self {
            endpoint,
            voice: voice.map(|name| VoiceChoice {
                name: Some(name),
                ..VoiceChoice::default()
            }),
            deadlines,
            rate: 0,
        };
        let (_, format) = this.run("Hello.").map_err(error)?;
        this.rate = format.rate;
        Ok(this)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn run(&self, text: &str) -> Result<(Vec<f32>, AudioFormat), String> {
        let mut connection = Connection::open(&self.endpoint, self.deadlines)?;
        connection.send(&Message::Synthesize {
            text: text.to_owned(),
            voice: self.voice.clone(),
        })?;
        let mut format = None;
        let mut audio = Vec::new();
        loop {
            match connection.receive()? {
                Message::AudioStart { format: f, .. } => format = Some(f),
                Message::AudioChunk {
                    format: f,
                    audio: pcm,
                    ..
                } => {
                    format.get_or_insert(f);
                    audio.extend(f.decode(&pcm));
                }
                Message::AudioStop { .. } => {
                    let format = format.ok_or("the server sent audio-stop without any audio")?;
                    return Ok((audio, format));
                }
                _ => {}
            }
        }
    }
}

impl Voice for WyomingVoice {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
        let (audio, format) = self.run(text).map_err(|message| TtsError::Remote {
            uri: self.endpoint.to_string(),
            message,
        })?;
        Ok(if format.rate == self.rate {
            audio
        } else {
            to_session_rate(&audio, format.rate, self.rate)
        })
    }
}

/// Audio at another rate than the session's: only from a server whose
/// voice changed rate after Hark connected, or the local stand-in.
pub(crate) fn to_session_rate(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    hark_audio::resample::resample_mono(samples, from, to).unwrap_or_else(|e| {
        tracing::error!("cannot resample the voice from {from} Hz to {to} Hz: {e}");
        Vec::new()
    })
}

#[cfg(test)]
mod tests;
